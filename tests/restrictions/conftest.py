"""Fixtures for the restriction tests: the whole-suite fixture of tests/mailflow (a
`mailctl init` instance on 127.0.0.1 high ports, under master), a small authoritative DNS
server on loopback (UDP and TCP, A/AAAA/MX/TXT/PTR, NXDOMAIN for everything else) that the
suite's smtpd is pointed at with `oxipost_dns_servers`, and a policy server speaking
Postfix's policy delegation protocol. Everything runs on 127.0.0.x only; servers are
threads of the test process, stopped at the end."""

import importlib.util
import os
import shutil
import smtplib
import socket
import socketserver
import struct
import sys
import threading
from pathlib import Path

import pytest

_here = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("mailflow_conftest", _here.parent / "mailflow" / "conftest.py")
_mf = importlib.util.module_from_spec(_spec)
sys.modules["mailflow_conftest"] = _mf
_spec.loader.exec_module(_mf)

AS_USER = _mf.AS_USER
suite = _mf.suite  # the fixture

# name (lower case, no trailing dot) -> list of (type, value)
ZONE = {
    # 127.0.0.1: PTR confirmed by its A record.
    "1.0.0.127.in-addr.arpa": [("PTR", "client.example.test")],
    "client.example.test": [("A", "127.0.0.1")],
    # 127.0.0.3: a PTR whose name does not lead back (forged).
    "3.0.0.127.in-addr.arpa": [("PTR", "forged.example.test")],
    "forged.example.test": [("A", "10.9.9.9")],
    # DNS lists.
    "2.0.0.127.rbl.test": [("A", "127.0.0.2"), ("TXT", "listed: see http://rbl.test/127.0.0.2")],
    "1.0.0.127.dnswl.test": [("A", "127.0.0.2")],
    "2.0.0.127.dnswl.test": [("A", "127.0.0.2")],
    "spam.example.org.rhsbl.test": [("A", "127.0.0.2")],
    "client.example.test.rhsbl.test": [("A", "127.0.0.4")],
    # Mail domains.
    "good.example": [("MX", (10, "mx.good.example"))],
    "mx.good.example": [("A", "127.0.0.1")],
    "addr-only.example": [("A", "127.0.0.1")],
    "helo.example.test": [("A", "127.0.0.1")],
    "nullmx.example": [("MX", (0, ""))],
    # MX/NS access checks: hosts of a "spammer" network.
    "mxbad.test": [("MX", (10, "mx.spammer.test"))],
    "mx.spammer.test": [("A", "127.0.0.9")],
    "mxip.test": [("MX", (10, "mail.hoster.test"))],
    "mail.hoster.test": [("A", "127.0.0.9")],
    "amx.test": [("A", "127.0.0.9")],
    "mxok.test": [("MX", (10, "mx.ok.test"))],
    "mx.ok.test": [("A", "127.0.0.8")],
    "nsbad.test": [("NS", "ns1.spammer.test"), ("A", "127.0.0.8")],
    "sub.nsbad.test": [("A", "127.0.0.8")],
    "ns1.spammer.test": [("A", "127.0.0.10")],
    "nsip.test": [("NS", "ns.hoster.test")],
    "ns.hoster.test": [("A", "127.0.0.9")],
    # permit_mx_backup: 127.0.0.1 (this host) as backup or primary MX.
    "me.test": [("A", "127.0.0.1")],
    "primary.test": [("A", "192.0.2.10")],
    "backupmx.test": [("MX", (10, "primary.test")), ("MX", (20, "me.test"))],
    "primaryme.test": [("MX", (10, "me.test")), ("MX", (20, "primary.test"))],
    "nobackup.test": [("MX", (10, "primary.test"))],
}

TYPES = {1: "A", 28: "AAAA", 15: "MX", 16: "TXT", 12: "PTR", 2: "NS"}


def _name(data, off):
    labels = []
    while True:
        n = data[off]
        if n == 0:
            return ".".join(labels), off + 1
        labels.append(data[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n


def _enc(name):
    out = b""
    for label in [l for l in name.split(".") if l]:
        out += bytes([len(label)]) + label.encode()
    return out + b"\0"


def dns_answer(query):
    """The reply to one DNS query (bytes), from ZONE."""
    qid, flags = struct.unpack(">HH", query[:4])
    qname, off = _name(query, 12)
    qtype, qclass = struct.unpack(">HH", query[off:off + 4])
    question = query[12:off + 4]
    key = qname.lower().rstrip(".")
    recs = ZONE.get(key)
    rcode = 0 if recs is not None else 3
    answers = b""
    count = 0
    for (t, v) in recs or []:
        if TYPES.get(qtype) != t:
            continue
        if t == "A":
            rdata = socket.inet_aton(v)
        elif t == "AAAA":
            rdata = socket.inet_pton(socket.AF_INET6, v)
        elif t == "MX":
            rdata = struct.pack(">H", v[0]) + _enc(v[1])
        elif t == "TXT":
            b = v.encode()
            rdata = bytes([len(b)]) + b
        else:
            rdata = _enc(v)
        answers += b"\xc0\x0c" + struct.pack(">HHIH", qtype, 1, 60, len(rdata)) + rdata
        count += 1
    rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode
    return struct.pack(">HHHHHH", qid, rflags, 1, count, 0, 0) + question + answers


class DnsServer:
    def __init__(self):
        for _ in range(20):
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
            self.port = self.udp.getsockname()[1]
            self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                self.tcp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.udp.close()
                self.tcp.close()
        self.tcp.listen(16)
        self.udp.settimeout(0.2)
        self.tcp.settimeout(0.2)
        self.queries = []
        self.stop = False
        self.threads = [threading.Thread(target=self._udp, daemon=True),
                        threading.Thread(target=self._tcp, daemon=True)]
        for t in self.threads:
            t.start()

    def _udp(self):
        while not self.stop:
            try:
                data, peer = self.udp.recvfrom(4096)
            except OSError:
                continue
            try:
                self.queries.append(_name(data, 12)[0])
                self.udp.sendto(dns_answer(data), peer)
            except Exception:
                pass

    def _tcp(self):
        while not self.stop:
            try:
                c, _ = self.tcp.accept()
            except OSError:
                continue
            with c:
                c.settimeout(2)
                try:
                    n = struct.unpack(">H", c.recv(2))[0]
                    data = c.recv(n)
                    reply = dns_answer(data)
                    c.sendall(struct.pack(">H", len(reply)) + reply)
                except Exception:
                    pass

    def close(self):
        self.stop = True
        for t in self.threads:
            t.join(timeout=2)
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def dns():
    d = DnsServer()
    try:
        yield d
    finally:
        d.close()


class PolicyServer:
    """Answers `action=REJECT policy says no` for recipients starting with `blocked`,
    `action=DUNNO` otherwise; keeps every request."""

    def __init__(self):
        outer = self
        self.requests = []

        class Handler(socketserver.StreamRequestHandler):
            timeout = 5

            def handle(self):
                while True:
                    attrs = {}
                    while True:
                        line = self.rfile.readline()
                        if not line:
                            return
                        line = line.decode().rstrip("\r\n")
                        if not line:
                            break
                        k, _, v = line.partition("=")
                        attrs[k] = v
                    outer.requests.append(attrs)
                    action = "REJECT policy says no" if attrs.get("recipient", "").startswith("blocked") else "DUNNO"
                    self.wfile.write(f"action={action}\n\n".encode())

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=2)


@pytest.fixture
def policy():
    p = PolicyServer()
    try:
        yield p
    finally:
        p.close()


def write_file(s, name, text):
    """A table file in the suite's etc directory, readable by the suite's user."""
    p = s.etc / name
    p.write_text(text)
    os.chmod(p, 0o644)
    if AS_USER:
        shutil.chown(p, "oxipost", "oxipost")
    return p


def base_config(s, dns_server, *extra):
    """A suite for mx.example.test whose smtpd asks `dns_server`; 127.0.0.1 is outside
    mynetworks unless a test says otherwise."""
    s.postconf(
        "myhostname=mx.example.test",
        "mydestination=$myhostname, localhost, example.test",
        "mynetworks=192.0.2.0/24",
        "recipient_delimiter=+",
        f"oxipost_dns_servers=127.0.0.1:{dns_server.port}",
        *extra,
    )


class Client:
    """An SMTP client with exact reply lines: `cmd()` returns `"250 2.1.0 Ok"`."""

    def __init__(self, s, source="127.0.0.1", ehlo="client.example.test"):
        self.c = smtplib.SMTP(timeout=30, source_address=(source, 0))
        code, msg = self.c.connect("127.0.0.1", s.smtp_port)
        self.banner = f"{code} {msg.decode()}"
        if ehlo is not None and code == 220:
            self.greeting = self.cmd(f"EHLO {ehlo}")

    def cmd(self, line):
        code, msg = self.c.docmd(line)
        return f"{code} {msg.decode()}"

    def data(self, body=b"Subject: test\r\n\r\nhello\r\n"):
        code, msg = self.c.data(body)
        return f"{code} {msg.decode()}"

    def close(self):
        try:
            self.c.quit()
        except Exception:
            self.c.close()


def reconfigure(s, *edits):
    """Changes main.cf and reloads: new smtpd processes use the new values (the listening
    sockets stay with master)."""
    s.postconf(*edits)
    s.mailctl("reload")
    import time
    time.sleep(1.5)
