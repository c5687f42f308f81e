#!/usr/bin/env python3
"""Integration test: the connector end to end, with real processes on 127.0.0.1.

The real controller (sqlite state it owns), the real connector (enrolled with a one-time
token, direct listener), a real nginx serving files, and tests/tools/sp_test_client as
the client. Checks: enrollment and identity reuse, clear errors for a spent or unknown
token, a page fetched through the tunnel byte for byte, refusals (grant refused by the
controller, destination outside the resource, port not allowed, grant presented with
another device key) each as a refused stream AND a flow event with its reason in the
controller's flow_events table, a session revoked mid-download cut within 2 s, health,
metrics, SIGTERM drain, and access ended: a policy deleted through the admin API cuts a
live download within 1 s, the old unexpired grant is refused `revoked`, a policy added
again with a fresh grant works, and a membership deleted cuts within 1 s too. Prints
figures: time to first byte and 100 MiB throughput through the tunnel vs curl directly
to nginx.

Usage: connector_e2e.py CONTROLLER CONNECTOR SP_TEST_CLIENT
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
import testkit  # noqa: E402

if len(sys.argv) < 4:
    sys.exit("usage: connector_e2e.py CONTROLLER CONNECTOR SP_TEST_CLIENT")
CTL, CONN, TOOL = sys.argv[1:4]
SANITIZED = os.environ.get("SALLYPORT_SANITIZED", "0") in ("1", "ON", "TRUE", "true")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WORK = tempfile.mkdtemp(prefix="sp-conn-e2e-")
STATE = os.path.join(WORK, "ctl")
DB = os.path.join(STATE, "controller.db")
procs = []


check = testkit.Checks()
free_port = testkit.free_port
new_id = testkit.new_id
wait_http = testkit.wait_http


def db():
    return testkit.db(DB)


def flow_events(where, args=()):
    conn = db()
    rows = conn.execute("SELECT decision, reason, user_id, device_id, session_id, resource_id,"
                        " destination_host, destination_port, bytes_up, bytes_down, flow_id"
                        " FROM flow_events WHERE " + where, args).fetchall()
    conn.close()
    return rows


def wait_flow_event(where, args=(), limit=10.0):
    end = time.time() + limit
    while time.time() < end:
        rows = flow_events(where, args)
        if rows:
            return rows
        time.sleep(0.1)
    return []


CTL_PORT, DIRECT_PORT, METRICS_PORT, WEB_PORT, OTHER_PORT, DNS_PORT = (free_port() for _ in range(6))
URL = f"http://127.0.0.1:{CTL_PORT}"
TIMEOUT_SCALE = 3 if SANITIZED else 1


def start_connector(state_dir, token=None, name="c1", extra_env=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALLYPORT_")}
    env.update({"SALLYPORT_URL": URL, "SALLYPORT_STATE_DIR": state_dir,
                "SALLYPORT_DIRECT_LISTEN": f"127.0.0.1:{DIRECT_PORT}",
                "SALLYPORT_METRICS_ADDR": f"127.0.0.1:{METRICS_PORT}",
                "SALLYPORT_NAME": name, "SALLYPORT_LOG_FORMAT": "json",
                "SALLYPORT_DRAIN_TIMEOUT": "5s",
                # the tests run as root in CI containers: say that root is meant
                "SALLYPORT_ALLOW_ROOT": "true",
                # a resolver that refuses at once, so a name outside /etc/hosts is a fast dns_error
                "SALLYPORT_DNS": f"127.0.0.1:{DNS_PORT}"})
    if token:
        env["SALLYPORT_ENROLL_TOKEN"] = token
    if extra_env:
        env.update(extra_env)
    log = open(os.path.join(WORK, f"connector-{name}-{len(procs)}.log"), "w")
    p = subprocess.Popen([CONN], env=env, stdout=log, stderr=subprocess.STDOUT)
    procs.append(p)
    return p, log.name


def connector_health():
    env = dict(os.environ, SALLYPORT_METRICS_ADDR=f"127.0.0.1:{METRICS_PORT}")
    return subprocess.run([CONN, "health"], env=env, capture_output=True).returncode


def client(resource, target, input_bytes=b"", tls_key=None, session=None, stats=False,
           timeout=60, background=False, hold=False, save=None, load=None):
    args = [TOOL, "connect", "--url", URL, "--db", DB, "--user", USER,
            "--session", session or SESSION, "--device", DEVICE, "--device-key", DEVICE_KEY,
            "--resource", resource, "--target", target, "--network", NET]
    if tls_key:
        args += ["--tls-key", tls_key]
    if stats:
        args += ["--stats"]
    if save:
        args += ["--save", save]
    if load:
        args += ["--load", load]
    if hold:
        # keep our side open: nginx treats a half-close as the client going away
        args += ["--hold"]
    if background:
        return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    r = subprocess.run(args, input=input_bytes, capture_output=True, timeout=timeout)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


def http_get(path):
    return f"GET {path} HTTP/1.0\r\nHost: web\r\n\r\n".encode()


def split_http(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.decode(errors="replace"), body


try:
    # ---- nginx ----
    www = os.path.join(WORK, "www")
    os.makedirs(os.path.join(www, "slow"))
    page = b"<html><body>sallyport connector e2e " + os.urandom(8).hex().encode() + b"</body></html>\n"
    with open(os.path.join(www, "index.html"), "wb") as f:
        f.write(page)
    with open(os.path.join(www, "slow", "big.bin"), "wb") as f:
        f.write(os.urandom(8 << 20))
    big_path = os.path.join(www, "big.bin")
    with open(big_path, "wb") as f:
        for _ in range(100):
            f.write(os.urandom(1 << 20))
    os.makedirs(os.path.join(WORK, "nginx-tmp"))
    user_line = "user root root;" if os.geteuid() == 0 else ""
    nginx_conf = os.path.join(WORK, "nginx.conf")
    with open(nginx_conf, "w") as f:
        t = os.path.join(WORK, "nginx-tmp")
        f.write(f"""{user_line}
daemon off; worker_processes 1; pid {WORK}/nginx.pid; error_log {WORK}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {t}/body; proxy_temp_path {t}/proxy; fastcgi_temp_path {t}/fcgi;
  uwsgi_temp_path {t}/uwsgi; scgi_temp_path {t}/scgi;
  server {{
    listen 127.0.0.1:{WEB_PORT};
    root {www};
    location /slow/ {{ limit_rate 256k; }}
  }}
}}
""")
    nginx = subprocess.Popen([NGINX, "-c", nginx_conf, "-e", os.path.join(WORK, "nginx-error.log")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(nginx)
    check("nginx serves the page", wait_http(f"http://127.0.0.1:{WEB_PORT}/index.html"))

    # ---- controller and its rows ----
    subprocess.run([CTL, "migrate", "--state-dir", STATE], check=True, capture_output=True)
    now = int(time.time())
    NET, USER, GROUP, DEVICE, SESSION, SESSION2 = (new_id() for _ in range(6))
    RES_WEB, RES_NOPOLICY, RES_LOCALNAME, RES_BADNAME = new_id(), new_id(), new_id(), new_id()
    DEVICE_KEY = os.path.join(WORK, "device.key")
    OTHER_KEY = os.path.join(WORK, "other.key")
    dev = json.loads(subprocess.run([TOOL, "keygen", DEVICE_KEY], check=True,
                                    capture_output=True).stdout)
    subprocess.run([TOOL, "keygen", OTHER_KEY], check=True, capture_output=True)
    conn = db()
    conn.execute("INSERT INTO remote_networks (id, name, created_at, updated_at) VALUES (?,?,?,?)",
                 (NET, "lab", now, now))
    conn.execute("INSERT INTO users (id, issuer, subject, email, created_at, updated_at)"
                 " VALUES (?,?,?,?,?,?)", (USER, "https://idp.test", "alice", "alice@test", now, now))
    conn.execute("INSERT INTO groups (id, name, created_at, updated_at) VALUES (?,?,?,?)",
                 (GROUP, "eng", now, now))
    conn.execute("INSERT INTO memberships (user_id, group_id, created_at) VALUES (?,?,?)",
                 (USER, GROUP, now))
    conn.execute("INSERT INTO resources (id, network_id, name, address, tcp_ports, created_at,"
                 " updated_at) VALUES (?,?,?,?,?,?,?)",
                 (RES_WEB, NET, "web", "127.0.0.1", json.dumps([str(WEB_PORT)]), now, now))
    conn.execute("INSERT INTO resources (id, network_id, name, address, tcp_ports, created_at,"
                 " updated_at) VALUES (?,?,?,?,?,?,?)",
                 (RES_NOPOLICY, NET, "secret", "127.0.0.1", '"all"', now, now))
    # name resources: "localhost" resolves (hosts file) to loopback, which the DNS-rebinding
    # rule refuses for a name; the other name does not resolve at all
    conn.execute("INSERT INTO resources (id, network_id, name, address, tcp_ports, created_at,"
                 " updated_at) VALUES (?,?,?,?,?,?,?)",
                 (RES_LOCALNAME, NET, "localname", "localhost", '"all"', now, now))
    conn.execute("INSERT INTO resources (id, network_id, name, address, tcp_ports, created_at,"
                 " updated_at) VALUES (?,?,?,?,?,?,?)",
                 (RES_BADNAME, NET, "badname", "no-such-host.invalid", '"all"', now, now))
    for rid in (RES_WEB, RES_LOCALNAME, RES_BADNAME):
        conn.execute("INSERT INTO policies (id, group_id, resource_id, created_at, updated_at)"
                     " VALUES (?,?,?,?,?)", (new_id(), GROUP, rid, now, now))
    conn.execute("INSERT INTO devices (id, user_id, public_key_thumbprint, public_key_pem, state,"
                 " first_seen_at, last_seen_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
                 (DEVICE, USER, dev["jkt"], dev["public_key_pem"], "approved", now, now, now))
    for sid in (SESSION, SESSION2):
        conn.execute("INSERT INTO sessions (id, user_id, device_id, auth_method, auth_time,"
                     " created_at, last_used_at, expires_at) VALUES (?,?,?,?,?,?,?,?)",
                     (sid, USER, DEVICE, "oidc", now, now, now, now + 86400))
    conn.close()

    ctl_log = open(os.path.join(WORK, "controller.log"), "w")
    ctl = subprocess.Popen([CTL, "serve", "--state-dir", STATE, "--http-listen",
                            f"127.0.0.1:{CTL_PORT}", "--public-url", URL], stderr=ctl_log)
    procs.append(ctl)
    check("controller up", wait_http(URL + "/healthz"))

    def make_token():
        return subprocess.run([CTL, "connector-token", "create", "--network", "lab",
                               "--state-dir", STATE], check=True,
                              capture_output=True).stdout.decode().strip()

    # ---- enrollment errors ----
    bad_state = os.path.join(WORK, "bad-state")
    p, log = start_connector(bad_state, token="spe_" + "A" * 43, name="bad")
    rc = p.wait(timeout=30)
    text = open(log).read()
    check("unknown token: exit 1 with one clear line", rc == 1 and
          "does not know SALLYPORT_ENROLL_TOKEN" in text, f"{rc} {text}")
    p, log = start_connector(os.path.join(WORK, "none-state"), name="none")
    rc = p.wait(timeout=30)
    check("no token and no identity: exit 1 naming SALLYPORT_ENROLL_TOKEN",
          rc == 1 and "SALLYPORT_ENROLL_TOKEN" in open(log).read())

    # ---- enroll and run ----
    token = make_token()
    cstate = os.path.join(WORK, "conn-state")
    connector, clog = start_connector(cstate, token=token)
    ok = False
    for _ in range(200 * TIMEOUT_SCALE):
        if connector_health() == 0:
            ok = True
            break
        if connector.poll() is not None:
            break
        time.sleep(0.05)
    check("connector healthy after enrollment", ok, open(clog).read()[-2000:])
    st = os.stat(cstate)
    check("state dir is 0700", (st.st_mode & 0o777) == 0o700, oct(st.st_mode))
    check("key file is 0600", (os.stat(os.path.join(cstate, "connector.key")).st_mode & 0o777) == 0o600)
    ident = json.load(open(os.path.join(cstate, "identity.json")))
    check("identity saved 0600 with connector id, network and keys",
          (os.stat(os.path.join(cstate, "identity.json")).st_mode & 0o777) == 0o600 and
          ident["network_id"] == NET and len(ident["controller_jwks"]["keys"]) >= 1)
    CID = ident["connector_id"]

    # spent token on a fresh state dir
    p, log = start_connector(os.path.join(WORK, "spent-state"), token=token, name="spent")
    rc = p.wait(timeout=30)
    check("spent token: exit 1 with one clear line", rc == 1 and "already used" in open(log).read(),
          open(log).read())

    # ---- the page through the tunnel ----
    t0 = time.time()
    rc, out, err = client(RES_WEB, f"127.0.0.1:{WEB_PORT}", http_get("/index.html"), stats=True)
    head, body = split_http(out)
    check("page through the tunnel", rc == 0 and head.startswith("HTTP/1.1 200") and body == page,
          f"rc={rc} err={err} head={head[:80]}")
    print("figure: " + [l for l in err.splitlines() if l.startswith("stats:")][0]
          if "stats:" in err else "no stats", flush=True)
    rows = wait_flow_event("flow_id IN (SELECT flow_id FROM flow_events WHERE decision = 'allow')")
    check("allowed flow event", len(rows) >= 1 and rows[0][0] == "allow" and rows[0][2] == USER and
          rows[0][3] == DEVICE and rows[0][4] == SESSION and rows[0][5] == RES_WEB and
          rows[0][7] == WEB_PORT and rows[0][9] >= len(page) and rows[0][8] > 0, str(rows))

    # ---- refusals ----
    rc, out, err = client(RES_NOPOLICY, f"127.0.0.1:{WEB_PORT}", b"")
    check("resource outside policy: controller refuses the grant (no_policy)",
          rc == 4 and "no_policy" in err, f"{rc} {err}")

    rc, out, err = client(RES_WEB, f"127.0.0.2:{WEB_PORT}", http_get("/"))
    check("destination outside the resource: refused no_policy", rc == 3 and "refused: no_policy" in err,
          f"{rc} {err}")
    rows = wait_flow_event("decision = 'deny' AND reason = 'no_policy' AND destination_host = ?",
                           ("127.0.0.2",))
    check("flow event no_policy", len(rows) == 1 and rows[0][2] == USER and rows[0][5] == RES_WEB,
          str(rows))

    rc, out, err = client(RES_WEB, f"127.0.0.1:{OTHER_PORT}", http_get("/"))
    check("port not allowed: refused", rc == 3 and "refused: port_not_allowed" in err, f"{rc} {err}")
    rows = wait_flow_event("decision = 'deny' AND reason = 'port_not_allowed'")
    check("flow event port_not_allowed", len(rows) == 1 and rows[0][7] == OTHER_PORT, str(rows))

    rc, out, err = client(RES_WEB, f"127.0.0.1:{WEB_PORT}", http_get("/"), tls_key=OTHER_KEY)
    check("grant presented with another device key: refused bad_grant",
          rc == 3 and "refused: bad_grant" in err, f"{rc} {err}")
    rows = wait_flow_event("decision = 'deny' AND reason = 'bad_grant'")
    check("flow event bad_grant", len(rows) == 1 and rows[0][2] == USER, str(rows))

    rc, out, err = client(RES_LOCALNAME, f"localhost:{WEB_PORT}", http_get("/"))
    check("name resolving to loopback: refused by the DNS-rebinding rule",
          rc == 3 and "refused: no_policy" in err, f"{rc} {err}")
    rows = wait_flow_event("decision = 'deny' AND reason = 'no_policy' AND destination_host = ?",
                           ("localhost",))
    check("flow event for the rebinding refusal names the address", len(rows) == 1, str(rows))
    conn = db()
    ip = conn.execute("SELECT destination_ip FROM flow_events WHERE destination_host = 'localhost'").fetchone()
    conn.close()
    check("rebinding flow event has the refused IP", ip is not None and ip[0] in ("127.0.0.1", "::1"), str(ip))

    rc, out, err = client(RES_BADNAME, f"no-such-host.invalid:{WEB_PORT}", http_get("/"))
    check("name that does not resolve: refused dns_error", rc == 3 and "refused: dns_error" in err,
          f"{rc} {err}")
    rows = wait_flow_event("decision = 'deny' AND reason = 'dns_error'")
    check("flow event dns_error", len(rows) == 1, str(rows))

    # ---- revocation mid-flow ----
    p = client(RES_WEB, f"127.0.0.1:{WEB_PORT}", session=SESSION2, background=True)
    p.stdin.write(http_get("/slow/big.bin"))
    p.stdin.flush()
    got = p.stdout.read(65536)  # the download is running
    check("slow download started", len(got) > 0)
    conn = db()
    revoked_at = time.time()
    conn.execute("UPDATE sessions SET revoked_at = ?, revoke_reason = 'admin' WHERE id = ?",
                 (int(revoked_at), SESSION2))
    conn.close()
    rest = p.stdout.read()
    rc = p.wait(timeout=30)
    cut = time.time() - revoked_at
    err = p.stderr.read().decode()
    total = len(got) + len(rest)
    print(f"figure: revoked session cut after {cut * 1000:.0f} ms, {total} of {8 << 20} bytes", flush=True)
    check("revoked session cut within 2 s", rc == 5 and "reset" in err and cut < 2.0 * TIMEOUT_SCALE
          and total < (8 << 20), f"rc={rc} err={err} cut={cut:.2f}s bytes={total}")
    rows = wait_flow_event("decision = 'deny' AND reason = 'revoked' AND session_id = ?", (SESSION2,))
    check("flow event revoked with bytes carried", len(rows) == 1 and rows[0][9] > 0, str(rows))

    # ---- metrics ----
    with urllib.request.urlopen(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    check("metrics count flows", "sallyport_connector_flows_allowed_total 2" in metrics and
          'sallyport_connector_flows_denied_by_reason_total{reason="port_not_allowed"} 1' in metrics
          and "sallyport_connector_flows_cut_total 1" in metrics, metrics)

    # ---- access ended: the policy deleted through the admin API mid-flow ----
    # A resource of its own, so the other sections keep their counts.
    RES_ACC = new_id()
    conn = db()
    conn.execute("INSERT INTO resources (id, network_id, name, address, tcp_ports, created_at,"
                 " updated_at) VALUES (?,?,?,?,?,?,?)",
                 (RES_ACC, NET, "web-acc", "127.0.0.1", json.dumps([str(WEB_PORT)]), now, now))
    conn.close()
    admin_key = subprocess.run([CTL, "admin-key", "create", "--name", "e2e", "--state-dir", STATE],
                               check=True, capture_output=True, text=True).stdout.strip()

    def admin(method, path, body=None):
        req = urllib.request.Request(URL + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": "Bearer " + admin_key,
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                text = r.read()
                return r.status, json.loads(text) if text else None
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    status, pol = admin("POST", "/api/v1/policies", {"group_id": GROUP, "resource_id": RES_ACC})
    check("admin API: policy for the access-ended resource created", status == 201, str(pol))
    time.sleep(0.5)  # the feed brings the new config
    acc_grant = os.path.join(WORK, "acc-grant.json")
    p = client(RES_ACC, f"127.0.0.1:{WEB_PORT}", background=True, save=acc_grant)
    p.stdin.write(http_get("/slow/big.bin"))
    p.stdin.flush()
    got = p.stdout.read(65536)
    check("access-ended: slow download started", len(got) > 0)
    deleted_at = time.time()
    status, _ = admin("DELETE", f"/api/v1/policies/{pol['id']}")
    rest = p.stdout.read()
    rc = p.wait(timeout=30)
    cut = time.time() - deleted_at
    err = p.stderr.read().decode()
    total = len(got) + len(rest)
    print(f"figure: policy deleted through the admin API, live download cut after"
          f" {cut * 1000:.0f} ms, {total} of {8 << 20} bytes", flush=True)
    check("policy deleted: the live download is cut within 1 s",
          status == 204 and rc == 5 and "reset" in err and cut < 1.0 * TIMEOUT_SCALE and
          total < (8 << 20), f"status={status} rc={rc} err={err} cut={cut:.2f}s bytes={total}")
    rows = wait_flow_event("decision = 'deny' AND reason = 'revoked' AND resource_id = ?"
                           " AND bytes_down > 0", (RES_ACC,))
    check("flow event: the cut download is revoked", len(rows) == 1 and rows[0][2] == USER and
          rows[0][4] == SESSION, str(rows))
    saved_claims = json.loads(open(acc_grant).read())
    grant_payload = saved_claims["grant"].split(".")[1]
    grant_payload += "=" * (-len(grant_payload) % 4)
    import base64
    grant_exp = json.loads(base64.urlsafe_b64decode(grant_payload))["exp"]
    rc, out, err = client(RES_ACC, f"127.0.0.1:{WEB_PORT}", http_get("/index.html"),
                          load=acc_grant)
    check("the old grant, still unexpired, opens no new stream: refused revoked",
          grant_exp > time.time() and rc == 3 and "refused: revoked" in err, f"{rc} {err}")
    rows = wait_flow_event("decision = 'deny' AND reason = 'revoked' AND resource_id = ?"
                           " AND bytes_down = 0", (RES_ACC,))
    check("flow event: the refused stream is revoked", len(rows) == 1, str(rows))
    rc, out, err = client(RES_ACC, f"127.0.0.1:{WEB_PORT}", http_get("/index.html"))
    check("no policy: the controller refuses a new grant", rc == 4 and "no_policy" in err,
          f"{rc} {err}")
    # Access again: a policy re-added and a fresh grant, issued after the revocation's
    # second (a grant of that very second is refused: times are whole seconds).
    conn = db()
    acc_rows = conn.execute("SELECT user_id, revoked_at, expires_at FROM access_revocations"
                            " WHERE resource_id = ?", (RES_ACC,)).fetchall()
    conn.close()
    check("access_revocations holds the pair, kept for the longest grant lifetime",
          len(acc_rows) == 1 and acc_rows[0][0] == USER and
          acc_rows[0][2] == acc_rows[0][1] + 3660 and
          int(deleted_at) <= acc_rows[0][1] <= int(time.time()), str(acc_rows))
    while acc_rows and int(time.time()) <= acc_rows[0][1]:
        time.sleep(0.05)
    status, pol = admin("POST", "/api/v1/policies", {"group_id": GROUP, "resource_id": RES_ACC})
    time.sleep(0.5)
    rc, out, err = client(RES_ACC, f"127.0.0.1:{WEB_PORT}", http_get("/index.html"))
    check("policy re-added: a fresh grant works again",
          status == 201 and rc == 0 and split_http(out)[1] == page, f"{status} {rc} {err}")
    rc, out, err = client(RES_ACC, f"127.0.0.1:{WEB_PORT}", http_get("/index.html"),
                          load=acc_grant)
    check("the old grant stays refused after access came back", rc == 3 and
          "refused: revoked" in err, f"{rc} {err}")

    # ---- access ended: the user removed from the group mid-flow ----
    p = client(RES_ACC, f"127.0.0.1:{WEB_PORT}", background=True)
    p.stdin.write(http_get("/slow/big.bin"))
    p.stdin.flush()
    got = p.stdout.read(65536)
    removed_at = time.time()
    status, _ = admin("DELETE", f"/api/v1/groups/{GROUP}/members/{USER}")
    rest = p.stdout.read()
    rc = p.wait(timeout=30)
    cut = time.time() - removed_at
    err = p.stderr.read().decode()
    print(f"figure: membership deleted through the admin API, live download cut after"
          f" {cut * 1000:.0f} ms", flush=True)
    check("membership deleted: the live download is cut within 1 s",
          len(got) > 0 and status == 204 and rc == 5 and "reset" in err and
          cut < 1.0 * TIMEOUT_SCALE, f"status={status} rc={rc} err={err} cut={cut:.2f}s")
    end = time.time() + 10
    rows = []
    while time.time() < end and len(rows) < 2:
        rows = flow_events("decision = 'deny' AND reason = 'revoked' AND resource_id = ?"
                           " AND bytes_down > 0", (RES_ACC,))
        time.sleep(0.1)
    check("flow event: the download cut by the membership delete is revoked", len(rows) == 2,
          str(rows))
    status, _ = admin("PUT", f"/api/v1/groups/{GROUP}/members/{USER}")
    conn = db()
    last = conn.execute("SELECT max(revoked_at) FROM access_revocations WHERE user_id = ?",
                        (USER,)).fetchone()[0]
    conn.close()
    check("member again", status in (200, 201) and last is not None, f"{status} {last}")
    while last is not None and int(time.time()) <= last:
        time.sleep(0.05)  # grants of the revocation's own second stay refused
    time.sleep(0.5)

    # ---- throughput (figures; the sanitizer build skips them) ----
    if not SANITIZED:
        firsts = []
        for _ in range(20):
            rc, out, err = client(RES_WEB, f"127.0.0.1:{WEB_PORT}", http_get("/index.html"),
                                  stats=True)
            for line in err.splitlines():
                if line.startswith("stats:"):
                    firsts.append(float(line.split("first_byte_ms=")[1].split()[0]))
        firsts.sort()
        if firsts:
            print(f"figure: open to first byte (new TCP + TLS 1.3 + stream + grant check + dial"
                  f" + HTTP request), 20 runs: median {firsts[len(firsts) // 2]:.2f} ms,"
                  f" max {firsts[-1]:.2f} ms", flush=True)
        t = time.time()
        r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{size_download}",
                            f"http://127.0.0.1:{WEB_PORT}/big.bin"], capture_output=True)
        direct = time.time() - t
        rc, out, err = client(RES_WEB, f"127.0.0.1:{WEB_PORT}", http_get("/big.bin"), stats=True,
                              timeout=120, hold=True)
        head, body = split_http(out)
        with open(big_path, "rb") as f:
            same = f.read() == body
        check("100 MiB through the tunnel byte for byte", rc == 0 and same, f"{rc} {err}")
        # timing runs with stdout to /dev/null on both sides (no Python pipe in the way)
        args = [TOOL, "connect", "--url", URL, "--db", DB, "--user", USER, "--session", SESSION,
                "--device", DEVICE, "--device-key", DEVICE_KEY, "--resource", RES_WEB,
                "--target", f"127.0.0.1:{WEB_PORT}", "--hold", "--stats"]
        print("figure command: printf 'GET /big.bin HTTP/1.0\\r\\n\\r\\n' | " +
              " ".join(args) + " > /dev/null", flush=True)
        for run in range(3):
            t = time.time()
            subprocess.run(["curl", "-s", "-o", "/dev/null", f"http://127.0.0.1:{WEB_PORT}/big.bin"])
            direct = time.time() - t
            with open(os.devnull, "wb") as devnull:
                r = subprocess.run(args, input=http_get("/big.bin"), stdout=devnull,
                                   stderr=subprocess.PIPE, timeout=120)
            stats = [l for l in r.stderr.decode().splitlines() if l.startswith("stats:")]
            print(f"figure: 100 MiB run {run + 1}: direct curl {direct:.3f} s "
                  f"({100 / direct:.0f} MiB/s); through the tunnel {stats[0] if stats else '?'}",
                  flush=True)

    # ---- SIGTERM drain and restart with the saved identity ----
    connector.send_signal(signal.SIGTERM)
    try:
        rc = connector.wait(timeout=20)
    except subprocess.TimeoutExpired:
        rc = None
    check("SIGTERM: clean exit", rc == 0, str(rc))
    connector, clog2 = start_connector(cstate)
    ok = False
    for _ in range(200 * TIMEOUT_SCALE):
        if connector_health() == 0:
            ok = True
            break
        time.sleep(0.05)
    text = open(clog2).read()
    check("restart reuses the identity without a token", ok and "identity loaded" in text and
          CID in text, text[-1500:])
    rc, out, err = client(RES_WEB, f"127.0.0.1:{WEB_PORT}", http_get("/index.html"))
    check("page through the restarted connector", rc == 0 and split_http(out)[1] == page, err)

    # ---- the controller away: an unexpired grant and the last good config keep working ----
    saved = os.path.join(WORK, "saved-grant.json")
    allowed_before_save = len(flow_events("decision = 'allow'"))
    rc, out, err = client(RES_WEB, f"127.0.0.1:{WEB_PORT}", http_get("/index.html"), save=saved)
    check("grant saved", rc == 0 and os.path.exists(saved), err)
    # this flow's event must be in before the controller goes away (they are batched for up
    # to 200 ms), or it would be counted as the away period's
    end = time.time() + 10
    while time.time() < end and len(flow_events("decision = 'allow'")) <= allowed_before_save:
        time.sleep(0.05)
    ctl.send_signal(signal.SIGTERM)
    ctl.wait(timeout=20)
    away_flows_before = len(flow_events("decision = 'allow'"))
    rc, out, err = client(RES_WEB, f"127.0.0.1:{WEB_PORT}", http_get("/index.html"), load=saved)
    check("controller away: a flow with an unexpired grant still opens",
          rc == 0 and split_http(out)[1] == page, f"{rc} {err}")
    check("controller away: still ready on the last good config", connector_health() == 0)
    ctl_log = open(os.path.join(WORK, "controller2.log"), "w")
    ctl = subprocess.Popen([CTL, "serve", "--state-dir", STATE, "--http-listen",
                            f"127.0.0.1:{CTL_PORT}", "--public-url", URL], stderr=ctl_log)
    procs.append(ctl)
    check("controller back", wait_http(URL + "/healthz"))
    end = time.time() + 30
    while time.time() < end and len(flow_events("decision = 'allow'")) <= away_flows_before:
        time.sleep(0.2)
    check("the flow event of the away period reaches the controller once it is back",
          len(flow_events("decision = 'allow'")) == away_flows_before + 1)

    # ---- a resource deleted mid-flow ----
    p = client(RES_WEB, f"127.0.0.1:{WEB_PORT}", background=True)
    p.stdin.write(http_get("/slow/big.bin"))
    p.stdin.flush()
    got = p.stdout.read(65536)
    conn = db()
    deleted_at = time.time()
    conn.execute("DELETE FROM resources WHERE id = ?", (RES_WEB,))
    conn.close()
    p.stdout.read()
    rc = p.wait(timeout=30)
    cut = time.time() - deleted_at
    print(f"figure: deleted resource cut after {cut * 1000:.0f} ms", flush=True)
    check("deleted resource: live flow cut within 2 s", len(got) > 0 and rc == 5 and
          cut < 2.0 * TIMEOUT_SCALE, f"rc={rc} cut={cut:.2f}")
    rows = wait_flow_event("decision = 'deny' AND reason = 'no_policy' AND session_id = ?"
                           " AND bytes_down > 0", (SESSION,))
    check("flow event for the deleted resource", len(rows) == 1, str(rows))

    # ---- SIGTERM drain with a live flow: it runs on for the grace period (5 s) ----
    RES_WEB2 = new_id()
    conn = db()
    conn.execute("INSERT INTO resources (id, network_id, name, address, tcp_ports, created_at,"
                 " updated_at) VALUES (?,?,?,?,?,?,?)",
                 (RES_WEB2, NET, "web2", "127.0.0.1", json.dumps([str(WEB_PORT)]), now, now))
    conn.execute("INSERT INTO policies (id, group_id, resource_id, created_at, updated_at)"
                 " VALUES (?,?,?,?,?)", (new_id(), GROUP, RES_WEB2, now, now))
    conn.close()
    time.sleep(0.5)  # the feed brings the new config
    p = client(RES_WEB2, f"127.0.0.1:{WEB_PORT}", background=True)
    p.stdin.write(http_get("/slow/big.bin"))
    p.stdin.flush()
    got = p.stdout.read(65536)
    term_at = time.time()
    connector.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    check("draining: no new flows (health not ready)", connector_health() != 0)
    rest = p.stdout.read()
    p.wait(timeout=30)
    try:
        rc = connector.wait(timeout=30)
    except subprocess.TimeoutExpired:
        rc = None
    drained = time.time() - term_at
    print(f"figure: drain with a live flow: exit after {drained:.1f} s, {len(rest)} bytes carried"
          " after SIGTERM", flush=True)
    check("SIGTERM drain: the live flow kept running, then a clean exit within the grace period",
          rc == 0 and len(rest) > 256 * 1024 and 4.0 < drained < 5.0 + 5 * TIMEOUT_SCALE,
          f"rc={rc} drained={drained:.1f} rest={len(rest)}")
except Exception as e:  # report, then clean up
    import traceback
    traceback.print_exc()
    check.failed += 1
finally:
    testkit.stop_all(procs)
    if check.failed == 0:
        shutil.rmtree(WORK, ignore_errors=True)
    else:
        print(f"logs kept in {WORK}", flush=True)

print(check.summary("connector_e2e"), flush=True)
sys.exit(check.exit_code())
