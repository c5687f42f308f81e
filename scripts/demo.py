#!/usr/bin/env python3
"""The one-command demo's driver (scripts/demo runs it after installing and building).

Brings up tests/lib/splab.py's lab (controller, test IdP, connector, private network and a
client machine, each in its own network namespace), signs eng-user in, shows what the
client reaches through the tunnel and what it refuses, then stays up and prints the
commands a person can type until Ctrl-C, which tears everything down.

    demo.py --bin-dir build/release [--check] [--keep]
    demo.py --controller P --connector P --client P [--check] [--keep]

--check runs the same steps without waiting and exits 0 when every step gave the expected
answer, 1 otherwise (77: cannot run here: not root, or the test IdP's packages missing).
"""
import argparse
import os
import shlex
import signal
import subprocess
import sys
import time

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(SRC, "tests", "lib"))

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--bin-dir", default=os.path.join(SRC, "build", "release"))
ap.add_argument("--controller")
ap.add_argument("--connector")
ap.add_argument("--client")
ap.add_argument("--check", action="store_true", help="run non-interactively; exit 0/1")
ap.add_argument("--keep", action="store_true", help="leave the lab up on exit (debugging)")
opts = ap.parse_args()

if os.geteuid() != 0:
    print("demo: needs root (it makes network namespaces): sudo ./scripts/demo", file=sys.stderr)
    sys.exit(77 if opts.check else 1)
import netlab  # noqa: E402
import splab  # noqa: E402

if not os.path.isdir(os.path.join(splab.OIDC, "node_modules", "oidc-provider")):
    print("demo: the test IdP's packages are missing: run scripts/install-test-tools",
          file=sys.stderr)
    sys.exit(77 if opts.check else 1)

BOLD, DIM, OFF = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")
failures = []


def say(text=""):
    print(text, flush=True)


def head(text):
    say(f"\n{BOLD}== {text} =={OFF}")


def expect(what, ok, detail=""):
    if ok:
        say(f"   {DIM}[ok] {what}{OFF}")
    else:
        failures.append(what)
        say(f"   [FAILED] {what} {detail}")


def shown(role, args, env_line="", out=None):
    """Prints `$ ip netns exec NS ARGS` the way a person would type it."""
    say(f"   $ ip netns exec {lab.ns[role]} {env_line}{' '.join(shlex.quote(a) for a in args)}")
    if out:
        for line in out.rstrip("\n").splitlines():
            say(f"     {line}")


t0 = time.time()
L = splab.SallyportLab(bin_dir=opts.bin_dir, ctl=opts.controller, conn=opts.connector,
                       sp=opts.client, keep=opts.keep, log=lambda m: say(f"   {m}"))
lab = L.lab
SP = os.path.abspath(L.sp_bin)
ENG = L.state["eng-user"]
env_line = f"env SALLYPORT_STATE_DIR={ENG} "
names = list(lab.ns.values())
try:
    head("1. The lab: three network namespaces")
    say(f"   {lab.ns['ctl']}: controller + test OpenID provider   "
        f"{lab.ns['vpc']}: connector + private network 10.20.0.0/24   "
        f"{lab.ns['client']}: the employee's machine (no route to 10.20.0.0/24)")
    head("2. Controller, IdP, admin API, connector, sign-in")
    L.start()
    head("3. eng-user (group engineering) reaches app.corp.test through the tunnel")
    s = L.up("loopback")
    rc, out, err = L.sp("eng-user", "status")
    shown("client", [SP, "status"], env_line, out)
    r = lab.run("client", ["getent", "ahostsv4", "app.corp.test"])
    got = (r.stdout.decode().split() or [None])[0]
    shown("client", ["getent", "ahostsv4", "app.corp.test"], "",
          f"{got}  app.corp.test   (answered by the client's DNS stub; the real address,"
          f" {netlab.INTERNAL['app']}, never leaves the private network)")
    expect("app.corp.test resolves to a client-owned 127.77.x.y address",
           got is not None and got.startswith("127.77."), str(got))
    rc, body, err = lab.curl("client", "http://app.corp.test/")
    shown("client", ["curl", "http://app.corp.test/"], "", body.decode(errors="replace") or err)
    expect("the internal page came through the tunnel", rc == 0 and body == L.page, err)
    if L.postgres is not None:
        r = lab.run("client", ["psql", "-h", "db.corp.test", "-U", "postgres", "-tAc",
                               "SELECT inet_server_addr()"],
                    env=dict(os.environ, PGPASSWORD=splab.DB_PASSWORD), timeout=30)
        shown("client", ["psql", "-h", "db.corp.test", "-U", "postgres", "-tAc",
                         "SELECT inet_server_addr()"],
              f"env PGPASSWORD={splab.DB_PASSWORD} ",
              r.stdout.decode() or r.stderr.decode())
        expect("psql through the tunnel", r.stdout.decode().strip() == netlab.INTERNAL["db"],
               r.stderr.decode())

    head("4. ...and not finance.corp.test (group finance only)")
    rc, body, err = lab.curl("client", "--max-time", "5", "http://finance.corp.test/")
    shown("client", ["curl", "http://finance.corp.test/"], "", err)
    say("     (the client is only told about resources a policy gives you, so the name is not"
        " even resolved;\n      and 10.20.0.11 itself has no route from this machine)")
    expect("finance.corp.test refused in loopback mode", rc != 0 and body == b"", err)
    L.down()
    s = L.up("proxy")
    rc, body, err = lab.curl("client", "--socks5-hostname", "127.0.0.1:1080",
                             "http://finance.corp.test/")
    say("   Asked by name through the client's proxy mode, the refusal carries its reason:")
    shown("client", [SP, "up", "--mode", "proxy"], env_line)
    shown("client", ["curl", "--socks5-hostname", "127.0.0.1:1080",
                     "http://finance.corp.test/"], "", err)
    rc2, out, err2 = L.sp("eng-user", "status")
    shown("client", [SP, "status"], env_line,
          "\n".join(line for line in out.splitlines() if line.startswith(("user", "mode",
                                                                          "refused"))))
    st = L.status()
    reasons = [(d["target"], d["reason"], d["by"]) for d in st.get("denials", [])]
    expect("finance.corp.test refused: not_protected (by client) in `sallyport status`",
           rc != 0 and ("finance.corp.test:80", "not_protected", "client") in reasons,
           str(reasons))
    L.down()
    s = L.up("loopback")
    expect("daemon back up in loopback mode", s.get("state") == "up", str(s))
    say(f"\n   up in {time.time() - t0:.1f} s")

    if not opts.check:
        head("Try it yourself (another terminal, as root)")
        c, k = lab.ns["client"], lab.ns["ctl"]
        say(f"""   the employee's machine ({c}), signed in as eng-user:
     ip netns exec {c} env SALLYPORT_STATE_DIR={ENG} {SP} status
     ip netns exec {c} env SALLYPORT_STATE_DIR={ENG} {SP} status --json
     ip netns exec {c} env SALLYPORT_STATE_DIR={ENG} {SP} resources
     ip netns exec {c} curl http://app.corp.test/
     ip netns exec {c} curl http://finance.corp.test/            # refused: not your policy
     ip netns exec {c} curl http://{netlab.INTERNAL['app']}/    # no route: only the tunnel"""
            + (f"""
     ip netns exec {c} env PGPASSWORD={splab.DB_PASSWORD} psql -h db.corp.test -U postgres"""
               if L.postgres is not None else "") + f"""
     ip netns exec {c} bash                                  # a shell on that machine

   the admin API (key made with `sallyport-controller admin-key create`):
     ip netns exec {k} curl -H 'Authorization: Bearer {L.admin_key}' \\
         http://127.0.0.1:8080/api/v1/resources

   the admin console: {splab.URL}/admin/ inside the lab. From a desktop session
   (X11), a browser in the controller's namespace reaches it and the test IdP; sign in as
   eng-user / eng-pass
   (made an admin by --admin-emails):
     ip netns exec {k} chromium --no-sandbox --user-data-dir=/tmp/sp-demo-browser {splab.URL}/admin/

   logs: {lab.work}
   Ctrl-C stops everything and removes the namespaces.""")
        while True:
            signal.pause()
except (KeyboardInterrupt, SystemExit):  # Ctrl-C, or SIGTERM through netlab's handler
    say("\n   stopping...")
except Exception as e:
    failures.append(f"{type(e).__name__}: {e}")
    say(f"demo: {type(e).__name__}: {e}")
    for n in ("controller.log", "connector.log", "provider.err", "sallyport-loopback.log",
              "sallyport-proxy.log"):
        tail = lab.log(n)[-1200:]
        if tail:
            say(f"--- {n}\n{tail}")
finally:
    L.close()

if not opts.keep:
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    clean = (not any(n in left for n in names) and
             not any(os.path.exists(f"/etc/netns/{n}") for n in names) and
             not os.path.exists(lab.work) and
             lab.work not in subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                            text=True).stdout)
    expect("torn down: no namespace, /etc/netns entry, process or file of the demo left", clean)
say(f"demo: {'FAILED: ' + '; '.join(failures) if failures else 'ok'}"
    f" ({time.time() - t0:.1f} s)")
sys.exit(1 if failures else 0)
