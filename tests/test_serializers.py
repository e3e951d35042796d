"""Both serializers keep Flask's type fidelity and never unpickle."""
from __future__ import annotations

import datetime as dt
import pickle
import uuid

import pytest
from flask import session
from markupsafe import Markup

from flask_gosession.errors import CorruptRecordError
from flask_gosession.serializers import get_serializer, tag, untag
from helpers import cookie_value

VALUES = {
    "tuple": (1, "a", None),
    "bytes": b"\x00\xff",
    "markup": Markup("<i>x</i>"),
    "uuid": uuid.uuid4(),
    "when": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
    "nested": {"a": [1, {"b": (2,)}]},
    "float": 2.5,
    "big": 2**62,
}


@pytest.fixture(params=["json", "msgpack"])
def app_config(request):
    return {"GOSESSION_TOKEN_CHECK": False, "GOSESSION_GC_INTERVAL": 0,
            "GOSESSION_SERIALIZER": request.param}


def test_round_trip_through_the_store(app, client):
    with client.session_transaction() as sess:
        sess.update(VALUES)
    with app.test_request_context(headers={"Cookie": f"gosessionid={cookie_value(client)}"}):
        for key, value in VALUES.items():
            assert session[key] == value and type(session[key]) is type(value)


@pytest.mark.parametrize("name", ["json", "msgpack"])
def test_garbage_is_a_corrupt_record_never_an_unpickle(name):
    serializer = get_serializer(name)
    evil = pickle.dumps(object())
    with pytest.raises(CorruptRecordError):
        serializer.loads(evil)
    for garbage in (b"", b"\xc1", b"\xff" * 10, "\udcff".encode("utf-8", "surrogatepass")):
        with pytest.raises(CorruptRecordError):
            serializer.loads(garbage)


def test_tag_untag_inverse():
    for value in VALUES.values():
        assert untag(tag(value)) == value
