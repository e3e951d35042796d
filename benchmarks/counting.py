"""Counting store calls by wrapping the client each contender talks to.

Every wrapper passes calls through unchanged and is installed only for the
counting pass, never while requests are timed. What one "call" is:

* Redis: one command sent on a connection of the contender's server
  (``Connection.send_command``, through which both redis-py's client and
  flask-gosession's fast lane send; a Lua script is one ``EVALSHA``);
* memcached: one command method of the pymemcache client (``get``, ``set``,
  ``gets``, ``cas``, ``delete``, ``touch`` ...), or of flask-gosession's
  fast lane (``gets``, ``cas``);
* SQL: one statement executed on a cursor (explicit ``BEGIN`` and
  ``COMMIT`` included), plus, on connections not in autocommit mode, the
  ``BEGIN``, ``COMMIT`` and ``ROLLBACK`` the driver sends for SQLAlchemy,
  and a pool's liveness ping on checkout (engine and pool events);
* cachelib (Flask-Session's SimpleCache and FileSystemCache): one cache
  method (``get``, ``set``, ``delete`` ...);
* flask-gosession's memory and file stores, which have no client: one
  provider operation (``session_read``, ``session_update`` ...,
  ``index_write`` and ``index_read`` of the per-user index).
"""
from __future__ import annotations

import typing as t


class Counter:
    """Counts calls; :meth:`install` wraps, :meth:`uninstall` restores."""

    def __init__(self) -> None:
        self.count = 0
        self._undo: list[t.Callable[[], None]] = []

    def install(self) -> None:
        raise NotImplementedError

    def uninstall(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def _wrap(self, obj: t.Any, names: t.Iterable[str]) -> None:
        """Shadow methods of ``obj`` with counting instance attributes."""
        for name in names:
            inner = getattr(obj, name, None)
            if inner is None or name in vars(obj):
                continue

            def counted(*args: t.Any, __inner: t.Any = inner, **kwargs: t.Any) -> t.Any:
                self.count += 1
                return __inner(*args, **kwargs)

            setattr(obj, name, counted)
            self._undo.append(lambda obj=obj, name=name: delattr(obj, name))


class NoStore(Counter):
    """Bare Flask and the cookie session: there is no store."""

    def install(self) -> None:
        pass


class MethodCounter(Counter):
    """Counts calls of the named methods of an object, or of each object
    of a list (lazily resolved; ``None`` in the list is skipped)."""

    def __init__(self, get: t.Callable[[], t.Any], names: t.Iterable[str]) -> None:
        super().__init__()
        self._get = get
        self._names = tuple(names)

    def install(self) -> None:
        target = self._get()
        for obj in target if isinstance(target, list) else [target]:
            if obj is not None:
                self._wrap(obj, self._names)


class RedisCounter(Counter):
    """Commands sent by any redis-py connection to one server address.

    Counting on the connection class rather than on a client object counts
    every way of sending a command, whichever client or lane sends it.
    """

    def __init__(self, url: str) -> None:
        super().__init__()
        from redis.connection import parse_url

        kwargs = parse_url(url)
        self._address = (kwargs.get("host", "localhost"), int(kwargs.get("port", 6379)))

    def install(self) -> None:
        from redis.connection import AbstractConnection

        send = AbstractConnection.send_command
        address = self._address

        def counted(conn: t.Any, *args: t.Any, **kwargs: t.Any) -> None:
            if (getattr(conn, "host", None), getattr(conn, "port", None)) == address:
                self.count += 1
            send(conn, *args, **kwargs)

        AbstractConnection.send_command = counted  # type: ignore[method-assign]
        self._undo.append(lambda: setattr(AbstractConnection, "send_command", send))


def redis_counter(url: str) -> Counter:
    return RedisCounter(url)


MEMCACHED_METHODS = ("get", "gets", "get_many", "gets_many", "set", "set_many", "add", "replace",
                     "cas", "delete", "delete_many", "touch", "incr", "decr", "append", "prepend")


def memcached_counter(get_clients: t.Callable[[], t.Any]) -> Counter:
    """Commands sent through a pymemcache client, or through each of a
    list of objects with its methods (flask-gosession's client and its
    :class:`~flask_gosession.providers._memcached_lane.CasLane`)."""
    return MethodCounter(get_clients, MEMCACHED_METHODS)


CACHELIB_METHODS = ("get", "set", "add", "delete", "has", "get_many", "set_many", "delete_many",
                    "inc", "dec", "clear")


def cachelib_counter(get_cache: t.Callable[[], t.Any]) -> Counter:
    return MethodCounter(get_cache, CACHELIB_METHODS)


PROVIDER_METHODS = ("session_init", "session_create", "session_read", "session_update", "session_touch",
                    "session_destroy", "session_gc", "index_write", "index_read", "session_peek")


def provider_counter(get_provider: t.Callable[[], t.Any]) -> Counter:
    return MethodCounter(get_provider, PROVIDER_METHODS)


class SQLCounter(Counter):
    """Statements, commits, rollbacks and pings on a SQLAlchemy engine."""

    def __init__(self, get_engine: t.Callable[[], t.Any]) -> None:
        super().__init__()
        self._get_engine = get_engine

    def install(self) -> None:
        from sqlalchemy import event

        engine = self._get_engine()

        def one(*args: t.Any, **kwargs: t.Any) -> None:
            self.count += 1

        listeners = [(engine, "before_cursor_execute", one)]
        if not _autocommit(engine):
            # The driver sends BEGIN itself, below the cursor events; on an
            # autocommit connection SQLAlchemy's begin, commit and rollback
            # send nothing (explicit BEGIN/COMMIT are cursor statements).
            listeners += [(engine, "begin", one), (engine, "commit", one), (engine, "rollback", one)]
        if getattr(engine.pool, "_pre_ping", False):
            # The pre-ping runs on checkout, below the cursor events.
            listeners.append((engine.pool, "checkout", one))
        for target, name, fn in listeners:
            event.listen(target, name, fn)
            self._undo.append(lambda target=target, name=name, fn=fn: event.remove(target, name, fn))


def _autocommit(engine: t.Any) -> bool:
    level = engine.get_execution_options().get("isolation_level")
    if level is None:
        level = getattr(engine.dialect, "_on_connect_isolation_level", None)
    return level == "AUTOCOMMIT"
