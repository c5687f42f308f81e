#!/usr/bin/env python3
"""Sallyport attack suite, data-plane half: refusals at the connector, the relay and the
client daemon.

Starts, on 127.0.0.1 only: the real controller (with its relay, --log-level debug
--log-format json), a tampering HTTP proxy in front of it (the connector's
SALLYPORT_URL), the real connector (direct listener, debug JSON log, SALLYPORT_DNS at a
dnsmasq the suite starts), nginx, an echo server and a connector stand-in at the relay
(tests/tools/relay_peer), and the real client `sallyport` signed in with a service key.
Tunnels and streams are opened by tests/tools/sp_test_client with grants the suite fetches,
alters or forges itself (`--load`). Each case asserts (1) the refusal at the wire (refused
stream with its reason, TLS handshake failure, relay status byte, HTTP status), (2) the
clear reason (the flow event's `reason` from the admin flow-events API and the
connector's `flow denied` log line with its detail, or the relay's refusal counter), and
(3) the event that must exist (flow event, audit event) or that the protected state did
not change. Last, every log of the run is searched for every secret the suite handled.
tests/security/README.md has the case matrix.

Usage: dataplane.py CONTROLLER CONNECTOR SALLYPORT SP_TEST_CLIENT RELAY_PEER
Prints one line per case and `security.data_plane: N passed, M failed`.
Python standard library only; ECDSA through the openssl command line.
"""
import atexit
import hashlib
import hmac
import http.client
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
import testkit  # noqa: E402

if len(sys.argv) < 6:
    sys.exit("usage: dataplane.py CONTROLLER CONNECTOR SALLYPORT SP_TEST_CLIENT RELAY_PEER")
CTL, CONN, SP, TOOL, PEER = sys.argv[1:6]
sys.dont_write_bytecode = True
SANITIZED = os.environ.get("SALLYPORT_SANITIZED", "0") in ("1", "ON", "TRUE", "true")
SCALE = 3 if SANITIZED else 1
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
DNSMASQ = os.environ.get("DNSMASQ") or shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
WORK = tempfile.mkdtemp(prefix="sp-sec-dp-")
os.chmod(WORK, 0o700)
STATE = os.path.join(WORK, "ctl")
DB = os.path.join(STATE, "controller.db")
STARTED = time.monotonic()
PROCS = []

from testkit import SECRETS, Fail, expect, secret  # noqa: E402

free_port = testkit.free_port
new_id = testkit.new_id


def cleanup():
    testkit.stop_all(PROCS)


def on_signal(sig, frame):
    raise SystemExit(128 + sig)


atexit.register(cleanup)
signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)


def start(args, log_name, env=None, **kw):
    return testkit.spawn(PROCS, WORK, args, log_name, env=env, **kw)


# ---- JOSE through openssl ----

b64u = testkit.b64u
b64d = testkit.b64d


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


def sign_jws(key_path, header, claims):
    signing_input = b64u(json.dumps(header).encode()) + "." + b64u(json.dumps(claims).encode())
    der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key_path],
                         input=signing_input.encode(), check=True, capture_output=True).stdout
    seq, _ = der_read(der, 0, 0x30)
    r, pos = der_read(seq, 0, 0x02)
    s, _ = der_read(seq, pos, 0x02)
    sig = (int.from_bytes(r, "big").to_bytes(32, "big") +
           int.from_bytes(s, "big").to_bytes(32, "big"))
    return signing_input + "." + b64u(sig)


def claims_of(jws):
    return json.loads(b64d(jws.split(".")[1]))


def header_of(jws):
    return json.loads(b64d(jws.split(".")[0]))


def make_key(name):
    path = os.path.join(WORK, name + ".pem")
    pub, _ = testkit.ec_key(path)
    return path, pub


def flip_char(text, i):
    """text with the base64url character at i replaced by another one."""
    c = text[i]
    return text[:i] + ("B" if c != "B" else "C") + text[i + 1:]


# ---- HTTP, store, events ----

def call(method, path, body=None, token=None, url=None, timeout=20):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request((url or URL) + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            text = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        text, status = e.read(), e.code
    except OSError as e:
        return 0, str(e)
    try:
        return status, json.loads(text or b"null")
    except ValueError:
        return status, text.decode(errors="replace")


def admin(method, path, body=None):
    return call(method, path, body, token=ADMIN_KEY)


def db_rows(sql, *args):
    conn = sqlite3.connect(DB, timeout=10, isolation_level=None)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def db_exec(sql, *args):
    conn = testkit.db(DB)
    try:
        conn.execute(sql, args)
    finally:
        conn.close()


def flow_mark():
    return db_rows("SELECT coalesce(max(id), 0) FROM flow_events")[0][0]


def flows_since(mark):
    """Flow events after mark, through the admin API (cursor = the last id seen)."""
    st, body = admin("GET", f"/api/v1/flow-events?cursor={mark}&limit=1000")
    expect(st == 200, f"flow-events API: {st} {body}")
    return body["items"]


def wait_flows(mark, n=1, limit=8.0):
    """Waits for n flow events after mark, then one batch period more; returns them all."""
    end = time.time() + limit * SCALE
    items = []
    while time.time() < end:
        items = flows_since(mark)
        if len(items) >= n:
            break
        time.sleep(0.05)
    time.sleep(0.3)  # a second event would come in the next batch (200 ms)
    return flows_since(mark)


def one_denial(mark, reason, **fields):
    """Asserts exactly one new flow event: deny with reason and the given fields."""
    items = wait_flows(mark)
    expect(len(items) == 1, f"want one flow event, got {len(items)}: {items}")
    ev = items[0]
    expect(ev["decision"] == "deny" and ev["reason"] == reason,
           f"flow event {ev['decision']} {ev['reason']}, want deny {reason}")
    expect(ev["connector_id"] == CONN_A, f"flow event of connector {ev['connector_id']}")
    for k, v in fields.items():
        expect(ev.get(k) == v, f"flow event {k} = {ev.get(k)!r}, want {v!r}")
    return ev


def no_flows(mark):
    time.sleep(0.5)
    items = flows_since(mark)
    expect(not items, f"unexpected flow events: {items}")


def log_lines(name, start=0):
    out = []
    with open(os.path.join(WORK, name), errors="replace") as f:
        f.seek(start)
        for line in f:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def log_size(name):
    return os.path.getsize(os.path.join(WORK, name))


def connector_denial_line(flow_id, *words):
    """The connector's `flow denied` line for flow_id; its detail holds the words."""
    end = time.time() + 3 * SCALE
    while True:
        lines = [l for l in log_lines("connector.log")
                 if l.get("msg") == "flow denied" and l.get("flow") == flow_id]
        if lines or time.time() > end:
            break
        time.sleep(0.05)
    expect(len(lines) == 1, f"{len(lines)} 'flow denied' lines for flow {flow_id}")
    detail = lines[0].get("detail", "")
    for w in words:
        expect(w.lower() in detail.lower(), f"connector log detail lacks {w!r}: {detail!r}")
    return lines[0]


def audits(action, target):
    st, body = admin("GET", f"/api/v1/audit-events?action={action}&limit=1000")
    expect(st == 200, f"audit-events API: {st} {body}")
    return [e for e in body["items"] if e.get("target_id") == target]


# ---- identities, tokens, grants ----

class Who:
    pass


def controller_key():
    now = int(time.time())
    kid, pem = db_rows("SELECT kid, private_key_pem FROM signing_keys WHERE not_before <= ?"
                       " AND not_after > ? ORDER BY not_before DESC LIMIT 1", now, now)[0]
    path = os.path.join(WORK, "controller-signing.pem")
    with open(path, "w") as f:
        f.write(pem)
    os.chmod(path, 0o600)
    return kid, path


def access_token(who):
    t = int(time.time())
    return secret("access token", sign_jws(
        KEY_PATH, {"alg": "ES256", "kid": KID, "typ": "JWT"},
        {"v": 1, "typ": "access", "iss": URL, "aud": "sallyport:controller", "iat": t,
         "exp": t + 600, "sub": who.user, "sid": who.session, "dev": who.device,
         "cnf": {"jkt": who.jkt}}))


def grant(who, resource):
    st, body = call("POST", "/api/client/v1/grants", {"resource_id": resource},
                    token=access_token(who))
    expect(st == 200, f"grant for {resource}: {st} {body}")
    return secret("grant", body["grant"])


def stream(grant_text, target, who=None, tls_key=None, data=b"", udp=False, digest=None,
           timeout=30):
    """One tunnel + one stream with the given grant: (exit code, stdout, stderr)."""
    who = who or ALICE
    saved = os.path.join(WORK, "saved-" + new_id() + ".json")
    with open(saved, "w") as f:
        json.dump({"grant": grant_text, "direct": DIRECT, "digest": digest or DIGEST_A}, f)
    args = [TOOL, "connect", "--url", URL, "--resource", "-", "--target", target,
            "--device-key", who.key, "--load", saved]
    if tls_key:
        args += ["--tls-key", tls_key]
    if udp:
        args += ["--udp", "--wait", "1"]
    r = subprocess.run(args, input=data, capture_output=True, timeout=timeout)
    os.unlink(saved)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


def refused_stream(grant_text, target, reason, **kw):
    rc, out, err = stream(grant_text, target, **kw)
    expect(rc == 3 and f"refused: {reason}" in err and out == b"",
           f"want a stream refused with {reason}, got rc={rc} {err.strip()!r}")


def http_get(path):
    return f"GET {path} HTTP/1.0\r\nHost: web\r\n\r\n".encode()


def person(name):
    w = Who()
    w.user, w.device, w.session = new_id(), new_id(), new_id()
    w.key = os.path.join(WORK, name + "-device.key")
    dev = json.loads(subprocess.run([TOOL, "keygen", w.key], check=True,
                                    capture_output=True).stdout)
    w.jkt = dev["jkt"]
    now = int(time.time())
    db_exec("INSERT INTO users (id, issuer, subject, email, created_at, updated_at)"
            " VALUES (?,?,?,?,?,?)", w.user, "https://idp.test", name, name + "@test", now, now)
    db_exec("INSERT INTO memberships (user_id, group_id, created_at) VALUES (?,?,?)",
            w.user, GROUP, now)
    db_exec("INSERT INTO devices (id, user_id, public_key_thumbprint, public_key_pem, state,"
            " first_seen_at, last_seen_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
            w.device, w.user, w.jkt, dev["public_key_pem"], "approved", now, now, now)
    db_exec("INSERT INTO sessions (id, user_id, device_id, auth_method, auth_time, created_at,"
            " last_used_at, expires_at) VALUES (?,?,?,?,?,?,?,?)",
            w.session, w.user, w.device, "oidc", now, now, now, now + 86400)
    return w


def resource(name, address, network=None, tcp=None, udp='"none"', policy=True):
    rid = new_id()
    now = int(time.time())
    db_exec("INSERT INTO resources (id, network_id, name, address, tcp_ports, udp_ports,"
            " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)", rid, network or NET_A, name,
            address, tcp or '"all"', udp, now, now)
    if policy:
        db_exec("INSERT INTO policies (id, group_id, resource_id, created_at, updated_at)"
                " VALUES (?,?,?,?,?)", new_id(), GROUP, rid, now, now)
    return rid


def connector_token(key_path, kid, iss=None):
    iat = int(time.time())
    return secret("connector token", sign_jws(
        key_path, {"alg": "ES256", "kid": kid, "typ": "JWT"},
        {"iss": iss or kid, "aud": "sallyport:controller", "iat": iat, "exp": iat + 240}))


def cid_of(connector_id):
    return b64u(hashlib.sha256(connector_id.encode()).digest())


def metrics_text():
    with urllib.request.urlopen(URL + "/metrics", timeout=10) as r:
        return r.read().decode()


def metric(name, labels=None):
    want = name + ("{" + labels + "}" if labels else "")
    for line in metrics_text().splitlines():
        if line.startswith(want + " "):
            return float(line.split()[1])
    return 0.0


def connector_healthy():
    env = dict(os.environ, SALLYPORT_METRICS_ADDR=f"127.0.0.1:{METRICS_PORT}")
    return subprocess.run([CONN, "health"], env=env, capture_output=True).returncode == 0


def wait_until(pred, limit=10.0, step=0.05):
    end = time.time() + limit * SCALE
    while time.time() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


# ---- the tampering proxy in front of the controller (the connector's SALLYPORT_URL) ----

class Proxy(http.server.ThreadingHTTPServer):
    daemon_threads = True
    tamper_config = False
    tampered = 0
    replace_config = None   # a signed document served in place of the controller's
    replaced = 0


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in ("host", "connection", "content-length",
                                        "transfer-encoding", "expect")}
        conn = http.client.HTTPConnection("127.0.0.1", CTL_PORT, timeout=90)
        conn.request(self.command, self.path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        if (self.server.tamper_config and self.command == "GET" and r.status == 200 and
                self.path.startswith("/api/connector/v1/config")):
            doc = json.loads(data)
            h, p, s = doc["document"].split(".")
            doc["document"] = h + "." + flip_char(p, len(p) // 2) + "." + s
            data = json.dumps(doc).encode()
            self.server.tampered += 1
        if (self.server.replace_config and self.command == "GET" and r.status == 200 and
                self.path.startswith("/api/connector/v1/config")):
            data = json.dumps({"document": self.server.replace_config}).encode()
            self.server.replaced += 1
        self.send_response(r.status)
        for k, v in r.getheaders():
            if k.lower() not in ("connection", "content-length", "transfer-encoding"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        conn.close()

    do_GET = forward
    do_POST = forward


# ---- cases: grants at the connector ----

def case_control_flow_allowed():
    """Control: a genuine grant through the connector fetches the page (so the refusals
    below are not refusals of everything); an `allow` flow event names user, device,
    session, resource and bytes."""
    mark = flow_mark()
    rc, out, err = stream(GRANT_WEB, f"127.0.0.1:{WEB_PORT}", data=http_get("/index.html"))
    expect(rc == 0 and out.endswith(PAGE), f"rc={rc} {err}")
    items = wait_flows(mark)
    expect(len(items) == 1 and items[0]["decision"] == "allow" and
           items[0]["user_id"] == ALICE.user and items[0]["device_id"] == ALICE.device and
           items[0]["session_id"] == ALICE.session and items[0]["resource_id"] == RES_WEB and
           items[0]["bytes_down"] >= len(PAGE), f"{items}")


def last_flow_id(mark):
    items = wait_flows(mark)
    expect(len(items) == 1, f"want one flow event, got {items}")
    return items[0]["flow_id"]


def grant_case(grant_text, reason, words, tls_key=None, **fields):
    mark = flow_mark()
    refused_stream(grant_text, f"127.0.0.1:{WEB_PORT}", reason, data=http_get("/"),
                   tls_key=tls_key)
    ev = one_denial(mark, reason, **fields)
    connector_denial_line(ev["flow_id"], *words)
    return ev


def case_grant_bad_signature():
    """A genuine grant with one character of its signature changed: `bad_grant`, the
    connector logs that the signature does not verify; the deny event has no user (nothing
    of an unverified grant is believed)."""
    h, p, s = GRANT_WEB.split(".")
    forged = h + "." + p + "." + flip_char(s, 10)
    grant_case(forged, "bad_grant", ["signature"], user_id=None, session_id=None)


def case_grant_foreign_key():
    """The claims of a genuine grant re-signed by another P-256 key under the controller's
    kid: `bad_grant` "signature"."""
    forged = sign_jws(FOREIGN_KEY, header_of(GRANT_WEB), claims_of(GRANT_WEB))
    secret("grant", forged)
    grant_case(forged, "bad_grant", ["signature"], user_id=None)


def case_grant_alg_none():
    """`alg: none` with the genuine claims and an empty signature: `bad_grant`, the
    connector names the algorithm (refused before any key work)."""
    h = b64u(json.dumps({"alg": "none", "kid": KID, "typ": "JWT"}).encode())
    forged = h + "." + GRANT_WEB.split(".")[1] + "."
    grant_case(forged, "bad_grant", ["none"], user_id=None)


def case_grant_hs256_public_key():
    """HS256 keyed with the controller's public key PEM (key confusion): `bad_grant`
    naming HS256."""
    pub = subprocess.run(["openssl", "pkey", "-in", KEY_PATH, "-pubout"], check=True,
                         capture_output=True).stdout
    h = b64u(json.dumps({"alg": "HS256", "kid": KID, "typ": "JWT"}).encode())
    p = GRANT_WEB.split(".")[1]
    sig = b64u(hmac.new(pub, (h + "." + p).encode(), hashlib.sha256).digest())
    grant_case(h + "." + p + "." + sig, "bad_grant", ["HS256"], user_id=None)


def case_grant_expired():
    """A grant signed by the controller's own key, expired 10 minutes ago: `expired`."""
    c = claims_of(GRANT_WEB)
    now = int(time.time())
    c.update(iat=now - 900, exp=now - 600, jti=secrets.token_hex(16))
    forged = secret("grant", sign_jws(KEY_PATH, header_of(GRANT_WEB), c))
    grant_case(forged, "expired", ["exp"])


def case_grant_other_network():
    """A genuine grant for a resource of another network (audience
    `sallyport:network:<B>`), presented at network A's connector: `bad_grant`."""
    g = grant(ALICE, RES_B)
    expect(claims_of(g)["aud"] == "sallyport:network:" + NET_B, "grant audience")
    grant_case(g, "bad_grant", ["not addressed to", NET_A])


def case_grant_other_audience_claims():
    """Controller-signed claims of a genuine grant with `aud` changed to the relay's
    audience and with `net` naming network B: `bad_grant` both times."""
    for change, words in (({"aud": "sallyport:relay"}, ["not addressed to"]),
                          ({"net": NET_B}, ["not our network"])):
        c = dict(claims_of(GRANT_WEB), jti=secrets.token_hex(16), **change)
        forged = secret("grant", sign_jws(KEY_PATH, header_of(GRANT_WEB), c))
        grant_case(forged, "bad_grant", words)


def case_grant_claims_altered():
    """Controller-signed grants with the claim set bent: `iat` an hour ahead, a
    seventeenth claim (`admin: true`), `cnf` missing: `bad_grant` each, the connector
    naming what is wrong ("iat", "claim")."""
    now = int(time.time())
    base = dict(claims_of(GRANT_WEB), jti=secrets.token_hex(16))
    future = dict(base, iat=now + 3600, exp=now + 3900)
    extra = dict(base, admin=True)
    missing = {k: v for k, v in base.items() if k != "cnf"}
    for c, words in ((future, ["iat"]), (extra, ["claim"]), (missing, ["claim set"])):
        forged = secret("grant", sign_jws(KEY_PATH, header_of(GRANT_WEB), c))
        grant_case(forged, "bad_grant", words)


def case_grant_wider_than_resource():
    """A controller-signed grant for the `127.0.0.1` resource whose `dst` says
    `127.0.0.0/8` and whose `tcp` says "all": the connector takes the intersection with its
    own config, so 127.0.0.2 is `no_policy` and another port `port_not_allowed`."""
    c = dict(claims_of(GRANT_WEB), jti=secrets.token_hex(16), dst="127.0.0.0/8", tcp="all")
    forged = secret("grant", sign_jws(KEY_PATH, header_of(GRANT_WEB), c))
    dest_case(f"127.0.0.2:{WEB_PORT}", "no_policy", ["outside the resource"], g=forged)
    dest_case(f"127.0.0.1:{OTHER_PORT}", "port_not_allowed", ["port"], g=forged)


def case_grant_other_device():
    """Bob's genuine grant presented on a tunnel whose TLS client key is Alice's device
    key (a stolen grant used by another device), and Alice's grant on a tunnel with a key
    no device has: `bad_grant`, the connector names `cnf.jkt`."""
    g = grant(BOB, RES_WEB)
    grant_case(g, "bad_grant", ["jkt"], tls_key=ALICE.key)
    grant_case(GRANT_WEB, "bad_grant", ["jkt"], tls_key=STRANGER_KEY)


# ---- cases: destinations ----

def dest_case(target, reason, words, g=None, udp=False, **fields):
    mark = flow_mark()
    refused_stream(g or GRANT_WEB, target, reason, data=b"" if udp else http_get("/"), udp=udp)
    ev = one_denial(mark, reason, user_id=ALICE.user, **fields)
    connector_denial_line(ev["flow_id"], *words)
    return ev


def case_destination_other_port():
    """The resource allows one TCP port; another port of the same host: `port_not_allowed`
    with the port in the flow event."""
    dest_case(f"127.0.0.1:{OTHER_PORT}", "port_not_allowed", ["port"],
              destination_port=OTHER_PORT, resource_id=RES_WEB)


def case_destination_outside_cidr():
    """An address outside the resource (`127.0.0.2` for a `127.0.0.1` resource, `127.0.0.9`
    for a `127.0.0.0/29` one): `no_policy` "outside the resource"."""
    dest_case(f"127.0.0.2:{WEB_PORT}", "no_policy", ["outside the resource"],
              destination_host="127.0.0.2")
    dest_case(f"127.0.0.9:{WEB_PORT}", "no_policy", ["outside the resource"],
              g=grant(ALICE, RES_CIDR), destination_host="127.0.0.9")


def case_destination_ipv4_mapped():
    """The IPv4-mapped IPv6 form of an outside address (`[::ffff:127.0.0.2]`) is folded to
    IPv4 and refused `no_policy`; the mapped form of the resource's own address is
    folded and allowed (the fold is real, not a blanket refusal of IPv6)."""
    dest_case(f"[::ffff:127.0.0.2]:{WEB_PORT}", "no_policy", ["outside the resource"])
    mark = flow_mark()
    rc, out, err = stream(GRANT_WEB, f"[::ffff:127.0.0.1]:{WEB_PORT}",
                          data=http_get("/index.html"))
    expect(rc == 0 and out.endswith(PAGE), f"mapped form of the resource's address: {rc} {err}")
    items = wait_flows(mark)
    expect(len(items) == 1 and items[0]["decision"] == "allow", f"{items}")


def case_destination_name_on_cidr_resource():
    """A host name (`inside.corp.test`, which dnsmasq resolves into the CIDR) sent for an
    IP-block resource: names never match an IP resource, `no_policy`, nothing dialled
    (no resolved IP in the event)."""
    ev = dest_case(f"inside.corp.test:{WEB_PORT}", "no_policy", ["outside the resource"],
                   g=grant(ALICE, RES_CIDR), destination_host="inside.corp.test")
    expect(ev["destination_ip"] is None, f"a name was resolved: {ev}")


def case_dns_rebinding_loopback():
    """A name resource `*.corp.test`; dnsmasq (started by the suite, the connector's
    SALLYPORT_DNS) answers `rebind.corp.test` with 127.0.0.1: the DNS-rebinding rule
    refuses it, `no_policy` with the refused IP in the flow event."""
    ev = dest_case(f"rebind.corp.test:{WEB_PORT}", "no_policy", ["DNS-rebinding"],
                   g=GRANT_NAME, destination_host="rebind.corp.test")
    expect(ev["destination_ip"] == "127.0.0.1", f"destination_ip {ev['destination_ip']}")


def case_dns_rebinding_metadata_and_mixed():
    """`meta.corp.test` answers the link-local metadata address 169.254.169.254, and
    `mixed.corp.test` answers one ordinary address and 127.0.0.1: both refused
    `no_policy` (one bad answer refuses the flow), the refused IP in the event."""
    ev = dest_case(f"meta.corp.test:{WEB_PORT}", "no_policy", ["DNS-rebinding"],
                   g=GRANT_NAME, destination_host="meta.corp.test")
    expect(ev["destination_ip"] == "169.254.169.254", f"{ev}")
    ev = dest_case(f"mixed.corp.test:{WEB_PORT}", "no_policy", ["DNS-rebinding"],
                   g=GRANT_NAME, destination_host="mixed.corp.test")
    expect(ev["destination_ip"] == "127.0.0.1", f"{ev}")


def case_destination_name_outside_pattern():
    """A name outside the resource's pattern (`evil.example` on `*.corp.test`):
    `no_policy` before any resolution."""
    ev = dest_case(f"evil.example:{WEB_PORT}", "no_policy", ["outside the resource"],
                   g=GRANT_NAME, destination_host="evil.example")
    expect(ev["destination_ip"] is None, f"{ev}")


def case_udp_to_tcp_only_resource():
    """A UDP stream to the TCP-only resource's own address and port: `port_not_allowed`,
    protocol `udp` in the event."""
    dest_case(f"127.0.0.1:{WEB_PORT}", "port_not_allowed", ["port"], udp=True,
              protocol="udp")


def case_resource_of_grant_not_in_config():
    """A controller-signed grant naming a resource id the connector's config does not
    hold (`res` of another network, `dst` and ports copied from a real one): `no_policy`
    "not in our config"."""
    c = dict(claims_of(GRANT_WEB), jti=secrets.token_hex(16), res=RES_B)
    forged = secret("grant", sign_jws(KEY_PATH, header_of(GRANT_WEB), c))
    dest_case(f"127.0.0.1:{WEB_PORT}", "no_policy", ["not in our config"], g=forged)


# ---- cases: revocation ----

def case_revoked_user_mid_flow():
    """Carol downloads a rate-limited file; an admin disables her through the API
    (audited `user.update`). The connector cuts the live flow (stream reset) within 1 s of
    the API answer, measured; the flow event is `deny` `revoked` with the bytes carried."""
    global CAROL_GRANT
    CAROL_GRANT = grant(CAROL, RES_WEB)
    mark = flow_mark()
    saved = os.path.join(WORK, "carol-grant.json")
    with open(saved, "w") as f:
        json.dump({"grant": CAROL_GRANT, "direct": DIRECT, "digest": DIGEST_A}, f)
    p = subprocess.Popen([TOOL, "connect", "--url", URL, "--resource", "-", "--target",
                          f"127.0.0.1:{WEB_PORT}", "--device-key", CAROL.key, "--load", saved,
                          "--hold"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    PROCS.append(p)
    p.stdin.write(http_get("/slow/big.bin"))
    p.stdin.flush()
    got = p.stdout.read(65536)
    expect(len(got) > 0, "the download did not start")
    t0 = time.monotonic()
    st, body = admin("PATCH", f"/api/v1/users/{CAROL.user}", {"disabled": True})
    t_api = time.monotonic()
    expect(st == 200, f"disable: {st} {body}")
    rest = p.stdout.read()
    rc = p.wait(timeout=30)
    cut = time.monotonic() - t_api
    err = p.stderr.read().decode(errors="replace")
    total = len(got) + len(rest)
    print(f"figure: revoked user's live flow cut {cut * 1000:.0f} ms after the API answered"
          f" ({(t_api - t0) * 1000:.0f} ms for the PATCH), {total} of {BIG} bytes", flush=True)
    expect(rc == 5 and "reset" in err and total < BIG, f"rc={rc} {err} bytes={total}")
    expect(cut < 1.0, f"cut after {cut:.3f} s, want < 1 s")
    ev = one_denial(mark, "revoked", user_id=CAROL.user, session_id=CAROL.session)
    expect(ev["bytes_down"] > 0, f"no bytes in the event: {ev}")
    lines = [l for l in log_lines("connector.log") if l.get("msg") == "flow cut by a new config"
             and l.get("flow") == ev["flow_id"]]
    expect(len(lines) == 1 and lines[0].get("reason") == "revoked", f"log: {lines}")
    a = audits("user.update", CAROL.user)
    expect(len(a) == 1 and a[0]["outcome"] == "success", f"audit: {a}")


def case_grant_replayed_after_revocation():
    """Carol's grant, fetched before she was disabled and still unexpired, replayed on a
    new tunnel with her own device key: `revoked`, the connector names the disabled user;
    the controller refuses her a new grant (401)."""
    expect(CAROL_GRANT and claims_of(CAROL_GRANT)["exp"] > time.time(), "no live grant")
    mark = flow_mark()
    refused_stream(CAROL_GRANT, f"127.0.0.1:{WEB_PORT}", "revoked", who=CAROL,
                   data=http_get("/"))
    ev = one_denial(mark, "revoked", user_id=CAROL.user)
    connector_denial_line(ev["flow_id"], CAROL.user, "disabled")
    st, body = call("POST", "/api/client/v1/grants", {"resource_id": RES_WEB},
                    token=access_token(CAROL))
    expect(st == 401, f"new grant for a disabled user: {st} {body}")


def case_grant_after_session_revoked_and_device_blocked():
    """Bob's unexpired grant after an admin revoked his session (`DELETE
    /api/v1/sessions/{id}`, audited `session.revoke`), and Dave's after an admin blocked
    his device (audited `device.block`): `revoked` each, the connector naming the session
    or the device."""
    g_bob, g_dave = grant(BOB, RES_WEB), grant(DAVE, RES_WEB)
    size = log_size("connector.log")
    st, body = admin("DELETE", f"/api/v1/sessions/{BOB.session}")
    expect(st == 204, f"revoke session: {st} {body}")
    st, body = admin("POST", f"/api/v1/devices/{DAVE.device}/block")
    expect(st == 200, f"block device: {st} {body}")
    # both changes reach the connector in a new config
    expect(wait_until(lambda: any(l.get("msg") == "config received" and
                                  l.get("revoked_sessions", 0) >= 3
                                  for l in log_lines("connector.log", size)), 5),
           "no config with the revocations")
    for who, g, words in ((BOB, g_bob, ["session", BOB.session, "revoked"]),
                          (DAVE, g_dave, ["device", DAVE.device, "blocked"])):
        mark = flow_mark()
        refused_stream(g, f"127.0.0.1:{WEB_PORT}", "revoked", who=who, data=http_get("/"))
        ev = one_denial(mark, "revoked", user_id=who.user, session_id=who.session)
        connector_denial_line(ev["flow_id"], *words)
    expect(len(audits("session.revoke", BOB.session)) == 1, "no session.revoke audit event")
    expect(len(audits("device.block", DAVE.device)) == 1, "no device.block audit event")


# ---- cases: TLS ----

def case_tunnel_pin_mismatch():
    """The client pins a connector key digest that is not the connector's (a relay or a
    man in the middle presenting another key): the TLS handshake fails on the client, no
    stream is opened, no flow event."""
    mark = flow_mark()
    rc, out, err = stream(GRANT_WEB, f"127.0.0.1:{WEB_PORT}", data=http_get("/"),
                          digest=hashlib.sha256(b"another key").hexdigest())
    expect(rc == 1 and out == b"" and "refused:" not in err, f"rc={rc} {err}")
    expect(any(w in err.lower() for w in ("pin", "digest", "handshake", "certificate")),
           f"no clear reason: {err!r}")
    no_flows(mark)


def case_tunnel_no_client_certificate():
    """A TLS 1.3 client with the right ALPN but no client certificate: the connector ends
    the handshake (alert), logs a tunnel error, and no flow event exists."""
    mark = flow_mark()
    size = log_size("connector.log")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["sallyport/1"])
    s = socket.create_connection(("127.0.0.1", DIRECT_PORT), timeout=5)
    failed = None
    try:
        t = ctx.wrap_socket(s)
        t.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        data = t.recv(100)
        failed = "closed" if data == b"" else None
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
        failed = str(e)
    finally:
        s.close()
    expect(failed is not None, "the connector talked to a client without a certificate")
    expect(wait_until(lambda: any(l.get("msg") == "tunnel error" for l in
                                  log_lines("connector.log", size)), 3),
           "no tunnel error logged")
    no_flows(mark)


# ---- cases: connector identity and config ----

def case_connector_impersonation():
    """Connector A's real key (from its state directory) signs tokens whose kid/iss name
    connector B: B's config and B's flow events are refused 401 "signature"; B's row and
    the flow events are unchanged. A's genuine token gets A's own config (audience A,
    network A's resources only, none of network B)."""
    before_b = db_rows("SELECT * FROM connectors WHERE id = ?", CONN_B)
    mark = flow_mark()
    forged = connector_token(KEY_A, CONN_B)
    st, body = call("GET", "/api/connector/v1/config", token=forged)
    expect(st == 401 and "signature" in json.dumps(body).lower(), f"config as B: {st} {body}")
    ev = {"flow_id": new_id(), "time": int(time.time()), "protocol": "tcp", "decision": "deny",
          "reason": "no_policy"}
    st, body = call("POST", "/api/connector/v1/flow-events", {"events": [ev]}, token=forged)
    expect(st == 401 and "signature" in json.dumps(body).lower(), f"events as B: {st} {body}")
    st, body = call("POST", "/api/connector/v1/heartbeat", {}, token=forged)
    expect(st == 401, f"heartbeat as B: {st} {body}")
    expect(db_rows("SELECT * FROM connectors WHERE id = ?", CONN_B) == before_b, "B changed")
    st, body = call("GET", "/api/connector/v1/config", token=connector_token(KEY_A, CONN_A))
    expect(st == 200, f"A's own config: {st} {body}")
    c = claims_of(body["document"])
    ids = {r["id"] for r in c["resources"]}
    expect(c["aud"] == "sallyport:connector:" + CONN_A and c["network_id"] == NET_A and
           RES_WEB in ids and RES_B not in ids, f"A's config: {c['aud']} {ids}")
    no_flows(mark)


def case_connector_flow_events_as_other():
    """Connector A's genuine token posting a flow event with `connector_id` B in the body:
    400 naming `events[0].connector_id`, nothing stored."""
    mark = flow_mark()
    ev = {"flow_id": new_id(), "time": int(time.time()), "protocol": "tcp", "decision": "deny",
          "reason": "no_policy", "connector_id": CONN_B}
    st, body = call("POST", "/api/connector/v1/flow-events", {"events": [ev]},
                    token=connector_token(KEY_A, CONN_A))
    expect(st == 400 and "events[0].connector_id" in json.dumps(body), f"{st} {body}")
    no_flows(mark)


def case_connector_config_tampered():
    """The proxy in front of the controller flips one character of the signed config's
    payload while a new resource is added. The connector refuses the document ("config
    document refused", signature), stays ready on its last good config: the old resource
    still carries a flow, the new one is refused `no_policy` "not in our config". Once the
    proxy stops tampering, the next config brings the new resource."""
    size = log_size("connector.log")
    PROXY.tampered = 0
    PROXY.tamper_config = True
    try:
        rid = resource("late", "127.0.0.1", tcp=json.dumps([str(WEB_PORT)]))
        expect(wait_until(lambda: PROXY.tampered >= 1, 10), "no config fetched")
        expect(wait_until(lambda: any(l.get("msg") == "config document refused" for l in
                                      log_lines("connector.log", size)), 5),
               "the connector did not log the refusal")
        line = [l for l in log_lines("connector.log", size)
                if l.get("msg") == "config document refused"][0]
        expect("signature" in line.get("detail", "").lower() or
               "verify" in line.get("detail", "").lower(), f"detail: {line}")
        expect(connector_healthy(), "the connector left its last good config")
        g_late = grant(ALICE, rid)
        mark = flow_mark()
        refused_stream(g_late, f"127.0.0.1:{WEB_PORT}", "no_policy", data=http_get("/"))
        ev = one_denial(mark, "no_policy", resource_id=rid)
        connector_denial_line(ev["flow_id"], "not in our config")
        rc, out, err = stream(GRANT_WEB, f"127.0.0.1:{WEB_PORT}", data=http_get("/index.html"))
        expect(rc == 0 and out.endswith(PAGE), f"last good config: {rc} {err}")
    finally:
        PROXY.tamper_config = False
    # recovery: a change wakes the feed; the untampered config carries the new resource
    resource("wake", "127.0.0.3", policy=False)

    def late_allowed():
        rc, out, _ = stream(g_late, f"127.0.0.1:{WEB_PORT}", data=http_get("/index.html"))
        return rc == 0 and out.endswith(PAGE)
    expect(wait_until(late_allowed, 15, 0.3), "the good config never came")

    # the allowed flows' events (batched up to 200 ms) land before the next case's mark
    def allowed_events_in():
        allowed = [e for e in flows_since(mark) if e["decision"] == "allow"]
        return (any(e["resource_id"] == rid for e in allowed) and
                any(e["resource_id"] != rid for e in allowed))
    expect(wait_until(allowed_events_in, 10, 0.1), "no flow events of the allowed flows")


def served_config_refused(document, words):
    """The proxy serves document in place of the controller's config while a change is
    made; asserts the connector refuses it (log words) and stays ready."""
    size = log_size("connector.log")
    PROXY.replaced = 0
    PROXY.replace_config = document
    try:
        resource("poke-" + new_id()[:6], "127.0.0.4", policy=False)
        expect(wait_until(lambda: PROXY.replaced >= 1, 10), "no config fetched")
        expect(wait_until(lambda: any(l.get("msg") == "config document refused" for l in
                                      log_lines("connector.log", size)), 5),
               "the connector did not log a refusal: " +
               str([l.get("msg") for l in log_lines("connector.log", size)]))
        line = [l for l in log_lines("connector.log", size)
                if l.get("msg") == "config document refused"][0]
        for w in words:
            expect(w.lower() in line.get("detail", "").lower(), f"detail: {line}")
        expect(connector_healthy(), "the connector left its last good config")
    finally:
        PROXY.replace_config = None


def case_connector_config_of_other_connector():
    """The proxy serves connector B's genuine signed config (fetched with B's key) to
    connector A: refused, the connector names the audience; its last good config stays."""
    st, body = call("GET", "/api/connector/v1/config", token=connector_token(KEY_B, CONN_B))
    expect(st == 200, f"B's config: {st} {body}")
    served_config_refused(body["document"], ["aud"])
    rc, out, err = stream(GRANT_WEB, f"127.0.0.1:{WEB_PORT}", data=http_get("/index.html"))
    expect(rc == 0 and out.endswith(PAGE), f"after the refusal: {rc} {err}")


def case_connector_config_rollback():
    """The proxy replays connector A's own genuine config from before Carol was disabled
    (signed, unexpired, a lower seq and an older iat): the connector refuses to go back
    ("older"), so Carol's grant stays refused `revoked`."""
    expect(claims_of(OLD_CONFIG_A)["exp"] > time.time() + 60, "the old config expired")
    served_config_refused(OLD_CONFIG_A, ["older"])
    mark = flow_mark()
    refused_stream(CAROL_GRANT, f"127.0.0.1:{WEB_PORT}", "revoked", who=CAROL,
                   data=http_get("/"))
    one_denial(mark, "revoked", user_id=CAROL.user)


# ---- cases: relay ----

def relay_client(ticket):
    """(status byte or None, socket) after the SPRC preamble with ticket."""
    s = socket.create_connection(("127.0.0.1", RELAY_PORT), timeout=10)
    t = ticket.encode()
    s.sendall(b"SPRC" + bytes([1]) + struct.pack(">H", len(t)) + t)
    b = s.recv(1)
    return (b[0] if b else None), s


def relay_refused(ticket, status, label):
    before = metric("sallyport_relay_refused_total", f'status="{label}"')
    paired = metric("sallyport_relay_paired_total")
    st, s = relay_client(ticket)
    tail = s.recv(10)
    s.close()
    expect(st == status and tail == b"", f"relay status {st} then {tail!r}, want {status}")
    expect(metric("sallyport_relay_refused_total", f'status="{label}"') == before + 1,
           f"refused counter {label} did not move by one")
    expect(metric("sallyport_relay_paired_total") == paired, "a pairing was made")


def ticket_for(connector_id, who=None):
    st, body = call("POST", "/api/client/v1/relay-tickets", {"connector_id": connector_id},
                    token=access_token(who or ALICE))
    return st, (secret("relay ticket", body["ticket"]) if st == 200 else body)


def case_relay_control_pairs():
    """Control: a genuine ticket for connector A pairs (status 0) and bytes come back from
    the echo service behind A's relay stand-in."""
    st, t = ticket_for(CONN_A)
    expect(st == 200, f"ticket: {st} {t}")
    paired = metric("sallyport_relay_paired_total")
    status, s = relay_client(t)
    try:
        expect(status == 0, f"status {status}")
        s.sendall(b"ping through the relay")
        got = b""
        while len(got) < 22:
            chunk = s.recv(100)
            if not chunk:
                break
            got += chunk
        expect(got == b"ping through the relay", f"echo {got!r}")
    finally:
        s.close()
    expect(metric("sallyport_relay_paired_total") == paired + 1, "paired counter")
    global USED_TICKET
    USED_TICKET = t


def case_relay_ticket_reused():
    """The ticket that just paired, presented again: status 3 (replayed), counted as
    `replayed`, no pairing."""
    relay_refused(USED_TICKET, 3, "replayed")


def case_relay_ticket_forged():
    """A ticket with genuine claims signed by another key under the controller's kid, and
    one with its signature changed: status 1 (bad ticket) each."""
    st, t = ticket_for(CONN_A)
    expect(st == 200, f"ticket: {st}")
    c = dict(claims_of(t), jti=secrets.token_hex(16))
    relay_refused(secret("relay ticket", sign_jws(FOREIGN_KEY, header_of(t), c)), 1,
                  "bad_ticket")
    h, p, s = t.split(".")
    relay_refused(h + "." + p + "." + flip_char(s, 5), 1, "bad_ticket")


def case_relay_ticket_expired():
    """A ticket signed by the controller's key whose `exp` passed 5 minutes ago: status 2
    (expired)."""
    now = int(time.time())
    c = {"v": 1, "typ": "relay-ticket", "aud": "sallyport:relay", "jti": secrets.token_hex(16),
         "iat": now - 360, "exp": now - 300, "cid": cid_of(CONN_A)}
    relay_refused(secret("relay ticket", sign_jws(KEY_PATH, {"alg": "ES256", "kid": KID,
                                                            "typ": "JWT"}, c)), 2, "expired")
    # a ticket that lives longer than 60 s is refused as expired too
    c = dict(c, jti=secrets.token_hex(16), iat=now, exp=now + 3600)
    relay_refused(secret("relay ticket", sign_jws(KEY_PATH, {"alg": "ES256", "kid": KID,
                                                            "typ": "JWT"}, c)), 2, "expired")


def case_relay_ticket_other_network():
    """A ticket for connector B, of a network where Alice may reach nothing: the controller
    refuses it 403 `no_policy` and issues nothing (tickets are not stored: no pairing, no
    refusal counted at the relay)."""
    db_exec("DELETE FROM policies WHERE resource_id = ?", RES_B)
    try:
        paired = metric("sallyport_relay_paired_total")
        st, body = ticket_for(CONN_B)
        expect(st == 403 and body.get("error", {}).get("code") == "no_policy", f"{st} {body}")
        expect(metric("sallyport_relay_paired_total") == paired, "pairing")
    finally:
        db_exec("INSERT INTO policies (id, group_id, resource_id, created_at, updated_at)"
                " VALUES (?,?,?,?,?)", new_id(), GROUP, RES_B, int(time.time()),
                int(time.time()))


def case_relay_ticket_other_connector():
    """A genuine ticket for connector B (Alice may reach network B), which has no control
    connection at this relay: status 4 (connector unavailable); it is never paired with
    A, the connector that is registered."""
    st, t = ticket_for(CONN_B)
    expect(st == 200 and claims_of(t)["cid"] == cid_of(CONN_B), f"ticket for B: {st} {t}")
    relay_refused(t, 4, "connector_unavailable")


def case_relay_unknown_pairing():
    """A data connection (`SPRD`) with a pairing id nobody was given: closed at once with
    no byte; no pairing counted; the registered connector still pairs afterwards."""
    paired = metric("sallyport_relay_paired_total")
    s = socket.create_connection(("127.0.0.1", RELAY_PORT), timeout=10)
    s.sendall(b"SPRD" + bytes([1]) + os.urandom(16) + b"bytes of a tunnel")
    t0 = time.monotonic()
    data = s.recv(10)
    closed_after = time.monotonic() - t0
    s.close()
    expect(data == b"" and closed_after < 2.0, f"got {data!r} after {closed_after:.2f} s")
    expect(metric("sallyport_relay_paired_total") == paired, "a pairing was made")
    case_relay_control_pairs()


# ---- cases: the client daemon ----

def mode(path):
    return os.stat(path).st_mode & 0o777


def case_client_control_socket_other_user():
    """`sallyport up` (signed in with a service key) listens on control.sock 0600 in a 0700
    state directory. With the path made reachable, uid `nobody` connects and is closed
    without an answer (SO_PEERCRED); the daemon logs `control connection refused` with
    that uid; the owner's `status` still works."""
    expect(os.geteuid() == 0, "needs root to act as another uid")
    sock_path = os.path.join(CSTATE, "control.sock")
    expect(mode(CSTATE) == 0o700 and mode(sock_path) == 0o600,
           f"modes {oct(mode(CSTATE))} {oct(mode(sock_path))}")
    probe = ("import socket\ns=socket.socket(socket.AF_UNIX)\ns.settimeout(5)\n"
             f"s.connect({sock_path!r})\n"
             "try:\n s.sendall(b'{\"cmd\":\"status\"}\\n')\n d=s.recv(100)\n"
             "except (BrokenPipeError, ConnectionResetError):\n d=b''\n"
             "print('REPLY' if d else 'CLOSED')\n")
    # first with the modes as they are: nobody cannot even reach the socket
    r = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                        sys.executable, "-c", probe], capture_output=True, text=True, timeout=20)
    expect("PermissionError" in r.stderr, f"reachable through 0700: {r.stdout} {r.stderr}")
    size = log_size("sallyport-up.log")
    for d in (WORK, CHOME, CSTATE):
        os.chmod(d, 0o711)
    os.chmod(sock_path, 0o666)
    try:
        r = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup",
                            "--clear-groups", sys.executable, "-c", probe],
                           capture_output=True, text=True, timeout=20)
    finally:
        os.chmod(sock_path, 0o600)
        os.chmod(CSTATE, 0o700)
        os.chmod(CHOME, 0o700)
        os.chmod(WORK, 0o700)
    expect(r.stdout.strip() == "CLOSED", f"nobody got: {r.stdout} {r.stderr}")
    nobody = int(subprocess.run(["id", "-u", "nobody"], capture_output=True,
                                text=True).stdout)
    text = open(os.path.join(WORK, "sallyport-up.log"), errors="replace").read()[size:]
    expect("control connection refused" in text and str(nobody) in text, f"log: {text[-500:]}")
    rc, out, err = sp("status", "--json")
    expect(rc == 0 and json.loads(out).get("state") == "up", f"owner status: {rc} {out} {err}")


def case_files_modes():
    """Every file holding a key or token is 0600 in a 0700 directory: the connector's state
    (connector.key, identity.json), the client's (device.key, session.json, control.sock),
    the controller's (controller.db and its WAL files hold the signing keys)."""
    want = {CONN_STATE: 0o700, os.path.join(CONN_STATE, "connector.key"): 0o600,
            os.path.join(CONN_STATE, "identity.json"): 0o600,
            CSTATE: 0o700, os.path.join(CSTATE, "device.key"): 0o600,
            os.path.join(CSTATE, "session.json"): 0o600,
            os.path.join(CSTATE, "control.sock"): 0o600,
            STATE: 0o700, DB: 0o600}
    for extra in ("controller.db-wal", "controller.db-shm"):
        if os.path.exists(os.path.join(STATE, extra)):
            want[os.path.join(STATE, extra)] = 0o600
    bad = [f"{p} {oct(mode(p))} (want {oct(m)})" for p, m in want.items() if mode(p) != m]
    expect(not bad, "; ".join(bad))
    for d in (CONN_STATE, CSTATE, STATE):
        for f in os.listdir(d):
            p = os.path.join(d, f)
            expect(mode(p) & 0o077 == 0, f"{p} is {oct(mode(p))}: open to others")


def case_logs_hold_no_secrets():
    """Every log of the run (controller at debug/JSON, connector at debug/JSON, client
    daemon and sign-in, relay stand-in, nginx, dnsmasq) holds none of the secrets the
    suite handled (admin key, enrollment token, access and connector tokens, grants
    genuine and forged, relay tickets and the relay-connector token, the client's
    refresh token, private keys) nor a private-key PEM marker. Self-check: the scan sees
    logged flow ids and the connector id."""
    for path in (os.path.join(CSTATE, "session.json"),):
        s = json.load(open(path))
        secret("refresh token", s.get("refresh_token"))
    for path in (KEY_PATH, KEY_A, CAROL.key, ALICE.key):
        body = "".join(l for l in open(path) if not l.startswith("-----"))
        secret("private key body", body.replace("\n", "")[:60])
    logs = {f: open(os.path.join(WORK, f), errors="replace").read()
            for f in os.listdir(WORK) if f.endswith(".log")}
    expect(len(logs) >= 6 and all(logs[f] for f in ("controller.log", "connector.log",
                                                    "sallyport-up.log")),
           f"logs: {sorted(logs)}")
    expect('"level":"debug"' in logs["controller.log"] and
           '"level":"debug"' in logs["connector.log"], "no debug lines: the scan proves little")
    expect(CONN_A in logs["connector.log"] and "flow denied" in logs["connector.log"],
           "scan sees no logged id")
    expect(len(SECRETS) >= 30, f"only {len(SECRETS)} secrets collected")
    found = [f"{label.split('#')[0]} in {f}" for label, value in SECRETS.items()
             for f, text in logs.items() if value in text]
    found += [f"PEM marker in {f}" for f, t in logs.items() if "PRIVATE KEY-----" in t]
    expect(not found, "; ".join(sorted(set(found))))
    print(f"figure: {len(SECRETS)} secrets searched in {len(logs)} logs"
          f" ({sum(len(t) for t in logs.values())} bytes)", flush=True)


CASES = [
    case_control_flow_allowed, case_grant_bad_signature, case_grant_foreign_key,
    case_grant_alg_none, case_grant_hs256_public_key, case_grant_expired,
    case_grant_other_network, case_grant_other_audience_claims, case_grant_other_device,
    case_grant_claims_altered, case_grant_wider_than_resource,
    case_destination_other_port, case_destination_outside_cidr, case_destination_ipv4_mapped,
    case_destination_name_on_cidr_resource, case_dns_rebinding_loopback,
    case_dns_rebinding_metadata_and_mixed, case_destination_name_outside_pattern,
    case_udp_to_tcp_only_resource, case_resource_of_grant_not_in_config,
    case_tunnel_pin_mismatch, case_tunnel_no_client_certificate,
    case_connector_impersonation, case_connector_flow_events_as_other,
    case_connector_config_tampered,
    case_relay_control_pairs, case_relay_ticket_reused, case_relay_ticket_forged,
    case_relay_ticket_expired, case_relay_ticket_other_network,
    case_relay_ticket_other_connector, case_relay_unknown_pairing,
    case_revoked_user_mid_flow, case_grant_replayed_after_revocation,
    case_grant_after_session_revoked_and_device_blocked,
    case_connector_config_of_other_connector, case_connector_config_rollback,
    case_client_control_socket_other_user, case_files_modes, case_logs_hold_no_secrets,
]


# ---- the world ----

CTL_PORT, PROXY_PORT, RELAY_PORT, DIRECT_PORT, METRICS_PORT, WEB_PORT, OTHER_PORT, \
    DNS_PORT, SOCKS_PORT, HTTP_PORT, RELAY2_PORT = (free_port() for _ in range(11))
URL = f"http://127.0.0.1:{CTL_PORT}"
DIRECT = f"127.0.0.1:{DIRECT_PORT}"
CONN_STATE = os.path.join(WORK, "conn")
CHOME = os.path.join(WORK, "client")
CSTATE = os.path.join(CHOME, "state")
BIG = 8 << 20
PAGE = b"<html><body>sallyport data-plane attack suite " + os.urandom(8).hex().encode() + \
    b"</body></html>\n"
CAROL_GRANT = None
USED_TICKET = None
SP_ENV = {k: v for k, v in os.environ.items() if not k.startswith("SALLYPORT_")}
SP_ENV["SALLYPORT_STATE_DIR"] = CSTATE


def sp(*args, timeout=60):
    r = subprocess.run([SP, *args], env=SP_ENV, capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def setup():
    global DAVE, ADMIN_KEY, KID, KEY_PATH, NET_A, NET_B, GROUP, ALICE, BOB, CAROL, RES_WEB, RES_B
    global RES_CIDR, RES_NAME, GRANT_WEB, GRANT_NAME, CONN_A, CONN_B, KEY_A, DIGEST_A, PROXY
    global FOREIGN_KEY, STRANGER_KEY, KEY_B, OLD_CONFIG_A
    # nginx
    www = os.path.join(WORK, "www")
    os.makedirs(os.path.join(www, "slow"))
    with open(os.path.join(www, "index.html"), "wb") as f:
        f.write(PAGE)
    with open(os.path.join(www, "slow", "big.bin"), "wb") as f:
        f.write(os.urandom(BIG))
    t = os.path.join(WORK, "nginx-tmp")
    os.makedirs(t)
    conf = os.path.join(WORK, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""{"user root root;" if os.geteuid() == 0 else ""}
daemon off; worker_processes 1; pid {WORK}/nginx.pid; error_log {WORK}/nginx-error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {t}/body; proxy_temp_path {t}/proxy; fastcgi_temp_path {t}/fcgi;
  uwsgi_temp_path {t}/uwsgi; scgi_temp_path {t}/scgi;
  server {{ listen 127.0.0.1:{WEB_PORT}; root {www}; location /slow/ {{ limit_rate 256k; }} }}
}}
""")
    start([NGINX, "-c", conf, "-e", os.path.join(WORK, "nginx-error.log")], "nginx.log")
    # dnsmasq: the connector's resolver
    start([DNSMASQ, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
           f"--port={DNS_PORT}", "--listen-address=127.0.0.1", "--bind-interfaces",
           "--cache-size=0", f"--pid-file={WORK}/dnsmasq.pid", "--log-facility=-",
           "--host-record=rebind.corp.test,127.0.0.1",
           "--host-record=meta.corp.test,169.254.169.254",
           "--host-record=inside.corp.test,127.0.0.1",
           "--address=/mixed.corp.test/10.1.2.3", "--address=/mixed.corp.test/127.0.0.1"],
          "dnsmasq.log")
    # controller
    subprocess.run([CTL, "migrate", "--state-dir", STATE], check=True, capture_output=True)
    ADMIN_KEY = secret("admin key", subprocess.run(
        [CTL, "admin-key", "create", "--name", "sec", "--state-dir", STATE], check=True,
        capture_output=True, text=True).stdout.strip())
    start([CTL, "serve", "--state-dir", STATE, "--http-listen", f"127.0.0.1:{CTL_PORT}",
           "--public-url", URL, "--relay-listen", f"127.0.0.1:{RELAY_PORT}",
           # the real connector registers at a separate sallyport-relay; the relay cases
           # drive the controller's own relay, where relay_peer stands in for connector A
           "--relay-public", f"127.0.0.1:{RELAY2_PORT}",
           "--log-level", "debug", "--log-format", "json"], "controller.log")
    expect(wait_until(lambda: call("GET", "/healthz")[0] == 200, 20), "controller not up")
    start([os.path.join(os.path.dirname(os.path.abspath(CTL)), "sallyport-relay"),
           "--controller-url", URL, "--relay-listen", f"127.0.0.1:{RELAY2_PORT}",
           "--log-level", "debug", "--log-format", "json"], "relay2.log")
    KID, KEY_PATH = controller_key()
    FOREIGN_KEY, _ = make_key("foreign")
    STRANGER_KEY = os.path.join(WORK, "stranger.key")
    subprocess.run([TOOL, "keygen", STRANGER_KEY], check=True, capture_output=True)
    # the proxy the connector talks through
    PROXY = Proxy(("127.0.0.1", PROXY_PORT), ProxyHandler)
    threading.Thread(target=PROXY.serve_forever, daemon=True).start()
    # networks, group, people, resources
    st, a = admin("POST", "/api/v1/remote-networks", {"name": "vpc-a"})
    expect(st == 201, f"network: {st} {a}")
    st, b = admin("POST", "/api/v1/remote-networks", {"name": "vpc-b"})
    NET_A, NET_B = a["id"], b["id"]
    st, g = admin("POST", "/api/v1/groups", {"name": "eng"})
    expect(st == 201, f"group: {st} {g}")
    GROUP = g["id"]
    ALICE, BOB, CAROL, DAVE = person("alice"), person("bob"), person("carol"), person("dave")
    RES_WEB = resource("web", "127.0.0.1", tcp=json.dumps([str(WEB_PORT)]))
    RES_CIDR = resource("block", "127.0.0.0/29", tcp=json.dumps([str(WEB_PORT)]))
    RES_NAME = resource("corp", "*.corp.test")
    RES_B = resource("other", "10.9.0.0/16", network=NET_B)
    # connector A (real, through the proxy) and connector B (enrolled by hand)
    st, tok = admin("POST", f"/api/v1/remote-networks/{NET_A}/connector-tokens", {})
    expect(st == 201, f"enrollment token: {st} {tok}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALLYPORT_")}
    env.update({"SALLYPORT_URL": f"http://127.0.0.1:{PROXY_PORT}",
                "SALLYPORT_STATE_DIR": CONN_STATE, "SALLYPORT_DIRECT_LISTEN": DIRECT,
                "SALLYPORT_METRICS_ADDR": f"127.0.0.1:{METRICS_PORT}", "SALLYPORT_NAME": "c-a",
                "SALLYPORT_LOG_FORMAT": "json", "SALLYPORT_LOG_LEVEL": "debug",
                "SALLYPORT_DRAIN_TIMEOUT": "1s", "SALLYPORT_DNS": f"127.0.0.1:{DNS_PORT}",
                "SALLYPORT_ALLOW_ROOT": "true",
                "SALLYPORT_ENROLL_TOKEN": secret("enrollment token", tok["token"])})
    start([CONN], "connector.log", env=env)
    expect(wait_until(connector_healthy, 20), "connector not healthy")
    ident = json.load(open(os.path.join(CONN_STATE, "identity.json")))
    CONN_A = ident["connector_id"]
    KEY_A = os.path.join(CONN_STATE, "connector.key")
    DIGEST_A = db_rows("SELECT public_key_digest FROM connectors WHERE id = ?", CONN_A)[0][0]
    st, tok = admin("POST", f"/api/v1/remote-networks/{NET_B}/connector-tokens", {})
    KEY_B, pub_b = make_key("conn-b")
    st, body = call("POST", "/api/connector/v1/enroll",
                    {"token": secret("enrollment token", tok["token"]), "name": "c-b",
                     "public_key_pem": pub_b})
    expect(st == 201, f"enroll B: {st} {body}")
    CONN_B = body["connector_id"]
    GRANT_WEB = grant(ALICE, RES_WEB)
    st, body = call("GET", "/api/connector/v1/config", token=connector_token(KEY_A, CONN_A))
    expect(st == 200, f"A's config: {st} {body}")
    OLD_CONFIG_A = body["document"]
    time.sleep(1.0)  # every later config is issued in a later second
    GRANT_NAME = grant(ALICE, RES_NAME)
    # A's stand-in at the relay (the connector's own relay path is not built): an echo
    # service behind relay_peer registered with A's relay-connector token
    echo = subprocess.Popen([PEER, "echo", "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE,
                            text=True)
    PROCS.append(echo)
    echo_port = int(echo.stdout.readline().split()[1])
    st, body = call("POST", "/api/connector/v1/relay-token", {},
                    token=connector_token(KEY_A, CONN_A))
    expect(st == 200, f"relay token: {st} {body}")
    rt = os.path.join(WORK, "relay-token")
    with open(rt, "w") as f:
        f.write(secret("relay-connector token", body["token"]))
    peer = subprocess.Popen([PEER, "connector", "--relay", f"127.0.0.1:{RELAY_PORT}",
                             "--token-file", rt, "--target", f"127.0.0.1:{echo_port}"],
                            stdout=subprocess.PIPE, text=True)
    PROCS.append(peer)
    expect(peer.stdout.readline().strip().startswith("status 0"), "relay stand-in not registered")
    # the client: a service account signs in with its key, then `sallyport up`
    st, sa = admin("POST", "/api/v1/service-accounts", {"name": "ci"})
    expect(st == 201, f"service account: {st} {sa}")
    sa_key, sa_pub = make_key("sa")
    st, k = admin("POST", f"/api/v1/service-accounts/{sa['id']}/keys", {"public_key_pem": sa_pub})
    expect(st == 201, f"sa key: {st} {k}")
    st, body = admin("PUT", f"/api/v1/groups/{GROUP}/members/{sa['id']}")
    expect(st in (200, 201, 204), f"member: {st} {body}")
    os.makedirs(CHOME, mode=0o700)
    rc, out, err = sp("login", "--controller", URL, "--service-key", sa_key, "--service-kid",
                      k["id"], "--service-account", sa["id"], "--device-name", "sec-box")
    with open(os.path.join(WORK, "sallyport-login.log"), "w") as f:
        f.write(out + err)
    expect(rc == 0, f"login: {rc} {out} {err}")
    start([SP, "up", "--foreground", "--mode", "proxy", "--socks", f"127.0.0.1:{SOCKS_PORT}",
           "--http-proxy", f"127.0.0.1:{HTTP_PORT}"],
          "sallyport-up.log", env=SP_ENV)

    def up():
        rc, out, _ = sp("status", "--json")
        try:
            st = json.loads(out)
            return rc == 0 and st.get("state") == "up" and st.get("resources", 0) >= 1
        except ValueError:
            return False
    expect(wait_until(up, 20), "client daemon not up")
    r = subprocess.run(["curl", "-sS", "--noproxy", "", "--socks5-hostname",
                        f"127.0.0.1:{SOCKS_PORT}", f"http://127.0.0.1:{WEB_PORT}/index.html"],
                       capture_output=True, timeout=30)
    expect(r.stdout == PAGE, f"client daemon flow: {r.returncode} {r.stderr}")
    expect(wait_until(lambda: flow_mark() >= 1, 10), "no flow event of the daemon's flow")
    time.sleep(0.3)


def main():
    only = set(os.environ.get("SECURITY_CASES", "").split(",")) - {""}
    passed = failed = 0
    try:
        setup()
        for case in CASES:
            name = case.__name__[len("case_"):]
            if only and name not in only:
                continue
            began = time.monotonic()
            try:
                case()
                ok, detail = True, ""
            except Fail as e:
                ok, detail = False, str(e)
            except Exception as e:  # a crash is a failure, with where
                ok, detail = False, repr(e) + " " + traceback.format_exc(limit=-2).replace(
                    "\n", " | ")
            passed += ok
            failed += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {name} ({time.monotonic() - began:.1f}s)" +
                  (" " + detail if detail else ""), flush=True)
    except Exception as e:
        failed += 1
        print(f"FAIL setup {e!r} " + traceback.format_exc(limit=-3).replace("\n", " | "),
              flush=True)
    finally:
        if PROXY_STARTED():
            PROXY.shutdown()
        cleanup()
        for p in PROCS:
            if p.args[0] in (CTL, CONN, SP) and p.returncode not in (0, -15):
                failed += 1
                print(f"FAIL {os.path.basename(p.args[0])} exited {p.returncode}", flush=True)
        if failed:
            for f in sorted(os.listdir(WORK)):
                if f.endswith(".log"):
                    text = open(os.path.join(WORK, f), errors="replace").read()
                    print(f"--- {f}\n" + text[-2500:])
        if failed and os.environ.get("SECURITY_KEEP"):
            print(f"kept {WORK}")
        else:
            shutil.rmtree(WORK, ignore_errors=True)
    print(f"security.data_plane: {passed} passed, {failed} failed "
          f"({time.monotonic() - STARTED:.1f}s)", flush=True)
    return 1 if failed else 0


def PROXY_STARTED():
    return "PROXY" in globals()


if __name__ == "__main__":
    sys.exit(main())
