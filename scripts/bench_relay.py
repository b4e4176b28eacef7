#!/usr/bin/env python3
"""Relay benchmark: Debian's Postfix and oxipost side by side in one run, each relaying
to its own `smtp-sink` on loopback (`relayhost = [127.0.0.1]:port`).

Both systems are set up as in bench_smtp.py (same classes), get their mail from
Postfix's `smtp-source` (N messages of SIZE bytes over S sessions, to a non-local
domain) and relay it with the same concurrency settings (Postfix's defaults, written out:
default_destination_concurrency_limit = 20, initial_destination_concurrency = 5,
smtp_connection_cache_on_demand = yes). Measured per system:
  relayed/s    messages / time from the first connection of smtp-source until the
               system's smtp-sink has counted the last message
  accepted/s   messages / time until smtp-source has its last 250
  peak PSS     of all the system's processes (the sinks are not counted)
With --flush it also measures the relay path alone: the N messages are queued while the
sink is down (deferred: connection refused, then "delivery temporarily suspended"),
the sink comes up, `postqueue -f`, and
  flushed/s    messages / time from the flush until the sink has counted the last one.
Then the oxipost/Postfix ratios. Absolute rates move a lot on a shared machine; compare
the ratios of one run. Run as root (Postfix needs it).
"""

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_smtp as b  # noqa: E402

RELAY_SETTINGS = [
    "default_destination_concurrency_limit = 20",
    "initial_destination_concurrency = 5",
    "smtp_connection_cache_on_demand = yes",
]


class Sink:
    """smtp-sink on 127.0.0.1:port, counting messages from its `-c` counter."""

    def __init__(self, port):
        self.port = port
        self.count = 0
        self.proc = subprocess.Popen(
            ["smtp-sink", "-u", "nobody", "-c", f"127.0.0.1:{port}", "1024"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        b.wait_port(port)

    def _read(self):
        buf = b""
        pat = re.compile(rb"mesg=(\d+)")
        while True:
            d = self.proc.stdout.read1(65536)
            if not d:
                return
            buf = (buf + d)[-4096:]
            m = pat.findall(buf)
            if m:
                self.count = int(m[-1])

    def reset(self):
        self.stop()
        self.__init__(self.port)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def configure(system, sink_port):
    settings = [f"relayhost = [127.0.0.1]:{sink_port}", *RELAY_SETTINGS]
    if isinstance(system, b.Postfix):
        b.sh("postconf", "-c", system.etc, "-e", *settings)
    else:
        b.sh(system.bin / "postconf", "-c", system.etc, "-e", *settings)


def run_case(system, sink, n, size, sessions):
    sink.reset()
    system.start()
    sampler = b.Sampler(system.marker())
    sampler.start()
    t0 = time.time()
    r = b.sh("smtp-source", "-s", sessions, "-m", n, "-l", size, "-f", "bench@example.com",
             "-t", "someone@relay.example", f"127.0.0.1:{system.port}", timeout=1800, check=False)
    t_acc = time.time() - t0
    deadline = time.time() + 900
    while sink.count < n and time.time() < deadline:
        time.sleep(0.02)
    t_rel = time.time() - t0
    sampler.stop.set()
    sampler.join()
    got = sink.count
    system.stop()
    if r.returncode != 0:
        print(f"  {system.name}: smtp-source exited {r.returncode}: {r.stderr.strip()[:200]}")
    return {"acc": n / t_acc, "rel": got / t_rel, "relayed": got, "pss": sampler.peak}


def count_files(d):
    return sum(len(files) for _, _, files in os.walk(d))


def run_flush(system, sink, n, size, sessions):
    """Queue n messages with the sink down, then time a flush into the sink."""
    sink.stop()
    system.start()
    spool = system.dir / "spool"
    b.sh("smtp-source", "-s", sessions, "-m", n, "-l", size, "-f", "bench@example.com",
         "-t", "someone@relay.example", f"127.0.0.1:{system.port}", timeout=1800, check=False)
    deadline = time.time() + 900
    while time.time() < deadline and (
            count_files(spool / "deferred") < n or count_files(spool / "active")
            or count_files(spool / "incoming")):
        time.sleep(0.2)
    sink.reset()
    postqueue = "postqueue" if isinstance(system, b.Postfix) else system.bin / "postqueue"
    t0 = time.time()
    b.sh(postqueue, "-c", system.etc, "-f", check=False)
    deadline = time.time() + 900
    while sink.count < n and time.time() < deadline:
        time.sleep(0.02)
    t = time.time() - t0
    got = sink.count
    system.stop()
    return {"flush": got / t, "flushed": got}


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--messages", type=int, default=10000)
    ap.add_argument("--size", type=int, default=5120)
    ap.add_argument("--sessions", type=int, default=10)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--flush", action="store_true",
                    help="also time relaying a full queue (queued with the sink down)")
    ap.add_argument("--oxipost-bin", default=None,
                    help="directory of oxipost binaries (default target/release)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_relay.py: run as root (Postfix needs it)")
    home = b.ensure_user()
    b.WORK.mkdir(exist_ok=True)
    os.chmod(b.WORK, 0o755)
    systems = [b.Oxipost(27525, home / "Maildir", a.oxipost_bin),
               b.Postfix(27625, home / "Maildir")]
    sinks = {"oxipost": Sink(27725), "postfix": Sink(27726)}
    try:
        for s in systems:
            s.setup()
            configure(s, sinks[s.name].port)
            s.stop()
        print(f"{a.messages} messages of {a.size} bytes, smtp-source with {a.sessions} sessions; "
              f"each system relays to its own smtp-sink ({', '.join(RELAY_SETTINGS)}).")
        print(f"{'system':>8} {'relayed/s':>10} {'accepted/s':>11} {'peak PSS MiB':>13}")
        res = {}
        for _ in range(a.reps):
            for s in systems:  # A B A B: alternate to share the machine's mood
                r = run_case(s, sinks[s.name], a.messages, a.size, a.sessions)
                print(f"{s.name:>8} {r['rel']:>10.0f} {r['acc']:>11.0f} {r['pss'] / 1024:>13.1f}"
                      + ("" if r["relayed"] == a.messages else f"  (only {r['relayed']} relayed)"),
                      flush=True)
                prev = res.get(s.name)
                if prev is None or r["rel"] > prev["rel"]:
                    res[s.name] = r
        o, p = res["oxipost"], res["postfix"]
        print(f"{'best':>8} oxipost {o['rel']:.0f}/s, postfix {p['rel']:.0f}/s: "
              f"ratio {o['rel'] / p['rel']:.2f}x relayed, {o['acc'] / p['acc']:.2f}x accepted, "
              f"{o['pss'] / max(1, p['pss']):.2f}x memory")
        if a.flush:
            fl = {}
            for _ in range(a.reps):
                for s in systems:
                    r = run_flush(s, sinks[s.name], a.messages, a.size, a.sessions)
                    print(f"{s.name:>8} flushed/s {r['flush']:.0f}"
                          + ("" if r["flushed"] == a.messages else f"  (only {r['flushed']} relayed)"),
                          flush=True)
                    fl[s.name] = max(fl.get(s.name, 0), r["flush"])
            print(f"{'best':>8} flush: oxipost {fl['oxipost']:.0f}/s, postfix {fl['postfix']:.0f}/s: "
                  f"ratio {fl['oxipost'] / fl['postfix']:.2f}x")
    finally:
        for s in systems:
            s.stop()
        for k in sinks.values():
            k.stop()


if __name__ == "__main__":
    main()
