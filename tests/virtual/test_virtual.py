"""Issue 6 item 4 end to end: virtual alias domains (recursive expansion, loops), virtual
mailbox domains delivered by the `virtual` agent to Maildir and mbox, recipient validation
at RCPT for virtual and relay domains, canonical/sender_canonical rewriting, masquerading,
transport_maps, and header/body checks — through the real smtpd, qmgr and agents under
master, with tables built by our postmap. Messages are read back with Python's mailbox
module."""

import mailbox
import smtplib
import time

import pytest

from conftest import give, suite_ids, table, wait_for


def smtp(s):
    return smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=30)


def send(s, sender, rcpts, body):
    with smtp(s) as c:
        c.sendmail(sender, rcpts, body)


def queued(s):
    return [p for q in ("incoming", "active", "deferred", "hold") for p in s.queue_files(q)]


def demo_messages(s, n):
    s.wait_for_mail(n)
    return list(mailbox.Maildir(str(s.maildir()), create=False))


def test_virtual_alias_domain_recursive_and_loop(suite):
    va = table(
        suite,
        "virtual",
        "a@valias.example   b@valias.example\n"
        "b@valias.example   demo@localhost, c@valias.example\n"
        "c@valias.example   demo@localhost\n"
        "x@valias.example   y@valias.example\n"
        "y@valias.example   x@valias.example\n",
    )
    suite.postconf(
        "virtual_alias_domains = valias.example",
        f"virtual_alias_maps = {va}",
        "virtual_alias_recursion_limit = 50",
    )
    suite.start()
    with smtp(suite) as c:
        c.ehlo("client.example")
        c.mail("sender@example.com")
        code, text = c.rcpt("nobody@valias.example")
        assert code == 550, text
        assert text == (
            b"5.1.1 <nobody@valias.example>: Recipient address rejected: "
            b"User unknown in virtual alias table"
        )
        c.rset()
        c.sendmail("sender@example.com", ["a@valias.example"], b"Subject: aliased\r\n\r\nhi\r\n")
    (m,) = demo_messages(suite, 1)
    assert m["Subject"] == "aliased"
    # a -> b -> {demo, c -> demo}: one copy, with the original recipient kept.
    assert m["X-Original-To"] == "a@valias.example"
    assert m["Delivered-To"] == "demo@localhost"
    time.sleep(1)
    assert len(suite.new_mail()) == 1
    # x -> y -> x -> ...: the message is refused at end of data, nothing is queued.
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(suite, "sender@example.com", ["x@valias.example"], b"Subject: loop\r\n\r\nhi\r\n")
    assert e.value.smtp_code == 451
    assert e.value.smtp_error == b"4.6.0 Alias expansion error"
    assert "unreasonable virtual_alias_maps map nesting for x@valias.example" in suite.log()
    assert not queued(suite)


def test_virtual_mailbox_domain_maildir_and_mbox(suite):
    uid, gid = suite_ids()
    base = suite.root / "vmail"
    base.mkdir()
    give(base)
    vm = table(
        suite,
        "vmailbox",
        "joe@vmail.example   vmail.example/joe/\n"
        "ann@vmail.example   vmail.example/ann\n",
    )
    suite.postconf(
        "virtual_mailbox_domains = vmail.example",
        f"virtual_mailbox_maps = {vm}",
        f"virtual_mailbox_base = {base}",
        f"virtual_uid_maps = static:{uid}",
        f"virtual_gid_maps = static:{gid}",
        "virtual_minimum_uid = 100",
        "recipient_delimiter = +",
    )
    (base / "vmail.example").mkdir()
    give(base / "vmail.example")
    suite.start()
    with smtp(suite) as c:
        c.mail("sender@example.com")
        code, text = c.rcpt("bob@vmail.example")
        assert code == 550, text
        assert text == (
            b"5.1.1 <bob@vmail.example>: Recipient address rejected: "
            b"User unknown in virtual mailbox table"
        )
        c.rset()
        c.sendmail(
            "sender@example.com",
            ["joe@vmail.example", "ann+lists@vmail.example"],
            b"Subject: virtual\r\nFrom: sender@example.com\r\n\r\nbody line\r\n",
        )
    md = base / "vmail.example" / "joe"
    wait_for(lambda: (md / "new").is_dir() and list((md / "new").iterdir()), "joe's maildir", suite)
    (m,) = list(mailbox.Maildir(str(md), create=False))
    assert m["Subject"] == "virtual"
    assert m["Delivered-To"] == "joe@vmail.example"
    assert m["Return-Path"] == "<sender@example.com>"
    assert m.get_payload() == "body line\n"
    mb = base / "vmail.example" / "ann"
    wait_for(lambda: mb.exists() and mb.stat().st_size > 0, "ann's mbox", suite)
    (m,) = list(mailbox.mbox(str(mb), create=False))
    assert m["Subject"] == "virtual"
    assert m["Delivered-To"] == "ann+lists@vmail.example"
    log = wait_for(lambda: suite.log().count("relay=virtual") >= 2 and suite.log(), "log", suite)
    assert "to=<joe@vmail.example>, relay=virtual" in log
    assert "status=sent (delivered to maildir)" in log
    assert "status=sent (delivered to mailbox)" in log


def test_relay_domains_and_relay_recipient_maps(suite):
    rr = table(suite, "relay_recipients", "ok@relay.example   x\n@any.relay.example x\n")
    tr = table(suite, "transport", "relay.example   discard:\n.relay.example discard:\n")
    suite.postconf(
        "relay_domains = relay.example",
        f"relay_recipient_maps = {rr}",
        f"transport_maps = {tr}",
    )
    suite.start()
    with smtp(suite) as c:
        c.mail("sender@example.com")
        code, text = c.rcpt("unknown@relay.example")
        assert code == 550, text
        assert text == (
            b"5.1.1 <unknown@relay.example>: Recipient address rejected: "
            b"User unknown in relay recipient table"
        )
        # relay_domains matches subdomains (parent_domain_matches_subdomains).
        code, text = c.rcpt("someone@any.relay.example")
        assert code == 250, text
        assert c.rcpt("ok@relay.example")[0] == 250
        c.data(b"Subject: relayed\r\n\r\nhi\r\n")
    log = wait_for(lambda: "to=<ok@relay.example>" in suite.log() and suite.log(), "discard", suite)
    assert "to=<ok@relay.example>, relay=none" in log and "status=sent (discarded)" in log


def test_canonical_and_sender_canonical(suite):
    sc = table(suite, "sender_canonical", "sender@example.com   Sender.Name@example.org\n")
    cm = table(suite, "canonical", "friend@other.example   demo@localhost\n")
    suite.postconf(f"sender_canonical_maps = {sc}", f"canonical_maps = {cm}")
    suite.start()
    send(
        suite,
        "sender@example.com",
        ["friend@other.example"],
        b"From: Sender <sender@example.com>\r\nTo: Friend <friend@other.example>\r\n"
        b"Cc: sender@example.com\r\nSubject: canonical\r\n\r\nhi\r\n",
    )
    (m,) = demo_messages(suite, 1)
    # Envelope: sender through sender_canonical_maps, recipient through canonical_maps.
    assert m["Return-Path"] == "<Sender.Name@example.org>"
    assert m["Delivered-To"] == "demo@localhost"
    assert m["X-Original-To"] == "friend@other.example"
    # Headers: From (a sender header) through sender_canonical_maps and canonical_maps;
    # To through canonical_maps; Cc (a recipient header) is not in sender_canonical_maps'
    # classes, so it stays.
    assert m["From"] == "Sender <Sender.Name@example.org>"
    assert m["To"] == "Friend <demo@localhost>"
    assert m["Cc"] == "sender@example.com"
    assert "from=<Sender.Name@example.org>" in suite.log()


def test_masquerade_domains(suite):
    suite.postconf("masquerade_domains = !keep.example.com, example.com", "masquerade_exceptions = root")
    suite.start()
    send(
        suite,
        "user@mail.example.com",
        ["demo@localhost"],
        b"From: user@mail.example.com\r\nTo: demo@localhost, other@host.example.com\r\n"
        b"Cc: root@a.example.com, x@y.keep.example.com\r\nSubject: masq\r\n\r\nhi\r\n",
    )
    (m,) = demo_messages(suite, 1)
    assert m["Return-Path"] == "<user@example.com>"
    assert m["From"] == "user@example.com"
    assert m["To"] == "demo@localhost, other@example.com"
    assert m["Cc"] == "root@a.example.com, x@y.keep.example.com"


def test_transport_maps_discard_and_error(suite):
    tr = table(
        suite,
        "transport",
        "gone.example   discard:\n"
        "bad.example    error:5.1.1 go away\n",
    )
    # The bounce is queued in incoming/; a short queue_run_delay picks it up at once.
    suite.postconf(f"transport_maps = {tr}", "queue_run_delay = 1s")
    suite.start()
    send(
        suite,
        "demo@localhost",
        ["a@gone.example", "b@bad.example"],
        b"Subject: routed\r\n\r\nhi\r\n",
    )
    # The bounce for b@bad.example comes back to the sender, demo.
    (bounce,) = demo_messages(suite, 1)
    text = bounce.as_string()
    assert "b@bad.example" in text and "go away" in text, text
    assert "a@gone.example" not in text.split("Content-Type: message/")[0]
    log = suite.log()
    assert "to=<a@gone.example>, relay=none" in log and "status=sent (discarded)" in log
    assert "to=<b@bad.example>" in log and "status=bounced (go away)" in log


def checks_suite(suite):
    hc = table(
        suite,
        "header_checks",
        "/^Subject: .*reject me/  REJECT no thanks\n"
        "/^Subject: .*hold me/    HOLD held for review\n"
        "/^Subject: .*discard me/ DISCARD\n"
        "/^X-Remove:/             IGNORE\n"
        "/^X-Old: (.*)/           REPLACE X-New: $1\n"
        "/^Subject: .*tag me/     PREPEND X-Tagged: yes\n"
        "/^X-Spam-Flag: YES/      WARN spam flag seen\n",
        kind="regexp",
    )
    bc = table(suite, "body_checks", "/^BADWORD/ REJECT body says no\n/^secret/ REPLACE [removed]\n", kind="pcre")
    suite.postconf(f"header_checks = {hc}", f"body_checks = {bc}")
    suite.start()


def test_header_checks_reject_hold_discard(suite):
    checks_suite(suite)
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(suite, "s@example.com", ["demo@localhost"], b"Subject: please reject me\r\n\r\nhi\r\n")
    assert e.value.smtp_code == 550
    assert e.value.smtp_error == b"5.7.1 no thanks"
    assert not queued(suite)
    log = suite.log()
    assert "reject: header Subject: please reject me from " in log
    assert "from=<s@example.com> to=<demo@localhost>" in log and ": 5.7.1 no thanks" in log

    send(suite, "s@example.com", ["demo@localhost"], b"Subject: hold me\r\n\r\nhi\r\n")
    held = wait_for(lambda: suite.queue_files("hold"), "a held message", suite)
    assert len(held) == 1
    assert "hold: header Subject: hold me" in suite.log()

    with smtp(suite) as c:
        code, resp = c.sendmail("s@example.com", ["demo@localhost"], b"Subject: discard me\r\n\r\nhi\r\n") or (250, b"")
    assert "discard: header Subject: discard me" in suite.log()
    time.sleep(2)
    assert suite.new_mail() == []
    assert len(suite.queue_files("hold")) == 1
    assert not suite.queue_files("incoming") and not suite.queue_files("active")


def test_header_checks_edit_and_body_checks(suite):
    checks_suite(suite)
    send(
        suite,
        "s@example.com",
        ["demo@localhost"],
        b"Subject: tag me\r\nX-Remove: gone\r\n continued\r\nX-Old: value\r\nX-Spam-Flag: YES\r\n"
        b"\r\nfirst\r\nsecret line\r\nlast\r\n",
    )
    (m,) = demo_messages(suite, 1)
    raw = m.as_string()
    assert "X-Remove" not in raw and "continued" not in raw
    assert m["X-New"] == "value" and m["X-Old"] is None
    head = raw.split("\n\n", 1)[0]
    assert head.index("X-Tagged: yes\n") < head.index("Subject: tag me")
    assert m.get_payload() == "first\n[removed]\nlast\n"
    assert "warning: " in suite.log() and "header X-Spam-Flag: YES" in suite.log()
    with pytest.raises(smtplib.SMTPDataError) as e:
        send(suite, "s@example.com", ["demo@localhost"], b"Subject: b\r\n\r\nok\r\nBADWORD here\r\n")
    assert e.value.smtp_code == 550
    assert e.value.smtp_error == b"5.7.1 body says no"
    assert "reject: body BADWORD here" in suite.log()
    time.sleep(1)
    assert len(suite.new_mail()) == 1
