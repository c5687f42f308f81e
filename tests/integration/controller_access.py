#!/usr/bin/env python3
"""Integration test: POST /api/v1/access/check on a running sallyport-controller.

Creates users, groups, memberships, a network, resources, policies, devices and sessions
directly in the controller's sqlite file (as the schema's CHECKs require), then asks the
access check about them: every reason, the most specific resource winning, a change
taking effect without a restart, who may call, and bad input refused with a 400 naming
the field and changing nothing.

Usage: controller_access.py PATH-TO-sallyport-controller
"""
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

NAME = "controller_access"


def hexid(n):
    return ("%02x" % n) * 16


U_ALICE, U_BOB, U_CAROL, U_DAVE = hexid(1), hexid(2), hexid(3), hexid(4)
G_ENG, G_OPS = hexid(0x11), hexid(0x12)
NET = hexid(0x21)
R_GRAFANA, R_WILD, R_DB, R_LAB, R_VAULT = hexid(0x31), hexid(0x32), hexid(0x33), hexid(0x34), hexid(0x35)
P_GRAFANA, P_WILD, P_LAB, P_VAULT, P_DB = hexid(0x41), hexid(0x42), hexid(0x43), hexid(0x44), hexid(0x45)
D_OLD, D_PENDING, D_BLOCKED, D_MFA = hexid(0x51), hexid(0x52), hexid(0x53), hexid(0x54)
S_OLD, S_PENDING, S_MFA = hexid(0x61), hexid(0x62), hexid(0x63)


def thumb(n):
    # 43 base64url characters, unique per device
    return ("T%02d" % n) + "A" * 40


def seed(db):
    now = int(time.time())
    c = sqlite3.connect(db, isolation_level=None, timeout=10)
    c.execute("PRAGMA foreign_keys = ON")
    c.execute("BEGIN")
    for uid, sub, email, disabled in [(U_ALICE, "alice", "alice@corp.example", 0),
                                      (U_BOB, "bob", "bob@corp.example", 0),
                                      (U_CAROL, "carol", "carol@corp.example", 1),
                                      (U_DAVE, "dave", "dave@corp.example", 0)]:
        c.execute("INSERT INTO users (id, issuer, subject, email, disabled, created_at, updated_at)"
                  " VALUES (?, 'https://idp.example', ?, ?, ?, 1, 1)", (uid, sub, email, disabled))
    c.execute("INSERT INTO groups (id, name, created_at, updated_at) VALUES (?, 'eng', 1, 1), (?, 'ops', 1, 1)",
              (G_ENG, G_OPS))
    for uid, gid in [(U_ALICE, G_ENG), (U_CAROL, G_ENG), (U_DAVE, G_OPS)]:
        c.execute("INSERT INTO memberships (user_id, group_id, created_at) VALUES (?, ?, 1)", (uid, gid))
    c.execute("INSERT INTO remote_networks (id, name, created_at, updated_at) VALUES (?, 'vpc', 1, 1)", (NET,))
    resources = [
        (R_GRAFANA, "Grafana", "grafana.corp.example", "grafana.sp", '["443"]', '"none"', 0),
        (R_WILD, "Corp", "*.corp.example", None, '"all"', '"none"', 0),
        (R_DB, "DB", "db.corp.example", None, '["5432"]', '"none"', 0),
        (R_LAB, "Lab", "10.20.0.0/16", None, '["22"]', '"none"', 0),
        (R_VAULT, "Vault", "vault.corp.example", None, '["8200"]', '"none"', 0),
    ]
    for r in resources:
        c.execute("INSERT INTO resources (id, network_id, name, address, alias, tcp_ports, udp_ports, icmp,"
                  " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, 1)",
                  (r[0], NET) + r[1:])
    for pid, gid, rid, mfa, age in [(P_GRAFANA, G_ENG, R_GRAFANA, 0, 0), (P_WILD, G_ENG, R_WILD, 0, 0),
                                    (P_LAB, G_ENG, R_LAB, 0, 3600), (P_VAULT, G_ENG, R_VAULT, 1, 0)]:
        c.execute("INSERT INTO policies (id, group_id, resource_id, require_mfa, max_session_age_s,"
                  " created_at, updated_at) VALUES (?, ?, ?, ?, ?, 1, 1)", (pid, gid, rid, mfa, age))
    for n, (did, state) in enumerate([(D_OLD, "approved"), (D_PENDING, "pending"),
                                      (D_BLOCKED, "blocked"), (D_MFA, "approved")]):
        c.execute("INSERT INTO devices (id, user_id, public_key_thumbprint, public_key_pem, state,"
                  " first_seen_at, last_seen_at, updated_at) VALUES (?, ?, ?, 'pem', ?, 1, 1, 1)",
                  (did, U_ALICE, thumb(n), state))
    for sid, did, auth_time, amr in [(S_OLD, D_OLD, now - 7200, '["pwd"]'),
                                     (S_PENDING, D_PENDING, now, '["pwd","mfa"]'),
                                     (S_MFA, D_MFA, now - 60, '["pwd","mfa"]')]:
        c.execute("INSERT INTO sessions (id, user_id, device_id, auth_method, auth_time, amr, created_at,"
                  " last_used_at, expires_at) VALUES (?, ?, ?, 'oidc', ?, ?, ?, ?, ?)",
                  (sid, U_ALICE, did, auth_time, amr, now - 7200, now, now + 86400))
    c.execute("COMMIT")
    c.close()


def sql(db, statement, args=()):
    c = sqlite3.connect(db, isolation_level=None, timeout=10)
    c.execute("PRAGMA foreign_keys = ON")
    rows = c.execute(statement, args).fetchall()
    c.close()
    return rows


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Runner:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, ok, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
            print("FAIL: %s %s" % (name, detail))


def call(url, key, body, raw=None):
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url + "/api/v1/access/check", data=data, method="POST")
    req.add_header("Content-Type", "application/json")
    if key is not None:
        req.add_header("Authorization", "Bearer " + key)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, text


def main():
    binary = sys.argv[1]
    work = tempfile.mkdtemp(prefix="sp-access-")
    state = os.path.join(work, "state")
    db = os.path.join(state, "controller.db")
    proc = None
    t = Runner()
    try:
        subprocess.run([binary, "migrate", "--state-dir", state], check=True, capture_output=True)
        admin = subprocess.run([binary, "admin-key", "create", "--name", "ops", "--state-dir", state],
                               check=True, capture_output=True, text=True).stdout.strip()
        auditor = subprocess.run([binary, "admin-key", "create", "--name", "audit", "--role", "auditor",
                                  "--state-dir", state], check=True, capture_output=True, text=True).stdout.strip()
        seed(db)
        port = free_port()
        url = "http://127.0.0.1:%d" % port
        log = open(os.path.join(work, "serve.log"), "w")
        proc = subprocess.Popen([binary, "serve", "--state-dir", state, "--http-listen", "127.0.0.1:%d" % port,
                                 "--public-url", url], stderr=log)
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1).read()
                break
            except OSError:
                time.sleep(0.05)

        def check_access(name, body, allowed, reason, resource=None, policy=None, phrase=None, key=None):
            status, r = call(url, key or admin, body)
            ok = status == 200 and isinstance(r, dict) and r.get("allowed") is allowed and r.get("reason") == reason
            ok = ok and set(r) == {"allowed", "reason", "resource", "policy_id", "explanation"}
            ok = ok and (r["resource"] or {}).get("id") == resource and r["policy_id"] == policy
            ok = ok and isinstance(r["explanation"], str) and len(r["explanation"]) > 10
            if phrase is not None:
                ok = ok and phrase in r["explanation"]
            t.check(name, ok, "%s %s" % (status, r))
            return r

        a = {"user_id": U_ALICE}
        r = check_access("allowed by policy", dict(a, address="grafana.corp.example", port=443, protocol="tcp"),
                         True, "allowed", R_GRAFANA, P_GRAFANA, "Allowed")
        t.check("resource shape", r["resource"] == {
            "id": R_GRAFANA, "name": "Grafana", "network_id": NET, "address": "grafana.corp.example",
            "alias": "grafana.sp", "tcp": ["443"], "udp": "none", "icmp": False}, r["resource"])
        check_access("by e-mail, any case", {"email": "Alice@Corp.Example", "address": "grafana.sp", "port": 443},
                     True, "allowed", R_GRAFANA, P_GRAFANA)
        check_access("auditor may ask", dict(a, address="grafana.corp.example", port=443), True, "allowed",
                     R_GRAFANA, P_GRAFANA, key=auditor)
        check_access("no resource", dict(a, address="www.example.org", port=443), False, "no_resource",
                     phrase="no resource covers www.example.org")
        check_access("no policy", {"user_id": U_BOB, "address": "grafana.corp.example", "port": 443},
                     False, "no_policy", R_GRAFANA, phrase="none of the user's groups")
        check_access("port not allowed", dict(a, address="grafana.corp.example", port=80), False,
                     "port_not_allowed", R_GRAFANA, phrase="port 80")
        check_access("protocol not allowed", dict(a, address="grafana.corp.example", port=53, protocol="udp"),
                     False, "protocol_not_allowed", R_GRAFANA, phrase="no udp")
        check_access("icmp without port", dict(a, address="10.20.1.1", protocol="icmp"), False,
                     "protocol_not_allowed", R_LAB)
        check_access("exact name beats the wildcard", dict(a, address="db.corp.example", port=5432),
                     False, "no_policy", R_DB)
        check_access("wildcard", dict(a, address="wiki.corp.example", port=8080), True, "allowed", R_WILD, P_WILD)
        check_access("cidr", dict(a, address="10.20.3.4", port=22), True, "allowed", R_LAB, P_LAB,
                     phrase="assumed a fresh sign-in")
        check_access("mfa required (device session without mfa)",
                     dict(a, device_id=D_OLD, address="vault.corp.example", port=8200), False,
                     "mfa_required", R_VAULT, P_VAULT, "multi-factor")
        check_access("mfa present", dict(a, device_id=D_MFA, address="vault.corp.example", port=8200),
                     True, "allowed", R_VAULT, P_VAULT)
        check_access("session too old", dict(a, device_id=D_OLD, address="10.20.3.4", port=22), False,
                     "session_too_old", R_LAB, P_LAB, "3600 seconds")
        check_access("fresh session", dict(a, device_id=D_MFA, address="10.20.3.4", port=22), True,
                     "allowed", R_LAB, P_LAB)
        check_access("blocked device", dict(a, device_id=D_BLOCKED, address="grafana.sp", port=443), False,
                     "device_blocked")
        check_access("pending device with auto approval", dict(a, device_id=D_PENDING, address="grafana.sp",
                                                               port=443), True, "allowed", R_GRAFANA, P_GRAFANA)
        sql(db, "UPDATE settings SET device_approval = 'admin'")
        check_access("pending device with admin approval", dict(a, device_id=D_PENDING, address="grafana.sp",
                                                                port=443), False, "device_not_approved")
        sql(db, "UPDATE settings SET device_approval = 'auto'")
        check_access("disabled user", {"user_id": U_CAROL, "address": "grafana.sp", "port": 443}, False,
                     "user_disabled")

        # A change takes effect on the next request, without a restart.
        sql(db, "INSERT INTO policies (id, group_id, resource_id, created_at, updated_at) VALUES (?, ?, ?, 1, 1)",
            (P_DB, G_OPS, R_DB))
        check_access("new policy applies", {"user_id": U_DAVE, "address": "db.corp.example", "port": 5432},
                     True, "allowed", R_DB, P_DB)
        sql(db, "DELETE FROM memberships WHERE user_id = ?", (U_DAVE,))
        check_access("removed membership applies", {"user_id": U_DAVE, "address": "db.corp.example",
                                                    "port": 5432}, False, "no_policy", R_DB)

        # Who may call.
        status, r = call(url, None, dict(a, address="grafana.sp", port=443))
        t.check("no key is 401", status == 401, status)
        status, r = call(url, "spk_" + "A" * 43, dict(a, address="grafana.sp", port=443))
        t.check("unknown key is 401", status == 401, status)

        # Bad input: 400 (or 404) naming the field, and nothing changes.
        before = sql(db, "SELECT (SELECT count(*) FROM changes), (SELECT count(*) FROM audit_events)")
        bad = [
            ("unknown field", dict(a, address="grafana.sp", port=443, ports=1), 400, 'unknown field "ports"'),
            ("missing address", dict(a, port=443), 400, "address"),
            ("address type", dict(a, address=7, port=443), 400, "address"),
            ("address syntax", dict(a, address="bad name!", port=443), 400, "address"),
            ("both user_id and email", dict(a, email="alice@corp.example", address="x.example", port=1), 400,
             "user_id or email"),
            ("neither user_id nor email", {"address": "x.example", "port": 1}, 400, "user_id or email"),
            ("port zero", dict(a, address="grafana.sp", port=0), 400, "port"),
            ("port too big", dict(a, address="grafana.sp", port=65536), 400, "port"),
            ("port string", dict(a, address="grafana.sp", port="443"), 400, "port"),
            ("port missing", dict(a, address="grafana.sp"), 400, "port"),
            ("protocol", dict(a, address="grafana.sp", port=443, protocol="sctp"), 400, "protocol"),
            ("unknown user", {"user_id": hexid(0x99), "address": "grafana.sp", "port": 443}, 404, "user_id"),
            ("unknown email", {"email": "nobody@corp.example", "address": "grafana.sp", "port": 443}, 404,
             "email"),
            ("unknown device", dict(a, device_id=hexid(0x98), address="grafana.sp", port=443), 404, "device_id"),
            ("device of another user", {"user_id": U_BOB, "device_id": D_OLD, "address": "grafana.sp",
                                        "port": 443}, 404, "device_id"),
        ]
        for name, body, want, phrase in bad:
            status, r = call(url, admin, body)
            message = r.get("error", {}).get("message", "") if isinstance(r, dict) else ""
            t.check(name, status == want and phrase in message, "%s %s" % (status, r))
        status, r = call(url, admin, None, raw=b'{"user_id":')
        t.check("malformed JSON", status == 400, status)
        status, r = call(url, admin, None, raw=b'[1]')
        t.check("not an object", status == 400, status)
        after = sql(db, "SELECT (SELECT count(*) FROM changes), (SELECT count(*) FROM audit_events)")
        t.check("bad input changes nothing", before == after, "%s %s" % (before, after))

        proc.terminate()
        rc = proc.wait(timeout=30)
        proc = None
        t.check("controller stops cleanly", rc == 0, rc)
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        if t.failed and os.path.exists(os.path.join(work, "serve.log")):
            sys.stdout.write(open(os.path.join(work, "serve.log")).read()[-4000:])
        shutil.rmtree(work, ignore_errors=True)
    print("%s: %d passed, %d failed" % (NAME, t.passed, t.failed))
    return 1 if t.failed else 0


if __name__ == "__main__":
    sys.exit(main())
