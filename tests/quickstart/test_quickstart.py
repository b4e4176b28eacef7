"""The README's first command: scripts/quickstart.sh builds, starts the suite on
127.0.0.1, and prints a send command and where to read the mail. Run it (debug profile,
in a temporary run directory), follow its printed instructions, and stop the suite."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quickstart_prints_working_instructions():
    top = Path(tempfile.mkdtemp(prefix="oxipost-quickstart-", dir="/tmp"))
    os.chmod(top, 0o755)
    run_dir = top / "run"
    env = dict(os.environ, OXIPOST_PROFILE="debug", OXIPOST_RUN_DIR=str(run_dir))
    stop = None
    try:
        r = subprocess.run(["bash", str(REPO / "scripts/quickstart.sh")], env=env,
                           capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        out = r.stdout
        stop = re.search(r"^\s+(\S+/mailctl -c \S+ stop)$", out, re.M).group(1)
        py = re.search(r'^\s+(python3 -c ".*")$', out, re.M).group(1)
        read = re.search(r"^\s+ls (\S+/Maildir/new/)", out, re.M).group(1)
        assert "swaks --server 127.0.0.1:" in out
        s = subprocess.run(["bash", "-c", py], capture_output=True, text=True, timeout=30)
        assert s.returncode == 0, s.stderr
        deadline = time.time() + 30
        while time.time() < deadline and not (Path(read).is_dir() and any(Path(read).iterdir())):
            time.sleep(0.1)
        files = list(Path(read).iterdir())
        assert len(files) == 1, f"no mail in {read}"
        assert b"hello from oxipost" in files[0].read_bytes()
    finally:
        if stop:
            subprocess.run(["bash", "-c", stop if os.geteuid() != 0 else f"runuser -u oxipost -- {stop}"],
                           capture_output=True, timeout=60)
        # Anything of this instance still alive is killed by pid.
        for e in os.listdir("/proc"):
            if e.isdigit():
                try:
                    env_b = Path(f"/proc/{e}/environ").read_bytes()
                    cmd_b = Path(f"/proc/{e}/cmdline").read_bytes()
                except OSError:
                    continue
                if str(run_dir).encode() in env_b + cmd_b and int(e) != os.getpid():
                    try:
                        os.kill(int(e), signal.SIGKILL)
                    except OSError:
                        pass
        shutil.rmtree(top, ignore_errors=True)
