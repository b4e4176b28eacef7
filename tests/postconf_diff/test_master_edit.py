"""postconf -Fe/-Pe/-PX/-Me/-MX on Debian's stock master.cf, ours against Postfix's.

Postfix moves an edited entry below the comment lines that follow it; oxipost keeps it in
place. So the entries (postconf -M / -F / -P output) are compared as sets, and the text of
each edited entry exactly."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
POSTFIX = "/usr/sbin/postconf"
OURS = str(Path(os.environ.get("OXIPOST_BIN", REPO / "target" / "debug")) / "postconf")
STOCK = Path("/etc/postfix/master.cf")

EDITS = [
    ["-Fe", "pickup/unix/chroot=n", "qmgr/unix/process_limit=2", "smtp/inet/command=smtpd -v"],
    ["-Pe", "relay/unix/syslog_name=x", "smtp/inet/smtpd_banner=ab"],
    ["-PX", "relay/unix/syslog_name"],
    ["-Me", "discard/unix=discard unix - - n - 4 discard"],
    ["-MX", "uucp/unix"],
]


def setup(base: Path, label: str) -> Path:
    d = base / label
    d.mkdir()
    (d / "main.cf").write_text("myhostname = h.example\n")
    shutil.copy(STOCK, d / "master.cf")
    past = time.time() - 5  # Postfix pauses on files younger than a second
    for f in ("main.cf", "master.cf"):
        os.utime(d / f, (past, past))
    return d


def pc(prog, d, *args):
    return subprocess.run([prog, "-c", str(d), *args], capture_output=True, text=True, timeout=10)


@pytest.mark.skipif(not Path(POSTFIX).exists() or not STOCK.exists(), reason="Debian's postfix not installed")
def test_master_cf_edits_match_postfix(tmp_path):
    assert Path(OURS).exists(), f"{OURS} not built"
    pf, ox = setup(tmp_path, "pf"), setup(tmp_path, "ox")
    for e in EDITS:
        a, b = pc(POSTFIX, pf, *e), pc(OURS, ox, *e)
        assert (a.returncode, b.returncode) == (0, 0), (e, a.stderr, b.stderr)
    for flag in ("-M", "-F", "-P"):
        a, b = pc(POSTFIX, pf, flag), pc(OURS, ox, flag)
        assert sorted(a.stdout.splitlines()) == sorted(b.stdout.splitlines()), flag
    # The edited entries read the same, continuation lines included.
    for key in ("smtp/inet", "qmgr/unix", "discard/unix"):
        a, b = pc(POSTFIX, pf, "-Mf", key), pc(OURS, ox, "-Mf", key)
        assert a.stdout == b.stdout, key
    ptext, otext = (pf / "master.cf").read_text(), (ox / "master.cf").read_text()
    for entry in ("smtp       inet  n       -       y       -       -       smtpd -v\n    -o smtpd_banner=ab\n",
                  "qmgr       unix  n       -       n       300     2       qmgr\n"):
        assert entry in ptext and entry in otext, entry


@pytest.mark.skipif(not Path(POSTFIX).exists(), reason="Debian's postfix not installed")
def test_pe_refuses_white_space_like_postfix(tmp_path):
    pf, ox = setup(tmp_path, "pf"), setup(tmp_path, "ox")
    a = pc(POSTFIX, pf, "-Pe", "smtp/inet/smtpd_banner=a b")
    b = pc(OURS, ox, "-Pe", "smtp/inet/smtpd_banner=a b")
    assert a.returncode != 0 and b.returncode != 0
    assert "whitespace" in a.stderr and "whitespace" in b.stderr
    assert (ox / "master.cf").read_bytes() == STOCK.read_bytes()
