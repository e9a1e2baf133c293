#!/usr/bin/env python3
"""Where an idle authenticated socket's heap goes: heaptrack on two `authchat-bench hold` runs.

    scripts/heap-breakdown.py                       # 1,000 then 2,000 idle sockets
    scripts/heap-breakdown.py --small 1000 --large 3000 --keep /tmp/heap
    scripts/heap-breakdown.py --from /tmp/heap      # only analyse files a run kept

It runs `target/release/authchat-bench hold --connections N --wrap "heaptrack -o DIR/holdN"`
for N = --small and --large (authchat as a child process, the tool's usual settings), then
asks heaptrack_print for each run's heap at its peak (the peak is while the sockets are held)
as one line per allocation stack, groups the stacks by what allocated them, and divides the
difference between the two runs by the difference in sockets: bytes of heap per socket,
requested from the allocator, by owner. Fixed costs (start-up, the warm-up batch) cancel out.

Requested bytes are not resident bytes: a large buffer whose pages are never written costs no
RSS. The hold runs' own output (RSS per socket, from /proc) is printed beside, so the two can be
compared. Needs heaptrack and heaptrack_print (apt-get install heaptrack). Loopback only.
"""

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

# (name, predicate over the cleaned stack, root first): the first that matches owns the stack.
CATEGORIES = [
    ("the socket's pump: the upgrade service's future, which owns the connection (src/ws/pump.rs)",
     lambda s: "InnerDispatcher<T,S,B,X,U>::upgrade" in s),
    ("actix-http HTTP/1 dispatcher: read and write buffers (BytesMut, 8 KiB each) and its state",
     lambda s: "h1::dispatcher::Dispatcher<T,S,B,X,U>::new" in s),
    ("the connection's tokio task (actix-server spawns it; it holds the dispatcher future)",
     lambda s: "StreamService" in s and "LocalOwnedTasks<S>::bind" in s),
    ("tokio I/O registration of the TCP socket",
     lambda s: "TcpStream::from_std" in s),
    ("the actor's mailbox and addresses (actix channel, the registry's Recipient)",
     lambda s: "actix::address::channel" in s or "AddressSender<A> as core::clone::Clone" in s),
    ("the socket actor: its tokio task (WsSession, actix context) and boxed parts (inbound wire)",
     lambda s: "Actor::create" in s),
    ("registry: expiry deadline (Deadlines)",
     lambda s: "Deadlines::schedule" in s),
    ("registry: per-user and per-address indexes",
     lambda s: "Registry::add_identity" in s),
    ("registry: the connection's entry",
     lambda s: "Handler<authchat::registry::messages::Register>" in s),
    ("the token's claims kept with the socket (user, token id)",
     lambda s: "TokenService::verify" in s or "identity_of" in s),
    ("outbound queue (Outbox: frames encoded for the pump, e.g. the welcome)",
     lambda s: "Outbox::send" in s),
    ("actor context items (heartbeat interval)",
     lambda s: "WsSession as actix::actor::Actor>::started" in s),
    ("the upgrade request's head, and request and response objects still referenced",
     lambda s: "RequestHead" in s or "h1::codec::Codec" in s or "HttpResponseBuilder" in s
     or "HttpRequest" in s or "request_deadline" in s or "MapErrFuture" in s or "poll_request" in s),
]
OTHER = "other"


def clean(frame):
    frame = re.sub(r"::h[0-9a-f]{16}$", "", frame)
    for a, b in (("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$C$", ","), ("..", "::"),
                 ("$u7b$", "{"), ("$u7d$", "}"), ("$RF$", "&"), ("$LP$", "("), ("$RP$", ")")):
        frame = frame.replace(a, b)
    return frame


def peak_stacks(path):
    """Bytes at the heap's peak by category, from `heaptrack_print -F --flamegraph-cost-type peak`."""
    out = subprocess.run(
        ["heaptrack_print", "-f", path, "--flamegraph-cost-type", "peak", "-F", "/dev/stdout",
         "--print-peaks", "0", "--print-allocators", "0", "--print-temporary", "0", "--print-leaks", "0"],
        check=True, capture_output=True, text=True).stdout
    by = collections.Counter()
    for line in out.splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        # Unresolved addresses differ between runs (ASLR): they are not part of the key.
        s = ";".join(clean(f) for f in re.sub(r"0x[0-9a-f]+", "?", stack).split(";"))
        name = next((name for name, match in CATEGORIES if match(s)), OTHER)
        by[name] += int(n)
    return by


def hold(n, out_dir):
    bench = os.path.join(ROOT, "target/release/authchat-bench")
    prefix = os.path.join(out_dir, f"hold{n}")
    run = subprocess.run([bench, "hold", "--connections", str(n), "--settle", "2",
                          "--wrap", f"heaptrack -o {prefix}"], capture_output=True, text=True)
    sys.stdout.write(run.stdout)
    if run.returncode != 0:
        sys.exit(f"hold {n} failed:\n{run.stderr}")
    return prefix + ".zst"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=2000)
    parser.add_argument("--keep", help="folder for heaptrack's files (default: a temporary one, removed)")
    parser.add_argument("--from", dest="source", help="analyse DIR/hold<small>.zst and DIR/hold<large>.zst only")
    args = parser.parse_args()
    if args.large <= args.small:
        sys.exit("--large must be above --small")
    if args.source:
        files = [os.path.join(args.source, f"hold{n}.zst") for n in (args.small, args.large)]
    else:
        out_dir = args.keep or tempfile.mkdtemp(prefix="heap-breakdown-")
        os.makedirs(out_dir, exist_ok=True)
        files = [hold(n, out_dir) for n in (args.small, args.large)]
    small, large = (peak_stacks(f) for f in files)
    sockets = args.large - args.small
    rows = sorted(((large[k] - small[k]) / sockets, k) for k in set(small) | set(large))
    total = sum(b for b, _ in rows)
    print(f"\nheap requested per idle socket, at the peak, ({args.large} - {args.small} sockets) / {sockets}:")
    print(f"{'bytes':>8} {'KiB':>6} {'share':>6}  owner")
    for b, name in reversed(rows):
        print(f"{b:8.0f} {b / 1024:6.2f} {100 * b / total:5.1f}%  {name}")
    print(f"{total:8.0f} {total / 1024:6.2f} 100.0%  in all")


if __name__ == "__main__":
    main()
