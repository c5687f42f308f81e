#!/usr/bin/env python3
"""Soak: bounded load against a whole Sallyport deployment on 127.0.0.1 (scripts/soak).

Runs the controller, two connectors (one per remote network), four client stand-ins
(sp_test_client forward: the client's loopback mode, one warm tunnel each, two per
connector) and nginx, then for MINUTES minutes:
  - 6 workers fetch files of 1 KiB to 1 MiB through the forwards and check each body's
    SHA-256 (every transfer verified);
  - a churn thread makes and removes groups, resources and policies through the admin API
    (each change pushes a new config to the connectors);
  - a session thread adds a session, opens a fresh tunnel with it (sp_test_client
    connect), revokes it through the admin API and checks the next grant is refused.
After a warm-up (a fifth of the run, at least 15 s) and at the end the load pauses, and
the RSS and open descriptor count of every daemon is read from /proc. Passes only when
every daemon's RSS is within 10% of its post-warm-up value, no descriptor count grew,
every transfer matched its checksum, every churn and session step did what it should,
and no log holds an unexplained warning or error. Prints a summary table.

Usage: soak.py CONTROLLER CONNECTOR SP_TEST_CLIENT MINUTES
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
MINUTES = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
run = faultlib.Run("soak")
WORKERS = 6
MAX_FLOWS = 2_000_000
# warnings a soak provokes on purpose, by program: none so far
EXPLAINED = {}
# lines every run has for a known reason: the soak runs as root and its connectors opt in
# (faultlib sets SALLYPORT_ALLOW_ROOT; dropping to SALLYPORT_USER is tested elsewhere)
EXPLAINED_ANY = {"running as root (SALLYPORT_ALLOW_ROOT is set)"}


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.flows = self.bytes = self.bad = 0
        self.bad_detail = []
        self.churn = self.churn_bad = 0
        self.sessions = self.sessions_bad = 0
        self.detail = []

    def add(self, field, n=1, detail=None):
        with self.lock:
            setattr(self, field, getattr(self, field) + n)
            if detail and len(self.detail) < 20:
                self.detail.append(detail)


def main():
    stats = Stats()
    stack = sp_stack.Stack(CTL, CONN, TOOL, run.work)
    run.cleanups.append(stack.close)
    web = sp_stack.free_port()
    www = os.path.join(run.work, "www")
    rng = random.Random(1)
    files = {f"f{i}.bin": os.urandom(rng.choice([1 << 10, 8 << 10, 64 << 10, 256 << 10,
                                                  1 << 20]))
             for i in range(24)}
    sums = faultlib.make_www(www, files)
    paths = sorted(sums)
    nginx = faultlib.start_nginx(stack, www, web)
    if not run.check("nginx up", sp_stack.wait_http(f"http://127.0.0.1:{web}/f0.bin")):
        return
    stack.start_controller()
    key = faultlib.admin_key(CTL, stack.state)
    net2 = faultlib.add_network(stack, "lab2")
    r1 = faultlib.add_resource(stack, stack.net, "web1", "127.0.0.1", web)
    r2 = faultlib.add_resource(stack, net2, "web2", "127.0.0.1", web)
    c1 = faultlib.Connector(stack, "c1", "lab")
    c2 = faultlib.Connector(stack, "c2", "lab2")
    c1.start()
    c2.start()
    fwds = []
    for i, (res, net) in enumerate([(r1, stack.net), (r2, net2), (r1, stack.net), (r2, net2)]):
        p, port = faultlib.forward(stack, res, f"127.0.0.1:{web}", net, f"forward-{i}.log")
        fwds.append((p, port))
    daemons = [("controller", stack.ctl_proc), ("connector c1", c1.proc),
               ("connector c2", c2.proc)] + [(f"client fwd{i}", p) for i, (p, _) in
                                             enumerate(fwds)] + [("nginx", nginx)]

    stop = threading.Event()
    pause = threading.Event()
    idle = [threading.Event() for _ in range(WORKERS + 2)]

    def gate(i):
        while pause.is_set() and not stop.is_set():
            idle[i].set()
            time.sleep(0.05)
        idle[i].clear()

    def worker(i):
        wr = random.Random(100 + i)
        while not stop.is_set():
            gate(i)
            if stats.flows >= MAX_FLOWS:
                break
            path = wr.choice(paths)
            port = wr.choice(fwds)[1]
            digest, n, err = faultlib.fetch(port, path, 30)
            if digest == sums[path]:
                stats.add("flows")
                stats.add("bytes", n)
            else:
                stats.add("bad", 1, f"fetch {path} via {port}: {err} ({n} bytes)")
        idle[i].set()

    def churn(i):
        api = Api(stack.ctl_port, key)
        n = 0
        while not stop.is_set():
            gate(i)
            n += 1
            st, g = api.call("POST", "/api/v1/groups", {"name": f"churn-{n}"})
            st2, res = api.call("POST", "/api/v1/resources",
                                {"name": f"churn-{n}", "network_id": rng.choice([stack.net, net2]),
                                 "address": f"10.{n % 250}.0.0/24", "tcp": ["443"]})
            ok = st == 201 and st2 == 201
            if ok:
                pols = []
                for gid, rid in ((g["id"], res["id"]), (stack.group, res["id"]),
                                 (g["id"], rng.choice([r1, r2]))):
                    st3, pol = api.call("POST", "/api/v1/policies",
                                        {"group_id": gid, "resource_id": rid})
                    ok = ok and st3 == 201
                    if st3 == 201:
                        pols.append(pol["id"])
                time.sleep(0.1)
                for pid in pols:
                    ok = ok and api.call("DELETE", f"/api/v1/policies/{pid}")[0] == 204
                ok = ok and api.call("DELETE", f"/api/v1/resources/{res['id']}")[0] == 204
                ok = ok and api.call("DELETE", f"/api/v1/groups/{g['id']}")[0] == 204
            stats.add("churn")
            if not ok:
                stats.add("churn_bad", 1, f"churn {n}: {st} {g} {st2} {res}")
            time.sleep(0.1)
        idle[i].set()

    def sessions(i):
        api = Api(stack.ctl_port, key)
        n = 0
        while not stop.is_set():
            gate(i)
            n += 1
            sid, now = sp_stack.new_id(), int(time.time())
            c = stack.db()
            c.execute("INSERT INTO sessions (id, user_id, device_id, auth_method, auth_time,"
                      " created_at, last_used_at, expires_at) VALUES (?,?,?,?,?,?,?,?)",
                      (sid, stack.user, stack.device, "oidc", now, now, now, now + 3600))
            c.close()
            res, net = rng.choice([(r1, stack.net), (r2, net2)])
            args = stack.client_args("connect", res, f"127.0.0.1:{web}")
            args[args.index("--session") + 1] = sid
            args[args.index("--network") + 1] = net
            r = subprocess.run(args, input=faultlib.http_get("/f0.bin"), capture_output=True,
                               timeout=30)
            ok = r.returncode == 0 and faultlib.sha256(faultlib.split_http(r.stdout)[1]) == \
                sums["/f0.bin"]
            st, _ = api.call("DELETE", f"/api/v1/sessions/{sid}")
            r2_ = subprocess.run(args, input=faultlib.http_get("/f0.bin"), capture_output=True,
                                 timeout=30)
            refused = r2_.returncode == 4 and b"grant refused" in r2_.stderr
            stats.add("sessions")
            if not (ok and st == 204 and refused):
                stats.add("sessions_bad", 1, f"session {n}: rc={r.returncode} revoke={st} "
                          f"after={r2_.returncode} {r.stderr[-200:]} {r2_.stderr[-200:]}")
            time.sleep(0.5)
        idle[i].set()

    def guarded(fn, i):
        try:
            fn(i)
        except Exception as e:
            stats.add("bad", 1, f"thread {i} ({fn.__name__}) died: {e!r}")
        finally:
            idle[i].set()
    threads = [threading.Thread(target=guarded, args=(worker, i), daemon=True)
               for i in range(WORKERS)]
    threads.append(threading.Thread(target=guarded, args=(churn, WORKERS), daemon=True))
    threads.append(threading.Thread(target=guarded, args=(sessions, WORKERS + 1), daemon=True))

    def sample(label):
        pause.set()
        for i, ev in enumerate(idle):
            if threads[i].is_alive():
                ev.wait(60)
        time.sleep(2.0)  # flow ends and their events settle
        out = {}
        for name, p in daemons:
            out[name] = (faultlib.proc_rss_kib(p.pid), faultlib.proc_fds(p.pid))
        pause.clear()
        print(f"sampled at {label}: flows={stats.flows}", flush=True)
        return out

    t_start = time.time()
    total = MINUTES * 60
    warm = max(15.0, total / 5)
    for t in threads:
        t.start()
    time.sleep(warm)
    at_warm = sample("warm-up")
    while time.time() - t_start < total and stats.flows < MAX_FLOWS:
        time.sleep(1)
        if any(p.poll() is not None for _, p in daemons):
            break
    at_end = sample("end")
    stop.set()
    pause.clear()
    for t in threads:
        t.join(timeout=60)
    elapsed = time.time() - t_start

    # logs: any warning or error line not explained is a failure
    unexplained = []
    for name in sorted(os.listdir(run.work)):
        if not name.endswith(".log"):
            continue
        for line in open(os.path.join(run.work, name), errors="replace"):
            line = line.strip()
            if not line:
                continue
            level = ""
            if line.startswith("{"):
                try:
                    rec = json.loads(line)
                    level = rec.get("level", "")
                    msg = rec.get("msg", "")
                except ValueError:
                    level, msg = "?", line
            else:
                low = line.lower()
                level = next((w for w in ("error", "warn", "crit", "alert", "emerg")
                              if f"[{w}" in low or f"level={w}" in low or f"{w}:" in low), "")
                msg = line
            if level in ("warn", "error", "fatal", "crit", "alert", "emerg", "?"):
                if msg not in EXPLAINED.get(name, ()) and msg not in EXPLAINED_ANY:
                    unexplained.append(f"{name}: {line[:200]}")

    print("\nsoak summary", flush=True)
    print(f"  duration {elapsed:.0f} s, {stats.flows} verified transfers"
          f" ({stats.bytes / 1048576:.0f} MiB, {stats.flows / elapsed:.0f}/s), {stats.bad}"
          f" bad; {stats.churn} policy churn rounds ({stats.churn_bad} bad);"
          f" {stats.sessions} sessions made, used and revoked ({stats.sessions_bad} bad)")
    print(f"  {'daemon':<14} {'pid':>7} {'RSS warm KiB':>13} {'RSS end KiB':>12} {'RSS %':>7}"
          f" {'fds warm':>9} {'fds end':>8}  verdict")
    for name, p in daemons:
        (rw, fw), (re_, fe) = at_warm[name], at_end[name]
        pct = 100.0 * (re_ - rw) / rw if rw > 0 else 0.0
        ok = abs(pct) <= 10.0 and fe <= fw
        print(f"  {name:<14} {p.pid:>7} {rw:>13} {re_:>12} {pct:>+6.1f}% {fw:>9} {fe:>8}"
              f"  {'ok' if ok else 'FAIL'}", flush=True)
        run.check(f"{name}: RSS within 10% of warm-up, descriptors did not grow", ok,
                  f"rss {rw}->{re_} fds {fw}->{fe}")
    for d in stats.detail:
        print("  detail: " + d)
    for u in unexplained[:20]:
        print("  log: " + u)
    run.check("every daemon still running", all(p.poll() is None for _, p in daemons))
    run.check("every load thread ran to the end", not any("died" in d for d in stats.detail))
    run.check("thousands of flows", stats.flows >= 1000 * min(MINUTES, 1), str(stats.flows))
    run.check("every transfer verified by checksum", stats.bad == 0, str(stats.bad))
    run.check("every churn round did what it should", stats.churn > 0 and stats.churn_bad == 0)
    run.check("every session opened a tunnel and was refused once revoked",
              stats.sessions > 0 and stats.sessions_bad == 0)
    run.check("no unexplained warning or error in the logs", not unexplained,
              f"{len(unexplained)} lines")


try:
    main()
    run.finish()
except Exception as e:
    run.finish(e)
