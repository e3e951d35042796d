"""No log line ever carries a full 64-hex store key, on any store.

A store key is the SHA-256 of the session id: not a usable cookie, but the
record's name in the store, and the project promises that logs carry only
its 12-character label. Store errors and corrupt records are provoked on
every store through real requests; the captured log (tracebacks included)
must hold the label where a record is named, and never a full key.

Store errors whose text comes from outside the provider are the risk: an
``OSError`` names the record's path, a database error quotes the row.
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import typing as t

import pytest

from backends import ALL_BACKENDS
from flask_gosession.ids import new_sid, store_key
from helpers import cookie_value

FULL_KEY = re.compile(r"[0-9a-f]{64}")


@pytest.fixture(params=ALL_BACKENDS)
def backend_name(request) -> str:  # type: ignore[no-untyped-def]
    return request.param


@pytest.fixture
def backend_config(request, backend_name):  # type: ignore[no-untyped-def]
    return request.getfixturevalue(f"backend_{backend_name}")


def assert_no_full_key(caplog: t.Any) -> None:
    text = caplog.text  # formatted records, with any traceback
    for record in caplog.records:
        text += "\n" + record.getMessage()
    assert FULL_KEY.search(text) is None, text


def test_corrupt_record_is_logged_by_label(request, app, backend_name, caplog):
    provider = app.extensions["gosession"].provider
    sid = new_sid()
    key = store_key(sid)
    request.getfixturevalue(f"corrupt_{backend_name}")(provider)(key, b"\x00 not a record \xff")
    client = app.test_client()
    client.set_cookie("gosessionid", sid)
    with caplog.at_level(logging.DEBUG, logger="flask_gosession"):
        assert client.get("/count").status_code == 200
    assert key[:12] in caplog.text  # the record is named, by its label
    assert_no_full_key(caplog)


# -- store errors that quote the key ----------------------------------------------------------


def _break_file(provider: t.Any, key: str) -> None:
    """A directory where the record file is: reading it fails with an
    ``OSError`` that names the path, whoever runs the tests."""
    path = provider.path_for(key)
    os.unlink(path)
    os.mkdir(path)


def _refusing_trigger(provider: t.Any, key: str) -> t.Callable[[], None]:
    """A trigger that refuses updates with a message quoting the row's id,
    as database errors do; returns its cleanup."""
    engine, table = provider.engine, provider.table.name
    quote = engine.dialect.identifier_preparer.quote
    name = "gs_refuse_" + secrets.token_hex(4)
    dialect = engine.dialect.name
    with engine.connect() as conn:
        if dialect == "sqlite":
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name} BEFORE UPDATE ON {quote(table)} "
                f"BEGIN SELECT RAISE(ABORT, 'row {key} refused'); END"
            )
        elif dialect == "postgresql":
            conn.exec_driver_sql(
                f"CREATE FUNCTION {name}() RETURNS trigger AS $$ BEGIN "
                f"RAISE EXCEPTION 'row %% refused', NEW.id; END $$ LANGUAGE plpgsql"
            )
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name} BEFORE UPDATE ON {quote(table)} "
                f"FOR EACH ROW EXECUTE FUNCTION {name}()"
            )
        else:
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name} BEFORE UPDATE ON {quote(table)} FOR EACH ROW BEGIN "
                "DECLARE msg VARCHAR(255); SET msg = CONCAT('row ', NEW.id, ' refused'); "
                "SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = msg; END"
            )
        conn.commit()

    def cleanup() -> None:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}"
                                 + (f" ON {quote(table)}" if dialect == "postgresql" else ""))
            if dialect == "postgresql":
                conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {name}()")
            conn.commit()

    return cleanup


@pytest.mark.parametrize("backend_name", ["file", "sql_sqlite", "sql_postgresql", "sql_mariadb"])
def test_store_error_quoting_the_key_is_logged_by_label(app, backend_name, caplog):
    provider = app.extensions["gosession"].provider
    client = app.test_client()
    assert client.get("/set/a/1").status_code == 200
    key = store_key(cookie_value(client))
    if backend_name == "file":
        _break_file(provider, key)
        cleanup = None
        path = "/get/a"  # the read fails
    else:
        cleanup = _refusing_trigger(provider, key)
        path = "/set/b/2"  # the update fails
    try:
        with caplog.at_level(logging.DEBUG, logger="flask_gosession"):
            assert client.get(path).status_code == 503
    finally:
        if cleanup is not None:
            cleanup()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and key[:12] in errors[0].getMessage(), caplog.text
    assert_no_full_key(caplog)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("backend_name", ["redis", "memcached"])
def test_unreachable_server_is_logged_without_a_key(app, backend_name, caplog):
    """The network stores' errors do not quote keys; kept so they never start."""
    from apps import make_app
    from clock import FakeClock

    port = _closed_port()
    config = {"GOSESSION_TOKEN_CHECK": False, "GOSESSION_GC_INTERVAL": 0,
              "GOSESSION_PROVIDER": backend_name}
    if backend_name == "redis":
        config["GOSESSION_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    else:
        config["GOSESSION_MEMCACHED_SERVERS"] = [f"127.0.0.1:{port}"]
    down = make_app(config, FakeClock(), app.instance_path)
    try:
        client = down.test_client()
        client.set_cookie("gosessionid", new_sid())
        with caplog.at_level(logging.DEBUG, logger="flask_gosession"):
            assert client.get("/count").status_code == 503
    finally:
        down.extensions["gosession"].close()
    assert any(r.levelno >= logging.ERROR for r in caplog.records)
    assert_no_full_key(caplog)
