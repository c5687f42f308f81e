#!/usr/bin/env python3
"""Scenario suite: what an admin and the people of a company see, on one namespace lab.

The lab of tests/lib/splab.py (controller and test IdP in `ctl`; connector, dnsmasq,
nginx on 10.20.0.x in `vpc`; `sallyport` in `client`). Each scenario is a function that
acts as a person or an admin would (the CLI in `client`, the admin API in `ctl`) and
asserts the exact flow events (`GET /api/v1/flow-events`) and audit events
(`GET /api/v1/audit-events`) the controller recorded, in this order:

  1. sign_in        device code approved through the IdP; service key; their audit events
  2. groups         eng-user reaches app, not finance; fin-user the reverse
  3. ports          a port outside the resource: `port_not_allowed`
  4. wildcard_cidr  `*.svc.corp.test` and 10.20.0.0/28 added through the API; outside refused
  5. alias          a resource's alias reaches the same service
  6. membership     IdP groups are IdP-managed (409), so a local group: removing eng-user
                    cuts a live download within 1 s (client, and the connector through
                    the "access ended" revocation) and refuses new flows
     revoke_user    disabling the user cuts a live download within 1 s (connector) and
                    refuses new flows (`revoked`)
  7. block_device   blocking a device cuts its flows; `device.block` audit event
  8. logout         the session is revoked at the controller; its refresh token is refused
  9. controller_down  a new flow with a cached grant while the controller is stopped;
                    sign-in fails clearly; after the restart sign-in and new resources work
 10. failover       a second connector; kill -9 of one during downloads; same SHA-256
 11. relay_path     a connector without a direct listener, reached through the relay in
                    the controller, beside a direct one; status paths, flows, relay metrics
 12. udp_dns        a UDP resource (10.20.0.53 udp 53): a DNS query through SOCKS5 UDP
                    ASSOCIATE gets 10.20.0.10; its flow event is udp

Usage: scenarios.py CONTROLLER CONNECTOR SALLYPORT [--keep]   (root; exit 77 = skipped)
"""
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))

if len(sys.argv) < 4:
    sys.exit("usage: scenarios.py CONTROLLER CONNECTOR SALLYPORT")
if os.geteuid() != 0:
    print("skip: needs root (network namespaces)")
    sys.exit(77)
import netlab  # noqa: E402
import splab  # noqa: E402

if not os.path.isdir(os.path.join(splab.OIDC, "node_modules", "oidc-provider")):
    print("skip: tests/oidc/node_modules missing (scripts/install-test-tools)")
    sys.exit(77)
for tool in ("dnsmasq", "nginx", "curl", "openssl"):
    if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
        print(f"skip: {tool} missing (scripts/install-deps --e2e)")
        sys.exit(77)

CTL, CONN, SP = sys.argv[1:4]
SCALE = 3 if os.environ.get("SALLYPORT_SANITIZED", "") in ("1", "ON", "TRUE", "true") else 1
passed = failed = 0
APP, FIN = netlab.INTERNAL["app"], netlab.INTERNAL["finance"]
E_SOCKS, E_HTTP = "127.0.0.1:1080", "127.0.0.1:3128"   # eng-user's daemon
F_SOCKS, F_HTTP = "127.0.0.1:1081", "127.0.0.1:3129"   # fin-user's daemon


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok: {name}", flush=True)
    else:
        failed += 1
        print(f"FAIL: {name} {detail}", flush=True)
    return ok


def socks(port, url, *extra, timeout=15):
    return lab.curl("client", "--socks5-hostname", port, *extra, url, timeout=timeout)


def denials(user):
    return {(d.get("target", ""), d.get("reason"), d.get("by"))
            for d in L.status(user).get("denials", [])}


def wait_events(kind, pred, limit=10.0, **filters):
    """The events matching filters once pred(events) holds (or the last listing)."""
    end = time.time() + limit * SCALE
    ev = []
    while time.time() < end:
        ev = L.events(kind, **filters)
        if pred(ev):
            return ev
        time.sleep(0.2)
    return ev


def flows(pred, limit=10.0, **filters):
    """Waits for one flow event with the filters for which pred(event) holds."""
    ev = wait_events("flow-events", lambda ev: any(pred(e) for e in ev), limit, **filters)
    hits = [e for e in ev if pred(e)]
    return hits[-1] if hits else {"none_of": [(e.get("decision"), e.get("reason"),
                                               e.get("destination_host"),
                                               e.get("destination_port")) for e in ev[-5:]]}


def session(user_state):
    with open(os.path.join(user_state, "session.json")) as f:
        return json.load(f)


def start_download(port, url, out, rate):
    """curl through the SOCKS5 port in client, in the background, at rate bytes/s."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    return lab.track(f"curl-{os.path.basename(out)}", subprocess.Popen(
        lab.prefix("client") + ["curl", "-sS", "--socks5-hostname", port, "--limit-rate",
                                str(rate), "-o", out, url], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))


READER = r"""
import json, socket, struct, sys, time
proxy, host, path, rate = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # little kept in the kernel
ph, pp = proxy.rsplit(":", 1)
s.connect((ph, int(pp)))
s.sendall(b"\x05\x01\x00")
assert s.recv(2) == b"\x05\x00"
s.sendall(b"\x05\x01\x00\x03" + bytes([len(host)]) + host.encode() + struct.pack(">H", 80))
rep = s.recv(10)
assert rep[:2] == b"\x05\x00", rep
s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
got, t0, told, err = 0, time.time(), False, None
while True:
    try:
        b = s.recv(65536)
    except OSError as e:
        err = e.__class__.__name__
        break
    if not b:
        break
    got += len(b)
    if got >= 1 << 20 and not told:
        print("running", flush=True)
        told = True
    ahead = got / rate - (time.time() - t0)
    if ahead > 0:
        time.sleep(ahead)
print(json.dumps({"end": time.time(), "bytes": got, "error": err}), flush=True)
"""


def start_reader(proxy, host, path, rate):
    """A program reading host/path through the SOCKS5 proxy at rate bytes/s with a small
    receive buffer (so the moment it is cut is the moment the daemon cuts it); returns the
    Popen once 1 MiB has arrived (else None)."""
    p = lab.track(f"reader-{host}", subprocess.Popen(
        lab.prefix("client") + [sys.executable, "-c", READER, proxy, host, path, str(rate)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    import select
    ready, _, _ = select.select([p.stdout], [], [], 15 * SCALE)
    if ready and p.stdout.readline().strip() == "running":
        return p
    p.kill()
    p.wait()
    return None


def reader_end(p, limit=10.0):
    """{"end": unix time, "bytes": n, "error": name or None} of a reader."""
    try:
        out, err = p.communicate(timeout=limit * SCALE)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    try:
        return json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"end": float("inf"), "bytes": 0, "error": err[-300:]}


def wait_size(path, size, limit=10.0):
    end = time.time() + limit * SCALE
    while time.time() < end:
        if os.path.exists(path) and os.path.getsize(path) >= size:
            return True
        time.sleep(0.02)
    return False


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def connector_cut(user_id):
    """The time (unix seconds) of the connector's last "flow cut by a new config" line for
    user_id, else +inf."""
    import datetime
    at = float("inf")
    for line in lab.log("connector.log").splitlines():
        if '"flow cut by a new config"' in line and user_id in line:
            ts = json.loads(line)["ts"].replace("Z", "+00:00")
            at = datetime.datetime.fromisoformat(ts).timestamp()
    return at


def stop(user, proc):
    """`sallyport down` for user's daemon; its exit code."""
    L.sp(user, "down")
    try:
        return proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


# ---- 1. sign-in by device code and by service key ----

def sign_in():
    state = os.path.join(L.work, "client-device-code")
    env = dict(L.sp_env("fin-user"), SALLYPORT_STATE_DIR=state)
    p = lab.track("login-dc", subprocess.Popen(
        lab.prefix("client") + [SP, "login", "--device-code", "--controller", splab.URL,
                                "--device-name", "fin-headless"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    complete, code = None, None
    for _ in range(3):
        line = p.stdout.readline()
        m = re.search(r"enter the code (\S+)", line)
        code = m.group(1) if m else code
        m = re.search(r"\(or open (\S+)\)", line)
        if m:
            complete = m.group(1)
            break
    check("1 device code: the client prints the code and the verification URI",
          complete is not None and code is not None and complete.startswith(splab.URL),
          str(complete))
    # a person approves in a browser (in ctl): IdP sign-in, then the controller's confirm page
    r = lab.run("ctl", ["node", os.path.join(splab.OIDC, "drive-login.mjs"), "--rp-start",
                        complete or splab.URL, "--jar", os.path.join(L.work, "jar-dc"),
                        "--username", "fin-user", "--password", "fin-pass", "--follow"],
                timeout=60, cwd=splab.OIDC)
    try:
        body = json.loads(r.stdout.decode().strip().splitlines()[-1]).get("body", "")
    except (ValueError, IndexError):
        body = r.stderr.decode()[-300:]
    m = re.search(r'name="confirm" value="([0-9a-f]{32})"', body)
    rc, page, err = lab.curl("ctl", "--data", f"confirm={m.group(1) if m else ''}"
                             "&decision=approve", splab.URL + "/auth/device/approve")
    try:
        out, err = p.communicate(timeout=30 * SCALE)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    check("1 device code: approved through the IdP, the client's poll gets the session",
          m is not None and b"device-approved" in page and p.returncode == 0 and
          "signed in as fin-user@example.com" in out, f"{p.returncode} {out} {err}")
    sid = session(state)["session_id"] if p.returncode == 0 else ""
    fin_id = users["fin-user@example.com"]
    ev = L.events("audit-events", target_id=sid)
    check("1 device code: audit session.create (auth_method device_code, actor fin-user)",
          [(e["action"], e["outcome"], e["actor_id"], e["after"].get("auth_method")) for e in ev]
          == [("session.create", "success", fin_id, "device_code")], str(ev))
    ev = L.events("audit-events", action="auth.device_approve", target_id=fin_id)
    check("1 device code: audit auth.device_approve (success, the code and device name)",
          len(ev) == 1 and ev[0]["outcome"] == "success" and
          ev[0]["after"] == {"user_code": (code or "").replace("-", ""),
                             "device_name": "fin-headless"}, f"{code} {ev}")

    # a service account: made and given a key through the admin API, signs in with it
    sa = L.api("POST", "/api/v1/service-accounts", {"name": "ci-runner"})
    pem = os.path.join(L.work, "sa.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", pem], check=True, capture_output=True)
    os.chmod(pem, 0o600)
    pub = subprocess.run(["openssl", "pkey", "-in", pem, "-pubout"], check=True,
                         capture_output=True, text=True).stdout
    key = L.api("POST", f"/api/v1/service-accounts/{sa['id']}/keys",
                {"public_key_pem": pub, "name": "ci"})
    state = os.path.join(L.work, "client-service")
    env = dict(L.sp_env("fin-user"), SALLYPORT_STATE_DIR=state)
    r = lab.run("client", [SP, "login", "--controller", splab.URL, "--service-key", pem,
                           "--service-kid", key["id"], "--service-account", sa["id"],
                           "--device-name", "ci-box"], env=env, timeout=30)
    check("1 service key: `sallyport login --service-key` signs in", r.returncode == 0 and
          b"signed in" in r.stdout, str(r.stdout + r.stderr))
    sid = session(state)["session_id"] if r.returncode == 0 else ""
    ev = L.events("audit-events", target_id=sid)
    check("1 service key: audit session.create (auth_method service_key, actor the account)",
          [(e["action"], e["outcome"], e["actor_id"], e["after"].get("auth_method")) for e in ev]
          == [("session.create", "success", sa["id"], "service_key")], str(ev))
    return sa


# ---- 2. allow and deny by group ----

def groups():
    rc, body, err = socks(E_SOCKS, "http://app.corp.test/")
    check("2 eng-user: app.corp.test through the tunnel", rc == 0 and body == L.page, err)
    rc, body, err = socks(E_SOCKS, "http://finance.corp.test/")
    check("2 eng-user: finance.corp.test refused (SOCKS5 not allowed, by the client:"
          " not_protected)", rc == 97 and body == b"" and
          ("finance.corp.test:80", "not_protected", "client") in denials("eng-user"),
          f"{rc} {err}")
    e = flows(lambda e: e["destination_host"] == "app.corp.test",
              user_id=eng, resource_id=L.ids["app"])
    check("2 eng-user: flow event allow app.corp.test:80 with its bytes",
          e.get("decision") == "allow" and e.get("reason") is None and
          e.get("destination_port") == 80 and e.get("bytes_down", 0) > len(L.page) and
          e.get("protocol") == "tcp", str(e))
    rc, body, err = socks(F_SOCKS, "http://finance.corp.test/")
    check("2 fin-user: finance.corp.test through the tunnel", rc == 0 and body == L.page, err)
    rc, body, err = socks(F_SOCKS, "http://app.corp.test/")
    check("2 fin-user: app.corp.test refused (not_protected, by the client)",
          rc == 97 and ("app.corp.test:80", "not_protected", "client") in denials("fin-user"),
          f"{rc} {err}")
    e = flows(lambda e: True, user_id=fin)
    ev = L.events("flow-events", user_id=fin)
    check("2 fin-user: one flow event, allow finance.corp.test:80 (nothing for app)",
          [(x["decision"], x["resource_id"], x["destination_host"], x["destination_port"])
           for x in ev] == [("allow", L.ids["finance"], "finance.corp.test", 80)], str(ev))


# ---- 3. port restrictions ----

def ports():
    rc, body, err = socks(E_SOCKS, "http://app.corp.test:8080/")
    check("3 app.corp.test:8080 (nginx listens; the resource allows 80 only) refused",
          rc == 97 and body == b"" and
          ("app.corp.test:8080", "port_not_allowed", "connector") in denials("eng-user"),
          f"{rc} {err}")
    e = flows(lambda e: e["destination_port"] == 8080, user_id=eng)
    check("3 flow event: deny port_not_allowed app.corp.test:8080, resource app, no bytes",
          (e.get("decision"), e.get("reason"), e.get("resource_id"), e.get("destination_host"),
           e.get("bytes_down")) == ("deny", "port_not_allowed", L.ids["app"], "app.corp.test",
                                    0), str(e))


# ---- 4. wildcard and CIDR resources ----

def wildcard_cidr():
    L.add_names({"api.svc.corp.test": APP, "web.svc.corp.test": FIN})
    engineering = group_ids["engineering"]
    wild = L.api("POST", "/api/v1/resources", {
        "name": "Services", "network_id": L.ids["net"], "address": "*.svc.corp.test",
        "tcp": ["80"], "udp": "none", "icmp": False})["id"]
    cidr = L.api("POST", "/api/v1/resources", {
        "name": "Low range", "network_id": L.ids["net"], "address": "10.20.0.0/28",
        "tcp": ["80"], "udp": "none", "icmp": False})["id"]
    L.ids.update(wild=wild, cidr=cidr)
    for res in (wild, cidr):
        L.api("POST", "/api/v1/policies", {"group_id": engineering, "resource_id": res})
    s = L.wait_status("eng-user", lambda s: s.get("resources") == 4)
    check("4 the daemon got the two new resources (feed): 4", s.get("resources") == 4, str(s))
    rc, body, err = socks(E_SOCKS, "http://api.svc.corp.test/")
    check("4 api.svc.corp.test (pattern *.svc.corp.test) through the tunnel",
          rc == 0 and body == L.page, f"{rc} {err}")
    rc, body, err = socks(E_SOCKS, "http://web.svc.corp.test/")
    check("4 web.svc.corp.test (same pattern, the finance host) through the tunnel",
          rc == 0 and body == L.page, f"{rc} {err}")
    rc, body, err = socks(E_SOCKS, f"http://{FIN}/")
    check(f"4 {FIN} (inside 10.20.0.0/28) by IP through the tunnel",
          rc == 0 and body == L.page, f"{rc} {err}")
    rc, body, err = socks(E_SOCKS, "http://10.20.0.53/")
    check("4 10.20.0.53 (outside the /28) refused by the client (not_protected)",
          rc == 97 and ("10.20.0.53:80", "not_protected", "client") in denials("eng-user"),
          f"{rc} {err} {denials('eng-user')}")
    e = flows(lambda e: e["destination_host"] == "api.svc.corp.test", user_id=eng,
              resource_id=wild)
    check("4 flow event: allow api.svc.corp.test under the pattern resource, to 10.20.0.10",
          (e.get("decision"), e.get("destination_ip"), e.get("destination_port")) ==
          ("allow", APP, 80), str(e))
    e = flows(lambda e: True, user_id=eng, resource_id=cidr)
    check("4 flow event: allow 10.20.0.11:80 under the CIDR resource",
          (e.get("decision"), e.get("destination_ip"), e.get("destination_port")) ==
          ("allow", FIN, 80), str(e))
    ev = [e for e in L.events("flow-events", user_id=eng)
          if "10.20.0.53" in (e.get("destination_ip"), e.get("destination_host"))]
    check("4 no flow event for 10.20.0.53 (never left the client)", ev == [], str(ev))


# ---- 5. alias ----

def alias():
    r = L.api("PATCH", f"/api/v1/resources/{L.ids['app']}", {"alias": "intranet.sp"})
    check("5 alias intranet.sp set on app.corp.test", r.get("alias") == "intranet.sp", str(r))
    # the app's allow flows so far: the one of scenario 2
    before = len(wait_events("flow-events", lambda ev: len(ev) >= 1, user_id=eng,
                             resource_id=L.ids["app"], decision="allow"))
    ok = False
    end = time.time() + 10 * SCALE
    while time.time() < end and not ok:  # until the daemon's list has the alias
        rc, body, err = socks(E_SOCKS, "http://intranet.sp/")
        ok = rc == 0 and body == L.page
        if not ok:
            time.sleep(0.2)
    check("5 http://intranet.sp/ reaches the app's page through the tunnel", ok, f"{rc} {err}")
    ev = wait_events("flow-events", lambda ev: len(ev) > before, user_id=eng,
                     resource_id=L.ids["app"], decision="allow")
    check("5 flow event: the alias flow is the app resource's, sent to app.corp.test",
          before == 1 and len(ev) == 2 and ev[-1]["destination_host"] == "app.corp.test" and
          ev[-1]["destination_ip"] == APP, f"{before} {ev[-2:]}")


# ---- 6. removing a person from a group ----

def membership():
    """A local group (made through the API, so its members are the admin's to change)."""
    L.add_names({"files.corp.test": APP})
    grp = L.api("POST", "/api/v1/groups", {"name": "contractors"})["id"]
    res = L.api("POST", "/api/v1/resources", {
        "name": "Files", "network_id": L.ids["net"], "address": "files.corp.test",
        "tcp": ["80"], "udp": "none", "icmp": False})["id"]
    L.api("POST", "/api/v1/policies", {"group_id": grp, "resource_id": res})
    L.api("PUT", f"/api/v1/groups/{grp}/members/{eng}", expect=(201,))
    s = L.wait_status("eng-user", lambda s: s.get("resources") == 5)
    check("6 member of contractors: the daemon lists files.corp.test (5 resources)",
          s.get("resources") == 5, str(s))
    big = 64 << 20
    L.add_file("big.bin", big)
    p = start_reader(E_SOCKS, "files.corp.test", "/big.bin", 4 << 20)
    check("6 a long download from files.corp.test (64 MiB at 4 MiB/s) is running",
          p is not None)
    t0 = time.time()
    L.api("DELETE", f"/api/v1/groups/{grp}/members/{eng}", expect=(204,))
    r = reader_end(p) if p else {"end": float("inf"), "bytes": 0}
    cut = r["end"] - t0
    print(f"figure: download cut by the client {cut * 1000:.0f} ms after DELETE member was"
          f" sent ({r['bytes']} of {big} bytes, {r.get('error')})", flush=True)
    check("6 removing eng-user from contractors cuts the download within 1 s",
          r["bytes"] < big and cut < 1.0 * SCALE, str(r))
    # Both ends cut: the client (the resource left its list) and the connector (the
    # membership's "access ended" revocation in its config); whichever is first records it.
    d = denials("eng-user")
    e = flows(lambda e: True, user_id=eng, resource_id=res)
    by_client = ("files.corp.test:80", "resource_removed", "client") in d
    by_connector = (e.get("decision"), e.get("reason")) == ("deny", "revoked")
    check("6 the cut is recorded: resource_removed by the client or revoked by the connector",
          by_client or by_connector, f"{d} {e}")
    rc, body, err = socks(E_SOCKS, "http://files.corp.test/")
    check("6 a new flow to files.corp.test is refused (not_protected: no longer listed)",
          rc == 97 and ("files.corp.test:80", "not_protected", "client") in denials("eng-user"),
          f"{rc} {err}")
    check("6 flow event of the cut download: allow (the client ended it) or deny revoked"
          " (the connector cut it), with bytes",
          (e.get("decision"), e.get("reason")) in (("allow", None), ("deny", "revoked")) and
          e.get("destination_host") == "files.corp.test" and e.get("bytes_down", 0) >= 1 << 20,
          str(e))
    ev = L.events("audit-events", action="group.member_remove", target_id=f"{eng}:{grp}")
    check("6 audit group.member_remove of eng-user from contractors, by the admin key",
          len(ev) == 1 and ev[0]["actor_type"] == "api_key" and ev[0]["after"] is None and
          ev[0]["before"] is not None, str(ev))


# ---- 6. revoking eng-user ----

def revoke_user():
    global e_daemon
    r = L.api("DELETE", f"/api/v1/groups/{group_ids['engineering']}/members/{eng}",
              expect=(409,))
    check("6 engineering is IdP-managed: removing a member through the API is 409 idp_managed",
          "idp_managed" in json.dumps(r), str(r))
    big = 64 << 20
    p = start_reader(E_SOCKS, "app.corp.test", "/big.bin", 4 << 20)
    check("6 a long download (64 MiB at 4 MiB/s) is running", p is not None)
    t0 = time.time()
    r = L.api("PATCH", f"/api/v1/users/{eng}", {"disabled": True})
    rd = reader_end(p) if p else {"end": float("inf"), "bytes": 0}
    cut = rd["end"] - t0
    at = connector_cut(eng) - t0
    print(f"figure: download cut by the connector {at * 1000:.0f} ms, the program's read"
          f" ended {cut * 1000:.0f} ms after PATCH disabled=true was sent ({rd['bytes']} of"
          f" {big} bytes, {rd.get('error')})", flush=True)
    check("6 disabling the user cuts the download within 1 s (connector and program)",
          r.get("disabled") is True and rd["bytes"] < big and at < 1.0 * SCALE and
          cut < 1.0 * SCALE, f"{rd} {at:.2f} s")
    e = flows(lambda e: e["destination_host"] == "app.corp.test" and e["reason"] == "revoked",
              user_id=eng)
    check("6 flow event: deny revoked for the cut download, with the bytes it had sent",
          e.get("decision") == "deny" and e.get("bytes_down", 0) >= 1 << 20, str(e))
    rc, body, err = socks(E_SOCKS, "http://app.corp.test/")
    check("6 a new flow to app.corp.test is refused", rc != 0 and body == b"", f"{rc} {err}")
    d = denials("eng-user")
    check("6 the refusal's reason: revoked", any(t == "app.corp.test:80" and why == "revoked"
                                                 for t, why, _ in d), str(d))
    ev = L.events("audit-events", action="user.update", target_id=eng)
    check("6 audit user.update disabled false -> true",
          len(ev) == 1 and ev[0]["before"]["disabled"] is False and
          ev[0]["after"]["disabled"] is True, str(ev))
    # put eng-user back: enabled, signed in again, daemon up
    L.api("PATCH", f"/api/v1/users/{eng}", {"disabled": False})
    stop("eng-user", e_daemon)
    L.login("eng-user", "eng-pass")
    L.up("proxy")
    e_daemon = L.daemon
    rc, body, err = socks(E_SOCKS, "http://app.corp.test/")
    check("6 enabled and signed in again: app.corp.test through", rc == 0 and body == L.page,
          f"{rc} {err}")


# ---- 7. blocking a device ----

def block_device():
    global f_daemon
    dev = session(L.state["fin-user"])["device_id"]
    p = start_reader(F_SOCKS, "finance.corp.test", "/big.bin", 4 << 20)
    check("7 fin-user's download is running", p is not None)
    t0 = time.time()
    L.api("POST", f"/api/v1/devices/{dev}/block", {})
    rd = reader_end(p) if p else {"end": float("inf"), "bytes": 0}
    cut = rd["end"] - t0
    at = connector_cut(fin) - t0
    print(f"figure: download cut by the connector {at * 1000:.0f} ms, the program's read"
          f" ended {cut * 1000:.0f} ms after the block was sent ({rd.get('error')})",
          flush=True)
    check("7 blocking the device cuts the download within 1 s (connector and program)",
          rd["bytes"] < 64 << 20 and at < 1.0 * SCALE and cut < 1.0 * SCALE, f"{rd} {at:.2f}")
    e = flows(lambda e: e["reason"] == "revoked", user_id=fin, device_id=dev)
    check("7 flow event: deny revoked for the device's download",
          (e.get("decision"), e.get("destination_host")) == ("deny", "finance.corp.test"),
          str(e))
    rc, body, err = socks(F_SOCKS, "http://finance.corp.test/")
    d = denials("fin-user")
    check("7 a new flow from the blocked device is refused (revoked, by the connector)",
          rc == 97 and body == b"" and ("finance.corp.test:80", "revoked", "connector") in d,
          f"{rc} {err} {d}")
    ev = L.events("audit-events", action="device.block", target_id=dev)
    check("7 audit device.block: the admin key blocked fin-user's device",
          len(ev) == 1 and ev[0]["actor_type"] == "api_key" and
          ev[0]["after"].get("state") == "blocked", str(ev))
    stop("fin-user", f_daemon)


# ---- 8. logout ----

def logout():
    s = session(L.state["eng-user"])
    rc, out, err = L.sp("eng-user", "logout")
    check("8 `sallyport logout` (exit 0; the daemon stops, session.json removed)",
          rc == 0 and not os.path.exists(os.path.join(L.state["eng-user"], "session.json")),
          f"{rc} {out} {err}")
    rc, body, err = lab.curl("client", "-H", "Content-Type: application/json", "--data",
                             json.dumps({"refresh_token": s["refresh_token"]}), "-w",
                             "\n%{http_code}", splab.URL + "/api/client/v1/session/refresh")
    check("8 the session's last refresh token is refused afterwards (401)",
          body.decode().rsplit("\n", 1)[-1] == "401", body.decode()[-300:])
    ev = L.events("audit-events", action="session.revoke", target_id=s["session_id"])
    # logout itself refreshed once (for an access token), so this token was already used:
    # the controller records the reuse too, on the already revoked session
    check("8 audit session.revoke: sign_out by eng-user, then the refused reuse (denied)",
          [(e["outcome"], e["after"].get("reason"), e["actor_id"]) for e in ev] ==
          [("success", "sign_out", eng), ("denied", "refresh_token_reuse", eng)], str(ev))


# ---- 9. the controller stopped ----

def controller_down():
    global e_daemon
    L.login("eng-user", "eng-pass")
    L.up("proxy")
    e_daemon = L.daemon
    rc, body, err = socks(E_SOCKS, "http://app.corp.test/")
    check("9 before: app.corp.test through (grant cached, tunnel up)", rc == 0, err)
    L.stop_controller()
    rc, body, err = socks(E_SOCKS, "http://app.corp.test/")
    check("9 controller stopped: a new flow over the tunnel with the cached grant",
          rc == 0 and body == L.page, f"{rc} {err}")
    # one more, told apart by its size: its flow event must reach the controller later
    rc, body, err = socks(E_SOCKS, "http://app.corp.test/big.bin", "-r", "0-99999")
    check("9 controller stopped: a range of big.bin too (100000 bytes)",
          rc == 0 and len(body) == 100000, f"{rc} {len(body)} {err}")
    env = dict(L.sp_env("eng-user"), SALLYPORT_STATE_DIR=os.path.join(L.work, "client-new"))
    r = lab.run("client", [SP, "login", "--device-code", "--controller", splab.URL],
                env=env, timeout=30)
    err = r.stderr.decode()
    print(f"note: login while the controller is down: exit {r.returncode}: {err.strip()}",
          flush=True)
    check("9 controller stopped: `sallyport login` fails (exit 1) naming the controller",
          r.returncode == 1 and splab.URL in err, err)
    L.restart_controller()
    sa_state = os.path.join(L.work, "client-service2")
    r = lab.run("client", [SP, "login", "--controller", splab.URL, "--service-key",
                           os.path.join(L.work, "sa.pem"), "--service-kid", sa_key_id,
                           "--service-account", sa_id], env=dict(
                               env, SALLYPORT_STATE_DIR=sa_state), timeout=30)
    check("9 after the restart: a new sign-in works", r.returncode == 0, str(r.stderr))
    L.add_names({"wiki.corp.test": APP})
    res = L.api("POST", "/api/v1/resources", {
        "name": "Wiki", "network_id": L.ids["net"], "address": "wiki.corp.test",
        "tcp": ["80"], "udp": "none", "icmp": False})["id"]
    L.api("POST", "/api/v1/policies", {"group_id": group_ids["engineering"],
                                       "resource_id": res})
    ok, t0 = False, time.time()
    while time.time() < t0 + 40 * SCALE and not ok:
        rc, body, err = socks(E_SOCKS, "http://wiki.corp.test/")
        ok = rc == 0 and body == L.page
        if not ok:
            time.sleep(0.3)
    print(f"figure: new resource usable {time.time() - t0:.1f} s after it was added"
          " (daemon reconnecting to the restarted controller)", flush=True)
    check("9 after the restart: a resource added then is usable by the running daemon", ok,
          f"{rc} {err}")
    e = flows(lambda e: 100000 < e["bytes_down"] < 101000, user_id=eng,
              resource_id=L.ids["app"], limit=15)
    check("9 the flow made while the controller was down has its flow event (allow, kept"
          " by the connector and sent after the restart)", e.get("decision") == "allow" and
          e.get("destination_host") == "app.corp.test", str(e))
    e = flows(lambda e: True, user_id=eng, resource_id=res, limit=15)
    check("9 flow event: allow wiki.corp.test (the connector reports to the new controller)",
          e.get("decision") == "allow", str(e))


# ---- 10. connector failover ----

def failover():
    c2 = L.start_connector2()
    ev = L.api("GET", f"/api/v1/connectors?network_id={L.ids['net']}")["items"]
    check("10 two connectors of corp enrolled", len(ev) == 2, str(ev))
    s = {}
    size = 24 << 20
    digest = L.add_file("mid.bin", size)
    # two flows: the daemon takes the network's connectors in turn, so one is on each
    end = time.time() + 15 * SCALE
    while time.time() < end:  # until the daemon knows the second connector
        socks(E_SOCKS, "http://app.corp.test/")
        socks(E_SOCKS, "http://app.corp.test/")
        s = L.status("eng-user")
        if len([t for t in s.get("tunnels", []) if t.get("state") == "up"]) == 2:
            break
        time.sleep(0.2)
    check("10 the daemon has a tunnel to each connector",
          sorted(t.get("address") for t in s.get("tunnels", [])) ==
          [splab.DIRECT, f"{netlab.VPC_ADDR}:7444"], str(s.get("tunnels")))
    outs = [os.path.join(L.work, f"dl-fail{i}.bin") for i in range(2)]
    ps = [start_download(E_SOCKS, "http://app.corp.test/mid.bin", o, 6 << 20) for o in outs]
    check("10 two downloads running", all(wait_size(o, 1 << 20) for o in outs))
    first = L.stack.connector
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)
    cut = 0
    for p, o in zip(ps, outs):
        try:
            p.wait(timeout=30 * SCALE)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p.returncode != 0:  # cut by the kill: resumed where it stopped
            cut += 1
            rc, _, err = socks(E_SOCKS, "http://app.corp.test/mid.bin", "-C", "-", "-o", o,
                               timeout=60)
    print(f"figure: {cut} of 2 downloads cut by the kill -9, resumed with curl -C -",
          flush=True)
    check("10 kill -9 of one connector cut exactly the download it carried", cut == 1,
          str(cut))
    check("10 both downloads complete with the file's SHA-256",
          all(sha(o) == digest for o in outs), str([os.path.getsize(o) for o in outs]))
    return c2


# ---- 11. relayed and direct paths ----

RELAY = f"{netlab.CTL_CLIENT_ADDR}:8443"


def relay_path():
    L.restart_controller_relay(RELAY)
    net2 = L.api("POST", "/api/v1/remote-networks", {
        "name": "branch", "description": "reached through the relay only"})["id"]
    L.start_connector_in(net2, "vpc-relay-connector", "127.0.0.1:9465")
    L.add_names({"portal.corp.test": APP})
    body_want = os.urandom(3000).hex().encode() + b"\n"
    with open(os.path.join(L.work, "www", "portal.txt"), "wb") as f:
        f.write(body_want)
    res = L.api("POST", "/api/v1/resources", {
        "name": "Portal", "network_id": net2, "address": "portal.corp.test", "tcp": ["80"],
        "udp": "none", "icmp": False})["id"]
    L.api("POST", "/api/v1/policies", {"group_id": group_ids["engineering"],
                                       "resource_id": res})
    conns = {c["name"]: c["id"] for net in (L.ids["net"], net2) for c in L.api(
        "GET", f"/api/v1/connectors?network_id={net}")["items"]}
    n_app = len(L.events("flow-events", user_id=eng, resource_id=L.ids["app"],
                         connector_id=conns["vpc-connector-2"]))
    ok, t0 = False, time.time()
    while time.time() < t0 + 30 * SCALE and not ok:
        rc, body, err = socks(E_SOCKS, "http://portal.corp.test/portal.txt", timeout=25)
        ok = rc == 0 and body == body_want
        if not ok:
            time.sleep(0.3)
    print(f"figure: relayed resource usable {time.time() - t0:.1f} s after it was added",
          flush=True)
    check("11 portal.corp.test through the relay-only connector (6001 bytes, byte-exact)", ok,
          f"{rc} {len(body)} {err}")
    rc, body, err = socks(E_SOCKS, "http://app.corp.test/")
    check("11 app.corp.test through corp's connector", rc == 0 and body == L.page, err)
    s = L.status("eng-user")
    paths = sorted((t.get("connector"), t.get("path"), t.get("address"))
                   for t in s.get("tunnels", []) if t.get("state") == "up")
    check("11 status --json: relayed tunnel (via the relay) to the relay-only connector,"
          " direct to corp's", paths == [("vpc-connector-2", "direct", f"{netlab.VPC_ADDR}:7444"),
                                          ("vpc-relay-connector", "relayed", RELAY)],
          str(s.get("tunnels")))
    e = flows(lambda e: e["bytes_down"] > 6001, user_id=eng, resource_id=res, limit=20)
    check("11 flow event: allow portal.corp.test by the relay-only connector",
          (e.get("decision"), e.get("destination_host"), e.get("connector_id")) ==
          ("allow", "portal.corp.test", conns["vpc-relay-connector"]), str(e))
    ev = wait_events("flow-events", lambda ev: len(ev) > n_app, 20, user_id=eng,
                     resource_id=L.ids["app"], connector_id=conns["vpc-connector-2"])
    e = ev[-1] if len(ev) > n_app else {"none_after": n_app}
    check("11 flow event: allow app.corp.test by corp's connector (direct)",
          (e.get("decision"), e.get("destination_host"), e.get("bytes_down", 0) > len(L.page))
          == ("allow", "app.corp.test", True), str(e))
    m = L.controller_metrics()
    rel = {k: v for k, v in m.items() if k.startswith("sallyport_relay_")}
    print(f"figure: controller relay metrics {rel}", flush=True)
    check("11 relay metrics: one connector registered, one pairing, its connection open,"
          " the page's bytes relayed down", (m.get("sallyport_relay_connectors"),
                                             m.get("sallyport_relay_paired_total"),
                                             m.get("sallyport_relay_connections")) == (1, 1, 1)
          and m.get('sallyport_relay_bytes_total{direction="down"}', 0) > len(body_want) and
          m.get('sallyport_relay_bytes_total{direction="up"}', 0) > 0, str(rel))


# ---- 12. a UDP resource: DNS through SOCKS5 UDP ASSOCIATE ----

DNS_QUERY = r"""
import json, socket, struct, sys
proxy, dst, name = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = proxy.rsplit(":", 1)
c = socket.create_connection((host, int(port)), timeout=5)
c.sendall(b"\x05\x01\x00")
assert c.recv(2) == b"\x05\x00"
c.sendall(b"\x05\x03\x00\x01" + bytes(4) + bytes(2))  # UDP ASSOCIATE from any port
rep = c.recv(10)
assert rep[:2] == b"\x05\x00" and rep[3] == 1, rep
relay = (socket.inet_ntoa(rep[4:8]), struct.unpack("!H", rep[8:10])[0])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((host, 0))
u.settimeout(5)
qid = 0x5350
q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
q += struct.pack("!HH", 1, 1)
hdr = b"\x00\x00\x00\x01" + socket.inet_aton(dst) + struct.pack("!H", 53)
u.sendto(hdr + q, relay)
d, _ = u.recvfrom(4096)
out = {"from": socket.inet_ntoa(d[4:8]) + ":" + str(struct.unpack("!H", d[8:10])[0])}
m = d[10:]
rid, flags, qd, an = struct.unpack("!HHHH", m[:8])
out.update(id=rid, rcode=flags & 15, answers=[])
i = 12
for _ in range(qd):
    while m[i] != 0:
        i += 1 + m[i]
    i += 5
for _ in range(an):
    if m[i] & 0xC0 == 0xC0:
        i += 2
    else:
        while m[i] != 0:
            i += 1 + m[i]
        i += 1
    t, cl, ttl, ln = struct.unpack("!HHIH", m[i:i + 10])
    i += 10
    if t == 1:
        out["answers"].append(socket.inet_ntoa(m[i:i + 4]))
    i += ln
c.close()
print(json.dumps(out))
"""


def udp_dns():
    dns = netlab.INTERNAL["dns"]
    res = L.api("POST", "/api/v1/resources", {
        "name": "Internal DNS", "network_id": L.ids["net"], "address": dns, "tcp": "none",
        "udp": ["53"], "icmp": False})["id"]
    L.api("POST", "/api/v1/policies", {"group_id": group_ids["engineering"],
                                       "resource_id": res})
    out, t0 = {}, time.time()
    while time.time() < t0 + 30 * SCALE:
        r = lab.run("client", [sys.executable, "-c", DNS_QUERY, E_SOCKS, dns, "app.corp.test"],
                    timeout=20)
        try:
            out = json.loads(r.stdout.decode())
            break
        except ValueError:
            out = {"rc": r.returncode, "err": r.stderr.decode()[-300:]}
            time.sleep(0.3)
    print(f"figure: DNS over the tunnel answered {time.time() - t0:.1f} s after the UDP"
          f" resource was added: {out}", flush=True)
    check("12 DNS query for app.corp.test to 10.20.0.53:53 through SOCKS5 UDP ASSOCIATE:"
          " answer 10.20.0.10", (out.get("id"), out.get("rcode"), out.get("answers"),
                                 out.get("from")) == (0x5350, 0, [APP], f"{dns}:53"), str(out))
    e = flows(lambda e: e["protocol"] == "udp", user_id=eng, resource_id=res, limit=20)
    check("12 flow event: allow udp to 10.20.0.53:53 under the DNS resource",
          (e.get("decision"), e.get("protocol"), e.get("destination_port"),
           e.get("resource_id")) == ("allow", "udp", 53, res), str(e))


t_start = time.time()
L = splab.SallyportLab(ctl=CTL, conn=CONN, sp=SP, keep="--keep" in sys.argv, postgres=False)
lab = L.lab
names = list(lab.ns.values())
e_daemon = f_daemon = None
try:
    L.start()
    users = L.user_ids()
    eng, fin = users["eng-user@example.com"], users["fin-user@example.com"]
    group_ids = {g["name"]: g["id"] for g in L.api("GET", "/api/v1/groups")["items"]}
    check("lab up: eng-user and fin-user signed in, policies seeded", True)
    L.up("proxy")
    e_daemon = L.daemon
    f_daemon = L.up_proxy("fin-user", F_SOCKS, F_HTTP, "sallyport-fin.log")
    scenarios = [sign_in, groups, ports, wildcard_cidr, alias, membership, revoke_user,
                 block_device, logout, controller_down, failover, relay_path, udp_dns]
    sa_id = sa_key_id = None
    for fn in scenarios:
        t0 = time.time()
        try:
            r = fn()
            if fn is sign_in:
                sa_id = r["id"]
                sa_key_id = L.api("GET", f"/api/v1/service-accounts/{sa_id}/keys")[
                    "items"][0]["id"]
        except Exception as e:  # one scenario's exception fails it, the others still run
            import traceback
            traceback.print_exc()
            check(f"{fn.__name__}: no exception", False, repr(e))
        print(f"scenario {fn.__name__}: {time.time() - t0:.1f} s", flush=True)
    logs = "".join(lab.log(n) for n in ("sallyport-proxy.log", "sallyport-fin.log",
                                        "controller.log", "connector.log", "connector2.log",
                                        "vpc-relay-connector.log"))
    check("logs free of sanitizer reports", "Sanitizer" not in logs)
except Exception as e:
    import traceback
    traceback.print_exc()
    check("no exception", False, str(e))
finally:
    if failed:
        for n in ("controller.log", "connector.log", "connector2.log", "sallyport-proxy.log",
                  "sallyport-fin.log", "vpc-relay-connector.log"):
            print(f"--- {n}\n{lab.log(n)[-1500:]}", flush=True)
    L.close()

if "--keep" not in sys.argv:
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    check("teardown: namespaces deleted", not any(n in left.split() for n in names), left)
    check("teardown: work directory removed", not os.path.exists(L.work), L.work)
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    check("teardown: no process of the run left", L.work not in procs, procs[-1000:])
print(f"figure: scenarios wall time {time.time() - t_start:.1f} s", flush=True)
print(f"scenarios: {passed} passed, {failed} failed", flush=True)
sys.exit(1 if failed else 0)
