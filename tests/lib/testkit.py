"""Small helpers the Python test drivers share (python3 standard library only).

`Checks` counts the cases a driver checks and prints one line each: `ok: NAME` or
`FAIL: NAME DETAIL` (flushed at once, so a log read while the test runs is current);
`summary()` gives the driver's last line and `exit_code()` its status (0 all passed, 1 any
failed). Besides: a free loopback port, a random 128-bit id in hex, the controller's sqlite
store opened the way the controller opens it, waits for an HTTP answer or a condition,
`sallyport status --json` read and polled,
process start with a log file in the test's work dir and their stop (SIGTERM first, SIGKILL
after a grace time), base64url without padding, a DNS question and the A records of an
answer, a P-256 key made with openssl and a service account with that key in the store.

A driver finds this file by putting tests/lib on sys.path relative to its own __file__.
"""
import base64
import json
import hashlib
import os
import socket
import sqlite3
import struct
import subprocess
import time
import urllib.request


class Checks:
    """Pass/fail counter; call it as check(name, ok, detail).

    `limit` cuts a failure's detail to that many characters (None: the whole detail)."""

    def __init__(self, limit=None):
        self.passed = 0
        self.failed = 0
        self.limit = limit

    def __call__(self, name, ok, detail=""):
        if ok:
            self.passed += 1
            print(f"ok: {name}", flush=True)
        else:
            self.failed += 1
            text = str(detail) if self.limit is None else str(detail)[:self.limit]
            print(f"FAIL: {name} {text}", flush=True)

    def summary(self, prefix=""):
        """`PREFIX: N passed, M failed` (without PREFIX: `N passed, M failed`)."""
        head = f"{prefix}: " if prefix else ""
        return f"{head}{self.passed} passed, {self.failed} failed"

    def exit_code(self, need_pass=False):
        """1 when a check failed (or, with need_pass, when none passed), else 0."""
        return 1 if self.failed or (need_pass and self.passed == 0) else 0


_handed_out = set()


def free_port():
    """A TCP port on 127.0.0.1 free at the time of the call, never one this process was
    given before (the kernel may hand a just-closed port out again)."""
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def new_id():
    """A random 128-bit id as 32 hex digits (the controller's id format)."""
    return os.urandom(16).hex()


def db(path):
    """The controller's sqlite store at path, autocommit, foreign keys on."""
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def wait_http(url, limit=20.0):
    """True once url answers an HTTP GET with a 2xx status within limit seconds."""
    end = time.time() + limit
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=1)
            return True
        except OSError:
            time.sleep(0.05)
    return False


def wait_until(pred, limit, step=0.1):
    """pred()'s first true value within limit seconds, else its last value."""
    end = time.time() + limit
    value = pred()
    while not value and time.time() < end:
        time.sleep(step)
        value = pred()
    return value


def wait_for(fetch, pred, limit, step=0.1, initial=None):
    """fetch()'s first value that pred accepts within limit seconds, else its last value
    (initial when limit has passed before the first fetch)."""
    end = time.time() + limit
    value = initial
    while time.time() < end:
        value = fetch()
        if pred(value):
            return value
        time.sleep(step)
    return value


def status_json(sp):
    """`sallyport status --json` through sp(*args) -> (rc, stdout, stderr), parsed; a reply
    that is not JSON gives {"error": its stdout and stderr}."""
    rc, out, err = sp("status", "--json")
    try:
        return json.loads(out)
    except ValueError:
        return {"error": out + err}


def spawn(procs, work, args, log_name, **kw):
    """Start args with stdout and stderr in work/log_name; the process joins procs."""
    log = open(os.path.join(work, log_name), "w")
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, **kw)
    procs.append(p)
    return p


def stop_all(procs, timeout=10):
    """SIGTERM every live process of procs (a SIGKILLed nginx master leaves its worker
    behind), then wait for each; one still running after timeout seconds is killed."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=timeout)


def b64u(data):
    """base64url of bytes, without padding, as text."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64d(text):
    """Bytes of base64url text with or without padding."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def dns_question(name, qid, qtype=1):
    """A DNS query (recursion desired) for name, type qtype, class IN."""
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00" + struct.pack(">HH", qtype, 1)


def dns_answer_a(msg):
    """(id, rcode, [IPv4 strings]) of a DNS answer; the questions are skipped. A short or
    malformed message raises IndexError or struct.error."""
    qid, flags, qd, an = struct.unpack(">HHHH", msg[:8])
    off = 12
    for _ in range(qd):
        while msg[off] != 0:
            off += 1 + msg[off]
        off += 5
    ips = []
    for _ in range(an):
        if msg[off] & 0xC0 == 0xC0:
            off += 2
        else:
            while msg[off] != 0:
                off += 1 + msg[off]
            off += 1
        rtype, _, _, rdlen = struct.unpack(">HHIH", msg[off:off + 10])
        off += 10
        if rtype == 1 and rdlen == 4:
            ips.append(".".join(str(b) for b in msg[off:off + 4]))
        off += rdlen
    return qid, flags & 0xF, ips


def ec_key(path):
    """A new P-256 private key in PEM at path (mode 0600); (public PEM text, public DER)."""
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", path], check=True, capture_output=True)
    os.chmod(path, 0o600)
    pub = subprocess.run(["openssl", "pkey", "-in", path, "-pubout"], check=True,
                         capture_output=True, text=True).stdout
    der = subprocess.run(["openssl", "pkey", "-in", path, "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    return pub, der


def add_service_account(conn, sa, kid, pub, der, now, name="ci"):
    """Rows of service account sa (user, account, key kid with public key pub/der, valid a
    day from now) through the open store connection conn."""
    conn.execute("INSERT INTO users (id, kind, display_name, created_at, updated_at)"
                 " VALUES (?, 'service', ?, ?, ?)", (sa, name, now, now))
    conn.execute("INSERT INTO service_accounts (user_id, name, created_at) VALUES (?, ?, ?)",
                 (sa, name, now))
    conn.execute("INSERT INTO service_account_keys (id, service_account_id, public_key_digest,"
                 " public_key_pem, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                 (kid, sa, hashlib.sha256(der).hexdigest(), pub, now, now + 86400))


# ---- attack suites (tests/security): a case fails by raising Fail; every secret a case
# handles is registered so the suite can grep every log for it at the end ----

SECRETS = {}  # label#n -> secret text no log may hold


class Fail(Exception):
    pass


def expect(ok, what):
    if not ok:
        raise Fail(what)


def secret(label, value):
    """Registers value (when not empty) as a secret and returns it."""
    if value:
        SECRETS[f"{label}#{len(SECRETS)}"] = value
    return value
