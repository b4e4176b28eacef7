"""Every program of the suite has a manual page in man/ and answers --help with exit 0,
and the configuration files have theirs (main.cf is postconf(5), master.cf master(5))."""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("OXIPOST_BIN", REPO / "target" / "debug"))
# Test-only helpers, not programs of the suite.
NOT_PROGRAMS = {"oxipost-testd", "mkqueue"}


def programs():
    meta = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
    )
    names = set()
    for pkg in json.loads(meta.stdout)["packages"]:
        for t in pkg["targets"]:
            if "bin" in t["kind"] and t["name"] not in NOT_PROGRAMS:
                names.add(t["name"])
    return sorted(names)


PROGRAMS = programs()


def test_there_are_programs():
    assert {"master", "mailctl", "postconf", "smtpd", "qmgr", "local"} <= set(PROGRAMS)


@pytest.mark.parametrize("name", PROGRAMS)
def test_program_has_man_page_and_help(name):
    pages = [p for p in (REPO / "man").glob(f"{name}.[1-8]")]
    assert pages, f"man/{name}.N is missing"
    exe = BIN / name
    assert exe.exists(), f"{exe} not built"
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=10,
                       stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, (name, r.stdout[-500:], r.stderr[-500:])
    assert (r.stdout + r.stderr).strip(), f"{name} --help printed nothing"


@pytest.mark.parametrize("page", ["postconf.5", "master.5"])
def test_configuration_pages(page):
    assert (REPO / "man" / page).stat().st_size > 1000
