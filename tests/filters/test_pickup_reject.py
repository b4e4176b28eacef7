"""Locally submitted mail that header_checks or a non_smtpd_milters milter rejects in
pickup is bounced to its sender (issue 5), as Postfix's cleanup does for pickup: an
RFC 3464 multipart/report with the reject text, the original message attached; nothing
reaches the recipient."""

import email
import os
import signal
import socket
import subprocess
import time
from email import policy
from pathlib import Path

import pytest

from conftest import BIN, wait

PYMILTER = "/usr/bin/python3"
HERE = Path(__file__).resolve().parent


def submit(s, subject, sender="demo@localhost", rcpt="nobody-else@example.net"):
    env = dict(os.environ, MAIL_CONFIG=str(s.etc))
    r = subprocess.run([str(BIN / "sendmail"), "-f", sender, rcpt],
                       input=f"Subject: {subject}\nX-Marker: original-header\n\nlocal body line\n".encode(),
                       capture_output=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr


def listening(port):
    deadline = time.time() + 10
    while time.time() < deadline:
        with socket.socket() as c:
            if c.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)


def report_of(path):
    msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status"
    text, status, returned = list(msg.iter_parts())
    assert status.get_content_type() == "message/delivery-status"
    return msg, text.get_content(), str(status), returned.as_string()


def test_header_checks_reject_in_pickup_bounces(suite):
    (suite.etc / "header_checks").write_text("/^Subject: forbidden/ REJECT no forbidden subjects here\n")
    suite.postconf(f"header_checks = regexp:{suite.etc / 'header_checks'}")
    suite.start()
    submit(suite, "forbidden words")
    (path,) = suite.wait_for_mail(1)
    msg, text, status, returned = report_of(path)
    assert "no forbidden subjects here" in text, text
    assert "Action: failed" in status and "Status: 5.7.1" in status, status
    assert "nobody-else@example.net" in status
    assert "X-Marker: original-header" in returned
    assert msg["To"] and "demo@localhost" in msg["To"]
    wait(lambda: "reject: header Subject: forbidden words from local" in suite.log(), what="log", suite=suite)
    wait(lambda: "status=bounced (no forbidden subjects here)" in suite.log(), what="log", suite=suite)


have_pymilter = subprocess.run([PYMILTER, "-c", "import Milter"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.skipif(not have_pymilter, reason="python3-milter is not installed")
def test_milter_reject_in_pickup_bounces(suite):
    with socket.socket() as t:
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
    p = subprocess.Popen([PYMILTER, str(HERE / "pymilter_app.py"), str(port)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"ready"
        listening(port)
        suite.postconf(f"non_smtpd_milters = inet:127.0.0.1:{port}")
        suite.start()
        submit(suite, "replycode please")
        (path,) = suite.wait_for_mail(1)
        msg, text, status, returned = report_of(path)
        assert "custom milter reply" in text, text
        assert "Status: 5.7.0" in status, status
        assert "local body line" in returned
        wait(lambda: "milter-reject: END-OF-MESSAGE from local" in suite.log(), what="log", suite=suite)
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)


@pytest.mark.skipif(not have_pymilter, reason="python3-milter is not installed")
def test_milter_header_checks_in_pickup(suite):
    with socket.socket() as t:
        t.bind(("127.0.0.1", 0))
        port = t.getsockname()[1]
    p = subprocess.Popen([PYMILTER, str(HERE / "pymilter_app.py"), str(port)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout.readline().strip() == b"ready"
        listening(port)
        (suite.etc / "milter_header_checks").write_text("/^X-Milter-Added: appended/ REJECT milter header refused\n")
        suite.postconf(f"non_smtpd_milters = inet:127.0.0.1:{port}",
                       f"milter_header_checks = regexp:{suite.etc / 'milter_header_checks'}")
        suite.start()
        submit(suite, "please modify")
        (path,) = suite.wait_for_mail(1)
        _, text, status, _ = report_of(path)
        assert "milter header refused" in text and "Status: 5.7.1" in status, (text, status)
        wait(lambda: "reject: header X-Milter-Added: appended from local" in suite.log(), what="log", suite=suite)
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
