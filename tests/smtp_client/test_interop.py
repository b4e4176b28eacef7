"""Interoperation on loopback: oxipost -> oxipost (a second suite, with and without
STARTTLS, one recipient refused), oxipost -> Debian's Postfix and Postfix -> oxipost (a
private Postfix instance with its own config directory, delivering to a virtual Maildir),
and Postfix's smtp-sink as a fast fake peer that also answers 4xx and 5xx."""

import os
import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import AS_USER, Suite, send, wait_log

HAVE_POSTFIX = shutil.which("postfix") is not None and os.geteuid() == 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def sh(*args, check=True, timeout=120):
    return subprocess.run([str(a) for a in args], check=check, timeout=timeout, capture_output=True, text=True)


@pytest.fixture
def second_suite(suite):
    top = Path(tempfile.mkdtemp(prefix="oxipost-test2-", dir="/tmp"))
    os.chmod(top, 0o755)
    if AS_USER:
        shutil.chown(top, "oxipost", "oxipost")
    # Port bases far apart, so that no service port of one suite is another's.
    for i in range(20):
        s = Suite(top / f"oxi{i}")
        if abs(s.base - suite.base) > 1100:
            break
    try:
        yield s
    finally:
        s.stop()
        s.kill_all()
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.parametrize("tls", [False, True])
def test_oxipost_to_oxipost(suite, second_suite, certs, tls):
    two = second_suite
    two.postconf("mydestination = $myhostname, localhost, two.test", "local_users = demo alice")
    if tls:
        two.postconf("smtpd_tls_security_level = may", f"smtpd_tls_cert_file = {certs['cert']}",
                     f"smtpd_tls_key_file = {certs['key']}")
        suite.postconf("smtp_tls_security_level = verify", f"smtp_tls_CAfile = {certs['ca']}")
    suite.postconf(f"transport_maps = inline:{{two.test=smtp:[127.0.0.1]:{two.smtp_port}}}")
    two.start()
    suite.start()
    send(suite, ["demo@two.test", "alice@two.test", "nobody-here@two.test"])
    two.wait_for_mail(1, "demo")
    two.wait_for_mail(1, "alice")
    log = wait_log(suite, "status=bounced")
    wait_log(suite, "status=sent", count=2)
    assert "to=<nobody-here@two.test>" in log and "dsn=5.1.1" in log
    assert f"said: 550 5.1.1" in log and "(in reply to RCPT TO command)" in log
    if tls:
        assert f"Verified TLS connection established to 127.0.0.1[127.0.0.1]:{two.smtp_port}: TLSv1.3" in log
    # The bounce for the refused recipient comes back to the sender on the first suite.
    (b,) = suite.wait_for_mail(1)
    assert "nobody-here@two.test" in b.read_text(errors="replace")


# ---------------------------------------------------------------------------------------
# Postfix


class Postfix:
    """A private Postfix instance on 127.0.0.1:port with a virtual domain pf.test whose
    user `user` gets mail in vmail/user/Maildir/."""

    def __init__(self, relayhost):
        self.dir = Path(tempfile.mkdtemp(prefix="oxipost-pf-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.etc = self.dir / "etc"
        self.etc.mkdir()
        self.port = free_port()
        self.vmail = self.dir / "vmail"
        self.vmail.mkdir()
        shutil.chown(self.vmail, "nobody", "nogroup")
        shutil.copy("/etc/postfix/master.cf", self.etc / "master.cf")
        (self.etc / "main.cf").write_text("compatibility_level = 3.6\n")
        d = self.dir
        sh("postconf", "-c", self.etc, "-e",
           f"queue_directory = {d}/spool", f"data_directory = {d}/data",
           "inet_interfaces = 127.0.0.1", "inet_protocols = ipv4",
           "myhostname = pf.localdomain", "mydestination =", "alias_maps =", "alias_database =",
           f"maillog_file = {d}/maillog", f"maillog_file_prefixes = {d}",
           "mynetworks = 127.0.0.0/8", f"relayhost = {relayhost}",
           "virtual_mailbox_domains = pf.test", f"virtual_mailbox_base = {self.vmail}",
           "virtual_mailbox_maps = inline:{user@pf.test=user/Maildir/}",
           "virtual_uid_maps = static:65534", "virtual_gid_maps = static:65534",
           "virtual_minimum_uid = 1",
           "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination")
        for sub in ("spool", "data"):
            (d / sub).mkdir()
        shutil.chown(d / "data", "postfix", "postfix")
        sh("postconf", "-c", self.etc, "-M#", "smtp/inet")
        sh("postconf", "-c", self.etc, "-Me", f"{self.port}/inet={self.port} inet n - n - - smtpd")
        for svc in sh("postconf", "-c", self.etc, "-M").stdout.splitlines():
            w = svc.split()
            if len(w) > 4 and w[4] == "y":
                sh("postconf", "-c", self.etc, "-F", f"{w[0]}/{w[1]}/chroot=n")
        alt = sh("postconf", "-h", "alternate_config_directories").stdout.strip()
        if str(self.etc) not in alt:
            sh("postconf", "-e", f"alternate_config_directories = {alt} {self.etc}".strip())
        sh("postfix", "-c", self.etc, "set-permissions", check=False, timeout=120)

    def start(self):
        sh("postfix", "-c", self.etc, "start", timeout=60)
        wait_port(self.port)

    def pids(self):
        m = str(self.etc).encode()
        out = []
        for e in os.listdir("/proc"):
            if not e.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{e}/cmdline").read_bytes()
                env = Path(f"/proc/{e}/environ").read_bytes()
            except OSError:
                continue
            if m in cmd or b"MAIL_CONFIG=" + m in env:
                out.append(int(e))
        return out

    def stop(self):
        sh("postfix", "-c", self.etc, "stop", check=False, timeout=60)
        deadline = time.time() + 20
        while time.time() < deadline and self.pids():
            time.sleep(0.2)
        for p in self.pids():
            try:
                os.kill(p, 9)
            except ProcessLookupError:
                pass
        alt = sh("postconf", "-h", "alternate_config_directories").stdout.split()
        if str(self.etc) in alt:
            alt.remove(str(self.etc))
            sh("postconf", "-e", "alternate_config_directories = " + " ".join(alt), check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self):
        p = self.dir / "maillog"
        return p.read_text(errors="replace") if p.exists() else ""

    def wait_log(self, needle, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if needle in self.log():
                return self.log()
            time.sleep(0.2)
        raise AssertionError(f"{needle!r} not in Postfix log:\n{self.log()[-3000:]}")

    def maildir_new(self):
        d = self.vmail / "user" / "Maildir" / "new"
        return sorted(d.iterdir()) if d.is_dir() else []


@pytest.fixture
def postfix_for(request):
    made = []

    def make(relayhost):
        p = Postfix(relayhost)
        made.append(p)
        p.start()
        return p

    yield make
    for p in made:
        p.stop()


@pytest.mark.skipif(not HAVE_POSTFIX, reason="needs Debian's postfix and root")
def test_oxipost_to_postfix(suite, postfix_for):
    pf = postfix_for("")
    suite.postconf(f"relayhost = [127.0.0.1]:{pf.port}")
    suite.start()
    body = ("From: demo@localhost\r\nTo: user@pf.test\r\nSubject: to postfix\r\n"
            "Message-ID: <topf@localhost>\r\n\r\nover to Postfix\r\n.dot line\r\n8-bit caf\xc3\xa9\r\n")
    send(suite, ["user@pf.test", "nosuch@pf.test"], body=body.encode("latin-1"))
    deadline = time.time() + 30
    while time.time() < deadline and not pf.maildir_new():
        time.sleep(0.2)
    (m,) = pf.maildir_new()
    raw = m.read_bytes()
    assert raw.endswith(b"over to Postfix\n.dot line\n8-bit caf\xc3\xa9\n"), raw
    log = wait_log(suite, "status=bounced")
    assert f"relay=127.0.0.1[127.0.0.1]:{pf.port}" in log
    assert "to=<nosuch@pf.test>" in log and "User unknown in virtual mailbox table" in log
    assert "(in reply to RCPT TO command)" in log
    assert "status=sent (250 2.0.0 Ok: " in log and "queued as" in log
    pf.wait_log("to=<user@pf.test>")


@pytest.mark.skipif(not HAVE_POSTFIX, reason="needs Debian's postfix and root")
def test_postfix_to_oxipost(suite, postfix_for):
    suite.start()
    pf = postfix_for(f"[127.0.0.1]:{suite.smtp_port}")
    with smtplib.SMTP("127.0.0.1", pf.port, timeout=30) as c:
        c.sendmail("someone@pf.test", ["demo@localhost"],
                   b"From: someone@pf.test\r\nSubject: from postfix\r\n\r\nhello oxipost\r\n")
    (m,) = suite.wait_for_mail(1)
    assert m.read_bytes().endswith(b"hello oxipost\n")
    log = pf.wait_log("status=sent")
    assert f"relay=127.0.0.1[127.0.0.1]:{suite.smtp_port}" in log


# ---------------------------------------------------------------------------------------
# smtp-sink


@pytest.fixture
def sink():
    procs = []

    def start(*opts):
        port = free_port()
        p = subprocess.Popen(["smtp-sink", "-u", "nobody", *opts, f"127.0.0.1:{port}", "50"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(p)
        wait_port(port)
        return port

    yield start
    for p in procs:
        p.kill()
        p.wait(10)


@pytest.mark.skipif(shutil.which("smtp-sink") is None, reason="needs smtp-sink")
def test_smtp_sink_accepts(suite, sink):
    port = sink()
    suite.postconf(f"relayhost = [127.0.0.1]:{port}")
    suite.start()
    send(suite, ["a@example.net", "b@example.net"])
    log = wait_log(suite, "status=sent", count=2)
    assert f"relay=127.0.0.1[127.0.0.1]:{port}" in log


@pytest.mark.skipif(shutil.which("smtp-sink") is None, reason="needs smtp-sink")
@pytest.mark.parametrize("opt,status", [("-r", "deferred"), ("-f", "bounced")])
def test_smtp_sink_refuses_rcpt(suite, sink, opt, status):
    port = sink(opt, "rcpt")
    suite.postconf(f"relayhost = [127.0.0.1]:{port}")
    suite.start()
    send(suite, ["a@example.net"])
    log = wait_log(suite, f"status={status}")
    assert "said: " in log and "(in reply to RCPT TO command)" in log
