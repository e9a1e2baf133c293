#!/usr/bin/env bash
# Fuzzes authchat's parsers of untrusted input with cargo-fuzz (libFuzzer), SECONDS per target:
#   scripts/fuzz.sh SECONDS [target...]     (all targets when none is named)
# Targets (fuzz/fuzz_targets/): client_message, upgrade_credentials, jwks, config, jwt_verify.
# Each run starts from the committed seeds (fuzz/seeds/<target>/) copied into a working corpus
# (fuzz/corpus/<target>/, not committed), so what earlier runs found is kept locally.
# Exits non-zero when any target crashed, timed out or ran out of memory, naming the input
# and the command that replays it. No network: everything runs in-process.
#
# Needs the nightly toolchain (libFuzzer's instrumentation) and cargo-fuzz; a missing
# cargo-fuzz is installed from crates.io, a missing nightly is named.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: $0 SECONDS [target...]" >&2; exit 2; }
[ $# -ge 1 ] || usage
seconds=$1
shift
[[ "$seconds" =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || usage

all_targets=(client_message upgrade_credentials jwks config jwt_verify)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

# The longest input each target is given: well past what its parser needs to see every
# structure, small enough that libFuzzer spends its time on structure rather than length.
max_len() {
  case $1 in
    client_message) echo 4096 ;;
    upgrade_credentials) echo 2048 ;;
    jwks) echo 16384 ;;
    config) echo 8192 ;;
    jwt_verify) echo 4096 ;;
    *) echo "unknown target $1; known: ${all_targets[*]}" >&2; return 1 ;;
  esac
}
for t in "${targets[@]}"; do max_len "$t" >/dev/null; done

if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "the nightly toolchain is missing: rustup toolchain install nightly --profile minimal" >&2
  exit 1
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz (crates.io)"
  cargo install cargo-fuzz --locked
fi

# -O: optimised like the server; -a: debug assertions, so an arithmetic overflow is a crash
# here rather than a silent wrap in production; -s none: no AddressSanitizer, since authchat
# forbids unsafe code and what is hunted here is panics, hangs and memory blow-ups (twice the
# executions per second on a small machine).
flags=(-O -a -s none)
mkdir -p fuzz/logs
echo "building the fuzz targets (nightly, with coverage instrumentation; log: fuzz/logs/build.log)"
if ! cargo +nightly fuzz build "${flags[@]}" >fuzz/logs/build.log 2>&1; then
  tail -n 30 fuzz/logs/build.log >&2
  echo "building the fuzz targets failed" >&2
  exit 1
fi
failed=()
for t in "${targets[@]}"; do
  corpus=fuzz/corpus/$t
  mkdir -p "$corpus" "fuzz/artifacts/$t"
  cp -n fuzz/seeds/"$t"/* "$corpus"/
  log=fuzz/logs/$t.log
  echo "== $t: ${seconds}s, corpus $(find "$corpus" -type f | wc -l) inputs"
  set +e
  cargo +nightly fuzz run "${flags[@]}" "$t" "$corpus" -- \
    -max_total_time="$seconds" -max_len="$(max_len "$t")" -dict="fuzz/dicts/$t.dict" \
    -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1
  status=$?
  set -e
  grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" | tr '\n' ' ' || true
  echo
  if [ "$status" -ne 0 ]; then
    failed+=("$t")
    artifact=$(grep -oE '(Test unit written to|artifact_prefix.*; Test unit written to) [^ ]+' "$log" | awk '{print $NF}' | tail -n 1)
    echo "!! $t failed (exit $status); log: $log" >&2
    grep -E '^(==[0-9]+== ?ERROR|thread .* panicked|SUMMARY)' "$log" | head -n 5 >&2 || true
    if [ -n "$artifact" ]; then
      echo "   input: $artifact" >&2
      echo "   reproduce: cargo +nightly fuzz run ${flags[*]} $t $artifact" >&2
    fi
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets, ${seconds}s each, no crash"
