"""Test peers on loopback for the smtp/lmtp client tests, written with the standard library
only: a recording SMTP/LMTP server that can answer 4xx/5xx per recipient, offer or hide
extensions, STARTTLS and AUTH, stall, or greet with 554; a tiny authoritative DNS server
(A, AAAA, MX, null MX); and test certificates made with openssl."""

import base64
import os
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path


class Transaction:
    def __init__(self):
        self.mail = None
        self.rcpts = []
        self.data = b""
        self.bdat = False
        self.tls = False
        self.auth = None


class FakeServer:
    """A recording SMTP (or LMTP) server on 127.0.0.1 (or a UNIX socket)."""

    def __init__(self, lmtp=False, ext=None, rcpt_replies=None, final_replies=None,
                 greeting="220 fake.test ESMTP", data_reply="250 2.0.0 Ok: queued as FAKE1",
                 tls_context=None, auth_users=None, stall_on=None, port=0, unix_path=None,
                 host="127.0.0.1", first_data_delay=0.0, data_delay=0.0, ehlo_name="fake.test"):
        self.lmtp = lmtp
        self.ehlo_name = ehlo_name
        self.ext = list(ext) if ext is not None else [
            "PIPELINING", "SIZE 10240000", "8BITMIME", "DSN", "ENHANCEDSTATUSCODES", "CHUNKING"]
        self.rcpt_replies = rcpt_replies or {}
        self.final_replies = final_replies or {}
        self.greeting = greeting
        self.data_reply = data_reply
        self.tls_context = tls_context
        self.auth_users = auth_users
        self.stall_on = stall_on
        self.first_data_delay = first_data_delay
        # Every final reply waits this long (a slow server: deliveries overlap).
        self.data_delay = data_delay
        # Open sessions and open transactions (MAIL until its final reply) now and at most.
        self.sessions_now = 0
        self.sessions_max = 0
        self.tx_now = 0
        self.tx_max = 0
        self.transactions = []
        self.chunks = []
        self.commands = []
        self.connections = 0
        self.lock = threading.Lock()
        self.stopping = False
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.bind(str(unix_path))
            os.chmod(unix_path, 0o777)
        else:
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            self.sock = socket.socket(fam)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.port = self.sock.getsockname()[1]
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def wait_transactions(self, n, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                done = [t for t in self.transactions if t.data or t.bdat]
                if len(done) >= n:
                    return done
            time.sleep(0.1)
        raise AssertionError(f"{len(self.transactions)} transactions, commands: {self.commands[-30:]}")

    def _count(self, what, delta):
        with self.lock:
            now = getattr(self, what + "_now") + delta
            setattr(self, what + "_now", now)
            if now > getattr(self, what + "_max"):
                setattr(self, what + "_max", now)

    def _serve(self, conn):
        self._count("sessions", 1)
        in_tx = [False]

        def tx_open(flag):
            if flag != in_tx[0]:
                in_tx[0] = flag
                self._count("tx", 1 if flag else -1)

        try:
            self._serve2(conn, tx_open)
        finally:
            tx_open(False)
            self._count("sessions", -1)

    def _serve2(self, conn, tx_open):
        conn.settimeout(60)
        state = {"buf": b"", "conn": conn, "tls": False, "auth": None}

        def fill():
            d = state["conn"].recv(65536)
            if not d:
                raise EOFError
            with self.lock:
                self.chunks.append(d)
            state["buf"] += d

        def line():
            while b"\r\n" not in state["buf"]:
                fill()
            l, state["buf"] = state["buf"].split(b"\r\n", 1)
            return l

        def exact(n):
            while len(state["buf"]) < n:
                fill()
            d, state["buf"] = state["buf"][:n], state["buf"][n:]
            return d

        def send(text):
            state["conn"].sendall(text.encode() + b"\r\n")

        tx = None
        try:
            send(self.greeting)
            if not self.greeting.startswith("2"):
                # Stay for QUIT.
                pass
            while True:
                l = line()
                cmd = l.decode("utf-8", "replace")
                verb = cmd.split(" ")[0].upper()
                with self.lock:
                    self.commands.append(cmd)
                if self.stall_on and verb == self.stall_on:
                    time.sleep(3600)
                if verb in ("EHLO", "LHLO"):
                    if self.lmtp != (verb == "LHLO"):
                        send("500 5.5.1 wrong hello")
                        continue
                    ext = list(self.ext)
                    if self.tls_context and not state["tls"]:
                        ext.append("STARTTLS")
                    if self.auth_users is not None:
                        ext.append("AUTH PLAIN LOGIN")
                    lines = [self.ehlo_name] + ext
                    send("\r\n".join(f"250-{x}" for x in lines[:-1]) + f"\r\n250 {lines[-1]}")
                elif verb == "HELO":
                    send("250 fake.test")
                elif verb == "STARTTLS" and self.tls_context:
                    send("220 2.0.0 Ready to start TLS")
                    state["conn"] = self.tls_context.wrap_socket(state["conn"], server_side=True)
                    state["buf"] = b""
                    state["tls"] = True
                elif verb == "AUTH" and self.auth_users is not None:
                    parts = cmd.split(" ")
                    mech = parts[1].upper()
                    if mech == "PLAIN":
                        resp = parts[2] if len(parts) > 2 else None
                        if resp is None:
                            send("334 ")
                            resp = line().decode()
                        _, user, pw = base64.b64decode(resp).split(b"\0")
                    else:
                        send("334 VXNlcm5hbWU6")
                        user = base64.b64decode(line())
                        send("334 UGFzc3dvcmQ6")
                        pw = base64.b64decode(line())
                    user, pw = user.decode(), pw.decode()
                    if self.auth_users.get(user) == pw:
                        state["auth"] = f"{mech}:{user}"
                        send("235 2.7.0 Authentication successful")
                    else:
                        send("535 5.7.8 Error: authentication failed")
                elif verb == "MAIL":
                    if self.auth_users is not None and not state["auth"]:
                        send("530 5.7.0 Authentication required")
                        continue
                    tx = Transaction()
                    tx_open(True)
                    tx.mail = cmd
                    tx.tls = state["tls"]
                    tx.auth = state["auth"]
                    with self.lock:
                        self.transactions.append(tx)
                    send("250 2.1.0 Ok")
                elif verb == "RCPT":
                    if tx is None:
                        send("503 5.5.1 need MAIL")
                        continue
                    addr = cmd.split("<", 1)[1].split(">", 1)[0]
                    reply = self.rcpt_replies.get(addr, "250 2.1.5 Ok")
                    if reply.startswith("2"):
                        tx.rcpts.append(cmd)
                    send(reply)
                elif verb == "DATA":
                    if tx is None or not tx.rcpts:
                        send("554 5.5.1 Error: no valid recipients")
                        continue
                    send("354 End data with <CR><LF>.<CR><LF>")
                    data = b""
                    while True:
                        l2 = line()
                        if l2 == b".":
                            break
                        if l2.startswith(b"."):
                            l2 = l2[1:]
                        data += l2 + b"\r\n"
                    tx.data = data
                    self._final(tx, send)
                    tx_open(False)
                    tx = None
                elif verb == "BDAT":
                    words = cmd.split()
                    n = int(words[1])
                    chunk = exact(n)
                    if tx is None or not tx.rcpts:
                        send("554 5.5.1 Error: no valid recipients")
                        continue
                    tx.data += chunk
                    if len(words) > 2 and words[2].upper() == "LAST":
                        tx.bdat = True
                        self._final(tx, send)
                        tx_open(False)
                        tx = None
                    else:
                        send(f"250 2.0.0 {n} octets received")
                elif verb == "RSET":
                    tx_open(False)
                    tx = None
                    send("250 2.0.0 Ok")
                elif verb == "NOOP":
                    send("250 2.0.0 Ok")
                elif verb == "QUIT":
                    send("221 2.0.0 Bye")
                    return
                else:
                    send("502 5.5.2 Error: command not recognized")
        except (EOFError, OSError, ssl.SSLError, ValueError):
            return
        finally:
            try:
                state["conn"].close()
            except OSError:
                pass

    def _final(self, tx, send):
        if self.data_delay:
            time.sleep(self.data_delay)
        if self.first_data_delay:
            time.sleep(self.first_data_delay)
            self.first_data_delay = 0
        if self.lmtp:
            for r in tx.rcpts:
                addr = r.split("<", 1)[1].split(">", 1)[0]
                send(self.final_replies.get(addr, "250 2.0.0 Ok delivered"))
        else:
            send(self.data_reply)


# ---------------------------------------------------------------------------------------
# DNS


def _name(n):
    out = b""
    for label in n.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode()
    return out + b"\0"


class FakeDns:
    """Answers A/AAAA/MX from a dict {(name, type): [values]} on 127.0.0.1 UDP.
    MX values are (preference, exchange); exchange "." is a null MX. Unknown names are
    NXDOMAIN; known names without records of the type are NODATA."""

    TYPES = {"A": 1, "MX": 15, "AAAA": 28}

    def __init__(self, records):
        self.records = records
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.queries = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()

    def _run(self):
        while not self.stopping:
            try:
                q, addr = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                self.sock.sendto(self._answer(q), addr)
            except Exception:  # noqa: BLE001 - a test server must not die on odd input
                continue

    def _answer(self, q):
        qid, flags = struct.unpack(">HH", q[:4])
        i, labels = 12, []
        while q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode())
            i += q[i] + 1
        qtype, qclass = struct.unpack(">HH", q[i + 1:i + 5])
        question = q[12:i + 5]
        name = ".".join(labels).lower()
        self.queries.append((name, qtype))
        tname = {v: k for k, v in self.TYPES.items()}.get(qtype)
        known = any(n == name for (n, _) in self.records)
        answers = []
        for value in self.records.get((name, tname), []):
            if tname == "A":
                rdata = socket.inet_pton(socket.AF_INET, value)
            elif tname == "AAAA":
                rdata = socket.inet_pton(socket.AF_INET6, value)
            else:
                pref, exch = value
                rdata = struct.pack(">H", pref) + _name(exch)
            answers.append(b"\xc0\x0c" + struct.pack(">HHIH", qtype, 1, 60, len(rdata)) + rdata)
        rcode = 0 if known else 3
        hdr = struct.pack(">HHHHHH", qid, 0x8400 | 0x0100 | rcode, 1, len(answers), 0, 0)
        return hdr + question + b"".join(answers)


# ---------------------------------------------------------------------------------------
# Certificates


def make_certs(d: Path):
    """A test CA, a server certificate for localhost/127.0.0.1 signed by it, and an
    unrelated CA. Returns a dict of paths."""
    d.mkdir(parents=True, exist_ok=True)

    def ossl(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    for ca in ("ca", "otherca"):
        ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", d / f"{ca}.key", "-out", d / f"{ca}.pem", "-days", "2",
             "-subj", f"/CN=oxipost test {ca}")
    ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", d / "server.key", "-out", d / "server.csr", "-subj", "/CN=localhost")
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    ossl("x509", "-req", "-in", d / "server.csr", "-CA", d / "ca.pem", "-CAkey", d / "ca.key",
         "-CAcreateserial", "-out", d / "server.pem", "-days", "2", "-extfile", d / "ext.cnf")
    for f in d.iterdir():
        os.chmod(f, 0o644)
    return {"ca": d / "ca.pem", "otherca": d / "otherca.pem",
            "cert": d / "server.pem", "key": d / "server.key"}


def server_context(certs):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(certs["cert"], certs["key"])
    return ctx


class ScriptServer:
    """Runs `script(conn)` for every connection on 127.0.0.1 (for misbehaving peers)."""

    def __init__(self, script):
        self.script = script
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn):
        conn.settimeout(30)
        try:
            self.script(conn)
        except (OSError, EOFError):
            pass
        finally:
            conn.close()

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        self.sock.close()


def read_line(conn, buf=bytearray()):
    """Reads one CRLF line (per-connection buffering is not needed by the scripts)."""
    out = b""
    while not out.endswith(b"\r\n"):
        d = conn.recv(1)
        if not d:
            raise EOFError
        out += d
    return out[:-2]
