"""Issue 6 gaps: address syntax, smtpd_delay_reject = no at connect, and the access-table
REDIRECT action end to end. The expected replies were taken from Debian's Postfix 3.7.11
smtpd given the same transcripts (mydestination, mynetworks and restrictions as here)."""

import time

from conftest import Client, base_config, reconfigure, write_file

LOCAL = "demo@mx.example.test"


def wait_log(s, text, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in s.log():
            return s.log()
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not logged; log:\n" + s.log()[-3000:])


def test_address_syntax_as_postfix(suite, dns):
    """A trailing dot in the domain and an unqualified recipient are accepted (cleanup
    strips the dot and appends @$myorigin); dots anywhere in a local part pass; empty
    labels, an all-numeric domain and a bad label are refused with Postfix's 501s."""
    base_config(suite, dns)
    suite.start()
    c = Client(suite)
    for sender, reply in [
        ("a@b..c", "501 5.1.7 Bad sender address syntax"),
        ("a@.", "501 5.1.7 Bad sender address syntax"),
        ("user@123", "501 5.1.7 Bad sender address syntax"),
        ("user@-x.test", "501 5.1.7 Bad sender address syntax"),
        ("us er@x.test", "501 5.1.7 Bad sender address syntax"),
        ("a..b@x.test", "250 2.1.0 Ok"),
        (".a@x.test", "250 2.1.0 Ok"),
        ("a.", "250 2.1.0 Ok"),
        ("user@x_y.test", "250 2.1.0 Ok"),
    ]:
        assert c.cmd(f"MAIL FROM:<{sender}>") == reply, sender
        c.cmd("RSET")
    assert c.cmd("MAIL FROM:<user@sender.example.>") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<demo@mx.example.test..>") == "501 5.1.3 Bad recipient address syntax"
    assert c.cmd("RCPT TO:<demo@>") == "501 5.1.3 Bad recipient address syntax"
    assert c.cmd("RCPT TO:<nosuchuser>") == \
        "550 5.1.1 <nosuchuser>: Recipient address rejected: User unknown in local recipient table"
    assert c.cmd("RCPT TO:<demo>") == "250 2.1.5 Ok"
    assert c.cmd("RCPT TO:<demo@mx.example.test.>") == "250 2.1.5 Ok"
    assert c.data().startswith("250 2.0.0 Ok: queued as")
    c.close()
    msg = suite.wait_for_mail(1)[0].read_bytes()
    # Envelope sender without its trailing dot; the unqualified recipient is qualified
    # with $myorigin (= $myhostname) and logged with orig_to, as Postfix.
    assert msg.startswith(b"Return-Path: <user@sender.example>\n"), msg[:200]
    wait_log(suite, "to=<demo@mx.example.test>, orig_to=<demo>")


def test_delay_reject_no_refused_client_stays_connected(suite, dns):
    """smtpd_delay_reject = no: the client rejection replaces the greeting; the session
    stays open and every command but QUIT gets 503 5.7.0, as Postfix."""
    base_config(suite, dns,
                "smtpd_delay_reject=no",
                "smtpd_client_restrictions=check_client_access inline:{ 127.0.0.3=REJECT }")
    suite.start()
    c = Client(suite, source="127.0.0.3", ehlo=None)
    assert c.banner == "554 5.7.1 <unknown[127.0.0.3]>: Client host rejected: Access denied"
    denied = "503 5.7.0 Error: access denied for unknown[127.0.0.3]"
    for cmd in ("EHLO c.test", "HELO c.test", "MAIL FROM:<a@b.test>", f"RCPT TO:<{LOCAL}>",
                "NOOP", "RSET", "VRFY demo", "DATA", "HELP", "FOO"):
        assert c.cmd(cmd) == denied, cmd
    assert c.cmd("QUIT") == "221 2.0.0 Bye"
    c.c.close()
    wait_log(suite, "NOQUEUE: reject: CONNECT from unknown[127.0.0.3]: 554 5.7.1 "
                    "<unknown[127.0.0.3]>: Client host rejected: Access denied;")
    # Other clients are greeted as usual.
    c = Client(suite)
    assert c.banner.startswith("220 ")
    assert c.cmd("MAIL FROM:<a@b.test>") == "250 2.1.0 Ok"
    c.close()


def test_redirect_delivers_to_the_target_only(suite, dns):
    """An access-table REDIRECT replaces every recipient at delivery; the original
    recipients are logged as orig_to=."""
    t = write_file(suite, "sender_access", "redirect@x.test REDIRECT demo@mx.example.test\n")
    base_config(suite, dns,
                "local_users=demo alice",
                f"smtpd_sender_restrictions=check_sender_access texthash:{t}")
    suite.start()
    c = Client(suite)
    assert c.cmd("MAIL FROM:<redirect@x.test>") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<alice@mx.example.test>") == "250 2.1.5 Ok"
    assert c.data(b"Subject: redirected\r\n\r\nhello\r\n").startswith("250 2.0.0 Ok: queued as")
    c.close()
    files = suite.wait_for_mail(1)
    assert b"Subject: redirected" in files[0].read_bytes()
    wait_log(suite, "to=<demo@mx.example.test>, orig_to=<alice@mx.example.test>")
    time.sleep(1)
    assert suite.new_mail("alice") == []
    # Without the action, alice gets her mail.
    c = Client(suite)
    assert c.cmd("MAIL FROM:<other@x.test>") == "250 2.1.0 Ok"
    assert c.cmd("RCPT TO:<alice@mx.example.test>") == "250 2.1.5 Ok"
    assert c.data().startswith("250 2.0.0 Ok: queued as")
    c.close()
    suite.wait_for_mail(1, user="alice")
    assert len(suite.new_mail()) == 1
