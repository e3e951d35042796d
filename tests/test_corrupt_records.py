"""Corrupt records, on every provider: a fresh session, a warning, never a 500.

Each backend module provides ``corrupt_<name>``, a factory that takes the
provider and returns ``write(key, raw)`` storing raw bytes as the record
under ``key`` (for Redis, as one field of the session hash). Records are
truncated, of the wrong type or shape, garbage, or carry values whose tags
cannot be decoded; they are built with the app's serializer where a
well-formed encoding of the wrong thing is meant. Both serializers run.

A request presenting the id of such a record gets a fresh session (its
data is gone, the old id is not kept), the ``flask_gosession`` logger warns
without naming the id, and the record is removed. The same holds when the
record is corrupted *while* a request that already loaded it is running, so
that the corruption is met by the save.
"""
from __future__ import annotations

import logging
import typing as t

import pytest

from backends import ALL_BACKENDS
from flask_gosession.ids import new_sid, store_key
from flask_gosession.providers.base import Record
from helpers import cookie_value, set_cookies


@pytest.fixture(params=ALL_BACKENDS)
def backend_name(request) -> str:  # type: ignore[no-untyped-def]
    return request.param


@pytest.fixture
def backend_config(request, backend_name):  # type: ignore[no-untyped-def]
    return request.getfixturevalue(f"backend_{backend_name}")


@pytest.fixture(params=["json", "msgpack"])
def app_config(request) -> dict[str, t.Any]:
    return {"GOSESSION_TOKEN_CHECK": False, "GOSESSION_GC_INTERVAL": 0,
            "GOSESSION_SERIALIZER": request.param}


@pytest.fixture
def write(request, backend_name, app):  # type: ignore[no-untyped-def]
    """``write(key, raw)`` through the backend's ``corrupt_<name>`` factory."""
    factory = request.getfixturevalue(f"corrupt_{backend_name}")
    return factory(app.extensions["gosession"].provider)


# -- what a corrupt record looks like ----------------------------------------------------------


def _valid(now: float) -> Record:
    return Record({"a": "1", "long": "x" * 200}, {"c": now, "i": now}, now)


def _dumps(provider: t.Any, obj: t.Any) -> bytes:
    return provider.serializer.dumps(obj)


#: name -> raw(provider, now). Every one must read as corrupt.
CORRUPTIONS: dict[str, t.Callable[[t.Any, float], bytes]] = {
    "empty": lambda p, now: b"",
    "garbage": lambda p, now: b"\x00\x01\xff garbage \xfe\xc1",
    "truncated": lambda p, now: p.pack(_valid(now))[: len(p.pack(_valid(now))) // 2],
    "truncated-by-one": lambda p, now: p.pack(_valid(now))[:-1],
    "not-a-mapping": lambda p, now: _dumps(p, [1, 2, 3]),
    "a-string": lambda p, now: _dumps(p, "a string"),
    "null": lambda p, now: _dumps(p, None),
    "data-not-a-dict": lambda p, now: _dumps(p, {"d": 1, "m": {"c": now, "i": now}, "a": now}),
    "meta-not-a-dict": lambda p, now: _dumps(p, {"d": {}, "m": [now], "a": now}),
    "atime-not-a-number": lambda p, now: _dumps(p, {"d": {}, "m": {"c": now, "i": now}, "a": "x"}),
    "atime-bool": lambda p, now: _dumps(p, {"d": {}, "m": {"c": now, "i": now}, "a": True}),
    "no-creation-time": lambda p, now: _dumps(p, {"d": {"a": "1"}, "m": {}, "a": now}),
    "creation-time-text": lambda p, now: _dumps(
        p, {"d": {"a": "1"}, "m": {"c": "yesterday", "i": now}, "a": now}),
    "bad-forward": lambda p, now: _dumps(
        p, {"d": {}, "m": {"c": now, "i": now, "f": 12345, "fx": now + 30}, "a": now}),
    "bad-bytes-tag": lambda p, now: _dumps(
        p, {"d": {"k": {" b": "!!not base64!!"}}, "m": {"c": now, "i": now}, "a": now}),
    "bad-tuple-tag": lambda p, now: _dumps(
        p, {"d": {"k": {" t": 5}}, "m": {"c": now, "i": now}, "a": now}),
    "bad-uuid-tag": lambda p, now: _dumps(
        p, {"d": {"k": {" u": "zz"}}, "m": {"c": now, "i": now}, "a": now}),
    "bad-date-tag": lambda p, now: _dumps(
        p, {"d": {"k": {" d": 123}}, "m": {"c": now, "i": now}, "a": now}),
    "deep-nesting": lambda p, now: (
        b"[" * 100_000 + b"]" * 100_000 if p.serializer.name == "json" else b"\x91" * 100_000 + b"\xc0"
    ),
    "not-utf8": lambda p, now: (
        b'{"d":{"k":"\xff\xfe"},"m":{},"a":1}' if p.serializer.name == "json" else b"\xa2\xff\xfe"
    ),
    "huge-integer": lambda p, now: (
        b'{"d":{},"m":{"c":' + b"9" * 5000 + b'},"a":1}' if p.serializer.name == "json"
        else b"\xc1" * 8
    ),
}


def _warnings(caplog: t.Any) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "flask_gosession" and r.levelno == logging.WARNING]


def _redis_raw(backend_name: str, app: t.Any) -> t.Any:
    provider = app.extensions["gosession"].provider
    return provider.client, provider.key_prefix


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
@pytest.mark.parametrize("path", ["/count", "/get/a"])
def test_corrupt_record_is_a_fresh_session_and_a_warning(
    app, backend_name, write, corruption, path, caplog,
):
    provider = app.extensions["gosession"].provider
    sid = new_sid()
    key = store_key(sid)
    write(key, CORRUPTIONS[corruption](provider, provider.clock()))
    client = app.test_client()
    client.set_cookie("gosessionid", sid)
    with caplog.at_level(logging.WARNING, logger="flask_gosession"):
        response = client.get(path)
    assert response.status_code == 200, response.text[:300]
    if path == "/count":
        assert response.text == "1"  # nothing of the old record survives
        assert cookie_value(client) not in (None, sid)
    else:
        assert response.json == {"keys": [], "value": None}
        assert cookie_value(client) is None  # the refused id's cookie is removed
    warnings = _warnings(caplog)
    assert warnings and "corrupt" in warnings[0].getMessage().lower(), caplog.text
    assert sid not in caplog.text
    # The record was removed: the next read does not meet it again.
    assert provider.session_read(key, provider.clock()) is None


REDIS_SHAPES: dict[str, t.Callable[[t.Any, str], t.Any]] = {
    "string": lambda c, k: c.set(k, b"a string"),
    "list": lambda c, k: c.rpush(k, b"a", b"b"),
    "set": lambda c, k: c.sadd(k, b"a"),
    "no-atime": lambda c, k: c.hset(k, mapping={"d:a": b'"1"', "m:c": b"1", "m:i": b"1"}),
    "nan-atime": lambda c, k: c.hset(k, mapping={"a": b"nan", "m:c": b"1", "m:i": b"1"}),
    "field-not-utf8": lambda c, k: c.hset(k, mapping={"a": b"1", b"d:\xff": b"1"}),
}


@pytest.mark.parametrize("backend_name", ["redis", "redis_cluster"])
@pytest.mark.parametrize("shape", sorted(REDIS_SHAPES))
def test_redis_key_of_the_wrong_type_or_shape(app, backend_name, shape, caplog):
    """Redis records are hashes: a key of another type, or a hash without a
    usable access time, is corrupt too."""
    client_, prefix = _redis_raw(backend_name, app)
    sid = new_sid()
    REDIS_SHAPES[shape](client_, prefix + store_key(sid))
    client = app.test_client()
    client.set_cookie("gosessionid", sid)
    with caplog.at_level(logging.WARNING, logger="flask_gosession"):
        response = client.get("/count")
    assert response.status_code == 200 and response.text == "1"
    assert cookie_value(client) not in (None, sid)
    assert _warnings(caplog)
    assert client_.exists(prefix + store_key(sid)) == 0


def _corrupt_midway(app: t.Any, corrupt: t.Callable[[], None]) -> None:
    """Add a view that loads the session, has it corrupted, then writes."""
    from flask import session

    def view() -> str:
        session.get("a")  # loaded while still intact
        corrupt()
        session["b"] = "2"
        return "done"

    app.add_url_rule("/corrupt-midway", "corrupt_midway", view)


@pytest.mark.parametrize("corruption", ["garbage", "truncated", "not-a-mapping"])
def test_record_corrupted_during_a_request_is_not_a_500(app, backend_name, write, corruption, caplog):
    """The save meets the corruption (the update reads the record to merge
    into it): still no 500, a warning, and the old id is not kept alive
    with a corrupt record behind it."""
    provider = app.extensions["gosession"].provider

    def corrupt() -> None:
        raw = CORRUPTIONS[corruption](provider, provider.clock())
        provider.session_destroy(key)  # the SQL factory inserts a row
        write(key, raw)

    _corrupt_midway(app, corrupt)
    client = app.test_client()
    client.get("/set/a/1")
    sid = cookie_value(client)
    key = store_key(sid)
    with caplog.at_level(logging.WARNING, logger="flask_gosession"):
        response = client.get("/corrupt-midway")
        assert response.status_code == 200, response.text[:300]
        after = client.get("/get/a")
    assert after.status_code == 200 and after.json["value"] is None
    assert cookie_value(client) != sid
    assert _warnings(caplog)
    assert provider.session_read(key, provider.clock()) is None


@pytest.mark.parametrize("backend_name", ["redis", "redis_cluster"])
def test_redis_key_replaced_by_another_type_during_a_request(app, backend_name, caplog):
    client_, prefix = _redis_raw(backend_name, app)
    provider = app.extensions["gosession"].provider

    def corrupt() -> None:
        provider.session_destroy(key)
        client_.set(prefix + key, b"not a hash")

    _corrupt_midway(app, corrupt)
    client = app.test_client()
    client.get("/set/a/1")
    sid = cookie_value(client)
    key = store_key(sid)
    with caplog.at_level(logging.WARNING, logger="flask_gosession"):
        response = client.get("/corrupt-midway")
    assert response.status_code == 200, response.text[:300]
    assert client.get("/get/a").json["value"] is None
    assert _warnings(caplog)
    assert not set_cookies(response) or cookie_value(client) != sid
