#!/usr/bin/env python3
"""Fault test: a lossy, slow, then broken link between client and connector.

Two network namespaces made by this test (spfc<pid>: the client side; spfs<pid>: the
connector side, with the controller and nginx) joined by a veth pair created inside the
client namespace with a unique temporary name (its ends renamed `lnk` only inside their
namespaces). Nothing touches the root namespace's interfaces and every process, the
checks' own fetches included, runs with `ip netns exec`. The client stand-in is
sp_test_client forward (the client's loopback mode) in spfc.
  1. netem loss 5% delay 100ms on the link (both ends): a 1 MiB download through the
     tunnel completes byte for byte.
  2. netem removed; a slow download runs; the link goes down for 10 s (ip link set lnk
     down in the client namespace) and comes back: the download resumes on the same
     tunnel and completes byte for byte, and a new flow succeeds with no user action.
The namespaces are deleted by name at the end, also on failure.

Usage: netns_link.py CONTROLLER CONNECTOR SP_TEST_CLIENT
"""
import os
import subprocess
import sys
import threading
import time

import faultlib
from faultlib import sp_stack

CTL, CONN, TOOL = (os.path.abspath(a) for a in sys.argv[1:4])
run = faultlib.Run("netns_link")
S = faultlib.SCALE
PID = os.getpid()
NSC, NSS = f"spfc{PID}", f"spfs{PID}"
VA, VB = f"spv{PID}a", f"spv{PID}b"
SUB = f"10.{200 + PID % 50}.{PID % 250}"
CIP, SIP = f"{SUB}.1", f"{SUB}.2"

FETCH = r"""
import hashlib, socket, sys, time
port, path, timeout = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
t = time.time()
try:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(("GET %s HTTP/1.0\r\nHost: web\r\n\r\n" % path).encode())
    buf = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        buf += b
    head, _, body = buf.partition(b"\r\n\r\n")
    print(hashlib.sha256(body).hexdigest() if head.startswith(b"HTTP/1.1 200") else "bad",
          len(body), "%.2f" % (time.time() - t))
except OSError as e:
    print("error", 0, "%.2f" % (time.time() - t), e)
"""


def in_ns(ns, args, check=True):
    return subprocess.run(["ip", "netns", "exec", ns] + args, capture_output=True, text=True,
                          check=check)


def fetch(port, path, timeout=60):
    r = in_ns(NSC, ["python3", "-c", FETCH, str(port), path, str(timeout)], check=False)
    parts = r.stdout.split()
    return (parts[0], int(parts[1]), float(parts[2])) if len(parts) >= 3 else ("error", 0, 0.0)


def ns_http_ok(ns, url):
    return in_ns(ns, ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2",
                      url], check=False).stdout == "200"


try:
    for ns in (NSC, NSS):
        subprocess.run(["ip", "netns", "add", ns], check=True)
        run.netns.append(ns)
        in_ns(ns, ["ip", "link", "set", "lo", "up"])
    # the pair is born inside the client namespace; one end moves to the connector's
    in_ns(NSC, ["ip", "link", "add", VA, "type", "veth", "peer", "name", VB, "netns", NSS])
    in_ns(NSC, ["ip", "link", "set", VA, "name", "lnk"])
    in_ns(NSS, ["ip", "link", "set", VB, "name", "lnk"])
    in_ns(NSC, ["ip", "addr", "add", f"{CIP}/24", "dev", "lnk"])
    in_ns(NSS, ["ip", "addr", "add", f"{SIP}/24", "dev", "lnk"])
    in_ns(NSC, ["ip", "link", "set", "lnk", "up"])
    in_ns(NSS, ["ip", "link", "set", "lnk", "up"])

    stack = sp_stack.Stack(CTL, CONN, TOOL, run.work, sanitized=faultlib.SANITIZED)
    run.cleanups.append(stack.close)
    # rows and keys made by a first run on the root namespace's loopback, then the
    # controller serves from the connector namespace
    stack.start_controller()
    stack.ctl_proc.terminate()
    stack.ctl_proc.wait(timeout=20)
    stack.url = f"http://{SIP}:{stack.ctl_port}"
    ns_s = ["ip", "netns", "exec", NSS]
    ns_c = ["ip", "netns", "exec", NSC]
    stack.ctl_proc = stack.spawn(ns_s + [CTL, "serve", "--state-dir", stack.state,
                                         "--http-listen", f"{SIP}:{stack.ctl_port}",
                                         "--public-url", stack.url], "controller-ns.log",
                                 # the namespace link is the test's own wire: no TLS here
                                 env=dict(os.environ, SALLYPORT_PLAIN_HTTP="true"))
    run.check("controller serves in the connector namespace",
              faultlib.wait_until(lambda: ns_http_ok(NSS, stack.url + "/healthz"), 20 * S, 0.2))
    web = sp_stack.free_port()
    www = os.path.join(run.work, "www")
    sums = faultlib.make_www(www, {"small.bin": os.urandom(8 << 10),
                                   "big.bin": os.urandom(1 << 20),
                                   "slow/big.bin": os.urandom(3 << 20)})
    faultlib.start_nginx(stack, www, web, rate="256k", spawn=ns_s)
    run.check("nginx up in the connector namespace", faultlib.wait_until(
        lambda: ns_http_ok(NSS, f"http://127.0.0.1:{web}/small.bin"), 20 * S, 0.2))
    res = stack.add_resource("web", "127.0.0.1", tcp=[web])
    c1 = faultlib.Connector(stack, "c1", "lab", url=stack.url, direct_host=SIP, prefix=ns_s)
    c1.start()
    fwd, fport = faultlib.forward(stack, res, f"127.0.0.1:{web}", stack.net, "forward.log",
                                  prefix=ns_c)
    d, n, t = fetch(fport, "/small.bin", 20)
    run.check("a page through the tunnel across the link", d == sums["/small.bin"], f"{d} {n}")

    # 1. loss and delay
    impaired = "netem loss 5% delay 100ms"
    for ns in (NSC, NSS):
        r = in_ns(ns, ["tc", "qdisc", "add", "dev", "lnk", "root", "netem", "loss", "5%",
                       "delay", "100ms"], check=False)
        if r.returncode != 0:
            # a kernel without CONFIG_NET_SCH_NETEM: the same 5% random loss from nftables
            # on packets arriving over the link, and a 2 Mbit/s token bucket with a deep
            # queue for the slowness (no fixed delay can be added without netem)
            impaired = "nft numgen loss 5% + tbf 2mbit (kernel without netem)"
            in_ns(ns, ["nft", "add table inet spf; add chain inet spf in { type filter hook"
                       " input priority 0; }; add rule inet spf in iifname lnk numgen random"
                       " mod 100 < 5 counter drop"])
            in_ns(ns, ["tc", "qdisc", "add", "dev", "lnk", "root", "tbf", "rate", "2mbit",
                       "burst", "32kbit", "latency", "200ms"])
    run.figure("link impairment: " + impaired)
    d, n, t = fetch(fport, "/small.bin", 60 * S)
    run.figure(f"8 KiB page over the impaired link: {t:.2f} s")
    d, n, t = fetch(fport, "/big.bin", 120 * S)
    drops = "".join(in_ns(ns, ["nft", "list table inet spf"], check=False).stdout
                    for ns in (NSC, NSS))
    run.check(f"{impaired}: 1 MiB download byte for byte",
              d == sums["/big.bin"], f"{d} {n}")
    run.figure(f"1 MiB over the impaired link: {t:.1f} s")
    if "nft" in impaired:
        import re
        dropped = sum(int(x) for x in re.findall(r"counter packets (\d+)", drops))
        run.figure(f"packets dropped on the link: {dropped}")
        run.check("the link really lost packets", dropped > 0, drops)
    for ns in (NSC, NSS):
        in_ns(ns, ["tc", "qdisc", "del", "dev", "lnk", "root"])
        in_ns(ns, ["nft", "delete table inet spf"], check=False)

    # 2. the link down for 10 s under a running download
    result = {}
    def slow():
        result["r"] = fetch(fport, "/slow/big.bin", 120 * S)
    th = threading.Thread(target=slow)
    th.start()
    time.sleep(2.0)
    in_ns(NSC, ["ip", "link", "set", "lnk", "down"])
    down_at = time.time()
    time.sleep(10.0)
    in_ns(NSC, ["ip", "link", "set", "lnk", "up"])
    up_at = time.time()
    run.figure(f"link down for {up_at - down_at:.1f} s")
    th.join(timeout=150 * S)
    d, n, t = result.get("r", ("none", 0, 0))
    run.check("a download across 10 s of link down resumes and completes byte for byte",
              d == sums["/slow/big.bin"], f"{d} {n}")
    ok = faultlib.wait_until(lambda: fetch(fport, "/small.bin", 20)[0] == sums["/small.bin"],
                             30 * S, 0.5)
    run.check("after the link returns a new flow succeeds with no user action", bool(ok))
    run.figure(f"new flow good {time.time() - up_at:.1f} s after the link came back")
    run.check("forward client still running", fwd.poll() is None)
    run.check("connector still running", c1.proc.poll() is None)
    run.finish()
except Exception as e:
    run.finish(e)
