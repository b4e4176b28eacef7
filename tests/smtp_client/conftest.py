"""Fixtures for the smtp/lmtp client tests: the whole-suite fixture of tests/mailflow (a
`mailctl init` instance on 127.0.0.1 high ports, run as the unprivileged `oxipost` user
when root), the loopback peers of peers.py, and test certificates."""

import importlib.util
import os
import shutil
import smtplib
import sys
import tempfile
import time
from pathlib import Path

import pytest

_here = Path(__file__).resolve().parent
sys.path.insert(0, str(_here))
_spec = importlib.util.spec_from_file_location("mailflow_conftest", _here.parent / "mailflow" / "conftest.py")
_mf = importlib.util.module_from_spec(_spec)
sys.modules["mailflow_conftest"] = _mf
_spec.loader.exec_module(_mf)

import peers  # noqa: E402

BIN = _mf.BIN
AS_USER = _mf.AS_USER
Suite = _mf.Suite
run = _mf.run
pids_of = _mf.pids_of
suite = _mf.suite  # the fixture



@pytest.fixture
def fakes():
    """Starts FakeServer peers on demand; stops them afterwards."""
    started = []

    def make(**kw):
        f = peers.FakeServer(**kw)
        started.append(f)
        return f

    yield make
    for f in started:
        f.stop()


@pytest.fixture(scope="session")
def certs():
    d = Path(tempfile.mkdtemp(prefix="oxipost-smtpc-certs-", dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield peers.make_certs(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def send(suite, rcpts, body=None, sender="demo@localhost"):
    if body is None:
        body = ("From: demo@localhost\r\nTo: someone@example.net\r\nSubject: out\r\n"
                "Message-ID: <out@localhost>\r\n\r\nhello out there\r\n.leading dot\r\n")
    with smtplib.SMTP("127.0.0.1", suite.smtp_port, timeout=30) as c:
        c.sendmail(sender, rcpts, body)
    return body


def wait_log(suite, needle, timeout=30, count=1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        log = suite.log()
        if log.count(needle) >= count:
            return log
        time.sleep(0.1)
    raise AssertionError(f"{needle!r} not in log:\n" + suite.log()[-4000:])
