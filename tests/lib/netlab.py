"""A lab of network namespaces for Sallyport's end-to-end runs (python3 standard library only).

Three namespaces, named after the run's pid so two runs never collide:

    client  172.31.1.2 ---- 172.31.1.1  ctl  172.31.2.1 ---- 172.31.2.2  vpc
    (the user's tools       (controller, test IdP,            (connector; dnsmasq on
     and sallyport; no       upstream dnsmasq; routes          10.20.0.53 naming *.corp.test;
     route to 10.20/16)      172.31/16, nothing else)          nginx, PostgreSQL on 10.20.0.x)

`ctl` forwards between the two 172.31 links so the client can dial the connector's direct
listener, but no namespace outside `vpc` has a route to 10.20.0.0/16: the internal
addresses live on `lan0` (one end of a veth pair whose both ends stay in `vpc`) and are
reached only through the tunnel.

Every veth pair is made from inside `ctl` with temporary names `spv<pid><n>a/b`, its far
end created directly in the peer namespace, and renamed only inside the namespaces: no
interface of the root namespace is created, moved or renamed. Every process runs under
`ip netns exec`; nothing in the root namespace sends to a lab address.

    lab = Lab(work_dir)         # or: with Lab() as lab:
    lab.up()                    # namespaces, links, addresses, routes
    lab.spawn("vpc", ["dnsmasq", ...], "dnsmasq.log")
    lab.run("client", ["curl", ...])
    lab.close()                 # kills its processes by pid, deletes its namespaces by
                                # name, removes /etc/netns/<name> and the work directory

Teardown also runs at exit, on an exception and on SIGINT/SIGTERM (the handlers raise
KeyboardInterrupt / SystemExit so `finally` blocks run); `keep=True` leaves it all for
debugging and prints how to remove it.
"""
import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

CLIENT_ADDR = "172.31.1.2"
CTL_CLIENT_ADDR = "172.31.1.1"  # ctl's address on the client link: the controller's URL host
CTL_VPC_ADDR = "172.31.2.1"
VPC_ADDR = "172.31.2.2"
LAB_NET = "172.31.0.0/16"
INTERNAL_NET = "10.20.0.0/24"
INTERNAL = {  # the private network's hosts, on lan0 in vpc
    "app": "10.20.0.10",
    "finance": "10.20.0.11",
    "db": "10.20.0.12",
    "dns": "10.20.0.53",
}
ROLES = ("ctl", "vpc", "client")


class LabError(RuntimeError):
    pass


def _ip(*args, check=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and r.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


class Lab:
    def __init__(self, work=None, keep=False, tag=None):
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces)")
        self.tag = tag or f"sp{os.getpid()}"
        self.ns = {role: f"{self.tag}{role}" for role in ROLES}
        self.keep = keep
        self.work = work or tempfile.mkdtemp(prefix=f"sp-lab-{self.tag}-")
        os.makedirs(self.work, exist_ok=True)
        os.chmod(self.work, 0o755)  # nginx workers and postgres read below it
        self.procs = []     # (name, Popen)
        self.created = []   # namespace names made by this run
        self.etc_dirs = []  # /etc/netns/<name> made by this run
        self.closed = False
        self._old = {}
        atexit.register(self.close)
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.getsignal(sig)
            signal.signal(sig, self._on_signal)

    # ---- life cycle ----

    def _on_signal(self, signum, frame):
        signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not cut the teardown
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def __enter__(self):
        self.up()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def up(self):
        """Creates the namespaces, links, addresses and routes; raises LabError on failure."""
        existing = _ip("netns", "list").stdout.split()
        for role in ROLES:
            name = self.ns[role]
            if name in existing:
                raise LabError(f"namespace {name} already exists (an earlier run kept with"
                               f" --keep?): ip netns delete {name}")
        for role in ROLES:
            _ip("netns", "add", self.ns[role])
            self.created.append(self.ns[role])
            self.sh(role, "ip link set lo up")
        ctl, vpc, client = self.ns["ctl"], self.ns["vpc"], self.ns["client"]
        pid = os.getpid()
        # client <-> ctl: made inside ctl, the peer born in client; renamed in place
        self._veth(ctl, f"spv{pid}0a", "toclient", client, f"spv{pid}0b", "eth0")
        self._veth(ctl, f"spv{pid}1a", "tovpc", vpc, f"spv{pid}1b", "eth0")
        self.sh("ctl", f"ip addr add {CTL_CLIENT_ADDR}/24 dev toclient",
                f"ip addr add {CTL_VPC_ADDR}/24 dev tovpc",
                "ip link set toclient up", "ip link set tovpc up",
                "sysctl -qw net.ipv4.ip_forward=1")
        self.sh("client", f"ip addr add {CLIENT_ADDR}/24 dev eth0", "ip link set eth0 up",
                f"ip route add {LAB_NET} via {CTL_CLIENT_ADDR}")
        self.sh("vpc", f"ip addr add {VPC_ADDR}/24 dev eth0", "ip link set eth0 up",
                f"ip route add {LAB_NET} via {CTL_VPC_ADDR}",
                f"ip link add spv{pid}2a type veth peer name spv{pid}2b",
                f"ip link set spv{pid}2a name lan0", f"ip link set spv{pid}2b name lan1",
                "ip link set lan0 up", "ip link set lan1 up",
                *[f"ip addr add {a}/24 dev lan0" for a in INTERNAL.values()])
        return self

    def _veth(self, ns_a, tmp_a, final_a, ns_b, tmp_b, final_b):
        _ip("-n", ns_a, "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b,
            "netns", ns_b)
        _ip("-n", ns_a, "link", "set", tmp_a, "name", final_a)
        _ip("-n", ns_b, "link", "set", tmp_b, "name", final_b)

    def close(self):
        """Kills this lab's processes, deletes its namespaces and files. Idempotent."""
        if self.closed:
            return
        self.closed = True
        for sig, old in self._old.items():
            try:
                signal.signal(sig, old)
            except (ValueError, TypeError):
                pass
        if self.keep:
            print(f"lab kept: namespaces {' '.join(self.created)}; work {self.work}\n"
                  f"  remove: for n in {' '.join(self.created)}; do ip netns pids $n |"
                  f" xargs -r kill; ip netns delete $n; rm -rf /etc/netns/$n; done;"
                  f" rm -rf {self.work}", file=sys.stderr, flush=True)
            return
        # SIGTERM first (a SIGKILLed nginx master leaves its workers), newest first
        for _, p in reversed(self.procs):
            if p.poll() is None:
                try:
                    p.terminate()
                except OSError:
                    pass
        end = time.time() + 10
        for _, p in reversed(self.procs):
            try:
                p.wait(timeout=max(0.1, end - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        # whatever is left inside our namespaces (a daemon's forked child): by pid
        for name in self.created:
            for _ in range(2):
                pids = _ip("netns", "pids", name, check=False).stdout.split()
                for pid in pids:
                    try:
                        os.kill(int(pid), signal.SIGKILL if _ else signal.SIGTERM)
                    except (OSError, ValueError):
                        pass
                if not pids:
                    break
                time.sleep(0.5)
        for name in reversed(self.created):
            _ip("netns", "delete", name, check=False)
        self.created = []
        for d in self.etc_dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.etc_dirs = []
        shutil.rmtree(self.work, ignore_errors=True)

    # ---- running things inside ----

    def prefix(self, role):
        """The command prefix that runs a program in role's namespace."""
        return ["ip", "netns", "exec", self.ns[role]]

    def sh(self, role, *cmds):
        for cmd in cmds:
            r = subprocess.run(self.prefix(role) + cmd.split(), capture_output=True, text=True)
            if r.returncode != 0:
                raise LabError(f"[{role}] {cmd}: {r.stderr.strip()}")

    def run(self, role, args, timeout=60, check=False, **kw):
        kw.setdefault("capture_output", True)
        return subprocess.run(self.prefix(role) + list(args), timeout=timeout, check=check, **kw)

    def spawn(self, role, args, log_name, **kw):
        """Starts args in role's namespace, output to work/log_name; killed at close()."""
        log = open(os.path.join(self.work, log_name), "w")
        kw.setdefault("stdout", log)
        kw.setdefault("stderr", subprocess.STDOUT)
        p = subprocess.Popen(self.prefix(role) + list(args), **kw)
        self.procs.append((log_name, p))
        return p

    def track(self, name, proc):
        """Adds a process started elsewhere (with prefix()) to the ones close() stops."""
        self.procs.append((name, proc))
        return proc

    def log(self, name):
        try:
            with open(os.path.join(self.work, name), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def set_resolver(self, role, nameserver):
        """Writes /etc/netns/<ns>/resolv.conf: what `ip netns exec` mounts on /etc/resolv.conf.

        Takes effect for processes started afterwards."""
        d = os.path.join("/etc/netns", self.ns[role])
        if d not in self.etc_dirs:
            os.makedirs(d, exist_ok=True)
            self.etc_dirs.append(d)
        with open(os.path.join(d, "resolv.conf"), "w") as f:
            f.write(f"nameserver {nameserver}\noptions timeout:2 attempts:2\n")

    def wait_tcp(self, role, host, port, limit=20.0):
        """True once host:port accepts a TCP connection from inside role's namespace."""
        code = ("import socket,sys,time\n"
                f"end=time.time()+{limit}\n"
                "while time.time()<end:\n"
                " try:\n"
                f"  socket.create_connection(({host!r},{port}),1).close(); sys.exit(0)\n"
                " except OSError: time.sleep(0.05)\n"
                "sys.exit(1)\n")
        return self.run(role, [sys.executable, "-c", code], timeout=limit + 10).returncode == 0

    def curl(self, role, *args, timeout=30):
        """curl -sS in role's namespace (proxy variables of the environment dropped):
        (rc, body bytes, stderr text)."""
        env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
        r = self.run(role, ["curl", "-sS", "--max-time", str(timeout), *args],
                     timeout=timeout + 10, env=env)
        return r.returncode, r.stdout, r.stderr.decode(errors="replace")

    # ---- the private network's services (in vpc) and the public resolver (in ctl) ----

    def start_dnsmasq(self, role, listen, records, log_name):
        """dnsmasq on listen:53 answering only records {name: address} (no upstream)."""
        hosts = os.path.join(self.work, f"{log_name}.hosts")
        with open(hosts, "w") as f:
            for name, addr in records.items():
                f.write(f"{addr} {name}\n")
        p = self.spawn(role, ["dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts",
                              "--no-poll", f"--addn-hosts={hosts}", f"--listen-address={listen}",
                              "--bind-interfaces", "--port=53", "--user=root",
                              f"--pid-file={os.path.join(self.work, log_name + '.pid')}",
                              "--log-facility=-"], log_name)
        if not self.wait_dns(role, listen, next(iter(records))):
            raise LabError(f"dnsmasq on {listen} did not answer: {self.log(log_name)[-500:]}")
        return p

    def wait_dns(self, role, server, name, limit=10.0):
        end = time.time() + limit
        while time.time() < end:
            if self.resolve(role, name, server) is not None:
                return True
            time.sleep(0.1)
        return False

    def resolve(self, role, name, server=None):
        """The first A record for name asked inside role (of server, else the resolver)."""
        code = ("import socket,struct,sys\n"
                f"name={name!r}; server={server!r}\n"
                "if server is None:\n"
                " try: print(socket.getaddrinfo(name,80,socket.AF_INET)[0][4][0])\n"
                " except OSError: print('NONE')\n"
                " sys.exit(0)\n"
                "q=struct.pack('>HHHHHH',0x5350,0x0100,1,0,0,0)+b''.join("
                "bytes([len(l)])+l.encode() for l in name.split('.'))"
                "+b'\\0'+struct.pack('>HH',1,1)\n"
                "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(2)\n"
                "try:\n s.sendto(q,(server,53)); r=s.recv(512)\n"
                "except OSError: print('NONE'); sys.exit(0)\n"
                "n=struct.unpack('>H',r[6:8])[0]\n"
                "print(socket.inet_ntoa(r[-4:]) if n>=1 and r[:2]==q[:2] else 'NONE')\n")
        r = self.run(role, [sys.executable, "-c", code], timeout=20)
        out = r.stdout.decode().strip()
        return None if out in ("", "NONE") else out

    def start_nginx(self, role, listen, page, log_name="nginx.log"):
        """nginx serving page (bytes) as / on each listen address (port 80)."""
        www = os.path.join(self.work, "www")
        os.makedirs(www, exist_ok=True)
        with open(os.path.join(www, "index.html"), "wb") as f:
            f.write(page)
        tmp = os.path.join(self.work, "nginx-tmp")
        os.makedirs(tmp, exist_ok=True)
        conf = os.path.join(self.work, "nginx.conf")
        servers = "".join(f"  server {{ listen {a}; root {www}; }}\n" for a in listen)
        with open(conf, "w") as f:
            f.write(f"""user root root;
daemon off; worker_processes 1; pid {self.work}/nginx.pid;
error_log {self.work}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi;
  uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
{servers}}}
""")
        p = self.spawn(role, ["nginx", "-c", conf, "-e", os.path.join(self.work,
                                                                      "nginx-error.log")],
                       log_name)
        host, port = listen[0].rsplit(":", 1)
        if not self.wait_tcp(role, host, int(port)):
            raise LabError("nginx did not start: " + self.log("nginx-error.log")[-500:])
        return p

    def start_postgres(self, role, listen, password, log_name="postgres.log"):
        """PostgreSQL (Debian's server binaries) on listen:5432, password auth for user
        `postgres`; returns the Popen, or None when the server is not installed."""
        bins = sorted(d for d in os.listdir("/usr/lib/postgresql")
                      if os.path.isfile(f"/usr/lib/postgresql/{d}/bin/postgres")) \
            if os.path.isdir("/usr/lib/postgresql") else []
        if not bins:
            return None
        bindir = f"/usr/lib/postgresql/{bins[-1]}/bin"
        data = os.path.join(self.work, "pgdata")
        sock = os.path.join(self.work, "pgsock")
        os.makedirs(sock, exist_ok=True)
        os.makedirs(data, mode=0o700, exist_ok=True)
        shutil.chown(data, "postgres", "postgres")
        pwfile = os.path.join(self.work, "pgpass.txt")
        with open(pwfile, "w") as f:
            f.write(password + "\n")
        shutil.chown(sock, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
        r = subprocess.run(["runuser", "-u", "postgres", "--", f"{bindir}/initdb", "-D", data,
                            "-U", "postgres", "--auth-host=scram-sha-256", "--auth-local=peer",
                            f"--pwfile={pwfile}", "--no-sync"], capture_output=True, text=True)
        os.unlink(pwfile)
        if r.returncode != 0:
            raise LabError("initdb: " + r.stderr[-500:])
        with open(os.path.join(data, "pg_hba.conf"), "a") as f:
            f.write("host all all 0.0.0.0/0 scram-sha-256\n")
        p = self.spawn(role, ["runuser", "-u", "postgres", "--", f"{bindir}/postgres", "-D", data,
                              "-k", sock, "-c", f"listen_addresses={listen}", "-c", "fsync=off"],
                       log_name)
        if not self.wait_tcp(role, listen, 5432):
            raise LabError("postgres did not start: " + self.log(log_name)[-500:])
        return p
