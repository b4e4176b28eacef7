"""Milter events at their SMTP stage (issue 11): the python3-milter test milter answers
CONNECT, HELO, MAIL, RCPT and unknown commands with reject, tempfail, a reply code,
discard or accept, and smtpd answers that command as Postfix does (a reject at RCPT
refuses that recipient only; at CONNECT every later command is refused). The milter
records the macros of every event, which must be Postfix's per-stage defaults."""

import json
import os
import re
import signal
import smtplib
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import wait

PYMILTER = "/usr/bin/python3"
HERE = Path(__file__).resolve().parent

have_pymilter = subprocess.run([PYMILTER, "-c", "import Milter"], capture_output=True, timeout=30).returncode == 0
pytestmark = pytest.mark.skipif(not have_pymilter, reason="python3-milter is not installed")


def free_port():
    with socket.socket() as t:
        t.bind(("127.0.0.1", 0))
        return t.getsockname()[1]


class StageMilter:
    def __init__(self, tmp, connect=""):
        self.port = free_port()
        self.record = tmp / f"milter-{self.port}.jsonl"
        self.p = subprocess.Popen([PYMILTER, str(HERE / "pymilter_app.py"), str(self.port), str(self.record), connect],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.p.stdout.readline().strip() == b"ready"
        deadline = time.time() + 10
        while time.time() < deadline:
            with socket.socket() as c:
                if c.connect_ex(("127.0.0.1", self.port)) == 0:
                    break
            time.sleep(0.05)

    def events(self):
        if not self.record.exists():
            return []
        return [json.loads(l) for l in self.record.read_text().splitlines() if l.strip()]

    def stop(self):
        if self.p.poll() is None:
            os.kill(self.p.pid, signal.SIGKILL)
        self.p.wait(timeout=10)


@pytest.fixture
def stage_milter(tmp_path):
    made = []

    def make(connect=""):
        m = StageMilter(tmp_path, connect)
        made.append(m)
        return m

    yield make
    for m in made:
        m.stop()


def logged(s, pattern):
    """Waits for a log line (log lines may come a little after the SMTP reply)."""
    return wait(lambda: re.search(pattern, s.log()), what=f"log line {pattern!r}", suite=s)


def session(s):
    c = smtplib.SMTP(timeout=60)
    code, _ = c.connect("127.0.0.1", s.smtp_port)
    return c, code


def test_rejects_at_helo_mail_rcpt(suite, stage_milter):
    m = stage_milter()
    suite.postconf(f"smtpd_milters = inet:127.0.0.1:{m.port}")
    suite.start()
    c, code = session(suite)
    try:
        assert code == 220
        code, text = c.docmd("EHLO helo-reject.example")
        assert (code, text) == (550, b"5.7.1 Command rejected"), text
        code, text = c.docmd("EHLO helo-tempfail.example")
        assert code == 451 and text.startswith(b"4.7.1 Service unavailable"), text
        assert c.docmd("EHLO client.example")[0] == 250
        code, text = c.docmd("MAIL FROM:<mail-reject@example.org>")
        assert (code, text) == (550, b"5.7.1 Command rejected"), text
        code, text = c.docmd("MAIL FROM:<mail-tempfail@example.org>")
        assert code == 451 and text.startswith(b"4.7.1"), text
        code, text = c.docmd("MAIL FROM:<mail-replycode@example.org>")
        assert (code, text) == (553, b"5.7.2 sender refused by milter"), text
        assert c.docmd("MAIL FROM:<alice@example.org>")[0] == 250
        code, text = c.docmd("RCPT TO:<rcpt-reject@example.net>")
        assert (code, text) == (550, b"5.7.1 Command rejected"), text
        code, text = c.docmd("RCPT TO:<rcpt-tempfail@example.net>")
        assert code == 451, text
        code, text = c.docmd("RCPT TO:<rcpt-replycode@example.net>")
        assert (code, text) == (553, b"5.7.2 recipient refused by milter"), text
        assert c.docmd("RCPT TO:<demo@localhost>")[0] == 250
        code, text = c.data(b"Subject: stages\r\n\r\nbody\r\n")
        assert code == 250, text
        c.quit()
    finally:
        c.close()
    files = suite.wait_for_mail(1)
    assert "X-Test-Macros:" in files[0].read_text()
    logged(suite, r"NOQUEUE: milter-reject: EHLO from \S+: 550 5\.7\.1 Command rejected;")
    logged(suite, r": milter-reject: MAIL from \S+: 553 5\.7\.2 sender refused by milter; "
                  r"from=<mail-replycode@example.org>")
    logged(suite, r": milter-reject: RCPT from \S+: 550 5\.7\.1 Command rejected; "
                  r"from=<alice@example.org> to=<rcpt-reject@example.net>")
    stages = [e["stage"] for e in m.events()]
    # One connection for the whole session; the refused MAIL commands were aborted.
    assert stages.count("connect") == 1, stages
    assert stages[:3] == ["connect", "helo", "helo"], stages
    assert "data" in stages and stages[-1] == "eom", stages


def test_macros_per_stage(suite, stage_milter):
    m = stage_milter()
    suite.postconf(f"smtpd_milters = inet:127.0.0.1:{m.port}")
    suite.start()
    c, _ = session(suite)
    try:
        c.ehlo("client.example")
        assert c.docmd("MAIL FROM:<alice@example.org> SIZE=100")[0] == 250
        assert c.docmd("RCPT TO:<demo@localhost>")[0] == 250
        assert c.data(b"Subject: macros\r\n\r\nbody\r\n")[0] == 250
        c.quit()
    finally:
        c.close()
    suite.wait_for_mail(1)
    ev = {}
    for e in m.events():
        ev.setdefault(e["stage"], e)
    conn = ev["connect"]["macros"]
    assert conn["j"] == "localhost.localdomain" and conn["{daemon_name}"] == "localhost.localdomain", conn
    assert conn["v"].startswith("oxipost ") or conn["v"].split()[0], conn
    assert conn["_"] == "localhost [127.0.0.1]" or conn["_"].endswith("[127.0.0.1]"), conn
    assert "i" not in conn, "no queue id at connect"
    # The server side of the connection (Postfix's {daemon_addr}; {daemon_port} only when
    # milter_connect_macros asks for it, as in Postfix 3.7's default).
    assert conn["{daemon_addr}"] == "127.0.0.1", conn
    assert "{daemon_port}" not in conn, conn
    mail = ev["mail"]
    assert mail["args"][0] == "<alice@example.org>" and "SIZE=100" in mail["args"], mail
    mm = mail["macros"]
    assert re.fullmatch(r"\w{6,}", mm["i"]), mm
    assert mm["{mail_addr}"] == "alice@example.org" and mm["{mail_host}"] == "example.org", mm
    assert mm["{mail_mailer}"] == "smtp", mm
    rm = ev["rcpt"]["macros"]
    assert rm["{rcpt_addr}"] == "demo@localhost" and rm["{rcpt_mailer}"] == "local", rm
    assert rm["{rcpt_host}"] == "localhost.localdomain" and rm["i"] == mm["i"], rm
    assert ev["data"]["macros"]["i"] == mm["i"]
    assert ev["eom"]["macros"]["i"] == mm["i"]
    # The queue id the milters saw is the one the message was queued under.
    logged(suite, rf"{mm['i']}: message-id=")


@pytest.mark.parametrize("action", ["reject", "replycode"])
def test_connect_reject_denies_access(suite, stage_milter, action):
    """A milter's permanent refusal at CONNECT: as Postfix, `554 ... ESMTP not accepting
    connections` instead of the greeting, then 503 to every command but QUIT."""
    m = stage_milter(connect=action)
    suite.postconf(f"smtpd_milters = inet:127.0.0.1:{m.port}")
    suite.start()
    c, greeting = session(suite)
    try:
        assert greeting == 554
        denied = (503, b"5.7.0 Error: access denied for localhost[127.0.0.1]")
        assert c.docmd("EHLO client.example") == denied
        assert c.docmd("MAIL FROM:<alice@example.org>") == denied
        assert c.docmd("QUIT")[0] == 221
    finally:
        c.close()
    logged(suite, r"NOQUEUE: milter-reject: CONNECT from \S+: 5\d\d 5\.7\.\d")
    assert [e["stage"] for e in m.events()] == ["connect"]


def test_connect_tempfail_persists(suite, stage_milter):
    """A temporary refusal at CONNECT: the greeting and HELO go through; MAIL, RCPT and
    the rest get the milter's reply for the whole session (Postfix)."""
    m = stage_milter(connect="tempfail")
    suite.postconf(f"smtpd_milters = inet:127.0.0.1:{m.port}")
    suite.start()
    c, greeting = session(suite)
    try:
        assert greeting == 220
        assert c.docmd("EHLO client.example")[0] == 250
        tempfail = (451, b"4.7.1 Service unavailable - try again later")
        assert c.docmd("MAIL FROM:<alice@example.org>") == tempfail
        assert c.docmd("MAIL FROM:<alice@example.org>") == tempfail
        assert c.docmd("QUIT")[0] == 221
    finally:
        c.close()
    logged(suite, r"NOQUEUE: milter-reject: CONNECT from \S+: 451 4\.7\.1")
    logged(suite, r"NOQUEUE: milter-reject: MAIL from \S+: 451 4\.7\.1 Service unavailable")


def test_accept_at_connect(suite, stage_milter):
    m = stage_milter(connect="accept")
    suite.postconf(f"smtpd_milters = inet:127.0.0.1:{m.port}")
    suite.start()
    with smtplib.SMTP("127.0.0.1", suite.smtp_port, timeout=60) as c:
        c.sendmail("mail-discard@example.org", ["demo@localhost"], b"Subject: a\r\n\r\nb\r\n")
    files = suite.wait_for_mail(1)
    # Accepted at connect: the milter hears nothing more (no X-Test-Macros, no MAIL).
    assert "X-Test-Macros" not in files[0].read_text()
    assert [e["stage"] for e in m.events()] == ["connect"]


def test_discard_at_mail_and_abort_at_rset(suite, stage_milter):
    m2 = stage_milter()
    suite.postconf(f"smtpd_milters = inet:127.0.0.1:{m2.port}")
    suite.start()
    with smtplib.SMTP("127.0.0.1", suite.smtp_port, timeout=60) as c:
        c.ehlo("client.example")
        assert c.docmd("MAIL FROM:<mail-discard@example.org>")[0] == 250
        assert c.docmd("RCPT TO:<demo@localhost>")[0] == 250
        code, text = c.data(b"Subject: dropped\r\n\r\nb\r\n")
        assert code == 250, text
        c.docmd("RSET")
        assert c.docmd("MAIL FROM:<alice@example.org>")[0] == 250
        c.docmd("RSET")
    wait(lambda: "milter-discard: MAIL from" in suite.log(), what="discard log", suite=suite)
    wait(lambda: "abort" in [e["stage"] for e in m2.events()], what=f"ABORT after RSET {m2.events()}", suite=suite)
    time.sleep(1)
    assert suite.new_mail() == [], "the discarded message is not delivered"


def test_milter_header_checks(suite, stage_milter):
    """milter_header_checks look at the headers milters add or change: REJECT refuses the
    message at end of data; IGNORE drops the header, REPLACE changes it; HOLD holds."""
    m = stage_milter()
    (suite.etc / "milter_header_checks").write_text(
        "/^X-Milter-Added: appended/ REJECT milter header refused\n"
        "/^X-Test-Macros:/ IGNORE\n"
        "/^X-Milter-First:/ REPLACE X-Milter-First: replaced by the table\n"
        "/^X-Test-Connect: .*from=<hold-me/ HOLD held by milter_header_checks\n")
    suite.postconf(f"smtpd_milters = inet:127.0.0.1:{m.port}",
                   f"milter_header_checks = regexp:{suite.etc / 'milter_header_checks'}")
    suite.start()

    def data(subject, sender="alice@example.org"):
        with smtplib.SMTP("127.0.0.1", suite.smtp_port, timeout=60) as c:
            c.ehlo("client.example")
            assert c.docmd(f"MAIL FROM:<{sender}>")[0] == 250
            assert c.docmd("RCPT TO:<demo@localhost>")[0] == 250
            return c.data(f"Subject: {subject}\r\nX-Remove-Me: x\r\n\r\nbody\r\n".encode())

    code, text = data("please modify")
    assert (code, text) == (550, b"5.7.1 milter header refused"), text
    logged(suite, r"reject: header X-Milter-Added: appended from \S+; from=<alice@example.org> "
                  r"to=<demo@localhost> proto=ESMTP helo=<client.example>: 5.7.1 milter header refused")
    code, text = data("plain")
    assert code == 250, text
    (path,) = suite.wait_for_mail(1)
    msg = path.read_text()
    assert "X-Test-Macros" not in msg, msg
    assert "X-Test-Connect:" in msg
    code, text = data("plain too", sender="hold-me@example.org")
    assert code == 250, text
    wait(lambda: suite.queue_files("hold"), what="held message", suite=suite)
    logged(suite, "hold: header X-Test-Connect:")


def test_milter_header_checks_replace(suite, stage_milter):
    m = stage_milter()
    (suite.etc / "milter_header_checks").write_text(
        "/^X-Milter-First:/ REPLACE X-Milter-First: replaced by the table\n")
    suite.postconf(f"smtpd_milters = inet:127.0.0.1:{m.port}",
                   f"milter_header_checks = regexp:{suite.etc / 'milter_header_checks'}")
    suite.start()
    with smtplib.SMTP("127.0.0.1", suite.smtp_port, timeout=60) as c:
        c.sendmail("alice@example.org", ["demo@localhost"], b"Subject: please modify\r\nX-Remove-Me: x\r\n\r\nb\r\n")
    (path,) = suite.wait_for_mail(1)
    msg = path.read_text()
    assert "X-Milter-First: replaced by the table" in msg and "inserted at the top" not in msg, msg


def test_unknown_commands_go_to_the_milter(suite, stage_milter):
    m = stage_milter()
    suite.postconf(f"smtpd_milters = inet:127.0.0.1:{m.port}")
    suite.start()
    with smtplib.SMTP("127.0.0.1", suite.smtp_port, timeout=60) as c:
        c.ehlo("client.example")
        assert c.docmd("XYZZY plugh") == (502, b"5.5.2 Error: command not recognized")
        assert c.docmd("XYZZY REFUSEME") == (553, b"5.7.2 command refused by milter")
        assert c.docmd("NOOP")[0] == 250
    unknown = [e["args"][0] for e in m.events() if e["stage"] == "unknown"]
    assert unknown == ["XYZZY plugh", "XYZZY REFUSEME"], m.events()
    logged(suite, r"NOQUEUE: milter-reject: UNKNOWN from \S+: 553 5\.7\.2 command refused by milter;")


def test_bdat_message_gets_data_event(suite, stage_milter):
    """CHUNKING has no DATA command: the milters get their DATA event before the content."""
    m = stage_milter()
    suite.postconf(f"smtpd_milters = inet:127.0.0.1:{m.port}")
    suite.start()
    body = b"Subject: chunked\r\n\r\nbody\r\n"
    with smtplib.SMTP("127.0.0.1", suite.smtp_port, timeout=60) as c:
        c.ehlo("client.example")
        assert c.docmd("MAIL FROM:<alice@example.org>")[0] == 250
        assert c.docmd("RCPT TO:<demo@localhost>")[0] == 250
        c.send(f"BDAT {len(body)} LAST\r\n".encode() + body)
        code, text = c.getreply()
        assert code == 250, text
    suite.wait_for_mail(1)
    stages = [e["stage"] for e in m.events()]
    assert stages.index("data") < stages.index("eoh") < stages.index("eom"), stages


def test_slow_milter_does_not_block_other_sessions(suite, stage_milter):
    """smtpd serves many sessions in one process: a milter that is slow to answer one
    session's HELO must not hold up another session's whole transaction."""
    m = stage_milter()
    suite.postconf(f"smtpd_milters = inet:127.0.0.1:{m.port}")
    suite.start()
    slow = socket.create_connection(("127.0.0.1", suite.smtp_port), timeout=60)
    try:
        assert slow.recv(512).startswith(b"220")
        slow.sendall(b"EHLO helo-stall.example\r\n")
        wait(lambda: any(e["stage"] == "helo" for e in m.events()), what="the stalled HELO", suite=suite)
        with smtplib.SMTP("127.0.0.1", suite.smtp_port, timeout=60) as c:
            c.sendmail("alice@example.org", ["demo@localhost"], b"Subject: not blocked\r\n\r\nb\r\n")
        # The other session was served while the slow one still waits for its milter.
        slow.setblocking(False)
        try:
            early = slow.recv(512)
        except BlockingIOError:
            early = b""
        assert early == b"", early
        slow.setblocking(True)
        slow.settimeout(60)
        reply = b""
        while b"\r\n250 " not in reply and not reply.startswith(b"250 "):
            chunk = slow.recv(4096)
            assert chunk, reply
            reply += chunk
        assert reply.startswith(b"250"), reply
    finally:
        slow.close()
    suite.wait_for_mail(1)
