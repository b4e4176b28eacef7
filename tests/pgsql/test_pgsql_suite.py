"""Issues 6 and 8 end to end with a real PostgreSQL and the real suite under master:
virtual mailbox and alias domains whose users and aliases live in PostgreSQL (accepted and
delivered; unknown users rejected 550), the database stopped (451 4.3.0 at RCPT, nothing
accepted) and started again (recovery without a reload); SMTP AUTH, POP3 and IMAP logins
of PostgreSQL users through `auth_passdb = pgsql:...` (wrong password refused; database
down a temporary failure: 454 4.7.0, -ERR [SYS/TEMP], NO [UNAVAILABLE]); and two suites
(nodes) sharing the one database."""

import base64
import imaplib
import mailbox
import poplib
import smtplib
import ssl
import subprocess

from conftest import AS_USER, BIN, give, suite_ids, wait_for

ALICE_PW = "alice-Pw'1"


def b64(s):
    return base64.b64encode(s.encode()).decode()


def ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def fill(pg):
    h = subprocess.run([str(BIN / "oxipost-user"), "hash", "-s", "SHA512-CRYPT"], input=ALICE_PW + "\n",
                       capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    assert h.startswith("{SHA512-CRYPT}$6$")
    pg.sql(f"""
INSERT INTO domains VALUES ('vmail.example', 'mailbox'), ('valias.example', 'alias');
INSERT INTO users (email, password, maildir) VALUES
  ('joe@vmail.example', '{{PLAIN}}joe-pw', 'vmail.example/joe/'),
  ('alice@vmail.example', '{h}', 'vmail.example/alice/');
INSERT INTO users (email, password, maildir, active) VALUES
  ('gone@vmail.example', '{{PLAIN}}gone-pw', 'vmail.example/gone/', false);
INSERT INTO aliases VALUES ('sales@valias.example', 'joe@vmail.example'),
  ('sales@valias.example', 'alice@vmail.example'), ('info@valias.example', 'joe@vmail.example');
""")


def configure(s, pg):
    """Virtual domains and the passdb from PostgreSQL; returns the mailbox base."""
    uid, gid = suite_ids()
    base = s.root / "vmail"
    (base / "vmail.example").mkdir(parents=True)
    give(base)
    give(base / "vmail.example")
    etc = s.etc
    vdom = pg.cf(etc / "vdomains.cf", "SELECT domain FROM domains WHERE domain='%s' AND kind='mailbox'")
    adom = pg.cf(etc / "adomains.cf", "SELECT domain FROM domains WHERE domain='%s' AND kind='alias'")
    vbox = pg.cf(etc / "vmailbox.cf", "SELECT maildir FROM users WHERE email='%s' AND active")
    valias = pg.cf(etc / "valias.cf", "SELECT goto FROM aliases WHERE address='%s'")
    passdb = pg.cf(etc / "passdb.cf", "unused",
                   f"password_query = SELECT password, '{base}/' || maildir AS home,\n"
                   f"    'maildir:{base}/' || maildir AS mail FROM users WHERE email = '%s' AND active\n")
    s.postconf(
        f"virtual_mailbox_domains = {vdom}",
        f"virtual_alias_domains = {adom}",
        f"virtual_mailbox_maps = {vbox}",
        f"virtual_alias_maps = {valias}",
        f"virtual_mailbox_base = {base}",
        f"virtual_uid_maps = static:{uid}",
        f"virtual_gid_maps = static:{gid}",
        "virtual_minimum_uid = 100",
        "recipient_delimiter = +",
        f"auth_passdb = {passdb}",
    )
    return base


def maildir_msgs(base, user):
    d = base / "vmail.example" / user / "new"
    return sorted(d.iterdir()) if d.is_dir() else []


def queued(s):
    return [p for q in ("incoming", "active", "deferred", "hold") for p in s.queue_files(q)]


def test_virtual_domains_from_postgres_and_server_down(mail_suites, pg):
    fill(pg)
    s = mail_suites()
    base = configure(s, pg)
    s.start()
    with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=60) as c:
        c.mail("sender@example.com")
        for rcpt in ("bob@vmail.example", "gone@vmail.example"):
            code, text = c.rcpt(rcpt)
            assert code == 550, (rcpt, text)
            assert b"User unknown in virtual mailbox table" in text
        code, text = c.rcpt("nobody@valias.example")
        assert code == 550 and b"User unknown in virtual alias table" in text, text
        c.rset()
        refused = c.sendmail("sender@example.com",
                             ["Joe+Tag@VMail.example", "sales@valias.example", "info@valias.example"],
                             b"Subject: from postgres\r\nFrom: sender@example.com\r\n\r\nhello\r\n")
        assert refused == {}
    # joe: direct (with an extension, in capitals), through sales and through info; one
    # copy per unique recipient after alias expansion. alice: through sales.
    wait_for(lambda: len(maildir_msgs(base, "joe")) >= 2 and maildir_msgs(base, "alice"), "delivery", s)
    msgs = list(mailbox.Maildir(str(base / "vmail.example" / "joe"), create=False))
    assert all(m["Subject"] == "from postgres" for m in msgs)
    assert {m["Delivered-To"].lower() for m in msgs} >= {"joe+tag@vmail.example"}
    (a,) = list(mailbox.Maildir(str(base / "vmail.example" / "alice"), create=False))
    assert a["Delivered-To"] == "alice@vmail.example"

    # The server stopped: every table answer is a temporary failure, never an accept or a 5xx.
    pg.stop()
    before = len(queued(s))
    with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=60) as c:
        c.mail("sender@example.com")
        for rcpt in ("joe@vmail.example", "bob@vmail.example", "sales@valias.example"):
            code, text = c.rcpt(rcpt)
            assert code == 451, (rcpt, code, text)
            assert text.startswith(b"4.3.0"), text
        code, _ = c.docmd("DATA")
        assert code in (503, 554)  # no valid recipients: nothing to accept
    assert len(queued(s)) == before
    assert "warning:" in s.log() and "cannot connect to any PostgreSQL server" in s.log()
    assert "pg-Secret" not in s.log()

    # Started again: the same daemons recover at the next lookup, without a reload.
    pg.start()
    n = len(maildir_msgs(base, "alice"))
    with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=60) as c:
        c.mail("sender@example.com")
        assert c.rcpt("bob@vmail.example")[0] == 550
        assert c.rcpt("alice@vmail.example")[0] == 250
        code, _ = c.data(b"Subject: after restart\r\n\r\nagain\r\n")
        assert code == 250
    wait_for(lambda: len(maildir_msgs(base, "alice")) > n, "delivery after restart", s)


def smtp_auth(s, user, pw):
    with smtplib.SMTP("127.0.0.1", s.submission_port, timeout=60) as c:
        c.starttls(context=ctx())
        c.ehlo("client.example")
        return c.docmd("AUTH", "PLAIN " + b64(f"\0{user}\0{pw}"))


def pop3_login(s, user, pw):
    c = poplib.POP3("127.0.0.1", s.pop3_port, timeout=60)
    try:
        c.user(user)
        c.pass_(pw)
        return c.stat()
    except poplib.error_proto as e:
        return e.args[0]
    finally:
        try:
            c.quit()
        except (poplib.error_proto, OSError):
            pass


def imap_login(s, user, pw):
    c = imaplib.IMAP4("127.0.0.1", s.imap_port, timeout=60)
    try:
        c.login(user, pw)
        typ, data = c.select("INBOX")
        return typ, int(data[0])
    except imaplib.IMAP4.error as e:
        return ("NO", str(e))
    finally:
        try:
            c.logout()
        except (imaplib.IMAP4.error, OSError):
            pass


def test_logins_of_postgres_users(mail_suites, pg):
    fill(pg)
    s = mail_suites()
    base = configure(s, pg)
    s.start()
    assert smtp_auth(s, "alice@vmail.example", ALICE_PW)[0] == 235
    assert smtp_auth(s, "joe@vmail.example", "joe-pw")[0] == 235
    assert smtp_auth(s, "alice@vmail.example", "wrong")[0] == 535
    assert smtp_auth(s, "gone@vmail.example", "gone-pw")[0] == 535  # inactive: no row
    assert smtp_auth(s, "nobody@vmail.example", "x")[0] == 535
    assert smtp_auth(s, "x' OR 'a'='a", "x")[0] == 535
    # The admin tool asks the same passdb (doveadm auth test's counterpart).
    out = subprocess.run(["runuser", "-u", "oxipost", "--"] * bool(AS_USER)
                         + [str(BIN / "oxipost-user"), "-c", str(s.etc), "test", "alice@vmail.example"],
                         input=ALICE_PW + "\n", capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "passdb: alice@vmail.example auth succeeded" in out.stdout
    assert f"mail=maildir:{base}/vmail.example/alice/" in out.stdout

    with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=60) as c:
        c.sendmail("sender@example.com", ["alice@vmail.example"],
                   b"Subject: for alice\r\n\r\nread me over pop3 and imap\r\n")
    wait_for(lambda: maildir_msgs(base, "alice"), "alice's mail", s)

    assert pop3_login(s, "alice@vmail.example", ALICE_PW)[0] == 1
    assert pop3_login(s, "alice@vmail.example", "wrong").startswith(b"-ERR")
    assert imap_login(s, "alice@vmail.example", ALICE_PW) == ("OK", 1)
    assert imap_login(s, "alice@vmail.example", "wrong")[0] == "NO"

    # Database down: temporary failures everywhere, never an accept.
    pg.stop()
    code, text = smtp_auth(s, "alice@vmail.example", ALICE_PW)
    assert (code, text) == (454, b"4.7.0 Temporary authentication failure"), text
    r = pop3_login(s, "alice@vmail.example", ALICE_PW)
    assert isinstance(r, bytes) and r.startswith(b"-ERR [SYS/TEMP]"), r
    typ, why = imap_login(s, "alice@vmail.example", ALICE_PW)
    assert typ == "NO" and "UNAVAILABLE" in why, why
    pg.start()
    assert smtp_auth(s, "alice@vmail.example", ALICE_PW)[0] == 235
    assert imap_login(s, "alice@vmail.example", ALICE_PW) == ("OK", 1)
    assert "alice-Pw" not in s.log() and "pg-Secret" not in s.log()


def test_two_nodes_share_one_database(mail_suites, pg):
    fill(pg)
    nodes = [mail_suites(), mail_suites()]
    bases = [configure(n, pg) for n in nodes]
    for n in nodes:
        n.start()
    # A user added while both nodes run is known to both at once (no postmap, no reload).
    pg.sql("INSERT INTO users (email, password, maildir) VALUES "
           "('new@vmail.example', '{PLAIN}new-pw', 'vmail.example/new/')")
    for i, n in enumerate(nodes):
        with smtplib.SMTP("127.0.0.1", n.smtp_port, timeout=60) as c:
            c.sendmail("sender@example.com", ["new@vmail.example"],
                       f"Subject: via node {i}\r\n\r\nhi\r\n".encode())
        assert smtp_auth(n, "new@vmail.example", "new-pw")[0] == 235
    for i, (n, b) in enumerate(zip(nodes, bases)):
        wait_for(lambda b=b: maildir_msgs(b, "new"), f"delivery on node {i}", n)
        (m,) = list(mailbox.Maildir(str(b / "vmail.example" / "new"), create=False))
        assert m["Subject"] == f"via node {i}"
    # Removed from the database: refused by both.
    pg.sql("DELETE FROM users WHERE email = 'new@vmail.example'")
    for n in nodes:
        with smtplib.SMTP("127.0.0.1", n.smtp_port, timeout=60) as c:
            c.mail("sender@example.com")
            assert c.rcpt("new@vmail.example")[0] == 550
        assert smtp_auth(n, "new@vmail.example", "new-pw")[0] == 535
