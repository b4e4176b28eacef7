#!/bin/sh
# Build oxipost in release mode and install it on a Debian-like system, as root.
#
# Usage: sudo [DESTDIR=/stage] scripts/install.sh [--no-build] [--no-systemd] [--from BINDIR]
#
# DESTDIR (as in packaging) puts every file under a staging root; the paths recorded and
# configured stay the real ones. --from takes the programs from BINDIR instead of
# target/release (the tests install a debug build into a DESTDIR).
#
# Installs:
#   /usr/sbin/mailctl (command_directory) and the other commands that exist,
#   /usr/lib/oxipost/ (daemon_directory): master and every daemon that exists,
#   /etc/oxipost/main.cf and master.cf, only when absent (never overwritten),
#   man pages under /usr/share/man,
#   the mail_owner user "oxipost" and the setgid group "oxidrop" (created if absent),
#   /var/spool/oxipost and /var/lib/oxipost (via mailctl check/start rules),
#   /etc/systemd/system/oxipost.service (enabled, not started).
# Records every installed file in /var/lib/oxipost/installed-files for uninstall.sh.
set -eu
PROG=install.sh
die() { echo "$PROG: error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run me as root"
here=$(cd "$(dirname "$0")/.." && pwd)
build=1; systemd=1; from=
while [ $# -gt 0 ]; do
    case $1 in
        --no-build) build=0 ;;
        --no-systemd) systemd=0 ;;
        --from) shift; [ $# -gt 0 ] || die "--from needs a directory"; from=$1; build=0 ;;
        *) die "unknown option $1" ;;
    esac
    shift
done
D=${DESTDIR:-}
CMD_DIR=/usr/sbin
DAEMON_DIR=/usr/lib/oxipost
CONF_DIR=/etc/oxipost
MAN_DIR=/usr/share/man
DATA_DIR=/var/lib/oxipost
SPOOL=/var/spool/oxipost
MANIFEST=$DATA_DIR/installed-files

if [ $build = 1 ]; then
    (cd "$here" && cargo build --release --workspace --bins) || die "cargo build failed"
fi
rel=${from:-$here/target/release}
[ -x "$rel/master" ] && [ -x "$rel/mailctl" ] || die "no release build in $rel"

getent group oxidrop >/dev/null || groupadd --system oxidrop || die "groupadd oxidrop"
getent passwd oxipost >/dev/null || useradd --system --home-dir "$SPOOL" --no-create-home \
    --shell /usr/sbin/nologin --user-group oxipost || die "useradd oxipost"

install -d -m 0755 "$D$DAEMON_DIR" "$D$CONF_DIR" "$D$CMD_DIR"
install -d -m 0700 -o oxipost -g oxipost "$D$DATA_DIR"
: >"$D$MANIFEST.new"
# Commands people run; everything else is a daemon (or master) in daemon_directory.
COMMANDS="mailctl postconf postmap postalias newaliases sendmail postdrop postqueue postsuper postcat mailq"
for f in "$rel"/*; do
    [ -f "$f" ] && [ -x "$f" ] || continue
    name=$(basename "$f")
    case $name in
        oxipost-testd|*.d) continue ;;
    esac
    case " $COMMANDS " in
        *" $name "*) dest=$CMD_DIR/$name ;;
        *) dest=$DAEMON_DIR/$name ;;
    esac
    case $name in
        postdrop|postqueue) install -m 2755 -g oxidrop "$f" "$D$dest" ;;
        *) install -m 0755 "$f" "$D$dest" ;;
    esac
    echo "$dest" >>"$D$MANIFEST.new"
done
for cf in main.cf master.cf; do
    if [ ! -e "$D$CONF_DIR/$cf" ]; then
        install -m 0644 "$here/$cf" "$D$CONF_DIR/$cf"
        echo "configuration: installed $CONF_DIR/$cf"
    else
        echo "configuration: kept the existing $CONF_DIR/$cf"
    fi
done
for page in "$here"/man/*.[0-9]; do
    sec=${page##*.}
    install -d -m 0755 "$D$MAN_DIR/man$sec"
    install -m 0644 "$page" "$D$MAN_DIR/man$sec/"
    echo "$MAN_DIR/man$sec/$(basename "$page")" >>"$D$MANIFEST.new"
done
if [ $systemd = 1 ] && { [ -n "$D" ] || [ -d /etc/systemd/system ]; }; then
    install -d -m 0755 "$D/etc/systemd/system"
    install -m 0644 "$here/scripts/oxipost.service" "$D/etc/systemd/system/oxipost.service"
    echo /etc/systemd/system/oxipost.service >>"$D$MANIFEST.new"
    if [ -z "$D" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl daemon-reload && systemctl enable oxipost.service >/dev/null 2>&1 || true
    fi
fi
mv "$D$MANIFEST.new" "$D$MANIFEST"
if [ -n "$D" ]; then
    echo "staged under $D"
    exit 0
fi
"$CMD_DIR/mailctl" -c "$CONF_DIR" check || die "mailctl check failed: fix $CONF_DIR/main.cf"
echo "installed; start with: systemctl start oxipost (or mailctl start)"
