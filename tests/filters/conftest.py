"""Fixtures for the content-inspection tests (issue 11): the whole-suite fixture of
tests/mailflow (a `mailctl init` instance on 127.0.0.1 high ports under master, run as the
unprivileged `oxipost` user when root), plus helpers to add master.cf services, write
executable scripts the suite user can run, and send mail over SMTP."""

import importlib.util
import os
import shutil
import smtplib
import subprocess
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
pids_of = _mf.pids_of
suite = _mf.suite  # the fixture

# The account pipe commands run as: the suite's user.
SUITE_USER = "oxipost" if AS_USER else os.environ.get("USER") or subprocess.run(
    ["id", "-un"], capture_output=True, text=True, timeout=10).stdout.strip()


def work_dir(s, name):
    """A directory next to the suite that the suite user may write to."""
    d = s.root.parent / name
    d.mkdir(exist_ok=True)
    os.chmod(d, 0o777)
    if AS_USER:
        shutil.chown(d, "oxipost", "oxipost")
    return d


def script(path, text):
    path.write_text(text)
    os.chmod(path, 0o755)
    return path


def add_master(s, text):
    with open(s.etc / "master.cf", "a") as f:
        f.write("\n" + text.strip("\n") + "\n")


def smtpd_option(s, *options):
    """Adds `-o name=value` lines to the main SMTP service (port base+525)."""
    cf = s.etc / "master.cf"
    lines = cf.read_text().split("\n")
    for i, l in enumerate(lines):
        if l.startswith(f"{s.smtp_port} ") or l.startswith(f"{s.smtp_port}\t"):
            lines[i:i + 1] = [l] + [f"  -o {o}" for o in options]
            break
    else:
        raise AssertionError("no smtpd service line")
    cf.write_text("\n".join(lines))


def send(port, sender, rcpts, body, timeout=30):
    with smtplib.SMTP("127.0.0.1", port, timeout=timeout) as c:
        return c.sendmail(sender, rcpts, body)


def wait(pred, timeout=30, what="condition", suite=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    log = suite.log()[-4000:] if suite else ""
    raise AssertionError(f"timed out waiting for {what}\n{log}")
