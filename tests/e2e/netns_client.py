#!/usr/bin/env python3
"""End-to-end test: the sallyport client in real network namespaces (tests/lib/netlab.py).

The lab of tests/lib/splab.py: controller and test IdP in `ctl`, connector, dnsmasq, nginx
and PostgreSQL on 10.20.0.x in `vpc`, the client in `client` with no route to 10.20/16.
eng-user (IdP group engineering) signs in with the browser flow; the admin API gave
engineering app.corp.test (tcp 80) and db.corp.test (tcp 5432), finance finance.corp.test.

In each interception mode (proxy, loopback and tun), inside `client`:
  - app.corp.test never resolves to its internal 10.x address (loopback: the DNS stub's
    synthetic 127.77.x.y; proxy: the public resolver does not know it);
  - the internal page comes through the tunnel (loopback: plain curl; proxy: SOCKS5 with
    the host name), and psql runs a query on PostgreSQL in vpc (loopback mode: psql has no
    SOCKS support);
  - finance.corp.test (outside eng-user's policy) is refused: proxy mode records
    `not_protected` (by the client) in `sallyport status --json`; loopback mode never learns
    the name (no synthetic address, not in `sallyport resources`);
  - a port outside the resource (app.corp.test:8080, served by nginx) is refused: proxy mode
    records `port_not_allowed` by the connector; loopback mode has no listener there;
  - an unprotected name (www.example.internal, answered by the public resolver in ctl)
    resolves through the upstream unchanged;
  - the internal addresses are unreachable without the tunnel.
Tun mode runs with the daemon's system DNS: the namespace's resolv.conf names the stub
(127.83.80.53) while it is up and is byte-identical after `down`; app.corp.test gets an
address in 100.96.0.0/12; a refused port is reset, with port_not_allowed in status; after
`down` no device, nft table, policy rule or route of table 5350 is left in `client`.
Then fin-user in proxy mode: finance.corp.test through, app.corp.test refused. Finally the
teardown leaves no namespace, /etc/netns entry or process of the run behind.

Usage: netns_client.py CONTROLLER CONNECTOR SALLYPORT     (root; exit 77 = skipped)
"""
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lib"))

if len(sys.argv) < 4:
    sys.exit("usage: netns_client.py CONTROLLER CONNECTOR SALLYPORT")
if os.geteuid() != 0:
    print("skip: needs root (network namespaces)")
    sys.exit(77)
import netlab  # noqa: E402
import splab  # noqa: E402

if not os.path.isdir(os.path.join(splab.OIDC, "node_modules", "oidc-provider")):
    print("skip: tests/oidc/node_modules missing (scripts/install-test-tools)")
    sys.exit(77)
for tool in ("dnsmasq", "nginx", "curl", "psql"):
    if shutil.which(tool) is None and not os.path.exists(f"/usr/sbin/{tool}"):
        print(f"skip: {tool} missing (scripts/install-deps --e2e)")
        sys.exit(77)

CTL, CONN, SP = sys.argv[1:4]
passed = failed = 0
APP = netlab.INTERNAL["app"]


def check(name, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"ok: {name}", flush=True)
    else:
        failed += 1
        print(f"FAIL: {name} {detail}", flush=True)


def denials(s):
    return {(d.get("target", ""), d.get("reason"), d.get("by")) for d in s.get("denials", [])}


t_start = time.time()
L = splab.SallyportLab(ctl=CTL, conn=CONN, sp=SP, keep="--keep" in sys.argv)
lab = L.lab
names = list(lab.ns.values())
etc = [os.path.join("/etc/netns", n) for n in names]
try:
    L.start()
    check("lab up: eng-user and fin-user signed in, policies seeded", True)
    page = L.page

    # ---- the lab itself: 10.x only inside vpc ----
    rc, body, err = lab.curl("client", "--max-time", "3", f"http://{APP}/")
    check("client: no route to the internal address (10.20.0.10) without the tunnel",
          rc != 0 and body == b"", f"{rc} {err}")
    rc, body, err = lab.curl("vpc", f"http://{APP}/")
    check("vpc: nginx serves the internal page on 10.20.0.10", rc == 0 and body == page)
    check("vpc: dnsmasq names app.corp.test 10.20.0.10",
          lab.resolve("vpc", "app.corp.test", netlab.INTERNAL["dns"]) == APP)

    # ---- proxy mode ----
    s = L.up("proxy")
    check("proxy: daemon up with eng-user's two resources", s.get("mode") == "proxy" and
          s.get("resources") == 2, str(s))
    got = lab.resolve("client", "app.corp.test")
    check("proxy: app.corp.test does not resolve to its internal address (public resolver:"
          " unknown)", got is None, str(got))
    check("proxy: www.example.internal resolves through the public resolver, unchanged",
          lab.resolve("client", splab.PUBLIC_NAME) == splab.PUBLIC_ADDR)
    socks = ["--socks5-hostname", "127.0.0.1:1080"]
    rc, body, err = lab.curl("client", *socks, "http://app.corp.test/")
    check("proxy: the internal page through the tunnel (SOCKS5, host name)",
          rc == 0 and body == page, f"{rc} {err}")
    rc, body, err = lab.curl("client", "-p", "-x", "http://127.0.0.1:3128",
                             "http://app.corp.test/")
    check("proxy: the internal page through HTTP CONNECT", rc == 0 and body == page,
          f"{rc} {err}")
    rc, body, err = lab.curl("client", *socks, "http://finance.corp.test/")
    check("proxy: finance.corp.test refused", rc != 0 and body == b"", f"{rc} {err}")
    rc, body, err = lab.curl("client", *socks, "http://app.corp.test:8080/")
    check("proxy: app.corp.test:8080 (outside the resource's ports) refused",
          rc != 0 and body == b"", f"{rc} {err}")
    s = L.status()
    d = denials(s)
    check("proxy: status --json names the reasons: finance not_protected (client),"
          " port 8080 port_not_allowed (connector)",
          ("finance.corp.test:80", "not_protected", "client") in d and
          ("app.corp.test:8080", "port_not_allowed", "connector") in d, str(s.get("denials")))
    tun = s.get("tunnels", [])
    check("proxy: one direct tunnel to the connector in vpc", len(tun) == 1 and
          tun[0].get("address") == splab.DIRECT and tun[0].get("state") == "up", str(tun))
    rc, prc = L.down()
    check("proxy: `down` stops the daemon (exit 0)", rc == 0 and prc == 0, f"{rc} {prc}")

    # ---- loopback mode, DNS stub as the namespace's resolver ----
    s = L.up("loopback")
    ls = {x["name"]: (x["address"], x["port"]) for x in s.get("listeners", [])}
    check("loopback: listeners for app.corp.test:80 and db.corp.test:5432 on 127.77.x.y",
          set(ls) == {"app.corp.test", "db.corp.test"} and ls["app.corp.test"][1] == 80 and
          ls["db.corp.test"][1] == 5432 and
          all(a.startswith("127.77.") for a, _ in ls.values()), str(ls))
    got = lab.resolve("client", "app.corp.test")
    check("loopback: app.corp.test resolves (resolv.conf -> stub) to the synthetic address,"
          " not 10.20.0.10", got is not None and got != APP and
          got == ls.get("app.corp.test", ("",))[0], str(got))
    rc, body, err = lab.curl("client", "http://app.corp.test/")
    check("loopback: curl http://app.corp.test/ through the tunnel", rc == 0 and body == page,
          f"{rc} {err}")
    env = dict(os.environ, PGPASSWORD=splab.DB_PASSWORD, PGCONNECT_TIMEOUT="10")
    if L.postgres is not None:
        r = lab.run("client", ["psql", "-h", "db.corp.test", "-U", "postgres", "-d", "postgres",
                               "-tAc", "SELECT inet_server_addr(), 6 * 7"], env=env, timeout=30)
        check("loopback: psql runs a query on PostgreSQL in vpc through the tunnel",
              r.returncode == 0 and r.stdout.decode().strip() == "10.20.0.12|42",
              r.stdout.decode() + r.stderr.decode())
        r = lab.run("client", ["psql", "-h", netlab.INTERNAL["db"], "-U", "postgres", "-tAc",
                               "SELECT 1"], env=dict(env, PGCONNECT_TIMEOUT="3"), timeout=30)
        check("loopback: PostgreSQL's own address unreachable from client", r.returncode != 0)
    else:
        print("note: PostgreSQL server not installed: the psql check is skipped", flush=True)
    got = lab.resolve("client", "finance.corp.test")
    rc, body, err = lab.curl("client", "--max-time", "5", "http://finance.corp.test/")
    rc2, out, _ = L.sp("eng-user", "resources", "--json")
    listed = [r["address"] for r in json.loads(out).get("resources", [])] if rc2 == 0 else []
    check("loopback: finance.corp.test refused: never named to the client (no address, not"
          " in `sallyport resources`), curl fails",
          got is None and rc != 0 and body == b"" and sorted(listed) ==
          ["app.corp.test", "db.corp.test"], f"{got} {rc} {err} {listed}")
    rc, body, err = lab.curl("client", "--max-time", "5", "http://app.corp.test:8080/")
    check("loopback: app.corp.test:8080 refused (no listener outside the resource's ports)",
          rc == 7 and body == b"", f"{rc} {err}")
    got = lab.resolve("client", splab.PUBLIC_NAME)
    check("loopback: www.example.internal forwarded by the stub to the upstream, unchanged",
          got == splab.PUBLIC_ADDR, str(got))
    s = L.status()
    check("loopback: status counts the flows over one direct tunnel",
          s.get("flows", {}).get("total", 0) >= 2 and len(s.get("tunnels", [])) == 1,
          str(s.get("flows")))
    rc, prc = L.down()
    check("loopback: `down` stops the daemon (exit 0)", rc == 0 and prc == 0, f"{rc} {prc}")

    # ---- tun mode, with the daemon's system DNS (resolv.conf -> stub) ----
    resolv = os.path.join("/etc/netns", lab.ns["client"], "resolv.conf")
    L.lab.set_resolver("client", splab.UPSTREAM)
    before = open(resolv, "rb").read()
    s = L.up("tun")
    now = open(resolv, "rb").read()
    servers = [ln.split()[1] for ln in now.decode().splitlines()
               if ln.startswith("nameserver ")]
    check("tun: system DNS in force: the namespace's resolv.conf names only the stub"
          " 127.83.80.53", servers == [splab.STUB] and s.get("system_dns") == "resolv.conf",
          f"{now!r} {s.get('system_dns')}")
    names = s.get("tun", {}).get("names")
    r1 = lab.run("client", ["ip", "link", "show", "dev", "sallyport0"])
    r2 = lab.run("client", ["nft", "list", "tables"])
    r3 = lab.run("client", ["ip", "rule", "show"])
    check("tun: while up, the device sallyport0, table inet sallyport and the fwmark rule exist",
          r1.returncode == 0 and b"inet sallyport" in r2.stdout and b"0x5350" in r3.stdout,
          f"{r1.returncode} {r2.stdout!r} {r3.stdout!r}")
    got = lab.resolve("client", "app.corp.test")
    check("tun: app.corp.test resolves (system resolver -> stub) to a synthetic address in"
          " 100.96.0.0/12, not 10.20.0.10", got is not None and got != APP and
          (int(got.split(".")[0]) == 100 and 96 <= int(got.split(".")[1]) <= 111),
          f"{got} {names}")
    rc, body, err = lab.curl("client", "http://app.corp.test/")
    check("tun: curl http://app.corp.test/ through the tunnel", rc == 0 and body == page,
          f"{rc} {err}")
    if L.postgres is not None:
        r = lab.run("client", ["psql", "-h", "db.corp.test", "-U", "postgres", "-d", "postgres",
                               "-tAc", "SELECT inet_server_addr(), 6 * 7"], env=env, timeout=30)
        check("tun: psql runs a query on PostgreSQL in vpc through the tunnel",
              r.returncode == 0 and r.stdout.decode().strip() == "10.20.0.12|42",
              r.stdout.decode() + r.stderr.decode())
    got = lab.resolve("client", "finance.corp.test")
    rc, body, err = lab.curl("client", "--max-time", "5", "http://finance.corp.test/")
    check("tun: finance.corp.test refused for eng-user (no synthetic address, curl fails)",
          got is None and rc != 0 and body == b"", f"{got} {rc} {err}")
    rc, body, err = lab.curl("client", "--max-time", "5", "http://app.corp.test:8080/")
    check("tun: app.corp.test:8080 (outside the resource's ports) reset",
          rc in (7, 52, 56) and body == b"" and
          any(w in err.lower() for w in ("reset", "empty reply", "couldn't connect")),
          f"{rc} {err}")
    s = L.wait_status("eng-user", lambda s: any(
        d.get("reason") == "port_not_allowed" for d in s.get("denials", [])), limit=10)
    check("tun: status --json names the reason: port 8080 port_not_allowed (connector)",
          any(d[0].endswith(":8080") and d[1:] == ("port_not_allowed", "connector")
              for d in denials(s)), str(s.get("denials")))
    got = lab.resolve("client", splab.PUBLIC_NAME)
    check("tun: www.example.internal forwarded by the stub to the upstream, unchanged",
          got == splab.PUBLIC_ADDR, str(got))
    rc, prc = L.down()
    check("tun: `down` stops the daemon (exit 0)", rc == 0 and prc == 0, f"{rc} {prc}")
    after = open(resolv, "rb").read()
    check("tun: after down the namespace's resolv.conf is byte-identical to before",
          after == before, f"{before!r} -> {after!r}")
    r1 = lab.run("client", ["ip", "link", "show", "dev", "sallyport0"])
    r2 = lab.run("client", ["nft", "list", "tables"])
    r3 = lab.run("client", ["sh", "-c", "ip rule show; ip -6 rule show; "
                                        "ip route show table 5350; ip -6 route show table 5350"])
    left = r3.stdout.decode()
    check("tun: after down no device, nft table, policy rule or route table 5350 is left",
          r1.returncode != 0 and b"sallyport" not in r2.stdout and "0x5350" not in left and
          "5350" not in left, f"{r1.returncode} {r2.stdout!r} {left}")

    # ---- the other person: finance in, app out ----
    s = L.up("proxy", user="fin-user")
    rc, body, err = lab.curl("client", *socks, "http://finance.corp.test/")
    check("fin-user: finance.corp.test through the tunnel", rc == 0 and body == page,
          f"{rc} {err}")
    rc, body, err = lab.curl("client", *socks, "http://app.corp.test/")
    s = L.status("fin-user")
    check("fin-user: app.corp.test refused, not_protected in status",
          rc != 0 and ("app.corp.test:80", "not_protected", "client") in denials(s),
          f"{rc} {s.get('denials')}")
    rc, prc = L.down("fin-user")
    check("fin-user: `down` (exit 0)", rc == 0 and prc == 0, f"{rc} {prc}")
    logs = "".join(lab.log(n) for n in ("sallyport-proxy.log", "sallyport-loopback.log",
                                        "sallyport-tun.log"))
    check("daemon logs free of sanitizer reports", "Sanitizer" not in logs, logs[-2000:])
except Exception as e:  # a bring-up failure is a failure, with the logs' tails
    import traceback
    traceback.print_exc()
    check("no exception", False, str(e))
    for n in ("controller.log", "connector.log", "provider.err", "sallyport-proxy.log",
              "sallyport-loopback.log", "sallyport-tun.log"):
        print(f"--- {n}\n{lab.log(n)[-1500:]}", flush=True)
finally:
    L.close()

if "--keep" not in sys.argv:
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    check("teardown: namespaces deleted", not any(n in left.split() for n in names), left)
    check("teardown: /etc/netns entries removed", not any(os.path.exists(d) for d in etc))
    check("teardown: work directory removed", not os.path.exists(L.work), L.work)
    procs = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    check("teardown: no process of the run left", L.work not in procs, procs[-1000:])
print(f"figure: netns_client wall time {time.time() - t_start:.1f} s", flush=True)
print(f"netns_client: {passed} passed, {failed} failed", flush=True)
sys.exit(1 if failed else 0)
