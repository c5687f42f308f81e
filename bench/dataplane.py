#!/usr/bin/env python3
"""Data-plane benchmark driver; run it through bench/dataplane.sh [BUILD_DIR].

   usage: dataplane.py CONTROLLER CONNECTOR SP_TEST_CLIENT

Paths, all on 127.0.0.1, to the same targets (nginx for HTTP, iperf3 -s for bulk):
  direct    the target itself
  sallyport sp_test_client forward (a listener; each connection a new stream on one warm
            tunnel) -> TLS 1.3 + HTTP/2 -> sallyport-connector -> target
  relayed   the same, the tunnel through the controller's in-process relay (sp_test_client
            forward --relay: ticket, "SPRC"; the connector's data connection "SPRD")
  haproxy   haproxy A (plain in, TLS out) -> haproxy B (TLS in, plain out) -> target
  stunnel   stunnel client -> stunnel server -> target
Every proxy runs one thread (haproxy nbthread 1; the connector and the forwarder are single
threaded event loops; stunnel uses a thread per connection) and TLS 1.3 with
TLS_AES_128_GCM_SHA256 on every TLS leg, so the comparison is like for like.

Figures: iperf3 -t 5 one stream (receiver Gbit/s); wrk -t1 -c1 -d5s --latency (req/s, p50,
p99) over one keep-alive connection; wrk -t1 -c8 -d5s -H "Connection: close" (new
connections/s, each one a full TCP connect through the path); and the connector's VmRSS
before and after 10,000 concurrent idle flows through the forwarder.
"""
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no bytecode cache in the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "integration"))
import sp_stack  # noqa: E402

if len(sys.argv) < 4:
    sys.exit(__doc__)
CTL, CONN, TOOL = sys.argv[1:4]
DURATION = 5
ROUNDS = int(os.environ.get("ROUNDS", "3"))
IDLE_FLOWS = 10000
CIPHER = "TLS_AES_128_GCM_SHA256"
WORK = tempfile.mkdtemp(prefix="sp-bench-dp-")
free_port = sp_stack.free_port


def wait_port(port, limit=10.0):
    end = time.time() + limit
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def iperf(port):
    r = subprocess.run(["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(DURATION),
                        "-P", "1", "-f", "m"], capture_output=True, text=True,
                       timeout=DURATION + 30)
    # the receiver line of the summary
    for line in r.stdout.splitlines():
        if line.strip().endswith("receiver"):
            m = re.search(r"([\d.]+) Mbits/sec", line)
            if m:
                return float(m.group(1)) / 1000.0
    print(f"  iperf3 on port {port} failed: {r.stdout[-300:]} {r.stderr[-300:]}", flush=True)
    return None


def to_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)$", text)
    if not m:
        return None
    v = float(m.group(1))
    return v / 1000 if m.group(2) == "us" else v if m.group(2) == "ms" else v * 1000


def wrk(port, conns, close=False):
    args = ["wrk", "-t1", f"-c{conns}", f"-d{DURATION}s", "--latency"]
    if close:
        args += ["-H", "Connection: close"]
    r = subprocess.run(args + [f"http://127.0.0.1:{port}/index.html"], capture_output=True,
                       text=True, timeout=DURATION + 30)
    out = r.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"\n\s+50%\s+(\S+)", out)
    p99 = re.search(r"\n\s+99%\s+(\S+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors or non2xx:
        print(f"  wrk on port {port}: {errors.group(0) if errors else ''}"
              f" {non2xx.group(0) if non2xx else ''}", flush=True)
    return (float(rps.group(1)) if rps else None,
            to_ms(p50.group(1)) if p50 else None, to_ms(p99.group(1)) if p99 else None)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def make_cert():
    key, crt = os.path.join(WORK, "bench.key"), os.path.join(WORK, "bench.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", crt, "-days",
                    "1", "-subj", "/CN=bench.test"], check=True, capture_output=True)
    pem = os.path.join(WORK, "bench.pem")
    with open(pem, "w") as f:
        f.write(open(crt).read() + open(key).read())
    return key, crt, pem


def start_haproxy(stack, pem, crt, targets):
    """Two haproxy processes; returns {target port: entry port}."""
    entries = {t: free_port() for t in targets}
    middles = {t: free_port() for t in targets}
    common = f"""global
  nbthread 1
  maxconn 8000
  ssl-default-bind-ciphersuites {CIPHER}
  ssl-default-server-ciphersuites {CIPHER}
  ssl-default-bind-options ssl-min-ver TLSv1.3
  ssl-default-server-options ssl-min-ver TLSv1.3
defaults
  mode tcp
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  maxconn 8000
"""
    a = common + "".join(f"""
listen wrap{t}
  bind 127.0.0.1:{entries[t]}
  server b 127.0.0.1:{middles[t]} ssl verify required ca-file {crt} sni str(bench.test)
""" for t in targets)
    b = common + "".join(f"""
listen unwrap{t}
  bind 127.0.0.1:{middles[t]} ssl crt {pem}
  server t 127.0.0.1:{t}
""" for t in targets)
    for name, text in (("haproxy-a", a), ("haproxy-b", b)):
        path = os.path.join(WORK, name + ".cfg")
        with open(path, "w") as f:
            f.write(text)
        stack.spawn(["/usr/sbin/haproxy", "-db", "-f", path], name + ".log")
    for t in targets:
        if not wait_port(entries[t]):
            raise RuntimeError("haproxy did not start")
    return entries


def start_stunnel(stack, key, crt, targets):
    entries = {t: free_port() for t in targets}
    middles = {t: free_port() for t in targets}
    common = f"""foreground = yes
pid =
ciphersuites = {CIPHER}
sslVersionMin = TLSv1.3
socket = l:TCP_NODELAY=1
socket = r:TCP_NODELAY=1
"""
    client = common + "".join(f"""
[wrap{t}]
client = yes
accept = 127.0.0.1:{entries[t]}
connect = 127.0.0.1:{middles[t]}
CAfile = {crt}
verifyPeer = yes
""" for t in targets)
    server = common + "".join(f"""
[unwrap{t}]
accept = 127.0.0.1:{middles[t]}
connect = 127.0.0.1:{t}
cert = {crt}
key = {key}
""" for t in targets)
    for name, text in (("stunnel-client", client), ("stunnel-server", server)):
        path = os.path.join(WORK, name + ".conf")
        with open(path, "w") as f:
            f.write(text)
        stack.spawn(["stunnel4", path], name + ".log")
    for t in targets:
        if not wait_port(entries[t]):
            raise RuntimeError("stunnel did not start")
    return entries


def start_forwarders(stack, res, targets, relayed=False):
    entries = {}
    for t in targets:
        port = free_port()
        log = f"forward-{'relayed-' if relayed else ''}{t}.log"
        stack.spawn(stack.client_args("forward", res, f"127.0.0.1:{t}") +
                    ["--listen", f"127.0.0.1:{port}"] + (["--relay"] if relayed else []), log)
        if not wait_port(port):
            raise RuntimeError("sp_test_client forward did not start: " +
                               open(os.path.join(WORK, log)).read())
        entries[t] = port
    return entries


def idle_flows(stack, fwd_port, fwd_pid):
    """Connector KiB per idle flow with IDLE_FLOWS connections open through the forwarder."""
    cpid = stack.connector.pid
    time.sleep(0.5)
    base_fds, base_rss, base_fwd = fd_count(cpid), rss_kib(cpid), rss_kib(fwd_pid)
    socks = []
    t0 = time.time()
    try:
        for i in range(IDLE_FLOWS):
            s = socket.socket()
            s.setblocking(True)
            s.connect(("127.0.0.1", fwd_port))
            socks.append(s)
        # every flow open at the connector: one service socket each
        end = time.time() + 60
        while time.time() < end and fd_count(cpid) < base_fds + IDLE_FLOWS:
            time.sleep(0.2)
        opened = fd_count(cpid) - base_fds
        setup = time.time() - t0
        time.sleep(1.0)
        rss, fwd = rss_kib(cpid), rss_kib(fwd_pid)
    finally:
        for s in socks:
            s.close()
    # the connector's new fds are the flows' service sockets plus the forwarder's extra
    # tunnels (one per 1000 streams)
    flows = min(opened, IDLE_FLOWS)
    return {"flows": flows, "setup_s": setup, "before": base_rss, "after": rss,
            "per_flow": (rss - base_rss) / max(flows, 1),
            "fwd_per_flow": (fwd - base_fwd) / max(flows, 1)}


def metrics_text(stack):
    try:
        import urllib.request
        return urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics",
                                      timeout=5).read().decode()
    except OSError:
        return ""


def median(values):
    v = sorted(x for x in values if x is not None)
    return v[len(v) // 2] if v else None


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def main():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stack = sp_stack.Stack(CTL, CONN, TOOL, WORK)
    try:
        www = os.path.join(WORK, "www")
        os.makedirs(www)
        with open(os.path.join(www, "index.html"), "wb") as f:
            f.write(b"<html><body>" + b"sallyport data-plane bench " * 20 + b"</body></html>\n")
        web, ip = free_port(), free_port()
        stack.start_nginx(www, web)
        stack.spawn(["iperf3", "-s", "-p", str(ip), "-B", "127.0.0.1"], "iperf3.log")
        stack.start_controller()
        res = stack.add_resource("bench", "127.0.0.1", tcp=[web, ip])
        stack.start_connector()
        # registered at the relay before the relayed path is measured
        end = time.time() + 20
        while time.time() < end and not re.search(
                r"^sallyport_connector_relays_registered 1$", metrics_text(stack), re.M):
            time.sleep(0.1)
        key, crt, pem = make_cert()
        paths = [("direct", {web: web, ip: ip}),
                 ("sallyport", start_forwarders(stack, res, [web, ip])),
                 ("relayed", start_forwarders(stack, res, [web, ip], relayed=True)),
                 ("haproxy", start_haproxy(stack, pem, crt, [web, ip])),
                 ("stunnel", start_stunnel(stack, key, crt, [web, ip]))]
        if not wait_port(ip):
            raise RuntimeError("iperf3 did not start")
        # The host is shared and its load drifts: every figure is measured ROUNDS times,
        # the paths interleaved (in a rotating order) within each round, and the median
        # is reported, so a slow minute does not fall on one path only.
        for name, ports in paths:
            # a warm-up opens the tunnel and the TLS session caches
            subprocess.run(["wrk", "-t1", "-c1", "-d1s",
                            f"http://127.0.0.1:{ports[web]}/index.html"], capture_output=True)
        samples = {name: [] for name, _ in paths}
        for rnd in range(ROUNDS):
            order = paths[rnd % len(paths):] + paths[:rnd % len(paths)]
            print(f"round {rnd + 1}/{ROUNDS}: iperf3 ...", flush=True)
            got = {name: {} for name, _ in paths}
            for name, ports in order:
                got[name]["gbps"] = iperf(ports[ip])
            print(f"round {rnd + 1}/{ROUNDS}: wrk keep-alive ...", flush=True)
            for name, ports in order:
                got[name]["rps"], got[name]["p50"], got[name]["p99"] = wrk(ports[web], 1)
            print(f"round {rnd + 1}/{ROUNDS}: wrk Connection: close ...", flush=True)
            for name, ports in order:
                got[name]["cps"], got[name]["cp50"], got[name]["cp99"] = wrk(ports[web], 8,
                                                                            close=True)
            for name, _ in paths:
                samples[name].append(got[name])
        results = {}
        for name, _ in paths:
            results[name] = {k: median([r[k] for r in samples[name]]) for k in samples[name][0]}
            results[name]["gbps_all"] = [r["gbps"] for r in samples[name]]
            results[name]["rps_all"] = [r["rps"] for r in samples[name]]
            results[name]["cps_all"] = [r["cps"] for r in samples[name]]

        print(f"measuring memory: {IDLE_FLOWS} idle flows through the forwarder ...", flush=True)
        fwd_proc = [p for p in stack.procs if "forward" in p.args][0]
        mem = idle_flows(stack, paths[1][1][web], fwd_proc.pid)

        print()
        print(f"Data plane, 127.0.0.1, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}"
              f" UTC; iperf3 -t {DURATION} -P 1; wrk -t1 -d{DURATION}s (keep-alive -c1;"
              f" Connection: close -c8); median of {ROUNDS} interleaved rounds")
        print(f"{'path':<10} {'iperf3 Gbit/s':>13} {'keep-alive req/s':>16} {'p50 ms':>7}"
              f" {'p99 ms':>7} {'new conn/s':>10} {'close p50':>9} {'close p99':>9}")
        for name, _ in paths:
            r = results[name]
            print(f"{name:<10} {fmt(r['gbps'], '13.2f')} {fmt(r['rps'], '16.0f')}"
                  f" {fmt(r['p50'], '7.3f')} {fmt(r['p99'], '7.3f')} {fmt(r['cps'], '10.0f')}"
                  f" {fmt(r['cp50'], '9.3f')} {fmt(r['cp99'], '9.3f')}")
        print("rounds:  " + "; ".join(
            f"{name} Gbit/s {'/'.join(fmt(x, '.2f') for x in results[name]['gbps_all'])}"
            f" req/s {'/'.join(fmt(x, '.0f') for x in results[name]['rps_all'])}"
            f" conn/s {'/'.join(fmt(x, '.0f') for x in results[name]['cps_all'])}"
            for name, _ in paths))
        print()
        print(f"idle flows: {mem['flows']} open at the connector after {mem['setup_s']:.1f} s;"
              f" connector VmRSS {mem['before']} KiB -> {mem['after']} KiB ="
              f" {mem['per_flow']:.2f} KiB per flow (forwarder {mem['fwd_per_flow']:.2f} KiB"
              " per flow)")
        s, h = results["sallyport"], results["haproxy"]
        rows = [("throughput (iperf3)", ratio(s["gbps"], h["gbps"]), ">= 1.5x", 1.5, True),
                ("keep-alive req/s", ratio(s["rps"], h["rps"]), ">= 1.5x", 1.5, True),
                ("new connections/s", ratio(s["cps"], h["cps"]), ">= 3x", 3.0, True)]
        print()
        print("sallyport vs haproxy chain   ratio   target  met")
        for label, v, target, bound, higher in rows:
            met = v is not None and (v >= bound if higher else v <= bound)
            print(f"{label:<27} {fmt(v, '6.2f')}x  {target:>7}  {'yes' if met else 'NO'}")
        r = results["relayed"]
        print()
        print("relayed vs direct tunnel     ratio   target  met")
        for label, v in (("throughput (iperf3)", ratio(r["gbps"], s["gbps"])),
                         ("keep-alive req/s", ratio(r["rps"], s["rps"])),
                         ("new connections/s", ratio(r["cps"], s["cps"]))):
            met = v is not None and v >= 0.8
            print(f"{label:<27} {fmt(v, '6.2f')}x  {'>= 0.8x':>7}  {'yes' if met else 'NO'}")
        pf = mem["per_flow"]
        print(f"{'connector KiB / idle flow':<27} {pf:7.2f}  {'<= 16':>7}  "
              f"{'yes' if pf <= 16 and mem['flows'] >= IDLE_FLOWS else 'NO'}")
    finally:
        stack.close()
        if os.environ.get("KEEP") is None:
            shutil.rmtree(WORK, ignore_errors=True)
        else:
            print("kept", WORK)


if __name__ == "__main__":
    main()
