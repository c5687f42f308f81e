#!/usr/bin/env python3
"""End-to-end test: an employee signs in and opens an internal page in a real browser.

The lab of tests/lib/splab.py (browser=True: the IdP shows its consent page; eng-user is
not signed in yet; the IdP's loopback issuer is forwarded into client's loopback). Inside
the client namespace:
  1. `sallyport login --no-browser` prints the sign-in URL;
  2. tests/e2e/browser_login.mjs runs Debian's chromium (playwright-core, no download)
     inside the same namespace (`ip netns exec`), opens that URL and lands on the IdP's
     login page, signs in as eng-user, allows on the consent page and follows the redirect
     back to the client's loopback listener, which answers "signed in"; the login command
     then exits 0 printing "signed in as eng-user@example.com";
  3. the policies are added (engineering now exists, mirrored at sign-in) and `sallyport up
     --mode tun` starts with system DNS (the namespace's resolv.conf names the stub);
  4. the same chromium, resolving through the system resolver (its own DNS client and
     DoH off), opens http://app.corp.test/ and shows the internal page's text; a name
     outside eng-user's policy (finance.corp.test) does not load;
  5. `down` restores the namespace's resolv.conf byte for byte.
Screenshots: build/test-artifacts/browser-*.png under the source tree.

Usage: browser_login.py CONTROLLER CONNECTOR SALLYPORT   (root; exit 77 = skipped when
chromium, node, the node modules or a lab tool is missing)
"""
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))

if len(sys.argv) < 4:
    sys.exit("usage: browser_login.py CONTROLLER CONNECTOR SALLYPORT")
CHROMIUM = os.environ.get("SALLYPORT_CHROMIUM") or "/usr/bin/chromium"
if os.geteuid() != 0:
    print("skip: needs root (network namespaces)")
    sys.exit(77)
if not os.path.exists(CHROMIUM) or shutil.which("node") is None:
    print(f"skip: {CHROMIUM} or node missing (scripts/install-deps --e2e)")
    sys.exit(77)
import netlab  # noqa: E402
import splab  # noqa: E402

for d in (os.path.join(splab.OIDC, "node_modules", "oidc-provider"),
          os.path.join(HERE, "node_modules", "playwright-core")):
    if not os.path.isdir(d):
        print(f"skip: {d} missing (scripts/install-test-tools)")
        sys.exit(77)
for tool in ("dnsmasq", "nginx", "curl", "nft"):
    if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
        print(f"skip: {tool} missing (scripts/install-deps --e2e)")
        sys.exit(77)

CTL, CONN, SP = sys.argv[1:4]
ARTIFACTS = os.path.join(SRC, "build", "test-artifacts")
passed = failed = 0


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok: {name}", flush=True)
    else:
        failed += 1
        print(f"FAIL: {name} {str(detail)[:1500]}", flush=True)


class Driver:
    """browser_login.mjs in client: one JSON command line in, one JSON answer line out."""

    def __init__(self, lab):
        self.p = lab.track("browser", subprocess.Popen(
            lab.prefix("client") + ["node", os.path.join(HERE, "browser_login.mjs"),
                                    "--chromium", CHROMIUM, "--artifacts", ARTIFACTS],
            cwd=HERE, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=open(os.path.join(lab.work, "browser.log"), "w"), text=True))
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def answer(self, limit=60):
        try:
            line = self.lines.get(timeout=limit)
        except queue.Empty:
            return {"ok": False, "error": f"no answer in {limit} s"}
        if line is None:
            return {"ok": False, "error": f"driver exited ({self.p.poll()})"}
        try:
            return json.loads(line)
        except ValueError:
            return {"ok": False, "error": f"not JSON: {line!r}"}

    def ask(self, cmd, limit=60):
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        return self.answer(limit)

    def quit(self):
        try:
            self.p.stdin.write('{"cmd":"quit"}\n')
            self.p.stdin.close()
            return self.p.wait(timeout=20)
        except (OSError, subprocess.TimeoutExpired):
            return None


t_start = time.time()
os.makedirs(ARTIFACTS, exist_ok=True)
for f in os.listdir(ARTIFACTS):  # no stale screenshot from an earlier run
    if f.startswith("browser-") and f.endswith(".png"):
        os.unlink(os.path.join(ARTIFACTS, f))
L = splab.SallyportLab(ctl=CTL, conn=CONN, sp=SP, keep="--keep" in sys.argv, postgres=False,
                       browser=True)
lab = L.lab
names = list(lab.ns.values())
resolv = os.path.join("/etc/netns", lab.ns["client"], "resolv.conf")
try:
    L.start()
    rc, out, _ = L.sp("eng-user", "status")
    check("lab up; eng-user not signed in yet", "(signed out)" in out, f"{rc} {out}")
    lab.set_resolver("client", splab.UPSTREAM)
    drv = Driver(lab)
    ready = drv.answer(limit=90)
    check("chromium started inside the client namespace", ready.get("ready") is True,
          str(ready) + lab.log("browser.log")[-1500:])

    # ---- sign-in: login page, consent, redirect to the client's loopback listener ----
    p, url = L.login_begin("eng-user")
    check("`sallyport login --no-browser` prints the controller's sign-in URL",
          url.startswith(splab.URL + "/auth/login?"), url)
    a = drv.ask({"cmd": "login", "url": url, "username": "eng-user", "password": "eng-pass"},
                limit=120)
    lg, cs, fin = a.get("login", {}), a.get("consent", {}), a.get("final", {})
    check("browser lands on the IdP's login page (the issuer's /interaction/, h1 'Sign in')",
          a.get("ok") and lg.get("url", "").startswith(L.issuer + "/interaction/") and
          lg.get("h1") == "Sign in" and lg.get("title", "").startswith("Sign in"), a)
    check("after the password the IdP asks for consent for the controller",
          cs.get("h1") == "Allow access" and "for eng-user" in cs.get("text", "") and
          "groups" in cs.get("text", "") and
          cs.get("url", "").startswith(L.issuer + "/interaction/"), cs)
    check("the browser is sent back to the client's loopback listener, which says signed in",
          fin.get("url", "").startswith("http://127.0.0.1:") and fin.get("status") == 200 and
          "Sallyport: signed in" in fin.get("text", ""), fin)
    rc, out, err = L.login_end("eng-user", p)
    check("`sallyport login` exits 0: signed in as eng-user@example.com",
          rc == 0 and out.startswith("signed in as eng-user@example.com"), f"{rc} {out} {err}")
    rc, out, _ = L.sp("eng-user", "status", "--json")
    try:
        st = json.loads(out)
    except ValueError:
        st = {}
    check("`sallyport status` names eng-user as signed in",
          st.get("signed_in") is True and "eng-user@example.com" in json.dumps(st), out)

    # ---- the daemon (tun mode, system DNS) and the internal page in the same browser ----
    L.seed_policies(only=["engineering"])
    before = open(resolv, "rb").read()
    s = L.up("tun")
    now = open(resolv, "rb").read().decode()
    check("daemon up in tun mode; the namespace's resolv.conf names the stub 127.83.80.53",
          s.get("mode") == "tun" and s.get("system_dns") == "resolv.conf" and
          [ln.split()[1] for ln in now.splitlines() if ln.startswith("nameserver ")] ==
          [splab.STUB], f"{s} {now}")
    a = drv.ask({"cmd": "open", "url": "http://app.corp.test/", "shot": "internal-page"})
    check("chromium opens http://app.corp.test/ through the stub and the tunnel: the internal"
          " page's text", a.get("ok") and a.get("status") == 200 and
          a.get("h1") == "app.corp.test" and
          f"An internal page, served by nginx on {netlab.INTERNAL['app']} inside the private"
          " network." in a.get("text", ""), a)
    a = drv.ask({"cmd": "open", "url": "http://finance.corp.test/", "shot": "finance-refused"})
    check("finance.corp.test (not eng-user's) does not load in the browser",
          not a.get("ok") and "ERR_NAME_NOT_RESOLVED" in a.get("error", ""), a)
    s = L.status()
    check("the daemon counted the browser's flow", s.get("flows", {}).get("total", 0) >= 1,
          s.get("flows"))
    check("driver quits cleanly", drv.quit() == 0, lab.log("browser.log")[-1500:])
    rc, prc = L.down()
    check("`down` (exit 0) puts the namespace's resolv.conf back byte for byte",
          rc == 0 and prc == 0 and open(resolv, "rb").read() == before, f"{rc} {prc}")
    shots = sorted(f for f in os.listdir(ARTIFACTS) if f.startswith("browser-"))
    check("screenshots written for each step", shots == [
        "browser-1-idp-login.png", "browser-2-idp-consent.png",
        "browser-3-client-signed-in.png", "browser-4-internal-page.png",
        "browser-5-finance-refused-error.png"], shots)
    check("daemon log free of sanitizer reports", "Sanitizer" not in lab.log("sallyport-tun.log"),
          lab.log("sallyport-tun.log")[-1500:])
except Exception as e:  # a bring-up failure is a failure, with the logs' tails
    import traceback
    traceback.print_exc()
    check("no exception", False, str(e))
    for n in ("controller.log", "provider.err", "browser.log", "idp-forward-ctl.log",
              "idp-forward-client.log", "sallyport-tun.log"):
        print(f"--- {n}\n{lab.log(n)[-1500:]}", flush=True)
finally:
    L.close()

if "--keep" not in sys.argv:
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    check("teardown: namespaces deleted", not any(n in left.split() for n in names), left)
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    check("teardown: no process of the run left", L.work not in procs, procs[-1000:])
print(f"figure: browser_login wall time {time.time() - t_start:.1f} s", flush=True)
print(f"browser_login: {passed} passed, {failed} failed", flush=True)
sys.exit(1 if failed else 0)
