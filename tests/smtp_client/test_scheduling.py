"""Mail out, scheduling and the remaining smtp client behaviour against recording loopback
peers: Postfix's dead destination (failed pseudo-cohorts, then mail deferred as "delivery
temporarily suspended" without a connection, delivered after a flush once the peer is
back), the per-destination concurrency limit, fallback to the next MX after a partial
4xx, smtp_generic_maps at the peer, and connection reuse (one TCP session, or one per
message when caching is off)."""

import time

import peers
from conftest import run, BIN, send, wait_log


def relay_to(suite, port, *extra):
    suite.postconf(f"relayhost = [127.0.0.1]:{port}", *extra)


def flush(suite):
    run(BIN / "postqueue", "-c", suite.etc, "-f", as_suite_user=True, check=False)


def test_dead_destination_is_suspended_then_delivered_when_back(suite, fakes):
    f = fakes(greeting="421 4.3.2 Service not available, come back later")
    relay_to(suite, f.port)
    suite.start()
    refused = "host 127.0.0.1[127.0.0.1] refused to talk to me: 421 4.3.2 Service not available"
    # Window 5 (initial_destination_concurrency), negative feedback 1, one failed
    # pseudo-cohort: 1/5 + 1/4 + 1/3 + 1/2 >= 1 after four failed sessions, one at a time.
    for i in range(4):
        send(suite, [f"r{i}@example.net"])
        wait_log(suite, "status=deferred", count=i + 1)
        assert f.connections == i + 1, f.connections
    log = wait_log(suite, f"destination [127.0.0.1]:{f.port} marked dead")
    assert refused in log
    # Dead: later mail is deferred without a connection.
    for i in range(4, 7):
        send(suite, [f"r{i}@example.net"])
    log = wait_log(suite, "status=deferred (delivery temporarily suspended: " + refused, count=3)
    assert "to=<r6@example.net>, relay=none" in log
    time.sleep(0.5)
    assert f.connections == 4, f.connections
    # The peer is back; a flush revives the destination and everything goes.
    f.greeting = "220 fake.test ESMTP"
    flush(suite)
    f.wait_transactions(1, timeout=60)
    log = wait_log(suite, "status=sent", count=7, timeout=60)
    sent = {r.split("<", 1)[1].split(">", 1)[0] for t in f.transactions for r in t.rcpts}
    assert sent == {f"r{i}@example.net" for i in range(7)}, sent


def test_failed_cohort_limit_zero_never_suspends(suite, fakes):
    f = fakes(greeting="421 4.3.2 busy")
    relay_to(suite, f.port, "smtp_destination_concurrency_failed_cohort_limit = 0",
             "smtp_initial_destination_concurrency = 1")
    suite.start()
    # Window 1: with the default limit (1) the first failure would make it dead.
    for i in range(5):
        send(suite, [f"r{i}@example.net"])
        wait_log(suite, "status=deferred", count=i + 1)
    assert f.connections == 5, f.connections
    assert "delivery temporarily suspended" not in suite.log()


def test_rate_delay_one_delivery_at_a_time(suite, fakes):
    f = fakes(data_delay=0.5)
    relay_to(suite, f.port, "smtp_destination_rate_delay = 1s")
    suite.start()
    for i in range(4):
        send(suite, [f"r{i}@example.net"])
    f.wait_transactions(4, timeout=60)
    wait_log(suite, "status=sent", count=4)
    assert f.tx_max == 1, f.tx_max


def test_concurrency_never_above_destination_limit(suite, fakes):
    f = fakes(data_delay=0.3)
    relay_to(suite, f.port, "smtp_destination_concurrency_limit = 2",
             "smtp_destination_recipient_limit = 2")
    suite.start()
    for i in range(16):
        send(suite, [f"c{i}@example.net", f"d{i}@example.net", f"e{i}@example.net"])
    f.wait_transactions(32, timeout=90)
    wait_log(suite, "status=sent", count=48, timeout=60)
    assert 1 <= f.tx_max <= 2, f.tx_max
    # Recipient limit 2: three recipients take two transactions.
    assert sorted(len(t.rcpts) for t in f.transactions) == [1] * 16 + [2] * 16


def test_partial_4xx_from_first_mx_rest_accepted_by_second(suite, fakes):
    mx1 = fakes(rcpt_replies={"b@mx.test": "450 4.2.1 <b@mx.test>: try again later"})
    mx2 = fakes(host="127.0.0.2", port=mx1.port)
    dns = peers.FakeDns({
        ("mx.test", "MX"): [(10, "mx1.mx.test"), (20, "mx2.mx.test")],
        ("mx1.mx.test", "A"): ["127.0.0.1"],
        ("mx2.mx.test", "A"): ["127.0.0.2"],
        ("mx1.mx.test", "AAAA"): [],
        ("mx2.mx.test", "AAAA"): [],
    })
    try:
        suite.postconf(f"oxipost_dns_servers = 127.0.0.1:{dns.port}", "inet_protocols = ipv4",
                       f"transport_maps = inline:{{mx.test=smtp:mx.test:{mx1.port}}}")
        suite.start()
        send(suite, ["a@mx.test", "b@mx.test", "c@mx.test"])
        log = wait_log(suite, "status=sent", count=3)
        (t1,) = mx1.wait_transactions(1)
        (t2,) = mx2.wait_transactions(1)
        assert [r.split(">")[0] for r in t1.rcpts] == ["RCPT TO:<a@mx.test", "RCPT TO:<c@mx.test"]
        assert [r.split(">")[0] for r in t2.rcpts] == ["RCPT TO:<b@mx.test"]
        assert f"to=<b@mx.test>, relay=mx2.mx.test[127.0.0.2]:{mx1.port}" in log
        assert f"to=<a@mx.test>, relay=mx1.mx.test[127.0.0.1]:{mx1.port}" in log
        assert "status=deferred" not in log
        # When no host takes it, the recipient is deferred with the last server's text.
        mx2.rcpt_replies["d@mx.test"] = "451 4.3.0 <d@mx.test>: second says no"
        mx1.rcpt_replies["d@mx.test"] = "450 4.2.1 <d@mx.test>: first says no"
        send(suite, ["d@mx.test"])
        log = wait_log(suite, "status=deferred")
        assert ("to=<d@mx.test>, relay=mx2.mx.test" in log
                and "second says no (in reply to RCPT TO command)" in log), log[-2000:]
    finally:
        dns.stop()


def test_421_to_a_recipient_goes_on_at_next_mx(suite, fakes):
    mx1 = fakes(rcpt_replies={"a@mx.test": "421 4.3.2 shutting down"})
    mx2 = fakes(host="127.0.0.2", port=mx1.port)
    dns = peers.FakeDns({
        ("mx.test", "MX"): [(10, "mx1.mx.test"), (20, "mx2.mx.test")],
        ("mx1.mx.test", "A"): ["127.0.0.1"],
        ("mx2.mx.test", "A"): ["127.0.0.2"],
        ("mx1.mx.test", "AAAA"): [],
        ("mx2.mx.test", "AAAA"): [],
    })
    try:
        suite.postconf(f"oxipost_dns_servers = 127.0.0.1:{dns.port}", "inet_protocols = ipv4",
                       f"transport_maps = inline:{{mx.test=smtp:mx.test:{mx1.port}}}")
        suite.start()
        send(suite, ["a@mx.test", "b@mx.test"])
        log = wait_log(suite, "status=sent", count=2)
        (t1,) = mx1.wait_transactions(1)
        (t2,) = mx2.wait_transactions(1)
        assert [r.split(">")[0] for r in t1.rcpts] == ["RCPT TO:<b@mx.test"]
        assert [r.split(">")[0] for r in t2.rcpts] == ["RCPT TO:<a@mx.test"]
        assert "status=deferred" not in log
    finally:
        dns.stop()


def test_generic_maps_rewrite_envelope_and_header(suite, fakes):
    f = fakes()
    relay_to(suite, f.port,
             "smtp_generic_maps = inline:{ demo@localhost=demo.user@example.com, "
             "friend@old.test=friend@new.test, @corp.test=@example.org }")
    suite.start()
    body = ("From: Demo <demo@localhost>\r\nTo: friend@old.test, x@corp.test\r\n"
            "Subject: mail from demo@localhost\r\n\r\nsigned, demo@localhost\r\n")
    send(suite, ["friend@old.test", "x@corp.test"], body=body)
    (tx,) = f.wait_transactions(1)
    assert tx.mail.startswith("MAIL FROM:<demo.user@example.com>"), tx.mail
    assert [r.split(">")[0] for r in tx.rcpts] == ["RCPT TO:<friend@new.test", "RCPT TO:<x@example.org"]
    data = tx.data.decode()
    assert "From: Demo <demo.user@example.com>\r\n" in data
    assert "To: friend@new.test, x@example.org\r\n" in data
    # Not an address header, and not the body.
    assert "Subject: mail from demo@localhost\r\n" in data
    assert "signed, demo@localhost" in data
    # Logs keep the queued address, as Postfix's.
    log = wait_log(suite, "status=sent", count=2)
    assert "to=<friend@old.test>" in log


def test_connection_reuse_one_session(suite, fakes):
    f = fakes(first_data_delay=1.5)
    relay_to(suite, f.port, "smtp_destination_concurrency_limit = 1",
             "smtp_connection_cache_time_limit = 10s")
    suite.start()
    for i in range(6):
        send(suite, [f"r{i}@example.net"])
    f.wait_transactions(6, timeout=60)
    wait_log(suite, "status=sent", count=6)
    assert f.connections == 1, f.connections
    assert f.sessions_max == 1
    assert f.commands.count("RSET") >= 1


def test_no_connection_reuse_when_caching_off(suite, fakes):
    f = fakes()
    relay_to(suite, f.port, "smtp_connection_cache_on_demand = no")
    suite.start()
    for i in range(3):
        send(suite, [f"r{i}@example.net"])
        wait_log(suite, "status=sent", count=i + 1)
    assert f.connections == 3, f.connections
    assert "RSET" not in f.commands


def test_connection_lost_mid_transaction_goes_on_at_next_mx(suite, fakes):
    def script(conn):
        conn.sendall(b"220 flaky.test ESMTP\r\n")
        peers.read_line(conn)                      # EHLO
        conn.sendall(b"250 flaky.test\r\n")        # no PIPELINING
        peers.read_line(conn)                      # MAIL
        conn.sendall(b"250 2.1.0 Ok\r\n")
        peers.read_line(conn)                      # RCPT: the server goes away

    mx1 = peers.ScriptServer(script)
    mx2 = fakes(host="127.0.0.2", port=mx1.port)
    dns = peers.FakeDns({
        ("mx.test", "MX"): [(10, "mx1.mx.test"), (20, "mx2.mx.test")],
        ("mx1.mx.test", "A"): ["127.0.0.1"],
        ("mx2.mx.test", "A"): ["127.0.0.2"],
        ("mx1.mx.test", "AAAA"): [],
        ("mx2.mx.test", "AAAA"): [],
    })
    try:
        suite.postconf(f"oxipost_dns_servers = 127.0.0.1:{dns.port}", "inet_protocols = ipv4",
                       f"transport_maps = inline:{{mx.test=smtp:mx.test:{mx1.port}}}")
        suite.start()
        send(suite, ["a@mx.test", "b@mx.test"])
        log = wait_log(suite, "status=sent", count=2)
        (t2,) = mx2.wait_transactions(1)
        assert [r.split(">")[0] for r in t2.rcpts] == ["RCPT TO:<a@mx.test", "RCPT TO:<b@mx.test"]
        assert mx1.connections == 1
        assert "status=deferred" not in log
    finally:
        dns.stop()
        mx1.stop()


def test_lmtp_generic_maps_apart_from_smtp(suite, fakes):
    f = fakes(lmtp=True)
    suite.postconf(f"default_transport = lmtp:inet:127.0.0.1:{f.port}",
                   "lmtp_generic_maps = inline:{ demo@localhost=lmtp.demo@example.com }",
                   "smtp_generic_maps = inline:{ demo@localhost=smtp.demo@example.com }")
    suite.start()
    send(suite, ["x@example.net"])
    (tx,) = f.wait_transactions(1)
    assert tx.mail.startswith("MAIL FROM:<lmtp.demo@example.com>"), tx.mail
    wait_log(suite, "status=sent")
