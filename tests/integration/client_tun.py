#!/usr/bin/env python3
"""Integration test: the client's tun mode (`sallyport up --mode tun`), inside a network
namespace of its own.

The script creates the namespace `sptun<pid>`, brings its loopback up and runs itself
again inside it (`ip netns exec`), so the controller, the connector, nginx, the client
daemon, curl and every kernel object tun mode makes (device, routes, nft table, policy
rules) live there and the root namespace is never touched. The namespace is deleted by
name at the end, after every process left in it is killed, even on failure.

Cases: the protected name resolved through the client's DNS stub and the synthetic
address dialled directly (IPv4 and IPv6) reach nginx through the tunnel, 20 MiB
byte-exact; a port outside the resource is reset, with the connector's denial in status
and a deny flow event; an unmapped synthetic address is reset by the client; addresses
outside the synthetic ranges are untouched (the flow count does not move); the device,
table and rules exist while up and are gone after `down` and after SIGTERM; after
kill -9 the table and rules are left, and the next `up` and `down` remove them; without
privileges `up --mode tun` fails with a message naming the privilege.

UDP: a real dnsmasq behind a UDP-only resource answers a DNS query sent to the
resource's synthetic IPv4 and IPv6 addresses (the answer comes from that address), the
controller's flow event says udp; UDP to a TCP-only resource port is refused
port_not_allowed by the connector, UDP to an unmapped synthetic address not_protected by
the client; 200 queries on one socket and 200 from fresh sockets are all answered; idle
UDP flows end (SALLYPORT_UDP_IDLE_TIMEOUT=1s here). The round trip of 200 queries
through the tunnel and directly to dnsmasq is printed (median and p99). Proxy mode: a
SOCKS5 UDP ASSOCIATE carries queries to the same resource by name (answers carry the
header), refuses a TCP-only port and an unprotected name, and ends with its connection.

With SP_BENCH=1 it also measures tun mode against loopback mode and nginx directly
(bench/client_modes.sh): throughput of a large download and time to first byte over a
warm tunnel.

Usage: client_tun.py CONTROLLER CONNECTOR SALLYPORT     (root; skipped, exit 77, otherwise)
"""
import atexit
import hashlib
import json
import shutil
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sp_stack  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
import testkit  # noqa: E402

if len(sys.argv) < 4:
    sys.exit("usage: client_tun.py CONTROLLER CONNECTOR SALLYPORT")


# ---------------------------------------------------------------- outer: the namespace
def outer():
    if os.geteuid() != 0 or not os.path.exists("/dev/net/tun"):
        print("skip: tun mode needs root and /dev/net/tun")
        sys.exit(77)
    ns = f"sptun{os.getpid()}"
    state = {"made": False}

    def cleanup():
        if not state["made"]:
            return
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                              text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        state["made"] = False

    atexit.register(cleanup)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, f: sys.exit(128 + s))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    state["made"] = True
    rc = 1
    try:
        subprocess.run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"], check=True)
        env = dict(os.environ, SP_TUN_INNER=ns)
        rc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__),
                             *sys.argv[1:]], env=env, timeout=600).returncode
    finally:
        cleanup()
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    if ns in left:
        print(f"FAIL: namespace {ns} still there")
        rc = 1
    sys.exit(rc)


if "SP_TUN_INNER" not in os.environ:
    outer()

# ---------------------------------------------------------------- inner: the test
CTL, CONN, SP = sys.argv[1:4]
SANITIZED = os.environ.get("SALLYPORT_SANITIZED", "0") in ("1", "ON", "TRUE", "true")
SCALE = 3 if SANITIZED else 1
BENCH = os.environ.get("SP_BENCH", "0") == "1"
WORK = tempfile.mkdtemp(prefix="sp-client-tun-")
CSTATE = os.path.join(WORK, "client-state")
ENV = {k: v for k, v in os.environ.items() if not k.startswith("SALLYPORT_")}
ENV["SALLYPORT_STATE_DIR"] = CSTATE
ENV["SALLYPORT_UDP_IDLE_TIMEOUT"] = "1s"
check = testkit.Checks(limit=1500)


def run(*args, env=None, timeout=60):
    r = subprocess.run(list(args), env=env, capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def sp(*args, env=None, timeout=60):
    return run(SP, *args, env=env or ENV, timeout=timeout)


def status():
    return testkit.status_json(sp)


def wait_status(pred, limit=20.0):
    return testkit.wait_for(status, pred, limit * SCALE, initial={})


def curl(*args, timeout=120):
    return run("curl", "-sS", "--noproxy", "*", *args, timeout=timeout)


def kernel_state():
    """(device present, nft table present, policy rules with our mark v4+v6)."""
    dev = run("ip", "link", "show", "dev", "sallyport0")[0] == 0
    tables = run("nft", "list", "tables")[1]
    rules = run("ip", "rule", "show")[1] + run("ip", "-6", "rule", "show")[1]
    return dev, "inet sallyport" in tables, rules.count("fwmark 0x5350")


def dns_query(port, name, qtype):
    q = testkit.dns_question(name, 0x5350, qtype)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    try:
        s.sendto(q, ("127.0.0.1", port))
        r = s.recv(512)
    except OSError:
        return None
    finally:
        s.close()
    if r[:2] != q[:2] or struct.unpack(">H", r[6:8])[0] < 1:
        return None
    size = 4 if qtype == 1 else 16
    return socket.inet_ntop(socket.AF_INET if qtype == 1 else socket.AF_INET6, r[-size:])


def dns_msg(name, qid):
    return testkit.dns_question(name, qid)


def dns_a(msg):
    """(id, [IPv4 strings]) of an answer to one question."""
    qid, _, ips = testkit.dns_answer_a(msg)
    return qid, ips


def udp_ask(sock, addr, qid, timeout=3.0):
    """Sends one A query for www.sallyport.test; (answer ips, from address, seconds) or
    (None, None, None) without an answer."""
    sock.settimeout(timeout)
    t0 = time.perf_counter()
    try:
        sock.sendto(dns_msg("www.sallyport.test", qid), addr)
        while True:
            r, frm = sock.recvfrom(4096)
            got_id, ips = dns_a(r)
            if got_id == qid:
                return ips, frm, time.perf_counter() - t0
    except (OSError, IndexError, struct.error):
        return None, None, None


def pct(vals, p):
    vals = sorted(vals)
    return vals[min(len(vals) - 1, int(len(vals) * p))] * 1000 if vals else -1


daemons = []


def up(*extra, mode="tun"):
    log = open(os.path.join(WORK, f"sallyport-{mode}-{len(daemons)}.log"), "w")
    # --no-system-dns: this namespace shares the host's /etc/resolv.conf (client_sysdns.py
    # tests the system DNS integration in a mount namespace of its own)
    p = subprocess.Popen([SP, "up", "--foreground", "--mode", mode, "--no-system-dns", *extra],
                         env=ENV,
                         stdout=log, stderr=subprocess.STDOUT)
    daemons.append(p)
    s = wait_status(lambda s: s.get("state") == "up" and s.get("resources", 0) >= 1 and
                    (mode != "tun" or len(s.get("tun", {}).get("names", [])) >= 1))
    return p, log.name, s


def stop_daemons():
    for p in daemons:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)


def ttfb(args, n):
    vals = []
    for _ in range(n):
        rc, out, err = curl("-o", "/dev/null", "-w", "%{time_starttransfer}", *args)
        if rc == 0:
            vals.append(float(out))
    vals.sort()
    return vals[len(vals) // 2] * 1000 if vals else -1


def throughput(args):
    t0 = time.time()
    rc, out, err = curl("-o", "/dev/null", "-w", "%{size_download}", *args, timeout=300)
    dt = time.time() - t0
    size = int(out or 0) if rc == 0 else 0
    return (size / (1 << 20) / dt if dt > 0 else 0), size


stack = sp_stack.Stack(CTL, CONN, None, WORK, sanitized=SANITIZED)
try:
    run("ip", "link", "set", "lo", "up")
    # ---- nginx with a page and 20 MiB of random bytes ----
    www = os.path.join(WORK, "www")
    os.makedirs(www)
    page = b"<html>sallyport tun " + os.urandom(8).hex().encode() + b"</html>\n"
    open(os.path.join(www, "index.html"), "wb").write(page)
    big = os.urandom(20 << 20)
    open(os.path.join(www, "big.bin"), "wb").write(big)
    big_sha = hashlib.sha256(big).hexdigest()
    if BENCH:
        with open(os.path.join(www, "huge.bin"), "wb") as f:
            for _ in range(200):
                f.write(os.urandom(1 << 20))
    WEB_PORT, OTHER_PORT, DNS_PORT = (sp_stack.free_port() for _ in range(3))
    stack.start_nginx(www, WEB_PORT)

    # ---- controller: a network, a service account in a group, a resource with an alias ----
    subprocess.run([CTL, "migrate", "--state-dir", stack.state], check=True,
                   capture_output=True)
    now = int(time.time())
    stack.net, stack.group = sp_stack.new_id(), sp_stack.new_id()
    SA, KID = sp_stack.new_id(), sp_stack.new_id()
    sa_key = os.path.join(WORK, "sa.pem")
    sa_pub, sa_der = testkit.ec_key(sa_key)
    c = stack.db()
    c.execute("INSERT INTO remote_networks (id, name, created_at, updated_at) VALUES (?,?,?,?)",
              (stack.net, "lab", now, now))
    testkit.add_service_account(c, SA, KID, sa_pub, sa_der, now)
    c.execute("INSERT INTO groups (id, name, created_at, updated_at) VALUES (?,?,?,?)",
              (stack.group, "eng", now, now))
    c.execute("INSERT INTO memberships (user_id, group_id, created_at) VALUES (?,?,?)",
              (SA, stack.group, now))
    c.close()
    RES = stack.add_resource("web", "127.0.0.1", tcp=[WEB_PORT])
    c = stack.db()
    c.execute("UPDATE resources SET alias = 'web.sp' WHERE id = ?", (RES,))
    c.close()
    # ---- a real dnsmasq answering one name, behind a UDP-only resource ----
    DNSQ_PORT = sp_stack.free_port()
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    stack.spawn([dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                 "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1",
                 f"--port={DNSQ_PORT}", "--address=/www.sallyport.test/10.20.30.40",
                 f"--pid-file={WORK}/dnsmasq.pid", "--user=root", "--log-facility=-"],
                "dnsmasq.log")
    RES_DNS = stack.add_resource("dns", "127.0.0.1", udp=[DNSQ_PORT])
    c = stack.db()
    c.execute("UPDATE resources SET alias = 'dns.sp' WHERE id = ?", (RES_DNS,))
    c.close()
    stack.spawn([CTL, "serve", "--state-dir", stack.state, "--http-listen",
                 f"127.0.0.1:{stack.ctl_port}", "--public-url", stack.url], "controller.log")
    check("controller up", sp_stack.wait_http(stack.url + "/healthz"))
    stack.start_connector()
    rc, out, err = sp("login", "--controller", stack.url, "--service-key", sa_key,
                      "--service-kid", KID, "--service-account", SA, "--device-name", "tun-box")
    check("signed in with a service key", rc == 0 and "signed in" in out, f"{rc} {out} {err}")

    # ---- without privileges: a clear refusal ----
    nobody_state = os.path.join(WORK, "nobody-state")
    os.makedirs(nobody_state, mode=0o700)
    os.chown(nobody_state, 65534, 65534)
    os.chmod(WORK, 0o755)
    rc, out, err = run("setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                       "--inh-caps=-all", SP, "up", "--mode", "tun", "--foreground",
                       env=dict(ENV, SALLYPORT_STATE_DIR=nobody_state))
    check("unprivileged `up --mode tun`: exit 1 naming root or CAP_NET_ADMIN",
          rc == 1 and "CAP_NET_ADMIN" in err, f"{rc} {out} {err}")
    check("unprivileged attempt made nothing", kernel_state() == (False, False, 0),
          kernel_state())

    # ---- tun mode up, with the DNS stub ----
    before = kernel_state()
    check("nothing of tun mode before `up`", before == (False, False, 0), before)
    daemon, dlog, s = up("--dns", f"127.0.0.1:{DNS_PORT}", "--dns-upstream", "127.0.0.1:9")
    tun = s.get("tun", {})
    names = {n["name"]: n for n in tun.get("names", [])}
    check("status: mode tun, device, ranges and the alias's synthetic addresses",
          s.get("mode") == "tun" and tun.get("device") == "sallyport0" and
          tun.get("v4_range") == "100.96.0.0/12" and tun.get("v6_range") == "fd73:7061:6c6c::/64"
          and "web.sp" in names and names["web.sp"]["v4"].startswith("100.9")
          and names["web.sp"]["v6"].startswith("fd73:7061:6c6c::"), json.dumps(s))
    check("status: the tun listeners", sorted(l["kind"] for l in s.get("listeners", [])) ==
          ["tun", "tun"], s.get("listeners"))
    check("device, nft table and two policy rules (v4 and v6) exist", kernel_state() ==
          (True, True, 2), kernel_state())
    routes = run("ip", "route", "show", "dev", "sallyport0")[1]
    check("only the synthetic range is routed to the device",
          routes.split() [:1] == ["100.96.0.0/12"] and len(routes.strip().splitlines()) == 1,
          routes)
    v4 = names.get("web.sp", {}).get("v4", "100.96.0.1")
    v6 = names.get("web.sp", {}).get("v6", "fd73:7061:6c6c::1")
    a = dns_query(DNS_PORT, "web.sp", 1)
    aaaa = dns_query(DNS_PORT, "web.sp", 28)
    check("the DNS stub answers the alias with the same synthetic addresses",
          a == v4 and aaaa == v6, f"{a} {aaaa} vs {v4} {v6}")

    # ---- through the tunnel ----
    out_file = os.path.join(WORK, "got.bin")
    rc, out, err = curl("-o", out_file, "--resolve", f"web.sp:{WEB_PORT}:{a or v4}",
                        f"http://web.sp:{WEB_PORT}/big.bin")
    got = open(out_file, "rb").read() if os.path.exists(out_file) else b""
    check("name resolved by the stub: 20 MiB byte-exact through the tunnel",
          rc == 0 and len(got) == 20 << 20 and hashlib.sha256(got).hexdigest() == big_sha,
          f"{rc} {len(got)} {err}")
    rc, body, err = curl(f"http://{v4}:{WEB_PORT}/index.html")
    check("synthetic IPv4 address dialled directly: the page", rc == 0 and body == page.decode(),
          f"{rc} {err}")
    rc, body, err = curl("-g", f"http://[{v6}]:{WEB_PORT}/index.html")
    check("synthetic IPv6 address dialled directly: the page", rc == 0 and body == page.decode(),
          f"{rc} {err}")
    s = status()
    tunnels = s.get("tunnels", [])
    check("status: flows went through one direct tunnel",
          len(tunnels) == 1 and tunnels[0]["state"] == "up" and
          tunnels[0]["streams_total"] >= 3 and s["flows"]["total"] >= 3, json.dumps(s))
    total = s.get("flows", {}).get("total", -1)

    # ---- refusals ----
    rc, body, err = curl(f"http://{v4}:{OTHER_PORT}/index.html")
    # the kernel completes the handshake (TPROXY), the daemon resets once the connector
    # refuses; when the RST beats curl's own connect check curl calls it a failed connect,
    # and when it lands while curl sends the request, a send failure (55)
    check("port outside the resource: connection reset", rc in (7, 52, 55, 56) and body == "" and
          any(w in err.lower() for w in ("reset", "empty reply", "couldn't connect")),
          f"{rc} {err}")
    s = wait_status(lambda s: any(d["reason"] == "port_not_allowed" for d in s.get("denials", [])))
    # the alias is a local name: the connector was asked for the resource's address
    check("status: denial port_not_allowed by the connector for that port",
          any(d["reason"] == "port_not_allowed" and d["by"] == "connector" and
              d["target"] == f"127.0.0.1:{OTHER_PORT}" for d in s.get("denials", [])),
          s.get("denials"))
    rows = stack.wait_flow_event("decision = 'deny' AND reason = 'port_not_allowed'")
    check("deny flow event at the controller, port_not_allowed, that port",
          len(rows) == 1 and rows[0][4] == OTHER_PORT, rows)
    unmapped = v4.rsplit(".", 1)[0] + ".200"
    rc, body, err = curl(f"http://{unmapped}:{WEB_PORT}/")
    s = status()
    check("synthetic address with no name: reset, denial not_protected by the client",
          rc in (7, 52, 55, 56) and body == "" and any(d["reason"] == "not_protected" and d["by"] == "client" and
                                 d["target"] == f"{unmapped}:{WEB_PORT}"
                                 for d in s.get("denials", [])), f"{rc} {err} {s.get('denials')}")

    # ---- everything else is untouched ----
    total = status()["flows"]["total"]
    rc, body, err = curl(f"http://127.0.0.1:{WEB_PORT}/index.html")
    s = status()
    check("non-synthetic address: nginx directly, the daemon sees no flow",
          rc == 0 and body == page.decode() and s["flows"]["total"] == total and
          s["flows"]["refused"] == 2, f"{rc} {err} {s.get('flows')}")
    probe = socket.socket()
    probe.settimeout(2)
    try:
        probe.connect(("100.64.0.1", WEB_PORT))
        outcome = "connected"
    except OSError as e:
        outcome = e.errno
    finally:
        probe.close()
    import errno as errno_mod
    check("an address next to the range (100.64.0.1) is not caught: no route, as before",
          outcome == errno_mod.ENETUNREACH and status()["flows"]["total"] == total, outcome)

    # ---- UDP through the tunnel ----
    names = {n["name"]: n for n in status().get("tun", {}).get("names", [])}
    dns_v4 = names.get("dns.sp", {}).get("v4", "100.96.0.2")
    direct = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ok = False
    for i in range(50):
        ips, frm, _ = udp_ask(direct, ("127.0.0.1", DNSQ_PORT), 100 + i, timeout=0.2)
        if ips == ["10.20.30.40"]:
            ok = True
            break
    check("dnsmasq answers directly", ok)
    usock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ips, frm, dt = udp_ask(usock, (dns_v4, DNSQ_PORT), 0x5a5a, timeout=5 * SCALE)
    check("UDP: DNS query to the synthetic address answered by dnsmasq through the tunnel,"
          " from the address asked", ips == ["10.20.30.40"] and frm == (dns_v4, DNSQ_PORT),
          f"{ips} {frm} {status().get('denials')}")
    dns_v6 = names.get("dns.sp", {}).get("v6", "fd73:7061:6c6c::2")
    usock6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    ips, frm, dt = udp_ask(usock6, (dns_v6, DNSQ_PORT), 0x6a6a, timeout=5 * SCALE)
    usock6.close()
    check("UDP over IPv6: the query to the synthetic IPv6 address answered, from that address",
          ips == ["10.20.30.40"] and frm is not None and frm[:2] == (dns_v6, DNSQ_PORT),
          f"{ips} {frm}")
    s = status()
    check("UDP: the flow is open in status while it lasts (protocol udp, dnsmasq's port)",
          any(f["protocol"] == "udp" and f["port"] == DNSQ_PORT and f["state"] == "open" and
              f["resource_id"] == RES_DNS and f["bytes_down"] > 0
              for f in s["flows"].get("open", [])), s.get("flows"))
    rows = stack.wait_flow_event("decision = 'allow' AND protocol = 'udp'", limit=10 * SCALE)
    check("UDP: allow flow event at the controller says udp, dnsmasq's port, bytes both ways",
          len(rows) >= 1 and rows[0][4] == DNSQ_PORT and rows[0][5] > 0 and rows[0][6] > 0,
          rows)
    # a TCP-only resource port: refused by the connector
    ref = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ips, frm, _ = udp_ask(ref, (v4, WEB_PORT), 0x0101, timeout=1.0)
    ref.close()
    s = wait_status(lambda s: any(d["reason"] == "port_not_allowed" and
                                  d["target"] == f"127.0.0.1:{WEB_PORT}"
                                  for d in s.get("denials", [])))
    check("UDP to a TCP-only resource port: no answer, denial port_not_allowed by the connector",
          ips is None and any(d["reason"] == "port_not_allowed" and d["by"] == "connector" and
                              d["target"] == f"127.0.0.1:{WEB_PORT}"
                              for d in s.get("denials", [])), s.get("denials"))
    rows = stack.wait_flow_event("decision = 'deny' AND protocol = 'udp'")
    check("deny flow event at the controller for that UDP port",
          len(rows) == 1 and rows[0][1] == "port_not_allowed" and rows[0][4] == WEB_PORT, rows)
    ref = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ips, frm, _ = udp_ask(ref, (unmapped, DNSQ_PORT), 0x0102, timeout=1.0)
    ref.close()
    s = status()
    check("UDP to a synthetic address with no name: denial not_protected by the client",
          ips is None and any(d["reason"] == "not_protected" and d["by"] == "client" and
                              d["target"] == f"{unmapped}:{DNSQ_PORT}"
                              for d in s.get("denials", [])), s.get("denials"))
    # 200 queries on one socket (one flow) and directly: all answered, round trips
    tun_rtt, direct_rtt, bad = [], [], 0
    for i in range(200):
        ips, frm, dt = udp_ask(usock, (dns_v4, DNSQ_PORT), 1000 + i, timeout=3 * SCALE)
        if ips == ["10.20.30.40"] and frm == (dns_v4, DNSQ_PORT):
            tun_rtt.append(dt)
        else:
            bad += 1
        ips, frm, dt = udp_ask(direct, ("127.0.0.1", DNSQ_PORT), 3000 + i)
        if ips == ["10.20.30.40"]:
            direct_rtt.append(dt)
    check("UDP: 200 queries on one socket all answered", bad == 0 and len(tun_rtt) == 200,
          f"{bad} unanswered")
    print(f"UDP DNS round trip, 200 queries: tunnel median {pct(tun_rtt, 0.5):.3f} ms "
          f"p99 {pct(tun_rtt, 0.99):.3f} ms; direct median {pct(direct_rtt, 0.5):.3f} ms "
          f"p99 {pct(direct_rtt, 0.99):.3f} ms", flush=True)
    # 200 queries from fresh sockets: 200 flows, each answered
    bad, fresh_rtt = 0, []
    for i in range(200):
        fs = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        ips, frm, dt = udp_ask(fs, (dns_v4, DNSQ_PORT), 5000 + i, timeout=3 * SCALE)
        fs.close()
        if ips == ["10.20.30.40"]:
            fresh_rtt.append(dt)
        else:
            bad += 1
    check("UDP: 200 queries from 200 fresh sockets (200 flows) all answered", bad == 0,
          f"{bad} unanswered")
    print(f"UDP DNS round trip, new flow per query (200): median {pct(fresh_rtt, 0.5):.3f} ms "
          f"p99 {pct(fresh_rtt, 0.99):.3f} ms", flush=True)
    usock.close()
    direct.close()
    s = status()
    busy = s["flows"]["active"]
    s = wait_status(lambda s: s["flows"]["active"] == 0, limit=10)
    check("UDP: idle flows end (1 s idle timeout): no active flow left",
          busy >= 1 and s["flows"]["active"] == 0, f"{busy} {s.get('flows')}")

    if BENCH:
        warm = f"http://{v4}:{WEB_PORT}/index.html"
        curl(warm)
        bench = {"tun": (throughput([f"http://{v4}:{WEB_PORT}/huge.bin"]),
                         ttfb([warm], 21))}

    # ---- SIGTERM removes everything ----
    daemon.send_signal(signal.SIGTERM)
    try:
        prc = daemon.wait(timeout=15 * SCALE)
    except subprocess.TimeoutExpired:
        prc = None
    check("SIGTERM: exit 0, no device, table or rule left", prc == 0 and
          kernel_state() == (False, False, 0), f"{prc} {kernel_state()}")

    # ---- kill -9 leaves the table and rules; `up` removes them first ----
    daemon, dlog, s = up()
    check("up again without the stub: the alias still gets an address",
          any(n["name"] == "web.sp" for n in s.get("tun", {}).get("names", [])), json.dumps(s))
    v4b = next((n["v4"] for n in s.get("tun", {}).get("names", []) if n["name"] == "web.sp"), v4)
    daemon.kill()
    daemon.wait(timeout=10)
    left = kernel_state()
    check("after kill -9: the kernel removed the device, the table and rules are left",
          left == (False, True, 2), left)
    daemon, dlog, s = up()
    log_text = open(dlog).read()
    check("next `up` reports and removes the leftovers, then comes up",
          "removed leftovers" in log_text and kernel_state() == (True, True, 2) and
          s.get("mode") == "tun", log_text[-1500:])
    rc, body, err = curl(f"http://{v4b}:{WEB_PORT}/index.html")
    check("after the leftovers were removed: the page through the tunnel",
          rc == 0 and body == page.decode(), f"{rc} {err}")
    rc, out, err = sp("down")
    try:
        prc = daemon.wait(timeout=15 * SCALE)
    except subprocess.TimeoutExpired:
        prc = None
    check("`down`: daemon exits 0 and leaves no device, table or rule",
          rc == 0 and prc == 0 and kernel_state() == (False, False, 0),
          f"{rc} {out}{err} {prc} {kernel_state()}")
    links = run("ip", "-o", "link")[1]
    check("`ip link` lists no sallyport device", "sallyport" not in links, links)

    # ---- kill -9, then `down` cleans up ----
    daemon, dlog, s = up()
    daemon.kill()
    daemon.wait(timeout=10)
    rc, out, err = sp("down")
    check("`down` after kill -9: removes the leftovers and says so (exit 0)",
          rc == 0 and "removed" in out and kernel_state() == (False, False, 0),
          f"{rc} {out} {err} {kernel_state()}")
    rc, out, err = sp("down")
    check("`down` with nothing left: not running (exit 3)", rc == 3, f"{rc} {out} {err}")

    # ---- proxy mode: SOCKS5 UDP ASSOCIATE ----
    SOCKS_PORT, HTTP_PORT = sp_stack.free_port(), sp_stack.free_port()
    daemon, dlog, s = up("--socks", f"127.0.0.1:{SOCKS_PORT}", "--http-proxy",
                         f"127.0.0.1:{HTTP_PORT}", mode="proxy")
    check("proxy mode up", s.get("mode") == "proxy", json.dumps(s))

    def socks_associate():
        c = socket.create_connection(("127.0.0.1", SOCKS_PORT), timeout=5)
        c.sendall(b"\x05\x01\x00")
        greet = c.recv(2)
        c.sendall(b"\x05\x03\x00\x01" + bytes(6))
        r = b""
        while len(r) < 10:
            chunk = c.recv(10 - len(r))
            if not chunk:
                break
            r += chunk
        relay = (socket.inet_ntoa(r[4:8]), struct.unpack(">H", r[8:10])[0]) if len(r) == 10 \
            else None
        return c, greet, r[:2], relay

    def socks_hdr(host, port):
        return b"\0\0\0\x03" + bytes([len(host)]) + host.encode() + struct.pack(">H", port)

    def socks_ask(sock, relay, host, port, qid, timeout=3.0):
        sock.settimeout(timeout)
        hdr = socks_hdr(host, port)
        t0 = time.perf_counter()
        try:
            sock.sendto(hdr + dns_msg("www.sallyport.test", qid), relay)
            while True:
                r, frm = sock.recvfrom(4096)
                if r.startswith(hdr) and dns_a(r[len(hdr):])[0] == qid:
                    return dns_a(r[len(hdr):])[1], frm, time.perf_counter() - t0
        except (OSError, IndexError, struct.error):
            return None, None, None

    ctl, greet, reply, relay = socks_associate()
    check("SOCKS5 UDP ASSOCIATE: granted with a relay address on 127.0.0.1",
          greet == b"\x05\x00" and reply == b"\x05\x00" and relay is not None and
          relay[0] == "127.0.0.1" and relay[1] != 0, f"{greet} {reply} {relay}")
    relay = relay or ("127.0.0.1", 9)
    us = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ips, frm, _ = socks_ask(us, relay, "dns.sp", DNSQ_PORT, 0x7171, timeout=5 * SCALE)
    check("SOCKS5 UDP: a query to dns.sp answered through the tunnel, with the same header,"
          " from the relay", ips == ["10.20.30.40"] and frm == relay, f"{ips} {frm}")
    socks_rtt = []
    for i in range(50):
        ips, frm, dt = socks_ask(us, relay, "dns.sp", DNSQ_PORT, 7000 + i, timeout=3 * SCALE)
        if ips == ["10.20.30.40"]:
            socks_rtt.append(dt)
    check("SOCKS5 UDP: 50 queries on the association all answered", len(socks_rtt) == 50,
          len(socks_rtt))
    print(f"SOCKS5 UDP DNS round trip, 50 queries: median {pct(socks_rtt, 0.5):.3f} ms "
          f"p99 {pct(socks_rtt, 0.99):.3f} ms", flush=True)
    ips, frm, _ = socks_ask(us, relay, "web.sp", WEB_PORT, 0x7272, timeout=1.0)
    s = wait_status(lambda s: any(d["reason"] == "port_not_allowed" for d in
                                  s.get("denials", [])))
    check("SOCKS5 UDP to a TCP-only resource port: no answer, port_not_allowed by the connector",
          ips is None and any(d["reason"] == "port_not_allowed" and d["by"] == "connector" and
                              d["target"] == f"127.0.0.1:{WEB_PORT}"
                              for d in s.get("denials", [])), s.get("denials"))
    ips, frm, _ = socks_ask(us, relay, "example.com", 53, 0x7373, timeout=0.5)
    s = status()
    check("SOCKS5 UDP to an unprotected name: no answer, not_protected by the client",
          ips is None and any(d["reason"] == "not_protected" and d["by"] == "client" and
                              d["target"] == "example.com:53" for d in s.get("denials", [])),
          s.get("denials"))
    socks_ask(us, relay, "dns.sp", DNSQ_PORT, 0x7575, timeout=3 * SCALE)
    s = status()
    busy = sum(1 for f in s["flows"].get("open", []) if f.get("protocol") == "udp")
    ctl.close()
    s = wait_status(lambda s: s["flows"]["active"] == 0, limit=10)
    # the relay socket is gone: a connected socket gets the ICMP port unreachable back
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.settimeout(2)
    probe.connect(relay)
    try:
        probe.send(socks_hdr("dns.sp", DNSQ_PORT) + dns_msg("www.sallyport.test", 0x7474))
        probe.recv(4096)
        gone = "answered"
    except ConnectionRefusedError:
        gone = "refused"
    except OSError as e:
        gone = str(e)
    probe.close()
    check("SOCKS5 UDP: closing the connection closes the relay socket and ends the flows",
          busy >= 1 and s["flows"]["active"] == 0 and gone == "refused",
          f"{busy} {gone} {s.get('flows')}")
    us.close()
    rc, out, err = sp("down")
    try:
        prc = daemon.wait(timeout=15 * SCALE)
    except subprocess.TimeoutExpired:
        prc = None
    check("proxy mode `down`: exit 0", rc == 0 and prc == 0, f"{rc} {out}{err} {prc}")

    if BENCH:
        direct = (throughput([f"http://127.0.0.1:{WEB_PORT}/huge.bin"]),
                  ttfb([f"http://127.0.0.1:{WEB_PORT}/index.html"], 21))
        LB = "127.77.0.0/16"
        daemon, dlog, s = up("--loopback-range", LB, mode="loopback")
        lb_addr = next((l["address"] for l in s.get("listeners", [])
                        if l["kind"] == "loopback" and l["name"] == "web.sp"), "127.77.0.1")
        warm = f"http://{lb_addr}:{WEB_PORT}/index.html"
        curl(warm)
        bench["loopback"] = (throughput([f"http://{lb_addr}:{WEB_PORT}/huge.bin"]),
                             ttfb([warm], 21))
        sp("down")
        daemon.wait(timeout=15)
        bench["direct"] = direct
        print("\nmode      MiB/s (200 MiB)   first byte ms (median of 21, warm tunnel)")
        for k in ("tun", "loopback", "direct"):
            (mib, size), t = bench[k]
            print(f"{k:9} {mib:10.0f}        {t:8.3f}   ({size} bytes)")
        print(f"ratios: tun/loopback throughput {bench['tun'][0][0] / bench['loopback'][0][0]:.2f},"
              f" tun/direct {bench['tun'][0][0] / direct[0][0]:.2f};"
              f" first byte tun/loopback {bench['tun'][1] / bench['loopback'][1]:.2f},"
              f" tun/direct {bench['tun'][1] / direct[1]:.2f}", flush=True)
finally:
    stop_daemons()
    stack.close()
    if check.failed == 0:
        import shutil
        shutil.rmtree(WORK, ignore_errors=True)
    else:
        print(f"(logs kept in {WORK}, inside the namespace's view of /tmp)")

print(check.summary())
sys.exit(check.exit_code())
