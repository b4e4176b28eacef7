"""The mysql: passdb (issue 8) against a real MariaDB: SMTP AUTH, POP3 and IMAP logins of
users who live in MariaDB (their mail delivered through mysql: virtual tables), wrong
passwords refused, and the server stopped giving a temporary failure, never an accept,
until it is back."""

import base64
import imaplib
import smtplib
import ssl

from conftest import BIN, DB_NAME, run, suite_ids, wait_for


def ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def smtp_auth(s, user, pw):
    """The reply code of AUTH PLAIN on submission after STARTTLS."""
    with smtplib.SMTP("127.0.0.1", s.submission_port, timeout=60) as c:
        c.starttls(context=ctx())
        c.ehlo("client.example")
        token = base64.b64encode(f"\0{user}\0{pw}".encode()).decode()
        code, text = c.docmd("AUTH", "PLAIN " + token)
        return code, text


class Pop:
    def __init__(self, port):
        import socket
        self.s = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.f = self.s.makefile("rb")
        assert self.f.readline().startswith(b"+OK")

    def cmd(self, c):
        self.s.sendall(c.encode() + b"\r\n")
        return self.f.readline()

    def multi(self):
        lines = []
        while (line := self.f.readline()) not in (b".\r\n", b""):
            lines.append(line)
        return b"".join(lines)

    def login(self, user, pw):
        assert self.cmd(f"USER {user}").startswith(b"+OK")
        return self.cmd(f"PASS {pw}")

    def close(self):
        try:
            self.cmd("QUIT")
        finally:
            self.s.close()


def imap_login(s, user, pw):
    """(ok, text, messages in INBOX or None)."""
    c = imaplib.IMAP4("127.0.0.1", s.base + 143, timeout=60)
    try:
        try:
            c.login(user, pw)
        except imaplib.IMAP4.error as e:
            return False, str(e), None
        typ, data = c.select("INBOX")
        assert typ == "OK", data
        return True, "", int(data[0])
    finally:
        try:
            c.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def test_logins_of_mariadb_users(tls_suite, db):
    s = tls_suite
    ann_hash = run(BIN / "oxipost-user", "hash", input="ann-pw\n").stdout.strip()
    assert ann_hash.startswith("{SHA512-CRYPT}$6$")
    db.sql(
        f"""
INSERT INTO domains VALUES ('vmail.example', 1);
INSERT INTO users VALUES
  ('joe', 'vmail.example', '{{PLAIN}}joe-pw', 'vmail.example/joe/', 1),
  ('ann', 'vmail.example', '{ann_hash}', 'vmail.example/ann/', 1),
  ('off', 'vmail.example', '{{PLAIN}}off-pw', 'vmail.example/off/', 0);
""",
        db=DB_NAME,
    )
    base = s.root / "vmail"
    base.mkdir()
    (base / "vmail.example").mkdir()
    from conftest import give
    give(base)
    give(base / "vmail.example")
    etc = s.etc
    domains = db.cf(etc, "vdomains.cf", "query = SELECT domain FROM domains WHERE domain='%s' AND active=1\n")
    boxes = db.cf(etc, "vmailbox.cf",
                  "query = SELECT maildir FROM users WHERE local_part='%u' AND domain='%d' AND active=1\n")
    passdb = db.cf(etc, "passdb.cf",
                   "password_query = SELECT password,\n"
                   f"    CONCAT('maildir:{base}/', maildir) AS mail,\n"
                   f"    CONCAT('{base}/', maildir) AS home\n"
                   "  FROM users WHERE local_part='%u' AND domain='%d' AND active=1\n")
    uid, gid = suite_ids()
    s.postconf(
        f"virtual_mailbox_domains = mysql:{domains}",
        f"virtual_mailbox_maps = mysql:{boxes}",
        f"virtual_mailbox_base = {base}",
        f"virtual_uid_maps = static:{uid}",
        f"virtual_gid_maps = static:{gid}",
        "virtual_minimum_uid = 100",
        f"auth_passdb = mysql:{passdb}",
        "auth_failure_delay = 0",
        "auth_failure_limit = 0",
    )
    s.start()
    with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=60) as c:
        c.sendmail("sender@example.com", ["joe@vmail.example", "ann@vmail.example"],
                   b"Subject: for mariadb users\r\n\r\nhello\r\n")
    for u in ("joe", "ann"):
        d = base / "vmail.example" / u / "new"
        wait_for(lambda: d.is_dir() and list(d.iterdir()), f"{u}'s mail", s)

    # SMTP AUTH.
    assert smtp_auth(s, "joe@vmail.example", "joe-pw")[0] == 235
    assert smtp_auth(s, "ann@vmail.example", "ann-pw")[0] == 235
    assert smtp_auth(s, "joe@vmail.example", "ann-pw")[0] == 535
    assert smtp_auth(s, "nobody@vmail.example", "x")[0] == 535
    assert smtp_auth(s, "off@vmail.example", "off-pw")[0] == 535
    assert smtp_auth(s, "joe' OR '1'='1@vmail.example", "joe-pw")[0] == 535
    # POP3: the mailbox named by the database.
    p = Pop(s.base + 110)
    assert p.login("joe@vmail.example", "joe-pw").startswith(b"+OK")
    assert p.cmd("STAT").startswith(b"+OK 1 ")
    assert p.cmd("RETR 1").startswith(b"+OK")
    assert b"Subject: for mariadb users" in p.multi()
    p.close()
    p = Pop(s.base + 110)
    assert p.login("joe@vmail.example", "wrong").startswith(b"-ERR")
    p.close()
    # IMAP.
    assert imap_login(s, "ann@vmail.example", "ann-pw") == (True, "", 1)
    ok, text, _ = imap_login(s, "ann@vmail.example", "joe-pw")
    assert not ok and "AUTHENTICATIONFAILED" in text, text
    # The admin tool's check goes through the same passdb.
    tool = [BIN / "oxipost-user", "-c", etc, "test", "joe@vmail.example"]
    assert run(*tool, input="joe-pw\n", check=False, as_suite_user=True).returncode == 0
    assert run(*tool, input="bad\n", check=False, as_suite_user=True).returncode == 1

    # The server stopped: temporary failures everywhere, never an accept.
    db.stop()
    code, text = smtp_auth(s, "joe@vmail.example", "joe-pw")
    assert (code, text) == (454, b"4.7.0 Temporary authentication failure"), (code, text)
    p = Pop(s.base + 110)
    r = p.login("joe@vmail.example", "joe-pw")
    assert r.startswith(b"-ERR") and b"Temporary authentication failure" in r, r
    p.close()
    ok, text, _ = imap_login(s, "ann@vmail.example", "ann-pw")
    assert not ok and "UNAVAILABLE" in text, text
    assert run(*tool, input="joe-pw\n", check=False, as_suite_user=True).returncode == 2
    assert "mysql:" in s.log() and "joe-pw" not in s.log()

    # Back: the same auth process reconnects at the next login.
    db.start()
    assert smtp_auth(s, "joe@vmail.example", "joe-pw")[0] == 235
    assert imap_login(s, "ann@vmail.example", "ann-pw") == (True, "", 1)
    p = Pop(s.base + 110)
    assert p.login("joe@vmail.example", "joe-pw").startswith(b"+OK")
    p.close()
