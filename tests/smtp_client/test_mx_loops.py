"""The smtp client's MX handling against a DNS server and fake peers on loopback: mail that
loops back to this host (RFC 5321 §5.1: an MX list naming this host drops the hosts as good
as or worse than it; best MX is a 5.4.6 bounce), smtp_fallback_relay (after the servers of
a destination, never for a destination this host is MX for), a relayhost that cannot be
found (deferred 4.3.5, not bounced), a 4xx on a reused connection tried on the next MX,
and smtp_mx_address_limit / smtp_mx_session_limit.

The suite listens on 127.0.0.1 (inet_interfaces) at suite.smtp_port; loop detection applies
to port 25 and to the ports of the suite's own smtpd services, so next hops here use that
port and the "other" MX hosts listen on 127.0.0.2/127.0.0.3 at the same port."""

import time

import peers
from conftest import send, wait_log


def use_dns(suite, records, *extra):
    dns = peers.FakeDns(records)
    suite.postconf(f"oxipost_dns_servers = 127.0.0.1:{dns.port}", "inet_protocols = ipv4", *extra)
    return dns


def a_records(**hosts):
    out = {}
    for name, ip in hosts.items():
        name = name.replace("_", ".")
        out[(name, "A")] = [ip] if ip else []
        out[(name, "AAAA")] = []
    return out


def test_best_mx_is_myself_bounces_with_5_4_6(suite):
    dns = use_dns(suite, {
        ("loop.test", "MX"): [(10, "me.loop.test"), (20, "other.loop.test")],
        **a_records(me_loop_test="127.0.0.1", other_loop_test="127.0.0.2"),
    }, f"transport_maps = inline:{{loop.test=smtp:loop.test:{suite.smtp_port}}}")
    try:
        suite.start()
        send(suite, ["u@loop.test"])
        log = wait_log(suite, "status=bounced")
        assert ("to=<u@loop.test>, relay=none" in log
                and "dsn=5.4.6, status=bounced (mail for loop.test loops back to myself)" in log), log[-2000:]
        # The bounce reaches the sender with the reason.
        files = suite.wait_for_mail(1)
        text = files[0].read_text(errors="replace")
        assert "mail for loop.test loops back to myself" in text
        assert "5.4.6" in text
    finally:
        dns.stop()


def test_worse_preference_than_myself_only_better_host_tried(suite, fakes):
    better = fakes(host="127.0.0.2", port=suite.smtp_port,
                   rcpt_replies={"later@backup.test": "450 4.2.0 <later@backup.test>: not now"})
    equal = fakes(host="127.0.0.3", port=suite.smtp_port)
    worse = fakes(host="127.0.0.4", port=suite.smtp_port)
    dns = use_dns(suite, {
        ("backup.test", "MX"): [(10, "better.backup.test"), (20, "me.backup.test"),
                                (20, "equal.backup.test"), (30, "worse.backup.test")],
        **a_records(better_backup_test="127.0.0.2", me_backup_test="127.0.0.1",
                    equal_backup_test="127.0.0.3", worse_backup_test="127.0.0.4"),
    }, f"transport_maps = inline:{{backup.test=smtp:backup.test:{suite.smtp_port}}}",
        "smtp_fallback_relay = [127.0.0.3]:%d" % suite.smtp_port)
    try:
        suite.start()
        send(suite, ["ok@backup.test", "later@backup.test"])
        log = wait_log(suite, "status=sent")
        log = wait_log(suite, "status=deferred")
        (tx,) = better.wait_transactions(1)
        assert [r.split(">")[0] for r in tx.rcpts] == ["RCPT TO:<ok@backup.test"]
        assert (f"to=<later@backup.test>, relay=better.backup.test[127.0.0.2]:{suite.smtp_port}" in log
                and "<later@backup.test>: not now (in reply to RCPT TO command)" in log), log[-2000:]
        # Neither the host of equal preference, nor the worse one, nor (this host being
        # MX for the domain) the fall-back relay.
        assert equal.connections == 0 and worse.connections == 0
        assert "loops back" not in log
    finally:
        dns.stop()


def test_fallback_relay_when_all_mx_hosts_refuse(suite, fakes):
    mx1 = fakes(host="127.0.0.2", greeting="421 4.3.2 mx1 busy")
    mx2 = fakes(host="127.0.0.3", port=mx1.port, greeting="421 4.3.2 mx2 busy")
    fb = fakes()
    dns = use_dns(suite, {
        ("fb.test", "MX"): [(10, "mx1.fb.test"), (20, "mx2.fb.test")],
        **a_records(mx1_fb_test="127.0.0.2", mx2_fb_test="127.0.0.3"),
    }, f"transport_maps = inline:{{fb.test=smtp:fb.test:{mx1.port}}}",
        f"smtp_fallback_relay = [127.0.0.1]:{fb.port}")
    try:
        suite.start()
        send(suite, ["a@fb.test", "b@fb.test"])
        log = wait_log(suite, "status=sent", count=2)
        (tx,) = fb.wait_transactions(1)
        assert [r.split(">")[0] for r in tx.rcpts] == ["RCPT TO:<a@fb.test", "RCPT TO:<b@fb.test"]
        assert mx1.connections == 1 and mx2.connections == 1
        assert f"to=<a@fb.test>, relay=127.0.0.1[127.0.0.1]:{fb.port}" in log
        assert "status=deferred" not in log
        # When the MX hosts answer, the fall-back relay is not used.
        mx1.greeting = "220 mx1.fb.test ESMTP"
        send(suite, ["c@fb.test"])
        log = wait_log(suite, "status=sent", count=3)
        mx1.wait_transactions(1)
        assert len(fb.transactions) == 1
    finally:
        dns.stop()


def test_fallback_relay_also_after_a_dead_relayhost(suite, fakes):
    # Postfix's smtp_connect appends smtp_fallback_relay to every SMTP next hop,
    # relayhost included (only LMTP and destinations this host is MX for have none).
    dead = fakes(greeting="421 4.3.2 relay busy")
    fb = fakes(host="127.0.0.2")
    suite.postconf(f"relayhost = [127.0.0.1]:{dead.port}",
                   f"smtp_fallback_relay = [127.0.0.2]:{fb.port}")
    suite.start()
    send(suite, ["x@example.net"])
    log = wait_log(suite, "status=sent")
    fb.wait_transactions(1)
    assert dead.connections == 1
    assert f"relay=127.0.0.2[127.0.0.2]:{fb.port}" in log


def test_relayhost_not_found_is_deferred_as_configuration_problem(suite):
    dns = use_dns(suite, {}, "relayhost = [nowhere.test]:2525")
    try:
        suite.start()
        send(suite, ["x@example.net"])
        log = wait_log(suite, "status=deferred")
        assert "dsn=4.3.5" in log and "name=nowhere.test" in log, log[-2000:]
        assert "relayhost configuration problem" in log
        assert "status=bounced" not in log
    finally:
        dns.stop()


def test_4xx_on_reused_connection_goes_to_next_mx(suite, fakes):
    mx1 = fakes(first_data_delay=1.5,
                rcpt_replies={"later@mx.test": "450 4.2.1 <later@mx.test>: try again later"})
    mx2 = fakes(host="127.0.0.2", port=mx1.port)
    dns = use_dns(suite, {
        ("mx.test", "MX"): [(10, "mx1.mx.test"), (20, "mx2.mx.test")],
        **a_records(mx1_mx_test="127.0.0.1", mx2_mx_test="127.0.0.2"),
    }, f"transport_maps = inline:{{mx.test=smtp:mx.test:{mx1.port}}}",
        "smtp_destination_concurrency_limit = 1", "smtp_connection_cache_time_limit = 10s")
    try:
        suite.start()
        send(suite, ["first@mx.test"])
        # The second message only once the first is on the wire (its DATA reply is
        # slow), so that it finds the first one's session in the agent's cache.
        deadline = time.time() + 30
        while not any(c.startswith("MAIL") for c in mx1.commands) and time.time() < deadline:
            time.sleep(0.05)
        send(suite, ["second@mx.test", "later@mx.test"])
        log = wait_log(suite, "status=sent", count=3, timeout=60)
        assert mx1.connections == 1, mx1.connections          # one session, reused
        assert "RSET" in mx1.commands
        assert "(reused connection)" in log, log[-3000:]
        (t2,) = mx2.wait_transactions(1)
        assert [r.split(">")[0] for r in t2.rcpts] == ["RCPT TO:<later@mx.test"]
        assert f"to=<later@mx.test>, relay=mx2.mx.test[127.0.0.2]:{mx1.port}" in log
        assert "status=deferred" not in log
    finally:
        dns.stop()


def limits_setup(suite, fakes, *limits):
    """MX hosts h2..h5 on 127.0.0.2-5: h2 fails the handshake (421 greeting), the others
    defer the recipient with their number."""
    refusing = fakes(host="127.0.0.2", greeting="421 4.3.2 busy")
    hosts = [fakes(host=f"127.0.0.{i}", port=refusing.port,
                   rcpt_replies={"r@lim.test": f"450 4.2.0 <r@lim.test>: host {i} says later"})
             for i in (3, 4, 5)]
    dns = use_dns(suite, {
        ("lim.test", "MX"): [(10, "h2.lim.test"), (20, "h3.lim.test"), (30, "h4.lim.test"),
                             (40, "h5.lim.test")],
        **a_records(h2_lim_test="127.0.0.2", h3_lim_test="127.0.0.3", h4_lim_test="127.0.0.4",
                    h5_lim_test="127.0.0.5"),
    }, f"transport_maps = inline:{{lim.test=smtp:lim.test:{refusing.port}}}", *limits)
    return refusing, hosts, dns


def test_mx_session_limit_counts_completed_handshakes(suite, fakes):
    # Postfix: the session limit ignores sessions that fail the initial handshake.
    refusing, hosts, dns = limits_setup(suite, fakes, "smtp_mx_address_limit = 0",
                                        "smtp_mx_session_limit = 2")
    try:
        suite.start()
        send(suite, ["r@lim.test"])
        log = wait_log(suite, "status=deferred")
        assert refusing.connections == 1
        assert [h.connections for h in hosts] == [1, 1, 0]
        assert "host 4 says later" in log
    finally:
        dns.stop()


def test_mx_address_limit_counts_addresses(suite, fakes):
    # Postfix: the address limit counts every address tried, handshake or not.
    refusing, hosts, dns = limits_setup(suite, fakes, "smtp_mx_address_limit = 2",
                                        "smtp_mx_session_limit = 0")
    try:
        suite.start()
        send(suite, ["r@lim.test"])
        log = wait_log(suite, "status=deferred")
        assert refusing.connections == 1
        assert [h.connections for h in hosts] == [1, 0, 0]
        assert "host 3 says later" in log
    finally:
        dns.stop()


def test_server_greeting_with_my_own_hostname_is_a_loop(suite, fakes):
    # The fakes answer EHLO as "fake.test"; here that is this host's myhostname. At the
    # best MX host that is a 5.4.6 bounce; at a lesser one (4.4.6) the next host is tried.
    loopy = fakes(host="127.0.0.2", port=suite.smtp_port)
    busy = fakes(host="127.0.0.3", port=suite.smtp_port, greeting="421 4.3.2 busy")
    good = fakes(host="127.0.0.4", port=suite.smtp_port, ehlo_name="good.ehlo2.test")
    good_name = "good.ehlo2.test"
    dns = use_dns(suite, {
        ("ehlo1.test", "MX"): [(10, "loopy.ehlo.test")],
        ("ehlo2.test", "MX"): [(10, "busy.ehlo.test"), (20, "loopy.ehlo.test"), (30, good_name)],
        **a_records(loopy_ehlo_test="127.0.0.2", busy_ehlo_test="127.0.0.3",
                    good_ehlo2_test="127.0.0.4"),
    }, "myhostname = fake.test",
        f"transport_maps = inline:{{ehlo1.test=smtp:ehlo1.test:{suite.smtp_port}, "
        f"ehlo2.test=smtp:ehlo2.test:{suite.smtp_port}}}")
    try:
        suite.start()
        send(suite, ["u@ehlo1.test"])
        log = wait_log(suite, "status=bounced")
        assert "dsn=5.4.6, status=bounced (mail for ehlo1.test:%d loops back to myself)" % suite.smtp_port in log, log[-2000:]
        assert "replied to HELO/EHLO with my own hostname fake.test" in log
        assert not loopy.transactions
        send(suite, ["v@ehlo2.test"])
        log = wait_log(suite, f"to=<v@ehlo2.test>, relay={good_name}[127.0.0.4]:{suite.smtp_port}")
        assert "dsn=4.4.6" not in log.split("to=<v@ehlo2.test>")[-1].split("\n")[0]
        assert busy.connections == 1 and len(good.transactions) == 1 and not loopy.transactions
    finally:
        dns.stop()


def test_next_hop_at_my_own_address_is_a_loop(suite):
    # A transport next hop at our own address and smtpd port: a 5.4.6 bounce.
    suite.postconf(f"transport_maps = inline:{{self.test=smtp:[127.0.0.1]:{suite.smtp_port}}}")
    suite.start()
    send(suite, ["u@self.test"])
    log = wait_log(suite, "status=bounced")
    assert "to=<u@self.test>, relay=none" in log
    assert "dsn=5.4.6, status=bounced (mail for 127.0.0.1 loops back to myself)" in log, log[-2000:]


def test_relayhost_at_my_own_address_is_a_configuration_problem(suite):
    # The same next hop as relayhost: deferred 4.3.5 (Postfix's smtp_connect).
    suite.postconf(f"relayhost = [127.0.0.1]:{suite.smtp_port}")
    suite.start()
    send(suite, ["v@example.net"])
    log = wait_log(suite, "to=<v@example.net>")
    line = log.split("to=<v@example.net>")[1].split("\n")[0]
    assert "dsn=4.3.5, status=deferred (mail for 127.0.0.1 loops back to myself)" in line, line
    assert "relayhost configuration problem" in log
