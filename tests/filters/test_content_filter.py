"""After-queue content filtering (Postfix's FILTER_README): `content_filter` recorded at
receive time and honoured by qmgr for every recipient. The "simple" set-up: a `pipe`
transport runs a script that adds a header and re-injects with our sendmail (pickup is
not filtered, so the message is delivered once). A filter that is down (exit 75) leaves
the message deferred; it is delivered, filtered, once the filter is back. The "advanced"
set-up: an SMTP filter (Python, on loopback) that adds a header and re-injects on a
second smtpd with `-o content_filter=` and `receive_override_options`."""

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import BIN, SUITE_USER, add_master, script, send, smtpd_option, wait, work_dir


def simple_filter(s):
    state = work_dir(s, "filter-state")
    cmd = script(s.root.parent / "filter.sh", f"""#!/bin/sh
# FILTER_README's simple filter: inspect, then re-inject with sendmail.
# args: -f sender -- recipients...
[ -e {state}/down ] && {{ echo "filter is down"; exit 75; }}
tmp={state}/in.$$
cat > $tmp || exit 75
{{ echo "X-Filtered: simple"; cat $tmp; }} | {BIN}/sendmail -C {s.etc} -i "$@"
rc=$?
rm -f $tmp
exit $rc
""")
    add_master(s, f"myfilter unix - n n - 10 pipe flags=Rq user={SUITE_USER} "
                  f"argv={cmd} -f ${{sender}} -- ${{recipient}}")
    smtpd_option(s, "content_filter=myfilter:dummy")
    return state


def test_simple_filter_round_trip(suite):
    simple_filter(suite)
    suite.start()
    send(suite.smtp_port, "alice@example.org", ["demo@localhost"], "Subject: hi\r\n\r\nclean body\r\n")
    files = suite.wait_for_mail(1)
    text = files[0].read_text()
    assert "X-Filtered: simple" in text, text
    assert "clean body" in text
    log = suite.log()
    assert re.search(r"to=<demo@localhost>, relay=myfilter.*status=sent \(delivered via myfilter service\)", log), log
    time.sleep(1)
    assert len(suite.new_mail()) == 1, "delivered exactly once (pickup is not filtered)"


def test_filter_down_then_back(suite):
    state = simple_filter(suite)
    (state / "down").write_text("")
    suite.start()
    send(suite.smtp_port, "alice@example.org", ["demo@localhost"], "Subject: wait\r\n\r\nqueued\r\n")
    wait(lambda: re.search(r"relay=myfilter.*status=deferred \(temporary failure\. Command output: filter is down\)",
                           suite.log()), what="deferral", suite=suite)
    wait(lambda: suite.queue_files("deferred"), what="deferred queue file", suite=suite)
    assert suite.new_mail() == [], "never delivered unfiltered"
    (state / "down").unlink()
    suite.mailctl("flush", check=False)
    subprocess.run([str(BIN / "postqueue"), "-c", str(suite.etc), "-f"], capture_output=True, timeout=30)
    files = suite.wait_for_mail(1, timeout=60)
    assert "X-Filtered: simple" in files[0].read_text()


def test_pickup_honours_content_filter(suite):
    """A main.cf content_filter applies to locally submitted mail too: pickup records it,
    and qmgr sends the message to the filter instead of the local mailbox."""
    out = work_dir(suite, "sink")
    cmd = script(suite.root.parent / "sink.sh", f"#!/bin/sh\ncat > {out}/msg.$$ && echo \"$@\" > {out}/args.$$\n")
    add_master(suite, f"sink unix - n n - - pipe user={SUITE_USER} argv={cmd} ${{nexthop}} ${{recipient}}")
    suite.postconf("content_filter = sink:[127.0.0.1]:10025")
    suite.start()
    r = subprocess.run([str(BIN / "sendmail"), "-C", str(suite.etc), "-f", "alice@example.org", "demo@localhost"],
                       input=b"Subject: local\n\nvia pickup\n", capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    args = wait(lambda: sorted(out.glob("args.*")), what="sink delivery", suite=suite)
    assert args[0].read_text().split() == ["[127.0.0.1]:10025", "demo@localhost"]
    assert suite.new_mail() == []


def free_port():
    with socket.socket() as t:
        t.bind(("127.0.0.1", 0))
        return t.getsockname()[1]


def start_filter(listen, reinject):
    p = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__), "smtp_filter.py"),
                          str(listen), str(reinject)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"ready"
    return p


def stop_filter(p):
    if p.poll() is None:
        os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=10)


@pytest.mark.skipif(not (BIN / "smtp").exists(), reason="the smtp client agent is not built")
def test_advanced_smtp_filter_round_trip_down_and_back(suite):
    listen, reinject = free_port(), free_port()
    suite.postconf(f"content_filter = scan:[127.0.0.1]:{listen}")
    add_master(suite, textwrap.dedent(f"""\
        scan unix - - n - 10 smtp
          -o syslog_name=postfix/scan
        127.0.0.1:{reinject} inet n - n - 10 smtpd
          -o syslog_name=postfix/reinject
          -o content_filter=
          -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters,no_address_mappings
          -o smtpd_helo_restrictions=
          -o smtpd_client_restrictions=
          -o smtpd_sender_restrictions=
          -o smtpd_recipient_restrictions=permit_mynetworks,reject
          -o mynetworks=127.0.0.0/8
        """))
    # A header check that would reject the filtered copy proves no_header_body_checks.
    (suite.etc / "header_checks").write_text("/^X-Filtered: smtp-filter/ REJECT filtered mail seen twice\n")
    suite.postconf(f"header_checks = regexp:{suite.etc}/header_checks")
    suite.start()
    # The filter is down: the message stays queued.
    send(suite.smtp_port, "alice@example.org", ["demo@localhost"], "Subject: adv\r\n\r\nadvanced body\r\n")
    wait(lambda: re.search(r"scan/smtp.*to=<demo@localhost>, relay=.*status=deferred", suite.log()),
         what="deferral while the filter is down", suite=suite)
    assert suite.new_mail() == []
    p = start_filter(listen, reinject)
    try:
        subprocess.run([str(BIN / "postqueue"), "-c", str(suite.etc), "-f"], capture_output=True, timeout=30)
        files = suite.wait_for_mail(1, timeout=60)
        text = files[0].read_text()
        assert "X-Filtered: smtp-filter" in text and "advanced body" in text, text
        # A second message goes straight through while the filter is up.
        send(suite.smtp_port, "alice@example.org", ["demo@localhost"], "Subject: adv2\r\n\r\nsecond\r\n")
        files = suite.wait_for_mail(2, timeout=60)
        assert all("X-Filtered: smtp-filter" in f.read_text() for f in files)
    finally:
        stop_filter(p)


def test_access_filter_action_overrides_content_filter(suite):
    """An access-table FILTER action (per client) is honoured by qmgr, and wins over a
    content_filter recorded earlier, as in Postfix."""
    out = work_dir(suite, "sink2")
    cmd = script(suite.root.parent / "sink2.sh", f"#!/bin/sh\ncat > {out}/msg.$$ && echo \"$@\" > {out}/args.$$\n")
    add_master(suite, f"sink unix - n n - - pipe user={SUITE_USER} argv={cmd} ${{nexthop}} ${{recipient}}")
    (suite.etc / "client_access").write_text("127.0.0.1 FILTER sink:per-client\n")
    suite.postconf("content_filter = myfilter-that-does-not-exist:x",
                   f"smtpd_client_restrictions = check_client_access texthash:{suite.etc}/client_access")
    suite.start()
    send(suite.smtp_port, "alice@example.org", ["demo@localhost"], "Subject: f\r\n\r\nby access table\r\n")
    args = wait(lambda: sorted(out.glob("args.*")), what="FILTER delivery", suite=suite)
    assert args[0].read_text().split() == ["per-client", "demo@localhost"]
