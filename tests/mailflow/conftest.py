"""A whole suite per test: `mailctl init` in a temporary directory on 127.0.0.1 high
ports, started with `mailctl start`, stopped and killed by pid afterwards. Real clients
(smtplib, swaks) talk to the real binaries under master."""

import os
import shutil
import tempfile
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("OXIPOST_BIN", REPO / "target" / "debug"))


# As root (CI), the suite runs as the unprivileged system user `oxipost`, exactly like
# the README's quick start; as an ordinary user, as that user.
AS_USER = []
if os.geteuid() == 0:
    if subprocess.run(["id", "oxipost"], capture_output=True).returncode != 0:
        subprocess.run(
            ["useradd", "--system", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "oxipost"],
            check=True,
        )
    AS_USER = ["runuser", "-u", "oxipost", "--"]


def run(*args, timeout=30, check=True, as_suite_user=False, **kw):
    argv = (AS_USER if as_suite_user else []) + [str(a) for a in args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check, **kw)


PORT_OFFSETS = (525, 587, 465, 110, 995, 143, 993)


def free_port_base():
    """A port base whose every mailctl-init port (base+110 .. base+995) is free now. Bases
    come from 10000-29000, below the kernel's ephemeral range, so client sockets of other
    tests cannot take them between this check and master's bind."""
    import random
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(10000, 29000)
        ok = True
        for off in PORT_OFFSETS:
            t = socket.socket()
            try:
                t.bind(("127.0.0.1", base + off))
            except OSError:
                ok = False
            finally:
                t.close()
            if not ok:
                break
        if ok:
            return base
    raise RuntimeError("no free port base")


def live_pids_under(directory):
    d = str(directory).encode()
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit() or int(e) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{e}/cmdline").read_bytes()
            env = Path(f"/proc/{e}/environ").read_bytes()
            stat = Path(f"/proc/{e}/stat").read_text()
        except OSError:
            continue
        if ") Z" in stat:
            continue
        if d in cmd or b"MAIL_CONFIG=" + d in env:
            out.append(int(e))
    return out


def pids_of(program, directory):
    """Live pids of a daemon (by its argv[0] basename) of this suite."""
    out = []
    for pid in live_pids_under(directory):
        try:
            argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except OSError:
            continue
        if os.path.basename(argv0) == program.encode():
            out.append(pid)
    return out


class Suite:
    def __init__(self, root: Path):
        self.root = root
        self.etc = root / "etc"
        self.base = free_port_base()
        self.smtp_port = self.base + 525
        run(BIN / "mailctl", "init", root, "--port-base", self.base, as_suite_user=True)
        self.home = root / "home"

    def postconf(self, *edits):
        run(BIN / "postconf", "-c", self.etc, "-e", *edits, as_suite_user=True)

    def mailctl(self, *args, check=True, timeout=30):
        return run(BIN / "mailctl", "-c", self.etc, *args, check=check, timeout=timeout, as_suite_user=True)

    def start(self):
        # A loaded machine can make master slow to come up; one retry, with the reason
        # of a failure kept for the assertion message.
        r = self.mailctl("start", check=False, timeout=60)
        if r.returncode != 0:
            self.mailctl("stop", check=False, timeout=60)
            self.kill_all()
            time.sleep(1)
            r2 = self.mailctl("start", check=False, timeout=60)
            assert r2.returncode == 0, f"mailctl start failed: {r.stderr} / {r2.stderr}"

    def stop(self):
        self.mailctl("stop", check=False)

    def maildir(self, user="demo"):
        return self.home / user / "Maildir"

    def new_mail(self, user="demo"):
        d = self.maildir(user) / "new"
        return sorted(d.iterdir()) if d.is_dir() else []

    def wait_for_mail(self, n, user="demo", timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            files = self.new_mail(user)
            if len(files) >= n:
                return files
            time.sleep(0.1)
        raise AssertionError(
            f"{len(self.new_mail(user))} of {n} messages delivered to {user}; log:\n" + self.log()[-3000:]
        )

    def log(self):
        p = self.root / "log" / "maillog"
        return p.read_text(errors="replace") if p.exists() else ""

    def queue_files(self, queue):
        d = self.root / "spool" / queue
        if not d.is_dir():
            return []
        return [p for p in d.rglob("*") if p.is_file() and not p.name.startswith(".")]

    def kill_all(self):
        for pid in live_pids_under(self.root):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def suite():
    top = Path(tempfile.mkdtemp(prefix="oxipost-test-", dir="/tmp"))
    os.chmod(top, 0o755)
    if AS_USER:
        shutil.chown(top, "oxipost", "oxipost")
    s = Suite(top / "oxi")
    try:
        yield s
    finally:
        s.stop()
        s.kill_all()
        if not os.environ.get("OXIPOST_KEEP"):
            shutil.rmtree(top, ignore_errors=True)
