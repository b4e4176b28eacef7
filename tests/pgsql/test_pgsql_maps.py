"""Issue 6: `pgsql:` lookup tables (pgsql_table(5)) against a real PostgreSQL, through our
`postmap -q`: many keys (case, quotes, backslashes, extensions), `%s %u %d %1 %%` queries,
`result_format`, the `domain` restriction, multi-row results and `expansion_limit`, the
legacy `table`/`select_field`/`where_field` form, several `hosts`, a Unix-socket host, and
a server that is down (a temporary failure, never "not found")."""

import subprocess

from conftest import BIN, DB_NAME


DATA = r"""
INSERT INTO domains VALUES ('example.com', 'alias'), ('vmail.example', 'mailbox'),
                           ('mail.sub.example.org', 'mailbox');
INSERT INTO aliases VALUES
  ('joe@example.com', 'joe@store.example'),
  ('list@example.com', 'a@x.example'), ('list@example.com', 'b@x.example'),
  ('list@example.com', 'c@x.example'),
  ('o''neil@example.com', 'quoted@x.example'),
  ('back\slash@example.com', 'bs@x.example'),
  ('joe+ext@example.com', 'ext@x.example'),
  ('empty@example.com', ''),
  ('joe@other.example', 'other@x.example'),
  ('postmaster', 'root@x.example');
"""


def postmap(suite, *args, stdin=None):
    return subprocess.run([str(BIN / "postmap"), "-c", str(suite.etc), *args], input=stdin,
                          capture_output=True, text=True, timeout=60)


def q(suite, key, table):
    r = postmap(suite, "-q", key, table)
    if r.returncode == 0:
        return r.stdout.rstrip("\n")
    assert r.returncode == 1 and r.stderr == "", (key, r.returncode, r.stderr)
    return None


def lookup_error(suite, key, table):
    """A lookup that failed (postmap: exit 1 with a message, unlike "not found")."""
    r = postmap(suite, "-q", key, table)
    assert r.returncode == 1 and r.stderr.strip(), r
    return r.stderr


def test_postmap_queries(suite, pg):
    pg.sql(DATA)
    etc = suite.etc
    aliases = pg.cf(etc / "aliases.cf", "SELECT goto FROM aliases WHERE address='%s'")
    cases = {
        "joe@example.com": "joe@store.example",
        "JOE@Example.COM": "joe@store.example",  # keys are folded to lower case
        "list@example.com": "a@x.example,b@x.example,c@x.example",
        "o'neil@example.com": "quoted@x.example",
        "back\\slash@example.com": "bs@x.example",  # standard_conforming_strings: literal
        "joe+ext@example.com": "ext@x.example",
        "joe+other@example.com": None,
        "empty@example.com": None,  # an empty value is no result
        "nobody@example.com": None,
        "x' OR '1'='1": None,  # quoting holds
        "postmaster": "root@x.example",
        "joe@other.example": "other@x.example",
    }
    for k, want in cases.items():
        assert q(suite, k, aliases) == want, k
    # The same keys in one process (postmap -q -), one connection for all of them.
    r = postmap(suite, "-q", "-", aliases, stdin="".join(k + "\n" for k in cases))
    assert r.returncode == 0, r.stderr
    got = dict(line.split("\t", 1) for line in r.stdout.splitlines())
    assert got == {k: v for k, v in cases.items() if v is not None}

    # %u/%d parts, the domain restriction and result_format.
    parts = pg.cf(etc / "parts.cf", "SELECT goto FROM aliases WHERE address='%u' || '@' || '%d'",
                  "domain = example.com\nresult_format = <%s> for %U at %D\n")
    assert q(suite, "joe@example.com", parts) == "<joe@store.example> for joe at example.com"
    assert q(suite, "joe@other.example", parts) is None  # outside `domain`
    assert q(suite, "postmaster", parts) is None  # no domain part: never queried

    # %d, %1..%3 and %% (LIKE patterns), and a missing label means no query.
    dom = pg.cf(etc / "dom.cf", "SELECT kind FROM domains WHERE domain='%d'")
    assert q(suite, "anyone@vmail.example", dom) == "mailbox"
    assert q(suite, "vmail.example", dom) is None
    labels = pg.cf(etc / "labels.cf",
                   "SELECT domain FROM domains WHERE domain LIKE '%%.%2.%1' AND '%3' = 'sub'")
    assert q(suite, "u@mail.sub.example.org", labels) == "mail.sub.example.org"
    assert q(suite, "u@example.org", labels) is None

    # expansion_limit: more rows than allowed is a lookup error, not a result.
    limited = pg.cf(etc / "limited.cf", "SELECT goto FROM aliases WHERE address='%s'",
                    "expansion_limit = 2\n")
    assert q(suite, "joe@example.com", limited) == "joe@store.example"
    assert "expansion_limit" in lookup_error(suite, "list@example.com", limited)

    # Legacy fields; two hosts, the first one dead (tried in random order, one answers);
    # a Unix-socket host (the directory holding .s.PGSQL.<port>) as the superuser.
    legacy = etc / "legacy.cf"
    legacy.write_text(
        f"hosts = 127.0.0.1:1, 127.0.0.1:{pg.port}\nuser = oxi\npassword = pg-Secret'1\n"
        f"dbname = {DB_NAME}\ntable = aliases\nselect_field = goto\nwhere_field = address\n"
        "additional_conditions = AND goto <> ''\n")
    for _ in range(4):
        assert q(suite, "joe@example.com", f"pgsql:{legacy}") == "joe@store.example"
    assert (pg.sock / f".s.PGSQL.{pg.port}").exists()
    sock_cf = etc / "sock.cf"
    # The socket file itself; trust authentication on the socket.
    sock_cf.write_text(
        f"hosts = unix:{pg.sock}/.s.PGSQL.{pg.port}\nuser = postgres\ndbname = {DB_NAME}\n"
        "query = SELECT goto FROM aliases WHERE address='%s'\n")
    assert q(suite, "joe@example.com", f"pgsql:{sock_cf}") == "joe@store.example"


def test_md5_and_cleartext_logins(suite, pg):
    pg.sql(DATA)
    md5 = pg.cf(suite.etc / "md5.cf", "SELECT goto FROM aliases WHERE address='%s'",
                user="oximd5", password="md5-pw")
    assert q(suite, "joe@example.com", md5) == "joe@store.example"
    clear = pg.cf(suite.etc / "clear.cf", "SELECT goto FROM aliases WHERE address='%s'",
                  user="oxiclear", password="clear-pw")
    assert q(suite, "joe@example.com", clear) == "joe@store.example"
    # This role has standard_conforming_strings off: the backslash is escaped, not lost.
    assert q(suite, "back\\slash@example.com", clear) == "bs@x.example"
    assert q(suite, "o'neil@example.com", clear) == "quoted@x.example"
    assert q(suite, "x\\' OR 'a'='a", clear) is None
    bad = pg.cf(suite.etc / "badmd5.cf", "SELECT goto FROM aliases WHERE address='%s'",
                user="oximd5", password="wrong")
    assert "28P01" in lookup_error(suite, "joe@example.com", bad)


def test_server_errors_and_down(suite, pg):
    pg.sql(DATA)
    etc = suite.etc
    bad_query = pg.cf(etc / "bad.cf", "SELECT goto FROM no_such_table WHERE address='%s'")
    e = lookup_error(suite, "joe@example.com", bad_query)
    assert "42P01" in e and "no_such_table" in e
    wrong_pw = pg.cf(etc / "wrongpw.cf", "SELECT goto FROM aliases WHERE address='%s'",
                     password="not-the-password")
    e = lookup_error(suite, "joe@example.com", wrong_pw)
    assert "28P01" in e and "not-the-password" not in e
    good = pg.cf(etc / "good.cf", "SELECT goto FROM aliases WHERE address='%s'")
    assert q(suite, "joe@example.com", good) == "joe@store.example"
    pg.stop()
    e = lookup_error(suite, "joe@example.com", good)
    assert "cannot connect" in e and "pg-Secret" not in e
    print(e)
    pg.start()
    assert q(suite, "joe@example.com", good) == "joe@store.example"
