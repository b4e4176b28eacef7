"""STARTTLS, implicit TLS, SNI and the STARTTLS injection attack, with real clients."""

import smtplib
import socket
import ssl
import subprocess
import time

import pytest

from conftest import make_cert  # noqa: F401  (tls_auth's conftest)


def _hosts_name(ip):
    """The client name smtpd logs for a loopback address: the first /etc/hosts name
    (as Postfix, through the system resolver), else "unknown"."""
    try:
        for line in open("/etc/hosts"):
            w = line.split("#")[0].split()
            if len(w) >= 2 and w[0] == ip:
                return w[1].lower()
    except OSError:
        pass
    return "unknown"


LOCAL4 = _hosts_name("127.0.0.1")
LOCAL6 = _hosts_name("::1")



def ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def recv_reply(sock, timeout=10):
    """Reads one complete SMTP reply (possibly multi-line)."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data.decode(errors="replace")
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) >= 2 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
            return data.decode(errors="replace")


def test_starttls_smtplib_and_received_header(tls_suite):
    s = tls_suite
    s.start()
    with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=20) as c:
        code, msg = c.ehlo("client.example")
        assert b"STARTTLS" in msg
        c.starttls(context=ctx())
        assert c.sock.version() == "TLSv1.3"
        c.ehlo("client.example")
        assert "starttls" not in c.esmtp_features
        c.sendmail("a@example.org", ["demo@localhost"], b"Subject: t\r\n\r\nhello\r\n")
    files = s.wait_for_mail(1)
    text = files[0].read_text()
    assert "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits))" in text
    assert "with ESMTPS id" in text
    s.wait_log(f"Anonymous TLS connection established from {LOCAL4}[127.0.0.1]: "
               "TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)")


def test_openssl_s_client_starttls(tls_suite):
    s = tls_suite
    s.start()
    p = subprocess.run(
        ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{s.smtp_port}",
         "-servername", "mail.example.test", "-tls1_2", "-ign_eof", "-crlf"],
        input="EHLO x\nQUIT\n", capture_output=True, text=True, timeout=30)
    assert "CN = mail.example.test" in p.stdout
    assert "TLSv1.2" in p.stdout
    assert "250-PIPELINING" in p.stdout and "221 2.0.0 Bye" in p.stdout
    s.wait_log("TLSv1.2 with cipher ECDHE-RSA-")


def test_starttls_injection_is_not_answered_inside_tls(tls_suite):
    """CVE-2011-0411: commands pipelined with STARTTLS in plaintext must never be
    executed inside the TLS session. With smtpd_forbid_unauth_pipelining=no the bytes are
    discarded; the client sees no reply to RSET inside TLS."""
    s = tls_suite
    s.postconf("smtpd_forbid_unauth_pipelining=no")
    s.start()
    raw = socket.create_connection(("127.0.0.1", s.smtp_port), timeout=10)
    assert recv_reply(raw).startswith("220 ")
    raw.sendall(b"EHLO x\r\n")
    assert "STARTTLS" in recv_reply(raw)
    raw.sendall(b"STARTTLS\r\nRSET\r\n")
    assert recv_reply(raw).startswith("220 2.0.0 Ready to start TLS")
    tls = ctx().wrap_socket(raw, server_hostname="mail.example.test")
    tls.settimeout(2)
    try:
        extra = tls.recv(4096)
    except (socket.timeout, TimeoutError):
        extra = b""
    assert extra == b"", f"reply inside TLS to an injected command: {extra!r}"
    tls.sendall(b"NOOP\r\n")
    tls.settimeout(10)
    assert tls.recv(4096).startswith(b"250 ")
    tls.sendall(b"QUIT\r\n")
    tls.close()


def test_starttls_injection_with_forbid_unauth_pipelining(tls_suite):
    s = tls_suite
    s.postconf("smtpd_forbid_unauth_pipelining=yes")
    s.start()
    raw = socket.create_connection(("127.0.0.1", s.smtp_port), timeout=10)
    assert recv_reply(raw).startswith("220 ")
    raw.sendall(b"EHLO x\r\n")
    recv_reply(raw)
    raw.sendall(b"STARTTLS\r\nRSET\r\n")
    assert recv_reply(raw).startswith("554 5.5.0 Error: SMTP protocol synchronization")
    raw.close()


def test_implicit_tls_submissions_and_plaintext_client_dropped(tls_suite):
    s = tls_suite
    s.passwd_file("")
    s.start()
    with smtplib.SMTP_SSL("127.0.0.1", s.submissions_port, timeout=20, context=ctx()) as c:
        code, msg = c.ehlo("client.example")
        assert code == 250
        assert b"STARTTLS" not in msg
    raw = socket.create_connection(("127.0.0.1", s.submissions_port), timeout=10)
    raw.sendall(b"EHLO plaintext.example\r\n")
    raw.settimeout(10)
    got = b""
    try:
        while True:
            chunk = raw.recv(4096)
            if not chunk:
                break
            got += chunk
    except (ConnectionResetError, socket.timeout, TimeoutError):
        pass
    assert b"250" not in got and b"220 " not in got
    # The handshake can fail before the client's name is looked up: either name is right.
    assert "[127.0.0.1]: " in s.wait_log("SSL_accept error from ").split("SSL_accept error from ", 1)[1]


def test_sni_selects_certificate(tls_suite):
    s = tls_suite
    _, _, a = make_cert(s.tls, "a", "a.example.test")
    _, _, b = make_cert(s.tls, "b", "b.example.test", key="ec")
    s.postconf("smtpd_tls_cert_file=", "smtpd_tls_key_file=", f"smtpd_tls_chain_files={a}, {b}")
    s.start()
    for name, want in [("b.example.test", "b.example.test"), ("a.example.test", "a.example.test"),
                       ("other.example", "a.example.test")]:
        p = subprocess.run(
            ["openssl", "s_client", "-starttls", "smtp", "-connect", f"127.0.0.1:{s.smtp_port}",
             "-servername", name],
            input="QUIT\r\n", capture_output=True, text=True, timeout=30)
        assert f"CN = {want}" in p.stdout, (name, p.stdout[-2000:])


def test_encrypt_refuses_mail_before_starttls_and_bad_cert_fails_closed(tls_suite):
    s = tls_suite
    s.postconf("smtpd_tls_security_level=encrypt")
    s.start()
    with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=20) as c:
        c.ehlo("x")
        code, msg = c.mail("a@example.org")
        assert (code, msg) == (530, b"5.7.0 Must issue a STARTTLS command first")
    s.stop()
    s.postconf(f"smtpd_tls_key_file={s.tls / 'missing.key'}")
    s.start()
    raw = socket.create_connection(("127.0.0.1", s.smtp_port), timeout=10)
    assert recv_reply(raw).startswith("421 4.3.5")
    s.wait_log("missing.key")


def test_stalled_handshake_times_out(tls_suite):
    """A client that opens the implicit-TLS port and never sends a ClientHello, or stops
    in the middle of a STARTTLS handshake, is dropped after smtpd_timeout."""
    s = tls_suite
    s.passwd_file("")
    s.postconf("smtpd_timeout=2s")
    s.start()
    for port, starttls in ((s.submissions_port, False), (s.smtp_port, True)):
        raw = socket.create_connection(("127.0.0.1", port), timeout=15)
        if starttls:
            assert recv_reply(raw).startswith("220 ")
            raw.sendall(b"EHLO x\r\n")
            recv_reply(raw)
            raw.sendall(b"STARTTLS\r\n")
            assert recv_reply(raw).startswith("220 2.0.0")
            raw.sendall(b"\x16\x03\x01\x00\x05")  # the start of a record, then silence
        t = time.monotonic()
        raw.settimeout(15)
        try:
            while raw.recv(4096):
                pass
        except ConnectionResetError:
            pass
        assert time.monotonic() - t < 10
        raw.close()
