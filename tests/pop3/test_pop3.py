"""Issue 9 end to end: pop3d under master with real clients (Python's poplib plain, STLS,
POP3_SSL on the pop3s port, AUTH PLAIN; Debian's fetchmail with and without `keep`) and a
raw socket client for byte-exact checks, over Maildirs that local delivered into and over
an mbox."""

import base64
import hashlib
import os
import poplib
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from conftest import BIN, PASSWORD, Raw, chown, run


def body(i, extra=""):
    return (
        f"From: Sender <sender@example.com>\r\n"
        f"To: demo@localhost\r\n"
        f"Subject: message {i}\r\n"
        f"Message-ID: <m{i}@example.com>\r\n"
        f"\r\n"
        f"line one of {i}\r\n"
        f".leading dot\r\n"
        f"..two dots\r\n"
        f"From inside the body\r\n"
        f"{extra}"
        f"last line\r\n"
    ).encode()


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def stuffed(data: bytes) -> bytes:
    return b"\r\n".join((b"." + l if l.startswith(b".") else l) for l in data.split(b"\r\n"))


def tls_context():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def files_in_order(suite):
    """The Maildir files sorted as pop3d numbers them: by unique name in delivery order
    (digit runs compare as numbers: `M61129` before `M301367`)."""
    import re
    md = suite.maildir()
    files = [p for sub in ("new", "cur") for p in (md / sub).iterdir()]
    return sorted(files, key=lambda p: [int(t) if t.isdigit() else t
                                        for t in re.split(r"(\d+)", p.name.split(":")[0])])


def test_poplib_plain_stat_list_uidl_top_retr_byte_exact(pop):
    pop.start()
    pop.deliver([body(i) for i in range(3)])
    files = files_in_order(pop)
    stored = [p.read_bytes() for p in files]

    c = poplib.POP3("127.0.0.1", pop.pop3_port, timeout=30)
    assert c.getwelcome().startswith(b"+OK")
    capa = c.capa()
    for k in ("CAPA", "TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE", "USER", "SASL", "STLS",
              "IMPLEMENTATION"):
        assert k in capa, capa
    assert "PLAIN" in capa["SASL"]
    c.user("demo")
    assert c.pass_(PASSWORD).startswith(b"+OK")
    sizes = [len(crlf(d)) for d in stored]
    assert c.stat() == (3, sum(sizes))
    resp, lines, _ = c.list()
    assert lines == [f"{i + 1} {s}".encode() for i, s in enumerate(sizes)]
    resp, lines, _ = c.uidl()
    uids = [l.split()[1].decode() for l in lines]
    assert uids == [p.name.split(":")[0].split(",")[0] for p in files]
    assert all(1 <= len(u) <= 70 for u in uids)
    resp, lines, octets = c.retr(2)
    assert resp == f"+OK {sizes[1]} octets".encode()
    # poplib undoes dot-stuffing; joined with CRLF it is the CRLF form of the stored file.
    assert b"\r\n".join(lines) + b"\r\n" == crlf(stored[1])
    resp, lines, _ = c.top(1, 1)
    head, _, rest = crlf(stored[0]).partition(b"\r\n\r\n")
    assert b"\r\n".join(lines) == head + b"\r\n\r\n" + rest.split(b"\r\n")[0]
    assert c.quit().startswith(b"+OK")

    # The raw wire: dot-stuffed CRLF lines and the terminator.
    r = Raw(pop.pop3_port)
    assert r.login() == b"+OK Logged in."
    r.send(b"RETR 3\r\n")
    assert r.line() == f"+OK {sizes[2]} octets".encode()
    assert r.multi() == stuffed(crlf(stored[2]))
    r.send(b"TOP 3 0\r\n")
    assert r.line() == b"+OK"
    assert r.multi() == crlf(stored[2]).split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert r.cmd("QUIT").startswith(b"+OK")
    r.close()

    log = pop.wait_log("pop3(demo): Disconnected: Logged out top=1/")
    assert "pop3-login: Login: user=<demo>, method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=" in log
    assert f"retr=1/{sizes[1]}, del=0/3, size={sum(sizes)}" in log
    assert PASSWORD not in log
    assert base64.b64encode(f"\0demo\0{PASSWORD}".encode()).decode() not in log


def test_stls_pop3_ssl_and_auth_plain(pop):
    pop.start()
    pop.deliver([body(1)])
    size = len(crlf(pop.new_mail()[0].read_bytes()))

    c = poplib.POP3("127.0.0.1", pop.pop3_port, timeout=30)
    c.stls(context=tls_context())
    assert "STLS" not in c.capa()
    c.user("demo")
    c.pass_(PASSWORD)
    assert c.stat() == (1, size)
    c.quit()
    pop.wait_log("method=PLAIN, rip=127.0.0.1, lip=127.0.0.1, mpid=")
    assert ", TLS" in pop.log()

    s = poplib.POP3_SSL("127.0.0.1", pop.pop3s_port, timeout=30, context=tls_context())
    assert s.getwelcome().startswith(b"+OK")
    assert "STLS" not in s.capa()
    token = base64.b64encode(f"\0demo\0{PASSWORD}".encode()).decode()
    assert s._shortcmd(f"AUTH PLAIN {token}").startswith(b"+OK")
    assert s.stat() == (1, size)
    s.quit()

    # AUTH PLAIN without an initial response: an empty challenge, then the response.
    c = poplib.POP3("127.0.0.1", pop.pop3_port, timeout=30)
    c._putcmd("AUTH PLAIN")
    assert c._getline()[0].startswith(b"+")
    assert c._shortcmd(token).startswith(b"+OK")
    c.quit()


def test_dele_quit_removes_and_dropped_connection_keeps(pop):
    pop.start()
    pop.deliver([body(i) for i in range(3)])
    names = [p.name for p in files_in_order(pop)]

    # DELE, then the connection drops: nothing is deleted.
    r = Raw(pop.pop3_port)
    r.login()
    assert r.cmd("DELE 1").startswith(b"+OK")
    assert r.cmd("DELE 1").startswith(b"-ERR")
    r.close()
    pop.wait_log("pop3(demo): Disconnected: Connection closed")
    assert [p.name for p in files_in_order(pop)] == names

    # DELE; the message is still there before QUIT, gone after it.
    c = poplib.POP3("127.0.0.1", pop.pop3_port, timeout=30)
    c.user("demo")
    c.pass_(PASSWORD)
    c.dele(2)
    assert len(files_in_order(pop)) == 3
    c.rset()
    c.dele(1)
    c.dele(3)
    assert c.stat()[0] == 1
    c.quit()
    left = files_in_order(pop)
    assert [p.name for p in left] == [names[1]]
    pop.wait_log("del=2/3")


def test_uidl_stable_across_sessions_and_restart(pop):
    pop.start()
    pop.deliver([body(i) for i in range(2)])

    def uidl():
        c = poplib.POP3("127.0.0.1", pop.pop3_port, timeout=30)
        c.user("demo")
        c.pass_(PASSWORD)
        lines = c.uidl()[1]
        c.quit()
        return [l.split()[1] for l in lines]

    first = uidl()
    assert len(set(first)) == 2
    assert uidl() == first
    pop.stop()
    pop.start()
    assert uidl() == first
    # A new message adds a UIDL; an old one deleted leaves the others' unchanged.
    pop.deliver([body(9)])
    c = poplib.POP3("127.0.0.1", pop.pop3_port, timeout=30)
    c.user("demo")
    c.pass_(PASSWORD)
    third = [l.split()[1] for l in c.uidl()[1]]
    assert third[:2] == first and len(third) == 3
    c.dele(1)
    c.quit()
    assert uidl() == third[1:]


def test_second_session_in_use_and_mail_arriving_during_session(pop):
    pop.start()
    pop.deliver([body(1)])
    a = Raw(pop.pop3_port)
    assert a.login() == b"+OK Logged in."
    b = Raw(pop.pop3_port)
    resp = b.login()
    assert resp.startswith(b"-ERR [IN-USE]"), resp
    # Delivered during the session: not seen until the next one.
    pop.deliver([body(2)])
    assert a.cmd("STAT").startswith(b"+OK 1 ")
    assert a.cmd("QUIT").startswith(b"+OK")
    a.close()
    # The lock is gone with the first session: the second client may now log in.
    assert b.cmd(f"PASS {PASSWORD}") == b"+OK Logged in."
    assert b.cmd("STAT").startswith(b"+OK 2 ")
    b.close()


def test_wrong_password_and_login_attempt_limit(pop):
    pop.postconf("pop3d_login_attempts=2")
    pop.start()
    r = Raw(pop.pop3_port)
    assert r.login(pw="wrong") == b"-ERR [AUTH] Authentication failed."
    last = r.cmd("PASS wrong-again")
    assert last.startswith(b"-ERR [AUTH]") and b"disconnecting" in last
    with pytest.raises((EOFError, ConnectionError)):
        r.line()
    r.close()
    c = poplib.POP3("127.0.0.1", pop.pop3_port, timeout=30)
    c.user("demo")
    with pytest.raises(poplib.error_proto) as e:
        c.pass_("nope")
    assert b"[AUTH]" in e.value.args[0]
    c.quit()
    log = pop.wait_log("pop3-login: authentication failed")
    assert "wrong-again" not in log and "nope" not in log


def test_bad_input_gets_err_and_no_crash(pop):
    pop.postconf("pop3d_command_length_limit=100")
    pop.start()
    pop.deliver([body(1)])
    r = Raw(pop.pop3_port)
    for c in ("STAT", "LIST", "RETR 1", "DELE 1", "UIDL", "TOP 1 1"):
        assert r.cmd(c).startswith(b"-ERR"), c
    assert r.cmd("PASS x") == b"-ERR No username given."
    assert r.cmd("FROB").startswith(b"-ERR Unknown command")
    assert r.cmd("X" * 500) == b"-ERR Input line too long."
    assert r.cmd("NOOP") == b"+OK"
    assert r.login() == b"+OK Logged in."
    for c in ("RETR 0", "RETR 99999", "RETR -1", "TOP 1 -1", "TOP 1", "LIST 2", "DELE 0", "UIDL x",
              "RETR 184467440737095516160"):
        assert r.cmd(c).startswith(b"-ERR"), c
    assert r.cmd("DELE 1").startswith(b"+OK")
    assert r.cmd("DELE 1") == b"-ERR Message is deleted."
    assert r.cmd("RSET") == b"+OK"
    assert r.cmd("USER demo").startswith(b"-ERR")
    # A message file removed under the session by another client.
    for p in files_in_order(pop):
        p.unlink()
    assert r.cmd("RETR 1").startswith(b"-ERR")
    assert r.cmd("QUIT").startswith(b"+OK")
    r.close()
    assert pop.pop3d_pids(), "pop3d died"


def test_pipelined_commands(pop):
    pop.start()
    pop.deliver([body(i) for i in range(5)])
    stored = [p.read_bytes() for p in files_in_order(pop)]
    r = Raw(pop.pop3_port)
    cmds = f"USER demo\r\nPASS {PASSWORD}\r\nSTAT\r\nUIDL\r\n" + "".join(f"RETR {i}\r\n" for i in range(1, 6)) + "QUIT\r\n"
    r.send(cmds.encode())
    assert r.line() == b"+OK"
    assert r.line() == b"+OK Logged in."
    assert r.line().startswith(b"+OK 5 ")
    assert r.line() == b"+OK"
    r.multi()
    for d in stored:
        assert r.line().startswith(b"+OK")
        assert r.multi() == stuffed(crlf(d))
    assert r.line().startswith(b"+OK")
    r.close()


def test_ten_megabyte_message_byte_exact(pop):
    pop.postconf("message_size_limit=20000000")
    pop.start()
    line = ("0123456789" * 7 + "\r\n")
    big = body(1, extra=line * (10_500_000 // len(line)) + ".\r\n" + ". dot space\r\n")
    pop.deliver([big])
    (path,) = pop.new_mail()
    stored = path.read_bytes()
    assert len(stored) > 10_000_000
    r = Raw(pop.pop3_port, timeout=60)
    r.login()
    r.send(b"RETR 1\r\n")
    assert r.line() == f"+OK {len(crlf(stored))} octets".encode()
    got = r.multi()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(stuffed(crlf(stored))).hexdigest()
    r.cmd("QUIT")
    r.close()


def test_idle_timeout(pop):
    pop.postconf("pop3d_timeout=2s")
    pop.start()
    r = Raw(pop.pop3_port)
    r.login()
    t = time.time()
    assert r.line() == b"-ERR Disconnected for inactivity."
    assert 1 <= time.time() - t < 15
    with pytest.raises((EOFError, ConnectionError)):
        r.line()
    pop.wait_log("pop3(demo): Disconnected: Disconnected for inactivity")


def test_default_timeout_is_at_least_ten_minutes():
    out = run(BIN / "postconf", "-d", "pop3d_timeout").stdout
    assert out.strip() == "pop3d_timeout = 10m"


def test_thousand_idle_connections_one_process(pop):
    pop.postconf("pop3d_client_limit=1500")
    pop.start()
    socks = []
    try:
        for _ in range(1000):
            s = socket.create_connection(("127.0.0.1", pop.pop3_port), timeout=30)
            socks.append(s)
        for s in socks:
            assert s.recv(100).startswith(b"+OK")
        # Every one still answers.
        for s in socks[::100]:
            s.sendall(b"NOOP\r\n")
            assert s.recv(100) == b"+OK\r\n"
        assert len(pop.pop3d_pids()) == 1, pop.pop3d_pids()
    finally:
        for s in socks:
            s.close()


def test_per_address_connection_limit(pop):
    pop.postconf("pop3d_client_connection_limit=3")
    pop.start()
    socks = [Raw(pop.pop3_port) for _ in range(3)]
    extra = socket.create_connection(("127.0.0.1", pop.pop3_port), timeout=30)
    assert extra.recv(200).startswith(b"-ERR [SYS/TEMP] Too many connections")
    extra.close()
    socks[0].close()
    time.sleep(0.3)
    ok = Raw(pop.pop3_port)
    assert ok.greeting.startswith(b"+OK")
    for s in socks[1:] + [ok]:
        s.close()


def write_mbox(path, messages):
    data = b""
    for i, m in enumerate(messages):
        content = m.replace(b"\r\n", b"\n")
        quoted = b"".join((b">" + l if l.startswith(b"From ") else l) for l in content.splitlines(True))
        data += f"From sender{i}@example.com  Sat Nov 28 08:00:00 2026\n".encode() + quoted + b"\n"
    path.write_bytes(data)
    chown(path)


def test_mbox_mailbox(pop):
    pop.users({"demo": "", "mbuser": "userdb_mail=mbox:~/mbox"})
    home = pop.home / "mbuser"
    home.mkdir()
    chown(home)
    mbox = home / "mbox"
    msgs = [body(i) for i in range(3)]
    write_mbox(mbox, msgs)
    pop.start()

    c = poplib.POP3("127.0.0.1", pop.pop3_port, timeout=30)
    c.user("mbuser")
    c.pass_(PASSWORD)
    sizes = [len(crlf(m)) for m in msgs]
    assert c.stat() == (3, sum(sizes))
    resp, lines, _ = c.retr(2)
    # ">From " quoting is undone for the client.
    assert b"\r\n".join(lines) + b"\r\n" == msgs[1]
    uids = [l.split()[1] for l in c.uidl()[1]]
    assert len(set(uids)) == 3
    # The mbox is locked for the session: a second session is refused; so is a dot-lock.
    r = Raw(pop.pop3_port)
    assert r.login(user="mbuser").startswith(b"-ERR [IN-USE]")
    r.close()
    assert (home / "mbox.lock").exists()
    c.dele(2)
    before = mbox.stat().st_ino
    c.quit()
    # Rewritten atomically (a new file renamed over the old one), lock released.
    assert mbox.stat().st_ino != before
    assert not (home / "mbox.lock").exists()
    assert not [p for p in home.iterdir() if p.name.startswith(".mbox")]
    data = mbox.read_bytes()
    assert b"message 1" not in data and b"message 0" in data and b"message 2" in data
    c = poplib.POP3("127.0.0.1", pop.pop3_port, timeout=30)
    c.user("mbuser")
    c.pass_(PASSWORD)
    assert [l.split()[1] for l in c.uidl()[1]] == [uids[0], uids[2]]
    c.quit()


def fetchmail(pop, tmp, keep, out_file):
    rc = tmp / f"fetchmailrc-{keep}"
    rc.write_text(
        f"poll 127.0.0.1 protocol pop3 port {pop.pop3_port}\n"
        f"  user demo password \"{PASSWORD}\" is root here\n"
        f"  {'keep' if keep else 'nokeep'} fetchall sslproto '' mda \"sh -c 'cat >> {out_file}'\"\n")
    os.chmod(rc, 0o600)
    env = dict(os.environ, HOME=str(tmp), FETCHMAILHOME=str(tmp))
    return subprocess.run(
        ["fetchmail", "-f", str(rc), "--nosyslog", "--nodetach", "-v", "--pidfile", str(tmp / f"fm-{keep}.pid")],
        capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.skipif(not shutil.which("fetchmail"), reason="fetchmail not installed (scripts/install-test-deps.sh)")
def test_fetchmail_keep_and_nokeep(pop, tmp_path):
    pop.start()
    pop.deliver([body(i) for i in range(3)])
    out = tmp_path / "fetched"
    p = fetchmail(pop, tmp_path, True, out)
    assert p.returncode == 0, p.stdout + p.stderr
    data = out.read_bytes()
    for i in range(3):
        assert f"Subject: message {i}".encode() in data
    assert b"\n.leading dot\n" in data
    assert len(files_in_order(pop)) == 3
    out.unlink()
    p = fetchmail(pop, tmp_path, False, out)
    assert p.returncode == 0, p.stdout + p.stderr
    assert out.read_bytes().count(b"Subject: message") == 3
    assert files_in_order(pop) == []
    p = fetchmail(pop, tmp_path, False, out)
    assert p.returncode == 1, p.stdout + p.stderr  # 1: no mail


def test_concurrent_logins_all_reach_the_auth_service(pop):
    """Twenty logins at once: every one reaches the authentication service (a single-client
    worker must take every queued connection after one edge-triggered wake-up; it used to
    take one and leave the rest waiting until their connect retries ran out, answered
    `-ERR [SYS/TEMP] Temporary authentication failure`). The mailbox lock refuses all but
    one session at a time: `[IN-USE]` is the only other answer allowed."""
    import threading
    pop.start()
    answers = []

    def login():
        try:
            c = poplib.POP3("127.0.0.1", pop.pop3_port, timeout=60)
            c.user("demo")
            c.pass_(PASSWORD)
            c.quit()
            answers.append("ok")
        except poplib.error_proto as e:
            answers.append(str(e))

    threads = [threading.Thread(target=login) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert len(answers) == 20
    assert all(a == "ok" or "[IN-USE]" in a for a in answers), answers
    assert "ok" in answers
    assert "authentication service: connect" not in pop.log()
