"""The ``sql`` provider: one row per session, through SQLAlchemy Core.

Table (name from ``GOSESSION_SQL_TABLE``, default ``gosessions``)::

    id     VARCHAR(64) PRIMARY KEY   the key (SHA-256 hex of the session id)
    data   BLOB / BYTEA / MEDIUMBLOB the record, encoded with Provider.pack()
    atime  DOUBLE, indexed           the last access

The ``atime`` column is authoritative: the copy inside ``data`` is ignored on
read, so a touch is an ``UPDATE`` of one float and garbage collection is one
indexed ``DELETE ... WHERE atime <= :deadline``. The table (and its index) is
created on first use unless ``GOSESSION_SQL_CREATE_TABLE`` is false; for
migrations, :attr:`SQLProvider.table` is the :class:`sqlalchemy.Table`.

Per-user index. A second table, created with the first (its name is
``GOSESSION_SQL_TABLE + "_users"``, for example ``gosessions_users``), holds
one row per user (see :mod:`flask_gosession.userindex`)::

    user_key  VARCHAR(64) PRIMARY KEY  the user key (SHA-256 hex of the user id)
    data      BLOB / BYTEA / MEDIUMBLOB the index, userindex.dumps()
    expires   DOUBLE, indexed          the index's latest horizon

:meth:`SQLProvider.index_write` is one transaction on that row: ``BEGIN``
(``BEGIN IMMEDIATE`` on SQLite), an insert-if-absent that also locks the row
(``INSERT ... ON CONFLICT DO UPDATE`` with a no-op ``SET`` on PostgreSQL and
SQLite, ``INSERT ... ON DUPLICATE KEY UPDATE`` on MySQL and MariaDB: a plain
``SELECT ... FOR UPDATE`` would lock nothing for a user who has no row yet,
so two first logins could both write), the ``SELECT``, the change in Python,
then ``UPDATE`` (or ``DELETE`` when the index is left empty), ``COMMIT``. A
row with an ``expires`` in the past reads as no index, and
:meth:`SQLProvider.session_gc` deletes such rows. :meth:`SQLProvider.index_read`
is one ``SELECT``, plus that transaction only when it has entries to prune.
For migrations, :attr:`SQLProvider.user_table` is that table.

Transactions. Engines this provider creates for the dialects it knows
(SQLite, PostgreSQL, MySQL, MariaDB) run in autocommit mode, so every
operation except :meth:`SQLProvider.session_update` is one statement and
one round trip: no ``BEGIN``, no ``COMMIT``, no rollback when the connection
goes back to the pool, and no liveness ping on checkout (a dead pooled
connection is detected when used, and the operation retried; see below).
:meth:`SQLProvider.session_update` then opens its own transaction on the
autocommit connection: ``BEGIN`` (``BEGIN IMMEDIATE`` on SQLite, which takes
the database's write lock up front, so two read-merge-write cycles cannot
interleave and there is no lock-upgrade deadlock), ``SELECT ... FOR UPDATE``
(a row lock on PostgreSQL, MySQL and MariaDB), the merge in Python,
``UPDATE``, ``COMMIT``.

An engine shared through ``GOSESSION_SQL_ENGINE`` is used as configured, so
the application's own connections are never switched to another isolation
level: each operation runs in the driver's transaction
(``engine.begin()``), at the cost of a ``BEGIN``/``COMMIT`` per operation,
and on SQLite ``session_update`` first writes to the row (``SET atime =
atime``), which takes the write lock before the read just as ``BEGIN
IMMEDIATE`` would. A shared engine that is itself in autocommit mode is
treated like an owned one.

Either way :meth:`SQLProvider.session_init` is a native upsert
(``INSERT ... ON CONFLICT DO UPDATE`` on PostgreSQL and SQLite,
``INSERT ... ON DUPLICATE KEY UPDATE`` on MySQL and MariaDB; update-then-
insert with a retry elsewhere), so concurrent inits of one key never raise
an integrity error; and an update never inserts, so a missing row gives
:attr:`~.Outcome.MISSING` and a concurrent destroy (or GC) always wins.

Size. A record is at most the smaller of ``GOSESSION_MAX_RECORD_SIZE``
(default 1 MiB; ``None`` for no cap, the default when built by hand) and
what the ``data`` column of the table this provider creates holds on the
dialect (:data:`COLUMN_LIMITS`: 16 MiB - 1 for MySQL/MariaDB's
``MEDIUMBLOB``, 1 GB for PostgreSQL's ``bytea``, SQLite's default
``SQLITE_MAX_LENGTH``; no column limit is assumed on other dialects).
Larger records raise :class:`~flask_gosession.errors.RecordTooLarge`
before anything is sent; this matters most on MySQL and MariaDB, which
outside strict mode silently truncate an oversized value. A table created
by your own migrations must hold as much (MySQL's plain ``BLOB`` stops at
64 KiB), and a cap above 8 MiB on MySQL/MariaDB also needs a larger
``max_allowed_packet``.

Files. A SQLite database file this provider creates is created 0600 (its
journal and WAL files inherit that mode), in a directory created 0700 if
missing. For the default database (``instance_path/gosession.sqlite3``),
:meth:`SQLProvider.from_config` also refuses a world-writable directory and
an existing file that is a symbolic link, is owned by another user, or is
writable by group or others: a local user who pre-created it could forge
sessions.

Failures. Every SQLAlchemy error becomes a :class:`ProviderError`. When a
pooled connection turns out to be dead (the server restarted, or the
connection was killed), SQLAlchemy invalidates the pool and the operation is
retried once on a fresh connection; every operation is idempotent, an
update included (it re-applies the same per-key change), so the retry is
safe and the caller never sees the dropped connection. That retry is why
engines this provider creates do not ping connections on checkout
(``pool_pre_ping``), which would double every read's round trips. They
hide statement parameters (the session data) from error messages.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import inspect
import math
import os
import shlex
import stat
import threading
import typing as t

from .. import userindex
from ..errors import ConfigError, CorruptRecordError, ProviderError
from ._addresses import flag, positive_seconds
from ._limits import (
    DEFAULT_MAX_RECORD_SIZE,
    MAX_RECORD_SIZE,
    MAX_RECORD_SIZE_DESCRIPTION,
    lowest,
    positive_int,
    record_cap,
)
from .base import Change, Outcome, Provider, Record, parse_counts, redact

if t.TYPE_CHECKING:
    from flask import Flask
    from sqlalchemy.engine import URL, Connection, Engine

_T = t.TypeVar("_T")

#: The most keys :meth:`SQLProvider.session_peek` reads in one ``SELECT``.
PEEK_BATCH = 500

#: The most bytes the ``data`` column holds, per dialect name, in the table
#: :func:`_make_table` creates: MySQL/MariaDB ``MEDIUMBLOB`` (2**24 - 1),
#: PostgreSQL ``bytea`` (1 GB), SQLite's default ``SQLITE_MAX_LENGTH``.
COLUMN_LIMITS: dict[str, int] = {
    "mysql": 2**24 - 1,
    "mariadb": 2**24 - 1,
    "postgresql": 2**30 - 1,
    "sqlite": 1_000_000_000,
}

#: How ``session_update`` opens its transaction on an autocommit connection,
#: per dialect name. Owned engines of other dialects are not autocommit.
_BEGIN = {
    "sqlite": "BEGIN IMMEDIATE",
    "postgresql": "BEGIN",
    "mysql": "START TRANSACTION",
    "mariadb": "START TRANSACTION",
}


def _import_sqlalchemy() -> t.Any:
    try:
        import sqlalchemy
    except ImportError as err:
        raise ConfigError(
            "GOSESSION_PROVIDER='sql' needs SQLAlchemy: pip install flask-gosession[sql]"
        ) from err
    return sqlalchemy


class SQLProvider(Provider):
    """Sessions in a relational database table, through SQLAlchemy Core 2.x.

    Give exactly one of ``url`` and ``engine``.

    :param url: a database URL; this provider then creates, owns and
        disposes of its engine.
    :param engine: an existing :class:`~sqlalchemy.engine.Engine` to share
        (for example Flask-SQLAlchemy's ``db.engine``). It is never disposed
        of here, and ``timeout`` and ``engine_options`` do not apply to it.
    :param table: the table name.
    :param create_table: create the table (and its index) on first use if
        it is missing. When false, first use checks that the table exists
        and raises :class:`ProviderError` if it does not.
    :param timeout: seconds, for engines created here: the connect timeout
        (``connect_timeout`` on PostgreSQL and MySQL, rounded up to whole
        seconds; libpq makes anything below 2 seconds 2), the read and write
        timeout on MySQL and MariaDB (so it also bounds a wait for a row
        lock), and the busy timeout on SQLite (how long to wait for the
        database's write lock). Other drivers get no timeout from it.
    :param engine_options: extra keyword arguments for
        :func:`sqlalchemy.create_engine`; its ``connect_args`` are merged
        over the ones derived from ``timeout``.
    :param max_record_size: the application's cap on one encoded record, in
        bytes, or ``None``; the column's own limit (:data:`COLUMN_LIMITS`)
        applies as well.
    :raises ConfigError: if SQLAlchemy is missing or an argument is invalid.
    """

    #: Reads are one ``SELECT``; the manager refreshes ``atime`` through
    #: :meth:`session_touch` at most once per refresh interval.
    touches_on_read = False

    def __init__(
        self,
        url: str | URL | None = None,
        *,
        engine: Engine | None = None,
        table: str = "gosessions",
        create_table: bool = True,
        timeout: float = 5.0,
        engine_options: t.Mapping[str, t.Any] | None = None,
        max_record_size: int | None = None,
    ) -> None:
        sa = _import_sqlalchemy()
        self._sa = sa
        if (url is None) == (engine is None):
            raise ConfigError("SQLProvider needs exactly one of a URL or an engine")
        if not isinstance(table, str) or not table or len(table) > 63:
            raise ConfigError(f"GOSESSION_SQL_TABLE must be a name of 1 to 63 characters, got {table!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ConfigError(f"GOSESSION_SQL_TIMEOUT must be a positive number of seconds, got {timeout!r}")
        if engine is not None:
            if not isinstance(engine, sa.engine.Engine):
                raise ConfigError(f"GOSESSION_SQL_ENGINE must be a sqlalchemy Engine, got {engine!r}")
            self._owns_engine = False
            #: The engine sessions are stored through.
            self.engine: Engine = engine
        else:
            self.engine = _create_engine(sa, t.cast("str | URL", url), timeout, engine_options or {})
            self._owns_engine = True
        self._create = bool(create_table)
        self._ready = False
        self._ready_lock = threading.Lock()
        self._dialect = dialect = self.engine.dialect.name
        cap = positive_int(max_record_size, MAX_RECORD_SIZE, optional=True)
        column = COLUMN_LIMITS.get(dialect)
        self.max_record_size = lowest(cap, column)
        if cap is None or (column is not None and column < cap):
            self.max_record_setting = f"the data column's capacity on {dialect}"
        #: SQLite has one writer at a time and its lock-retry loop starves
        #: some writers under load; queueing this process's writes behind a
        #: lock keeps every wait short and fair (other processes still
        #: meet SQLite's own busy timeout).
        self._sqlite_writers: threading.Lock | None = threading.Lock() if dialect == "sqlite" else None
        #: True when connections autocommit and session_update issues its own
        #: BEGIN/COMMIT; false when every operation runs in engine.begin().
        self._explicit = _is_autocommit(self.engine)
        self._begin = _BEGIN.get(dialect, "BEGIN")
        #: The session table, for migrations (Alembic) and administration.
        self.table: t.Any = _make_table(sa, table)
        #: The per-user index table (in the same metadata as :attr:`table`).
        self.user_table: t.Any = _make_user_table(sa, self.table.metadata, table)
        self._build_statements(dialect)

    config_descriptions: t.ClassVar[t.Mapping[str, str]] = {
        "GOSESSION_SQL_URL": (
            "SQLAlchemy URL of the `sql` store (default: a SQLite file "
            "`instance_path/gosession.sqlite3`); `postgresql://`, not the `postgres://` some "
            "hosts hand out, which SQLAlchemy refuses."),
        "GOSESSION_SQL_ENGINE": "An existing SQLAlchemy `Engine` to reuse (wins over the URL).",
        "GOSESSION_SQL_TABLE": "The table name (the per-user index is `<table>_users`).",
        "GOSESSION_SQL_CREATE_TABLE": "Create the tables (with their expiry index) on first use.",
        "GOSESSION_SQL_TIMEOUT": (
            "Seconds: the connect timeout (PostgreSQL, whole seconds, at least 2), connect plus "
            "read/write timeouts (MariaDB/MySQL, which also bounds waiting for a row lock), the "
            "busy timeout (SQLite)."),
        "GOSESSION_SQL_ENGINE_OPTIONS": (
            "Extra `create_engine()` arguments for an engine built from the URL."),
        MAX_RECORD_SIZE: MAX_RECORD_SIZE_DESCRIPTION,
    }

    @classmethod
    def config_defaults(cls, app: Flask) -> dict[str, t.Any]:
        return {
            "GOSESSION_SQL_URL": "sqlite:///" + _default_sqlite_path(app),
            "GOSESSION_SQL_ENGINE": None,
            "GOSESSION_SQL_TABLE": "gosessions",
            "GOSESSION_SQL_CREATE_TABLE": True,
            "GOSESSION_SQL_TIMEOUT": 5,
            "GOSESSION_SQL_ENGINE_OPTIONS": {},
            MAX_RECORD_SIZE: DEFAULT_MAX_RECORD_SIZE,
        }

    @classmethod
    def from_config(cls, app: Flask) -> SQLProvider:
        """Build from the ``GOSESSION_SQL_*`` settings.

        ``GOSESSION_SQL_ENGINE``, when set, wins over ``GOSESSION_SQL_URL``.
        The directory of a SQLite database file is created (0700) if
        missing, and the file itself (0600).

        :raises ConfigError: for a bad value, an in-memory SQLite database
            (each pooled connection would see a different one), a missing
            SQLAlchemy, or a default SQLite database that another user could
            write (see the module docs).
        """
        config = app.config
        create = flag(config["GOSESSION_SQL_CREATE_TABLE"], "GOSESSION_SQL_CREATE_TABLE")
        options = config["GOSESSION_SQL_ENGINE_OPTIONS"]
        if not isinstance(options, t.Mapping):
            raise ConfigError(f"GOSESSION_SQL_ENGINE_OPTIONS must be a dict, got {options!r}")
        common: dict[str, t.Any] = {
            "table": config["GOSESSION_SQL_TABLE"],
            "create_table": create,
            "timeout": positive_seconds(config["GOSESSION_SQL_TIMEOUT"], "GOSESSION_SQL_TIMEOUT"),
            "max_record_size": record_cap(config),
        }
        engine = config["GOSESSION_SQL_ENGINE"]
        if engine is not None:
            return cls(engine=engine, **common)
        url = config["GOSESSION_SQL_URL"]
        default = _default_sqlite_path(app)
        if url == "sqlite:///" + default:
            _check_default_sqlite(default)
        return cls(url, engine_options=options, **common)

    # -- statements ------------------------------------------------------------

    def _build_statements(self, dialect: str) -> None:
        sa, table = self._sa, self.table
        c = table.c
        key = sa.bindparam("k")
        self._select = sa.select(c.data, c.atime).where(c.id == key)
        self._select_locked = self._select.with_for_update()
        self._update = (
            sa.update(table).where(c.id == key).values(data=sa.bindparam("d"), atime=sa.bindparam("a"))
        )
        self._touch = sa.update(table).where(c.id == key).values(atime=sa.bindparam("a"))
        self._write_lock = sa.update(table).where(c.id == key).values(atime=c.atime)
        self._insert = sa.insert(table).values(id=key, data=sa.bindparam("d"), atime=sa.bindparam("a"))
        self._delete = sa.delete(table).where(c.id == key)
        self._gc = sa.delete(table).where(c.atime <= sa.bindparam("deadline"))
        self._clear = sa.delete(table)
        self._count = sa.select(sa.func.count()).select_from(table)
        self._peek = sa.select(c.id, c.data, c.atime).where(
            c.id.in_(sa.bindparam("keys", expanding=True))
        )
        users = self.user_table
        u = users.c
        self._index_select = sa.select(u.data, u.expires).where(u.user_key == key)
        self._index_select_locked = self._index_select.with_for_update()
        self._index_update = (
            sa.update(users).where(u.user_key == key)
            .values(data=sa.bindparam("d"), expires=sa.bindparam("e"))
        )
        self._index_insert = sa.insert(users).values(
            user_key=key, data=sa.bindparam("d"), expires=sa.bindparam("e")
        )
        self._index_delete = sa.delete(users).where(u.user_key == key)
        self._index_gc = sa.delete(users).where(u.expires <= sa.bindparam("now"))
        self._index_clear = sa.delete(users)
        # Event counters: rows of the index table keyed "event:<name>", the
        # count kept as EVENT_BASE + count in ``expires`` (one atomic
        # UPDATE; far enough ahead that index GC never removes them).
        self._event_bump = (
            sa.update(users).where(u.user_key == key).values(expires=u.expires + 1)
        )
        self._event_insert = sa.insert(users).values(
            user_key=key, data=b"", expires=EVENT_BASE + 1
        )
        self._event_select = sa.select(u.user_key, u.expires).where(
            u.user_key.like(EVENT_PREFIX + "%")
        )
        #: Insert-if-absent that locks the row either way (see the module
        #: docs); ``None`` on dialects without an upsert.
        self._index_claim: t.Any = None
        self._upsert: t.Any = None
        #: INSERT that does nothing when the key exists (rowcount 0, or no
        #: row returned where :attr:`_insert_new_returns`).
        self._insert_new: t.Any = None
        self._insert_new_returns = False
        if dialect in ("postgresql", "sqlite"):
            from sqlalchemy.dialects import postgresql, sqlite

            insert: t.Any = (postgresql if dialect == "postgresql" else sqlite).insert
            stmt = insert(table).values(id=key, data=sa.bindparam("d"), atime=sa.bindparam("a"))
            self._upsert = stmt.on_conflict_do_update(
                index_elements=[c.id],
                set_={"data": stmt.excluded.data, "atime": stmt.excluded.atime},
            )
            self._insert_new = stmt.on_conflict_do_nothing(index_elements=[c.id])
            if dialect == "postgresql":
                # RETURNING, not the rowcount: psycopg 3 reports -1 for an
                # INSERT ... ON CONFLICT DO NOTHING, whether it inserted or not.
                self._insert_new = self._insert_new.returning(c.id)
                self._insert_new_returns = True
            claim = insert(users).values(user_key=key, data=b"", expires=0.0)
            self._index_claim = claim.on_conflict_do_update(
                index_elements=[u.user_key], set_={"expires": u.expires}
            )
        elif dialect in ("mysql", "mariadb"):
            from sqlalchemy.dialects import mysql

            mysql_stmt: t.Any = mysql.insert(table)
            stmt = mysql_stmt.values(id=key, data=sa.bindparam("d"), atime=sa.bindparam("a"))
            self._upsert = stmt.on_duplicate_key_update(
                data=stmt.inserted.data, atime=stmt.inserted.atime
            )
            self._insert_new = stmt.prefix_with("IGNORE")
            # Not INSERT IGNORE: on a duplicate that takes a shared lock, and
            # two writers holding it would deadlock on their FOR UPDATE.
            mysql_claim: t.Any = mysql.insert(users)
            self._index_claim = mysql_claim.values(
                user_key=key, data=b"", expires=0.0
            ).on_duplicate_key_update(expires=u.expires)

    # -- running -----------------------------------------------------------------

    def _run(self, action: str, fn: t.Callable[[Connection], _T], write: bool = False) -> _T:
        if write and self._sqlite_writers is not None:
            with self._sqlite_writers:
                return self._run_once_or_twice(action, fn)
        return self._run_once_or_twice(action, fn)

    def _run_once_or_twice(self, action: str, fn: t.Callable[[Connection], _T]) -> _T:
        """Run ``fn`` on a pooled connection, mapping errors to ProviderError.

        Retried once when the connection proved dead (SQLAlchemy then
        invalidates the pool), so a server restart costs no failed request.
        """
        exc = self._sa.exc
        for attempt in (1, 2):
            connected = False
            try:
                if not self._ready:
                    self._prepare()
                with self._connection() as conn:
                    connected = True
                    return fn(conn)
            except exc.DBAPIError as err:
                # Only a connection that died in use is retried: a server
                # that cannot be reached at all is reported at once.
                if attempt == 1 and connected and err.connection_invalidated:
                    continue
                # The driver's message, which may quote a row: keys cut down.
                raise ProviderError(f"SQL session store: cannot {action}: {redact(str(err.orig))}") from err
            except exc.SQLAlchemyError as err:
                # A statement error's own text lists the parameters (session
                # data) unless the engine hides them: give only its cause.
                reason = getattr(err, "orig", None) or err
                raise ProviderError(f"SQL session store: cannot {action}: {redact(str(reason))}") from err
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def _connection(self) -> t.Iterator[Connection]:
        """A connection: autocommit, or inside the driver's transaction."""
        if self._explicit:
            with self.engine.connect() as conn:
                yield conn
        else:
            with self.engine.begin() as conn:
                yield conn

    @contextlib.contextmanager
    def _write_transaction(self, conn: Connection, key: str, claim: t.Any = None) -> t.Iterator[None]:
        """Make the read-merge-write of ``key`` atomic.

        On an autocommit connection, an explicit transaction that is rolled
        back on any failure; if even the rollback fails, the connection is
        invalidated, so it never goes back to the pool holding a lock.
        Inside ``engine.begin()`` the driver's transaction already holds;
        SQLite only needs its write lock taken before the read.

        :param claim: a statement (with the one parameter ``k``) run first
            in the transaction, that makes sure ``key``'s row exists and
            locks it (on SQLite, it takes the write lock).
        """
        if not self._explicit:
            if claim is not None:
                conn.execute(claim, {"k": key})
            elif self._dialect == "sqlite":
                conn.execute(self._write_lock, {"k": key})
            yield
            return
        conn.exec_driver_sql(self._begin)
        try:
            if claim is not None:
                conn.execute(claim, {"k": key})
            yield
            conn.exec_driver_sql("COMMIT")
        except BaseException:
            try:
                conn.exec_driver_sql("ROLLBACK")
            except BaseException:
                conn.invalidate()
            raise

    def _prepare(self) -> None:
        """Create the table or check that it exists, once per provider."""
        with self._ready_lock:
            if self._ready:
                return
            if self._create:
                self.create_table()
            else:
                with self.engine.connect() as conn:
                    exists = self._sa.inspect(conn).has_table(self.table.name)
                if not exists:
                    raise ProviderError(
                        f"SQL session store: table {self.table.name!r} does not exist and "
                        "GOSESSION_SQL_CREATE_TABLE is False; create it with your migrations "
                        "(SQLProvider.table) or SQLProvider.create_table()"
                    )
            self._ready = True

    def create_table(self) -> None:
        """Create the session table, the per-user index table and their
        indexes if missing.

        Safe to call from several processes at once: losing the race to
        create a table is not an error. Each race lost means another process
        created one of the two tables meanwhile, so after at most one loss
        per table the next attempt finds both.
        :raises sqlalchemy.exc.SQLAlchemyError: if the tables cannot be created.
        """
        sa = self._sa
        tables = (self.table, self.user_table)
        for attempt in range(1, len(tables) + 2):
            with self.engine.connect() as conn:
                try:
                    self.table.metadata.create_all(conn, checkfirst=True)
                    conn.commit()
                    return
                except sa.exc.DBAPIError as err:
                    if err.connection_invalidated:
                        raise
                    conn.rollback()
                    # Another process created one between our check and our CREATE.
                    inspector = sa.inspect(conn)
                    if all(inspector.has_table(table.name) for table in tables):
                        return
                    if attempt == len(tables) + 1:
                        raise

    # -- the provider contract -----------------------------------------------------

    def session_init(self, key: str, record: Record) -> None:
        params = {"k": key, "d": self.pack_checked(key, record), "a": record.atime}
        if self._upsert is not None:
            self._run("store the session", lambda conn: conn.execute(self._upsert, params), write=True)
            return
        for attempt in (1, 2, 3):
            try:
                self._run("store the session", lambda conn: self._update_or_insert(conn, params), write=True)
                return
            except ProviderError as err:
                # A concurrent insert of the same key won: the update now finds it.
                if attempt == 3 or not isinstance(err.__cause__, self._sa.exc.IntegrityError):
                    raise

    def session_create(self, key: str, record: Record) -> bool:
        params = {"k": key, "d": self.pack_checked(key, record), "a": record.atime}
        if self._insert_new is not None:
            if self._insert_new_returns:
                return self._run(
                    "create the session",
                    lambda conn: conn.execute(self._insert_new, params).first() is not None,
                    write=True,
                )
            rowcount = self._run(
                "create the session",
                lambda conn: conn.execute(self._insert_new, params).rowcount,
                write=True,
            )
            return rowcount == 1
        try:
            self._run("create the session", lambda conn: conn.execute(self._insert, params), write=True)
        except ProviderError as err:
            if isinstance(err.__cause__, self._sa.exc.IntegrityError):
                return False  # the key exists
            raise
        return True

    def _update_or_insert(self, conn: Connection, params: dict[str, t.Any]) -> None:
        """The portable upsert, for dialects without a native one."""
        with self._write_transaction(conn, params["k"]):
            if conn.execute(self._update, params).rowcount == 0:
                conn.execute(self._insert, params)

    def session_read(self, key: str, now: float) -> Record | None:
        row = self._run(
            "read the session", lambda conn: conn.execute(self._select, {"k": key}).first()
        )
        if row is None:
            return None
        record = self.unpack(row[0])
        record.atime = float(row[1])
        return record

    def session_update(self, key: str, change: Change) -> Outcome:
        def merge(conn: Connection) -> Outcome:
            with self._write_transaction(conn, key):
                row = conn.execute(self._select_locked, {"k": key}).first()
                if row is None:
                    return Outcome.MISSING
                record = self.unpack(row[0])
                record.atime = float(row[1])
                outcome = self.merge(record, change)
                if outcome is Outcome.APPLIED:
                    blob = self.pack_checked(key, record)  # raising rolls back
                    conn.execute(self._update, {"k": key, "d": blob, "a": record.atime})
                return outcome

        return self._run("update the session", merge, write=True)

    def session_touch(self, key: str, atime: float) -> None:
        self._run("touch the session", lambda conn: conn.execute(self._touch, {"k": key, "a": atime}), write=True)

    def session_destroy(self, key: str) -> None:
        self._run("destroy the session", lambda conn: conn.execute(self._delete, {"k": key}), write=True)

    def session_gc(self, max_lifetime: int) -> int:
        """One indexed ``DELETE ... WHERE atime <= now - max_lifetime``, and
        one ``DELETE`` of the expired user indexes.

        :returns: how many session rows were deleted.
        """
        now = self.clock()
        removed = self._run(
            "collect expired sessions",
            lambda conn: conn.execute(self._gc, {"deadline": now - max_lifetime}).rowcount,
            write=True,
        )
        self._run(
            "collect expired user indexes",
            lambda conn: conn.execute(self._index_gc, {"now": now}),
            write=True,
        )
        return int(removed)

    # -- administration ----------------------------------------------------------

    def session_count(self) -> int:
        return int(self._run("count sessions", lambda conn: conn.execute(self._count).scalar_one()))

    def session_clear(self) -> int:
        """Delete every session row and every user index; return how many sessions."""

        def clear(conn: Connection) -> int:
            conn.execute(self._index_clear)
            return int(conn.execute(self._clear).rowcount)

        return self._run("clear sessions", clear, write=True)

    # -- the per-user index ------------------------------------------------------

    def session_peek(self, keys: t.Sequence[str], now: float) -> dict[str, Record | None]:
        """One ``SELECT ... WHERE id IN (...)`` per :data:`PEEK_BATCH` keys."""
        records: dict[str, Record | None] = dict.fromkeys(keys)
        unique = list(records)
        for start in range(0, len(unique), PEEK_BATCH):
            params = {"keys": unique[start:start + PEEK_BATCH]}
            rows = self._run("read the sessions", lambda conn: conn.execute(self._peek, params).all())  # noqa: B023
            for key, data, atime in rows:
                try:
                    record = self.unpack(data)
                except CorruptRecordError:
                    continue
                record.atime = float(atime)
                records[key] = record
        return records

    def index_write(self, user: str, write: userindex.IndexWrite, now: float) -> userindex.IndexResult:
        return self._index_rewrite(user, write, now)[0]

    def index_read(self, user: str, now: float) -> list[userindex.IndexEntry]:
        row = self._run(
            "read the user index", lambda conn: conn.execute(self._index_select, {"k": user}).first()
        )
        blob = _live_blob(row, now)
        new, _, _, entries = userindex.rewrite(blob, None, now, user=user)
        if row is None or new == blob:
            return entries
        # Something to prune (or a corrupt or expired row to drop): in a
        # transaction, against what is there now.
        return self._index_rewrite(user, None, now)[1]

    def _index_rewrite(self, user: str, write: userindex.IndexWrite | None, now: float
                       ) -> tuple[userindex.IndexResult, list[userindex.IndexEntry]]:
        """One read-modify-write transaction on the index row of ``user``."""
        claim = self._index_claim

        def rewrite(conn: Connection) -> tuple[userindex.IndexResult, list[userindex.IndexEntry]]:
            with self._write_transaction(conn, user, claim):
                row = conn.execute(self._index_select_locked, {"k": user}).first()
                blob = _live_blob(row, now)
                new, expires, result, entries = userindex.rewrite(blob, write, now, user=user)
                if new is None:
                    if row is not None:
                        conn.execute(self._index_delete, {"k": user})
                elif row is None:  # only without a claim: a race is an IntegrityError
                    conn.execute(self._index_insert, {"k": user, "d": new, "e": expires})
                elif new != blob:
                    conn.execute(self._index_update, {"k": user, "d": new, "e": expires})
                return result, entries

        for attempt in (1, 2, 3):
            try:
                return self._run("write the user index", rewrite, write=True)
            except ProviderError as err:
                # Without a claim, a concurrent first write of this user
                # inserted the row: the next attempt reads and locks it.
                if claim is not None or attempt == 3 or not isinstance(
                    err.__cause__, self._sa.exc.IntegrityError
                ):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    counts_events = True

    def count_event(self, name: str) -> None:
        """One atomic ``UPDATE`` of the counter's row (an ``INSERT`` the
        first time; a lost race to insert it updates instead)."""
        params = {"k": EVENT_PREFIX + name}

        def bump(conn: Connection) -> int:
            return int(conn.execute(self._event_bump, params).rowcount)

        if self._run("count an event", bump, write=True) > 0:
            return
        try:
            self._run("count an event", lambda conn: conn.execute(self._event_insert, params),
                      write=True)
        except ProviderError as err:
            if not isinstance(err.__cause__, self._sa.exc.IntegrityError):
                raise
            self._run("count an event", bump, write=True)  # another process inserted it

    def event_counts(self) -> dict[str, int]:
        rows = self._run("read the event counters",
                         lambda conn: conn.execute(self._event_select).all())
        return parse_counts({
            str(row[0])[len(EVENT_PREFIX):]: round(float(row[1]) - EVENT_BASE)
            for row in rows if float(row[1]) > EVENT_BASE
        })

    def session_keys(self) -> t.Iterator[str]:
        query = self._sa.select(self.table.c.id)
        keys = self._run("list sessions", lambda conn: [str(row[0]) for row in conn.execute(query)])
        return iter(keys)

    # -- another library's table (imports) ----------------------------------

    def _legacy_table(self, conn: Connection, name: str, schema: str | None) -> t.Any:
        """Flask-Session's table ``name`` (columns ``session_id``, ``data``,
        ``expiry``) on our engine, or ``None`` if it does not exist."""
        sa = self._sa
        if not sa.inspect(conn).has_table(name, schema=schema):
            return None
        return sa.table(name, sa.column("session_id", sa.String), sa.column("data", sa.LargeBinary),
                        sa.column("expiry", sa.DateTime), schema=schema)

    def legacy_row(self, table: str, schema: str | None, session_id: str
                   ) -> tuple[bytes, datetime.datetime | None] | None:
        """``data`` and ``expiry`` (naive UTC, as Flask-Session writes it) of
        the row whose ``session_id`` is ``session_id`` in Flask-Session's
        ``table``; ``None`` if there is no such row or table.

        :raises CorruptRecordError: if the row's expiry cannot be parsed.
        :raises ProviderError: if the database fails.
        """

        def read(conn: Connection) -> tuple[bytes, datetime.datetime | None] | None:
            legacy = self._legacy_table(conn, table, schema)
            if legacy is None:
                return None
            query = self._sa.select(legacy.c.data, legacy.c.expiry).where(legacy.c.session_id == session_id)
            try:
                row = conn.execute(query.limit(1)).first()
            except (ValueError, TypeError) as err:  # an expiry the driver cannot parse
                raise CorruptRecordError("Flask-Session row cannot be read") from err
            if row is None or row[0] is None:
                return None
            data = row[0].encode("utf-8", "surrogateescape") if isinstance(row[0], str) else bytes(row[0])
            return data, (row[1] if isinstance(row[1], datetime.datetime) else None)

        return self._run("read a Flask-Session record", read)

    def legacy_delete(self, table: str, schema: str | None, session_id: str) -> None:
        """Delete the row :meth:`legacy_row` reads, if there is one.

        :raises ProviderError: if the database fails.
        """

        def delete(conn: Connection) -> None:
            legacy = self._legacy_table(conn, table, schema)
            if legacy is not None:
                conn.execute(self._sa.delete(legacy).where(legacy.c.session_id == session_id))

        self._run("delete a Flask-Session record", delete, write=True)

    def close(self) -> None:
        """Dispose of the engine if this provider created it; a shared one is left alone."""
        if self._owns_engine:
            self.engine.dispose()


def _data_column(sa: t.Any) -> t.Any:
    """The ``data`` column of both tables: an encoded blob."""
    from sqlalchemy.dialects.mysql import MEDIUMBLOB

    # BLOB on MySQL stops at 64 KiB; MEDIUMBLOB holds 16 MiB.
    return sa.Column("data", sa.LargeBinary().with_variant(MEDIUMBLOB(), "mysql", "mariadb"), nullable=False)


#: The index-table rows of the event counters: ``user_key`` is this prefix
#: and the counter's name (never 64 hex digits, so never a user), and
#: ``expires`` is :data:`EVENT_BASE` plus the count.
EVENT_PREFIX = "event:"
EVENT_BASE = 1e15


def _make_table(sa: t.Any, name: str) -> t.Any:
    metadata = sa.MetaData()
    index = _index_name(name, "atime")
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.String(64), primary_key=True),
        _data_column(sa),
        sa.Column("atime", sa.Double(), nullable=False),
        sa.Index(index, "atime"),
    )


def _make_user_table(sa: t.Any, metadata: t.Any, sessions: str) -> t.Any:
    name = sessions + "_users"
    if len(name) > 63:
        name = "gs_" + hashlib.sha256(sessions.encode()).hexdigest()[:20] + "_users"
    return sa.Table(
        name,
        metadata,
        sa.Column("user_key", sa.String(64), primary_key=True),
        _data_column(sa),
        sa.Column("expires", sa.Double(), nullable=False),
        sa.Index(_index_name(name, "expires"), "expires"),
    )


def _index_name(table: str, column: str) -> str:
    """``ix_<table>_<column>``, shortened to fit identifier limits
    (PostgreSQL 63, MySQL 64)."""
    index = f"ix_{table}_{column}"
    if len(index) > 63:
        index = "ix_" + hashlib.sha256(table.encode()).hexdigest()[:20] + "_" + column
    return index


def _live_blob(row: t.Any, now: float) -> bytes | None:
    """The index blob of a row, or ``None`` for no row or an expired one
    (a claimed, not yet written row has ``expires`` 0)."""
    if row is None or float(row[1]) <= now:
        return None
    return bytes(row[0])


def _create_engine(
    sa: t.Any, url: str | URL, timeout: float, options: t.Mapping[str, t.Any]
) -> Engine:
    """Create the engine this provider owns.

    :raises ConfigError: for an unparseable URL, an unknown driver, an
        in-memory SQLite database, or options SQLAlchemy rejects.
    """
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, TypeError, ValueError) as err:
        raise ConfigError(f"GOSESSION_SQL_URL={url!r} is not a usable database URL: {err}") from err
    scheme, plus, driver_name = parsed.drivername.partition("+")
    if scheme == "postgres":
        # Heroku-style DATABASE_URLs still use the alias SQLAlchemy 1.4
        # removed; say so rather than "Can't load plugin".
        fixed = parsed.set(drivername="postgresql" + plus + driver_name)
        raise ConfigError(
            "GOSESSION_SQL_URL uses the scheme 'postgres://', which SQLAlchemy no "
            "longer accepts (the alias was removed in 1.4): write 'postgresql://', "
            f"as in {fixed.render_as_string(hide_password=True)!r}"
        )
    try:
        backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, TypeError, ValueError) as err:
        raise ConfigError(f"GOSESSION_SQL_URL={url!r} is not a usable database URL: {err}") from err
    options = dict(options)
    if "isolation_level" in options:
        raise ConfigError(
            "GOSESSION_SQL_ENGINE_OPTIONS may not set isolation_level: the provider "
            "uses autocommit connections and opens its own transactions"
        )
    if backend == "sqlite":
        database = parsed.database or ""
        if database in ("", ":memory:") or "mode=memory" in str(parsed.query):
            raise ConfigError(
                "GOSESSION_SQL_URL: an in-memory SQLite database is not shared between "
                "connections; give a file path"
            )
        if not database.startswith("file:"):
            _create_private_file(os.path.abspath(database))
    extra_args = options.pop("connect_args", {})
    if not isinstance(extra_args, t.Mapping):
        raise ConfigError(f"GOSESSION_SQL_ENGINE_OPTIONS['connect_args'] must be a dict, got {extra_args!r}")
    connect_args = _timeout_args(backend, driver, timeout)
    connect_args.update(extra_args)
    kwargs: dict[str, t.Any] = {
        # No pool_pre_ping: _run retries once on a connection that died in
        # use, so a ping per checkout would only add a round trip.
        # Parameters carry session data: keep them out of error messages.
        "hide_parameters": True,
    }
    if backend in ("mysql", "mariadb") and _supports_skip_autocommit_rollback(sa):
        # The pool's rollback-on-return would cost MySQL a round trip per
        # operation; autocommit connections have nothing to roll back (a
        # failed explicit transaction is rolled back by _write_transaction).
        kwargs["skip_autocommit_rollback"] = True
    if backend in _BEGIN:
        kwargs["isolation_level"] = "AUTOCOMMIT"
    kwargs.update(options)
    try:
        return t.cast("Engine", sa.create_engine(parsed, connect_args=connect_args, **kwargs))
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, TypeError) as err:
        raise ConfigError(f"GOSESSION_SQL_URL / GOSESSION_SQL_ENGINE_OPTIONS: {err}") from err
    except ImportError as err:
        raise ConfigError(
            f"GOSESSION_SQL_URL: the database driver for {backend}+{driver} is not installed: {err}"
        ) from err


def _default_sqlite_path(app: Flask) -> str:
    return os.path.join(app.instance_path, "gosession.sqlite3")


def _create_private_file(path: str) -> None:
    """Create the SQLite database file 0600 (its directory 0700) if missing.

    SQLite would create it with the process's umask, usually 0644, and
    gives its journal and WAL files the database file's mode.
    :raises ConfigError: if either cannot be created.
    """
    directory = os.path.dirname(path)
    try:
        if not os.path.isdir(directory):
            os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | getattr(os, "O_CLOEXEC", 0), 0o600)
    except FileExistsError:
        return
    except OSError as err:
        raise ConfigError(f"GOSESSION_SQL_URL: cannot create {path!r}: {err.strerror}") from err
    os.close(fd)


def _check_default_sqlite(path: str) -> None:
    """Refuse a default SQLite database another local user could write.

    Its directory is created 0700 if missing and must not be world-writable
    (anyone could then plant the file, or a hot journal next to it); an
    existing file must be a regular file (no symbolic link), owned by the
    effective user and not writable by group or others.
    :raises ConfigError: naming the path, the problem and the fix.
    """
    directory = os.path.dirname(path)
    _create_private_file(path)  # a no-op for an existing file
    try:
        dir_mode = os.stat(directory).st_mode
        st = os.lstat(path)
    except OSError as err:
        raise ConfigError(f"GOSESSION_SQL_URL: cannot inspect {path!r}: {err.strerror}") from err
    if dir_mode & stat.S_IWOTH:
        raise ConfigError(
            f"GOSESSION_SQL_URL: the directory {directory!r} of the default SQLite session "
            f"database is world-writable (mode {stat.S_IMODE(dir_mode):04o}), so another local "
            f"user could replace the database. Fix: chmod o-w {shlex.quote(directory)}, or set "
            "GOSESSION_SQL_URL to a private location."
        )
    quoted = shlex.quote(path)
    euid = os.geteuid()
    problem = fix = ""
    if stat.S_ISLNK(st.st_mode):
        problem, fix = "is a symbolic link", f"replace it with the real file ({quoted})"
    elif not stat.S_ISREG(st.st_mode):
        problem, fix = "is not a regular file", f"remove {quoted}"
    elif st.st_uid != euid:
        problem = f"is owned by uid {st.st_uid}, not by this process's user (uid {euid})"
        fix = f"chown {euid} {quoted} && chmod 600 {quoted}, or remove it if you did not create it"
    elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
        fix = f"chmod 600 {quoted}"
    if problem:
        raise ConfigError(
            f"GOSESSION_SQL_URL: the default SQLite session database {path!r} {problem}, "
            f"so another local user could forge sessions. Fix: {fix}."
        )


def _timeout_args(backend: str, driver: str, timeout: float) -> dict[str, t.Any]:
    """Driver connect arguments that bound how long a call can hang."""
    whole = max(1, math.ceil(timeout))
    if backend == "sqlite":
        return {"timeout": float(timeout)}
    if backend == "postgresql":
        if driver in ("psycopg", "psycopg2", "psycopg2cffi"):
            return {"connect_timeout": whole}
        if driver == "pg8000":
            return {"timeout": whole}
    if backend in ("mysql", "mariadb") and driver in ("pymysql", "mysqldb", "mariadbconnector"):
        # pymysql's connect_timeout does not cover the handshake: a server
        # that accepts but never answers needs read_timeout.
        return {"connect_timeout": whole, "read_timeout": whole, "write_timeout": whole}
    return {}


def _supports_skip_autocommit_rollback(sa: t.Any) -> bool:
    """``create_engine(skip_autocommit_rollback=...)`` exists from SQLAlchemy 2.0.43."""
    from sqlalchemy.engine.default import DefaultDialect

    return "skip_autocommit_rollback" in inspect.signature(DefaultDialect.__init__).parameters


def _is_autocommit(engine: Engine) -> bool:
    """Whether ``engine``'s connections autocommit (mirrors SQLAlchemy's own test)."""
    level = engine.get_execution_options().get("isolation_level")
    if level is None:
        level = getattr(engine.dialect, "_on_connect_isolation_level", None)
    return level == "AUTOCOMMIT"
