"""notify_classes postmaster notices (issue 5): each class sends the notice Postfix sends.
resource: a recipient deferred because a table cannot be read (4.3.0 lookup failure);
software: one deferred because its transport is missing from master.cf; protocol and
policy: the SMTP server's session transcript ("<mail_name> SMTP server: errors from
...") submitted through the queue to error_notice_recipient; bounce/2bounce/delay copies
(tests/aliases/test_notify.py covers those in depth, here one bounce copy)."""

import email
import smtplib
import time
from email import policy

from conftest import send, wait


def messages(s, user="demo"):
    return [email.message_from_bytes(p.read_bytes(), policy=policy.default) for p in s.new_mail(user)]


def notice(s, subject_part, timeout=30):
    def find():
        for m in messages(s):
            if subject_part in str(m["Subject"]):
                return m
        return None
    return wait(find, timeout=timeout, what=f"notice {subject_part!r}", suite=s)


def body_of(m):
    if m.is_multipart():
        return "\n".join(str(p) for p in m.walk() if not p.is_multipart())
    return m.get_content()


def test_resource_class_table_failure(suite):
    suite.postconf("notify_classes = resource", "error_notice_recipient = demo@localhost",
                   "transport_maps = inline:{ demo@localhost=local: }, fail:broken")
    suite.start()
    send(suite.smtp_port, "alice@example.org", ["someone@example.net"], b"Subject: resource\r\n\r\nx\r\n")
    m = notice(suite, "Postmaster Warning")
    text = body_of(m)
    assert "someone@example.net" in text and "4.3.0" in text and "lookup failure" in text, text
    wait(lambda: "resource notification" in suite.log(), what="log", suite=suite)


def test_software_class_missing_transport(suite):
    suite.postconf("notify_classes = software", "error_notice_recipient = demo@localhost",
                   "transport_maps = inline:{ someone@example.net=nosuchtransport: }")
    suite.start()
    send(suite.smtp_port, "alice@example.org", ["someone@example.net"], b"Subject: software\r\n\r\nx\r\n")
    m = notice(suite, "Postmaster Warning")
    text = body_of(m)
    assert "someone@example.net" in text and "mail transport unavailable" in text, text
    wait(lambda: "software notification" in suite.log(), what="log", suite=suite)


def test_no_notice_without_the_class(suite):
    suite.postconf("notify_classes = bounce", "error_notice_recipient = demo@localhost",
                   "transport_maps = inline:{ someone@example.net=nosuchtransport: }")
    suite.start()
    send(suite.smtp_port, "alice@example.org", ["someone@example.net"], b"Subject: quiet\r\n\r\nx\r\n")
    wait(lambda: "mail transport unavailable" in suite.log(), what="deferral", suite=suite)
    time.sleep(1.5)
    assert messages(suite) == []


def test_protocol_class_session_transcript(suite):
    suite.postconf("notify_classes = protocol", "error_notice_recipient = demo@localhost")
    suite.start()
    with smtplib.SMTP("127.0.0.1", suite.smtp_port, timeout=30) as c:
        c.ehlo("client.example")
        assert c.docmd("XYZZY frobnicate")[0] == 502
        assert c.docmd("MAIL FROM:<broken")[0] == 501
    m = notice(suite, "SMTP server: errors from")
    assert str(m["Subject"]).startswith("oxipost SMTP server: errors from localhost[127.0.0.1]"), m["Subject"]
    assert "demo@localhost" in str(m["To"])
    text = body_of(m)
    assert "Transcript of session follows." in text
    assert "In:  XYZZY frobnicate" in text and "Out: 502 5.5.2 Error: command not recognized" in text, text
    assert "In:  MAIL FROM:<broken" in text


def test_policy_class_session_transcript(suite):
    suite.postconf("notify_classes = policy", "error_notice_recipient = demo@localhost",
                   "mynetworks = 192.0.2.0/24")
    suite.start()
    with smtplib.SMTP("127.0.0.1", suite.smtp_port, timeout=30) as c:
        c.ehlo("client.example")
        c.mail("alice@example.org")
        assert c.rcpt("someone@example.net")[0] in (454, 554)
    m = notice(suite, "SMTP server: errors from")
    text = body_of(m)
    assert "In:  rcpt TO:<someone@example.net>" in text and "Relay access denied" in text, text
    # Protocol errors alone do not make a policy notice (and vice versa).
    with smtplib.SMTP("127.0.0.1", suite.smtp_port, timeout=30) as c:
        c.docmd("XYZZY")
    time.sleep(1.5)
    assert len([x for x in messages(suite) if "errors from" in str(x["Subject"])]) == 1


def test_bounce_class_postmaster_copy(suite):
    suite.postconf("notify_classes = bounce", "bounce_notice_recipient = demo@localhost", "local_recipient_maps =")
    suite.start()
    send(suite.smtp_port, "alice@example.org", ["nosuchuser@localhost"], b"Subject: bounce\r\n\r\nx\r\n")
    m = notice(suite, "Postmaster Copy")
    assert "nosuchuser@localhost" in body_of(m)


def test_delay_class_postmaster_warning(suite):
    suite.postconf("notify_classes = delay", "delay_notice_recipient = demo@localhost",
                   "delay_warning_time = 1s", "minimal_backoff_time = 1s", "maximal_backoff_time = 2s",
                   "queue_run_delay = 1s",
                   "transport_maps = inline:{ {someone@example.net=retry:4.4.1 remote site is slow} }")
    suite.start()
    send(suite.smtp_port, "alice@example.org", ["someone@example.net"], b"Subject: slow\r\n\r\nx\r\n")
    m = notice(suite, "Postmaster Warning: Delayed Mail", timeout=60)
    assert "someone@example.net" in body_of(m) and "remote site is slow" in body_of(m)


def test_2bounce_class_double_bounce(suite):
    import os
    import subprocess
    from conftest import BIN
    suite.postconf("notify_classes = 2bounce", "2bounce_notice_recipient = demo@localhost")
    suite.start()
    env = dict(os.environ, MAIL_CONFIG=str(suite.etc))
    r = subprocess.run([str(BIN / "sendmail"), "-f", "ghost@localhost", "nosuchuser@localhost"],
                       input=b"Subject: doomed\n\nx\n", capture_output=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    m = notice(suite, "Undelivered Mail", timeout=60)
    assert "ghost@localhost" in body_of(m)
