#!/usr/bin/env bash
# Builds oxipost and starts the whole suite unprivileged on 127.0.0.1 high ports, with its
# configuration, spool, logs and a demo user's mailbox inside ./run, then prints how to
# send and read mail. Run it again to restart. Stop with:
#   target/release/mailctl -c run/etc stop
# When run as root it creates the unprivileged system user `oxipost` and runs the suite
# as that user (the suite itself never needs root in this mode).
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
run="${OXIPOST_RUN_DIR:-$top/run}"
profile="${OXIPOST_PROFILE:-release}"   # the tests use debug to save a release build

need_pkgs=()
command -v swaks >/dev/null 2>&1 || need_pkgs+=(swaks)
command -v cc >/dev/null 2>&1 || need_pkgs+=(gcc)
if [ "$(id -u)" = 0 ] && [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "== installing ${need_pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >/dev/null 2>&1 ||
        { apt-get update -q >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >/dev/null; }
fi

echo "== building ($profile)"
if [ "$profile" = release ]; then
    cargo build --release --workspace --quiet
else
    cargo build --workspace --quiet
fi
bin="$top/target/$profile"

as_user=()
if [ "$(id -u)" = 0 ]; then
    id oxipost >/dev/null 2>&1 || useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin oxipost
    as_user=(runuser -u oxipost --)
fi

if [ -f "$run/etc/main.cf" ]; then
    "${as_user[@]}" "$bin/mailctl" -c "$run/etc" stop >/dev/null 2>&1 || true
else
    mkdir -p "$run"
    [ ${#as_user[@]} -eq 0 ] || chown oxipost: "$run"
    # The suite's user must reach the checkout's binaries and the run directory.
    [ ${#as_user[@]} -eq 0 ] || chmod o+x "$(dirname "$run")" 2>/dev/null || true
    "${as_user[@]}" "$bin/mailctl" init "$run" >/dev/null
fi
[ ${#as_user[@]} -eq 0 ] || chown -R oxipost: "$run"
"${as_user[@]}" "$bin/mailctl" -c "$run/etc" start

port=$("$bin/postconf" -c "$run/etc" -M | awk '$2 == "inet" && $8 == "smtpd" { print $1; exit }')
user=$("$bin/postconf" -c "$run/etc" -h local_users | awk '{ print $1 }' | cut -d: -f1)
user=${user:-demo}
home=$("$bin/postconf" -c "$run/etc" -h local_home_base)
pop3=$("$bin/postconf" -c "$run/etc" -M | awk '$2 == "inet" && $8 == "pop3d" { print $1; exit }')
imap=$("$bin/postconf" -c "$run/etc" -M | awk '$2 == "inet" && $8 == "imapd" { print $1; exit }')
password=$(cat "$run/etc/demo-password" 2>/dev/null || echo '(see oxipost-user passwd)')
cat <<MSG

oxipost is running (config $run/etc, spool $run/spool, log $run/log/maillog).

Send a message to the demo user:
  swaks --server 127.0.0.1:${port#*:} --from you@example.com --to $user@localhost --body 'hello from oxipost'
or, without swaks:
  python3 -c "import smtplib; smtplib.SMTP('127.0.0.1', ${port#*:}).sendmail('you@example.com', ['$user@localhost'], 'Subject: hi\n\nhello from oxipost\n')"

Read it:
  ls ${home:-$run/home}/$user/Maildir/new/ && cat ${home:-$run/home}/$user/Maildir/new/*
or over POP3/IMAP (ports ${pop3#*:}/${imap#*:}) as the SQLite virtual user
  $user@localhost, password: $password   (also in $run/etc/demo-password)
e.g.  python3 -c "import poplib; p = poplib.POP3('127.0.0.1', ${pop3#*:}); p.user('$user@localhost'); p.pass_('$password'); print(p.stat())"
Add users with:  $bin/oxipost-user -c $run/etc add someone@localhost   (password on stdin)

Stop the suite:
  $bin/mailctl -c $run/etc stop
MSG
