"""The packaging metadata tells the truth, and the sdist carries its tests'
needs. Cheap checks that build nothing (``.ci/check-sdist`` builds the sdist
and runs the tests it ships):

- MANIFEST.in ships every file the tests use (``example/``, ``benchmarks/``,
  the test support modules, the README and CI script they read) and prunes
  local junk; it is read with setuptools' own ``FileList``, as the sdist
  build reads it;
- LICENSE is the BSD-3-Clause text that setup.cfg declares;
- the classifiers list exactly the Python versions ``python_requires`` admits,
  and the linters target the oldest of them;
- ``py.typed`` ships, and the README names every extra.
"""
from __future__ import annotations

import configparser
import importlib.resources
import pathlib
import re

import pytest
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = pathlib.Path(__file__).resolve().parent.parent

#: Trees the tests import from, run or read, shipped whole.
SHIPPED_TREES = ("tests", "example", "benchmarks", "docs", ".ci")
#: Top-level files the sdist carries beyond setuptools' defaults.
SHIPPED_FILES = ("LICENSE", "README.md", "CHANGELOG.md", "ruff.toml", "MANIFEST.in")
#: Where tests write output (never shipped, never a test's input).
OUTPUTS = ("test-artifacts",)


def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "setup.cfg", encoding="utf-8")
    return parser


def lines(value: str) -> list[str]:
    return [line.strip() for line in value.strip().splitlines() if line.strip()]


def manifest(root: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The files below ``root`` that its MANIFEST.in selects, as posix paths
    relative to ``root`` (setuptools resolves the template from the cwd)."""
    from setuptools.command.egg_info import FileList

    monkeypatch.chdir(root)
    files = FileList()
    for line in (root / "MANIFEST.in").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            files.process_template_line(line)
    return {pathlib.PurePath(name).as_posix() for name in files.files}


def is_junk(path: pathlib.Path) -> bool:
    parts = path.relative_to(ROOT).parts
    return (any(part == "__pycache__" or (part.startswith(".") and part != ".ci")
                for part in parts)
            or parts[:2] == ("docs", "_build")
            or path.suffix in (".pyc", ".pyo"))


def test_manifest_ships_the_trees_the_tests_use(monkeypatch):
    shipped = manifest(ROOT, monkeypatch)
    wanted = {name for name in SHIPPED_FILES}
    for tree in SHIPPED_TREES:
        found = [p for p in (ROOT / tree).rglob("*") if p.is_file() and not is_junk(p)]
        assert found, tree
        wanted.update(p.relative_to(ROOT).as_posix() for p in found)
    assert wanted - shipped == set()


def _installed_elsewhere(module: str) -> bool:
    """A module run with ``-m`` that is an installed package (``flask``,
    ``pytest``), not a directory of this repository."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    origin = spec.origin if spec is not None else None
    return origin is not None and "site-packages" in pathlib.Path(origin).parts


def test_files_the_tests_name_are_shipped(monkeypatch):
    """Every repository path a test reads (``ROOT / "example" / "app.py"``,
    ``parent.parent / ...``) or module it runs (``-m benchmarks``) ships."""
    named: set[str] = set()
    path_literal = re.compile(r'(?:\bROOT|\.parent\.parent)((?:\s*/\s*"[^"]+")+)')
    for test in (ROOT / "tests").glob("*.py"):
        source = test.read_text()
        for match in path_literal.finditer(source):
            named.add("/".join(re.findall(r'"([^"]+)"', match.group(1))))
        named.update(m for m in re.findall(r'"-m",\s*"(\w+)"', source) if not _installed_elsewhere(m))
    # The scan still sees what the tests use today (else it proves nothing).
    assert {"example/app.py", "benchmarks", "README.md", ".ci/run"} <= named
    shipped = manifest(ROOT, monkeypatch)
    for name in sorted(named):
        if name.split("/")[0] in OUTPUTS:
            continue
        path = ROOT / name
        assert path.exists(), name
        files = [path] if path.is_file() else [p for p in path.rglob("*")
                                                if p.is_file() and not is_junk(p)]
        for file in files:
            assert file.relative_to(ROOT).as_posix() in shipped, (name, file)


def test_manifest_prunes_local_junk(tmp_path, monkeypatch):
    (tmp_path / "MANIFEST.in").write_text((ROOT / "MANIFEST.in").read_text())
    real = ["LICENSE", "README.md", "tests/test_x.py", "tests/backends/x.py",
            "example/app.py", "example/templates/base.html", "benchmarks/__main__.py",
            "docs/benchmarks.md", ".ci/run"]
    junk = [".venv/bin/python", ".venv/lib/site.py", "tests/__pycache__/x.cpython-311.pyc",
            "benchmarks/__pycache__/run.cpython-311.pyc", "example/stray.pyc",
            "test-artifacts/browser/login.png", ".hypothesis/examples/ab/cd",
            ".pytest_cache/v/cache/lastfailed", "build/lib/flask_gosession/ids.py",
            "dist/flask_gosession-0.1.0.tar.gz", "docs/_build/html/index.html"]
    for name in real + junk:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    shipped = manifest(tmp_path, monkeypatch)
    assert set(real) <= shipped
    assert shipped & set(junk) == set()


def test_license_is_the_declared_bsd_3_clause():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License\n")
    assert "Copyright (c) 2026, the flask-gosession authors" in text
    for clause in ("1. Redistributions of source code must retain",
                   "2. Redistributions in binary form must reproduce",
                   "3. Neither the name of the copyright holder",
                   'PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS"'):
        assert clause in text
    metadata = setup_cfg()["metadata"]
    assert metadata["license"] == "BSD-3-Clause"
    assert lines(metadata["license_files"]) == ["LICENSE"]
    assert "License :: OSI Approved :: BSD License" in lines(metadata["classifiers"])


def test_classifiers_list_exactly_the_pythons_python_requires_admits():
    config = setup_cfg()
    spec = SpecifierSet(config["options"]["python_requires"])
    classifiers = lines(config["metadata"]["classifiers"])
    listed = sorted(int(m.group(1)) for c in classifiers
                    if (m := re.fullmatch(r"Programming Language :: Python :: 3\.(\d+)", c)))
    assert listed, "no Python version classifiers"
    low, high = listed[0], listed[-1]
    assert listed == list(range(low, high + 1)), "a gap in the listed versions"
    assert all(Version(f"3.{minor}") in spec for minor in listed)
    assert Version(f"3.{low - 1}") not in spec, "python_requires admits an unlisted older Python"
    assert "Programming Language :: Python :: 3 :: Only" in classifiers
    # The linters check against the oldest Python we promise.
    assert re.search(rf'^target-version = "py3{low}"$', (ROOT / "ruff.toml").read_text(), re.M)
    assert config["mypy"]["python_version"] == f"3.{low}"


def test_py_typed_ships():
    assert (ROOT / "flask_gosession" / "py.typed").is_file()
    package_data = setup_cfg()["options.package_data"]
    assert "py.typed" in lines(package_data["flask_gosession"])
    # And the installed package (editable or not) carries it.
    assert importlib.resources.files("flask_gosession").joinpath("py.typed").is_file()
    assert "Typing :: Typed" in lines(setup_cfg()["metadata"]["classifiers"])


def test_readme_names_every_extra():
    readme = (ROOT / "README.md").read_text()
    assert "\n## Installing\n" in readme
    section = readme.split("\n## Installing\n", 1)[1].split("\n## ", 1)[0]
    for extra in setup_cfg()["options.extras_require"]:
        assert f"`[{extra}]`" in section, extra
