#!/usr/bin/env python3
"""Fault test: the controller's database disk fills up.

The controller runs in a private mount namespace (unshare --mount --propagation private)
with its state directory on a 16 MiB tmpfs mounted only there; the test reaches that
directory through nsenter into the controller's namespace and never mounts anything in
its own. With a filler file taking every free block, admin writes must fail with a clear
answer (HTTP 507 naming the full disk, and a log line saying so), reads keep working,
and no change is half made. After the filler is removed: `PRAGMA integrity_check` is ok
(python's sqlite3 inside the namespace), writes succeed again, and every write
acknowledged before the disk filled is still there.

Usage: disk_full.py CONTROLLER CONNECTOR SP_TEST_CLIENT
"""
import os
import subprocess
import sys
import time

import faultlib
from faultlib import Api, sp_stack

CTL, CONN, TOOL = (os.path.abspath(a) for a in sys.argv[1:4])
run = faultlib.Run("disk_full")


def ns(pid, args, **kw):
    return subprocess.run(["nsenter", "-t", str(pid), "-m", "--"] + args, capture_output=True,
                          text=True, **kw)


try:
    state = os.path.join(run.work, "ctl")
    os.makedirs(state, mode=0o700)
    port = sp_stack.free_port()
    url = f"http://127.0.0.1:{port}"
    script = ('mount -t tmpfs -o size=16m,mode=0700 sp-fault-db "$0" && '
              '"$1" migrate --state-dir "$0" && '
              'exec "$1" serve --state-dir "$0" --http-listen "$2" --public-url "$3"')
    ctl = run.spawn(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                     script, state, CTL, f"127.0.0.1:{port}", url], "controller.log")
    run.check("controller up on its own tmpfs", sp_stack.wait_http(url + "/healthz"),
              open(os.path.join(run.work, "controller.log")).read()[-500:])
    pid = ctl.pid
    mounts = ns(pid, ["cat", "/proc/self/mounts"]).stdout
    run.check("the tmpfs is mounted in the controller's namespace only",
              f"sp-fault-db {state} tmpfs" in mounts and
              state not in open("/proc/self/mounts").read())
    key = ns(pid, [CTL, "admin-key", "create", "--name", "faults", "--state-dir",
                   state]).stdout.strip().split()[-1]
    api = Api(port, key)
    acked = {}
    for i in range(50):
        st, g = api.call("POST", "/api/v1/groups", {"name": f"before-{i}",
                                                    "description": "x" * 1000})
        if st == 201:
            acked[g["id"]] = f"before-{i}"
    run.check("writes work before the disk fills", len(acked) == 50)

    fill = os.path.join(state, "filler")
    r = ns(pid, ["dd", "if=/dev/zero", f"of={fill}", "bs=64k"])
    run.check("the filler takes every free block", "No space left" in r.stderr, r.stderr)

    statuses, bodies = [], []
    for i in range(200):
        st, body = api.call("POST", "/api/v1/groups", {"name": f"full-{i}",
                                                       "description": "y" * 1000})
        statuses.append(st)
        if st != 201:
            bodies.append(body)
        if st is not None and st != 201 and len(bodies) >= 3:
            break
    run.figure(f"answers while full: {statuses}")
    run.check("writes on the full disk answer 507", statuses[-1] == 507, str(statuses[-5:]))
    msg = bodies[-1]["error"]["message"] if isinstance(bodies[-1], dict) else str(bodies[-1])
    run.check("the answer names the storage problem: 'the database disk is full: the group"
              " change was not saved' (or the commit's wording)",
              bodies[-1]["error"]["code"] == "insufficient_storage" and msg in (
                  "the database disk is full: the group change was not saved",
                  "the database disk is full: the change was not saved"), str(bodies[-1]))
    st, body = api.call("PATCH", f"/api/v1/groups/{next(iter(acked))}",
                        {"description": "z" * 1000})
    run.check("a PATCH on the full disk answers 507 too", st == 507, f"{st} {body}")
    st, body = api.call("GET", "/api/v1/groups?limit=1000")
    run.check("reads keep working while the disk is full", st == 200, f"{st}")
    time.sleep(0.5)
    log = open(os.path.join(run.work, "controller.log")).read()
    run.check("the controller log has an error line naming the full disk and the database",
              "ERROR sallyport-controller: the database disk is full: changes are refused until"
              " space is freed in the state directory database=sqlite:" + state in log, log[-800:])
    run.check("controller still running", ctl.poll() is None)

    ns(pid, ["rm", "-f", fill])
    r = ns(pid, ["python3", "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]);"
                 " print(c.execute('PRAGMA integrity_check').fetchall())",
                 os.path.join(state, "controller.db")])
    run.check("integrity_check ok after freeing space", r.stdout.strip() == "[('ok',)]",
              r.stdout + r.stderr)
    st, g = api.call("POST", "/api/v1/groups", {"name": "after-free"})
    run.check("writes work again once space is freed", st == 201, f"{st} {g}")
    st, body = api.call("GET", "/api/v1/groups?limit=1000")
    names = {x["id"]: x["name"] for x in body["items"]} if st == 200 else {}
    run.check("every write acknowledged before the disk filled is still there",
              all(names.get(k) == v for k, v in acked.items()), f"{st}")
    made = [n for n in names.values() if n.startswith("full-")]
    ok_full = [i for i, s in enumerate(statuses) if s == 201]
    run.check("a write refused on the full disk left nothing behind",
              sorted(made) == sorted(f"full-{i}" for i in ok_full), f"{made} {ok_full}")
    run.finish()
except Exception as e:
    run.finish(e)
