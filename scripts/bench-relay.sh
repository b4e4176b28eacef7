#!/usr/bin/env bash
# Relay benchmark, oxipost against Debian's Postfix in the same run: 10,000 x 5 KB
# messages relayed to smtp-sink on loopback (see scripts/bench_relay.py).
# Usage: scripts/bench-relay.sh [-n N] [--size BYTES] [--sessions S] [--reps R]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-relay.sh: run as root" >&2; exit 1; }
scripts/install-test-deps.sh
cargo build --release --workspace --quiet
exec python3 scripts/bench_relay.py "$@"
