"""mysql: lookup tables (mysql_table(5)) against a real MariaDB: postmap -q for many keys
and query forms, then the tables under the running suite (a virtual mailbox domain whose
users live in MariaDB; the server stopped gives 451 4.3.0 and never an accept)."""

import mailbox
import smtplib

from conftest import BIN, DB_NAME, give, run, suite_ids, wait_for


def fill(db):
    db.sql(
        """
INSERT INTO domains VALUES ('vmail.example', 1), ('off.example', 0);
INSERT INTO users VALUES
  ('joe', 'vmail.example', '{PLAIN}joe-pw', 'vmail.example/joe/', 1),
  ('ann', 'vmail.example', '{PLAIN}ann-pw', 'vmail.example/ann/', 1),
  ('o''neil', 'vmail.example', '{PLAIN}x', 'vmail.example/oneil/', 1),
  ('back\\\\slash', 'vmail.example', '{PLAIN}x', 'vmail.example/backslash/', 1),
  ('gone', 'vmail.example', '{PLAIN}x', 'vmail.example/gone/', 0);
INSERT INTO aliases VALUES
  ('info@vmail.example', 'joe@vmail.example'),
  ('list@vmail.example', 'joe@vmail.example'),
  ('list@vmail.example', 'ann@vmail.example'),
  ('list@vmail.example', NULL),
  ('list@vmail.example', ''),
  ('@catch.example', 'joe@vmail.example'),
  ('quote"d@vmail.example', 'dq'),
  ('new\\\\nline@vmail.example', 'escaped');
""",
        db=DB_NAME,
    )


def q(suite, key, table, check=True):
    r = run(BIN / "postmap", "-c", suite.etc, "-q", key, table, check=False, as_suite_user=True)
    if check:
        assert r.returncode in (0, 1), r.stderr
    return r


def value(suite, key, table):
    r = q(suite, key, table)
    return r.stdout.rstrip("\n") if r.returncode == 0 else None


def test_postmap_queries(suite, db):
    fill(db)
    etc = suite.etc
    mailbox_cf = db.cf(etc, "mailbox.cf",
                       "query = SELECT maildir FROM users\n"
                       "  WHERE local_part='%u' AND domain='%d' AND active=1\n")
    alias_cf = db.cf(etc, "alias.cf", "query = SELECT goto FROM aliases WHERE BINARY address='%s'\n")
    labels_cf = db.cf(etc, "labels.cf", "query = SELECT CONCAT('%1', '/', '%2', '/', '%u')\n")
    fmt_cf = db.cf(etc, "fmt.cf",
                   "query = SELECT goto FROM aliases WHERE address='%s'\n"
                   "result_format = <%u at %d for %U>\n"
                   "domain = vmail.example, other.example\n")
    limit_cf = db.cf(etc, "limit.cf",
                     "query = SELECT goto FROM aliases WHERE address='%s'\nexpansion_limit = 1\n")
    legacy_cf = db.cf(etc, "legacy.cf",
                      "table = domains\nselect_field = domain\nwhere_field = domain\n"
                      "additional_conditions = AND active = 1\n")
    sock_cf = db.cf(etc, "sock.cf", "query = SELECT goto FROM aliases WHERE address='%s'\n",
                    host=f"unix:{db.sock}")
    # A dead host beside the live one: the live one answers.
    two_cf = db.cf(etc, "two.cf", "query = SELECT goto FROM aliases WHERE address='%s'\n",
                   host=f"inet:127.0.0.1:1, inet:127.0.0.1:{db.port}")
    m, a = f"mysql:{mailbox_cf}", f"mysql:{alias_cf}"
    expected = [
        (m, "joe@vmail.example", "vmail.example/joe/"),
        (m, "Joe@VMail.Example", "vmail.example/joe/"),  # folded before the query
        (m, "o'neil@vmail.example", "vmail.example/oneil/"),
        (m, "back\\slash@vmail.example", "vmail.example/backslash/"),
        (m, "gone@vmail.example", None),
        (m, "joe", None),  # %d without a domain: not queried
        (m, "@vmail.example", None),  # %u empty: not queried
        (m, "nobody@vmail.example", None),
        (m, "joe@vmail.example' OR '1'='1", None),
        (a, "INFO@vmail.example", "joe@vmail.example"),  # BINARY match: folding shown
        (a, "list@vmail.example", "joe@vmail.example,ann@vmail.example"),  # NULL and '' skipped
        (a, "@catch.example", "joe@vmail.example"),
        (a, 'quote"d@vmail.example', "dq"),
        (a, "new\\nline@vmail.example", "escaped"),
        (a, "x\\' OR 1=1 -- @vmail.example", None),
        (f"mysql:{labels_cf}", "x@mail.example.com", "com/example/x"),
        (f"mysql:{labels_cf}", "x@localhost", None),  # no %2
        (f"mysql:{fmt_cf}", "list@vmail.example",
         "<joe at vmail.example for list>,<ann at vmail.example for list>"),
        (f"mysql:{fmt_cf}", "@catch.example", None),  # outside `domain`: not queried
        (f"mysql:{legacy_cf}", "vmail.example", "vmail.example"),
        (f"mysql:{legacy_cf}", "off.example", None),
        (f"mysql:{sock_cf}", "info@vmail.example", "joe@vmail.example"),
        (f"mysql:{two_cf}", "info@vmail.example", "joe@vmail.example"),
    ]
    got = [(t, k, value(suite, k, t)) for t, k, _ in expected]
    assert got == expected
    # Many keys in one process (one connection): postmap -q -.
    keys = [f"k{i}@vmail.example" for i in range(200)] + ["info@vmail.example", "list@vmail.example"]
    r = run(BIN / "postmap", "-c", etc, "-q", "-", a, input="\n".join(keys) + "\n", as_suite_user=True)
    assert r.stdout.splitlines() == [
        "info@vmail.example\tjoe@vmail.example",
        "list@vmail.example\tjoe@vmail.example,ann@vmail.example",
    ]
    # More results than expansion_limit: an error, never a partial answer.
    r = q(suite, "list@vmail.example", f"mysql:{limit_cf}", check=False)
    assert r.returncode != 0 and r.stdout == "" and "expansion_limit" in r.stderr, r.stderr
    assert value(suite, "info@vmail.example", f"mysql:{limit_cf}") == "joe@vmail.example"


def test_postmap_errors(suite, db):
    etc = suite.etc
    bad_pw = etc / "badpw.cf"
    bad_pw.write_text(f"hosts = inet:127.0.0.1:{db.port}\nuser = oxi\npassword = wrong-pw-123\n"
                      f"dbname = {DB_NAME}\nquery = SELECT goto FROM aliases WHERE address='%s'\n")
    give(bad_pw)
    r = q(suite, "info@vmail.example", f"mysql:{bad_pw}", check=False)
    assert r.returncode != 0 and r.stdout == ""
    assert "Access denied" in r.stderr and "wrong-pw-123" not in r.stderr, r.stderr
    bad_sql = db.cf(etc, "badsql.cf", "query = SELECT goto FROM no_such_table WHERE address='%s'\n")
    r = q(suite, "info@vmail.example", f"mysql:{bad_sql}", check=False)
    assert r.returncode != 0 and "no_such_table" in r.stderr, r.stderr
    bad_tmpl = db.cf(etc, "badtmpl.cf", "query = SELECT '%x'\n")
    r = q(suite, "a@b", f"mysql:{bad_tmpl}", check=False)
    assert r.returncode != 0 and "%x" in r.stderr, r.stderr
    down = db.cf(etc, "down.cf", "query = SELECT 1\n", host="inet:127.0.0.1:1")
    r = q(suite, "a@b", f"mysql:{down}", check=False)
    assert r.returncode != 0 and "cannot connect" in r.stderr, r.stderr
    assert "mysql" in run(BIN / "postconf", "-m").stdout.split()


def smtp(s):
    c = smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=60)
    c.ehlo("client.example")
    return c


def test_virtual_domain_users_in_mariadb(suite, db):
    fill(db)
    etc = suite.etc
    base = suite.root / "vmail"
    base.mkdir()
    give(base)
    (base / "vmail.example").mkdir()
    give(base / "vmail.example")
    domains = db.cf(etc, "vdomains.cf", "query = SELECT domain FROM domains WHERE domain='%s' AND active=1\n")
    boxes = db.cf(etc, "vmailbox.cf",
                  "query = SELECT maildir FROM users WHERE local_part='%u' AND domain='%d' AND active=1\n")
    aliases = db.cf(etc, "valias.cf", "query = SELECT goto FROM aliases WHERE address='%s'\n")
    uid, gid = suite_ids()
    suite.postconf(
        f"virtual_mailbox_domains = mysql:{domains}",
        f"virtual_mailbox_maps = mysql:{boxes}",
        f"virtual_alias_maps = mysql:{aliases}",
        f"virtual_mailbox_base = {base}",
        f"virtual_uid_maps = static:{uid}",
        f"virtual_gid_maps = static:{gid}",
        "virtual_minimum_uid = 100",
        "recipient_delimiter = +",
    )
    suite.start()
    with smtp(suite) as c:
        c.mail("sender@example.com")
        code, text = c.rcpt("bob@vmail.example")
        assert code == 550 and b"User unknown in virtual mailbox table" in text, text
        code, text = c.rcpt("gone@vmail.example")
        assert code == 550, text
        c.rset()
        c.sendmail("sender@example.com",
                   ["joe@vmail.example", "ann+lists@vmail.example", "info@vmail.example"],
                   b"Subject: from mariadb\r\nFrom: sender@example.com\r\n\r\nbody\r\n")
    joe = base / "vmail.example" / "joe"
    ann = base / "vmail.example" / "ann"
    wait_for(lambda: (joe / "new").is_dir() and len(list((joe / "new").iterdir())) >= 2, "joe's mail", suite)
    wait_for(lambda: (ann / "new").is_dir() and list((ann / "new").iterdir()), "ann's mail", suite)
    tos = sorted(m["Delivered-To"] for m in mailbox.Maildir(str(joe), create=False))
    assert tos == ["joe@vmail.example", "joe@vmail.example"]
    (m,) = list(mailbox.Maildir(str(ann), create=False))
    assert m["Delivered-To"] == "ann+lists@vmail.example" and m["Subject"] == "from mariadb"

    # The server stopped: 451 4.3.0 at RCPT, never an accept (or a 550).
    db.stop()
    with smtp(suite) as c:
        c.mail("sender@example.com")
        for rcpt in ("joe@vmail.example", "bob@vmail.example"):
            code, text = c.rcpt(rcpt)
            assert code == 451 and text.startswith(b"4.3.0"), (rcpt, code, text)
    # Back: the same daemons reconnect at the next lookup.
    db.start()
    with smtp(suite) as c:
        c.mail("sender@example.com")
        code, text = c.rcpt("bob@vmail.example")
        assert code == 550, text
        c.rset()
        c.sendmail("sender@example.com", ["joe@vmail.example"],
                   b"Subject: after restart\r\n\r\nbody\r\n")
    wait_for(lambda: len(list((joe / "new").iterdir())) >= 3, "mail after the restart", suite)
    subjects = sorted(m["Subject"] for m in mailbox.Maildir(str(joe), create=False))
    assert subjects == ["after restart", "from mariadb", "from mariadb"]



def test_queue_defers_while_server_down(suite, db):
    """Mail submitted locally while MariaDB is down is deferred by the queue manager
    (the virtual domain cannot be asked), never bounced, and delivered after the restart."""
    import subprocess
    fill(db)
    etc = suite.etc
    base = suite.root / "vmail"
    base.mkdir()
    give(base)
    (base / "vmail.example").mkdir()
    give(base / "vmail.example")
    domains = db.cf(etc, "vdomains.cf", "query = SELECT domain FROM domains WHERE domain='%s' AND active=1\n")
    boxes = db.cf(etc, "vmailbox.cf",
                  "query = SELECT maildir FROM users WHERE local_part='%u' AND domain='%d' AND active=1\n")
    uid, gid = suite_ids()
    suite.postconf(
        f"virtual_mailbox_domains = mysql:{domains}",
        f"virtual_mailbox_maps = mysql:{boxes}",
        f"virtual_mailbox_base = {base}",
        f"virtual_uid_maps = static:{uid}",
        f"virtual_gid_maps = static:{gid}",
        "virtual_minimum_uid = 100",
    )
    suite.start()
    db.stop()
    r = subprocess.run([str(BIN / "sendmail"), "-C", str(etc), "-f", "sender@example.com", "joe@vmail.example"],
                       input=b"Subject: while down\n\nqueued\n", capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: "to=<joe@vmail.example>" in suite.log() and "status=deferred" in suite.log(),
             "deferral", suite)
    assert "status=bounced" not in suite.log()
    joe = base / "vmail.example" / "joe"
    assert not (joe / "new").exists() or not list((joe / "new").iterdir())
    db.start()
    subprocess.run([str(BIN / "postqueue"), "-c", str(etc), "-f"], capture_output=True, timeout=30)
    wait_for(lambda: (joe / "new").is_dir() and list((joe / "new").iterdir()), "delivery after restart", suite,
             timeout=90)
    (m,) = list(mailbox.Maildir(str(joe), create=False))
    assert m["Subject"] == "while down"
    assert "status=bounced" not in suite.log()
