#!/usr/bin/env python3
"""The validation run of docs/scaling.md (section 6): authchat nodes on a 3-shard Redis Cluster,
with Redis's own counters read per shard and compared with what the model predicts.

    cargo build --release -p authchat -p authchat-bench
    scripts/cluster-validation.py --nodes 6 --rooms 3 --members 600 --messages 300

It starts, in a temporary directory, three `redis-server --cluster-enabled yes` (no replicas,
loopback, free ports) formed into one cluster with `redis-cli --cluster create`, then `--nodes`
authchat nodes (target/release/authchat, `redis.cluster_nodes` set, one worker each, log filter
warn, rate limits out of the way). It picks `--rooms` room names whose hash slots fall on
different shards, resets every shard's statistics, and runs one `authchat-bench fanout` per room
at once, each spreading its members over all the nodes and sending `--messages` messages. Then it reads
`INFO commandstats` and `INFO stats` on each shard and prints, per shard: commands per send,
the sharded publishes, the plain publishes, the bytes out per send, and what section 3's unit
costs predict. Everything stops at the end; loopback only.
"""

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

RAISED_LIMITS = [
    "AUTHCHAT__WS__HANDSHAKE_LIMIT__PER_SECOND",
    "AUTHCHAT__WS__HANDSHAKE_LIMIT__BURST",
    "AUTHCHAT__WS__RATE_LIMIT__PER_SECOND",
    "AUTHCHAT__WS__RATE_LIMIT__BURST",
    "AUTHCHAT__WS__RATE_LIMIT__USER_PER_SECOND",
    "AUTHCHAT__WS__RATE_LIMIT__USER_BURST",
]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port(bus=False):
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not bus:
            return port
        if port < 55000:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port + 10000))
                    return port
                except OSError:
                    pass


def cli(port, *args):
    out = subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True)
    return out.stdout


def info(port, section):
    fields = {}
    for line in cli(port, "info", section).splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    return fields


IDLE_SECONDS = 5
SETTLE_SECONDS = 3
FIRST_JOIN, LATER_JOIN, LEAVE, SEND_LOW, SEND_HIGH = 15, 7, 5, 8, 10


def commands(port):
    stats = info(port, "commandstats")
    return {k.removeprefix("cmdstat_"): int(v.split(",")[0].split("=")[1]) for k, v in stats.items()}


def total_calls(port):
    return sum(commands(port).values())


def slot_owner(ports, slot):
    for line in cli(ports[0], "cluster", "nodes").splitlines():
        parts = line.split()
        if "master" not in parts[2]:
            continue
        port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
        for r in parts[8:]:
            a, _, b = r.partition("-")
            if int(a) <= slot <= int(b or a):
                return port
    raise SystemExit(f"no shard serves slot {slot}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=6)
    ap.add_argument("--rooms", type=int, default=3, help="one `authchat-bench fanout` per room, each on its own shard")
    ap.add_argument("--members", type=int, default=600, help="members per room")
    ap.add_argument("--senders", type=int, default=10, help="senders per room")
    ap.add_argument("--messages", type=int, default=300, help="messages per room")
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/authchat"))
    ap.add_argument("--bench", default=os.path.join(ROOT, "target/release/authchat-bench"))
    args = ap.parse_args()
    for path in (args.bin, args.bench):
        if not os.path.exists(path):
            raise SystemExit(f"{path} is missing: cargo build --release -p authchat -p authchat-bench")

    work = tempfile.mkdtemp(prefix="authchat-validation-")
    procs, ok = [], False
    try:
        shards = []
        for _ in range(3):
            port = free_port(bus=True)
            procs.append(subprocess.Popen(
                ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf", "--dir", work],
                stdout=subprocess.DEVNULL))
            shards.append(port)
        for port in shards:
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.05)
        subprocess.run(["redis-cli", "--cluster", "create", *[f"127.0.0.1:{p}" for p in shards],
                        "--cluster-replicas", "0", "--cluster-yes"], capture_output=True, check=True)
        while not all("cluster_state:ok" in cli(p, "cluster", "info") for p in shards):
            time.sleep(0.1)

        secret = secrets.token_urlsafe(32)
        seeds = ",".join(f"redis://127.0.0.1:{p}" for p in shards)
        nodes = []
        for n in range(1, args.nodes + 1):
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHCHAT")}
            env.update({
                "AUTHCHAT__SERVER__HOST": "127.0.0.1", "AUTHCHAT__SERVER__PORT": str(port),
                "AUTHCHAT__SERVER__NODE_ID": f"v{n}", "AUTHCHAT__SERVER__WORKERS": "1",
                "AUTHCHAT__SERVER__SHUTDOWN_TIMEOUT": "2s", "AUTHCHAT__AUTH__SECRET": secret,
                "AUTHCHAT__STORE__BACKEND": "redis", "AUTHCHAT__REDIS__CLUSTER_NODES": seeds,
                "AUTHCHAT__LOG__FILTER": "warn", "RUST_LOG": "warn",
            })
            env.update({k: "1000000" for k in RAISED_LIMITS})
            log = open(os.path.join(work, f"v{n}.log"), "w")
            procs.append(subprocess.Popen([args.bin, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                          cwd=ROOT))
            nodes.append(port)
        for port in nodes:
            deadline = time.time() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.time() > deadline:
                    raise SystemExit(f"a node did not become ready; logs in {work}")
                time.sleep(0.1)

        # Rooms on distinct shards (a room's keys and channel share the tag {r:<room>}).
        rooms, taken = [], set()
        for i in range(1000):
            room = f"val-{i}"
            owner = slot_owner(shards, int(cli(shards[0], "cluster", "keyslot", f"{{r:{room}}}")))
            if owner not in taken or len(taken) == len(shards):
                rooms.append((room, owner))
                taken.add(owner)
            if len(rooms) == args.rooms:
                break

        # The idle rate (heartbeats, probes) per shard, to subtract from the run's counts.
        for port in shards:
            cli(port, "config", "resetstat")
        time.sleep(IDLE_SECONDS)
        idle = {port: total_calls(port) / IDLE_SECONDS for port in shards}
        for port in shards:
            cli(port, "config", "resetstat")
        started = time.time()
        urls = ",".join(f"ws://127.0.0.1:{p}" for p in nodes)
        benches = []
        for room, _ in rooms:
            out = open(os.path.join(work, f"bench-{room}.txt"), "w")
            env = {k: v for k, v in os.environ.items() if not k.startswith("AUTHCHAT")}
            env["AUTHCHAT__AUTH__SECRET"] = secret
            benches.append((room, out.name, subprocess.Popen(
                [args.bench, "fanout", "--nodes", urls, "--room", room, "--members", str(args.members),
                 "--senders", str(args.senders), "--messages", str(args.messages)],
                env=env, stdout=out, stderr=subprocess.STDOUT)))
        for _, _, proc in benches:
            proc.wait()
        run = time.time() - started
        # The members' departures (presence leaves) are written after the benches close them.
        time.sleep(SETTLE_SECONDS)
        elapsed = time.time() - started

        print(f"{args.nodes} nodes, {len(shards)} shards, {len(rooms)} rooms x {args.members} members, "
              f"{args.messages} messages per room, {run:.1f} s (+{SETTLE_SECONDS} s for departures)\n")
        for room, path, _ in benches:
            for line in open(path):
                if line.startswith(("sends:", "deliveries:")):
                    print(f"{room}: {line.strip()}")
        print()
        rooms_on = {port: [r for r, o in rooms if o == port] for port in shards}
        print("| shard | rooms | sends | commands (idle subtracted) | model | spublish | model | publish | KiB out per send |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for port in shards:
            here = len(rooms_on[port])
            sends = args.messages * here
            calls = commands(port)
            measured = sum(calls.values()) - idle[port] * elapsed
            # docs/scaling.md section 3: 8-10 commands per send (the script's own calls
            # included), 15 for a room's first join on a node, 7 for every later join; and a
            # departure's PRESENCE_LEAVE (EVALSHA, HDEL, HINCRBY, HDEL, SPUBLISH).
            joins = here * (args.nodes * FIRST_JOIN + (args.members - args.nodes) * LATER_JOIN)
            leaves = here * args.members * LEAVE
            low, high = joins + leaves + sends * SEND_LOW, joins + leaves + sends * SEND_HIGH
            # One sharded publish per send, per arrival and per departure, on the room's shard.
            spublish_model = sends + 2 * here * args.members
            out_kib = int(info(port, "stats")["total_net_output_bytes"]) / 1024
            per_out = f"{out_kib / sends:.2f}" if sends else "-"
            print(f"| {port} | {', '.join(rooms_on[port]) or '-'} | {sends} | {measured:.0f} | {low}-{high} | "
                  f"{calls.get('spublish', 0)} | {spublish_model} | {calls.get('publish', 0)} | {per_out} |")
        print(f"\nidle commands/s per shard (heartbeats, probes): "
              f"{', '.join(f'{idle[p]:.1f}' for p in shards)}")
        ok = True
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"logs kept in {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
