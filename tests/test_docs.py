"""The README tells the truth about commands and configuration."""
from __future__ import annotations

import pathlib
import re

from flask import Flask

from flask_gosession.registry import BUILTINS, resolve
from flask_gosession.settings import DEFAULTS

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    command = ci[-1]
    assert command.startswith("python3 -m venv .venv")
    assert f"\n{command}\n" in README


def test_config_table_lists_every_key():
    documented = set(re.findall(r"^\| `(GOSESSION_[A-Z_]+)` \|", README, re.M))
    keys = set(DEFAULTS)
    app = Flask(__name__)
    for name in BUILTINS:
        try:
            keys.update(resolve(name).config_defaults(app))
        except Exception:  # a missing optional client library
            continue
    assert keys - documented == set()
    assert documented - keys == set()
