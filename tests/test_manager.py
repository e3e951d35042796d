"""The Manager: strict ids, hashing, timeouts, corruption, GC."""
from __future__ import annotations

import logging
import time

import pytest

from flask_gosession import signals
from flask_gosession.ids import is_valid_sid, new_sid, store_key
from helpers import cookie_value, stored


def test_ids_are_256_bit_url_safe(app):
    with app.test_request_context():
        from flask import session

        session["x"] = 1
        sid = session.sid
    assert is_valid_sid(sid) and len(sid) == 43
    assert len({new_sid() for _ in range(200)}) == 200


@pytest.mark.parametrize(
    "presented",
    ["A" * 43, "short", "../../etc/passwd", "x" * 4000, "%00", "gosess\u00e9" * 5],
)
def test_fixation_unknown_or_malformed_id_is_replaced(client, app, presented):
    client.set_cookie("gosessionid", presented)
    response = client.get("/count")
    assert response.text == "1"
    sid = cookie_value(client)
    assert sid != presented and is_valid_sid(sid)
    assert stored(app, presented if is_valid_sid(presented) else sid) is None or sid != presented


def test_refused_id_cookie_is_removed_when_nothing_is_stored(client):
    client.set_cookie("gosessionid", "A" * 43)
    response = client.get("/get/a")
    assert any(c.startswith("gosessionid=;") for c in response.headers.getlist("Set-Cookie"))


def test_store_never_sees_the_raw_id(client, app):
    client.get("/set/a/1")
    sid = cookie_value(client)
    provider = app.extensions["gosession"].provider
    dump = b"".join(k + blob for k, (_, blob) in provider._entries.items())
    assert sid.encode() not in dump
    assert bytes.fromhex(store_key(sid)) in provider._entries


def test_idle_timeout_is_sliding(client, app, clock):
    client.get("/set/a/1")
    for _ in range(5):
        clock.advance(3000)  # each gap < 3600, total > 3600
        assert client.get("/get/a").json["value"] == "1"
    clock.advance(3600)
    assert client.get("/get/a").json["value"] is None


def test_absolute_timeout_applies_even_when_active(client, app, clock):
    expired = []
    signals.session_expired.connect(lambda sender, **kw: expired.append(kw), weak=False)
    try:
        client.get("/set/a/1")
        for _ in range(28):
            clock.advance(3000)
            assert client.get("/get/a").json["value"] == "1"
        sid = cookie_value(client)  # rotated by age many times meanwhile
        clock.advance(3000)  # 87000 s since creation
        assert client.get("/get/a").json["value"] is None
        assert stored(app, sid) is None
        assert expired[-1]["reason"] == "absolute"
        assert sid not in str(expired)
    finally:
        signals.session_expired.receivers.clear()


def test_idle_expiry_fires_signal_and_removes_record(client, app, clock):
    seen = []
    signals.session_expired.connect(lambda sender, **kw: seen.append((sender, kw)), weak=False)
    try:
        client.get("/set/a/1")
        sid = cookie_value(client)
        clock.advance(3601)
        assert client.get("/get/a").json["value"] is None
        assert seen and seen[0][0] is app and seen[0][1]["reason"] == "idle"
        assert seen[0][1]["sid_hash"] == store_key(sid)[:12]
        assert stored(app, sid) is None
    finally:
        signals.session_expired.receivers.clear()


@pytest.mark.parametrize("app_config", [{"GOSESSION_TOKEN_CHECK": False, "GOSESSION_GC_INTERVAL": 0,
                                         "GOSESSION_ABSOLUTE_LIFETIME": None}])
def test_absolute_timeout_can_be_disabled(client, clock):
    client.get("/set/a/1")
    for _ in range(40):
        clock.advance(3000)
        client.get("/get/a")
    assert client.get("/get/a").json["value"] == "1"


@pytest.mark.parametrize(
    "garbage",
    [b"\x00\x01garbage", b'{"d": 1, "m": {}, "a": 0}', b"[]", b'{"d": {}, "m": {}, "a": "x"}',
     b'{"d": {"k": {" u": "zz"}}, "m": {"c": 1e18, "i": 1e18}, "a": 1e18}', b'{"d"'],
    ids=["binary", "wrong-type", "list", "bad-atime", "bad-tag", "truncated"],
)
def test_corrupt_record_gives_fresh_session_and_warning(client, app, caplog, garbage, clock):
    client.get("/set/a/1")
    sid = cookie_value(client)
    provider = app.extensions["gosession"].provider
    provider._entries[bytes.fromhex(store_key(sid))] = (clock(), garbage)
    with caplog.at_level(logging.WARNING, logger="flask_gosession"):
        response = client.get("/count")
    assert response.status_code == 200 and response.text == "1"
    assert cookie_value(client) != sid
    warnings = [r for r in caplog.records if r.name == "flask_gosession" and r.levelno == logging.WARNING]
    assert warnings and "corrupt" in warnings[0].getMessage()
    assert sid not in caplog.text


def test_manual_gc_removes_expired_only(client, app, clock):
    manager = app.extensions["gosession"]
    client.get("/set/a/1")
    clock.advance(1800)
    other = app.test_client()
    other.get("/set/b/2")
    clock.advance(1900)
    assert manager.gc() == 1
    assert other.get("/get/b").json["value"] == "2"


@pytest.mark.parametrize("app_config", [{"GOSESSION_TOKEN_CHECK": False, "GOSESSION_GC_INTERVAL": 0.02}])
def test_gc_thread_removes_expired_and_keeps_live(client, app, clock):
    manager = app.extensions["gosession"]
    client.get("/set/a/1")  # first request starts the GC thread
    clock.advance(3000)
    live = app.test_client()
    live.get("/set/b/2")
    assert manager.gc_thread.thread is not None and manager.gc_thread.thread.is_alive()
    clock.advance(700)  # first session idle 3700 s, second 700 s
    deadline = time.monotonic() + 5
    while manager.provider.session_count() != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert manager.provider.session_count() == 1
    assert live.get("/get/b").json["value"] == "2"
    thread = manager.gc_thread.thread
    manager.gc_thread.stop()
    assert not thread.is_alive()


def test_gc_thread_not_started_at_import_or_init(app):
    import threading

    assert not any(th.name == "gosession-gc" and th.is_alive() for th in threading.enumerate()
                   if app.extensions["gosession"].gc_thread.thread is th)
    assert app.extensions["gosession"].gc_thread.thread is None


def test_record_corrupted_during_the_request_is_dropped_not_a_500(client, app, clock, caplog):
    from flask import session

    client.get("/set/a/1")
    sid = cookie_value(client)
    provider = app.extensions["gosession"].provider
    with app.test_request_context(headers={"Cookie": f"gosessionid={sid}"}):
        session["b"] = 2  # loaded before the corruption
        provider._entries[bytes.fromhex(store_key(sid))] = (clock(), b"\xff garbage")
        response = app.response_class("x")
        with caplog.at_level(logging.WARNING, logger="flask_gosession"):
            app.session_interface.save_session(app, session._get_current_object(), response)
    assert any(c.startswith("gosessionid=;") for c in response.headers.getlist("Set-Cookie"))
    assert stored(app, sid) is None
    assert "corrupt" in caplog.text
