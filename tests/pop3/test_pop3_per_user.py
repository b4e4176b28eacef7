"""pop3d with per-user rights (issue 9): in a root-run suite whose pop3 service says
unprivileged `n` in master.cf, each pop3d process serves one client and becomes the
logged-in user before it opens the mailbox, so a system user's own mode-700 Maildir is read
(and changed) with that user's rights, as Dovecot's mail processes do. Without the switch,
pop3d as `mail_owner` cannot even list such a Maildir."""

import os
import time

import pytest

from conftest import (BIN, PASSWORD, PopSuite, Raw, private_maildir, root_suite, run,
                      system_account)

USER = "oxipop3u"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@pytest.fixture
def system_user():
    with system_account(USER) as pw:
        yield pw


@pytest.fixture
def root_pop(system_user):
    with root_suite(PopSuite, "oxipost-pop3u-") as s:
        yield s


def test_system_user_maildir_read_with_the_users_rights(root_pop, system_user):
    s, pw = root_pop, system_user
    home = s.root.parent / f"home-{USER}"
    bodies = [b"Subject: one\n\nfirst message\n.leading dot\n", b"Subject: two\n\nsecond\n"]
    md = private_maildir(home, pw, bodies)
    s.passwd.write_text(f"{USER}:{{PLAIN}}{PASSWORD}:{pw.pw_uid}:{pw.pw_gid}::{home}::\n")
    # The pop3 service keeps root (unprivileged n): one client per process, switched at login.
    run(BIN / "postconf", "-c", s.etc, "-Fe", f"{s.pop3_port}/inet/unprivileged=n")
    r = run(BIN / "mailctl", "-c", s.etc, "start", check=False, timeout=60)
    assert r.returncode == 0, r.stderr

    c = Raw(s.pop3_port)
    try:
        assert c.login(USER).startswith(b"+OK"), s.log()[-2000:]
        assert c.cmd("STAT").startswith(b"+OK 2 ")
        assert c.cmd("RETR 1").startswith(b"+OK")
        assert c.multi() == b"Subject: one\r\n\r\nfirst message\r\n..leading dot\r\n"
        assert c.cmd("DELE 2").startswith(b"+OK")
        assert c.cmd("QUIT").startswith(b"+OK")
    finally:
        c.close()
    # What pop3d created and removed, it did as the user: its lock file belongs to the
    # user, and the deleted message is gone from the user's mode-700 directory.
    lock = md / "oxipost-pop3.lock"
    assert lock.exists() and lock.stat().st_uid == pw.pw_uid
    names = sorted(p.name for p in (md / "new").iterdir())
    assert names == [f"1700000000.M0P1Q0.test"], names
    assert f"Login: user=<{USER}>" in s.wait_log(f"Login: user=<{USER}>")

    # A second session gets a new process (the first belonged to the user and ended).
    c = Raw(s.pop3_port)
    try:
        assert c.login(USER).startswith(b"+OK"), s.log()[-2000:]
        assert c.cmd("STAT").startswith(b"+OK 1 ")
        assert c.cmd("QUIT").startswith(b"+OK")
    finally:
        c.close()
    assert "cannot switch" not in s.log()


def test_unprivileged_pop3d_cannot_read_it(root_pop, system_user):
    """The control: the default service (as mail_owner) is refused by the directory mode."""
    s, pw = root_pop, system_user
    home = s.root.parent / f"home-{USER}"
    private_maildir(home, pw, [b"Subject: x\n\nbody\n"])
    s.passwd.write_text(f"{USER}:{{PLAIN}}{PASSWORD}:{pw.pw_uid}:{pw.pw_gid}::{home}::\n")
    r = run(BIN / "mailctl", "-c", s.etc, "start", check=False, timeout=60)
    assert r.returncode == 0, r.stderr
    c = Raw(s.pop3_port)
    try:
        reply = c.login(USER)
        assert reply.startswith(b"-ERR"), reply
    finally:
        c.close()
    deadline = time.time() + 15
    while time.time() < deadline and "Couldn't open INBOX" not in s.log():
        time.sleep(0.1)
    assert "Couldn't open INBOX" in s.log()
