#!/usr/bin/env bash
# The side-by-side benchmark in one command: builds authchat and the load tool (release),
# installs the Node peer's packages from its lock file, and runs
# `authchat-bench compare` (authchat, the minimal actix server and the Node server, each
# scenario on each in turn, round after round), which prints the table of medians.
#
#   scripts/bench.sh                        # 5 rounds of connect, fanout, hold and expiry
#   scripts/bench.sh --rounds 1 --scenarios connect,fanout
#   scripts/bench.sh --markdown /tmp/table.md
#
# Arguments go to `authchat-bench compare` (see its --help). Other scenarios run directly,
# e.g. target/release/authchat-bench churn --target node. Method: docs/benchmarks.md.
# Needs node and npm (Node 18 or later) for the Node peer; everything runs on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || {
  echo "the Node peer needs node and npm (Node 18 or later), e.g.: apt-get install nodejs npm" >&2
  exit 1
}
peer=bench/peers/node
if [ ! -d "$peer/node_modules/ws" ] || [ ! -d "$peer/node_modules/jsonwebtoken" ] \
  || [ "$peer/package-lock.json" -nt "$peer/node_modules/.package-lock.json" ]; then
  npm ci --prefix "$peer" --no-audit --no-fund --loglevel=error
fi
cargo build --release --locked -p authchat -p authchat-bench
exec target/release/authchat-bench compare "$@"
