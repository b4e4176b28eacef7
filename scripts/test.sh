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
cargo test --workspace --quiet --no-fail-fast 2>&1 | tail -n 200

echo "== end-to-end tests (pytest)"
export OXIPOST_BIN="$PWD/target/debug"
# One pytest process per directory: each has its own conftest helpers.
passed=0; failed=0; skipped=0; status=0
for dir in tests/*/; do
    compgen -G "$dir/test_*.py" >/dev/null || continue
    echo "-- $dir"
    out=$(python3 -m pytest -q -p no:cacheprovider "$dir" 2>&1) || status=1
    printf '%s\n' "$out" | tail -n 30
    last=$(printf '%s\n' "$out" | grep -E '[0-9]+ (passed|failed)' | tail -n 1)
    p=$(grep -oE '[0-9]+ passed' <<<"$last" | grep -oE '[0-9]+' || true)
    f=$(grep -oE '[0-9]+ failed' <<<"$last" | grep -oE '[0-9]+' || true)
    e=$(grep -oE '[0-9]+ error' <<<"$last" | grep -oE '[0-9]+' || true)
    k=$(grep -oE '[0-9]+ skipped' <<<"$last" | grep -oE '[0-9]+' || true)
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0} + ${e:-0})); skipped=$((skipped + ${k:-0}))
done
echo
echo "end-to-end: $passed passed, $failed failed, $skipped skipped"
exit $status
