"""A real MariaDB from Debian for the mysql: table and passdb tests (issues 6 and 8).

`mariadb-install-db` makes a data directory in a temporary directory; `mariadbd` runs on
127.0.0.1 on a free high port and on a Unix socket there, with real grants (a user with a
password that may SELECT one database). The server is started once per test module and
can be stopped and started again by a test (the server-down cases); it is stopped by pid
at the end. The oxipost suite itself is the fixture of tests/mailflow (`mailctl init` on
127.0.0.1 high ports, run as the unprivileged `oxipost` user when root)."""

import importlib.util
import os
import shutil
import signal
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

BIN = _mf.BIN
AS_USER = _mf.AS_USER
Suite = _mf.Suite
run = _mf.run
suite = _mf.suite  # the fixture

DB_USER = "oxi"
# Quotes and a backslash: the .cf value is taken as written, and the password only ever
# travels scrambled.
DB_PASSWORD = "s3cr'et\"Pw\\x"
DB_NAME = "mail"


def give(path):
    """Hands a file or directory the test made to the suite's user."""
    if AS_USER:
        shutil.chown(path, "oxipost", "oxipost")


def free_port():
    for _ in range(100):
        import random
        p = random.randrange(30000, 32000)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
        finally:
            s.close()
    raise RuntimeError("no free port")


def sql_quote(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Mariadb:
    def __init__(self, top: Path):
        self.top = top
        self.data = top / "data"
        self.sock = top / "mysqld.sock"
        self.port = free_port()
        self.proc = None
        self.as_root = os.geteuid() == 0
        if self.as_root:
            shutil.chown(top, "mysql", "mysql")
        argv = ["mariadb-install-db", "--no-defaults", f"--datadir={self.data}",
                "--auth-root-authentication-method=normal", "--skip-test-db"]
        if self.as_root:
            argv.append("--user=mysql")
        r = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr

    def start(self):
        argv = ["mariadbd", "--no-defaults", f"--datadir={self.data}", f"--socket={self.sock}",
                f"--port={self.port}", "--bind-address=127.0.0.1", f"--pid-file={self.top}/mariadbd.pid",
                f"--log-error={self.top}/error.log", "--skip-name-resolve",
                "--innodb-buffer-pool-size=16M", "--performance-schema=OFF", "--max-connections=60"]
        if self.as_root:
            argv.append("--user=mysql")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.proc.poll() is None, "mariadbd exited:\n" + self.error_log()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                if self.sock.exists():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("mariadbd did not come up:\n" + self.error_log())

    def stop(self):
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        self.proc = None

    def error_log(self):
        p = self.top / "error.log"
        return p.read_text(errors="replace")[-3000:] if p.exists() else ""

    def sql(self, statements, db=None):
        """Runs SQL as the server's root user over the socket; returns the output rows."""
        argv = ["mariadb", "--no-defaults", "-S", str(self.sock), "-u", "root", "-N", "-B"]
        if db:
            argv.append(db)
        r = subprocess.run(argv, input=statements, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def cf(self, directory: Path, name: str, body: str, host=None):
        """Writes a mysql_table(5)-style file for the test user; returns its path."""
        host = host or f"inet:127.0.0.1:{self.port}"
        p = directory / name
        p.write_text(f"hosts = {host}\nuser = {DB_USER}\npassword = {DB_PASSWORD}\n"
                     f"dbname = {DB_NAME}\n" + body)
        os.chmod(p, 0o640)
        give(p)
        return p


SCHEMA = f"""
CREATE DATABASE {DB_NAME};
CREATE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY {sql_quote(DB_PASSWORD)};
CREATE USER '{DB_USER}'@'localhost' IDENTIFIED BY {sql_quote(DB_PASSWORD)};
GRANT SELECT ON {DB_NAME}.* TO '{DB_USER}'@'127.0.0.1';
GRANT SELECT ON {DB_NAME}.* TO '{DB_USER}'@'localhost';
USE {DB_NAME};
CREATE TABLE domains (domain VARCHAR(255) PRIMARY KEY, active TINYINT NOT NULL DEFAULT 1);
CREATE TABLE users (
    local_part VARCHAR(64) NOT NULL, domain VARCHAR(255) NOT NULL,
    password VARCHAR(255) NOT NULL, maildir VARCHAR(255) NOT NULL,
    active TINYINT NOT NULL DEFAULT 1, PRIMARY KEY (local_part, domain));
CREATE TABLE aliases (address VARCHAR(255) NOT NULL, goto VARCHAR(255));
"""


@pytest.fixture(scope="module")
def mariadb():
    if shutil.which("mariadbd") is None and not Path("/usr/sbin/mariadbd").exists():
        pytest.fail("mariadb-server is not installed (scripts/install-test-deps.sh)")
    top = Path(tempfile.mkdtemp(prefix="oxipost-mariadb-", dir="/tmp"))
    os.chmod(top, 0o755)
    m = Mariadb(top)
    try:
        m.start()
        m.sql(SCHEMA)
        yield m
    finally:
        m.stop()
        if not os.environ.get("OXIPOST_KEEP"):
            shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def db(mariadb):
    """The server, up, with the tables emptied for the test."""
    if mariadb.proc is None:
        mariadb.start()
    mariadb.sql("DELETE FROM domains; DELETE FROM users; DELETE FROM aliases;", db=DB_NAME)
    return mariadb


def wait_for(pred, what, s, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; log:\n" + s.log()[-4000:])


# The suite with TLS certificates for submission (tests/tls_auth's TlsSuite).
_tspec = importlib.util.spec_from_file_location("tls_auth_conftest", _here.parent / "tls_auth" / "conftest.py")
_tls = importlib.util.module_from_spec(_tspec)
_tspec.loader.exec_module(_tls)
tls_suite = _tls.tls_suite  # the fixture


def suite_ids():
    """(uid, gid) the suite's daemons run as."""
    if AS_USER:
        import pwd
        pw = pwd.getpwnam("oxipost")
        return pw.pw_uid, pw.pw_gid
    return os.getuid(), os.getgid()
