#!/usr/bin/env python3
"""Integration test: sign-in at the controller against a real OpenID provider.

Starts tests/oidc/provider.mjs (node oidc-provider) and tests/oidc/evil-idp.mjs on
127.0.0.1, and sallyport-controller instances pointed at them, then drives the browser
flow with tests/oidc/drive-login.mjs: console sign-in (cookie, /auth/session, CSRF on
/auth/logout), native sign-in (loopback listener, POST /api/client/v1/session with a
device key), refresh rotation and reuse detection, client logout, IdP groups synced,
lower-cased e-mail, admin from admin_emails, unverified e-mail refused, replayed and
mismatched state, RS256 with client_secret_post, the device flow (RFC 8628), service
account assertions, an IdP that is down, one that stalls (the controller keeps
answering), groups from userinfo, and every defect of the evil IdP refused with an audit
event naming the reason (unknown-kid-then-rotate accepted after exactly one refetch).

Usage: controller_oidc.py PATH-TO-sallyport-controller (SALLYPORT_SOURCE_DIR set).
"""
import hashlib
import base64
import http.client
import http.server
import json
import re
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

BIN = sys.argv[1] if len(sys.argv) > 1 else sys.exit("usage: controller_oidc.py CONTROLLER")
SRC = os.environ.get("SALLYPORT_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OIDC = os.path.join(SRC, "tests", "oidc")
WORK = tempfile.mkdtemp(prefix="sp-oidc-")
PROCS = []
passed = failed = 0
STARTED = time.monotonic()


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {name} {detail}", flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_ready(cmd, name):
    """Starts a tool that prints one JSON ready line on stdout; returns the line."""
    out = open(os.path.join(WORK, name + ".out"), "w+")
    err = open(os.path.join(WORK, name + ".err"), "w")
    p = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=OIDC)
    PROCS.append(p)
    for _ in range(200):
        out.seek(0)
        line = out.readline()
        if line.endswith("\n"):
            return json.loads(line)
        if p.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not start: " + open(err.name).read()[-500:])


def request(method, url, body=None, headers=None, cookies=None, form=None):
    """One HTTP request, redirects not followed. Returns (status, headers, text)."""
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=20)
    h = dict(headers or {})
    if cookies:
        h["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    if form is not None:
        data = form.encode()
        h["Content-Type"] = "application/x-www-form-urlencoded"
    conn.request(method, u.path + ("?" + u.query if u.query else ""), body=data, headers=h)
    r = conn.getresponse()
    text = r.read().decode(errors="replace")
    hdrs = r.getheaders()
    conn.close()
    return r.status, hdrs, text


def header(hdrs, name):
    return [v for k, v in hdrs if k.lower() == name.lower()]


def set_cookies(hdrs):
    jar = {}
    for v in header(hdrs, "Set-Cookie"):
        k, _, rest = v.partition("=")
        jar[k] = rest.split(";", 1)[0]
    return jar


def jar_cookies(path):
    """name -> (value, httponly) from a Netscape cookie file."""
    out = {}
    if not os.path.exists(path):
        return out
    for line in open(path):
        line = line.rstrip("\n")
        http_only = line.startswith("#HttpOnly_")
        if http_only:
            line = line[len("#HttpOnly_"):]
        elif line.startswith("#") or not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) >= 7:
            out[parts[5]] = (parts[6], http_only)
    return out


def drive(*args):
    r = subprocess.run(["node", os.path.join(OIDC, "drive-login.mjs"), *args],
                       capture_output=True, text=True, timeout=60)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": "no_output", "detail": r.stderr[-300:]}


class Controller:
    def __init__(self, name, issuer, client_id, secret, extra=()):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = os.path.join(WORK, name)
        self.name = name
        self.issuer, self.client_id, self.secret, self.extra = issuer, client_id, secret, extra

    def start(self):
        args = [BIN, "serve", "--state-dir", self.state, "--http-listen", f"127.0.0.1:{self.port}",
                "--public-url", self.url, "--oidc-issuer", self.issuer,
                "--oidc-client-id", self.client_id, "--oidc-groups-claim", "groups",
                *self.extra]
        env = dict(os.environ)
        if self.secret:
            env["SALLYPORT_OIDC_CLIENT_SECRET"] = self.secret
        subprocess.run([BIN, "migrate", "--state-dir", self.state], capture_output=True, check=True)
        self.admin_key = subprocess.run(
            [BIN, "admin-key", "create", "--name", "test", "--state-dir", self.state],
            capture_output=True, text=True, check=True).stdout.strip()
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(WORK, self.name + ".log"), "w"))
        PROCS.append(self.proc)
        for _ in range(200):
            try:
                if request("GET", self.url + "/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"controller {self.name} did not start")

    def db(self, sql, *params):
        con = sqlite3.connect(os.path.join(self.state, "controller.db"))
        try:
            return con.execute(sql, params).fetchall()
        finally:
            con.close()

    def last_audit(self, action="auth.sign_in"):
        rows = self.db("SELECT outcome, after_json FROM audit_events WHERE action = ?"
                       " ORDER BY id DESC LIMIT 1", action)
        return (rows[0][0], json.loads(rows[0][1] or "{}")) if rows else (None, {})

    def callback_url(self):
        return self.url + "/auth/callback"


def device_key():
    priv = subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                           "ec_paramgen_curve:P-256"], capture_output=True, check=True).stdout
    pub = subprocess.run(["openssl", "pkey", "-pubout"], input=priv, capture_output=True,
                         check=True).stdout
    return pub.decode()


def pkce():
    verifier = secrets.token_urlsafe(48)[:64]
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(
        b"=").decode()
    return verifier, challenge


class Listener:
    """The native client's loopback listener: records the query of each request."""

    def __init__(self):
        seen = self.seen = []

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"signed in")

            def log_message(self, *a):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), H)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def provider_config(path, redirect_uris):
    cfg = json.load(open(os.path.join(OIDC, "sample-config.json")))
    for c in cfg["clients"]:
        if c["client_id"] in ("sallyport-controller", "sallyport-controller-rs256"):
            c["redirect_uris"] = redirect_uris
            c["skip_consent"] = True
    cfg["accounts"].append({"sub": "mixed-case", "password": "mixed-pass",
                            "email": "Mixed.Case@Example.COM", "email_verified": True,
                            "name": "Mixed Case", "groups": ["engineering", "sre"]})
    json.dump(cfg, open(path, "w"))


def native_sign_in(ctl, listener, username, password):
    """Runs the native flow; returns (code, client state sent, state received, verifier)."""
    verifier, challenge = pkce()
    state = secrets.token_urlsafe(16)
    redirect = f"http://127.0.0.1:{listener.port}/callback"
    start = ctl.url + "/auth/login?" + urllib.parse.urlencode(
        {"client": "native", "redirect_uri": redirect, "code_challenge": challenge,
         "code_challenge_method": "S256", "state": state})
    jar = os.path.join(WORK, f"native-{secrets.token_hex(4)}.jar")
    out = drive("--rp-start", start, "--jar", jar, "--username", username,
                "--password", password, "--follow")
    loc = out.get("location") or ""
    if out.get("status") != 302 or not loc.startswith(redirect):
        return None, state, None, verifier, out
    before = len(listener.seen)
    request("GET", loc)
    q = listener.seen[before] if len(listener.seen) > before else {}
    return q.get("code", [None])[0], state, q.get("state", [None])[0], verifier, out


def test_real_provider():
    port_a, port_b = free_port(), free_port()
    cfg = os.path.join(WORK, "provider.json")
    provider_config(cfg, [f"http://127.0.0.1:{port_a}/auth/callback",
                          f"http://127.0.0.1:{port_b}/auth/callback"])
    ready = start_ready(["node", os.path.join(OIDC, "provider.mjs"), "--config", cfg,
                         "--port", "0", "--quiet"], "provider")
    issuer = ready["issuer"]
    ctl = Controller("ctl-a", issuer, "sallyport-controller", "sallyport-controller-test-secret",
                     ["--admin-emails", "nobody@example.com, mixed.case@example.com"])
    ctl.port, ctl.url = port_a, f"http://127.0.0.1:{port_a}"
    ctl.start()
    device = device_flow_start(ctl)

    # Console sign-in of a user whose e-mail the IdP sends in mixed case.
    jar = os.path.join(WORK, "console.jar")
    out = drive("--rp-start", ctl.url + "/auth/login", "--jar", jar, "--username", "mixed-case",
                "--password", "mixed-pass", "--follow")
    check("console sign-in redirects to /admin/", out.get("status") == 302 and
          out.get("location") == "/admin/", str(out))
    cookies = jar_cookies(jar)
    check("console cookie set, HttpOnly", "sp_console" in cookies and cookies["sp_console"][1],
          str(cookies))
    console = {"sp_console": cookies.get("sp_console", ("",))[0]}
    st, _, body = request("GET", ctl.url + "/auth/session", cookies=console)
    sess = json.loads(body) if st == 200 else {}
    check("/auth/session answers", st == 200 and sess["user"]["email"] ==
          "mixed.case@example.com", body)
    check("admin_emails makes the user admin", sess.get("user", {}).get("role") == "admin", body)
    check("csrf token given", len(sess.get("csrf_token", "")) == 32, body)
    rows = ctl.db("SELECT email, display_name, issuer, subject, role FROM users"
                  " WHERE subject = 'mixed-case'")
    check("user provisioned with lower-cased email",
          rows == [("mixed.case@example.com", "Mixed Case", issuer, "mixed-case", "admin")],
          str(rows))
    groups = ctl.db("SELECT g.name, g.source, m.source FROM memberships m JOIN groups g"
                    " ON g.id = m.group_id JOIN users u ON u.id = m.user_id"
                    " WHERE u.subject = 'mixed-case' ORDER BY g.name")
    check("IdP groups synced into memberships",
          groups == [("engineering", "idp", "idp"), ("sre", "idp", "idp")], str(groups))
    outcome, after = ctl.last_audit()
    check("auth.sign_in audited", outcome == "success" and after.get("client") == "console",
          str(after))
    st, _, _ = request("GET", ctl.url + "/auth/session", cookies={"sp_console": "spc_" + "A" * 43})
    check("forged console cookie refused", st == 401)

    # Replay of the same callback (same state and code): refused.
    st, _, body = request("GET", out["redirect"], cookies={
        k: v[0] for k, v in jar_cookies(jar).items()})
    check("replayed callback refused", st == 400 and "state_replayed" in body, body)
    check("replay audited as failed", ctl.last_audit() == ("failed", ctl.last_audit()[1]) and
          ctl.last_audit()[1].get("reason") == "state_replayed")
    # A state nobody issued.
    st, _, body = request("GET", ctl.url + "/auth/callback?state=0123456789abcdef&code=x")
    check("unknown state refused", st == 400 and "state_unknown" in body, body)
    # A valid state whose callback arrives in another browser (no login cookie).
    st, hdrs, _ = request("GET", ctl.url + "/auth/login")
    idp_url = header(hdrs, "Location")[0]
    out2 = drive("--url", idp_url, "--username", "eng-user", "--password", "eng-pass")
    st, _, body = request("GET", out2.get("redirect", ctl.url + "/auth/callback"))
    check("callback without the starting browser's cookie refused",
          st == 400 and "state_not_bound_to_browser" in body, body)

    # Console logout needs the CSRF token.
    st, _, body = request("POST", ctl.url + "/auth/logout", cookies=console)
    check("logout without CSRF token refused", st == 403, body)
    st, hdrs, body = request("POST", ctl.url + "/auth/logout", cookies=console,
                             headers={"X-CSRF-Token": sess.get("csrf_token", "")})
    check("console logout", st == 200 and any("Max-Age=0" in v for v in header(hdrs, "Set-Cookie")),
          body)
    st, _, _ = request("GET", ctl.url + "/auth/session", cookies=console)
    check("console session gone after logout", st == 401)

    # Unverified e-mail: refused, audited, nobody provisioned.
    jar_u = os.path.join(WORK, "unverified.jar")
    out = drive("--rp-start", ctl.url + "/auth/login", "--jar", jar_u, "--username",
                "unverified-user", "--password", "unverified-pass", "--follow")
    check("unverified email refused", out.get("status") == 400 and
          "email_not_verified" in out.get("body", ""), str(out))
    check("unverified user not provisioned",
          ctl.db("SELECT count(*) FROM users WHERE subject = 'unverified-user'") == [(0,)])
    check("unverified audited", ctl.last_audit()[0] == "failed" and
          ctl.last_audit()[1].get("reason") == "email_not_verified", str(ctl.last_audit()))

    # Native sign-in through a loopback listener, then a client session.
    listener = Listener()
    code, state, got_state, verifier, out = native_sign_in(ctl, listener, "eng-user", "eng-pass")
    check("native sign-in reaches the loopback listener with a code", code is not None and
          code.startswith("spn_"), str(out))
    check("native state echoed", got_state == state, f"{got_state} != {state}")
    pem = device_key()
    st, _, body = request("POST", ctl.url + "/api/client/v1/session",
                          {"code": code, "code_verifier": "x" * 43,
                           "device_public_key_pem": pem, "device_name": "laptop"})
    check("wrong PKCE verifier refused", st == 400 and "pkce" in body, body)
    st, _, body = request("POST", ctl.url + "/api/client/v1/session",
                          {"code": code, "code_verifier": verifier,
                           "device_public_key_pem": pem, "device_name": "laptop"})
    check("code is single use (after a failed attempt too)", st == 400, body)
    code, state, got_state, verifier, out = native_sign_in(ctl, listener, "eng-user", "eng-pass")
    st, _, body = request("POST", ctl.url + "/api/client/v1/session",
                          {"code": code, "code_verifier": verifier,
                           "device_public_key_pem": pem, "device_name": "laptop"})
    s1 = json.loads(body) if st == 201 else {}
    check("client session created", st == 201 and s1.get("refresh_token", "").startswith("spr_")
          and s1.get("user", {}).get("email") == "eng-user@example.com", body)
    st, _, body = request("POST", ctl.url + "/api/client/v1/session",
                          {"code": code, "code_verifier": verifier,
                           "device_public_key_pem": pem})
    check("code redeemed twice refused", st == 400, body)
    st, _, body = request("POST", ctl.url + "/api/client/v1/session", {"code": code, "x": 1})
    check("unknown field refused", st == 400 and "unknown field" in body, body)
    if s1:
        claims = json.loads(base64.urlsafe_b64decode(s1["access_token"].split(".")[1] + "=="))
        check("access token claims (protocol §1.3)",
              claims["typ"] == "access" and claims["aud"] == "sallyport:controller" and
              claims["iss"] == ctl.url and claims["sid"] == s1["session_id"] and
              claims["dev"] == s1["device_id"] and len(claims["cnf"]["jkt"]) == 43 and
              claims["exp"] - claims["iat"] == 600 and claims["v"] == 1, str(claims))
        row = ctl.db("SELECT state, name FROM devices WHERE id = ?", s1["device_id"])
        check("device registered and approved (device_approval auto)",
              row == [("approved", "laptop")], str(row))
        check("refresh token stored hashed only",
              ctl.db("SELECT count(*) FROM refresh_tokens WHERE token_hash = ?",
                     hashlib.sha256(s1["refresh_token"].encode()).hexdigest()) == [(1,)])
        # Same device key by another user: 409.
        code3, _, _, verifier3, _ = native_sign_in(ctl, listener, "fin-user", "fin-pass")
        st, _, body = request("POST", ctl.url + "/api/client/v1/session",
                              {"code": code3, "code_verifier": verifier3,
                               "device_public_key_pem": pem})
        check("device key of another user refused (409)", st == 409, body)

        # Refresh rotation.
        st, _, body = request("POST", ctl.url + "/api/client/v1/session/refresh",
                              {"refresh_token": s1["refresh_token"]})
        s2 = json.loads(body) if st == 200 else {}
        check("refresh rotates", st == 200 and s2["refresh_token"] != s1["refresh_token"] and
              s2["session_id"] == s1["session_id"], body)
        st, _, body = request("POST", ctl.url + "/api/client/v1/session/refresh",
                              {"refresh_token": s2.get("refresh_token")})
        s3 = json.loads(body) if st == 200 else {}
        check("second rotation", st == 200, body)
        # Reuse of the first (used) token: 401 and the session revoked.
        st, _, body = request("POST", ctl.url + "/api/client/v1/session/refresh",
                              {"refresh_token": s1["refresh_token"]})
        check("reused refresh token refused", st == 401 and "already used" in body, body)
        rows = ctl.db("SELECT revoke_reason FROM sessions WHERE id = ?", s1["session_id"])
        check("session revoked for reuse", rows == [("refresh_token_reuse",)], str(rows))
        check("whole family revoked", ctl.db(
            "SELECT count(*) FROM refresh_tokens WHERE session_id = ? AND revoked_at IS NULL",
            s1["session_id"]) == [(0,)])
        check("reuse audited", ctl.last_audit("session.revoke")[1].get("reason") ==
              "refresh_token_reuse")
        st, _, body = request("POST", ctl.url + "/api/client/v1/session/refresh",
                              {"refresh_token": s3.get("refresh_token")})
        check("newest token of a revoked family refused", st == 401, body)
        st, _, body = request("POST", ctl.url + "/api/client/v1/session/logout",
                              headers={"Authorization": "Bearer " + s3.get("access_token", "")})
        check("access token of a revoked session refused", st == 401, body)

        # A fresh session, then client logout.
        code4, _, _, verifier4, _ = native_sign_in(ctl, listener, "eng-user", "eng-pass")
        st, _, body = request("POST", ctl.url + "/api/client/v1/session",
                              {"code": code4, "code_verifier": verifier4,
                               "device_public_key_pem": pem})
        s4 = json.loads(body) if st == 201 else {}
        check("same device signs in again", st == 201 and s4["device_id"] == s1["device_id"],
              body)
        auth = {"Authorization": "Bearer " + s4.get("access_token", "")}
        st, _, body = request("POST", ctl.url + "/api/client/v1/session/logout")
        check("client logout needs an access token", st == 401, body)
        st, _, body = request("POST", ctl.url + "/api/client/v1/session/logout", headers=auth)
        check("client logout", st == 200, body)
        rows = ctl.db("SELECT revoke_reason FROM sessions WHERE id = ?", s4.get("session_id"))
        check("session revoked with sign_out", rows == [("sign_out",)], str(rows))
        st, _, body = request("POST", ctl.url + "/api/client/v1/session/refresh",
                              {"refresh_token": s4.get("refresh_token")})
        check("refresh after logout refused", st == 401, body)

    bad = "http://evil.example/cb"
    st, _, body = request("GET", ctl.url + "/auth/login?" + urllib.parse.urlencode(
        {"client": "native", "redirect_uri": bad, "code_challenge": "A" * 43, "state": "s"}))
    check("non-loopback native redirect_uri refused", st == 400 and "loopback" in body, body)

    # RS256 ID tokens with client_secret_post.
    ctl_b = Controller("ctl-b", issuer, "sallyport-controller-rs256",
                       "sallyport-controller-rs256-test-secret",
                       ["--oidc-token-auth", "client_secret_post"])
    ctl_b.port, ctl_b.url = port_b, f"http://127.0.0.1:{port_b}"
    ctl_b.start()
    out = drive("--rp-start", ctl_b.url + "/auth/login", "--jar", os.path.join(WORK, "b.jar"),
                "--username", "fin-user", "--password", "fin-pass", "--follow")
    check("RS256 + client_secret_post sign-in", out.get("status") == 302 and
          out.get("location") == "/admin/", str(out))
    device_flow_finish(ctl, device)
    st, _, body = request("GET", ctl.url + "/metrics")
    m = re.search(r"^sallyport_controller_sign_ins_total (\d+)$", body, re.M)
    f = re.search(r"^sallyport_controller_sign_in_failures_total (\d+)$", body, re.M)
    check("sign-ins and refusals counted in /metrics", m is not None and int(m.group(1)) >= 6 and
          f is not None and int(f.group(1)) >= 4, body[-400:])


def device_flow_start(ctl):
    """RFC 8628, device side: a code, then polls before anyone signed in."""
    pem = device_key()
    st, _, body = request("POST", ctl.url + "/auth/device/code",
                          {"device_public_key_pem": pem, "device_name": "ci <runner>"})
    dc = json.loads(body) if st == 200 else {}
    check("device code issued", st == 200 and dc.get("device_code", "").startswith("spd_") and
          re.fullmatch(r"[B-Z]{4}-[B-Z]{4}", dc.get("user_code", "")) is not None and
          dc.get("verification_uri") == ctl.url + "/auth/device" and dc.get("interval") == 5,
          body)
    st, _, body = request("POST", ctl.url + "/auth/device/code", {"device_public_key_pem": "x"})
    check("device code needs a P-256 key", st == 400, body)
    token = {"device_code": dc.get("device_code", "")}
    st, _, body = request("POST", ctl.url + "/auth/device/token", token)
    check("device poll: authorization_pending", st == 400 and "authorization_pending" in body, body)
    st, _, body = request("POST", ctl.url + "/auth/device/token", token)
    check("device poll too fast: slow_down", st == 400 and "slow_down" in body, body)
    polled = time.monotonic()
    st, _, body = request("GET", ctl.url + "/auth/device")
    check("device page has the code form", st == 200 and 'id="device-form"' in body, body)
    st, _, body = request("GET", ctl.url + "/auth/device?user_code=BBBB-BBBB")
    check("device page refuses an unknown code", st == 400, body)
    return dc, polled, pem


def device_person(dc, ctl, decision, username="fin-user", password="fin-pass"):
    jar = os.path.join(WORK, f"device-{secrets.token_hex(4)}.jar")
    out = drive("--rp-start", dc["verification_uri_complete"], "--jar", jar, "--username",
                username, "--password", password, "--follow")
    m = re.search(r'name="confirm" value="([0-9a-f]{32})"', out.get("body", ""))
    if not m:
        return out, None, None, None
    st, _, body = request("POST", ctl.url + "/auth/device/approve",
                          form=f"confirm={m.group(1)}&decision={decision}")
    return out, st, body, m.group(1)


def device_flow_finish(ctl, device):
    dc, polled, pem = device
    if not dc:
        return
    out, st, body, confirm = device_person(dc, ctl, "approve")
    check("device confirmation page names the device, escaped",
          out.get("status") == 200 and "ci &lt;runner&gt;" in out.get("body", "") and
          dc["user_code"] in out.get("body", ""), str(out)[:300])
    check("device approved by the person", st == 200 and 'id="device-approved"' in (body or ""),
          str(body))
    st, _, body = request("POST", ctl.url + "/auth/device/approve",
                          form=f"confirm={confirm}&decision=approve")
    check("device confirmation is single use", st == 400, body)
    time.sleep(max(0.0, polled + 10.5 - time.monotonic()))  # interval 5 + 5 after slow_down
    st, _, body = request("POST", ctl.url + "/auth/device/token",
                          {"device_code": dc["device_code"]})
    s = json.loads(body) if st == 200 else {}
    check("device poll after approval: a session", st == 200 and
          s.get("user", {}).get("email") == "fin-user@example.com" and
          s.get("refresh_token", "").startswith("spr_"), body)
    rows = ctl.db("SELECT s.auth_method, d.name FROM sessions s JOIN devices d"
                  " ON d.id = s.device_id WHERE s.id = ?", s.get("session_id"))
    check("device session stored", rows == [("device_code", "ci <runner>")], str(rows))
    st, _, body = request("POST", ctl.url + "/auth/device/token",
                          {"device_code": dc["device_code"]})
    check("device code redeemed once", st == 400 and "invalid_grant" in body, body)
    # A person who denies.
    st, _, body = request("POST", ctl.url + "/auth/device/code", {"device_public_key_pem": pem})
    dc2 = json.loads(body) if st == 200 else {}
    if dc2:
        res = device_person(dc2, ctl, "deny")
        check("device denied by the person", res[1] == 200 and "device-denied" in (res[2] or ""),
              str(res)[:300])
        st, _, body = request("POST", ctl.url + "/auth/device/token",
                              {"device_code": dc2["device_code"]})
        check("device poll after denial: access_denied", st == 400 and "access_denied" in body,
              body)
        check("device denial audited", ctl.last_audit("auth.device_approve")[0] == "denied")


def test_idp_down():
    dead = free_port()
    ctl = Controller("ctl-down", f"http://127.0.0.1:{dead}", "x", "y").start()
    st, _, body = request("GET", ctl.url + "/auth/login")
    check("IdP down: controller up, sign-in 503 with a clear error",
          st == 503 and "cannot reach" in body, body)
    check("IdP down audited", ctl.last_audit() == ("failed", ctl.last_audit()[1]) and
          ctl.last_audit()[1].get("reason") == "idp_unavailable")
    return ctl


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ec_key_files(name):
    """A P-256 private key file and its public PEM text."""
    path = os.path.join(WORK, name + ".pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", path], check=True, capture_output=True)
    pub = subprocess.run(["openssl", "pkey", "-in", path, "-pubout"], check=True,
                         capture_output=True, text=True).stdout
    return path, pub


def thumbprint(pub_pem):
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub_pem.encode(),
                         check=True, capture_output=True).stdout
    point = der[-65:]
    jwk = json.dumps({"crv": "P-256", "kty": "EC", "x": b64u(point[1:33]),
                      "y": b64u(point[33:])}, separators=(",", ":"))
    return b64u(hashlib.sha256(jwk.encode()).digest())


def sign_es256(key_path, kid, claims):
    head = b64u(json.dumps({"alg": "ES256", "kid": kid, "typ": "JWT"}).encode())
    body = b64u(json.dumps(claims).encode())
    der = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key_path],
                         input=f"{head}.{body}".encode(), check=True, capture_output=True).stdout
    # DER SEQUENCE { INTEGER r, INTEGER s } -> r || s, 32 bytes each.
    i = 2 if der[1] < 0x80 else 3
    rlen = der[i + 1]
    r = int.from_bytes(der[i + 2:i + 2 + rlen], "big")
    j = i + 2 + rlen
    s_ = int.from_bytes(der[j + 2:j + 2 + der[j + 1]], "big")
    return f"{head}.{body}." + b64u(r.to_bytes(32, "big") + s_.to_bytes(32, "big"))


def test_service_accounts(ctl):
    sa, kid, kid_revoked = secrets.token_hex(16), secrets.token_hex(16), secrets.token_hex(16)
    key_path, key_pub = ec_key_files("sa-key")
    old_path, old_pub = ec_key_files("sa-old")
    now = int(time.time())
    con = sqlite3.connect(os.path.join(ctl.state, "controller.db"))
    con.execute("INSERT INTO users (id, kind, display_name, created_at, updated_at)"
                " VALUES (?, 'service', 'ci', ?, ?)", (sa, now, now))
    con.execute("INSERT INTO service_accounts (user_id, name, created_at) VALUES (?, 'ci', ?)",
                (sa, now))
    for k, pub, revoked in ((kid, key_pub, None), (kid_revoked, old_pub, now)):
        con.execute("INSERT INTO service_account_keys (id, service_account_id, public_key_digest,"
                    " public_key_pem, created_at, expires_at, revoked_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (k, sa, hashlib.sha256(pub.encode()).hexdigest(), pub, now, now + 86400,
                     revoked))
    con.commit()
    con.close()
    _, dev_pub = ec_key_files("sa-device")
    jkt = thumbprint(dev_pub)

    def assertion(key=key_path, k=kid, **over):
        claims = {"iss": sa, "aud": ctl.url, "iat": now, "exp": now + 120,
                  "jti": secrets.token_hex(16), "cnf": {"jkt": jkt}}
        claims.update(over)
        return sign_es256(key, k, claims)

    def sign_in(a, pub=dev_pub):
        return request("POST", ctl.url + "/api/client/v1/session/service",
                       {"assertion": a, "device_public_key_pem": pub, "device_name": "ci"})

    good = assertion()
    st, _, body = sign_in(good)
    s = json.loads(body) if st == 201 else {}
    check("service account signs in with its key", st == 201 and s.get("user", {}).get("id") == sa,
          body)
    rows = ctl.db("SELECT auth_method FROM sessions WHERE id = ?", s.get("session_id"))
    check("service session stored as service_key", rows == [("service_key",)], str(rows))
    st, _, body = sign_in(good)
    check("service assertion replay refused", st == 401 and "assertion_replayed" in body, body)
    _, other_pub = ec_key_files("sa-other-device")
    st, _, body = sign_in(assertion(), other_pub)
    check("service assertion bound to another device key refused", st == 401, body)
    st, _, body = sign_in(assertion(exp=now + 400))
    check("service assertion living over 300 s refused", st == 401 and "300" in body, body)
    st, _, body = sign_in(assertion(aud="https://elsewhere.example"))
    check("service assertion for another audience refused", st == 401, body)
    st, _, body = sign_in(assertion(iss=secrets.token_hex(16)))
    check("service assertion with another iss refused", st == 401, body)
    st, _, body = sign_in(assertion(key=old_path, k=kid_revoked))
    check("revoked service key refused", st == 401 and "revoked" in body, body)
    st, _, body = sign_in(assertion(key=old_path))
    check("service assertion signed by another key refused", st == 401, body)
    check("service refusals audited", ctl.last_audit()[0] == "failed" and
          ctl.last_audit()[1].get("client") == "service")


def test_slow_idp():
    """A token endpoint that stalls must not stall the controller's other requests."""
    release, stalled = threading.Event(), threading.Event()

    class Slow(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            u = urllib.parse.urlsplit(self.path)
            if u.path == "/.well-known/openid-configuration":
                base = f"http://127.0.0.1:{self.server.server_address[1]}"
                doc = {"issuer": base, "authorization_endpoint": base + "/authorize",
                       "token_endpoint": base + "/token", "jwks_uri": base + "/jwks",
                       "response_types_supported": ["code"],
                       "id_token_signing_alg_values_supported": ["ES256"],
                       "code_challenge_methods_supported": ["S256"]}
                body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            elif u.path == "/authorize":
                q = urllib.parse.parse_qs(u.query)
                self.send_response(302)
                self.send_header("Location", q["redirect_uri"][0] + "?code=c1&state=" +
                                 q["state"][0])
                self.send_header("Content-Length", "0")
                self.end_headers()

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            stalled.set()
            release.wait(8)
            body = b'{"error":"invalid_grant","error_description":"stalled"}'
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    idp = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=idp.serve_forever, daemon=True).start()
    ctl = Controller("ctl-slow", f"http://127.0.0.1:{idp.server_address[1]}", "c", "s").start()
    result = {}

    def callback():
        result["reply"] = evil_flow(ctl)

    t = threading.Thread(target=callback)
    t.start()
    stalled.wait(10)  # the callback is now waiting on the stalled token endpoint
    began = time.monotonic()
    st, _, _ = request("GET", ctl.url + "/healthz")
    took = time.monotonic() - began
    check("slow IdP: other requests answered meanwhile", stalled.is_set() and st == 200 and
          took < 2.0 and "reply" not in result, f"{st} {took:.2f}s")
    release.set()
    t.join(15)
    st, body = result.get("reply", (0, ""))
    check("slow IdP: the callback ends with the IdP's refusal",
          st == 400 and "token_exchange_failed" in body and "stalled" in body, body)
    idp.shutdown()


def test_userinfo_groups():
    """Groups come from userinfo when the ID token lacks the claim; userinfo must be about
    the same subject."""
    key_path, key_pub = ec_key_files("fake-idp")
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"],
                         input=key_pub.encode(), check=True, capture_output=True).stdout
    jwk = {"kty": "EC", "crv": "P-256", "x": b64u(der[-64:-32]), "y": b64u(der[-32:]),
           "kid": "fake-1", "alg": "ES256", "use": "sig"}
    nonces = {}
    info = {"sub": "ui-user", "calls": 0}

    class Fake(http.server.BaseHTTPRequestHandler):
        def reply(self, status, obj, location=None):
            body = json.dumps(obj).encode() if obj is not None else b""
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            u = urllib.parse.urlsplit(self.path)
            if u.path == "/.well-known/openid-configuration":
                self.reply(200, {"issuer": base, "authorization_endpoint": base + "/authorize",
                                 "token_endpoint": base + "/token", "jwks_uri": base + "/jwks",
                                 "userinfo_endpoint": base + "/userinfo",
                                 "response_types_supported": ["code"],
                                 "id_token_signing_alg_values_supported": ["ES256"]})
            elif u.path == "/jwks":
                self.reply(200, {"keys": [jwk]})
            elif u.path == "/authorize":
                q = urllib.parse.parse_qs(u.query)
                code = secrets.token_hex(8)
                nonces[code] = q["nonce"][0]
                self.reply(302, None, q["redirect_uri"][0] + f"?code={code}&state=" +
                           q["state"][0])
            elif u.path == "/userinfo":
                info["calls"] += 1
                ok = self.headers.get("Authorization") == "Bearer at-1"
                self.reply(200 if ok else 401, {"sub": info["sub"], "groups": ["from-userinfo"]})

        def do_POST(self):
            form = urllib.parse.parse_qs(self.rfile.read(
                int(self.headers.get("Content-Length", "0"))).decode())
            base = f"http://127.0.0.1:{self.server.server_address[1]}"
            now = int(time.time())
            claims = {"iss": base, "aud": "c", "sub": "ui-user", "email": "ui@example.com",
                      "email_verified": True, "iat": now, "exp": now + 300,
                      "nonce": nonces.pop(form["code"][0], "")}
            self.reply(200, {"id_token": sign_es256(key_path, "fake-1", claims),
                             "access_token": "at-1", "token_type": "Bearer", "expires_in": 60})

        def log_message(self, *a):
            pass

    idp = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fake)
    threading.Thread(target=idp.serve_forever, daemon=True).start()
    ctl = Controller("ctl-userinfo", f"http://127.0.0.1:{idp.server_address[1]}", "c", "s").start()
    st, body = evil_flow(ctl)
    groups = ctl.db("SELECT g.name FROM memberships m JOIN groups g ON g.id = m.group_id"
                    " JOIN users u ON u.id = m.user_id WHERE u.subject = 'ui-user'")
    check("groups taken from userinfo when the ID token has none",
          st == 302 and info["calls"] == 1 and groups == [("from-userinfo",)], f"{st} {body} {groups}")
    info["sub"] = "someone-else"
    st, body = evil_flow(ctl)
    check("userinfo about another subject refused", st == 400 and "userinfo_failed" in body, body)
    idp.shutdown()


EVIL_MODES = {
    "tampered-signature": "bad_signature",
    "alg-none": "bad_algorithm",
    "hs256-with-public-key": "bad_algorithm",
    "wrong-iss": "wrong_issuer",
    "wrong-aud": "wrong_audience",
    "expired": "token_expired",
    "wrong-nonce": "nonce_mismatch",
    "missing-nonce": "nonce_mismatch",
    "unverified-email": "email_not_verified",
    "azp-mismatch": "azp_mismatch",
}


def evil_flow(ctl):
    """Starts at /auth/login, follows the evil IdP back to the callback (with cookies)."""
    st, hdrs, body = request("GET", ctl.url + "/auth/login")
    if st != 302:
        return st, body
    cookies = set_cookies(hdrs)
    st, hdrs, _ = request("GET", header(hdrs, "Location")[0])
    back = header(hdrs, "Location")
    if st != 302 or not back:
        return st, "no redirect from the IdP"
    st, _, body = request("GET", back[0], cookies=cookies)
    return st, body


def test_evil_idp():
    ready = start_ready(["node", os.path.join(OIDC, "evil-idp.mjs"), "--mode",
                         "unknown-kid-then-rotate", "--port", "0", "--quiet"], "evil")
    evil = ready["issuer"]
    ctl = Controller("ctl-evil", evil, "sallyport-controller", "s").start()

    def stats():
        return json.loads(request("GET", evil + "/_test/stats")[2])

    st, body = evil_flow(ctl)
    check("unknown kid: sign-in succeeds after a refetch", st == 302, body)
    check("unknown kid: exactly one JWKS refetch (2 fetches in all)",
          stats()["jwks_fetches"] == 2, str(stats()))
    for mode, reason in EVIL_MODES.items():
        request("POST", evil + "/_test/mode", {"mode": mode})
        st, body = evil_flow(ctl)
        outcome, after = ctl.last_audit()
        check(f"evil {mode}: refused", st == 400 and reason in body, f"{st} {body}")
        check(f"evil {mode}: audit failed naming {reason}",
              outcome == "failed" and after.get("reason") == reason, str(after))
        check(f"evil {mode}: no JWKS refetch loop", stats()["jwks_fetches"] == 0, str(stats()))
    persons = ctl.db("SELECT count(*) FROM users")
    check("evil IdP: only the one good sign-in provisioned", persons == [(1,)], str(persons))


def main():
    if shutil.which("node") is None or not os.path.isdir(os.path.join(OIDC, "node_modules")):
        print("controller_oidc: node or tests/oidc/node_modules missing: run "
              "scripts/install-test-tools", file=sys.stderr)
        print("controller_oidc: 0 passed, 1 failed")
        return 1
    try:
        test_service_accounts(test_idp_down())
        test_slow_idp()
        test_userinfo_groups()
        test_evil_idp()
        test_real_provider()
    except Exception as e:  # a crash is a failure, with the reason
        check("test ran to the end", False, repr(e))
    finally:
        for p in PROCS:
            if p.poll() is None:
                p.terminate()
        for p in PROCS:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        for p in PROCS:
            if p.args[0] == BIN and p.returncode not in (0, -15):
                check("controller exited cleanly", False, f"exit {p.returncode}")
        if failed:
            for f in os.listdir(WORK):
                if f.endswith(".log"):
                    print(f"--- {f}\n" + open(os.path.join(WORK, f)).read()[-1500:])
        shutil.rmtree(WORK, ignore_errors=True)
    print(f"controller_oidc: {passed} passed, {failed} failed ({time.monotonic() - STARTED:.1f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
