#!/bin/sh
# Stop a suite started with scripts/suite-start.sh DIR.
#
# Usage: scripts/suite-stop.sh DIR
#
# Exits 0 when the suite is stopped (or was not running), 1 when it would not stop.
set -eu
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
dir=$1
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${OXIPOST_BIN:-$here/target/debug}
if "$bin/mailctl" -c "$dir/etc" status >/dev/null 2>&1; then
    "$bin/mailctl" -c "$dir/etc" stop
fi
