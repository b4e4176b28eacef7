"""Misbehaving peers: garbage replies, a connection closed mid-DATA, a 10 MB banner, a
broken TLS handshake. The message is deferred with the peer's text, the agent neither
crashes nor hangs, and nothing is removed from the queue before a final answer."""

import pytest

import peers
from conftest import send, wait_log


@pytest.fixture
def script_server():
    made = []

    def make(script):
        s = peers.ScriptServer(script)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def ehlo_then(conn, after_ehlo):
    conn.sendall(b"220 evil.test ESMTP\r\n")
    peers.read_line(conn)
    after_ehlo(conn)


def test_garbage_reply_is_deferred(suite, script_server):
    def script(conn):
        ehlo_then(conn, lambda c: c.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n"))

    s = script_server(script)
    suite.postconf(f"relayhost = [127.0.0.1]:{s.port}")
    suite.start()
    send(suite, ["a@example.net"])
    log = wait_log(suite, "status=deferred")
    assert "sent a malformed reply: HTTP/1.1 400 Bad Request (in reply to EHLO command)" in log
    assert suite.queue_files("deferred")


def test_close_mid_data_is_deferred(suite, script_server):
    def script(conn):
        conn.sendall(b"220 evil.test ESMTP\r\n")
        for reply in (b"250 evil.test", b"250 ok", b"250 ok", b"354 go"):
            peers.read_line(conn)
            conn.sendall(reply + b"\r\n")
        conn.recv(10)

    s = script_server(script)
    suite.postconf(f"relayhost = [127.0.0.1]:{s.port}")
    suite.start()
    send(suite, ["a@example.net"])
    log = wait_log(suite, "status=deferred")
    assert "lost connection with 127.0.0.1[127.0.0.1] while sending" in log
    assert suite.queue_files("deferred")


def test_ten_megabyte_banner(suite, script_server):
    def script(conn):
        conn.sendall(b"220-" + b"x" * (10 << 20) + b"\r\n")
        conn.sendall(b"554 5.3.2 not today\r\n")
        conn.recv(100)

    s = script_server(script)
    suite.postconf(f"relayhost = [127.0.0.1]:{s.port}")
    suite.start()
    send(suite, ["a@example.net"])
    log = wait_log(suite, "status=deferred", timeout=60)
    assert "refused to talk to me: 220-xxxx" in log
    assert len(log) < 200_000


def test_broken_tls_falls_back_to_plaintext_at_may(suite, script_server, fakes):
    good = fakes(ext=["PIPELINING"])

    def script(conn):
        conn.sendall(b"220 evil.test ESMTP\r\n")
        line = peers.read_line(conn)
        conn.sendall(b"250-evil.test\r\n250 STARTTLS\r\n")
        line = peers.read_line(conn)
        if line.upper() == b"STARTTLS":
            conn.sendall(b"220 go ahead\r\n")
            conn.sendall(b"\x15\x03\x03\x00\x02\x02\x28 this is not TLS")
            conn.recv(100)
            return
        # Plaintext retry: relay to the good peer's behaviour is not needed; refuse.
        conn.sendall(b"451 4.3.0 plaintext seen\r\n")

    s = script_server(script)
    suite.postconf(f"relayhost = [127.0.0.1]:{s.port}", "smtp_tls_security_level = may")
    suite.start()
    send(suite, ["a@example.net"])
    log = wait_log(suite, "status=deferred")
    assert "retrying without TLS" in log
    assert "451 4.3.0 plaintext seen" in log
    assert s.connections == 2


def test_broken_tls_defers_at_encrypt(suite, script_server):
    def script(conn):
        conn.sendall(b"220 evil.test ESMTP\r\n")
        peers.read_line(conn)
        conn.sendall(b"250-evil.test\r\n250 STARTTLS\r\n")
        peers.read_line(conn)
        conn.sendall(b"220 go ahead\r\n")
        conn.sendall(b"garbage instead of a server hello\r\n" * 10)
        conn.recv(100)

    s = script_server(script)
    suite.postconf(f"relayhost = [127.0.0.1]:{s.port}", "smtp_tls_security_level = encrypt")
    suite.start()
    send(suite, ["a@example.net"])
    log = wait_log(suite, "status=deferred")
    assert "TLS is required" in log
    assert s.connections == 1
