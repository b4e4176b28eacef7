"""Differential test: oxipost's `postmap -q` against Debian's Postfix `postmap -q` (with
postfix-mysql) on the same mysql_table(5) files and the same real MariaDB. Answers
(stdout) and exit codes must be identical for every key, one at a time and with `-q -`.
Error texts differ (libmysqlclient's words against ours) and are not compared; for
failures only "exit code non-zero and nothing printed" is. With `-q -`, a lookup that fails
ends both tools, but Postfix's buffered output of the keys answered before it is lost
(msg_fatal does not flush stdout) while oxipost's is printed: there only the exit codes are
compared. Skipped when Postfix's mysql map type is not installed."""

import os
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, DB_NAME

POSTFIX = "/usr/sbin/postmap"


def postfix_has_mysql():
    try:
        out = subprocess.run(["/usr/sbin/postconf", "-m"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "mysql" in out.split()


pytestmark = pytest.mark.skipif(not postfix_has_mysql(), reason="postfix-mysql missing")


def run(argv, stdin=None, env=None):
    p = subprocess.run([str(a) for a in argv], input=stdin, capture_output=True, text=True,
                       timeout=60, env=env)
    return p.returncode, p.stdout


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ)
    cfg = tmp_path / "oxicfg"
    cfg.mkdir()
    (cfg / "main.cf").write_text("")
    e["MAIL_CONFIG"] = str(cfg)
    return e


def fill(db):
    db.sql(
        r"""
INSERT INTO domains VALUES ('vmail.example', 1), ('Other.Example', 1), ('off.example', 0);
INSERT INTO users VALUES
  ('joe', 'vmail.example', 'x', 'vmail.example/joe/', 1),
  ('o''neil', 'vmail.example', 'x', 'vmail.example/oneil/', 1),
  ('back\\slash', 'vmail.example', 'x', 'vmail.example/bs/', 1),
  ('empty', 'vmail.example', 'x', '', 1),
  ('x', 'mail.example.com', 'x', 'labels', 1);
INSERT INTO aliases VALUES
  ('info@vmail.example', 'joe@vmail.example'),
  ('list@vmail.example', 'joe@vmail.example'),
  ('list@vmail.example', 'ann@vmail.example'),
  ('list@vmail.example', NULL),
  ('list@vmail.example', ''),
  ('list@vmail.example', 'plain'),
  ('@vmail.example', 'catchall@vmail.example'),
  ('joe', 'local-joe'),
  ('Mixed@vmail.example', 'mixed-case-key'),
  ('quote"d@vmail.example', 'dq'),
  ('sp ace@vmail.example', 'space'),
  ('pct%s@vmail.example', 'percent');
""",
        db=DB_NAME,
    )


KEYS = [
    "joe@vmail.example", "JOE@VMAIL.EXAMPLE", "Joe@vmail.example", "joe+ext@vmail.example",
    "joe", "JOE", "@vmail.example", "@VMail.Example", "vmail.example", "info@vmail.example",
    "list@vmail.example", "LIST@vmail.example", "o'neil@vmail.example", "back\\slash@vmail.example",
    "empty@vmail.example", "x@mail.example.com", "x@example.com", "x@com", "x@a.b.c.d.e.f.g.h.i.j",
    "mixed@vmail.example", "Mixed@vmail.example", 'quote"d@vmail.example', "sp ace@vmail.example",
    "pct%s@vmail.example", "nobody@vmail.example", "nobody@other.example", "joe@other.example",
    "joe@Other.Example", "joe@", "a@b@vmail.example", "joe@vmail.example' OR '1'='1",
    "x\\' OR 1=1 -- @vmail.example", "user@off.example", "off.example", "Other.Example",
    "ünïcode@vmail.example", "", " ", "%", "%s", "a%%b@vmail.example",
]

TABLES = {
    "alias": "query = SELECT goto FROM aliases WHERE address='%s'\n",
    "alias_binary": "query = SELECT goto FROM aliases WHERE BINARY address='%s'\n",
    "mailbox": "query = SELECT maildir FROM users WHERE local_part='%u' AND domain='%d'\n",
    "local_only": "query = SELECT goto FROM aliases WHERE address='%u'\n",
    "labels": "query = SELECT CONCAT('%1', '/', '%2', '/', '%3') FROM DUAL WHERE '%u' <> ''\n",
    "format": "query = SELECT goto FROM aliases WHERE address='%s'\n"
              "result_format = %u / %d / %s / %S / %U / %D / %1 / %%\n",
    "domain": "query = SELECT goto FROM aliases WHERE address='%s'\n"
              "domain = vmail.example other.example\n",
    "limit": "query = SELECT goto FROM aliases WHERE address='%s'\nexpansion_limit = 2\n",
    "legacy": "table = domains\nselect_field = domain\nwhere_field = domain\n"
              "additional_conditions = AND active = 1\n",
    "literal": "query = SELECT 'v%%x' FROM DUAL WHERE '%s' <> 'nope'\n",
}


def test_same_answers_as_postfix(db, env, tmp_path):
    fill(db)
    diffs = []
    for name, body in TABLES.items():
        cf = db.cf(tmp_path, f"{name}.cf", body)
        spec = f"mysql:{cf}"
        for k in KEYS:
            theirs = run([POSTFIX, "-q", k, spec])
            ours = run([BIN / "postmap", "-q", k, spec], env=env)
            if theirs != ours:
                diffs.append((name, k, theirs, ours))
        # Many keys in one process (`-q -`): the same lines in the same order.
        stdin = "\n".join(k for k in KEYS if k.strip()) + "\n"
        theirs = run([POSTFIX, "-q", "-", spec], stdin=stdin)
        ours = run([BIN / "postmap", "-q", "-", spec], stdin=stdin, env=env)
        if theirs != ours and not (theirs[0] != 0 and ours[0] == theirs[0]):
            diffs.append((name, "-q -", theirs, ours))
    assert not diffs, "\n".join(map(repr, diffs))


def test_same_failures_as_postfix(db, env, tmp_path):
    """A server that is down, a wrong password, a bad query: both fail, print nothing."""
    fill(db)
    cases = {
        "down": f"hosts = inet:127.0.0.1:1\nuser = x\npassword = y\ndbname = {DB_NAME}\n"
                "query = SELECT 1\n",
        "badpw": f"hosts = inet:127.0.0.1:{db.port}\nuser = oxi\npassword = wrong\n"
                 f"dbname = {DB_NAME}\nquery = SELECT 1\n",
    }
    for name, text in cases.items():
        cf = tmp_path / f"{name}.cf"
        cf.write_text(text)
        theirs = run([POSTFIX, "-q", "a@b", f"mysql:{cf}"])
        ours = run([BIN / "postmap", "-q", "a@b", f"mysql:{cf}"], env=env)
        assert theirs[1] == ours[1] == "" and theirs[0] != 0 and ours[0] != 0, (name, theirs, ours)
    cf = db.cf(tmp_path, "badsql.cf", "query = SELECT goto FROM nowhere WHERE address='%s'\n")
    theirs = run([POSTFIX, "-q", "a@b", f"mysql:{cf}"])
    ours = run([BIN / "postmap", "-q", "a@b", f"mysql:{cf}"], env=env)
    assert theirs[1] == ours[1] == "" and theirs[0] != 0 and ours[0] != 0, (theirs, ours)
