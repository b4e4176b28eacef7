"""Issue 6 item 3: the SMTP restriction language against a real suite under master.
Reply codes and texts are Postfix's (smtpd_check.c). The client is 127.0.0.1 (or
127.0.0.2/127.0.0.3, bound as source addresses) and `mynetworks = 192.0.2.0/24`, so the
client is outside mynetworks unless a test says otherwise. DNS answers come from the
test's own server on loopback (conftest.ZONE)."""

import socket
import time

import pytest

from conftest import Client, base_config, reconfigure, write_file

LOCAL = "demo@mx.example.test"


def queued(s):
    return [f for q in ("incoming", "active", "deferred", "hold") for f in s.queue_files(q)]


def wait_log(s, text, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in s.log():
            return s.log()
        time.sleep(0.1)
    raise AssertionError(f"{text!r} not logged; log:\n" + s.log()[-3000:])


# ---- access tables: every action -------------------------------------------------------

SENDER_ACCESS = """\
reject@x.test REJECT
rejtext@x.test REJECT go away
rejdsn@x.test REJECT 5.7.9 with code
defer@x.test DEFER
defertext@x.test DEFER come back later
code@x.test 521 5.7.9 custom text
code4@x.test 421 busy here
dunno@x.test DUNNO
ok@x.test OK
numeric@x.test 12345
hold@x.test HOLD
discard@x.test DISCARD
filter@x.test FILTER smtp:[127.0.0.1]:10025
redirect@x.test REDIRECT demo@mx.example.test
prepend@x.test PREPEND X-Tag: tagged
warn@x.test WARN watch this
class@x.test strict_class
dip@x.test DEFER_IF_PERMIT not now
x.test DUNNO
bad.example REJECT domain blocked
"""


@pytest.fixture
def access_suite(suite, dns):
    t = write_file(suite, "sender_access", SENDER_ACCESS)
    base_config(
        suite, dns,
        f"smtpd_sender_restrictions=check_sender_access texthash:{t}",
        "smtpd_restriction_classes=strict_class",
        "strict_class=reject",
    )
    suite.start()
    return suite


def rcpt_reply(s, sender, rcpt=LOCAL):
    c = Client(s)
    assert c.cmd(f"MAIL FROM:<{sender}>") == "250 2.1.0 Ok"
    r = c.cmd(f"RCPT TO:<{rcpt}>")
    c.close()
    return r


@pytest.mark.parametrize("sender,reply", [
    ("reject@x.test", "554 5.7.1 <reject@x.test>: Sender address rejected: Access denied"),
    ("rejtext@x.test", "554 5.7.1 <rejtext@x.test>: Sender address rejected: go away"),
    ("rejdsn@x.test", "554 5.7.9 <rejdsn@x.test>: Sender address rejected: with code"),
    ("defer@x.test", "450 4.7.1 <defer@x.test>: Sender address rejected: Access denied"),
    ("defertext@x.test", "450 4.7.1 <defertext@x.test>: Sender address rejected: come back later"),
    ("code@x.test", "521 5.7.9 <code@x.test>: Sender address rejected: custom text"),
    ("code4@x.test", "421 4.7.1 <code4@x.test>: Sender address rejected: busy here"),
    ("class@x.test", "554 5.7.1 <class@x.test>: Sender address rejected: Access denied"),
    ("dip@x.test", "450 4.7.1 <dip@x.test>: Sender address rejected: not now"),
    ("user@bad.example", "554 5.7.1 <user@bad.example>: Sender address rejected: domain blocked"),
    ("user@sub.bad.example", "554 5.7.1 <user@sub.bad.example>: Sender address rejected: domain blocked"),
    ("dunno@x.test", "250 2.1.5 Ok"),
    ("ok@x.test", "250 2.1.5 Ok"),
    ("numeric@x.test", "250 2.1.5 Ok"),
    ("other@x.test", "250 2.1.5 Ok"),
])
def test_table_actions_reply(access_suite, sender, reply):
    assert rcpt_reply(access_suite, sender) == reply


def test_table_actions_effects(access_suite):
    s = access_suite
    # REJECT is logged as Postfix logs it (with the verified client name from the DNS).
    rcpt_reply(s, "reject@x.test")
    wait_log(s, "NOQUEUE: reject: RCPT from client.example.test[127.0.0.1]: 554 5.7.1 "
                "<reject@x.test>: Sender address rejected: Access denied; "
                f"from=<reject@x.test> to=<{LOCAL}> proto=ESMTP helo=<client.example.test>")
    # WARN: accepted and logged.
    c = Client(s)
    c.cmd("MAIL FROM:<warn@x.test>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == "250 2.1.5 Ok"
    c.close()
    wait_log(s, "warn: RCPT from client.example.test[127.0.0.1]: watch this;")
    # PREPEND: the header comes first in the delivered message.
    c = Client(s)
    c.cmd("MAIL FROM:<prepend@x.test>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == "250 2.1.5 Ok"
    assert c.data().startswith("250 2.0.0 Ok: queued as")
    c.close()
    files = s.wait_for_mail(1)
    # Local delivery adds Return-Path: and Delivered-To: above it.
    assert b"\nX-Tag: tagged\nReceived: from client.example.test" in files[0].read_bytes()
    # DISCARD: 250 at end of data, nothing queued or delivered.
    c = Client(s)
    c.cmd("MAIL FROM:<discard@x.test>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == "250 2.1.5 Ok"
    assert c.data().startswith("250 2.0.0 Ok: queued as")
    c.close()
    wait_log(s, "discard: RCPT from client.example.test[127.0.0.1]: <discard@x.test>: "
                "Sender address triggers DISCARD action;")
    time.sleep(1)
    assert len(s.new_mail()) == 1
    # HOLD: the message waits in hold/ with its reason recorded.
    c = Client(s)
    c.cmd("MAIL FROM:<hold@x.test>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == "250 2.1.5 Ok"
    assert c.data().startswith("250 2.0.0 Ok: queued as")
    c.close()
    wait_log(s, "hold: RCPT from client.example.test[127.0.0.1]: <hold@x.test>: "
                "Sender address triggers HOLD action;")
    deadline = time.time() + 10
    while time.time() < deadline and not s.queue_files("hold"):
        time.sleep(0.1)
    held = s.queue_files("hold")
    assert len(held) == 1
    assert b"hold_reason" in held[0].read_bytes()
    # FILTER and REDIRECT are logged (and recorded in the queue file for qmgr).
    for sender, what in (("filter@x.test", "triggers FILTER smtp:[127.0.0.1]:10025"),
                         ("redirect@x.test", "triggers REDIRECT demo@mx.example.test")):
        c = Client(s)
        c.cmd(f"MAIL FROM:<{sender}>")
        assert c.cmd(f"RCPT TO:<{LOCAL}>") == "250 2.1.5 Ok"
        c.close()
        wait_log(s, f"<{sender}>: Sender address {what};")


def test_unreadable_tables_never_accept(suite, dns):
    """An access table that cannot be opened answers Postfix's 451 4.3.5; a recipient
    table that cannot answer gives 451 4.3.0 Temporary lookup failure."""
    # notify_classes empty: the postmaster notices of these software errors would be
    # queued too (as Postfix), and this test looks for accepted mail only.
    base_config(suite, dns,
                "smtpd_client_restrictions=check_client_access hash:/nonexistent/access",
                "mynetworks=127.0.0.0/8", "notify_classes=")
    suite.start()
    c = Client(suite)
    c.cmd("MAIL FROM:<a@example.org>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == \
        "451 4.3.5 <client.example.test[127.0.0.1]>: Client host rejected: Server configuration error"
    c.close()
    reconfigure(suite, "smtpd_client_restrictions=", "local_recipient_maps=hash:/nonexistent/users")
    c = Client(suite)
    c.cmd("MAIL FROM:<a@example.org>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == f"451 4.3.0 <{LOCAL}>: Temporary lookup failure"
    c.close()
    assert queued(suite) == []


# ---- evaluation model ------------------------------------------------------------------

def test_delay_reject_yes_and_no(suite, dns):
    base_config(suite, dns,
                "smtpd_helo_restrictions=reject_non_fqdn_helo_hostname",
                "smtpd_sender_restrictions=reject_non_fqdn_sender")
    suite.start()
    # yes (default): HELO and MAIL are accepted, the rejection comes at RCPT.
    c = Client(suite, ehlo="nodots")
    assert c.greeting.startswith("250 mx.example.test")
    assert c.cmd("MAIL FROM:<a@b>") == "250 2.1.0 Ok"
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == \
        "504 5.5.2 <nodots>: Helo command rejected: need fully-qualified hostname"
    c.close()
    c = Client(suite)
    c.cmd("MAIL FROM:<a@b>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == \
        "504 5.5.2 <a@b>: Sender address rejected: need fully-qualified address"
    c.close()
    reconfigure(suite, "smtpd_delay_reject=no", "smtpd_client_restrictions=check_client_access inline:{ 127.0.0.3=REJECT }")
    c = Client(suite, ehlo=None)
    assert c.cmd("EHLO nodots") == "504 5.5.2 <nodots>: Helo command rejected: need fully-qualified hostname"
    assert c.cmd("EHLO client.example.test").startswith("250 mx.example.test")
    assert c.cmd("MAIL FROM:<a@b>") == "504 5.5.2 <a@b>: Sender address rejected: need fully-qualified address"
    assert c.cmd("MAIL FROM:<a@b.example>") == "250 2.1.0 Ok"
    c.close()
    # Client restrictions at connect: the rejection replaces the greeting.
    c = Client(suite, source="127.0.0.3", ehlo=None)
    assert c.banner == "554 5.7.1 <unknown[127.0.0.3]>: Client host rejected: Access denied"


def test_restriction_lists_classes_and_pseudo_restrictions(suite, dns):
    r = write_file(suite, "rcpt_access", "demo+vip@mx.example.test permissive\ndemo+blocked@mx.example.test strict\n")
    base_config(
        suite, dns,
        "smtpd_restriction_classes=permissive, strict",
        "permissive=permit",
        "strict=reject_non_fqdn_sender, reject",
        f"smtpd_recipient_restrictions=check_recipient_access texthash:{r}, "
        "warn_if_reject reject_non_fqdn_recipient, defer_if_permit",
    )
    suite.start()
    c = Client(suite)
    c.cmd("MAIL FROM:<a@example.org>")
    # A class that permits: the recipient list ends with OK (the relay list still runs).
    assert c.cmd("RCPT TO:<demo+vip@mx.example.test>") == "250 2.1.5 Ok"
    assert c.cmd("RCPT TO:<demo+blocked@mx.example.test>") == \
        "554 5.7.1 <demo+blocked@mx.example.test>: Recipient address rejected: Access denied"
    # warn_if_reject turns the next rejection into a log line; defer_if_permit then defers.
    assert c.cmd("RCPT TO:<demo@localhost>") == \
        "450 4.7.0 <demo@localhost>: Recipient address rejected: defer_if_permit requested"
    c.close()
    wait_log(suite, "reject_warning: RCPT from client.example.test[127.0.0.1]: 504 5.5.2 "
                    "<demo@localhost>: Recipient address rejected: need fully-qualified address;")


def test_defer_if_reject_and_unknown_restriction(suite, dns):
    base_config(suite, dns, "smtpd_relay_restrictions=defer_if_reject, reject_unauth_destination")
    suite.start()
    c = Client(suite)
    c.cmd("MAIL FROM:<a@example.org>")
    assert c.cmd("RCPT TO:<x@remote.example>") == \
        "450 4.7.0 <x@remote.example>: Recipient address rejected: defer_if_reject requested"
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == "250 2.1.5 Ok"
    c.close()
    reconfigure(suite, "smtpd_relay_restrictions=no_such_restriction, reject_unauth_destination")
    c = Client(suite)
    c.cmd("MAIL FROM:<a@example.org>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == "451 4.3.5 Server configuration error"
    c.close()
    wait_log(suite, 'unknown smtpd restriction: "no_such_restriction"')


def test_static_checks(suite, dns):
    base_config(
        suite, dns,
        "smtpd_helo_restrictions=reject_invalid_helo_hostname",
        "smtpd_recipient_restrictions=reject_non_fqdn_recipient, reject_unlisted_recipient, "
        "permit_mynetworks, reject_unauth_destination",
        "smtpd_sender_restrictions=reject_unlisted_sender",
    )
    suite.start()
    c = Client(suite, ehlo="bad_host!")
    c.cmd("MAIL FROM:<a@example.org>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == "501 5.5.2 <bad_host!>: Helo command rejected: Invalid name"
    c.close()
    c = Client(suite, ehlo="[999.1.1.1]")
    c.cmd("MAIL FROM:<a@example.org>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == "501 5.5.2 <[999.1.1.1]>: Helo command rejected: invalid ip address"
    c.close()
    c = Client(suite)
    c.cmd("MAIL FROM:<a@example.org>")
    assert c.cmd("RCPT TO:<demo@localhost>") == \
        "504 5.5.2 <demo@localhost>: Recipient address rejected: need fully-qualified address"
    assert c.cmd("RCPT TO:<nosuchuser@mx.example.test>") == \
        "550 5.1.1 <nosuchuser@mx.example.test>: Recipient address rejected: User unknown in local recipient table"
    assert c.cmd("RCPT TO:<postmaster>") == "250 2.1.5 Ok"
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == "250 2.1.5 Ok"
    c.close()
    c = Client(suite)
    c.cmd("MAIL FROM:<nosuchuser@mx.example.test>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == \
        "550 5.1.0 <nosuchuser@mx.example.test>: Sender address rejected: User unknown in local recipient table"
    c.close()


def test_data_and_end_of_data_restrictions(suite, dns):
    base_config(suite, dns, "smtpd_data_restrictions=reject_unauth_pipelining, check_sender_access inline:{ nodata@x.test=REJECT }",
                "smtpd_end_of_data_restrictions=check_sender_access inline:{ late@x.test=DEFER }")
    suite.start()
    # A HELO (not EHLO) client that pipelines DATA with its content.
    sock = socket.create_connection(("127.0.0.1", suite.smtp_port), timeout=30)
    f = sock.makefile("rb")
    assert f.readline().startswith(b"220 ")
    sock.sendall(b"HELO client.example.test\r\n")
    assert f.readline().startswith(b"250 ")
    sock.sendall(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<demo@mx.example.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n")
    assert f.readline() == b"250 2.1.0 Ok\r\n"
    assert f.readline() == b"250 2.1.5 Ok\r\n"
    assert f.readline() == b"503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining\r\n"
    sock.close()
    wait_log(suite, "improper command pipelining after MAIL from client.example.test[127.0.0.1]")
    # A well-behaved client passes DATA; the end-of-data check defers this sender (an
    # access table names what it looked up, as Postfix).
    c = Client(suite)
    c.cmd("MAIL FROM:<late@x.test>")
    c.cmd(f"RCPT TO:<{LOCAL}>")
    assert c.cmd("DATA").startswith("354 ")
    c.c.send(b"Subject: x\r\n\r\nhello\r\n.\r\n")
    code, msg = c.c.getreply()
    assert f"{code} {msg.decode()}" == \
        "450 4.7.1 <late@x.test>: Sender address rejected: Access denied"
    c.close()
    c = Client(suite)
    c.cmd("MAIL FROM:<nodata@x.test>")
    c.cmd(f"RCPT TO:<{LOCAL}>")
    assert c.cmd("DATA") == "554 5.7.1 <nodata@x.test>: Sender address rejected: Access denied"
    c.close()
    assert queued(suite) == []


def test_generic_data_restrictions(suite, dns):
    base_config(suite, dns, "smtpd_data_restrictions=reject",
                "smtpd_end_of_data_restrictions=defer")
    suite.start()
    c = Client(suite)
    c.cmd("MAIL FROM:<a@example.org>")
    c.cmd(f"RCPT TO:<{LOCAL}>")
    assert c.cmd("DATA") == "554 5.7.1 <DATA>: Data command rejected: Access denied"
    c.close()
    reconfigure(suite, "smtpd_data_restrictions=")
    c = Client(suite)
    c.cmd("MAIL FROM:<a@example.org>")
    c.cmd(f"RCPT TO:<{LOCAL}>")
    assert c.cmd("DATA").startswith("354 ")
    c.c.send(b"Subject: x\r\n\r\nhello\r\n.\r\n")
    code, msg = c.c.getreply()
    assert f"{code} {msg.decode()}" == \
        "450 4.3.2 <END-OF-MESSAGE>: End-of-data rejected: Try again later"
    c.close()
    assert queued(suite) == []


# ---- the open-relay battery ------------------------------------------------------------

RELAY_ATTEMPTS = [
    "user@remote.example",
    "user%remote.example@mx.example.test",
    "remote.example!user@mx.example.test",
    '"user@remote.example"@mx.example.test',
    "@mx.example.test:user@remote.example",
    "user@remote.example@mx.example.test",
    "USER@REMOTE.EXAMPLE",
    "user@remote.example.",
    "user@REMOTE.example.",
    '"user%remote.example"@mx.example.test',
    "user%remote.example@MX.EXAMPLE.TEST.",
    "remote.example!user@localhost",
]


def test_open_relay_battery(suite, dns):
    base_config(suite, dns)
    suite.start()
    c = Client(suite)
    assert c.cmd("MAIL FROM:<spammer@example.org>") == "250 2.1.0 Ok"
    for addr in RELAY_ATTEMPTS:
        reply = c.cmd(f"RCPT TO:<{addr}>")
        assert reply[0] == "5", (addr, reply)
        assert "Relay access denied" in reply or reply.startswith("501 "), (addr, reply)
    # Nothing was accepted: DATA has no recipient.
    assert c.cmd("DATA")[0] == "5"
    c.close()
    assert queued(suite) == []
    # Local mail, in any case, still gets in.
    c = Client(suite)
    c.cmd("MAIL FROM:<friend@example.org>")
    assert c.cmd("RCPT TO:<DEMO@MX.EXAMPLE.TEST>") == "250 2.1.5 Ok"
    assert c.data().startswith("250 2.0.0 Ok: queued as")
    c.close()
    suite.wait_for_mail(1)


def test_mynetworks_forms(suite, dns):
    t = write_file(suite, "nets.cidr", "127.0.0.0/8 OK\n")
    base_config(suite, dns, f"mynetworks=!127.0.0.3 cidr:{t}")
    suite.start()
    c = Client(suite)
    c.cmd("MAIL FROM:<a@example.org>")
    assert c.cmd("RCPT TO:<x@remote.example>") == "250 2.1.5 Ok"
    c.close()
    c = Client(suite, source="127.0.0.3")
    c.cmd("MAIL FROM:<a@example.org>")
    assert c.cmd("RCPT TO:<x@remote.example>") == "554 5.7.1 <x@remote.example>: Relay access denied"
    c.close()


# ---- DNS-based restrictions ------------------------------------------------------------

def test_client_name_from_dns(suite, dns):
    base_config(suite, dns)
    suite.start()
    c = Client(suite, ehlo="helo.example.test")
    c.cmd("MAIL FROM:<a@example.org>")
    c.cmd(f"RCPT TO:<{LOCAL}>")
    assert c.data().startswith("250 ")
    c.close()
    msg = suite.wait_for_mail(1)[0].read_bytes()
    assert b"\nReceived: from helo.example.test (client.example.test [127.0.0.1])" in msg
    log = wait_log(suite, "connect from client.example.test[127.0.0.1]")
    assert "1.0.0.127.in-addr.arpa" in dns.queries


def test_dns_lists(suite, dns):
    base_config(
        suite, dns,
        "smtpd_client_restrictions=permit_dnswl_client dnswl.test=127.0.0.[5..9], reject_rbl_client rbl.test",
        "smtpd_sender_restrictions=reject_rhsbl_sender rhsbl.test",
        "smtpd_helo_restrictions=reject_rhsbl_helo rhsbl.test=127.0.0.2",
    )
    suite.start()
    c = Client(suite, source="127.0.0.2")
    c.cmd("MAIL FROM:<a@example.org>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == \
        "554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using rbl.test; " \
        "listed: see http://rbl.test/127.0.0.2"
    c.close()
    wait_log(suite, "NOQUEUE: reject: RCPT from unknown[127.0.0.2]: 554 5.7.1 Service unavailable;")
    c = Client(suite)
    c.cmd("MAIL FROM:<bad@spam.example.org>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == \
        "554 5.7.1 Service unavailable; Sender address [bad@spam.example.org] blocked using rhsbl.test"
    c.cmd("RSET")
    c.cmd("MAIL FROM:<good@example.org>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == "250 2.1.5 Ok"
    c.close()
    # The HELO name is listed with 127.0.0.4, which the =127.0.0.2 filter does not count.
    c = Client(suite, ehlo="client.example.test.rhsbl.test.invalid")
    c.cmd("MAIL FROM:<good@example.org>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == "250 2.1.5 Ok"
    c.close()
    reconfigure(suite, "smtpd_client_restrictions=permit_dnswl_client dnswl.test, reject_rbl_client rbl.test",
                   "smtpd_sender_restrictions=", "smtpd_helo_restrictions=")
    c = Client(suite, source="127.0.0.2")
    c.cmd("MAIL FROM:<a@example.org>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == "250 2.1.5 Ok"
    c.close()


def test_unknown_names_and_domains(suite, dns):
    base_config(
        suite, dns,
        "smtpd_client_restrictions=reject_unknown_reverse_client_hostname",
        "smtpd_helo_restrictions=reject_unknown_helo_hostname",
        "smtpd_sender_restrictions=reject_unknown_sender_domain",
        "smtpd_recipient_restrictions=reject_unknown_recipient_domain, permit_mynetworks, reject_unauth_destination",
    )
    suite.start()
    c = Client(suite, source="127.0.0.2")
    c.cmd("MAIL FROM:<a@good.example>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == \
        "450 4.7.1 Client host rejected: cannot find your reverse hostname, [127.0.0.2]"
    c.close()
    # 127.0.0.3 has a PTR (forged.example.test) that does not lead back: the reverse name
    # exists, the verified name does not.
    c = Client(suite, source="127.0.0.3", ehlo="helo.example.test")
    c.cmd("MAIL FROM:<a@good.example>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == "250 2.1.5 Ok"
    c.close()
    wait_log(suite, "connect from unknown[127.0.0.3]")
    c = Client(suite, ehlo="no-such-host.example")
    c.cmd("MAIL FROM:<a@good.example>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == \
        "450 4.7.1 <no-such-host.example>: Helo command rejected: Host not found"
    c.close()
    c = Client(suite, ehlo="helo.example.test")
    c.cmd("MAIL FROM:<a@nowhere.example>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == \
        "450 4.1.8 <a@nowhere.example>: Sender address rejected: Domain not found"
    c.cmd("RSET")
    c.cmd("MAIL FROM:<a@nullmx.example>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == \
        "550 5.7.27 <a@nullmx.example>: Sender address rejected: Domain nullmx.example does not accept mail (nullMX)"
    c.cmd("RSET")
    c.cmd("MAIL FROM:<a@addr-only.example>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == "250 2.1.5 Ok"
    c.close()
    reconfigure(suite, "smtpd_client_restrictions=reject_unknown_client_hostname",
                   "smtpd_helo_restrictions=", "smtpd_sender_restrictions=", "mynetworks=127.0.0.0/8")
    c = Client(suite, source="127.0.0.3")
    c.cmd("MAIL FROM:<a@good.example>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == \
        "450 4.7.25 Client host rejected: cannot find your hostname, [127.0.0.3]"
    c.close()
    c = Client(suite)
    c.cmd("MAIL FROM:<a@good.example>")
    assert c.cmd("RCPT TO:<x@nowhere.example>") == \
        "450 4.1.2 <x@nowhere.example>: Recipient address rejected: Domain not found"
    assert c.cmd("RCPT TO:<x@good.example>") == "250 2.1.5 Ok"
    c.close()


def test_reverse_client_hostname_access(suite, dns):
    base_config(suite, dns,
                "smtpd_client_restrictions=check_reverse_client_hostname_access inline:{ { forged.example.test = REJECT no forgeries } }")
    suite.start()
    c = Client(suite, source="127.0.0.3")
    c.cmd("MAIL FROM:<a@example.org>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == \
        "554 5.7.1 <forged.example.test>: Unverified Client host rejected: no forgeries"
    c.close()


# ---- policy delegation -----------------------------------------------------------------

def test_policy_service(suite, dns, policy):
    base_config(suite, dns,
                f"smtpd_recipient_restrictions=check_policy_service inet:127.0.0.1:{policy.port}, "
                "permit_mynetworks, reject_unauth_destination")
    suite.start()
    c = Client(suite)
    c.cmd("MAIL FROM:<a@example.org> SIZE=100")
    assert c.cmd("RCPT TO:<blocked@mx.example.test>") == \
        "554 5.7.1 <blocked@mx.example.test>: Recipient address rejected: policy says no"
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == "250 2.1.5 Ok"
    c.close()
    req = policy.requests[-1]
    assert req["request"] == "smtpd_access_policy"
    assert req["protocol_state"] == "RCPT"
    assert req["protocol_name"] == "ESMTP"
    assert req["client_address"] == "127.0.0.1"
    assert req["client_name"] == "client.example.test"
    assert req["reverse_client_name"] == "client.example.test"
    assert req["helo_name"] == "client.example.test"
    assert req["sender"] == "a@example.org"
    assert req["recipient"] == LOCAL
    assert req["size"] == "100"
    # The server down: Postfix's default action, never an accept.
    policy.close()
    c = Client(suite)
    c.cmd("MAIL FROM:<a@example.org>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == \
        f"451 4.3.5 <{LOCAL}>: Recipient address rejected: Server configuration problem"
    c.close()
    assert queued(suite) == [] or all(b"blocked" not in f.read_bytes() for f in queued(suite))
