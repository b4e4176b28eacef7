#!/usr/bin/env python3
"""Mail-in benchmark: Debian's Postfix and oxipost side by side in one run.

Both systems run on 127.0.0.1 with their default concurrency settings, receive mail from
Postfix's `smtp-source`, and deliver it with fsync into the Maildir of one local user.
For each case (message size x concurrent sessions) it measures, per system:
  accepted/s   messages / time until smtp-source has its last 250
  delivered/s  messages / time until the last file is in Maildir/new
  peak PSS     sum of Pss over all processes of the system, sampled every 0.2 s
and prints the oxipost/Postfix ratios. Absolute rates move a lot on shared machines;
the ratios from one run are what to compare. Run as root (Postfix needs it).
"""

import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = Path("/tmp/oxipost-bench")
USER = "benchmail"


def sh(*args, check=True, timeout=120, **kw):
    return subprocess.run([str(a) for a in args], check=check, timeout=timeout,
                          capture_output=True, text=True, **kw)


def ensure_user():
    if sh("id", USER, check=False).returncode != 0:
        sh("useradd", "--create-home", "--shell", "/usr/sbin/nologin", USER)
    home = Path(f"/home/{USER}")
    home.mkdir(exist_ok=True)
    shutil.chown(home, USER, USER)
    if sh("id", "oxipost", check=False).returncode != 0:
        sh("useradd", "--system", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", "oxipost")
    return home


def system_pids(marker):
    """Pids whose command line or MAIL_CONFIG mentions marker (a config directory)."""
    out = []
    m = marker.encode()
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{e}/cmdline").read_bytes()
            env = Path(f"/proc/{e}/environ").read_bytes()
        except OSError:
            continue
        if m in cmd or b"MAIL_CONFIG=" + m in env:
            out.append(int(e))
    return out


def pss_kb(pids):
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


class Sampler(threading.Thread):
    def __init__(self, marker):
        super().__init__(daemon=True)
        self.marker, self.peak, self.stop = marker, 0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, pss_kb(system_pids(self.marker)))
            time.sleep(0.2)


class Postfix:
    name = "postfix"

    def __init__(self, port, maildir):
        self.dir = WORK / "postfix"
        self.etc = self.dir / "etc"
        self.port = port
        self.maildir = maildir

    def setup(self):
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.etc.mkdir(parents=True)
        shutil.copy("/etc/postfix/master.cf", self.etc / "master.cf")
        (self.etc / "main.cf").write_text("compatibility_level = 3.6\n")
        pc = ["postconf", "-c", self.etc, "-e"]
        sh(*pc,
           f"queue_directory = {self.dir}/spool", f"data_directory = {self.dir}/data",
           "inet_interfaces = 127.0.0.1", "inet_protocols = ipv4",
           "myhostname = bench.localdomain", "mydestination = localhost, $myhostname",
           "home_mailbox = Maildir/", "alias_maps =", "alias_database =",
           f"maillog_file = {self.dir}/maillog", f"maillog_file_prefixes = {self.dir}",
           "mynetworks = 127.0.0.0/8",
           "smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination")
        (self.dir / "spool").mkdir(exist_ok=True)
        (self.dir / "data").mkdir(exist_ok=True)
        shutil.chown(self.dir / "data", "postfix", "postfix")
        # The stock master.cf with smtp on our port and nothing chrooted.
        sh("postconf", "-c", self.etc, "-M#", "smtp/inet")
        sh("postconf", "-c", self.etc, "-Me", f"{self.port}/inet={self.port} inet n - n - - smtpd")
        for svc in sh("postconf", "-c", self.etc, "-M").stdout.splitlines():
            w = svc.split()
            if len(w) > 4 and w[4] == "y":
                sh("postconf", "-c", self.etc, "-F", f"{w[0]}/{w[1]}/chroot=n")
        # postfix(1) accepts -c only for directories the default instance lists.
        alt = sh("postconf", "-h", "alternate_config_directories").stdout.strip()
        if str(self.etc) not in alt:
            sh("postconf", "-e", f"alternate_config_directories = {alt} {self.etc}".strip())
        sh("postfix", "-c", self.etc, "set-permissions", check=False, timeout=120)

    def start(self):
        sh("postfix", "-c", self.etc, "start", timeout=60)
        wait_port(self.port)

    def stop(self):
        sh("postfix", "-c", self.etc, "stop", check=False, timeout=60)
        deadline = time.time() + 20
        while time.time() < deadline and system_pids(str(self.etc)):
            time.sleep(0.2)
        for p in system_pids(str(self.etc)):
            try:
                os.kill(p, 9)
            except OSError:
                pass

    def marker(self):
        return str(self.etc)


class Oxipost:
    name = "oxipost"

    def __init__(self, port, maildir, bin_dir=None):
        self.dir = WORK / "oxipost"
        self.etc = self.dir / "etc"
        self.port = port
        self.maildir = maildir
        self.bin = Path(bin_dir) if bin_dir else REPO / "target" / "release"

    def setup(self):
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        # As Postfix: master runs as root, workers as mail_owner, local as the recipient.
        sh(self.bin / "mailctl", "init", self.dir, "--port-base", self.port - 525)
        sh(self.bin / "postconf", "-c", self.etc, "-e",
           "myhostname = bench.localdomain", "mydestination = localhost, $myhostname",
           "local_users =", "mynetworks = 127.0.0.0/8")
        shutil.chown(self.dir, "oxipost", "oxipost")

    def start(self):
        sh(self.bin / "mailctl", "-c", self.etc, "start", timeout=60)
        wait_port(self.port)

    def stop(self):
        sh(self.bin / "mailctl", "-c", self.etc, "stop", check=False, timeout=60)
        for p in system_pids(str(self.etc)):
            try:
                os.kill(p, 9)
            except OSError:
                pass

    def marker(self):
        return str(self.etc)


def wait_port(port, timeout=20):
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def count_new(maildir):
    d = maildir / "new"
    return len(os.listdir(d)) if d.is_dir() else 0


def cpu_jiffies():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v), v[3] + v[4]


def run_case(system, n, size, sessions):
    if system.maildir.exists():
        shutil.rmtree(system.maildir)
    system.start()
    sampler = Sampler(system.marker())
    sampler.start()
    t_all0, t_idle0 = cpu_jiffies()
    t0 = time.time()
    r = sh("smtp-source", "-s", sessions, "-m", n, "-l", size, "-f", "bench@example.com",
           "-t", f"{USER}@localhost", f"127.0.0.1:{system.port}", timeout=900, check=False)
    t_acc = time.time() - t0
    deadline = time.time() + 600
    while count_new(system.maildir) < n and time.time() < deadline:
        time.sleep(0.05)
    t_del = time.time() - t0
    t_all1, t_idle1 = cpu_jiffies()
    sampler.stop.set()
    sampler.join()
    delivered = count_new(system.maildir)
    busy = 100.0 * (1 - (t_idle1 - t_idle0) / max(1, t_all1 - t_all0))
    system.stop()
    if r.returncode != 0:
        print(f"  {system.name}: smtp-source exited {r.returncode}: {r.stderr.strip()[:200]}")
    return {"acc": n / t_acc, "del": delivered / t_del, "delivered": delivered,
            "pss": sampler.peak, "cpu": busy}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--messages", type=int, default=5000)
    ap.add_argument("--sizes", default="1024,51200")
    ap.add_argument("--sessions", default="1,10")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--oxipost-bin", default=None,
                    help="directory of oxipost binaries (default target/release), e.g. a saved build")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_smtp.py: run as root (Postfix needs it)")
    home = ensure_user()
    maildir = home / "Maildir"
    WORK.mkdir(exist_ok=True)
    os.chmod(WORK, 0o755)
    systems = [Oxipost(27525, maildir, a.oxipost_bin), Postfix(27625, maildir)]
    for s in systems:
        s.setup()
        s.stop()
    print(f"{a.messages} messages per case; both systems at their defaults "
          f"(local_destination_concurrency_limit = 2), Maildir delivery with fsync.")
    print(f"{'size':>6} {'sess':>4} {'system':>8} {'accepted/s':>11} {'delivered/s':>12} "
          f"{'peak PSS MiB':>13} {'CPU busy %':>10}")
    for size in [int(x) for x in a.sizes.split(",")]:
        for sess in [int(x) for x in a.sessions.split(",")]:
            res = {}
            for _ in range(a.reps):
                for s in systems:  # A B A B: alternate to share the machine's mood
                    r = run_case(s, a.messages, size, sess)
                    prev = res.get(s.name)
                    if prev is None or r["del"] > prev["del"]:
                        res[s.name] = r
            for name in ("oxipost", "postfix"):
                r = res[name]
                print(f"{size:>6} {sess:>4} {name:>8} {r['acc']:>11.0f} {r['del']:>12.0f} "
                      f"{r['pss'] / 1024:>13.1f} {r['cpu']:>10.0f}"
                      + ("" if r["delivered"] == a.messages else f"  (only {r['delivered']} delivered)"),
                      flush=True)
            o, p = res["oxipost"], res["postfix"]
            print(f"{size:>6} {sess:>4} {'ratio':>8} {o['acc'] / p['acc']:>10.2f}x {o['del'] / p['del']:>11.2f}x "
                  f"{o['pss'] / max(1, p['pss']):>12.2f}x", flush=True)
    for s in systems:
        s.stop()


if __name__ == "__main__":
    main()
