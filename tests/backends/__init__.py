"""Backend fixtures: one module per provider family.

Each module defines fixtures named ``backend_<name>`` that return the
``app.config`` entries selecting that provider, isolated for one test
(a fresh directory, table, key prefix or flushed server). Every name in
:data:`ALL_BACKENDS` is run by the contract suites.
"""
from __future__ import annotations

import os
import typing as t

import pytest

#: Every backend the contract suites run against.
ALL_BACKENDS = [
    "memory",
    "file",
    "sql_sqlite",
    "sql_postgresql",
    "sql_mariadb",
    "redis",
    "redis_cluster",
    "memcached",
    "memcached_pair",
]

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing(reason: str) -> None:
    """Skip the test for a missing server or binary, or fail it under CI=true."""
    if IN_CI:
        pytest.fail(f"required in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def one_process_config(request: t.Any, name: str) -> dict[str, t.Any]:
    """The config of backend ``name`` for a test whose apps stand for the
    processes of one deployment: the memory store is then one shared
    instance (as one process would have), every other store its fixture."""
    if name == "memory":
        from flask_gosession.providers.memory import MemoryProvider

        return {"GOSESSION_PROVIDER": MemoryProvider()}
    config: dict[str, t.Any] = request.getfixturevalue(f"backend_{name}")
    return config
