"""The README and the documentation tell the truth about commands and
configuration, and the documentation site builds with warnings as errors.

The configuration tables of ``docs/`` are generated from the code
(``docs/_ext/settings_table.py``): every setting has a one-line description
in code, and no description outlives its setting. The README points to
that page instead of carrying a table of its own, and every ``GOSESSION_*``
name the README or a docs page mentions is a setting the code reads.
"""
from __future__ import annotations

import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest
from flask import Flask

from flask_gosession import settings
from flask_gosession.registry import BUILTINS, resolve
from flask_gosession.settings import DEFAULTS

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"

#: ``GOSESSION_*`` environment variables of the test suite and the
#: benchmarks, which the docs mention and the extension does not read.
NOT_SETTINGS = re.compile(r"GOSESSION_(TEST|BENCH)_[A-Z0-9_]+")
#: Names the docs use as examples: a third-party provider's key and the
#: misspelling the unknown-key warning catches.
EXAMPLES = {"GOSESSION_DYNAMO_TABLE", "GOSESSION_MAX_LIFETME"}


def settings_table():
    """``docs/_ext/settings_table.py``, the rows the docs render (imported
    by path: it is not part of the package)."""
    spec = importlib.util.spec_from_file_location(
        "settings_table", DOCS / "_ext" / "settings_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def every_key() -> set[str]:
    """The core keys and every built-in provider's (all extras installed)."""
    keys = set(DEFAULTS)
    app = Flask(__name__)
    for name in BUILTINS:
        keys.update(resolve(name).config_defaults(app))
    return keys


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    command = ci[-1]
    assert command.startswith("python3 -m venv .venv")
    assert f"\n{command}\n" in README


def test_ci_builds_the_docs_with_warnings_as_errors():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    builds = [n for n, line in enumerate(ci) if line.startswith(".venv/bin/sphinx-build ")]
    assert builds, "no sphinx-build step in .ci/run"
    line = ci[builds[0]]
    assert " -W " in line and " docs " in line
    assert builds[0] < len(ci) - 1, "the README's test command must stay the last line"


def test_every_setting_has_a_description():
    table = settings_table()
    rows = [row for section in table.sections() for row in table.rows(section)]
    undescribed = sorted({row.key for row in rows if not row.description})
    assert undescribed == []
    # The rows cover every key the code reads, core and providers.
    assert {row.key for row in rows} == every_key()


def test_no_description_outlives_its_setting():
    stale = set(settings.DESCRIPTIONS) - set(DEFAULTS)
    app = Flask(__name__)
    for name in BUILTINS:
        provider = resolve(name)
        stale |= set(provider.config_descriptions) - set(provider.config_defaults(app))
    assert stale == set()


def test_configuration_page_renders_every_section():
    page = (DOCS / "configuration.md").read_text()
    rendered = re.findall(r"^```\{gosession-config\} (\S+)$", page, re.M)
    assert sorted(rendered) == sorted(settings_table().sections())


def test_readme_points_to_the_generated_table():
    section = README.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    assert "(docs/configuration.md)" in section
    # No hand-written table to drift: the docs page is the only one.
    assert not re.search(r"^\| `GOSESSION_", README, re.M)


def test_every_setting_the_docs_name_exists():
    keys = every_key()
    sources = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    unknown = {}
    for path in sources:
        if "_build" in path.parts:
            continue
        text = NOT_SETTINGS.sub("", path.read_text())
        for name in re.findall(r"(?<![A-Z0-9_])GOSESSION_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_*])", text):
            if name not in keys | EXAMPLES:
                unknown.setdefault(name, path.relative_to(ROOT).as_posix())
    assert unknown == {}


def test_readme_links_into_the_docs_resolve():
    links = re.findall(r"\]\((docs/[^)#]+)(?:#[^)]*)?\)", README)
    assert len(links) >= 10
    for link in links:
        assert (ROOT / link).is_file(), link


def test_migrating_page_includes_the_readme_section():
    start, end = "<!-- migrating:start -->", "<!-- migrating:end -->"
    assert README.count(start) == 1 and README.count(end) == 1
    section = README.split("\n## Migrating to flask-gosession\n", 1)[1].split("\n## ", 1)[0]
    assert start in section and end in section
    assert section.index(start) < section.index(end)
    page = (DOCS / "migrating.md").read_text()
    assert f":start-after: {start}\n" in page and f":end-before: {end}\n" in page


def _missing_docs_packages() -> list[str]:
    return [name for name in ("sphinx", "myst_parser", "furo")
            if importlib.util.find_spec(name) is None]


def test_sphinx_build_with_warnings_as_errors(tmp_path):
    """The site builds with ``-W`` (the build needs no network: no
    intersphinx), and the configuration page lists every key."""
    missing = _missing_docs_packages()
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the [docs] extra is not installed ({', '.join(missing)}) and CI=true")
        pytest.skip(f"the [docs] extra is not installed: {', '.join(missing)}")
    out = tmp_path / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         "-d", str(tmp_path / "doctrees"), str(DOCS), str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    page = (out / "configuration.html").read_text()
    for key in every_key():
        assert f">{key}<" in page, key
