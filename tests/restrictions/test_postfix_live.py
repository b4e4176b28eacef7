"""The address-syntax and smtpd_delay_reject=no transcripts against Debian's real Postfix
and oxipost side by side: a private Postfix instance (own config, queue and data
directories, smtpd on a free loopback port) is started with the same main.cf settings as
the oxipost suite, and the replies to MAIL/RCPT/... must be identical. Skipped where
Postfix is not installed or we are not root (Postfix's master needs root)."""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import base_config

POSTFIX = Path("/usr/sbin/postfix")
pytestmark = pytest.mark.skipif(not POSTFIX.exists() or os.geteuid() != 0,
                                reason="needs Debian's postfix and root")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class RealPostfix:
    def __init__(self, settings):
        self.dir = Path(tempfile.mkdtemp(prefix="oxipost-realpfx-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.etc, self.spool, self.data = (self.dir / n for n in ("etc", "spool", "data"))
        for d in (self.etc, self.spool, self.data):
            d.mkdir()
        shutil.chown(self.data, "postfix")
        self.port = free_port()
        master = []
        for line in Path("/etc/postfix/master.cf").read_text().splitlines():
            f = line.split()
            if line[:1] not in ("#", " ", "\t") and len(f) >= 8:
                if f[0] == "smtp" and f[1] == "inet":
                    f[0] = f"127.0.0.1:{self.port}"
                elif f[1] == "inet":
                    continue
                f[4] = "n"  # no chroot
                line = " ".join(f)
            master.append(line)
        (self.etc / "master.cf").write_text("\n".join(master) + "\n")
        for extra in ("dynamicmaps.cf",):
            if (Path("/etc/postfix") / extra).exists():
                shutil.copy(Path("/etc/postfix") / extra, self.etc / extra)
        if Path("/etc/postfix/dynamicmaps.cf.d").is_dir():
            shutil.copytree("/etc/postfix/dynamicmaps.cf.d", self.etc / "dynamicmaps.cf.d")
        base = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.spool),
            "data_directory": str(self.data),
            "inet_interfaces": "127.0.0.1",
            "inet_protocols": "ipv4",
            "maillog_file": str(self.dir / "maillog"),
            "maillog_file_prefixes": "/tmp",
            "alias_maps": "",
            "alias_database": "",
            "smtp_dns_support_level": "disabled",
            "default_transport": "error:no outbound mail in tests",
            "local_transport": "discard:",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
        }
        base.update(settings)
        (self.etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in base.items()))
        r = subprocess.run([str(POSTFIX), "-c", str(self.etc), "start"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr + self.log()
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("Postfix did not listen; log:\n" + self.log())

    def log(self):
        p = self.dir / "maillog"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self):
        pidfile = self.spool / "pid" / "master.pid"
        pid = int(pidfile.read_text().split()[0]) if pidfile.exists() else None
        subprocess.run([str(POSTFIX), "-c", str(self.etc), "stop"], capture_output=True, timeout=60)
        if pid:
            deadline = time.time() + 10
            while time.time() < deadline and Path(f"/proc/{pid}").exists():
                time.sleep(0.1)
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.dir, ignore_errors=True)


def transcript(port, commands, source="127.0.0.1"):
    """The replies (all lines of each) to the commands; the greeting first."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30, source_address=(source, 0))
    f = s.makefile("rb")

    def reply():
        lines = []
        while True:
            line = f.readline()
            if not line:
                return lines + ["<closed>"]
            lines.append(line.decode(errors="replace").rstrip("\r\n"))
            if line[3:4] != b"-":
                return lines
    out = [reply()]
    for c in commands:
        s.sendall(c.encode() + b"\r\n")
        out.append(reply())
    s.close()
    return out


SETTINGS = {
    "myhostname": "mx.example.test",
    "mydomain": "example.test",
    "mydestination": "$myhostname, localhost, example.test",
    "mynetworks": "192.0.2.0/24",
    "local_recipient_maps": "",
    "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
    # Unqualified addresses are looked up as user@$myorigin.
    "smtpd_sender_restrictions": "check_sender_access inline:{demo@mx.example.test=REJECT}",
    "smtpd_recipient_restrictions": "check_recipient_access inline:{root@mx.example.test=REJECT}",
}

SYNTAX = [
    "HELO client.example.test",
    "MAIL FROM:<user@domain.test.>", "RCPT TO:<demo>", "RCPT TO:<demo@mx.example.test.>",
    "RCPT TO:<demo@mx.example.test..>", "RCPT TO:<demo@>", "RCPT TO:<root@x.>", "RSET",
    "MAIL FROM:<a..b@x.test>", "RSET", "MAIL FROM:<.a@x.test>", "RSET", "MAIL FROM:<a.>", "RSET",
    "MAIL FROM:<a@.>", "MAIL FROM:<a@b..c>", "MAIL FROM:<user@123>", "MAIL FROM:<user@-x.test>",
    "MAIL FROM:<user@x_y.test>", "RSET", "MAIL FROM:<us er@x.test>", "MAIL FROM:<a>",
    "RCPT TO:<postmaster>", "RSET", "MAIL FROM:<demo>", "MAIL FROM:<demo@mx.example.test.>",
    "MAIL FROM:<a@b.test>", "RCPT TO:<root>", "RCPT TO:<root@mx.example.test.>", "QUIT",
]


def test_address_syntax_and_delay_reject_like_postfix(suite, dns):
    client_rule = "check_client_access inline:{ 127.0.0.3=REJECT }"
    pf = RealPostfix(dict(SETTINGS, smtpd_delay_reject="no", smtpd_client_restrictions=client_rule))
    try:
        base_config(suite, dns, *(f"{k}={v}" for k, v in SETTINGS.items()),
                    "smtpd_delay_reject=no", f"smtpd_client_restrictions={client_rule}")
        suite.start()
        theirs = transcript(pf.port, SYNTAX)[1:]
        ours = transcript(suite.smtp_port, SYNTAX)[1:]
        assert len(theirs) == len(ours) == len(SYNTAX)
        for cmd, a, b in zip(SYNTAX, theirs, ours):
            assert b == a, f"{cmd}: Postfix {a} / oxipost {b}"
        denied = ["EHLO c.test", "MAIL FROM:<a@b.test>", "RCPT TO:<demo@mx.example.test>", "NOOP",
                  "RSET", "DATA", "FOO", "QUIT"]
        theirs = transcript(pf.port, denied, source="127.0.0.3")
        ours = transcript(suite.smtp_port, denied, source="127.0.0.3")
        assert ours == theirs
        assert theirs[0] == ["554 5.7.1 <unknown[127.0.0.3]>: Client host rejected: Access denied"]
    finally:
        pf.stop()


MIME_HEADER_CHECKS = """\
/^Subject: forbidden/ REJECT forbidden subject
/^Content-(Disposition|Type):.*name="?[^"]*\\.exe/ REJECT 5.7.1 no executables
/^Content-Type: multipart\\/digest/ REJECT digests are MIME headers
"""

MIME_BODY_CHECKS = """\
/^Content-Disposition/ REJECT body_checks saw a MIME header
/^Subject: forbidden/ REJECT body_checks saw a nested header
/^EICAR-LIKE/ REJECT 5.7.1 bad body line
/^--=_end--/ REJECT a boundary line is body text
"""


def mime_message(part_headers, part_body=b"hello\r\n", top=b"multipart/mixed", boundary=b"=_outer"):
    return (
        b"From: a@example.org\r\nTo: demo@mx.example.test\r\nSubject: a report\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: " + top + b";\r\n boundary=\"" + boundary + b"\"\r\n\r\n"
        b"This is a MIME message.\r\n--" + boundary + b"\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        b"--" + boundary + b"\r\n" + part_headers + b"\r\n" + part_body + b"--" + boundary + b"--\r\n"
    )


MIME_CASES = [
    mime_message(b"Content-Type: message/rfc822\r\n",
                 b"From: b@example.org\r\nSubject: forbidden words\r\n\r\ninner text\r\n"),
    mime_message(b"Content-Type: application/octet-stream\r\n"
                 b"Content-Disposition: attachment; filename=\"setup.exe\"\r\n", b"TVqQAAMAAAAEAAAA\r\n"),
    mime_message(b"Content-Type: text/plain\r\n", b"EICAR-LIKE line in a part\r\n"),
    mime_message(b"Content-Type: text/plain\r\n", b"fine\r\n", boundary=b"=_end"),
    mime_message(b"Content-Type: text/plain\r\n", b"fine\r\n", top=b"multipart/digest"),
    mime_message(b"Content-Type: text/plain\r\n", b"fine\r\n"),
]


def data_reply(port, body):
    import smtplib
    c = smtplib.SMTP("127.0.0.1", port, timeout=30)
    try:
        c.ehlo("client.example.test")
        c.mail("a@example.org")
        c.rcpt("demo@mx.example.test")
        try:
            code, msg = c.data(body)
        except smtplib.SMTPDataError as e:
            code, msg = e.smtp_code, e.smtp_error
        text = msg.decode()
        return f"{code} " + (text.split(": queued as")[0] if code == 250 else text)
    finally:
        c.close()


def test_mime_checks_like_postfix(suite, dns):
    """The same header_checks/body_checks (and mime/nested defaults, then switched off) on
    the same MIME messages give the same end-of-data replies as Postfix's cleanup."""
    h = suite.etc / "mime_hc"
    b = suite.etc / "mime_bc"
    h.write_text(MIME_HEADER_CHECKS)
    b.write_text(MIME_BODY_CHECKS)
    os.chmod(h, 0o644)
    os.chmod(b, 0o644)
    for off in ({}, {"mime_header_checks": "", "nested_header_checks": ""},
                {"disable_mime_input_processing": "yes"},
                {"disable_mime_input_processing": "yes", "mime_header_checks": ""}):
        settings = dict(SETTINGS, header_checks=f"regexp:{h}", body_checks=f"regexp:{b}",
                        local_transport="discard:", **off)
        settings.pop("smtpd_sender_restrictions")
        settings.pop("smtpd_recipient_restrictions")
        pf = RealPostfix(settings)
        try:
            # postconf -e edits accumulate: the defaults are restored explicitly.
            ours_settings = {"mime_header_checks": "$header_checks",
                             "nested_header_checks": "$header_checks",
                             "disable_mime_input_processing": "no", **settings}
            base_config(suite, dns,
                        *(f"{k}={v}" for k, v in ours_settings.items() if k != "local_transport"),
                        "smtpd_sender_restrictions=", "smtpd_recipient_restrictions=")
            if off:
                suite.mailctl("reload")
                time.sleep(1.5)
            else:
                suite.start()
            theirs = [data_reply(pf.port, m) for m in MIME_CASES]
            ours = [data_reply(suite.smtp_port, m) for m in MIME_CASES]
            assert ours == theirs, off
        finally:
            pf.stop()


def test_reject_unverified_recipient_like_postfix(suite, dns):
    """Local recipient verification: Postfix's verify service (probe through its queue and
    local(8) in verify mode) and oxipost give the same replies, with the default 450 code
    and with 550."""
    for code in ("450", "550"):
        settings = dict(SETTINGS, unverified_recipient_reject_code=code,
                        smtpd_recipient_restrictions="reject_unverified_recipient",
                        address_verify_poll_delay="1s")
        settings.pop("smtpd_sender_restrictions")
        # local(8) in verify mode decides (nothing is delivered).
        pf = RealPostfix(dict(settings, local_transport="local"))
        try:
            # root is a user of this host for Postfix (passwd), of the suite by local_users.
            base_config(suite, dns, *(f"{k}={v}" for k, v in settings.items()),
                        "smtpd_sender_restrictions=", "local_users=demo root")
            if code == "450":
                suite.start()
            else:
                suite.mailctl("reload")
                time.sleep(1.5)
            cmds = ["HELO client.example.test", "MAIL FROM:<a@example.org>",
                    "RCPT TO:<nosuch@mx.example.test>", "RCPT TO:<root@mx.example.test>",
                    "RCPT TO:<nosuch@mx.example.test>", "QUIT"]
            theirs = transcript(pf.port, cmds)[1:]
            ours = transcript(suite.smtp_port, cmds)[1:]
            assert ours == theirs
            word = "unverified" if code == "450" else "undeliverable"
            assert theirs[2] == [f"{code} {code[0]}.1.1 <nosuch@mx.example.test>: Recipient address "
                                 f"rejected: {word} address: unknown user: \"nosuch\""]
        finally:
            pf.stop()
