#!/usr/bin/env python3
"""Integration test: the admin REST API (/api/v1) of sallyport-controller.

Starts the controller on a free loopback port with a temporary state directory, then
drives every collection through HTTP: create, get, list with pagination and filters,
update, delete; bad input (malformed JSON, wrong types, unknown fields, oversize bodies,
bad CIDRs, patterns and port ranges, unknown ids) that must be refused and change
nothing; role checks (auditor reads, auditor cannot write, no key, wrong key, revoked
key); the audit event of every mutation with its before/after objects; and the JSON-lines
export. Rows the API cannot create (users, devices, sessions, connectors, flow events)
are inserted straight into the database, as sign-in and enrollment will.

Usage: controller_admin_api.py PATH-TO-sallyport-controller
"""
import http.client
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse

BIN = sys.argv[1] if len(sys.argv) > 1 else sys.exit("usage: controller_admin_api.py PATH-TO-sallyport-controller")
passed = 0
failed = 0


def check(name, condition, detail=""):
    global passed, failed
    if condition:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {name} {detail}")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


work = tempfile.mkdtemp(prefix="sp-admin-api-")
state = os.path.join(work, "state")
proc = None
port = free_port()


def run(*args):
    return subprocess.run([BIN, *args, "--state-dir", state], capture_output=True, text=True, timeout=60)


class Reply:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.raw = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        return f"{self.status} {self.raw[:300]!r}"


def call(method, path, body=None, key="admin", raw=None, content_type="application/json", query=None):
    """One request; body is JSON-encoded unless raw bytes are given."""
    headers = {}
    if key is not None:
        headers["Authorization"] = "Bearer " + (KEYS[key] if key in KEYS else key)
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
    if data is not None:
        headers["Content-Type"] = content_type
    if query:
        path += "?" + urllib.parse.urlencode(query)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        text = resp.read().decode("utf-8", "replace")
        return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, text)
    finally:
        conn.close()


def db():
    conn = sqlite3.connect(os.path.join(state, "controller.db"), timeout=10)
    conn.row_factory = sqlite3.Row
    return conn


def sql(query, *params):
    with db() as conn:
        rows = conn.execute(query, params).fetchall()
    return rows


def audit_count():
    return sql("SELECT count(*) AS n FROM audit_events")[0]["n"]


def audit(action, target_id):
    rows = sql("SELECT * FROM audit_events WHERE action = ? AND target_id = ? ORDER BY id", action, target_id)
    return rows


def hexid(n):
    return f"{n:032x}"


KEYS = {}
try:
    os.makedirs(work, exist_ok=True)
    r = run("admin-key", "create", "--name", "ops")
    KEYS["admin"] = r.stdout.strip()
    r = run("admin-key", "create", "--name", "watcher", "--role", "auditor")
    KEYS["auditor"] = r.stdout.strip()
    check("keys made", KEYS["admin"].startswith("spk_") and KEYS["auditor"].startswith("spk_"))
    log = open(os.path.join(work, "serve.log"), "w")
    proc = subprocess.Popen([BIN, "serve", "--state-dir", state, "--http-listen", f"127.0.0.1:{port}",
                             "--public-url", f"http://127.0.0.1:{port}", "--log-format", "json"],
                            stdout=log, stderr=log)
    for _ in range(200):
        try:
            if call("GET", "/healthz", key=None).status == 200:
                break
        except OSError:
            time.sleep(0.05)
    else:
        sys.exit("controller did not start")

    # ---- roles ----
    check("admin may read", call("GET", "/api/v1/resources").status == 200)
    check("auditor may read", call("GET", "/api/v1/resources", key="auditor").status == 200)
    r = call("POST", "/api/v1/remote-networks", {"name": "nope"}, key="auditor")
    check("auditor may not write", r.status == 403 and r.json["error"]["code"] == "forbidden", r)
    check("auditor may not delete", call("DELETE", f"/api/v1/resources/{hexid(1)}", key="auditor").status == 403)
    r = call("GET", "/api/v1/resources", key=None)
    check("no key is 401", r.status == 401 and r.json["error"]["code"] == "unauthorized", r)
    check("no key is 401 with WWW-Authenticate", "bearer" in r.headers.get("www-authenticate", "").lower())
    check("wrong key is 401", call("GET", "/api/v1/resources", key="spk_" + "A" * 43).status == 401)
    check("garbage key is 401", call("GET", "/api/v1/resources", key="hello").status == 401)
    check("no network was made by the auditor", sql("SELECT count(*) AS n FROM remote_networks")[0]["n"] == 0)

    # ---- remote networks ----
    r = call("POST", "/api/v1/remote-networks", {"name": "vpc-east", "description": "AWS"})
    check("network create is 201", r.status == 201, r)
    net = r.json
    check("network has an id", len(net["id"]) == 32 and net["name"] == "vpc-east" and net["description"] == "AWS")
    r = call("GET", f"/api/v1/remote-networks/{net['id']}")
    check("network get", r.status == 200 and r.json == net, r)
    r = call("POST", "/api/v1/remote-networks", {"name": "vpc-east"})
    check("duplicate network name is 409 naming name", r.status == 409 and "name" in r.json["error"]["message"], r)
    weird = "eng'; DROP TABLE remote_networks;-- \"%_*"
    r = call("POST", "/api/v1/remote-networks", {"name": weird})
    check("SQL metacharacters are stored literally", r.status == 201 and r.json["name"] == weird, r)
    r = call("GET", "/api/v1/remote-networks", query={"name": weird})
    check("and found by exact filter", r.status == 200 and [x["name"] for x in r.json["items"]] == [weird], r)
    r = call("GET", "/api/v1/remote-networks", query={"name": "%"})
    check("LIKE metacharacters match nothing", r.status == 200 and r.json["items"] == [], r)
    r = call("PATCH", f"/api/v1/remote-networks/{net['id']}", {"description": None})
    check("network patch clears description", r.status == 200 and r.json["description"] is None and r.json["name"] == "vpc-east", r)
    ev = audit("remote_network.update", net["id"])
    check("update audited with before and after", len(ev) == 1 and json.loads(ev[0]["before_json"])["description"] == "AWS"
          and json.loads(ev[0]["after_json"])["description"] is None)
    check("audit names the actor, request and address", ev and ev[0]["actor_type"] == "api_key" and ev[0]["actor_label"] == "ops"
          and len(ev[0]["request_id"]) == 32 and ev[0]["source_address"] == "127.0.0.1")
    for name in ("n1", "n2", "n3", "n4", "n5"):
        call("POST", "/api/v1/remote-networks", {"name": name})
    seen, cursor, pages = [], None, 0
    while True:
        q = {"limit": 2}
        if cursor:
            q["cursor"] = cursor
        r = call("GET", "/api/v1/remote-networks", query=q)
        pages += 1
        if r.status != 200 or pages > 10:
            break
        check("page size at most limit", len(r.json["items"]) <= 2)
        seen += [x["id"] for x in r.json["items"]]
        cursor = r.json["next_cursor"]
        if cursor is None:
            break
    check("pagination walks all 7 networks once, in id order", len(seen) == 7 and seen == sorted(set(seen)) and pages == 4,
          f"{len(seen)} {pages}")
    full = call("GET", "/api/v1/remote-networks").json
    check("one page holds them all by default", len(full["items"]) == 7 and full["next_cursor"] is None)
    for bad in ({"limit": 0}, {"limit": 1001}, {"limit": "x"}, {"cursor": "zz"}, {"cursor": "1' OR '1'='1"}):
        r = call("GET", "/api/v1/remote-networks", query=bad)
        check(f"bad list query {bad} is 400", r.status == 400 and r.json["error"]["message"], r)
    check("limit 1000 is fine", call("GET", "/api/v1/remote-networks", query={"limit": 1000}).status == 200)

    # ---- bad input changes nothing ----
    before_audit = audit_count()
    before_rows = sql("SELECT count(*) AS n FROM remote_networks")[0]["n"]
    r = call("POST", "/api/v1/remote-networks", raw=b'{"name": "x",')
    check("malformed JSON is 400", r.status == 400 and r.json["error"]["code"] == "invalid_json", r)
    r = call("POST", "/api/v1/remote-networks", raw=b'["name"]')
    check("a non-object body is 400", r.status == 400, r)
    r = call("POST", "/api/v1/remote-networks", raw=b'{"name":"a","name":"b"}')
    check("duplicate keys are 400", r.status == 400, r)
    r = call("POST", "/api/v1/remote-networks", {"name": 5})
    check("wrong type is 400 naming the field", r.status == 400 and '"name"' in r.json["error"]["message"], r)
    r = call("POST", "/api/v1/remote-networks", {"name": "x", "colour": "red"})
    check("unknown field is 400 naming it", r.status == 400 and "colour" in r.json["error"]["message"], r)
    r = call("POST", "/api/v1/remote-networks", {})
    check("missing field is 400 naming it", r.status == 400 and '"name" is missing' in r.json["error"]["message"], r)
    r = call("POST", "/api/v1/remote-networks", {"name": "x" * 129})
    check("too long is 400", r.status == 400, r)
    r = call("POST", "/api/v1/remote-networks", {"name": "a\u0000b"})
    check("NUL in a name is 400", r.status == 400, r)
    r = call("POST", "/api/v1/remote-networks", raw=b'{"name":"x"}', content_type="text/plain")
    check("wrong content type is 415", r.status == 415, r)
    # A declared Content-Length over 1 MiB is answered before the body is read.
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw_sock:
        raw_sock.sendall(("POST /api/v1/remote-networks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEYS["admin"]
                          + "\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"name\":\"" % ((1 << 20) + 12)).encode())
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = raw_sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    check("oversize body is 413", answer.startswith(b"HTTP/1.1 413") and b"body_too_large" in answer, answer[:200])
    # Without a Content-Length the server learns the size while reading; it answers 413,
    # or closes first while the client is still sending. Either way nothing is stored
    # (the row and audit counts below).
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/api/v1/remote-networks", body=(b"x" * (64 << 10) for _ in range(20)),
                     encode_chunked=True,
                     headers={"Authorization": "Bearer " + KEYS["admin"], "Content-Type": "application/json"})
        resp = conn.getresponse()
        check("oversize chunked body is 413", resp.status == 413, resp.status)
        resp.read()
    except (ConnectionError, http.client.HTTPException):
        check("oversize chunked body is refused", True)
    finally:
        conn.close()
    r = call("PATCH", f"/api/v1/remote-networks/{net['id']}", {})
    check("empty patch is 400", r.status == 400, r)
    r = call("GET", f"/api/v1/remote-networks/{hexid(0xdead)}")
    check("unknown id is 404", r.status == 404 and r.json["error"]["code"] == "not_found", r)
    check("malformed id is 404", call("GET", "/api/v1/remote-networks/xyz").status == 404)
    check("unknown id patch is 404", call("PATCH", f"/api/v1/remote-networks/{hexid(7)}", {"name": "q"}).status == 404)
    check("unknown id delete is 404", call("DELETE", f"/api/v1/remote-networks/{hexid(7)}").status == 404)
    r = call("PUT", "/api/v1/remote-networks")
    check("wrong method is 405 with Allow", r.status == 405 and "GET" in r.headers.get("allow", ""), r)
    check("bad input wrote no row", sql("SELECT count(*) AS n FROM remote_networks")[0]["n"] == before_rows)
    check("bad input wrote no audit event", audit_count() == before_audit)

    # ---- resources ----
    base = {"name": "Grafana", "network_id": net["id"], "address": "Grafana.Corp.Example"}
    r = call("POST", "/api/v1/resources", base)
    check("resource create is 201", r.status == 201, r)
    res = r.json
    check("resource defaults and canonical address", res["address"] == "grafana.corp.example" and res["tcp"] == "all"
          and res["udp"] == "all" and res["icmp"] is True and res["alias"] is None, res)
    check("ports stored as canonical JSON", sql("SELECT tcp_ports FROM resources WHERE id = ?", res["id"])[0][0] == '"all"')
    r = call("POST", "/api/v1/resources", dict(base, name="db", address="10.1.2.0/24", alias="DB.sp",
                                                tcp=["5432", "22", "23", "8000-8100", "8050"], udp="none", icmp=False))
    check("resource with ports", r.status == 201 and r.json["tcp"] == ["22-23", "5432", "8000-8100"] and r.json["udp"] == "none"
          and r.json["alias"] == "db.sp" and r.json["icmp"] is False, r)
    res2 = r.json
    check("canonical port JSON in the row", sql("SELECT tcp_ports FROM resources WHERE id = ?", res2["id"])[0][0]
          == '["22-23","5432","8000-8100"]')
    before_audit = audit_count()
    before_rows = sql("SELECT count(*) AS n FROM resources")[0]["n"]
    cases = [
        ("bad CIDR", dict(base, name="b1", address="10.0.0.1/24"), "address"),
        ("bad pattern", dict(base, name="b2", address="*."), "address"),
        ("port 0", dict(base, name="b3", tcp=["0"]), "tcp"),
        ("reversed range", dict(base, name="b4", udp=["8100-8000"]), "udp"),
        ("ports as numbers", dict(base, name="b5", tcp=[22]), "tcp"),
        ("ports word", dict(base, name="b6", tcp="some"), "tcp"),
        ("icmp as string", dict(base, name="b7", icmp="yes"), "icmp"),
        ("bad alias", dict(base, name="b8", alias="*.sp"), "alias"),
        ("unknown field", dict(base, name="b9", owner="me"), "owner"),
        ("network_id not an id", dict(base, name="b10", network_id="1"), "network_id"),
        ("missing address", {"name": "b11", "network_id": net["id"]}, "address"),
    ]
    for label, body, field in cases:
        r = call("POST", "/api/v1/resources", body)
        check(f"resource {label} is 400 naming {field}", r.status == 400 and field in r.json["error"]["message"], r)
    r = call("POST", "/api/v1/resources", dict(base, name="b12", network_id=hexid(99)))
    check("unknown network is 404 naming network_id", r.status == 404 and "network_id" in r.json["error"]["message"], r)
    r = call("POST", "/api/v1/resources", dict(base, name="other", alias="db.sp"))
    check("alias taken is 409 naming alias", r.status == 409 and "alias" in r.json["error"]["message"], r)
    r = call("POST", "/api/v1/resources", dict(base))
    check("name taken in the network is 409", r.status == 409 and "name" in r.json["error"]["message"], r)
    check("refused resources wrote nothing", sql("SELECT count(*) AS n FROM resources")[0]["n"] == before_rows
          and audit_count() == before_audit)
    r = call("PATCH", f"/api/v1/resources/{res['id']}", {"tcp": ["443", "80"], "alias": "grafana.sp"})
    check("resource patch", r.status == 200 and r.json["tcp"] == ["80", "443"] and r.json["alias"] == "grafana.sp"
          and r.json["address"] == "grafana.corp.example" and r.json["name"] == "Grafana", r)
    r = call("PATCH", f"/api/v1/resources/{res['id']}", {"address": "10.0.0.1/24"})
    check("resource patch with bad CIDR is 400", r.status == 400 and "address" in r.json["error"]["message"], r)
    check("and changed nothing", call("GET", f"/api/v1/resources/{res['id']}").json["address"] == "grafana.corp.example")
    r = call("PATCH", f"/api/v1/resources/{res['id']}", {"id": hexid(1)})
    check("id cannot be patched", r.status == 400, r)
    ev = audit("resource.update", res["id"])
    check("resource update audited", len(ev) == 1 and json.loads(ev[0]["before_json"])["tcp"] == "all"
          and json.loads(ev[0]["after_json"])["tcp"] == ["80", "443"])
    net2 = call("POST", "/api/v1/remote-networks", {"name": "dc-1"}).json
    call("POST", "/api/v1/resources", dict(base, name="ssh", network_id=net2["id"], address="ssh.dc"))
    r = call("GET", "/api/v1/resources", query={"network_id": net2["id"]})
    check("resources filtered by network", r.status == 200 and [x["name"] for x in r.json["items"]] == ["ssh"], r)
    check("bad filter id is 400", call("GET", "/api/v1/resources", query={"network_id": "x"}).status == 400)
    r = call("DELETE", f"/api/v1/remote-networks/{net2['id']}")
    check("network in use is 409", r.status == 409 and "in use" in r.json["error"]["message"], r)

    # ---- users (as sign-in makes them), groups and members ----
    now = int(time.time())
    with db() as c:
        for i, email in ((1, "ann@corp.example"), (2, "bob@corp.example")):
            c.execute("INSERT INTO users (id, kind, issuer, subject, email, created_at, updated_at)"
                      " VALUES (?, 'person', 'https://idp.example', ?, ?, ?, ?)", (hexid(i), f"sub{i}", email, now, now))
        c.execute("INSERT INTO devices (id, user_id, public_key_thumbprint, public_key_pem, name, state,"
                  " first_seen_at, last_seen_at, updated_at) VALUES (?, ?, ?, 'PEM', 'laptop', 'pending', ?, ?, ?)",
                  (hexid(101), hexid(1), "A" * 43, now, now, now))
        c.execute("INSERT INTO devices (id, user_id, public_key_thumbprint, public_key_pem, name, state,"
                  " first_seen_at, last_seen_at, updated_at) VALUES (?, ?, ?, 'PEM', 'phone', 'approved', ?, ?, ?)",
                  (hexid(102), hexid(2), "B" * 43, now, now, now))
        for sid, uid, dev in ((201, 1, 101), (202, 1, 101), (203, 2, 102)):
            c.execute("INSERT INTO sessions (id, user_id, device_id, auth_method, auth_time, amr, created_at,"
                      " last_used_at, expires_at) VALUES (?, ?, ?, 'oidc', ?, '[\"pwd\"]', ?, ?, ?)",
                      (hexid(sid), hexid(uid), hexid(dev), now, now, now, now + 3600))
        c.execute("INSERT INTO groups (id, name, source, created_at, updated_at) VALUES (?, 'idp-eng', 'idp', ?, ?)",
                  (hexid(301), now, now))
    r = call("GET", "/api/v1/users")
    check("users listed", r.status == 200 and [u["email"] for u in r.json["items"]] == ["ann@corp.example", "bob@corp.example"], r)
    check("user booleans", r.json["items"][0]["disabled"] is False and r.json["items"][0]["email_verified"] is False)
    r = call("POST", "/api/v1/groups", {"name": "engineering", "description": "all engineers"})
    check("group create", r.status == 201 and r.json["source"] == "local", r)
    grp = r.json
    r = call("POST", "/api/v1/groups", {"name": "x", "source": "idp"})
    check("group source cannot be set", r.status == 400 and "source" in r.json["error"]["message"], r)
    r = call("PUT", f"/api/v1/groups/{grp['id']}/members/{hexid(1)}")
    check("member add is 201", r.status == 201 and r.json["user_id"] == hexid(1) and r.json["email"] == "ann@corp.example", r)
    r = call("PUT", f"/api/v1/groups/{grp['id']}/members/{hexid(1)}")
    check("member add again is 200", r.status == 200, r)
    check("added once, audited once", len(audit("group.member_add", f"{hexid(1)}:{grp['id']}")) == 1)
    call("PUT", f"/api/v1/groups/{grp['id']}/members/{hexid(2)}")
    r = call("GET", f"/api/v1/groups/{grp['id']}/members", query={"limit": 1})
    check("members paged", r.status == 200 and len(r.json["items"]) == 1 and r.json["next_cursor"] == hexid(1), r)
    r = call("GET", f"/api/v1/groups/{grp['id']}/members", query={"cursor": hexid(1)})
    check("members second page", [m["user_id"] for m in r.json["items"]] == [hexid(2)] and r.json["next_cursor"] is None, r)
    r = call("GET", "/api/v1/users", query={"group_id": grp["id"]})
    check("users filtered by group", len(r.json["items"]) == 2, r)
    check("unknown user member is 404", call("PUT", f"/api/v1/groups/{grp['id']}/members/{hexid(9)}").status == 404)
    check("unknown group members is 404", call("GET", f"/api/v1/groups/{hexid(9)}/members").status == 404)
    r = call("DELETE", f"/api/v1/groups/{grp['id']}/members/{hexid(2)}")
    check("member remove is 204", r.status == 204, r)
    ev = audit("group.member_remove", f"{hexid(2)}:{grp['id']}")
    check("member remove audited with before", len(ev) == 1 and json.loads(ev[0]["before_json"])["user_id"] == hexid(2)
          and ev[0]["after_json"] is None)
    check("member remove again is 404", call("DELETE", f"/api/v1/groups/{grp['id']}/members/{hexid(2)}").status == 404)
    r = call("PATCH", f"/api/v1/groups/{hexid(301)}", {"name": "renamed"})
    check("IdP group edit is 409", r.status == 409 and "identity provider" in r.json["error"]["message"], r)
    r = call("PUT", f"/api/v1/groups/{hexid(301)}/members/{hexid(1)}")
    check("IdP group member add is 409", r.status == 409 and r.json["error"]["code"] == "idp_managed", r)
    check("IdP group member remove is 409", call("DELETE", f"/api/v1/groups/{hexid(301)}/members/{hexid(1)}").status == 409)
    check("IdP group unchanged", sql("SELECT name FROM groups WHERE id = ?", hexid(301))[0][0] == "idp-eng")
    r = call("PATCH", f"/api/v1/groups/{grp['id']}", {"name": "eng"})
    check("group patch", r.status == 200 and r.json["name"] == "eng" and r.json["description"] == "all engineers", r)
    check("group filter by source", [g["name"] for g in call("GET", "/api/v1/groups", query={"source": "idp"}).json["items"]] == ["idp-eng"])

    # ---- policies ----
    r = call("POST", "/api/v1/policies", {"group_id": grp["id"], "resource_id": res["id"]})
    check("policy create with defaults", r.status == 201 and r.json["require_mfa"] is False and r.json["max_session_age_s"] == 0, r)
    pol = r.json
    r = call("POST", "/api/v1/policies", {"group_id": grp["id"], "resource_id": res["id"], "require_mfa": True})
    check("duplicate policy is 409", r.status == 409 and "group_id" in r.json["error"]["message"], r)
    r = call("POST", "/api/v1/policies", {"group_id": hexid(77), "resource_id": res["id"]})
    check("policy for unknown group is 404 naming group_id", r.status == 404 and "group_id" in r.json["error"]["message"], r)
    r = call("POST", "/api/v1/policies", {"group_id": grp["id"], "resource_id": res2["id"], "max_session_age_s": -1})
    check("negative session age is 400", r.status == 400 and "max_session_age_s" in r.json["error"]["message"], r)
    r = call("PATCH", f"/api/v1/policies/{pol['id']}", {"require_mfa": True, "max_session_age_s": 3600})
    check("policy patch", r.status == 200 and r.json["require_mfa"] is True and r.json["max_session_age_s"] == 3600, r)
    r = call("POST", "/api/v1/policies", {"group_id": grp["id"], "resource_id": res2["id"]})
    pol2 = r.json
    r = call("GET", "/api/v1/policies", query={"resource_id": res2["id"]})
    check("policies by resource", [p["id"] for p in r.json["items"]] == [pol2["id"]], r)
    check("policy delete", call("DELETE", f"/api/v1/policies/{pol2['id']}").status == 204)
    ev = audit("policy.delete", pol2["id"])
    check("policy delete audited with before only", len(ev) == 1 and ev[0]["before_json"] and ev[0]["after_json"] is None)

    # ---- devices and sessions ----
    r = call("GET", "/api/v1/devices", query={"state": "pending"})
    check("devices by state", [d["id"] for d in r.json["items"]] == [hexid(101)], r)
    r = call("POST", f"/api/v1/devices/{hexid(101)}/approve")
    check("device approve", r.status == 200 and r.json["state"] == "approved", r)
    ev = audit("device.approve", hexid(101))
    check("approve audited", len(ev) == 1 and json.loads(ev[0]["before_json"])["state"] == "pending")
    r = call("POST", f"/api/v1/devices/{hexid(101)}/block")
    check("device block", r.status == 200 and r.json["state"] == "blocked", r)
    rows = sql("SELECT revoke_reason FROM sessions WHERE device_id = ?", hexid(101))
    check("blocking revoked the device's sessions", [x[0] for x in rows] == ["device_blocked", "device_blocked"])
    check("device block of unknown is 404", call("POST", f"/api/v1/devices/{hexid(9)}/block").status == 404)
    r = call("GET", "/api/v1/sessions", query={"user_id": hexid(2), "revoked": "false"})
    check("sessions filtered", r.status == 200 and [s["id"] for s in r.json["items"]] == [hexid(203)]
          and r.json["items"][0]["amr"] == ["pwd"], r)
    check("bad boolean filter is 400", call("GET", "/api/v1/sessions", query={"revoked": "maybe"}).status == 400)
    r = call("DELETE", f"/api/v1/sessions/{hexid(203)}")
    check("session revoke is 204", r.status == 204, r)
    s = call("GET", f"/api/v1/sessions/{hexid(203)}").json
    check("session revoked by admin", s["revoke_reason"] == "admin" and s["revoked_at"] is not None, s)
    check("revoking again changes nothing", call("DELETE", f"/api/v1/sessions/{hexid(203)}").status == 204
          and len(audit("session.revoke", hexid(203))) == 1)
    ev = audit("session.revoke", hexid(203))
    check("session revoke audited before/after", ev and json.loads(ev[0]["before_json"])["revoked_at"] is None
          and json.loads(ev[0]["after_json"])["revoke_reason"] == "admin")
    with db() as c:
        c.execute("INSERT INTO sessions (id, user_id, device_id, auth_method, auth_time, created_at, last_used_at,"
                  " expires_at) VALUES (?, ?, ?, 'oidc', ?, ?, ?, ?)", (hexid(204), hexid(2), hexid(102), now, now, now, now + 60))
    r = call("PATCH", f"/api/v1/users/{hexid(2)}", {"disabled": True, "role": "auditor"})
    check("user patch", r.status == 200 and r.json["disabled"] is True and r.json["role"] == "auditor", r)
    check("disabling revoked the user's sessions", sql("SELECT revoke_reason FROM sessions WHERE id = ?", hexid(204))[0][0]
          == "user_disabled")
    check("bad role is 400", call("PATCH", f"/api/v1/users/{hexid(2)}", {"role": "root"}).status == 400)
    check("email cannot be patched", call("PATCH", f"/api/v1/users/{hexid(2)}", {"email": "x@y.z"}).status == 400)
    check("device delete", call("DELETE", f"/api/v1/devices/{hexid(101)}").status == 204)
    check("device gone with its sessions", sql("SELECT count(*) FROM sessions WHERE device_id = ?", hexid(101))[0][0] == 0)

    # ---- connectors and enrollment tokens ----
    with db() as c:
        c.execute("INSERT INTO connectors (id, network_id, name, public_key_digest, public_key_pem, enrolled_at, updated_at)"
                  " VALUES (?, ?, 'c1', ?, 'PEM', ?, ?)", (hexid(401), net["id"], "ab" * 32, now, now))
        c.execute("INSERT INTO connectors (id, network_id, name, public_key_digest, public_key_pem, state, enrolled_at,"
                  " updated_at) VALUES (?, ?, 'c2', ?, 'PEM', 'revoked', ?, ?)", (hexid(402), net["id"], "cd" * 32, now, now))
    r = call("GET", "/api/v1/connectors", query={"network_id": net["id"]})
    check("connectors listed", r.status == 200 and len(r.json["items"]) == 2 and "public_key_pem" not in r.json["items"][0], r)
    r = call("PATCH", f"/api/v1/connectors/{hexid(401)}", {"state": "disabled"})
    check("connector disabled", r.status == 200 and r.json["state"] == "disabled", r)
    check("connector state revoked refused", call("PATCH", f"/api/v1/connectors/{hexid(401)}", {"state": "revoked"}).status == 400)
    check("connector name refused", call("PATCH", f"/api/v1/connectors/{hexid(401)}", {"name": "x"}).status == 400)
    check("revoked connector stays revoked", call("PATCH", f"/api/v1/connectors/{hexid(402)}", {"state": "active"}).status == 409)
    check("connector delete", call("DELETE", f"/api/v1/connectors/{hexid(402)}").status == 204)
    r = call("POST", f"/api/v1/remote-networks/{net['id']}/connector-tokens", {"ttl_s": 600})
    check("enrollment token made", r.status == 201 and r.json["token"].startswith("spe_") and r.json["expires_at"] - r.json["created_at"] == 600, r)
    tok = r.json
    import hashlib
    row = sql("SELECT token_hash FROM connector_enrollment_tokens WHERE id = ?", tok["id"])
    check("token stored hashed", row and row[0][0] == hashlib.sha256(tok["token"].encode()).hexdigest())
    ev = audit("connector_token.create", tok["id"])
    check("token audited without the secret", len(ev) == 1 and tok["token"] not in (ev[0]["after_json"] or ""))
    r = call("POST", f"/api/v1/remote-networks/{net['id']}/connector-tokens")
    check("token body is optional", r.status == 201, r)
    check("token ttl bounds", call("POST", f"/api/v1/remote-networks/{net['id']}/connector-tokens", {"ttl_s": 5}).status == 400)
    check("token for unknown network is 404", call("POST", f"/api/v1/remote-networks/{hexid(55)}/connector-tokens").status == 404)
    r = subprocess.run([BIN, "connector-token", "create", "--network", "vpc-east", "--state-dir", state],
                       capture_output=True, text=True, timeout=60)
    check("connector-token create on the command line still works", r.returncode == 0 and r.stdout.startswith("spe_"), r.stderr)

    # ---- service accounts and keys ----
    r = call("POST", "/api/v1/service-accounts", {"name": "ci-runner", "description": "builds"})
    check("service account create", r.status == 201 and r.json["name"] == "ci-runner" and r.json["disabled"] is False, r)
    sa = r.json
    u = sql("SELECT kind, role, issuer FROM users WHERE id = ?", sa["id"])
    check("service account is a users row of kind service", u and u[0]["kind"] == "service" and u[0]["issuer"] is None)
    r = call("PATCH", f"/api/v1/users/{sa['id']}", {"role": "admin"})
    check("a service account cannot be made admin", r.status == 400 and "service account" in r.json["error"]["message"], r)
    check("duplicate service account is 409", call("POST", "/api/v1/service-accounts", {"name": "ci-runner"}).status == 409)
    check("service account users are not left behind", sql("SELECT count(*) FROM users WHERE kind = 'service'")[0][0] == 1)
    keyfile = os.path.join(work, "sa.pem")
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", keyfile], check=True,
                   capture_output=True)
    pub = subprocess.run(["openssl", "pkey", "-in", keyfile, "-pubout"], check=True, capture_output=True, text=True).stdout
    der = subprocess.run(["openssl", "pkey", "-in", keyfile, "-pubout", "-outform", "DER"], check=True, capture_output=True).stdout
    r = call("POST", f"/api/v1/service-accounts/{sa['id']}/keys", {"public_key_pem": pub, "name": "runner-1"})
    check("service account key added", r.status == 201 and r.json["public_key_digest"] == hashlib.sha256(der).hexdigest()
          and r.json["revoked_at"] is None and r.json["expires_at"] > now, r)
    sak = r.json
    check("same key twice is 409", call("POST", f"/api/v1/service-accounts/{sa['id']}/keys", {"public_key_pem": pub}).status == 409)
    r = call("POST", f"/api/v1/service-accounts/{sa['id']}/keys", {"public_key_pem": open(keyfile).read()})
    check("a private key is refused", r.status == 400 and "private" in r.json["error"]["message"], r)
    check("no private key stored", "PRIVATE" not in "".join(x[0] for x in sql("SELECT public_key_pem FROM service_account_keys")))
    r = call("POST", f"/api/v1/service-accounts/{sa['id']}/keys", {"public_key_pem": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"})
    check("a garbage key is 400 naming public_key_pem", r.status == 400 and "public_key_pem" in r.json["error"]["message"], r)
    rsa = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"], capture_output=True, text=True).stdout
    rsapub = subprocess.run(["openssl", "pkey", "-pubout"], input=rsa, capture_output=True, text=True).stdout
    check("an RSA key is refused", call("POST", f"/api/v1/service-accounts/{sa['id']}/keys", {"public_key_pem": rsapub}).status == 400)
    check("a past expiry is refused", call("POST", f"/api/v1/service-accounts/{sa['id']}/keys",
                                           {"public_key_pem": pub, "expires_at": 5}).status == 400)
    r = call("GET", f"/api/v1/service-accounts/{sa['id']}/keys")
    check("service account keys listed", r.status == 200 and [k["id"] for k in r.json["items"]] == [sak["id"]], r)
    check("key under another account is 404", call("DELETE", f"/api/v1/service-accounts/{hexid(1)}/keys/{sak['id']}").status == 404)
    check("key revoke is 204", call("DELETE", f"/api/v1/service-accounts/{sa['id']}/keys/{sak['id']}").status == 204)
    check("key revoked, row kept", sql("SELECT revoked_at FROM service_account_keys WHERE id = ?", sak["id"])[0][0] is not None)
    check("key revoke audited", len(audit("service_account_key.revoke", sak["id"])) == 1)
    r = call("PATCH", f"/api/v1/service-accounts/{sa['id']}", {"description": "nightly builds"})
    check("service account patch", r.status == 200 and r.json["description"] == "nightly builds", r)
    check("service account delete", call("DELETE", f"/api/v1/service-accounts/{sa['id']}").status == 204)
    check("its user and keys went with it", sql("SELECT count(*) FROM users WHERE id = ?", sa["id"])[0][0] == 0
          and sql("SELECT count(*) FROM service_account_keys")[0][0] == 0)

    # ---- API keys ----
    r = call("POST", "/api/v1/api-keys", {"name": "temp", "role": "admin"})
    check("API key create shows the key once", r.status == 201 and r.json["key"].startswith("spk_") and r.json["prefix"] == r.json["key"][:12], r)
    temp = r.json
    KEYS["temp"] = temp["key"]
    check("the new key works", call("GET", "/api/v1/api-keys", key="temp").status == 200)
    r = call("GET", "/api/v1/api-keys")
    listed = json.dumps(r.json)
    check("API keys listed without secrets", r.status == 200 and temp["key"] not in listed and "key_hash" not in listed
          and len(r.json["items"]) == 3, r)
    check("API key get has no secret", "key" not in call("GET", f"/api/v1/api-keys/{temp['id']}").json)
    check("bad role refused", call("POST", "/api/v1/api-keys", {"name": "x", "role": "root"}).status == 400)
    check("API key revoke is 204", call("DELETE", f"/api/v1/api-keys/{temp['id']}").status == 204)
    check("revoked key is 401", call("GET", "/api/v1/resources", key="temp").status == 401)
    check("revoked key listed as revoked", call("GET", f"/api/v1/api-keys/{temp['id']}").json["revoked_at"] is not None)
    check("revoked filter", [k["id"] for k in call("GET", "/api/v1/api-keys", query={"revoked": "true"}).json["items"]] == [temp["id"]])
    ev = audit("api_key.create", temp["id"])
    check("API key audit holds no secret", len(ev) == 1 and temp["key"] not in ev[0]["after_json"])

    # ---- deletes ----
    check("resource delete", call("DELETE", f"/api/v1/resources/{res['id']}").status == 204)
    check("resource gone", call("GET", f"/api/v1/resources/{res['id']}").status == 404)
    check("its policy went with it", call("GET", f"/api/v1/policies/{pol['id']}").status == 404)
    ev = audit("resource.delete", res["id"])
    check("resource delete audited with before", len(ev) == 1 and json.loads(ev[0]["before_json"])["name"] == "Grafana"
          and ev[0]["after_json"] is None)
    check("group delete", call("DELETE", f"/api/v1/groups/{grp['id']}").status == 204)
    check("user delete", call("DELETE", f"/api/v1/users/{hexid(1)}").status == 204)
    check("user gone", call("GET", f"/api/v1/users/{hexid(1)}").status == 404)
    weird_id = [n["id"] for n in call("GET", "/api/v1/remote-networks", query={"name": weird}).json["items"]][0]
    check("network delete", call("DELETE", f"/api/v1/remote-networks/{weird_id}").status == 204)

    # ---- every mutation left an audit event ----
    expected = ["remote_network.create", "remote_network.update", "remote_network.delete", "resource.create", "resource.update",
                "resource.delete", "group.create", "group.update", "group.delete", "group.member_add", "group.member_remove",
                "user.update", "user.delete", "policy.create", "policy.update", "policy.delete", "device.approve", "device.block",
                "device.delete", "session.revoke", "connector.update", "connector.delete", "connector_token.create",
                "service_account.create", "service_account.update", "service_account.delete", "service_account_key.create",
                "service_account_key.revoke", "api_key.create", "api_key.revoke"]
    actions = {x[0] for x in sql("SELECT DISTINCT action FROM audit_events")}
    check("every kind of mutation is audited", not (set(expected) - actions), set(expected) - actions)
    rows = sql("SELECT action, before_json, after_json FROM audit_events WHERE actor_type = 'api_key'")
    shape_ok = True
    for a, b, af in rows:
        verb = a.split(".")[1]
        if verb in ("create", "member_add") and (b is not None or af is None):
            shape_ok = False
        if verb in ("delete", "member_remove") and (b is None or af is not None):
            shape_ok = False
        if verb in ("update", "approve", "block", "revoke") and (b is None or af is None):
            shape_ok = False
    check("before/after present as each verb needs", shape_ok and len(rows) > 40, len(rows))

    # ---- audit and flow events through the API ----
    r = call("GET", "/api/v1/audit-events", query={"action": "resource.update"})
    check("audit events filtered by action", r.status == 200 and r.json["items"] and all(e["action"] == "resource.update" for e in r.json["items"])
          and isinstance(r.json["items"][0]["before"], dict) and isinstance(r.json["items"][0]["after"], dict), r)
    r = call("GET", "/api/v1/audit-events", query={"limit": 5}, key="auditor")
    check("auditor pages audit events", r.status == 200 and len(r.json["items"]) == 5 and r.json["next_cursor"] == str(r.json["items"][-1]["id"]), r)
    r2 = call("GET", "/api/v1/audit-events", query={"limit": 5, "cursor": r.json["next_cursor"]})
    check("audit cursor continues", r2.json["items"][0]["id"] == r.json["items"][-1]["id"] + 1, r2)
    check("audit since in the future is empty", call("GET", "/api/v1/audit-events", query={"since": now + 86400}).json["items"] == [])
    check("audit until in the past is empty", call("GET", "/api/v1/audit-events", query={"until": 1}).json["items"] == [])
    check("bad since is 400", call("GET", "/api/v1/audit-events", query={"since": "yesterday"}).status == 400)
    first = r.json["items"][0]["id"]
    check("one audit event by id", call("GET", f"/api/v1/audit-events/{first}").json["id"] == first)
    check("unknown audit event is 404", call("GET", "/api/v1/audit-events/999999").status == 404)
    r = call("GET", "/api/v1/audit-events", query={"format": "jsonl"})
    lines = r.raw.splitlines()
    parsed = [json.loads(line) for line in lines]
    check("JSON lines export", r.status == 200 and r.headers["content-type"] == "application/x-ndjson"
          and len(parsed) == audit_count() and all("action" in e for e in parsed), r.headers)
    r = call("GET", "/api/v1/audit-events", query={"format": "jsonl", "limit": 3, "action": "remote_network.create"})
    check("JSON lines export is cut and continued", r.status == 200 and len(r.raw.splitlines()) == 3 and "x-next-cursor" in r.headers, r)
    check("unknown format is 400", call("GET", "/api/v1/audit-events", query={"format": "csv"}).status == 400)
    check("resources have no export", call("GET", "/api/v1/resources", query={"format": "jsonl"}).status == 400)
    with db() as c:
        for i in range(1, 8):
            c.execute("INSERT INTO flow_events (time, flow_id, connector_id, user_id, resource_id, protocol, destination_host,"
                      " destination_port, decision, reason) VALUES (?, ?, ?, ?, ?, 'tcp', 'db.corp', 5432, ?, ?)",
                      (now + i, f"f{i}", hexid(401), hexid(2), res2["id"], "deny" if i % 2 else "allow",
                       "no_policy" if i % 2 else None))
    r = call("GET", "/api/v1/flow-events", query={"decision": "deny"}, key="auditor")
    check("flow events filtered", r.status == 200 and len(r.json["items"]) == 4 and all(e["reason"] == "no_policy" for e in r.json["items"]), r)
    r = call("GET", "/api/v1/flow-events", query={"since": now + 3, "until": now + 6})
    check("flow events by time", [e["flow_id"] for e in r.json["items"]] == ["f3", "f4", "f5"], r)
    r = call("GET", "/api/v1/flow-events", query={"format": "jsonl", "user_id": hexid(2)})
    check("flow events JSON lines", r.headers.get("content-type") == "application/x-ndjson"
          and [json.loads(x)["flow_id"] for x in r.raw.splitlines()] == [f"f{i}" for i in range(1, 8)], r)
    check("one flow event", call("GET", "/api/v1/flow-events/1").json["flow_id"] == "f1")

    # ---- the change feed saw the mutations ----
    kinds = {x[0] for x in sql("SELECT DISTINCT kind FROM changes")}
    check("triggers recorded changes", {"resource", "policy", "membership", "group", "remote_network"} <= kinds, kinds)

    check("controller still healthy", call("GET", "/healthz", key=None).status == 200)
finally:
    if proc is not None:
        proc.terminate()
        try:
            rc = proc.wait(timeout=30)
            check("controller stops cleanly on SIGTERM", rc == 0, rc)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            check("controller stops cleanly on SIGTERM", False, "timeout")
        if failed:
            print(open(os.path.join(work, "serve.log")).read()[-3000:])
    shutil.rmtree(work, ignore_errors=True)

print(f"controller_admin_api: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
