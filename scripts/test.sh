#!/usr/bin/env bash
# The one command that runs every test: unit tests, and integration tests that start the real
# server (in-process and as a binary) and talk to it over real sockets.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --all-targets "$@"
