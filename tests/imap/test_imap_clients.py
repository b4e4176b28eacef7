"""Issue 10 with real clients beside mbsync (tests/imap/test_imap.py): offlineimap
(Debian's offlineimap3) syncing a Maildir both ways and again with no change, and mutt
reading the INBOX over imap:// in batch mode. Each client runs with a timeout; the suite
fixture stops the server."""

import os
import pty
import select
import shutil
import subprocess
import time

import pytest

from conftest import PASSWORD

from test_imap import body, login


def run_on_pty(argv, env, timeout=60):
    """Runs a full-screen client on a pseudo-terminal (mutt needs one to read mail;
    without a terminal it composes instead); returns (exit status, screen bytes)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    screen = b""
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                screen += chunk
            elif p.poll() is not None:
                break
        return p.wait(timeout=max(1, deadline - time.time())), screen[-3000:]
    except subprocess.TimeoutExpired:
        return None, screen[-3000:]
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        os.close(master)


def files(d):
    return sorted(p.name for sub in ("new", "cur") if (d / sub).is_dir() for p in (d / sub).iterdir())


@pytest.mark.skipif(shutil.which("offlineimap") is None, reason="offlineimap3 not installed")
def test_offlineimap_both_ways_and_again_with_no_change(imap, tmp_path):
    imap.start()
    imap.deliver_all([body(i) for i in range(3)])
    local = tmp_path / "local"
    meta = tmp_path / "meta"
    rc = tmp_path / "offlineimaprc"
    rc.write_text(f"""[general]
accounts = t
metadata = {meta}
ui = basic

[Account t]
localrepository = L
remoterepository = R

[Repository L]
type = Maildir
localfolders = {local}
sep = .

[Repository R]
type = IMAP
remotehost = 127.0.0.1
remoteport = {imap.imap_port}
remoteuser = demo
remotepass = {PASSWORD}
ssl = no
starttls = no
folderfilter = lambda f: f in ("INBOX", "Sent")
""")

    def sync():
        env = dict(os.environ, HOME=str(tmp_path))
        r = subprocess.run(["offlineimap", "-c", str(rc), "-o", "-u", "basic"], capture_output=True,
                           timeout=120, text=True, env=env)
        out = r.stdout + r.stderr
        assert r.returncode == 0 and "ERROR" not in out, out
        return out

    sync()
    inbox = local / "INBOX"
    assert len(files(inbox)) == 3
    # Local → server: a new message and a flag.
    first = sorted(p for sub in ("new", "cur") for p in (inbox / sub).iterdir())[0]
    first.rename(inbox / "cur" / (first.name.split(":2,")[0] + ":2,F"))
    (inbox / "new" / "1700000000.local1.host").write_bytes(
        b"From: l@x.example\nSubject: from offlineimap\n\nlocal\n")
    sync()
    c = login(imap)
    typ, data = c.select("INBOX")
    assert data == [b"4"]
    assert c.search(None, "SUBJECT", '"from offlineimap"') == ("OK", [b"4"])
    assert c.search(None, "FLAGGED")[1][0] != b""
    # Server → local: a flag and an expunge.
    c.store("2", "+FLAGS", "(\\Seen)")
    c.store("3", "+FLAGS", "(\\Deleted)")
    c.expunge()
    c.logout()
    sync()
    names = files(inbox)
    assert len(names) == 3, names
    assert sum(1 for n in names if "S" in n.split(":2,")[-1]) >= 1, names
    # Again with no change: nothing moves either way.
    before, server_before = files(inbox), sorted(p.name for p in imap.all_mail())
    sync()
    assert files(inbox) == before
    assert sorted(p.name for p in imap.all_mail()) == server_before


@pytest.mark.skipif(shutil.which("mutt") is None, reason="mutt not installed")
def test_mutt_imap_batch_mode(imap, tmp_path):
    imap.start()
    imap.deliver_all([body(i) for i in range(2)])
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(f"""set imap_user = "demo"
set imap_pass = "{PASSWORD}"
set ssl_starttls = no
set ssl_force_tls = no
set folder = "imap://127.0.0.1:{imap.imap_port}/"
set spoolfile = "+INBOX"
set header_cache = ""
set message_cachedir = ""
set mail_check = 0
set timeout = 5
set imap_keepalive = 60
set quit = yes
set move = no
set delete = no
set confirmcreate = no
set confirmappend = no
set wait_key = no
""")
    env = dict(os.environ, HOME=str(tmp_path), TERM="vt100", LINES="40", COLUMNS="120")
    # Save message 1 to a local mbox non-interactively: the client has to log in,
    # select, fetch headers and bodies.
    out = tmp_path / "saved.mbox"
    push = f'<tag-pattern>~s "message 1"<enter><tag-prefix><copy-message>{out}<enter><tag-prefix><flag-message><quit>'
    r = run_on_pty(["mutt", "-n", "-F", str(muttrc), "-f", f"imap://127.0.0.1:{imap.imap_port}/INBOX",
                    "-e", f"push '{push}'"], env)
    assert out.exists() and r[0] == 0, (r, imap.log()[-3000:])
    saved = out.read_bytes()
    assert b"Subject: message 1" in saved and b"line one of 1" in saved, saved
    assert b"Subject: message 0" not in saved
    # The flag mutt set on the tagged message reached the server when it quit.
    c = login(imap)
    c.select("INBOX", readonly=True)
    assert c.search(None, "FLAGGED") == ("OK", [b"2"])
    c.logout()
