#!/usr/bin/env bash
# Mail-in benchmark, oxipost against Debian's Postfix in the same run (see
# scripts/bench_smtp.py for what is measured). Usage: scripts/bench-smtp.sh [-n N] [--reps R]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-smtp.sh: run as root" >&2; exit 1; }
scripts/install-test-deps.sh
cargo build --release --workspace --quiet
exec python3 scripts/bench_smtp.py "$@"
