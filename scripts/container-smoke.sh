#!/usr/bin/env bash
# Reproduces the Docker image's runtime layout without Docker (this machine has no container
# engine) and boots the server binary from it (the release build, or $AUTHCHAT_BIN):
#   - the binary at <root>/usr/local/bin/authchat, config/ and static/ under <root>/app (the
#     image's WORKDIR), run from there as the unprivileged system user `authchat`;
#   - the image's environment: AUTHCHAT_ENV=production, AUTHCHAT_CONFIG_DIR=<root>/app/config;
#   - a certificate and key at <root>/etc/authchat/tls/ (the image expects /etc/authchat/tls/;
#     the paths are rebased under <root> through AUTHCHAT__TLS__CERT/KEY, which is the one
#     difference), an HS secret and an Origin allowlist from the environment, as in compose.
# Then it checks GET /healthz over HTTPS and the image's HEALTHCHECK (`authchat healthcheck`
# with the server's environment), logs in over HTTPS, opens a wss:// socket with a one-time
# ticket and reads its welcome, and stops the server with SIGTERM (exit code 0).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for tool in curl openssl runuser; do command -v "$tool" >/dev/null 2>&1 || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl openssl util-linux >/dev/null
  else
    echo "missing: ${need[*]} (apt-get install curl openssl util-linux)" >&2
    exit 1
  fi
fi

# The binary: $AUTHCHAT_BIN when given (CI passes the one its test run built, to spare a
# release build; the layout, TLS and signals do not depend on the optimisation level), else
# the release build, as in the image.
bin=${AUTHCHAT_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --locked --bin authchat
  bin=target/release/authchat
fi
root=$(mktemp -d /tmp/authchat-image.XXXXXX)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
  rm -rf "$root"
}
trap cleanup EXIT

mkdir -p "$root/usr/local/bin" "$root/app" "$root/etc/authchat/tls"
cp "$bin" "$root/usr/local/bin/authchat"
cp -r config static "$root/app/"

# The image's user (useradd --system --uid 10001 authchat); as root we can run as it here too.
run_as=()
if [ "$(id -u)" = 0 ]; then
  id authchat >/dev/null 2>&1 || useradd --system --user-group --home-dir /nonexistent --shell /usr/sbin/nologin authchat
  run_as=(runuser -u authchat --)
  chmod 755 "$root"
else
  echo "note: not root, so the server runs as $(id -un), not as the image's authchat user"
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tls="$root/etc/authchat/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$tls/key.pem" -out "$tls/cert.pem" 2>/dev/null
chmod 644 "$tls/cert.pem" "$tls/key.pem"

# Production has no accounts: give it one, the way an operator would (a mounted config file).
password=$(openssl rand -hex 16)
hash=$(printf '%s' "$password" | "$root/usr/local/bin/authchat" hash-password)
printf '[[users]]\nname = "smoke"\npassword_hash = "%s"\nroles = []\n' "$hash" > "$root/app/users.toml"

# The container's environment, for the server and for its HEALTHCHECK alike.
image_env=(
  PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/nonexistent
  AUTHCHAT_ENV=production AUTHCHAT_CONFIG_DIR="$root/app/config" AUTHCHAT_CONFIG="$root/app/users.toml"
  AUTHCHAT__SERVER__HOST=127.0.0.1 AUTHCHAT__SERVER__PORT="$port"
  AUTHCHAT__SERVER__ALLOWED_ORIGINS="https://localhost:$port"
  AUTHCHAT__AUTH__SECRET="$(openssl rand -base64 48)"
  AUTHCHAT__TLS__CERT="$tls/cert.pem" AUTHCHAT__TLS__KEY="$tls/key.pem"
)

log="$root/server.log"
(
  cd "$root/app"
  exec env -i "${image_env[@]}" "${run_as[@]}" "$root/usr/local/bin/authchat" serve
) >"$log" 2>&1 &
server_pid=$!

fail() { echo "container smoke: FAILED: $*" >&2; echo "--- server log" >&2; cat "$log" >&2; exit 1; }
https() { curl -fsS --cacert "$tls/cert.pem" --resolve "localhost:$port:127.0.0.1" "$@"; }

for _ in $(seq 1 100); do
  https "https://localhost:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$server_pid" 2>/dev/null || fail "the server exited at start"
  sleep 0.1
done
https "https://localhost:$port/healthz" | grep -q '"ok"' || fail "/healthz over HTTPS"
(cd "$root/app" && env -i "${image_env[@]}" "${run_as[@]}" "$root/usr/local/bin/authchat" healthcheck >/dev/null) \
  || fail "authchat healthcheck (the image's HEALTHCHECK)"

login=$(https -X POST "https://localhost:$port/api/login" -H 'content-type: application/json' \
  -d "{\"username\":\"smoke\",\"password\":\"$password\"}") || fail "login over HTTPS"
access=$(printf '%s' "$login" | sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')
[ -n "$access" ] || fail "no access token in the login answer"
ticket=$(https -X POST "https://localhost:$port/api/ticket" -H "Authorization: Bearer $access" \
  | sed -n 's/.*"ticket":"\([^"]*\)".*/\1/p')
[ -n "$ticket" ] || fail "no ticket"

# A WebSocket handshake over TLS by hand: the 101 answer, then the server's first frame.
handshake=$(
  { printf 'GET /ws?ticket=%s HTTP/1.1\r\nHost: localhost:%s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: https://localhost:%s\r\n\r\n' "$ticket" "$port" "$port"
    sleep 2; } | timeout 10 openssl s_client -quiet -connect "127.0.0.1:$port" -servername localhost \
      -CAfile "$tls/cert.pem" -verify_return_error 2>/dev/null | tr -d '\0' || true
)
printf '%s' "$handshake" | grep -q '101 Switching Protocols' || fail "wss:// upgrade with a ticket"
printf '%s' "$handshake" | grep -aq '"type":"welcome"' || fail "no welcome on the wss:// socket"
printf '%s' "$handshake" | grep -aq '"user":"smoke"' || fail "welcome for the wrong user"

# The server process itself (runuser stays in between as its parent).
authchat_pid=$(pgrep -f "^$root/usr/local/bin/authchat serve" | tail -n1)
user=$(ps -o user= -p "$authchat_pid" | tr -d ' ')
[ "$(id -u)" != 0 ] || [ "$user" = authchat ] || fail "the server runs as $user, not as authchat"
kill -TERM "$authchat_pid"
code=0
wait "$server_pid" || code=$?
server_pid=""
[ "$code" = 0 ] || fail "exit code $code after SIGTERM"
echo "container smoke: OK ($bin, from the image layout, user ${user:-?}, production config, TLS on port $port: /healthz, HTTPS login, wss:// ticket welcome, authchat healthcheck, SIGTERM exit 0)"
