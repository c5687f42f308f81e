#!/usr/bin/env python3
"""Sallyport attack suite, control-plane half: refusals at the controller.

Starts its own sallyport-controller instances (every one with --log-level debug
--log-format json), the real test identity provider (tests/oidc/provider.mjs) and the
misbehaving one (tests/oidc/evil-idp.mjs), then runs one named case per attack. Each case
asserts (a) the exact refusal (HTTP status and error code), (b) a message a person can act
on, and (c) the audit event the refusal leaves, or, where the design does not audit the
refusal (the docstring says so), that nothing in the store changed. At the end every
secret the suite handled is searched for in the controllers' logs. tests/security/README.md
has the case matrix.

Usage: tests/security/run.py PATH-TO-sallyport-controller
Prints one line per case and `security: N passed, M failed`; exits non-zero on a failure.
Python standard library only; ECDSA through the openssl command line.
"""
import base64
import hashlib
import hmac
import http.client
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
import traceback
import urllib.parse

if len(sys.argv) < 2:
    sys.exit("usage: run.py PATH-TO-sallyport-controller")
HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("SALLYPORT_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
os.environ.setdefault("SALLYPORT_SOURCE_DIR", SRC)
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
sys.path.insert(0, os.path.join(SRC, "tests", "lib"))
import controller_oidc as oi  # noqa: E402  (reads sys.argv[1] as the controller binary)

BIN = oi.BIN
WORK = oi.WORK
STARTED = time.monotonic()
LOG_ARGS = ["--log-level", "debug", "--log-format", "json"]
RESULTS = []          # (case name, ok, detail)

from testkit import SECRETS, Fail, expect, secret  # noqa: E402

# ---- HTTP and store helpers ----

def call(ctl, method, path, body=None, token=None, headers=None, cookies=None, raw=None):
    """(status, parsed JSON or text) of one request to the controller."""
    h = dict(headers or {})
    if token is not None:
        h["Authorization"] = "Bearer " + token
    if raw is not None:
        st, _, text = raw_request(ctl, method, path, raw, h, cookies)
    else:
        st, _, text = oi.request(method, ctl.url + path, body, h, cookies)
    try:
        return st, json.loads(text)
    except ValueError:
        return st, text


def raw_request(ctl, method, path, data, headers, cookies=None):
    conn = http.client.HTTPConnection("127.0.0.1", ctl.port, timeout=20)
    h = dict(headers)
    h.setdefault("Content-Type", "application/json")
    if cookies:
        h["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    conn.request(method, path, body=data, headers=h)
    r = conn.getresponse()
    text = r.read().decode(errors="replace")
    conn.close()
    return r.status, r.getheaders(), text


def err(body):
    """(code, message) of a JSON error answer."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return body["error"].get("code"), body["error"].get("message", "")
    return None, str(body)[:200]


def refused(st, body, status, code, *words):
    """Asserts an error answer: status, code and words a person needs in the message."""
    c, m = err(body)
    expect(st == status and c == code, f"want {status} {code}, got {st} {c}: {m}")
    for w in words:
        expect(w.lower() in m.lower(), f"message lacks {w!r}: {m}")
    return m


def audit_mark(ctl):
    return ctl.db("SELECT coalesce(max(id), 0) FROM audit_events")[0][0]


def audits_since(ctl, mark, action=None):
    rows = ctl.db("SELECT action, outcome, actor_type, actor_id, target_id, after_json"
                  " FROM audit_events WHERE id > ? ORDER BY id", mark)
    out = [{"action": a, "outcome": o, "actor_type": t, "actor_id": i, "target_id": g,
            "after": json.loads(j or "{}")} for a, o, t, i, g, j in rows]
    return [e for e in out if action is None or e["action"] == action]


def snapshot(ctl, *tables):
    """A fingerprint of whole tables, to show that a refusal changed nothing."""
    out = {}
    for t in tables:
        out[t] = ctl.db(f"SELECT * FROM {t} ORDER BY 1")
    out["audit_events"] = audit_mark(ctl)
    return out


def unchanged(ctl, before, *tables):
    after = snapshot(ctl, *tables)
    for k in before:
        expect(before[k] == after[k], f"{k} changed")


# ---- JOSE through openssl ----

def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64d(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


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


def der_int(v):
    body = v.to_bytes(32, "big").lstrip(b"\0") or b"\0"
    if body[0] & 0x80:
        body = b"\0" + body
    return bytes([0x02, len(body)]) + body


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


def spki_pem(jwk):
    prefix = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")
    der = prefix + b"\x04" + b64d(jwk["x"]) + b64d(jwk["y"])
    return ("-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(der).decode() +
            "\n-----END PUBLIC KEY-----\n")


def es256_verify(jws, jwks):
    """True when the compact JWS verifies (openssl) with the key of jwks its kid names."""
    h, p, s = jws.split(".")
    header = json.loads(b64d(h))
    keys = [k for k in jwks["keys"] if k.get("kid") == header.get("kid")]
    if header.get("alg") != "ES256" or len(keys) != 1:
        return False
    sig = b64d(s)
    if len(sig) != 64:
        return False
    body = der_int(int.from_bytes(sig[:32], "big")) + der_int(int.from_bytes(sig[32:], "big"))
    paths = {n: os.path.join(WORK, "verify-" + n) for n in ("pub", "sig", "data")}
    with open(paths["pub"], "w") as f:
        f.write(spki_pem(keys[0]))
    with open(paths["sig"], "wb") as f:
        f.write(bytes([0x30, len(body)]) + body)
    with open(paths["data"], "wb") as f:
        f.write((h + "." + p).encode())
    return subprocess.run(["openssl", "dgst", "-sha256", "-verify", paths["pub"], "-signature",
                           paths["sig"], paths["data"]], capture_output=True).returncode == 0


def claims_of(jws):
    return json.loads(b64d(jws.split(".")[1]))


def new_key(name):
    path, pub = oi.ec_key_files(name + "-" + secrets.token_hex(4))
    return path, pub


# ---- the world the cases share ----

class World:
    pass


W = World()


def admin(method, path, body=None, key=None):
    return call(W.ctl, method, path, body, token=key or W.ctl.admin_key)


def created(st, body, what):
    expect(st == 201 and isinstance(body, dict), f"cannot create {what}: {st} {body}")
    return body


def service_account(name):
    """A service account with one key: (user id, key id, key path)."""
    sa = created(*admin("POST", "/api/v1/service-accounts", {"name": name}), "service account")
    path, pub = new_key("sa")
    k = created(*admin("POST", f"/api/v1/service-accounts/{sa['id']}/keys",
                       {"public_key_pem": pub}), "service account key")
    return sa["id"], k["id"], path


def service_session(sa, device=None):
    """Signs a service account in; returns (session answer, device key path, device pem)."""
    user, kid, key_path = sa
    dev_path, dev_pub = device or new_key("device")
    now = int(time.time())
    assertion = sign_jws(key_path, {"alg": "ES256", "kid": kid, "typ": "JWT"},
                         {"iss": user, "aud": W.ctl.url, "iat": now, "exp": now + 120,
                          "jti": secrets.token_hex(16), "cnf": {"jkt": oi.thumbprint(dev_pub)}})
    st, body = call(W.ctl, "POST", "/api/client/v1/session/service",
                    {"assertion": assertion, "device_public_key_pem": dev_pub,
                     "device_name": "sec"})
    if st == 201:
        secret("access token", body["access_token"])
        secret("refresh token", body["refresh_token"])
    return st, body, (dev_path, dev_pub)


def signed_in(sa, device=None):
    st, body, dev = service_session(sa, device)
    expect(st == 201, f"service sign-in failed: {st} {body}")
    return body, dev


def controller_key():
    """The active signing key of the controller (read from its database): (kid, key file)."""
    now = int(time.time())
    kid, pem = W.ctl.db("SELECT kid, private_key_pem FROM signing_keys WHERE not_before <= ?"
                        " AND not_after > ? ORDER BY not_before DESC LIMIT 1", now, now)[0]
    path = os.path.join(WORK, "controller-signing.pem")
    with open(path, "w") as f:
        f.write(pem)
    os.chmod(path, 0o600)
    return kid, path


def access_claims(session, **over):
    c = claims_of(session["access_token"])
    c.update(over)
    return c


def setup():
    # The real provider, with redirect URIs for the main controller.
    port = oi.free_port()
    cfg = os.path.join(WORK, "provider.json")
    oi.provider_config(cfg, [f"http://127.0.0.1:{port}/auth/callback"])
    W.issuer = oi.start_ready(["node", os.path.join(oi.OIDC, "provider.mjs"), "--config", cfg,
                               "--port", "0", "--quiet"], "provider")["issuer"]
    W.client_secret = secret("client secret", "sallyport-controller-test-secret")
    ctl = oi.Controller("ctl-main", W.issuer, "sallyport-controller", W.client_secret,
                        ["--admin-emails", "mixed.case@example.com", *LOG_ARGS])
    ctl.port, ctl.url = port, f"http://127.0.0.1:{port}"
    W.ctl = ctl.start()
    secret("admin key", ctl.admin_key)
    W.auditor_key = secret("auditor key", subprocess.run(
        [BIN, "admin-key", "create", "--name", "auditor", "--role", "auditor", "--state-dir",
         ctl.state], capture_output=True, text=True, check=True).stdout.strip())
    st, W.jwks = call(ctl, "GET", "/.well-known/jwks.json")
    expect(st == 200, "no JWKS")
    # The evil IdP and a controller of its own.
    W.evil = oi.start_ready(["node", os.path.join(oi.OIDC, "evil-idp.mjs"), "--mode", "good",
                             "--port", "0", "--quiet"], "evil")["issuer"]
    W.ctl_evil = oi.Controller("ctl-evil", W.evil, "sallyport-controller", "evil-secret",
                               LOG_ARGS).start()
    secret("admin key", W.ctl_evil.admin_key)
    secret("client secret", "evil-secret")
    # A network, a resource, a group with a policy: what client cases ask for.
    W.net = created(*admin("POST", "/api/v1/remote-networks", {"name": "vpc-sec"}), "network")
    W.net_b = created(*admin("POST", "/api/v1/remote-networks", {"name": "vpc-other"}),
                      "network")
    W.res = created(*admin("POST", "/api/v1/resources",
                           {"network_id": W.net["id"], "name": "grafana",
                            "address": "grafana.corp.example", "tcp": ["443"]}), "resource")
    W.group = created(*admin("POST", "/api/v1/groups", {"name": "sec-eng"}), "group")
    created(*admin("POST", "/api/v1/policies", {"group_id": W.group["id"],
                                                "resource_id": W.res["id"]}), "policy")
    W.sa = service_account("sec-client")
    st, body = admin("PUT", f"/api/v1/groups/{W.group['id']}/members/{W.sa[0]}")
    expect(st in (200, 201, 204), f"cannot add member: {st} {body}")
    W.session, W.device = signed_in(W.sa)
    # Two enrolled connectors in the first network.
    W.connectors = []
    for name in ("conn-a", "conn-b"):
        tok = enrollment_token(W.net["id"])
        path, pub = new_key(name)
        st, body = call(ctl, "POST", "/api/connector/v1/enroll",
                        {"token": tok, "name": name, "public_key_pem": pub})
        expect(st == 201, f"enroll {name}: {st} {body}")
        W.connectors.append((body["connector_id"], path))
    W.kid, W.key_path = controller_key()


def enrollment_token(network_id, ttl=None):
    body = {"ttl_s": ttl} if ttl else {}
    st, t = admin("POST", f"/api/v1/remote-networks/{network_id}/connector-tokens", body)
    expect(st == 201 and "token" in t, f"cannot make an enrollment token: {st} {t}")
    return secret("enrollment token", t["token"])


def connector_token(key_path, kid, iss=None, lifetime=240, iat=None):
    iat = int(time.time()) if iat is None else iat
    return sign_jws(key_path, {"alg": "ES256", "kid": kid, "typ": "JWT"},
                    {"iss": iss or kid, "aud": "sallyport:controller", "iat": iat,
                     "exp": iat + lifetime})


# ---- client API: access tokens ----

CLIENT_TABLES = ("sessions", "devices", "refresh_tokens")


def client_refused(token, *words):
    """A token refused at both client routes with 401 unauthorized, store unchanged."""
    before = snapshot(W.ctl, *CLIENT_TABLES)
    grants = metric(W.ctl, "sallyport_controller_grants_issued_total")
    st, body = call(W.ctl, "GET", "/api/client/v1/resources", token=token)
    refused(st, body, 401, "unauthorized", *words)
    st, body = call(W.ctl, "POST", "/api/client/v1/grants", {"resource_id": W.res["id"]},
                    token=token)
    refused(st, body, 401, "unauthorized", *words)
    unchanged(W.ctl, before, *CLIENT_TABLES)
    expect(metric(W.ctl, "sallyport_controller_grants_issued_total") == grants,
           "a grant was issued")


def metric(ctl, name):
    st, _, text = oi.request("GET", ctl.url + "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def case_client_control():
    """Control: the real access token is admitted at both routes (the refusals below are
    not refusals of everything)."""
    st, body = call(W.ctl, "GET", "/api/client/v1/resources", token=W.session["access_token"])
    expect(st == 200 and "document" in body, f"{st} {body}")
    st, body = call(W.ctl, "POST", "/api/client/v1/grants", {"resource_id": W.res["id"]},
                    token=W.session["access_token"])
    expect(st == 200 and "grant" in body, f"{st} {body}")
    W.grant = secret("grant", body["grant"])
    st, body = call(W.ctl, "GET", "/api/client/v1/resources", token=W.session["access_token"])
    W.resources_doc = body["document"]
    expect(W.resources_doc.count(".") == 2, "resource list is not a JWS")


def case_client_forged_signature():
    """Access token with the controller's kid, signed by another P-256 key: 401
    unauthorized. Gate refusals are not audited (design: docs/protocol.md §1.3); the store
    is unchanged and no grant is issued."""
    path, _ = new_key("forger")
    token = sign_jws(path, {"alg": "ES256", "kid": W.kid, "typ": "JWT"},
                     access_claims(W.session))
    client_refused(token, "signature")


def case_client_expired_access_token():
    """Access token signed with the controller's own key but expired 2 minutes ago (past
    the 60 s skew): 401 unauthorized naming expiry. Not audited; store unchanged."""
    now = int(time.time())
    token = sign_jws(W.key_path, {"alg": "ES256", "kid": W.kid, "typ": "JWT"},
                     access_claims(W.session, iat=now - 720, exp=now - 120))
    client_refused(token, "expired")


def case_client_other_audience():
    """Access-token claims with aud sallyport:relay, signed with the controller key: 401
    naming the audience. Not audited; store unchanged."""
    token = sign_jws(W.key_path, {"alg": "ES256", "kid": W.kid, "typ": "JWT"},
                     access_claims(W.session, aud="sallyport:relay"))
    client_refused(token, "not addressed to", "sallyport:controller")


def case_client_alg_none():
    """alg none: with the RFC's empty signature and with any signature bytes, 401 naming
    the refused algorithm "none" (the header is judged before the signature). Not
    audited; store unchanged."""
    head = b64u(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    token = head + "." + b64u(json.dumps(access_claims(W.session)).encode()) + "."
    client_refused(token, 'algorithm "none" refused')
    client_refused(token + b64u(b"\0" * 64), 'algorithm "none" refused')


def case_client_hs256_public_key():
    """HS256 whose HMAC key is the controller's published public key (PEM): 401 naming
    the algorithm. Not audited; store unchanged."""
    jwk = [k for k in W.jwks["keys"] if k["kid"] == W.kid][0]
    head = b64u(json.dumps({"alg": "HS256", "kid": W.kid, "typ": "JWT"}).encode())
    body = b64u(json.dumps(access_claims(W.session)).encode())
    mac = hmac.new(spki_pem(jwk).encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    client_refused(f"{head}.{body}.{b64u(mac)}", 'algorithm "HS256" refused')


def case_client_typ_confusion():
    """A real grant JWS and a real resource-list JWS (both signed by the controller)
    presented as access tokens: 401 (their audience is not sallyport:controller); and an
    access-token-shaped document with the right audience but typ grant: 401 "not an
    access token". Not audited; store unchanged."""
    client_refused(W.grant, "not addressed to")
    client_refused(W.resources_doc, "not addressed to")
    token = sign_jws(W.key_path, {"alg": "ES256", "kid": W.kid, "typ": "JWT"},
                     access_claims(W.session, typ="grant"))
    client_refused(token, "not an access token")


def case_client_revoked_session():
    """A session revoked by an admin (DELETE /api/v1/sessions/{id}): its unexpired access
    token gets 401 at once. The revocation is audited (session.revoke); the refused call
    is not and changes nothing."""
    s, _ = signed_in(W.sa)
    mark = audit_mark(W.ctl)
    st, body = admin("DELETE", f"/api/v1/sessions/{s['session_id']}")
    expect(st in (200, 204), f"revoke: {st} {body}")
    ev = audits_since(W.ctl, mark, "session.revoke")
    expect(len(ev) == 1 and ev[0]["target_id"] == s["session_id"] and
           ev[0]["actor_type"] == "api_key", f"audit: {ev}")
    client_refused(s["access_token"], "revoked")


def case_client_disabled_user():
    """The user disabled by an admin (PATCH /api/v1/users/{id} disabled): 401 for a token
    issued before. The change is audited (user.update); the refused call changes
    nothing."""
    sa = service_account("sec-disabled")
    s, _ = signed_in(sa)
    mark = audit_mark(W.ctl)
    st, body = admin("PATCH", f"/api/v1/users/{sa[0]}", {"disabled": True})
    expect(st == 200, f"disable: {st} {body}")
    ev = audits_since(W.ctl, mark, "user.update")
    expect(len(ev) == 1 and ev[0]["target_id"] == sa[0], f"audit: {ev}")
    client_refused(s["access_token"], "revoked")


def case_client_blocked_device():
    """The device blocked by an admin (POST /api/v1/devices/{id}/block): 401 for its
    token. The block is audited (device.block); the refused call changes nothing."""
    sa = service_account("sec-blocked")
    s, _ = signed_in(sa)
    mark = audit_mark(W.ctl)
    st, body = admin("POST", f"/api/v1/devices/{s['device_id']}/block")
    expect(st == 200, f"block: {st} {body}")
    ev = audits_since(W.ctl, mark, "device.block")
    expect(len(ev) == 1 and ev[0]["target_id"] == s["device_id"], f"audit: {ev}")
    client_refused(s["access_token"], "blocked")


def case_client_grant_refused():
    """Grants the policy does not allow: an unknown resource id (403 no_resource naming
    resource_id), a resource of no policy of the user's groups (403 no_policy), a resource
    the user's group reaches only after MFA (403 mfa_required), and an extra body field
    (400 invalid). Grants are counted, not audited (docs/protocol.md §1.1): no audit
    event, the issued counter unchanged."""
    other = created(*admin("POST", "/api/v1/resources",
                           {"network_id": W.net["id"], "name": "vault-sec",
                            "address": "vault.corp.example", "tcp": ["8200"]}), "resource")
    mfa = created(*admin("POST", "/api/v1/resources",
                         {"network_id": W.net["id"], "name": "mfa-sec",
                          "address": "mfa.corp.example", "tcp": ["22"]}), "resource")
    created(*admin("POST", "/api/v1/policies", {"group_id": W.group["id"],
                                                "resource_id": mfa["id"],
                                                "require_mfa": True}), "policy")
    before = snapshot(W.ctl, *CLIENT_TABLES)
    grants = metric(W.ctl, "sallyport_controller_grants_issued_total")
    tok = W.session["access_token"]
    for body, status, code, words in [
            ({"resource_id": "0" * 32}, 403, "no_resource", "resource_id"),
            ({"resource_id": other["id"]}, 403, "no_policy", ""),
            ({"resource_id": mfa["id"]}, 403, "mfa_required", ""),
            ({"resource_id": W.res["id"], "res": other["id"]}, 400, "invalid", "res")]:
        st, b = call(W.ctl, "POST", "/api/client/v1/grants", body, token=tok)
        refused(st, b, status, code, words)
        expect(len(err(b)[1]) > 10, f"message too thin: {b}")
    unchanged(W.ctl, before, *CLIENT_TABLES)
    expect(metric(W.ctl, "sallyport_controller_grants_issued_total") == grants,
           "a grant was issued")


# ---- connector API ----

CONNECTOR_TABLES = ("connectors", "flow_events")


def case_connector_impersonation():
    """Token signed with connector A's key whose kid and iss name connector B: 401 (the
    signature does not verify with B's key). Not audited; connectors unchanged (B's
    last_seen_at not touched)."""
    (a_id, a_key), (b_id, _) = W.connectors
    before = snapshot(W.ctl, *CONNECTOR_TABLES)
    for path in ("/api/connector/v1/config", "/api/connector/v1/heartbeat"):
        method = "GET" if path.endswith("config") else "POST"
        st, body = call(W.ctl, method, path, {} if method == "POST" else None,
                        token=connector_token(a_key, b_id))
        refused(st, body, 401, "unauthorized", "signature")
    unchanged(W.ctl, before, *CONNECTOR_TABLES)


def case_connector_token_lifetime():
    """A connector token living 600 s (limit 300 s): 401 naming 300 seconds; an iat so far
    in the past that exp - iat overflows, or an iat in the future: 401. Not audited; store
    unchanged."""
    a_id, a_key = W.connectors[0]
    before = snapshot(W.ctl, *CONNECTOR_TABLES)
    st, body = call(W.ctl, "GET", "/api/connector/v1/config",
                    token=connector_token(a_key, a_id, lifetime=600))
    refused(st, body, 401, "unauthorized", "300")
    now = int(time.time())
    # iat far in the past so that exp - iat overflows a signed 64-bit subtraction, and
    # iat in the future with a 300 s span: neither may stretch the lifetime.
    for iat, exp in ((-(1 << 63), now + 86400 * 365), (-(1 << 62), (1 << 62) + now),
                     (now + 3600, now + 3900)):
        tok = sign_jws(a_key, {"alg": "ES256", "kid": a_id, "typ": "JWT"},
                       {"iss": a_id, "aud": "sallyport:controller", "iat": iat, "exp": exp})
        st, body = call(W.ctl, "GET", "/api/connector/v1/config", token=tok)
        refused(st, body, 401, "unauthorized")
    unchanged(W.ctl, before, *CONNECTOR_TABLES)


def case_connector_enrollment_replay():
    """An enrollment token used a second time: 409 token_used, audited connector.enroll
    denied (cause token_used); no connector made."""
    tok = enrollment_token(W.net["id"])
    _, pub = new_key("replay-1")
    st, body = call(W.ctl, "POST", "/api/connector/v1/enroll",
                    {"token": tok, "name": "conn-replay", "public_key_pem": pub})
    expect(st == 201, f"first use: {st} {body}")
    _, pub2 = new_key("replay-2")
    before = snapshot(W.ctl, "connectors")
    mark = before["audit_events"]
    st, body = call(W.ctl, "POST", "/api/connector/v1/enroll",
                    {"token": tok, "name": "conn-replay-2", "public_key_pem": pub2})
    refused(st, body, 409, "token_used", "already used")
    expect(snapshot(W.ctl, "connectors")["connectors"] == before["connectors"],
           "a connector was made")
    ev = audits_since(W.ctl, mark, "connector.enroll")
    expect(len(ev) == 1 and ev[0]["outcome"] == "denied" and
           ev[0]["after"].get("cause") == "token_used", f"audit: {ev}")


def case_connector_enrollment_expired():
    """An enrollment token past its expiry: 401 token_expired, audited connector.enroll
    denied (cause token_expired); no connector made."""
    tok = enrollment_token(W.net["id"])
    digest = hashlib.sha256(tok.encode()).hexdigest()
    now = int(time.time())
    con = sqlite3.connect(os.path.join(W.ctl.state, "controller.db"), timeout=10)
    con.execute("UPDATE connector_enrollment_tokens SET created_at = ?, expires_at = ?"
                " WHERE token_hash = ?", (now - 7200, now - 3600, digest))
    con.commit()
    con.close()
    _, pub = new_key("expired")
    before = snapshot(W.ctl, "connectors")
    st, body = call(W.ctl, "POST", "/api/connector/v1/enroll",
                    {"token": tok, "name": "conn-expired", "public_key_pem": pub})
    refused(st, body, 401, "token_expired", "expired")
    expect(snapshot(W.ctl, "connectors")["connectors"] == before["connectors"],
           "a connector was made")
    ev = audits_since(W.ctl, before["audit_events"], "connector.enroll")
    expect(len(ev) == 1 and ev[0]["outcome"] == "denied" and
           ev[0]["after"].get("cause") == "token_expired", f"audit: {ev}")


def flow_event(i, **kw):
    e = {"flow_id": f"sec-{i}", "time": int(time.time()), "user_id": W.sa[0],
         "device_id": W.session["device_id"], "resource_id": W.res["id"], "protocol": "tcp",
         "destination_host": "grafana.corp.example", "destination_ip": "10.1.2.3",
         "destination_port": 443, "decision": "allow", "bytes_up": 1, "bytes_down": 2,
         "duration_ms": 3}
    e.update(kw)
    return e


def case_connector_flow_events_other_id():
    """Flow events that name connector B in the body, sent with connector A's token: the
    body cannot choose the connector. A body field connector_id is refused (400 naming
    events[0].connector_id) and nothing is stored; events without it are stored under A
    only (the flow event is the record). Nothing is ever stored under B."""
    (a_id, a_key), (b_id, _) = W.connectors
    tok = connector_token(a_key, a_id)
    before = snapshot(W.ctl, "flow_events")
    st, body = call(W.ctl, "POST", "/api/connector/v1/flow-events",
                    {"events": [flow_event(1, connector_id=b_id)]}, token=tok)
    refused(st, body, 400, "invalid_request", "events[0].connector_id")
    unchanged(W.ctl, before, "flow_events")
    st, body = call(W.ctl, "POST", "/api/connector/v1/flow-events",
                    {"events": [flow_event(2)]}, token=tok)
    expect(st == 200 and body.get("accepted") == 1, f"{st} {body}")
    rows = W.ctl.db("SELECT connector_id FROM flow_events WHERE flow_id LIKE 'sec-%'")
    expect(rows == [(a_id,)], f"stored under {rows}")


def case_connector_config_tampered():
    """The signed connector config verifies with the published JWKS (openssl); the same
    document with one claim changed, or with its signature bit-flipped, or re-signed by a
    foreign key under the controller's kid, does not. (Verification happens at the
    connector: nothing is refused or audited at the controller.)"""
    a_id, a_key = W.connectors[0]
    st, body = call(W.ctl, "GET", "/api/connector/v1/config",
                    token=connector_token(a_key, a_id))
    expect(st == 200, f"config: {st} {body}")
    doc = body["document"]
    expect(es256_verify(doc, W.jwks), "the genuine config does not verify")
    h, p, s = doc.split(".")
    claims = json.loads(b64d(p))
    claims["network_id"] = W.net_b["id"]
    expect(not es256_verify(h + "." + b64u(json.dumps(claims).encode()) + "." + s, W.jwks),
           "a config with a changed network verifies")
    sig = bytearray(b64d(s))
    sig[10] ^= 1
    expect(not es256_verify(h + "." + p + "." + b64u(bytes(sig)), W.jwks),
           "a config with a flipped signature bit verifies")
    path, _ = new_key("foreign")
    forged = sign_jws(path, json.loads(b64d(h)), claims)
    expect(not es256_verify(forged, W.jwks), "a config signed by a foreign key verifies")


# ---- sessions ----

def case_session_refresh_reuse():
    """A stolen refresh token used after its owner rotated it: 401 invalid_grant "already
    used"; the whole family and the session are revoked (reason refresh_token_reuse) and
    audited as session.revoke."""
    s, _ = signed_in(W.sa)
    st, s2 = call(W.ctl, "POST", "/api/client/v1/session/refresh",
                  {"refresh_token": s["refresh_token"]})
    expect(st == 200, f"rotation: {st} {s2}")
    secret("refresh token", s2["refresh_token"])
    secret("access token", s2["access_token"])
    mark = audit_mark(W.ctl)
    st, body = call(W.ctl, "POST", "/api/client/v1/session/refresh",
                    {"refresh_token": s["refresh_token"]})
    refused(st, body, 401, "invalid_grant", "already used")
    rows = W.ctl.db("SELECT revoke_reason FROM sessions WHERE id = ?", s["session_id"])
    expect(rows == [("refresh_token_reuse",)], f"session: {rows}")
    live = W.ctl.db("SELECT count(*) FROM refresh_tokens WHERE session_id = ? AND"
                    " revoked_at IS NULL", s["session_id"])
    expect(live == [(0,)], f"family not revoked: {live}")
    ev = audits_since(W.ctl, mark, "session.revoke")
    expect(len(ev) == 1 and ev[0]["target_id"] == s["session_id"] and
           ev[0]["outcome"] == "denied" and
           ev[0]["after"].get("reason") == "refresh_token_reuse", f"audit: {ev}")
    st, body = call(W.ctl, "POST", "/api/client/v1/session/refresh",
                    {"refresh_token": s2["refresh_token"]})
    refused(st, body, 401, "invalid_grant")


def case_session_refresh_after_logout():
    """Refresh after the client logged out: 401 invalid_grant. The logout is audited
    (session.revoke, reason sign_out); the refused refresh is not and changes nothing."""
    s, _ = signed_in(W.sa)
    mark = audit_mark(W.ctl)
    st, body = call(W.ctl, "POST", "/api/client/v1/session/logout", token=s["access_token"])
    expect(st == 200, f"logout: {st} {body}")
    ev = audits_since(W.ctl, mark, "session.revoke")
    expect(len(ev) == 1 and ev[0]["after"].get("reason") == "sign_out", f"audit: {ev}")
    before = snapshot(W.ctl, *CLIENT_TABLES)
    st, body = call(W.ctl, "POST", "/api/client/v1/session/refresh",
                    {"refresh_token": s["refresh_token"]})
    refused(st, body, 401, "invalid_grant", "revoked")
    unchanged(W.ctl, before, *CLIENT_TABLES)


def case_session_device_key_of_other_user():
    """A device key already registered to another user: 409 device_key_taken naming the
    cause. Not audited (no session is made); sessions and devices unchanged."""
    other = service_account("sec-other")
    before = snapshot(W.ctl, *CLIENT_TABLES)
    st, body, _ = service_session(other, W.device)
    refused(st, body, 409, "device_key_taken", "another")
    unchanged(W.ctl, before, *CLIENT_TABLES)


def case_session_service_assertion_lifetime():
    """Service-account assertions that try to outlive the 300 s cap (the cap bounds how
    long a copied assertion is worth replaying, e.g. across a restart that empties the
    jti memory): exp - iat = 400, an iat near INT64_MIN whose span overflows, exp before
    iat. 401 unauthorized (bad_assertion), each audited auth.sign_in failed with the
    reason; no session made. Found: the overflow case was accepted (fixed in
    controller/session.c, session_lifetime_within)."""
    user, kid, key_path = service_account("sec-lifetime")
    now = int(time.time())
    for iat, exp in ((now, now + 400), (-(1 << 63), now + 86400 * 365), (now, now - 10)):
        dev_path, dev_pub = new_key("lifetime-device")
        assertion = sign_jws(key_path, {"alg": "ES256", "kid": kid, "typ": "JWT"},
                             {"iss": user, "aud": W.ctl.url, "iat": iat, "exp": exp,
                              "jti": secrets.token_hex(16),
                              "cnf": {"jkt": oi.thumbprint(dev_pub)}})
        before = snapshot(W.ctl, *CLIENT_TABLES)
        st, body = call(W.ctl, "POST", "/api/client/v1/session/service",
                        {"assertion": assertion, "device_public_key_pem": dev_pub})
        refused(st, body, 401, "unauthorized", "bad_assertion", "300 seconds")
        ev = audits_since(W.ctl, before["audit_events"], "auth.sign_in")
        expect(len(ev) == 1 and ev[0]["outcome"] == "failed" and
               ev[0]["after"].get("reason") == "bad_assertion" and
               ev[0]["after"].get("client") == "service", f"audit: {ev}")
        expect(snapshot(W.ctl, *CLIENT_TABLES)["sessions"] == before["sessions"],
               "a session was made")


def case_cross_api_tokens():
    """Each credential only where it belongs: an access token at the connector and admin
    APIs, a connector token at the client and admin APIs, an admin API key at the client
    and connector APIs, an enrollment token as an API key: all 401 unauthorized. Not
    audited; store unchanged."""
    a_id, a_key = W.connectors[0]
    access, conn = W.session["access_token"], connector_token(a_key, a_id)
    tok = enrollment_token(W.net["id"])
    before = snapshot(W.ctl, *(CLIENT_TABLES + CONNECTOR_TABLES + ADMIN_TABLES))
    for method, path, token in [
            ("GET", "/api/connector/v1/config", access), ("GET", "/api/v1/groups", access),
            ("GET", "/api/client/v1/resources", conn), ("GET", "/api/v1/groups", conn),
            ("GET", "/api/client/v1/resources", W.ctl.admin_key),
            ("GET", "/api/connector/v1/config", W.ctl.admin_key),
            ("GET", "/api/v1/groups", tok)]:
        st, body = call(W.ctl, method, path, token=token)
        refused(st, body, 401, "unauthorized")
    unchanged(W.ctl, before, *(CLIENT_TABLES + CONNECTOR_TABLES + ADMIN_TABLES))


def case_connector_disabled():
    """A connector disabled by an admin (PATCH state disabled) is refused at once with its
    still-valid token: 401 unauthorized naming the cause. The change is audited
    (connector.update); the refused call is not. Re-enabled afterwards."""
    tok = enrollment_token(W.net["id"])
    path, pub = new_key("to-disable")
    st, body = call(W.ctl, "POST", "/api/connector/v1/enroll",
                    {"token": tok, "name": "conn-disable", "public_key_pem": pub})
    expect(st == 201, f"enroll: {st} {body}")
    cid = body["connector_id"]
    ctok = connector_token(path, cid)
    st, _ = call(W.ctl, "GET", "/api/connector/v1/config", token=ctok)
    expect(st == 200, f"config before: {st}")
    mark = audit_mark(W.ctl)
    st, body = admin("PATCH", f"/api/v1/connectors/{cid}", {"state": "disabled"})
    expect(st == 200, f"disable: {st} {body}")
    ev = audits_since(W.ctl, mark, "connector.update")
    expect(len(ev) == 1 and ev[0]["target_id"] == cid, f"audit: {ev}")
    before = snapshot(W.ctl, *CONNECTOR_TABLES)
    st, body = call(W.ctl, "GET", "/api/connector/v1/config", token=ctok)
    refused(st, body, 401, "unauthorized", "disabled")
    st, body = call(W.ctl, "POST", "/api/connector/v1/flow-events",
                    {"events": [flow_event(99)]}, token=ctok)
    refused(st, body, 401, "unauthorized", "disabled")
    unchanged(W.ctl, before, *CONNECTOR_TABLES)


def case_client_unknown_kid_and_crit():
    """An access token naming a kid the controller never published, and one signed with
    the controller key but carrying a crit header: 401 unauthorized. Not audited; store
    unchanged."""
    token = sign_jws(W.key_path, {"alg": "ES256", "kid": "no-such-key", "typ": "JWT"},
                     access_claims(W.session))
    client_refused(token)
    token = sign_jws(W.key_path, {"alg": "ES256", "kid": W.kid, "typ": "JWT",
                                  "crit": ["exp"]}, access_claims(W.session))
    client_refused(token, "crit")


# ---- OIDC ----

def sign_in_audit(ctl, mark, reason):
    ev = audits_since(ctl, mark, "auth.sign_in")
    expect(len(ev) == 1 and ev[0]["outcome"] == "failed" and
           ev[0]["after"].get("reason") == reason, f"audit: {ev}")


def users_unchanged(ctl, before):
    expect(ctl.db("SELECT id FROM users ORDER BY id") == before, "users changed")


def case_oidc_state_mismatch():
    """A callback whose state no sign-in issued: 400 sign_in_failed (state_unknown),
    audited auth.sign_in failed with that reason; nobody provisioned."""
    users = W.ctl.db("SELECT id FROM users ORDER BY id")
    mark = audit_mark(W.ctl)
    st, body = call(W.ctl, "GET", "/auth/callback?state=" + secrets.token_hex(16) + "&code=x")
    refused(st, body, 400, "sign_in_failed", "state_unknown")
    sign_in_audit(W.ctl, mark, "state_unknown")
    users_unchanged(W.ctl, users)


def console_sign_in(user="mixed-case", password="mixed-pass"):
    jar = os.path.join(WORK, f"console-{secrets.token_hex(4)}.jar")
    out = oi.drive("--rp-start", W.ctl.url + "/auth/login", "--jar", jar, "--username", user,
                   "--password", password, "--follow")
    expect(out.get("status") == 302, f"console sign-in: {out}")
    cookie = oi.jar_cookies(jar).get("sp_console", ("",))[0]
    expect(cookie, "no console cookie")
    secret("console cookie", cookie)
    st, body = call(W.ctl, "GET", "/auth/session", cookies={"sp_console": cookie})
    expect(st == 200, f"/auth/session: {st} {body}")
    return out, {"sp_console": cookie}, secret("csrf token", body["csrf_token"])


def case_oidc_replayed_code():
    """An authorization code already redeemed, presented again with a fresh sign-in state
    of this browser: the IdP refuses the exchange, so 400 sign_in_failed
    (token_exchange_failed), audited auth.sign_in failed; nobody new provisioned."""
    out, _, _ = console_sign_in()
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(out["redirect"]).query)
    code = secret("authorization code", q["code"][0])
    st, hdrs, _ = oi.request("GET", W.ctl.url + "/auth/login")
    expect(st == 302, "no fresh sign-in")
    cookies = oi.set_cookies(hdrs)
    state = urllib.parse.parse_qs(urllib.parse.urlsplit(
        oi.header(hdrs, "Location")[0]).query)["state"][0]
    users = W.ctl.db("SELECT id FROM users ORDER BY id")
    mark = audit_mark(W.ctl)
    st, body = call(W.ctl, "GET", "/auth/callback?" + urllib.parse.urlencode(
        {"code": code, "state": state}), cookies=cookies)
    refused(st, body, 400, "sign_in_failed", "token_exchange_failed")
    sign_in_audit(W.ctl, mark, "token_exchange_failed")
    users_unchanged(W.ctl, users)


def evil_case(mode, reason):
    def run():
        ctl = W.ctl_evil
        st, body = oi.request("POST", W.evil + "/_test/mode", {"mode": mode})[::2]
        expect(st == 200, f"evil mode {mode}: {body}")
        users = ctl.db("SELECT id FROM users ORDER BY id")
        mark = audit_mark(ctl)
        st, text = oi.evil_flow(ctl)
        try:
            body = json.loads(text)
        except ValueError:
            body = text
        refused(st, body, 400, "sign_in_failed", reason)
        sign_in_audit(ctl, mark, reason)
        users_unchanged(ctl, users)
    run.__name__ = "case_oidc_" + mode.replace("-", "_")
    run.__doc__ = (f"evil IdP mode {mode}: the callback is 400 sign_in_failed ({reason}), "
                   f"audited auth.sign_in failed with reason {reason}; nobody provisioned.")
    return run


EVIL_CASES = [evil_case(m, r) for m, r in [
    ("tampered-signature", "bad_signature"), ("alg-none", "bad_algorithm"),
    ("wrong-iss", "wrong_issuer"), ("wrong-aud", "wrong_audience"),
    ("expired", "token_expired"), ("wrong-nonce", "nonce_mismatch"),
    ("unverified-email", "email_not_verified")]]


def case_oidc_unverified_email_real_idp():
    """The real provider's account with email_verified false: 400 sign_in_failed
    (email_not_verified), audited; the user is not provisioned."""
    users = W.ctl.db("SELECT id FROM users ORDER BY id")
    mark = audit_mark(W.ctl)
    jar = os.path.join(WORK, "unverified.jar")
    out = oi.drive("--rp-start", W.ctl.url + "/auth/login", "--jar", jar, "--username",
                   "unverified-user", "--password", "unverified-pass", "--follow")
    try:
        body = json.loads(out.get("body", ""))
    except ValueError:
        body = out.get("body")
    refused(out.get("status"), body, 400, "sign_in_failed", "email_not_verified")
    sign_in_audit(W.ctl, mark, "email_not_verified")
    users_unchanged(W.ctl, users)


def case_oidc_login_flood():
    """An unauthenticated flood of GET /auth/login (1,100 from 127.0.0.2, more than the
    1,024-slot pending table) must not lock people out of signing in: every flood request
    is answered 302 (never 503 busy), a sign-in begun before the flood from 127.0.0.1
    still completes (auth.sign_in success audited), and a new one works. Found: the
    table filled and every sign-in was refused with 503 for ten minutes (fixed in
    controller/auth.c, auth_pending_slot: a per-address quota replacing that address's
    oldest)."""
    st, hdrs, _ = oi.request("GET", W.ctl.url + "/auth/login")
    expect(st == 302, f"login: {st}")
    cookies, idp_url = oi.set_cookies(hdrs), oi.header(hdrs, "Location")[0]
    conn = http.client.HTTPConnection("127.0.0.1", W.ctl.port, timeout=20,
                                      source_address=("127.0.0.2", 0))
    statuses = {}
    for _ in range(1100):
        conn.request("GET", "/auth/login")
        r = conn.getresponse()
        r.read()
        statuses[r.status] = statuses.get(r.status, 0) + 1
    conn.close()
    expect(statuses == {302: 1100}, f"flood answers: {statuses}")
    out = oi.drive("--url", idp_url, "--username", "eng-user", "--password", "eng-pass")
    expect("redirect" in out, f"IdP: {out}")
    mark = audit_mark(W.ctl)
    st, hdrs, body = oi.request("GET", out["redirect"], cookies=cookies)
    expect(st == 302, f"the sign-in begun before the flood: {st} {body}")
    secret("console cookie", oi.set_cookies(hdrs).get("sp_console"))
    ev = audits_since(W.ctl, mark, "auth.sign_in")
    expect(len(ev) == 1 and ev[0]["outcome"] == "success", f"audit: {ev}")
    console_sign_in()


def case_device_code_flood():
    """An unauthenticated flood of POST /auth/device/code (300 from 127.0.0.2, more than
    the 256-slot device table) must not lock the device flow: every flood request gets a
    code (200, never 503 busy), a device code issued before the flood from 127.0.0.1
    still polls as authorization_pending, and a new one is issued. Not audited (no
    sign-in happened). Found: the table filled and the device flow answered 503 for up
    to twenty minutes (fixed in controller/auth_device.c, auth_device_slot)."""
    _, pub = new_key("device-flood")
    st, before = call(W.ctl, "POST", "/auth/device/code", {"device_public_key_pem": pub})
    expect(st == 200, f"device code: {st} {before}")
    secret("device code", before["device_code"])
    conn = http.client.HTTPConnection("127.0.0.1", W.ctl.port, timeout=20,
                                      source_address=("127.0.0.2", 0))
    statuses = {}
    data = json.dumps({"device_public_key_pem": pub})
    for _ in range(300):
        conn.request("POST", "/auth/device/code", body=data,
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        answer = r.read()
        if r.status == 200:
            secret("device code", json.loads(answer)["device_code"])
        statuses[r.status] = statuses.get(r.status, 0) + 1
    conn.close()
    expect(statuses == {200: 300}, f"flood answers: {statuses}")
    st, body = call(W.ctl, "POST", "/auth/device/token", {"device_code": before["device_code"]})
    refused(st, body, 400, "authorization_pending")
    st, body = call(W.ctl, "POST", "/auth/device/code", {"device_public_key_pem": pub})
    expect(st == 200, f"a new device code: {st} {body}")
    secret("device code", body["device_code"])


def case_oidc_native_redirect_uri():
    """A native sign-in whose redirect_uri only looks like loopback (127.0.0.1.evil.example,
    127.0.0.1@evil.example, https, localhost, no port) or a state with markup: 400
    invalid_request naming the rule, no redirect to the IdP, not audited (nothing was
    attempted at the IdP); audit log unchanged."""
    mark = audit_mark(W.ctl)
    base = {"client": "native", "code_challenge": "A" * 43, "code_challenge_method": "S256",
            "state": "s"}
    for uri in ("http://127.0.0.1.evil.example:8000/cb", "http://127.0.0.1@evil.example/cb",
                "https://127.0.0.1:8000/cb", "http://localhost:8000/cb", "http://127.0.0.1/cb",
                "http://127.0.0.1:8000/cb#frag"):
        st, body = call(W.ctl, "GET", "/auth/login?" + urllib.parse.urlencode(
            dict(base, redirect_uri=uri)))
        refused(st, body, 400, "invalid_request", "loopback")
    st, body = call(W.ctl, "GET", "/auth/login?" + urllib.parse.urlencode(
        dict(base, redirect_uri="http://127.0.0.1:8000/cb", state="<script>")))
    refused(st, body, 400, "invalid_request", "state")
    expect(audit_mark(W.ctl) == mark, "audited")


def case_device_page_no_reflection():
    """The device page given a user_code full of markup: 400 HTML page that does not
    reflect the input (no <script>, no attribute break-out), served nosniff and unframable.
    Nothing to audit; nothing changed."""
    for q in ("<script>alert(1)</script>", 'BBBB-BBBB"><img src=x onerror=alert(1)>'):
        st, hdrs, text = oi.request("GET", W.ctl.url + "/auth/device?user_code=" +
                                    urllib.parse.quote(q))
        expect(st == 400 and "<script>" not in text and "<img" not in text and
               "alert" not in text, f"{st} {text[:200]}")
        expect(oi.header(hdrs, "X-Content-Type-Options") == ["nosniff"], "no nosniff")
        csp = " ".join(oi.header(hdrs, "Content-Security-Policy"))
        expect("frame-ancestors 'none'" in csp, f"CSP: {csp}")


# ---- admin API ----

ADMIN_TABLES = ("groups", "resources", "remote_networks", "api_keys", "users")


def case_admin_no_key():
    """No credentials at a read and a write route: 401 unauthorized naming the API key.
    Not audited; nothing changed."""
    before = snapshot(W.ctl, *ADMIN_TABLES)
    st, body = call(W.ctl, "GET", "/api/v1/groups")
    refused(st, body, 401, "unauthorized", "API key")
    st, body = call(W.ctl, "POST", "/api/v1/groups", {"name": "nokey"})
    refused(st, body, 401, "unauthorized", "API key")
    st, body = call(W.ctl, "GET", "/api/v1/groups", token="spk_" + "A" * 43)
    refused(st, body, 401, "unauthorized", "unknown")
    unchanged(W.ctl, before, *ADMIN_TABLES)


def case_admin_auditor_writes():
    """An auditor key may read (200) but writing is 403 forbidden naming the role, and
    nothing changed (the gate refuses before any handler: not audited)."""
    st, _ = admin("GET", "/api/v1/groups", key=W.auditor_key)
    expect(st == 200, f"auditor read: {st}")
    before = snapshot(W.ctl, *ADMIN_TABLES)
    for method, path, body in [("POST", "/api/v1/groups", {"name": "by-auditor"}),
                               ("DELETE", f"/api/v1/groups/{W.group['id']}", None),
                               ("POST", "/api/v1/api-keys", {"name": "x", "role": "admin"})]:
        st, b = admin(method, path, body, key=W.auditor_key)
        refused(st, b, 403, "forbidden", "auditor")
    unchanged(W.ctl, before, *ADMIN_TABLES)


def case_admin_revoked_key():
    """An API key revoked through the API: 401 unauthorized ("revoked"). The revocation
    is audited (api_key.revoke); the refused call is not and changes nothing."""
    st, k = admin("POST", "/api/v1/api-keys", {"name": "to-revoke", "role": "admin"})
    expect(st == 201, f"create: {st} {k}")
    secret("admin key", k["key"])
    st, _ = admin("GET", "/api/v1/groups", key=k["key"])
    expect(st == 200, "new key not admitted")
    mark = audit_mark(W.ctl)
    st, body = admin("DELETE", f"/api/v1/api-keys/{k['id']}")
    expect(st in (200, 204), f"revoke: {st} {body}")
    ev = audits_since(W.ctl, mark, "api_key.revoke")
    expect(len(ev) == 1 and ev[0]["target_id"] == k["id"], f"audit: {ev}")
    before = snapshot(W.ctl, *ADMIN_TABLES)
    st, body = admin("POST", "/api/v1/groups", {"name": "after-revoke"}, key=k["key"])
    refused(st, body, 401, "unauthorized", "revoked")
    unchanged(W.ctl, before, *ADMIN_TABLES)


def case_admin_expired_key():
    """An API key past its expires_at: 401 unauthorized ("expired"). Not audited; nothing
    changed."""
    st, k = admin("POST", "/api/v1/api-keys", {"name": "to-expire", "role": "admin"})
    expect(st == 201, f"create: {st} {k}")
    secret("admin key", k["key"])
    now = int(time.time())
    con = sqlite3.connect(os.path.join(W.ctl.state, "controller.db"), timeout=10)
    con.execute("UPDATE api_keys SET created_at = ?, expires_at = ? WHERE id = ?",
                (now - 7200, now - 60, k["id"]))
    con.commit()
    con.close()
    before = snapshot(W.ctl, *ADMIN_TABLES)
    st, body = admin("POST", "/api/v1/groups", {"name": "after-expiry"}, key=k["key"])
    refused(st, body, 401, "unauthorized", "expired")
    unchanged(W.ctl, before, *ADMIN_TABLES)


def case_audit_source_not_spoofable():
    """X-Forwarded-For and X-Real-IP from a direct caller are not trusted: the audit event
    of the change records the peer address 127.0.0.1."""
    mark = audit_mark(W.ctl)
    st, body = call(W.ctl, "POST", "/api/v1/groups", {"name": "xff"}, token=W.ctl.admin_key,
                    headers={"X-Forwarded-For": "6.6.6.6", "X-Real-IP": "6.6.6.6",
                             "Forwarded": "for=6.6.6.6"})
    expect(st == 201, f"{st} {body}")
    rows = W.ctl.db("SELECT action, source_address FROM audit_events WHERE id > ?", mark)
    expect(rows == [("group.create", "127.0.0.1")], f"audit: {rows}")


def case_admin_sql_metacharacters():
    """Names full of SQL metacharacters are stored and returned literally (201, audited
    group.create with that name), and a filter value `' OR 1=1 --` matches nothing."""
    name = "x'); DROP TABLE users; -- \" OR \"1\"=\"1"
    mark = audit_mark(W.ctl)
    g = created(*admin("POST", "/api/v1/groups", {"name": name}), "group")
    expect(g["name"] == name, f"stored as {g['name']!r}")
    expect(W.ctl.db("SELECT name FROM groups WHERE id = ?", g["id"]) == [(name,)],
           "not literal in the store")
    ev = audits_since(W.ctl, mark, "group.create")
    expect(len(ev) == 1 and ev[0]["after"].get("name") == name, f"audit: {ev}")
    expect(W.ctl.db("SELECT count(*) FROM users")[0][0] > 0, "users table harmed")
    for path in ("/api/v1/groups?name=", "/api/v1/users?email=", "/api/v1/resources?name="):
        st, body = admin("GET", path + urllib.parse.quote("' OR 1=1 --"))
        expect(st == 200 and body.get("items") == [], f"{path}: {st} {body}")
    st, body = admin("GET", "/api/v1/groups?name=" + urllib.parse.quote(name))
    expect(st == 200 and [x["id"] for x in body["items"]] == [g["id"]], f"{st} {body}")


def send_raw(ctl, head, chunks):
    """Sends head and body chunks on one socket (stopping when the peer closes early) and
    returns (status, parsed body) of the answer."""
    import socket
    s = socket.create_connection(("127.0.0.1", ctl.port), timeout=20)
    try:
        s.sendall(head)
        for c in chunks:
            s.sendall(c)
    except (BrokenPipeError, ConnectionResetError):
        pass
    data = b""
    try:
        while True:
            part = s.recv(65536)
            if not part:
                break
            data += part
            if b"\r\n\r\n" in data:
                h, _, b = data.partition(b"\r\n\r\n")
                m = [l for l in h.split(b"\r\n") if l.lower().startswith(b"content-length:")]
                if m and len(b) >= int(m[0].split(b":")[1]):
                    break
    except (ConnectionResetError, socket.timeout):
        pass
    s.close()
    h, _, b = data.partition(b"\r\n\r\n")
    status = int(h.split(b" ")[1]) if h.startswith(b"HTTP/") else 0
    try:
        return status, json.loads(b)
    except ValueError:
        return status, b[:200]


def case_admin_oversize_body():
    """A body over 1 MiB, announced by Content-Length (answered before the body is read)
    or sent chunked without a length: 413 body_too_large naming the limit; nothing
    changed, not audited."""
    before = snapshot(W.ctl, *ADMIN_TABLES)
    auth = f"Authorization: Bearer {W.ctl.admin_key}\r\nContent-Type: application/json\r\n"
    head = (f"POST /api/v1/groups HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
            f"Content-Length: {2 << 20}\r\n\r\n").encode()
    st, body = send_raw(W.ctl, head, [])
    refused(st, body, 413, "body_too_large", "bytes")
    head = (f"POST /api/v1/groups HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    piece = b'{"name": "big", "description": "' + b"x" * 65536
    chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
    filler = b"x" * 65536
    more = b"%x\r\n" % len(filler) + filler + b"\r\n"
    tail = b'"}'
    st, body = send_raw(W.ctl, head, [chunk] + [more] * 24 +
                        [b"%x\r\n" % len(tail) + tail + b"\r\n0\r\n\r\n"])
    refused(st, body, 413, "body_too_large", "bytes")
    unchanged(W.ctl, before, *ADMIN_TABLES)


def case_admin_malformed_json():
    """Malformed JSON, a duplicate key, a non-object and an empty body: 400 invalid_json
    naming the problem; a non-JSON content type: 415. Nothing changed, not audited."""
    before = snapshot(W.ctl, *ADMIN_TABLES)
    for raw, words in (('{"name": "x",', "not valid JSON"),
                       ('{"name": "a", "name": "b"}', "duplicate object key"),
                       ('[1, 2]', "must be a JSON object"), ('', "empty")):
        st, body = call(W.ctl, "POST", "/api/v1/groups", token=W.ctl.admin_key, raw=raw)
        refused(st, body, 400, "invalid_json", words)
    st, _, text = raw_request(W.ctl, "POST", "/api/v1/groups", '{"name": "t"}',
                              {"Authorization": "Bearer " + W.ctl.admin_key,
                               "Content-Type": "text/plain"})
    refused(st, json.loads(text), 415, "unsupported_media_type", "application/json")
    unchanged(W.ctl, before, *ADMIN_TABLES)


def case_admin_unknown_field():
    """An unknown field, and a field that may not be set (id): 400 naming the field;
    nothing changed."""
    before = snapshot(W.ctl, *ADMIN_TABLES)
    st, body = admin("POST", "/api/v1/groups", {"name": "x", "is_admin": True})
    refused(st, body, 400, "invalid", "is_admin")
    st, body = admin("PATCH", f"/api/v1/groups/{W.group['id']}", {"id": "0" * 32})
    refused(st, body, 400, "invalid", "id")
    unchanged(W.ctl, before, *ADMIN_TABLES)


def case_admin_unknown_query_parameter():
    """A misspelt or repeated list filter (`/api/v1/users?emial=...`, `?name=a&name=b`):
    400 invalid naming the parameter, instead of silently listing everything. Found: the
    list handler ignored unknown parameters (fixed in controller/admin_api.c with
    http_query_unexpected). Reads only: nothing to audit."""
    for path, name in (("/api/v1/users?emial=nobody%40example.com", "emial"),
                       ("/api/v1/groups?name=a&name=b", "name"),
                       ("/api/v1/audit-events?actionn=group.create", "actionn")):
        st, body = admin("GET", path)
        refused(st, body, 400, "invalid", f'"{name}"', "unknown here or given twice")
    st, body = admin("GET", "/api/v1/groups?name=sec-eng&limit=5")
    expect(st == 200 and [g["id"] for g in body["items"]] == [W.group["id"]], f"{st} {body}")


def case_admin_control_characters():
    """Control characters in a name: NUL is 400 invalid_json (the parser refuses it);
    newline, ESC and tab are 400 invalid naming the field; nothing
    changed (a forged log line or terminal escape never reaches the store)."""
    before = snapshot(W.ctl, *ADMIN_TABLES)
    st, body = admin("POST", "/api/v1/groups", {"name": "a\u0000b"})
    refused(st, body, 400, "invalid_json", "not allowed")
    for name in ("a\nINFO forged line", "\u001b[31mred", "tab\there"):
        st, body = admin("POST", "/api/v1/groups", {"name": name})
        refused(st, body, 400, "invalid", "name")
    unchanged(W.ctl, before, *ADMIN_TABLES)


def case_admin_path_traversal():
    """Dot segments (plain or %2e-encoded), encoded slashes and empty segments never reach a
    route or a file: 400 bad_path, a JSON error, no file content. Not audited."""
    for path in ("/admin/../etc/passwd", "/%2e%2e/etc/passwd", "/.well-known/../healthz",
                 "/api/v1/../../../../etc/passwd", "/api/v1/groups/..%2f..%2fetc%2fpasswd",
                 "/%2e%2e%2f%2e%2e%2fetc/passwd", "//etc/passwd", "/" + "a" * 5000):
        st, _, text = raw_request(W.ctl, "GET", path, None,
                                  {"Authorization": "Bearer " + W.ctl.admin_key})
        expect("root:" not in text, f"{path}: file content served")
        refused(st, json.loads(text), 400, "bad_path", "path is not valid")


def case_console_csrf():
    """A console session (real IdP sign-in, admin by admin_emails) writing without
    X-CSRF-Token (POST, PATCH, DELETE), or with the token of another session of the same
    person: 403 csrf
    naming the header; nothing changed. The right token is admitted (201)."""
    _, cookie_a, csrf_a = console_sign_in()
    _, _, csrf_b = console_sign_in()
    expect(csrf_a != csrf_b, "two sessions share a CSRF token")
    st, _ = call(W.ctl, "GET", "/api/v1/groups", cookies=cookie_a)
    expect(st == 200, f"console read: {st}")
    before = snapshot(W.ctl, *ADMIN_TABLES)
    st, body = call(W.ctl, "POST", "/api/v1/groups", {"name": "csrf-1"}, cookies=cookie_a)
    refused(st, body, 403, "csrf", "X-CSRF-Token")
    st, body = call(W.ctl, "POST", "/api/v1/groups", {"name": "csrf-2"}, cookies=cookie_a,
                    headers={"X-CSRF-Token": csrf_b})
    refused(st, body, 403, "csrf", "X-CSRF-Token")
    for method, body in (("PATCH", {"description": "x"}), ("DELETE", None)):
        st, b = call(W.ctl, method, f"/api/v1/groups/{W.group['id']}", body, cookies=cookie_a)
        refused(st, b, 403, "csrf", "X-CSRF-Token")
    unchanged(W.ctl, before, *ADMIN_TABLES)
    st, body = call(W.ctl, "POST", "/api/v1/groups", {"name": "csrf-ok"}, cookies=cookie_a,
                    headers={"X-CSRF-Token": csrf_a})
    expect(st == 201, f"the right token: {st} {body}")


def case_console_role_revoked():
    """A console session outlives its permission by nothing: after an admin demotes the
    person to role user, the same cookie gets 403 forbidden "no console role"; after the
    person is disabled, 401 unauthorized, and still 401 after the person is enabled
    again (a cookie taken meanwhile must not come back to life). The changes are audited
    (user.update); the refused calls change nothing. Found: enabling the person revived
    the old console session (fixed: disabling ends console sessions, auth_console_end_user
    called from controller/admin_identity.c)."""
    _, cookie, csrf = console_sign_in()
    st, body = call(W.ctl, "GET", "/auth/session", cookies=cookie)
    uid = body["user"]["id"]
    mark = audit_mark(W.ctl)
    try:
        st, body = admin("PATCH", f"/api/v1/users/{uid}", {"role": "user"})
        expect(st == 200, f"demote: {st} {body}")
        before = snapshot(W.ctl, *ADMIN_TABLES)
        st, body = call(W.ctl, "GET", "/api/v1/groups", cookies=cookie)
        refused(st, body, 403, "forbidden", "no console role")
        st, body = call(W.ctl, "POST", "/api/v1/groups", {"name": "demoted"}, cookies=cookie,
                        headers={"X-CSRF-Token": csrf})
        refused(st, body, 403, "forbidden", "no console role")
        st, body = admin("PATCH", f"/api/v1/users/{uid}", {"role": "admin", "disabled": True})
        expect(st == 200, f"disable: {st} {body}")
        before = snapshot(W.ctl, *ADMIN_TABLES)
        st, body = call(W.ctl, "GET", "/api/v1/groups", cookies=cookie)
        refused(st, body, 401, "unauthorized", "console session")
        unchanged(W.ctl, before, *ADMIN_TABLES)
        ev = audits_since(W.ctl, mark, "user.update")
        expect(len(ev) == 2 and all(e["target_id"] == uid for e in ev), f"audit: {ev}")
        # Enabling the person again must not bring the old console session back.
        st, body = admin("PATCH", f"/api/v1/users/{uid}", {"disabled": False})
        expect(st == 200, f"enable: {st} {body}")
        st, body = call(W.ctl, "GET", "/api/v1/groups", cookies=cookie)
        refused(st, body, 401, "unauthorized", "console session")
    finally:
        admin("PATCH", f"/api/v1/users/{uid}", {"role": "admin", "disabled": False})


# ---- files ----

def mode(path):
    return os.stat(path).st_mode & 0o7777


def case_files_modes():
    """The state directory is 0700, controller.db (and -wal/-shm) 0600; admin-key create
    writes no file (the key goes to stdout only)."""
    state = W.ctl.state
    expect(mode(state) == 0o700, f"state dir {oct(mode(state))}")
    for f in ("controller.db", "controller.db-wal", "controller.db-shm"):
        p = os.path.join(state, f)
        if f == "controller.db" or os.path.exists(p):
            expect(mode(p) == 0o600, f"{f} {oct(mode(p))}")
    names = set(os.listdir(state))
    key = subprocess.run([BIN, "admin-key", "create", "--name", "files", "--state-dir", state],
                         capture_output=True, text=True, check=True).stdout.strip()
    secret("admin key", key)
    new = set(os.listdir(state)) - names
    expect(not new, f"admin-key made files: {new}")


def case_files_db_world_readable():
    """A controller.db of mode 0644 stops `serve` (exit non-zero) with a clear error
    naming the mode and the chmod that fixes it; the file is left as it was."""
    state = os.path.join(WORK, "loose")
    subprocess.run([BIN, "migrate", "--state-dir", state], capture_output=True, check=True)
    db = os.path.join(state, "controller.db")
    os.chmod(db, 0o644)
    port = oi.free_port()
    r = subprocess.run([BIN, "serve", "--state-dir", state, "--http-listen",
                        f"127.0.0.1:{port}", "--public-url", f"http://127.0.0.1:{port}",
                        *LOG_ARGS], capture_output=True, text=True, timeout=30)
    expect(r.returncode != 0, "serve started with a 0644 database")
    expect("0644" in r.stderr and "chmod 600" in r.stderr, f"stderr: {r.stderr[-300:]}")
    expect(mode(db) == 0o644, "file mode changed")


# ---- secrets never in logs (runs last) ----

def case_logs_hold_no_secrets():
    """Every controller of the suite ran with --log-level debug --log-format json; none of
    their logs holds any secret the suite saw (API keys, enrollment tokens, refresh and
    access tokens, grants, authorization codes, client secrets, console cookies, CSRF
    tokens) nor a private-key PEM marker."""
    logs = {}
    for f in os.listdir(WORK):
        if f.startswith("ctl-") and f.endswith(".log"):
            logs[f] = open(os.path.join(WORK, f), errors="replace").read()
    expect(len(logs) >= 2 and all(len(t) > 0 for t in logs.values()), f"logs: {list(logs)}")
    expect(any('"level":"debug"' in t for t in logs.values()),
           "no debug lines: the scan would prove little")
    # The scan itself must see what the logs hold: the enrolled connector's id is logged.
    expect(any(W.connectors[0][0] in t for t in logs.values()), "scan sees no logged id")
    found = []
    markers = {"PEM marker": "PRIVATE KEY-----"}
    for label, value in list(SECRETS.items()) + list(markers.items()):
        for f, text in logs.items():
            if value in text:
                found.append(f"{label.split('#')[0]} in {f}")
    expect(len(SECRETS) >= 20 or os.environ.get("SECURITY_CASES"),
           f"only {len(SECRETS)} secrets collected")
    expect(not found, "; ".join(sorted(set(found))))


def case_audit_and_public_documents_hold_no_secrets():
    """The audit log (every column of every event, both controllers) and the public
    documents (/.well-known/jwks.json, /metrics, /healthz, /readyz) hold none of the
    secrets the suite handled; the JWKS holds public keys only (no "d" member, EC P-256,
    each with kid)."""
    st, jwks = call(W.ctl, "GET", "/.well-known/jwks.json")
    expect(st == 200 and jwks["keys"], "no JWKS")
    for k in jwks["keys"]:
        expect(set(k) <= {"kty", "crv", "x", "y", "kid", "alg", "use"} and k["kty"] == "EC" and
               k["crv"] == "P-256" and k.get("kid"), f"JWKS key: {sorted(k)}")
    texts = {}
    for ctl in (W.ctl, W.ctl_evil):
        rows = ctl.db("SELECT * FROM audit_events")
        expect(len(rows) >= 7 or os.environ.get("SECURITY_CASES"),
               f"{ctl.name}: only {len(rows)} audit events")
        texts[ctl.name + " audit_events"] = json.dumps(rows)
        for path in ("/.well-known/jwks.json", "/metrics", "/healthz", "/readyz"):
            texts[ctl.name + " " + path] = oi.request("GET", ctl.url + path)[2]
    expect(W.net["id"] in texts["ctl-main audit_events"], "scan sees no audited id")
    found = [f"{label.split('#')[0]} in {where}" for label, value in SECRETS.items()
             for where, text in texts.items() if value in text]
    found += [f"PEM marker in {w}" for w, t in texts.items() if "PRIVATE KEY" in t]
    expect(not found, "; ".join(sorted(set(found))))


CASES = [
    case_client_control, case_client_forged_signature, case_client_expired_access_token,
    case_client_other_audience, case_client_alg_none, case_client_hs256_public_key,
    case_client_typ_confusion, case_client_revoked_session, case_client_disabled_user,
    case_client_blocked_device,
    case_connector_impersonation, case_connector_token_lifetime,
    case_connector_enrollment_replay, case_connector_enrollment_expired,
    case_connector_flow_events_other_id, case_connector_config_tampered,
    case_session_refresh_reuse, case_session_refresh_after_logout,
    case_session_device_key_of_other_user, case_session_service_assertion_lifetime,
    case_client_unknown_kid_and_crit, case_client_grant_refused, case_cross_api_tokens,
    case_connector_disabled,
    case_oidc_state_mismatch, case_oidc_replayed_code, *EVIL_CASES,
    case_oidc_unverified_email_real_idp, case_oidc_login_flood, case_device_code_flood,
    case_oidc_native_redirect_uri, case_device_page_no_reflection,
    case_admin_no_key, case_admin_auditor_writes, case_admin_revoked_key,
    case_admin_expired_key, case_audit_source_not_spoofable,
    case_admin_sql_metacharacters, case_admin_oversize_body, case_admin_malformed_json,
    case_admin_unknown_field, case_admin_unknown_query_parameter,
    case_admin_control_characters, case_admin_path_traversal, case_console_csrf,
    case_console_role_revoked,
    case_files_modes, case_files_db_world_readable,
    case_logs_hold_no_secrets, case_audit_and_public_documents_hold_no_secrets,
]


def main():
    if shutil.which("node") is None or not os.path.isdir(os.path.join(oi.OIDC, "node_modules")):
        print("security: node or tests/oidc/node_modules missing: run scripts/install-test-tools")
        print("security: 0 passed, 1 failed")
        return 1
    only = set(os.environ.get("SECURITY_CASES", "").split(",")) - {""}
    passed = failed = 0
    try:
        setup()
        for case in CASES:
            name = case.__name__[len("case_"):]
            if only and name not in only | {"client_control", "logs_hold_no_secrets",
                                            "audit_and_public_documents_hold_no_secrets"}:
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
            took = time.monotonic() - began
            print(f"{'ok  ' if ok else 'FAIL'} {name} ({took:.1f}s)" +
                  (" " + detail if detail else ""), flush=True)
    except Exception as e:
        failed += 1
        print(f"FAIL setup {e!r} " + traceback.format_exc(limit=-3).replace("\n", " | "))
    finally:
        for p in oi.PROCS:
            if p.poll() is None:
                p.terminate()
        for p in oi.PROCS:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for p in oi.PROCS:
            if p.args[0] == BIN and p.returncode not in (0, -15):
                failed += 1
                print(f"FAIL controller exited {p.returncode}")
        if failed:
            for f in sorted(os.listdir(WORK)):
                if f.endswith(".log") or f.endswith(".err"):
                    text = open(os.path.join(WORK, f), errors="replace").read()
                    print(f"--- {f}\n" + text[-1500:])
        shutil.rmtree(WORK, ignore_errors=True)
    print(f"security: {passed} passed, {failed} failed ({time.monotonic() - STARTED:.1f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
