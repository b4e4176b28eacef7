#!/bin/sh
# Start an unprivileged oxipost suite in a directory, for tests and trials.
#
# Usage: scripts/suite-start.sh DIR [PORT_BASE]
#
# Writes DIR/etc (mailctl init, once) with the workspace's debug binaries as
# daemon_directory (OXIPOST_BIN overrides) and ports PORT_BASE+525 (smtp),
# +587 (submission), +110 (pop3), +143 (imap); then starts the suite and waits
# until its listeners are up. Prints the configuration directory on stdout.
# Stop it with scripts/suite-stop.sh DIR.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 DIR [PORT_BASE]" >&2; exit 2; }
dir=$1
base=${2:-2000}
here=$(cd "$(dirname "$0")/.." && pwd)
bin=${OXIPOST_BIN:-$here/target/debug}
if [ ! -x "$bin/mailctl" ] || [ ! -x "$bin/master" ]; then
    (cd "$here" && cargo build -q -p oxipost-master -p oxipost-mailctl)
fi
if [ ! -f "$dir/etc/main.cf" ]; then
    "$bin/mailctl" init "$dir" --port-base "$base" >/dev/null
fi
"$bin/mailctl" -c "$dir/etc" start
echo "$dir/etc"
