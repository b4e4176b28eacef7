"""Real filters through smtpd_milters (issue 11), started by the tests on loopback:

- SpamAssassin through spamass-milter (spamd on a loopback port, spamass-milter with a
  reject threshold): the GTUBE message is rejected, a clean one passes with SpamAssassin's
  X-Spam-* headers added.
- ClamAV through clamav-milter with a clamd whose database the test writes itself (a
  signature for the EICAR test string in an .ndb file; nothing is downloaded): the EICAR
  message is rejected, a clean one passes with X-Virus-Scanned.

Skipped when the Debian packages (spamassassin, spamass-milter, clamav-daemon,
clamav-milter) are not installed."""

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import AS_USER, wait

GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"


def free_port():
    with socket.socket() as t:
        t.bind(("127.0.0.1", 0))
        return t.getsockname()[1]


def wait_port(port, proc, timeout=180, what="service"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited: {proc.returncode}")
        with socket.socket() as c:
            if c.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not start listening on {port}")


def wait_socket(path, proc, timeout=180, what="service"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited: {proc.returncode}")
        if Path(path).exists():
            with socket.socket(socket.AF_UNIX) as c:
                if c.connect_ex(str(path)) == 0:
                    return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not create {path}")


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, argv, log):
        p = subprocess.Popen(argv, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def procs():
    p = Procs()
    yield p
    p.stop()


def smtp(s, body, subject="test"):
    import smtplib
    msg = f"From: alice@example.org\r\nTo: demo@localhost\r\nSubject: {subject}\r\nMessage-ID: <{time.time()}@example.org>\r\n\r\n{body}\r\n"
    with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=120) as c:
        c.ehlo("client.example")
        c.mail("alice@example.org")
        c.rcpt("demo@localhost")
        return c.data(msg)


have_sa = all(shutil.which(p) for p in ("spamd", "spamass-milter", "spamc"))


@pytest.mark.skipif(not have_sa, reason="spamassassin/spamass-milter not installed")
def test_spamassassin_through_spamass_milter(suite, procs):
    work = suite.root.parent / "sa"
    work.mkdir()
    spamd_port, milter_port = free_port(), free_port()
    spamd = procs.start(["spamd", "--listen", f"127.0.0.1:{spamd_port}", "--allowed-ips", "127.0.0.1",
                         "--max-children", "1", "--nouser-config", "--pidfile", str(work / "spamd.pid"),
                         "--username", "nobody", "--syslog", str(work / "spamd.log")], work / "spamd.out")
    wait_port(spamd_port, spamd, what="spamd")
    sm = procs.start(["spamass-milter", "-p", f"inet:{milter_port}@127.0.0.1", "-r", "15",
                      "--", "-d", "127.0.0.1", "-p", str(spamd_port)], work / "milter.out")
    wait_port(milter_port, sm, what="spamass-milter")
    suite.postconf(f"smtpd_milters = inet:127.0.0.1:{milter_port}", "milter_default_action = tempfail",
                   "milter_content_timeout = 120s")
    suite.start()
    code, text = smtp(suite, f"This is the GTUBE:\r\n{GTUBE}\r\n", subject="gtube")
    assert code == 550, (code, text, (work / "milter.out").read_text(errors="replace"))
    code, text = smtp(suite, "Hello Bob,\r\nlunch at noon tomorrow?\r\nAlice", subject="lunch")
    assert code == 250, text
    files = suite.wait_for_mail(1, timeout=120)
    msg = files[0].read_text()
    assert "X-Spam-Checker-Version: SpamAssassin" in msg and "X-Spam-Status: No" in msg, msg
    assert len(suite.new_mail()) == 1


have_clam = all(shutil.which(p) for p in ("clamd", "clamav-milter"))


@pytest.mark.skipif(not have_clam, reason="clamav-daemon/clamav-milter not installed")
def test_clamav_through_clamav_milter(suite, procs):
    work = suite.root.parent / "clam"
    db = work / "db"
    db.mkdir(parents=True)
    (db / "oxipost-test.ndb").write_text(f"Oxipost.Test.EICAR:0:*:{EICAR.encode().hex()}\n")
    clamd_sock = work / "clamd.sock"
    (work / "clamd.conf").write_text(
        f"Foreground yes\nDatabaseDirectory {db}\nLocalSocket {clamd_sock}\n"
        f"LogFile {work}/clamd.log\nPidFile {work}/clamd.pid\nTemporaryDirectory {work}\n")
    clamd = procs.start(["clamd", "-c", str(work / "clamd.conf")], work / "clamd.out")
    wait_socket(clamd_sock, clamd, what="clamd")
    milter_port = free_port()
    (work / "milter.conf").write_text(
        f"Foreground yes\nMilterSocket inet:{milter_port}@127.0.0.1\nClamdSocket unix:{clamd_sock}\n"
        f"OnInfected Reject\nOnClean Accept\nAddHeader Replace\nLogFile {work}/milter.log\n"
        f"PidFile {work}/milter.pid\nTemporaryDirectory {work}\n")
    cm = procs.start(["clamav-milter", "-c", str(work / "milter.conf")], work / "milter.out")
    wait_port(milter_port, cm, what="clamav-milter")
    suite.postconf(f"smtpd_milters = inet:127.0.0.1:{milter_port}", "milter_default_action = tempfail")
    suite.start()
    code, text = smtp(suite, EICAR, subject="eicar")
    assert code == 550, (code, text, (work / "milter.out").read_text(errors="replace"))
    code, text = smtp(suite, "a clean message", subject="clean")
    assert code == 250, text
    files = suite.wait_for_mail(1)
    msg = files[0].read_text()
    assert "X-Virus-Scanned: clamav-milter" in msg, msg
    assert "X-Virus-Status: Clean" in msg, msg
    time.sleep(1)
    assert len(suite.new_mail()) == 1
