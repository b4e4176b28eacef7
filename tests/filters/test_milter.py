"""smtpd_milters end to end (issue 11): a milter written for the tests with Debian's
python3-milter exercising every reply (continue, accept, reject, tempfail, discard,
replycode, quarantine) and every end-of-message modification (insert/add/change/delete
header, replace body, add/delete recipient, change sender), checked in the delivered
message; Postfix's macros as the milter saw them; and milter_default_action for a milter
that is not running, stalls past milter_content_timeout, or answers garbage."""

import os
import re
import signal
import smtplib
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import AS_USER, send, wait

PYMILTER = "/usr/bin/python3"
HERE = Path(__file__).resolve().parent

have_pymilter = subprocess.run([PYMILTER, "-c", "import Milter"], capture_output=True, timeout=30).returncode == 0
pytestmark = pytest.mark.skipif(not have_pymilter, reason="python3-milter is not installed")


def free_port():
    with socket.socket() as t:
        t.bind(("127.0.0.1", 0))
        return t.getsockname()[1]


@pytest.fixture
def milter():
    port = free_port()
    p = subprocess.Popen([PYMILTER, str(HERE / "pymilter_app.py"), str(port)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"ready"
        deadline = time.time() + 10
        while time.time() < deadline:
            with socket.socket() as c:
                if c.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield port
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)


def add_user(s, name):
    s.postconf(f"local_users = demo {name}")
    home = s.home / name
    home.mkdir(exist_ok=True)
    if AS_USER:
        import shutil
        shutil.chown(home, "oxipost", "oxipost")


def smtp(s, subject, rcpts=("demo@localhost",), sender="alice@example.org", extra=""):
    msg = f"From: alice@example.org\r\nSubject: {subject}\r\nX-Remove-Me: bye\r\n{extra}\r\noriginal body\r\n"
    with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=60) as c:
        c.ehlo("client.example")
        c.mail(sender)
        for r in rcpts:
            c.rcpt(r)
        return c.data(msg)


def headers_of(path):
    text = path.read_text()
    head, _, body = text.partition("\n\n")
    return head, body


def test_milter_modifications_in_delivered_message(suite, milter):
    add_user(suite, "other")
    suite.postconf(f"smtpd_milters = inet:127.0.0.1:{milter}",
                   "milter_connect_macros = j {daemon_name} v _ {client_addr} {client_name}")
    suite.start()
    code, text = smtp(suite, "please modify")
    assert code == 250, text
    demo = suite.wait_for_mail(1)
    other = suite.wait_for_mail(1, user="other")
    head, body = headers_of(demo[0])
    lines = head.split("\n")
    # Insert at index 0 is the first header of the queued message (after local's own).
    after_local = [l for l in lines if not l.startswith(("Return-Path:", "X-Original-To:", "Delivered-To:"))]
    assert after_local[0] == "X-Milter-First: inserted at the top", head
    assert "X-Milter-Added: appended" in lines
    assert "Subject: modified by milter" in lines and "Subject: please modify" not in head
    assert "X-Remove-Me" not in head
    assert body.strip() == "body replaced by the milter", body
    assert lines[0] == "Return-Path: <changed@example.org>", head
    macros = re.search(r"^X-Test-Macros: (.*)$", head, re.M).group(1)
    assert "{client_addr}=127.0.0.1" in macros and "{mail_addr}=alice@example.org" in macros, macros
    assert re.search(r"\bj=localhost\.localdomain\b", macros) and re.search(r"\bi=\w+", macros), macros
    assert "_=" in macros and "{daemon_name}=" in macros, macros
    assert "helo=client.example" in head
    assert "body replaced by the milter" in other[0].read_text()


def test_milter_deletes_recipient(suite, milter):
    add_user(suite, "other")
    suite.postconf(f"smtpd_milters = inet:127.0.0.1:{milter}")
    suite.start()
    code, _ = smtp(suite, "delrcpt please", rcpts=("demo@localhost", "other@localhost"))
    assert code == 250
    suite.wait_for_mail(1)
    time.sleep(1.5)
    assert suite.new_mail("other") == []


@pytest.mark.parametrize("subject,code,reply", [
    ("reject me", 550, "5.7.1"),
    ("tempfail me", 451, "4.7.1 Service unavailable - try again later"),
    ("replycode me", 554, "5.7.0 custom milter reply"),
])
def test_milter_refusals(suite, milter, subject, code, reply):
    suite.postconf(f"smtpd_milters = inet:127.0.0.1:{milter}")
    suite.start()
    code, reply_text = smtp(suite, subject)
    assert code == code
    assert reply_text.decode().startswith(reply), reply_text
    wait(lambda: re.search(r"milter-reject: END-OF-MESSAGE from .*" + re.escape(reply.split()[0]), suite.log()),
         what="milter-reject log line", suite=suite)
    time.sleep(0.5)
    assert suite.queue_files("incoming") == [] and suite.new_mail() == []


def test_milter_rcpt_reject_refuses_that_recipient(suite, milter):
    """A milter's reject at RCPT refuses that recipient at RCPT (Postfix); the message
    goes to the others."""
    suite.postconf(f"smtpd_milters = inet:127.0.0.1:{milter}")
    suite.start()
    with smtplib.SMTP("127.0.0.1", suite.smtp_port, timeout=60) as c:
        c.ehlo("client.example")
        assert c.docmd("MAIL FROM:<alice@example.org>")[0] == 250
        assert c.docmd("RCPT TO:<milterreject@example.net>") == (550, b"5.7.1 recipient refused by milter")
        assert c.docmd("RCPT TO:<demo@localhost>")[0] == 250
        code, _ = c.data(b"Subject: hello\r\n\r\nbody\r\n")
        assert code == 250
    suite.wait_for_mail(1)


def test_milter_discard_and_quarantine(suite, milter):
    suite.postconf(f"smtpd_milters = inet:127.0.0.1:{milter}")
    suite.start()
    code, _ = smtp(suite, "discard me")
    assert code == 250
    wait(lambda: "milter-discard: END-OF-MESSAGE" in suite.log(), what="discard log", suite=suite)
    code, _ = smtp(suite, "quarantine me")
    assert code == 250
    wait(lambda: suite.queue_files("hold"), what="quarantined message in hold/", suite=suite)
    wait(lambda: "milter-hold: END-OF-MESSAGE" in suite.log() and "test quarantine" in suite.log(),
         what="milter-hold log", suite=suite)
    code, _ = smtp(suite, "plain")
    assert code == 250
    files = suite.wait_for_mail(1)
    time.sleep(1)
    assert len(suite.new_mail()) == 1, "only the plain message is delivered"
    assert "X-Test-Macros:" in files[0].read_text()


@pytest.mark.parametrize("action,expect", [("accept", 250), ("tempfail", 451), ("reject", 550)])
def test_milter_not_running_default_action(suite, action, expect):
    """The milter cannot be reached at CONNECT: accept skips it; tempfail refuses every
    MAIL of the session; reject refuses the connection (554, then 503)."""
    port = free_port()
    suite.postconf(f"smtpd_milters = inet:127.0.0.1:{port}", f"milter_default_action = {action}")
    suite.start()
    if expect == 250:
        code, _ = smtp(suite, "no milter")
        assert code == 250
        suite.wait_for_mail(1)
    else:
        c = smtplib.SMTP(timeout=60)
        try:
            greeting, _ = c.connect("127.0.0.1", suite.smtp_port)
            if expect == 451:
                # Greeting and EHLO go through; the refusal persists from MAIL on.
                assert greeting == 220 and c.docmd("EHLO client.example")[0] == 250
                assert c.docmd("MAIL FROM:<alice@example.org>")[0] == 451
            else:
                # 554 instead of the greeting, 503 to every command.
                assert greeting == 554
                assert c.docmd("EHLO client.example")[0] == 503
        finally:
            c.close()
    wait(lambda: re.search(rf"warning: \w+: milter inet:127.0.0.1:{port}: connect: .*default_action={action}",
                           suite.log()), what="warning naming the milter", suite=suite)


def test_milter_stall_and_garbage(suite, milter):
    # A garbage-speaking milter on another port: answers option negotiation with nonsense.
    g = socket.socket()
    g.bind(("127.0.0.1", 0))
    g.listen(4)
    gport = g.getsockname()[1]
    stop = threading.Event()

    def garbage():
        g.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = g.accept()
            except OSError:
                continue
            try:
                c.recv(100)
                c.sendall(b"\x00\x00\x00\x03Zxx")
            finally:
                c.close()

    t = threading.Thread(target=garbage, daemon=True)
    t.start()
    try:
        suite.postconf(f"smtpd_milters = inet:127.0.0.1:{milter}, {{ inet:127.0.0.1:{gport}, default_action=reject }}",
                       "milter_content_timeout = 2s", "milter_default_action = tempfail")
        suite.start()
        # The garbage milter fails at CONNECT: its default action (reject) refuses the
        # connection, the working milter before it notwithstanding.
        c = smtplib.SMTP(timeout=60)
        try:
            assert c.connect("127.0.0.1", suite.smtp_port)[0] == 554
            assert c.docmd("EHLO client.example")[0] == 503
        finally:
            c.close()
        wait(lambda: re.search(rf"milter inet:127.0.0.1:{gport}: protocol error.*default_action=reject",
                               suite.log()), what="garbage warning", suite=suite)
    finally:
        stop.set()
        t.join(timeout=5)
        g.close()


def test_milter_stall(suite, milter):
    """A milter that stalls at end of message past milter_content_timeout: tempfail."""
    suite.postconf(f"smtpd_milters = inet:127.0.0.1:{milter}",
                   "milter_content_timeout = 2s", "milter_default_action = tempfail")
    suite.start()
    t0 = time.time()
    code, reply_text = smtp(suite, "stall please")
    assert code == 451 and time.time() - t0 < 20
    wait(lambda: re.search(rf"milter inet:127.0.0.1:{milter}: timeout; default_action=tempfail", suite.log()),
         what="timeout warning", suite=suite)


def test_non_smtpd_milters_for_local_submission(suite, milter):
    """non_smtpd_milters: pickup sends locally submitted mail past the milter; its
    modifications are in the delivered message, a reject drops the message."""
    from conftest import BIN
    suite.postconf(f"non_smtpd_milters = inet:127.0.0.1:{milter}")
    suite.start()
    env = dict(os.environ, MAIL_CONFIG=str(suite.etc))

    def submit(subject):
        r = subprocess.run([str(BIN / "sendmail"), "-f", "alice@example.org", "demo@localhost"],
                           input=f"Subject: {subject}\nX-Remove-Me: x\n\nlocal body\n".encode(),
                           capture_output=True, timeout=30, env=env)
        assert r.returncode == 0, r.stderr

    submit("reject me")
    wait(lambda: "milter-reject: END-OF-MESSAGE from local" in suite.log(), what="pickup milter reject", suite=suite)
    submit("modify me")
    files = suite.wait_for_mail(1)
    text = files[0].read_text()
    assert "Subject: modified by milter" in text and "X-Milter-First: inserted at the top" in text, text
    assert "body replaced by the milter" in text and "X-Remove-Me" not in text
    assert text.startswith("Return-Path: <changed@example.org>")
    time.sleep(1)
    assert len(suite.new_mail()) == 1


def test_milter_closes_mid_message(suite):
    """A milter that negotiates, then closes the connection in the middle of the headers:
    milter_default_action applies (tempfail here), with a warning naming it."""
    import struct
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                continue
            c.settimeout(10)
            try:
                while True:
                    head = c.recv(4, socket.MSG_WAITALL)
                    if len(head) < 4:
                        break
                    (n,) = struct.unpack(">I", head)
                    pkt = c.recv(n, socket.MSG_WAITALL)
                    cmd = pkt[:1]
                    if cmd == b"O":
                        c.sendall(struct.pack(">IcIII", 13, b"O", 6, 0, 0))
                    elif cmd == b"L":
                        break  # close mid-message
                    elif cmd != b"D":
                        c.sendall(struct.pack(">Ic", 1, b"c"))
            except OSError:
                pass
            finally:
                c.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        suite.postconf(f"smtpd_milters = inet:127.0.0.1:{port}", "milter_default_action = tempfail")
        suite.start()
        code, reply_text = smtp(suite, "closing milter")
        assert code == 451, reply_text
        wait(lambda: re.search(rf"milter inet:127.0.0.1:{port}: connection closed by milter; default_action=tempfail",
                               suite.log()), what="warning", suite=suite)
        assert suite.new_mail() == []
    finally:
        stop.set()
        t.join(timeout=5)
        srv.close()
