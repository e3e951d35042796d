"""The session object: dict semantics, change tracking, laziness."""
from __future__ import annotations

import datetime as dt
import uuid

import pytest
from flask import session
from markupsafe import Markup

from counting import install
from helpers import cookie_value, stored


def test_count_across_requests(client):
    assert [client.get("/count").text for _ in range(3)] == ["1", "2", "3"]


def test_only_an_id_travels(client, app):
    client.get("/set/secret/s3cr3t")
    sid = cookie_value(client)
    assert sid and "s3cr3t" not in sid and len(sid) == 43
    assert stored(app, sid).data == {"secret": "s3cr3t"}


@pytest.mark.parametrize(
    "mutate, expected, changed, deleted",
    [
        (lambda s: s.__setitem__("c", 3), {"a": 1, "b": 2, "c": 3}, {"c"}, set()),
        (lambda s: s.__delitem__("a"), {"b": 2}, set(), {"a"}),
        (lambda s: s.update({"a": 9}, z=0), {"a": 9, "b": 2, "z": 0}, {"a", "z"}, set()),
        (lambda s: s.setdefault("d", 4), {"a": 1, "b": 2, "d": 4}, {"d"}, set()),
        (lambda s: s.pop("b"), {"a": 1}, set(), {"b"}),
        (lambda s: s.popitem(), {"a": 1}, set(), {"b"}),
        (lambda s: s.clear(), {}, set(), {"a", "b"}),
        (lambda s: s.__ior__({"q": 1}), {"a": 1, "b": 2, "q": 1}, {"q"}, set()),
    ],
    ids=["setitem", "delitem", "update", "setdefault", "pop", "popitem", "clear", "ior"],
)
def test_every_mutator_is_tracked(app, client, mutate, expected, changed, deleted):
    client.get("/set/a/1")
    with client.session_transaction() as sess:
        sess["a"], sess["b"] = 1, 2
    with app.test_request_context(headers={"Cookie": f"gosessionid={cookie_value(client)}"}):
        mutate(session)
        assert dict(session.items()) == expected
        assert session.modified
        assert session.set_keys == changed
        assert session.deleted_keys == deleted


def test_setdefault_on_existing_key_is_not_a_change(app):
    with app.test_request_context():
        session["a"] = 1
        session.reset()
        assert session.setdefault("a", 5) == 1
        assert not session.dirty


def test_metadata_never_among_user_keys(client, app):
    client.get("/permanent")
    client.get("/token")
    body = client.get("/get/x").json
    assert body["keys"] == ["p"]
    record = stored(app, cookie_value(client))
    assert set(record.data) == {"p"}
    assert {"c", "i", "t", "p"} <= set(record.meta)


def test_special_types_round_trip(app, client):
    aware = dt.datetime(2026, 11, 20, 12, 30, tzinfo=dt.timezone.utc)
    values = {
        "tuple": (1, "a", None),
        "bytes": b"\x00\xffbin",
        "markup": Markup("<b>x</b>"),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "when": aware,
        "nested": {"a": {"b": [1, (2, 3)]}, " t": "looks like a tag"},
        "text": "ünïcødé",
    }
    with client.session_transaction() as sess:
        sess.update(values)
    with app.test_request_context(headers={"Cookie": f"gosessionid={cookie_value(client)}"}):
        for key, value in values.items():
            got = session[key]
            assert got == value and type(got) is type(value), key


def test_session_in_test_request_context(app):
    with app.test_request_context():
        session["x"] = 1
        assert session["x"] == 1 and session.new


def test_flash_survives_a_redirect_like_round_trip(client):
    client.get("/flash")
    assert client.get("/flashes").json == ["hello"]
    assert client.get("/flashes").json == []


def test_lazy_session_makes_no_store_call(client, app):
    client.get("/count")
    counter = install(app)
    response = client.get("/noop")
    assert counter.total() == 0
    assert "Cookie" not in response.headers.get("Vary", "")
    assert response.headers.getlist("Set-Cookie") == []


def test_read_only_request_is_one_read_and_no_write(client, app):
    client.get("/set/a/1")
    counter = install(app)
    assert client.get("/get/a").json["value"] == "1"
    assert dict(counter.calls) == {"session_read": 1}


def test_unmodified_session_is_not_rewritten(client, app, clock):
    client.get("/set/a/1")
    counter = install(app)
    for _ in range(5):
        clock.advance(1)
        client.get("/get/a")
    assert counter.calls["session_update"] == 0
    assert counter.calls["session_init"] == 0


def test_write_sends_only_changed_keys(client, app):
    client.get("/set/a/1")
    client.get("/set/b/2")
    counter = install(app)
    seen = []
    inner_update = counter.inner.session_update

    def spy(key, change):
        seen.append(change)
        return inner_update(key, change)

    counter.inner.session_update = spy  # observe, still writes for real
    client.get("/set/b/3")
    assert len(seen) == 1 and seen[0].set == {"b": "3"} and not seen[0].deleted
    assert client.get("/get/a").json["value"] == "1"


def test_empty_new_session_is_never_stored(client, app):
    counter = install(app)
    client.get("/get/a")  # reads, finds nothing, writes nothing
    assert counter.calls["session_init"] == 0
    assert cookie_value(client) is None
    assert counter.inner.session_count() == 0


def test_cleared_session_deletes_cookie_and_record(client, app):
    client.get("/set/a/1")
    sid = cookie_value(client)

    response = client.get("/clear")
    assert any("gosessionid=;" in c and "Expires=Thu, 01 Jan 1970" in c for c in response.headers.getlist("Set-Cookie"))
    assert stored(app, sid) is None
    assert cookie_value(client) is None


def test_in_place_mutation_with_modified_saves_read_keys(client, app):
    client.get("/cart")
    client.get("/cart-inplace")
    assert stored(app, cookie_value(client)).data["cart"] == ["x", "y"]


def test_session_cannot_be_pickled(app):
    import pickle

    with app.test_request_context(), pytest.raises(TypeError):
        pickle.dumps(session._get_current_object())
