#!/usr/bin/env python3
"""Integration test: the admin console in a real browser.

Starts the test IdP (tests/oidc/provider.mjs) with a client whose redirect is the
controller's /auth/callback and an account listed in the controller's admin_emails, then
the controller, then tests/e2e/console.spec.mjs, which drives Debian's chromium through
playwright-core: sign-in at the IdP (login form and consent), the console's forms, an API
error shown, an access check, CSRF refusal from the page, sign-out. Screenshots go to
build/test-artifacts/console-*.png under the source tree.

Skipped (exit 0, with a message) only when /usr/bin/chromium is absent.

Usage: controller_console_e2e.py PATH-TO-sallyport-controller (SALLYPORT_SOURCE_DIR set).
"""
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

BIN = sys.argv[1] if len(sys.argv) > 1 else sys.exit("usage: controller_console_e2e.py CONTROLLER")
SRC = os.environ.get("SALLYPORT_SOURCE_DIR") or os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OIDC = os.path.join(SRC, "tests", "oidc")
E2E = os.path.join(SRC, "tests", "e2e")
# Debian's chromium; SALLYPORT_CHROMIUM overrides it (used to check the skip message).
CHROMIUM = os.environ.get("SALLYPORT_CHROMIUM") or "/usr/bin/chromium"
NAME = "controller_console_e2e"
USERNAME, PASSWORD, EMAIL = "console-admin", "console-pass", "console.admin@example.com"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start_ready(cmd, work, name, procs):
    """Starts a tool that prints one JSON ready line on stdout; returns the line."""
    out = open(os.path.join(work, name + ".out"), "w+")
    err = open(os.path.join(work, name + ".log"), "w")
    p = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=OIDC)
    procs.append(p)
    for _ in range(200):
        out.seek(0)
        line = out.readline()
        if line.endswith("\n"):
            return json.loads(line)
        if p.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{name} did not start: " + open(err.name).read()[-500:])


def wait_healthy(url, proc):
    for _ in range(400):
        if proc.poll() is not None:
            raise RuntimeError(f"controller exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError("controller did not become healthy")


def seed_client_session(db):
    """A person with a pending device and a live client session, as a native sign-in
    would leave them, for the console's Devices, Sessions and Users buttons."""
    now = int(time.time())
    user, device, session = "a1" * 16, "b2" * 16, "c3" * 16
    con = sqlite3.connect(db)
    try:
        con.execute("INSERT INTO users (id, kind, issuer, subject, email, email_verified,"
                    " display_name, role, created_at, updated_at, last_sign_in_at)"
                    " VALUES (?, 'person', 'https://idp.invalid', 'laptop-owner', ?, 1,"
                    " 'Laptop Owner', 'user', ?, ?, ?)",
                    (user, "laptop.owner@example.com", now, now, now))
        con.execute("INSERT INTO devices (id, user_id, public_key_thumbprint, public_key_pem,"
                    " name, state, first_seen_at, last_seen_at, updated_at)"
                    " VALUES (?, ?, ?, ?, 'e2e-laptop', 'pending', ?, ?, ?)",
                    (device, user, "T" * 43, "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n",
                     now, now, now))
        con.execute("INSERT INTO sessions (id, user_id, device_id, auth_method, auth_time, amr,"
                    " created_at, last_used_at, expires_at) VALUES (?, ?, ?, 'oidc', ?,"
                    " '[\"pwd\"]', ?, ?, ?)", (session, user, device, now, now, now, now + 3600))
        con.commit()
    finally:
        con.close()


def main():
    if not os.path.exists(CHROMIUM):
        print(f"{NAME}: SKIPPED: {CHROMIUM} is absent (install Debian's chromium to run the "
              "browser test)")
        return 0
    missing = [d for d in (os.path.join(OIDC, "node_modules", "oidc-provider"),
                           os.path.join(E2E, "node_modules", "playwright-core")) if not os.path.isdir(d)]
    if shutil.which("node") is None or missing:
        print(f"{NAME}: node or {', '.join(missing) or 'node'} missing: run scripts/install-test-tools",
              file=sys.stderr)
        print(f"{NAME}: 0 passed, 1 failed")
        return 1

    work = tempfile.mkdtemp(prefix="sp-console-e2e-")
    artifacts = os.path.join(SRC, "build", "test-artifacts")
    os.makedirs(artifacts, exist_ok=True)
    for f in os.listdir(artifacts):  # no stale screenshot from an earlier run
        if f.startswith("console-") and f.endswith(".png"):
            os.unlink(os.path.join(artifacts, f))
    procs = []
    rc = 1
    counts = (0, 1)
    started = time.monotonic()
    try:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        cfg = json.load(open(os.path.join(OIDC, "sample-config.json")))
        for c in cfg["clients"]:
            if c["client_id"] == "sallyport-controller":
                c["redirect_uris"] = [url + "/auth/callback"]
                c.pop("skip_consent", None)  # the browser goes through the consent page
        cfg["accounts"].append({"sub": USERNAME, "password": PASSWORD, "email": EMAIL,
                                "email_verified": True, "name": "Console Admin",
                                "groups": ["engineering"]})
        cfg_path = os.path.join(work, "provider.json")
        json.dump(cfg, open(cfg_path, "w"))
        ready = start_ready(["node", os.path.join(OIDC, "provider.mjs"), "--config", cfg_path,
                             "--port", "0", "--quiet"], work, "provider", procs)

        state = os.path.join(work, "ctl")
        subprocess.run([BIN, "migrate", "--state-dir", state], capture_output=True, check=True)
        seed_client_session(os.path.join(state, "controller.db"))
        env = dict(os.environ, SALLYPORT_OIDC_CLIENT_SECRET="sallyport-controller-test-secret")
        ctl = subprocess.Popen(
            [BIN, "serve", "--state-dir", state, "--http-listen", f"127.0.0.1:{port}",
             "--public-url", url, "--oidc-issuer", ready["issuer"],
             "--oidc-client-id", "sallyport-controller", "--oidc-groups-claim", "groups",
             "--admin-emails", EMAIL],
            env=env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "controller.log"), "w"))
        procs.append(ctl)
        wait_healthy(url, ctl)

        r = subprocess.run(["node", os.path.join(E2E, "console.spec.mjs"), "--base", url,
                            "--chromium", CHROMIUM, "--artifacts", artifacts,
                            "--username", USERNAME, "--password", PASSWORD, "--email", EMAIL],
                           cwd=E2E, timeout=120, stdout=subprocess.PIPE, text=True)
        print(r.stdout, end="", flush=True)
        m = re.search(r"^console e2e: (\d+) passed, (\d+) failed", r.stdout, re.M)
        if m:
            counts = (int(m.group(1)), int(m.group(2)))
        rc = r.returncode if m else 1
    except Exception as e:  # a crash is a failure, with the reason
        print(f"{NAME}: FAIL: {e!r}")
        rc = 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for p in procs:
            if p.args[0] == BIN and p.returncode not in (0, -15):
                print(f"{NAME}: FAIL: controller exited with {p.returncode}")
                counts = (counts[0], counts[1] + 1)
                rc = 1
        if rc != 0:
            for f in sorted(os.listdir(work)):
                if f.endswith(".log"):
                    print(f"--- {f}\n" + open(os.path.join(work, f)).read()[-3000:])
        shutil.rmtree(work, ignore_errors=True)
    if rc != 0 and counts[1] == 0:
        counts = (counts[0], 1)
    print(f"{NAME}: {counts[0]} passed, {counts[1]} failed ({time.monotonic() - started:.1f}s)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
