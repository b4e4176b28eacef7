"""The smtp/lmtp delivery agents against recording loopback peers (peers.py): relayhost
delivery with PIPELINING and CHUNKING, per-recipient 2xx/4xx/5xx with the server's text,
connection failures, stage timeouts, connection reuse, STARTTLS at may/encrypt/verify,
SASL to a relayhost, MX resolution against a loopback DNS server, null MX, and LMTP."""

import time

import pytest

import peers
from conftest import run, BIN, send, wait_log


def relay_to(suite, port, *extra):
    suite.postconf(f"relayhost = [127.0.0.1]:{port}", *extra)


def test_relayhost_several_recipients_pipelined_bdat(suite, fakes):
    f = fakes()
    relay_to(suite, f.port)
    suite.start()
    body = send(suite, ["a@example.net", "b@example.net", "c@example.org"])
    (tx,) = f.wait_transactions(1)
    assert tx.mail.startswith("MAIL FROM:<demo@localhost>")
    assert "SIZE=" in tx.mail
    assert [r.split(">")[0] for r in tx.rcpts] == ["RCPT TO:<a@example.net", "RCPT TO:<b@example.net", "RCPT TO:<c@example.org"]
    assert tx.bdat, "CHUNKING offered: BDAT expected"
    assert tx.data.endswith(b"hello out there\r\n.leading dot\r\n")
    assert b"Received: from" in tx.data
    # RFC 2920: MAIL, RCPTs and BDAT arrive in one write.
    assert any(b"MAIL FROM" in c and b"RCPT TO" in c and b"BDAT" in c for c in f.chunks), f.chunks
    log = wait_log(suite, "status=sent", count=3)
    assert f"relay=127.0.0.1[127.0.0.1]:{f.port}" in log
    assert "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as FAKE1)" in log
    assert "delays=" in log


def test_data_without_pipelining_or_chunking(suite, fakes):
    f = fakes(ext=["8BITMIME", "SIZE 0"])
    relay_to(suite, f.port)
    suite.start()
    send(suite, ["a@example.net", "b@example.net"])
    (tx,) = f.wait_transactions(1)
    assert not tx.bdat and tx.data.endswith(b".leading dot\r\n")
    assert not any(b"MAIL FROM" in c and b"RCPT TO" in c for c in f.chunks)
    wait_log(suite, "status=sent", count=2)


def test_per_recipient_results_with_server_text(suite, fakes):
    f = fakes(rcpt_replies={
        "gone@example.net": "550 5.1.1 <gone@example.net>: Recipient address rejected: User unknown",
        "later@example.net": "450 4.2.0 <later@example.net>: Recipient address rejected: try later",
    })
    relay_to(suite, f.port)
    suite.start()
    send(suite, ["ok@example.net", "gone@example.net", "later@example.net"])
    f.wait_transactions(1)
    log = wait_log(suite, "status=bounced")
    wait_log(suite, "status=deferred")
    assert ("to=<later@example.net>" in log)
    assert (f"host 127.0.0.1[127.0.0.1] said: 450 4.2.0 <later@example.net>: Recipient address "
            "rejected: try later (in reply to RCPT TO command)") in log
    assert ("dsn=5.1.1, status=bounced (host 127.0.0.1[127.0.0.1] said: 550 5.1.1 <gone@example.net>: "
            "Recipient address rejected: User unknown (in reply to RCPT TO command))") in log
    assert "to=<ok@example.net>" in log and "status=sent" in log
    # The bounce reaches the sender with the server's text.
    files = suite.wait_for_mail(1)
    text = files[0].read_text(errors="replace")
    assert "gone@example.net" in text and "User unknown" in text


def test_greeting_554_is_deferred(suite, fakes):
    f = fakes(greeting="554 5.7.1 go away")
    relay_to(suite, f.port)
    suite.start()
    send(suite, ["a@example.net"])
    log = wait_log(suite, "status=deferred")
    assert "refused to talk to me: 554 5.7.1 go away" in log


def test_connection_refused_deferred_then_delivered_when_peer_returns(suite, fakes):
    f = fakes()
    port = f.port
    f.stop()
    relay_to(suite, port)
    suite.start()
    send(suite, ["a@example.net"])
    log = wait_log(suite, "status=deferred")
    assert f"connect to 127.0.0.1[127.0.0.1]:{port}: Connection refused" in log
    g = fakes(port=port)
    run(BIN / "postqueue", "-c", suite.etc, "-f", as_suite_user=True, check=False)
    g.wait_transactions(1, timeout=60)
    wait_log(suite, "status=sent", timeout=60)


def test_stalled_server_times_out_per_stage(suite, fakes):
    f = fakes(ext=["8BITMIME"], stall_on="DATA")
    relay_to(suite, f.port, "smtp_data_init_timeout = 2s")
    suite.start()
    send(suite, ["a@example.net"])
    log = wait_log(suite, "status=deferred", timeout=40)
    assert "conversation with 127.0.0.1[127.0.0.1] timed out while sending DATA command" in log


def test_connection_reuse_across_messages(suite, fakes):
    f = fakes(first_data_delay=2.0)
    relay_to(suite, f.port, "smtp_destination_concurrency_limit = 1", "default_destination_concurrency_limit = 1")
    suite.start()
    for i in range(5):
        send(suite, [f"r{i}@example.net"])
    f.wait_transactions(5, timeout=60)
    wait_log(suite, "status=sent", count=5)
    assert f.connections < 5, f.connections
    assert "RSET" in f.commands
    assert "conn_use=2" in suite.log()


def test_starttls_opportunistic(suite, fakes, certs):
    f = fakes(tls_context=peers.server_context(certs))
    relay_to(suite, f.port, "smtp_tls_security_level = may")
    suite.start()
    send(suite, ["a@example.net"])
    (tx,) = f.wait_transactions(1)
    assert tx.tls
    log = wait_log(suite, "status=sent")
    assert f"Untrusted TLS connection established to 127.0.0.1[127.0.0.1]:{f.port}: TLSv1.3 with cipher" in log


def test_encrypt_without_starttls_is_deferred(suite, fakes):
    f = fakes()
    relay_to(suite, f.port, "smtp_tls_security_level = encrypt")
    suite.start()
    send(suite, ["a@example.net"])
    log = wait_log(suite, "status=deferred")
    assert "TLS is required, but was not offered by host 127.0.0.1[127.0.0.1]" in log
    assert not f.transactions


def test_verify_with_test_ca(suite, fakes, certs):
    f = fakes(tls_context=peers.server_context(certs))
    relay_to(suite, f.port, "smtp_tls_security_level = verify", f"smtp_tls_CAfile = {certs['ca']}")
    suite.start()
    send(suite, ["a@example.net"])
    (tx,) = f.wait_transactions(1)
    assert tx.tls
    log = wait_log(suite, "status=sent")
    assert f"Verified TLS connection established to 127.0.0.1[127.0.0.1]:{f.port}: TLSv1.3" in log


def test_verify_with_wrong_ca_is_deferred(suite, fakes, certs):
    f = fakes(tls_context=peers.server_context(certs))
    relay_to(suite, f.port, "smtp_tls_security_level = may",
             f"smtp_tls_policy_maps = inline:{{[127.0.0.1]:{f.port}=verify}}",
             f"smtp_tls_CAfile = {certs['otherca']}")
    suite.start()
    send(suite, ["a@example.net"])
    log = wait_log(suite, "status=deferred")
    assert "Server certificate not verified" in log
    assert not [t for t in f.transactions if t.data]


def test_sasl_plain_to_relayhost(suite, fakes, certs):
    f = fakes(auth_users={"relayuser": "s3cret"}, tls_context=peers.server_context(certs))
    relay_to(suite, f.port, "smtp_tls_security_level = encrypt", "smtp_sasl_auth_enable = yes",
             f"smtp_sasl_password_maps = inline:{{[127.0.0.1]:{f.port}=relayuser:s3cret}}",
             "smtp_sasl_tls_security_options = noanonymous")
    suite.start()
    send(suite, ["a@example.net"])
    (tx,) = f.wait_transactions(1)
    assert tx.auth == "PLAIN:relayuser" and tx.tls
    log = wait_log(suite, "status=sent")
    assert "s3cret" not in log


def test_sasl_wrong_password_defers_with_server_text(suite, fakes):
    f = fakes(auth_users={"relayuser": "s3cret"})
    relay_to(suite, f.port, "smtp_sasl_auth_enable = yes",
             f"smtp_sasl_password_maps = inline:{{[127.0.0.1]:{f.port}=relayuser:wrong}}",
             "smtp_sasl_security_options = noanonymous", "smtp_sasl_mechanism_filter = login")
    suite.start()
    send(suite, ["a@example.net"])
    log = wait_log(suite, "status=deferred")
    assert "SASL authentication failed; server 127.0.0.1[127.0.0.1] said: 535 5.7.8" in log
    assert "dsn=4.7.8" in log


def test_mx_preference_fallback_and_null_mx(suite, fakes):
    f = fakes()
    dns = peers.FakeDns({
        ("mx.test", "MX"): [(20, "mx2.mx.test"), (10, "mx1.mx.test")],
        ("mx1.mx.test", "AAAA"): ["::1"],       # nothing listens on [::1]:port
        ("mx1.mx.test", "A"): [],
        ("mx2.mx.test", "A"): ["127.0.0.1"],
        ("null.test", "MX"): [(0, ".")],
    })
    try:
        suite.postconf(f"oxipost_dns_servers = 127.0.0.1:{dns.port}", "inet_protocols = all",
                       f"transport_maps = inline:{{mx.test=smtp:mx.test:{f.port}}}",
                       "smtp_mx_session_limit = 5")
        suite.start()
        send(suite, ["a@mx.test"])
        (tx,) = f.wait_transactions(1)
        log = wait_log(suite, "status=sent")
        assert f"relay=mx2.mx.test[127.0.0.1]:{f.port}" in log
        assert f"connect to mx1.mx.test[::1]:{f.port}: Connection refused" in log
        assert ("mx.test", 15) in dns.queries
        send(suite, ["b@null.test"])
        log = wait_log(suite, "status=bounced")
        assert "dsn=5.1.10, status=bounced (Domain null.test does not accept mail (nullMX))" in log
    finally:
        dns.stop()


def test_lmtp_per_recipient_final_replies(suite, fakes):
    f = fakes(lmtp=True, final_replies={"full@example.net": "452 4.2.2 <full@example.net> mailbox full"})
    suite.postconf(f"default_transport = lmtp:inet:127.0.0.1:{f.port}")
    suite.start()
    send(suite, ["ok@example.net", "full@example.net"])
    (tx,) = f.wait_transactions(1)
    assert len(tx.rcpts) == 2
    log = wait_log(suite, "status=deferred")
    wait_log(suite, "status=sent")
    assert ("host 127.0.0.1[127.0.0.1] said: 452 4.2.2 <full@example.net> mailbox full "
            "(in reply to end of DATA command)") in log
    assert "lmtp[" in log


def test_lmtp_over_unix_socket(suite, fakes):
    # Beside the suite, where the suite's user can reach it.
    d = suite.root.parent / "lmtp"
    d.mkdir()
    d.chmod(0o777)
    sock = d / "lmtp.sock"
    f = fakes(lmtp=True, unix_path=sock)
    suite.postconf(f"default_transport = lmtp:unix:{sock}")
    suite.start()
    send(suite, ["ok@example.net"])
    f.wait_transactions(1)
    log = wait_log(suite, "status=sent")
    assert f"relay={sock}" in log


def test_dsn_parameters_passed_on(suite, fakes):
    f = fakes()
    relay_to(suite, f.port)
    suite.start()
    import smtplib
    with smtplib.SMTP("127.0.0.1", suite.smtp_port, timeout=30) as c:
        c.ehlo("client.test")
        c.sendmail("demo@localhost", ["a@example.net"], b"Subject: dsn\r\n\r\nx\r\n",
                   mail_options=["RET=HDRS", "ENVID=env+2Did"],
                   rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;a@example.net"])
    (tx,) = f.wait_transactions(1)
    assert "RET=HDRS" in tx.mail and "ENVID=env-id" in tx.mail
    assert "NOTIFY=SUCCESS,FAILURE" in tx.rcpts[0] and "ORCPT=rfc822;a@example.net" in tx.rcpts[0]


def test_8bit_downgraded_for_server_without_8bitmime(suite, fakes):
    f = fakes(ext=["PIPELINING"])
    relay_to(suite, f.port)
    suite.start()
    body = ("From: demo@localhost\r\nSubject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\ncaf\u00e9\r\n").encode()
    send(suite, ["a@example.net"], body=body)
    (tx,) = f.wait_transactions(1)
    assert "BODY=8BITMIME" not in tx.mail
    assert all(b < 0x80 for b in tx.data), tx.data
    assert b"Content-Transfer-Encoding: quoted-printable\r\n" in tx.data
    assert tx.data.endswith(b"caf=C3=A9\r\n")
