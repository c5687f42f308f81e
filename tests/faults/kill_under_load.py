#!/usr/bin/env python3
"""Fault test: kill -9 of the controller, then of the connector, under load.

One connector, nginx, and a client stand-in (sp_test_client forward: one warm tunnel,
every local connection a new stream) with fetch loops running throughout.
Controller SIGKILLed: slow downloads already running keep moving and finish byte for
byte while it is down, new flows on the existing tunnel (grant in hand) still open, a
grant bound to another device key is still refused (bad_grant: nothing is authorised
without a valid grant), and a new client cannot get a grant at all. Controller back:
the connector is ready again and a brand-new tunnel with a fresh grant works.
Connector SIGKILLed and restarted (same identity): the forward reconnects by itself and
flows work again with no action on the client side. The flow events queued during the
controller's outage reach it within seconds of its return (before the connector kill).

Usage: kill_under_load.py CONTROLLER CONNECTOR SP_TEST_CLIENT
"""
import os
import subprocess
import sys
import threading
import time

import faultlib
from faultlib import sp_stack

CTL, CONN, TOOL = sys.argv[1:4]
run = faultlib.Run("kill_under_load")
S = faultlib.SCALE

try:
    stack = sp_stack.Stack(CTL, CONN, TOOL, run.work, sanitized=faultlib.SANITIZED)
    run.cleanups.append(stack.close)
    web = sp_stack.free_port()
    www = os.path.join(run.work, "www")
    sums = faultlib.make_www(www, {"small.bin": os.urandom(16 << 10),
                                   "slow/big.bin": os.urandom(4 << 20)})
    faultlib.start_nginx(stack, www, web, rate="512k")
    run.check("nginx up", sp_stack.wait_http(f"http://127.0.0.1:{web}/small.bin"))
    stack.start_controller()
    res = stack.add_resource("web", "127.0.0.1", tcp=[web])
    c1 = faultlib.Connector(stack, "c1", "lab")
    c1.start()
    fwd, fport = faultlib.forward(stack, res, f"127.0.0.1:{web}", stack.net, "forward.log")
    saved = os.path.join(run.work, "grant.json")
    r = subprocess.run(stack.client_args("connect", res, f"127.0.0.1:{web}") + ["--save", saved],
                       input=faultlib.http_get("/small.bin"), capture_output=True, timeout=30)
    run.check("a grant saved before the fault", r.returncode == 0 and os.path.exists(saved))
    other_key = os.path.join(run.work, "other.key")
    subprocess.run([TOOL, "keygen", other_key], check=True, capture_output=True)

    # background load: small fetches in a loop, counted by outcome and by time
    stop = threading.Event()
    log = []  # (time, ok)
    def loop():
        while not stop.is_set():
            d, n, err = faultlib.fetch(fport, "/small.bin", 10)
            log.append((time.time(), d == sums["/small.bin"]))
            time.sleep(0.02)
    loader = threading.Thread(target=loop, daemon=True)
    loader.start()

    # ---- controller SIGKILL ----
    results = {}
    def download(i):
        results[i] = faultlib.fetch(fport, "/slow/big.bin", 60 * S)
    dls = [threading.Thread(target=download, args=(i,)) for i in range(2)]
    for t in dls:
        t.start()
    time.sleep(1.0)
    stack.ctl_proc.kill()
    stack.ctl_proc.wait(timeout=10)
    down_at = time.time()
    time.sleep(3.0)
    m_before = faultlib.metrics(c1.metrics_port)
    time.sleep(2.0)
    m_after = faultlib.metrics(c1.metrics_port)
    def counter(m, name):
        for line in m.splitlines():
            if line.startswith(name + " "):
                return int(line.split()[1])
        return -1
    moved = counter(m_after, "sallyport_connector_bytes_down_total") - \
        counter(m_before, "sallyport_connector_bytes_down_total")
    run.figure(f"bytes carried in 2 s with the controller down: {moved}")
    run.check("controller down: existing flows keep moving (>= 512 KiB in 2 s)",
              moved >= 512 * 1024, str(moved))
    during = [ok for t, ok in log if t > down_at + 0.5]
    run.check("controller down: new flows on the existing tunnel still open",
              len(during) >= 10 and all(during), f"{len(during)} {during.count(False)} bad")
    r = subprocess.run(stack.client_args("connect", res, f"127.0.0.1:{web}") +
                       ["--load", saved, "--tls-key", other_key],
                       input=faultlib.http_get("/small.bin"), capture_output=True, timeout=30)
    run.check("controller down: a grant presented with another key is refused bad_grant",
              r.returncode == 3 and b"refused: bad_grant" in r.stderr, r.stderr[-200:])
    r = subprocess.run(stack.client_args("connect", res, f"127.0.0.1:{web}"),
                       input=faultlib.http_get("/small.bin"), capture_output=True, timeout=30)
    run.check("controller down: a client without a grant gets no flow",
              r.returncode != 0 and len(r.stdout) == 0, f"rc={r.returncode}")
    for t in dls:
        t.join(timeout=60 * S)
    ended = time.time()
    run.check("downloads running across the outage finish byte for byte",
              all(results.get(i, (None,))[0] == sums["/slow/big.bin"] for i in range(2)),
              str(results))
    run.figure(f"controller down for {ended - down_at:.1f} s while 2 x 4 MiB finished")
    stack.ctl_proc = stack.spawn([CTL, "serve", "--state-dir", stack.state, "--http-listen",
                                  f"127.0.0.1:{stack.ctl_port}", "--public-url", stack.url],
                                 "controller-2.log")
    run.check("controller restarts", sp_stack.wait_http(stack.url + "/healthz"))
    fetches = counter(faultlib.metrics(c1.metrics_port), "sallyport_connector_config_fetches_total")
    run.check("connector ready again after the controller returns",
              faultlib.wait_until(lambda: c1.health() == 0, 20 * S, 0.2))
    r = subprocess.run(stack.client_args("connect", res, f"127.0.0.1:{web}"),
                       input=faultlib.http_get("/small.bin"), capture_output=True, timeout=30)
    run.check("after the controller returns a new tunnel with a fresh grant works",
              r.returncode == 0 and faultlib.sha256(faultlib.split_http(r.stdout)[1]) ==
              sums["/small.bin"], r.stderr[-300:])

    t_back = time.time()
    rows = faultlib.wait_until(lambda: stack.flow_events(
        "decision = 'deny' AND reason = 'bad_grant'"), 15 * S, 0.2)
    run.check("the bad_grant refusal of the outage reaches the controller once it is back",
              len(rows) == 1, str(rows))
    run.figure(f"outage flow events delivered {time.time() - t_back:.1f} s after the"
               " controller was ready again")

    # ---- connector SIGKILL ----
    c1.proc.kill()
    c1.proc.wait(timeout=10)
    killed_at = time.time()
    time.sleep(1.0)
    c1.start()
    back = faultlib.wait_until(lambda: faultlib.fetch(fport, "/small.bin", 5)[0] ==
                               sums["/small.bin"], 30 * S, 0.2)
    run.check("connector killed and restarted: the forward reconnects by itself", bool(back))
    run.figure(f"connector SIGKILL to first good flow again: {time.time() - killed_at:.1f} s")
    t_mark = time.time()
    time.sleep(2.0)
    after = [ok for t, ok in log if t > t_mark]
    run.check("flows keep working after the connector restart", len(after) >= 10 and all(after),
              f"{len(after)} {after.count(False)} bad")
    stop.set()
    loader.join(timeout=30)
    run.check("forward client still running (no user action)", fwd.poll() is None)
    run.finish()
except Exception as e:
    run.finish(e)
