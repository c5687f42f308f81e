#!/usr/bin/env python3
"""Integration test: `sallyport up` points the system resolver at its DNS stub, and back.

Everything runs in a private network and mount namespace this script makes for itself
(`unshare --net --mount`): /etc is overlaid there (overlayfs, upper directory in a
temporary directory), so the test's /etc/resolv.conf is a real file at the real path that
glibc reads, and the root namespace's /etc/resolv.conf is never touched. Inside: the real
controller with a service account and a resource `app.corp.test`, dnsmasq on 127.0.0.2:53
as the "original" nameserver (it answers plain.example.test, and app.corp.test with an
address the client must never hand out), and `sallyport` signed in with the service key,
run as root in loopback mode with system DNS on (its default).

Checked: after `up` resolv.conf names only the stub (127.83.80.53) with search/options
kept; `getent hosts app.corp.test` gives the synthetic address of the daemon's listener;
an unprotected name (and a short name through the kept `search`) resolves through
dnsmasq; `down`, SIGTERM: the file is byte-identical again (mode too); kill -9, then
`down` or `up`: restored first; a file changed by someone else while up is left alone; a
symbolic link is put back as the same link; a resolv.conf that names only the stub is
not forwarded to (up refuses); --no-system-dns leaves the file alone; a bind-mounted
resolv.conf (as containers have) is rewritten in place and restored.

Usage: client_sysdns.py CONTROLLER SALLYPORT   (exit 77: skipped, needs root + unshare)
"""
import hashlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))
import testkit  # noqa: E402

if len(sys.argv) < 3:
    sys.exit("usage: client_sysdns.py CONTROLLER SALLYPORT")
CTL, SP = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
SANITIZED = os.environ.get("SALLYPORT_SANITIZED", "0") in ("1", "ON", "TRUE", "true")
SCALE = 3 if SANITIZED else 1
DNSMASQ = os.environ.get("DNSMASQ") or "/usr/sbin/dnsmasq"
RESOLV = "/etc/resolv.conf"
STUB = "127.83.80.53"
ORIGINAL = (b"# the test's original resolv.conf\n"
            b"nameserver 127.0.0.2\n"
            b"search example.test\n"
            b"options ndots:1 timeout:2 attempts:2\n")


def outer():
    """Re-runs this script in a new network + mount namespace and relays its exit code."""
    if os.geteuid() != 0:
        print("skip: needs root (namespaces, port 53, /etc/resolv.conf)")
        sys.exit(77)
    p = subprocess.Popen(["unshare", "--net", "--mount", "--propagation", "private", "--",
                          sys.executable, os.path.abspath(__file__), CTL, SP, "--inner"],
                         start_new_session=True)
    try:
        rc = p.wait(timeout=240 * SCALE)
    except subprocess.TimeoutExpired:
        rc = 1
        print("FAIL: the namespaced run did not finish in time", flush=True)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    sys.exit(rc)


if "--inner" not in sys.argv:
    outer()

# ---------------- inside the namespaces ----------------
WORK = tempfile.mkdtemp(prefix="sp-sysdns-")
overlaid = False
CSTATE = os.path.join(WORK, "client-state")
procs = []


check = testkit.Checks()
free_port = testkit.free_port
new_id = testkit.new_id
wait_http = testkit.wait_http


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def put_resolv(data, mode=0o644):
    """The test's own resolv.conf change: temp file + rename, as a package manager would."""
    tmp = RESOLV + ".test-tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.chmod(tmp, mode)
    os.rename(tmp, RESOLV)


CTL_PORT = free_port()
URL = f"http://127.0.0.1:{CTL_PORT}"
ENV = {k: v for k, v in os.environ.items() if not k.startswith("SALLYPORT_")}
ENV["SALLYPORT_STATE_DIR"] = CSTATE


def sp(*args, timeout=60):
    r = subprocess.run([SP, *args], env=ENV, capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def status():
    return testkit.status_json(sp)


def up(*extra, expect_up=True):
    log_path = os.path.join(WORK, f"daemon-{len(procs)}.log")
    log = open(log_path, "w")
    p = subprocess.Popen([SP, "up", "--foreground", "--mode", "loopback", *extra], env=ENV,
                         stdout=log, stderr=subprocess.STDOUT)
    procs.append(p)
    s = {}
    end = time.time() + 20 * SCALE
    while expect_up and time.time() < end and p.poll() is None:
        s = status()
        if s.get("state") == "up" and s.get("resources", 0) >= 1 and s.get("listeners"):
            break
        time.sleep(0.1)
    return p, log_path, s


def stop_with_down(p):
    rc, out, err = sp("down")
    try:
        prc = p.wait(timeout=15 * SCALE)
    except subprocess.TimeoutExpired:
        prc = None
    return rc, prc, out + err


def getent(name):
    # `hosts`, not `ahostsv4`: AI_ADDRCONFIG finds no address but loopback in this namespace
    r = subprocess.run(["getent", "hosts", name], capture_output=True, text=True, timeout=20)
    addrs = sorted({line.split()[0] for line in r.stdout.splitlines() if line.strip()})
    return addrs


def state_files():
    return sorted(f for f in os.listdir(CSTATE) if f in ("sysdns.json", "resolv.conf.saved"))


try:
    # ---- the namespace: loopback up, /etc overlaid ----
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    for d in ("upper", "ovl-work"):
        os.makedirs(os.path.join(WORK, d))
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir=/etc,upperdir={WORK}/upper,workdir={WORK}/ovl-work", "/etc"],
                   check=True)
    overlaid = True
    check("private /etc (overlay) in a private mount namespace",
          os.path.ismount("/etc"))
    put_resolv(ORIGINAL)

    # ---- dnsmasq: the original nameserver ----
    dq = subprocess.Popen([DNSMASQ, "--keep-in-foreground", "--no-resolv", "--no-hosts",
                           "--bind-interfaces", "--listen-address=127.0.0.2", "--port=53",
                           "--address=/plain.example.test/192.0.2.77",
                           "--address=/app.corp.test/203.0.113.9",
                           "--log-queries",
                           "--log-facility=" + os.path.join(WORK, "dnsmasq.log"),
                           "--pid-file=" + os.path.join(WORK, "dnsmasq.pid"),
                           "--user=root"], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    procs.append(dq)
    ok = False
    for _ in range(100):
        if getent("plain.example.test") == ["192.0.2.77"]:
            ok = True
            break
        time.sleep(0.05)
    check("before up: plain.example.test through the original nameserver", ok)
    check("before up: app.corp.test is dnsmasq's 203.0.113.9",
          getent("app.corp.test") == ["203.0.113.9"])

    # ---- controller, service account, resource ----
    state = os.path.join(WORK, "ctl")
    subprocess.run([CTL, "migrate", "--state-dir", state], check=True, capture_output=True)
    now = int(time.time())
    NET, SA, GROUP, KID, RES = new_id(), new_id(), new_id(), new_id(), new_id()
    sa_key = os.path.join(WORK, "sa.pem")
    sa_pub, sa_der = testkit.ec_key(sa_key)
    c = testkit.db(os.path.join(state, "controller.db"))
    c.execute("INSERT INTO remote_networks (id, name, created_at, updated_at) VALUES (?,?,?,?)",
              (NET, "lab", now, now))
    testkit.add_service_account(c, SA, KID, sa_pub, sa_der, now)
    c.execute("INSERT INTO groups (id, name, created_at, updated_at) VALUES (?,?,?,?)",
              (GROUP, "ci", now, now))
    c.execute("INSERT INTO memberships (user_id, group_id, source, created_at)"
              " VALUES (?,?,'local',?)", (SA, GROUP, now))
    c.execute("INSERT INTO resources (id, network_id, name, address, tcp_ports, created_at,"
              " updated_at) VALUES (?,?,?,?,?,?,?)",
              (RES, NET, "app", "app.corp.test", json.dumps(["8080"]), now, now))
    c.execute("INSERT INTO policies (id, group_id, resource_id, created_at, updated_at)"
              " VALUES (?,?,?,?,?)", (new_id(), GROUP, RES, now, now))
    c.close()
    ctl = subprocess.Popen([CTL, "serve", "--state-dir", state, "--http-listen",
                            f"127.0.0.1:{CTL_PORT}", "--public-url", URL],
                           stderr=open(os.path.join(WORK, "controller.log"), "w"))
    procs.append(ctl)
    check("controller up", wait_http(URL + "/healthz", 20 * SCALE))
    rc, out, err = sp("login", "--controller", URL, "--service-key", sa_key, "--service-kid",
                      KID, "--service-account", SA, "--device-name", "ci-box")
    check("login with the service key", rc == 0 and "signed in" in out, f"{rc} {out} {err}")

    # ---- up: resolv.conf names the stub ----
    asked_before = (read(os.path.join(WORK, "dnsmasq.log")) or b"").count(b" app.corp.test from ")
    t0 = time.time()
    p, log, s = up()
    up_s = time.time() - t0
    cur = read(RESOLV)
    lines = [l for l in (cur or b"").decode().splitlines() if l and not l.startswith("#")]
    check("up: status says system DNS by resolv.conf, stub on 127.83.80.53:53",
          s.get("system_dns") == "resolv.conf" and s.get("dns") == f"{STUB}:53", str(s))
    check("up: resolv.conf names only the stub and keeps search/options",
          lines == [f"nameserver {STUB}", "search example.test",
                    "options ndots:1 timeout:2 attempts:2"], repr(cur))
    check("up: resolv.conf says Sallyport manages it and how to restore",
          cur is not None and b"# Managed by Sallyport" in cur and b"sallyport down" in cur)
    check("up: resolv.conf keeps its mode (0644) and is a regular file",
          stat.S_IMODE(os.lstat(RESOLV).st_mode) == 0o644 and
          stat.S_ISREG(os.lstat(RESOLV).st_mode))
    saved = os.path.join(CSTATE, "resolv.conf.saved")
    marker_path = os.path.join(CSTATE, "sysdns.json")
    try:
        marker = json.loads(read(marker_path) or b"{}")
    except ValueError:
        marker = {}
    check("up: the original saved (0600, same bytes) and the marker (0600, our pid, hash)",
          read(saved) == ORIGINAL and stat.S_IMODE(os.stat(saved).st_mode) == 0o600 and
          stat.S_IMODE(os.stat(marker_path).st_mode) == 0o600 and marker.get("pid") == p.pid and
          marker.get("kind") == "file" and
          marker.get("written") == hashlib.sha256(cur or b"").hexdigest(), str(marker))
    lst = [l for l in s.get("listeners", []) if l.get("name") == "app.corp.test"]
    app_addr = lst[0]["address"] if lst else None
    t1 = time.time()
    got = getent("app.corp.test")
    lookup_ms = (time.time() - t1) * 1000
    check("getent: app.corp.test is the synthetic address of the daemon's listener",
          app_addr is not None and app_addr.startswith("127.77.") and got == [app_addr],
          f"{got} listener {app_addr}")
    try:
        ai = sorted({a[4][0] for a in socket.getaddrinfo("app.corp.test", 8080,
                                                         socket.AF_INET)})
    except OSError as e:
        ai = [str(e)]
    check("getaddrinfo: app.corp.test the same (never dnsmasq's 203.0.113.9)",
          ai == [app_addr], str(ai))
    check("getent: plain.example.test through the stub to the original nameserver",
          getent("plain.example.test") == ["192.0.2.77"])
    check("getent: the short name `plain` through the kept search domain",
          getent("plain") == ["192.0.2.77"])
    asked_after = (read(os.path.join(WORK, "dnsmasq.log")) or b"").count(b" app.corp.test from ")
    check("dnsmasq logged app.corp.test before up, never while up (the stub answers it)",
          asked_before > 0 and asked_after == asked_before,
          f"{asked_before} {asked_after}")
    rc, prc, text = stop_with_down(p)
    check("down: exit 0, daemon exit 0", rc == 0 and prc == 0, f"{rc} {prc} {text}")
    check("down: resolv.conf byte-identical to the original, mode 0644",
          read(RESOLV) == ORIGINAL and stat.S_IMODE(os.lstat(RESOLV).st_mode) == 0o644,
          repr(read(RESOLV)))
    check("down: the saved copy and the marker are gone", state_files() == [],
          str(state_files()))
    check("after down: app.corp.test is dnsmasq's again", getent("app.corp.test") ==
          ["203.0.113.9"])

    # ---- SIGTERM ----
    p, log, s = up()
    check("up again (SIGTERM case)", s.get("system_dns") == "resolv.conf", str(s))
    p.send_signal(signal.SIGTERM)
    try:
        prc = p.wait(timeout=15 * SCALE)
    except subprocess.TimeoutExpired:
        prc = None
    check("SIGTERM: daemon exit 0 and resolv.conf byte-identical",
          prc == 0 and read(RESOLV) == ORIGINAL and state_files() == [], f"{prc}")

    # ---- kill -9, then down ----
    p, log, s = up()
    managed = read(RESOLV)
    p.kill()
    p.wait()
    check("kill -9: resolv.conf still names the stub, the marker stays",
          managed is not None and f"nameserver {STUB}".encode() in managed and
          read(RESOLV) == managed and "sysdns.json" in state_files())
    rc, out, err = sp("down")
    check("down after kill -9: restores (exit 0, says so)",
          rc == 0 and "restored" in out, f"{rc} {out} {err}")
    check("down after kill -9: byte-identical, our files gone",
          read(RESOLV) == ORIGINAL and state_files() == [], repr(read(RESOLV)))
    rc, out, err = sp("down")
    check("down with nothing to do: exit 3, file untouched", rc == 3 and read(RESOLV) == ORIGINAL,
          f"{rc} {out} {err}")

    # ---- kill -9, then up ----
    p, log, s = up()
    p.kill()
    p.wait()
    p, log, s = up()
    check("up after kill -9: restored first, forwards to the original (not to itself)",
          s.get("system_dns") == "resolv.conf" and getent("plain.example.test") == ["192.0.2.77"],
          str(s))
    try:
        marker = json.loads(read(marker_path) or b"{}")
    except ValueError:
        marker = {}
    check("up after kill -9: the marker names the new daemon", marker.get("pid") == p.pid,
          str(marker))
    check("up after kill -9: the saved copy is the original, not our file",
          read(saved) == ORIGINAL, repr(read(saved)))
    rc, prc, text = stop_with_down(p)
    check("down: byte-identical after the kill -9 / up / down sequence",
          rc == 0 and prc == 0 and read(RESOLV) == ORIGINAL, f"{rc} {prc} {repr(read(RESOLV))}")

    # ---- changed by someone else while up ----
    p, log, s = up()
    theirs = b"# written by another program\nnameserver 127.0.0.2\n"
    put_resolv(theirs)
    rc, prc, text = stop_with_down(p)
    dl = (read(log) or b"").decode(errors="replace")
    check("changed while up: down keeps theirs and says so",
          rc == 0 and prc == 0 and read(RESOLV) == theirs and "changed by someone else" in dl
          and state_files() == [], f"{rc} {prc} {repr(read(RESOLV))}")
    put_resolv(ORIGINAL)

    # ---- a symbolic link ----
    target = os.path.join(WORK, "managed-elsewhere.conf")
    with open(target, "wb") as f:
        f.write(ORIGINAL)
    os.unlink(RESOLV)
    os.symlink(target, RESOLV)
    p, log, s = up()
    check("symlink: replaced by our file while up (the link's target untouched)",
          stat.S_ISREG(os.lstat(RESOLV).st_mode) and read(target) == ORIGINAL and
          f"nameserver {STUB}".encode() in (read(RESOLV) or b"") and
          getent("plain.example.test") == ["192.0.2.77"])
    rc, prc, text = stop_with_down(p)
    check("symlink: down puts the same link back",
          rc == 0 and prc == 0 and os.path.islink(RESOLV) and os.readlink(RESOLV) == target
          and read(target) == ORIGINAL, f"{rc} {prc}")
    os.unlink(RESOLV)
    put_resolv(ORIGINAL)

    # ---- resolv.conf that already names only the stub (no marker): no loop ----
    only_stub = f"nameserver {STUB}\n".encode()
    put_resolv(only_stub)
    p, log, s = up(expect_up=False)
    try:
        prc = p.wait(timeout=20 * SCALE)
    except subprocess.TimeoutExpired:
        p.kill()
        prc = None
    dl = (read(log) or b"").decode(errors="replace")
    check("resolv.conf naming only the stub: up refuses (no forwarding to itself)",
          prc == 1 and "--dns-upstream" in dl and read(RESOLV) == only_stub and
          state_files() == [], f"{prc} {dl[-400:]}")
    put_resolv(ORIGINAL)

    # ---- --no-system-dns ----
    p, log, s = up("--no-system-dns", "--dns", "127.0.0.1:5353")
    check("--no-system-dns: up, resolv.conf untouched, no system_dns in status",
          s.get("state") == "up" and "system_dns" not in s and read(RESOLV) == ORIGINAL and
          state_files() == [], str(s))
    rc, prc, text = stop_with_down(p)
    check("--no-system-dns: down", rc == 0 and prc == 0 and read(RESOLV) == ORIGINAL)

    # ---- a stub on another port: system DNS left alone (resolv.conf cannot name a port) ----
    p, log, s = up("--dns", "127.0.0.1:5353")
    check("--dns on port 5353: up, resolv.conf untouched, no system_dns in status",
          s.get("state") == "up" and "system_dns" not in s and read(RESOLV) == ORIGINAL and
          state_files() == [] and "not on port 53" in (read(log) or b"").decode(), str(s))
    rc, prc, text = stop_with_down(p)
    check("--dns on port 5353: down", rc == 0 and prc == 0 and read(RESOLV) == ORIGINAL)

    # ---- a bind-mounted resolv.conf (containers, `ip netns exec`): rewritten in place ----
    bound = os.path.join(WORK, "bound-resolv.conf")
    with open(bound, "wb") as f:
        f.write(ORIGINAL)
    subprocess.run(["mount", "--bind", bound, RESOLV], check=True)
    p, log, s = up()
    check("bind mount: resolv.conf rewritten in place while up",
          f"nameserver {STUB}".encode() in (read(bound) or b"") and
          getent("app.corp.test") == [app_addr], repr(read(bound)))
    rc, prc, text = stop_with_down(p)
    check("bind mount: down restores the bytes in place",
          rc == 0 and prc == 0 and read(bound) == ORIGINAL and read(RESOLV) == ORIGINAL)
    subprocess.run(["umount", RESOLV], check=True)

    print(f"figures: up with system DNS {up_s * 1000:.0f} ms (to status up with the list);"
          f" getent app.corp.test {lookup_ms:.1f} ms", flush=True)
finally:
    testkit.stop_all(procs[::-1])
    if os.path.ismount(RESOLV):
        subprocess.run(["umount", RESOLV])
    if overlaid:
        subprocess.run(["umount", "/etc"])
    if check.failed:
        for name in sorted(os.listdir(WORK)):
            if name.endswith(".log"):
                print(f"--- {name}\n" + (read(os.path.join(WORK, name)) or b"").decode(
                    errors="replace")[-3000:])
    subprocess.run(["rm", "-rf", WORK])

print(check.summary())
sys.exit(check.exit_code(need_pass=True))
