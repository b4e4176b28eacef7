"""Fixtures for the alias, .forward and notification tests: the whole-suite fixture of
tests/mailflow (a `mailctl init` instance on 127.0.0.1 high ports, run as the
unprivileged `oxipost` user when root), plus helpers to install an aliases file, submit
mail through our sendmail and read what arrived."""

import importlib.util
import os
import sys
from pathlib import Path

_here = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("mailflow_conftest_aliases", _here.parent / "mailflow" / "conftest.py")
_mf = importlib.util.module_from_spec(_spec)
sys.modules["mailflow_conftest_aliases"] = _mf
_spec.loader.exec_module(_mf)

BIN = _mf.BIN
AS_USER = _mf.AS_USER
Suite = _mf.Suite
run = _mf.run
pids_of = _mf.pids_of
suite = _mf.suite  # the fixture


def tool_env(s):
    env = dict(os.environ)
    env["MAIL_CONFIG"] = str(s.etc)
    return env
