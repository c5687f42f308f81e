#!/usr/bin/env python3
"""Fault test: kill -9 of a separate `sallyport-relay` under load.

The controller's relay_public names only a separate sallyport-relay process; one connector
with NO direct listener (reachable only through that relay), nginx, and the real
`sallyport` daemon in proxy mode (service-key sign-in; flows through its HTTP proxy with
CONNECT, so a refusal comes back as `403` with a `sallyport-reason` header). Under load
(three slow downloads and a loop of new flows) the relay is SIGKILLed:
(1) the downloads in flight end (the relay spliced them) short of their length, and the
daemon logs the tunnel's end; (2) while the relay is down every new flow is refused with
`sallyport-reason: connector_unavailable` within a bounded time, none hangs, and the
connector counts no registered relay; (3) the relay restarted on the same address: the
connector registers again by itself (`sallyport_connector_relays_registered` back to 1) and
new flows succeed with no action on the client side (time from restart to the first good
flow printed); a relay ticket replayed at the restarted relay (which has forgotten its
`jti`s) with a grant bound to another device key is refused by the connector (bad_grant:
no flow without a valid grant); (4) the transfer retried after recovery is byte-exact.
Then the relay is stopped (SIGSTOP) while the connector is mid-registration (its preamble
accepted by the kernel, no status byte yet): the connector gives up on it after 10 s and
retries; the stopped relay is SIGKILLed, restarted, and the connector registers again.

Usage: relay_kill.py CONTROLLER CONNECTOR SP_TEST_CLIENT SALLYPORT
"""
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import faultlib
from faultlib import sp_stack

CTL, CONN, TOOL, SP = sys.argv[1:5]
RELAY_BIN = os.path.join(os.path.dirname(os.path.abspath(CTL)), "sallyport-relay")
run = faultlib.Run("relay_kill")
S = faultlib.SCALE
SLOW = 3 << 20  # bytes of /slow/big.bin, sent at 512 KiB/s: 6 s per download
OUTAGE = 4.0  # seconds the relay stays down
# After a 4 s outage the connector's next registration is at most ~7.75 s after the restart
# (its backoff doubles from 0.5 s, jitter over the upper half) and the daemon, whose backoff
# doubles from 1 s per failed relayed tunnel, tries at 3 s and, if the connector was not
# back yet (the relay answers connector_unavailable), at 11 s: the first good flow comes
# within 11 s of the restart (14 s with slack).
RECOVERY_MAX = 14.0


def counter(port, name):
    try:
        m = re.search(rf"^{name} (\d+)$", faultlib.metrics(port), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def proxy_get(proxy, web, path, timeout):
    """GET path from nginx through the daemon's HTTP proxy (CONNECT). Returns a dict:
    ok (200 and the whole body), refused (the proxy's reason or None), body, err, took."""
    t0 = time.time()
    out = {"ok": False, "refused": None, "body": b"", "err": "", "took": 0.0, "start": t0}
    chunks = []
    try:
        s = socket.create_connection(("127.0.0.1", proxy), timeout=timeout)
        s.settimeout(timeout)
        s.sendall(f"CONNECT 127.0.0.1:{web} HTTP/1.1\r\nHost: 127.0.0.1:{web}\r\n\r\n".encode())
        raw = b""
        while b"\r\n\r\n" not in raw:
            b = s.recv(4096)
            if not b:
                break
            raw += b
        head, _, rest = raw.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            m = re.search(rb"^sallyport-reason: (\S+)", head, re.M)
            out["refused"] = m.group(1).decode() if m else "(none) " + head[:60].decode()
            s.close()
            return out
        s.sendall(faultlib.http_get(path))
        chunks.append(rest)
        while True:
            b = s.recv(1 << 16)
            if not b:
                break
            chunks.append(b)
        s.close()
        head, body = faultlib.split_http(b"".join(chunks))
        out["body"] = body
        m = re.search(r"Content-Length: (\d+)", head)
        out["ok"] = head.startswith("HTTP/1.1 200") and m is not None and \
            int(m.group(1)) == len(body)
        if not out["ok"]:
            out["err"] = f"short: {len(body)} bytes, head {head[:40]!r}"
    except OSError as e:
        out["err"] = f"{type(e).__name__}: {e}"
        out["body"] = faultlib.split_http(b"".join(chunks))[1]
    finally:
        out["took"] = time.time() - t0
    return out


def start_relay(port):
    p = run.spawn([RELAY_BIN, "--controller-url", stack.url, "--relay-listen",
                   f"127.0.0.1:{port}"], "relay.log")
    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return p.poll() is not None
    faultlib.wait_until(up, 10 * S, 0.02)
    if p.poll() is not None:
        raise RuntimeError("sallyport-relay did not start")
    return p


try:
    stack = sp_stack.Stack(CTL, CONN, TOOL, run.work, sanitized=faultlib.SANITIZED)
    run.cleanups.append(stack.close)
    web = sp_stack.free_port()
    www = os.path.join(run.work, "www")
    slow = os.urandom(SLOW)
    sums = faultlib.make_www(www, {"small.bin": os.urandom(16 << 10), "slow/big.bin": slow,
                                   "big.bin": slow + os.urandom(5 << 20)})
    faultlib.start_nginx(stack, www, web, rate="512k")
    run.check("nginx up", sp_stack.wait_http(f"http://127.0.0.1:{web}/small.bin"))
    relay_port = sp_stack.free_port()
    stack.start_controller(extra_args=["--relay-public", f"127.0.0.1:{relay_port}"])
    res = stack.add_resource("web", "127.0.0.1", tcp=[web])
    relay = start_relay(relay_port)
    stack.start_connector(direct=False)
    mport = stack.metrics_port
    reg = faultlib.wait_until(
        lambda: counter(mport, "sallyport_connector_relays_registered") == 1, 15 * S)
    run.check("the connector (no direct listener) registers at the separate relay", reg,
              str(counter(mport, "sallyport_connector_relays_registered")))

    # the real client daemon, signed in with a service key, proxy mode
    now = int(time.time())
    sa, kid = sp_stack.new_id(), sp_stack.new_id()
    sa_key = os.path.join(run.work, "sa.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", sa_key], check=True, capture_output=True)
    os.chmod(sa_key, 0o600)
    sa_pub = subprocess.run(["openssl", "pkey", "-in", sa_key, "-pubout"], check=True,
                            capture_output=True, text=True).stdout
    sa_der = subprocess.run(["openssl", "pkey", "-in", sa_key, "-pubout", "-outform", "DER"],
                            check=True, capture_output=True).stdout
    c = stack.db()
    c.execute("INSERT INTO users (id, kind, display_name, created_at, updated_at)"
              " VALUES (?, 'service', 'ci', ?, ?)", (sa, now, now))
    c.execute("INSERT INTO service_accounts (user_id, name, created_at) VALUES (?, 'ci', ?)",
              (sa, now))
    c.execute("INSERT INTO service_account_keys (id, service_account_id, public_key_digest,"
              " public_key_pem, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
              (kid, sa, hashlib.sha256(sa_der).hexdigest(), sa_pub, now, now + 86400))
    c.execute("INSERT INTO memberships (user_id, group_id, created_at) VALUES (?,?,?)",
              (sa, stack.group, now))
    c.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALLYPORT_")}
    env["SALLYPORT_STATE_DIR"] = os.path.join(run.work, "client-state")
    r = subprocess.run([SP, "login", "--controller", stack.url, "--service-key", sa_key,
                        "--service-kid", kid, "--service-account", sa, "--device-name", "ci"],
                       env=env, capture_output=True, text=True, timeout=60)
    run.check("client: login with a service key", r.returncode == 0, r.stdout + r.stderr)
    proxy = sp_stack.free_port()
    daemon = run.spawn([SP, "up", "--foreground", "--mode", "proxy", "--socks", "",
                        "--http-proxy", f"127.0.0.1:{proxy}"], "sallyport.log", env=env)

    def status():
        r = subprocess.run([SP, "status", "--json"], env=env, capture_output=True, timeout=30)
        try:
            return json.loads(r.stdout)
        except ValueError:
            return {}
    faultlib.wait_until(lambda: (lambda s: s.get("state") == "up" and
                                 s.get("resources", 0) >= 1)(status()), 20 * S, 0.1)
    first = proxy_get(proxy, web, "/small.bin", 20 * S)
    run.check("a flow through the relayed tunnel before the fault",
              first["ok"] and faultlib.sha256(first["body"]) == sums["/small.bin"], str(first))
    tunnels = status().get("tunnels", [])
    run.check("status --json: one tunnel, path relayed, through the separate relay",
              len(tunnels) == 1 and tunnels[0].get("path") == "relayed" and
              tunnels[0].get("address") == f"127.0.0.1:{relay_port}", str(tunnels))

    # a grant and a relay ticket saved before the fault (for the replay after the restart)
    gfile, tfile = os.path.join(run.work, "grant.json"), os.path.join(run.work, "ticket.json")
    r = subprocess.run(stack.client_args("connect", res, f"127.0.0.1:{web}") +
                       ["--relay", "--save", gfile, "--ticket-save", tfile],
                       input=faultlib.http_get("/small.bin"), capture_output=True, timeout=30 * S)
    run.check("sp_test_client: a flow through the relay, grant and ticket saved",
              r.returncode == 0 and faultlib.sha256(faultlib.split_http(r.stdout)[1]) ==
              sums["/small.bin"], r.stderr[-300:])
    other_key = os.path.join(run.work, "other.key")
    subprocess.run([TOOL, "keygen", other_key], check=True, capture_output=True)

    # background load: a new flow every 50 ms, each recorded with its outcome and duration
    stop = threading.Event()
    log = []
    def loop():
        while not stop.is_set():
            log.append(proxy_get(proxy, web, "/small.bin", 30 * S))
            time.sleep(0.05)
    loader = threading.Thread(target=loop, daemon=True)
    loader.start()
    results = {}
    def download(i):
        results[i] = proxy_get(proxy, web, "/slow/big.bin", 60 * S)
    dls = [threading.Thread(target=download, args=(i,)) for i in range(3)]
    for t in dls:
        t.start()
    time.sleep(1.5)

    # ---- kill -9 of the relay ----
    killed = time.time()
    relay.kill()
    relay.wait(timeout=10)
    for t in dls:
        t.join(timeout=30 * S)
    ends = [results.get(i, {}) for i in range(3)]
    run.check("(1) the 3 downloads in flight end with an error, short of their length",
              all(not e.get("ok", True) and 0 < len(e.get("body", b"")) < SLOW for e in ends),
              str([(e.get("ok"), len(e.get("body", b"")), e.get("err")) for e in ends]))
    ended = max(e.get("start", 0) + e.get("took", 0) for e in ends) - killed
    run.figure(f"downloads in flight ended {ended:.2f} s after the relay's SIGKILL, after "
               + ", ".join(f"{len(e.get('body', b''))} bytes ({e.get('err')})" for e in ends))
    run.check("(1) ... within 5 s of the kill (no hang)", ended < 5 * S, f"{ended:.1f}")
    slog = open(os.path.join(run.work, "sallyport.log")).read()
    closed = re.search(rf"tunnel closed connector=c1 address=127\.0\.0\.1:{relay_port}"
                       r" why=(.*)$", slog, re.M)
    run.check("(1) the daemon logs the end of the relayed tunnel, naming the relay",
              closed is not None and closed.group(1).strip() in (
                  '"closed by the relay or the connector"', '"Connection reset by peer"'),
              slog[-1500:])
    if closed is not None:
        run.figure(f"the daemon's log: tunnel closed why={closed.group(1).strip()}")
    unreg = faultlib.wait_until(
        lambda: counter(mport, "sallyport_connector_relays_registered") == 0, 10 * S)
    run.check("(2) the connector counts no registered relay while it is down", unreg,
              str(counter(mport, "sallyport_connector_relays_registered")))
    time.sleep(max(0.0, killed + OUTAGE - time.time()))
    down = [e for e in log if e["start"] > killed + 0.5 and e["start"] < time.time() - 0.1]
    refused = [e for e in down if e["refused"] == "connector_unavailable"]
    run.check("(2) relay down: every new flow is refused with connector_unavailable",
              len(down) >= 10 and len(refused) == len(down),
              f"{len(down)} flows, {len(refused)} refused: " +
              str([(e["ok"], e["refused"], e["err"]) for e in down if e not in refused][:5]))
    slowest = max((e["took"] for e in down), default=-1.0)
    run.figure(f"relay down: {len(down)} new flows refused, the slowest answer in {slowest:.2f} s")
    run.check("(2) ... each answered within 2 s (none hangs)", 0 <= slowest < 2.0 * S,
              f"{slowest:.2f}")

    # ---- the relay back on the same address ----
    relay = start_relay(relay_port)
    restarted = time.time()
    rereg = faultlib.wait_until(
        lambda: counter(mport, "sallyport_connector_relays_registered") == 1, 30 * S)
    t_reg = time.time() - restarted
    run.check("(3) the connector registers again by itself (relays_registered 1)", rereg,
              str(counter(mport, "sallyport_connector_relays_registered")))
    run.figure(f"connector registered again {t_reg:.2f} s after the relay restart")
    good = faultlib.wait_until(
        lambda: next((e for e in list(log) if e["start"] > restarted and e["ok"]), None),
        35 * S, 0.05)
    run.check("(3) new flows succeed again with no action on the client side", good is not None)
    if good is not None:
        t_ok = good["start"] + good["took"] - restarted
        run.figure(f"relay restart to the first successful new flow: {t_ok:.2f} s")
        run.check(f"(3) ... the first within {RECOVERY_MAX:.0f} s of the restart (the backoffs"
                  f" after a {OUTAGE:.0f} s outage)", t_ok < RECOVERY_MAX * S, f"{t_ok:.2f}")
    mark = time.time()
    time.sleep(1.0)
    after = [e for e in list(log) if e["start"] > mark]
    run.check("(3) ... and keep succeeding", len(after) >= 5 and all(e["ok"] for e in after),
              f"{len(after)} " + str([(e["refused"], e["err"]) for e in after if not e["ok"]]))
    stop.set()
    loader.join(timeout=30 * S)

    # nothing is authorised without a valid grant: the restarted relay forgot the jti of
    # the saved ticket (relays share and keep no state), so it pairs; the connector refuses
    # the grant presented with another device key
    r = subprocess.run(stack.client_args("connect", res, f"127.0.0.1:{web}") +
                       ["--relay", "--load", gfile, "--ticket-load", tfile,
                        "--tls-key", other_key],
                       input=faultlib.http_get("/small.bin"), capture_output=True, timeout=30 * S)
    run.check("(1) a ticket replayed at the restarted relay with another key's grant: bad_grant",
              r.returncode == 3 and b"refused: bad_grant" in r.stderr and len(r.stdout) == 0,
              f"rc={r.returncode} {r.stderr[-200:]}")
    rows = stack.wait_flow_event("decision = 'deny' AND reason = 'bad_grant'", limit=10 * S)
    run.check("(1) the connector reports that refusal (one bad_grant flow event)",
              len(rows) == 1, str(rows))

    # ---- (4) the transfer retried after recovery ----
    t0 = time.time()
    again = proxy_get(proxy, web, "/big.bin", 60 * S)
    run.check("(4) an 8 MiB transfer retried after recovery is byte-exact (SHA-256)",
              again["ok"] and faultlib.sha256(again["body"]) == sums["/big.bin"] and
              again["body"][:SLOW] == slow, again["err"])
    run.figure(f"8 MiB through the restarted relay in {time.time() - t0:.2f} s")
    tunnels = status().get("tunnels", [])
    run.check("status --json: the tunnel is relayed again, through the restarted relay",
              len(tunnels) == 1 and tunnels[0].get("path") == "relayed" and
              tunnels[0].get("state") == "up", str(tunnels))

    # ---- kill -9 while the connector is mid-registration ----
    # The relay is restarted and stopped (SIGSTOP) as soon as it listens: the kernel still
    # accepts the connector's control connection and its preamble, which then waits for the
    # status byte; the stopped relay is SIGKILLed. (A registration that slipped in before
    # the stop is retried, at most 3 times.)
    def control_conns():
        r = subprocess.run(["ss", "-Htnp", "state", "established", "dst",
                            f"127.0.0.1:{relay_port}"], capture_output=True, text=True)
        return [ln for ln in r.stdout.splitlines() if f"pid={stack.connector.pid}," in ln]
    mid = False
    for attempt in range(3):
        relay.kill()
        relay.wait(timeout=10)
        faultlib.wait_until(
            lambda: counter(mport, "sallyport_connector_relays_registered") == 0, 10 * S)
        regs = counter(mport, "sallyport_connector_relay_registrations_total")
        relay = start_relay(relay_port)
        os.kill(relay.pid, signal.SIGSTOP)
        if counter(mport, "sallyport_connector_relays_registered") != 0:
            continue
        if not faultlib.wait_until(lambda: len(control_conns()) == 1, 10 * S, 0.05):
            continue
        mid = counter(mport, "sallyport_connector_relays_registered") == 0 and \
            counter(mport, "sallyport_connector_relay_registrations_total") == regs
        break
    run.check("the connector's registration sent to the stopped relay and unanswered", mid,
              f"attempts {attempt + 1}")
    # a relay that hangs mid-registration is not waited for: the connector gives up after
    # CONNECTOR_RELAY_REGISTER_TIMEOUT_MS (10 s) and tries again
    hung = time.time()
    timeout_line = '"why":"no answer from the relay in time"'
    timed_out = faultlib.wait_until(lambda: timeout_line in open(stack.connector_log).read(),
                                    15 * S, 0.1)
    run.check("the connector gives up on the hung relay's status byte (10 s) and retries",
              timed_out and counter(mport, "sallyport_connector_relays_registered") == 0,
              open(stack.connector_log).read()[-600:])
    run.figure(f"unanswered registration abandoned {time.time() - hung:.1f} s after it was"
               " seen waiting")
    relay.kill()
    relay.wait(timeout=10)
    relay = start_relay(relay_port)
    restarted = time.time()
    rereg = faultlib.wait_until(
        lambda: counter(mport, "sallyport_connector_relays_registered") == 1, 30 * S)
    run.check("... the connector registers again by itself (one more registration)",
              rereg and counter(mport, "sallyport_connector_relay_registrations_total") ==
              regs + 1, str(counter(mport, "sallyport_connector_relay_registrations_total")))
    run.figure(f"registered again {time.time() - restarted:.2f} s after the restart that"
               " followed a kill mid-registration")
    good = faultlib.wait_until(lambda: (lambda e: e if e["ok"] else None)(
        proxy_get(proxy, web, "/small.bin", 20 * S)), 20 * S, 0.2)
    run.check("... and a new flow through the daemon succeeds", good is not None and
              faultlib.sha256(good["body"]) == sums["/small.bin"])

    r = subprocess.run([SP, "down"], env=env, capture_output=True, timeout=30)
    try:
        drc = daemon.wait(timeout=15 * S)
    except subprocess.TimeoutExpired:
        drc = None
    run.check("client daemon stops (exit 0), no user action needed throughout", drc == 0,
              str(drc))
    stack.connector.terminate()
    run.check("connector stops cleanly", stack.connector.wait(timeout=30 * S) == 0)
    run.finish()
except Exception as e:
    run.finish(e)
