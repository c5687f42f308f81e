#!/usr/bin/env python3
"""Integration test: two connectors in one remote network, real services, failover.

Real processes on 127.0.0.1 only: the controller, TWO connectors of one network (direct
listeners on different ports, both started as root with SALLYPORT_USER=nobody, so both
drop privileges), the `sallyport` daemon in loopback mode signed in with a service key,
and services started here: nginx (a page and a large file), PostgreSQL (a throwaway
cluster made with initdb, run as nobody), and iperf3.

Checks: root without SALLYPORT_USER is refused before enrollment (the token stays
usable); each dropped connector's /proc/PID/status shows uid/gid nobody, empty
CapEff/CapPrm/CapBnd and NoNewPrivs; the state dir belongs to nobody; a page, an exact
psql query result and an iperf3 run through the tunnel; flows spread over both connectors
(their /metrics and the flow events' connector_id); the controller stopped: both
connectors keep serving with their last config; kill -9 of one connector under load
(concurrent downloads and loops of new flows): new flows through the other within 2 s,
the interrupted downloads resumed to the same SHA-256, and the flow events say which
connector carried what. Prints figures: failover gap, iperf3 and psql latency through
the tunnel vs direct.

Usage: connector_multi.py CONTROLLER CONNECTOR SALLYPORT
"""
import hashlib
import json
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
import testkit  # noqa: E402

if len(sys.argv) < 4:
    sys.exit("usage: connector_multi.py CONTROLLER CONNECTOR SALLYPORT")
CTL, CONN, SP = sys.argv[1:4]
SANITIZED = os.environ.get("SALLYPORT_SANITIZED", "0") in ("1", "ON", "TRUE", "true")
SCALE = 3 if SANITIZED else 1
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PGBINS = sorted((d for d in os.listdir("/usr/lib/postgresql") if d.isdigit()), key=int) \
    if os.path.isdir("/usr/lib/postgresql") else []
if not PGBINS or not shutil.which("iperf3"):
    sys.exit("connector_multi: PostgreSQL server or iperf3 missing: run scripts/install-deps")
PGBIN = f"/usr/lib/postgresql/{PGBINS[-1]}/bin"
WORK = tempfile.mkdtemp(prefix="sp-conn-multi-")
os.chmod(WORK, 0o755)  # nobody (the connectors, postgres) must reach its own dirs inside
STATE = os.path.join(WORK, "ctl")
DB = os.path.join(STATE, "controller.db")
CSTATE = os.path.join(WORK, "client-state")
RUN_AS = "nobody"
NOBODY = pwd.getpwnam(RUN_AS)
procs = []
pg_data = None


check = testkit.Checks(limit=3000)
free_port = testkit.free_port
new_id = testkit.new_id
wait_http = testkit.wait_http


def db():
    return testkit.db(DB)


def spawn(args, log_name, **kw):
    return testkit.spawn(procs, WORK, args, log_name, **kw)


CTL_PORT, WEB_PORT, PG_PORT, IPERF_PORT = (free_port() for _ in range(4))
URL = f"http://127.0.0.1:{CTL_PORT}"
ENV = {k: v for k, v in os.environ.items() if not k.startswith("SALLYPORT_")}
ENV["SALLYPORT_STATE_DIR"] = CSTATE
CONNECTORS = {}  # name -> {"proc", "direct", "metrics", "state", "id"}


def sp(*args, timeout=60):
    r = subprocess.run([SP, *args], env=ENV, capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def status():
    return testkit.status_json(sp)


def wait_status(pred, limit=20.0):
    return testkit.wait_for(status, pred, limit * SCALE, initial={})


def curl(*args, timeout=60):
    r = subprocess.run(["curl", "-sS", "--noproxy", "*", *args], capture_output=True,
                       timeout=timeout)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace")


def make_token():
    return subprocess.run([CTL, "connector-token", "create", "--network", "lab", "--state-dir",
                           STATE], check=True, capture_output=True).stdout.decode().strip()


def connector_env(name, token, extra=None):
    c = CONNECTORS[name]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALLYPORT_")}
    env.update({"SALLYPORT_URL": URL, "SALLYPORT_STATE_DIR": c["state"],
                "SALLYPORT_DIRECT_LISTEN": f"127.0.0.1:{c['direct']}",
                "SALLYPORT_METRICS_ADDR": f"127.0.0.1:{c['metrics']}",
                "SALLYPORT_NAME": name, "SALLYPORT_LOG_FORMAT": "json",
                "SALLYPORT_DRAIN_TIMEOUT": "2s", "SALLYPORT_ENROLL_TOKEN": token})
    if os.geteuid() == 0:
        env["SALLYPORT_USER"] = RUN_AS
    if extra:
        env.update(extra)
    return env


def health(name):
    env = dict(os.environ, SALLYPORT_METRICS_ADDR=f"127.0.0.1:{CONNECTORS[name]['metrics']}")
    return subprocess.run([CONN, "health"], env=env, capture_output=True).returncode


def start_connector(name, token):
    p = spawn([CONN], f"connector-{name}.log", env=connector_env(name, token))
    CONNECTORS[name]["proc"] = p
    for _ in range(200 * SCALE):
        if health(name) == 0:
            return True
        if p.poll() is not None:
            break
        time.sleep(0.05)
    return False


def metrics(name):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{CONNECTORS[name]['metrics']}/metrics",
                                    timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def allowed(name):
    return int(metrics(name).get("sallyport_connector_flows_allowed_total", -1))


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.split()
    return out


def flow_events(where, args=()):
    c = db()
    rows = c.execute("SELECT connector_id, decision, reason, resource_id, bytes_down, time"
                     " FROM flow_events WHERE " + where, args).fetchall()
    c.close()
    return rows


def psql(host, sql, extra=()):
    r = subprocess.run(["psql", "-X", "-h", host, "-p", str(PG_PORT), "-U", "sallyport", "-d",
                        "postgres", "-At", "-v", "ON_ERROR_STOP=1", *extra],
                       input=sql.encode(), capture_output=True, timeout=60,
                       env=dict(ENV, PGCONNECT_TIMEOUT="10"))
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def psql_latency(host, n=50):
    """Median and p95 of n `SELECT 1` round trips in one session (psql's own \\timing)."""
    rc, out, err = psql(host, "\\timing on\n" + "SELECT 1;\n" * n)
    ms = [float(l.split()[1]) for l in out.splitlines() if l.startswith("Time:")]
    if rc != 0 or len(ms) != n:
        return None
    ms.sort()
    return statistics.median(ms), ms[int(n * 0.95) - 1]


def iperf(host):
    r = subprocess.run(["iperf3", "-c", host, "-p", str(IPERF_PORT), "-t", "2", "-J"],
                       capture_output=True, timeout=60)
    try:
        end = json.loads(r.stdout)["end"]
        return end["sum_received"]["bytes"], end["sum_received"]["bits_per_second"]
    except (ValueError, KeyError):
        return 0, 0.0


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def cleanup(*_):
    testkit.stop_all(procs)
    if pg_data is not None and os.path.exists(os.path.join(pg_data, "postmaster.pid")):
        subprocess.run(["runuser", "-u", RUN_AS, "--", f"{PGBIN}/pg_ctl", "-D", pg_data,
                        "-m", "immediate", "stop"], capture_output=True, timeout=30)


signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
t_start = time.time()
try:
    if os.geteuid() != 0:
        print("note: not root: the privilege-drop checks and PostgreSQL as nobody are skipped")
    # ---- nginx: a page and a large file (a rate-limited copy for the failover) ----
    www = os.path.join(WORK, "www")
    os.makedirs(os.path.join(www, "slow"))
    page = b"<html>two connectors " + os.urandom(8).hex().encode() + b"</html>\n"
    with open(os.path.join(www, "index.html"), "wb") as f:
        f.write(page)
    big = os.path.join(www, "slow", "big.bin")
    with open(big, "wb") as f:
        f.write(os.urandom(24 << 20))
    big_sha = sha256_file(big)
    tmp = os.path.join(WORK, "nginx-tmp")
    os.makedirs(tmp)
    conf = os.path.join(WORK, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""{"user root root;" if os.geteuid() == 0 else ""}
daemon off; worker_processes 1; pid {WORK}/nginx.pid; error_log {WORK}/nginx-error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy; fastcgi_temp_path {tmp}/fcgi;
  uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  server {{ listen 127.0.0.1:{WEB_PORT}; root {www}; location /slow/ {{ limit_rate 6m; }} }}
}}
""")
    spawn([NGINX, "-c", conf, "-e", os.path.join(WORK, "nginx-error.log")], "nginx.log")
    check("nginx up", wait_http(f"http://127.0.0.1:{WEB_PORT}/index.html"))

    # ---- PostgreSQL: a throwaway cluster, run as nobody ----
    pg_data = tempfile.mkdtemp(prefix="sp-pg-")
    pg_as = ["runuser", "-u", RUN_AS, "--"] if os.geteuid() == 0 else []
    if os.geteuid() == 0:
        os.chown(pg_data, NOBODY.pw_uid, NOBODY.pw_gid)
    r = subprocess.run([*pg_as, f"{PGBIN}/initdb", "-D", pg_data, "-U", "sallyport",
                        "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"],
                       capture_output=True, timeout=120)
    check("initdb", r.returncode == 0, r.stderr.decode()[-2000:])
    with open(os.path.join(pg_data, "postgresql.conf"), "a") as f:
        f.write(f"listen_addresses = '127.0.0.1'\nport = {PG_PORT}\n"
                f"unix_socket_directories = '{pg_data}'\nfsync = off\n")
    r = subprocess.run([*pg_as, f"{PGBIN}/pg_ctl", "-D", pg_data, "-l",
                        os.path.join(pg_data, "log"), "-w", "-t", "60", "start"],
                       capture_output=True, timeout=90)
    check("PostgreSQL up", r.returncode == 0, r.stderr.decode()[-2000:])
    rc, out, err = psql("127.0.0.1", "CREATE TABLE parts (id int PRIMARY KEY, name text);"
                        "INSERT INTO parts SELECT g, 'part-' || g FROM generate_series(1, 1000) g;")
    check("PostgreSQL: table made directly", rc == 0, err)

    # ---- iperf3 server ----
    spawn(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(IPERF_PORT)], "iperf3.log")
    time.sleep(0.2)

    # ---- controller: network, service account, resources with aliases ----
    subprocess.run([CTL, "migrate", "--state-dir", STATE], check=True, capture_output=True)
    now = int(time.time())
    NET, SA, GROUP, KID = new_id(), new_id(), new_id(), new_id()
    RES = {"web": (new_id(), WEB_PORT), "pg": (new_id(), PG_PORT),
           "iperf": (new_id(), IPERF_PORT)}
    sa_key = os.path.join(WORK, "sa.pem")
    sa_pub, sa_der = testkit.ec_key(sa_key)
    c = db()
    c.execute("INSERT INTO remote_networks (id, name, created_at, updated_at) VALUES (?,?,?,?)",
              (NET, "lab", now, now))
    testkit.add_service_account(c, SA, KID, sa_pub, sa_der, now)
    c.execute("INSERT INTO groups (id, name, created_at, updated_at) VALUES (?,?,?,?)",
              (GROUP, "ci", now, now))
    c.execute("INSERT INTO memberships (user_id, group_id, created_at) VALUES (?,?,?)",
              (SA, GROUP, now))
    for name, (rid, port) in RES.items():
        c.execute("INSERT INTO resources (id, network_id, name, address, alias, tcp_ports,"
                  " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?)",
                  (rid, NET, name, "127.0.0.1", f"{name}.sp", json.dumps([str(port)]), now,
                   now))
        c.execute("INSERT INTO policies (id, group_id, resource_id, created_at, updated_at)"
                  " VALUES (?,?,?,?,?)", (new_id(), GROUP, rid, now, now))
    c.close()

    def start_controller(log):
        p = spawn([CTL, "serve", "--state-dir", STATE, "--http-listen", f"127.0.0.1:{CTL_PORT}",
                   "--public-url", URL], log)
        return p, wait_http(URL + "/healthz")

    ctl, ok = start_controller("controller.log")
    check("controller up", ok)

    # ---- two connectors, both dropping root ----
    for name in ("c1", "c2"):
        CONNECTORS[name] = {"direct": free_port(), "metrics": free_port(),
                            "state": os.path.join(WORK, f"state-{name}")}
    token1 = make_token()
    if os.geteuid() == 0:
        env = connector_env("c1", token1)
        del env["SALLYPORT_USER"]
        r = subprocess.run([CONN], env=env, capture_output=True, timeout=30)
        err = r.stderr.decode()
        check("root without SALLYPORT_USER: refused, naming SALLYPORT_USER and the opt-out",
              r.returncode == 1 and "SALLYPORT_USER" in err and "SALLYPORT_ALLOW_ROOT" in err
              and err.count("\n") == 1, f"{r.returncode} {err}")
        check("the refusal came before enrollment (no identity written)",
              not os.path.exists(os.path.join(CONNECTORS["c1"]["state"], "identity.json")))
    check("c1 enrolls (with the token the refused start left unspent) and is healthy",
          start_connector("c1", token1), open(os.path.join(WORK, "connector-c1.log")).read())
    check("c2 enrolls and is healthy", start_connector("c2", make_token()),
          open(os.path.join(WORK, "connector-c2.log")).read())
    for name in ("c1", "c2"):
        CONNECTORS[name]["id"] = json.load(open(os.path.join(CONNECTORS[name]["state"],
                                                             "identity.json")))["connector_id"]
        if os.geteuid() != 0:
            continue
        st = proc_status(CONNECTORS[name]["proc"].pid)
        check(f"{name}: runs as nobody (all four uids and gids), no supplementary groups",
              st["Uid"] == [str(NOBODY.pw_uid)] * 4 and st["Gid"] == [str(NOBODY.pw_gid)] * 4
              and st.get("Groups", []) == [], str(st))
        check(f"{name}: CapEff, CapPrm, CapBnd, CapInh, CapAmb all empty; NoNewPrivs 1",
              all(st[k] == ["0000000000000000"] for k in
                  ("CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb")) and
              st["NoNewPrivs"] == ["1"], str(st))
        sst = os.stat(CONNECTORS[name]["state"])
        kst = os.stat(os.path.join(CONNECTORS[name]["state"], "connector.key"))
        check(f"{name}: state dir and key handed to nobody (0700 / 0600)",
              sst.st_uid == NOBODY.pw_uid and kst.st_uid == NOBODY.pw_uid and
              (sst.st_mode & 0o777) == 0o700 and (kst.st_mode & 0o777) == 0o600)
        log = open(os.path.join(WORK, f"connector-{name}.log")).read()
        check(f"{name}: logs the drop", '"privileges dropped"' in log, log[-1000:])

    # ---- the client: service-key sign-in, loopback mode ----
    rc, out, err = sp("login", "--controller", URL, "--service-key", sa_key, "--service-kid",
                      KID, "--service-account", SA, "--device-name", "ci-multi")
    check("client signed in with the service key", rc == 0 and "signed in" in out, out + err)
    daemon = spawn([SP, "up", "--foreground", "--mode", "loopback", "--no-system-dns"],
                   "sallyport.log", env=ENV)
    s = wait_status(lambda s: len(s.get("listeners", [])) >= 3)
    lb = {l["name"]: l["address"] for l in s.get("listeners", [])}
    check("loopback listeners for web.sp, pg.sp, iperf.sp",
          sorted(lb) == ["iperf.sp", "pg.sp", "web.sp"], str(s))
    WEB = f"http://{lb.get('web.sp')}:{WEB_PORT}"

    # ---- flows spread over both connectors ----
    before = {n: allowed(n) for n in CONNECTORS}
    bodies = [curl(f"{WEB}/index.html")[1] for _ in range(12)]
    check("12 pages through the tunnel, byte for byte", bodies == [page] * 12,
          [len(b) for b in bodies])
    time.sleep(0.3)
    spread = {n: allowed(n) - before[n] for n in CONNECTORS}
    print(f"figure: 12 new flows spread c1={spread['c1']} c2={spread['c2']}", flush=True)
    check("both connectors carried flows (their /metrics), all 12 counted",
          spread["c1"] >= 3 and spread["c2"] >= 3 and sum(spread.values()) == 12, str(spread))
    s = status()
    tun = sorted(t["connector"] for t in s.get("tunnels", []) if t.get("state") == "up")
    check("status: one direct tunnel to each connector", tun == ["c1", "c2"], str(s))
    end = time.time() + 10
    rows = []
    while time.time() < end:
        rows = flow_events("decision = 'allow' AND resource_id = ?", (RES["web"][0],))
        if len(rows) >= 12:
            break
        time.sleep(0.1)
    by = {n: sum(1 for r in rows if r[0] == CONNECTORS[n]["id"]) for n in CONNECTORS}
    check("flow events name the connector that carried each flow",
          len(rows) == 12 and by["c1"] == spread["c1"] and by["c2"] == spread["c2"],
          f"{by} {rows}")

    # ---- PostgreSQL through the tunnel: an exact result ----
    rc, out, err = psql(lb.get("pg.sp"), "SELECT count(*), sum(id), max(name) FROM parts"
                        " WHERE id % 7 = 0;")
    check("psql through the tunnel: exact query result", rc == 0 and
          out.strip() == "142|71071|part-994", f"{rc} {out!r} {err}")
    rc, out, err = psql(lb.get("pg.sp"), "SELECT inet_client_addr();")
    check("PostgreSQL sees the connector's address (127.0.0.1), not the client's",
          rc == 0 and out.strip() == "127.0.0.1", f"{rc} {out!r} {err}")
    direct_lat, tunnel_lat = psql_latency("127.0.0.1"), psql_latency(lb.get("pg.sp"))
    check("psql latency measured both ways", direct_lat is not None and tunnel_lat is not None)
    if direct_lat and tunnel_lat:
        print(f"figure: psql 'SELECT 1' round trip (\\timing, 50 in one session): direct median"
              f" {direct_lat[0]:.3f} ms p95 {direct_lat[1]:.3f} ms; through the tunnel median"
              f" {tunnel_lat[0]:.3f} ms p95 {tunnel_lat[1]:.3f} ms", flush=True)
        print(f"figure command: printf '\\\\timing on\\nSELECT 1;\\n...' | psql -X -At -h"
              f" {lb.get('pg.sp')} -p PGPORT -U sallyport -d postgres", flush=True)

    # ---- iperf3 through the tunnel ----
    nbytes, bps = iperf(lb.get("iperf.sp"))
    check("iperf3 -c through the tunnel for 2 s moved bytes", nbytes > 1 << 20,
          f"{nbytes} {bps}")
    if not SANITIZED:
        dbytes, dbps = iperf("127.0.0.1")
        print(f"figure: iperf3 -t 2 through the tunnel {bps / 1e9:.2f} Gbit/s ({nbytes >> 20}"
              f" MiB); direct {dbps / 1e9:.2f} Gbit/s", flush=True)
        print(f"figure command: iperf3 -c {lb.get('iperf.sp')} -p IPERFPORT -t 2", flush=True)

    # ---- the controller away: both connectors keep serving with their last config ----
    ctl.send_signal(signal.SIGTERM)
    ctl.wait(timeout=20)
    before = {n: allowed(n) for n in CONNECTORS}
    bodies = [curl(f"{WEB}/index.html")[1] for _ in range(8)]
    time.sleep(0.3)
    away = {n: allowed(n) - before[n] for n in CONNECTORS}
    check("controller away: 8 new flows with cached grants all served", bodies == [page] * 8,
          [len(b) for b in bodies])
    check("controller away: both connectors served (last good config)",
          away["c1"] >= 2 and away["c2"] >= 2 and sum(away.values()) == 8, str(away))
    check("controller away: both still report ready", health("c1") == 0 and health("c2") == 0)
    ctl, ok = start_controller("controller2.log")
    check("controller back", ok)

    # ---- failover: kill -9 one connector under load ----
    stop_loops = threading.Event()
    results = []  # (start, end, ok)
    lock = threading.Lock()

    def new_flow_loop():
        while not stop_loops.is_set():
            t0 = time.time()
            rc, body, _ = curl("--max-time", "5", f"{WEB}/index.html", timeout=10)
            with lock:
                results.append((t0, time.time(), rc == 0 and body == page))
            time.sleep(0.01)

    outs = [os.path.join(WORK, f"dl{i}.bin") for i in range(4)]
    downloads = [subprocess.Popen(["curl", "-sS", "--noproxy", "*", "-o", o,
                                   f"{WEB}/slow/big.bin"], stderr=subprocess.PIPE)
                 for o in outs]
    # the downloads open first (so they alternate over the two connectors), then the loops
    s = wait_status(lambda s: s.get("flows", {}).get("active", 0) >= len(downloads))
    streams = {t["connector"]: t.get("streams_open", 0) for t in s.get("tunnels", [])
               if t.get("state") == "up"}
    check("the downloads run over both connectors (status: open streams per tunnel)",
          streams.get("c1", 0) >= 1 and streams.get("c2", 0) >= 1, str(streams))
    loops = [threading.Thread(target=new_flow_loop) for _ in range(3)]
    for t in loops:
        t.start()
    time.sleep(1.0)
    victim, survivor = "c1", "c2"
    load_open = status().get("flows", {}).get("active", 0)
    kill_at = time.time()
    CONNECTORS[victim]["proc"].kill()
    CONNECTORS[victim]["proc"].wait(timeout=10)
    time.sleep(2.5)
    stop_loops.set()
    for t in loops:
        t.join(timeout=15)
    after = sorted(r for r in results if r[0] >= kill_at)
    first_ok = next((r for r in after if r[2]), None)
    gap = (first_ok[1] - kill_at) if first_ok else None
    failed_after = sum(1 for r in after if not r[2])
    oks = sorted(r[1] for r in results if r[2])
    longest = max((b - a for a, b in zip(oks, oks[1:]) if b >= kill_at - 0.5), default=0)
    print(f"figure: failover (kill -9 {victim} with {load_open} flows open): first new flow"
          f" through {survivor} done {gap * 1000 if gap is not None else -1:.0f} ms after the"
          f" kill; longest pause between successful new flows {longest * 1000:.0f} ms;"
          f" {len(after)} flows started after the kill, {failed_after} cut (in flight on the"
          f" victim's tunnel)", flush=True)
    check("new flows succeed through the other connector within 2 s of the kill",
          gap is not None and gap < 2.0 * SCALE and len(after) >= 5, f"{gap} {after[:5]}")
    # a flow whose request went into the victim's tunnel before the client read the tunnel's
    # end is cut (the connector may have passed the request on: not replayed); flows opened
    # once the client knows are all carried by the survivor
    settled = kill_at + 0.5 * SCALE
    check("every new flow opened 0.5 s after the kill or later succeeds",
          len([r for r in after if r[0] >= settled]) >= 5 and
          all(r[2] for r in after if r[0] >= settled),
          str([(round(r[0] - kill_at, 3), r[2]) for r in after if not r[2]]))
    # the downloads: those on the killed connector were cut; resume them (Range) to the end
    rcs = [d.wait(timeout=60 * SCALE) for d in downloads]
    cut = [i for i, rc in enumerate(rcs) if rc != 0]
    check("some downloads were on the killed connector and were cut, others ran on",
          0 < len(cut) < len(downloads), str(rcs))
    for i in cut:
        r = subprocess.run(["curl", "-sS", "--noproxy", "*", "-C", "-", "-o", outs[i],
                            f"{WEB}/slow/big.bin"], capture_output=True, timeout=60 * SCALE)
        check(f"interrupted download {i} resumed (rc {rcs[i]} -> {r.returncode})",
              r.returncode == 0, r.stderr.decode())
    shas = [sha256_file(o) for o in outs]
    check("every download, resumed or not, has the file's SHA-256", shas == [big_sha] * 4,
          str(shas))
    # the flow events: which connector carried what (a flow's event is stamped when it
    # started; the victim's flows cut by the kill have none: its queue died with it)
    vid, sid = CONNECTORS[victim]["id"], CONNECTORS[survivor]["id"]
    full = (24 << 20)
    end = time.time() + 10 * SCALE
    while time.time() < end:
        rows = flow_events("decision = 'allow' AND resource_id = ?", (RES["web"][0],))
        whole = [r for r in rows if r[4] >= full]
        resumed = [r for r in rows if 1 << 20 <= r[4] < full and r[5] >= int(kill_at)]
        if len(whole) + len(resumed) >= len(downloads):
            break
        time.sleep(0.2)
    check("downloads that ran on through the kill: whole-file flow events from the survivor",
          len(whole) == len(downloads) - len(cut) and all(r[0] == sid for r in whole),
          str([(r[0][:8], r[4]) for r in whole]))
    check("resumed downloads: flow events from the survivor with the rest of the bytes",
          len(resumed) == len(cut) and all(r[0] == sid for r in resumed),
          str([(r[0][:8], r[4]) for r in resumed]))
    late = flow_events("decision = 'allow' AND time > ?", (int(kill_at) + 1,))
    check("every flow event after the kill comes from the survivor",
          late and all(r[0] == sid for r in late), str([(r[0][:8], r[4]) for r in late][:20]))
    c = db()
    carried = dict(c.execute("SELECT connector_id, count(*) FROM flow_events WHERE decision ="
                             " 'allow' GROUP BY connector_id").fetchall())
    c.close()
    print(f"figure: allowed flow events by connector: {victim}={carried.get(vid, 0)}"
          f" {survivor}={carried.get(sid, 0)}", flush=True)

    # the survivor drains cleanly (the sanitizer build checks its memory at this exit)
    CONNECTORS[survivor]["proc"].send_signal(signal.SIGTERM)
    try:
        rc = CONNECTORS[survivor]["proc"].wait(timeout=20 * SCALE)
    except subprocess.TimeoutExpired:
        rc = None
    check(f"{survivor} (unprivileged) exits 0 on SIGTERM", rc == 0,
          open(os.path.join(WORK, f"connector-{survivor}.log")).read()[-2000:])
    sp("down")
    daemon.wait(timeout=15 * SCALE)
except Exception:
    import traceback
    traceback.print_exc()
    check.failed += 1
finally:
    cleanup()
    if check.failed == 0:
        shutil.rmtree(WORK, ignore_errors=True)
        if pg_data:
            shutil.rmtree(pg_data, ignore_errors=True)
    else:
        print(f"logs kept in {WORK} (PostgreSQL in {pg_data})", flush=True)

print(f"{check.summary('connector_multi')}, {time.time() - t_start:.1f} s",
      flush=True)
sys.exit(check.exit_code())
