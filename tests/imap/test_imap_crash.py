"""Issue 10: `kill -9` of imapd in the middle of APPEND (a large literal mid-flight), COPY,
MOVE and EXPUNGE of many messages, in a loop at varied points; then a new session checks
that no message is lost (a MOVE may leave a duplicate, never nothing), that no partial
message appears, and that the index is consistent: UIDs unique and ascending, EXISTS equal
to the files in the Maildir folder, UIDVALIDITY unchanged.

Messages are placed straight into the Maildir (as a delivery agent would), each with a
unique Message-ID, so a message is identified across folders by its Message-ID. imapd is
killed by pid (every imapd process of this suite: with several clients per process, the
kill takes the whole process down, which is the point); master starts a new one for the
next connection."""

import os
import signal
import time

import pytest

from conftest import PASSWORD, chown, pids_of
from test_dovecot_compare import Client, fetch_items

N = 300  # messages for COPY / MOVE / EXPUNGE
DELAYS = (0.0, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3)  # seconds between the command and the kill


EXPECTED = {}  # Message-ID -> size with CRLF line ends, of every message made


def message(i, size=1500):
    head = (f"From: crash-test <ct@example.com>\nTo: demo@localhost\nSubject: crash {i}\n"
            f"Message-ID: <crash-{i}@example.test>\n\n")
    line = f"message {i} body line of text to fill the message up to its size\n"
    body = line * (max(0, size - len(head)) // len(line) + 1)
    data = (head + body).encode()
    EXPECTED[f"<crash-{i}@example.test>"] = len(data.replace(b"\n", b"\r\n"))
    return data


def maildir_folder(imap, folder):
    md = imap.maildir("demo")
    return md if folder == "INBOX" else md / f".{folder}"


def files_in(imap, folder):
    d = maildir_folder(imap, folder)
    return [p for sub in ("new", "cur") if (d / sub).is_dir() for p in (d / sub).iterdir()]


def place(imap, count, start=0):
    md = imap.maildir("demo")
    t0 = 1716000000
    for i in range(start, start + count):
        name = f"{t0 + i}.M{i}P1Q{i}.crash"
        tmp = md / "tmp" / name
        tmp.write_bytes(message(i))
        chown(tmp)
        os.rename(tmp, md / "new" / name)


def session(imap) -> Client:
    c = Client(imap.imap_port)
    c.login("demo", PASSWORD)
    return c


def kill_imapd(imap, pids=None):
    """SIGKILL to `pids` (looked up before the command, so the kill is not delayed by the
    scan of /proc) or to every imapd of the suite."""
    for pid in pids if pids is not None else pids_of("imapd", imap.root):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + 10
    while pids_of("imapd", imap.root) and time.time() < deadline:
        time.sleep(0.02)


def state(imap, folder):
    """(UIDVALIDITY, [(uid, message-id, size)]) of `folder` in a new session, with the
    index checks every folder must pass."""
    c = session(imap)
    try:
        untagged, t = c.cmd(f"SELECT {folder}")
        assert t.startswith(b"OK"), t
        uidvalidity = exists = None
        for r in untagged:
            if len(r) >= 3 and r[0] == "*" and str(r[1]).upper() == "OK" and isinstance(r[2], str) \
                    and r[2].upper().startswith("[UIDVALIDITY"):
                uidvalidity = int(r[2].split()[1].rstrip("]"))
            if len(r) == 3 and str(r[2]).upper() == "EXISTS":
                exists = int(r[1])
        assert uidvalidity is not None and exists is not None, untagged
        msgs = []
        if exists:
            untagged, t = c.cmd("FETCH 1:* (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            assert t.startswith(b"OK"), t
            items = fetch_items(untagged)
            assert sorted(items) == list(range(1, exists + 1)), f"{folder}: FETCH 1:* skipped messages"
            for seq in sorted(items):
                d = items[seq]
                mid = d["BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode().split(":", 1)[-1].strip()
                msgs.append((int(d["UID"]), mid, int(d["RFC822.SIZE"])))
        uids = [m[0] for m in msgs]
        assert uids == sorted(set(uids)), f"{folder}: UIDs not unique and ascending: {uids}"
        assert exists == len(files_in(imap, folder)), \
            f"{folder}: EXISTS {exists} but {len(files_in(imap, folder))} files in the Maildir"
        return uidvalidity, msgs
    finally:
        c.close()


def check_whole(msgs):
    """Every message is complete (its size as placed or appended)."""
    for uid, mid, size in msgs:
        assert size == EXPECTED[mid], f"message {mid} (UID {uid}) is {size} bytes, want {EXPECTED[mid]}"


@pytest.fixture
def started(imap):
    imap.start()
    c = session(imap)  # creates the Maildir and the special-use folders
    _, t = c.cmd("SELECT INBOX")
    assert t.startswith(b"OK"), t
    c.close()
    for sub in ("new", "cur", "tmp"):
        assert (imap.maildir("demo") / sub).is_dir()
    return imap


def test_kill_during_append_large_literal(started):
    imap = started
    place(imap, 5)
    v0, before = state(imap, "INBOX")
    ids = {m[1] for m in before}
    size = 600_000  # under imapd_literal_size_limit (1 MiB in the tests' config)
    for k, frac in enumerate((0.0, 0.1, 0.5, 0.9, 0.999, 1.0)):
        i = 1000 + k
        data = message(i, size).replace(b"\n", b"\r\n")
        c = session(imap)
        c.s.sendall(f"A APPEND INBOX (\\Seen) {{{len(data)}}}\r\n".encode())
        assert c.line().startswith(b"+"), "no continuation for the literal"
        cut = int(len(data) * frac)
        c.s.sendall(data[:cut])
        if frac == 1.0:
            c.s.sendall(b"\r\n")  # complete: killed before or after the tagged OK
        time.sleep(0.05)
        kill_imapd(imap)
        c.close()
        v, after = state(imap, "INBOX")
        assert v == v0, "UIDVALIDITY changed after a kill during APPEND"
        got = {m[1] for m in after}
        assert ids <= got, f"messages lost: {ids - got}"
        new = got - ids
        assert new <= {f"<crash-{i}@example.test>"}, new
        if frac < 1.0:
            assert not new, f"a partial APPEND ({cut} of {len(data)} bytes) became a message"
        check_whole(after)
        ids = got


@pytest.mark.parametrize("op", ["COPY", "MOVE", "EXPUNGE"])
def test_kill_during_copy_move_expunge(started, op):
    imap = started
    place(imap, 2 * N if op == "EXPUNGE" else N)
    v_inbox, base = state(imap, "INBOX")
    v_trash, _ = state(imap, "Trash")
    everything = {m[1] for m in base}
    assert len(everything) == (2 * N if op == "EXPUNGE" else N)
    kept = set(everything)  # messages that must survive in INBOX (COPY, EXPUNGE)
    for k, delay in enumerate(DELAYS):
        c = session(imap)
        _, t = c.cmd("SELECT INBOX")
        assert t.startswith(b"OK"), t
        if op == "EXPUNGE":
            # Mark every other message still there; the rest must survive the kill.
            msgs = state(imap, "INBOX")[1]
            doomed = [m for j, m in enumerate(msgs) if j % 2 == k % 2]
            # A \Deleted left by the last round's interrupted EXPUNGE would doom more.
            _, t = c.cmd("UID STORE 1:* -FLAGS.SILENT (\\Deleted)")
            assert t.startswith(b"OK"), t
            if doomed:
                uids = ",".join(str(m[0]) for m in doomed)
                _, t = c.cmd(f"UID STORE {uids} +FLAGS.SILENT (\\Deleted)")
                assert t.startswith(b"OK"), t
            kept = {m[1] for m in msgs} - {m[1] for m in doomed}
            pids = pids_of("imapd", imap.root)
            c.s.sendall(b"X EXPUNGE\r\n")
        else:
            pids = pids_of("imapd", imap.root)
            c.s.sendall(f"X UID {op} 1:* Trash\r\n".encode())
        time.sleep(delay)
        kill_imapd(imap, pids)
        kill_imapd(imap)
        c.close()

        v1, inbox = state(imap, "INBOX")
        v2, trash = state(imap, "Trash")
        assert (v1, v2) == (v_inbox, v_trash), f"UIDVALIDITY changed (round {k}, delay {delay})"
        check_whole(inbox)
        check_whole(trash)
        in_inbox = {m[1] for m in inbox}
        in_trash = {m[1] for m in trash}
        print(f"{op} round {k} delay {delay}: INBOX {len(inbox)} Trash {len(trash)}")
        if op == "COPY":
            assert in_inbox == everything, f"COPY lost INBOX messages: {everything - in_inbox}"
        elif op == "MOVE":
            lost = everything - in_inbox - in_trash
            assert not lost, f"MOVE lost {len(lost)} messages (round {k}, delay {delay})"
        else:
            assert kept <= in_inbox, f"EXPUNGE lost undeleted messages: {kept - in_inbox}"
        if op == "MOVE" and not in_inbox:
            # Everything moved: put fresh messages in INBOX for the next round.
            place(imap, N // 3, start=N + 1000 * (k + 1))
            everything |= {m[1] for m in state(imap, "INBOX")[1]}
        if op == "EXPUNGE" and len(in_inbox) < 20:
            break
