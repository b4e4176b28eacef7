"""Issue 10 end to end: imapd under master with real clients (Python's imaplib plain,
STARTTLS and IMAP4_SSL on the imaps port; mbsync when installed) and a raw socket client
for exact bytes, over the Maildir that local delivered into by SMTP."""

import base64
import imaplib
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import PASSWORD, Raw, pids_of


def body(i, extra=""):
    return (
        f"From: Sender <sender@example.com>\r\n"
        f"To: demo@localhost\r\n"
        f"Subject: message {i}\r\n"
        f"Message-ID: <m{i}@example.com>\r\n"
        f"\r\n"
        f"line one of {i}\r\n"
        f"{extra}"
        f"last line\r\n"
    ).encode()


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def login(imap):
    c = imaplib.IMAP4("127.0.0.1", imap.imap_port, timeout=30)
    typ, _ = c.login("demo", PASSWORD)
    assert typ == "OK"
    return c


def test_capability_login_list_select_fetch_store_search_expunge(imap):
    imap.start()
    imap.deliver_all([body(i) for i in range(3)])

    c = imaplib.IMAP4("127.0.0.1", imap.imap_port, timeout=30)
    assert c.welcome.startswith(b"* OK [CAPABILITY IMAP4rev1")
    for k in ("IMAP4REV1", "IDLE", "UIDPLUS", "MOVE", "SPECIAL-USE", "STARTTLS", "AUTH=PLAIN", "SASL-IR",
              "LITERAL+", "NAMESPACE", "ID", "ENABLE", "UNSELECT"):
        assert k in c.capabilities, c.capabilities
    typ, data = c.login("demo", PASSWORD)
    assert typ == "OK" and data[0].startswith(b"[CAPABILITY IMAP4rev1")

    # A new user gets the special-use folders, subscribed.
    typ, data = c.list()
    assert typ == "OK"
    assert data == [
        b'(\\HasNoChildren) "." "INBOX"',
        b'(\\HasNoChildren \\Archive) "." "Archive"',
        b'(\\HasNoChildren \\Drafts) "." "Drafts"',
        b'(\\HasNoChildren \\Junk) "." "Junk"',
        b'(\\HasNoChildren \\Sent) "." "Sent"',
        b'(\\HasNoChildren \\Trash) "." "Trash"',
    ], data
    typ, data = c.lsub()
    assert sorted(data) == sorted(
        [f'(\\HasNoChildren \\{n}) "." "{n}"'.encode() for n in ("Sent", "Drafts", "Trash", "Junk", "Archive")])
    typ, data = c.list('""', "%")
    assert len(data) == 6
    assert c._simple_command("NAMESPACE")[0] == "OK"
    assert c.untagged_responses.pop("NAMESPACE") == [b'(("" ".")) NIL NIL']

    typ, data = c.select("INBOX")
    assert typ == "OK" and data == [b"3"]
    assert c.untagged_responses["RECENT"] == [b"3"]
    assert c.untagged_responses["FLAGS"] == [b"(\\Answered \\Flagged \\Deleted \\Seen \\Draft)"]
    validity = int(c.untagged_responses["UIDVALIDITY"][0])
    assert c.untagged_responses["UIDNEXT"] == [b"4"]
    assert validity > 0
    # Deliveries were moved to cur/ with an empty info.
    # In delivery order: digit runs compare as numbers (`M61129` before `M301367`), as UIDs go.
    files = sorted(imap.all_mail(), key=lambda p: [int(t) if t.isdigit() else t
                                                    for t in re.split(r"(\d+)", p.name)])
    assert all(p.parent.name == "cur" and p.name.endswith(":2,") for p in files)

    typ, data = c.fetch("1:3", "(UID FLAGS RFC822.SIZE)")
    sizes = [len(crlf(p.read_bytes())) for p in files]
    assert data == [f"{i + 1} (UID {i + 1} FLAGS (\\Recent) RFC822.SIZE {sizes[i]})".encode() for i in range(3)]

    typ, data = c.fetch("2", "(BODY.PEEK[])")
    assert data[0][0] == f"2 (BODY[] {{{sizes[1]}}}".encode()
    assert data[0][1] == crlf(files[1].read_bytes())
    typ, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)])")
    assert data[0][1] == b"From: Sender <sender@example.com>\r\nSubject: message 0\r\n\r\n"
    typ, data = c.fetch("1", "(BODY.PEEK[TEXT]<0.8>)")
    assert data[0][0] == b"1 (BODY[TEXT]<0> {8}" and data[0][1] == b"line one"
    typ, data = c.fetch("1", "(ENVELOPE)")
    assert b'"message 0" (("Sender" NIL "sender" "example.com"))' in data[0], data
    assert data[0].endswith(b'NIL NIL NIL "<m0@example.com>"))')
    typ, data = c.fetch("1", "(BODYSTRUCTURE)")
    assert b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit"' in data[0], data

    # BODY[] without PEEK sets \Seen and reports it.
    typ, data = c.fetch("3", "(BODY[])")
    assert b"FLAGS (\\Seen \\Recent)" in data[1] or b"FLAGS (\\Seen \\Recent)" in data[0][0], data
    assert any(p.name.endswith(":2,S") for p in imap.all_mail())

    typ, data = c.store("1:2", "+FLAGS", "(\\Flagged $Label1)")
    assert data == [b"1 (FLAGS (\\Flagged $Label1 \\Recent))", b"2 (FLAGS (\\Flagged $Label1 \\Recent))"]
    typ, data = c.uid("STORE", "2", "-FLAGS.SILENT", "(\\Flagged)")
    assert typ == "OK" and data == [None]

    assert c.search(None, "FLAGGED") == ("OK", [b"1"])
    assert c.search(None, "UNSEEN") == ("OK", [b"1 2"])
    assert c.search(None, "KEYWORD", "$Label1") == ("OK", [b"1 2"])
    assert c.search(None, "SUBJECT", '"message 1"') == ("OK", [b"2"])
    assert c.search(None, "FROM", "sender@example.com") == ("OK", [b"1 2 3"])
    assert c.search(None, "BODY", '"line one of 2"') == ("OK", [b"3"])
    assert c.search(None, "TEXT", "m1@example") == ("OK", [b"2"])
    assert c.search(None, "OR", "FLAGGED", "SEEN") == ("OK", [b"1 3"])
    assert c.search(None, "NOT", "SEEN", "LARGER", "10") == ("OK", [b"1 2"])
    assert c.search(None, "SMALLER", "10") == ("OK", [b""])
    assert c.search(None, "2:*") == ("OK", [b"2 3"])
    assert c.uid("SEARCH", "UID", "1,3") == ("OK", [b"1 3"])
    assert c.search(None, "SINCE", "1-Jan-2000", "BEFORE", "1-Jan-2200") == ("OK", [b"1 2 3"])
    assert c.search(None, "ON", "1-Jan-2000") == ("OK", [b""])
    assert c.search("UTF-8", "ALL") == ("OK", [b"1 2 3"])

    typ, data = c.store("2", "+FLAGS", "(\\Deleted)")
    typ, data = c.expunge()
    assert typ == "OK" and data == [b"2"]
    assert len(imap.all_mail()) == 2
    typ, data = c.fetch("1:*", "(UID)")
    assert data == [b"1 (UID 1)", b"2 (UID 3)"]
    assert c._simple_command("CHECK")[0] == "OK"
    assert c._simple_command("UNSELECT")[0] == "OK"
    assert c.logout()[0] == "BYE"


def test_append_fetch_byte_exact_copy_move_folders_status(imap):
    imap.start()
    c = login(imap)
    msg = b"From: a@b.example\r\nSubject: appended\r\n\r\nbody line\r\n.dot line\r\n"
    typ, data = c.append("INBOX", "(\\Seen $Work)", '"17-Jul-1996 02:44:25 -0700"', msg)
    assert typ == "OK"
    m = re.match(rb"\[APPENDUID (\d+) 1\] Append completed\.", data[0])
    assert m, data
    inbox_validity = int(m.group(1))
    typ, data = c.append("Nope", None, None, msg)
    assert typ == "NO" and data[0].startswith(b"[TRYCREATE]")

    c.select("INBOX")
    typ, data = c.fetch("1", "(FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
    assert data[0][0] == (f'1 (FLAGS (\\Seen $Work) INTERNALDATE "17-Jul-1996 09:44:25 +0000" '
                          f'RFC822.SIZE {len(msg)} BODY[] {{{len(msg)}}}').encode()
    assert data[0][1] == msg

    assert c.create("Work")[0] == "OK"
    typ, data = c.create("Work")
    assert typ == "NO" and data[0].startswith(b"[ALREADYEXISTS]")
    assert c.create("Work.2024")[0] == "OK"
    typ, data = c.list('""', "Work*")
    assert data == [b'(\\HasChildren) "." "Work"', b'(\\HasNoChildren) "." "Work.2024"']
    assert c.subscribe("Work")[0] == "OK"

    typ, data = c.copy("1", "Work")
    assert typ == "OK"
    m = re.match(rb"\[COPYUID (\d+) 1 1\] Copy completed\.", data[0])
    assert m, data
    typ, data = c.status("Work", "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)")
    assert data == [f'"Work" (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {int(m.group(1))} UNSEEN 0)'.encode()]

    typ, data = c._simple_command("MOVE", "1", "Archive")
    assert typ == "OK", data
    assert c.untagged_responses.pop("EXPUNGE") == [b"1"]
    ok = c.untagged_responses.pop("OK")
    assert any(re.match(rb"\[COPYUID \d+ 1 1\]", x) for x in ok), ok
    typ, data = c.status("INBOX", "(MESSAGES)")
    assert data == [b'"INBOX" (MESSAGES 0)']

    assert c.rename("Work", "Play")[0] == "OK"
    typ, data = c.list('""', "*")
    names = [d.rsplit(b" ", 1)[1] for d in data]
    assert b'"Play"' in names and b'"Play.2024"' in names and b'"Work"' not in names
    typ, data = c.delete("Play")
    assert typ == "NO"
    assert c.delete("Play.2024")[0] == "OK"
    assert c.delete("Play")[0] == "OK"
    typ, data = c.delete("Play")
    assert typ == "NO" and data[0].startswith(b"[NONEXISTENT]")
    typ, data = c.delete("INBOX")
    assert typ == "NO"
    typ, data = c.select("Archive")
    assert data == [b"1"]
    typ, data = c.fetch("1", "(BODY.PEEK[])")
    assert data[0][1] == msg
    typ, data = c.select("Archive", readonly=True)
    assert typ == "OK"
    typ, data = c.store("1", "+FLAGS", "(\\Deleted)")
    assert typ == "NO"
    c.logout()
    assert inbox_validity > 0


def test_two_sessions_see_each_others_changes(imap):
    imap.start()
    imap.deliver_all([body(i) for i in range(3)])
    a, b = Raw(imap.imap_port), Raw(imap.imap_port)
    a.login()
    b.login()
    assert a.cmd("s", "SELECT INBOX")[-1].startswith(b"s OK [READ-WRITE]")
    assert b.cmd("s", "SELECT INBOX")[-1].startswith(b"s OK [READ-WRITE]")
    r = a.cmd("f", "STORE 2 +FLAGS (\\Flagged)")
    assert r == [b"* 2 FETCH (FLAGS (\\Flagged \\Recent))", b"f OK Store completed."]
    r = b.cmd("n", "NOOP")
    assert r == [b"* 2 FETCH (FLAGS (\\Flagged))", b"n OK NOOP completed."], r
    a.cmd("d", "STORE 1 +FLAGS.SILENT (\\Deleted)")
    r = a.cmd("e", "EXPUNGE")
    assert r == [b"* 1 EXPUNGE", b"e OK Expunge completed."]
    imap.deliver_all([body(9)])
    r = b.cmd("n", "NOOP")
    assert r == [b"* 1 EXPUNGE", b"* 3 EXISTS", b"* 1 RECENT", b"n OK NOOP completed."], r
    r = a.cmd("n", "NOOP")
    assert r == [b"* 3 EXISTS", b"* 2 RECENT", b"n OK NOOP completed."], r
    r = b.cmd("f", "FETCH 1:* (UID FLAGS)")
    assert r[:3] == [b"* 1 (UID 2 FLAGS (\\Flagged))".replace(b"* 1 (", b"* 1 FETCH ("),
                     b"* 2 FETCH (UID 3 FLAGS ())", b"* 3 FETCH (UID 4 FLAGS (\\Recent))"], r
    a.close()
    b.close()


def wakeups(pids):
    """Context switches of the processes so far: a process that sleeps in its poll adds
    none."""
    n = 0
    for pid in pids:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                n += int(line.split()[1])
    return n


def test_idle_woken_by_smtp_delivery(imap):
    imap.start()
    imap.deliver_all([body(0)])
    c = Raw(imap.imap_port)
    c.login()
    c.cmd("s", "SELECT INBOX")
    c.send(b"i IDLE\r\n")
    assert c.line() == b"+ idling"
    # Not polling: while nothing happens imapd does not wake up at all (a one-second
    # poll would add a switch each second); then the delivery alone wakes it.
    procs = pids_of("imapd", imap.root)
    assert procs
    before = wakeups(procs)
    time.sleep(3)
    assert wakeups(procs) == before, "imapd woke up while its IDLE session had nothing new"
    t0 = time.time()
    imap.send(body(1))
    # The delivery is the wake-up: no NOOP, no polling by the client.
    assert c.line() == b"* 2 EXISTS"
    assert time.time() - t0 < 5
    assert c.line() == b"* 2 RECENT"
    c.send(b"DONE\r\n")
    assert c.until_tag(b"i") == [b"i OK Idle completed."]
    # Another session's flag change also wakes an idler.
    other = Raw(imap.imap_port)
    other.login()
    other.cmd("s", "SELECT INBOX")
    c.send(b"j IDLE\r\n")
    assert c.line() == b"+ idling"
    other.cmd("f", "STORE 1 +FLAGS.SILENT (\\Answered)")
    assert c.line() == b"* 1 FETCH (FLAGS (\\Answered \\Recent))"
    c.send(b"DONE\r\n")
    assert c.until_tag(b"j") == [b"j OK Idle completed."]
    c.close()
    other.close()


def test_bad_input_gets_bad_or_no_never_a_crash(imap):
    imap.start()
    imap.deliver_all([body(0)])
    c = Raw(imap.imap_port)
    assert c.cmd("a", "SELECT INBOX") == [b"a BAD Please log in first."]
    assert c.cmd("a2", "LOGOUT BOGUS") == [b"a2 BAD Error in IMAP command LOGOUT: Extra arguments."]
    assert c.cmd("b", "FROBNICATE") == [b"b BAD Error in IMAP command FROBNICATE: Unknown command."]
    c.send(b"\r\n")
    assert c.line().startswith(b"* BAD")
    assert c.cmd("c", 'LOGIN "unterminated') == [b"c BAD Error in IMAP command: Unterminated quoted string."]
    assert c.cmd("d", "LOGIN demo " + "(" * 100 + ")" * 100)[0].startswith(b"d BAD")
    # A 2 GB synchronising literal is refused before anything is allocated.
    c.send(b"e APPEND INBOX {2147483648}\r\n")
    assert c.line() == b"e NO [TOOBIG] Literal too big."
    c.login()
    assert c.cmd("f", "FETCH 1 FLAGS") == [b"f BAD No mailbox selected."]
    c.cmd("s", "SELECT INBOX")
    assert c.cmd("g", "FETCH 5 FLAGS") == [b"g BAD Error in IMAP command: Invalid messageset."]
    assert c.cmd("h", "FETCH 0:1 FLAGS") == [b"h BAD Error in IMAP command: Invalid messageset."]
    assert c.cmd("i", "FETCH 1,,2 FLAGS") == [b"i BAD Error in IMAP command: Invalid messageset."]
    assert c.cmd("j", "UID FETCH 99 FLAGS") == [b"j OK Fetch completed."]
    assert c.cmd("k", "FETCH 1 (FLAGS BOGUS)") == [b"k BAD Error in IMAP command FETCH: Invalid fetch attribute."]
    assert c.cmd("l", "STORE 1 +FLAGS (\\Bogus)") == [b"l BAD Invalid system flag."]
    assert c.cmd("m", "SEARCH FOO") == [b"m BAD Error in IMAP command SEARCH: Unknown argument"]
    assert c.cmd("n", "COPY 1 Nowhere") == [b"n NO [TRYCREATE] Mailbox doesn't exist."]
    assert c.cmd("o", "CREATE a..b") == [b"o NO [CANNOT] Invalid mailbox name."]
    assert c.cmd("q", "SEARCH CHARSET KOI8-R ALL")[0].startswith(b"q NO [BADCHARSET")
    assert c.cmd("r", "FETCH 1 BODY.PEEK[1.2.3]") == [b"* 1 FETCH (BODY[1.2.3] {0}", b")", b"r OK Fetch completed."]
    # A failed SELECT leaves no mailbox selected (RFC 3501).
    assert c.cmd("p", "SELECT Nowhere") == [b"p NO [NONEXISTENT] Mailbox doesn't exist."]
    assert c.cmd("p2", "FETCH 1 FLAGS") == [b"p2 BAD No mailbox selected."]
    long = b"t NOOP " + b"x" * 70000 + b"\r\n"
    c.send(long)
    assert c.line() == b"t BAD [TOOBIG] Command line too long."
    assert c.cmd("u", "NOOP") == [b"u OK NOOP completed."]
    # A non-synchronising literal over the limit: the bytes are coming anyway, so BYE.
    c.send(b"v APPEND INBOX {2147483648+}\r\n")
    assert c.line() == b"* BYE [TOOBIG] Literal too big."
    c.close()
    # The process survived all of it.
    c = Raw(imap.imap_port)
    c.login()
    c.close()


def test_starttls_authenticate_plain_and_imaps(imap):
    imap.start()
    c = imaplib.IMAP4("127.0.0.1", imap.imap_port, timeout=30)
    c.starttls(ssl_context=tls_context())
    assert "STARTTLS" not in c.capabilities
    typ, _ = c.authenticate("PLAIN", lambda _: f"\0demo\0{PASSWORD}".encode())
    assert typ == "OK"
    c.logout()

    # SASL-IR, and a wrong password.
    r = Raw(imap.imap_port)
    ir = base64.b64encode(f"\0demo\0{PASSWORD}".encode()).decode()
    assert r.cmd("a", f"AUTHENTICATE PLAIN {ir}")[-1].startswith(b"a OK [CAPABILITY")
    r.close()
    r = Raw(imap.imap_port)
    assert r.cmd("b", 'LOGIN demo "wrong"') == [b"b NO [AUTHENTICATIONFAILED] Authentication failed."]
    r.send(b"c AUTHENTICATE PLAIN\r\n")
    assert r.line() == b"+ "
    r.send(b"*\r\n")
    assert r.until_tag(b"c") == [b"c BAD Authentication aborted by client."]
    r.close()

    s = imaplib.IMAP4_SSL("127.0.0.1", imap.imaps_port, ssl_context=tls_context(), timeout=30)
    assert "STARTTLS" not in s.capabilities
    assert s.login("demo", PASSWORD)[0] == "OK"
    assert s.select("INBOX")[0] == "OK"
    s.logout()


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="mbsync (isync) not installed")
def test_mbsync_both_ways_and_again_with_no_change(imap, tmp_path):
    imap.start()
    imap.deliver_all([body(i) for i in range(3)])
    local = tmp_path / "local"
    local.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(f"""IMAPAccount t
Host 127.0.0.1
Port {imap.imap_port}
User demo
Pass "{PASSWORD}"
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account t

MaildirStore local
Path {local}/
Inbox {local}/INBOX

Channel c
Far :remote:
Near :local:
Patterns INBOX
Create Both
Expunge Both
SyncState *
""")

    def sync():
        r = subprocess.run(["mbsync", "-c", str(rc), "-a"], capture_output=True, timeout=60, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        return r

    sync()
    inbox = local / "INBOX"
    got = [p for sub in ("new", "cur") for p in (inbox / sub).iterdir()]
    assert len(got) == 3
    # Local → server: a new local message is uploaded.
    (inbox / "new" / "1700000000.local1.host").write_bytes(b"From: l@x.example\nSubject: local\n\nfrom mbsync\n")
    sync()
    c = login(imap)
    typ, data = c.select("INBOX")
    assert data == [b"4"]
    typ, data = c.search(None, "SUBJECT", "local")
    assert data == [b"4"]
    # Server-side change goes down.
    c.store("1", "+FLAGS", "(\\Flagged)")
    c.logout()
    sync()
    flagged = [p for p in (inbox / "cur").iterdir() if ":2," in p.name and "F" in p.name.split(":2,")[1]]
    assert len(flagged) == 1
    # Again with no change: nothing moves either way.
    before = sorted(p.name for sub in ("new", "cur") for p in (inbox / sub).iterdir())
    server_before = sorted(p.name for p in imap.all_mail())
    sync()
    assert sorted(p.name for sub in ("new", "cur") for p in (inbox / sub).iterdir()) == before
    assert sorted(p.name for p in imap.all_mail()) == server_before


def test_condstore_modseq_changedsince_unchangedsince(imap):
    imap.start()
    imap.deliver_all([body(i) for i in range(2)])
    c = Raw(imap.imap_port)
    c.login()
    assert b"CONDSTORE" in c.cmd("c", "CAPABILITY")[0]
    r = c.cmd("s", "SELECT INBOX (CONDSTORE)")
    hms = [l for l in r if l.startswith(b"* OK [HIGHESTMODSEQ ")]
    assert len(hms) == 1, r
    high = int(hms[0].split()[3].rstrip(b"]"))
    r = c.cmd("f", "FETCH 1:* (UID MODSEQ)")
    seqs = [int(re.search(rb"MODSEQ \((\d+)\)", l).group(1)) for l in r[:-1]]
    assert len(seqs) == 2 and max(seqs) <= high
    r = c.cmd("t", "STORE 2 +FLAGS (\\Flagged)")
    m2 = int(re.search(rb"MODSEQ \((\d+)\)", r[0]).group(1))
    assert m2 > high and r[0].startswith(b"* 2 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ (")
    r = c.cmd("g", f"FETCH 1:* (FLAGS) (CHANGEDSINCE {high})")
    assert len(r) == 2 and r[0].startswith(b"* 2 FETCH (FLAGS (\\Flagged \\Recent) MODSEQ ("), r
    r = c.cmd("u", f"STORE 1:2 (UNCHANGEDSINCE {high}) +FLAGS.SILENT (\\Seen)")
    assert r[-1] == b"u OK [MODIFIED 2] Conditional store failed.", r
    # Message 1 got \Seen (a newer MODSEQ) from the conditional STORE; 2 kept m2.
    r = c.cmd("h", f"SEARCH MODSEQ {m2}")
    m = re.match(rb"\* SEARCH 1 2 \(MODSEQ (\d+)\)$", r[0])
    assert m and int(m.group(1)) > m2, r
    r = c.cmd("h2", f"SEARCH MODSEQ {int(m.group(1))}")
    assert r[0] == f"* SEARCH 1 (MODSEQ {int(m.group(1))})".encode(), r
    r = c.cmd("i", "STATUS INBOX (HIGHESTMODSEQ)")
    assert re.match(rb'\* STATUS "INBOX" \(HIGHESTMODSEQ \d+\)', r[0]), r
    assert c.cmd("e", "ENABLE CONDSTORE") == [b"* ENABLED", b"e OK Enabled."]
    c.close()
