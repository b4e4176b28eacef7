"""Fixtures for the PostgreSQL tests (issues 6 and 8): a real PostgreSQL from Debian
(`initdb` into a temporary directory owned by the `postgres` user when root, `postgres`
listening on 127.0.0.1 at a free high port and on a socket in that directory, SCRAM-SHA-256
for TCP logins), one `mail` database with domains, users and aliases, and the whole-suite
fixture of tests/mailflow. PostgreSQL is stopped and killed by its pid afterwards."""

import glob
import importlib.util
import os
import pwd
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
DB_PASSWORD = "pg-Secret'1"
DB_NAME = "mail"


def pg_bindir():
    for pat in ("/usr/lib/postgresql/*/bin",):
        for d in sorted(glob.glob(pat), reverse=True):
            if os.path.exists(os.path.join(d, "postgres")):
                return Path(d)
    return None


def free_port():
    for _ in range(100):
        import random
        port = random.randrange(30000, 32000)
        t = socket.socket()
        try:
            t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
        finally:
            t.close()
    raise RuntimeError("no free port")


SCHEMA = """
CREATE TABLE domains (domain TEXT PRIMARY KEY, kind TEXT NOT NULL);
CREATE TABLE users (email TEXT PRIMARY KEY, password TEXT, maildir TEXT NOT NULL,
                    uid INTEGER, gid INTEGER, home TEXT, active BOOLEAN NOT NULL DEFAULT true);
CREATE TABLE aliases (address TEXT NOT NULL, goto TEXT NOT NULL);
"""


class Postgres:
    """A private PostgreSQL cluster; `sql()` runs statements as the superuser over the
    Unix socket (trust), the oxipost side logs in over TCP with SCRAM."""

    def __init__(self, top: Path):
        self.bindir = pg_bindir()
        self.top = top
        self.data = top / "data"
        self.sock = top / "sock"
        self.port = free_port()
        self.pid = None
        self.as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.sock.mkdir(parents=True)
        if self.as_pg:
            shutil.chown(top, "postgres", "postgres")
            shutil.chown(self.sock, "postgres", "postgres")
        pwfile = top / "pw"
        pwfile.write_text("super-secret\n")
        if self.as_pg:
            shutil.chown(pwfile, "postgres", "postgres")
        r = subprocess.run(
            self.as_pg + [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres",
                          "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}",
                          "-E", "UTF8", "--locale=C", "--no-sync"],
            capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        pwfile.unlink()
        # Every authentication method the client speaks, by role: md5 and cleartext for
        # two roles, SCRAM-SHA-256 for the rest over TCP, trust on the Unix socket.
        hba = self.data / "pg_hba.conf"
        hba.write_text(
            "local all all trust\n"
            "host all oximd5 127.0.0.1/32 md5\n"
            "host all oxiclear 127.0.0.1/32 password\n"
            "host all all 127.0.0.1/32 scram-sha-256\n")
        if self.as_pg:
            shutil.chown(hba, "postgres", "postgres")

    def start(self):
        log = self.top / "postgres.log"
        # postgres itself (not pg_ctl) so the pid is ours; runuser stays as its parent.
        cmd = self.as_pg + [str(self.bindir / "postgres"), "-D", str(self.data), "-k", str(self.sock),
                            "-c", "listen_addresses=127.0.0.1", "-p", str(self.port),
                            "-c", "fsync=off", "-c", "shared_buffers=16MB", "-c", "max_connections=40"]
        with open(log, "ab") as f:
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline:
            pidfile = self.data / "postmaster.pid"
            try:
                lines = pidfile.read_text().splitlines()
            except OSError:
                lines = []
            # Line 8 is the status: "ready" once connections are accepted.
            if len(lines) >= 8 and lines[7].strip() == "ready":
                self.pid = int(lines[0])
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError("postgres did not start:\n" + log.read_text(errors="replace")[-3000:])

    def stop(self):
        """Fast shutdown by pid; waits until the port is closed."""
        if self.pid is None:
            return
        try:
            os.kill(self.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(self.pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.pid = None

    def sql(self, statements, db=DB_NAME):
        r = subprocess.run(
            self.as_pg + [str(self.bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.sock),
                          "-p", str(self.port), "-U", "postgres", "-d", db, "-At", "-c", statements],
            capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def setup_mail_db(self):
        pw = DB_PASSWORD.replace("'", "''")
        self.sql(f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{pw}'", db="postgres")
        self.sql(f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}", db="postgres")
        self.sql(SCHEMA + f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {DB_USER};")
        self.sql("SET password_encryption = 'md5'; CREATE ROLE oximd5 LOGIN PASSWORD 'md5-pw';"
                 "CREATE ROLE oxiclear LOGIN PASSWORD 'clear-pw';"
                 # Old-style string literals for this role: backslashes must be doubled.
                 "ALTER ROLE oxiclear SET standard_conforming_strings = off;"
                 "GRANT SELECT ON ALL TABLES IN SCHEMA public TO oximd5, oxiclear;")

    def cf(self, path: Path, query: str, extra: str = "", user=DB_USER, password=DB_PASSWORD):
        """Writes a pgsql_table(5) file for the oxipost side (TCP, SCRAM)."""
        path.write_text(
            f"hosts = 127.0.0.1:{self.port}\n"
            f"user = {user}\npassword = {password}\ndbname = {DB_NAME}\n"
            f"query = {query}\n" + extra)
        if AS_USER:
            shutil.chown(path, "oxipost", "oxipost")
        os.chmod(path, 0o600)
        return f"pgsql:{path}"


def suite_ids():
    if AS_USER:
        pw = pwd.getpwnam("oxipost")
        return pw.pw_uid, pw.pw_gid
    return os.getuid(), os.getgid()


@pytest.fixture
def pg():
    if pg_bindir() is None:
        pytest.fail("PostgreSQL is not installed (scripts/install-test-deps.sh installs it)")
    top = Path(tempfile.mkdtemp(prefix="oxipost-pg-", dir="/tmp"))
    os.chmod(top, 0o755)
    p = Postgres(top)
    try:
        p.start()
        p.setup_mail_db()
        yield p
    finally:
        p.stop()
        shutil.rmtree(top, ignore_errors=True)


def wait_for(pred, what, s, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; log:\n" + s.log()[-4000:])


_tspec = importlib.util.spec_from_file_location("tls_auth_conftest", _here.parent / "tls_auth" / "conftest.py")
_tls = importlib.util.module_from_spec(_tspec)
_tspec.loader.exec_module(_tls)
make_cert = _tls.make_cert


class MailSuite(Suite):
    """A suite with a certificate for smtpd (submission with STARTTLS), pop3d and imapd."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.submission_port = self.base + 587
        self.pop3_port = self.base + 110
        self.imap_port = self.base + 143
        self.tls = self.root / "tls"
        self.tls.mkdir()
        if AS_USER:
            shutil.chown(self.tls, "oxipost", "oxipost")
        key, cert, _ = make_cert(self.tls, "server", "mail.example.test")
        self.postconf(
            "smtpd_tls_security_level=may", f"smtpd_tls_cert_file={cert}", f"smtpd_tls_key_file={key}",
            "pop3d_tls_security_level=may", f"pop3d_tls_cert_file={cert}", f"pop3d_tls_key_file={key}",
            "imapd_tls_security_level=may", f"imapd_tls_cert_file={cert}", f"imapd_tls_key_file={key}",
            "auth_failure_delay=0",
        )


def give(path):
    if AS_USER:
        shutil.chown(path, "oxipost", "oxipost")


@pytest.fixture
def mail_suites():
    """A factory of MailSuites (several nodes), all stopped and removed afterwards."""
    made = []

    def make():
        top = Path(tempfile.mkdtemp(prefix="oxipost-pgs-", dir="/tmp"))
        os.chmod(top, 0o755)
        if AS_USER:
            shutil.chown(top, "oxipost", "oxipost")
        made.append(top)
        s = MailSuite(top / "oxi")
        made[-1] = (top, s)
        return s

    try:
        yield make
    finally:
        for entry in made:
            if isinstance(entry, tuple):
                top, s = entry
                s.stop()
                s.kill_all()
            else:
                top = entry
            if not os.environ.get("OXIPOST_KEEP"):
                shutil.rmtree(top, ignore_errors=True)
