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


# ---- MX/NS/A access and permit_mx_backup -----------------------------------------------

SERVER_ACCESS = """\
mx.spammer.test REJECT bad mx
127.0.0.9 REJECT hoster listed
.spammer.test REJECT spammer network
mx.ok.test OK
"""


def test_mx_ns_a_access(suite, dns):
    """check_*_mx_access / _ns_access / _a_access: the MX (or NS) host names of the domain,
    then their addresses; a domain without MX is its own MX host; a name without NS takes
    its parent's; OK from such a table is refused (451 4.3.5), as Postfix."""
    t = write_file(suite, "server_access", SERVER_ACCESS)
    base_config(suite, dns,
                "parent_domain_matches_subdomains=",
                "smtpd_relay_restrictions=",
                f"smtpd_sender_restrictions=check_sender_mx_access texthash:{t}, "
                f"check_sender_ns_access texthash:{t}",
                f"smtpd_recipient_restrictions=check_recipient_a_access texthash:{t}, "
                "reject_unauth_destination")
    suite.start()
    c = Client(suite)
    for sender, reply in [
        ("u@mxbad.test", "554 5.7.1 <u@mxbad.test>: Sender address rejected: bad mx"),
        ("u@mxip.test", "554 5.7.1 <u@mxip.test>: Sender address rejected: hoster listed"),
        ("u@amx.test", "554 5.7.1 <u@amx.test>: Sender address rejected: hoster listed"),
        ("u@nsbad.test", "554 5.7.1 <u@nsbad.test>: Sender address rejected: spammer network"),
        ("u@sub.nsbad.test", "554 5.7.1 <u@sub.nsbad.test>: Sender address rejected: spammer network"),
        ("u@nsip.test", "554 5.7.1 <u@nsip.test>: Sender address rejected: hoster listed"),
        ("u@mxok.test", "451 4.3.5 Server configuration error"),
        ("u@good.example", "250 2.1.5 Ok"),
        ("u@nonexistent.test", "250 2.1.5 Ok"),
    ]:
        assert c.cmd(f"MAIL FROM:<{sender}>") == "250 2.1.0 Ok"
        assert c.cmd(f"RCPT TO:<{LOCAL}>") == reply, sender
        c.cmd("RSET")
    c.close()
    wait_log(suite, "warning: restriction check_sender_mx_access returns OK for u@mxok.test")
    # HELO and client forms; the recipient A check with a relay attempt.
    t2 = write_file(suite, "client_access", "127.0.0.1 REJECT client a\n")
    reconfigure(suite,
                "smtpd_sender_restrictions=",
                f"smtpd_helo_restrictions=check_helo_mx_access texthash:{t}",
                f"smtpd_client_restrictions=check_client_a_access texthash:{t2}")
    c = Client(suite, ehlo="mxbad.test")
    c.cmd("MAIL FROM:<a@good.example>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == \
        "554 5.7.1 <client.example.test[127.0.0.1]>: Client host rejected: client a"
    c.close()
    reconfigure(suite, "smtpd_client_restrictions=")
    c = Client(suite, ehlo="mxbad.test")
    c.cmd("MAIL FROM:<a@good.example>")
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == "554 5.7.1 <mxbad.test>: Helo command rejected: bad mx"
    c.close()
    c = Client(suite)
    c.cmd("MAIL FROM:<a@good.example>")
    assert c.cmd("RCPT TO:<u@amx.test>") == "554 5.7.1 <u@amx.test>: Recipient address rejected: hoster listed"
    assert c.cmd("RCPT TO:<u@good.example>") == "554 5.7.1 <u@good.example>: Relay access denied"
    c.close()


def test_permit_mx_backup(suite, dns):
    """permit_mx_backup: a domain whose backup (not primary) MX is this host is accepted;
    primary MX, no backup, or no MX at all: Relay access denied; with
    permit_mx_backup_networks, only when a primary MX is in those networks."""
    base_config(suite, dns,
                "smtpd_relay_restrictions=",
                "smtpd_recipient_restrictions=permit_mx_backup, reject_unauth_destination")
    suite.start()
    c = Client(suite)
    c.cmd("MAIL FROM:<a@good.example>")
    assert c.cmd("RCPT TO:<u@backupmx.test>") == "250 2.1.5 Ok"
    assert c.cmd(f"RCPT TO:<{LOCAL}>") == "250 2.1.5 Ok"
    for rcpt in ("u@primaryme.test", "u@nobackup.test", "u@nonexistent.test", "u@amx.test",
                 "u%backupmx.test@backupmx.test"):
        assert c.cmd(f"RCPT TO:<{rcpt}>") == f"554 5.7.1 <{rcpt}>: Relay access denied", rcpt
    c.close()
    reconfigure(suite, "permit_mx_backup_networks=198.51.100.0/24")
    c = Client(suite)
    c.cmd("MAIL FROM:<a@good.example>")
    assert c.cmd("RCPT TO:<u@backupmx.test>") == "554 5.7.1 <u@backupmx.test>: Relay access denied"
    c.close()
    reconfigure(suite, "permit_mx_backup_networks=192.0.2.0/24")
    c = Client(suite)
    c.cmd("MAIL FROM:<a@good.example>")
    assert c.cmd("RCPT TO:<u@backupmx.test>") == "250 2.1.5 Ok"
    c.close()


# ---- address verification ---------------------------------------------------------------

class ProbeTarget:
    """A next-hop SMTP server on loopback that knows good@ and later@ (450) and refuses
    everyone else with 550 5.1.1; it counts the RCPTs it is asked."""

    def __init__(self):
        import socketserver
        import threading
        outer = self
        self.rcpts = []

        class H(socketserver.StreamRequestHandler):
            timeout = 10

            def handle(self):
                self.wfile.write(b"220 next.test ESMTP\r\n")
                while True:
                    line = self.rfile.readline()
                    if not line:
                        return
                    cmd = line.decode(errors="replace").strip()
                    up = cmd.upper()
                    if up.startswith("EHLO") or up.startswith("HELO"):
                        self.wfile.write(b"250 next.test\r\n")
                    elif up.startswith("MAIL"):
                        self.wfile.write(b"250 2.1.0 Ok\r\n")
                    elif up.startswith("RCPT"):
                        addr = cmd[cmd.index("<") + 1:cmd.index(">")]
                        outer.rcpts.append(addr)
                        if addr.startswith("slow@"):
                            time.sleep(2.5)
                        if addr.startswith("good@") or addr.startswith("slow@"):
                            self.wfile.write(b"250 2.1.5 Ok\r\n")
                        elif addr.startswith("later@"):
                            self.wfile.write(b"450 4.2.0 <%s>: try later\r\n" % addr.encode())
                        else:
                            self.wfile.write(b"550 5.1.1 <%s>: Recipient address rejected: User unknown\r\n"
                                             % addr.encode())
                    elif up.startswith("QUIT"):
                        self.wfile.write(b"221 2.0.0 Bye\r\n")
                        return
                    else:
                        self.wfile.write(b"502 5.5.2 Error: command not recognized\r\n")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), H)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=2)


def test_reject_unverified_sender_and_recipient(suite, dns):
    """Sender verification by an SMTP probe (RCPT without DATA) at relayhost, recipient
    verification of local addresses; replies as Postfix's (450 by default, 4.1.7 for
    senders; with a 4xx code even an undeliverable address is "unverified", a 5xx code says
    "undeliverable"); results are cached (no second probe)."""
    target = ProbeTarget()
    try:
        base_config(suite, dns,
                    f"relayhost=[127.0.0.1]:{target.port}",
                    "local_recipient_maps=",
                    "smtpd_sender_restrictions=reject_unverified_sender",
                    "smtpd_recipient_restrictions=reject_unverified_recipient, permit_mynetworks, "
                    "reject_unauth_destination",
                    "address_verify_poll_delay=1s")
        suite.start()
        c = Client(suite)
        assert c.cmd("MAIL FROM:<good@remote.test>") == "250 2.1.0 Ok"
        assert c.cmd(f"RCPT TO:<{LOCAL}>") == "250 2.1.5 Ok"
        assert c.cmd("RCPT TO:<nosuch@mx.example.test>") == (
            "450 4.1.1 <nosuch@mx.example.test>: Recipient address rejected: "
            "unverified address: unknown user: \"nosuch\"")
        c.cmd("RSET")
        assert c.cmd("MAIL FROM:<bad@remote.test>") == "250 2.1.0 Ok"
        assert c.cmd(f"RCPT TO:<{LOCAL}>") == (
            "450 4.1.7 <bad@remote.test>: Sender address rejected: unverified address: "
            "host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <bad@remote.test>: Recipient address "
            "rejected: User unknown (in reply to RCPT TO command)")
        c.cmd("RSET")
        # A 4xx answer is not a verdict: defer_if_permit with the reason.
        assert c.cmd("MAIL FROM:<later@remote.test>") == "250 2.1.0 Ok"
        assert c.cmd(f"RCPT TO:<{LOCAL}>") == (
            "450 4.1.7 <later@remote.test>: Sender address rejected: unverified address: "
            "host 127.0.0.1[127.0.0.1] said: 450 4.2.0 <later@remote.test>: try later "
            "(in reply to RCPT TO command)")
        c.close()
        assert sorted(target.rcpts) == ["bad@remote.test", "good@remote.test", "later@remote.test"]
        # The probe sender is $double_bounce_sender@$myorigin.
        wait_log(suite, "address verification: <bad@remote.test>: status=undeliverable")
        # Cached, also for new smtpd processes: no second probe for good@ and bad@.
        reconfigure(suite, "unverified_sender_reject_code=550")
        c = Client(suite)
        c.cmd("MAIL FROM:<bad@remote.test>")
        assert c.cmd(f"RCPT TO:<{LOCAL}>").startswith(
            "550 5.1.7 <bad@remote.test>: Sender address rejected: undeliverable address: host ")
        c.cmd("RSET")
        c.cmd("MAIL FROM:<good@remote.test>")
        assert c.cmd(f"RCPT TO:<{LOCAL}>") == "250 2.1.5 Ok"
        c.close()
        assert sorted(target.rcpts) == ["bad@remote.test", "good@remote.test", "later@remote.test"]
        # A probe slower than address_verify_poll_count x address_verify_poll_delay:
        # 450 "in progress" now, its result later.
        reconfigure(suite, "address_verify_poll_count=1")
        c = Client(suite)
        c.cmd("MAIL FROM:<slow@remote.test>")
        assert c.cmd(f"RCPT TO:<{LOCAL}>") == (
            "450 4.1.7 <slow@remote.test>: Sender address rejected: unverified address: "
            "Address verification in progress")
        c.cmd("RSET")
        wait_log(suite, "address verification: <slow@remote.test>: status=deliverable")
        c.cmd("MAIL FROM:<slow@remote.test>")
        assert c.cmd(f"RCPT TO:<{LOCAL}>") == "250 2.1.5 Ok"
        c.close()
        assert target.rcpts.count("slow@remote.test") == 1
        # Probes follow transport_maps as mail would.
        tm = write_file(suite, "transport",
                        f"routed.test smtp:[127.0.0.1]:{target.port}\ndead.test error:no mail here\n")
        reconfigure(suite, "relayhost=", f"transport_maps=texthash:{tm}")
        c = Client(suite)
        c.cmd("MAIL FROM:<good@routed.test>")
        assert c.cmd(f"RCPT TO:<{LOCAL}>") == "250 2.1.5 Ok"
        c.cmd("RSET")
        c.cmd("MAIL FROM:<x@dead.test>")
        assert c.cmd(f"RCPT TO:<{LOCAL}>") == \
            "550 5.1.7 <x@dead.test>: Sender address rejected: undeliverable address: no mail here"
        c.close()
        assert "good@routed.test" in target.rcpts
    finally:
        target.close()
