#!/usr/bin/env bash
# POP3 benchmark: oxipost's pop3d against Debian's Dovecot (dovecot-pop3d) in the same run,
# alternating A B A B, over the same Maildirs on 127.0.0.1. Not a test: it prints figures.
#
# Usage: scripts/bench-pop3.sh [-c CLIENTS] [-m MESSAGES] [-s SIZE] [-r ROUNDS] [-t SECONDS] [-b DIR]
#   -c  parallel clients (default 4; each has its own mailbox, as POP3 locks a mailbox
#       per session)
#   -m  messages per mailbox (default 2000), -s message size in bytes (default 5000)
#   -r  rounds of A B (default 2), -t seconds per login round (default 5)
#   -b  oxipost binaries to measure (default: target/release, built first), e.g. a saved build
#
# Measured, per system:
#   fetch:  each client logs in, LIST, UIDL, then pipelines RETR 1..M in one write and
#           counts the terminators (a raw-socket client, so the client is not the
#           bottleneck), QUIT without DELE; messages/s and MB/s over all clients.
#   logins: each client loops connect, USER/PASS, STAT, QUIT for -t seconds; logins/s.
#   memory: PSS (/proc/PID/smaps_rollup) summed over all of the system's processes, right
#           after a fresh start (so heap freed by the other steps is not reused), then with 500
#           idle greeted connections and 100 idle logged-in sessions (empty Maildirs); the
#           difference per connection.
# Both systems run with their defaults except: Dovecot mail_max_userip_connections = 1000
# and process_limit = 1000 for pop3-login and pop3 (defaults 10 and 100: the memory step
# holds many sessions from one address, each in its own process with Dovecot's default
# login mode); oxipost max_use = 0 (the auth process otherwise exits every 100 logins and
# master is sometimes slow to replace it: logins then fail for seconds); passwd-file
# passdb {PLAIN} for both, no TLS. CPU busy (all cores, from /proc/stat) is reported beside each figure:
# client and servers share the machine's cores.
#
# Needs root (Dovecot must start as root; the oxipost suite runs as the `oxipost` user as
# in the tests). Installs dovecot-pop3d with apt if missing (services kept from starting).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
[ "$(id -u)" = 0 ] || { echo "bench-pop3.sh: run as root" >&2; exit 1; }
CLIENTS=4 MESSAGES=2000 SIZE=5000 ROUNDS=2 SECONDS_LOGIN=5 BIN_DIR=
while getopts "c:m:s:r:t:b:" o; do
    case $o in
        c) CLIENTS=$OPTARG ;; m) MESSAGES=$OPTARG ;; s) SIZE=$OPTARG ;;
        r) ROUNDS=$OPTARG ;; t) SECONDS_LOGIN=$OPTARG ;; b) BIN_DIR=$OPTARG ;;
        *) sed -n '2,13p' "$0"; exit 2 ;;
    esac
done
if ! command -v dovecot >/dev/null; then
    [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; }
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q --no-install-recommends dovecot-pop3d >/dev/null
fi
if [ -z "$BIN_DIR" ]; then
    timeout 3600 cargo build --release --quiet -p oxipost-master -p oxipost-mailctl -p oxipost-auth \
        -p oxipost-pop3d -p oxipost-postconf
    BIN_DIR=$REPO/target/release
fi
id oxipost >/dev/null 2>&1 || useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin oxipost

export BENCH_CLIENTS=$CLIENTS BENCH_MESSAGES=$MESSAGES BENCH_SIZE=$SIZE BENCH_ROUNDS=$ROUNDS \
    BENCH_LOGIN_SECONDS=$SECONDS_LOGIN BENCH_BIN=$BIN_DIR
exec timeout 3600 python3 - <<'PY'
import os, random, shutil, signal, socket, subprocess, sys, tempfile, time
from multiprocessing import Pool
from pathlib import Path

N = int(os.environ["BENCH_CLIENTS"]); M = int(os.environ["BENCH_MESSAGES"])
SIZE = int(os.environ["BENCH_SIZE"]); ROUNDS = int(os.environ["BENCH_ROUNDS"])
LOGIN_SECS = float(os.environ["BENCH_LOGIN_SECONDS"]); BIN = Path(os.environ["BENCH_BIN"])
PW = "bench-pw"
IDLE_GREETED, IDLE_LOGGED = 500, 100
AS = ["runuser", "-u", "oxipost", "--"]
uid, gid = int(subprocess.check_output(["id", "-u", "oxipost"])), int(subprocess.check_output(["id", "-g", "oxipost"]))

top = Path(tempfile.mkdtemp(prefix="bench-pop3-", dir="/tmp"))
os.chmod(top, 0o755)
root = top / "oxi"
home = top / "home"


def sh(*a, **kw):
    return subprocess.run([str(x) for x in a], check=True, capture_output=True, text=True, timeout=120, **kw)


def free_base():
    for _ in range(100):
        b = random.randrange(20000, 50000)
        ok = True
        for off in (110, 525, 995, 143, 993, 587, 465, 7110):
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


# Mailboxes: user u0..u{N-1} hold M messages of SIZE bytes (LF line ends, as local writes
# them); idle users i0..i{IDLE_LOGGED-1} have empty Maildirs.
def make_message(i):
    rnd = random.Random(i)
    head = (f"Return-Path: <s@example.com>\nDelivered-To: u@localhost\nFrom: s@example.com\n"
            f"To: u@localhost\nSubject: bench {i}\nMessage-ID: <b{i}@example.com>\n\n")
    words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod".split()
    body = []
    n = len(head)
    while n < SIZE:
        line = " ".join(rnd.choice(words) for _ in range(11))[:72] + "\n"
        body.append(line)
        n += len(line)
    return (head + "".join(body))[:SIZE - 1].encode() + b"\n"


def chown_tree(p):
    for d, dirs, files in os.walk(p):
        os.chown(d, uid, gid)
        for f in files:
            os.chown(os.path.join(d, f), uid, gid)


users = [f"u{i}" for i in range(N)] + [f"i{i}" for i in range(IDLE_LOGGED)]
t0 = int(time.time()) - 100000
for u in users:
    for sub in ("new", "cur", "tmp"):
        (home / u / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
msgs = [make_message(i) for i in range(M)]
for u in users[:N]:
    for i, data in enumerate(msgs):
        (home / u / "Maildir" / "new" / f"{t0 + i}.M{i}P1Q{i}V1I{i}.bench").write_bytes(data)
chown_tree(top)
passwd = top / "users.passwd"
passwd.write_text("".join(f"{u}:{{PLAIN}}{PW}:{uid}:{gid}::{home / u}::\n" for u in users))
os.chown(passwd, uid, gid)
os.chmod(passwd, 0o640)

base = free_base()
OXI_PORT, DOVE_PORT = base + 110, base + 7110
root.mkdir()
os.chown(root, uid, gid)
sh(*AS, BIN / "mailctl", "init", root, "--port-base", base)
sh(*AS, BIN / "postconf", "-c", root / "etc", "-e", f"auth_passdb=passwd-file:{passwd}",
   "pop3d_client_limit=2000", "auth_failure_delay=0", "max_use=0")

dconf = top / "dovecot.conf"
drun = top / "dovecot-run"
dconf.write_text(f"""
base_dir = {drun}
state_dir = {top}/dovecot-state
log_path = {top}/dovecot.log
protocols = pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_location = maildir:~/Maildir
first_valid_uid = 1
mail_max_userip_connections = 1000
default_client_limit = 2000
default_login_user = dovenull
default_internal_user = dovecot
passdb {{
  driver = passwd-file
  args = {passwd}
}}
userdb {{
  driver = passwd-file
  args = {passwd}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {DOVE_PORT}
  }}
  inet_listener pop3s {{
    port = 0
  }}
  process_limit = 1000
}}
service pop3 {{
  process_limit = 1000
}}
""")
os.chmod(passwd, 0o644)  # Dovecot's auth process reads it as its own user


def oxi_start():
    sh(*AS, BIN / "mailctl", "-c", root / "etc", "start")


def oxi_stop():
    subprocess.run(AS + [str(BIN / "mailctl"), "-c", str(root / "etc"), "stop"], capture_output=True, timeout=60)


def dove_start():
    subprocess.run(["dovecot", "-c", str(dconf)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)


def dove_stop():
    subprocess.run(["doveadm", "-c", str(dconf), "stop"], capture_output=True, timeout=60)
    for _ in range(100):
        if not (drun / "master.pid").exists():
            break
        time.sleep(0.1)


def wait_port(port):
    for _ in range(100):
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
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            exe = os.readlink(f"/proc/{e}/exe")
        except OSError:
            continue
        if "/dovecot" in exe or exe.startswith("/usr/lib/dovecot/") or exe.endswith("/doveadm"):
            out.append(int(e))
    return out


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


def cpu_sample():
    f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    v = list(map(int, f))
    idle = v[3] + v[4]
    return sum(v), idle


def busy(a, b):
    tot, idle = b[0] - a[0], b[1] - a[1]
    return 100.0 * (tot - idle) / tot if tot else 0.0


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buf = b""
        self.line()

    def line(self):
        while b"\r\n" not in self.buf:
            c = self.s.recv(65536)
            if not c:
                raise EOFError
            self.buf += c
        l, self.buf = self.buf.split(b"\r\n", 1)
        return l

    def cmd(self, c):
        self.s.sendall(c.encode() + b"\r\n")
        l = self.line()
        if not l.startswith(b"+OK"):
            raise RuntimeError(f"{c.split()[0]}: {l!r}")
        return l

    def count_terminators(self, n):
        """Reads until n multi-line terminators have passed; returns bytes read."""
        data = self.buf
        seen = (b"\r\n" + data).count(b"\r\n.\r\n")
        total = len(data)
        tail = (b"\r\n" + data)[-4:]
        while seen < n:
            c = self.s.recv(1 << 20)
            if not c:
                raise EOFError
            total += len(c)
            seen += (tail + c).count(b"\r\n.\r\n")
            tail = (tail + c)[-4:]
        self.buf = b""
        return total


def fetch(args):
    port, user = args
    c = Conn(port)
    c.cmd(f"USER {user}")
    c.cmd(f"PASS {PW}")
    stat = c.cmd("STAT")
    n = int(stat.split()[1])
    c.s.sendall(b"LIST\r\nUIDL\r\n" + b"".join(b"RETR %d\r\n" % i for i in range(1, n + 1)))
    got = c.count_terminators(n + 2)
    c.cmd("QUIT")
    c.s.close()
    return n, got


def logins(args):
    port, user, secs = args
    end = time.time() + secs
    n = 0
    while time.time() < end:
        c = Conn(port)
        c.cmd(f"USER {user}")
        c.cmd(f"PASS {PW}")
        c.cmd("STAT")
        c.cmd("QUIT")
        c.s.close()
        n += 1
    return n


def run_fetch(port):
    with Pool(N) as pool:
        pool.map(fetch, [(port, f"u{i}") for i in range(N)])  # warm the caches
        a, t = cpu_sample(), time.time()
        res = pool.map(fetch, [(port, f"u{i}") for i in range(N)])
        dt, b = time.time() - t, cpu_sample()
    msgs = sum(r[0] for r in res)
    byts = sum(r[1] for r in res)
    return msgs / dt, byts / dt / 1e6, busy(a, b)


def run_logins(port):
    with Pool(N) as pool:
        a, t = cpu_sample(), time.time()
        res = pool.map(logins, [(port, f"u{i}", LOGIN_SECS) for i in range(N)])
        dt, b = time.time() - t, cpu_sample()
    return sum(res) / dt, busy(a, b)


def run_memory(port, pids):
    time.sleep(1)
    before = pss(pids())
    greeted = [Conn(port) for _ in range(IDLE_GREETED)]
    time.sleep(1)
    mid = pss(pids())
    logged = []
    for i in range(IDLE_LOGGED):
        c = Conn(port)
        c.cmd(f"USER i{i}")
        c.cmd(f"PASS {PW}")
        logged.append(c)
    time.sleep(1)
    after = pss(pids())
    nprocs = len(pids())
    for c in greeted + logged:
        c.s.close()
    return (mid - before) / IDLE_GREETED, (after - mid) / IDLE_LOGGED, nprocs


systems = {
    "oxipost": (OXI_PORT, oxi_start, oxi_stop, pids_oxi),
    "dovecot": (DOVE_PORT, dove_start, dove_stop, pids_dove),
}
results = {k: {"fetch": [], "login": [], "mem": []} for k in systems}
try:
    for r in range(ROUNDS):
        for name, (port, start, stop, pids) in systems.items():
            start()
            wait_port(port)
            try:
                f = run_fetch(port)
                l = run_logins(port)
            finally:
                stop()
                time.sleep(1)
            # Memory on a fresh start, so heap freed by the other steps is not reused.
            start()
            wait_port(port)
            try:
                m = run_memory(port, pids)
            finally:
                stop()
                time.sleep(1)
            results[name]["fetch"].append(f)
            results[name]["login"].append(l)
            results[name]["mem"].append(m)
            print(f"round {r + 1} {name:8s} fetch {f[0]:9.0f} msg/s {f[1]:7.1f} MB/s (cpu {f[2]:3.0f}%)  "
                  f"logins {l[0]:7.0f}/s (cpu {l[1]:3.0f}%)  "
                  f"idle {m[0]:6.1f} KiB/greeted, {m[1]:7.1f} KiB/logged-in ({m[2]} processes)", flush=True)
finally:
    oxi_stop()
    dove_stop()
    for p in pids_oxi():
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass

best = lambda name, k, i: max(x[i] for x in results[name][k])
print(f"\n{N} clients, {M} messages x {SIZE} bytes per mailbox; best of {ROUNDS} rounds (A B A B)")
for label, k, i, unit in (("fetch messages/s", "fetch", 0, ""), ("fetch MB/s", "fetch", 1, ""),
                          ("logins/s", "login", 0, "")):
    o, d = best("oxipost", k, i), best("dovecot", k, i)
    print(f"  {label:18s} oxipost {o:10.1f}  dovecot {d:10.1f}  ratio {o / d if d else float('inf'):5.2f}x")
mo = [min(x[j] for x in results["oxipost"]["mem"]) for j in (0, 1)]
md = [min(x[j] for x in results["dovecot"]["mem"]) for j in (0, 1)]
print(f"  {'KiB/greeted conn':18s} oxipost {mo[0]:10.1f}  dovecot {md[0]:10.1f}")
print(f"  {'KiB/logged-in':18s} oxipost {mo[1]:10.1f}  dovecot {md[1]:10.1f}")
if not os.environ.get("BENCH_KEEP"):
    shutil.rmtree(top, ignore_errors=True)
PY
