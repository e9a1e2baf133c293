#!/usr/bin/env bash
# A local cluster: a private redis-server, three authchat nodes with store.backend = "redis",
# and nginx in front of them on one address (deploy/nginx/). Everything runs in the
# foreground of this script, in a temporary directory, on 127.0.0.1 only; Ctrl-C (or
# `scripts/cluster.sh stop` from another terminal) stops it all: nginx first, then the nodes
# (SIGTERM, a graceful stop), then Redis.
#
#   scripts/cluster.sh [--port 8080] [--redis-port P] [--node-ports P1,P2,P3] [--keep]
#   scripts/cluster.sh stop [--port 8080]
#
# The nodes run in dev mode (the embedded config: dev users alice, bob, admin with passwords
# <name>-password, no TLS) with a shared HS256 secret generated for this run (written to
# <dir>/secret, never printed), node ids n1..n3, and the proxy in server.trusted_proxies.
# Any other AUTHCHAT__* variable in the environment reaches every node, e.g.
#   AUTHCHAT__WS__HANDSHAKE_LIMIT__BURST=5000 scripts/cluster.sh
# Binary: $AUTHCHAT_BIN, else target/release/authchat if it exists, else `cargo build --release`.
# Needs redis-server, nginx, curl and python3 (for free ports).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

port=8080
redis_port=
node_ports=
keep=0
command=start
usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
while [ $# -gt 0 ]; do
  case "$1" in
    stop) command=stop ;;
    --port) port=$2; shift ;;
    --redis-port) redis_port=$2; shift ;;
    --node-ports) node_ports=$2; shift ;;
    --keep) keep=1 ;;
    -h | --help) usage ;;
    *) echo "cluster.sh: unknown argument $1" >&2; usage 2 ;;
  esac
  shift
done

# The running cluster's script pid, by proxy port, so `stop` can find it.
pidfile="${TMPDIR:-/tmp}/authchat-cluster-$port.pid"

if [ "$command" = stop ]; then
  if [ ! -s "$pidfile" ] || ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "cluster.sh: no cluster running on port $port (no live $pidfile)" >&2
    exit 1
  fi
  pid=$(cat "$pidfile")
  kill -TERM "$pid"
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || { echo "cluster on port $port stopped"; exit 0; }; sleep 0.2; done
  echo "cluster.sh: process $pid still running after 30 s" >&2
  exit 1
fi

for tool in redis-server redis-cli nginx curl python3; do
  command -v "$tool" >/dev/null 2>&1 || { echo "cluster.sh: $tool is missing (Debian: apt-get install redis-server redis-tools nginx curl python3)" >&2; exit 1; }
done
if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
  echo "cluster.sh: a cluster already runs on port $port (pid $(cat "$pidfile")); scripts/cluster.sh stop --port $port" >&2
  exit 1
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if port_taken "$port"; then
  echo "cluster.sh: 127.0.0.1:$port is in use; choose another with --port" >&2
  exit 1
fi
redis_port=${redis_port:-$(free_port)}
if [ -n "$node_ports" ]; then
  IFS=, read -r -a ports <<<"$node_ports"
  [ ${#ports[@]} = 3 ] || { echo "cluster.sh: --node-ports needs three ports, e.g. 8081,8082,8083" >&2; exit 2; }
else
  ports=("$(free_port)" "$(free_port)" "$(free_port)")
fi

if [ -n "${AUTHCHAT_BIN:-}" ]; then
  bin=$AUTHCHAT_BIN
elif [ -x target/release/authchat ]; then
  bin=$repo/target/release/authchat
  if [ -n "$(find src config Cargo.toml -newer "$bin" -print -quit)" ]; then
    echo "note: target/release/authchat is older than the sources; run cargo build --release for the current code"
  fi
else
  echo "building the release binary (cargo build --release)…"
  cargo build --release
  bin=$repo/target/release/authchat
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/authchat-cluster.XXXXXX")
# Started processes, in start order (stopped in reverse), and their pids by name.
names=()
declare -A pid_of

# shellcheck disable=SC2317  # called from the traps below
stop_all() {
  trap - INT TERM EXIT
  echo
  echo "stopping…"
  # nginx first (no new traffic), then the nodes (graceful), then Redis (it writes its AOF).
  local i name pid waited
  for ((i = ${#names[@]} - 1; i >= 0; i--)); do
    name=${names[$i]}
    pid=${pid_of[$name]}
    kill -TERM "$pid" 2>/dev/null || true
    waited=0
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 150 ]; do sleep 0.1; waited=$((waited + 1)); done
    if kill -0 "$pid" 2>/dev/null; then
      echo "  $name did not stop within 15 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  rm -f "$pidfile"
  if [ "$keep" = 1 ]; then
    echo "stopped; logs kept in $dir"
  else
    rm -rf "$dir"
    echo "stopped"
  fi
}
trap 'stop_all; exit 0' INT TERM
trap stop_all EXIT
echo $$ >"$pidfile"

# Each child gets its own session (setsid), so Ctrl-C reaches only this script, which then
# stops them in order instead of every process getting SIGINT at once.
start() {
  local name=$1; shift
  setsid "$@" >"$dir/$name.log" 2>&1 &
  pid_of[$name]=$!
  names+=("$name")
}

# Waits until `url` answers 2xx, or stops everything if process `what` exits or 30 s pass.
wait_for() {
  local what=$1 url=$2 pid=${pid_of[$1]}
  for _ in $(seq 150); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { echo "cluster.sh: $what exited; its log:" >&2; tail -n 20 "$dir/$what.log" >&2; exit 1; }
    sleep 0.2
  done
  echo "cluster.sh: $what did not answer $url within 30 s; its log:" >&2
  tail -n 20 "$dir/$what.log" >&2
  exit 1
}

# Redis: private, loopback only, AOF on (so accepted messages survive a Redis restart).
mkdir -p "$dir/redis"
start redis redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$dir/redis" \
  --appendonly yes --save "" --daemonize no
for _ in $(seq 50); do
  [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ] && break
  sleep 0.1
done

# One secret for every node (tokens minted by one verify on the others), 64 base64 characters.
umask 077
head -c 48 /dev/urandom | base64 | tr -d '\n' >"$dir/secret"
umask 022

origins="http://127.0.0.1:$port,http://localhost:$port"
for i in 1 2 3; do
  p=${ports[$((i - 1))]}
  AUTHCHAT__SERVER__HOST=127.0.0.1 \
  AUTHCHAT__SERVER__PORT="$p" \
  AUTHCHAT__SERVER__NODE_ID="n$i" \
  AUTHCHAT__SERVER__TRUSTED_PROXIES=127.0.0.1 \
  AUTHCHAT__SERVER__ALLOWED_ORIGINS="$origins" \
  AUTHCHAT__SERVER__STATIC_DIR="$repo/static" \
  AUTHCHAT__STORE__BACKEND=redis \
  AUTHCHAT__REDIS__URL="redis://127.0.0.1:$redis_port" \
  AUTHCHAT__AUTH__SECRET="$(cat "$dir/secret")" \
    start "n$i" "$bin" serve
done
for i in 1 2 3; do
  wait_for "n$i" "http://127.0.0.1:${ports[$((i - 1))]}/readyz"
done

# nginx: the shared main file and the proxy configuration rendered for these ports.
mkdir -p "$dir/nginx"
cp deploy/nginx/nginx.conf "$dir/nginx/nginx.conf"
sed -e "s/\${AUTHCHAT_LISTEN}/127.0.0.1:$port/" \
    -e "s/\${AUTHCHAT_NODE1}/127.0.0.1:${ports[0]}/" \
    -e "s/\${AUTHCHAT_NODE2}/127.0.0.1:${ports[1]}/" \
    -e "s/\${AUTHCHAT_NODE3}/127.0.0.1:${ports[2]}/" \
    deploy/nginx/authchat.conf.template >"$dir/nginx/authchat.conf"
nginx -q -t -p "$dir/nginx/" -c "$dir/nginx/nginx.conf" -g 'daemon off;' 2>"$dir/nginx-test.log" \
  || { echo "cluster.sh: nginx refused the configuration:" >&2; cat "$dir/nginx-test.log" >&2; exit 1; }
start nginx nginx -p "$dir/nginx/" -c "$dir/nginx/nginx.conf" -g 'daemon off;'
wait_for nginx "http://127.0.0.1:$port/healthz"

cat <<EOF

authchat cluster running (Redis store, dev mode, no TLS)
  proxy     http://127.0.0.1:$port/        (chat; /admin.html for the admin page)
  node n1   http://127.0.0.1:${ports[0]}/
  node n2   http://127.0.0.1:${ports[1]}/
  node n3   http://127.0.0.1:${ports[2]}/
  redis     redis://127.0.0.1:$redis_port  (AOF in $dir/redis)
  logs      $dir/{redis,n1,n2,n3,nginx}.log
  secret    $dir/secret  (the nodes' auth.secret, e.g. for authchat-bench fanout --secret-file)
Stop: Ctrl-C here, or scripts/cluster.sh stop --port $port
EOF

# Until a signal, or until one process ends by itself (then everything stops).
set +e
wait -n "${pid_of[@]}"
status=$?
for name in "${names[@]}"; do
  kill -0 "${pid_of[$name]}" 2>/dev/null || echo "cluster.sh: $name exited (status $status); see $dir/$name.log" >&2
done
keep=1
exit 1
