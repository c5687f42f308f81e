"""Shared pieces of the fault tests (tests/faults/*.py; python3 standard library only).

Each test is one ctest: it starts its own controller/connector/nginx through
tests/integration/sp_stack.py, injects one fault, and asserts exact outcomes with
`check`. `Run` owns the work directory and every process and network namespace the test
made; it removes them by id and by name at exit, also on an exception or SIGTERM/SIGINT
(ctest's timeout).
"""
import atexit
import hashlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import sp_stack  # noqa: E402

SANITIZED = os.environ.get("SALLYPORT_SANITIZED", "0") in ("1", "ON", "TRUE", "true")
SCALE = 3 if SANITIZED else 1


class Run:
    def __init__(self, name):
        self.name = name
        self.work = tempfile.mkdtemp(prefix=f"sp-fault-{name}-")
        self.passed = 0
        self.failed = 0
        self.procs = []
        self.netns = []
        self.cleanups = []
        self.closed = False
        atexit.register(self.close)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame):
        print(f"{self.name}: signal {signum}, cleaning up", flush=True)
        self.failed += 1
        self.close()
        os._exit(1)

    def check(self, what, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok: {what}", flush=True)
        else:
            self.failed += 1
            print(f"FAIL: {what} {detail}", flush=True)
        return ok

    def figure(self, text):
        print("figure: " + text, flush=True)

    def spawn(self, args, log_name, **kw):
        log = open(os.path.join(self.work, log_name), "a")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, **kw)
        self.procs.append(p)
        return p

    def close(self):
        if self.closed:
            return
        self.closed = True
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception:
                traceback.print_exc()
        for p in reversed(self.procs):
            if p.poll() is None:
                p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        for ns in self.netns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def finish(self, exc=None):
        if exc is not None:
            traceback.print_exception(exc)
            self.failed += 1
        self.close()
        # a sanitizer report from any daemon (at exit, after close's SIGTERM) fails the test
        for name in sorted(os.listdir(self.work)):
            path = os.path.join(self.work, name)
            if name.endswith(".log") and os.path.isfile(path):
                text = open(path, errors="replace").read()
                if "Sanitizer" in text and ("ERROR:" in text or "WARNING:" in text):
                    self.check(f"no sanitizer report in {name}", False,
                               text[text.find("Sanitizer") - 40:][:600])
        if self.failed == 0:
            shutil.rmtree(self.work, ignore_errors=True)
        else:
            print(f"logs kept in {self.work}", flush=True)
        print(f"{self.name}: {self.passed} passed, {self.failed} failed", flush=True)
        sys.exit(1 if self.failed or self.passed == 0 else 0)


def admin_key(ctl, state):
    r = subprocess.run([ctl, "admin-key", "create", "--name", "faults", "--state-dir", state],
                       check=True, capture_output=True, text=True)
    return r.stdout.strip().split()[-1]


class Api:
    """A keep-alive admin API connection; reconnects after a failure."""

    def __init__(self, port, key, timeout=5.0):
        self.port, self.key, self.timeout = port, key, timeout
        self.conn = None

    def call(self, method, path, body=None):
        """(status, parsed body or text); status None when the connection failed."""
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                       timeout=self.timeout)
            headers = {"Authorization": "Bearer " + self.key}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            self.conn.request(method, path, body=data, headers=headers)
            r = self.conn.getresponse()
            raw = r.read()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw.decode(errors="replace")
            return r.status, parsed
        except (OSError, http.client.HTTPException) as e:
            if self.conn is not None:
                self.conn.close()
            self.conn = None
            return None, str(e)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def http_get(path):
    return f"GET {path} HTTP/1.0\r\nHost: web\r\n\r\n".encode()


def split_http(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.decode(errors="replace"), body


def integrity(db_path):
    import sqlite3
    c = sqlite3.connect(db_path, timeout=10)
    try:
        return c.execute("PRAGMA integrity_check").fetchall()
    finally:
        c.close()


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def proc_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def start_nginx(stack, www, port, listen="127.0.0.1", rate="256k", spawn=None):
    """nginx serving www on listen:port; files under /slow/ are sent at `rate`.
    spawn: an argv prefix (e.g. ["ip", "netns", "exec", NS]) to run it elsewhere."""
    tmp = os.path.join(stack.work, "nginx-tmp")
    os.makedirs(tmp, exist_ok=True)
    user_line = "user root root;" if os.geteuid() == 0 else ""
    conf = os.path.join(stack.work, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""{user_line}
daemon off; worker_processes 1; pid {stack.work}/nginx.pid; error_log {stack.work}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off; keepalive_requests 1000000; client_header_timeout 120s;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi;
  uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  server {{ listen {listen}:{port} backlog=4096; root {www};
           location /slow/ {{ limit_rate {rate}; }} }}
}}
""")
    return stack.spawn((spawn or []) + ["/usr/sbin/nginx", "-c", conf, "-e",
                                        os.path.join(stack.work, "nginx-error.log")],
                       "nginx.log")


def make_www(root, files):
    """files: {relative path: bytes}; returns {"/path": sha256}."""
    sums = {}
    for rel, data in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        sums["/" + rel] = sha256(data)
    return sums


def fetch(port, path, timeout=60.0, host="127.0.0.1"):
    """GET path over a plain TCP connection to host:port (a forward listener);
    returns (body sha256 or None, body length, error text)."""
    import socket
    try:
        s = socket.create_connection((host, port), timeout=timeout)
        s.sendall(http_get(path))
        chunks = []
        while True:
            b = s.recv(1 << 16)
            if not b:
                break
            chunks.append(b)
        s.close()
        head, body = split_http(b"".join(chunks))
        if not head.startswith("HTTP/1.1 200"):
            return None, len(body), "status: " + head[:40]
        return sha256(body), len(body), ""
    except OSError as e:
        return None, 0, str(e)


def wait_until(fn, limit, step=0.1):
    end = time.time() + limit
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(step)
    return fn()


def metrics(port):
    import urllib.request
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def add_network(stack, name):
    """Another remote network; returns its id."""
    nid, now = sp_stack.new_id(), int(time.time())
    c = stack.db()
    c.execute("INSERT INTO remote_networks (id, name, created_at, updated_at) VALUES (?,?,?,?)",
              (nid, name, now, now))
    c.close()
    return nid


def add_resource(stack, net, name, address, port):
    """A TCP resource in network `net` with a policy for the stack's group; returns its id."""
    now, rid = int(time.time()), sp_stack.new_id()
    c = stack.db()
    c.execute("INSERT INTO resources (id, network_id, name, address, tcp_ports, udp_ports,"
              " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
              (rid, net, name, address, json.dumps([str(port)]), '"none"', now, now))
    c.execute("INSERT INTO policies (id, group_id, resource_id, created_at, updated_at)"
              " VALUES (?,?,?,?,?)", (sp_stack.new_id(), stack.group, rid, now, now))
    c.close()
    return rid


class Connector:
    """One more connector for `stack`, enrolled into network `network` (by name)."""

    def __init__(self, stack, name, network, url=None, direct_host="127.0.0.1", prefix=None,
                 extra_env=None):
        self.stack, self.name, self.network = stack, name, network
        self.direct_port, self.metrics_port, self.dns_port = (sp_stack.free_port()
                                                              for _ in range(3))
        self.direct_host = direct_host
        self.url = url or stack.url
        self.prefix = prefix or []
        self.state = os.path.join(stack.work, f"conn-{name}")
        self.log = os.path.join(stack.work, f"connector-{name}.log")
        self.extra_env = extra_env or {}
        self.proc = None
        self.token = subprocess.run(
            [stack.ctl, "connector-token", "create", "--network", network, "--state-dir",
             stack.state], check=True, capture_output=True).stdout.decode().strip()

    def env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SALLYPORT_")}
        env.update({"SALLYPORT_URL": self.url, "SALLYPORT_STATE_DIR": self.state,
                    "SALLYPORT_DIRECT_LISTEN": f"{self.direct_host}:{self.direct_port}",
                    "SALLYPORT_METRICS_ADDR": f"127.0.0.1:{self.metrics_port}",
                    "SALLYPORT_NAME": self.name, "SALLYPORT_LOG_FORMAT": "json",
                    "SALLYPORT_LOG_LEVEL": "warn", "SALLYPORT_DRAIN_TIMEOUT": "5s",
                    "SALLYPORT_DNS": f"127.0.0.1:{self.dns_port}",
                    "SALLYPORT_ALLOW_ROOT": "true",  # tests run as root; connector_multi covers SALLYPORT_USER
                    "SALLYPORT_ENROLL_TOKEN": self.token})
        env.update(self.extra_env)
        return env

    def health(self):
        env = dict(os.environ, SALLYPORT_METRICS_ADDR=f"127.0.0.1:{self.metrics_port}")
        return subprocess.run(self.prefix + [self.stack.conn, "health"], env=env,
                              capture_output=True).returncode

    def start(self, wait=True):
        self.proc = self.stack.spawn(self.prefix + [self.stack.conn],
                                     os.path.basename(self.log), env=self.env())
        if not wait:
            return self.proc
        if not wait_until(lambda: self.health() == 0 or self.proc.poll() is not None,
                          10 * SCALE, 0.05) or self.proc.poll() is not None:
            raise RuntimeError(f"connector {self.name} not healthy: " +
                               open(self.log).read()[-2000:])
        return self.proc


def forward(stack, resource, target, network, log_name, port=None, prefix=None):
    """An sp_test_client forward (the client's loopback mode) on 127.0.0.1:port; waits until
    it listens. Returns (Popen, port)."""
    import socket
    port = port or sp_stack.free_port()
    args = stack.client_args("forward", resource, target) + ["--listen", f"127.0.0.1:{port}"]
    args[args.index("--network") + 1] = network
    p = stack.spawn((prefix or []) + args, log_name)
    def listening():
        try:
            if prefix:
                return subprocess.run(prefix + ["python3", "-c",
                                      f"import socket; socket.create_connection(('127.0.0.1',"
                                      f" {port}), timeout=1).close()"],
                                      capture_output=True).returncode == 0
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    if not wait_until(lambda: listening() or p.poll() is not None, 20 * SCALE, 0.1) or \
            p.poll() is not None:
        raise RuntimeError("forward did not start: " +
                           open(os.path.join(stack.work, log_name)).read()[-1000:])
    return p, port
