"""Issue 5 items 3 and 4 end to end: local submission (sendmail, s-nail through our
sendmail, -t with Bcc removed, -bs), pickup through cleanup into the queue, the queue
tools on deferred mail (mailq/postqueue -p, -j parsed as JSON, postsuper -h/-H/-r/-d,
postcat -q), and the failure cases (unreadable stdin, unwritable maildrop, a corrupt
maildrop file). Each test runs a whole suite under master, bounded in time."""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import AS_USER, BIN, run, tool_env

EX_USAGE, EX_NOINPUT, EX_TEMPFAIL = 64, 66, 75


def sendmail(s, args, data, check=True, user=None, **kw):
    argv = ([] if user is None else ["runuser", "-u", user, "--"]) + [str(BIN / "sendmail")] + args
    r = subprocess.run(argv, input=data, capture_output=True, timeout=30, env=tool_env(s), **kw)
    if check:
        assert r.returncode == 0, (r.returncode, r.stderr)
    return r


def tool(s, name, *args, check=True, input=None):
    r = subprocess.run([str(BIN / name), *map(str, args)], capture_output=True, text=True, timeout=30,
                       env=tool_env(s), input=input)
    if check:
        assert r.returncode == 0, (name, args, r.returncode, r.stdout, r.stderr)
    return r


def wait(pred, timeout=30, what="condition", suite=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}" + ("\n" + suite.log()[-3000:] if suite else ""))


def break_local(s):
    text = (s.etc / "master.cf").read_text()
    lines = []
    for line in text.splitlines():
        w = line.split()
        if len(w) >= 8 and w[0] == "local" and w[1] == "unix" and w[-1] == "local":
            line = line[: line.rfind("local")] + "no-such-local-program"
        lines.append(line)
    (s.etc / "master.cf").write_text("\n".join(lines) + "\n")


def queue_json(s):
    out = tool(s, "postqueue", "-j").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_sendmail_message_reaches_maildir(suite):
    suite.start()
    sendmail(suite, ["-f", "alice@example.com", "demo@localhost"],
             b"Subject: local one\r\n\r\nfirst line\r\n.\r\nnot part of it\r\n")
    (path,) = suite.wait_for_mail(1)
    raw = path.read_bytes().decode()
    assert "Subject: local one\n" in raw
    assert raw.endswith("\nfirst line\n"), raw
    assert "Return-Path: <alice@example.com>" in raw
    assert "Received: by " in raw and "from userid" in raw
    # cleanup added what the message lacked.
    assert re.search(r"^Message-Id: <\d{14}\.\w+@", raw, re.M), raw
    assert re.search(r"^Date: ", raw, re.M) and re.search(r"^From: ", raw, re.M)
    assert not suite.queue_files("maildrop")
    assert "uid=" in suite.log() and "from=<alice@example.com>" in suite.log()


def test_sendmail_t_takes_recipients_and_removes_bcc(suite):
    suite.postconf("local_users = demo alice")
    suite.start()
    msg = (b"From: Someone <someone@example.com>\n"
           b"To: Demo <demo@localhost>\n"
           b"Bcc: alice@localhost\n"
           b"Subject: with bcc\n\nhidden copy\n")
    sendmail(suite, ["-t", "-i"], msg)
    (d,) = suite.wait_for_mail(1, "demo")
    (a,) = suite.wait_for_mail(1, "alice")
    for p in (d, a):
        text = p.read_text()
        assert "Subject: with bcc" in text
        assert "Bcc" not in text and "alice@localhost" not in text.split("\n\n", 1)[1], text
        assert "From: Someone <someone@example.com>" in text


def test_sendmail_usage_and_help(suite):
    r = subprocess.run([str(BIN / "sendmail"), "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "usage: sendmail" in r.stdout
    r = sendmail(suite, [], b"x\n", check=False)
    assert r.returncode == EX_USAGE, r
    r = sendmail(suite, ["-Z", "x"], b"x\n", check=False)
    assert r.returncode == EX_USAGE
    for prog in ["postqueue", "postsuper", "postcat", "postdrop", "mailq", "newaliases"]:
        r = subprocess.run([str(BIN / prog), "--help"], capture_output=True, text=True, timeout=10)
        assert r.returncode == 0 and "usage" in r.stdout.lower(), (prog, r)


@pytest.mark.skipif(shutil.which("s-nail") is None, reason="s-nail not installed")
def test_s_nail_submits_through_our_sendmail(suite):
    suite.start()
    env = tool_env(suite)
    env["HOME"] = str(suite.root)
    r = subprocess.run(
        ["s-nail", "-n", "-#", "-S", f"mta={BIN / 'sendmail'}", "-s", "from s-nail", "demo@localhost"],
        input=b"sent with s-nail\n", capture_output=True, timeout=30, env=env)
    assert r.returncode == 0, r
    (path,) = suite.wait_for_mail(1)
    text = path.read_text()
    assert "Subject: from s-nail" in text and "sent with s-nail" in text


def test_sendmail_bs_conversation(suite):
    suite.start()
    conv = (b"EHLO client.example\r\nMAIL FROM:<bs@example.com>\r\nRCPT TO:<demo@localhost>\r\n"
            b"DATA\r\nSubject: over -bs\r\n\r\nsmtp on stdin\r\n.\r\nQUIT\r\n")
    r = sendmail(suite, ["-bs"], conv)
    out = r.stdout.decode()
    assert out.startswith("220 "), out
    assert "250-PIPELINING" in out or "250 " in out
    assert re.search(r"250 2\.0\.0 Ok: queued as \w+", out), out
    assert "221 " in out
    (path,) = suite.wait_for_mail(1)
    assert "smtp on stdin" in path.read_text()


def test_unreadable_stdin_is_ex_noinput_and_queues_nothing(suite):
    suite.start()
    # stdin is a closed descriptor: every read fails with EBADF.
    r = subprocess.run(f"exec 0<&-; exec {BIN / 'sendmail'} demo@localhost", shell=True,
                       capture_output=True, timeout=30, env=tool_env(suite))
    assert r.returncode == EX_NOINPUT, r
    # A descriptor open for writing only: read fails with EBADF.
    r = subprocess.run(f"exec {BIN / 'sendmail'} demo@localhost 0>/dev/null", shell=True,
                       capture_output=True, timeout=30, env=tool_env(suite))
    assert r.returncode == EX_NOINPUT, r
    # A directory as stdin: read fails with EISDIR.
    fd = os.open(suite.root, os.O_RDONLY)
    try:
        r = subprocess.run([str(BIN / "sendmail"), "demo@localhost"], stdin=fd, capture_output=True,
                           timeout=30, env=tool_env(suite))
    finally:
        os.close(fd)
    assert r.returncode == EX_NOINPUT, r
    # An empty message from /dev/null is a message, as with Sendmail and Postfix.
    with open(os.devnull, "rb") as null:
        r = subprocess.run([str(BIN / "sendmail"), "demo@localhost"], stdin=null, capture_output=True,
                           timeout=30, env=tool_env(suite))
    assert r.returncode == 0, r
    suite.wait_for_mail(1)
    time.sleep(1)
    assert not [p for p in (suite.root / "spool" / "maildrop").iterdir()]
    assert not suite.queue_files("incoming") and not suite.queue_files("deferred")
    assert len(suite.new_mail()) == 1


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run sendmail as another user")
def test_unwritable_maildrop_is_ex_tempfail(suite):
    suite.start()
    r = sendmail(suite, ["demo@localhost"], b"Subject: x\n\nx\n", check=False, user="nobody")
    assert r.returncode == EX_TEMPFAIL, r
    assert b"fatal:" in r.stderr
    assert not list((suite.root / "spool" / "maildrop").iterdir())


def test_corrupt_maildrop_file_goes_to_corrupt(suite):
    suite.start()
    maildrop = suite.root / "spool" / "maildrop"
    bad = maildrop / "4jc3nW4J0bz1SdCJ"
    bad.write_bytes(b"OXQF\x00\x01\x00\x00\x01\x00\x00")  # header, then a cut record
    if AS_USER:
        shutil.chown(bad, "oxipost", "oxipost")
    sendmail(suite, ["demo@localhost"], b"Subject: after corrupt\n\nx\n")
    suite.wait_for_mail(1)
    wait(lambda: (suite.root / "spool" / "corrupt" / bad.name).exists(), what="corrupt file moved",
         suite=suite)
    assert not bad.exists()
    assert "corrupt maildrop file" in suite.log()


def deferred_suite(suite, n=2):
    suite.postconf("minimal_backoff_time = 300s", "maximal_backoff_time = 600s",
                   "queue_run_delay = 300s", "transport_retry_time = 1s", "service_throttle_time = 1s")
    break_local(suite)
    suite.start()
    for i in range(n):
        sendmail(suite, ["-f", f"s{i}@example.com", "demo@localhost"],
                 f"Subject: deferred {i}\n\nbody {i}\n".encode())
    wait(lambda: len(suite.queue_files("deferred")) == n, timeout=60, what="deferred mail", suite=suite)
    return [p.name for p in suite.queue_files("deferred")]


def test_mailq_postqueue_and_json_while_deferred(suite):
    ids = deferred_suite(suite)
    out = tool(suite, "mailq").stdout
    lines = out.splitlines()
    assert lines[0] == "----Queue ID----- --Size-- ---Arrival Time---- --Sender/Recipient------", out
    for qid in ids:
        assert re.search(rf"^{qid} +\d+ \w{{3}} \w{{3}} [ \d]\d \d\d:\d\d:\d\d s\d@example.com$", out, re.M), out
    assert re.search(r"^ {47}demo@localhost$", out, re.M), out
    assert lines[-1] == "-- 0 Kbytes in 2 Requests.", out
    assert tool(suite, "postqueue", "-p").stdout == out
    assert tool(suite, "sendmail", "-bp").stdout == out
    msgs = queue_json(suite)
    assert sorted(m["queue_id"] for m in msgs) == sorted(ids)
    for m in msgs:
        assert m["queue_name"] == "deferred"
        assert set(m) == {"queue_name", "queue_id", "arrival_time", "message_size", "forced_expire",
                          "sender", "recipients"}
        assert m["forced_expire"] is False and m["message_size"] > 0
        assert abs(m["arrival_time"] - time.time()) < 120
        assert m["recipients"][0]["address"] == "demo@localhost"


def test_postsuper_hold_release_requeue_delete(suite):
    ids = deferred_suite(suite)
    r = tool(suite, "postsuper", "-h", "ALL")
    assert "Placed on hold: 2 messages" in r.stderr, r.stderr
    out = tool(suite, "postqueue", "-p").stdout
    assert all(f"{i}!" in out for i in ids), out
    assert {m["queue_name"] for m in queue_json(suite)} == {"hold"}
    r = tool(suite, "postsuper", "-H", ids[0])
    assert f"{ids[0]}: released from hold" in r.stderr and "Released from hold: 1 message" in r.stderr
    # Released mail is due at once; local still fails, so it comes back to deferred.
    wait(lambda: {m["queue_id"]: m["queue_name"] for m in queue_json(suite)}.get(ids[0]) == "deferred",
         what="released message deferred again", suite=suite)
    r = tool(suite, "postsuper", "-r", "ALL", "hold")
    assert "Requeued: 1 message" in r.stderr, r.stderr
    wait(lambda: all(m["queue_name"] == "deferred" for m in queue_json(suite)) and len(queue_json(suite)) == 2,
         what="requeued message deferred again", suite=suite)
    r = tool(suite, "postsuper", "-d", "-", input=ids[0] + "\n")
    assert "Deleted: 1 message" in r.stderr
    r = tool(suite, "postsuper", "-d", "ALL")
    assert "Deleted: 1 message" in r.stderr
    assert tool(suite, "postqueue", "-p").stdout == "Mail queue is empty\n"
    assert not suite.queue_files("deferred")


def test_postqueue_i_delivers_one_deferred_message_after_repair(suite):
    ids = deferred_suite(suite, n=1)
    text = (suite.etc / "master.cf").read_text().replace("no-such-local-program", "local")
    (suite.etc / "master.cf").write_text(text)
    suite.mailctl("reload")
    time.sleep(1.5)
    tool(suite, "postqueue", "-i", ids[0])
    suite.wait_for_mail(1)
    r = tool(suite, "postqueue", "-i", "4jc3nW4J0bz1SdCJ", check=False)
    assert r.returncode != 0 and "no such message" in r.stderr


def test_postcat_q_shows_envelope_header_body(suite):
    (qid,) = deferred_suite(suite, n=1)
    full = tool(suite, "postcat", "-q", qid).stdout
    assert "*** ENVELOPE RECORDS" in full and "sender: s0@example.com" in full
    assert "recipient: demo@localhost" in full
    assert "*** MESSAGE CONTENTS" in full and "Subject: deferred 0" in full and "body 0" in full
    assert "*** MESSAGE FILE END" in full
    env = tool(suite, "postcat", "-e", "-q", qid).stdout
    assert "sender: s0@example.com" in env and "Subject:" not in env
    head = tool(suite, "postcat", "-hq", qid).stdout
    assert "Subject: deferred 0" in head and "body 0" not in head and "sender:" not in head
    body = tool(suite, "postcat", "-bq", qid).stdout
    assert "body 0" in body and "Subject:" not in body
    r = tool(suite, "postcat", "-q", "4jc3nW4J0bz1SdCJ", check=False)
    assert r.returncode == 1


def test_postsuper_s_repairs_structure(suite):
    (qid,) = deferred_suite(suite, n=1)
    suite.stop()
    spool = suite.root / "spool"
    (path,) = suite.queue_files("deferred")
    wrong = spool / "deferred" / qid
    path.rename(wrong)
    stale = spool / "incoming" / ".tmp.1.2.3"
    stale.write_bytes(b"x")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    (spool / "hold" / "bogus-name").write_bytes(b"x")
    r = tool(suite, "postsuper", "-s")
    assert not wrong.exists() and path.exists(), r.stderr
    assert not stale.exists()
    assert "bogus file name" in r.stderr
    assert (spool / "hold" / "bogus-name").exists()


def test_newaliases_rebuilds_the_suite_alias_database(suite):
    # Never the host's /etc/aliases: the suite's own file.
    aliases = suite.etc / "aliases"
    aliases.write_text("postmaster: demo\n")
    suite.postconf(f"alias_database = hash:{aliases}", f"alias_maps = hash:{aliases}")
    r = tool(suite, "newaliases", check=False)
    assert r.returncode == 0, r
    if (BIN / "postalias").exists():
        assert (suite.etc / "aliases.db").exists(), r
    else:
        assert "alias support is not available" in r.stderr
