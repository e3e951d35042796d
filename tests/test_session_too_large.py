"""A session too large for its store: an HTTP 413 and one warning, on every store.

One user's oversized value is not an outage: the response is a 413
(:class:`~flask_gosession.errors.SessionTooLarge`, customisable with
``@app.errorhandler``), the ``flask_gosession`` logger warns once with the
record's label, size and limit, nothing is logged as an ERROR, the store is
never marked down (so nothing "recovers"), the session keeps what it held
before, and the next normal request works. Real stores throughout; the
largest value is 2 MiB, beyond memcached's default 1 MiB items and the
default ``GOSESSION_MAX_RECORD_SIZE``.
"""
from __future__ import annotations

import logging
import re
import typing as t

import pytest
from flask import current_app, session

from backends import ALL_BACKENDS
from flask_gosession.errors import SessionTooLarge
from flask_gosession.ids import store_key
from flask_gosession.providers.base import Record
from helpers import cookie_value, set_cookies, stored

BIG = 2 * 1024 * 1024


@pytest.fixture(params=ALL_BACKENDS)
def backend_name(request) -> str:  # type: ignore[no-untyped-def]
    return request.param


@pytest.fixture
def backend_config(request, backend_name):  # type: ignore[no-untyped-def]
    return request.getfixturevalue(f"backend_{backend_name}")


@pytest.fixture
def app(app):  # type: ignore[no-untyped-def]
    def big() -> str:
        session["big"] = "x" * BIG
        return "stored?"

    def raise_in_view() -> str:
        # Application code writing to the store itself, inside the view.
        provider = current_app.extensions["gosession"].provider
        provider.session_init(store_key("B" * 43), Record({"big": "x" * BIG}, {}, 1.0))
        return "unreachable"

    app.add_url_rule("/big", "big", big)
    app.add_url_rule("/raise-in-view", "raise_in_view", raise_in_view)
    return app


def _ours(caplog: t.Any) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "flask_gosession"]


def _assert_one_warning_no_outage(caplog: t.Any) -> None:
    records = _ours(caplog)
    assert [r.levelno for r in records] == [logging.WARNING], caplog.text
    message = records[0].getMessage()
    assert "not saved" in message and "bytes" in message
    assert not any(r.levelno >= logging.ERROR for r in caplog.records), caplog.text
    assert "recovered" not in caplog.text and "failed" not in caplog.text


def test_new_session_too_large_is_a_413_and_one_warning(client, backend_name, caplog):
    with caplog.at_level(logging.DEBUG, logger="flask_gosession"):
        response = client.get("/big")
        assert response.status_code == 413, response.text[:300]
        assert b"too large" in response.data
        assert set_cookies(response) == []  # nothing was stored: no session to point at
        _assert_one_warning_no_outage(caplog)
        warning = _ours(caplog)[0]
        size, limit = _numbers(warning.getMessage())
        assert size > BIG and limit < BIG
        caplog.clear()
        assert client.get("/count").text == "1"  # the next request works
        assert [r for r in _ours(caplog) if r.levelno >= logging.WARNING] == []


def test_existing_session_keeps_its_data_and_id(client, backend_name, caplog):
    assert client.get("/count").text == "1"
    sid = cookie_value(client)
    with caplog.at_level(logging.DEBUG, logger="flask_gosession"):
        response = client.get("/big")
        assert response.status_code == 413
        assert set_cookies(response) == []
        _assert_one_warning_no_outage(caplog)
        caplog.clear()
        assert client.get("/count").text == "2"  # the old data, nothing of the big value
        assert client.get("/get/big").json == {"keys": ["n"], "value": None}
    assert cookie_value(client) == sid
    assert "recovered" not in caplog.text


def test_warning_names_label_size_and_limit_never_the_key(client, app, caplog):
    client.get("/count")
    key = store_key(cookie_value(client))
    with caplog.at_level(logging.WARNING, logger="flask_gosession"):
        client.get("/big")
    message = _ours(caplog)[0].getMessage()
    assert key[:12] in message and key not in caplog.text
    size, limit = _numbers(message)
    assert size > BIG
    assert limit == app.extensions["gosession"].provider.max_record_size


def test_413_is_customisable(client, app):
    @app.errorhandler(SessionTooLarge)
    def custom(err):  # type: ignore[no-untyped-def]
        return "please store less", 413

    response = client.get("/big")
    assert response.status_code == 413 and response.text == "please store less"


def test_raised_inside_a_view_is_a_413_and_one_warning(client, caplog):
    with caplog.at_level(logging.DEBUG, logger="flask_gosession"):
        response = client.get("/raise-in-view")
        assert response.status_code == 413, response.text[:300]
        _assert_one_warning_no_outage(caplog)
    assert client.get("/count").text == "1"


def _numbers(message: str) -> tuple[int, int]:
    """The size and the limit a warning names, in that order (read by their
    words: the session's label before them may be all digits)."""
    found = re.search(r"record is (\d+) bytes, over the store's limit of (\d+) bytes", message)
    assert found is not None, message
    return int(found.group(1)), int(found.group(2))


# -- over real HTTP -----------------------------------------------------------------------------


@pytest.mark.parametrize("backend_name", ["memcached", "redis"])
def test_over_real_http(app, backend_name, caplog):
    from liveserver import request, serve

    app.config["TESTING"] = False  # a view error must be a 500 on the wire
    with caplog.at_level(logging.DEBUG, logger="flask_gosession"), serve(app) as port:
        status, _, cookie = request(port, "/count")
        assert status == 200 and cookie
        status, body, new = request(port, "/big", cookie)
        assert status == 413 and "too large" in body and new is None
        status, body, _ = request(port, "/count", cookie)
        assert status == 200 and body == "2"
    records = _ours(caplog)
    assert [r.levelno for r in records if r.levelno >= logging.WARNING] == [logging.WARNING]
    assert "recovered" not in caplog.text
    assert not any(r.levelno >= logging.ERROR for r in caplog.records)



@pytest.mark.parametrize("backend_name", ["memory", "redis", "sql_sqlite", "memcached"])
def test_too_large_change_during_an_age_rotation_still_moves_the_session(client, app, clock):
    """The rotation marks the old record before the oversized change is
    refused: the session moves all the same, with its data as stored, and
    the 413 hands out the new id, so the client is not left holding a
    forward that expires with the grace window."""
    client.get("/set/user/alice")
    old = cookie_value(client)
    clock.advance(901)  # the next request rotates by age
    response = client.get("/big")
    assert response.status_code == 413
    new = cookie_value(client)
    assert new and new != old
    assert stored(app, new).data == {"user": "alice"}
    clock.advance(60)  # past the grace window: only the new id works
    assert client.get("/get/user").json["value"] == "alice"
