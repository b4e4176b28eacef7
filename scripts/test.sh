#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need (Debian packages, the Python
# test runner), checks formatting and lints, builds, runs the Rust unit and integration
# tests, then the end-to-end tests that start the real binaries on loopback.
# Usage: scripts/test.sh   (as root on a fresh Debian 12 machine, or as a developer)
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
    scripts/install-test-deps.sh
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== cargo build"
cargo build --workspace --quiet

echo "== cargo test"
cargo test --workspace --quiet 2>&1 | tail -n 200

echo "== end-to-end tests (pytest)"
export OXIPOST_BIN="$PWD/target/debug"
python3 -m pytest -q -p no:cacheprovider tests
