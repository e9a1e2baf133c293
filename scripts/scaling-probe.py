#!/usr/bin/env python3
"""Measures what docs/scaling.md's model needs: memory per connection and Redis work per action.

    scripts/scaling-probe.py memory --backend memory --steps 1000,5000,10000
    scripts/scaling-probe.py memory --backend redis  --steps 1000,5000,10000
    scripts/scaling-probe.py ops --nodes 1
    scripts/scaling-probe.py ops --nodes 2
    scripts/scaling-probe.py cpu -- --spawn 1 --backend redis --workers 1 --messages 2000

Both start their own processes in a temporary directory and stop them at the end: a private
redis-server on a free loopback port (with --backend redis; `ops` always) and authchat nodes
from target/release/authchat (--bin for another), with a random HS256 secret, log filter warn,
and the handshake and message rate limits raised out of the way, as the load tool (bench/)
starts them. Loopback only. The WebSocket client is written here (stdlib only): HS256 tokens
with kid hs1 signed with the run's secret, one user per socket, `?token=` on the upgrade.

memory: opens sockets in steps up to each count in --steps; each socket authenticates and
joins room `r<k>` with --room-size members per room. After a step, once no frame has arrived
for 1 s (presence announcements over), it waits 2 s and reads the node's VmRSS (and Redis's
used_memory), then prints a table and the slope (KiB per connection) between steps.

ops: measures, on a private Redis, with `CONFIG RESETSTAT` before and `INFO commandstats` /
`INFO stats` after each phase: idle (heartbeats and probes per node per second), connecting
sockets, the first join of a room, later joins, sends (with and without a ref), and for each
the command calls (script-internal calls are counted under their own command), the bytes
Redis read and wrote, and the calls per action after subtracting the idle rate.

cpu: runs `target/release/authchat-bench fanout` with the arguments after `--` and reads, every
20 ms until each exits, utime + stime (/proc/PID/stat) of the node(s) it starts (authchat
children), its redis-server and the load generator itself; prints each process's last reading
and the deliveries the bench reports. Two runs that differ only in --messages give the CPU
per delivery with opening, joining and shutting down subtracted.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import socket
import struct
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


# ------------------------------------------------------------------------------------------
# Processes
# ------------------------------------------------------------------------------------------


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Redis:
    """A private redis-server and a blocking RESP client for INFO and CONFIG."""

    def __init__(self, workdir):
        self.port = free_port()
        data = os.path.join(workdir, "redis")
        os.makedirs(data)
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "yes",
             "--dir", data],
            stdout=open(os.path.join(workdir, "redis.log"), "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 10
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        self.buf = b""
        self.command("PING")

    def _line(self):
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind in (b"+", b":"):
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b"$":
            n = int(rest)
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(65536)
            value, self.buf = self.buf[:n], self.buf[n + 2:]
            return value.decode()
        if kind == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise RuntimeError(f"unexpected reply {line!r}")

    def command(self, *args):
        out = f"*{len(args)}\r\n".encode()
        for a in args:
            a = str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self._reply()

    def info(self, section):
        fields = {}
        for line in self.command("INFO", section).splitlines():
            if ":" in line and not line.startswith("#"):
                k, v = line.split(":", 1)
                fields[k] = v
        return fields

    def url(self):
        return f"redis://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


class Node:
    def __init__(self, workdir, name, bin_path, backend, secret, redis_url, workers, max_connections):
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("AUTHCHAT_ENV", "AUTHCHAT_CONFIG")}
        env.update({
            "AUTHCHAT__SERVER__HOST": "127.0.0.1",
            "AUTHCHAT__SERVER__PORT": str(self.port),
            "AUTHCHAT__SERVER__NODE_ID": name,
            "AUTHCHAT__SERVER__WORKERS": str(workers),
            "AUTHCHAT__SERVER__SHUTDOWN_TIMEOUT": "2s",
            "AUTHCHAT__SERVER__MAX_CONNECTIONS": str(max_connections),
            "AUTHCHAT__AUTH__SECRET": secret,
            "AUTHCHAT__STORE__BACKEND": backend,
            "AUTHCHAT__LOG__FILTER": "warn",
            "RUST_LOG": "warn",
        })
        for key in RAISED_LIMITS:
            env[key] = "1000000"
        if redis_url:
            env["AUTHCHAT__REDIS__URL"] = redis_url
        log = open(os.path.join(workdir, f"{name}.log"), "w")
        self.proc = subprocess.Popen([bin_path, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"node {name} did not become ready; log in {workdir}/{name}.log")
            time.sleep(0.1)

    def status(self):
        fields = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                fields[k] = v.strip()
        return fields

    def rss_kib(self):
        return int(self.status()["VmRSS"].split()[0])

    def cpu_seconds(self):
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# ------------------------------------------------------------------------------------------
# WebSocket client
# ------------------------------------------------------------------------------------------


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(secret, sub):
    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT", "kid": "hs1"}
    claims = {"sub": sub, "exp": now + 3600, "iat": now, "iss": "authchat", "aud": "authchat",
              "jti": f"{sub}-{secrets.token_hex(4)}"}
    signing = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64url(sig)


class Ws:
    """One client socket: frames in, masked text frames out, pings answered."""

    last_frame = time.monotonic()

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer
        self.wire_in = 0  # bytes of frames received (headers included), for bytes per delivery

    @classmethod
    async def open(cls, port, tok):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET /ws?token={tok} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"upgrade refused: {head.split(chr(13).encode(), 1)[0]!r}")
        return cls(reader, writer)

    def _frame(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(head + mask + masked)

    def send(self, obj):
        self._frame(0x1, json.dumps(obj, separators=(",", ":")).encode())

    async def recv(self):
        """The next text message as JSON (pings answered on the way); None at close."""
        while True:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            size = 2
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
                size += 2
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
                size += 8
            payload = await self.reader.readexactly(n)
            self.wire_in += size + n
            Ws.last_frame = time.monotonic()
            opcode = b0 & 0x0F
            if opcode == 0x9:
                self._frame(0xA, payload)
            elif opcode == 0x8:
                return None
            elif opcode == 0x1:
                return json.loads(payload)

    async def until(self, kind):
        while True:
            msg = await self.recv()
            if msg is None:
                raise RuntimeError(f"closed while waiting for {kind}")
            if msg.get("type") == kind:
                return msg
            if msg.get("type") == "error":
                raise RuntimeError(f"error while waiting for {kind}: {msg}")


async def connect(port, secret, user, room=None):
    ws = await Ws.open(port, token(secret, user))
    await ws.until("welcome")
    if room is not None:
        ws.send({"type": "join", "room": room})
        await ws.until("joined")
    return ws


async def drain(ws, counter):
    try:
        while True:
            msg = await ws.recv()
            if msg is None:
                return
            counter[msg.get("type")] = counter.get(msg.get("type"), 0) + 1
    except (asyncio.IncompleteReadError, ConnectionError):
        return


async def open_many(port, secret, users_rooms, concurrency):
    gate = asyncio.Semaphore(concurrency)

    async def one(user, room):
        async with gate:
            return await connect(port, secret, user, room)

    return await asyncio.gather(*(one(u, r) for u, r in users_rooms))


async def quiet(seconds=1.0):
    while time.monotonic() - Ws.last_frame < seconds:
        await asyncio.sleep(0.1)


# ------------------------------------------------------------------------------------------
# memory
# ------------------------------------------------------------------------------------------


async def memory(args, node, redis):
    print(f"node pid {node.pid}, backend {args.backend}, room size {args.room_size}, "
          f"workers {args.workers or os.cpu_count()}")
    await asyncio.sleep(2)
    rows = [(0, node.rss_kib(), int(redis.info("memory")["used_memory"]) // 1024 if redis else None)]
    print(f"{'sockets':>8} {'node VmRSS KiB':>15} {'redis used_memory KiB':>22}")
    print(f"{0:>8} {rows[0][1]:>15} {rows[0][2] if redis else '-':>22}")
    socks, counter, tasks = [], {}, []
    for target in args.steps:
        todo = [(f"m{i:06d}", f"r{i // args.room_size:05d}") for i in range(len(socks), target)]
        new = await open_many(node.port, args.secret, todo, args.concurrency)
        socks += new
        tasks += [asyncio.create_task(drain(ws, counter)) for ws in new]
        await quiet(1.0)
        await asyncio.sleep(2)
        rss = node.rss_kib()
        rmem = int(redis.info("memory")["used_memory"]) // 1024 if redis else None
        rows.append((target, rss, rmem))
        print(f"{target:>8} {rss:>15} {rmem if redis else '-':>22}", flush=True)
    print(f"threads {node.status()['Threads']}; frames drained by the client: {counter}")
    print("slopes (KiB per socket):")
    for (n0, r0, m0), (n1, r1, m1) in zip(rows, rows[1:]):
        extra = f", redis {(m1 - m0) / (n1 - n0):.2f}" if redis else ""
        print(f"  {n0:>6} -> {n1:<6} node {(r1 - r0) / (n1 - n0):.2f}{extra}")
    (n0, r0, m0), (n1, r1, m1) = rows[1], rows[-1]
    if n1 > n0:
        extra = f", redis {(m1 - m0) / (n1 - n0):.2f}" if redis else ""
        print(f"  {n0:>6} -> {n1:<6} node {(r1 - r0) / (n1 - n0):.2f}{extra}  (first step to last)")
    for t in tasks:
        t.cancel()
    for ws in socks:
        ws.writer.close()


# ------------------------------------------------------------------------------------------
# ops
# ------------------------------------------------------------------------------------------


def snapshot(redis):
    cmd = {}
    for k, v in redis.info("commandstats").items():
        calls = int(v.split(",")[0].split("=")[1])
        cmd[k.removeprefix("cmdstat_")] = calls
    stats = redis.info("stats")
    return cmd, {k: int(stats[k]) for k in ("total_commands_processed", "total_net_input_bytes",
                                            "total_net_output_bytes")}


class Phase:
    """CONFIG RESETSTAT at the start; the counts (less CONFIG/INFO themselves) at the end."""

    def __init__(self, redis, name, actions, idle=None):
        self.redis, self.name, self.actions, self.idle = redis, name, actions, idle

    def __enter__(self):
        self.redis.command("CONFIG", "RESETSTAT")
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        if exc[0]:
            return
        self.seconds = time.monotonic() - self.t0
        cmd, stats = snapshot(self.redis)
        for mine in ("config|resetstat", "info", "config"):
            cmd.pop(mine, None)
        self.cmd, self.stats = cmd, stats
        print(f"--- {self.name}: {self.actions} actions in {self.seconds:.2f} s")
        for k in sorted(cmd, key=lambda k: -cmd[k]):
            idle = self.idle.cmd.get(k, 0) / self.idle.seconds * self.seconds if self.idle else 0
            per = (cmd[k] - idle) / self.actions if self.actions else cmd[k] / self.seconds
            unit = "per action, idle rate subtracted" if self.actions else "per second"
            print(f"  {k:<20} {cmd[k]:>8} calls   {per:8.3f} {unit}")
        for k, v in stats.items():
            idle = self.idle.stats[k] / self.idle.seconds * self.seconds if self.idle else 0
            per = (v - idle) / self.actions if self.actions else v / self.seconds
            print(f"  {k:<25} {v:>10}   {per:10.1f} {'per action' if self.actions else 'per second'}")


async def ops(args, nodes, redis):
    port = [n.port for n in nodes]
    print(f"{len(nodes)} node(s), redis {redis.url()}; every phase: CONFIG RESETSTAT, actions, INFO")
    await asyncio.sleep(3)
    with Phase(redis, f"idle {args.idle:g} s ({len(nodes)} nodes)", 0) as idle:
        await asyncio.sleep(args.idle)

    n = args.n
    counter = {}

    async def open_on_nodes(prefix, count):
        gate = asyncio.Semaphore(args.concurrency)

        async def one(i):
            async with gate:
                return await connect(port[i % len(port)], args.secret, f"{prefix}{i:05d}")

        return await asyncio.gather(*(one(i) for i in range(count)))

    with Phase(redis, "connect (no join)", n, idle):
        socks = await open_on_nodes("u", n)
        await asyncio.sleep(0.5)

    async def join_all(pairs):
        waiters = []
        for ws, room in pairs:
            ws.send({"type": "join", "room": room})
            waiters.append(ws.until("joined"))
        await asyncio.gather(*waiters)

    # First joins: every socket joins a room of its own (the node starts following it).
    # The same room must not be joined on two nodes here, so each node gets its own rooms.
    with Phase(redis, "first join of a room (a new room per socket)", n, idle):
        await join_all([(ws, f"solo{i:05d}") for i, ws in enumerate(socks)])
        await asyncio.sleep(0.5)
    # Later joins: every socket joins one shared room that every node already follows.
    warm = [ws for ws in socks[: len(nodes)]]
    await join_all([(ws, "shared") for ws in warm])
    await asyncio.sleep(0.5)
    tasks = [asyncio.create_task(drain(ws, counter)) for ws in warm]
    rest = socks[len(nodes):]
    with Phase(redis, "join of a room the node already follows (presence only)", len(rest), idle):
        for ws in rest:
            ws.send({"type": "join", "room": "shared"})
        # The replies are read by the drain tasks started below; wait for quiet instead.
        tasks += [asyncio.create_task(drain(ws, counter)) for ws in rest]
        await asyncio.sleep(0.3)
        await quiet(1.0)
    print(f"  frames so far: {counter}")

    # Sends: one socket sends n messages to "shared" (every socket is a member), without and with a ref.
    sender = rest[0] if rest else warm[0]
    for label, room, with_ref in (("send, no ref, room with members on every node", "shared", False),
                                  ("send with a ref (idempotency key), same room", "shared", True)):
        before = dict(counter)
        wire_before = sum(ws.wire_in for ws in socks)
        with Phase(redis, label, n, idle):
            for i in range(n):
                msg = {"type": "send", "room": room, "text": f"message {i:05d} " + "x" * 20}
                if with_ref:
                    msg["ref"] = f"ref-{i:05d}"
                sender.send(msg)
                if i % 20 == 19:
                    await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            await quiet(1.0)
        got = counter.get("message", 0) - before.get("message", 0)
        wire = sum(ws.wire_in for ws in socks) - wire_before
        print(f"  deliveries {got} ({got / n:.1f} per message), WebSocket bytes received by clients "
              f"{wire} ({wire / max(got, 1):.1f} per delivery, acks included)")
    for t in tasks:
        t.cancel()
    for ws in socks:
        ws.writer.close()


# ------------------------------------------------------------------------------------------
# cpu
# ------------------------------------------------------------------------------------------


def cpu(args):
    tick = os.sysconf("SC_CLK_TCK")
    bench = subprocess.Popen([args.bench, "fanout", *args.rest], stdout=subprocess.PIPE, text=True)
    last = {}  # pid -> (name, cpu seconds)

    def read(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                head, tail = f.read().rsplit(")", 1)
        except OSError:
            return None
        fields = tail.split()
        return head.split("(", 1)[1], (int(fields[11]) + int(fields[12])) / tick

    def children(pid):
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                return [int(c) for c in f.read().split()]
        except OSError:
            return []

    threads = {}  # (pid, tid) -> (thread name, cpu seconds), for the nodes

    def read_threads(pid):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            return
        for tid in tids:
            got = read(f"{pid}/task/{tid}")
            if got:
                threads[(pid, tid)] = got

    lines = []
    import threading
    reader = threading.Thread(target=lambda: lines.extend(bench.stdout), daemon=True)
    reader.start()
    while bench.poll() is None:
        for pid in [bench.pid, *children(bench.pid)]:
            got = read(pid)
            if got:
                last[pid] = got
                if got[0] == "authchat":
                    read_threads(pid)
        time.sleep(0.02)
    reader.join()
    sys.stdout.write("".join(lines))
    print("--- CPU seconds (utime + stime, last reading before exit)")
    for pid, (name, secs) in last.items():
        print(f"  {name:<16} pid {pid:<8} {secs:7.2f}")
    print("--- node threads (CPU seconds)")
    for (pid, tid), (name, secs) in sorted(threads.items()):
        if secs >= 0.01:
            print(f"  pid {pid:<8} tid {tid:<8} {name:<20} {secs:7.2f}")
    for line in lines:
        if line.startswith("deliveries:"):
            print(f"  {line.strip()}")
    return bench.returncode


# ------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    m = sub.add_parser("memory")
    m.add_argument("--backend", choices=["memory", "redis"], default="memory")
    m.add_argument("--steps", default="1000,5000,10000")
    m.add_argument("--room-size", type=int, default=100)
    o = sub.add_parser("ops")
    o.add_argument("--nodes", type=int, default=1)
    o.add_argument("--n", type=int, default=500, help="sockets, joins and sends per phase")
    o.add_argument("--idle", type=float, default=10.0, help="seconds of the idle phase")
    c = sub.add_parser("cpu")
    c.add_argument("--bench", default=os.path.join(os.path.dirname(__file__), "..",
                                                   "target/release/authchat-bench"))
    c.add_argument("rest", nargs=argparse.REMAINDER, help="-- then `authchat-bench fanout`'s arguments")
    for p in (m, o):
        p.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "target/release/authchat"))
        p.add_argument("--workers", type=int, default=0)
        p.add_argument("--concurrency", type=int, default=200)
    args = parser.parse_args()
    if args.what == "cpu":
        args.rest = [a for a in args.rest if a != "--"] if args.rest[:1] == ["--"] else args.rest
        sys.exit(cpu(args))
    args.secret = secrets.token_hex(32)
    workdir = tempfile.mkdtemp(prefix="scaling-probe-")
    redis, nodes = None, []
    try:
        if args.what == "memory":
            args.steps = [int(s) for s in args.steps.split(",")]
            if args.steps[-1] > 19000:
                raise SystemExit("at most 19,000 sockets: 20,000 open files per process")
            if args.backend == "redis":
                redis = Redis(workdir)
            nodes.append(Node(workdir, "n1", args.bin, args.backend, args.secret, redis and redis.url(),
                              args.workers, args.steps[-1] + 1000))
            asyncio.run(memory(args, nodes[0], redis))
        else:
            redis = Redis(workdir)
            for i in range(args.nodes):
                nodes.append(Node(workdir, f"n{i + 1}", args.bin, "redis", args.secret, redis.url(),
                                  args.workers, 20000))
            asyncio.run(ops(args, nodes, redis))
    finally:
        for node in nodes:
            node.stop()
        if redis:
            redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
