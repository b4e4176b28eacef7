"""Fixtures for the imapd tests: the pop3 suite fixture (tests/pop3/conftest.py: `mailctl
init` on 127.0.0.1 high ports, a TLS certificate, a passwd-file user `demo` whose home is
where local delivers) with imapd's TLS parameters set, and a raw IMAP client for exact
bytes."""

import importlib.util
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import pytest

_here = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("pop3_conftest", _here.parent / "pop3" / "conftest.py")
_pc = importlib.util.module_from_spec(_spec)
sys.modules["pop3_conftest"] = _pc
_spec.loader.exec_module(_pc)

BIN, PASSWORD, chown, run, pids_of = _pc.BIN, _pc.PASSWORD, _pc.chown, _pc.run, _pc.pids_of


class ImapSuite(_pc.PopSuite):
    def __init__(self, root: Path):
        super().__init__(root)
        self.imap_port = self.base + 143
        self.imaps_port = self.base + 993
        self.postconf(
            "imapd_tls_security_level=may",
            f"imapd_tls_cert_file={self.cert}",
            f"imapd_tls_key_file={self.key}",
            "imapd_literal_size_limit=1048576",
        )

    def all_mail(self, user="demo"):
        md = self.maildir(user)
        return [p for sub in ("new", "cur") if (md / sub).is_dir() for p in (md / sub).iterdir()]

    def deliver_all(self, bodies, user="demo", timeout=30):
        """Delivers by SMTP one at a time (so UIDs follow the order of `bodies`), waiting
        until each file is in the Maildir (new/ or cur/)."""
        for b in bodies:
            before = len(self.all_mail(user))
            self.send(b, f"{user}@localhost")
            deadline = time.time() + timeout
            while len(self.all_mail(user)) <= before:
                if time.time() > deadline:
                    raise AssertionError("mail not delivered; log:\n" + self.log()[-3000:])
                time.sleep(0.05)


class Raw:
    """A raw IMAP client: sends bytes, reads up to the tagged reply."""

    def __init__(self, port, timeout=15):
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

    def until_tag(self, tag: bytes) -> list:
        lines = []
        while True:
            l = self.line()
            lines.append(l)
            if l.startswith(tag + b" "):
                return lines

    def cmd(self, tag: str, c: str) -> list:
        self.send(f"{tag} {c}\r\n".encode())
        return self.until_tag(tag.encode())

    def login(self):
        r = self.cmd("L", f'LOGIN demo "{PASSWORD}"')
        assert r[-1].startswith(b"L OK"), r

    def close(self):
        self.s.close()


@pytest.fixture
def imap():
    top = Path(tempfile.mkdtemp(prefix="oxipost-imap-", dir="/tmp"))
    os.chmod(top, 0o755)
    chown(top)
    s = ImapSuite(top / "oxi")
    try:
        yield s
    finally:
        s.stop()
        s.kill_all()
        if not os.environ.get("OXIPOST_KEEP"):
            shutil.rmtree(top, ignore_errors=True)
