#!/usr/bin/env bash
# IMAP benchmark: oxipost's imapd against Debian's Dovecot (dovecot-imapd) in the same run,
# alternating A B A B, over identical Maildirs on 127.0.0.1. Not a test: it prints figures.
#
# Usage: scripts/bench-imap.sh [-r ROUNDS] [-n BIG] [-f FETCH] [-i IDLE] [-k REPEAT]
#   -r  rounds of A B (default 2)
#   -n  messages (2 KB) in the SELECT / FETCH (FLAGS ENVELOPE) / SEARCH TEXT mailbox (10000)
#   -f  messages (5 KB) in the FETCH 1:* (BODY.PEEK[]) mailbox (2000)
#   -i  idle IDLE connections per server for the memory step (1000)
#   -k  repeats of each timed command per round, best kept (3)
#
# What is measured and how: see scripts/bench_imap.py (a raw-socket client that sends a
# command and counts bytes up to the tagged reply, so the client is not the bottleneck).
# Both systems run with their defaults except what the many connections need: Dovecot
# mail_max_userip_connections, default_client_limit and process_limit of imap-login and imap
# raised above the idle count (Dovecot keeps its default one process per IMAP session);
# oxipost imapd_max_userip_connections = 0, imapd_client_limit and default_process_limit
# above the idle count, max_use = 0 (as in bench-pop3.sh). Passwd-file {PLAIN} for both,
# no TLS.
#
# Needs root (Dovecot must start as root; the oxipost suite runs as the `oxipost` user as
# in the tests). Installs dovecot-imapd with apt if missing (services kept from starting).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
[ "$(id -u)" = 0 ] || { echo "bench-imap.sh: run as root" >&2; exit 1; }
ROUNDS=2 BIG=10000 FETCH=2000 IDLE=1000 REPEAT=3
while getopts "r:n:f:i:k:" o; do
    case $o in
        r) ROUNDS=$OPTARG ;; n) BIG=$OPTARG ;; f) FETCH=$OPTARG ;; i) IDLE=$OPTARG ;;
        k) REPEAT=$OPTARG ;;
        *) sed -n '2,12p' "$0"; exit 2 ;;
    esac
done
if ! command -v dovecot >/dev/null || [ ! -x /usr/lib/dovecot/imap ]; then
    [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; }
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q --no-install-recommends dovecot-imapd >/dev/null
fi
timeout 3600 cargo build --release --quiet -p oxipost-master -p oxipost-mailctl -p oxipost-auth \
    -p oxipost-imapd -p oxipost-postconf
id oxipost >/dev/null 2>&1 || useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin oxipost
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
exec timeout 3600 python3 "$REPO/scripts/bench_imap.py" --bin "$REPO/target/release" \
    --rounds "$ROUNDS" --big "$BIG" --fetch "$FETCH" --idle "$IDLE" --repeat "$REPEAT"
