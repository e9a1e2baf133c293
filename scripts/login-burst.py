#!/usr/bin/env python3
"""Fires N concurrent wrong logins at a running authchat and reports its memory.

    target/release/authchat serve &        # dev config on 127.0.0.1:8080
    scripts/login-burst.py --pid $! --n 256

Each login comes from its own thread and connection, all released at once by a barrier. The
server's VmRSS, VmHWM (peak RSS) and thread count are read from /proc/PID/status before, during
(sampled every 20 ms) and 2 s after the burst. Loopback only: it refuses any other host.
Set AUTHCHAT__AUTH__LOGIN_THROTTLE__PER_IP=0 and ..._PER_USER=0 on the server to measure the
hashing cap alone (otherwise all but the first few logins are answered 429 without hashing).
"""

import argparse
import collections
import ipaddress
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request


def status_of(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def mib(value):
    return int(value.split()[0]) / 1024  # "123456 kB"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080/api/login")
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--user", default="alice")
    args = parser.parse_args()
    host = urllib.parse.urlparse(args.url).hostname
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit("loopback targets only")

    body = json.dumps({"username": args.user, "password": "wrong-password"}).encode()
    barrier = threading.Barrier(args.n)
    answers = collections.Counter()
    lock = threading.Lock()

    def login():
        request = urllib.request.Request(args.url, data=body, headers={"content-type": "application/json"})
        barrier.wait()
        try:
            with urllib.request.urlopen(request, timeout=60) as res:
                code = res.status
        except urllib.error.HTTPError as e:
            code = e.code
        except OSError as e:
            code = type(e).__name__
        with lock:
            answers[code] += 1

    before = status_of(args.pid)
    peak = [mib(before["VmRSS"])]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], mib(status_of(args.pid)["VmRSS"]))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=login) for _ in range(args.n)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    time.sleep(2)
    done.set()
    sampler.join()
    after = status_of(args.pid)
    print(f"{args.n} logins in {elapsed:.1f} s: {dict(sorted(answers.items(), key=str))}")
    print(f"VmRSS before {mib(before['VmRSS']):.0f} MiB, peak sampled {peak[0]:.0f} MiB, "
          f"2 s after {mib(after['VmRSS']):.0f} MiB; VmHWM {mib(after['VmHWM']):.0f} MiB")
    print(f"threads before {before['Threads']}, after {after['Threads']}")


if __name__ == "__main__":
    main()
