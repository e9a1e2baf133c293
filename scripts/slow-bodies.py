#!/usr/bin/env python3
"""Holds N connections to POST /api/login open by trickling their bodies, and reports when the
server answers and closes them.

    target/release/authchat serve &        # dev config on 127.0.0.1:8080
    scripts/slow-bodies.py --n 500

Each connection sends the request head with Content-Length: 10000, then one byte of body every
10 s. Stops after --give-up seconds (default 60). Loopback only. N above ~1000 needs a higher
`ulimit -n`.
"""

import argparse
import collections
import select
import socket
import time

HEAD = (b"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 10000\r\n\r\n{")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between body bytes")
    parser.add_argument("--give-up", type=float, default=60.0)
    args = parser.parse_args()

    connections = []
    for _ in range(args.n):
        s = socket.create_connection(("127.0.0.1", args.port))
        s.sendall(HEAD)
        s.setblocking(False)
        connections.append(s)
    started = time.monotonic()
    still_open = set(connections)
    answered, closed = {}, {}
    next_byte = started + args.every
    while still_open and time.monotonic() - started < args.give_up:
        readable, _, _ = select.select(list(still_open), [], [], 0.2)
        for s in readable:
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if data:
                answered.setdefault(s, (time.monotonic() - started, data.split(b"\r\n")[0].decode()))
            else:
                closed[s] = time.monotonic() - started
                still_open.discard(s)
                s.close()
        if time.monotonic() >= next_byte:
            for s in list(still_open):
                try:
                    s.send(b" ")
                except OSError:
                    pass
            next_byte += args.every

    print(f"{args.n} connections: {len(closed)} closed, {len(still_open)} still open after "
          f"{time.monotonic() - started:.1f} s")
    if answered:
        times = [t for t, _ in answered.values()]
        lines = collections.Counter(line for _, line in answered.values())
        print(f"answered between {min(times):.1f} and {max(times):.1f} s: {dict(lines)}")
    if closed:
        print(f"closed between {min(closed.values()):.1f} and {max(closed.values()):.1f} s")


if __name__ == "__main__":
    main()
