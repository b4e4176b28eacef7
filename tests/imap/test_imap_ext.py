"""Issue 10, the IMAP4rev2 and extension part: IMAP4rev2 (RFC 9051) behind ENABLE,
ESEARCH (RFC 4731) and SEARCHRES (RFC 5182), BINARY (RFC 3516), LIST-EXTENDED (RFC 5258)
and LIST-STATUS (RFC 5819), UTF8=ACCEPT (RFC 6855) and QRESYNC (RFC 7162), each through
a raw socket with the exact responses (forms as in the RFCs' examples)."""

import imaplib
import re
import ssl
import time

from conftest import PASSWORD, Raw, chown, pids_of

MSG = b"From: a@example.com\r\nSubject: plain %d\r\n\r\nbody %d\r\n"

MULTI = (
    b"From: a@example.com\r\n"
    b"Subject: parts\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="xx"\r\n'
    b"\r\n"
    b"--xx\r\n"
    b"Content-Type: text/plain; charset=us-ascii\r\n"
    b"\r\n"
    b"hello\r\n"
    b"--xx\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAw==\r\n"
    b"--xx\r\n"
    b"Content-Type: text/plain; charset=iso-8859-1\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"caf=E9 au =\r\nlait\r\n"
    b"--xx\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: x-uuencode\r\n"
    b"\r\n"
    b"begin 644 x\r\n"
    b"--xx--\r\n"
)


def session(imap) -> Raw:
    c = Raw(imap.imap_port)
    c.login()
    return c


def append(c: Raw, tag: str, mbox: str, data: bytes, flags: str = "") -> list:
    c.send(f"{tag} APPEND {mbox} {flags}{{{len(data)}+}}\r\n".encode() + data + b"\r\n")
    r = c.until_tag(tag.encode())
    assert re.fullmatch(rb"%s OK \[APPENDUID \d+ \d+\] Append completed\." % tag.encode(), r[-1]), r
    return r


def modseq_of(line: bytes) -> int:
    return int(re.search(rb"MODSEQ \((\d+)\)", line).group(1))


def test_imap4rev2_enable_select_search_status(imap):
    imap.start()
    c = session(imap)
    caps = c.cmd("c", "CAPABILITY")[0].split()
    for k in (b"IMAP4rev1", b"IMAP4rev2", b"ESEARCH", b"SEARCHRES", b"BINARY", b"LIST-EXTENDED",
              b"LIST-STATUS", b"STATUS=SIZE", b"APPENDLIMIT=1048576", b"UTF8=ACCEPT", b"QRESYNC", b"CONDSTORE", b"UIDPLUS",
              b"MOVE", b"UNSELECT", b"NAMESPACE", b"LITERAL+", b"SPECIAL-USE", b"ENABLE"):
        assert k in caps, caps
    for i in range(3):
        append(c, f"a{i}", "INBOX", MSG % (i, i), "(\\Deleted) " if i == 2 else "")
    assert c.cmd("e", "ENABLE IMAP4rev2") == [b"* ENABLED IMAP4rev2", b"e OK Enabled."]
    # Enabling again reports nothing new.
    assert c.cmd("e2", "ENABLE IMAP4rev2 X-UNKNOWN") == [b"* ENABLED", b"e2 OK Enabled."]
    r = c.cmd("s", "SELECT INBOX")
    assert r[0] == b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)"
    assert r[1] == b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Flags permitted."
    assert r[2] == b"* 3 EXISTS"
    assert re.fullmatch(rb"\* OK \[UIDVALIDITY \d+\] UIDs valid", r[3]), r
    assert r[4] == b"* OK [UIDNEXT 4] Predicted next UID"
    assert re.fullmatch(rb"\* OK \[HIGHESTMODSEQ \d+\] Highest", r[5]), r
    # RFC 9051 6.3.2: a LIST response names the mailbox; no RECENT, no [UNSEEN].
    assert r[6:] == [b'* LIST () "." "INBOX"', b"s OK [READ-WRITE] Select completed."], r
    # No \Recent in IMAP4rev2.
    assert c.cmd("f", "FETCH 1 FLAGS") == [b"* 1 FETCH (FLAGS ())", b"f OK Fetch completed."]
    # SEARCH answers in the ESEARCH form (RFC 9051 6.4.4).
    assert c.cmd("q1", "SEARCH ALL") == [b'* ESEARCH (TAG "q1") ALL 1:3', b"q1 OK Search completed."]
    assert c.cmd("q2", "UID SEARCH DELETED") == [b'* ESEARCH (TAG "q2") UID ALL 3', b"q2 OK Search completed."]
    assert c.cmd("q3", "SEARCH SUBJECT nothing") == [b'* ESEARCH (TAG "q3")', b"q3 OK Search completed."]
    assert c.cmd("q4", "SEARCH RETURN (COUNT) UNDELETED") == [
        b'* ESEARCH (TAG "q4") COUNT 2', b"q4 OK Search completed."]
    size = sum(len(MSG % (i, i)) for i in range(3))
    assert c.cmd("st", "STATUS INBOX (MESSAGES DELETED SIZE UIDNEXT)") == [
        f'* STATUS "INBOX" (MESSAGES 3 DELETED 1 SIZE {size} UIDNEXT 4)'.encode(), b"st OK Status completed."]
    # Selecting another mailbox closes this one first.
    r = c.cmd("s2", "EXAMINE Sent")
    assert r[0] == b"* OK [CLOSED] Previous mailbox closed.", r
    assert b"* OK [PERMANENTFLAGS ()] Read-only mailbox." in r
    assert r[-2:] == [b'* LIST () "." "Sent"', b"s2 OK [READ-ONLY] Examine completed."]
    assert c.cmd("u", "UNSELECT") == [b"u OK UNSELECT completed."]
    assert c.cmd("n", "NAMESPACE") == [b'* NAMESPACE (("" ".")) NIL NIL', b"n OK Namespace completed."]
    # Without ENABLE a session keeps the IMAP4rev1 forms.
    d = session(imap)
    r = d.cmd("s", "SELECT INBOX")
    assert b"* 0 RECENT" in r and not any(l.startswith(b"* LIST") for l in r), r
    assert d.cmd("q", "SEARCH DELETED") == [b"* SEARCH 3", b"q OK Search completed."]
    c.close()
    d.close()


def test_esearch_return_options_and_searchres(imap):
    imap.start()
    c = session(imap)
    for i in range(6):
        append(c, f"a{i}", "INBOX", MSG % (i, i), "(\\Flagged) " if i in (1, 2, 4) else "")
    c.cmd("s", "SELECT INBOX")
    assert c.cmd("e1", "SEARCH RETURN (MIN MAX COUNT ALL) FLAGGED") == [
        b'* ESEARCH (TAG "e1") MIN 2 MAX 5 ALL 2:3,5 COUNT 3', b"e1 OK Search completed."]
    assert c.cmd("e2", "UID SEARCH RETURN (MIN MAX) UNFLAGGED") == [
        b'* ESEARCH (TAG "e2") UID MIN 1 MAX 6', b"e2 OK Search completed."]
    # RETURN () is RETURN (ALL).
    assert c.cmd("e3", "SEARCH RETURN () 4:*") == [b'* ESEARCH (TAG "e3") ALL 4:6', b"e3 OK Search completed."]
    # No match: MIN, MAX and ALL are left out, COUNT is 0.
    assert c.cmd("e4", "SEARCH RETURN (MIN COUNT) SUBJECT none") == [
        b'* ESEARCH (TAG "e4") COUNT 0', b"e4 OK Search completed."]
    assert c.cmd("e5", "SEARCH RETURN (BOGUS) ALL")[-1].startswith(b"e5 BAD")
    # SEARCHRES: SAVE alone sends no ESEARCH; $ then names the saved messages.
    assert c.cmd("r1", "UID SEARCH RETURN (SAVE) FLAGGED") == [b"r1 OK Search completed."]
    assert c.cmd("r2", "FETCH $ (UID)") == [
        b"* 2 FETCH (UID 2)", b"* 3 FETCH (UID 3)", b"* 5 FETCH (UID 5)", b"r2 OK Fetch completed."]
    assert c.cmd("r3", "SEARCH RETURN (COUNT) $ SUBJECT \"plain 4\"") == [
        b'* ESEARCH (TAG "r3") COUNT 1', b"r3 OK Search completed."]
    assert c.cmd("r4", "UID STORE $ -FLAGS.SILENT (\\Flagged)") == [b"r4 OK Store completed."]
    assert c.cmd("r5", "SEARCH FLAGGED") == [b"* SEARCH", b"r5 OK Search completed."]
    # SAVE with others: both.
    assert c.cmd("r6", "SEARCH RETURN (SAVE MIN) 5:6") == [b'* ESEARCH (TAG "r6") MIN 5', b"r6 OK Search completed."]
    assert c.cmd("r7", "UID FETCH $ (FLAGS)") == [
        b"* 5 FETCH (UID 5 FLAGS ())", b"* 6 FETCH (UID 6 FLAGS ())", b"r7 OK Fetch completed."]
    c.close()


def test_binary_fetch_and_literal8_append(imap):
    imap.start()
    c = session(imap)
    append(c, "a", "INBOX", MULTI)
    c.cmd("s", "SELECT INBOX")
    assert c.cmd("b1", "FETCH 1 (BINARY.SIZE[2] BINARY.SIZE[3] BINARY.SIZE[1])") == [
        b"* 1 FETCH (BINARY.SIZE[2] 4 BINARY.SIZE[3] 12 BINARY.SIZE[1] 5)", b"b1 OK Fetch completed."]
    # Decoded data holding NUL comes as a literal8.
    c.send(b"b2 FETCH 1 (BINARY.PEEK[2])\r\n")
    assert c.line() == b"* 1 FETCH (BINARY[2] ~{4}"
    assert c.buf[:4] == b"\x00\x01\x02\x03"
    c.buf = c.buf[4:]
    assert c.until_tag(b"b2") == [b")", b"b2 OK Fetch completed."]
    # Quoted-printable undone, no charset conversion; a partial range.
    c.send(b"b3 FETCH 1 (BINARY.PEEK[3] BINARY.PEEK[3]<5.3>)\r\n")
    assert c.line() == b"* 1 FETCH (BINARY[3] {12}"
    assert c.buf[:12] == b"caf\xe9 au lait"
    c.buf = c.buf[12:]
    assert c.line() == b" BINARY[3]<5> {3}"
    assert c.buf[:3] == b"au "
    c.buf = c.buf[3:]
    assert c.until_tag(b"b3") == [b")", b"b3 OK Fetch completed."]
    assert c.cmd("f1", "FETCH 1 FLAGS") == [b"* 1 FETCH (FLAGS ())", b"f1 OK Fetch completed."]
    assert c.cmd("b4", "FETCH 1 BINARY.PEEK[4]") == [
        b"b4 NO [UNKNOWN-CTE] Unknown Content-Transfer-Encoding."]
    assert c.cmd("b5", "FETCH 1 BINARY[HEADER]") == [b"b5 BAD Error in IMAP command FETCH: Invalid fetch attribute."]
    # BINARY without PEEK sets \Seen.
    r = c.cmd("b6", "FETCH 1 BINARY[1]")
    assert r[0] == b"* 1 FETCH (BINARY[1] {5}" and r[1] == b"hello FLAGS (\\Seen))", r
    # APPEND of binary content as a literal8 (RFC 3516 4.4), read back byte for byte.
    data = b"From: b@example.com\r\nSubject: bin\r\n\r\n\x00\x01binary\xff\r\n"
    c.send(b"a2 APPEND INBOX ~{%d}\r\n" % len(data))
    assert c.line().startswith(b"+")
    c.send(data + b"\r\n")
    assert re.fullmatch(rb"a2 OK \[APPENDUID \d+ 2\] Append completed\.", c.until_tag(b"a2")[-1])
    c.send(b"b7 UID FETCH 2 BINARY.PEEK[]\r\n")
    r = c.line()
    assert r == b"* 2 FETCH (UID 2 BINARY[] ~{%d}" % len(data), r
    assert c.buf[: len(data)] == data
    c.buf = c.buf[len(data):]
    assert c.until_tag(b"b7")[-1] == b"b7 OK Fetch completed."
    c.close()


def test_list_extended_and_list_status(imap):
    imap.start()
    c = session(imap)
    for n in ("Fruit", "Fruit.Apple", "Fruit.Pear", "Gone"):
        assert c.cmd("c", f"CREATE {n}")[-1] == b"c OK CREATE completed."
    assert c.cmd("u1", "SUBSCRIBE Fruit.Apple")[-1].startswith(b"u1 OK")
    assert c.cmd("u2", "SUBSCRIBE Gone")[-1].startswith(b"u2 OK")
    assert c.cmd("d", "DELETE Gone")[-1].startswith(b"d OK")
    append(c, "a", "Fruit.Pear", MSG % (1, 1))
    append(c, "a", "Fruit.Pear", MSG % (2, 2), "(\\Seen) ")
    # Selection SUBSCRIBED: subscribed names, a deleted one as \NonExistent.
    assert c.cmd("l1", 'LIST (SUBSCRIBED) "" "*"') == [
        b'* LIST (\\HasNoChildren \\Subscribed \\Archive) "." "Archive"',
        b'* LIST (\\HasNoChildren \\Subscribed \\Drafts) "." "Drafts"',
        b'* LIST (\\HasNoChildren \\Subscribed) "." "Fruit.Apple"',
        b'* LIST (\\NonExistent \\Subscribed) "." "Gone"',
        b'* LIST (\\HasNoChildren \\Subscribed \\Junk) "." "Junk"',
        b'* LIST (\\HasNoChildren \\Subscribed \\Sent) "." "Sent"',
        b'* LIST (\\HasNoChildren \\Subscribed \\Trash) "." "Trash"',
        b"l1 OK LIST completed.",
    ]
    # RECURSIVEMATCH: an unsubscribed parent of a subscribed child, with CHILDINFO
    # (RFC 5258 example 5.9).
    assert c.cmd("l2", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "F%" RETURN (CHILDREN)') == [
        b'* LIST (\\HasChildren) "." "Fruit" ("CHILDINFO" ("SUBSCRIBED"))',
        b"l2 OK LIST completed.",
    ]
    assert c.cmd("l3", 'LIST (RECURSIVEMATCH) "" "*"')[-1].startswith(b"l3 BAD")
    assert c.cmd("l4", 'LIST (SPECIAL-USE) "" "*"') == [
        b'* LIST (\\HasNoChildren \\Archive) "." "Archive"',
        b'* LIST (\\HasNoChildren \\Drafts) "." "Drafts"',
        b'* LIST (\\HasNoChildren \\Junk) "." "Junk"',
        b'* LIST (\\HasNoChildren \\Sent) "." "Sent"',
        b'* LIST (\\HasNoChildren \\Trash) "." "Trash"',
        b"l4 OK LIST completed.",
    ]
    # Several patterns, and the SUBSCRIBED return option.
    assert c.cmd("l5", 'LIST "" ("INBOX" "Fruit.*") RETURN (SUBSCRIBED)') == [
        b'* LIST (\\HasNoChildren) "." "INBOX"',
        b'* LIST (\\HasNoChildren \\Subscribed) "." "Fruit.Apple"',
        b'* LIST (\\HasNoChildren) "." "Fruit.Pear"',
        b"l5 OK LIST completed.",
    ]
    # LIST-STATUS: a STATUS after each selectable mailbox.
    assert c.cmd("l6", 'LIST "" "Fruit*" RETURN (STATUS (MESSAGES UNSEEN))') == [
        b'* LIST (\\HasChildren) "." "Fruit"',
        b'* STATUS "Fruit" (MESSAGES 0 UNSEEN 0)',
        b'* LIST (\\HasNoChildren) "." "Fruit.Apple"',
        b'* STATUS "Fruit.Apple" (MESSAGES 0 UNSEEN 0)',
        b'* LIST (\\HasNoChildren) "." "Fruit.Pear"',
        b'* STATUS "Fruit.Pear" (MESSAGES 2 UNSEEN 1)',
        b"l6 OK LIST completed.",
    ]
    assert c.cmd("l7", 'LIST "" "*" RETURN (BOGUS)')[-1].startswith(b"l7 BAD")
    assert c.cmd("d2", "DELETE Fruit") == [b"d2 NO [HASCHILDREN] Mailbox has children, delete them first."]
    # A folder whose parent does not exist: the parent is a placeholder, \Noselect to a
    # plain LIST, \NonExistent to LIST-EXTENDED (RFC 5258 3).
    assert c.cmd("c", "CREATE Veg.Leek")[-1] == b"c OK CREATE completed."
    assert b'* LIST (\\Noselect \\HasChildren) "." "Veg"' in c.cmd("l9", 'LIST "" "%"')
    assert c.cmd("l10", 'LIST "" "Veg*" RETURN (CHILDREN)') == [
        b'* LIST (\\NonExistent \\HasChildren) "." "Veg"',
        b'* LIST (\\HasNoChildren) "." "Veg.Leek"',
        b"l10 OK LIST completed.",
    ]
    # LSUB keeps its RFC 3501 form.
    assert b'* LSUB (\\Noselect) "." "Gone"' in c.cmd("l8", 'LSUB "" "*"')
    c.close()


def test_utf8_accept_mailbox_names_and_append(imap):
    imap.start()
    c = session(imap)
    assert c.cmd("c1", 'CREATE "Entw&APw-rfe"')[-1] == b"c1 OK CREATE completed."
    assert c.cmd("l1", 'LIST "" "Entw*"') == [b'* LIST (\\HasNoChildren) "." "Entw&APw-rfe"', b"l1 OK LIST completed."]
    # 8-bit or broken modified UTF-7 is refused before UTF8=ACCEPT.
    c.send('c2 CREATE "Café"\r\n'.encode())
    assert c.until_tag(b"c2") == [b"c2 NO [CANNOT] Mailbox name is not valid mUTF-7."]
    assert c.cmd("c3", 'CREATE "&Jjo!"') == [b"c3 NO [CANNOT] Mailbox name is not valid mUTF-7."]
    assert c.cmd("e", "ENABLE UTF8=ACCEPT") == [b"* ENABLED UTF8=ACCEPT", b"e OK Enabled."]
    c.send('l2 LIST "" "Entw*"\r\n'.encode())
    assert c.until_tag(b"l2") == ['* LIST (\\HasNoChildren) "." "Entwürfe"'.encode(), b"l2 OK LIST completed."]
    c.send('c4 CREATE "日本語"\r\n'.encode())
    assert c.until_tag(b"c4") == [b"c4 OK CREATE completed."]
    # On disk in the modified UTF-7 form Dovecot's Maildir++ uses.
    assert (imap.maildir("demo") / ".&ZeVnLIqe-" / "cur").is_dir()
    msg = "From: ü@example.com\r\nSubject: Grüße\r\n\r\nhi\r\n".encode()
    c.send('a APPEND "日本語" UTF8 (~{%d}\r\n'.encode() % len(msg))
    assert c.line().startswith(b"+")
    c.send(msg + b")\r\n")
    assert re.fullmatch(rb"a OK \[APPENDUID \d+ 1\] Append completed\.", c.until_tag(b"a")[-1])
    c.send('st STATUS "日本語" (MESSAGES)\r\n'.encode())
    assert c.until_tag(b"st") == ['* STATUS "日本語" (MESSAGES 1)'.encode(), b"st OK Status completed."]
    # A session without UTF8=ACCEPT sees the modified UTF-7 name.
    d = session(imap)
    assert b'* LIST (\\HasNoChildren) "." "&ZeVnLIqe-"' in d.cmd("l", 'LIST "" "*"')
    c.close()
    d.close()


def test_qresync_vanished_and_resync(imap):
    imap.start()
    c = session(imap)
    for i in range(4):
        append(c, f"a{i}", "INBOX", MSG % (i, i))
    assert c.cmd("x", "SELECT INBOX (QRESYNC (1 1))") == [
        b"x BAD Error in IMAP command SELECT: QRESYNC not enabled."]
    assert c.cmd("e", "ENABLE QRESYNC") == [b"* ENABLED QRESYNC", b"e OK Enabled."]
    r = c.cmd("s", "SELECT INBOX")
    validity = int(re.search(rb"UIDVALIDITY (\d+)", b"\n".join(r)).group(1))
    base = int(re.search(rb"HIGHESTMODSEQ (\d+)", b"\n".join(r)).group(1))
    # EXPUNGE is reported as VANISHED, and FETCH responses carry the UID.
    r = c.cmd("t1", "STORE 2 +FLAGS.SILENT (\\Deleted)")
    assert r == [b"t1 OK Store completed."]
    r = c.cmd("x1", "EXPUNGE")
    assert r[0] == b"* VANISHED 2" and re.fullmatch(rb"x1 OK \[HIGHESTMODSEQ \d+\] Expunge completed\.", r[1]), r
    r = c.cmd("t2", "STORE 2 +FLAGS (\\Seen)")
    assert re.fullmatch(rb"\* 2 FETCH \(UID 3 FLAGS \(\\Seen\) MODSEQ \(\d+\)\)", r[0]), r
    seen_modseq = modseq_of(r[0])
    # UID FETCH ... (CHANGEDSINCE m VANISHED): expunged UIDs first (RFC 7162 3.2.6).
    r = c.cmd("f", f"UID FETCH 1:* FLAGS (CHANGEDSINCE {base} VANISHED)")
    assert r == [b"* VANISHED (EARLIER) 2", f"* 2 FETCH (UID 3 FLAGS (\\Seen) MODSEQ ({seen_modseq}))".encode(),
                 b"f OK Fetch completed."], r
    assert c.cmd("f2", "FETCH 1 FLAGS (CHANGEDSINCE 1 VANISHED)")[-1].startswith(b"f2 BAD")
    # Another session's expunge reaches this one as VANISHED too.
    d = session(imap)
    d.cmd("s", "SELECT INBOX")
    d.cmd("t", "STORE 3 +FLAGS.SILENT (\\Deleted)")
    assert d.cmd("x", "EXPUNGE") == [b"* 3 EXPUNGE", b"x OK Expunge completed."]
    d.close()
    assert c.cmd("n", "NOOP") == [b"* VANISHED 4", b"n OK NOOP completed."]
    c.close()
    # A new session resynchronises from (UIDVALIDITY, MODSEQ): what vanished and what
    # changed since (RFC 7162 3.2.5.2).
    c = session(imap)
    c.cmd("e", "ENABLE QRESYNC")
    r = c.cmd("s", f"SELECT INBOX (QRESYNC ({validity} {base}))")
    assert b"* VANISHED (EARLIER) 2,4" in r, r
    assert f"* 2 FETCH (UID 3 FLAGS (\\Seen) MODSEQ ({seen_modseq}))".encode() in r, r
    assert r[-1] == b"s OK [READ-WRITE] Select completed."
    # Known UIDs limit the report; a stale UIDVALIDITY gets no resync data.
    r = c.cmd("s2", f"SELECT INBOX (QRESYNC ({validity} {base} 1:3))")
    assert r[0] == b"* OK [CLOSED] Previous mailbox closed."
    assert b"* VANISHED (EARLIER) 2" in r and not any(b"VANISHED" in l and b"4" in l for l in r), r
    r = c.cmd("s3", f"SELECT INBOX (QRESYNC ({validity + 1} {base}))")
    assert not any(b"VANISHED" in l or b"FETCH" in l for l in r), r
    c.close()


def test_connections_per_user_and_ip_limit(imap):
    imap.postconf("imapd_max_userip_connections=2", "imapd_client_connection_limit=3")
    imap.start()
    a, b = session(imap), session(imap)
    c = Raw(imap.imap_port)
    assert c.cmd("L", f'LOGIN demo "{PASSWORD}"') == [
        b"L NO [LIMIT] Maximum number of connections from user+IP exceeded (imapd_max_userip_connections=2)."]
    # The session stays unauthenticated.
    assert c.cmd("s", "SELECT INBOX") == [b"s BAD Please log in first."]
    a.cmd("o", "LOGOUT")
    a.close()
    # The slot is free once the server has closed that session.
    deadline = time.time() + 20
    while True:
        r = c.cmd("L2", f'LOGIN demo "{PASSWORD}"')
        if r[-1].startswith(b"L2 OK") or time.time() > deadline:
            break
        time.sleep(0.1)
    assert r[-1].startswith(b"L2 OK [CAPABILITY"), r
    # Per address, logged in or not: b, c and one more; a fourth is turned away.
    e = Raw(imap.imap_port)
    assert e.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1"), e.greeting
    f = Raw(imap.imap_port)
    assert f.greeting == b"* BYE [UNAVAILABLE] Too many connections from your address.", f.greeting
    f.close()
    for x in (b, c, e):
        x.close()


def rss_kib(pids) -> int:
    total = 0
    for pid in pids:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def test_output_back_pressure_client_that_does_not_read(imap):
    """A FETCH of 25 MB to a client that reads nothing: imapd stops producing once its
    output buffer is above its bound (it does not hold the answer in memory), then sends
    all of it, in order and followed by a pipelined command, once the client reads."""
    imap.start()
    md = imap.maildir("demo")
    c = session(imap)  # creates the Maildir
    n, size = 400, 64 * 1024
    line = b"x" * 1022 + b"\r\n"
    for i in range(n):
        p = md / "new" / f"17000{i:05d}.M{i}P1.test"
        p.write_bytes(b"Subject: big %d\r\n\r\n" % i + line * (size // len(line)))
        chown(p)
    c.cmd("s", "SELECT INBOX")
    pids = pids_of("imapd", imap.root)
    assert pids
    before = rss_kib(pids)
    c.send(b"f FETCH 1:* BODY.PEEK[]\r\nz NOOP\r\n")
    # A second session's answer from the same event loop: the first one's work for now
    # is over, bounded or not.
    d = session(imap)
    assert d.cmd("n", "NOOP")[-1] == b"n OK NOOP completed."
    grown = rss_kib(pids) - before
    print(f"imapd RSS growth with a 25 MB FETCH unread: {grown} KiB")
    assert grown < 8 * 1024, f"imapd grew by {grown} KiB for a client that does not read"
    # Now read it all: every message, in order, then the tagged replies in order.
    got = 0
    while True:
        l = c.line()
        m = re.fullmatch(rb"\* (\d+) FETCH \(BODY\[\] \{(\d+)\}", l)
        if m:
            got += 1
            assert int(m.group(1)) == got
            want = int(m.group(2))
            while len(c.buf) < want:
                c.buf += c.s.recv(1 << 20)
            assert c.buf[:13] == b"Subject: big "
            c.buf = c.buf[want:]
            continue
        if l.startswith(b"f "):
            assert l == b"f OK Fetch completed."
            break
        assert l == b")", l
    assert got == n
    assert c.until_tag(b"z") == [b"z OK NOOP completed."]
    c.close()
    d.close()
    # The same answer in parts over TLS (imaps), read by imaplib.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    t = imaplib.IMAP4_SSL("127.0.0.1", imap.imaps_port, ssl_context=ctx, timeout=60)
    t.login("demo", PASSWORD)
    t.select("INBOX", readonly=True)
    typ, data = t.fetch("1:*", "(BODY.PEEK[])")
    bodies = [x for x in data if isinstance(x, tuple)]
    assert typ == "OK" and len(bodies) == n
    assert all(b[1].startswith(b"Subject: big %d\r\n" % i) for i, b in enumerate(bodies))
    t.logout()


def test_fetch_of_a_message_another_session_expunged(imap):
    imap.start()
    c = session(imap)
    for i in range(2):
        append(c, f"a{i}", "INBOX", MSG % (i, i))
    c.cmd("s", "SELECT INBOX")
    d = session(imap)
    d.cmd("s", "SELECT INBOX")
    d.cmd("t", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    assert d.cmd("x", "EXPUNGE") == [b"* 1 EXPUNGE", b"x OK Expunge completed."]
    d.close()
    # No EXPUNGE may be sent during FETCH: the rest is answered, then NO [EXPUNGEISSUED].
    r = c.cmd("f", "FETCH 1:2 BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
    assert r == [b"* 2 FETCH (BODY[HEADER.FIELDS (SUBJECT)] {20}", b"Subject: plain 1", b"", b")",
                 b"f NO [EXPUNGEISSUED] Some of the requested messages no longer exist."], r
    assert c.cmd("n", "NOOP") == [b"* 1 EXPUNGE", b"n OK NOOP completed."]
    c.close()
