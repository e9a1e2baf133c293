#!/usr/bin/env bash
# Autobahn conformance: runs the Autobahn TestSuite's cases with kosoku (PyPI, a Python 3 runner
# of the Autobahn case files) against `GET /ws/echo` of the server (the release build, or
# $AUTHCHAT_BIN), prints a table per case group, and fails unless every case 1.* to 10.* is OK,
# NON-STRICT or INFORMATIONAL (both the exchange and the close) and no handshake negotiated
# permessage-deflate (12.*/13.*, the compression cases, are then UNIMPLEMENTED, which is
# expected). See docs/conformance.md.
#
# The echo route and the limits the cases need (16 MiB messages for 9.*, bursts of 1,000
# messages, a handshake per case) are set for this run only, through the environment.
#
# Usage: scripts/autobahn.sh [kosoku -i/-x options, e.g. -i '5.*']
# Needs python3 with venv; installs kosoku into target/autobahn-venv when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

KOSOKU_VERSION=0.1.0
venv=target/autobahn-venv
if [ ! -x "$venv/bin/kosoku" ]; then
  echo "installing kosoku $KOSOKU_VERSION into $venv (pip)"
  if ! python3 -c 'import ensurepip' 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "installing python3-venv (Debian package)"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    else
      echo "python3 cannot make a venv: install python3-venv, e.g.: sudo apt-get install python3-venv" >&2
      exit 1
    fi
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "kosoku==$KOSOKU_VERSION"
fi

# $AUTHCHAT_BIN when given (CI passes the one its test run built), else the release build.
bin=${AUTHCHAT_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --locked --bin authchat
  bin=target/release/authchat
fi
out=target/autobahn
rm -rf "$out"
mkdir -p "$out"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
run_env=(
  AUTHCHAT__SERVER__PORT="$port"
  AUTHCHAT__AUTH__SECRET="$(python3 -c 'import secrets; print(secrets.token_hex(32))')"
  AUTHCHAT__LOG__FILTER=warn
  AUTHCHAT__WS__ECHO=true
  # 9.1.6 and 9.2.6 send 16 MiB messages; their echoes must fit in the outbound queue.
  AUTHCHAT__WS__MAX_MESSAGE_SIZE=16777216
  AUTHCHAT__WS__MAX_OUTBOUND_BYTES=67108864
  # 9.7.* and 9.8.* send 1,000 messages in a burst; every case opens a new socket.
  AUTHCHAT__WS__RATE_LIMIT__PER_SECOND=1000000 AUTHCHAT__WS__RATE_LIMIT__BURST=1000000
  AUTHCHAT__WS__RATE_LIMIT__USER_PER_SECOND=1000000 AUTHCHAT__WS__RATE_LIMIT__USER_BURST=1000000
  AUTHCHAT__WS__HANDSHAKE_LIMIT__PER_SECOND=10000 AUTHCHAT__WS__HANDSHAKE_LIMIT__BURST=10000
  # A server ping in the middle of a case would be an event the case does not expect.
  AUTHCHAT__WS__HEARTBEAT_INTERVAL=10m AUTHCHAT__WS__CLIENT_TIMEOUT=30m
)

token=$(env "${run_env[@]}" "$bin" token --user autobahn --ttl 2h)
env "${run_env[@]}" "$bin" serve >"$out/server.log" 2>&1 &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || { echo "autobahn: the server exited at start" >&2; cat "$out/server.log" >&2; exit 1; }
  sleep 0.1
done

started=$(date +%s)
# kosoku exits 1 when any case is not OK (UNIMPLEMENTED compression included); the verdict is
# taken from its report below.
"$venv/bin/kosoku" "ws://127.0.0.1:$port/ws/echo?token=$token" -o "$out/reports" -p 2 "$@" \
  >"$out/kosoku.log" 2>&1 || true
elapsed=$(($(date +%s) - started))
kill "$server_pid" 2>/dev/null || true
wait "$server_pid" 2>/dev/null || true
trap - EXIT

[ -f "$out/reports/index.json" ] || { echo "autobahn: kosoku wrote no report" >&2; cat "$out/kosoku.log" >&2; exit 1; }
python3 - "$out/reports" "$elapsed" <<'EOF'
import collections, json, os, sys

reports, elapsed = sys.argv[1], sys.argv[2]
with open(os.path.join(reports, "index.json")) as f:
    index = json.load(f)
cases = {case: entry for agent in index.values() for case, entry in agent.items()}
if not cases:
    sys.exit("autobahn: FAILED: the report has no cases")
passing = {"OK", "NON-STRICT", "INFORMATIONAL"}
verdicts = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
groups = collections.defaultdict(collections.Counter)
problems, negotiated = [], []
key = lambda case: [int(p) for p in case.split(".")]
for case in sorted(cases, key=key):
    entry = cases[case]
    behavior, close = entry["behavior"], entry["behaviorClose"]
    # A case passes when both its exchange and its close do (kosoku's `passed`); a bad close,
    # or a case that could not be run (ERROR), counts as FAILED.
    verdict = behavior if close in passing and behavior in verdicts else "FAILED"
    group = case.split(".")[0]
    groups[group][verdict] += 1
    if int(group) <= 10 and verdict not in passing:
        problems.append(f"{case}: {behavior} / close {close} (remote close code {entry.get('remoteCloseCode')})")
    with open(os.path.join(reports, entry["reportfile"])) as f:
        response = json.load(f).get("httpResponse", "")
    if "permessage-deflate" in response.lower():
        negotiated.append(case)

print(f"\nAutobahn cases against /ws/echo ({len(cases)} cases, {elapsed} s)\n")
print("| group | " + " | ".join(verdicts) + " |")
print("| --- |" + " ---: |" * len(verdicts))
for group in sorted(groups, key=int):
    print(f"| {group}.* | " + " | ".join(str(groups[group][v]) for v in verdicts) + " |")
if negotiated:
    print(f"\nFAILED: permessage-deflate was negotiated in {len(negotiated)} cases, e.g. {negotiated[0]}")
if problems:
    print(f"\nFAILED: {len(problems)} cases in 1.*-10.* did not pass:")
    print("\n".join("  " + p for p in problems))
if negotiated or problems:
    print(f"\nreports: {reports}/index.html")
    sys.exit(1)
print("\nautobahn: OK (1.*-10.* all OK, NON-STRICT or INFORMATIONAL; no compression negotiated)")
EOF
