#!/usr/bin/env python3
"""IMAP benchmark: oxipost's imapd against Debian's Dovecot (dovecot-imapd) in the same run,
alternating A B A B, over identical Maildirs on 127.0.0.1. Run by scripts/bench-imap.sh
(which builds the release binaries and checks the prerequisites); not a test: it prints
figures.

Measured per system with a raw-socket client (sends a command, counts bytes up to the
tagged reply: the client is not the bottleneck, imaplib would be):
  select:   SELECT INBOX of a 10,000-message mailbox, as messages/s: the first (the server
            builds its index from the Maildir: each round removes both servers' index
            files before starting them), then in a new session each repeat (the index
            exists; login not timed).
  envelope: FETCH 1:* (FLAGS ENVELOPE) of the 10,000, messages/s.
  body:     FETCH 1:* (BODY.PEEK[]) of 2,000 x 5 KB, messages/s and MB/s.
  search:   SEARCH TEXT "<word in 1% of the messages>" over the 10,000, messages/s.
  memory:   PSS (/proc/PID/smaps_rollup) summed over all the system's processes on a
            fresh start, then with 1,000 connections logged in, INBOX selected and in IDLE;
            the difference per connection.
CPU busy (all cores, /proc/stat) is printed beside each figure: client and servers share
the machine.
"""

import argparse
import os
import random
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PW = "bench-pw"
USER = "oxipost"


def sh(*a, **kw):
    return subprocess.run([str(x) for x in a], check=True, capture_output=True, text=True, timeout=300, **kw)


def free_base():
    for _ in range(200):
        # Below the ephemeral range (32768-): the 1,000s of client connections of the
        # memory step take local ports there, and a restart could find one taken.
        b = random.randrange(20000, 32768 - 7144)
        ok = True
        for off in (110, 143, 525, 587, 465, 993, 995, 7143):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", b + off))
            except OSError:
                ok = False
            finally:
                s.close()
        if ok:
            return b
    raise SystemExit("no free ports")


WORDS = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
         "incididunt ut labore et dolore magna aliqua enim ad minim veniam quis nostrud").split()
NEEDLE = "zebrafishneedle"


def make_message(i, size, needle=False):
    rnd = random.Random(i)
    first = rnd.choice(["Alice", "Bob", "Carol", "Dan", "Erin", "Frank"])
    head = (f"Return-Path: <{first.lower()}@example.com>\n"
            f"Date: Mon, {1 + i % 28} May 2024 {i % 24:02d}:{i % 60:02d}:00 +0000\n"
            f"From: {first} Example <{first.lower()}@example.com>\n"
            f"To: Bench User <bench@example.test>, list-{i % 7}@lists.example.org\n"
            f"Cc: \"Team {i % 13}\" <team{i % 13}@example.org>\n"
            f"Subject: bench message {i} about {' '.join(rnd.choice(WORDS) for _ in range(4))}\n"
            f"Message-ID: <bench-{i}@example.com>\n"
            f"In-Reply-To: <bench-{max(0, i - 1)}@example.com>\n"
            f"MIME-Version: 1.0\nContent-Type: text/plain; charset=us-ascii\n\n")
    body = []
    n = len(head)
    while n < size:
        line = " ".join(rnd.choice(WORDS) for _ in range(11))[:72] + "\n"
        body.append(line)
        n += len(line)
    data = (head + "".join(body)).encode()[:size - 1] + b"\n"
    if needle:
        data += f"the word {NEEDLE} is here\n".encode()
    return data


def chown_tree(p, uid, gid):
    for d, _, files in os.walk(p):
        os.chown(d, uid, gid)
        for f in files:
            os.chown(os.path.join(d, f), uid, gid)


def cpu_sample():
    v = list(map(int, Path("/proc/stat").read_text().splitlines()[0].split()[1:]))
    return sum(v), v[3] + v[4]


def busy(a, b):
    tot, idle = b[0] - a[0], b[1] - a[1]
    return 100.0 * (tot - idle) / tot if tot else 0.0


def pss(pids):
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total  # KiB


class Conn:
    """Raw IMAP: `run` sends one command and reads up to its tagged reply, counting bytes
    (no parsing: the tag is searched for at line starts across chunk boundaries)."""

    def __init__(self, port, timeout=300):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.n = 0
        while True:  # Dovecot may first say "* OK Waiting for authentication process"
            g = self.read_line()
            if b"Waiting for auth" not in g:
                break

    def read_line(self):
        data = b""
        while not data.endswith(b"\r\n"):
            c = self.s.recv(1)
            if not c:
                raise EOFError
            data += c
        return data

    def run(self, command: bytes, keep=False):
        """(bytes read, the whole reply if `keep` else only its last chunk)."""
        self.n += 1
        tag = b"b%d " % self.n
        self.s.sendall(tag + command + b"\r\n")
        needle = b"\r\n" + tag
        total = 0
        tail = b"\r\n"  # the reply starts at a line start
        kept = []
        while True:
            c = self.s.recv(1 << 20)
            if not c:
                raise EOFError(tail)
            total += len(c)
            if keep:
                kept.append(c)
            buf = tail + c
            i = buf.find(needle)
            if i >= 0:
                rest = buf[i + len(needle):]
                while not rest.endswith(b"\r\n"):
                    more = self.s.recv(4096)
                    if not more:
                        raise EOFError
                    rest += more
                    total += len(more)
                status = rest.split(b" ", 1)[0]
                if status != b"OK":
                    raise RuntimeError(f"{command[:40]!r}: {rest[:200]!r}")
                return total, b"".join(kept) if keep else buf[:i]
            tail = buf[-(len(needle) + 1):]

    def login(self, user):
        self.run(f'LOGIN {user} "{PW}"'.encode())

    def close(self):
        try:
            self.s.close()
        except OSError:
            pass


def timed(fn):
    a, t = cpu_sample(), time.perf_counter()
    r = fn()
    dt, b = time.perf_counter() - t, cpu_sample()
    return dt, busy(a, b), r


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True, help="directory of oxipost's release binaries")
    ap.add_argument("--big", type=int, default=10000, help="messages in the SELECT/ENVELOPE/SEARCH mailbox")
    ap.add_argument("--big-size", type=int, default=2000, help="their size in bytes")
    ap.add_argument("--fetch", type=int, default=2000, help="messages in the BODY.PEEK[] mailbox")
    ap.add_argument("--fetch-size", type=int, default=5000, help="their size in bytes")
    ap.add_argument("--idle", type=int, default=1000, help="idle IDLE connections for the memory step")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of A B")
    ap.add_argument("--repeat", type=int, default=3, help="repeats of each command per round (best kept)")
    args = ap.parse_args()
    BIN = Path(args.bin)
    AS = ["runuser", "-u", USER, "--"]
    uid = int(sh("id", "-u", USER).stdout)
    gid = int(sh("id", "-g", USER).stdout)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * args.idle + 200
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(need, soft), hard), hard))

    top = Path(tempfile.mkdtemp(prefix="bench-imap-", dir="/tmp"))
    os.chmod(top, 0o755)
    root = top / "oxi"
    users = ["big", "fetch", "idle"]

    print(f"making mailboxes: {args.big} x {args.big_size} B, {args.fetch} x {args.fetch_size} B", flush=True)
    big = [make_message(i, args.big_size, needle=(i % 100 == 7)) for i in range(args.big)]
    fetch = [make_message(100000 + i, args.fetch_size) for i in range(args.fetch)]
    t0 = int(time.time()) - 1000000
    for system in ("oxi", "dove"):
        home = top / f"home-{system}"
        for u in users:
            for sub in ("new", "cur", "tmp"):
                (home / u / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
        for u, msgs in (("big", big), ("fetch", fetch)):
            d = home / u / "Maildir" / "cur"
            for i, data in enumerate(msgs):
                (d / f"{t0 + i}.M{i}P1Q{i}.bench:2,S").write_bytes(data)
    chown_tree(top, uid, gid)

    def passwd(system):
        p = top / f"users-{system}.passwd"
        p.write_text("".join(f"{u}:{{PLAIN}}{PW}:{uid}:{gid}::{top / f'home-{system}' / u}::\n" for u in users))
        os.chown(p, uid, gid)
        os.chmod(p, 0o644)
        return p

    base = free_base()
    OXI_PORT, DOVE_PORT = base + 143, base + 7143
    root.mkdir()
    os.chown(root, uid, gid)
    sh(*AS, BIN / "mailctl", "init", root, "--port-base", base)
    sh(*AS, BIN / "postconf", "-c", root / "etc", "-e", f"auth_passdb=passwd-file:{passwd('oxi')}",
       "auth_failure_delay=0", "max_use=0", "imapd_max_userip_connections=0",
       f"imapd_client_limit={args.idle + 100}", f"default_process_limit={args.idle + 100}")

    dconf = top / "dovecot.conf"
    drun = top / "dovecot-run"
    dpw = passwd("dove")
    dconf.write_text(f"""
base_dir = {drun}
state_dir = {top}/dovecot-state
log_path = {top}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:~/Maildir
first_valid_uid = 1
mail_max_userip_connections = {args.idle + 100}
default_client_limit = {2 * args.idle + 100}
default_vsz_limit = 0
default_login_user = dovenull
default_internal_user = dovecot
passdb {{
  driver = passwd-file
  args = {dpw}
}}
userdb {{
  driver = passwd-file
  args = {dpw}
}}
service imap-login {{
  inet_listener imap {{
    port = {DOVE_PORT}
  }}
  inet_listener imaps {{
    port = 0
  }}
  process_limit = {args.idle + 100}
}}
service imap {{
  process_limit = {args.idle + 100}
}}
""")

    def oxi_start():
        sh(*AS, BIN / "mailctl", "-c", root / "etc", "start")

    def oxi_stop():
        subprocess.run(AS + [str(BIN / "mailctl"), "-c", str(root / "etc"), "stop"], capture_output=True, timeout=60)

    def dove_start():
        # A port may still be held for a moment by the last run's exiting processes.
        for attempt in range(20):
            with open(top / "dovecot.out", "ab") as f:  # it keeps the caller's stdout: a file
                r = subprocess.run(["dovecot", "-c", str(dconf)], stdin=subprocess.DEVNULL,
                                   stdout=f, stderr=f, timeout=60)
            if r.returncode == 0:
                return
            time.sleep(0.5)
        raise SystemExit("dovecot does not start: see dovecot.out")

    def dove_stop():
        """SIGTERM to the master; waits for it and all its children (they hold the ports)."""
        procs = pids_dove()
        if not procs:
            return
        try:
            os.kill(procs[0], signal.SIGTERM)
        except OSError:
            return
        for _ in range(400):
            if not any(os.path.exists(f"/proc/{p}") for p in procs):
                return
            time.sleep(0.05)

    def wait_port(port):
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise SystemExit(f"nothing listens on {port}")

    def pids_oxi():
        out = []
        for e in os.listdir("/proc"):
            if not e.isdigit():
                continue
            try:
                env = Path(f"/proc/{e}/environ").read_bytes()
                cmd = Path(f"/proc/{e}/cmdline").read_bytes()
            except OSError:
                continue
            if f"MAIL_CONFIG={root}/etc".encode() in env or str(root).encode() in cmd:
                out.append(int(e))
        return out

    def pids_dove():
        try:
            master = int((drun / "master.pid").read_text().strip())
        except (OSError, ValueError):
            return []
        out = [master]
        for e in os.listdir("/proc"):
            if e.isdigit():
                try:
                    if Path(f"/proc/{e}/stat").read_text().rsplit(")", 1)[1].split()[1] == str(master):
                        out.append(int(e))
                except OSError:
                    pass
        return out

    def drop_indexes(system):
        """Removes the index files of the big mailbox (a SELECT then builds them)."""
        d = top / f"home-{system}" / "big" / "Maildir"
        for f in d.iterdir():
            if f.name.startswith("oxipost-index") or f.name.startswith("dovecot"):
                f.unlink()

    def run_ops(port):
        """The timed commands; returns {name: (messages/s, cpu%, extra)}."""
        res = {}
        c = Conn(port)
        c.login("big")
        dt, cpu, _ = timed(lambda: c.run(b"SELECT INBOX"))
        res["select (first, builds index)"] = (args.big / dt, cpu, "")
        best = {}
        for _ in range(args.repeat):
            # A new session each time (as a client opens one): the server loads its index.
            s2 = Conn(port)
            s2.login("big")
            dt, cpu, _ = timed(lambda: s2.run(b"SELECT INBOX"))
            s2.close()
            if "select (new session)" not in best or args.big / dt > best["select (new session)"][0]:
                best["select (new session)"] = (args.big / dt, cpu, "")
            for name, cmd in (("fetch 1:* (FLAGS ENVELOPE)", b"FETCH 1:* (FLAGS ENVELOPE)"),
                              (f"search TEXT over {args.big}", f'SEARCH TEXT "{NEEDLE}"'.encode())):
                dt, cpu, (nbytes, body) = timed(lambda: c.run(cmd, keep=cmd.startswith(b"SEARCH")))
                if name.startswith("search"):
                    line = [x for x in body.split(b"\r\n") if x.startswith(b"* SEARCH")][0]
                    hits = len(line.split()) - 2
                    assert hits == sum(1 for i in range(args.big) if i % 100 == 7), f"SEARCH found {hits}"
                if name not in best or args.big / dt > best[name][0]:
                    best[name] = (args.big / dt, cpu, "")
        c.close()
        c = Conn(port)
        c.login("fetch")
        c.run(b"SELECT INBOX")
        for _ in range(args.repeat):
            dt, cpu, (nbytes, _) = timed(lambda: c.run(b"FETCH 1:* (BODY.PEEK[])"))
            name = f"fetch BODY.PEEK[] {args.fetch} x {args.fetch_size} B"
            if name not in best or args.fetch / dt > best[name][0]:
                best[name] = (args.fetch / dt, cpu, f"{nbytes / dt / 1e6:.0f} MB/s")
        c.close()
        res.update(best)
        return res

    def run_memory(port, pids):
        time.sleep(1)
        before = pss(pids())
        conns = []
        for _ in range(args.idle):
            c = Conn(port, timeout=120)
            c.login("idle")
            c.run(b"SELECT INBOX")
            c.s.sendall(b"i IDLE\r\n")
            conns.append(c)
        for c in conns:
            if not c.read_line().startswith(b"+"):
                raise RuntimeError("IDLE not accepted")
        time.sleep(2)
        after = pss(pids())
        nprocs = len(pids())
        for c in conns:
            c.close()
        return before, after, nprocs

    systems = {
        "oxipost": (OXI_PORT, oxi_start, oxi_stop, pids_oxi),
        "dovecot": (DOVE_PORT, dove_start, dove_stop, pids_dove),
    }
    results = {k: [] for k in systems}
    mem = {k: [] for k in systems}
    try:
        for r in range(args.rounds):
            for name, (port, start, stop, pids) in systems.items():
                drop_indexes("oxi" if name == "oxipost" else "dove")
                start()
                wait_port(port)
                try:
                    ops = run_ops(port)
                finally:
                    stop()
                    time.sleep(1)
                start()
                wait_port(port)
                try:
                    m = run_memory(port, pids)
                finally:
                    stop()
                    time.sleep(1)
                results[name].append(ops)
                mem[name].append(m)
                line = "  ".join(f"{k}: {v[0]:.0f}/s (cpu {v[1]:.0f}%){' ' + v[2] if v[2] else ''}" for k, v in ops.items())
                print(f"round {r + 1} {name}: {line}", flush=True)
                print(f"round {r + 1} {name}: memory {m[0] / 1024:.1f} MiB fresh, {m[1] / 1024:.1f} MiB with "
                      f"{args.idle} IDLE ({(m[1] - m[0]) / args.idle:.1f} KiB each, {m[2]} processes)", flush=True)
    finally:
        for _, _, stop, _ in systems.values():
            stop()

    print(f"\nbest of {args.rounds} rounds (A B A B), messages/s; ratio = oxipost / dovecot (>1: oxipost faster)")
    names = list(results["oxipost"][0])
    print(f"  {'':40s} {'oxipost':>10s} {'dovecot':>10s} {'ratio':>7s}")
    for n in names:
        o = max(x[n][0] for x in results["oxipost"] if n in x)
        d = max(x[n][0] for x in results["dovecot"] if n in x)
        print(f"  {n:40s} {o:10.0f} {d:10.0f} {o / d:6.2f}x")
    for name in systems:
        m = min(mem[name], key=lambda x: x[1] - x[0])
        print(f"  {name}: {(m[1] - m[0]) / args.idle:.1f} KiB PSS per idle IDLE connection "
              f"({m[1] / 1024:.1f} MiB total with {args.idle}, {m[2]} processes)")
    if not os.environ.get("BENCH_KEEP"):
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
