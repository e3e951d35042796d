"""Loading the example app (``example/app.py``) in the tests.

Each call gives a fresh copy of the ``example.app`` module, so its
module-level ``gosession`` object can take a test's fake clock without
touching any other app. The helper modules it imports (``example.stores``,
``example.revocation``) are shared: they keep no per-app state.
"""
from __future__ import annotations

import importlib.util
import itertools
import pathlib
import sys
import types

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example" / "app.py"
_copies = itertools.count()

if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # ``import example.stores``, as gunicorn and ``flask run`` see it
#: ``example/stores.py``: the ``EXAMPLE_STORE`` choices.
stores = importlib.import_module("example.stores")


def load_example() -> types.ModuleType:
    """A fresh copy of ``example/app.py``; its own module-level app is closed."""
    spec = importlib.util.spec_from_file_location(f"gosession_example_{next(_copies)}", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import would: dataclasses look their module up
    spec.loader.exec_module(module)
    module.app.extensions["gosession"].close()  # the module's own app
    return module
