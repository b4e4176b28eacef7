"""imapd trusts its index while a mailbox's new/ and cur/ keep the mtimes the index last
synced them at (the store's directory stamps, as Dovecot's): these tests change the Maildir
behind imapd's back (another process delivering into new/, mutt renaming a flag in cur/ or
deleting a file) after the stamps are trusted, and check that the next SELECT and a session
that has the mailbox selected (NOOP) both see every change."""

import os
import re
import sqlite3
import time

from conftest import Raw, chown


def body(i):
    return (
        f"From: Sender <sender@example.com>\r\n"
        f"To: demo@localhost\r\n"
        f"Subject: message {i}\r\n"
        f"Message-ID: <sync{i}@example.com>\r\n"
        f"\r\n"
        f"text {i}\r\n"
    ).encode()


def age(md):
    """new/ and cur/ mtimes 10 s back: older than a second, so a sync records them as
    trusted stamps and the next look skips the listing while they are unchanged."""
    past = time.time() - 10
    for sub in ("new", "cur"):
        os.utime(md / sub, (past, past))


def file_of(md, subject):
    for p in (md / "cur").iterdir():
        if re.search(rf"^Subject: {subject}\r?$".encode(), p.read_bytes(), re.M):
            return p
    raise AssertionError(f"no file with subject {subject!r} in {md / 'cur'}")


def mutt_flag(p, letter):
    """Adds a flag letter to a file's `:2,` info, as mutt does (a rename in cur/)."""
    name, info = p.name.split(":2,", 1)
    target = p.with_name(f"{name}:2,{''.join(sorted(set(info + letter)))}")
    os.rename(p, target)


def drop_in_new(md, i):
    """Another process delivers: tmp/ then a rename into new/ (names in delivery order)."""
    for d in (md, md / "tmp", md / "new", md / "cur"):
        if not d.is_dir():
            d.mkdir(parents=True)
            chown(d)
    name = f"{int(time.time())}.M{i}P{os.getpid()}.elsewhere"
    tmp = md / "tmp" / name
    tmp.write_bytes(body(i))
    chown(tmp)
    os.rename(tmp, md / "new" / name)


def stamps(md):
    """The directory stamps the index holds (present only when they are trusted)."""
    db = sqlite3.connect(f"file:{md / 'oxipost-index'}?mode=ro", uri=True, timeout=10)
    try:
        return dict(db.execute("SELECT key, value FROM meta WHERE key IN ('newstamp', 'curstamp')"))
    finally:
        db.close()


def exists(lines):
    n = [int(m.group(1)) for l in lines if (m := re.match(rb"\* (\d+) EXISTS$", l))]
    return n[-1] if n else None


def select(imap):
    c = Raw(imap.imap_port)
    c.login()
    r = c.cmd("s", "SELECT INBOX")
    assert r[-1].startswith(b"s OK [READ-WRITE]"), r
    return c, r


def test_changes_behind_imapds_back_are_seen_with_trusted_stamps(imap):
    imap.start()
    md = imap.maildir("demo")
    for i in range(3):
        drop_in_new(md, i)
    a, r = select(imap)
    assert exists(r) == 3
    # A second SELECT records the (aged) stamps; a third trusts them: same answer.
    age(md)
    for _ in range(2):
        b, r = select(imap)
        assert exists(r) == 3, r
        b.close()
    # The shortcut is in use: both directories' mtimes are recorded as synced.
    st = stamps(md)
    assert st.get("curstamp") == (md / "cur").stat().st_mtime_ns, st
    assert st.get("newstamp") == (md / "new").stat().st_mtime_ns, st
    assert a.cmd("n", "NOOP") == [b"n OK NOOP completed."]

    # Behind imapd's back: mutt flags message 2, another process delivers a message.
    mutt_flag(file_of(md, "message 1"), "F")
    drop_in_new(md, 3)
    r = a.cmd("n", "NOOP")
    assert b"* 2 FETCH (FLAGS (\\Flagged \\Recent))" in r, r
    assert exists(r) == 4, r
    assert r[-1] == b"n OK NOOP completed.", r
    b, r = select(imap)
    assert exists(r) == 4, r
    r = b.cmd("f", "FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert any(l.startswith(b"* 2 FETCH (FLAGS (\\Flagged) ") for l in r), r
    assert b"Subject: message 3" in b"".join(r), r
    b.close()

    # Again with trusted stamps: mutt deletes message 1 and unflags message 2 (its
    # rename back lands in the same second as the one before: still seen).
    age(md)
    b, _ = select(imap)
    b.close()
    assert stamps(md).get("curstamp") == (md / "cur").stat().st_mtime_ns
    os.unlink(file_of(md, "message 0"))
    p = file_of(md, "message 1")
    os.rename(p, p.with_name(p.name.replace("F", "")))
    r = a.cmd("n", "NOOP")
    assert r[0] == b"* 1 EXPUNGE", r
    assert b"* 1 FETCH (FLAGS (\\Recent))" in r, r
    b, r = select(imap)
    assert exists(r) == 3, r
    r = b.cmd("f", "FETCH 1:* (FLAGS)")
    assert r[:3] == [b"* 1 FETCH (FLAGS ())", b"* 2 FETCH (FLAGS ())", b"* 3 FETCH (FLAGS ())"], r
    a.close()
    b.close()


def test_same_second_changes_are_not_hidden_by_the_stamp(imap):
    """Changes right after a sync (the directory's mtime within the last second, so its
    stamp is not trusted) and again at once: every SELECT sees the Maildir as it is."""
    imap.start()
    md = imap.maildir("demo")
    drop_in_new(md, 0)
    for i in range(1, 6):
        drop_in_new(md, i)
        c, r = select(imap)
        assert exists(r) == i + 1, (i, r)
        c.close()
        mutt_flag(file_of(md, f"message {i}"), "S")
        c, _ = select(imap)
        r = c.cmd("f", f"FETCH {i + 1} (FLAGS)")
        assert r[0].startswith(f"* {i + 1} FETCH (FLAGS (\\Seen".encode()), (i, r)
        c.close()
