"""Behaviour of the ``sql`` provider beyond the shared contract.

Every test talks to a real database: SQLite in a temporary file, and the
PostgreSQL and MariaDB servers named by ``GOSESSION_TEST_POSTGRES_URL`` and
``GOSESSION_TEST_MARIADB_URL`` (see ``tests/backends/sql.py``). Statements
are observed with SQLAlchemy's own events; nothing is mocked.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import socket
import sqlite3
import stat
import sys
import threading
import time
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask

from clock import FakeClock
from flask_gosession.errors import ConfigError, CorruptRecordError, ProviderError, RecordTooLarge
from flask_gosession.providers.base import Change, Outcome, Record
from flask_gosession.providers.sql import SQLProvider

SQL_BACKENDS = ["sql_sqlite", "sql_postgresql", "sql_mariadb"]
SERVER_BACKENDS = ["sql_postgresql", "sql_mariadb"]


def new_key() -> str:
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


def rec(now: float, **data: t.Any) -> Record:
    return Record(data=dict(data), meta={"c": now}, atime=now)


@pytest.fixture
def make(tmp_path):  # type: ignore[no-untyped-def]
    """``make(config, **overrides)`` builds providers as init_app would, and closes them."""
    made: list[SQLProvider] = []

    def build(config: dict[str, t.Any], **overrides: t.Any) -> SQLProvider:
        app = Flask(__name__, instance_path=str(tmp_path / "instance"))
        app.config.update(config)
        app.config.update(overrides)
        for key, value in SQLProvider.config_defaults(app).items():
            app.config.setdefault(key, value)
        prov = SQLProvider.from_config(app)
        prov.clock = FakeClock()
        made.append(prov)
        return prov

    yield build
    for prov in made:
        prov.close()


@pytest.fixture(params=SQL_BACKENDS)
def sql_config(request) -> dict[str, t.Any]:  # type: ignore[no-untyped-def]
    return request.getfixturevalue(f"backend_{request.param}")


@pytest.fixture(params=SERVER_BACKENDS)
def server_config(request) -> dict[str, t.Any]:  # type: ignore[no-untyped-def]
    return request.getfixturevalue(f"backend_{request.param}")


@pytest.fixture
def provider(make, sql_config) -> SQLProvider:  # type: ignore[no-untyped-def]
    """A provider on an engine it creates (autocommit, one round trip per call)."""
    return make(sql_config)


@pytest.fixture(params=["owned", "shared", "shared-autocommit"])
def any_provider(request, make, sql_config):  # type: ignore[no-untyped-def]
    """A provider on its own engine, on a shared transactional engine, or on
    a shared autocommit engine: the three ways transactions are run."""
    if request.param == "owned":
        yield make(sql_config)
        return
    options = {"isolation_level": "AUTOCOMMIT"} if request.param == "shared-autocommit" else {}
    engine = sa.create_engine(sql_config["GOSESSION_SQL_URL"], **options)
    try:
        yield make({"GOSESSION_SQL_TABLE": sql_config["GOSESSION_SQL_TABLE"]}, GOSESSION_SQL_ENGINE=engine)
    finally:
        engine.dispose()


@contextlib.contextmanager
def statements(engine: sa.Engine) -> t.Iterator[list[str]]:
    """Collect the SQL statements sent through ``engine`` (whitespace-normalised)."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append(" ".join(statement.split()))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


# -- statements and round trips ------------------------------------------------------


def test_each_operation_is_one_statement(provider):
    key, now = new_key(), provider.clock()
    provider.session_init(new_key(), rec(now))  # creates the table first
    with statements(provider.engine) as seen:
        provider.session_init(key, rec(now, a=1))
    assert len(seen) == 1 and seen[0].startswith("INSERT INTO")
    for call, verb in [
        (lambda: provider.session_read(key, now), "SELECT"),
        (lambda: provider.session_touch(key, now + 1), "UPDATE"),
        (lambda: provider.session_destroy(key), "DELETE"),
        (lambda: provider.session_count(), "SELECT"),
    ]:
        with statements(provider.engine) as seen:
            call()
        assert len(seen) == 1 and seen[0].startswith(verb), seen


def test_gc_is_one_delete_on_the_indexed_atime_and_one_on_the_index_expiry(provider):
    now = provider.clock()
    old = [new_key() for _ in range(3)]
    for key in old:
        provider.session_init(key, rec(now - 3600))
    live = new_key()
    provider.session_init(live, rec(now - 3599))
    with statements(provider.engine) as seen:
        assert provider.session_gc(3600) == 3
    assert len(seen) == 2
    assert seen[0].startswith("DELETE FROM") and "atime <=" in seen[0]
    users = provider.user_table.name
    assert seen[1].startswith("DELETE FROM") and users in seen[1] and "expires <=" in seen[1]
    assert provider.session_count() == 1
    assert provider.session_read(live, now) is not None
    inspector = sa.inspect(provider.engine)
    assert any(index["column_names"] == ["atime"] for index in inspector.get_indexes(provider.table.name))
    assert any(index["column_names"] == ["expires"] for index in inspector.get_indexes(users))


def test_update_is_one_locked_transaction(provider):
    key, now = new_key(), provider.clock()
    provider.session_init(key, rec(now, a=1))
    with statements(provider.engine) as seen:
        assert provider.session_update(key, Change(set={"b": 2}, atime=now)) is Outcome.APPLIED
    assert seen[0] in ("BEGIN", "BEGIN IMMEDIATE", "START TRANSACTION")
    assert seen[1].startswith("SELECT")
    if provider.engine.dialect.name != "sqlite":  # SQLite locks the database instead
        assert seen[1].endswith("FOR UPDATE")
    assert seen[2].startswith("UPDATE")
    assert seen[3] == "COMMIT"
    assert len(seen) == 4


def test_missing_and_forwarded_updates_write_nothing(any_provider):
    prov, now = any_provider, any_provider.clock()
    missing, forwarded = new_key(), new_key()
    prov.session_init(forwarded, Record(data={"a": 1}, meta={"f": "elsewhere"}, atime=now))
    with statements(prov.engine) as seen:
        assert prov.session_update(missing, Change(set={"a": 1}, atime=now)) is Outcome.MISSING
        assert prov.session_update(forwarded, Change(set={"a": 2}, atime=now + 1)) is Outcome.FORWARDED
    assert not any(s.startswith("INSERT") or "data=" in s for s in seen), seen
    assert prov.session_count() == 1
    got = prov.session_read(forwarded, now)
    assert got.data == {"a": 1} and got.atime == pytest.approx(now, rel=0, abs=0.01)


def test_touch_changes_only_atime(any_provider):
    key, now = new_key(), any_provider.clock()
    any_provider.session_init(key, rec(now, a=1))
    table = any_provider.table

    def raw() -> tuple[bytes, float]:
        with any_provider.engine.connect() as conn:
            row = conn.execute(sa.select(table.c.data, table.c.atime).where(table.c.id == key)).one()
        return bytes(row[0]), row[1]

    data_before, _ = raw()
    any_provider.session_touch(key, now + 30)
    data_after, atime = raw()
    assert data_after == data_before
    assert atime == pytest.approx(now + 30, rel=0, abs=0.01)
    assert any_provider.session_read(key, now + 31).atime == pytest.approx(now + 30, rel=0, abs=0.01)


def test_large_records_round_trip(any_provider):
    key, now = new_key(), any_provider.clock()
    big = secrets.token_hex(150_000)  # 300 KB: beyond MySQL's 64 KiB BLOB
    any_provider.session_init(key, rec(now, big=big))
    assert any_provider.session_read(key, now).data == {"big": big}


# -- concurrency ---------------------------------------------------------------------------


def run_threads(target: t.Callable[[int], None], count: int) -> list[BaseException]:
    errors: list[BaseException] = []

    def guarded(n: int) -> None:
        try:
            target(n)
        except BaseException as err:  # pragma: no cover - reported by the caller
            errors.append(err)

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(count)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not any(th.is_alive() for th in threads)
    return errors


def test_concurrent_inits_of_one_key_never_conflict(any_provider):
    key, now = new_key(), any_provider.clock()

    def init(n: int) -> None:
        for i in range(15):
            any_provider.session_init(key, rec(now, writer=n, i=i))

    assert run_threads(init, 12) == []
    got = any_provider.session_read(key, now).data
    assert got["i"] == 14 and 0 <= got["writer"] < 12
    assert any_provider.session_count() == 1


@pytest.mark.parametrize("backend", ["sql_sqlite", "sql_postgresql"])
def test_portable_upsert_for_other_dialects(request, make, backend):
    """The update-then-insert fallback, run on real databases by switching
    off the native upsert (MySQL is excluded: its gap locks turn the
    fallback's race into deadlocks, and it always has the native one)."""
    prov = make(request.getfixturevalue(f"backend_{backend}"))
    prov._upsert = None
    key, now = new_key(), prov.clock()

    def init(n: int) -> None:
        for i in range(10):
            prov.session_init(key, rec(now, writer=n, i=i))

    assert run_threads(init, 8) == []
    assert prov.session_read(key, now).data["i"] == 9
    assert prov.session_count() == 1


def test_concurrent_updates_of_different_keys_all_survive(any_provider):
    key, now = new_key(), any_provider.clock()
    any_provider.session_init(key, rec(now, base=0))

    def update(n: int) -> None:
        for i in range(25):
            out = any_provider.session_update(key, Change(set={f"k{n}": i}, atime=now))
            assert out is Outcome.APPLIED

    assert run_threads(update, 8) == []
    expected: dict[str, t.Any] = {f"k{n}": 24 for n in range(8)}
    expected["base"] = 0
    assert any_provider.session_read(key, now).data == expected


def test_update_racing_destroy_never_resurrects(any_provider):
    now = any_provider.clock()
    for _ in range(10):
        key = new_key()
        any_provider.session_init(key, rec(now))

        def update(n: int, key: str = key) -> None:
            for i in range(10):
                any_provider.session_update(key, Change(set={f"k{n}": i}, atime=now))

        destroyer = threading.Thread(target=any_provider.session_destroy, args=(key,))
        destroyer.start()
        assert run_threads(update, 3) == []
        destroyer.join(60)
        assert any_provider.session_read(key, now) is None


def test_corrupt_record_in_update_rolls_back(any_provider):
    key, other, now = new_key(), new_key(), any_provider.clock()
    any_provider.session_init(other, rec(now, a=1))
    with any_provider.engine.begin() as conn:
        conn.execute(any_provider.table.insert().values(id=key, data=b"\xffjunk", atime=now))
    with pytest.raises(CorruptRecordError):
        any_provider.session_update(key, Change(set={"a": 2}, atime=now))
    # Nothing was left locked: the next write (on SQLite, to any row) goes through.
    assert any_provider.session_update(other, Change(set={"a": 2}, atime=now)) is Outcome.APPLIED
    any_provider.session_destroy(key)
    assert any_provider.session_read(key, now) is None


# -- table creation --------------------------------------------------------------------------


def test_create_table_false_leaves_table_absent(make, sql_config):
    prov = make(sql_config, GOSESSION_SQL_CREATE_TABLE=False)
    now = prov.clock()
    with pytest.raises(ProviderError, match="GOSESSION_SQL_CREATE_TABLE") as info:
        prov.session_read(new_key(), now)
    assert prov.table.name in str(info.value)
    assert not sa.inspect(prov.engine).has_table(prov.table.name)
    prov.create_table()  # as a migration would
    key = new_key()
    prov.session_init(key, rec(now, a=1))
    assert prov.session_read(key, now).data == {"a": 1}


def test_providers_racing_to_create_the_table(make, sql_config):
    providers = [make(sql_config) for _ in range(4)]
    now = providers[0].clock()
    keys = [new_key() for _ in providers]

    def init(n: int) -> None:
        providers[n].session_init(keys[n], rec(now, n=n))

    assert run_threads(init, len(providers)) == []
    assert all(providers[0].session_read(key, now).data == {"n": n} for n, key in enumerate(keys))


# -- engines and configuration ------------------------------------------------------------------


def test_default_is_sqlite_in_instance_path(make, tmp_path):
    prov = make({})
    assert prov.engine.dialect.name == "sqlite"
    assert prov.engine.url.database == str(tmp_path / "instance" / "gosession.sqlite3")
    assert prov.table.name == "gosessions"
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1))
    assert (tmp_path / "instance" / "gosession.sqlite3").exists()


# -- the SQLite database file: private ------------------------------------------------------

def test_default_sqlite_file_is_created_0600_in_a_private_directory(make, tmp_path):
    old_umask = os.umask(0)  # SQLite alone would create it 0666 & ~umask
    try:
        prov = make({})
        prov.session_init(new_key(), rec(prov.clock(), a=1))
    finally:
        os.umask(old_umask)
    path = tmp_path / "instance" / "gosession.sqlite3"
    assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    make({})  # an existing private database is accepted on the next start


def test_configured_sqlite_file_is_created_0600(make, backend_sql_sqlite, tmp_path):
    prov = make(backend_sql_sqlite)
    prov.session_init(new_key(), rec(prov.clock(), a=1))
    assert stat.S_IMODE(os.lstat(tmp_path / "sessions.sqlite3").st_mode) == 0o600


def test_default_sqlite_in_a_world_writable_directory_is_refused(make, tmp_path):
    instance = tmp_path / "instance"
    instance.mkdir()
    os.chmod(instance, 0o777)
    with pytest.raises(ConfigError) as info:
        make({})
    message = str(info.value)
    assert str(instance) in message and "world-writable" in message
    assert f"chmod o-w {instance}" in message


@pytest.mark.parametrize("problem", ["other-owner", "group-writable", "symlink"])
def test_precreated_default_sqlite_file_is_refused(make, tmp_path, problem):
    instance = tmp_path / "instance"
    instance.mkdir(mode=0o755)
    path = instance / "gosession.sqlite3"
    if problem == "symlink":
        (tmp_path / "elsewhere.sqlite3").write_bytes(b"")
        path.symlink_to(tmp_path / "elsewhere.sqlite3")
    else:
        path.write_bytes(b"")
        if problem == "group-writable":
            os.chmod(path, 0o664)
        else:
            if os.geteuid() != 0:
                pytest.skip("chown to another uid needs root")
            os.chmod(path, 0o600)
            os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError) as info:
        make({})
    message = str(info.value)
    assert str(path) in message and "Fix:" in message


# -- the size limit -----------------------------------------------------------------------------


def test_oversized_record_is_refused_and_nothing_changes(make, sql_config):
    prov = make(sql_config, GOSESSION_MAX_RECORD_SIZE=4096)
    key, now = new_key(), prov.clock()
    with pytest.raises(RecordTooLarge) as info:
        prov.session_init(key, rec(now, big="x" * 5000))
    assert info.value.limit == 4096 and info.value.size > 5000 and info.value.label == key[:12]
    assert prov.session_read(key, now) is None
    prov.session_init(key, rec(now, a=1))
    with pytest.raises(RecordTooLarge):
        prov.session_update(key, Change(set={"big": "x" * 5000}, atime=now + 1))
    # Rolled back: the row is as it was, and its lock is released.
    got = prov.session_read(key, now)
    assert got.data == {"a": 1} and got.atime == now
    assert prov.session_update(key, Change(set={"b": 2}, atime=now)) is Outcome.APPLIED
    assert prov.session_read(key, now).data == {"a": 1, "b": 2}


@pytest.mark.parametrize("dialect, limit", [
    ("sql_sqlite", 1_000_000_000), ("sql_postgresql", 2**30 - 1), ("sql_mariadb", 2**24 - 1),
])
def test_without_a_cap_the_column_limit_applies(request, make, dialect, limit):
    prov = make(request.getfixturevalue(f"backend_{dialect}"), GOSESSION_MAX_RECORD_SIZE=None)
    assert prov.max_record_size == limit
    if dialect == "sql_mariadb":
        # MEDIUMBLOB holds 16 MiB - 1; outside strict mode MariaDB would
        # silently truncate a longer value, so it is refused first.
        key, now = new_key(), prov.clock()
        with pytest.raises(RecordTooLarge, match="data column"):
            prov.session_init(key, rec(now, big="x" * 2**24))
        assert prov.session_read(key, now) is None


def test_the_cap_defaults_to_one_mib(make, backend_sql_sqlite):
    assert make(backend_sql_sqlite).max_record_size == 1024 * 1024


def test_shared_engine_is_reused_and_not_disposed(make, sql_config):
    engine = sa.create_engine(sql_config["GOSESSION_SQL_URL"])
    try:
        prov = make({"GOSESSION_SQL_TABLE": sql_config["GOSESSION_SQL_TABLE"]}, GOSESSION_SQL_ENGINE=engine)
        assert prov.engine is engine
        key, now = new_key(), prov.clock()
        prov.session_init(key, rec(now, a=1))
        assert prov.session_update(key, Change(set={"b": 2}, atime=now)) is Outcome.APPLIED
        assert prov.session_read(key, now).data == {"a": 1, "b": 2}
        prov.close()
        assert engine.pool.checkedin() >= 1  # not disposed
        with engine.connect() as conn:
            # The application's connections keep their own isolation level.
            assert conn.get_isolation_level() != "AUTOCOMMIT"
            assert conn.execute(sa.select(sa.func.count()).select_from(prov.table)).scalar() == 1
    finally:
        engine.dispose()


def test_engine_options_are_passed_through(make, backend_sql_postgresql):
    prov = make(
        backend_sql_postgresql,
        GOSESSION_SQL_ENGINE_OPTIONS={"pool_size": 2, "connect_args": {"application_name": "gs-test"}},
    )
    assert prov.engine.pool.size() == 2
    with prov.engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW application_name").scalar() == "gs-test"


@pytest.mark.parametrize(
    "config",
    [
        {"GOSESSION_SQL_URL": "sqlite://"},
        {"GOSESSION_SQL_URL": "sqlite:///:memory:"},
        {"GOSESSION_SQL_URL": "not a url"},
        {"GOSESSION_SQL_URL": "nosuchdb://x/y"},
        {"GOSESSION_SQL_TABLE": ""},
        {"GOSESSION_SQL_TABLE": "x" * 64},
        {"GOSESSION_SQL_TIMEOUT": 0},
        {"GOSESSION_SQL_TIMEOUT": -1},
        {"GOSESSION_SQL_TIMEOUT": "5s"},
        {"GOSESSION_SQL_TIMEOUT": "nan"},
        {"GOSESSION_SQL_TIMEOUT": True},
        {"GOSESSION_SQL_CREATE_TABLE": "maybe"},
        {"GOSESSION_SQL_URL": "postgres://postgres@127.0.0.1:5432/test"},
        {"GOSESSION_SQL_ENGINE": "sqlite:///x.db"},
        {"GOSESSION_SQL_ENGINE_OPTIONS": [("pool_size", 2)]},
        {"GOSESSION_SQL_ENGINE_OPTIONS": {"isolation_level": "SERIALIZABLE"}},
        {"GOSESSION_SQL_ENGINE_OPTIONS": {"no_such_option": 1}},
        {"GOSESSION_SQL_ENGINE_OPTIONS": {"connect_args": "timeout=3"}},
    ],
    ids=repr,
)
def test_bad_config_is_rejected(make, config):
    with pytest.raises(ConfigError):
        make(config)


def test_numbers_and_flags_from_the_environment_are_accepted(make, backend_sql_sqlite):
    prov = make(backend_sql_sqlite, GOSESSION_SQL_TIMEOUT=" 0.75 ", GOSESSION_SQL_CREATE_TABLE="no")
    with prov.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 750
    with pytest.raises(ProviderError, match="gs_"):  # no table, and none created
        prov.session_read("0" * 64, 0.0)


@pytest.mark.parametrize("scheme", ["postgres", "postgres+psycopg"])
def test_postgres_scheme_gets_a_hint_without_the_password(make, scheme):
    with pytest.raises(ConfigError) as info:
        make({"GOSESSION_SQL_URL": f"{scheme}://app:s3cret@db.internal:5432/prod"})
    message = str(info.value)
    fixed = scheme.replace("postgres", "postgresql")
    assert "'postgres://'" in message and "postgresql://" in message
    assert f"{fixed}://app:***@db.internal:5432/prod" in message
    assert "s3cret" not in message


def test_missing_sqlalchemy_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    with pytest.raises(ConfigError, match=r"pip install flask-gosession\[sql\]"):
        SQLProvider(f"sqlite:///{tmp_path}/x.db")


# -- failures and timeouts -------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def silent_server() -> t.Iterator[int]:
    """A loopback port whose kernel accepts connections that are never answered."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


DRIVER_URLS = {
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:{port}/test",
    "mariadb": "mysql+pymysql://root@127.0.0.1:{port}/test",
}


@pytest.mark.parametrize("dialect", sorted(DRIVER_URLS))
def test_unreachable_server_raises_provider_error(make, dialect):
    prov = make({"GOSESSION_SQL_URL": DRIVER_URLS[dialect].format(port=closed_port())})
    for call in (
        lambda: prov.session_read(new_key(), 0.0),
        lambda: prov.session_init(new_key(), rec(0.0)),
        lambda: prov.session_gc(10),
    ):
        with pytest.raises(ProviderError) as info:
            call()
        assert isinstance(info.value.__cause__, sa.exc.SQLAlchemyError)


@pytest.mark.parametrize("dialect", sorted(DRIVER_URLS))
def test_timeout_bounds_a_silent_server(make, dialect):
    with silent_server() as port:
        prov = make({"GOSESSION_SQL_URL": DRIVER_URLS[dialect].format(port=port)}, GOSESSION_SQL_TIMEOUT=1)
        started = time.monotonic()
        with pytest.raises(ProviderError):
            prov.session_read(new_key(), 0.0)
        # libpq rounds connect timeouts below 2 s up to 2 s.
        assert time.monotonic() - started < 5


def test_sqlite_timeout_is_the_busy_timeout(make, backend_sql_sqlite):
    prov = make(backend_sql_sqlite, GOSESSION_SQL_TIMEOUT=0.3)
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1))
    path = prov.engine.url.database
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        started = time.monotonic()
        with pytest.raises(ProviderError, match="locked"):
            prov.session_update(key, Change(set={"a": 2}, atime=now))
        assert 0.25 <= time.monotonic() - started < 5
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()
    assert prov.session_update(key, Change(set={"a": 2}, atime=now)) is Outcome.APPLIED


# -- recovering from killed connections --------------------------------------------------------


def backend_id(engine: sa.Engine) -> int:
    query = "SELECT pg_backend_pid()" if engine.dialect.name == "postgresql" else "SELECT CONNECTION_ID()"
    with engine.connect() as conn:
        return int(conn.exec_driver_sql(query).scalar())


def kill(admin: sa.Engine, pid: int) -> None:
    """Terminate one server connection and wait until the server dropped it."""
    postgres = admin.dialect.name == "postgresql"
    with admin.connect() as conn:
        if postgres:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            alive = sa.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid")
        else:
            conn.exec_driver_sql(f"KILL {int(pid)}")
            alive = sa.text("SELECT count(*) FROM information_schema.processlist WHERE id = :pid")
        deadline = time.monotonic() + 10
        while conn.execute(alive, {"pid": pid}).scalar():
            assert time.monotonic() < deadline, "the server did not drop the connection"
            time.sleep(0.02)


@pytest.fixture
def admin(request, server_config):  # type: ignore[no-untyped-def]
    name = "postgresql" if "postgresql" in server_config["GOSESSION_SQL_URL"] else "mariadb"
    return request.getfixturevalue(f"sql_admin_{name}")


def test_owned_engine_recovers_from_killed_connections(make, server_config, admin):
    prov = make(server_config)
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1))
    assert prov.engine.pool.checkedin() == 1
    kill(admin, backend_id(prov.engine))
    # The dead pooled connection fails in use and the read is retried on a
    # fresh one: the caller sees no error.
    assert prov.session_read(key, now).data == {"a": 1}
    kill(admin, backend_id(prov.engine))
    assert prov.session_update(key, Change(set={"b": 2}, atime=now)) is Outcome.APPLIED
    assert prov.session_read(key, now).data == {"a": 1, "b": 2}


def test_shared_engine_without_pre_ping_recovers_by_retrying(make, server_config, admin):
    engine = sa.create_engine(server_config["GOSESSION_SQL_URL"], pool_pre_ping=False)
    disconnects: list[bool] = []
    sa.event.listen(engine, "handle_error", lambda ctx: disconnects.append(ctx.is_disconnect))
    try:
        prov = make({"GOSESSION_SQL_TABLE": server_config["GOSESSION_SQL_TABLE"]}, GOSESSION_SQL_ENGINE=engine)
        key, now = new_key(), prov.clock()
        prov.session_init(key, rec(now, a=1))
        for call in (
            lambda: prov.session_read(key, now).data == {"a": 1},
            lambda: prov.session_update(key, Change(set={"b": 2}, atime=now)) is Outcome.APPLIED,
            lambda: prov.session_gc(3600) == 0,
        ):
            assert engine.pool.checkedin() == 1
            kill(admin, backend_id(engine))
            disconnects.clear()
            assert call()
            assert disconnects == [True]  # seen once, then retried on a fresh connection
        assert prov.session_read(key, now).data == {"a": 1, "b": 2}
    finally:
        engine.dispose()
