"""Fixtures for the local(8) tests: a configuration and queue in a temporary directory, the
real `local` binary started with master's descriptors (fd 5 = a listening unix socket,
OXIPOST_LISTEN_FDS=1), and a client that speaks to it as qmgr does. Every subprocess has a
timeout; every process started here is killed by pid when its test ends."""

import json
import os
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("OXIPOST_BIN", REPO / "target" / "debug"))
LOCAL = BIN / "local"
MKQUEUE = REPO / "target" / "debug" / "examples" / "mkqueue"


@pytest.fixture(scope="session", autouse=True)
def build():
    try:
        ok = (
            subprocess.run(
                ["cargo", "build", "-q", "-p", "oxipost-local", "--bins", "--examples"],
                cwd=REPO,
                timeout=900,
            ).returncode
            == 0
        )
    except OSError:  # no cargo for this user (the tests run unprivileged)
        ok = False
    # The workspace is shared: another crate's half-written manifest can fail the build;
    # the binaries built last are then used.
    if not ok:
        for b in (LOCAL, MKQUEUE):
            assert b.exists(), f"cargo build failed and {b} is missing"


def send_frame(sock, obj):
    body = json.dumps(obj).encode()
    sock.sendall(struct.pack(">I", len(body)) + body)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def recv_frame(sock):
    head = recv_exact(sock, 4)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    body = recv_exact(sock, n)
    assert body is not None, "connection closed inside a frame"
    return json.loads(body)


class Agent:
    """A running `local` with its own configuration, queue, homes and log."""

    def __init__(self, root: Path, params: dict):
        self.root = root
        self.etc = root / "etc"
        self.queue = root / "queue"
        self.home = root / "home"
        self.spool = root / "spool"
        self.maillog = root / "maillog"
        self.sock_path = root / "local.sock"
        for d in (self.etc, self.queue, self.home, self.spool):
            d.mkdir(parents=True, exist_ok=True)
        cf = {
            "queue_directory": str(self.queue),
            "maillog_file": str(self.maillog),
            "myhostname": "mx.example.org",
            "mydestination": "example.org, localhost",
            "local_users": "alice",
            "local_home_base": str(self.home),
            "home_mailbox": "Maildir/",
            "mail_spool_directory": str(self.spool),
            "recipient_delimiter": "+",
            "deliver_lock_attempts": "2",
            "deliver_lock_delay": "1s",
            # Never the host's /etc/aliases (its .db may be Berkeley DB from Postfix).
            "alias_maps": "",
        }
        cf.update(params)
        (self.etc / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in cf.items()))
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(self.sock_path))
        self.listener.listen(16)
        fd = self.listener.fileno()
        # Master's other descriptors: fd 3 the status pipe (12-byte records), fd 4 the watch
        # pipe whose write end only master holds (EOF there = master is gone).
        self.status_r, status_w = os.pipe()
        watch_r, self.watch_w = os.pipe()

        def descriptors():
            os.dup2(status_w, 3)
            os.dup2(watch_r, 4)
            os.dup2(fd, 5)

        env = {
            "PATH": "/usr/bin:/bin",
            "MAIL_CONFIG": str(self.etc),
            "OXIPOST_LISTEN_FDS": "1",
            "TZ": "UTC",
        }
        self.stderr = open(root / "local.stderr", "wb")
        self.proc = subprocess.Popen(
            [str(LOCAL), "-n", "local", "-t", "unix"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.stderr,
            stderr=self.stderr,
            close_fds=False,
            preexec_fn=descriptors,
        )
        os.close(status_w)
        os.close(watch_r)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.listener.close()
        self.stderr.close()
        os.close(self.status_r)
        os.close(self.watch_w)

    def enqueue(self, sender, rcpts, message: bytes):
        """Writes a queue file; rcpts are addresses or (address, orcpt) pairs."""
        args = [a if isinstance(a, str) else f"{a[0]}={a[1]}" for a in rcpts]
        r = subprocess.run(
            [str(MKQUEUE), str(self.queue), sender, *args],
            input=message,
            capture_output=True,
            timeout=30,
            check=True,
        )
        qid, path = r.stdout.decode().split()
        return qid, path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(str(self.sock_path))
        hello = recv_frame(s)
        assert hello["protocol"] == "delivery_request" and hello["version"] == 1, hello
        assert "batch" in hello.get("capabilities", []), hello
        return s

    def request(self, qid, path, sender, rcpts, attributes=None):
        recipients = []
        for i, a in enumerate(rcpts):
            addr, orcpt = (a, None) if isinstance(a, str) else a
            recipients.append({"index": i, "address": addr, "orcpt": orcpt, "notify": None})
        return {
            "queue_id": qid,
            "path": path,
            "content_offset": 0,
            "content_length": 0,
            "sender": sender,
            "transport": "local",
            "nexthop": "mx.example.org",
            "recipients": recipients,
            "attributes": attributes or [],
            "arrival": int(time.time()),
        }

    def deliver(self, sender, rcpts, message: bytes, attributes=None):
        """Queues the message, sends one request on a new connection, returns the results."""
        qid, path = self.enqueue(sender, rcpts, message)
        with self.connect() as s:
            send_frame(s, self.request(qid, path, sender, rcpts, attributes))
            reply = recv_frame(s)
        assert reply is not None, "local closed the connection without a reply"
        return qid, reply["results"]

    def log(self):
        deadline = time.time() + 5
        text = ""
        while time.time() < deadline:
            text = self.maillog.read_text(errors="replace") if self.maillog.exists() else ""
            if text:
                break
            time.sleep(0.05)
        return text


def let_others_traverse(path: Path):
    """As root, local runs commands for root-owned recipients as default_privs (nobody),
    as Postfix does: let it reach the scripts under pytest's private temporary directory."""
    if os.geteuid() != 0:
        return
    for p in [path, *path.parents]:
        if p == Path(tempfile.gettempdir()) or p == Path("/"):
            break
        os.chmod(p, p.stat().st_mode & 0o7777 | 0o001)


@pytest.fixture
def start_local(tmp_path):
    let_others_traverse(tmp_path)
    agents = []

    def start(**params):
        a = Agent(tmp_path / f"a{len(agents)}", {k: str(v) for k, v in params.items()})
        agents.append(a)
        return a

    yield start
    for a in agents:
        a.stop()
