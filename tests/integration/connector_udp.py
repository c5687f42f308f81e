#!/usr/bin/env python3
"""Integration test: UDP datagram flows through the connector, real processes on 127.0.0.1.

The real controller, the real connector and a real dnsmasq (answering one name with
--address), with tests/tools/sp_test_client --udp as the client. Checks: a DNS query
through a udp stream gets dnsmasq's answer; the allowed flow event says udp with bytes
both ways; a UDP port outside the resource is refused port_not_allowed with a deny flow
event; a TCP-only resource refuses udp; a datagram flow with nothing to say is closed by
the connector after SALLYPORT_UDP_IDLE_TIMEOUT (1 s here); many datagrams on one flow
each get their answer.

Usage: connector_udp.py CONTROLLER CONNECTOR SP_TEST_CLIENT
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.dont_write_bytecode = True  # no bytecode cache in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sp_stack  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "lib"))
import testkit  # noqa: E402

if len(sys.argv) < 4:
    sys.exit("usage: connector_udp.py CONTROLLER CONNECTOR SP_TEST_CLIENT")
CTL, CONN, TOOL = sys.argv[1:4]
SANITIZED = os.environ.get("SALLYPORT_SANITIZED", "0") in ("1", "ON", "TRUE", "true")
WORK = tempfile.mkdtemp(prefix="sp-conn-udp-")
check = testkit.Checks()
dns_query = testkit.dns_question
dns_answer_a = testkit.dns_answer_a

stack = sp_stack.Stack(CTL, CONN, TOOL, WORK, sanitized=SANITIZED)
scale = 3 if SANITIZED else 1
try:
    dns_port = sp_stack.free_port()
    other_port = sp_stack.free_port()
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    stack.spawn([dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                 "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1",
                 f"--port={dns_port}", "--address=/www.sallyport.test/10.20.30.40",
                 f"--pid-file={WORK}/dnsmasq.pid", "--user=root", "--log-facility=-"],
                "dnsmasq.log")
    stack.start_controller()
    res_dns = stack.add_resource("dns", "127.0.0.1", udp=[dns_port])
    res_tcp_only = stack.add_resource("tcponly", "127.0.0.1", tcp=[dns_port])
    stack.start_connector(extra_env={"SALLYPORT_UDP_IDLE_TIMEOUT": "1s"})

    def udp_client(resource, target, lines, extra=(), timeout=30):
        args = stack.client_args("connect", resource, target) + ["--udp", "--hex"] + list(extra)
        r = subprocess.run(args, input="".join(x + "\n" for x in lines).encode(),
                           capture_output=True, timeout=timeout * scale)
        return r.returncode, r.stdout.decode(), r.stderr.decode(errors="replace")

    # dnsmasq is up once it answers a direct query
    import socket
    ok = False
    for _ in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(0.2)
        try:
            s.sendto(dns_query("www.sallyport.test", 1), ("127.0.0.1", dns_port))
            ok = dns_answer_a(s.recv(4096))[2] == ["10.20.30.40"]
        except OSError:
            pass
        s.close()
        if ok:
            break
        time.sleep(0.1)
    check("dnsmasq answers directly", ok)

    # ---- a DNS query through the tunnel ----
    q = dns_query("www.sallyport.test", 0x5a5a)
    rc, out, err = udp_client(res_dns, f"127.0.0.1:{dns_port}", [q.hex()])
    lines = out.split()
    answer = dns_answer_a(bytes.fromhex(lines[0])) if lines else None
    check("DNS query through a udp stream gets dnsmasq's answer",
          rc == 0 and answer == (0x5a5a, 0, ["10.20.30.40"]), f"rc={rc} out={out!r} err={err}")
    rows = stack.wait_flow_event("decision = 'allow' AND protocol = 'udp'")
    check("allowed udp flow event with bytes both ways",
          len(rows) == 1 and rows[0][4] == dns_port and rows[0][5] == len(q) and
          rows[0][6] > len(q), str(rows))

    # ---- several datagrams on one flow ----
    rc, out, err = udp_client(res_dns, f"127.0.0.1:{dns_port}",
                              [dns_query("www.sallyport.test", 100 + i).hex() for i in range(20)],
                              extra=["--expect", "20"])
    ids = sorted(dns_answer_a(bytes.fromhex(x))[0] for x in out.split())
    check("20 datagrams on one flow: 20 answers", rc == 0 and ids == list(range(100, 120)),
          f"rc={rc} ids={ids} err={err}")

    # ---- refusals ----
    rc, out, err = udp_client(res_dns, f"127.0.0.1:{other_port}", [q.hex()])
    check("UDP port outside the resource: refused port_not_allowed",
          rc == 3 and "refused: port_not_allowed" in err, f"rc={rc} err={err}")
    rows = stack.wait_flow_event("decision = 'deny' AND reason = 'port_not_allowed'"
                                 " AND protocol = 'udp'")
    check("deny flow event port_not_allowed for udp",
          len(rows) == 1 and rows[0][4] == other_port, str(rows))
    rc, out, err = udp_client(res_tcp_only, f"127.0.0.1:{dns_port}", [q.hex()])
    check("a TCP-only resource refuses udp on its TCP port",
          rc == 3 and "refused: port_not_allowed" in err, f"rc={rc} err={err}")

    # ---- idle timeout: the connector closes a silent datagram flow ----
    args = stack.client_args("connect", res_dns, f"127.0.0.1:{dns_port}") + ["--udp", "--hex"]
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    t0 = time.time()
    try:
        rc = p.wait(timeout=15 * scale)
    except subprocess.TimeoutExpired:
        p.kill()
        rc = None
    took = time.time() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stdin.close()
    p.stdout.close()
    p.stderr.close()
    print(f"figure: silent udp flow closed after {took:.1f} s (idle timeout 1 s)", flush=True)
    check("idle udp flow closed by the connector after its idle timeout",
          rc == 0 and 1.0 <= took < 4.0 * scale, f"rc={rc} took={took:.1f} err={err}")

    with open(stack.connector_log) as f:
        log = f.read()
    check("connector still running, its log names no error",
          stack.connector.poll() is None and '"level":"error"' not in log and
          "AddressSanitizer" not in log, log[-1500:])
except Exception:
    import traceback
    traceback.print_exc()
    check.failed += 1
finally:
    stack.close()
    if check.failed == 0:
        shutil.rmtree(WORK, ignore_errors=True)
    else:
        print(f"logs kept in {WORK}", flush=True)

print(check.summary("connector_udp"), flush=True)
sys.exit(check.exit_code())
