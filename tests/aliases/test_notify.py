"""Issue 5 item 5 end to end: bounces read back as RFC 3464 multipart/report messages
(report-type=delivery-status, a message/delivery-status part with Action: failed, the
original headers) honouring RET=HDRS and NOTIFY=NEVER, postmaster copies by
notify_classes, delay warnings after delay_warning_time (Action: delayed, sent once),
success reports for NOTIFY=SUCCESS (Action: delivered), double bounces that go to
2bounce_notice_recipient once and never loop, and mailq/postqueue -j showing the real
defer reason from the per-message defer log."""

import email
import json
import subprocess
import time
from email import policy

from conftest import BIN, tool_env
from test_aliases import install_aliases, messages, sendmail, wait


def reports(s, user="demo"):
    return [m for m in messages(s, user) if m.get_content_type() == "multipart/report"]


def parts(report):
    """(text part, list of delivery-status blocks, returned part) of a DSN."""
    assert report.get_content_type() == "multipart/report"
    assert report.get_param("report-type") == "delivery-status"
    p = list(report.iter_parts())
    assert len(p) == 3, [x.get_content_type() for x in p]
    assert p[0].get_content_type() == "text/plain"
    assert p[1].get_content_type() == "message/delivery-status"
    blocks = p[1].get_payload()
    return p[0], blocks, p[2]


def test_bounce_is_a_valid_multipart_report_with_headers_only(suite):
    install_aliases(suite, "postmaster: demo\n")
    suite.start()
    sendmail(suite, ["-f", "demo@localhost", "-R", "hdrs", "-N", "failure", "nosuchuser@localhost"],
             b"Subject: will bounce\r\nX-Marker: original-header\r\n\r\nsecret body line\r\n")
    (path,) = suite.wait_for_mail(1)
    m = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert m["Subject"] == "Undelivered Mail Returned to Sender"
    text, blocks, returned = parts(m)
    assert "could not\nbe delivered" in text.get_content()
    per_message, rcpt = blocks[0], blocks[1]
    assert per_message["Reporting-MTA"].startswith("dns; ")
    assert rcpt["Final-Recipient"] == "rfc822; nosuchuser@localhost"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "5.1.1"
    assert "unknown user" in rcpt["Diagnostic-Code"]
    assert returned.get_content_type() == "text/rfc822-headers"
    body = returned.get_payload() if isinstance(returned.get_payload(), str) else returned.as_string()
    assert "X-Marker: original-header" in body and "Subject: will bounce" in body
    assert "secret body line" not in m.as_string()


def test_full_return_and_postmaster_copy(suite):
    install_aliases(suite, "postmaster: alice\n", extra=["notify_classes = bounce, resource, software"])
    suite.start()
    sendmail(suite, ["-f", "demo@localhost", "nosuchuser@localhost"],
             b"Subject: full return\r\n\r\nthe whole body\r\n")
    (path,) = suite.wait_for_mail(1)
    m = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    _, blocks, returned = parts(m)
    assert returned.get_content_type() == "message/rfc822"
    assert "the whole body" in m.as_string()
    # The postmaster copy: headers only, from the double-bounce address.
    (copy,) = suite.wait_for_mail(1, user="alice")
    c = email.message_from_bytes(copy.read_bytes(), policy=policy.default)
    assert c["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert c["Return-Path"].startswith("<double-bounce@")
    _, _, returned = parts(c)
    assert returned.get_content_type() == "text/rfc822-headers"
    assert "the whole body" not in c.as_string()


def test_notify_never_sends_nothing(suite):
    install_aliases(suite, "postmaster: demo\n")
    suite.start()
    sendmail(suite, ["-f", "demo@localhost", "-N", "never", "nosuchuser@localhost"], b"Subject: quiet\r\n\r\nx\r\n")
    wait(lambda: "status=bounced" in suite.log() and "removed" in suite.log(), what="bounce", suite=suite)
    time.sleep(2)
    assert suite.new_mail("demo") == []
    assert "non-delivery notification" not in suite.log()


def test_delay_warning_and_mailq_reason(suite):
    install_aliases(suite, "stuck: \"|echo mailbox locked; exit 75\"\n", extra=[
        "delay_warning_time = 1s", "minimal_backoff_time = 1s", "maximal_backoff_time = 2s",
        "queue_run_delay = 1s"])
    suite.start()
    sendmail(suite, ["-f", "demo@localhost", "stuck@localhost"], b"Subject: slow going\r\n\r\nwait\r\n")
    (path,) = suite.wait_for_mail(1, timeout=60)
    m = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert m["Subject"] == "Delayed Mail (still being retried)"
    text, blocks, returned = parts(m)
    assert "THIS IS A WARNING ONLY" in text.get_content()
    rcpt = blocks[1]
    assert rcpt["Action"] == "delayed"
    assert rcpt["Status"] == "4.3.0"
    assert "mailbox locked" in rcpt["Diagnostic-Code"]
    assert rcpt["Will-Retry-Until"]
    assert returned.get_content_type() == "text/rfc822-headers"
    # Still queued, with the real reason in mailq and postqueue -j.
    out = subprocess.run([str(BIN / "mailq")], capture_output=True, text=True, timeout=30, env=tool_env(suite))
    assert "temporary failure. Command output: mailbox locked" in out.stdout, out.stdout
    j = subprocess.run([str(BIN / "postqueue"), "-j"], capture_output=True, text=True, timeout=30,
                       env=tool_env(suite))
    msgs = [json.loads(line) for line in j.stdout.splitlines() if line.strip()]
    stuck = [x for x in msgs if x["sender"] == "demo@localhost"]
    assert stuck and "mailbox locked" in stuck[0]["recipients"][0]["delay_reason"], msgs
    # Warned once only, though it is retried every second or two.
    time.sleep(5)
    assert len(suite.new_mail("demo")) == 1
    assert suite.log().count("sender delay notification") == 1


def test_success_report_for_notify_success(suite):
    install_aliases(suite, "postmaster: demo\n")
    suite.start()
    sendmail(suite, ["-f", "demo@localhost", "-N", "success", "alice@localhost"], b"Subject: track me\r\n\r\nhi\r\n")
    suite.wait_for_mail(1, user="alice")
    (path,) = suite.wait_for_mail(1)
    m = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert m["Subject"] == "Successful Mail Delivery Report"
    _, blocks, returned = parts(m)
    assert blocks[1]["Action"] == "delivered"
    assert blocks[1]["Status"] == "2.0.0"
    assert blocks[1]["Final-Recipient"] == "rfc822; alice@localhost"
    assert returned.get_content_type() == "text/rfc822-headers"


def test_double_bounce_goes_to_postmaster_once(suite):
    install_aliases(suite, "postmaster: demo\n", extra=["notify_classes = 2bounce"])
    suite.start()
    # The bounce goes to a sender that does not exist either: a double bounce.
    sendmail(suite, ["-f", "ghost@localhost", "nosuchuser@localhost"], b"Subject: doomed\r\n\r\nx\r\n")
    (path,) = suite.wait_for_mail(1)
    m = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    _, blocks, returned = parts(m)
    assert blocks[1]["Final-Recipient"] == "rfc822; ghost@localhost"
    assert returned.get_content_type() == "message/rfc822"
    assert "Undelivered Mail Returned to Sender" in m.as_string()
    wait(lambda: not any(suite.queue_files(q) for q in ("incoming", "active", "deferred")),
         what="an empty queue", suite=suite)
    time.sleep(2)
    assert len(suite.new_mail("demo")) == 1
    assert suite.log().count("postmaster non-delivery notification") == 1


def test_undeliverable_double_bounce_is_discarded(suite):
    install_aliases(suite, "postmaster: nobody-at-all\n", extra=["notify_classes = 2bounce"])
    suite.start()
    sendmail(suite, ["-f", "ghost@localhost", "nosuchuser@localhost"], b"Subject: doomed\r\n\r\nx\r\n")
    wait(lambda: "undeliverable postmaster notification discarded" in suite.log(), what="discard",
         suite=suite)
    wait(lambda: not any(suite.queue_files(q) for q in ("incoming", "active", "deferred")),
         what="an empty queue", suite=suite)
    time.sleep(2)
    assert suite.log().count("postmaster non-delivery notification") == 1
    assert suite.log().count("sender non-delivery notification") == 1
