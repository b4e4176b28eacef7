"""Fixtures for smtpd tests: a private configuration and queue per test, and a real
`smtpd` process started the way master starts it (listening socket on fd 5,
OXIPOST_LISTEN_FDS=1, MAIL_CONFIG), killed by pid at the end."""

import os
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMTPD = Path(os.environ.get("OXIPOST_SMTPD", ROOT / "target" / "debug" / "smtpd"))
QUEUES = ["maildrop", "incoming", "active", "deferred", "hold", "corrupt",
          "defer", "bounce", "trace", "public", "private"]


def _user():
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name


class Smtpd:
    """One running smtpd with its configuration directory and queue."""

    def __init__(self, tmp: Path, extra: dict, ipv6: bool = False):
        self.tmp = tmp
        self.spool = tmp / "spool"
        self.etc = tmp / "etc"
        self.maillog = tmp / "maillog"
        for q in QUEUES:
            (self.spool / q).mkdir(parents=True, exist_ok=True)
        self.etc.mkdir(exist_ok=True)
        params = {
            "queue_directory": str(self.spool),
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(tmp),
            "myhostname": "mx.example.test",
            "mydomain": "example.test",
            "mydestination": "$myhostname, localhost.$mydomain, localhost, example.test",
            "mynetworks": "127.0.0.0/8 [::1]/128",
            "local_users": "alice bob:/home/bob",
            # The host's /etc/aliases.db may be Postfix's Berkeley DB file: unreadable
            # for us, which (correctly) makes every local recipient a 451.
            "alias_maps": "",
            "recipient_delimiter": "+",
            "smtputf8_enable": "yes",
            "smtpd_timeout": "30s",
            "max_idle": "300s",
            "max_use": "1000",
        }
        params.update(extra)
        (self.etc / "main.cf").write_text(
            "".join(f"{k} = {v}\n" for k, v in params.items()))
        self.host = "::1" if ipv6 else "127.0.0.1"
        family = socket.AF_INET6 if ipv6 else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        env = dict(os.environ, MAIL_CONFIG=str(self.etc), OXIPOST_LISTEN_FDS="1")
        # As master: fd 3 = write end of the status pipe, fd 4 = read end of a pipe whose
        # write end only we hold (EOF there tells the worker that master is gone), fd 5 =
        # the listening socket.
        self.status_r, status_w = os.pipe()
        watch_r, self.watch_w = os.pipe()
        os.set_blocking(self.status_r, False)
        lfd = self.sock.fileno()
        fds = {3: status_w, 4: watch_r, 5: lfd}

        def child():
            # Move the sources out of the way first so that dup2 never clobbers one.
            moved = {t: os.dup(f) for t, f in fds.items()}
            for target, src in moved.items():
                os.dup2(src, target)
                os.close(src)

        # subprocess closes every descriptor but pass_fds after the hook.
        self.proc = subprocess.Popen(
            [str(SMTPD), "-n", "smtp", "-t", "inet"], env=env, pass_fds=(3, 4, 5),
            preexec_fn=child, stdout=subprocess.DEVNULL, stderr=open(tmp / "stderr", "wb"))
        os.close(status_w)
        os.close(watch_r)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.sock.close()
        for fd in (self.status_r, self.watch_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def log(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, needle: str, timeout: float = 10.0) -> str:
        end = time.time() + timeout
        while time.time() < end:
            text = self.log()
            if needle in text:
                return text
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not logged; log:\n{self.log()}")

    def files(self, queue="incoming", temp=False):
        out = []
        for p in (self.spool / queue).rglob("*"):
            if p.is_file() and (temp or not p.name.startswith(".")):
                out.append(p)
        return sorted(out)

    def all_files(self):
        """Every file in incoming, temporary ones included."""
        return self.files("incoming", temp=True)


@pytest.fixture
def smtpd_factory(tmp_path):
    started = []

    def make(ipv6=False, **extra):
        s = Smtpd(tmp_path / f"s{len(started)}", extra, ipv6=ipv6)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture
def smtpd(smtpd_factory):
    return smtpd_factory()


# ---- queue file reading (format v1, see crates/queue/src/format.rs) ----------------------

def _string(p, i):
    (n,) = struct.unpack_from(">I", p, i)
    return p[i + 4:i + 4 + n].decode(), i + 4 + n


def read_queue_file(path):
    """Returns dict(sender, recipients=[(addr, notify, orcpt)], attrs, params, content,
    complete)."""
    data = Path(path).read_bytes()
    assert data[:4] == b"OXQF", "bad magic"
    i = 8
    q = {"recipients": [], "attrs": {}, "content": b"", "complete": False,
         "params": None, "sender": None}
    while i < len(data):
        t = data[i]
        (n,) = struct.unpack_from(">I", data, i + 1)
        p = data[i + 5:i + 5 + n]
        i += 5 + n
        if t == 0x02:
            q["sender"] = p.decode()
        elif t == 0x03:
            q["params"] = p
        elif t == 0x04:
            notify = p[1]
            addr, j = _string(p, 2)
            orcpt = None
            if p[j] == 1:
                orcpt, _ = _string(p, j + 1)
            q["recipients"].append((addr, notify, orcpt))
        elif t == 0x05:
            name, j = _string(p, 0)
            value, _ = _string(p, j)
            q["attrs"][name] = value
        elif t == 0x06:
            q["content"] += p
        elif t == 0x45:
            q["complete"] = p.endswith(b"DONE") and i == len(data)
    return q


# ---- raw SMTP over a socket --------------------------------------------------------------

class Raw:
    def __init__(self, port, timeout=20, host="127.0.0.1"):
        self.s = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes):
        self.s.sendall(data)

    def reply(self):
        """Reads one (possibly multi-line) reply; returns (code, [lines])."""
        lines = []
        while True:
            while b"\r\n" not in self.buf:
                chunk = self.s.recv(65536)
                if not chunk:
                    raise EOFError(f"closed; got {lines!r} {self.buf!r}")
                self.buf += chunk
            line, self.buf = self.buf.split(b"\r\n", 1)
            lines.append(line.decode(errors="replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), lines

    def line(self):
        code, lines = self.reply()
        return lines[-1]

    def cmd(self, text):
        self.send(text.encode() + b"\r\n")
        return self.line()

    def closed(self, timeout=10):
        self.s.settimeout(timeout)
        try:
            return self.s.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.s.close()


@pytest.fixture
def raw():
    opened = []

    def connect(port, host="127.0.0.1"):
        r = Raw(port, host=host)
        opened.append(r)
        return r

    yield connect
    for r in opened:
        r.close()
