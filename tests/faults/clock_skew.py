#!/usr/bin/env python3
"""Fault test: the connector's clock jumps 10 minutes ahead of the controller's.

The connector runs with libfaketime preloaded (from the `faketime` package), reading its
offset from a file it re-reads every second (FAKETIME_TIMESTAMP_FILE; the monotonic clock
left alone). It starts at +0 and becomes healthy; then the file says +10m. Checks: the
connector logs the exact clock-skew warning with skew_s about -600 (read from the Date
header of the controller's refusal: with its assertion's iat 10 minutes in the
controller's future, the controller refuses the heartbeat itself), the
sallyport_connector_clock_skew_seconds gauge says the same, and a flow with a fresh
grant (5 min lifetime, already past by the connector's clock) is refused `expired` to
the client rather than failing silently. Then the clock comes back (+0): the refusal's
flow event (deny/expired) reaches the controller and the same request succeeds.

Usage: clock_skew.py CONTROLLER CONNECTOR SP_TEST_CLIENT
"""
import json
import os
import shutil
import subprocess
import sys
import time

import faultlib
from faultlib import sp_stack

CTL, CONN, TOOL = sys.argv[1:4]
run = faultlib.Run("clock_skew")
WARNING = ("clock skew with the controller exceeds 60 s: grants will be refused as expired "
           "or not yet valid; fix NTP on this host or the controller")

try:
    if not run.check("libfaketime installed (scripts/install-deps: faketime)", os.path.exists(
            "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")):
        raise SystemExit(run.finish())
    stack = sp_stack.Stack(CTL, CONN, TOOL, run.work, sanitized=faultlib.SANITIZED)
    run.cleanups.append(stack.close)
    web = sp_stack.free_port()
    www = os.path.join(run.work, "www")
    page = b"clock skew page\n" * 20
    faultlib.make_www(www, {"index.html": page})
    faultlib.start_nginx(stack, www, web)
    run.check("nginx up", sp_stack.wait_http(f"http://127.0.0.1:{web}/index.html"))
    stack.start_controller()
    res = stack.add_resource("web", "127.0.0.1", tcp=[web])
    rc_file = os.path.join(run.work, "faketime.rc")
    with open(rc_file, "w") as f:
        f.write("+0\n")
    lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"
    env = {"LD_PRELOAD": lib, "FAKETIME_TIMESTAMP_FILE": rc_file,
           "FAKETIME_CACHE_DURATION": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
           # libfaketime is preloaded ahead of the ASan runtime in the sanitizer build
           "ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":verify_asan_link_order=0"}
    conn = stack.start_connector(env)
    r = subprocess.run(stack.client_args("connect", res, f"127.0.0.1:{web}"),
                       input=faultlib.http_get("/index.html"), capture_output=True, timeout=30)
    run.check("before the jump a flow succeeds", r.returncode == 0 and
              faultlib.split_http(r.stdout)[1] == page, r.stderr.decode(errors="replace"))
    with open(rc_file, "w") as f:
        f.write("+10m\n")

    def warned():
        for line in open(stack.connector_log).read().splitlines():
            if line.startswith("{"):
                rec = json.loads(line)
                if rec.get("msg") == WARNING:
                    return rec
        return None
    rec = faultlib.wait_until(warned, 40 * faultlib.SCALE, 0.2)
    run.check("heartbeat logs the exact clock-skew warning", rec is not None,
              open(stack.connector_log).read()[-1500:])
    if rec:
        run.check("warning level and skew_s about -600", rec.get("level") == "warn" and
                  -610 <= int(rec.get("skew_s", 0)) <= -590, str(rec))
    m = faultlib.metrics(stack.metrics_port)
    g = [l for l in m.splitlines() if l.startswith("sallyport_connector_clock_skew_seconds ")]
    run.check("gauge sallyport_connector_clock_skew_seconds about -600",
              g and -610 <= int(g[0].split()[1]) <= -590, str(g))

    r = subprocess.run(stack.client_args("connect", res, f"127.0.0.1:{web}"),
                       input=faultlib.http_get("/index.html"), capture_output=True, timeout=30)
    err = r.stderr.decode(errors="replace")
    run.check("flow with a fresh grant refused: expired (client exit 3)",
              r.returncode == 3 and "refused: expired" in err and page not in r.stdout,
              f"rc={r.returncode} {err}")

    # the clock comes back
    with open(rc_file, "w") as f:
        f.write("+0\n")
    rows = stack.wait_flow_event("decision = 'deny' AND reason = 'expired'",
                                 limit=30 * faultlib.SCALE)
    run.check("flow event deny/expired reaches the controller once the clock is back",
              len(rows) == 1 and rows[0][4] == web, str(rows))
    ok = faultlib.wait_until(lambda: subprocess.run(
        stack.client_args("connect", res, f"127.0.0.1:{web}"),
        input=faultlib.http_get("/index.html"), capture_output=True, timeout=30).returncode == 0,
        20 * faultlib.SCALE, 0.5)
    run.check("without the skew the same flow succeeds again", ok)
    run.finish()
except SystemExit:
    raise
except Exception as e:
    run.finish(e)
