#!/usr/bin/env python3
"""Fault test: kill -9 of the controller in the middle of admin API writes.

Two writer threads create, rename (PATCH description) and delete groups through
/api/v1 and record every change the controller acknowledged (2xx), plus the one request
each had in flight when the connection broke. The controller is SIGKILLed mid-stream,
restarted on the same state directory, and this is repeated (3 rounds; 2 under ASan).
After each restart: every acknowledged change is in the database exactly (group present
with the last acknowledged description, deleted groups absent), `PRAGMA integrity_check`
is ok, and every change — acknowledged or not — is all-or-nothing: a group row exists
exactly when its `group.create` audit event does, a deleted group has its `group.delete`
event, and each group's description is the `after` of its latest `group.update` event.

Usage: controller_kill9.py CONTROLLER CONNECTOR SP_TEST_CLIENT
"""
import json
import os
import random
import subprocess
import sys
import threading
import time

import faultlib
from faultlib import Api, sp_stack

CTL, CONN, TOOL = sys.argv[1:4]
run = faultlib.Run("controller_kill9")


class Writer(threading.Thread):
    def __init__(self, port, key, tag, seed):
        super().__init__(daemon=True)
        self.api = Api(port, key, timeout=3.0)
        self.tag, self.rng = tag, random.Random(seed)
        self.live = {}        # id -> acknowledged description
        self.deleted = set()  # acknowledged deletes
        self.inflight = []    # (op, id or name, value) whose answer never came
        self.acked = 0
        self.stop = threading.Event()
        self.n = 0

    def run(self):
        while not self.stop.is_set():
            op = self.rng.random()
            if op < 0.5 or len(self.live) < 5:
                self.n += 1
                name, desc = f"{self.tag}-{self.n}", f"d0-{self.n}"
                st, body = self.api.call("POST", "/api/v1/groups",
                                         {"name": name, "description": desc})
                if st == 201:
                    self.live[body["id"]] = desc
                    self.acked += 1
                elif st is None:
                    self.inflight.append(("create", name, desc))
                    return
                else:
                    raise RuntimeError(f"POST {st} {body}")
            elif op < 0.8:
                gid = self.rng.choice(sorted(self.live))
                desc = f"p{self.n}-{self.rng.randrange(1 << 30)}"
                self.n += 1
                st, body = self.api.call("PATCH", f"/api/v1/groups/{gid}", {"description": desc})
                if st == 200:
                    self.live[gid] = desc
                    self.acked += 1
                elif st is None:
                    self.inflight.append(("update", gid, desc))
                    return
                else:
                    raise RuntimeError(f"PATCH {st} {body}")
            else:
                gid = self.rng.choice(sorted(self.live))
                st, body = self.api.call("DELETE", f"/api/v1/groups/{gid}")
                if st == 204:
                    del self.live[gid]
                    self.deleted.add(gid)
                    self.acked += 1
                elif st is None:
                    self.inflight.append(("delete", gid, None))
                    return
                else:
                    raise RuntimeError(f"DELETE {st} {body}")


def verify(stack, writers, rnd):
    c = stack.db()
    groups = {r[0]: (r[1], r[2]) for r in
              c.execute("SELECT id, name, description FROM groups WHERE name LIKE 'w_-%'")}
    creates = {r[0] for r in c.execute("SELECT target_id FROM audit_events WHERE action ="
                                       " 'group.create'")}
    deletes = {r[0] for r in c.execute("SELECT target_id FROM audit_events WHERE action ="
                                       " 'group.delete'")}
    last_update = {}
    for tid, after in c.execute("SELECT target_id, after_json FROM audit_events WHERE action ="
                                " 'group.update' ORDER BY id"):
        last_update[tid] = json.loads(after)["description"]
    c.close()
    missing, wrong, resurrected = [], [], []
    for w in writers:
        infl_upd = {i: v for op, i, v in w.inflight if op == "update"}
        infl_del = {i for op, i, v in w.inflight if op == "delete"}
        for gid, desc in w.live.items():
            if gid not in groups:
                if gid not in infl_del:
                    missing.append(gid)
                continue
            got = groups[gid][1]
            if got != desc and got != infl_upd.get(gid):
                wrong.append((gid, desc, got))
        resurrected += [g for g in w.deleted if g in groups]
    run.check(f"round {rnd}: every acknowledged create/update is present exactly",
              not missing and not wrong, f"missing={missing[:3]} wrong={wrong[:3]}")
    run.check(f"round {rnd}: every acknowledged delete stays deleted", not resurrected,
              str(resurrected[:3]))
    run.check(f"round {rnd}: each group row exists exactly when its create event does",
              set(groups) == creates - deletes,
              f"rows-only={list(set(groups) - creates)[:3]} events-only="
              f"{list(creates - deletes - set(groups))[:3]}")
    bad = [g for g, (n, d) in groups.items() if g in last_update and last_update[g] != d]
    run.check(f"round {rnd}: each description is the after of its latest update event",
              not bad, str(bad[:3]))
    # the request in flight at the kill: all there or all absent
    names = {n for n, d in groups.values()}
    for w in writers:
        for op, ident, val in w.inflight:
            if op == "create":
                there = [g for g, (n, d) in groups.items() if n == ident]
                run.check(f"round {rnd}: unacknowledged create {ident} is whole or absent",
                          (not there and ident not in names) or
                          (len(there) == 1 and groups[there[0]][1] == val and
                           there[0] in creates), str(there))
                if there:
                    w.live[there[0]] = val
            elif op == "update" and ident in groups:
                w.live[ident] = groups[ident][1]
            elif op == "delete" and ident not in groups:
                w.live.pop(ident, None)
                w.deleted.add(ident)
        w.inflight = []
    res = faultlib.integrity(stack.db_path)
    run.check(f"round {rnd}: integrity_check ok", res == [("ok",)], str(res))


try:
    stack = sp_stack.Stack(CTL, CONN, TOOL, run.work, sanitized=faultlib.SANITIZED)
    run.cleanups.append(stack.close)
    stack.start_controller()
    key = faultlib.admin_key(CTL, stack.state)
    serve = [CTL, "serve", "--state-dir", stack.state, "--http-listen",
             f"127.0.0.1:{stack.ctl_port}", "--public-url", stack.url]
    state = {}
    rounds = 2 if faultlib.SANITIZED else 3
    total_acked = 0
    for rnd in range(1, rounds + 1):
        writers = [Writer(stack.ctl_port, key, f"w{i}", rnd * 10 + i) for i in range(2)]
        if rnd > 1:  # carry the model over rounds
            for w, old in zip(writers, state["writers"]):
                w.live, w.deleted, w.n = old.live, old.deleted, old.n + 100000 * rnd
        for w in writers:
            w.start()
        time.sleep(random.uniform(1.0, 2.0) * faultlib.SCALE)
        acked_before = sum(w.acked for w in writers)
        stack.ctl_proc.kill()
        stack.ctl_proc.wait(timeout=10)
        for w in writers:
            w.stop.set()
            w.join(timeout=10)
        run.check(f"round {rnd}: writers were writing when killed",
                  acked_before > 20 and all(not w.is_alive() for w in writers),
                  f"acked={acked_before}")
        total_acked += sum(w.acked for w in writers)
        stack.ctl_proc = stack.spawn(serve, f"controller-{rnd}.log")
        run.check(f"round {rnd}: controller restarts after SIGKILL",
                  sp_stack.wait_http(stack.url + "/healthz"))
        verify(stack, writers, rnd)
        state["writers"] = writers
    # and it still takes writes
    api = Api(stack.ctl_port, key)
    st, body = api.call("POST", "/api/v1/groups", {"name": "after-kill"})
    run.check("writes work after the last restart", st == 201, f"{st} {body}")
    run.figure(f"{total_acked} acknowledged admin writes over {rounds} SIGKILLs, none lost")
    err = run.finish()
except Exception as e:
    run.finish(e)
