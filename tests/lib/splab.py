"""Sallyport running in the namespace lab of netlab.py (python3 standard library only).

Used by scripts/demo and tests/e2e/netns_client.py. `SallyportLab.start()` brings up, in
order: the lab's namespaces; in `vpc` dnsmasq (10.20.0.53) naming app.corp.test,
finance.corp.test and db.corp.test, nginx on app (ports 80 and 8080) and finance (80), and
optionally PostgreSQL on db; in `ctl` a public resolver (dnsmasq on 172.31.1.1, naming
www.example.internal only), the test OpenID provider (tests/oidc/provider.mjs, accounts
eng-user in group engineering and fin-user in group finance) and the controller (sqlite in
a fresh state directory). Then, as an admin would, through the admin API with a key made by
`sallyport-controller admin-key create`: the remote network `corp`, its resources, a
connector token; the connector in `vpc`. Then both people sign in from `client` with
`sallyport login --no-browser` (the browser's part driven by tests/oidc/drive-login.mjs in
`ctl`, the IdP's loopback), which mirrors their IdP groups, and the policies
engineering -> app, db and finance -> finance are added. `up(mode)` starts the daemon
(proxy, loopback or tun).

With `browser=True` (tests/e2e/browser_login.py) the IdP shows its consent page, eng-user
is left signed out for a real browser to sign in (`login_begin`/`login_end`), and the IdP's
loopback port in ctl is forwarded to the same port on client's loopback (tests/lib/tcpfwd.py,
two hops through 172.31.1.1): the controller accepts a plain-HTTP issuer only on loopback,
and the browser in client must reach that same issuer URL.

The controller (sp_stack.Stack) and the lab (netlab.Lab) each stop what they started.
"""
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))
import netlab  # noqa: E402
import sp_stack  # noqa: E402

OIDC = os.path.join(SRC, "tests", "oidc")
CTL_PORT = 8080
DIRECT = f"{netlab.VPC_ADDR}:7443"
URL = f"http://{netlab.CTL_CLIENT_ADDR}:{CTL_PORT}"
UPSTREAM = netlab.CTL_CLIENT_ADDR  # the client's "public" resolver, dnsmasq in ctl
PUBLIC_NAME, PUBLIC_ADDR = "www.example.internal", "192.0.2.80"
NAMES = {"app.corp.test": netlab.INTERNAL["app"], "finance.corp.test": netlab.INTERNAL["finance"],
         "db.corp.test": netlab.INTERNAL["db"]}
DB_PASSWORD = "lab-db-password"
STUB = "127.83.80.53"  # the DNS stub's address under system DNS (docs/client-dns.md)
IDP_HOP_PORT = 9443  # the IdP forward's middle hop on 172.31.1.1 (browser=True)
ACCOUNTS = [  # the test IdP's people (tests/oidc/provider.mjs reads them from its config)
    {"sub": "eng-user", "email": "eng-user@example.com", "email_verified": True,
     "name": "Eng User", "groups": ["engineering"], "password": "eng-pass"},
    {"sub": "fin-user", "email": "fin-user@example.com", "email_verified": True,
     "name": "Fin User", "groups": ["finance"], "password": "fin-pass"},
]


class SallyportLab:
    def __init__(self, bin_dir=None, ctl=None, conn=None, sp=None, keep=False, postgres=True,
                 log=print, browser=False):
        bin_dir = bin_dir or ""
        self.ctl_bin = ctl or os.path.join(bin_dir, "controller", "sallyport-controller")
        self.conn_bin = conn or os.path.join(bin_dir, "connector", "sallyport-connector")
        self.sp_bin = sp or os.path.join(bin_dir, "client", "sallyport")
        self.lab = netlab.Lab(keep=keep)
        self.work = self.lab.work
        self.stack = sp_stack.Stack(self.ctl_bin, self.conn_bin, None, self.work)
        self.want_postgres = postgres
        self.browser = browser
        self.issuer = None
        self.postgres = None
        self.log = log
        self.daemon = None
        self.ids = {}
        self.page = ("<html><body><h1>app.corp.test</h1><p>An internal page, served by nginx on"
                     f" {netlab.INTERNAL['app']} inside the private network.</p>"
                     f"<!-- {os.urandom(6).hex()} --></body></html>\n").encode()
        self.state = {u["sub"]: os.path.join(self.work, f"client-{u['sub']}") for u in ACCOUNTS}

    # ---- bring-up ----

    def start(self):
        lab, t0 = self.lab, time.time()
        lab.up()
        self.log(f"lab: namespaces {lab.ns['ctl']} {lab.ns['vpc']} {lab.ns['client']}")
        lab.start_dnsmasq("vpc", netlab.INTERNAL["dns"], NAMES, "dnsmasq-vpc.log")
        lab.start_nginx("vpc", [f"{netlab.INTERNAL['app']}:80", f"{netlab.INTERNAL['app']}:8080",
                                f"{netlab.INTERNAL['finance']}:80"], self.page)
        if self.want_postgres:
            self.postgres = lab.start_postgres("vpc", netlab.INTERNAL["db"], DB_PASSWORD)
        lab.start_dnsmasq("ctl", UPSTREAM, {PUBLIC_NAME: PUBLIC_ADDR}, "dnsmasq-ctl.log")
        self.log(f"vpc: dnsmasq, nginx{', PostgreSQL' if self.postgres else ''} on 10.20.0.x;"
                 f" ctl: public resolver ({time.time() - t0:.1f} s)")
        cfg = json.load(open(os.path.join(OIDC, "sample-config.json")))
        for c in cfg["clients"]:
            if c["client_id"] == "sallyport-controller":
                c["redirect_uris"] = [URL + "/auth/callback"]
                c["post_logout_redirect_uris"] = [URL + "/"]
                if self.browser:
                    c.pop("skip_consent", None)  # the browser goes through the consent page
                else:
                    c["skip_consent"] = True
        cfg["accounts"] = ACCOUNTS
        issuer = self.stack.start_idp(OIDC, cfg, prefix=lab.prefix("ctl"))
        self.issuer = issuer
        if self.browser:
            self.forward_idp(issuer)
        env = dict(os.environ, SALLYPORT_OIDC_CLIENT_SECRET="sallyport-controller-test-secret")
        self.stack.start_controller(
            seed=False, prefix=lab.prefix("ctl"), listen=f"0.0.0.0:{CTL_PORT}", public_url=URL,
            extra_args=["--plain-http", "--relay-listen", "127.0.0.1:8443",
                        "--oidc-issuer", issuer, "--oidc-client-id", "sallyport-controller",
                        "--oidc-groups-claim", "groups", "--admin-emails",
                        "eng-user@example.com"], env=env)
        self.log(f"ctl: test IdP at {issuer}, controller at {URL} ({time.time() - t0:.1f} s)")
        r = subprocess.run([self.ctl_bin, "admin-key", "create", "--name", "lab-admin",
                            "--state-dir", self.stack.state], capture_output=True, text=True,
                           check=True)
        self.admin_key = r.stdout.strip().split()[-1]
        hdr = os.path.join(self.work, "admin-auth.txt")
        fd = os.open(hdr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, f"Authorization: Bearer {self.admin_key}\n".encode())
        os.close(fd)
        self.admin_header = hdr
        self.seed_resources()
        token = self.api("POST", f"/api/v1/remote-networks/{self.ids['net']}/connector-tokens",
                         {})["token"]
        self.stack.start_connector(prefix=lab.prefix("vpc"), token=token, extra_env={
            "SALLYPORT_URL": URL, "SALLYPORT_DIRECT_LISTEN": DIRECT,
            "SALLYPORT_DNS": f"{netlab.INTERNAL['dns']}:53", "SALLYPORT_NAME": "vpc-connector",
            "SALLYPORT_LOG_LEVEL": "info"})
        self.log(f"vpc: connector enrolled, direct listener {DIRECT} ({time.time() - t0:.1f} s)")
        for acct in ACCOUNTS:
            if not (self.browser and acct["sub"] == "eng-user"):
                self.login(acct["sub"], acct["password"])
        self.seed_policies()
        self.log(f"admin API: policies engineering -> app.corp.test, db.corp.test;"
                 f" finance -> finance.corp.test ({time.time() - t0:.1f} s)")
        return self

    def api(self, method, path, body=None, expect=(200, 201)):
        """The admin API from inside ctl (curl; the key from a 0600 header file)."""
        args = ["curl", "-sS", "--noproxy", "*", "-X", method, "-H", f"@{self.admin_header}",
                "-w", "\n%{http_code}"]
        if body is not None:
            args += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(body)]
        r = self.lab.run("ctl", args + [f"http://127.0.0.1:{CTL_PORT}{path}"], timeout=30)
        out = r.stdout.decode()
        text, _, code = out.rpartition("\n")
        if r.returncode != 0 or int(code or 0) not in expect:
            raise netlab.LabError(f"admin API {method} {path}: {code} {text} {r.stderr}")
        return json.loads(text) if text.strip() else {}

    def seed_resources(self):
        self.ids["net"] = self.api("POST", "/api/v1/remote-networks", {
            "name": "corp", "description": "the lab's private network"})["id"]
        for key, name, address, tcp in (("app", "App", "app.corp.test", ["80"]),
                                        ("finance", "Finance", "finance.corp.test", ["80"]),
                                        ("db", "Database", "db.corp.test", ["5432"])):
            self.ids[key] = self.api("POST", "/api/v1/resources", {
                "name": name, "network_id": self.ids["net"], "address": address, "tcp": tcp,
                "udp": "none", "icmp": False})["id"]

    def seed_policies(self, only=None):
        """The policies of the groups sign-in has mirrored so far (or only those named)."""
        groups = {g["name"]: g["id"] for g in self.api("GET", "/api/v1/groups")["items"]}
        for group, res in (("engineering", "app"), ("engineering", "db"), ("finance", "finance")):
            if group in groups and (only is None or group in only):
                self.api("POST", "/api/v1/policies", {"group_id": groups[group],
                                                      "resource_id": self.ids[res]})

    def forward_idp(self, issuer):
        """client 127.0.0.1:P -> ctl 172.31.1.1:IDP_HOP_PORT -> ctl 127.0.0.1:P (P the IdP's
        port), so the issuer URL works unchanged in client's browser."""
        port = int(issuer.rsplit(":", 1)[1].split("/")[0])
        fwd = os.path.join(HERE, "tcpfwd.py")
        self.lab.spawn("ctl", [sys.executable, fwd, f"{netlab.CTL_CLIENT_ADDR}:{IDP_HOP_PORT}",
                               f"127.0.0.1:{port}"], "idp-forward-ctl.log")
        self.lab.spawn("client", [sys.executable, fwd, f"127.0.0.1:{port}",
                                  f"{netlab.CTL_CLIENT_ADDR}:{IDP_HOP_PORT}"],
                       "idp-forward-client.log")
        if not (self.lab.wait_tcp("ctl", netlab.CTL_CLIENT_ADDR, IDP_HOP_PORT) and
                self.lab.wait_tcp("client", "127.0.0.1", port)):
            raise netlab.LabError("IdP forward did not start: " +
                                  self.lab.log("idp-forward-ctl.log") +
                                  self.lab.log("idp-forward-client.log"))

    def sp_env(self, user):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SALLYPORT_")}
        env["SALLYPORT_STATE_DIR"] = self.state[user]
        return env

    def sp(self, user, *args, timeout=30):
        """`sallyport ARGS` in client as user: (rc, stdout, stderr)."""
        r = self.lab.run("client", [self.sp_bin, *args], env=self.sp_env(user), timeout=timeout)
        return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")

    def login_begin(self, user):
        """Starts `sallyport login --no-browser` in client: (process, sign-in URL)."""
        p = self.lab.track(f"login-{user}", subprocess.Popen(
            self.lab.prefix("client") + [self.sp_bin, "login", "--no-browser", "--controller",
                                         URL, "--device-name", f"{user}-laptop"],
            env=self.sp_env(user), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        start = None
        for _ in range(5):
            line = p.stdout.readline()
            if line.startswith(URL + "/auth/login?"):
                start = line.strip()
                break
        if start is None:
            p.kill()
            raise netlab.LabError(f"login {user}: no sign-in URL printed: {p.stderr.read()}")
        return p, start

    def login_end(self, user, p, limit=30):
        """Waits for the login started by login_begin: (exit code, stdout, stderr)."""
        try:
            out, err = p.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        return p.returncode, out, err

    def login(self, user, password):
        """`sallyport login --no-browser` in client; the browser's part driven in ctl."""
        p, start = self.login_begin(user)
        r = self.lab.run("ctl", ["node", os.path.join(OIDC, "drive-login.mjs"), "--rp-start",
                                 start, "--jar", os.path.join(self.work, f"jar-{user}"),
                                 "--username", user, "--password", password, "--follow"],
                         timeout=60, cwd=OIDC)
        try:
            loc = json.loads(r.stdout.decode().strip().splitlines()[-1]).get("location", "")
        except (ValueError, IndexError):
            loc = ""
        if not loc.startswith("http://127.0.0.1:"):
            p.kill()
            raise netlab.LabError(f"login {user}: IdP sign-in failed: {r.stdout} {r.stderr}")
        # the browser hands the code to the client's loopback listener: inside client
        self.lab.curl("client", "-o", "/dev/null", loc)
        rc, out, err = self.login_end(user, p)
        if rc != 0:
            raise netlab.LabError(f"login {user}: {rc} {out} {err}")
        self.log(f"client: {out.strip()}")
        return out

    # ---- the daemon ----

    def up(self, mode, user="eng-user"):
        """Starts `sallyport up --mode MODE` in client and waits for its resources. The
        client's resolv.conf: the DNS stub (127.0.0.1) in loopback mode, else the public
        resolver in ctl. Tun mode runs with system DNS as the daemon sets it up by default
        (stub on 127.83.80.53:53, upstream the public resolver read from resolv.conf, which
        the daemon rewrites until `down`)."""
        if mode == "tun":
            self.lab.set_resolver("client", UPSTREAM)
            args = ["--mode", "tun"]
        elif mode == "loopback":
            self.lab.set_resolver("client", "127.0.0.1")
            args = ["--mode", "loopback", "--dns", "127.0.0.1:53", "--dns-upstream",
                    f"{UPSTREAM}:53"]
        else:
            self.lab.set_resolver("client", UPSTREAM)
            args = ["--mode", "proxy", "--socks", "127.0.0.1:1080", "--http-proxy",
                    "127.0.0.1:3128"]
        self.daemon = self.stack.start_client(self.sp_bin, self.state[user], args,
                                              prefix=self.lab.prefix("client"),
                                              log_name=f"sallyport-{mode}.log")
        want = 2 if user == "eng-user" else 1
        s = self.wait_status(user, lambda s: s.get("state") == "up" and
                             s.get("resources", 0) >= want and
                             (mode != "loopback" or len(s.get("listeners", [])) >= want))
        if s.get("state") != "up":
            raise netlab.LabError(f"sallyport up --mode {mode}: {s} "
                                  f"{self.lab.log('sallyport-' + mode + '.log')[-1500:]}")
        return s

    def down(self, user="eng-user"):
        rc, out, err = self.sp(user, "down")
        prc = None
        if self.daemon is not None:
            try:
                prc = self.daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                prc = None
        self.daemon = None
        return rc, prc

    def status(self, user="eng-user"):
        rc, out, err = self.sp(user, "status", "--json")
        try:
            return json.loads(out)
        except ValueError:
            return {"error": out + err}

    def wait_status(self, user, pred, limit=20.0):
        end = time.time() + limit
        s = {}
        while time.time() < end:
            s = self.status(user)
            if pred(s):
                return s
            time.sleep(0.1)
        return s

    def close(self):
        try:
            if not self.lab.keep:
                self.stack.close()
        finally:
            self.lab.close()

    # ---- for the scenario suite (tests/e2e/scenarios.py) ----

    def add_names(self, names):
        """Adds {name: address} to dnsmasq in vpc (its hosts file, re-read on SIGHUP) and
        waits until the last one resolves there."""
        hosts = os.path.join(self.work, "dnsmasq-vpc.log.hosts")
        with open(hosts, "a") as f:
            for name, addr in names.items():
                f.write(f"{addr} {name}\n")
        with open(os.path.join(self.work, "dnsmasq-vpc.log.pid")) as f:
            os.kill(int(f.read().strip()), 1)  # SIGHUP: re-read the hosts files
        last = list(names)[-1]
        if not self.lab.wait_dns("vpc", netlab.INTERNAL["dns"], last):
            raise netlab.LabError(f"dnsmasq in vpc does not name {last}")

    def add_file(self, name, size):
        """A file of size random bytes that nginx in vpc serves as /name; its SHA-256."""
        import hashlib
        data = os.urandom(size)
        with open(os.path.join(self.work, "www", name), "wb") as f:
            f.write(data)
        return hashlib.sha256(data).hexdigest()

    def user_ids(self):
        """{email: user id} from the admin API."""
        return {u["email"]: u["id"] for u in self.api("GET", "/api/v1/users?limit=1000")["items"]}

    def events(self, kind, **filters):
        """Every audit or flow event (kind "audit-events" / "flow-events") matching the
        listing's query filters, oldest first (all pages)."""
        out, cursor = [], None
        while True:
            q = "&".join([f"{k}={v}" for k, v in filters.items()] + ["limit=1000"] +
                         ([f"cursor={cursor}"] if cursor else []))
            page = self.api("GET", f"/api/v1/{kind}?{q}")
            out += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return out

    def up_proxy(self, user, socks, http, log_name):
        """A second daemon beside up()'s: `sallyport up --mode proxy` for user on its own
        ports (the state directories differ, so do the control sockets); waits until up."""
        p = self.stack.start_client(self.sp_bin, self.state[user], [
            "--mode", "proxy", "--socks", socks, "--http-proxy", http],
            prefix=self.lab.prefix("client"), log_name=log_name)
        s = self.wait_status(user, lambda s: s.get("state") == "up" and
                             s.get("resources", 0) >= 1)
        if s.get("state") != "up":
            raise netlab.LabError(f"{user} up: {s} {self.lab.log(log_name)[-1500:]}")
        return p

    def stop_controller(self):
        """SIGTERM to the controller in ctl; waits for it to exit."""
        p = self.stack.ctl_proc
        p.terminate()
        p.wait(timeout=20)

    def restart_controller(self):
        """The controller again, with the same arguments and state directory."""
        old = self.stack.ctl_proc
        env = dict(os.environ, SALLYPORT_OIDC_CLIENT_SECRET="sallyport-controller-test-secret")
        log = open(os.path.join(self.work, "controller.log"), "a")
        p = subprocess.Popen(list(old.args), env=env, stdout=log, stderr=subprocess.STDOUT)
        self.stack.procs.append(p)
        self.stack.ctl_proc = p
        if not sp_stack.wait_http(URL + "/healthz", prefix=self.lab.prefix("client")):
            raise netlab.LabError("controller did not restart: " +
                                  self.lab.log("controller.log")[-1500:])
        return p

    def start_connector2(self, direct=f"{netlab.VPC_ADDR}:7444", metrics="127.0.0.1:9464"):
        """A second connector of the network `corp` in vpc (its own state directory, direct
        listener and metrics address); waits until healthy; returns the Popen."""
        token = self.api("POST", f"/api/v1/remote-networks/{self.ids['net']}/connector-tokens",
                         {})["token"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SALLYPORT_")}
        env.update({"SALLYPORT_URL": URL, "SALLYPORT_STATE_DIR": os.path.join(self.work,
                                                                             "conn2-state"),
                    "SALLYPORT_DIRECT_LISTEN": direct, "SALLYPORT_METRICS_ADDR": metrics,
                    "SALLYPORT_NAME": "vpc-connector-2", "SALLYPORT_LOG_FORMAT": "json",
                    "SALLYPORT_LOG_LEVEL": "info", "SALLYPORT_DRAIN_TIMEOUT": "5s",
                    "SALLYPORT_ALLOW_ROOT": "true",
                    "SALLYPORT_DNS": f"{netlab.INTERNAL['dns']}:53",
                    "SALLYPORT_ENROLL_TOKEN": token})
        p = self.stack.spawn([self.conn_bin], "connector2.log", prefix=self.lab.prefix("vpc"),
                             env=env)
        henv = dict(os.environ, SALLYPORT_METRICS_ADDR=metrics)
        for _ in range(400):
            if self.lab.run("vpc", [self.conn_bin, "health"], env=henv).returncode == 0:
                return p
            if p.poll() is not None:
                break
            time.sleep(0.05)
        raise netlab.LabError("second connector not healthy: " +
                              self.lab.log("connector2.log")[-1500:])

    def restart_controller_relay(self, relay=f"{netlab.CTL_CLIENT_ADDR}:8443"):
        """Stops the controller and starts it again (same state) with its in-process relay
        listening on relay (an address of ctl that client and vpc reach) and advertised
        there (`--relay-public`). Opt-in: start() keeps the relay on ctl's loopback.
        Connectors enrolled before keep the relay list they fetched until their token's
        renewal; those started afterwards get this one."""
        self.stop_controller()
        args = list(self.stack.ctl_proc.args)
        i = args.index("--relay-listen")
        args[i + 1] = relay
        args += ["--relay-public", relay]
        env = dict(os.environ, SALLYPORT_OIDC_CLIENT_SECRET="sallyport-controller-test-secret")
        log = open(os.path.join(self.work, "controller.log"), "a")
        p = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.stack.procs.append(p)
        self.stack.ctl_proc = p
        if not sp_stack.wait_http(URL + "/healthz", prefix=self.lab.prefix("client")):
            raise netlab.LabError("controller did not restart with the relay: " +
                                  self.lab.log("controller.log")[-1500:])
        return p

    def controller_metrics(self):
        """The controller's /metrics (from inside ctl) as {"name{labels}": value}."""
        r = self.lab.run("ctl", ["curl", "-sS", "--noproxy", "*",
                                 f"http://127.0.0.1:{CTL_PORT}/metrics"], timeout=30)
        out = {}
        for line in r.stdout.decode(errors="replace").splitlines():
            if line and not line.startswith("#"):
                key, _, val = line.rpartition(" ")
                try:
                    out[key] = float(val)
                except ValueError:
                    pass
        return out

    def start_connector_in(self, net_id, name, metrics, direct=None):
        """A connector of the remote network net_id in vpc, named name, with its own state
        directory (`<name>-state`), log (`<name>.log`) and metrics address; a direct
        listener only when direct is given (else it is reachable through the relay only).
        Waits until healthy; returns the Popen."""
        token = self.api("POST", f"/api/v1/remote-networks/{net_id}/connector-tokens",
                         {})["token"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SALLYPORT_")}
        env.update({"SALLYPORT_URL": URL, "SALLYPORT_STATE_DIR": os.path.join(
                        self.work, f"{name}-state"),
                    "SALLYPORT_METRICS_ADDR": metrics, "SALLYPORT_NAME": name,
                    "SALLYPORT_LOG_FORMAT": "json", "SALLYPORT_LOG_LEVEL": "info",
                    "SALLYPORT_DRAIN_TIMEOUT": "5s", "SALLYPORT_ALLOW_ROOT": "true",
                    "SALLYPORT_DNS": f"{netlab.INTERNAL['dns']}:53",
                    "SALLYPORT_ENROLL_TOKEN": token})
        if direct:
            env["SALLYPORT_DIRECT_LISTEN"] = direct
        p = self.stack.spawn([self.conn_bin], f"{name}.log", prefix=self.lab.prefix("vpc"),
                             env=env)
        henv = dict(os.environ, SALLYPORT_METRICS_ADDR=metrics)
        for _ in range(400):
            if self.lab.run("vpc", [self.conn_bin, "health"], env=henv).returncode == 0:
                return p
            if p.poll() is not None:
                break
            time.sleep(0.05)
        raise netlab.LabError(f"connector {name} not healthy: " +
                              self.lab.log(f"{name}.log")[-1500:])
