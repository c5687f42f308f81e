#!/usr/bin/env python3
"""Integration test: the sallyport client end to end, with real processes on 127.0.0.1.

The real controller, the real connector (enrolled, direct listener), nginx, and the
`sallyport` program under test. Sign-in is real: `sallyport login --no-browser` against
the test IdP (tests/oidc/provider.mjs), its printed URL driven by tests/oidc/drive-login.mjs
and the IdP's redirect delivered to the client's loopback listener; when the IdP's Node
packages are not installed (scripts/install-test-tools) the run says so and signs in with
`sallyport login --service-key` instead. The service-key sign-in is checked in any case, in
a second state directory. Then the daemon in
proxy mode (SOCKS5 with hostnames, HTTP CONNECT) and in loopback mode: the page through
each path, a resource outside the policy refused by the client, a port outside the
resource refused by the connector, status --json (tunnel direct, flows, denials), the
control socket refusing another uid (SO_PEERCRED), a resource taken away while the
daemon runs (listener closed), `down`, `logout` (session revoked at the controller).
Prints figures: time to first byte over a warm tunnel vs direct, and 100 MiB throughput in
proxy and loopback modes vs direct.

Usage: client_e2e.py CONTROLLER CONNECTOR SALLYPORT
"""
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
import testkit  # noqa: E402

if len(sys.argv) < 4:
    sys.exit("usage: client_e2e.py CONTROLLER CONNECTOR SALLYPORT")
CTL, CONN, SP = sys.argv[1:4]
SANITIZED = os.environ.get("SALLYPORT_SANITIZED", "0") in ("1", "ON", "TRUE", "true")
SCALE = 3 if SANITIZED else 1
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WORK = tempfile.mkdtemp(prefix="sp-client-e2e-")
STATE = os.path.join(WORK, "ctl")
DB = os.path.join(STATE, "controller.db")
CSTATE = os.path.join(WORK, "client-state")
SRC = os.environ.get("SALLYPORT_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OIDC = os.path.join(SRC, "tests", "oidc")
IDP = bool(shutil.which("node")) and os.path.isdir(os.path.join(OIDC, "node_modules",
                                                                "oidc-provider"))
procs = []


check = testkit.Checks()
free_port = testkit.free_port
new_id = testkit.new_id
wait_http = testkit.wait_http


def db():
    return testkit.db(DB)


CTL_PORT, DIRECT_PORT, METRICS_PORT, WEB_PORT, OTHER_PORT, SOCKS_PORT, HTTP_PORT, DNS_PORT, \
    DEAD_PORT = (free_port() for _ in range(9))
URL = f"http://127.0.0.1:{CTL_PORT}"
ENV = {k: v for k, v in os.environ.items() if not k.startswith("SALLYPORT_")}
ENV["SALLYPORT_STATE_DIR"] = CSTATE


def sp(*args, timeout=60, env=None):
    r = subprocess.run([SP, *args], env=env or ENV, capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def status():
    return testkit.status_json(sp)


def wait_status(pred, limit=20.0):
    return testkit.wait_for(status, pred, limit * SCALE, initial={})


def curl(*args, timeout=120):
    r = subprocess.run(["curl", "-sS", "--noproxy", "", *args], capture_output=True,
                       timeout=timeout)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


def up(mode, *extra):
    log = open(os.path.join(WORK, f"sallyport-{mode}.log"), "w")
    p = subprocess.Popen([SP, "up", "--foreground", "--mode", mode, *extra], env=ENV,
                         stdout=log, stderr=subprocess.STDOUT)
    procs.append(p)
    s = wait_status(lambda s: s.get("state") == "up" and s.get("resources", 0) >= 1)
    return p, log.name, s


def down(p, name):
    rc, out, err = sp("down")
    try:
        prc = p.wait(timeout=15 * SCALE)
    except subprocess.TimeoutExpired:
        prc = None
    check(f"{name}: `down` stops the daemon (exit 0) and removes the socket",
          rc == 0 and prc == 0 and not os.path.exists(os.path.join(CSTATE, "control.sock")),
          f"down rc={rc} {out}{err} daemon rc={prc}")


def dns_a(name):
    """The A record the client's DNS stub answers for name (None without an answer)."""
    import struct
    q = testkit.dns_question(name, 0x5350)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    try:
        s.sendto(q, ("127.0.0.1", DNS_PORT))
        r = s.recv(512)
    except OSError:
        return None
    finally:
        s.close()
    ancount = struct.unpack(">H", r[6:8])[0]
    return socket.inet_ntoa(r[-4:]) if ancount >= 1 and r[:2] == q[:2] else None


def ttfb(args, n=5):
    best = []
    for _ in range(n):
        rc, out, err = curl("-o", "/dev/null", "-w", "%{time_starttransfer}", *args)
        if rc == 0:
            best.append(float(out.decode()))
    best.sort()
    return best[len(best) // 2] * 1000 if best else -1


def throughput(args):
    t0 = time.time()
    rc, out, err = curl("-o", "/dev/null", "-w", "%{size_download}", *args, timeout=300)
    dt = time.time() - t0
    size = int(out.decode() or 0) if rc == 0 else 0
    return size / (1 << 20) / dt if dt > 0 else 0, size


try:
    # ---- nginx ----
    www = os.path.join(WORK, "www")
    os.makedirs(os.path.join(www, "slow"))
    with open(os.path.join(www, "slow", "big.bin"), "wb") as f:
        f.write(os.urandom(8 << 20))
    page = b"<html><body>sallyport client e2e " + os.urandom(8).hex().encode() + b"</body></html>\n"
    with open(os.path.join(www, "index.html"), "wb") as f:
        f.write(page)
    with open(os.path.join(www, "big.bin"), "wb") as f:
        for _ in range(100):
            f.write(os.urandom(1 << 20))
    os.makedirs(os.path.join(WORK, "nginx-tmp"))
    user_line = "user root root;" if os.geteuid() == 0 else ""
    nginx_conf = os.path.join(WORK, "nginx.conf")
    t = os.path.join(WORK, "nginx-tmp")
    with open(nginx_conf, "w") as f:
        f.write(f"""{user_line}
daemon off; worker_processes 1; pid {WORK}/nginx.pid; error_log {WORK}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {t}/body; proxy_temp_path {t}/proxy; fastcgi_temp_path {t}/fcgi;
  uwsgi_temp_path {t}/uwsgi; scgi_temp_path {t}/scgi;
  server {{ listen 127.0.0.1:{WEB_PORT}; root {www}; location /slow/ {{ limit_rate 256k; }} }}
  server {{ listen 127.0.0.1:{OTHER_PORT}; root {www}; }}
}}
""")
    procs.append(subprocess.Popen([NGINX, "-c", nginx_conf, "-e",
                                   os.path.join(WORK, "nginx-error.log")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    check("nginx serves the page", wait_http(f"http://127.0.0.1:{WEB_PORT}/index.html"))

    # ---- controller, its rows, a service account with a key ----
    subprocess.run([CTL, "migrate", "--state-dir", STATE], check=True, capture_output=True)
    now = int(time.time())
    NET, SA, GROUP, KID = new_id(), new_id(), new_id(), new_id()
    RES_WEB, RES_SECRET, POLICY_WEB = new_id(), new_id(), new_id()
    sa_key = os.path.join(WORK, "sa.pem")
    sa_pub, sa_der = testkit.ec_key(sa_key)
    conn = db()
    conn.execute("INSERT INTO remote_networks (id, name, created_at, updated_at) VALUES (?,?,?,?)",
                 (NET, "lab", now, now))
    testkit.add_service_account(conn, SA, KID, sa_pub, sa_der, now)
    # the IdP's eng-user is in "engineering": its sign-in puts it into this group
    conn.execute("INSERT INTO groups (id, name, source, created_at, updated_at)"
                 " VALUES (?,?,'idp',?,?)", (GROUP, "engineering", now, now))
    conn.execute("INSERT INTO memberships (user_id, group_id, source, created_at)"
                 " VALUES (?,?,'local',?)", (SA, GROUP, now))
    conn.execute("INSERT INTO resources (id, network_id, name, address, alias, tcp_ports,"
                 " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
                 (RES_WEB, NET, "web", "127.0.0.1", "web.sp", json.dumps([str(WEB_PORT)]), now, now))
    conn.execute("INSERT INTO resources (id, network_id, name, address, tcp_ports, created_at,"
                 " updated_at) VALUES (?,?,?,?,?,?,?)",
                 (RES_SECRET, NET, "secret", "secret.internal", '"all"', now, now))
    conn.execute("INSERT INTO policies (id, group_id, resource_id, created_at, updated_at)"
                 " VALUES (?,?,?,?,?)", (POLICY_WEB, GROUP, RES_WEB, now, now))
    # a connector that sorts first and never answers: the client must fail over to c1
    conn.execute("INSERT INTO connectors (id, network_id, name, public_key_digest, public_key_pem,"
                 " direct_address, enrolled_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
                 (new_id(), NET, "a-dead", os.urandom(32).hex(), sa_pub,
                  f"127.0.0.1:{DEAD_PORT}", now, now))
    conn.close()
    oidc_args, ctl_env = [], dict(os.environ)
    if IDP:
        cfg = json.load(open(os.path.join(OIDC, "sample-config.json")))
        for c in cfg["clients"]:
            if c["client_id"] == "sallyport-controller":
                c["redirect_uris"] = [URL + "/auth/callback"]
                c["skip_consent"] = True
        cfg_path = os.path.join(WORK, "provider.json")
        json.dump(cfg, open(cfg_path, "w"))
        pout = open(os.path.join(WORK, "provider.out"), "w+")
        provider = subprocess.Popen(["node", os.path.join(OIDC, "provider.mjs"), "--config",
                                     cfg_path, "--port", "0", "--quiet"], stdout=pout,
                                    stderr=open(os.path.join(WORK, "provider.err"), "w"), cwd=OIDC)
        procs.append(provider)
        issuer = None
        for _ in range(200):
            pout.seek(0)
            line = pout.readline()
            if line.endswith("\n"):
                issuer = json.loads(line)["issuer"]
                break
            time.sleep(0.05)
        check("test IdP up", issuer is not None)
        oidc_args = ["--oidc-issuer", issuer or "", "--oidc-client-id", "sallyport-controller",
                     "--oidc-groups-claim", "groups"]
        ctl_env["SALLYPORT_OIDC_CLIENT_SECRET"] = "sallyport-controller-test-secret"
    else:
        print("note: tests/oidc/node_modules missing (scripts/install-test-tools): the browser"
              " sign-in is skipped, the service key signs in instead", flush=True)
    ctl = subprocess.Popen([CTL, "serve", "--state-dir", STATE, "--http-listen",
                            f"127.0.0.1:{CTL_PORT}", "--public-url", URL, *oidc_args],
                           env=ctl_env, stderr=open(os.path.join(WORK, "controller.log"), "w"))
    procs.append(ctl)
    check("controller up", wait_http(URL + "/healthz"))

    token = subprocess.run([CTL, "connector-token", "create", "--network", "lab", "--state-dir",
                            STATE], check=True, capture_output=True).stdout.decode().strip()
    cenv = {k: v for k, v in os.environ.items() if not k.startswith("SALLYPORT_")}
    cenv.update({"SALLYPORT_URL": URL, "SALLYPORT_STATE_DIR": os.path.join(WORK, "conn"),
                 "SALLYPORT_DIRECT_LISTEN": f"127.0.0.1:{DIRECT_PORT}",
                 "SALLYPORT_METRICS_ADDR": f"127.0.0.1:{METRICS_PORT}", "SALLYPORT_NAME": "c1",
                 "SALLYPORT_ENROLL_TOKEN": token, "SALLYPORT_LOG_FORMAT": "json",
                 "SALLYPORT_ALLOW_ROOT": "true"})
    connector = subprocess.Popen([CONN], env=cenv, stdout=open(os.path.join(WORK, "connector.log"), "w"),
                                 stderr=subprocess.STDOUT)
    procs.append(connector)
    ok = False
    for _ in range(200 * SCALE):
        env = dict(os.environ, SALLYPORT_METRICS_ADDR=f"127.0.0.1:{METRICS_PORT}")
        if subprocess.run([CONN, "health"], env=env, capture_output=True).returncode == 0:
            ok = True
            break
        time.sleep(0.05)
    check("connector enrolled and healthy", ok)

    # ---- sign-in ----
    rc, out, err = sp("status", "--json")
    check("status before sign-in: down, signed out",
          rc == 0 and json.loads(out) == {"state": "down", "signed_in": False}, out + err)
    rc, out, err = sp("up", "--foreground")
    check("up before sign-in: refused (exit 3)", rc == 3 and "not signed in" in err, f"{rc} {err}")
    # the service key, in a state directory of its own
    env_sa = dict(ENV, SALLYPORT_STATE_DIR=os.path.join(WORK, "sa-state"))
    rc, out, err = sp("login", "--controller", URL, "--service-key", sa_key, "--service-kid", KID,
                      "--service-account", SA, "--device-name", "ci-box", env=env_sa)
    check("login with a service key", rc == 0 and "signed in" in out, f"{rc} {out} {err}")
    rc, out, err = sp("resources", "--json", env=env_sa)
    check("service account: its resource list", rc == 0 and
          [r["id"] for r in json.loads(out)["resources"]] == [RES_WEB], out + err)
    if IDP:
        login = subprocess.Popen([SP, "login", "--no-browser", "--controller", URL + "/",
                                  "--device-name", "laptop"], env=ENV, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        procs.append(login)
        start = None
        for _ in range(5):
            line = login.stdout.readline()
            if line.startswith(URL + "/auth/login?client=native"):
                start = line.strip()
                break
        check("login --no-browser prints the sign-in URL (native, PKCE S256, loopback redirect)",
              start is not None and "code_challenge_method=S256" in start and
              "redirect_uri=http%3A%2F%2F127.0.0.1%3A" in start, str(start))
        r = subprocess.run(["node", os.path.join(OIDC, "drive-login.mjs"), "--rp-start",
                            start or URL, "--jar", os.path.join(WORK, "jar"), "--username",
                            "eng-user", "--password", "eng-pass", "--follow"],
                           capture_output=True, text=True, timeout=60)
        try:
            drove = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            drove = {"error": r.stderr[-300:]}
        loc = drove.get("location") or ""
        check("the IdP sign-in ends in a redirect to the client's loopback listener",
              drove.get("status") == 302 and loc.startswith("http://127.0.0.1:") and
              "/cb?code=" in loc, str(drove))
        try:
            page_back = urllib.request.urlopen(loc, timeout=10).read().decode()
        except OSError as e:
            page_back = str(e)
        try:
            out, err = login.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            login.kill()
            out, err = login.communicate()
        check("browser sign-in: the listener answers and the client saves the session",
              login.returncode == 0 and "signed in as eng-user@example.com" in out and
              "signed in" in page_back, f"{login.returncode} {out} {err} {page_back}")
        # RFC 8628 on a headless machine: the code is shown, a person approves elsewhere
        env_dc = dict(ENV, SALLYPORT_STATE_DIR=os.path.join(WORK, "dc-state"))
        dcp = subprocess.Popen([SP, "login", "--device-code", "--controller", URL,
                                "--device-name", "headless"], env=env_dc,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(dcp)
        complete = None
        for _ in range(3):
            line = dcp.stdout.readline()
            m = re.search(r"\(or open (\S+)\)", line)
            if m:
                complete = m.group(1)
                break
        check("login --device-code shows the code and the verification URI",
              complete is not None and "user_code=" in complete, str(complete))
        r = subprocess.run(["node", os.path.join(OIDC, "drive-login.mjs"), "--rp-start",
                            complete or URL, "--jar", os.path.join(WORK, "dc-jar"), "--username",
                            "fin-user", "--password", "fin-pass", "--follow"],
                           capture_output=True, text=True, timeout=60)
        try:
            body = json.loads(r.stdout.strip().splitlines()[-1]).get("body", "")
        except (ValueError, IndexError):
            body = r.stderr[-300:]
        m = re.search(r'name="confirm" value="([0-9a-f]{32})"', body)
        approved = ""
        if m:
            req = urllib.request.Request(URL + "/auth/device/approve", method="POST",
                                         data=f"confirm={m.group(1)}&decision=approve".encode(),
                                         headers={"Content-Type":
                                                  "application/x-www-form-urlencoded"})
            approved = urllib.request.urlopen(req, timeout=10).read().decode()
        try:
            out, err = dcp.communicate(timeout=40)
        except subprocess.TimeoutExpired:
            dcp.kill()
            out, err = dcp.communicate()
        check("device code: approved in a browser, the client's poll gets the session",
              "device-approved" in approved and dcp.returncode == 0 and
              "signed in as fin-user@example.com" in out, f"{dcp.returncode} {out} {err}")
    else:
        rc, out, err = sp("login", "--controller", URL + "/", "--service-key", sa_key,
                          "--service-kid", KID, "--service-account", SA, "--device-name",
                          "ci-box")
        check("login (service key in place of the browser)", rc == 0 and "signed in" in out,
              f"{rc} {out} {err}")
    mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)
    check("state dir 0700, device key 0600, session 0600",
          mode(CSTATE) == 0o700 and mode(os.path.join(CSTATE, "device.key")) == 0o600 and
          mode(os.path.join(CSTATE, "session.json")) == 0o600)
    session = json.load(open(os.path.join(CSTATE, "session.json")))
    check("session file: controller (no trailing slash), ids, refresh token",
          session["controller"] == URL and session["refresh_token"].startswith("spr_") and
          len(session["device_id"]) == 32 and len(session["session_id"]) == 32, str(session.keys()))
    rc, out, err = sp("resources", "--json")
    res = json.loads(out) if rc == 0 else {}
    check("resources (daemon down): the signed list from the controller, verified",
          [r["id"] for r in res.get("resources", [])] == [RES_WEB], out + err)
    first_refresh = session["refresh_token"]
    session = json.load(open(os.path.join(CSTATE, "session.json")))
    check("refresh token rotated and saved", session["refresh_token"] != first_refresh)

    # ---- proxy mode ----
    daemon, dlog, s = up("proxy", "--socks", f"127.0.0.1:{SOCKS_PORT}", "--http-proxy",
                         f"127.0.0.1:{HTTP_PORT}")
    check("proxy mode up with the resource list", s.get("mode") == "proxy" and
          s.get("resources") == 1, str(s))
    sock_path = os.path.join(CSTATE, "control.sock")
    check("control socket 0600", mode(sock_path) == 0o600)
    socks = ["--socks5-hostname", f"127.0.0.1:{SOCKS_PORT}"]
    rc, body, err = curl(*socks, f"http://127.0.0.1:{WEB_PORT}/index.html")
    check("SOCKS5: the page through the tunnel", rc == 0 and body == page, f"{rc} {err}")
    rc, body, err = curl(*socks, f"http://web.sp:{WEB_PORT}/index.html")
    check("SOCKS5 with the alias as host name", rc == 0 and body == page, f"{rc} {err}")
    rc, body, err = curl("-p", "-x", f"http://127.0.0.1:{HTTP_PORT}",
                         f"http://127.0.0.1:{WEB_PORT}/index.html")
    check("HTTP CONNECT: the page through the tunnel", rc == 0 and body == page, f"{rc} {err}")
    rc, body, err = curl(*socks, f"http://secret.internal:{WEB_PORT}/")
    check("SOCKS5: resource outside the policy refused", rc != 0 and body == b"", f"{rc} {err}")
    rc, body, err = curl("-p", "-x", f"http://127.0.0.1:{HTTP_PORT}", f"http://example.com:80/")
    check("HTTP CONNECT: a name that is no resource refused (not a general proxy)",
          rc != 0 and ("403" in err or "CONNECT" in err), f"{rc} {err}")
    rc, body, err = curl(*socks, f"http://127.0.0.1:{OTHER_PORT}/index.html")
    check("SOCKS5: port outside the resource refused", rc != 0 and body == b"", f"{rc} {err}")
    s = status()
    tunnels = s.get("tunnels", [])
    check("status: one direct tunnel, up", len(tunnels) == 1 and tunnels[0]["path"] == "direct" and
          tunnels[0]["state"] == "up" and tunnels[0]["address"] == f"127.0.0.1:{DIRECT_PORT}",
          str(tunnels))
    check("failover: the dead connector was tried first, then c1 carried the flows",
          "a-dead" in open(dlog).read() and len(tunnels) == 1 and tunnels[0]["connector"] == "c1",
          str(tunnels))
    check("status: flows counted over one tunnel", s.get("flows", {}).get("total", 0) >= 4 and
          tunnels and tunnels[0]["streams_total"] >= 4, str(s.get("flows")))
    reasons = {(d["reason"], d["by"]) for d in s.get("denials", [])}
    check("status: denials with reasons (port by the connector, policy by the client)",
          ("port_not_allowed", "connector") in reasons and ("not_protected", "client") in reasons,
          str(s.get("denials")))
    rc, out, err = sp("resources", "--json")
    check("resources from the daemon", rc == 0 and
          [r["id"] for r in json.loads(out)["resources"]] == [RES_WEB], out + err)

    # the control socket refuses another uid (SO_PEERCRED), even when the path is reachable
    if os.geteuid() == 0:
        os.chmod(WORK, 0o711)
        os.chmod(CSTATE, 0o711)
        os.chmod(sock_path, 0o666)
        probe = ("import socket\ns=socket.socket(socket.AF_UNIX)\ns.settimeout(5)\n"
                 f"s.connect({sock_path!r})\n"
                 "try:\n s.sendall(b'{\"cmd\":\"status\"}\\n')\n d=s.recv(100)\n"
                 "except (BrokenPipeError, ConnectionResetError):\n d=b''\n"
                 "print('REPLY' if d else 'CLOSED')\n")
        r = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                            sys.executable, "-c", probe], capture_output=True, text=True,
                           timeout=20)
        os.chmod(sock_path, 0o600)
        os.chmod(CSTATE, 0o700)
        os.chmod(WORK, 0o700)
        check("control socket: uid nobody connects and is closed without an answer",
              r.stdout.strip() == "CLOSED" and "control connection refused" in open(dlog).read(),
              r.stdout + r.stderr)
    else:
        print("skip: control socket uid test needs root", flush=True)

    # figures: time to first byte on a warm tunnel vs direct; 100 MiB throughput
    direct_ttfb = ttfb([f"http://127.0.0.1:{WEB_PORT}/index.html"])
    socks_ttfb = ttfb([*socks, f"http://127.0.0.1:{WEB_PORT}/index.html"])
    print(f"figure: time to first byte, new flow over a warm tunnel (SOCKS5): {socks_ttfb:.2f} ms;"
          f" direct: {direct_ttfb:.2f} ms (median of 5, curl time_starttransfer)", flush=True)
    if not SANITIZED:
        d_mib, d_size = throughput([f"http://127.0.0.1:{WEB_PORT}/big.bin"])
        s_mib, s_size = throughput([*socks, f"http://127.0.0.1:{WEB_PORT}/big.bin"])
        h_mib, h_size = throughput(["-p", "-x", f"http://127.0.0.1:{HTTP_PORT}",
                                    f"http://127.0.0.1:{WEB_PORT}/big.bin"])
        check("100 MiB through SOCKS5 and HTTP CONNECT complete",
              s_size == 100 << 20 and h_size == 100 << 20, f"{s_size} {h_size}")
        print(f"figure: 100 MiB: direct {d_mib:.0f} MiB/s; proxy SOCKS5 {s_mib:.0f} MiB/s;"
              f" proxy HTTP CONNECT {h_mib:.0f} MiB/s (curl -o /dev/null [--socks5-hostname|-p -x]"
              f" http://127.0.0.1:{WEB_PORT}/big.bin)", flush=True)
    # the connector restarts: the tunnel breaks, flows meanwhile are refused, then the client
    # reconnects (after its backoff) on the next flow
    connector.kill()
    connector.wait(timeout=10)
    rc, body, err = curl(*socks, f"http://127.0.0.1:{WEB_PORT}/index.html")
    check("connector down: the flow is refused", rc != 0 and body == b"", f"{rc} {err}")
    s = status()
    check("connector down: recorded as connector_unavailable",
          any(d["reason"] == "connector_unavailable" for d in s.get("denials", [])),
          str(s.get("denials")))
    cenv.pop("SALLYPORT_ENROLL_TOKEN", None)
    connector = subprocess.Popen([CONN], env=cenv, stdout=open(os.path.join(WORK,
                                 "connector-2.log"), "w"), stderr=subprocess.STDOUT)
    procs.append(connector)
    t0 = time.time()
    body = b""
    while time.time() - t0 < 40 * SCALE:
        rc, body, err = curl(*socks, f"http://127.0.0.1:{WEB_PORT}/index.html")
        if rc == 0:
            break
        time.sleep(0.5)
    print(f"figure: connector restarted: first flow through again after {time.time() - t0:.1f} s"
          " (connector start-up plus the client's backoff)", flush=True)
    check("connector back: the client reconnects and the page comes through", body == page,
          f"{rc} {err}")
    down(daemon, "proxy")

    # ---- loopback mode ----
    daemon, dlog, s = up("loopback", "--dns", f"127.0.0.1:{DNS_PORT}", "--dns-upstream",
                         f"127.0.0.1:{DEAD_PORT}")
    s = wait_status(lambda s: len(s.get("listeners", [])) >= 1)
    ls = s.get("listeners", [])
    check("loopback mode: the alias gets its own 127.77.x.y on the resource port",
          len(ls) == 1 and ls[0]["name"] == "web.sp" and ls[0]["address"].startswith("127.77.") and
          ls[0]["port"] == WEB_PORT, str(ls))
    lb = ls[0]["address"] if ls else "127.77.0.1"
    check("loopback: the DNS stub answers the alias with its listener's address",
          dns_a("web.sp") == lb, f"{dns_a('web.sp')} != {lb}")
    rc, body, err = curl(f"http://{lb}:{WEB_PORT}/index.html")
    check("loopback: the page through the tunnel", rc == 0 and body == page, f"{rc} {err}")
    rc, body, err = curl(f"http://{lb}:{OTHER_PORT}/index.html")
    check("loopback: no listener on a port outside the resource", rc != 0 and body == b"",
          f"{rc} {err}")
    s = status()
    check("loopback status: direct tunnel and a flow", len(s.get("tunnels", [])) == 1 and
          s["tunnels"][0]["path"] == "direct" and s["flows"]["total"] >= 1, str(s))
    if not SANITIZED:
        l_mib, l_size = throughput([f"http://{lb}:{WEB_PORT}/big.bin"])
        check("100 MiB through loopback complete", l_size == 100 << 20, str(l_size))
        print(f"figure: 100 MiB loopback mode {l_mib:.0f} MiB/s (curl -o /dev/null"
              f" http://{lb}:{WEB_PORT}/big.bin)", flush=True)
    # the policy goes away: the feed names "resources", the list is refetched, the listener
    # closes and the live download is cut
    slow = subprocess.Popen(["curl", "-sS", "--noproxy", "", "-o", "/dev/null",
                             f"http://{lb}:{WEB_PORT}/slow/big.bin"], stderr=subprocess.PIPE)
    procs.append(slow)
    wait_status(lambda s: any(f["state"] == "open" and f["bytes_down"] > 0
                              for f in s.get("flows", {}).get("open", [])), 10)
    conn = db()
    conn.execute("DELETE FROM policies WHERE id = ?", (POLICY_WEB,))
    conn.close()
    s = wait_status(lambda s: s.get("resources") == 0 and not s.get("listeners"), 15)
    check("resource removed: list refetched through the feed, listener closed",
          s.get("resources") == 0 and not s.get("listeners"), str(s))
    try:
        slow_rc = slow.wait(timeout=5 * SCALE)
    except subprocess.TimeoutExpired:
        slow_rc = None
    # whichever end cuts first records it: the client (`resource_removed`) or the connector,
    # which enforces access that ended itself (a `revoked` deny flow event)
    by_client = any(d["reason"] == "resource_removed" for d in s.get("denials", []))
    by_connector = False
    for _ in range(int(40 * SCALE)):
        conn = db()
        by_connector = conn.execute(
            "SELECT count(*) FROM flow_events WHERE resource_id = ? AND decision = 'deny'"
            " AND reason = 'revoked'", (RES_WEB,)).fetchone()[0] > 0
        conn.close()
        if by_client or by_connector:
            break
        time.sleep(0.05)
    check("resource removed: the live download is cut (8 MiB at 256 KiB/s had 30 s to go)",
          slow_rc not in (None, 0) and (by_client or by_connector),
          f"curl rc={slow_rc} {s.get('denials')} connector revoked={by_connector}")
    rc, body, err = curl(f"http://{lb}:{WEB_PORT}/index.html")
    check("loopback: removed resource no longer reachable", rc != 0, f"{rc}")
    down(daemon, "loopback")

    # ---- in the background (no --foreground): up returns once the daemon answers ----
    rc, out, err = sp("up", "--mode", "proxy", "--socks", f"127.0.0.1:{SOCKS_PORT}",
                      "--http-proxy", "")
    check("up (background): returns once the daemon answers", rc == 0 and out.startswith("up"),
          f"{rc} {out} {err}")
    rc, out, err = sp("status")
    check("status (text): daemon up, mode, listener", rc == 0 and "daemon: up" in out and
          "mode: proxy" in out and f"socks5 127.0.0.1:{SOCKS_PORT}" in out, out + err)
    rc, out, err = sp("up", "--foreground", "--mode", "proxy", "--socks", "", "--http-proxy", "")
    check("a second daemon is refused", rc == 1 and "already up" in err, f"{rc} {err}")
    rc, out, err = sp("down")
    time.sleep(0.5)
    bg_log = open(os.path.join(CSTATE, "daemon.log")).read()
    check("down (background daemon); its log is clean", rc == 0 and "sallyport stopping" in bg_log
          and "Sanitizer" not in bg_log, f"{rc} {err} {bg_log[-1500:]}")
    rc, out, err = sp("down")
    check("down when not running: exit 3", rc == 3, f"{rc} {err}")

    # ---- logout ----
    sid = session["session_id"]
    rc, out, err = sp("logout")
    conn = db()
    revoked = conn.execute("SELECT revoked_at FROM sessions WHERE id = ?", (sid,)).fetchone()
    conn.close()
    check("logout: session revoked at the controller and forgotten locally",
          rc == 0 and revoked is not None and revoked[0] is not None and
          not os.path.exists(os.path.join(CSTATE, "session.json")), f"{rc} {out} {err} {revoked}")
    rc, out, err = sp("status", "--json")
    check("status after logout: signed out", json.loads(out).get("signed_in") is False, out)
finally:
    # SIGTERM first: a SIGKILLed nginx master leaves its worker processes behind.
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=5)
        except Exception:
            p.kill()
            try:
                p.wait(timeout=5)
            except Exception:
                pass
    if check.failed == 0:
        shutil.rmtree(WORK, ignore_errors=True)
    else:
        print(f"logs kept in {WORK}", flush=True)

print(check.summary("client_e2e"), flush=True)
sys.exit(check.exit_code())
