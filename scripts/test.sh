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

echo "== fuzz (cargo fuzz, bounded)"
# The parser fuzz targets of fuzz/ (issue 10), each for a few seconds on a copy of its seed
# corpus: a crash fails the run. OXIPOST_FUZZ_SECONDS (default 15 for IMAP, half for POP3
# and SMTP; 0 skips) bounds it: about 1 minute with the build, cargo-fuzz cached.
fuzz_secs=${OXIPOST_FUZZ_SECONDS:-15}
if [ "$fuzz_secs" = 0 ]; then
    echo "fuzzing skipped (OXIPOST_FUZZ_SECONDS=0)"
elif ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzzing SKIPPED: cargo-fuzz is not installed (scripts/install-test-deps.sh installs it as root)"
else
    (cd fuzz && cargo fuzz build -s none) >/dev/null 2>&1 || { echo "cargo fuzz build failed"; (cd fuzz && cargo fuzz build -s none) 2>&1 | tail -n 30; exit 1; }
    for t in imap_command pop3_command smtp_command; do
        secs=$fuzz_secs; [ "$t" = imap_command ] || secs=$(( (fuzz_secs + 1) / 2 ))
        work=$(mktemp -d)
        cp fuzz/corpus/$t/* "$work"/
        if (cd fuzz && cargo fuzz run -s none "$t" "$work" -- -max_total_time="$secs" >"$work.log" 2>&1); then
            echo "$t: $(grep -E '^Done [0-9]+ runs' "$work.log" | tail -n 1)"
        else
            echo "$t: FAILED (crash input in fuzz/artifacts/$t/)"; tail -n 40 "$work.log"; status_fuzz=1
        fi
        rm -rf "$work" "$work.log"
    done
fi

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
[ -z "${status_fuzz:-}" ] || { echo "fuzzing found a crash (see above)"; status=1; }
exit $status
