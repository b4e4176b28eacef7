"""SCRAM-SHA-256, CRAM-MD5 and APOP through the auth service, end to end: a SCRAM client
written here (hashlib/hmac, RFC 5802/7677) that checks the server signature, smtplib's
CRAM-MD5 login and swaks', poplib's apop(), IMAP AUTHENTICATE SCRAM-SHA-256, wrong proofs
refused with the normal failure path, and no mechanism offered that the stored passwords
cannot serve. Also `mailctl init`'s SQLite demo user end to end."""

import base64
import hashlib
import hmac
import imaplib
import os
import poplib
import smtplib
import ssl
import subprocess
import uuid

import pytest

from conftest import AS_USER, BIN, run

PW = "s3cret-Pw"


def b64(b):
    return base64.b64encode(b if isinstance(b, bytes) else b.encode()).decode()


def ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def hash_pw(scheme, pw):
    return subprocess.run([BIN / "oxipost-user", "hash", "-s", scheme], input=pw + "\n",
                          capture_output=True, text=True, timeout=60, check=True).stdout.strip()


class Scram:
    """The client side of SCRAM-SHA-256 (no channel binding: gs2 header `n,,`)."""

    def __init__(self, user, pw):
        self.user, self.pw = user, pw
        self.nonce = b64(os.urandom(18))
        self.bare = f"n={user.replace('=', '=3D').replace(',', '=2C')},r={self.nonce}"
        self.verified = False

    def first(self):
        return ("n,," + self.bare).encode()

    def final(self, server_first: bytes):
        sf = server_first.decode()
        attrs = dict(a.split("=", 1) for a in sf.split(","))
        assert attrs["r"].startswith(self.nonce) and len(attrs["r"]) > len(self.nonce), sf
        salted = hashlib.pbkdf2_hmac("sha256", self.pw.encode(), base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        stored = hashlib.sha256(client_key).digest()
        without = f"c={b64('n,,')},r={attrs['r']}"
        self.auth_message = f"{self.bare},{sf},{without}".encode()
        sig = hmac.digest(stored, self.auth_message, "sha256")
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        self.server_key = hmac.digest(salted, b"Server Key", "sha256")
        return f"{without},p={b64(proof)}".encode()

    def check(self, server_final: bytes):
        want = "v=" + b64(hmac.digest(self.server_key, self.auth_message, "sha256"))
        assert server_final.decode() == want, (server_final, want)
        self.verified = True


def smtp_scram(port, user, pw):
    """AUTH SCRAM-SHA-256 on submission; returns (code, message, Scram)."""
    c = smtplib.SMTP("127.0.0.1", port, timeout=60)
    c.starttls(context=ctx())
    c.ehlo("client.example")
    sc = Scram(user, pw)
    code, msg = c.docmd("AUTH", "SCRAM-SHA-256 " + b64(sc.first()))
    assert code == 334, (code, msg)
    code, msg = c.docmd(b64(sc.final(base64.b64decode(msg))))
    if code == 334:
        sc.check(base64.b64decode(msg))
        code, msg = c.docmd("")
    c.quit()
    return code, msg, sc


def ehlo_auth(port):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.starttls(context=ctx())
        c.ehlo("x")
        return c.esmtp_features.get("auth", "").split()


def test_scram_sha_256_from_plain_and_scram_entries(tls_suite):
    s = tls_suite
    s.passwd_file(f"alice:{{PLAIN}}{PW}::::/home/alice\n"
                  f"bob:{hash_pw('SCRAM-SHA-256', 'bob-Pw 2')}::::/home/bob\n")
    s.start()
    assert ehlo_auth(s.submission_port) == ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"]
    for user, pw in (("alice", PW), ("bob", "bob-Pw 2")):
        code, msg, sc = smtp_scram(s.submission_port, user, pw)
        assert (code, msg) == (235, b"2.7.0 Authentication successful"), user
        assert sc.verified
    # PLAIN still works against a stored SCRAM entry.
    with smtplib.SMTP("127.0.0.1", s.submission_port, timeout=30) as c:
        c.starttls(context=ctx())
        c.ehlo("x")
        assert c.docmd("AUTH", "PLAIN " + b64("\0bob\0bob-Pw 2"))[0] == 235
        c.mail("bob@example.test")
        assert c.rcpt("demo@localhost")[0] == 250
        assert c.data(b"Subject: scram\r\n\r\nhi\r\n")[0] == 250
    log = s.wait_log("user=<bob>, method=SCRAM-SHA-256")
    assert "auth: login: user=<alice>, method=SCRAM-SHA-256" in log
    # Wrong password, unknown user: the same failure, counted, with the log line.
    for user in ("alice", "nobody"):
        code, msg, sc = smtp_scram(s.submission_port, user, "wrong-guess")
        assert (code, msg) == (535, b"5.7.8 Error: authentication failed: authentication failure")
        assert not sc.verified
    log = s.wait_log("SASL SCRAM-SHA-256 authentication failed")
    assert "SASL SCRAM-SHA-256 authentication failed: authentication failure" in log
    for secret in (PW, "bob-Pw 2", "wrong-guess"):
        assert secret not in log and b64(secret) not in log
    # Channel binding requested: refused (no -PLUS mechanisms).
    with smtplib.SMTP("127.0.0.1", s.submission_port, timeout=30) as c:
        c.starttls(context=ctx())
        c.ehlo("x")
        code, _ = c.docmd("AUTH", "SCRAM-SHA-256 " + b64("p=tls-exporter,,n=alice,r=abcdef"))
        assert code == 535


def test_cram_md5_smtplib_and_swaks(tls_suite):
    s = tls_suite
    s.passwd_file(f"alice:{{PLAIN}}{PW}::::/home/alice\n")
    s.start()
    with smtplib.SMTP("127.0.0.1", s.submission_port, timeout=30) as c:
        c.starttls(context=ctx())
        c.ehlo("x")
        assert "CRAM-MD5" in c.esmtp_features["auth"]
        # smtplib prefers CRAM-MD5 when offered.
        assert c.login("alice", PW)[0] == 235
    s.wait_log("user=<alice>, method=CRAM-MD5")
    p = subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(s.submission_port), "--tls",
                        "--auth", "CRAM-MD5", "--auth-user", "alice", "--auth-password", PW,
                        "--from", "alice@example.test", "--to", "demo@localhost"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "235 2.7.0 Authentication successful" in p.stdout
    s.wait_for_mail(1)
    with smtplib.SMTP("127.0.0.1", s.submission_port, timeout=30) as c:
        c.starttls(context=ctx())
        c.ehlo("x")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login("alice", "wrong-guess")
    # smtpd_sasl_security_options=noplaintext (no TLS on the smtp port): only the
    # mechanisms that do not send the password are offered, and they work.
    s.stop()
    s.postconf("smtpd_sasl_auth_enable=yes", "smtpd_sasl_security_options=noplaintext")
    s.start()
    with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=30) as c:
        c.ehlo("x")
        assert c.esmtp_features["auth"].split() == ["CRAM-MD5", "SCRAM-SHA-256"]
        assert c.login("alice", PW)[0] == 235
    log = s.wait_log("SASL CRAM-MD5 authentication failed")
    assert PW not in log and "wrong-guess" not in log


def test_hashed_passwords_offer_no_cram_scram_or_apop(tls_suite):
    s = tls_suite
    s.passwd_file(f"alice:{hash_pw('SHA512-CRYPT', PW)}::::/home/alice\n")
    s.start()
    assert ehlo_auth(s.submission_port) == ["PLAIN", "LOGIN"]
    with smtplib.SMTP("127.0.0.1", s.submission_port, timeout=30) as c:
        c.starttls(context=ctx())
        c.ehlo("x")
        assert c.login("alice", PW)[0] == 235  # PLAIN
        assert c.docmd("AUTH", "CRAM-MD5")[0] != 334
    p = poplib.POP3("127.0.0.1", s.base + 110, timeout=30)
    try:
        assert b"<" not in p.getwelcome()
        capa = p.capa()
        assert capa["SASL"] == ["PLAIN", "LOGIN"]
        with pytest.raises(poplib.error_proto):
            p._shortcmd("APOP alice " + "0" * 32)
    finally:
        p.quit()
    imap = imaplib.IMAP4("127.0.0.1", s.base + 143, timeout=30)
    try:
        caps = imap.capabilities
        assert "AUTH=PLAIN" in caps and not any(c in caps for c in ("AUTH=CRAM-MD5", "AUTH=SCRAM-SHA-256"))
    finally:
        imap.logout()


def test_pop3_apop_and_imap_scram(tls_suite):
    s = tls_suite
    home = s.home / "demo"
    s.passwd_file(f"demo:{{PLAIN}}{PW}::::{home}\n")
    s.start()
    with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=30) as c:
        c.sendmail("x@example.test", ["demo@localhost"], b"Subject: apop\r\n\r\nhello apop\r\n")
    s.wait_for_mail(1)
    p = poplib.POP3("127.0.0.1", s.base + 110, timeout=30)
    try:
        welcome = p.getwelcome()
        assert welcome.startswith(b"+OK ") and welcome.endswith(b">"), welcome
        ts = welcome[welcome.index(b"<"):]
        assert b"@" in ts
        assert p.capa()["SASL"] == ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"]
        assert p.apop("demo", PW).startswith(b"+OK")
        assert p.stat()[0] == 1
        assert b"hello apop" in b"\n".join(p.retr(1)[1])
    finally:
        p.quit()
    # A second connection gets another timestamp; a wrong digest fails.
    p = poplib.POP3("127.0.0.1", s.base + 110, timeout=30)
    try:
        assert p.getwelcome()[p.getwelcome().index(b"<"):] != ts
        with pytest.raises(poplib.error_proto) as e:
            p.apop("demo", "wrong-guess")
        assert b"[AUTH]" in e.value.args[0]
    finally:
        p.close()
    log = s.wait_log("method=APOP")
    assert PW not in log and "wrong-guess" not in log
    # IMAP AUTHENTICATE SCRAM-SHA-256 (server-final as the last continuation).
    imap = imaplib.IMAP4("127.0.0.1", s.base + 143, timeout=30)
    try:
        assert "AUTH=SCRAM-SHA-256" in imap.capabilities
        sc = Scram("demo", PW)
        steps = iter([sc.first, sc.final, lambda d: sc.check(d) or b""])
        typ, _ = imap.authenticate("SCRAM-SHA-256", lambda data: next(steps)(*([data] if data else [])))
        assert typ == "OK" and sc.verified
        assert imap.select("INBOX")[1] == [b"1"]
    finally:
        imap.logout()


def senders_suite(s, restriction):
    s.passwd_file("".join(f"{u}:{{PLAIN}}{u}-pw::::/home/{u}\n" for u in ("alice", "bob", "carol")))
    m = s.etc / "senders"
    m.write_text("alice@example.test alice\n"
                 "shared@example.test alice, bob\n"
                 "@owned.example carol\n"
                 "postmaster bob\n")
    run(BIN / "postmap", "-c", s.etc, f"hash:{m}", as_suite_user=True)
    s.postconf("smtpd_sasl_auth_enable=yes", f"smtpd_sender_login_maps=hash:{m}",
               f"smtpd_sender_restrictions={restriction}")
    s.start()


def mail_from(s, user, sender):
    """MAIL FROM + RCPT TO on the smtp port (restrictions apply at RCPT): (code, msg)."""
    with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=30) as c:
        c.starttls(context=ctx())
        c.ehlo("x")
        if user:
            assert c.docmd("AUTH", "PLAIN " + b64(f"\0{user}\0{user}-pw"))[0] == 235
        code, msg = c.mail(sender)
        if code != 250:
            return code, msg
        return c.rcpt("demo@localhost")


def not_owned(sender, user):
    return (553, f"5.7.1 <{sender}>: Sender address rejected: not owned by user {user}".encode())


NOT_LOGGED_IN = b"Sender address rejected: not logged in"


def test_reject_sender_login_mismatch(tls_suite):
    s = tls_suite
    senders_suite(s, "reject_sender_login_mismatch")
    ok = [("alice", "alice@example.test"), ("alice", "Alice@Example.TEST"),
          ("alice", "shared@example.test"), ("bob", "shared@example.test"),
          ("carol", "anyone@owned.example"), ("bob", "postmaster@localhost"),
          (None, "free@else.example")]
    for user, sender in ok:
        assert mail_from(s, user, sender)[0] == 250, (user, sender)
    assert mail_from(s, "bob", "alice@example.test") == not_owned("alice@example.test", "bob")
    assert mail_from(s, "alice", "x@owned.example") == not_owned("x@owned.example", "alice")
    assert mail_from(s, "alice", "postmaster@localhost") == not_owned("postmaster@localhost", "alice")
    # Logged in, address without owner: rejected by the strict form.
    assert mail_from(s, "alice", "free@else.example") == not_owned("free@else.example", "alice")
    code, msg = mail_from(s, None, "alice@example.test")
    assert (code, msg) == (553, b"5.7.1 <alice@example.test>: " + NOT_LOGGED_IN)
    log = s.wait_log("not owned by user bob")
    assert "reject: RCPT from" in log


@pytest.mark.parametrize("restriction,expect", [
    # (bob sends as alice, alice sends an unowned address, nobody logged in sends as alice)
    ("reject_known_sender_login_mismatch", (553, 250, 553)),
    ("reject_authenticated_sender_login_mismatch", (553, 553, 250)),
    ("reject_unauthenticated_sender_login_mismatch", (250, 250, 553)),
])
def test_sender_login_mismatch_variants(tls_suite, restriction, expect):
    s = tls_suite
    senders_suite(s, restriction)
    got = (mail_from(s, "bob", "alice@example.test")[0],
           mail_from(s, "alice", "free@else.example")[0],
           mail_from(s, None, "alice@example.test")[0])
    assert got == expect
    assert mail_from(s, "alice", "alice@example.test")[0] == 250


def test_init_demo_user_is_sqlite_and_delivers(tls_suite):
    """`mailctl init` configured SQLite users with demo@localhost: its password file,
    SCRAM login on submission, delivery to the local user demo, POP3 login reading it."""
    s = tls_suite
    pw_file = s.etc / "demo-password"
    assert oct(pw_file.stat().st_mode & 0o777) == "0o600"
    pw = pw_file.read_text().strip()
    assert len(pw) >= 16
    assert f"sqlite:{s.etc / 'users.db'}" in run(BIN / "postconf", "-c", s.etc, "-h",
                                                 "auth_passdb").stdout
    out = run(BIN / "oxipost-user", "-c", s.etc, "list", as_suite_user=True).stdout
    assert f"demo@localhost\t{s.home}/demo/Maildir/" in out
    s.start()
    assert "SCRAM-SHA-256" in ehlo_auth(s.submission_port)
    code, _, sc = smtp_scram(s.submission_port, "demo@localhost", pw)
    assert code == 235 and sc.verified
    tag = uuid.uuid4().hex
    with smtplib.SMTP("127.0.0.1", s.submission_port, timeout=30) as c:
        c.starttls(context=ctx())
        c.ehlo("x")
        c.login("demo@localhost", pw)
        c.sendmail("demo@localhost", ["demo@localhost"], f"Subject: {tag}\r\n\r\nhi\r\n".encode())
    files = s.wait_for_mail(1)
    assert tag in files[0].read_text()
    p = poplib.POP3("127.0.0.1", s.base + 110, timeout=30)
    try:
        p.user("demo@localhost")
        assert p.pass_(pw).startswith(b"+OK")
        assert any(tag.encode() in line for line in p.retr(1)[1])
    finally:
        p.quit()
    log = s.log()
    assert pw not in log
