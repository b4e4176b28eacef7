#!/bin/sh
# Remove what scripts/install.sh installed, as root. Keeps the configuration
# (/etc/oxipost), the mail queue (/var/spool/oxipost), the mail store, and the
# oxipost user and oxidrop group (files may still belong to them).
#
# Usage: sudo [DESTDIR=/stage] scripts/uninstall.sh
set -eu
PROG=uninstall.sh
die() { echo "$PROG: error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run me as root"
D=${DESTDIR:-}
MANIFEST=$D/var/lib/oxipost/installed-files
[ -f "$MANIFEST" ] || die "$MANIFEST not found: nothing installed by install.sh"
if [ -z "$D" ] && [ -x /usr/sbin/mailctl ] && /usr/sbin/mailctl status >/dev/null 2>&1; then
    /usr/sbin/mailctl stop || die "cannot stop the mail system"
fi
if [ -z "$D" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl disable oxipost.service >/dev/null 2>&1 || true
fi
while IFS= read -r f; do
    case $f in
        /usr/sbin/*|/usr/lib/oxipost/*|/usr/share/man/*|/etc/systemd/system/oxipost.service) rm -f "$D$f" ;;
    esac
done <"$MANIFEST"
rm -f "$MANIFEST"
rmdir "$D/usr/lib/oxipost" 2>/dev/null || true
if [ -z "$D" ] && command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
echo "removed the programs; kept /etc/oxipost, /var/spool/oxipost, /var/lib/oxipost and the oxipost user"
