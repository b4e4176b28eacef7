"""imapd with per-user rights (issue 10: "with the shipped main.cf, system users log in with
their system password"): in a root-run suite whose imap service says unprivileged `n` in
master.cf, each imapd process serves one client and becomes the logged-in user before it
opens the mailbox, so a system user's own mode-700 Maildir (and the index imapd keeps in it)
is read and written with that user's rights, as Dovecot's mail processes do."""

import os
import time

import pytest

from conftest import BIN, PASSWORD, ImapSuite, run
from pop3_conftest import private_maildir, root_suite, system_account

USER = "oxiimapu"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@pytest.fixture
def system_user():
    with system_account(USER) as pw:
        yield pw


@pytest.fixture
def root_imap(system_user):
    with root_suite(ImapSuite, "oxipost-imapu-") as s:
        yield s


def session(port):
    import imaplib
    c = imaplib.IMAP4("127.0.0.1", port, timeout=30)
    c.login(USER, PASSWORD)
    return c


def wait_for(s, text, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline and text not in s.log():
        time.sleep(0.1)
    return text in s.log()


def test_system_user_maildir_read_with_the_users_rights(root_imap, system_user):
    s, pw = root_imap, system_user
    home = s.root.parent / f"home-{USER}"
    md = private_maildir(home, pw, [b"Subject: one\r\n\r\nfirst\r\n", b"Subject: two\r\n\r\nsecond\r\n"])
    s.passwd.write_text(f"{USER}:{{PLAIN}}{PASSWORD}:{pw.pw_uid}:{pw.pw_gid}::{home}::\n")
    run(BIN / "postconf", "-c", s.etc, "-Fe", f"{s.imap_port}/inet/unprivileged=n")
    r = run(BIN / "mailctl", "-c", s.etc, "start", check=False, timeout=60)
    assert r.returncode == 0, r.stderr

    c = session(s.imap_port)
    try:
        typ, data = c.select("INBOX")
        assert typ == "OK" and data == [b"2"], (typ, data, s.log()[-2000:])
        typ, data = c.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert typ == "OK" and b"Subject: one" in data[0][1]
        assert c.store("2", "+FLAGS", "(\\Deleted)")[0] == "OK"
        assert c.expunge()[0] == "OK"
        assert c.create("Archive")[0] in ("OK", "NO")
        c.logout()
    finally:
        try:
            c.shutdown()
        except OSError:
            pass
    # Everything imapd created, it created as the user: the folder and the index files
    # in the user's mode-700 Maildir; the expunged message is gone.
    assert any(p.is_file() and not p.name.startswith("17") for p in md.rglob("*")), list(md.rglob("*"))
    assert (md / ".Archive").is_dir()
    assert all(p.stat().st_uid == pw.pw_uid for p in md.rglob("*")), [
        (str(p), p.stat().st_uid) for p in md.rglob("*") if p.stat().st_uid != pw.pw_uid]
    assert len([p for sub in ("new", "cur") for p in (md / sub).iterdir()]) == 1
    assert wait_for(s, f"Login: user=<{USER}>")

    # A second session gets a new process (the first belonged to the user and ended).
    c = session(s.imap_port)
    try:
        typ, data = c.select("INBOX")
        assert typ == "OK" and data == [b"1"], (typ, data)
        c.logout()
    finally:
        try:
            c.shutdown()
        except OSError:
            pass
    assert "cannot switch" not in s.log()


def test_unprivileged_imapd_cannot_read_it(root_imap, system_user):
    """The control: the default service (as mail_owner) is refused by the directory mode."""
    s, pw = root_imap, system_user
    home = s.root.parent / f"home-{USER}"
    private_maildir(home, pw, [b"Subject: x\r\n\r\nbody\r\n"])
    s.passwd.write_text(f"{USER}:{{PLAIN}}{PASSWORD}:{pw.pw_uid}:{pw.pw_gid}::{home}::\n")
    r = run(BIN / "mailctl", "-c", s.etc, "start", check=False, timeout=60)
    assert r.returncode == 0, r.stderr
    import imaplib
    c = imaplib.IMAP4("127.0.0.1", s.imap_port, timeout=30)
    try:
        try:
            c.login(USER, PASSWORD)
            typ, _ = c.select("INBOX")
            refused = typ != "OK"
        except imaplib.IMAP4.error:
            refused = True
        assert refused, s.log()[-2000:]
    finally:
        try:
            c.shutdown()
        except OSError:
            pass
