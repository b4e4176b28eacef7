"""End-to-end tests of `local`: real binary, real socket, queue files written through
oxipost-queue, mailboxes read back with Python's `mailbox` module."""

import mailbox
import os
import pwd
import re
import stat
import subprocess
import time

import pytest

from conftest import LOCAL, recv_frame, send_frame

SENDER = "bob@remote.test"
MESSAGE = (
    b"From: Bob <bob@remote.test>\r\n"
    b"To: alice@example.org\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b"Hi Alice,\r\n"
    b"From the start: a line that mbox must quote.\r\n"
    b">From an already quoted line.\r\n"
    b"bare\rCR stays\r\n"
    b"last line without end"
)
# As a mailbox stores it: LF line ends, last line completed.
STORED = (
    MESSAGE.replace(b"\r\n", b"\n") + b"\n"
)


def prepended(rcpt, orig=None):
    return (
        f"Return-Path: <{SENDER}>\n"
        f"X-Original-To: {orig or rcpt}\n"
        f"Delivered-To: {rcpt}\n"
    ).encode()


def maildir_of(agent, user="alice"):
    return mailbox.Maildir(str(agent.home / user / "Maildir"), factory=None, create=False)


def test_maildir_delivery_byte_for_byte(start_local):
    agent = start_local()
    qid, results = agent.deliver(SENDER, ["alice@example.org"], MESSAGE)
    assert results == [
        {
            "index": 0,
            "outcome": "delivered",
            "status": "2.0.0",
            "text": "delivered to maildir",
            "relay": "local",
        }
    ]
    md = maildir_of(agent)
    keys = md.keys()
    assert len(keys) == 1
    assert md.get_bytes(keys[0]) == prepended("alice@example.org") + STORED
    new = agent.home / "alice" / "Maildir" / "new"
    (f,) = list(new.iterdir())
    assert stat.S_IMODE(f.stat().st_mode) == 0o600
    assert not list((agent.home / "alice" / "Maildir" / "tmp").iterdir())
    log = agent.log()
    assert re.search(
        rf"local\[\d+\]: {qid}: to=<alice@example\.org>, relay=local, delay=[\d.]+, "
        r"delays=[\d.]+/0/0/[\d.]+, dsn=2\.0\.0, status=sent \(delivered to maildir\)",
        log,
    ), log


def test_several_recipients_each_get_their_own_file(start_local):
    agent = start_local()
    rcpts = [
        "alice@example.org",
        "Alice+Lists@Example.org",
        ("alice@localhost", "rfc822;boss+2Bx@example.org"),
    ]
    qid, results = agent.deliver(SENDER, rcpts, MESSAGE)
    assert [r["index"] for r in results] == [0, 1, 2]
    assert all(r["outcome"] == "delivered" for r in results), results
    md = maildir_of(agent)
    got = sorted(md.get_bytes(k) for k in md.keys())
    want = sorted(
        [
            prepended("alice@example.org") + STORED,
            prepended("Alice+Lists@Example.org") + STORED,
            prepended("alice@localhost", "boss+x@example.org") + STORED,
        ]
    )
    assert got == want
    log = agent.log()
    assert f"{qid}: to=<alice@localhost>, orig_to=<boss+x@example.org>, relay=local" in log
    assert f"{qid}: to=<Alice+Lists@Example.org>, relay=local" in log


def test_several_requests_on_one_connection(start_local):
    agent = start_local()
    with agent.connect() as s:
        for n in range(3):
            qid, path = agent.enqueue(SENDER, ["alice@example.org"], MESSAGE)
            send_frame(s, agent.request(qid, path, SENDER, ["alice@example.org"]))
            reply = recv_frame(s)
            assert reply["results"][0]["outcome"] == "delivered"
    assert len(maildir_of(agent).keys()) == 3


def test_garbage_frame_closes_the_connection_only(start_local):
    agent = start_local()
    with agent.connect() as s:
        s.sendall(b"\x00\x00\x00\x05junk!")
        assert s.recv(10) == b""
    assert "warning: bad delivery request" in agent.log()
    _, results = agent.deliver(SENDER, ["alice@example.org"], MESSAGE)
    assert results[0]["outcome"] == "delivered"


def test_unknown_user_is_bounced(start_local):
    agent = start_local()
    qid, results = agent.deliver(SENDER, ["Carol+x@example.org", "alice@example.org"], MESSAGE)
    assert results[0]["outcome"] == "bounced"
    assert results[0]["status"] == "5.1.1"
    assert results[0]["text"] == 'unknown user: "carol+x"'
    assert results[1]["outcome"] == "delivered"
    assert (
        f'{qid}: to=<Carol+x@example.org>, relay=local' in agent.log()
        and 'dsn=5.1.1, status=bounced (unknown user: "carol+x")' in agent.log()
    )


def test_mail_loop_is_bounced(start_local):
    agent = start_local()
    looped = b"Delivered-To: ALICE@example.org\r\n" + MESSAGE
    _, results = agent.deliver(SENDER, ["alice@example.org"], looped)
    assert results[0]["outcome"] == "bounced"
    assert results[0]["status"] == "5.4.6"
    assert results[0]["text"] == "mail forwarding loop for alice@example.org"
    assert not (agent.home / "alice" / "Maildir").exists() or not maildir_of(agent).keys()


def test_foreign_domain_is_kept_queued(start_local):
    agent = start_local()
    _, results = agent.deliver(SENDER, ["alice@elsewhere.test"], MESSAGE)
    assert results[0]["outcome"] == "deferred"
    assert results[0]["status"] == "4.3.5"


def test_maildir_over_size_limit_is_deferred(start_local):
    agent = start_local(mailbox_size_limit=2000)
    big = MESSAGE + b"\r\n" + b"x" * 5000 + b"\r\n"
    qid, results = agent.deliver(SENDER, ["alice@example.org"], big)
    assert results[0]["outcome"] == "deferred", results
    assert results[0]["status"] == "4.2.2"
    md = agent.home / "alice" / "Maildir"
    assert not list((md / "new").iterdir()) and not list((md / "tmp").iterdir())
    assert f"{qid}: to=<alice@example.org>" in agent.log()
    assert "dsn=4.2.2, status=deferred (maildir delivery failed:" in agent.log()


def test_message_size_limit_is_deferred(start_local):
    agent = start_local(message_size_limit=1000, home_mailbox="")
    big = MESSAGE + b"\r\n" + b"x" * 5000 + b"\r\n"
    _, results = agent.deliver(SENDER, ["alice@example.org"], big)
    assert (results[0]["outcome"], results[0]["status"]) == ("deferred", "4.2.2")
    spool = agent.spool / "alice"
    assert not spool.exists() or spool.stat().st_size == 0


def check_mbox(path, rcpts):
    raw = path.read_bytes()
    box = mailbox.mbox(str(path), create=False)
    keys = box.keys()
    assert len(keys) == len(rcpts)
    quoted = STORED.replace(b"\nFrom the start", b"\n>From the start")
    for key, rcpt in zip(keys, rcpts):
        assert box.get_bytes(key) == prepended(rcpt) + quoted
        msg = box.get_message(key)
        assert re.fullmatch(
            r"bob@remote\.test  \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}", msg.get_from()
        ), msg.get_from()
    # Each message ends with one empty line before the next From line.
    assert raw.count(b"\n\nFrom bob@remote.test  ") == len(rcpts) - 1
    assert raw.endswith(b"last line without end\n\n")


def test_mbox_in_spool_directory(start_local):
    agent = start_local(home_mailbox="")
    _, results = agent.deliver(SENDER, ["alice@example.org"], MESSAGE)
    assert results[0]["text"] == "delivered to mailbox", results
    _, results = agent.deliver(SENDER, ["alice+x@example.org"], MESSAGE)
    assert results[0]["outcome"] == "delivered"
    check_mbox(agent.spool / "alice", ["alice@example.org", "alice+x@example.org"])
    assert stat.S_IMODE((agent.spool / "alice").stat().st_mode) == 0o600
    assert not (agent.spool / "alice.lock").exists()
    assert "status=sent (delivered to mailbox)" in agent.log()


def test_mbox_under_home(start_local):
    agent = start_local(home_mailbox="Mailbox")
    (agent.home / "alice").mkdir()
    _, results = agent.deliver(SENDER, ["alice@example.org", "alice@localhost"], MESSAGE)
    assert [r["outcome"] for r in results] == ["delivered", "delivered"], results
    check_mbox(agent.home / "alice" / "Mailbox", ["alice@example.org", "alice@localhost"])


def test_mbox_over_size_limit_is_deferred_and_unchanged(start_local):
    agent = start_local(home_mailbox="", mailbox_size_limit=3000)
    _, results = agent.deliver(SENDER, ["alice@example.org"], MESSAGE)
    assert results[0]["outcome"] == "delivered"
    before = (agent.spool / "alice").read_bytes()
    _, results = agent.deliver(SENDER, ["alice@example.org"], MESSAGE + b"y" * 4000)
    assert (results[0]["outcome"], results[0]["status"]) == ("deferred", "4.2.2")
    assert results[0]["text"].startswith(f"cannot update mailbox {agent.spool / 'alice'} for user alice.")
    assert (agent.spool / "alice").read_bytes() == before


def write_script(path, body):
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_mailbox_command_environment_and_input(start_local, tmp_path):
    out = tmp_path / "cmd"
    out.mkdir()
    out.chmod(0o777)
    script = write_script(
        tmp_path / "record.sh",
        f'env > {out}/env\ncat > {out}/stdin\necho "$1" > {out}/arg\n',
    )
    agent = start_local(mailbox_command=f'{script} "$EXTENSION"')
    (agent.home / "alice").mkdir()
    attributes = [["client_address", "192.0.2.7"], ["helo_name", "client.test"]]
    qid, results = agent.deliver(SENDER, ["Alice+Ext@Example.org"], MESSAGE, attributes)
    assert results[0] == {
        "index": 0,
        "outcome": "delivered",
        "status": "2.0.0",
        "text": f'delivered to command: {script} "$EXTENSION"',
        "relay": "local",
    }
    env = dict(
        line.split("=", 1) for line in (out / "env").read_text().splitlines() if "=" in line
    )
    home = str(agent.home / "alice")
    assert env["SENDER"] == SENDER
    assert env["RECIPIENT"] == "Alice+Ext@Example.org"
    assert env["ORIGINAL_RECIPIENT"] == "Alice+Ext@Example.org"
    assert env["LOCAL"] == "alice+ext"
    assert env["EXTENSION"] == "ext"
    assert env["DOMAIN"] == "Example.org"
    assert env["USER"] == env["LOGNAME"] == "alice"
    assert env["HOME"] == home
    assert env["SHELL"] == "/bin/sh"
    assert env["PATH"] == "/usr/bin:/bin"
    assert env["TZ"] == "UTC"  # export_environment
    assert env["CLIENT_ADDRESS"] == "192.0.2.7"
    assert env["CLIENT_HELO"] == "client.test"
    assert "OXIPOST_LISTEN_FDS" not in env
    assert (out / "arg").read_text() == "ext\n"
    stdin = (out / "stdin").read_bytes()
    first, rest = stdin.split(b"\n", 1)
    assert re.fullmatch(rb"From bob@remote\.test  \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}", first)
    assert rest == prepended("Alice+Ext@Example.org") + STORED
    assert f"{qid}: to=<Alice+Ext@Example.org>, relay=local" in agent.log()


def test_mailbox_command_tempfail_is_deferred(start_local, tmp_path):
    script = write_script(tmp_path / "busy.sh", "cat >/dev/null\necho 'mailbox busy'\nexit 75\n")
    agent = start_local(mailbox_command=str(script))
    qid, results = agent.deliver(SENDER, ["alice@example.org"], MESSAGE)
    assert results[0]["outcome"] == "deferred"
    assert results[0]["status"] == "4.3.0"
    assert results[0]["text"] == "temporary failure. Command output: mailbox busy"
    assert "dsn=4.3.0, status=deferred (temporary failure. Command output: mailbox busy)" in agent.log()


def test_mailbox_command_failure_is_bounced(start_local, tmp_path):
    script = write_script(tmp_path / "fail.sh", "exit 1\n")
    agent = start_local(mailbox_command=str(script))
    _, results = agent.deliver(SENDER, ["alice@example.org"], MESSAGE)
    assert (results[0]["outcome"], results[0]["status"]) == ("bounced", "5.3.0")
    assert results[0]["text"] == f'Command died with status 1: "{script}"'


def test_mailbox_command_time_limit(start_local, tmp_path):
    script = write_script(tmp_path / "slow.sh", "sleep 60\n")
    agent = start_local(mailbox_command=str(script), command_time_limit="1s")
    started = time.monotonic()
    _, results = agent.deliver(SENDER, ["alice@example.org"], MESSAGE)
    assert time.monotonic() - started < 20
    # Deferred, not bounced as Postfix does (issue 5: "killed at command_time_limit and
    # the message deferred").
    assert (results[0]["outcome"], results[0]["status"]) == ("deferred", "4.3.0")
    assert results[0]["text"].startswith("Command time limit exceeded")


def test_unreadable_queue_file_defers_everyone(start_local):
    agent = start_local()
    with agent.connect() as s:
        req = agent.request("4ABCDEF", str(agent.queue / "nope"), SENDER, ["alice@example.org", "x@y"])
        send_frame(s, req)
        reply = recv_frame(s)
    assert [r["outcome"] for r in reply["results"]] == ["deferred", "deferred"]


def test_help():
    r = subprocess.run([str(LOCAL), "--help"], capture_output=True, timeout=30)
    assert r.returncode == 0
    assert b"usage: local" in r.stdout


def test_local_users_with_their_own_home(start_local, tmp_path):
    agent = start_local(local_users=f"alice, Dave:{tmp_path}/dave-home")
    _, results = agent.deliver(SENDER, ["dave@example.org"], MESSAGE)
    assert results[0]["outcome"] == "delivered", results
    md = mailbox.Maildir(str(tmp_path / "dave-home" / "Maildir"), factory=None, create=False)
    assert [md.get_bytes(k) for k in md.keys()] == [prepended("dave@example.org") + STORED]


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@needs_root
@pytest.mark.parametrize("spool_mode", [0o1777, 0o755])
def test_system_user_gets_a_mailbox_of_its_own(start_local, spool_mode):
    """As root, a system account's delivery runs with its uid (a world-writable spool) or
    creates the file as root and hands it over (a spool only root may write)."""
    nobody = pwd.getpwnam("nobody")
    agent = start_local(home_mailbox="")
    agent.spool.chmod(spool_mode)
    _, results = agent.deliver(SENDER, ["nobody@example.org"], MESSAGE)
    assert results[0]["outcome"] == "delivered", results
    box = agent.spool / "nobody"
    st = box.stat()
    assert (st.st_uid, st.st_gid) == (nobody.pw_uid, nobody.pw_gid)
    assert stat.S_IMODE(st.st_mode) == 0o600
    m = mailbox.mbox(str(box), create=False)
    assert len(m.keys()) == 1


def test_batch_of_messages_in_one_request(start_local):
    """qmgr sends a destination's backlog as one batch; each message gets its own file
    and its own result, in request order."""
    agent = start_local()
    reqs = []
    for i in range(5):
        qid, path = agent.enqueue(SENDER, ["alice@example.org"], f"Subject: batch {i}\r\n\r\nbody {i}\r\n".encode())
        reqs.append(agent.request(qid, path, SENDER, ["alice@example.org"]))
    with agent.connect() as s:
        send_frame(s, {"requests": reqs})
        reply = recv_frame(s)
    assert [r["results"][0]["outcome"] for r in reply["replies"]] == ["delivered"] * 5
    md = maildir_of(agent)
    bodies = sorted(md.get_bytes(k).split(b"\n\n", 1)[1] for k in md.keys())
    assert bodies == [f"body {i}\n".encode() for i in range(5)]
