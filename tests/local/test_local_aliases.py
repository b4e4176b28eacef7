"""local(8) as root with alias_maps (issue 5): alias commands and files run as
default_privs, .forward is read with the user's rights, and forwarded copies are queued
in incoming/ with the owner- sender. The unprivileged end-to-end tests are in
tests/aliases."""

import os
import subprocess

import pytest

from conftest import BIN

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


@needs_root
def test_alias_destinations_as_root(start_local, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    os.chmod(out, 0o777)
    aliases = tmp_path / "aliases"
    aliases.write_text(
        f'list: alice, "|id -un > {out}/user.txt; cat > {out}/msg.txt", {out}/file.mbox, x@remote.test\n'
        "owner-list: alice\n")
    r = subprocess.run([str(BIN / "postalias"), f"hash:{aliases}"], capture_output=True, timeout=30)
    assert r.returncode == 0, r
    agent = start_local(alias_maps=f"hash:{aliases}", mail_owner="root", myorigin="example.org")
    (agent.queue / "incoming").mkdir(exist_ok=True)
    _, results = agent.deliver("bob@remote.test", ["list@example.org"], b"Subject: l\r\n\r\nto the list\r\n")
    assert results[0]["outcome"] == "delivered", results
    assert (out / "user.txt").read_text().strip() == "nobody"
    assert "to the list" in (out / "msg.txt").read_text()
    assert os.stat(out / "file.mbox").st_uid != 0
    assert "forwarded as" in results[0]["text"]
    queued = [p for p in (agent.queue / "incoming").rglob("*") if p.is_file() and not p.name.startswith(".")]
    # The original (written by the fixture) and the forwarded copy.
    dumps = [subprocess.run([str(BIN / "postcat"), str(p)], capture_output=True, text=True, timeout=30).stdout
             for p in queued]
    forwarded = [d for d in dumps if "owner-list@example.org" in d]
    assert len(queued) == 2 and len(forwarded) == 1, dumps
    assert "x@remote.test" in forwarded[0] and "Delivered-To: list@example.org" in forwarded[0]
    assert list((agent.home / "alice" / "Maildir" / "new").iterdir())
