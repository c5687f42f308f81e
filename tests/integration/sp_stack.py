"""A Sallyport stack on 127.0.0.1 for tests and benchmarks (python3 standard library only).

Brings up the real controller (its own sqlite state), one network with a user, group,
approved device and session, the real connector enrolled with a one-time token, and
optionally nginx. Used by tests/integration/connector_udp.py and bench/dataplane.py
(connector_e2e.py keeps its own copy of the same steps; this module follows it).

    stack = Stack(controller, connector, tool, work_dir)
    stack.start_controller(); res = stack.add_resource("web", "127.0.0.1", tcp=[port])
    stack.start_connector(); stack.client_args(res, "127.0.0.1:80")  # sp_test_client argv
    ...
    stack.close()          # kills every process it started

Every part can run behind a command prefix, e.g. `ip netns exec NS` (tests/lib/netlab.py
uses it to place the test IdP and controller in one namespace, the connector in another and
the client in a third): `Stack(..., prefix=[...])` sets the default, and start_idp,
start_controller, start_connector and start_client take their own `prefix=`. With a prefix,
readiness is probed from inside it (curl under the prefix), never from here.
"""
import json
import os
import socket
import sqlite3
import subprocess
import time
import urllib.request


_handed_out = set()


def free_port(kind=socket.SOCK_STREAM):
    """A port on 127.0.0.1 free now and never handed out before by this process."""
    while True:
        s = socket.socket(socket.AF_INET, kind)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def new_id():
    return os.urandom(16).hex()


def wait_http(url, limit=20.0, prefix=None):
    """True once url answers; with a prefix the probe (curl) runs under it."""
    end = time.time() + limit
    while time.time() < end:
        if prefix:
            r = subprocess.run([*prefix, "curl", "-s", "-o", "/dev/null", "--noproxy", "*",
                                "--max-time", "1", url], capture_output=True)
            if r.returncode == 0:
                return True
        else:
            try:
                urllib.request.urlopen(url, timeout=1)
                return True
            except OSError:
                pass
        time.sleep(0.05)
    return False


class Stack:
    def __init__(self, ctl, conn, tool, work, sanitized=False, prefix=None):
        self.ctl, self.conn, self.tool, self.work = ctl, conn, tool, work
        self.prefix = list(prefix or [])
        self.scale = 3 if sanitized else 1
        self.state = os.path.join(work, "ctl")
        self.db_path = os.path.join(self.state, "controller.db")
        self.procs = []
        self.ctl_port, self.direct_port, self.metrics_port, self.dns_port, self.relay_port = (
            free_port() for _ in range(5))
        self.url = f"http://127.0.0.1:{self.ctl_port}"
        self.connector = None

    def db(self):
        c = sqlite3.connect(self.db_path, timeout=10, isolation_level=None)
        c.execute("PRAGMA foreign_keys = ON")
        return c

    def _pre(self, prefix):
        return list(self.prefix if prefix is None else prefix)

    def spawn(self, args, log_name, prefix=None, **kw):
        log = open(os.path.join(self.work, log_name), "w")
        kw.setdefault("stdout", log)
        kw.setdefault("stderr", subprocess.STDOUT if kw["stdout"] is log else log)
        p = subprocess.Popen(self._pre(prefix) + list(args), **kw)
        self.procs.append(p)
        return p

    def start_nginx(self, www, port):
        """nginx serving www on 127.0.0.1:port (keep-alive on, no access log)."""
        nginx = "/usr/sbin/nginx"
        tmp = os.path.join(self.work, "nginx-tmp")
        os.makedirs(tmp, exist_ok=True)
        user_line = "user root root;" if os.geteuid() == 0 else ""
        conf = os.path.join(self.work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""{user_line}
daemon off; worker_processes 1; pid {self.work}/nginx.pid; error_log {self.work}/nginx-error.log;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
http {{
  access_log off; keepalive_requests 1000000;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi;
  uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  server {{ listen 127.0.0.1:{port} backlog=4096; root {www}; }}
}}
""")
        p = self.spawn([nginx, "-c", conf, "-e", os.path.join(self.work, "nginx-error.log")],
                       "nginx.log")
        if not wait_http(f"http://127.0.0.1:{port}/"):
            raise RuntimeError("nginx did not start")
        return p

    def start_idp(self, oidc_dir, config, prefix=None, limit=20.0):
        """The test OpenID provider (tests/oidc/provider.mjs) with config (a dict) on a free
        loopback port; returns its issuer URL."""
        cfg_path = os.path.join(self.work, "provider.json")
        with open(cfg_path, "w") as f:
            json.dump(config, f)
        out_path = os.path.join(self.work, "provider.out")
        self.spawn(["node", os.path.join(oidc_dir, "provider.mjs"), "--config", cfg_path,
                    "--port", "0", "--quiet"], "provider.err", prefix=prefix,
                   stdout=open(out_path, "w"), cwd=oidc_dir)
        end = time.time() + limit
        while time.time() < end:
            with open(out_path) as f:
                line = f.readline()
            if line.endswith("\n"):
                return json.loads(line)["issuer"]
            time.sleep(0.05)
        raise RuntimeError("test IdP did not start: " +
                           open(os.path.join(self.work, "provider.err")).read()[-2000:])

    def start_controller(self, seed=True, prefix=None, listen=None, public_url=None,
                         extra_args=(), env=None):
        """Migrates; with seed, adds the network/user/group/device/session rows; serves on
        listen (default 127.0.0.1:<free port>) with public_url (default http://listen)."""
        subprocess.run([self.ctl, "migrate", "--state-dir", self.state], check=True,
                       capture_output=True)
        if listen is not None:
            self.url = public_url or f"http://{listen}"
        listen = listen or f"127.0.0.1:{self.ctl_port}"
        if seed:
            self._seed()
        if "--relay-listen" not in extra_args:  # its own port: parallel tests never collide
            extra_args = ("--relay-listen", f"127.0.0.1:{self.relay_port}", *extra_args)
        self.ctl_proc = self.spawn([self.ctl, "serve", "--state-dir", self.state,
                                    "--http-listen", listen, "--public-url", self.url,
                                    *extra_args], "controller.log", prefix=prefix, env=env)
        if not wait_http(self.url + "/healthz", prefix=self._pre(prefix)):
            raise RuntimeError("controller did not start: " +
                               open(os.path.join(self.work, "controller.log")).read()[-2000:])

    def _seed(self):
        now = int(time.time())
        self.net, self.user, self.group, self.device, self.session = (
            new_id() for _ in range(5))
        self.device_key = os.path.join(self.work, "device.key")
        dev = json.loads(subprocess.run([self.tool, "keygen", self.device_key], check=True,
                                        capture_output=True).stdout)
        c = self.db()
        c.execute("INSERT INTO remote_networks (id, name, created_at, updated_at)"
                  " VALUES (?,?,?,?)", (self.net, "lab", now, now))
        c.execute("INSERT INTO users (id, issuer, subject, email, created_at, updated_at)"
                  " VALUES (?,?,?,?,?,?)",
                  (self.user, "https://idp.test", "alice", "alice@test", now, now))
        c.execute("INSERT INTO groups (id, name, created_at, updated_at) VALUES (?,?,?,?)",
                  (self.group, "eng", now, now))
        c.execute("INSERT INTO memberships (user_id, group_id, created_at) VALUES (?,?,?)",
                  (self.user, self.group, now))
        c.execute("INSERT INTO devices (id, user_id, public_key_thumbprint, public_key_pem,"
                  " state, first_seen_at, last_seen_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
                  (self.device, self.user, dev["jkt"], dev["public_key_pem"], "approved", now,
                   now, now))
        c.execute("INSERT INTO sessions (id, user_id, device_id, auth_method, auth_time,"
                  " created_at, last_used_at, expires_at) VALUES (?,?,?,?,?,?,?,?)",
                  (self.session, self.user, self.device, "oidc", now, now, now, now + 86400))
        c.close()

    def add_resource(self, name, address, tcp=None, udp=None, policy=True):
        """A resource with tcp/udp port lists (strings like "53" or "all"); returns its id."""
        now = int(time.time())
        rid = new_id()
        def ports(p):
            return None if p is None else ('"all"' if p == "all" else
                                           json.dumps([str(x) for x in p]))
        c = self.db()
        c.execute("INSERT INTO resources (id, network_id, name, address, tcp_ports, udp_ports,"
                  " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
                  (rid, self.net, name, address, ports(tcp) or '"none"', ports(udp) or '"none"',
                   now, now))
        if policy:
            c.execute("INSERT INTO policies (id, group_id, resource_id, created_at, updated_at)"
                      " VALUES (?,?,?,?,?)", (new_id(), self.group, rid, now, now))
        c.close()
        return rid

    def connector_health(self, prefix=None):
        env = dict(os.environ, SALLYPORT_METRICS_ADDR=f"127.0.0.1:{self.metrics_port}")
        return subprocess.run(self._pre(prefix) + [self.conn, "health"], env=env,
                              capture_output=True).returncode

    def start_connector(self, extra_env=None, prefix=None, token=None, direct=True):
        """Enrolls (one-time token: token, else one made for network "lab" with the
        controller's CLI) and waits until healthy; returns the Popen. With direct=False it
        has no direct listener: relayed tunnels only."""
        if token is None:
            token = subprocess.run([self.ctl, "connector-token", "create", "--network", "lab",
                                    "--state-dir", self.state], check=True,
                                   capture_output=True).stdout.decode().strip()
        env = {k: v for k, v in os.environ.items() if not k.startswith("SALLYPORT_")}
        env.update({"SALLYPORT_URL": self.url,
                    "SALLYPORT_STATE_DIR": os.path.join(self.work, "conn-state"),
                    "SALLYPORT_DIRECT_LISTEN": f"127.0.0.1:{self.direct_port}",
                    "SALLYPORT_METRICS_ADDR": f"127.0.0.1:{self.metrics_port}",
                    "SALLYPORT_NAME": "c1", "SALLYPORT_LOG_FORMAT": "json",
                    "SALLYPORT_LOG_LEVEL": "warn",
                    "SALLYPORT_DRAIN_TIMEOUT": "5s",
                    "SALLYPORT_ALLOW_ROOT": "true",  # CI containers run tests as root
                    "SALLYPORT_DNS": f"127.0.0.1:{self.dns_port}",
                    "SALLYPORT_ENROLL_TOKEN": token})
        if not direct:
            del env["SALLYPORT_DIRECT_LISTEN"]
        if extra_env:
            env.update(extra_env)
        self.connector_log = os.path.join(self.work, "connector.log")
        for attempt in range(3):
            self.connector = self.spawn([self.conn], "connector.log", env=env, prefix=prefix)
            for _ in range(200 * self.scale):
                if self.connector_health(prefix) == 0:
                    return self.connector
                if self.connector.poll() is not None:
                    break
                time.sleep(0.05)
            # a port picked free was taken meanwhile by a test running in parallel: new
            # ports (the enrolled identity stays in the state dir) and once more
            log = open(self.connector_log).read()
            if self.connector.poll() is None or "Address already in use" not in log:
                break
            ours = {"SALLYPORT_DIRECT_LISTEN": "direct_port", "SALLYPORT_METRICS_ADDR":
                    "metrics_port"}
            for key, attr in ours.items():
                if key in env and env[key] == f"127.0.0.1:{getattr(self, attr)}":
                    setattr(self, attr, free_port())
                    env[key] = f"127.0.0.1:{getattr(self, attr)}"
        raise RuntimeError("connector not healthy: " + open(self.connector_log).read()[-2000:])

    def start_client(self, sp, state_dir, up_args, prefix=None, log_name="sallyport.log"):
        """`sallyport up --foreground UP_ARGS` with SALLYPORT_STATE_DIR=state_dir (already
        signed in); returns the Popen (readiness: poll `sallyport status --json`)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SALLYPORT_")}
        env["SALLYPORT_STATE_DIR"] = state_dir
        return self.spawn([sp, "up", "--foreground", *up_args], log_name, prefix=prefix,
                          env=env)

    def client_args(self, mode, resource, target):
        """sp_test_client argv for `connect` or `forward` (add --listen for forward)."""
        return [self.tool, mode, "--url", self.url, "--db", self.db_path, "--user", self.user,
                "--session", self.session, "--device", self.device, "--device-key",
                self.device_key, "--resource", resource, "--target", target,
                "--network", self.net]

    def flow_events(self, where, args=()):
        c = self.db()
        rows = c.execute("SELECT decision, reason, protocol, destination_host,"
                         " destination_port, bytes_up, bytes_down, flow_id FROM flow_events"
                         " WHERE " + where, args).fetchall()
        c.close()
        return rows

    def wait_flow_event(self, where, args=(), limit=10.0):
        end = time.time() + limit
        while time.time() < end:
            rows = self.flow_events(where, args)
            if rows:
                return rows
            time.sleep(0.1)
        return []

    def close(self):
        # SIGTERM first: a SIGKILLed nginx master leaves its worker behind
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
