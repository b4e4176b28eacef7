"""Differential test: Postfix's postconf(1) versus oxipost's postconf.

Each ``cases/NN-name.cf`` is copied to a private config directory as
``main.cf`` (with ``cases/NN-name.master.cf`` as ``master.cf`` if present,
else an empty master.cf) and both programs are run on it:

* ``postconf -c DIR -n``                  stdout and exit status;
* ``postconf -c DIR -h NAME``             for every parameter named in the case;
* ``postconf -c DIR -x -h NAME``          idem, expanded;
* ``postconf -c DIR ARGS...``             for each line of ``cases/NN-name.edits``
                                          (e.g. ``-e 'a = b'``), then the
                                          resulting main.cf bytes must be equal;
* for the cases in WARN_CASES, the set of warnings (kind, name) from ``-n``.

Comparison rule for one command: if Postfix exits 0, ours must exit 0 with the
same stdout; if Postfix fails, ours must fail too (text not compared), and if
Postfix's message names ``main.cf, line N``, ours must name main.cf and N.

Names compared: names defined in the case, names referenced with ``$name``,
``${name...}``, ``$(name)``, and names listed on a ``# diff-query: a b`` line;
or, if the case has a ``# diff-names: a b`` line, exactly those names.
A name Postfix knows (``postconf -d NAME``) but ours does not is skipped and
listed at the end of the run.  Names Postfix does not know (user-defined
parameters) are compared as they are: Postfix prints them only when a known
parameter refers to them.

Edits file format: one postconf invocation per line, shell-quoted arguments
after ``postconf -c DIR``; blank lines and ``#`` lines ignored.  Postfix appends
*new* names in hash-table order, which is random per run: add at most one new
name per invocation.

Environment: OXIPOST_BIN = directory holding our ``postconf`` (default
<repo>/target/debug).  POSTFIX_POSTCONF overrides /usr/sbin/postconf.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CASES_DIR = HERE / "cases"
POSTFIX = os.environ.get("POSTFIX_POSTCONF", "/usr/sbin/postconf")
OURS = str(Path(os.environ.get("OXIPOST_BIN", REPO / "target" / "debug")) / "postconf")
TIMEOUT = 10

# Differences we accept on purpose. Keys are parameter names (the comparison of
# a name is skipped when its value depends on that parameter's *default*, i.e.
# the parameter is not set in the case's main.cf) or case names (the whole case
# is skipped). Every entry needs a reason.
INTENDED = {
    "queue_directory": "installation path: oxipost's layout, not Debian Postfix's",
    "daemon_directory": "installation path: oxipost's layout, not Debian Postfix's",
    "command_directory": "installation path: oxipost's layout, not Debian Postfix's",
    "data_directory": "installation path: oxipost's layout, not Debian Postfix's",
    "meta_directory": "installation path: oxipost's layout, not Debian Postfix's",
    "shlib_directory": "installation path: oxipost's layout, not Debian Postfix's",
    "manpage_directory": "installation path: oxipost's layout, not Debian Postfix's",
    "sample_directory": "installation path: oxipost's layout, not Debian Postfix's",
    "readme_directory": "installation path: oxipost's layout, not Debian Postfix's",
    "html_directory": "installation path: oxipost's layout, not Debian Postfix's",
    "sendmail_path": "installation path: oxipost's layout, not Debian Postfix's",
    "newaliases_path": "installation path: oxipost's layout, not Debian Postfix's",
    "mailq_path": "installation path: oxipost's layout, not Debian Postfix's",
    "mail_version": "our version number, not Postfix's 3.7.11",
    "fallback_relay": "legacy name: Postfix 3.7 expands $fallback_relay in smtp_fallback_relay's default without listing it; ours declares it (empty) so that the default expands",
    "mail_release_date": "our release date, not Postfix's",
    "compatibility_level": "built-in default chosen by oxipost (Postfix 3.7 says 0)",
    "process_id": "differs on every run, even between two Postfix runs",
    "mynetworks": "default computed from the host's interfaces (mynetworks_style)",
    "mail_name": "product name: oxipost's default is \"oxipost\" (crates/config/src/params.rs)",
    "config_directory": "installation path (-d only: with -c DIR both say DIR, and that is compared)",
    "mail_owner": "oxipost runs as its own user, not postfix",
    "setgid_group": "oxipost's own group (oxidrop), not postdrop",
    "enable_long_queue_ids": "oxipost always uses long queue ids (params.rs)",
    "smtpd_sasl_type": "oxipost has its own SASL service, default type oxipost (params.rs)",
    "smtpd_sasl_path": "goes with smtpd_sasl_type = oxipost: a socket path, not a Cyrus app name",
    "auth_passdb": "oxipost's auth service (issue 8): Postfix has no auth daemon of its own",
    "auth_mechanisms": "oxipost's auth service (issue 8)",
    "auth_failure_delay": "oxipost's auth service brute-force delay (issue 8)",
    "auth_failure_limit": "oxipost's auth service brute-force limit (issue 8)",
    "auth_failure_window": "oxipost's auth service brute-force window (issue 8)",
    "pop3d_timeout": "oxipost's pop3d (issue 9): Postfix has no POP3 server",
    "pop3d_tls_security_level": "oxipost's pop3d (issue 9): Postfix has no POP3 server",
    "pop3d_tls_cert_file": "oxipost's pop3d (issue 9): Postfix has no POP3 server",
    "pop3d_tls_key_file": "oxipost's pop3d (issue 9): Postfix has no POP3 server",
    "pop3d_tls_protocols": "oxipost's pop3d (issue 9): Postfix has no POP3 server",
    "pop3d_tls_wrappermode": "oxipost's pop3d (issue 9): Postfix has no POP3 server",
    "pop3d_login_attempts": "oxipost's pop3d (issue 9): Postfix has no POP3 server",
    "pop3d_client_connection_limit": "oxipost's pop3d (issue 9): Postfix has no POP3 server",
    "pop3d_user_connection_limit": "oxipost's pop3d (issue 9): Postfix has no POP3 server",
    "pop3d_command_length_limit": "oxipost's pop3d (issue 9): Postfix has no POP3 server",
    "imapd_timeout": "oxipost's imapd (issue 10): Postfix has no IMAP server",
    "imapd_tls_security_level": "oxipost's imapd (issue 10): Postfix has no IMAP server",
    "imapd_tls_cert_file": "oxipost's imapd (issue 10): Postfix has no IMAP server",
    "imapd_tls_key_file": "oxipost's imapd (issue 10): Postfix has no IMAP server",
    "imapd_tls_protocols": "oxipost's imapd (issue 10): Postfix has no IMAP server",
    "imapd_tls_wrappermode": "oxipost's imapd (issue 10): Postfix has no IMAP server",
    "imapd_login_attempts": "oxipost's imapd (issue 10): Postfix has no IMAP server",
    "imapd_command_length_limit": "oxipost's imapd (issue 10): Postfix has no IMAP server",
    "imapd_literal_size_limit": "oxipost's imapd (issue 10): Postfix has no IMAP server",
    "imapd_client_limit": "oxipost's imapd (issue 10): Postfix has no IMAP server",
    "imapd_max_userip_connections": "oxipost's imapd (issue 10): Postfix has no IMAP server",
    "imapd_client_connection_limit": "oxipost's imapd (issue 10): Postfix has no IMAP server",
    "imapd_mail_location": "oxipost's imapd (issue 10): Postfix has no IMAP server",
    "pop3d_client_limit": "oxipost's pop3d (issue 9): Postfix has no POP3 server",
    "pop3d_mail_location": "oxipost's pop3d (issue 9): Postfix has no POP3 server",
    "local_users": "oxipost extension, not in Postfix (params.rs)",
    "local_home_base": "oxipost extension, not in Postfix (params.rs)",
    "virtual_maps": "old name of virtual_alias_maps, kept by oxipost, gone from Postfix 3.7's table",
    "oxipost_dns_servers": "oxipost extension: where the resolver sends queries (tests point it at a loopback server)",
    "alias_maps": "oxipost has no NIS client: the default drops nis:mail.aliases",
    "65-edit-no-final-newline": "Postfix appends `-e` settings onto an unterminated last line "
    "(joining them to it, which can swallow the setting into a comment); oxipost starts a new line",
}

# Cases whose `-n` warnings are compared as a set of (kind, name).
WARN_CASES = {
    "27-undefined-ref",
    "28-unknown-params",
    "29-user-defined-referenced",
    "07-duplicate-last-wins",
    "47-leading-whitespace-first",
    "57-master-cf-service",
    "78-dollar-dollar-not-a-reference",
}

# (case, name, reason) collected during the run; printed by conftest.py.
SKIPPED: list[tuple[str, str, str]] = []

NAME_RE = re.compile(r"\$(?:\{|\()?([A-Za-z0-9_]+)")
LINE_RE = re.compile(r"main\.cf, line (\d+)")


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAIL_")}
    env["LANG"] = env["LC_ALL"] = "C"
    return env


ENV = _clean_env()


@dataclass
class Result:
    argv: list[str]
    rc: int
    out: str
    err: str
    outb: bytes = b""

    def show(self) -> str:
        return f"rc={self.rc} stdout={self.out!r} stderr={self.err.strip()[-300:]!r}"


def run(prog: str, args: list[str]) -> Result:
    argv = [prog, *args]
    try:
        p = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, env=ENV, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        pytest.fail(f"timeout ({TIMEOUT} s): {shlex.join(argv)}")
    return Result(argv, p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"),
                  p.stdout)


def logical_lines(text: str) -> list[str]:
    """main.cf logical lines, Postfix-style (comments/blank lines skipped)."""
    out: list[str] = []
    for raw in text.splitlines():
        s = raw.strip()
        if not s or s.startswith("#"):
            continue
        if raw[:1].isspace():
            if out:
                out[-1] += " " + s
            continue
        out.append(s)
    return out


def defined_names(text: str) -> list[str]:
    names = []
    for line in logical_lines(text):
        if "=" in line:
            n = line.split("=", 1)[0].strip()
            if n and " " not in n and "\t" not in n:
                names.append(n)
    return names


def case_names(text: str) -> list[str]:
    m = re.search(r"^#\s*diff-names:(.*)$", text, re.M)
    if m:  # an explicit list replaces the automatic one
        return sorted(set(m.group(1).split()))
    names = set(defined_names(text))
    for line in logical_lines(text):
        value = line.split("=", 1)[1] if "=" in line else ""
        names.update(NAME_RE.findall(value.replace("$$", "")))
    for m in re.finditer(r"^#\s*diff-query:(.*)$", text, re.M):
        names.update(m.group(1).split())
    return sorted(n for n in names if re.fullmatch(r"[A-Za-z0-9_]+", n))


def parse_assignments(out: str) -> dict[str, str]:
    d = {}
    for line in out.splitlines():
        if " = " in line or line.endswith(" ="):
            k, _, v = line.partition(" =")
            d[k.strip()] = v[1:] if v.startswith(" ") else v
    return d


def warning_set(err: str) -> set[tuple[str, str]]:
    ws = set()
    for line in err.splitlines():
        m = re.search(r"\bwarning: (.*)$", line)
        if not m:
            continue
        msg = re.sub(r"^/\S*: ", "", m.group(1))  # drop "FILE: "
        for kind, pat in (
            ("undefined", r"undefined parameter: (\S+)"),
            ("unused", r"unused parameter: ([^=\s]+)="),
            ("unknown", r"^(\S+): unknown parameter"),
            ("multiple", r'multiple entries for "([^"]*)"'),
            ("leading-whitespace", r'logical line must not start with whitespace: "(.*)"'),
            ("overriding", r"overriding earlier entry: ([^=\s]+)="),
        ):
            mm = re.search(pat, msg)
            if mm:
                ws.add((kind, mm.group(1)))
                break
        else:
            ws.add(("other", msg))
    return ws


def compare(what: str, pf: Result, ours: Result, diffs: list[str]) -> None:
    if pf.rc == 0:
        if ours.rc == 0 and ours.outb != pf.outb and ours.out == pf.out:
            diffs.append(f"{what}: stdout bytes differ: expected {pf.outb!r}\n      got {ours.outb!r}")
        elif ours.rc == 0 and ours.out != pf.out and pf.out.count("\n") > 2:
            delta = [ln for ln in difflib.unified_diff(pf.out.splitlines(), ours.out.splitlines(), lineterm="", n=0)
                     if ln[:1] in "+-" and ln[:3] not in ("---", "+++")]
            diffs.append(f"{what}: stdout differs (-expected +got):\n      " + "\n      ".join(delta))
        elif ours.rc != 0 or ours.outb != pf.outb:
            diffs.append(f"{what}: expected {pf.show()}\n      got {ours.show()}")
        return
    if ours.rc == 0:
        diffs.append(f"{what}: expected failure ({pf.err.strip().splitlines()[-1:]}), got {ours.show()}")
        return
    m = LINE_RE.search(pf.err)
    if m:
        n = m.group(1)
        if "main.cf" not in ours.err or not re.search(rf"(?<!\d){n}(?!\d)", ours.err):
            diffs.append(f"{what}: both fail, but ours does not name main.cf and line {n}: {ours.err.strip()!r}")


CASES = sorted(p.stem for p in CASES_DIR.glob("*.cf") if not p.name.endswith(".master.cf"))


def programs() -> tuple[str, str]:
    if not os.access(POSTFIX, os.X_OK):
        pytest.skip(f"Postfix's postconf not installed at {POSTFIX} (run scripts/install-test-deps.sh)")
    if not os.access(OURS, os.X_OK):
        pytest.fail(f"our postconf not found at {OURS} (cargo build -p oxipost-postconf, or set OXIPOST_BIN)")
    return POSTFIX, OURS


def make_dir(base: Path, label: str, case: str, main_cf: bytes | None = None) -> Path:
    d = base / label
    d.mkdir()
    src = CASES_DIR / f"{case}.cf"
    (d / "main.cf").write_bytes(src.read_bytes() if main_cf is None else main_cf)
    age(d / "main.cf")
    master = CASES_DIR / f"{case}.master.cf"
    if master.exists():
        shutil.copyfile(master, d / "master.cf")
    else:
        (d / "master.cf").write_bytes(b"")
    return d


def age(path: Path) -> None:
    """Postfix re-reads a main.cf modified less than a second ago, sleeping
    0.3 s each time, until it is older: back-date the file."""
    t = time.time() - 60
    os.utime(path, (t, t))


def run_all(jobs: list[tuple[str, list[str]]]) -> list[Result]:
    """Run (program, args) jobs concurrently: Postfix sleeps 1 s before
    exiting on a fatal error, so sequential runs would be slow."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(lambda j: run(*j), jobs))


def test_case_count():
    assert len(CASES) >= 45, f"only {len(CASES)} cases in {CASES_DIR}"


@pytest.mark.parametrize("case", CASES)
def test_postconf(case: str, tmp_path: Path) -> None:
    pf_prog, our_prog = programs()
    if case in INTENDED:
        SKIPPED.append((case, "*", INTENDED[case]))
        pytest.skip(INTENDED[case])
    text = (CASES_DIR / f"{case}.cf").read_text(encoding="utf-8", errors="replace")
    diffs: list[str] = []
    names = case_names(text)
    # -c DIR sets config_directory for both: its INTENDED entry concerns -d only.
    defined = set(defined_names(text)) | {"config_directory"}

    # Read-only commands: both programs on the same directory, concurrently.
    cfg = make_dir(tmp_path, "cfg", case)
    original = (cfg / "main.cf").read_bytes()
    c = ["-c", str(cfg)]

    # Which names each side knows: -d on an empty main.cf (+ the case's master.cf).
    known = make_dir(tmp_path, "known", case, b"")
    jobs = [(pf_prog, ["-c", str(known), "-d", *names]), (our_prog, ["-c", str(known), "-d", *names])] if names else []
    jobs += [(pf_prog, [*c, "-n"]), (our_prog, [*c, "-n"])]
    h_names = [n for n in names if not (n in INTENDED and n not in defined)]
    for n in h_names:
        jobs += [(pf_prog, [*c, "-h", n]), (our_prog, [*c, "-h", n])]
    # -x -h too, in the same round (compared below unless INTENDED says no).
    for n in h_names:
        jobs += [(pf_prog, [*c, "-x", "-h", n]), (our_prog, [*c, "-x", "-h", n])]
    results = iter(run_all(jobs))
    pf_known: set[str] = set()
    our_known: set[str] = set()
    if names:
        pf_known = set(parse_assignments(next(results).out))
        our_known = set(parse_assignments(next(results).out))
    pf_n, our_n = next(results), next(results)
    raw_pf: dict[str, Result] = {}
    raw_ours: dict[str, Result] = {}
    for n in h_names:
        raw_pf[n], raw_ours[n] = next(results), next(results)
    expanded = {n: (next(results), next(results)) for n in h_names}

    compare("postconf -n", pf_n, our_n, diffs)
    if case in WARN_CASES:
        w1, w2 = warning_set(pf_n.err), warning_set(our_n.err)
        if w1 != w2:
            diffs.append(f"postconf -n warnings: expected {sorted(w1)}\n      got {sorted(w2)}"
                         f"\n      (missing {sorted(w1 - w2)}, extra {sorted(w2 - w1)})")

    def pf_raw(name: str) -> str:
        if name not in raw_pf:
            raw_pf[name] = run(pf_prog, [*c, "-h", name])
        return raw_pf[name].out.strip()

    def intended_dependency(name: str) -> str | None:
        """An INTENDED parameter whose default the value of `name` uses."""
        seen, todo = set(), [name]
        while todo:
            n = todo.pop()
            if n in seen or len(seen) > 50:
                continue
            seen.add(n)
            if n in INTENDED and n not in defined:
                return n
            todo.extend(NAME_RE.findall(pf_raw(n).replace("$$", "")))
        return None

    x_names = []
    for name in names:
        if name in pf_known and name not in our_known:
            SKIPPED.append((case, name, "ours does not know it (postconf -d)"))
            continue
        if name not in h_names:
            SKIPPED.append((case, f"-h/-x -h {name}", f"INTENDED {name}: {INTENDED[name]}"))
            continue
        compare(f"postconf -h {name}", raw_pf[name], raw_ours[name], diffs)
        dep = intended_dependency(name)
        if dep:
            SKIPPED.append((case, f"-x -h {name}", f"INTENDED {dep}: {INTENDED[dep]}"))
        else:
            x_names.append(name)
    for n in x_names:
        compare(f"postconf -x -h {n}", *expanded[n], diffs)

    if (cfg / "main.cf").read_bytes() != original:
        diffs.append("read-only commands modified main.cf")

    # Edits: separate copies, edited concurrently (the bytes -e writes do not
    # depend on the directory's path).
    edits = CASES_DIR / f"{case}.edits"
    if edits.exists():
        pf_dir = make_dir(tmp_path, "pf", case)
        our_dir = make_dir(tmp_path, "ours", case)
        for lineno, line in enumerate(edits.read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            args = shlex.split(line)
            r1, r2 = run_all([(pf_prog, ["-c", str(pf_dir), *args]), (our_prog, ["-c", str(our_dir), *args])])
            age(pf_dir / "main.cf")
            age(our_dir / "main.cf")
            what = f"edit {edits.name}:{lineno} postconf {shlex.join(args)}"
            if (r1.rc == 0) != (r2.rc == 0):
                diffs.append(f"{what}: expected rc={r1.rc}, got {r2.show()}")
            b1, b2 = (pf_dir / "main.cf").read_bytes(), (our_dir / "main.cf").read_bytes()
            if b1 != b2:
                t1, t2 = b1.decode(errors="replace"), b2.decode(errors="replace")
                if t1 == t2:
                    t1, t2 = b1, b2  # differ only in non-UTF-8 bytes: show bytes
                diffs.append(f"{what}: main.cf differs\n      expected {t1!r}\n      got      {t2!r}")
                break  # later edits would only repeat the difference

    if diffs:
        pytest.fail(f"{case}: {len(diffs)} difference(s)\n  " + "\n  ".join(diffs), pytrace=False)


def test_defaults(tmp_path: Path) -> None:
    """`postconf -d`: the default of every parameter both programs know."""
    pf_prog, our_prog = programs()
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "main.cf").write_bytes(b"")
    (d / "master.cf").write_bytes(b"")
    age(d / "main.cf")
    pf, ours = run_all([(pf_prog, ["-c", str(d), "-d"]), (our_prog, ["-c", str(d), "-d"])])
    assert pf.rc == 0, pf.show()
    assert ours.rc == 0, f"postconf -d: {ours.show()}"
    pf_d, our_d = parse_assignments(pf.out), parse_assignments(ours.out)
    diffs = []
    for name in sorted(set(pf_d) & set(our_d)):
        if name in INTENDED:
            continue
        if pf_d[name] != our_d[name]:
            diffs.append(f"postconf -d {name}: expected {pf_d[name]!r}, got {our_d[name]!r}")
    extra = sorted(set(our_d) - set(pf_d) - set(INTENDED))
    if extra:
        diffs.append(f"ours knows parameters Postfix does not: {' '.join(extra)}")
    SKIPPED.append(("test_defaults", f"{len(set(pf_d) - set(our_d))} of {len(pf_d)} Postfix parameters",
                    "ours does not implement them (not compared)"))
    if diffs:
        pytest.fail(f"{len(diffs)} difference(s) among {len(set(pf_d) & set(our_d))} shared parameters\n  "
                    + "\n  ".join(diffs), pytrace=False)
