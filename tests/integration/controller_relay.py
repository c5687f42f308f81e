#!/usr/bin/env python3
"""Integration test: the relay inside a running controller (docs/protocol.md §3).

A connector is enrolled, fetches a relay-connector token over the connector API, and
registers at the relay through tests/tools/relay_peer.c (connector mode), which answers
each dial with a data connection joined to an echo server. A client (the same tool in
client mode) gets a relay ticket over the client API (access token minted with the
controller's signing key read from its database, as docs/protocol.md §1.3 describes) and
sends bytes through the relay that must come back unchanged. Then the refusals: replayed
ticket (3), forged ticket (1), expired ticket (2), unknown connector and a connector that
never answers its dial (4), over the per-client limit (5); the routes' own refusals; the
relay metrics; a clean SIGTERM. Last, the relayed throughput against a direct loopback
connection to the same echo server (1 GiB each way; 64 MiB under the sanitizers).

The relay never sees plaintext by design: a real client and connector run TLS 1.3 end to
end inside the spliced connection; this test's bytes are opaque to the relay all the same.

Usage: controller_relay.py PATH-TO-sallyport-controller
"""
import base64
import hashlib
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

BIN = sys.argv[1] if len(sys.argv) > 1 else sys.exit("usage: controller_relay.py BIN")
PEER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(BIN))), "tests", "tools",
                    "relay_peer")
SANITIZED = os.environ.get("SALLYPORT_SANITIZED", "0") in ("1", "ON", "TRUE", "true")
WORK = tempfile.mkdtemp(prefix="sp-relay-")
STATE = os.path.join(WORK, "state")
DB = os.path.join(STATE, "controller.db")
passed = 0
failed = 0
procs = []


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {name} {detail}", flush=True)


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def new_id():
    return os.urandom(16).hex()


def make_key(name):
    path = os.path.join(WORK, name + ".pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", path], check=True, capture_output=True)
    pub = subprocess.run(["openssl", "pkey", "-in", path, "-pubout"], check=True,
                         capture_output=True).stdout.decode()
    return path, pub


def der_read(data, pos, tag):
    if data[pos] != tag:
        raise ValueError("unexpected DER tag")
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        length = int.from_bytes(data[pos:pos + n], "big")
        pos += n
    return data[pos:pos + length], pos + length


def der_to_jose(der):
    seq, _ = der_read(der, 0, 0x30)
    r, pos = der_read(seq, 0, 0x02)
    s, _ = der_read(seq, pos, 0x02)
    return int.from_bytes(r, "big").to_bytes(32, "big") + int.from_bytes(s, "big").to_bytes(32, "big")


def es256_sign(key_path, header, claims):
    signing_input = (b64url(json.dumps(header).encode()) + "." +
                     b64url(json.dumps(claims).encode())).encode()
    der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key_path], input=signing_input,
                         check=True, capture_output=True).stdout
    return signing_input.decode() + "." + b64url(der_to_jose(der))


def claims_of(jws):
    return json.loads(b64url_decode(jws.split(".")[1]))


def connector_token(key_path, connector_id):
    iat = int(time.time())
    return es256_sign(key_path, {"alg": "ES256", "kid": connector_id, "typ": "JWT"},
                      {"iss": connector_id, "aud": "sallyport:controller", "iat": iat,
                       "exp": iat + 240})


def cid_of(connector_id):
    return b64url(hashlib.sha256(connector_id.encode()).digest())


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


PORT = free_port()
RELAY_PORT = free_port()
URL = f"http://127.0.0.1:{PORT}"
RELAY = f"127.0.0.1:{RELAY_PORT}"


def call(method, path, body=None, token=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(URL + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, text


def error_code(body):
    return body.get("error", {}).get("code") if isinstance(body, dict) else None


def db():
    conn = sqlite3.connect(DB, timeout=10, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def write_file(name, text):
    path = os.path.join(WORK, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def start(args, **kw):
    p = subprocess.Popen([PEER] + args, stdout=subprocess.PIPE, text=True, **kw)
    procs.append(p)
    return p


def client(ticket, send=0, timeout=600, source=None):
    """(status line, echo line or "") of one client run."""
    args = ["client", "--relay", RELAY, "--ticket-file", write_file("ticket-" + new_id(), ticket)]
    if source:
        args += ["--source", source]
    if send:
        args += ["--send", str(send)]
    r = subprocess.run([PEER] + args, capture_output=True, text=True, timeout=timeout)
    lines = r.stdout.splitlines() + ["", ""]
    return lines[0], lines[1]


def metrics():
    with urllib.request.urlopen(URL + "/metrics", timeout=10) as resp:
        return resp.read().decode()


def metric(text, name, labels=None):
    pattern = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" (\S+)"
    m = re.search("^" + pattern + "$", text, re.M)
    return int(float(m.group(1))) if m else -1


proc = None
try:
    check("relay peer built", os.access(PEER, os.X_OK), PEER)
    subprocess.run([BIN, "migrate", "--state-dir", STATE], check=True, capture_output=True)
    now = int(time.time())
    net_a, net_b = new_id(), new_id()
    res_a = new_id()
    user, device, sess, group = new_id(), new_id(), new_id(), new_id()
    conn = db()
    for net, name in ((net_a, "vpc-a"), (net_b, "vpc-b")):
        conn.execute("INSERT INTO remote_networks (id, name, created_at, updated_at)"
                     " VALUES (?,?,?,?)", (net, name, now, now))
    conn.execute("INSERT INTO resources (id, network_id, name, address, created_at, updated_at)"
                 " VALUES (?,?,?,?,?,?)", (res_a, net_a, "echo", "echo.corp.example", now, now))
    conn.execute("INSERT INTO resources (id, network_id, name, address, created_at, updated_at)"
                 " VALUES (?,?,?,?,?,?)", (new_id(), net_b, "other", "10.9.0.0/16", now, now))
    _, device_pub = make_key("device")
    conn.execute("INSERT INTO users (id, issuer, subject, email, created_at, updated_at)"
                 " VALUES (?,?,?,?,?,?)", (user, "https://idp", "alice", "alice@example.com", now, now))
    conn.execute("INSERT INTO devices (id, user_id, public_key_thumbprint, public_key_pem, state,"
                 " first_seen_at, last_seen_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
                 (device, user, "A" * 43, device_pub, "approved", now, now, now))
    conn.execute("INSERT INTO sessions (id, user_id, device_id, auth_method, auth_time, created_at,"
                 " last_used_at, expires_at) VALUES (?,?,?,?,?,?,?,?)",
                 (sess, user, device, "oidc", now, now, now, now + 3600))
    conn.execute("INSERT INTO groups (id, name, created_at, updated_at) VALUES (?,?,?,?)",
                 (group, "eng", now, now))
    conn.execute("INSERT INTO memberships (user_id, group_id, created_at) VALUES (?,?,?)",
                 (user, group, now))
    conn.execute("INSERT INTO policies (id, group_id, resource_id, created_at, updated_at)"
                 " VALUES (?,?,?,?,?)", (new_id(), group, res_a, now, now))
    conn.close()

    def enroll_token(network):
        return subprocess.run([BIN, "connector-token", "create", "--network", network,
                               "--state-dir", STATE], check=True,
                              capture_output=True).stdout.decode().strip()

    tokens = {"c1": enroll_token("vpc-a"), "c2": enroll_token("vpc-b"),
              "c3": enroll_token("vpc-a")}

    log = open(os.path.join(WORK, "serve.log"), "w")
    proc = subprocess.Popen([BIN, "serve", "--state-dir", STATE, "--http-listen",
                             f"127.0.0.1:{PORT}", "--public-url", URL, "--relay-listen", RELAY,
                             "--relay-max-per-client", "3", "--log-format", "json"], stderr=log)
    for _ in range(400):
        try:
            urllib.request.urlopen(URL + "/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.05)

    # ---- enrollment of three connectors (c1, c3 in vpc-a; c2 in vpc-b) ----
    keys, ids = {}, {}
    for name in ("c1", "c2", "c3"):
        keys[name], pub = make_key(name)
        status, resp = call("POST", "/api/connector/v1/enroll",
                            {"token": tokens[name], "name": name, "public_key_pem": pub})
        check(f"enroll {name}", status == 201, f"{status} {resp}")
        ids[name] = resp.get("connector_id", "")

    # ---- relay-connector token ----
    status, resp = call("POST", "/api/connector/v1/relay-token", {},
                        token=connector_token(keys["c1"], ids["c1"]))
    check("relay-token answers 200", status == 200, f"{status} {resp}")
    rtoken = resp.get("token", "")
    c = claims_of(rtoken) if rtoken else {}
    check("relay-token claims", sorted(c) == ["aud", "cid", "exp", "iat", "typ", "v"] and
          c["typ"] == "relay-connector" and c["aud"] == "sallyport:relay" and
          c["cid"] == cid_of(ids["c1"]) and c["exp"] - c["iat"] == 600 and
          resp.get("expires_at") == c["exp"], str(c))
    status, resp = call("POST", "/api/connector/v1/relay-token", {"x": 1},
                        token=connector_token(keys["c1"], ids["c1"]))
    check("relay-token refuses a body with fields", status == 400, f"{status} {resp}")
    status, resp = call("POST", "/api/connector/v1/relay-token", {})
    check("relay-token needs a connector token", status == 401, f"{status} {resp}")
    status, resp = call("POST", "/api/connector/v1/relay-token",
                        token=connector_token(keys["c3"], ids["c3"]))
    check("relay-token without a body", status == 200, f"{status} {resp}")
    rtoken3 = resp.get("token", "")

    # ---- relay tickets over the client API ----
    conn = db()
    kid, signing_pem = conn.execute("SELECT kid, private_key_pem FROM signing_keys"
                                    " ORDER BY not_before LIMIT 1").fetchone()
    conn.close()
    signing_key = write_file("controller-signing.pem", signing_pem)
    os.chmod(signing_key, 0o600)
    t = int(time.time())
    access = es256_sign(signing_key, {"alg": "ES256", "kid": kid, "typ": "JWT"},
                        {"v": 1, "typ": "access", "iss": URL, "aud": "sallyport:controller",
                         "iat": t, "exp": t + 900, "sub": user, "sid": sess, "dev": device,
                         "cnf": {"jkt": "A" * 43}})

    def ticket(name="c1"):
        status, resp = call("POST", "/api/client/v1/relay-tickets",
                            {"connector_id": ids.get(name, name)}, token=access)
        return status, resp

    status, resp = ticket()
    check("relay-tickets answers 200", status == 200, f"{status} {resp}")
    t1 = resp.get("ticket", "")
    c = claims_of(t1) if t1 else {}
    check("relay ticket claims are exactly §1.2",
          sorted(c) == ["aud", "cid", "exp", "iat", "jti", "typ", "v"] and c["v"] == 1 and
          c["typ"] == "relay-ticket" and c["aud"] == "sallyport:relay" and
          c["cid"] == cid_of(ids["c1"]) and c["exp"] == c["iat"] + 60 and
          re.fullmatch("[0-9a-f]{32}", c["jti"]) is not None and resp.get("expires_at") == c["exp"],
          str(c))
    status, resp = ticket("c2")
    check("ticket for a connector of a network without a policy: 403 no_policy",
          status == 403 and error_code(resp) == "no_policy", f"{status} {resp}")
    status, resp = ticket(new_id())
    check("ticket for an unknown connector: 403 no_policy",
          status == 403 and error_code(resp) == "no_policy", f"{status} {resp}")
    status, resp = call("POST", "/api/client/v1/relay-tickets",
                        {"connector_id": ids["c1"], "extra": 1}, token=access)
    check("ticket request with an unknown field: 400", status == 400, f"{status} {resp}")
    status, resp = call("POST", "/api/client/v1/relay-tickets", {"connector_id": 5}, token=access)
    check("ticket request with a mistyped id: 400", status == 400, f"{status} {resp}")
    status, resp = call("POST", "/api/client/v1/relay-tickets", {"connector_id": ids["c1"]})
    check("ticket request without an access token: 401", status == 401, f"{status} {resp}")

    # ---- the peers: echo server, connector c1 (answers dials), connector c3 (never does) ----
    echo = start(["echo", "--listen", "127.0.0.1:0"])
    echo_port = int(echo.stdout.readline().split()[1])
    peer1 = start(["connector", "--relay", RELAY, "--token-file", write_file("rt1", rtoken),
                   "--target", f"127.0.0.1:{echo_port}"])
    check("connector c1 registers", peer1.stdout.readline().strip() == "status 0 paired")
    peer3 = start(["connector", "--relay", RELAY, "--token-file", write_file("rt3", rtoken3),
                   "--target", f"127.0.0.1:{echo_port}", "--ignore-dials"])
    check("connector c3 registers", peer3.stdout.readline().strip() == "status 0 paired")

    # ---- bytes through the relay ----
    size = 50 << 20
    line, echo_line = client(t1, send=size)
    check("client paired", line == "status 0 paired", line)
    check("50 MiB echoed unchanged through the relay", echo_line.startswith(f"echo ok {size} "),
          echo_line)

    # ---- refusals ----
    line, _ = client(t1)
    check("replayed ticket: status 3", line == "status 3 replayed", line)
    t = int(time.time())
    other_key, _ = make_key("forger")
    forged = es256_sign(other_key, {"alg": "ES256", "kid": kid, "typ": "JWT"},
                        {"v": 1, "typ": "relay-ticket", "aud": "sallyport:relay", "jti": new_id(),
                         "iat": t, "exp": t + 60, "cid": cid_of(ids["c1"])})
    line, _ = client(forged)
    check("forged ticket (another key, same kid): status 1", line == "status 1 bad_ticket", line)
    unknown_kid = es256_sign(other_key, {"alg": "ES256", "kid": "not-a-kid", "typ": "JWT"},
                             claims_of(forged))
    line, _ = client(unknown_kid)
    check("ticket with an unknown kid: status 1", line == "status 1 bad_ticket", line)

    def minted(cid, iat, exp, typ="relay-ticket", **extra):
        claims = {"v": 1, "typ": typ, "aud": "sallyport:relay", "jti": new_id(), "iat": iat,
                  "exp": exp, "cid": cid}
        claims.update(extra)
        return es256_sign(signing_key, {"alg": "ES256", "kid": kid, "typ": "JWT"}, claims)

    line, _ = client(minted(cid_of(ids["c1"]), t - 200, t - 140))
    check("expired ticket: status 2", line == "status 2 expired", line)
    line, _ = client(minted(cid_of(ids["c1"]), t, t + 3600))
    check("ticket living longer than 60 s: status 2", line == "status 2 expired", line)
    line, _ = client(minted(cid_of(ids["c1"]), t, t + 60, typ="relay-connector"))
    check("a relay-connector token is not a ticket: status 1", line == "status 1 bad_ticket", line)
    line, _ = client(minted(cid_of(ids["c1"]), t, t + 60, aud="sallyport:controller"))
    check("ticket for another audience: status 1", line == "status 1 bad_ticket", line)
    line, _ = client(minted(cid_of(ids["c2"]), t, t + 60))
    check("ticket for a connector not registered: status 4",
          line == "status 4 connector_unavailable", line)
    status, resp = ticket("c3")
    t0 = time.time()
    line, _ = client(resp.get("ticket", "x"))
    waited = time.time() - t0
    check("connector that never answers its dial: status 4 after the pairing timeout",
          line == "status 4 connector_unavailable" and 4.5 <= waited <= 8, f"{line} {waited:.2f}")
    # A registration with a client ticket is refused.
    reg = subprocess.run([PEER, "connector", "--relay", RELAY, "--token-file",
                          write_file("bad-reg", ticket()[1].get("ticket", "x")), "--target",
                          f"127.0.0.1:{echo_port}"], capture_output=True, text=True, timeout=30)
    check("registration with a ticket instead of a relay-connector token: status 1",
          reg.stdout.startswith("status 1 bad_ticket"), reg.stdout)

    # ---- per-client limit (relay_max_per_client = 3) ----
    holders = []
    for i in range(3):
        args = ["client", "--relay", RELAY, "--ticket-file",
                write_file(f"hold{i}", ticket()[1]["ticket"]), "--hold"]
        h = start(args, stdin=subprocess.PIPE)
        holders.append(h)
        check(f"held connection {i + 1} paired", h.stdout.readline().strip() == "status 0 paired")
    line, _ = client(ticket()[1]["ticket"])
    check("fourth connection from the same address: status 5", line == "status 5 overloaded", line)
    for h in holders:
        h.stdin.close()
        h.wait(timeout=30)
    time.sleep(0.3)
    line, echo_line = client(ticket()[1]["ticket"], send=1 << 20)
    check("after they close, a connection is paired again",
          line == "status 0 paired" and echo_line.startswith("echo ok"), f"{line} {echo_line}")

    # ---- many clients at once, each from its own loopback address (the per-client limit
    # counts addresses) ----
    crowd = 100
    each = (256 << 10) if SANITIZED else (4 << 20)
    crowd_tickets = [ticket()[1]["ticket"] for _ in range(crowd)]
    runners = []
    t0 = time.time()
    for i, tk in enumerate(crowd_tickets):
        args = ["client", "--relay", RELAY, "--ticket-file", write_file(f"crowd{i}", tk),
                "--send", str(each), "--source", f"127.0.{1 + i // 250}.{2 + i % 250}"]
        runners.append(subprocess.Popen([PEER] + args, stdout=subprocess.PIPE, text=True))
    outputs = [r.communicate(timeout=300)[0] for r in runners]
    crowd_s = time.time() - t0
    ok = sum(1 for o in outputs if o.startswith("status 0 paired") and f"echo ok {each} " in o)
    check(f"{crowd} concurrent clients from {crowd} addresses all echoed", ok == crowd,
          f"{ok} ok; e.g. {[o for o in outputs if 'echo ok' not in o][:2]}")
    print(f"{crowd} concurrent relayed clients x {each >> 10} KiB echoed in {crowd_s:.2f} s",
          flush=True)

    # ---- a crowd held open at once: every connection paired, counted by the gauge ----
    held = 200 if SANITIZED else 1000
    t0 = time.time()
    crowd_file = write_file("crowd-tickets", "\n".join(ticket()[1]["ticket"] for _ in range(held)))
    tickets_s = time.time() - t0
    cp = start(["crowd", "--relay", RELAY, "--ticket-file", crowd_file], stdin=subprocess.PIPE)
    crowd_line = cp.stdout.readline().strip()
    check(f"{held} connections held open at once, all paired and echoing",
          crowd_line.startswith(f"crowd {held} paired {held} echoed {held} "), crowd_line)
    gauge = metric(metrics(), "sallyport_relay_connections")
    check("gauge counts the open relayed connections", gauge == held, str(gauge))
    cp.stdin.close()
    check("crowd exits cleanly", cp.wait(timeout=120) == 0)
    print(f"{held} relayed connections open at once: {held} tickets in {tickets_s:.2f} s, "
          f"{crowd_line}", flush=True)
    for _ in range(100):
        if metric(metrics(), "sallyport_relay_connections") == 0:
            break
        time.sleep(0.05)
    check("gauge back to 0 once they close", metric(metrics(), "sallyport_relay_connections") == 0)

    # ---- metrics ----
    m = metrics()
    check("metric: paired", metric(m, "sallyport_relay_paired_total") == 5 + crowd + held,
          str(metric(m, "sallyport_relay_paired_total")))
    check("metric: bytes up", metric(m, "sallyport_relay_bytes_total", 'direction="up"') >= size + (1 << 20))
    check("metric: refused replayed",
          metric(m, "sallyport_relay_refused_total", 'status="replayed"') == 1)
    check("metric: refused bad ticket",
          metric(m, "sallyport_relay_refused_total", 'status="bad_ticket"') == 5)
    check("metric: refused expired",
          metric(m, "sallyport_relay_refused_total", 'status="expired"') == 2)
    check("metric: refused unavailable",
          metric(m, "sallyport_relay_refused_total", 'status="connector_unavailable"') == 2)
    check("metric: refused overloaded",
          metric(m, "sallyport_relay_refused_total", 'status="overloaded"') == 1)
    check("metric: two connectors registered", metric(m, "sallyport_relay_connectors") == 2)

    # ---- throughput: relayed vs direct, same echo server, same run ----
    big = (64 << 20) if SANITIZED else (1 << 30)
    r = subprocess.run([PEER, "client", "--direct", f"127.0.0.1:{echo_port}", "--send", str(big)],
                       capture_output=True, text=True, timeout=600)
    direct_s = float(r.stdout.split()[-1]) if "echo ok" in r.stdout else 0
    line, echo_line = client(ticket()[1]["ticket"], send=big)
    relay_s = float(echo_line.split()[-1]) if echo_line.startswith("echo ok") else 0
    # The same two hops without the relay protocol: two chained plain splice forwarders.
    fwd2 = start(["forward", "--listen", "127.0.0.1:0", "--target", f"127.0.0.1:{echo_port}"])
    fwd2_port = int(fwd2.stdout.readline().split()[1])
    fwd1 = start(["forward", "--listen", "127.0.0.1:0", "--target", f"127.0.0.1:{fwd2_port}"])
    fwd1_port = int(fwd1.stdout.readline().split()[1])
    r2 = subprocess.run([PEER, "client", "--direct", f"127.0.0.1:{fwd1_port}", "--send", str(big)],
                        capture_output=True, text=True, timeout=600)
    hops_s = float(r2.stdout.split()[-1]) if "echo ok" in r2.stdout else 0
    check("throughput transfers complete", direct_s > 0 and relay_s > 0 and hops_s > 0,
          f"{r.stdout} {echo_line} {r2.stdout}")
    if direct_s > 0 and relay_s > 0 and hops_s > 0:
        mib = big / (1 << 20)
        print(f"throughput ({mib:.0f} MiB echoed): direct {mib / direct_s:.0f} MiB/s, relayed "
              f"{mib / relay_s:.0f} MiB/s (relayed/direct = {direct_s / relay_s:.2f}), two plain "
              f"splice forwarders {mib / hops_s:.0f} MiB/s (relayed/forwarders = "
              f"{hops_s / relay_s:.2f})", flush=True)

    # ---- the standalone relay (sallyport-relay), keys fetched from the controller ----
    standalone = os.path.join(os.path.dirname(os.path.abspath(BIN)), "sallyport-relay")
    check("standalone relay built", os.access(standalone, os.X_OK), standalone)
    relay2 = f"127.0.0.1:{free_port()}"
    slog = open(os.path.join(WORK, "relay.log"), "w")
    sproc = subprocess.Popen([standalone, "--controller-url", URL, "--relay-listen", relay2,
                              "--relay-max-per-client", "2"], stderr=slog)
    procs.append(sproc)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", int(relay2.split(":")[1])), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    status, resp = call("POST", "/api/connector/v1/relay-token", {},
                        token=connector_token(keys["c1"], ids["c1"]))
    speer = start(["connector", "--relay", relay2, "--token-file", write_file("rt1b", resp["token"]),
                   "--target", f"127.0.0.1:{echo_port}"])
    check("connector registers at the standalone relay", speer.stdout.readline().strip() ==
          "status 0 paired")
    st = ticket()[1]["ticket"]
    r = subprocess.run([PEER, "client", "--relay", relay2, "--ticket-file", write_file("st", st),
                        "--send", str(8 << 20)], capture_output=True, text=True, timeout=120)
    check("8 MiB echoed through the standalone relay",
          r.stdout.startswith("status 0 paired") and f"echo ok {8 << 20} " in r.stdout, r.stdout)
    r = subprocess.run([PEER, "client", "--relay", relay2, "--ticket-file", write_file("st2", st)],
                       capture_output=True, text=True, timeout=60)
    check("standalone relay refuses a replay", r.stdout.startswith("status 3 replayed"), r.stdout)
    r = subprocess.run([PEER, "client", "--relay", relay2, "--ticket-file",
                        write_file("st3", forged)], capture_output=True, text=True, timeout=60)
    check("standalone relay refuses a forged ticket", r.stdout.startswith("status 1 bad_ticket"),
          r.stdout)
    sproc.terminate()
    check("standalone relay stops cleanly", sproc.wait(timeout=30) == 0)

    # ---- shutdown ----
    peer1_rc = None
    proc.terminate()
    rc = proc.wait(timeout=60)
    proc = None
    check("controller stops cleanly", rc == 0, str(rc))
    try:
        peer1_rc = peer1.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    check("the connector's control connection ends with the relay", peer1_rc == 0, str(peer1_rc))
except Exception:  # a crash of the test itself is a failure, not a silent pass
    import traceback
    traceback.print_exc()
    failed += 1
finally:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
    if proc is not None:
        proc.kill()
        proc.wait()
    if failed:
        try:
            print(open(os.path.join(WORK, "serve.log")).read()[-6000:])
        except OSError:
            pass
    shutil.rmtree(WORK, ignore_errors=True)

print(f"controller_relay: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
