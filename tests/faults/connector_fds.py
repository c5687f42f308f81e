#!/usr/bin/env python3
"""Fault test: the connector runs out of file descriptors.

The connector runs with RLIMIT_NOFILE lowered (prlimit --pid) to its open descriptors
plus a small margin. Through one warm tunnel (sp_test_client forward) three slow
downloads start, then idle flows are opened until the connector refuses one. Checks:
the refusal is `connect_failed` with a log line naming the descriptor shortage and the
`sallyport_connector_fd_exhausted_total` metric; a new tunnel dialled while exhausted is
shed (accept() EMFILE) without the connector spinning (CPU time measured from /proc);
the three downloads finish byte for byte; once the idle flows close, a new flow and a
new tunnel both work again.

Usage: connector_fds.py CONTROLLER CONNECTOR SP_TEST_CLIENT
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time

import faultlib
from faultlib import sp_stack

CTL, CONN, TOOL = sys.argv[1:4]
run = faultlib.Run("connector_fds")

try:
    stack = sp_stack.Stack(CTL, CONN, TOOL, run.work, sanitized=faultlib.SANITIZED)
    run.cleanups.append(stack.close)
    web = sp_stack.free_port()
    www = os.path.join(run.work, "www")
    sums = faultlib.make_www(www, {"index.html": b"fd test page\n" * 50,
                                   "slow/big.bin": os.urandom(3 << 20)})
    faultlib.start_nginx(stack, www, web, rate="512k")
    run.check("nginx up", sp_stack.wait_http(f"http://127.0.0.1:{web}/index.html"))
    stack.start_controller()
    res = stack.add_resource("web", "127.0.0.1", tcp=[web])
    conn = stack.start_connector({"SALLYPORT_LOG_LEVEL": "info"})
    fwd = sp_stack.free_port()
    stack.spawn(stack.client_args("forward", res, f"127.0.0.1:{web}") +
                ["--listen", f"127.0.0.1:{fwd}"], "forward.log")
    ok = faultlib.wait_until(lambda: faultlib.fetch(fwd, "/index.html", 5)[0] ==
                             sums["/index.html"], 20 * faultlib.SCALE, 0.2)
    run.check("page through the forward tunnel before the fault", ok)

    base = faultlib.proc_fds(conn.pid)
    limit = base + 12
    subprocess.run(["prlimit", f"--pid={conn.pid}", f"--nofile={limit}:{limit}"], check=True)
    run.figure(f"connector holds {base} descriptors; RLIMIT_NOFILE lowered to {limit}")

    # three slow downloads (3 MiB at 512 KiB/s: ~6 s each)
    results = {}
    def download(i):
        results[i] = faultlib.fetch(fwd, "/slow/big.bin", 60 * faultlib.SCALE)
    threads = [threading.Thread(target=download, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.5)

    # idle flows (nginx waits 120 s for their request) until one is refused
    idle, refused_at = [], None
    for i in range(40):
        s = socket.create_connection(("127.0.0.1", fwd), timeout=5)
        s.settimeout(1.0 * faultlib.SCALE)
        try:
            gone = s.recv(1) == b""
        except socket.timeout:
            gone = False
        except OSError:
            gone = True
        if gone:
            refused_at = i
            s.close()
            break
        idle.append(s)
    run.check("a new flow is refused once descriptors run out", refused_at is not None,
              f"{len(idle)} idle flows open")
    run.figure(f"{len(idle)} idle flows + 3 downloads open when the next flow was refused")
    log = open(stack.connector_log).read()
    lines = [json.loads(l) for l in log.splitlines() if l.startswith("{")]
    warn = [l for l in lines if l.get("msg", "").startswith("out of file descriptors")]
    run.check("log names the shortage: 'out of file descriptors: refusing new tunnels and"
              " flows until some close (raise the open-files limit)'",
              len(warn) >= 1 and warn[0].get("error") == "Too many open files", str(warn)[:300])
    denied = [l for l in lines if l.get("msg") == "flow denied" and
              l.get("reason") == "connect_failed"]
    run.check("refused flow: reason connect_failed, detail names the descriptors",
              len(denied) >= 1 and denied[-1].get("detail") ==
              "out of file descriptors (raise the open-files limit)", str(denied)[:300])

    # a new tunnel while exhausted: shed, no busy loop
    cpu0 = faultlib.proc_cpu_s(conn.pid)
    t0 = time.time()
    try:
        r = subprocess.run(stack.client_args("connect", res, f"127.0.0.1:{web}"),
                           input=faultlib.http_get("/index.html"), capture_output=True,
                           timeout=8 * faultlib.SCALE)
        rc, out, err = r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired:
        rc, out, err = None, b"", b"stalled: no answer within the timeout"
    time.sleep(2.0)
    cpu = faultlib.proc_cpu_s(conn.pid) - cpu0
    wall = time.time() - t0
    run.check("a new tunnel while exhausted is shed at once (client fails, no page, no stall)",
              rc not in (0, None) and b"fd test page" not in out, f"rc={rc} {err[-200:]}")
    run.figure(f"connector CPU while exhausted: {cpu:.2f} s over {wall:.1f} s")
    run.check("the connector does not spin on accept() EMFILE (CPU < 30% meanwhile)",
              cpu < 0.3 * wall, f"{cpu:.2f}s of {wall:.1f}s")
    run.check("connector still alive", conn.poll() is None)

    for t in threads:
        t.join(timeout=90 * faultlib.SCALE)
    run.check("the three downloads running before exhaustion finish byte for byte",
              all(results.get(i, (None,))[0] == sums["/slow/big.bin"] for i in range(3)),
              str(results))

    for s in idle:
        s.close()
    # the descriptors free up: a new flow on the tunnel, and a new tunnel
    ok = faultlib.wait_until(lambda: faultlib.fetch(fwd, "/index.html", 5)[0] ==
                             sums["/index.html"], 10 * faultlib.SCALE, 0.2)
    run.check("after descriptors free up a new flow works", ok)
    r = subprocess.run(stack.client_args("connect", res, f"127.0.0.1:{web}"),
                       input=faultlib.http_get("/index.html"), capture_output=True, timeout=30)
    run.check("after descriptors free up a new tunnel works",
              r.returncode == 0 and faultlib.split_http(r.stdout)[1] ==
              b"fd test page\n" * 50, r.stderr[-300:])
    m = faultlib.metrics(stack.metrics_port)
    exhausted = [l for l in m.splitlines()
                 if l.startswith("sallyport_connector_fd_exhausted_total ")]
    run.check("metric sallyport_connector_fd_exhausted_total counts the shortage",
              exhausted and int(exhausted[0].split()[1]) >= 2, str(exhausted))
    run.check('metric counts the refusal as connect_failed',
              'flows_denied_by_reason_total{reason="connect_failed"}' in m)
    rows = faultlib.wait_until(lambda: stack.flow_events(
        "decision = 'deny' AND reason = 'connect_failed'"), 20 * faultlib.SCALE, 0.3)
    run.check("flow event deny/connect_failed reaches the controller", len(rows) >= 1, str(rows))
    run.finish()
except Exception as e:
    run.finish(e)
