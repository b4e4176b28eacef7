"""master and mailctl with real processes: on-demand workers, replacement, reload,
throttling, process limits, clean stop, single instance, stale pid files, config errors."""

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

from conftest import MAILCTL, alive, free_ports, init_port_base, proc_pids_of


def until(pred, timeout=10, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def test_start_connect_stop_leaves_nothing(suite):
    a, b = free_ports(2)
    suite.write_main()
    suite.write_master(
        f"{a} inet n - n - - oxipost-testd\n"
        f"{b} inet n - n - 2 oxipost-testd\n"
        "echo unix n - n - - oxipost-testd\n"
    )
    master = suite.start()
    pid, name, echo = suite.ask(a, "hello")
    assert name == str(a) and echo == "hello"
    pid_b, _ = suite.ask(b)
    assert pid_b != pid
    # A unix service in public/ (private = n) with Postfix's mode.
    sock = suite.spool / "public" / "echo"
    assert oct(sock.stat().st_mode & 0o777) == "0o666"
    with socket.socket(socket.AF_UNIX) as u:
        u.settimeout(10)
        u.connect(str(sock))
        suite.seen.add(int(u.makefile().readline().split()[0]))
    # A busy worker (client still connected) must not survive the stop either.
    busy = socket.create_connection(("127.0.0.1", a), timeout=10)
    suite.seen.add(int(busy.makefile().readline().split()[0]))
    r = suite.mailctl("stop")
    busy.close()
    assert r.returncode == 0, r.stderr
    assert until(lambda: not any(alive(p) for p in suite.seen | {master}), 5)
    assert proc_pids_of(suite.root) == []
    assert not (suite.spool / "pid" / "master.pid").exists()
    assert "daemon started" in suite.log() and "terminating on signal 15" in suite.log()


def test_killed_worker_is_replaced(suite):
    (a,) = free_ports(1)
    suite.write_main()
    suite.write_master(f"{a} inet n - n - - oxipost-testd\n")
    suite.start()
    first, _ = suite.ask(a)
    os.kill(first, signal.SIGKILL)
    assert suite.wait_log(f"pid {first} killed by signal 9")
    second, _ = suite.ask(a)
    assert second != first
    # The first worker had reported: no throttling for it.
    assert "throttling" not in suite.log()


def test_reload_adds_service_and_moves_port(suite):
    a, b, c = free_ports(3)
    suite.write_main()
    suite.write_master(f"{a} inet n - n - - oxipost-testd\n")
    suite.start()
    old, _ = suite.ask(a)
    suite.write_master(
        f"{b} inet n - n - - oxipost-testd\n"  # a moved to b
        f"{c} inet n - n - - oxipost-testd -o max_use=5\n"  # added
    )
    r = suite.mailctl("reload")
    assert r.returncode == 0, r.stderr
    assert suite.wait_log("reload -- version")
    _, name = until(lambda: _try(suite, b))
    assert name == str(b)
    _, name = suite.ask(c)
    assert name == str(c)
    # The old port is closed and the old generation's idle worker has gone.
    assert until(lambda: _refused(a))
    assert until(lambda: not alive(old))
    # A broken master.cf: mailctl refuses to reload, and master itself (SIGHUP sent
    # directly) keeps the old configuration.
    suite.write_master(f"{b} inet n - n - - oxipost-testd\nbroken line\n")
    r = suite.mailctl("reload")
    assert r.returncode == 1 and "master.cf:2: entry has 2 fields" in r.stderr
    os.kill(suite.master_pid(), signal.SIGHUP)
    assert suite.wait_log("keeping the old configuration")
    assert "master.cf:2:" in suite.log()
    assert suite.ask(c)[1] == str(c)


def _try(suite, port):
    try:
        return suite.ask(port, timeout=2)
    except OSError:
        return None


def _refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


def test_missing_binary_is_throttled_others_work(suite):
    a, b, c = free_ports(3)
    suite.write_main()
    suite.write_master(
        f"{a} inet n - n - - oxipost-testd\n"
        f"{b} inet n - n - - no-such-program\n"
        f"{c} inet n - n - - oxipost-testd crash-at-start\n"
    )
    suite.start()
    # Clients of the broken services wait in the listen queue; master tries, logs, throttles.
    waiting = [socket.create_connection(("127.0.0.1", p), timeout=5) for p in (b, c)]
    try:
        assert suite.wait_log("no-such-program: No such file or directory")
        assert suite.wait_log(f"service {b}/inet: cannot execute")
        assert suite.wait_log(f"service {c}/inet:") and suite.wait_log("bad command startup -- throttling")
        assert suite.wait_log("exit status 1")
        for _ in range(5):
            assert suite.ask(a)[1] == str(a)
        # Throttled, not a fork loop: within 1.5 s (throttle 2 s) at most 2 attempts each.
        time.sleep(1.5)
        log = suite.log()
        assert log.count("cannot execute") <= 2, log
        assert log.count("bad command startup") <= 2, log
        st = suite.mailctl("status")
        assert st.returncode == 0
        assert "throttled" in st.stdout
    finally:
        for w in waiting:
            w.close()


def test_burst_respects_maxproc(suite):
    (a,) = free_ports(1)
    suite.write_main()
    suite.write_master(f"{a} inet n - n - 3 oxipost-testd\n")
    suite.start()
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], len(suite.workers()))
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    served, errors = [], []

    def client(i):
        try:
            pid, name, echo = suite.ask(a, f"client {i}", timeout=30)
            assert echo == f"client {i}"
            served.append(pid)
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    sampler.join(10)
    assert not errors, errors[:3]
    assert len(served) == 100
    assert len(set(served)) <= 3, set(served)
    assert peak[0] <= 3, peak[0]
    assert suite.wait_log(f"service {a}/inet has reached its process limit 3")
    print(f"\nburst: 100 clients served by {len(set(served))} workers, peak {peak[0]}")


def test_second_start_refused_and_stop_when_stopped(suite):
    (a,) = free_ports(1)
    suite.write_main()
    suite.write_master(f"{a} inet n - n - - oxipost-testd\n")
    master = suite.start()
    r = suite.mailctl("start")
    assert r.returncode == 1
    assert r.stderr.strip().endswith("mailctl: fatal: the mail system is already running")
    assert suite.master_pid() == master and alive(master)
    assert suite.mailctl("stop").returncode == 0
    r = suite.mailctl("stop")
    assert r.returncode == 1
    assert "mailctl: fatal: the mail system is not running" in r.stderr
    r = suite.mailctl("status")
    assert r.returncode == 1 and "not running" in r.stderr


def test_stale_pid_file_is_ignored(suite):
    (a,) = free_ports(1)
    suite.write_main()
    suite.write_master(f"{a} inet n - n - - oxipost-testd\n")
    (suite.spool / "pid").mkdir(parents=True)
    # A live process that is not our master (this test), as after a crash and pid reuse.
    (suite.spool / "pid" / "master.pid").write_text(f"{os.getpid():>10}\n")
    r = suite.mailctl("status")
    assert r.returncode == 1
    r = suite.mailctl("stop")
    assert r.returncode == 1 and "not running" in r.stderr
    master = suite.start()
    assert master != os.getpid()
    assert suite.ask(a)[1] == str(a)
    # A crashed master (SIGKILL) leaves its pid file behind; its workers go away.
    os.kill(master, signal.SIGKILL)
    assert until(lambda: not alive(master))
    assert (suite.spool / "pid" / "master.pid").exists()
    assert until(lambda: proc_pids_of(suite.root) == [], 5)
    second = suite.start()
    assert second != master
    assert suite.ask(a)[1] == str(a)


def test_config_error_names_file_and_line(suite):
    (a,) = free_ports(1)
    suite.write_main()
    suite.write_master(f"# services\n{a} inet n - n - - oxipost-testd\n{a + 1} tcp n - n - - x\n")
    r = suite.mailctl("start")
    assert r.returncode == 1
    assert f"{suite.etc}/master.cf:3: unknown service type" in r.stderr
    assert r.stderr.startswith("mailctl: fatal: ")
    assert proc_pids_of(suite.root) == []
    assert _refused(a)
    suite.write_master(f"{a} inet n - n - - oxipost-testd\n")
    suite.write_main("default_process_limit = many\n")
    r = suite.mailctl("check")
    assert r.returncode == 1 and f"{suite.etc}/main.cf:10:" in r.stderr, r.stderr
    # master itself refuses the same way, before opening anything.
    m = subprocess.run(
        [str(Path(MAILCTL).parent / "master"), "-c", str(suite.etc)],
        capture_output=True, text=True, timeout=10,
    )
    assert m.returncode == 1 and "main.cf:10:" in m.stderr
    assert _refused(a)


def test_port_in_use_fails_start_with_reason(suite):
    (a,) = free_ports(1)
    suite.write_main()
    suite.write_master(f"{a} inet n - n - - oxipost-testd\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", a))
        s.listen()
        r = suite.mailctl("start")
    assert r.returncode == 1
    assert "Address already in use" in r.stderr and f"port {a}" in r.stderr, r.stderr
    assert proc_pids_of(suite.root) == []


def test_status_shows_workers_and_abort(suite):
    a, b = free_ports(2)
    suite.write_main()
    suite.write_master(f"{a} inet n - n - - oxipost-testd\n{b} inet n - n - 0 oxipost-testd\n")
    suite.start()
    held = socket.create_connection(("127.0.0.1", a), timeout=10)
    suite.seen.add(int(held.makefile().readline().split()[0]))
    suite.ask(a)
    r = suite.mailctl("status")
    assert r.returncode == 0
    assert "the mail system is running: pid" in r.stderr
    line = [l for l in r.stdout.splitlines() if l.startswith(f"{a}/inet")][0]
    assert "workers 2 (idle 1), limit 100" in line, r.stdout
    assert f"{b}/inet" in r.stdout and "unlimited" in r.stdout
    r = suite.mailctl("abort")
    held.close()
    assert r.returncode == 0, r.stderr
    assert until(lambda: proc_pids_of(suite.root) == [], 5)


def test_init_writes_a_runnable_instance(tmp_path):
    base = init_port_base()
    root = tmp_path / "inst"
    r = subprocess.run([str(MAILCTL), "init", str(root), "--port-base", str(base)],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    main = (root / "etc" / "main.cf").read_text()
    assert f"queue_directory = {root}/spool" in main
    assert f"daemon_directory = {MAILCTL.parent}" in main
    assert "inet_interfaces = 127.0.0.1" in main and "compatibility_level = 3.6" in main
    master = (root / "etc" / "master.cf").read_text()
    assert f"\n{base + 525} " in master and f"\n{base + 143} " in master
    assert str(root / "etc" / "main.cf") in r.stdout
    again = subprocess.run([str(MAILCTL), "init", str(root)], capture_output=True, text=True, timeout=10)
    assert again.returncode == 1 and "exists" in again.stderr
    etc = str(root / "etc")
    try:
        r = subprocess.run([str(MAILCTL), "-c", etc, "start"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert oct((root / "spool" / "maildrop").stat().st_mode & 0o7777) == "0o730"
        assert oct((root / "spool" / "public").stat().st_mode & 0o7777) == "0o710"
        assert (root / "spool" / "public" / "cleanup").exists()
        assert oct((root / "spool" / "private" / "local").stat().st_mode & 0o777) == "0o600"
        st = subprocess.run([str(MAILCTL), "-c", etc, "status"], capture_output=True, text=True, timeout=10)
        assert st.returncode == 0 and "qmgr/unix" in st.stdout
        fl = subprocess.run([str(MAILCTL), "-c", etc, "flush"], capture_output=True, text=True, timeout=10)
        assert fl.returncode == 0, fl.stderr
        r = subprocess.run([str(MAILCTL), "-c", etc, "stop"], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    finally:
        subprocess.run([str(MAILCTL), "-c", etc, "stop"], capture_output=True, timeout=30)
        for p in proc_pids_of(root):
            os.kill(p, signal.SIGKILL)


def _rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def test_idle_rss(suite):
    (a,) = free_ports(1)
    suite.write_main()
    suite.write_master(f"{a} inet n - n - - oxipost-testd\n")
    master = suite.start()
    worker, _ = suite.ask(a)
    time.sleep(0.3)
    m, w = _rss_kb(master), _rss_kb(worker)
    print(f"\nidle RSS: master {m} kB, idle oxipost-testd worker {w} kB (debug build)")
    assert m > 0 and w > 0


def test_wakeup_timer_starts_timer_service(suite):
    suite.write_main()
    suite.write_master("tick unix n - n 1 1 oxipost-testd\nfifo fifo n - n - 1 oxipost-testd\n")
    suite.start()
    # Nobody connects: only master's wakeup (a connection and "W") starts a worker.
    assert until(lambda: "service tick/unix total 1" in (suite.data / "master.status").read_text(), 5)
    assert oct((suite.spool / "public" / "fifo").stat().st_mode & 0o777) == "0o622"


def test_suite_scripts(tmp_path):
    root = tmp_path / "s"
    base = init_port_base()
    scripts = Path(__file__).resolve().parents[2] / "scripts"
    try:
        r = subprocess.run(["sh", str(scripts / "suite-start.sh"), str(root), str(base)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"{root}/etc"
        st = subprocess.run([str(MAILCTL), "-c", f"{root}/etc", "status"],
                            capture_output=True, text=True, timeout=10)
        assert st.returncode == 0 and f"{base + 525}/inet" in st.stdout
        r = subprocess.run(["sh", str(scripts / "suite-stop.sh"), str(root)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert until(lambda: proc_pids_of(root) == [], 5)
    finally:
        subprocess.run([str(MAILCTL), "-c", f"{root}/etc", "stop"], capture_output=True, timeout=30)
        for p in proc_pids_of(root):
            os.kill(p, signal.SIGKILL)


def test_worker_gets_protocol_argv_env_and_fds(suite):
    a, b = free_ports(2)
    suite.write_main("inet_protocols = all\ninet_interfaces = loopback-only\n")
    suite.write_master(
        f"{a} inet n - y - - oxipost-testd -o max_use=5 -o {{ x = a b }} extra\n"
        f"127.0.0.1:{b} inet n n n - - oxipost-testd\n"
    )
    suite.start()
    pid, _ = suite.ask(a)
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    root = os.geteuid() == 0
    want = [b"oxipost-testd", b"-n", str(a).encode(), b"-t", b"inet"]
    want += [b"-u", b"-r"] if root else []
    want += [b"-o", b"max_use=5", b"-o", b"x=a b", b"extra"]
    assert argv == want
    env = dict(
        kv.split(b"=", 1) for kv in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0") if b"=" in kv
    )
    v6 = socket.has_ipv6 and Path("/proc/net/if_inet6").exists()
    assert env[b"MAIL_CONFIG"] == str(suite.etc).encode()
    assert env[b"OXIPOST_LISTEN_FDS"] == (b"2" if v6 else b"1")
    assert env[b"OXIPOST_GENERATION"] == b"1"
    fds = {int(n): os.readlink(f"/proc/{pid}/fd/{n}") for n in os.listdir(f"/proc/{pid}/fd")}
    assert fds[3].startswith("pipe:") and fds[4].startswith("pipe:") and fds[5].startswith("socket:")
    # Nothing else of master's leaks into the worker (0-2, protocol fds, its own client).
    assert max(fds) <= 5 + int(env[b"OXIPOST_LISTEN_FDS"]) + 2, fds
    if v6:
        with socket.create_connection(("::1", a), timeout=10) as s:
            assert s.makefile().readline().split()[1] == str(a)
    # host:port binds that host only; unprivileged "n" means no -u.
    pid_b, _ = suite.ask(b)
    argv_b = Path(f"/proc/{pid_b}/cmdline").read_bytes().split(b"\0")
    assert b"-u" not in argv_b
    if v6:
        try:
            socket.create_connection(("::1", b), timeout=2).close()
            raise AssertionError("listening on ::1 too")
        except ConnectionRefusedError:
            pass
