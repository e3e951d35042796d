"""Shared fixtures. pytest-flask picks up ``app`` and provides ``client``."""
from __future__ import annotations

import importlib
import pkgutil

import backends

# Every fixture defined in a tests/backends/<family>.py module becomes
# visible to all tests, so a new provider family only adds its own module.
for _info in pkgutil.iter_modules(backends.__path__):
    _module = importlib.import_module(f"backends.{_info.name}")
    globals().update(
        {name: obj for name, obj in vars(_module).items() if hasattr(obj, "_fixture_function_marker") or hasattr(obj, "_pytestfixturefunction") or type(obj).__name__ == "FixtureFunctionDefinition"}
    )
