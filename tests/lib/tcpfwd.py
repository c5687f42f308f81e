#!/usr/bin/env python3
"""A TCP forward for the namespace lab (python3 standard library only).

    tcpfwd.py LISTEN_ADDR:PORT TARGET_ADDR:PORT

Accepts on LISTEN and copies bytes both ways to a new connection to TARGET, one thread per
direction, until either side closes. Run with `ip netns exec` in the namespace whose
address it listens on (splab.py uses it to make the test IdP's loopback issuer reachable
from the client namespace). At most 64 connections at once; runs until killed.
"""
import socket
import sys
import threading

MAX_CONNS = 64


def split(hostport):
    host, _, port = hostport.rpartition(":")
    return host, int(port)


def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def serve(conn, target, slots):
    try:
        up = socket.create_connection(target, timeout=10)
        up.settimeout(None)
    except OSError as e:
        print(f"tcpfwd: connect {target}: {e}", file=sys.stderr, flush=True)
        conn.close()
        slots.release()
        return
    t = threading.Thread(target=pipe, args=(up, conn), daemon=True)
    t.start()
    pipe(conn, up)
    t.join()
    conn.close()
    up.close()
    slots.release()


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: tcpfwd.py LISTEN_ADDR:PORT TARGET_ADDR:PORT")
    listen, target = split(sys.argv[1]), split(sys.argv[2])
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(listen)
    srv.listen(16)
    slots = threading.BoundedSemaphore(MAX_CONNS)
    while True:
        conn, _ = srv.accept()
        if not slots.acquire(blocking=False):
            conn.close()
            continue
        threading.Thread(target=serve, args=(conn, target, slots), daemon=True).start()


if __name__ == "__main__":
    main()
