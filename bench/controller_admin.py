#!/usr/bin/env python3
"""Benchmark of the admin API's listing: prints figures, never fails on them.

Starts sallyport-controller on a loopback port with a temporary state directory,
creates one remote network and N resources (default 10,000; the first --api of them
through POST /api/v1/resources to time creation, the rest inserted straight into the
database for speed), then measures over one keep-alive connection:
  - GET /api/v1/resources?limit=100 page latency (every page of a full walk, repeated),
  - a full listing (walking all pages with the cursor), repeated,
  - GET /api/v1/resources?limit=1000 page latency,
  - POST /api/v1/resources latency (each one transaction with its audit event, fsynced).

Run (release build):
  cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build build/release -j2
  python3 bench/controller_admin.py build/release/controller/sallyport-controller [--resources 10000] [--rounds 10] [--api 500]
"""
import argparse
import http.client
import json
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time


def percentile(values, p):
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, int(round(p / 100.0 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def report(label, samples_s):
    ms = [s * 1000 for s in samples_s]
    print(f"  {label:<46} n={len(ms):<6} p50 {percentile(ms, 50):8.2f} ms   p99 {percentile(ms, 99):8.2f} ms"
          f"   max {max(ms):8.2f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--resources", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--api", type=int, default=500, help="resources created through the API (timed)")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="sp-bench-admin-")
    state = os.path.join(work, "state")
    proc = None
    try:
        key = subprocess.run([args.binary, "admin-key", "create", "--name", "bench", "--state-dir", state],
                             capture_output=True, text=True, check=True).stdout.strip()
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        proc = subprocess.Popen([args.binary, "serve", "--state-dir", state, "--http-listen", f"127.0.0.1:{port}",
                                 "--public-url", f"http://127.0.0.1:{port}", "--log-level", "warn"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        conn = None
        for _ in range(200):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                break
            except OSError:
                conn = None
                time.sleep(0.05)
        headers = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}

        def call(method, path, body=None):
            conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, data

        status, data = call("POST", "/api/v1/remote-networks", {"name": "bench"})
        network = json.loads(data)["id"]

        api_n = min(args.api, args.resources)
        create_times = []
        for i in range(api_n):
            t = time.perf_counter()
            status, _ = call("POST", "/api/v1/resources", {"name": f"api-{i}", "network_id": network,
                                                            "address": f"svc-{i}.corp.example", "tcp": ["443", "8000-8100"]})
            create_times.append(time.perf_counter() - t)
            assert status == 201, status
        now = int(time.time())
        db = sqlite3.connect(os.path.join(state, "controller.db"), timeout=30)
        with db:
            db.executemany("INSERT INTO resources (id, network_id, name, address, tcp_ports, udp_ports, icmp, created_at,"
                           " updated_at) VALUES (?, ?, ?, ?, '[\"443\"]', '\"none\"', 0, ?, ?)",
                           [(secrets.token_hex(16), network, f"db-{i}", f"db-{i}.corp.example", now, now)
                            for i in range(args.resources - api_n)])
        db.close()

        page_times, full_times, big_page_times = [], [], []
        for _ in range(args.rounds):
            cursor, count = None, 0
            t_full = time.perf_counter()
            while True:
                path = "/api/v1/resources?limit=100" + (f"&cursor={cursor}" if cursor else "")
                t = time.perf_counter()
                status, data = call("GET", path)
                page_times.append(time.perf_counter() - t)
                page = json.loads(data)
                count += len(page["items"])
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            full_times.append(time.perf_counter() - t_full)
            assert count == args.resources, count
            cursor = None
            while True:
                path = "/api/v1/resources?limit=1000" + (f"&cursor={cursor}" if cursor else "")
                t = time.perf_counter()
                status, data = call("GET", path)
                big_page_times.append(time.perf_counter() - t)
                cursor = json.loads(data)["next_cursor"]
                if cursor is None:
                    break

        print(f"machine: {os.cpu_count()} cores, {os.uname().release}; {args.resources} resources, "
              f"{args.rounds} rounds, one keep-alive connection, client parses every page")
        report("GET /api/v1/resources?limit=100 (one page)", page_times)
        report("GET /api/v1/resources?limit=1000 (one page)", big_page_times)
        report(f"full listing, {args.resources} resources in pages of 100", full_times)
        if create_times:
            report("POST /api/v1/resources (commit + audit, fsync)", create_times)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
