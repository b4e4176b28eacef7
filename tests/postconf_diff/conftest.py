"""Prints the comparisons the postconf differential test skipped."""


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    try:
        from test_postconf_diff import SKIPPED
    except ImportError:  # imported under another name (rootdir/package layout)
        import sys

        mod = next((m for n, m in sys.modules.items() if n.endswith("test_postconf_diff")), None)
        SKIPPED = getattr(mod, "SKIPPED", [])
    if not SKIPPED:
        return
    tr = terminalreporter
    tr.section("postconf_diff: skipped comparisons")
    unknown = sorted({n for c, n, r in SKIPPED if r.startswith("ours does not know")})
    if unknown:
        tr.write_line(f"parameters Postfix knows but ours does not ({len(unknown)}): {' '.join(unknown)}")
    for case, name, reason in SKIPPED:
        if not reason.startswith("ours does not know"):
            tr.write_line(f"{case}: {name}: {reason}")
