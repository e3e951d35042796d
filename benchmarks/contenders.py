"""The contenders: one small Flask app each, with the scenario views.

* ``bare``: Flask with no session use at all (no secret key, views that
  never touch ``session``): the ceiling.
* ``cookie``: Flask's built-in signed-cookie session.
* ``flask-session-*``: Flask-Session 0.8 with its defaults (permanent
  sessions, msgpack, ``SESSION_REFRESH_EACH_REQUEST``), on the same backend
  server or database as the flask-gosession contender it is paired with.
* ``gosession-*``: flask-gosession with its defaults, one per provider.
* ``gosession-*-sealed``: the same with encryption at rest
  (``GOSESSION_ENCRYPTION_KEYS``), to measure what sealing costs.
* ``gosession-*-metrics``: the same with Prometheus metrics on (into a
  registry of its own), to measure what they cost against the plain one in
  the same process and rounds.

Each pair shares the backend but never a key: prefixes, tables and
directories differ. Every builder raises :class:`~.services.Unavailable`
when a library or a backend is missing, so the contender is skipped.
"""
from __future__ import annotations

import typing as t
from dataclasses import dataclass, field

from flask import Flask

from . import counting
from .scenarios import INDEXED, SCENARIOS, add_user_views, add_views
from .services import Services, Unavailable, drop_table


@dataclass
class Contender:
    """A built contender."""

    name: str
    #: ``bare``, ``cookie``, ``flask-session`` or ``gosession``
    family: str
    #: ``-``, ``cookie``, ``memory``, ``file``, ``redis``, ``memcached``,
    #: ``sqlite`` or ``postgresql``
    backend: str
    app: Flask
    #: Counts store round trips (the client's calls).
    counter: counting.Counter
    #: flask-gosession only: counts provider operations.
    provider_counter: counting.Counter | None = None
    closers: list[t.Callable[[], None]] = field(default_factory=list)

    def unsupported(self, scenario: str) -> str | None:
        """Why this contender does not run ``scenario``, or None if it does.

        The user scenarios are flask-gosession's only; those that bind a
        session run on every store with a per-user index
        (:func:`index_missing`).
        """
        if scenario in SCENARIOS:
            return None
        if self.family != "gosession":
            return "flask-gosession only"
        if scenario in INDEXED:
            return index_missing(self.app.extensions["gosession"].provider)
        return None

    def close(self) -> None:
        for close in reversed(self.closers):
            close()
        self.closers.clear()


def index_missing(provider: t.Any) -> str | None:
    """Why ``provider`` cannot bind sessions to users, or None if it can:
    its ``user_index`` is false (Memcached), or it still has the base
    class's ``index_write``, which raises ``UserIndexUnsupported``."""
    from flask_gosession.providers.base import Provider

    name = type(provider).__name__
    if not provider.user_index:
        return f"{name} keeps no per-user index (user_index is False)"
    if type(provider).index_write is Provider.index_write:
        return f"{name} does not implement the per-user index (index_write)"
    return None

#: The suffix of the contenders with encryption at rest.
SEALED = "-sealed"
#: Their server key (a benchmark's, never a real one).
SEALED_KEYS = ["bench:" + "A" * 43]

#: The suffix of the contenders with Prometheus metrics on.
METRICS = "-metrics"

#: name -> (family, backend)
CONTENDERS: dict[str, tuple[str, str]] = {
    "bare": ("bare", "-"),
    "cookie": ("cookie", "cookie"),
    "gosession-memory": ("gosession", "memory"),
    "gosession-memory-sealed": ("gosession", "memory"),
    "gosession-memory-metrics": ("gosession", "memory"),
    "flask-session-simplecache": ("flask-session", "memory"),
    "gosession-file": ("gosession", "file"),
    "flask-session-filesystemcache": ("flask-session", "file"),
    "gosession-redis": ("gosession", "redis"),
    "gosession-redis-sealed": ("gosession", "redis"),
    "gosession-redis-metrics": ("gosession", "redis"),
    "flask-session-redis": ("flask-session", "redis"),
    "gosession-memcached": ("gosession", "memcached"),
    "flask-session-memcached": ("flask-session", "memcached"),
    "gosession-sqlite": ("gosession", "sqlite"),
    "flask-session-sqlite": ("flask-session", "sqlite"),
    "gosession-postgresql": ("gosession", "postgresql"),
    "flask-session-postgresql": ("flask-session", "postgresql"),
}

#: flask-gosession contender -> its Flask-Session counterpart.
RIVALS = {
    name: name.replace("gosession-", "flask-session-")
    .replace("-memory", "-simplecache")
    .replace("-file", "-filesystemcache")
    for name, (family, _) in CONTENDERS.items()
    if family == "gosession" and not name.endswith((SEALED, METRICS))
}

#: Each encrypted contender and the plain one it is measured against.
SEALED_PAIRS = {name: name[: -len(SEALED)] for name in CONTENDERS if name.endswith(SEALED)}

#: Each contender with metrics on and the plain one it is measured against.
METRICS_PAIRS = {name: name[: -len(METRICS)] for name in CONTENDERS if name.endswith(METRICS)}

#: The backend server each backend name needs, if any.
SERVICE_OF = {"redis": "redis", "memcached": "memcached", "postgresql": "postgresql"}

_SECRET = "benchmark-secret-key-0123456789abcdef"


def _app(name: str, services: Services) -> Flask:
    app = Flask(f"bench_{name.replace('-', '_')}",
                instance_path=services.directory(f"instance-{name}"))
    app.config["SECRET_KEY"] = _SECRET
    return app


def build(name: str, services: Services) -> Contender:
    """Build the contender ``name``.

    :raises Unavailable: if its library or backend is missing.
    :raises KeyError: for an unknown name.
    """
    family, backend = CONTENDERS[name]
    needed = SERVICE_OF.get(backend)
    if needed is not None and needed in services.missing:
        raise Unavailable(services.missing[needed])
    if family == "bare":
        app = Flask("bench_bare", instance_path=services.directory("instance-bare"))
        add_views(app, uses_session=False)
        return Contender(name, family, backend, app, counting.NoStore())
    if family == "cookie":
        app = _app(name, services)
        add_views(app, uses_session=True)
        return Contender(name, family, backend, app, counting.NoStore())
    if family == "gosession":
        return _gosession(name, backend, services)
    return _flask_session(name, backend, services)


# -- flask-gosession ------------------------------------------------------------


def _gosession(name: str, backend: str, services: Services) -> Contender:
    from flask_gosession import GoSession

    config: dict[str, t.Any]
    prefix = f"bench-gs-{services.tag}:"
    if backend == "memory":
        config = {"GOSESSION_PROVIDER": "memory"}
    elif backend == "file":
        config = {"GOSESSION_PROVIDER": "file", "GOSESSION_FILE_DIR": services.directory("gs-files")}
    elif backend == "redis":
        _need("redis", "redis")
        config = {"GOSESSION_PROVIDER": "redis", "GOSESSION_REDIS_URL": services.redis_url,
                  "GOSESSION_KEY_PREFIX": prefix}
    elif backend == "memcached":
        _need("pymemcache", "pymemcache")
        config = {"GOSESSION_PROVIDER": "memcached",
                  "GOSESSION_MEMCACHED_SERVERS": [services.memcached],
                  "GOSESSION_KEY_PREFIX": prefix}
    elif backend in ("sqlite", "postgresql"):
        _need("sqlalchemy", "sqlalchemy")
        url = services.sqlite_url("sessions") if backend == "sqlite" else services.postgres_url
        config = {"GOSESSION_PROVIDER": "sql", "GOSESSION_SQL_URL": url,
                  "GOSESSION_SQL_TABLE": services.table("gs")}
    else:  # pragma: no cover - CONTENDERS lists every backend
        raise KeyError(backend)
    if name.endswith(SEALED):
        _need("cryptography", "flask-gosession[crypto]")
        config["GOSESSION_ENCRYPTION_KEYS"] = SEALED_KEYS
    app = _app(name, services)
    app.config.update(config)
    GoSession(app)
    if name.endswith(METRICS):
        _need("prometheus_client", "flask-gosession[prometheus]")
        from prometheus_client import CollectorRegistry

        from flask_gosession.metrics import install

        install(app, CollectorRegistry())
    add_views(app, uses_session=True)
    add_user_views(app)
    manager = app.extensions["gosession"]

    def provider() -> t.Any:
        return manager.provider

    counter: counting.Counter
    if backend == "redis":
        counter = counting.redis_counter(services.redis_url)
    elif backend == "memcached":
        counter = counting.memcached_counter(lambda: [provider().client, provider().lane])
    elif backend in ("sqlite", "postgresql"):
        counter = counting.SQLCounter(lambda: provider().engine)
    else:
        counter = counting.provider_counter(provider)
    contender = Contender(name, "gosession", backend, app, counter,
                          provider_counter=counting.provider_counter(provider))
    contender.closers.append(manager.close)
    if backend == "postgresql":
        url, table = services.postgres_url, services.table("gs")
        services.on_close(lambda: drop_table(t.cast(str, url), table))
    return contender


# -- Flask-Session ----------------------------------------------------------------


def _flask_session(name: str, backend: str, services: Services) -> Contender:
    _need("flask_session", "flask-session==0.8.*")
    from flask_session import Session

    app = _app(name, services)
    app.config["SESSION_KEY_PREFIX"] = f"bench-fs-{services.tag}:"
    closers: list[t.Callable[[], None]] = []
    counter: counting.Counter
    if backend in ("memory", "file"):
        _need("cachelib", "cachelib")
        from cachelib import FileSystemCache, SimpleCache

        # As in Flask-Session's documentation: the library's defaults
        # (threshold=500 items).
        cache = (SimpleCache() if backend == "memory"
                 else FileSystemCache(services.directory("fs-files"), threshold=500))
        app.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=cache)
        Session(app)
        counter = counting.cachelib_counter(lambda: app.session_interface.cache)
    elif backend == "redis":
        redis = _need("redis", "redis")
        client = redis.Redis.from_url(services.redis_url)
        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=client)
        Session(app)
        counter = counting.redis_counter(services.redis_url)
        closers.append(client.close)
    elif backend == "memcached":
        _need("pymemcache", "pymemcache")
        from pymemcache.client.base import PooledClient

        host, _, port = t.cast(str, services.memcached).rpartition(":")
        # pymemcache's defaults, except TCP_NODELAY (flask-gosession sets it
        # too): without it, Nagle's algorithm would add delayed-ACK stalls.
        client = PooledClient((host, int(port)), no_delay=True)
        app.config.update(SESSION_TYPE="memcached", SESSION_MEMCACHED=client)
        Session(app)
        counter = counting.memcached_counter(lambda: client)
        closers.append(client.close)
    elif backend in ("sqlite", "postgresql"):
        _need("flask_sqlalchemy", "flask-sqlalchemy")
        from flask_sqlalchemy import SQLAlchemy

        url = services.sqlite_url("sessions") if backend == "sqlite" else services.postgres_url
        table = services.table("fs")
        app.config.update(SQLALCHEMY_DATABASE_URI=url)
        db = SQLAlchemy(app)
        app.config.update(SESSION_TYPE="sqlalchemy", SESSION_SQLALCHEMY=db,
                          SESSION_SQLALCHEMY_TABLE=table)
        Session(app)

        def engine() -> t.Any:
            with app.app_context():
                return db.engine

        counter = counting.SQLCounter(engine)
        closers.append(lambda: engine().dispose())
        if backend == "postgresql":
            services.on_close(lambda: drop_table(t.cast(str, url), table))
    else:  # pragma: no cover
        raise KeyError(backend)
    add_views(app, uses_session=True)
    return Contender(name, "flask-session", backend, app, counter, closers=closers)


def _need(module: str, package: str) -> t.Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise Unavailable(f"{package} is not installed (pip install -e '.[bench]')") from err
