#!/usr/bin/env bash
# Benchmark: postmap build of N (default 1,000,000) entries and N random `postmap -q -`
# queries (90% present keys, 10% absent), oxipost's postmap against Debian's Postfix
# postmap, for hash: and (when the postfix-lmdb package is or can be installed) lmdb:,
# in the same run on the same files. Prints seconds and the ratio Postfix/oxipost
# (above 1: oxipost is faster). Not a test: nothing is asserted.
# Usage: scripts/bench-postmap.sh [N]      (N also from $N)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-${N:-1000000}}
POSTFIX=/usr/sbin/postmap

if [ ! -x "$POSTFIX" ]; then
    echo "Postfix postmap not installed ($POSTFIX): nothing to compare" >&2
    exit 1
fi
if [ ! -e /usr/lib/postfix/postfix-lmdb.so ] && [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix-lmdb >/dev/null 2>&1 || true
fi
TYPES="hash"
if [ -e /usr/lib/postfix/postfix-lmdb.so ]; then
    TYPES="hash lmdb"
fi

cargo build --release --quiet -p oxipost-postmap
OURS="$PWD/target/release/postmap"

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-postmap.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/empty" && : > "$work/empty/main.cf"

python3 - "$N" "$work" <<'PY'
import random, sys
n, work = int(sys.argv[1]), sys.argv[2]
rng = random.Random(1)
with open(f"{work}/source", "w") as f:
    for i in range(n):
        f.write(f"user{i}@domain{i % 5000}.example.com  mailbox{i}@store{i % 97}.example.net\n")
with open(f"{work}/queries", "w") as f:
    for _ in range(n):
        i = rng.randrange(n)
        if rng.random() < 0.1:
            f.write(f"nouser{i}@domain{i % 5000}.example.com\n")
        else:
            f.write(f"User{i}@Domain{i % 5000}.example.com\n")
PY

now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.2f}')"; }

printf '%-6s %-8s %10s %10s %8s\n' type step postfix oxipost ratio
for t in $TYPES; do
    for who in postfix oxipost; do
        mkdir -p "$work/$who-$t"
        cp "$work/source" "$work/$who-$t/source"
    done
    s=$(now); (cd "$work/postfix-$t" && "$POSTFIX" "$t:source"); e=$(now); pb=$(secs "$s" "$e")
    s=$(now); (cd "$work/oxipost-$t" && MAIL_CONFIG="$work/empty" "$OURS" "$t:source"); e=$(now); ob=$(secs "$s" "$e")
    s=$(now); (cd "$work/postfix-$t" && "$POSTFIX" -q - "$t:source" < "$work/queries" > "$work/pq.out"); e=$(now); pq=$(secs "$s" "$e")
    s=$(now); (cd "$work/oxipost-$t" && MAIL_CONFIG="$work/empty" "$OURS" -q - "$t:source" < "$work/queries" > "$work/oq.out"); e=$(now); oq=$(secs "$s" "$e")
    if ! cmp -s "$work/pq.out" "$work/oq.out"; then
        echo "warning: $t query answers differ between Postfix and oxipost" >&2
    fi
    printf '%-6s %-8s %10s %10s %8s\n' "$t" build "$pb" "$ob" "$(python3 -c "print(f'{$pb / max($ob, 0.001):.2f}x')")"
    printf '%-6s %-8s %10s %10s %8s\n' "$t" queries "$pq" "$oq" "$(python3 -c "print(f'{$pq / max($oq, 0.001):.2f}x')")"
    echo "       ($(wc -l < "$work/oq.out") of $N keys found; index sizes: postfix $(du -sh "$work/postfix-$t" | cut -f1), oxipost $(du -sh "$work/oxipost-$t" | cut -f1) with source)"
done
