"""Fixtures for master/mailctl tests: a suite in a temporary directory, run with real
processes on 127.0.0.1 high ports. Every subprocess has a timeout; every process the
suite started is killed by pid when a test ends."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / "target" / "debug"
MAILCTL = BIN / "mailctl"


@pytest.fixture(scope="session", autouse=True)
def build():
    r = subprocess.run(
        ["cargo", "build", "-q", "-p", "oxipost-master", "-p", "oxipost-mailctl"],
        cwd=REPO,
        timeout=900,
    )
    # The workspace is shared: another crate's half-written manifest can fail the build;
    # the binaries built last are then used.
    if r.returncode != 0:
        for b in ("mailctl", "master", "oxipost-testd"):
            assert (BIN / b).exists(), f"cargo build failed and {b} is missing"
        print("warning: cargo build failed; testing the binaries already built")


def free_ports(n):
    """n distinct TCP ports that are free on 127.0.0.1 right now."""
    socks, ports = [], []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def init_port_base(offsets=(525, 587, 465, 110, 995, 143, 993), tries=200):
    """A `mailctl init --port-base` whose service ports (base + each offset) are all free
    on 127.0.0.1 right now (other suites may be listening nearby)."""
    import random
    for _ in range(tries):
        base = random.randrange(20000, 60000)
        socks = []
        try:
            for off in offsets:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + off))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port base found")


def proc_pids_of(directory):
    """Pids of live processes whose command line or MAIL_CONFIG mention directory."""
    found = []
    d = str(directory)
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
            env = Path(f"/proc/{entry}/environ").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if ") Z" in stat:
            continue
        if d.encode() in cmd or f"MAIL_CONFIG={d}".encode() in env:
            found.append(int(entry))
    return found


def alive(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return ") Z" not in stat


class Suite:
    def __init__(self, root: Path):
        self.root = root
        self.etc = root / "etc"
        self.spool = root / "spool"
        self.data = root / "data"
        self.maillog = root / "maillog"
        self.seen = set()
        self.etc.mkdir(parents=True)
        self.main_extra = ""

    def write_main(self, extra=""):
        self.main_extra = extra
        user = subprocess.run(["id", "-un"], capture_output=True, text=True, timeout=5).stdout.strip()
        group = subprocess.run(["id", "-gn"], capture_output=True, text=True, timeout=5).stdout.strip()
        (self.etc / "main.cf").write_text(
            f"""queue_directory = {self.spool}
data_directory = {self.data}
daemon_directory = {BIN}
maillog_file = {self.maillog}
mail_owner = {user}
setgid_group = {group}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
service_throttle_time = 2s
{extra}"""
        )

    def write_master(self, text):
        (self.etc / "master.cf").write_text(text)

    def mailctl(self, *args, timeout=30):
        return subprocess.run(
            [str(MAILCTL), "-c", str(self.etc), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self):
        r = self.mailctl("start")
        assert r.returncode == 0, r.stderr
        pid = self.master_pid()
        self.seen.add(pid)
        return pid

    def master_pid(self):
        return int((self.spool / "pid" / "master.pid").read_text().strip())

    def ask(self, port, line=None, timeout=10):
        """Connects, returns (worker pid, service name[, echoed line])."""
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            f = s.makefile("rwb")
            greeting = f.readline().decode()
            assert greeting, "connection closed without a greeting"
            pid, name = greeting.split()
            self.seen.add(int(pid))
            if line is None:
                return int(pid), name
            f.write(line.encode() + b"\n")
            f.flush()
            return int(pid), name, f.readline().decode().rstrip("\n")

    def log(self):
        try:
            return self.maillog.read_text()
        except OSError:
            return ""

    def wait_log(self, text, timeout=10):
        end = time.time() + timeout
        while time.time() < end:
            if text in self.log():
                return True
            time.sleep(0.05)
        return False

    def workers(self):
        """Pids of master's live children."""
        try:
            mp = self.master_pid()
        except (OSError, ValueError):
            return []
        kids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                st = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = st.rsplit(")", 1)[1].split()
            if int(fields[1]) == mp and fields[0] != "Z":
                kids.append(int(entry))
        return kids

    def cleanup(self):
        try:
            self.mailctl("stop", timeout=20)
        except subprocess.TimeoutExpired:
            pass
        # Only processes that still belong to this suite (a seen pid may be reused).
        for pid in proc_pids_of(self.root):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def suite(tmp_path):
    s = Suite(tmp_path)
    try:
        yield s
    finally:
        s.cleanup()
