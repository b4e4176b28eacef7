"""Issue 5 items 1 and 2 end to end: aliases(5) with every kind of destination
(local users, :include:, a pipe to a script that records its environment, a file, a
remote address re-injected into the queue with the owner- sender), alias loops, .forward
to a file and to another user, a hung command killed at command_time_limit and deferred,
newaliases while mail flows, s-nail submitting to an alias. Each test runs a whole suite
under master (tests/mailflow's fixture); every subprocess is bounded in time."""

import email
import os
import pwd
import re
import shutil
import subprocess
import threading
import time
from email import policy

import pytest

from conftest import AS_USER, BIN, run, tool_env

SUITE_USER = "oxipost" if AS_USER else pwd.getpwuid(os.geteuid()).pw_name


def sendmail(s, args, data):
    r = subprocess.run([str(BIN / "sendmail"), *args], input=data, capture_output=True, timeout=30,
                       env=tool_env(s))
    assert r.returncode == 0, (r.returncode, r.stderr)
    return r


def postconf_h(s, name):
    return run(BIN / "postconf", "-c", s.etc, "-h", name).stdout.strip()


def wait(pred, timeout=60, what="condition", suite=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}" + ("\n" + suite.log()[-4000:] if suite else ""))


def out_dir(s):
    d = s.root / "out"
    d.mkdir(exist_ok=True)
    os.chmod(d, 0o777)
    return d


def install_aliases(s, text, users="demo, alice, carol, bob", extra=()):
    """Writes the suite's aliases file, points the configuration at it, builds it."""
    (s.etc / "aliases").write_text(text)
    s.postconf(f"local_users = {users}", "recipient_delimiter = +",
               "default_transport = error:5.1.2 remote delivery disabled in this test", *extra)
    r = run(BIN / "postalias", "-c", s.etc, f"hash:{s.etc / 'aliases'}", as_suite_user=True, check=False)
    assert r.returncode == 0, r
    return r


def env_script(d, name="record.sh"):
    script = d / name
    script.write_text(f"#!/bin/sh\nenv > {d}/env.txt\ncat > {d}/msg.txt\n")
    os.chmod(script, 0o755)
    return script


def read_env(path):
    out = {}
    for line in path.read_text().splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


def messages(s, user):
    return [email.message_from_bytes(p.read_bytes(), policy=policy.default) for p in s.new_mail(user)]


def is_report(m):
    return m.get_content_type() == "multipart/report"


def test_alias_with_every_destination_kind(suite):
    d = out_dir(suite)
    script = env_script(d)
    inc = d / "include.list"
    inc.write_text("# an include file\ncarol\n")
    install_aliases(suite, (
        f"list: demo, alice,\n"
        f"  \"|{script}\", {d}/file.mbox,\n"
        f"  :include:{inc}, bob@remote.example, demo\n"
        "owner-list: demo\n"))
    host = postconf_h(suite, "myhostname")
    suite.start()
    sendmail(suite, ["-f", "sender@localhost", "list+tag@localhost"],
             b"Subject: to the list\r\nMessage-Id: <list-1@test>\r\n\r\nhello list\r\n")
    suite.wait_for_mail(1, user="alice")
    suite.wait_for_mail(1, user="carol")
    # demo: the list copy (once, though listed twice) and, as owner-list, the bounce of
    # the forwarded copy that the remote transport refused.
    suite.wait_for_mail(2, user="demo")
    wait(lambda: (d / "env.txt").exists() and (d / "msg.txt").exists(), what="command", suite=suite)
    time.sleep(1)
    assert len(suite.new_mail("demo")) == 2, suite.log()[-3000:]
    assert len(suite.new_mail("alice")) == 1 and len(suite.new_mail("carol")) == 1
    env = read_env(d / "env.txt")
    assert env["SENDER"] == f"owner-list@{host}"
    assert env["RECIPIENT"] == "list+tag@localhost"
    assert env["LOCAL"] == "list+tag"
    assert env["DOMAIN"] == "localhost"
    assert env["EXTENSION"] == "tag"
    assert env["USER"] == SUITE_USER
    assert env["HOME"] == pwd.getpwnam(SUITE_USER).pw_dir
    assert "PATH" in env
    assert "hello list" in (d / "msg.txt").read_text()
    mbox = (d / "file.mbox").read_text()
    assert mbox.startswith(f"From owner-list@{host} "), mbox[:200]
    assert "Delivered-To: list+tag@localhost" in mbox and "hello list" in mbox
    # The remote copy was queued again with the owner as sender, and its bounce went to
    # the owner, not to the original sender.
    log = suite.log()
    m = re.search(r"(\w+): forwarded from <list\+tag@localhost> to <bob@remote.example>", log)
    assert m, log[-3000:]
    assert re.search(rf"{m.group(1)}: from=<owner-list@{re.escape(host)}>", log), log[-3000:]
    bounce = [x for x in messages(suite, "demo") if is_report(x)]
    assert len(bounce) == 1
    assert "bob@remote.example" in bounce[0].as_string()
    plain = [x for x in messages(suite, "demo") if not is_report(x)]
    assert plain[0]["Delivered-To"] == "list+tag@localhost"
    assert plain[0]["Return-Path"] == f"<owner-list@{host}>"


def test_alias_loop_bounces_with_a_clear_reason(suite):
    install_aliases(suite, "a: b\nb: c\nc: a\n")
    suite.start()
    sendmail(suite, ["-f", "demo@localhost", "a@localhost"], b"Subject: loop\r\n\r\nround\r\n")
    (path,) = suite.wait_for_mail(1)
    m = email.message_from_bytes(path.read_bytes(), policy=policy.default)
    assert is_report(m), path.read_text()
    text = m.as_string()
    assert "mail forwarding loop for a: alias loop a -> b -> c -> a" in text, text
    assert "Action: failed" in text and "Status: 5.4.6" in text
    assert "status=bounced" in suite.log()


def test_dot_forward_to_a_file_and_another_user(suite):
    d = out_dir(suite)
    install_aliases(suite, "postmaster: demo\n")
    home = suite.home / "alice"
    home.mkdir(parents=True, exist_ok=True)
    if AS_USER:
        shutil.chown(home, "oxipost", "oxipost")
    (home / ".forward").write_text(f"# alice is away\n{d}/alice.mbox, carol\n")
    suite.start()
    sendmail(suite, ["-f", "sender@localhost", "alice@localhost"], b"Subject: fwd\r\n\r\nvia forward\r\n")
    suite.wait_for_mail(1, user="carol")
    wait(lambda: (d / "alice.mbox").exists(), what="file delivery", suite=suite)
    assert "via forward" in (d / "alice.mbox").read_text()
    assert suite.new_mail("alice") == []
    (home / ".forward+lists").write_text("\\alice\n")
    sendmail(suite, ["-f", "sender@localhost", "alice+lists@localhost"], b"Subject: ext\r\n\r\nkept\r\n")
    suite.wait_for_mail(1, user="alice")
    assert len(suite.new_mail("carol")) == 1


def test_hung_command_is_killed_and_deferred(suite):
    install_aliases(suite, "slow: \"|sleep 600\"\n", extra=["command_time_limit = 2s"])
    suite.start()
    started = time.time()
    sendmail(suite, ["-f", "demo@localhost", "slow@localhost"], b"Subject: slow\r\n\r\nzzz\r\n")
    wait(lambda: "Command time limit exceeded" in suite.log(), timeout=60, what="time limit", suite=suite)
    assert time.time() - started < 60
    assert re.search(r"to=<slow@localhost>.*status=deferred \(Command time limit exceeded", suite.log())
    wait(lambda: suite.queue_files("deferred"), what="deferred queue file", suite=suite)
    out = subprocess.run([str(BIN / "mailq")], capture_output=True, text=True, timeout=30, env=tool_env(suite))
    assert "Command time limit exceeded" in out.stdout, out.stdout


def test_newaliases_while_mail_flows_loses_nothing(suite):
    install_aliases(suite, "team: demo, alice\n")
    suite.start()
    stop = threading.Event()
    rebuilds = []

    def rebuild():
        n = 0
        while not stop.is_set():
            n += 1
            (suite.etc / "aliases").write_text(
                "team: demo, alice\n" + "".join(f"filler{i}: demo\n" for i in range(n % 50)))
            r = subprocess.run([str(BIN / "newaliases")], capture_output=True, timeout=30, env=tool_env(suite))
            rebuilds.append(r.returncode)
            time.sleep(0.05)

    t = threading.Thread(target=rebuild)
    t.start()
    try:
        # One `sendmail -bs` session submits all 300 (through maildrop and pickup).
        conv = b"EHLO client.example\r\n" + b"".join(
            b"MAIL FROM:<flow@example.com>\r\nRCPT TO:<team@localhost>\r\nDATA\r\n"
            + f"Subject: flow {i}\r\nMessage-Id: <flow-{i}@test>\r\n\r\nbody {i}\r\n.\r\n".encode()
            for i in range(300)) + b"QUIT\r\n"
        r = subprocess.run([str(BIN / "sendmail"), "-bs"], input=conv, capture_output=True, timeout=120,
                           env=tool_env(suite))
        assert r.stdout.count(b"queued as") == 300, r.stdout[-2000:]
        suite.wait_for_mail(300, user="demo", timeout=240)
        suite.wait_for_mail(300, user="alice", timeout=120)
    finally:
        stop.set()
        t.join(timeout=60)
    assert len(rebuilds) >= 3 and all(c == 0 for c in rebuilds), rebuilds
    assert "status=deferred" not in suite.log()


@pytest.mark.skipif(shutil.which("s-nail") is None, reason="s-nail not installed")
def test_s_nail_to_an_alias(suite):
    install_aliases(suite, "friends: alice, carol\n")
    suite.start()
    env = tool_env(suite)
    env["HOME"] = str(suite.root)
    r = subprocess.run(
        ["s-nail", "-n", "-#", "-S", f"mta={BIN / 'sendmail'}", "-s", "to friends", "friends@localhost"],
        input=b"sent with s-nail\n", capture_output=True, timeout=30, env=env)
    assert r.returncode == 0, r
    for u in ("alice", "carol"):
        (path,) = suite.wait_for_mail(1, user=u)
        assert "Subject: to friends" in path.read_text()


def test_postalias_reports_bad_lines_and_builds_the_rest(suite):
    r = install_aliases(suite, "good: demo\nthis line is bad\nalso: alice\n")
    assert "line 2" in r.stderr and "need name:value pair" in r.stderr, r.stderr
    q = run(BIN / "postalias", "-q", "also", f"hash:{suite.etc / 'aliases'}", check=False)
    assert q.returncode == 0 and q.stdout.strip() == "alice"
    suite.start()
    sendmail(suite, ["-f", "x@localhost", "good@localhost"], b"Subject: g\r\n\r\ngood\r\n")
    suite.wait_for_mail(1)


def test_mailctl_init_uses_its_own_alias_database(suite):
    text = (suite.etc / "main.cf").read_text()
    assert f"alias_maps = hash:{suite.etc}/aliases" in text
    assert f"alias_database = hash:{suite.etc}/aliases" in text
    assert (suite.etc / "aliases.db").exists()
    suite.start()
    sendmail(suite, ["-f", "x@localhost", "postmaster@localhost"], b"Subject: pm\r\n\r\nto postmaster\r\n")
    suite.wait_for_mail(1)
