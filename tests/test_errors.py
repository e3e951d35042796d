"""A failing store becomes a clear 503, logged once, and the app recovers.

These tests use a provider whose backend can be switched off. Real-server
outages (Redis, Memcached, SQL) are tested in the provider test modules.
"""
from __future__ import annotations

import logging

import pytest

from flask_gosession.errors import ProviderError, StoreUnavailable
from flask_gosession.providers.memory import MemoryProvider


class SwitchableProvider(MemoryProvider):
    """A memory store with an off switch, standing in for a dead server."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise ProviderError("connection refused (backend switched off)")

    def session_read(self, key, now):
        self._check()
        return super().session_read(key, now)

    def session_update(self, key, change):
        self._check()
        return super().session_update(key, change)

    def session_init(self, key, record):
        self._check()
        super().session_init(key, record)


@pytest.fixture
def backend_config():
    return {"GOSESSION_PROVIDER": SwitchableProvider}


def test_outage_is_503_then_recovers(client, app, caplog):
    provider = app.extensions["gosession"].provider
    client.get("/count")
    provider.down = True
    with caplog.at_level(logging.DEBUG, logger="flask_gosession"):
        read = client.get("/get/n")   # fails while loading, inside the view
        write = client.get("/count")  # fails while loading
        assert read.status_code == write.status_code == 503
        assert b"temporarily unavailable" in read.data
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "connection refused" in errors[0].getMessage()
        provider.down = False
        assert client.get("/count").text == "2"
    assert any("recovered" in r.getMessage() for r in caplog.records)


def test_outage_during_save_is_503_not_500(client, app):
    provider = app.extensions["gosession"].provider

    @app.errorhandler(StoreUnavailable)  # customisable like any HTTP error
    def custom(err):
        return "store down, try later", 503

    app.view_functions["set_"] = _failing_set(provider)
    response = client.get("/set/a/1")
    assert response.status_code == 503 and response.text == "store down, try later"
    assert response.headers.getlist("Set-Cookie") == []


def _failing_set(provider):
    from flask import session

    def view(key, value):
        session[key] = value
        provider.down = True  # the store dies before the save
        return "ok"

    return view


def test_noop_requests_work_while_store_is_down(client, app):
    app.extensions["gosession"].provider.down = True
    assert client.get("/noop").status_code == 200


# -- a session too large for its store ---------------------------------------------------


def test_record_too_large_is_not_an_outage_error():
    from flask_gosession.errors import GoSessionError, RecordTooLarge

    assert issubclass(RecordTooLarge, GoSessionError)
    assert not issubclass(RecordTooLarge, ProviderError)


def test_record_too_large_names_label_size_and_limit_never_the_key():
    import pickle

    from flask_gosession.errors import RecordTooLarge

    key = "0123456789ab" + "f" * 52
    err = RecordTooLarge(key, 2_097_152, 1_048_576, "GOSESSION_MAX_RECORD_SIZE")
    assert (err.label, err.size, err.limit) == ("0123456789ab", 2_097_152, 1_048_576)
    message = str(err)
    assert "0123456789ab" in message and key not in message
    assert "2097152" in message and "1048576" in message and "GOSESSION_MAX_RECORD_SIZE" in message
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.label, copy.size, copy.limit, str(copy)) == (err.label, err.size, err.limit, message)


def test_session_too_large_is_a_413():
    from werkzeug.exceptions import RequestEntityTooLarge

    from flask_gosession.errors import SessionTooLarge

    assert issubclass(SessionTooLarge, RequestEntityTooLarge) and SessionTooLarge.code == 413


@pytest.mark.parametrize("backend_config", [{"GOSESSION_PROVIDER": "memory",
                                              "GOSESSION_MAX_RECORD_SIZE": 200}])
def test_too_large_during_save_is_413_and_never_marks_the_store_down(client, app, caplog):
    manager = app.extensions["gosession"]
    assert client.get("/set/a/1").status_code == 200
    with caplog.at_level(logging.DEBUG, logger="flask_gosession"):
        response = client.get("/set/b/" + "x" * 200)
        assert response.status_code == 413
        assert [r.levelname for r in caplog.records if r.name == "flask_gosession"] == ["WARNING"]
        assert client.get("/get/a").json["value"] == "1"
    assert manager.store._down is False and "recovered" not in caplog.text
