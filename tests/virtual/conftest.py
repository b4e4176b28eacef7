"""Fixtures for the address class and rewriting tests (issue 6 item 4): the whole-suite
fixture of tests/mailflow (a `mailctl init` instance on 127.0.0.1 high ports, run as the
unprivileged `oxipost` user when root), plus helpers that write lookup tables (indexed
ones built with our `postmap`) and wait for mail."""

import importlib.util
import os
import pwd
import shutil
import sys
import time
from pathlib import Path

_here = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("mailflow_conftest", _here.parent / "mailflow" / "conftest.py")
_mf = importlib.util.module_from_spec(_spec)
sys.modules["mailflow_conftest"] = _mf
_spec.loader.exec_module(_mf)

BIN = _mf.BIN
AS_USER = _mf.AS_USER
Suite = _mf.Suite
run = _mf.run
suite = _mf.suite  # the fixture


def suite_ids():
    """(uid, gid) the suite's daemons run as."""
    if AS_USER:
        pw = pwd.getpwnam("oxipost")
        return pw.pw_uid, pw.pw_gid
    return os.getuid(), os.getgid()


def give(path):
    """Hands a file or directory the test made to the suite's user."""
    if AS_USER:
        shutil.chown(path, "oxipost", "oxipost")


def table(s, name, text, kind="hash"):
    """Writes etc/NAME; indexed kinds are built with our postmap. Returns `kind:path`."""
    path = s.etc / name
    path.write_text(text)
    give(path)
    if kind in ("hash", "btree", "lmdb", "cdb"):
        run(BIN / "postmap", "-c", s.etc, f"{kind}:{path}", as_suite_user=True)
    return f"{kind}:{path}"


def wait_for(pred, what, s, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; log:\n" + s.log()[-4000:])
