"""Shared fixtures. pytest-flask picks up ``app`` and provides ``client``.

``backend_config`` selects the provider (memory unless a module overrides
it, for example with a parametrized fixture over every backend) and
``app_config`` adds settings for one module or test.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import typing as t

import pytest
from hypothesis import settings as hypothesis_settings

import backends
from apps import make_app
from clock import FakeClock

# Hypothesis: "ci" (selected by CI=true) runs the fuzz properties at full
# strength (at least 10,000 examples each), with fresh random inputs every
# run (a failure prints the blob that reproduces it) and no example
# database; "dev" is the quick local default. HYPOTHESIS_PROFILE picks one.
hypothesis_settings.register_profile(
    "ci", max_examples=10_000, database=None, print_blob=True, derandomize=False, deadline=None
)
hypothesis_settings.register_profile("dev", max_examples=200)
hypothesis_settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if backends.IN_CI else "dev")
)

# Every fixture defined in a tests/backends/<family>.py module becomes
# visible to all tests, so a new provider family only adds its own module.
for _info in pkgutil.iter_modules(backends.__path__):
    _module = importlib.import_module(f"backends.{_info.name}")
    globals().update(
        {
            name: obj
            for name, obj in vars(_module).items()
            if type(obj).__name__ == "FixtureFunctionDefinition"
            or hasattr(obj, "_pytestfixturefunction")
        }
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def backend_config(backend_memory: dict[str, t.Any]) -> dict[str, t.Any]:
    return backend_memory


@pytest.fixture
def app_config() -> dict[str, t.Any]:
    return {"GOSESSION_TOKEN_CHECK": False, "GOSESSION_GC_INTERVAL": 0}


@pytest.fixture
def app(backend_config, app_config, clock, tmp_path):  # type: ignore[no-untyped-def]
    application = make_app({**backend_config, **app_config}, clock, str(tmp_path / "instance"))
    yield application
    application.extensions["gosession"].close()


@pytest.fixture
def manager(app):  # type: ignore[no-untyped-def]
    return app.extensions["gosession"]


@pytest.fixture(scope="module")
def chromium() -> t.Iterator[t.Any]:
    """One headless Chromium per test module (skipped, or failed under
    CI=true, where Playwright or Debian's chromium is missing)."""
    from browser import launch, unavailable

    reason = unavailable()
    if reason:
        backends.missing(reason)
    with launch() as browser:
        yield browser
