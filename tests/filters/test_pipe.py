"""pipe(8) under master: a transport whose command gets the message on standard input
with the headers its flags ask for, macros expanded into separate arguments, and its exit
status read as sendmail's sysexits (75 deferred, 67 bounced 5.1.1), with the
`<transport>_time_limit` enforced."""

import re

from conftest import SUITE_USER, script, add_master, send, wait, work_dir


def setup_pipe(s, flags="DRO.>hu"):
    out = work_dir(s, "pipe-out")
    cmd = script(s.root.parent / "catcher.sh", f"""#!/bin/sh
# args: sender recipient user extension domain nexthop
case "$2" in
  tempfail@*) echo "try later"; exit 75 ;;
  nouser@*) echo "no such mailbox"; exit 67 ;;
  slow@*) sleep 30 ;;
esac
n=$$
printf '%s\\n' "$@" > {out}/args.$n
cat > {out}/msg.$n
mv {out}/msg.$n {out}/done.$n
""")
    add_master(s, f"mypipe unix - n n - - pipe flags={flags} user={SUITE_USER} "
                  f"argv={cmd} ${{sender}} ${{recipient}} ${{user}} ${{extension}} ${{domain}} ${{nexthop}}")
    s.postconf("default_transport = mypipe", "mypipe_destination_recipient_limit = 1",
               "mypipe_time_limit = 3s", "recipient_delimiter = +")
    return out


def test_pipe_flags_macros_and_stdin(suite):
    out = setup_pipe(suite)
    suite.start()
    body = ("From: a@example.org\r\nSubject: pipe\r\n\r\n.leading dot\r\nFrom the start\r\nend\r\n")
    send(suite.smtp_port, "Sender@Example.ORG", ["Joe+Box@Remote.Example"], body)
    done = wait(lambda: sorted(out.glob("done.*")), what="pipe delivery", suite=suite)
    n = done[0].name.split(".")[1]
    args = (out / f"args.{n}").read_text().split("\n")[:6]
    # h and u fold the recipient (and $user, $extension, $domain, $nexthop), not the sender.
    assert args == ["Sender@Example.ORG", "joe+box@remote.example", "joe", "box",
                    "remote.example", "remote.example"], args
    msg = done[0].read_text()
    lines = msg.split("\n")
    assert lines[0] == "Return-Path: <Sender@Example.ORG>", msg
    assert lines[1] == "X-Original-To: Joe+Box@Remote.Example", msg
    assert lines[2] == "Delivered-To: Joe+Box@Remote.Example", msg
    assert "\n..leading dot\n" in msg and "\n>From the start\n" in msg, msg
    assert "\r" not in msg
    wait(lambda: re.search(r"to=<Joe\+Box@Remote.Example>, relay=mypipe.*status=sent \(delivered via mypipe service\)",
                           suite.log()), what="log line", suite=suite)


def test_pipe_sysexits_and_time_limit(suite):
    setup_pipe(suite)
    suite.start()
    for who in ("tempfail", "nouser", "slow"):
        send(suite.smtp_port, "s@example.org", [f"{who}@remote.example"], f"Subject: {who}\r\n\r\nx\r\n")
    log = lambda: suite.log()
    wait(lambda: re.search(r"to=<tempfail@remote.example>.*dsn=4\.3\.0, status=deferred \(temporary failure\. Command output: try later\)", log()),
         what="tempfail deferred", suite=suite)
    wait(lambda: re.search(r"to=<nouser@remote.example>.*dsn=5\.1\.1, status=bounced \(user unknown\. Command output: no such mailbox\)", log()),
         what="nouser bounced", suite=suite)
    wait(lambda: re.search(r"to=<slow@remote.example>.*dsn=5\.3\.0, status=bounced \(Command time limit exceeded", log()),
         timeout=40, what="time limit", suite=suite)
    assert suite.queue_files("deferred"), "the tempfailed message stays queued"


def test_pipe_rejects_root_user(suite):
    add_master(suite, "rootpipe unix - n n - - pipe user=root argv=/bin/cat")
    suite.postconf("default_transport = rootpipe")
    suite.start()
    send(suite.smtp_port, "s@example.org", ["x@remote.example"], "Subject: r\r\n\r\nx\r\n")
    wait(lambda: "user= command-line attribute specifies root privileges" in suite.log(),
         what="fatal config error", suite=suite)
    assert suite.queue_files("deferred") or suite.queue_files("active") or suite.queue_files("incoming")
