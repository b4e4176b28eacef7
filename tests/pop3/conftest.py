"""Fixtures for the pop3d tests: the whole-suite fixture of tests/mailflow (`mailctl init`
on 127.0.0.1 high ports, run as the unprivileged `oxipost` user when root) with a TLS
certificate (made with `openssl req`, as tests/tls_auth does), a passwd-file passdb whose
user `demo` has the suite's demo home (so local's Maildir deliveries are its mailbox), and
helpers: deliver with smtplib, talk raw POP3 over a socket."""

import importlib.util
import os
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

_here = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("mailflow_conftest", _here.parent / "mailflow" / "conftest.py")
_mf = importlib.util.module_from_spec(_spec)
sys.modules["mailflow_conftest"] = _mf
_spec.loader.exec_module(_mf)

BIN, AS_USER, Suite, run, pids_of = _mf.BIN, _mf.AS_USER, _mf.Suite, _mf.run, _mf.pids_of

PASSWORD = "Pop3-s3cret pw"


def chown(p):
    if AS_USER:
        shutil.chown(p, "oxipost", "oxipost")


def system_account(name):
    """A context manager: a system account `name` (created, and removed afterwards, if it
    does not exist yet) for the per-user rights tests; yields its pwd entry."""
    import contextlib
    import pwd

    @contextlib.contextmanager
    def account():
        created = False
        if subprocess.run(["id", name], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--no-create-home", "--home-dir", "/nonexistent",
                            "--shell", "/usr/sbin/nologin", name],
                           check=True, capture_output=True, timeout=30)
            created = True
        try:
            yield pwd.getpwnam(name)
        finally:
            if created:
                subprocess.run(["userdel", name], capture_output=True, timeout=30)
    return account()


def private_maildir(home: Path, pw, messages):
    """A Maildir only its user may enter (mode 700 directories, 600 files, owned by the
    user throughout, as a system user's), holding `messages` in new/."""
    home.mkdir(mode=0o700)
    md = home / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (md / sub).mkdir(parents=True, mode=0o700)
    for i, body in enumerate(messages):
        (md / "new" / f"{1700000000 + i}.M{i}P1Q{i}.test").write_bytes(body)
    for d, _dirs, files in os.walk(home):
        os.chown(d, pw.pw_uid, pw.pw_gid)
        os.chmod(d, 0o700)
        for name in files:
            f = os.path.join(d, name)
            os.chown(f, pw.pw_uid, pw.pw_gid)
            os.chmod(f, 0o600)
    return md


def root_suite(suite_class, prefix):
    """A suite in a fresh directory for tests that run master as root (the per-user
    rights tests); a context manager that stops it and removes the directory."""
    import contextlib

    @contextlib.contextmanager
    def suite():
        top = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        os.chmod(top, 0o755)
        shutil.chown(top, "oxipost", "oxipost")
        s = suite_class(top / "oxi")
        try:
            yield s
        finally:
            run(BIN / "mailctl", "-c", s.etc, "stop", check=False, timeout=60)
            s.kill_all()
            if not os.environ.get("OXIPOST_KEEP"):
                shutil.rmtree(top, ignore_errors=True)
    return suite()


def make_cert(directory: Path):
    keyf, certf = directory / "server.key", directory / "server.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=mail.example.test",
         "-newkey", "rsa:2048", "-keyout", str(keyf), "-out", str(certf),
         "-addext", "subjectAltName=DNS:mail.example.test"],
        check=True, capture_output=True, timeout=60)
    for p in (keyf, certf):
        os.chmod(p, 0o644)
        chown(p)
    return keyf, certf


class PopSuite(Suite):
    def __init__(self, root: Path):
        super().__init__(root)
        self.pop3_port = self.base + 110
        self.pop3s_port = self.base + 995
        self.tls = self.root / "tls"
        self.tls.mkdir()
        chown(self.tls)
        self.key, self.cert = make_cert(self.tls)
        self.demo_home = self.home / "demo"
        self.passwd = self.root / "etc" / "users.passwd"
        self.users({"demo": ""})
        self.postconf(
            f"auth_passdb=passwd-file:{self.passwd}",
            "auth_failure_delay=0",
            "pop3d_tls_security_level=may",
            f"pop3d_tls_cert_file={self.cert}",
            f"pop3d_tls_key_file={self.key}",
        )

    def users(self, extra: dict):
        """passwd-file lines: name -> extra fields (e.g. userdb_mail=mbox:~/mbox)."""
        lines = [f"{name}:{{PLAIN}}{PASSWORD}::::{self.home / name}::{x}" for name, x in extra.items()]
        self.passwd.write_text("\n".join(lines) + "\n")
        os.chmod(self.passwd, 0o640)
        chown(self.passwd)

    def send(self, body: bytes, rcpt="demo@localhost"):
        with smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30) as c:
            c.sendmail("sender@example.com", [rcpt], body)

    def deliver(self, bodies, user="demo"):
        before = len(self.new_mail(user))
        for b in bodies:
            self.send(b, f"{user}@localhost")
        return self.wait_for_mail(before + len(bodies), user)

    def wait_log(self, needle, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            log = self.log()
            if needle in log:
                return log
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} not logged; log:\n" + self.log()[-3000:])

    def pop3d_pids(self):
        return pids_of("pop3d", self.root)


class Raw:
    """A raw POP3 client: exact bytes, pipelining, no parsing beyond line ends."""

    def __init__(self, port, timeout=30):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""
        self.greeting = self.line()

    def send(self, data: bytes):
        self.s.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def cmd(self, c: str) -> bytes:
        self.send(c.encode() + b"\r\n")
        return self.line()

    def multi(self) -> bytes:
        """The body of a multi-line reply, raw (still dot-stuffed), up to the terminator."""
        while b"\r\n.\r\n" not in b"\r\n" + self.buf:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise EOFError(self.buf)
            self.buf += chunk
        data = b"\r\n" + self.buf
        i = data.index(b"\r\n.\r\n")
        body, self.buf = data[2:i + 2], data[i + 5:]
        return body

    def login(self, user="demo", pw=PASSWORD):
        assert self.cmd(f"USER {user}").startswith(b"+OK")
        return self.cmd(f"PASS {pw}")

    def close(self):
        self.s.close()


@pytest.fixture
def pop():
    top = Path(tempfile.mkdtemp(prefix="oxipost-pop3-", dir="/tmp"))
    os.chmod(top, 0o755)
    chown(top)
    s = PopSuite(top / "oxi")
    try:
        yield s
    finally:
        s.stop()
        s.kill_all()
        if not os.environ.get("OXIPOST_KEEP"):
            shutil.rmtree(top, ignore_errors=True)
