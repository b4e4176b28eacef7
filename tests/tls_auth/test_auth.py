"""SMTP AUTH through the auth service: swaks and smtplib on submission (587) and
submissions (465), wrong passwords and the brute-force delay, every passwd-file scheme,
SQLite users managed with oxipost-user, relay with and without authentication, the service
being down, and system users with the host's yescrypt (root only)."""

import base64
import os
import shutil
import smtplib
import ssl
import subprocess
import time
import uuid

import pytest

from conftest import AS_USER, BIN, run


def _hosts_name(ip):
    """The client name smtpd logs for a loopback address: the first /etc/hosts name
    (as Postfix, through the system resolver), else "unknown"."""
    try:
        for line in open("/etc/hosts"):
            w = line.split("#")[0].split()
            if len(w) >= 2 and w[0] == ip:
                return w[1].lower()
    except OSError:
        pass
    return "unknown"


LOCAL4 = _hosts_name("127.0.0.1")
LOCAL6 = _hosts_name("::1")


PASSWD = "alice:{PLAIN}s3cret-Pw::::/home/alice\n"


def ctx():
    c = ssl.create_default_context()
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def swaks(*args, timeout=60):
    return subprocess.run(["swaks", "--server", "127.0.0.1", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def hash_pw(scheme, pw):
    return subprocess.run([BIN / "oxipost-user", "hash", "-s", scheme], input=pw + "\n",
                          capture_output=True, text=True, timeout=60, check=True).stdout.strip()


def b64(s):
    return base64.b64encode(s.encode()).decode()


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_swaks_tls_auth_on_submission(tls_suite, mech):
    s = tls_suite
    s.passwd_file(PASSWD)
    s.start()
    p = swaks("--port", s.submission_port, "--tls", "--auth", mech, "--auth-user", "alice",
              "--auth-password", "s3cret-Pw", "--from", "alice@example.test",
              "--to", "demo@localhost", "--ehlo", "client.example")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "235 2.7.0 Authentication successful" in p.stdout
    files = s.wait_for_mail(1)
    text = files[0].read_text()
    assert "with ESMTPSA id" in text
    assert "(Authenticated sender: alice)" in text
    log = s.wait_log("sasl_username=alice")
    assert f"sasl_method={mech}" in log
    assert "s3cret-Pw" not in log and b64("s3cret-Pw") not in log


def test_swaks_implicit_tls_submissions(tls_suite):
    s = tls_suite
    s.passwd_file(PASSWD)
    s.start()
    p = swaks("--port", s.submissions_port, "--tlsc", "--auth", "LOGIN", "--auth-user", "alice",
              "--auth-password", "s3cret-Pw", "--from", "alice@example.test",
              "--to", "demo@localhost")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "235 2.7.0" in p.stdout
    s.wait_for_mail(1)


def test_smtplib_starttls_login_and_relay(tls_suite):
    """An authenticated client relays to a remote domain; the same without AUTH is refused
    (submission: client restrictions; smtp port: relay restrictions)."""
    s = tls_suite
    s.passwd_file(PASSWD)
    s.postconf("mynetworks=192.0.2.0/24", "smtpd_sasl_auth_enable=yes")
    s.start()
    for port in (s.submission_port, s.smtp_port):
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
            c.starttls(context=ctx())
            c.ehlo("client.example")
            c.mail("alice@example.test")
            code, msg = c.rcpt("bob@remote.example")
            assert code in (454, 554), (port, code, msg)
            assert b"Access denied" in msg or b"Relay access denied" in msg
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
            c.starttls(context=ctx())
            c.ehlo("client.example")
            assert "PLAIN" in c.esmtp_features.get("auth", "")
            c.login("alice", "s3cret-Pw")
            c.mail("alice@example.test")
            assert c.rcpt("bob@remote.example")[0] == 250
            code, msg = c.data(b"Subject: relay\r\n\r\nhi\r\n")
            assert code == 250 and b"queued as" in msg


def test_auth_only_with_tls_and_bad_input(tls_suite):
    s = tls_suite
    s.passwd_file(PASSWD)
    s.postconf("smtpd_sasl_auth_enable=yes", "smtpd_tls_auth_only=yes")
    s.start()
    with smtplib.SMTP("127.0.0.1", s.smtp_port, timeout=30) as c:
        c.ehlo("x")
        assert "auth" not in c.esmtp_features
        code, msg = c.docmd("AUTH", "PLAIN " + b64("\0alice\0s3cret-Pw"))
        assert (code, msg) == (538, b"5.7.11 Encryption required for requested authentication mechanism")
        c.starttls(context=ctx())
        c.ehlo("x")
        assert c.docmd("AUTH", "PLAIN !!!notbase64")[0] == 501
        assert c.docmd("AUTH", "LOGIN")[0] == 334
        assert c.docmd("*") == (501, b"5.7.0 Authentication aborted")
        assert c.docmd("AUTH", "DIGEST-MD5")[0] == 535
        assert c.docmd("AUTH", "PLAIN " + b64("\0alice\0s3cret-Pw"))[0] == 235
        assert c.docmd("AUTH", "PLAIN " + b64("\0alice\0s3cret-Pw"))[0] == 503


def test_wrong_password_delay_grows_and_limit(tls_suite):
    s = tls_suite
    s.passwd_file(PASSWD)
    s.postconf("auth_failure_delay=1s", "auth_failure_limit=3", "auth_failure_window=10m")
    s.start()
    with smtplib.SMTP("127.0.0.1", s.submission_port, timeout=60) as c:
        c.starttls(context=ctx())
        c.ehlo("x")
        took = []
        for _ in range(3):
            t = time.monotonic()
            code, msg = c.docmd("AUTH", "PLAIN " + b64("\0alice\0wrong-guess"))
            took.append(time.monotonic() - t)
            assert (code, msg) == (535, b"5.7.8 Error: authentication failed: authentication failure")
        assert took[0] >= 0.9 and took[1] >= 1.8 and took[2] >= 3.6, took
        # Over the limit: the right password no longer gets in from this address.
        code, _ = c.docmd("AUTH", "PLAIN " + b64("\0alice\0s3cret-Pw"))
        assert code == 535
    log = s.wait_log("SASL PLAIN authentication failed")
    assert f"warning: {LOCAL4}[127.0.0.1]: SASL PLAIN authentication failed: authentication failure" in log
    assert "too many authentication failures" in log
    assert "wrong-guess" not in log and "s3cret-Pw" not in log


def test_passwd_file_every_scheme(tls_suite):
    s = tls_suite
    lines = []
    users = {}
    for i, scheme in enumerate(["SHA512-CRYPT", "BLF-CRYPT", "ARGON2ID", "PLAIN"]):
        pw = f"pw-{scheme.lower()}-{i}"
        lines.append(f"u{i}:{hash_pw(scheme, pw)}:1000:1000::/home/u{i}::userdb_mail=maildir:~/Maildir")
        users[f"u{i}"] = pw
    crypt6 = subprocess.run(["openssl", "passwd", "-6", "pw-crypt"], capture_output=True,
                            text=True, timeout=30, check=True).stdout.strip()
    lines.append(f"u9:{{CRYPT}}{crypt6}::::/home/u9")
    users["u9"] = "pw-crypt"
    s.passwd_file("\n".join(lines) + "\n")
    s.start()
    for user, pw in users.items():
        with smtplib.SMTP("127.0.0.1", s.submission_port, timeout=60) as c:
            c.starttls(context=ctx())
            c.ehlo("x")
            assert c.login(user, pw)[0] == 235, user
    with smtplib.SMTP("127.0.0.1", s.submission_port, timeout=60) as c:
        c.starttls(context=ctx())
        c.ehlo("x")
        with pytest.raises(smtplib.SMTPAuthenticationError):
            c.login("u2", "pw-sha512-crypt-0")


def test_sqlite_users_with_admin_tool(tls_suite):
    s = tls_suite
    db = s.root / "data" / "users.db"
    s.postconf(f"auth_passdb=sqlite:{db}")
    tool = [BIN / "oxipost-user", "-c", s.etc]
    run(*tool, "add", "carol@example.test", input="first-pw\n", as_suite_user=True)
    run(*tool, "add", "dave@example.test", "--quota", "1000", input="dave-pw\n", as_suite_user=True)
    out = run(*tool, "list", as_suite_user=True).stdout
    assert "carol@example.test\texample.test/carol/\tquota=0\tenabled" in out
    assert "dave@example.test" in out
    assert run(*tool, "add", "carol@example.test", input="x\n", check=False,
               as_suite_user=True).returncode != 0
    s.start()

    def login(user, pw):
        with smtplib.SMTP("127.0.0.1", s.submission_port, timeout=60) as c:
            c.starttls(context=ctx())
            c.ehlo("x")
            try:
                return c.login(user, pw)[0]
            except smtplib.SMTPAuthenticationError as e:
                return e.smtp_code

    assert login("carol@example.test", "first-pw") == 235
    run(*tool, "passwd", "carol@example.test", input="second-pw\n", as_suite_user=True)
    assert login("carol@example.test", "first-pw") == 535
    assert login("carol@example.test", "second-pw") == 235
    run(*tool, "disable", "dave@example.test", as_suite_user=True)
    assert login("dave@example.test", "dave-pw") == 535
    run(*tool, "del", "carol@example.test", as_suite_user=True)
    assert login("carol@example.test", "second-pw") == 535
    assert "carol" not in run(*tool, "list", as_suite_user=True).stdout


def test_auth_service_down_is_temporary(tls_suite):
    s = tls_suite
    s.passwd_file(PASSWD)
    s.postconf("smtpd_sasl_path=private/no-such-auth")
    s.start()
    with smtplib.SMTP("127.0.0.1", s.submission_port, timeout=60) as c:
        c.starttls(context=ctx())
        c.ehlo("x")
        code, msg = c.docmd("AUTH", "PLAIN " + b64("\0alice\0s3cret-Pw"))
        assert (code, msg) == (454, b"4.7.0 Temporary authentication failure")
        c.mail("alice@example.test")
        assert c.rcpt("demo@localhost")[0] == 554


def test_postconf_lists_mechanisms_and_auth_parameters():
    out = subprocess.run([BIN / "postconf", "-a"], capture_output=True, text=True, timeout=30).stdout
    assert out.split() == ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"]
    out = subprocess.run([BIN / "postconf", "-d", "auth_passdb", "auth_failure_delay"],
                         capture_output=True, text=True, timeout=30).stdout
    assert "auth_passdb = shadow" in out and "auth_failure_delay = 1s" in out


@pytest.mark.skipif(os.geteuid() != 0, reason="creates a system user; root only")
def test_shadow_yescrypt_system_user(tmp_path):
    """A system user whose password Debian's chpasswd stores as yescrypt verifies through
    the host's crypt(3), as the auth service's shadow passdb does it."""
    name = "oxt" + uuid.uuid4().hex[:8]
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, timeout=30)
    try:
        subprocess.run(["chpasswd"], input=f"{name}:Yes-crypt-9\n", text=True, check=True, timeout=30)
        entry = [l for l in open("/etc/shadow").read().splitlines() if l.startswith(name + ":")][0]
        assert entry.split(":")[1].startswith("$y$"), entry
        tool = [BIN / "oxipost-user", "--db", tmp_path / "unused.db", "test", name, "--passdb", "shadow"]
        ok = subprocess.run(tool, input="Yes-crypt-9\n", capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert f"passdb: {name} auth succeeded" in ok.stdout
        bad = subprocess.run(tool, input="wrong\n", capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1
    finally:
        subprocess.run(["userdel", name], timeout=30)
