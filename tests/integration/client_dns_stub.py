#!/usr/bin/env python3
"""Integration test of the client's DNS stub (sallyport-dnsstub) against a real dnsmasq.

Usage: client_dns_stub.py PATH/TO/sallyport-dnsstub

dnsmasq on 127.0.0.1 plays the upstream resolver: it answers example.test with 127.0.0.7
and every *.corp.test name with the "internal" address 10.1.2.3, so a protected name that
leaked upstream would show up as 10.1.2.3. Queries are hand-built DNS packets sent with
the socket module over UDP and TCP. dnsmasq runs with --keep-in-foreground rather than
--no-daemon: in --no-daemon (debug) mode it serves TCP in its main process and would stop
answering UDP while the stub keeps its upstream TCP connection open.
"""
import ipaddress
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

STUB = sys.argv[1] if len(sys.argv) > 1 else None
DNSMASQ = os.environ.get("DNSMASQ") or shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
INTERNAL = "10.1.2.3"
V4_RANGE = ipaddress.ip_network("100.96.0.0/12")
V6_RANGE = ipaddress.ip_network("fd73:7061:6c6c::/64")
TYPE_A, TYPE_MX, TYPE_AAAA = 1, 15, 28

passed = 0
failed = 0
procs = []


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   {name}")
    else:
        failed += 1
        print(f"FAIL {name} {detail}")


def free_port():
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
            u.close()
    raise RuntimeError("no free port")


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def build_query(qid, name, qtype, qclass=1, qdcount=1):
    header = struct.pack(">HHHHHH", qid, 0x0100, qdcount, 0, 0, 0)
    return header + encode_name(name) + struct.pack(">HH", qtype, qclass)


def skip_name(msg, off):
    while True:
        n = msg[off]
        if n & 0xC0 == 0xC0:
            return off + 2
        if n == 0:
            return off + 1
        off += 1 + n


def parse_reply(msg):
    qid, flags, qd, an, ns, ar = struct.unpack(">HHHHHH", msg[:12])
    off = 12
    for _ in range(qd):
        off = skip_name(msg, off) + 4
    answers = []
    for _ in range(an):
        off = skip_name(msg, off)
        rtype, rclass, ttl, rdlen = struct.unpack(">HHIH", msg[off:off + 10])
        off += 10
        rdata = msg[off:off + rdlen]
        off += rdlen
        if rtype == TYPE_A:
            answers.append((rtype, ttl, str(ipaddress.IPv4Address(rdata))))
        elif rtype == TYPE_AAAA:
            answers.append((rtype, ttl, str(ipaddress.IPv6Address(rdata))))
        else:
            answers.append((rtype, ttl, rdata))
    return {"id": qid, "rcode": flags & 0xF, "tc": bool(flags & 0x0200), "qr": bool(flags & 0x8000),
            "answers": answers, "raw": msg}


def udp_ask(port, packet, timeout=3.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(packet, ("127.0.0.1", port))
        data, _ = s.recvfrom(65535)
        return data
    except socket.timeout:
        return None
    finally:
        s.close()


def tcp_ask(port, packets, timeout=3.0):
    """Sends each packet length-prefixed on one connection; returns the replies."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    replies = []
    try:
        for p in packets:
            s.sendall(struct.pack(">H", len(p)) + p)
        for _ in packets:
            head = b""
            while len(head) < 2:
                chunk = s.recv(2 - len(head))
                if not chunk:
                    return replies
                head += chunk
            (n,) = struct.unpack(">H", head)
            body = b""
            while len(body) < n:
                chunk = s.recv(n - len(body))
                if not chunk:
                    return replies
                body += chunk
            replies.append(body)
    except socket.timeout:
        pass
    finally:
        s.close()
    return replies


def query(port, name, qtype=TYPE_A, qid=None):
    qid = random.randrange(65536) if qid is None else qid
    data = udp_ask(port, build_query(qid, name, qtype))
    return (parse_reply(data) if data else None), qid


def start_dnsmasq(tmp, port):
    proc = subprocess.Popen(
        [DNSMASQ, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
         f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces",
         "--address=/example.test/127.0.0.7", f"--address=/corp.test/{INTERNAL}",
         "--txt-record=big.example.test," + ",".join(['"' + c * 200 + '"' for c in "xyz"]),
         f"--host-record=app.corp.test,{INTERNAL}", "--cname=alias.other.test,app.corp.test",
         f"--pid-file={tmp}/dnsmasq.pid", "--cache-size=0"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "dnsmasq.log"), "w"))
    procs.append(proc)
    deadline = time.time() + 10
    while time.time() < deadline:
        data = udp_ask(port, build_query(1, "example.test", TYPE_A), timeout=0.3)
        if data:
            return proc
    raise RuntimeError("dnsmasq did not start")


def start_stub(tmp, port, upstream, resources, extra=(), log="stub.log"):
    cmd = [STUB, "--listen", f"127.0.0.1:{port}", "--upstream", upstream]
    if resources:
        cmd += ["--resources", resources]
    cmd += list(extra)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(tmp, log), "w"))
    procs.append(proc)
    deadline = time.time() + 15
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("stub exited: " + open(os.path.join(tmp, log)).read())
        # The stub logs "listening" once both sockets are bound and the set is loaded.
        if " listening " in open(os.path.join(tmp, log)).read():
            return proc
        time.sleep(0.05)
    raise RuntimeError("stub did not start")


def write_resources(path, resources):
    doc = {"v": 1, "typ": "resources", "iss": "https://controller.test", "aud": "x",
           "sub": "u", "iat": 0, "exp": 0, "seq": 0, "resources": resources, "networks": []}
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f)
    os.replace(path + ".tmp", path)


def in_v4(addr):
    return ipaddress.ip_address(addr) in V4_RANGE


def main():
    if not STUB:
        print("usage: client_dns_stub.py PATH/TO/sallyport-dnsstub")
        return 2
    if not os.path.exists(DNSMASQ):
        print("client_dns_stub: dnsmasq not found; skipped")
        return 0
    tmp = tempfile.mkdtemp(prefix="sp-dnsstub-")
    try:
        upstream_port = free_port()
        start_dnsmasq(tmp, upstream_port)
        stub_port = free_port()
        res_path = os.path.join(tmp, "resources.json")
        write_resources(res_path, [
            {"id": "r1", "name": "App", "network_id": "n1", "address": "app.corp.test",
             "alias": None, "tcp": "all", "udp": "all", "icmp": False},
            {"id": "r2", "name": "Wild", "network_id": "n1", "address": "*.wild.corp.test",
             "alias": None, "tcp": ["443"], "udp": "none", "icmp": False},
            {"id": "r3", "name": "Db", "network_id": "n1", "address": "10.1.2.0/24",
             "alias": "db.sp", "tcp": ["5432"], "udp": "none", "icmp": False},
            {"id": "r4", "name": "Grafana", "network_id": "n1", "address": "grafana.corp.test",
             "alias": "grafana.sp", "tcp": ["443"], "udp": "none", "icmp": False},
        ])
        stub = start_stub(tmp, stub_port, f"127.0.0.1:{upstream_port}", res_path)

        # Protected name: a synthetic A, never the internal address, short TTL, our ID.
        r, qid = query(stub_port, "app.corp.test", TYPE_A, qid=0x1234)
        check("protected A answered", r is not None and r["rcode"] == 0 and len(r["answers"]) == 1,
              repr(r))
        app_addr = r["answers"][0][2] if r and r["answers"] else None
        check("protected A is synthetic", app_addr is not None and in_v4(app_addr), repr(app_addr))
        check("protected A is not the internal address", app_addr != INTERNAL)
        check("protected A keeps the client's ID", r is not None and r["id"] == 0x1234)
        check("protected A has TTL 30", r is not None and r["answers"] and r["answers"][0][1] == 30)
        r2, _ = query(stub_port, "app.corp.test")
        check("synthetic address is stable", r2 and r2["answers"] and r2["answers"][0][2] == app_addr)
        r3, _ = query(stub_port, "APP.Corp.Test")
        check("names match without case", r3 and r3["answers"] and r3["answers"][0][2] == app_addr)

        # AAAA at once, synthetic IPv6 with the same host part.
        t0 = time.time()
        r, _ = query(stub_port, "app.corp.test", TYPE_AAAA)
        elapsed = time.time() - t0
        check("protected AAAA answered at once", r is not None and elapsed < 0.5, f"{elapsed:.3f}s")
        v6 = r["answers"][0][2] if r and r["answers"] else None
        check("protected AAAA is synthetic v6",
              v6 is not None and ipaddress.ip_address(v6) in V6_RANGE, repr(v6))
        if v6 and app_addr:
            check("v4 and v6 share the host part",
                  int(ipaddress.ip_address(v6)) & 0xFFFFF == int(ipaddress.ip_address(app_addr)) & 0xFFFFF)

        # Other types for protected names: NODATA, not forwarded.
        r, _ = query(stub_port, "app.corp.test", TYPE_MX)
        check("protected MX is NODATA", r and r["rcode"] == 0 and r["answers"] == [], repr(r))

        # Wildcard and aliases.
        for name in ["x.wild.corp.test", "a.b.wild.corp.test", "db.sp", "grafana.sp",
                     "grafana.corp.test"]:
            r, _ = query(stub_port, name)
            ok = r and r["rcode"] == 0 and len(r["answers"]) == 1 and in_v4(r["answers"][0][2])
            check(f"protected {name} is synthetic", ok, repr(r and r["answers"]))
        r_a, _ = query(stub_port, "grafana.sp")
        r_b, _ = query(stub_port, "db.sp")
        check("distinct names get distinct addresses",
              r_a and r_b and r_a["answers"][0][2] != r_b["answers"][0][2])

        # Unprotected names are forwarded, with the client's ID restored.
        for qid in (0x0001, 0xBEEF, 0xFFFF):
            r, _ = query(stub_port, "example.test", TYPE_A, qid=qid)
            check(f"forwarded example.test id {qid:#06x}",
                  r and r["id"] == qid and r["answers"] and r["answers"][0][2] == "127.0.0.7",
                  repr(r))
        r, _ = query(stub_port, "other.corp.test")
        check("unmatched corp.test name is forwarded",
              r and r["answers"] and r["answers"][0][2] == INTERNAL, repr(r))
        r, _ = query(stub_port, "wild.corp.test")
        check("wildcard parent is not protected",
              r and r["answers"] and r["answers"][0][2] == INTERNAL, repr(r))

        # An unprotected name that is a CNAME of a protected one: dnsmasq resolves it to the
        # internal address; the stub must answer with the protected name's synthetic one.
        direct = parse_reply(udp_ask(upstream_port, build_query(0x6161, "alias.other.test", TYPE_A)))
        check("dnsmasq resolves the CNAME to the internal address",
              any(a[2] == INTERNAL for a in direct["answers"]), repr(direct["answers"]))
        r, _ = query(stub_port, "alias.other.test", TYPE_A, qid=0x6262)
        check("CNAME into a protected name gets the synthetic address",
              r and r["id"] == 0x6262 and [a[2] for a in r["answers"]] == [app_addr],
              repr(r and r["answers"]))
        r, _ = query(stub_port, "alias.other.test", TYPE_AAAA)
        check("CNAME into a protected name never shows the internal address (AAAA)",
              r is not None and all(a[2] != INTERNAL for a in r["answers"]), repr(r))

        # TCP: protected and forwarded on one connection, in order.
        replies = tcp_ask(stub_port, [build_query(0x0A0A, "app.corp.test", TYPE_A),
                                      build_query(0x0B0B, "example.test", TYPE_A),
                                      build_query(0x0C0C, "db.sp", TYPE_AAAA)])
        check("TCP got three replies", len(replies) == 3, repr(replies))
        if len(replies) == 3:
            by_id = {parse_reply(m)["id"]: parse_reply(m) for m in replies}
            a = by_id.get(0x0A0A)
            check("TCP protected A", a and a["answers"] and a["answers"][0][2] == app_addr)
            b = by_id.get(0x0B0B)
            check("TCP forwarded A", b and b["answers"] and b["answers"][0][2] == "127.0.0.7")
            c = by_id.get(0x0C0C)
            check("TCP protected AAAA", c and c["answers"] and c["answers"][0][0] == TYPE_AAAA)

        # A reply too big for UDP: relayed truncated, then whole over TCP.
        TYPE_TXT = 16
        data = udp_ask(stub_port, build_query(0x7171, "big.example.test", TYPE_TXT))
        check("big reply over UDP is relayed with TC",
              data is not None and parse_reply(data)["tc"] and parse_reply(data)["id"] == 0x7171,
              repr(data and data[:16]))
        replies = tcp_ask(stub_port, [build_query(0x7272, "big.example.test", TYPE_TXT)])
        big = parse_reply(replies[0]) if replies else None
        check("big reply over TCP is whole",
              big is not None and not big["tc"] and big["id"] == 0x7272 and len(big["answers"]) == 1
              and len(replies[0]) > 600, repr(big and len(big["raw"])))

        # TCP client cap (64): connections beyond it are closed, the rest keep working.
        conns = []
        for _ in range(70):
            conns.append(socket.create_connection(("127.0.0.1", stub_port), timeout=2))
        time.sleep(0.5)
        closed = 0
        for c in conns:
            c.setblocking(False)
            try:
                if c.recv(1) == b"":
                    closed += 1
            except (BlockingIOError, ConnectionResetError):
                pass
        check("TCP clients beyond 64 are closed", closed == 6, f"closed={closed}")
        for c in conns:
            c.close()
        time.sleep(0.2)
        replies = tcp_ask(stub_port, [build_query(0x0D0D, "app.corp.test", TYPE_A)])
        check("TCP serves again after the cap", len(replies) == 1)

        # Malformed input.
        check("truncated header gets no answer", udp_ask(stub_port, b"\x12\x34\x01\x00\x00", 0.5) is None)
        loop = struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + b"\xc0\x0c" + struct.pack(">HH", 1, 1)
        data = udp_ask(stub_port, loop, 1.0)
        check("compression loop gets FORMERR",
              data is not None and parse_reply(data)["rcode"] == 1 and parse_reply(data)["id"] == 0x4242,
              repr(data))
        two = build_query(0x4343, "app.corp.test", TYPE_A, qdcount=2)
        data = udp_ask(stub_port, two, 1.0)
        check("qdcount 2 gets FORMERR", data is not None and data[3] & 0xF == 1, repr(data))
        check("oversized datagram gets no answer",
              udp_ask(stub_port, build_query(0x4444, "example.test", 1) + b"\0" * 5000, 0.5) is None)
        response = bytearray(build_query(0x4545, "example.test", TYPE_A))
        response[2] |= 0x80
        check("a response (QR=1) gets no answer", udp_ask(stub_port, bytes(response), 0.5) is None)
        notimp = bytearray(build_query(0x4646, "example.test", TYPE_A))
        notimp[2] |= 0x10  # opcode 2 (STATUS)
        data = udp_ask(stub_port, bytes(notimp), 1.0)
        check("opcode STATUS gets NOTIMP", data is not None and data[3] & 0xF == 4, repr(data))
        r, _ = query(stub_port, "app.corp.test", 65280)
        check("unknown type for a protected name is NODATA",
              r and r["rcode"] == 0 and r["answers"] == [], repr(r))
        r, qid = query(stub_port, "example.test", 65280)
        check("unknown type for an unprotected name is forwarded", r and r["id"] == qid, repr(r))
        replies = tcp_ask(stub_port, [b"\x00\x01\x00"])
        check("TCP garbage gets no answer", replies == [])
        r, _ = query(stub_port, "app.corp.test")
        check("still serving after malformed input", r and r["answers"] and r["answers"][0][2] == app_addr)

        # Replacing the resource set: app.corp.test is no longer protected, new.corp.test is.
        write_resources(res_path, [
            {"id": "r5", "name": "New", "network_id": "n1", "address": "new.corp.test",
             "alias": None, "tcp": "all", "udp": "all", "icmp": False},
            {"id": "r4", "name": "Grafana", "network_id": "n1", "address": "grafana.corp.test",
             "alias": "grafana.sp", "tcp": ["443"], "udp": "none", "icmp": False},
        ])
        before, _ = query(stub_port, "grafana.sp")
        stub.send_signal(signal.SIGHUP)
        deadline = time.time() + 5
        r = None
        while time.time() < deadline:
            r, _ = query(stub_port, "app.corp.test")
            if r and r["answers"] and r["answers"][0][2] == INTERNAL:
                break
            time.sleep(0.05)
        check("after replacement a removed name is forwarded",
              r and r["answers"] and r["answers"][0][2] == INTERNAL,
              repr(r) + open(os.path.join(tmp, "stub.log")).read())
        r, _ = query(stub_port, "new.corp.test")
        check("after replacement a new name is synthetic",
              r and r["answers"] and in_v4(r["answers"][0][2]), repr(r))
        r, _ = query(stub_port, "grafana.sp")
        check("a kept name keeps its address",
              r and before and r["answers"] and r["answers"][0][2] == before["answers"][0][2])

        # Metrics on SIGUSR1.
        stub.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        log = open(os.path.join(tmp, "stub.log")).read()
        check("metrics count protected answers",
              "sallyport_client_dns_protected_answers_total " in log and
              "sallyport_client_dns_protected_answers_total 0\n" not in log)
        check("metrics count forwarded queries", "sallyport_client_dns_forwarded_total " in log)

        # Upstream silent: SERVFAIL within the stub's deadline.
        silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        silent.bind(("127.0.0.1", 0))
        silent_port = silent.getsockname()[1]
        stub2_port = free_port()
        # c-ares alone would give up after 1 s + 2 s; the stub's deadline (1 s here) is sooner.
        start_stub(tmp, stub2_port, f"127.0.0.1:{silent_port}", None,
                   extra=["--deadline-ms", "1000"], log="stub2.log")
        t0 = time.time()
        data = udp_ask(stub2_port, build_query(0x5151, "example.test", TYPE_A), timeout=10)
        elapsed = time.time() - t0
        check("silent upstream gives SERVFAIL",
              data is not None and parse_reply(data)["rcode"] == 2 and parse_reply(data)["id"] == 0x5151,
              repr(data))
        check("silent upstream answered at the deadline", 0.9 < elapsed < 2.0, f"{elapsed:.2f}s")
        replies = tcp_ask(stub2_port, [build_query(0x5353, "example.test", TYPE_A)], timeout=10)
        check("silent upstream over TCP gives SERVFAIL",
              len(replies) == 1 and parse_reply(replies[0])["rcode"] == 2, repr(replies))
        # Leave a query pending at shutdown: the stub must still exit cleanly.
        udp_ask(stub2_port, build_query(0x5454, "late.example.test", TYPE_A), timeout=0.1)
        silent.close()

        # Upstream gone (port closed): SERVFAIL quickly.
        procs[0].terminate()
        procs[0].wait(timeout=5)
        t0 = time.time()
        data = udp_ask(stub_port, build_query(0x5252, "gone.example.test", TYPE_A), timeout=10)
        elapsed = time.time() - t0
        check("upstream down gives SERVFAIL",
              data is not None and parse_reply(data)["rcode"] == 2, repr(data))
        check("upstream down answered in bounded time", elapsed < 6.0, f"{elapsed:.2f}s")
        r, _ = query(stub_port, "new.corp.test")
        check("protected names still answered with upstream down",
              r and r["answers"] and in_v4(r["answers"][0][2]))

        # Clean exit on SIGTERM (the sanitizer build checks for leaks here).
        for p in procs[1:]:
            p.send_signal(signal.SIGTERM)
            rc = p.wait(timeout=10)
            check(f"stub exits cleanly (pid {p.pid})", rc == 0, f"rc={rc}")
        for name in ("stub.log", "stub2.log"):
            text = open(os.path.join(tmp, name)).read()
            check(f"{name} has no sanitizer report", "ERROR: " not in text and "runtime error" not in text,
                  text[-2000:])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"client_dns_stub: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
