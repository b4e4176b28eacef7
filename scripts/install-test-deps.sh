#!/bin/sh
# Install the packages oxipost's differential tests need, on Debian 12, as root.
#
# Idempotent: runs `apt-get update` only when a package is missing and apt does
# not know it (or a first install attempt fails on stale lists); installs
# nothing when everything is present. Keeps every package's daemon stopped:
# a policy-rc.d that exits 101 is in place during the install, and a running
# Postfix master is stopped afterwards.
#
# Quiet on success; on error prints one line (with the log file) and exits 1.
#
# Usage: sudo scripts/install-test-deps.sh

set -u

# ---------------------------------------------------------------------------
# Debian packages. Add new test dependencies here, one per line.
# (dovecot-imapd, dovecot-pop3d, postgresql, mariadb-server ... go here too;
# give each a debconf preseed below if its install asks questions.)
APT_PACKAGES="
postfix
postfix-pcre
swaks
s-nail
python3-pytest
libnet-ssleay-perl
libio-socket-ssl-perl
libauthen-sasl-perl
libdigest-hmac-perl
openssl
fetchmail
isync
offlineimap3
mutt
python3-milter
spamassassin
spamass-milter
spamd
clamav-daemon
clamav-milter
mariadb-server
mariadb-client
postfix-mysql
postgresql
postgresql-client
dovecot-imapd
"

# Python modules that must be importable by the `python3` on PATH (which may be
# a pyenv interpreter that does not see Debian's python3-* packages).
PIP_MODULES="
pytest
"

# debconf answers, one "package question type value" per line.
DEBCONF_PRESEED="
postfix postfix/main_mailer_type select Local only
postfix postfix/mailname string example.test
"
# ---------------------------------------------------------------------------

PROG=install-test-deps.sh
LOG=$(mktemp /tmp/install-test-deps.XXXXXX.log) || { echo "$PROG: error: mktemp failed" >&2; exit 1; }
POLICY=/usr/sbin/policy-rc.d
POLICY_BACKUP=
POLICY_CREATED=

die() {
    restore_policy
    last=$(grep -v '^[[:space:]]*$' "$LOG" 2>/dev/null | tail -n 1)
    echo "$PROG: error: $*${last:+: $last} (log: $LOG)" >&2
    exit 1
}

# Run a command with its output in the log; die with a message on failure.
run() {
    what=$1; shift
    echo "+ $*" >>"$LOG"
    "$@" >>"$LOG" 2>&1 || die "$what failed"
}

restore_policy() {
    if [ -n "$POLICY_CREATED" ]; then
        rm -f "$POLICY"
        POLICY_CREATED=
    elif [ -n "$POLICY_BACKUP" ]; then
        mv -f "$POLICY_BACKUP" "$POLICY"
        POLICY_BACKUP=
    fi
}

[ "$(id -u)" -eq 0 ] || die "must run as root"
command -v apt-get >/dev/null 2>&1 || die "apt-get not found (Debian 12 expected)"

installed() {
    [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null)" = "ii " ]
}

missing=
for p in $APT_PACKAGES; do
    installed "$p" || missing="$missing $p"
done

if [ -n "$missing" ]; then
    # Keep services from starting during the install.
    if [ ! -e "$POLICY" ]; then
        POLICY_CREATED=1
    elif [ "$(sh "$POLICY" >/dev/null 2>&1; echo $?)" != 101 ]; then
        POLICY_BACKUP=$POLICY.install-test-deps.$$
        cp -p "$POLICY" "$POLICY_BACKUP" || die "cannot back up $POLICY"
    fi
    if [ -n "$POLICY_BACKUP" ] || [ -n "$POLICY_CREATED" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$POLICY" && chmod 755 "$POLICY" || die "cannot write $POLICY"
    fi
    trap 'restore_policy; exit 130' INT TERM HUP

    # Preseed debconf so nothing asks questions.
    printf '%s\n' "$DEBCONF_PRESEED" | grep -v '^[[:space:]]*$' >>"$LOG"
    printf '%s\n' "$DEBCONF_PRESEED" | grep -v '^[[:space:]]*$' | debconf-set-selections >>"$LOG" 2>&1 \
        || die "debconf-set-selections failed"

    # apt-get update only if apt has no candidate for a missing package.
    updated=
    for p in $missing; do
        cand=$(apt-cache policy "$p" 2>/dev/null | sed -n 's/^ *Candidate: *//p')
        if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then
            run "apt-get update" apt-get update -q
            updated=1
            break
        fi
    done

    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086
    if ! apt-get install -y -q --no-install-recommends $missing >>"$LOG" 2>&1; then
        # Stale package lists give 404s: refresh once and retry.
        [ -n "$updated" ] && die "apt-get install$missing failed"
        run "apt-get update" apt-get update -q
        # shellcheck disable=SC2086
        run "apt-get install$missing" apt-get install -y -q --no-install-recommends $missing
    fi

    restore_policy
    trap - INT TERM HUP
    for p in $missing; do
        installed "$p" || die "package $p still not installed after apt-get install"
    done
fi

# pip modules for the python3 on PATH.
if command -v python3 >/dev/null 2>&1; then
    for m in $PIP_MODULES; do
        if ! python3 -c "import $m" >/dev/null 2>&1; then
            run "python3 -m pip install $m" python3 -m pip install -q --disable-pip-version-check "$m"
            python3 -c "import $m" >>"$LOG" 2>&1 || die "python3 ($(command -v python3)) still cannot import $m"
        fi
    done
else
    die "python3 not found on PATH"
fi

# cargo-fuzz for the bounded fuzz run in scripts/test.sh (fuzz/). Cached: skipped when
# present. Not fatal: test.sh skips fuzzing, saying so, when cargo-fuzz is missing.
if command -v cargo >/dev/null 2>&1 && ! cargo fuzz --version >/dev/null 2>&1; then
    echo "+ cargo install --locked cargo-fuzz" >>"$LOG"
    timeout 900 cargo install --locked --quiet cargo-fuzz >>"$LOG" 2>&1 \
        || echo "$PROG: warning: cargo install cargo-fuzz failed; fuzzing will be skipped" >&2
fi

# No Postfix daemon may run after install (tests start their own instances).
if command -v postfix >/dev/null 2>&1 && postfix status >/dev/null 2>&1; then
    run "postfix stop" postfix stop
fi
qdir=$(postconf -h queue_directory 2>/dev/null || echo /var/spool/postfix)
pidfile=$qdir/pid/master.pid
i=0
while [ -f "$pidfile" ] && pid=$(tr -dc 0-9 <"$pidfile") && [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; do
    i=$((i + 1))
    [ "$i" -le 100 ] || die "Postfix master (pid $pid) still running 10 s after postfix stop"
    sleep 0.1
done

rm -f "$LOG"
exit 0
