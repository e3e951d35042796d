"""The SQL backends: SQLite in a temporary file, PostgreSQL and MariaDB servers.

Each test gets its own table (``gs_<random hex>``), dropped afterwards, so
tests never see each other's rows. Server URLs come from
``GOSESSION_TEST_POSTGRES_URL`` and ``GOSESSION_TEST_MARIADB_URL``; an
unreachable server skips the test locally and fails it under ``CI=true``.
"""
from __future__ import annotations

import os
import secrets
import typing as t

import pytest

import backends

POSTGRES_URL = os.environ.get(
    "GOSESSION_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get(
    "GOSESSION_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)


def table_name() -> str:
    return "gs_" + secrets.token_hex(6)


def _admin_engine(url: str, name: str) -> t.Iterator[t.Any]:
    """An autocommit engine on ``url``, or skip (fail in CI) if unreachable."""
    try:
        import sqlalchemy as sa
    except ImportError:  # pragma: no cover - depends on the extra
        backends.missing("SQLAlchemy is not installed")
    try:
        engine = sa.create_engine(
            url,
            isolation_level="AUTOCOMMIT",
            connect_args={"connect_timeout": 3},
            pool_pre_ping=True,
        )
    except ImportError as err:  # pragma: no cover - depends on the extra
        backends.missing(f"{name} driver is not installed: {err}")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.SQLAlchemyError as err:
        engine.dispose()
        backends.missing(f"{name} is not reachable at {url}: {err.__class__.__name__}")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def sql_admin_postgresql() -> t.Iterator[t.Any]:
    """An autocommit engine on the PostgreSQL test database."""
    yield from _admin_engine(POSTGRES_URL, "PostgreSQL")


@pytest.fixture(scope="session")
def sql_admin_mariadb() -> t.Iterator[t.Any]:
    """An autocommit engine on the MariaDB test database."""
    yield from _admin_engine(MARIADB_URL, "MariaDB")


def _server_backend(admin: t.Any, url: str) -> t.Iterator[dict[str, t.Any]]:
    table = table_name()
    yield {"GOSESSION_PROVIDER": "sql", "GOSESSION_SQL_URL": url, "GOSESSION_SQL_TABLE": table}
    quote = admin.dialect.identifier_preparer.quote
    with admin.connect() as conn:
        for name in (table, table + "_users"):  # the sessions and the per-user index
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(name)}")


@pytest.fixture
def backend_sql_sqlite(tmp_path) -> dict[str, t.Any]:  # type: ignore[no-untyped-def]
    url = "sqlite:///" + str(tmp_path / "sessions.sqlite3")
    return {"GOSESSION_PROVIDER": "sql", "GOSESSION_SQL_URL": url, "GOSESSION_SQL_TABLE": table_name()}


@pytest.fixture
def backend_sql_postgresql(sql_admin_postgresql) -> t.Iterator[dict[str, t.Any]]:  # type: ignore[no-untyped-def]
    yield from _server_backend(sql_admin_postgresql, POSTGRES_URL)


@pytest.fixture
def backend_sql_mariadb(sql_admin_mariadb) -> t.Iterator[dict[str, t.Any]]:  # type: ignore[no-untyped-def]
    yield from _server_backend(sql_admin_mariadb, MARIADB_URL)


def _corrupt_factory(provider: t.Any) -> t.Callable[[str, bytes], None]:
    """``write(key, raw)`` inserting a row whose data is ``raw`` bytes."""

    def write(key: str, raw: bytes) -> None:
        provider.create_table()
        with provider.engine.begin() as conn:
            conn.execute(provider.table.insert().values(id=key, data=raw, atime=provider.clock()))

    return write


@pytest.fixture
def corrupt_sql_sqlite() -> t.Callable[[t.Any], t.Callable[[str, bytes], None]]:
    return _corrupt_factory


@pytest.fixture
def corrupt_sql_postgresql() -> t.Callable[[t.Any], t.Callable[[str, bytes], None]]:
    return _corrupt_factory


@pytest.fixture
def corrupt_sql_mariadb() -> t.Callable[[t.Any], t.Callable[[str, bytes], None]]:
    return _corrupt_factory
