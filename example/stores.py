"""Which session store the example runs on, chosen by ``EXAMPLE_STORE``.

:data:`STORES` maps each choice to the ``app.config`` entries that select
it (the store's own settings, such as ``GOSESSION_REDIS_URL``, still come
from the environment). :func:`describe` says, for the indicator on every
page, which store an initialised app really uses and who shares it: it
never shows a password from a URL.
"""
from __future__ import annotations

import dataclasses
import os
import typing as t
import urllib.parse

from flask import Flask

#: ``EXAMPLE_STORE`` value -> config entries.
STORES: dict[str, dict[str, t.Any]] = {
    "memory": {"GOSESSION_PROVIDER": "memory"},
    "file": {"GOSESSION_PROVIDER": "file"},
    "sqlite": {"GOSESSION_PROVIDER": "sql"},  # the default URL: instance/gosession.sqlite3
    "redis": {"GOSESSION_PROVIDER": "redis"},
    "memcached": {"GOSESSION_PROVIDER": "memcached"},
}

#: Who sees the same sessions, per provider.
SHARED = {
    "memory": "this process only",
    "file": "every process on this host",
    "sql": "every process that reaches the database",
    "redis": "every process that reaches Redis",
    "memcached": "every process that reaches Memcached",
}


#: Settings that take a list: from the environment, comma-separated.
LIST_SETTINGS = frozenset({"GOSESSION_MEMCACHED_SERVERS", "GOSESSION_REDIS_SENTINELS", "GOSESSION_TOKEN_METHODS"})


class UnknownStore(ValueError):
    """``EXAMPLE_STORE`` names no store in :data:`STORES`."""


def from_environment(environ: t.Mapping[str, str] = os.environ) -> dict[str, t.Any]:
    """The config selecting the store: ``EXAMPLE_STORE`` if set, else
    ``GOSESSION_PROVIDER`` as given, else memory."""
    choice = environ.get("EXAMPLE_STORE", "").strip().lower()
    if choice:
        if choice not in STORES:
            raise UnknownStore(f"EXAMPLE_STORE={choice!r}: choose one of {', '.join(STORES)}")
        return dict(STORES[choice])
    return {"GOSESSION_PROVIDER": environ.get("GOSESSION_PROVIDER", "memory")}


def environment_config(environ: t.Mapping[str, str] = os.environ) -> dict[str, t.Any]:
    """The app config the environment asks for: the store
    (:func:`from_environment`) and every other ``GOSESSION_*`` variable as
    given (``"3600"``, ``"true"``, ``"none"``: ``init_app`` parses them), the
    list settings split at commas."""
    config = from_environment(environ)
    for key, value in environ.items():
        if key.startswith("GOSESSION_") and key != "GOSESSION_PROVIDER":
            config[key] = [part.strip() for part in value.split(",")] if key in LIST_SETTINGS else value
    return config


@dataclasses.dataclass(frozen=True)
class StoreInfo:
    """What the store indicator shows."""

    #: ``memory``, ``file``, ``sqlite``, ``postgresql``, ``redis``, ...
    name: str
    #: Where the data lives (a directory, a host and port), never a secret.
    where: str
    #: Who shares the sessions (:data:`SHARED`).
    shared: str


def describe(app: Flask) -> StoreInfo:
    """The store ``app`` was initialised with."""
    provider = app.config.get("GOSESSION_PROVIDER", "memory")
    kind = provider if isinstance(provider, str) else getattr(provider, "name", type(provider).__name__)
    kind = str(kind).lower()
    config = app.config
    if kind == "file":
        return StoreInfo("file", str(config.get("GOSESSION_FILE_DIR") or "instance/gosession"), SHARED["file"])
    if kind == "sql":
        engine = config.get("GOSESSION_SQL_ENGINE")
        if engine is not None:
            dialect, where = engine.dialect.name, _host(str(engine.url))
        else:
            url = str(config.get("GOSESSION_SQL_URL") or "sqlite:///instance/gosession.sqlite3")
            dialect, where = url.split(":", 1)[0].split("+", 1)[0], _host(url)
        return StoreInfo(dialect, where, SHARED["sql"] if dialect != "sqlite" else SHARED["file"])
    if kind == "redis":
        where = "a Redis Cluster" if config.get("GOSESSION_REDIS_CLUSTER") else _host(
            str(config.get("GOSESSION_REDIS_URL") or "redis://127.0.0.1:6379/0"))
        return StoreInfo("redis", where, SHARED["redis"])
    if kind == "memcached":
        servers = config.get("GOSESSION_MEMCACHED_SERVERS") or ["127.0.0.1:11211"]
        where = servers if isinstance(servers, str) else ", ".join(map(str, servers))
        return StoreInfo("memcached", where, SHARED["memcached"])
    return StoreInfo(kind, "this process", SHARED.get(kind, "depends on the provider"))


def _host(url: str) -> str:
    """``url`` without its user name and password (and query)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.startswith("sqlite"):
        return parts.path[1:] or "in memory"  # sqlite:///relative, sqlite:////absolute
    host = parts.hostname or parts.path or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{host}{port}{parts.path if parts.hostname else ''}"
