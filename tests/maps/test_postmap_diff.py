"""Differential test: oxipost's postmap/postalias against Debian's Postfix postmap.

The same table sources (hash, texthash, inline, regexp, pcre, cidr, aliases) are built
and queried with both tools, single keys with ``-q key`` and hundreds of keys with
``-q -``; stdout and exit codes must be identical. Keys cover addresses with extensions,
case variants, IPv4/IPv6 and junk.

Known, accepted differences (not compared):
- ``-s`` lists entries in hash order in Postfix and insertion order in oxipost: the
  dumps are compared sorted.
- postalias adds ``YP_LAST_MODIFIED``/``YP_MASTER_NAME`` entries in Postfix; oxipost adds
  only ``@``: those keys are left out of the comparison.
- Warnings for broken regular expressions carry glibc's/PCRE's text in Postfix and the
  Rust regex crate's in oxipost: only whether a rule is skipped is compared (through the
  answers), plus the exact warnings of cidr tables and of postmap sources.

Environment: OXIPOST_BIN = directory holding our ``postmap`` (default target/debug).
Skipped when /usr/sbin/postmap is missing.
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

POSTFIX = "/usr/sbin/postmap"
POSTFIX_ALIAS = "/usr/sbin/postalias"
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("OXIPOST_BIN", ROOT / "target" / "debug"))
OURS = str(BIN / "postmap")
OURS_ALIAS = str(BIN / "postalias")
TIMEOUT = 10

pytestmark = pytest.mark.skipif(not os.path.exists(POSTFIX), reason="Postfix postmap missing")


def run(cmd: list[str], stdin: str | None = None, cwd: Path | None = None, env=None):
    p = subprocess.run(
        cmd,
        input=stdin.encode() if stdin is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        timeout=TIMEOUT,
        cwd=cwd,
        env=env,
    )
    return p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")


@pytest.fixture
def env(tmp_path):
    """Environment for our tools: an empty config directory (built-in defaults)."""
    e = dict(os.environ)
    cfg = tmp_path / "oxicfg"
    cfg.mkdir()
    (cfg / "main.cf").write_text("")
    e["MAIL_CONFIG"] = str(cfg)
    return e


def both(args: list[str], env, stdin: str | None = None, cwd=None, alias=False):
    theirs = run([POSTFIX_ALIAS if alias else POSTFIX] + args, stdin, cwd)
    ours = run([OURS_ALIAS if alias else OURS] + args, stdin, cwd, env)
    return theirs, ours


def assert_same(theirs, ours, what: str):
    assert ours[0] == theirs[0], f"{what}: exit {ours[0]} (ours) != {theirs[0]} (Postfix)\n{ours[2]}\n{theirs[2]}"
    assert ours[1] == theirs[1], f"{what}: stdout differs\n--- Postfix\n{theirs[1][:2000]}\n--- ours\n{ours[1][:2000]}"


# ---------------------------------------------------------------- key material

RNG = random.Random(6)
USERS = ["root", "postmaster", "Joe", "joe", "JOE", "alice", "bob", "info", "a", "x", "mailer-daemon", "abuse"]
DOMAINS = ["example.com", "EXAMPLE.COM", "Example.Com", "sub.example.com", "example.org", "localhost", "test"]
EXTS = ["", "+ext", "+Foo", "+a+b", "-list", "+"]


def address_keys() -> list[str]:
    keys = []
    for u in USERS:
        for d in DOMAINS:
            keys.append(f"{u}{RNG.choice(EXTS)}@{d}")
        keys.append(u)
        keys.append(u + "+tag")
    for d in DOMAINS:
        keys.append("@" + d)
        keys.append(d)
    keys += ["", "@", "a@", "@b", "user@@example.com", "with space@example.com", "ünïcode@example.com", "$1", "\\", "."]
    for _ in range(80):
        n = RNG.randint(1, 12)
        keys.append("".join(RNG.choice("abcdefxyzABC019.-_+@") for _ in range(n)))
    return keys


def ip_keys() -> list[str]:
    keys = ["1.2.3.4", "1.2.9.9", "10.0.0.1", "10.255.255.255", "11.0.0.0", "192.168.1.7", "192.168.2.1",
            "192.169.0.1", "127.0.0.1", "0.0.0.0", "255.255.255.255", "::1", "::", "2001:db8::5", "2001:DB8::5",
            "2001:db9::1", "fe80::1", "FE80::abcd", "::ffff:1.2.3.4", "::ffff:10.0.0.1", "1.2.3", "01.2.3.4",
            "1.2.3.4.5", "[1.2.3.4]", "bogus", "", "2001:db8:0:0:0:0:0:1", "2001:0db8::0001", "172.16.5.4",
            "172.31.255.255", "172.32.0.0"]
    for _ in range(120):
        keys.append(".".join(str(RNG.choice([1, 10, 172, 192, 168, RNG.randint(0, 255)])) for _ in range(4)))
    for _ in range(60):
        groups = [format(RNG.choice([0x2001, 0xdb8, 0, 1, 0xfe80, RNG.randint(0, 0xffff)]), "x") for _ in range(8)]
        keys.append(":".join(groups))
    return keys


ADDR_KEYS = address_keys()
IP_KEYS = ip_keys()
ALL_KEYS = ADDR_KEYS + IP_KEYS


def batch(keys: list[str]) -> str:
    # Postfix reads keys line by line; an empty line is no key for either tool.
    return "".join(k + "\n" for k in keys if k != "")


def compare_queries(table: str, env, cwd: Path, keys: list[str], singles: int = 25, extra: list[str] | None = None):
    extra = extra or []
    theirs, ours = both(extra + ["-q", "-", table], env, batch(keys), cwd)
    assert_same(theirs, ours, f"{table} -q - ({len(keys)} keys)")
    for k in keys[:: max(1, len(keys) // singles)]:
        if k == "" or k.startswith("-"):
            continue
        theirs, ours = both(extra + ["-q", k, table], env, None, cwd)
        assert_same(theirs, ours, f"{table} -q {k!r}")


# ---------------------------------------------------------------- sources

HASH_SOURCE = """\
# comment line
root        admin@example.com
postmaster  root
Joe@Example.COM   joe-mailbox
joe@example.com   duplicate-ignored
@example.com      catchall@example.org
bob+ext@example.com  bob-with-ext
alice   value with   inner  spaces   \t
info    first part
    continued part
  # an indented comment inside the continuation
        more
lonely-key-without-value
x: value-after-colon-key
example.com   domain-value
EXAMPLE.ORG   upper-domain
1.2.3.4       an-ip
$1            dollar
"""


def write(d: Path, name: str, text: str) -> Path:
    p = d / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("kind", ["hash", "btree"])
def test_indexed_build_and_query(tmp_path, env, kind):
    pdir, odir = tmp_path / "pf", tmp_path / "ox"
    pdir.mkdir()
    odir.mkdir()
    for d in (pdir, odir):
        write(d, "src", HASH_SOURCE)
    rc_p = run([POSTFIX, f"{kind}:src"], cwd=pdir)
    rc_o = run([OURS, f"{kind}:src"], cwd=odir, env=env)
    assert rc_p[0] == rc_o[0] == 0, (rc_p, rc_o)
    # The same warnings (lonely key, key: value, duplicate), modulo order.
    assert sorted(rc_o[2].splitlines()) == sorted(rc_p[2].splitlines())
    keys = ALL_KEYS + ["ROOT", "Root", "POSTMASTER", "alice", "info", "x:", "lonely-key-without-value"]
    qkeys = keys
    pq = run([POSTFIX, "-q", "-", f"{kind}:src"], batch(qkeys), pdir)
    oq = run([OURS, "-q", "-", f"{kind}:src"], batch(qkeys), odir, env)
    assert_same(pq, oq, f"{kind} -q -")
    for k in ["ROOT", "joe@example.com", "JOE@EXAMPLE.COM", "@example.com", "info", "nothere", "alice", "$1"]:
        assert_same(run([POSTFIX, "-q", k, f"{kind}:src"], cwd=pdir), run([OURS, "-q", k, f"{kind}:src"], cwd=odir, env=env), k)
    ps = run([POSTFIX, "-s", f"{kind}:src"], cwd=pdir)
    os_ = run([OURS, "-s", f"{kind}:src"], cwd=odir, env=env)
    assert ps[0] == os_[0] == 0
    assert sorted(ps[1].splitlines()) == sorted(os_[1].splitlines())


def test_default_type_is_hash(tmp_path, env):
    pdir, odir = tmp_path / "pf", tmp_path / "ox"
    pdir.mkdir()
    odir.mkdir()
    for d in (pdir, odir):
        write(d, "src", HASH_SOURCE)
    assert run([POSTFIX, "src"], cwd=pdir)[0] == 0
    assert run([OURS, "src"], cwd=odir, env=env)[0] == 0
    assert (odir / "src.db").exists()
    assert_same(run([POSTFIX, "-q", "root", "src"], cwd=pdir), run([OURS, "-q", "root", "src"], cwd=odir, env=env), "bare name")


def test_fold_off(tmp_path, env):
    pdir, odir = tmp_path / "pf", tmp_path / "ox"
    pdir.mkdir()
    odir.mkdir()
    for d in (pdir, odir):
        write(d, "src", HASH_SOURCE)
    assert run([POSTFIX, "-f", "hash:src"], cwd=pdir)[0] == 0
    assert run([OURS, "-f", "hash:src"], cwd=odir, env=env)[0] == 0
    keys = ["Joe@Example.COM", "joe@example.com", "EXAMPLE.ORG", "example.org", "root", "ROOT"]
    for flags in (["-f"], []):
        pq = run([POSTFIX] + flags + ["-q", "-", "hash:src"], batch(keys), pdir)
        oq = run([OURS] + flags + ["-q", "-", "hash:src"], batch(keys), odir, env)
        assert_same(pq, oq, f"fold {flags}")


def test_duplicate_policies(tmp_path, env):
    src = "k first\nk second\nK third\n"
    for flag in ("-r", "-w"):
        pdir, odir = tmp_path / f"pf{flag}", tmp_path / f"ox{flag}"
        pdir.mkdir()
        odir.mkdir()
        for d in (pdir, odir):
            write(d, "src", src)
        rp = run([POSTFIX, flag, "hash:src"], cwd=pdir)
        ro = run([OURS, flag, "hash:src"], cwd=odir, env=env)
        assert rp[0] == ro[0] == 0
        assert rp[2] == ro[2] == ""
        assert_same(run([POSTFIX, "-q", "k", "hash:src"], cwd=pdir), run([OURS, "-q", "k", "hash:src"], cwd=odir, env=env), flag)


def test_incremental_and_delete(tmp_path, env):
    pdir, odir = tmp_path / "pf", tmp_path / "ox"
    pdir.mkdir()
    odir.mkdir()
    for d in (pdir, odir):
        write(d, "src", "a 1\nb 2\nc 3\n")
    assert run([POSTFIX, "hash:src"], cwd=pdir)[0] == 0
    assert run([OURS, "hash:src"], cwd=odir, env=env)[0] == 0
    add = "d 4\nE 5\na overwritten?\n"
    rp = run([POSTFIX, "-i", "hash:src"], add, pdir)
    ro = run([OURS, "-i", "hash:src"], add, odir, env)
    assert rp[0] == ro[0] == 0
    keys = ["a", "b", "c", "d", "e", "E", "zz"]
    assert_same(run([POSTFIX, "-q", "-", "hash:src"], batch(keys), pdir), run([OURS, "-q", "-", "hash:src"], batch(keys), odir, env), "-i")
    for k in ["B", "nothere"]:
        assert_same(run([POSTFIX, "-d", k, "hash:src"], cwd=pdir), run([OURS, "-d", k, "hash:src"], cwd=odir, env=env), f"-d {k}")
    assert_same(run([POSTFIX, "-d", "-", "hash:src"], "c\nzz\n", pdir), run([OURS, "-d", "-", "hash:src"], "c\nzz\n", odir, env), "-d -")
    assert_same(run([POSTFIX, "-q", "-", "hash:src"], batch(keys), pdir), run([OURS, "-q", "-", "hash:src"], batch(keys), odir, env), "after -d")


def test_texthash(tmp_path, env):
    write(tmp_path, "src", HASH_SOURCE)
    compare_queries("texthash:src", env, tmp_path, ALL_KEYS + ["ROOT", "info", "alice"])


INLINE_SPECS = [
    "inline:{ root=admin, {Joe@Example.com = joe box}, @example.com=catch, k3= }",
    "inline:{a=1,b=2}",
    "inline:{ {x = y z}, {q=} }",
]


@pytest.mark.parametrize("spec", INLINE_SPECS)
def test_inline(tmp_path, env, spec):
    compare_queries(spec, env, tmp_path, ADDR_KEYS + ["ROOT", "a", "B", "x", "q", "k3"], singles=10)


@pytest.mark.parametrize("spec", ["inline:{ a = b }", "inline:{a=b, c}", "inline:a=b", "static:{ a b }", "static:plain", "fail:x", "bogus:x"])
def test_special_specs(tmp_path, env, spec):
    theirs, ours = both(["-q", "anything", spec], env, None, tmp_path)
    assert_same(theirs, ours, spec)


REGEXP_SOURCE = r"""
# address rewriting
/^(.*)\+(.*)@example\.com$/      ext:$1:$2
/^([^@]+)@(sub\.)?example\.com$/ user:${1}:$(2)
/^postmaster@/                  PM
/^Root$/                         exact-case-insensitive
/^JOE@/i                         JOE-case-sensitive
!/@/                             no-at-sign
if /\.org$/
/^(a|ab)(c|bcd)(d*)@/            alt:$1:$2:$3
/info/                           org-info
if !/^bob/
/^[[:alpha:]]+@example\.org$/    alpha-org
endif
endif
/^[0-9.]+$/                      numeric
/^\[?[0-9a-f:]+\]?$/             hexish
/^(x)(y)?/                       [$1][$2]
/a{2,3}/                         two-or-three-a
/foo(/                           broken
/bar/q                           bad-flag
/baz/                            $7
/^$/                             empty
/./                              anything $$ dollar
"""

PCRE_SOURCE = r"""
/^(.*)\+(.*)@example\.com$/      ext:$1:$2
/^([^@]+)@(sub\.)?example\.com$/ user:${1}:$2
/^postmaster@(?!example)/        PM-not-example
/^(\w)\1/                        doubled-first-letter
/(?<=@)test$/                    lookbehind-test
/^\d+\.\d+\.\d+\.\d+$/           dotted-quad
/^Root$/                         exact
/^JOE@/i                         JOE-case-sensitive
!/@/                             no-at-sign
if /\.org$/
/^(a|ab)(c|bcd)(d*)@/            alt:$1:$2:$3
/^\w+@example\.org$/             word-org
endif
/^[0-9a-f:]+$/                   hexish
/^(x)(y)?/                       [$1][$2]
/a{2,3}/                         two-or-three-a
/foo(/                           broken
/./                              anything
"""


def test_regexp(tmp_path, env):
    write(tmp_path, "re", REGEXP_SOURCE)
    keys = ALL_KEYS + ["abcd@x.org", "abcdd@x.org", "bob@example.org", "carol@example.org", "xy", "x", "aa", "aaaa", "Root", "ROOT", "joe@x", "JOE@x"]
    compare_queries("regexp:re", env, tmp_path, keys)


def test_pcre(tmp_path, env):
    write(tmp_path, "re", PCRE_SOURCE)
    keys = ALL_KEYS + ["abcd@x.org", "bob@example.org", "xy", "aa", "ROOT", "JOE@x", "postmaster@other", "aab", "me@test"]
    compare_queries("pcre:re", env, tmp_path, keys)


CIDR_SOURCE = """
# networks
1.2.3.4/16          bad-host-bits
1.2.0.0/16          net16
10.0.0.0/8          ten
!192.168.0.0/16     not-192.168
::1                 v6-loopback
[2001:db8::]/32     doc-v6
fe80::/10           link-local
0.0.0.0/0           any-v4
foo                 bad
1.2.3.5
if 172.16.0.0/12
172.16.5.0/24       inner
endif
::/0                any-v6
"""


def test_cidr(tmp_path, env):
    write(tmp_path, "c", CIDR_SOURCE)
    compare_queries("cidr:c", env, tmp_path, IP_KEYS)
    theirs, ours = both(["-q", "1.2.3.4", "cidr:c"], env, None, tmp_path)
    assert ours[2] == theirs[2], "cidr warnings differ"


def test_cidr_nesting_and_negation(tmp_path, env):
    src = "if !10.0.0.0/8\nif 192.168.0.0/16\n192.168.1.0/24 a\n!192.168.2.0/24 b\nendif\n0.0.0.0/0 outside-ten\nendif\n10.1.0.0/16 ten-one\n"
    write(tmp_path, "c", src)
    compare_queries("cidr:c", env, tmp_path, IP_KEYS + ["192.168.1.1", "192.168.2.2", "192.168.3.3", "10.1.2.3", "10.2.0.0"])


def test_map_list_first_match(tmp_path, env):
    write(tmp_path, "c", CIDR_SOURCE)
    write(tmp_path, "re", REGEXP_SOURCE)
    write(tmp_path, "t", HASH_SOURCE)
    tables = ["texthash:t", "regexp:re", "cidr:c"]
    theirs, ours = both(["-q", "-"] + tables, env, batch(ALL_KEYS), tmp_path)
    assert_same(theirs, ours, "three tables")


MESSAGE = """\
Subject: hello world
From: Joe <joe@example.com>
X-Multi: first
\tsecond line
X-Spam-Flag: YES
Received: from [10.1.2.3] by host

body line one
a line with viagra in it
last line
"""

HEADER_CHECKS = r"""
/^Subject:.*hello/      REJECT greeting $0
/^Subject:.*hello/      REJECT greeting
/^X-Multi:.*second/     MULTI-line joined
/^X-Spam-Flag: YES/     DISCARD spam
/viagra/                REJECT body spam
/^Received: from \[(.*)\]/  WARN from $1
"""


@pytest.mark.parametrize("flags", [["-h"], ["-b"], ["-h", "-b"]])
def test_message_headers_and_bodies(tmp_path, env, flags):
    write(tmp_path, "hc", HEADER_CHECKS)
    theirs, ours = both(flags + ["-q", "-", "regexp:hc"], env, MESSAGE, tmp_path)
    assert_same(theirs, ours, f"message {flags}")


ALIASES = """\
# aliases
root: admin, other@example.com
Postmaster:   root
"quoted name": target
mailer-daemon: postmaster
list: :include:/etc/list
  , continued@example.com
bad line without colon
"""


def test_postalias(tmp_path, env):
    pdir, odir = tmp_path / "pf", tmp_path / "ox"
    pdir.mkdir()
    odir.mkdir()
    for d in (pdir, odir):
        write(d, "aliases", ALIASES)
    rp = run([POSTFIX_ALIAS, "hash:aliases"], cwd=pdir)
    ro = run([OURS_ALIAS, "hash:aliases"], cwd=odir, env=env)
    assert rp[0] == ro[0] == 0, (rp, ro)
    keys = ["root", "ROOT", "postmaster", "mailer-daemon", "list", "\"quoted name\"", "quoted name", "@", "nobody", "bad line without colon", "bad"]
    assert_same(run([POSTFIX_ALIAS, "-q", "-", "hash:aliases"], batch(keys), pdir), run([OURS_ALIAS, "-q", "-", "hash:aliases"], batch(keys), odir, env), "postalias -q -")
    ps = [l for l in run([POSTFIX_ALIAS, "-s", "hash:aliases"], cwd=pdir)[1].splitlines() if not l.startswith("YP_")]
    os_ = run([OURS_ALIAS, "-s", "hash:aliases"], cwd=odir, env=env)[1].splitlines()
    assert sorted(ps) == sorted(os_)


def test_errors_agree(tmp_path, env):
    for args in (["-q", "k", "hash:missing"], ["-q", "k", "regexp:missing"], ["hash:missing"], ["regexp:x"], ["-s", "regexp:x"]):
        write(tmp_path, "x", "/a/ b\n")
        theirs, ours = both(args, env, None, tmp_path)
        assert ours[0] == theirs[0] != 0, (args, ours, theirs)
        assert "fatal" in ours[2]


def test_build_is_atomic_and_replaces(tmp_path, env):
    """A reader holding the old index keeps answering; a rebuild is seen by new readers."""
    write(tmp_path, "src", "k old\n")
    assert run([OURS, "hash:src"], cwd=tmp_path, env=env)[0] == 0
    ino = (tmp_path / "src.db").stat().st_ino
    write(tmp_path, "src", "k new\n")
    assert run([OURS, "hash:src"], cwd=tmp_path, env=env)[0] == 0
    assert (tmp_path / "src.db").stat().st_ino != ino
    assert run([OURS, "-q", "k", "hash:src"], cwd=tmp_path, env=env)[1] == "new\n"
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_sqlite_table(tmp_path, env):
    """sqlite: through our postmap -q (Postfix's sqlite module is not installed here)."""
    import sqlite3

    db = tmp_path / "m.sqlite"
    c = sqlite3.connect(db)
    c.executescript(
        "CREATE TABLE alias(addr TEXT, goto TEXT);"
        "INSERT INTO alias VALUES('joe@example.com','joe@store');"
        "INSERT INTO alias VALUES('list@example.com','a@x');"
        "INSERT INTO alias VALUES('list@example.com','b@x');"
    )
    c.commit()
    c.close()
    write(tmp_path, "a.cf", f"dbpath = {db}\nquery = SELECT goto FROM alias WHERE addr='%s'\ndomain = example.com\n")
    rc, out, err = run([OURS, "-q", "-", f"sqlite:{tmp_path}/a.cf"], "JOE@example.com\nlist@example.com\nnone@example.com\njoe\n", tmp_path, env)
    assert (rc, out) == (0, "JOE@example.com\tjoe@store\nlist@example.com\ta@x,b@x\n"), err
    write(tmp_path, "bad.cf", f"dbpath = {tmp_path}/nonexistent/db\nquery = SELECT 1 WHERE '%s' <> ''\n")
    rc, out, err = run([OURS, "-q", "x", f"sqlite:{tmp_path}/bad.cf"], None, tmp_path, env)
    assert rc == 1 and "fatal" in err and out == ""
