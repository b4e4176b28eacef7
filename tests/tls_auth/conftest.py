"""A whole suite with TLS certificates and the authentication service, reusing the
mailflow Suite (mailctl init on 127.0.0.1 high ports, started as the unprivileged
`oxipost` user when root). Certificates are made here with `openssl req`."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

import importlib.util

_spec = importlib.util.spec_from_file_location(
    "mailflow_conftest", Path(__file__).resolve().parents[1] / "mailflow" / "conftest.py")
_mailflow = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mailflow)
AS_USER, BIN, Suite, run = _mailflow.AS_USER, _mailflow.BIN, _mailflow.Suite, _mailflow.run


def make_cert(directory: Path, name: str, cn: str, sans=None, key="rsa:2048"):
    """A self-signed key+certificate; returns (key path, cert path, combined path)."""
    sans = sans or [cn]
    keyf, certf = directory / f"{name}.key", directory / f"{name}.crt"
    args = ["openssl", "req", "-x509", "-nodes", "-days", "2", "-subj", f"/CN={cn}",
            "-keyout", keyf, "-out", certf,
            "-addext", "subjectAltName=" + ",".join(f"DNS:{s}" for s in sans)]
    if key.startswith("ec"):
        args += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    else:
        args += ["-newkey", key]
    subprocess.run([str(a) for a in args], check=True, capture_output=True, timeout=60)
    both = directory / f"{name}.pem"
    both.write_bytes(keyf.read_bytes() + certf.read_bytes())
    for p in (keyf, certf, both):
        os.chmod(p, 0o644)
        if AS_USER:
            shutil.chown(p, "oxipost", "oxipost")
    return keyf, certf, both


class TlsSuite(Suite):
    def __init__(self, root: Path):
        super().__init__(root)
        self.submission_port = self.base + 587
        self.submissions_port = self.base + 465
        self.tls = self.root / "tls"
        self.tls.mkdir()
        if AS_USER:
            shutil.chown(self.tls, "oxipost", "oxipost")
        self.key, self.cert, self.pem = make_cert(self.tls, "server", "mail.example.test")
        self.postconf(
            "smtpd_tls_security_level=may",
            f"smtpd_tls_cert_file={self.cert}",
            f"smtpd_tls_key_file={self.key}",
            "smtpd_tls_received_header=yes",
            "smtpd_sasl_authenticated_header=yes",
        )

    def passwd_file(self, text: str) -> Path:
        p = self.root / "etc" / "users.passwd"
        p.write_text(text)
        os.chmod(p, 0o640)
        if AS_USER:
            shutil.chown(p, "oxipost", "oxipost")
        self.postconf(f"auth_passdb=passwd-file:{p}")
        return p

    def wait_log(self, needle, timeout=15):
        import time
        deadline = time.time() + timeout
        while time.time() < deadline:
            log = self.log()
            if needle in log:
                return log
            time.sleep(0.1)
        raise AssertionError(f"{needle!r} not logged; log:\n" + self.log()[-3000:])


@pytest.fixture
def tls_suite():
    top = Path(tempfile.mkdtemp(prefix="oxipost-tls-", dir="/tmp"))
    os.chmod(top, 0o755)
    if AS_USER:
        shutil.chown(top, "oxipost", "oxipost")
    s = TlsSuite(top / "oxi")
    try:
        yield s
    finally:
        s.stop()
        s.kill_all()
        if not os.environ.get("OXIPOST_KEEP"):
            shutil.rmtree(top, ignore_errors=True)
