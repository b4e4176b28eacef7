"""10,000 idle IDLE sessions in a few imapd processes (the many-clients-per-process worker
mode), every one woken by one SMTP delivery. Resource figures, not timing: the process
count follows imapd_client_limit, the memory per session is bounded."""

import resource
import selectors
import socket
import time

from conftest import PASSWORD, pids_of
from test_imap import body

N = 10_000
WAVE = 500  # connections opened at once (the listen backlog stays short)


def pss_kib(pid):
    try:
        for line in open(f"/proc/{pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def read_until_all(sel, bufs, socks, needle, deadline):
    """Reads the registered sockets (into `bufs`) until each of `socks` has `needle`."""
    waiting = {s for s in socks if needle not in bufs[s]}
    while waiting:
        if time.time() > deadline:
            sample = next(iter(waiting))
            raise AssertionError(f"{len(waiting)} sessions without {needle!r}; one has {bufs[sample][-300:]!r}")
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            try:
                chunk = s.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                raise AssertionError(f"session closed: {bufs[s][-300:]!r}")
            bufs[s] += chunk
            if needle in bufs[s]:
                waiting.discard(s)


def test_ten_thousand_idle_sessions_in_few_processes(imap):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = N + 1000
    if hard < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))  # root may raise it
    elif soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    imap.postconf("imapd_max_userip_connections=0")
    imap.start()
    imap.deliver_all([body(0)])
    sel = selectors.DefaultSelector()
    bufs = {}
    deadline = time.time() + 600
    try:
        for start in range(0, N, WAVE):
            wave = []
            for _ in range(min(WAVE, N - start)):
                s = socket.create_connection(("127.0.0.1", imap.imap_port), timeout=30)
                s.setblocking(False)
                # Pipelined: the server answers in order, IDLE last.
                s.sendall(f'a LOGIN demo "{PASSWORD}"\r\nb SELECT INBOX\r\nc IDLE\r\n'.encode())
                sel.register(s, selectors.EVENT_READ)
                bufs[s] = b""
                wave.append(s)
            read_until_all(sel, bufs, wave, b"+ idling", deadline)
        assert len(bufs) == N
        procs = pids_of("imapd", imap.root)
        limit = 1000  # imapd_client_limit's default
        assert len(procs) <= N // limit + 1, f"{len(procs)} imapd processes for {N} sessions"
        per_session = sum(pss_kib(p) for p in procs) / N
        print(f"{N} idle IDLE sessions: {len(procs)} imapd processes, {per_session:.0f} KiB PSS each")
        # Dovecot 2.3 on this machine: about 513 KiB each (scripts/bench-imap.sh).
        assert per_session < 128, f"{per_session:.0f} KiB PSS per idle session"
        for s in bufs:
            bufs[s] = b""
        imap.send(body(1))
        read_until_all(sel, bufs, list(bufs), b"* 2 EXISTS\r\n", deadline)
    finally:
        for s in list(bufs):
            sel.unregister(s)
            s.close()
        sel.close()
