"""scripts/install.sh and uninstall.sh, staged under a DESTDIR (never onto this host's
/usr/sbin, where Debian's Postfix lives for the differential tests): programs, the setgid
postdrop/postqueue, configuration installed once and never overwritten, man pages, the
systemd unit; uninstall removes the programs and keeps configuration."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("OXIPOST_BIN", REPO / "target" / "debug"))

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="install.sh runs as root")


def sh(script, dest, *args):
    env = dict(os.environ, DESTDIR=str(dest))
    return subprocess.run(["sh", str(REPO / "scripts" / script), *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_install_and_uninstall_staged(tmp_path):
    dest = tmp_path / "stage"
    r = sh("install.sh", dest, "--from", str(BIN))
    assert r.returncode == 0, r.stderr
    for cmd in ("mailctl", "postconf", "postmap", "sendmail", "postqueue", "postsuper"):
        assert os.access(dest / "usr/sbin" / cmd, os.X_OK), cmd
    for daemon in ("master", "smtpd", "qmgr", "local", "pickup"):
        assert os.access(dest / "usr/lib/oxipost" / daemon, os.X_OK), daemon
    assert not (dest / "usr/lib/oxipost/oxipost-testd").exists()
    pd = (dest / "usr/sbin/postdrop").stat()
    assert stat.S_IMODE(pd.st_mode) == 0o2755
    import grp
    assert grp.getgrgid(pd.st_gid).gr_name == "oxidrop"
    main_cf = dest / "etc/oxipost/main.cf"
    assert main_cf.read_text() == (REPO / "main.cf").read_text()
    assert (dest / "etc/oxipost/master.cf").read_text() == (REPO / "master.cf").read_text()
    assert (dest / "usr/share/man/man5/postconf.5").exists()
    assert (dest / "usr/share/man/man8/smtpd.8").exists()
    unit = (dest / "etc/systemd/system/oxipost.service").read_text()
    assert "ExecStart=/usr/sbin/mailctl start-fg" in unit
    manifest = (dest / "var/lib/oxipost/installed-files").read_text().split()
    assert "/usr/sbin/mailctl" in manifest and all(p.startswith("/") for p in manifest)
    # The staged programs run and accept the shipped configuration.
    r = subprocess.run([str(dest / "usr/sbin/postconf"), "-c", str(dest / "etc/oxipost"), "-n"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "mail_owner = oxipost" in r.stdout, r.stderr

    # A second install keeps an administrator's configuration.
    main_cf.write_text(main_cf.read_text() + "myhostname = mx.example.org\n")
    r = sh("install.sh", dest, "--from", str(BIN))
    assert r.returncode == 0, r.stderr
    assert "kept the existing" in r.stdout
    assert main_cf.read_text().endswith("myhostname = mx.example.org\n")

    r = sh("uninstall.sh", dest)
    assert r.returncode == 0, r.stderr
    assert not (dest / "usr/sbin/mailctl").exists()
    assert not (dest / "usr/lib/oxipost/smtpd").exists()
    assert not (dest / "usr/share/man/man5/postconf.5").exists()
    assert not (dest / "etc/systemd/system/oxipost.service").exists()
    assert main_cf.exists(), "configuration must be kept"
    assert not (dest / "var/lib/oxipost/installed-files").exists()
    # Nothing to uninstall twice.
    assert sh("uninstall.sh", dest).returncode != 0
