"""The provider contract, exercised directly on every backend.

These call the ``session_*`` methods without the manager, so a provider's
author sees exactly which promise of :mod:`flask_gosession.providers.base`
is broken.
"""
from __future__ import annotations

import hashlib
import secrets

import pytest
from flask import Flask

from backends import ALL_BACKENDS
from clock import FakeClock
from flask_gosession.errors import CorruptRecordError
from flask_gosession.providers.base import FORWARD_FIELD, PROBE_KEY, Change, Outcome, Record
from flask_gosession.registry import build_provider
from helpers import concurrent_writers


def new_key() -> str:
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


@pytest.fixture(params=ALL_BACKENDS)
def provider(request, tmp_path):
    config = request.getfixturevalue(f"backend_{request.param}")
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(config)
    prov = build_provider(app)
    clock = FakeClock()
    prov.clock = clock
    prov.max_lifetime = 3600
    prov.test_clock = clock  # type: ignore[attr-defined]
    # A backend module may define ``corrupt_<name>``: a factory taking the
    # provider and returning ``fn(key, raw_bytes)`` that stores raw bytes.
    try:
        corrupt = request.getfixturevalue(f"corrupt_{request.param}")
    except pytest.FixtureLookupError:
        pass
    else:
        prov.test_corrupt = corrupt(prov)  # type: ignore[attr-defined]
    yield prov
    prov.close()


def rec(now: float, **data) -> Record:
    return Record(data=dict(data), meta={"c": now, "i": now}, atime=now)


def test_missing_reads_none(provider):
    assert provider.session_read(new_key(), provider.clock()) is None


def test_ping_answers_and_stores_nothing(provider):
    key, now = new_key(), provider.clock()
    provider.session_init(key, rec(now, a=1))
    before = provider.session_count()
    assert provider.ping() is None
    assert provider.session_count() == before
    assert provider.session_read(PROBE_KEY, now) is None
    assert provider.session_read(key, now).data == {"a": 1}


def test_init_then_read_round_trips(provider):
    key, now = new_key(), provider.clock()
    provider.session_init(key, rec(now, a=1, b={"x": [1, "two", None, True, 2.5]}))
    got = provider.session_read(key, now)
    assert got is not None
    assert got.data == {"a": 1, "b": {"x": [1, "two", None, True, 2.5]}}
    assert got.meta == {"c": now, "i": now}
    assert got.atime == pytest.approx(now, rel=0, abs=0.01)


def test_init_replaces(provider):
    key, now = new_key(), provider.clock()
    provider.session_init(key, rec(now, a=1))
    provider.session_init(key, rec(now, b=2))
    assert provider.session_read(key, now).data == {"b": 2}


def test_update_merges_per_key(provider):
    key, now = new_key(), provider.clock()
    provider.session_init(key, rec(now, a=1, b=2, c=3))
    change = Change(set={"a": 10, "d": 4}, deleted={"b"}, meta={"t": "tok", "i": None}, atime=now + 5)
    assert provider.session_update(key, change) is Outcome.APPLIED
    got = provider.session_read(key, now + 6)
    assert got.data == {"a": 10, "c": 3, "d": 4}
    assert got.meta == {"c": now, "t": "tok"}
    assert got.atime == pytest.approx(now + 5, rel=0, abs=0.01)


def test_update_never_creates(provider):
    key, now = new_key(), provider.clock()
    assert provider.session_update(key, Change(set={"a": 1}, atime=now)) is Outcome.MISSING
    assert provider.session_read(key, now) is None


def test_update_after_destroy_is_missing(provider):
    key, now = new_key(), provider.clock()
    provider.session_init(key, rec(now, a=1))
    provider.session_destroy(key)
    assert provider.session_update(key, Change(set={"a": 2}, atime=now)) is Outcome.MISSING
    assert provider.session_read(key, now) is None


def test_forwarded_record_refuses_updates(provider):
    key, now = new_key(), provider.clock()
    provider.session_init(key, rec(now, a=1))
    mark = Change(meta={FORWARD_FIELD: "target", "fx": now + 30}, atime=now)
    assert provider.session_update(key, mark) is Outcome.APPLIED
    assert provider.session_update(key, Change(set={"a": 2}, atime=now)) is Outcome.FORWARDED
    second_mark = Change(meta={FORWARD_FIELD: "other", "fx": now + 30}, atime=now)
    assert provider.session_update(key, second_mark) is Outcome.FORWARDED  # first rotation wins
    got = provider.session_read(key, now)
    assert got.data == {"a": 1}
    assert got.meta[FORWARD_FIELD] == "target"


def test_destroy_missing_is_noop(provider):
    provider.session_destroy(new_key())


def test_touch(provider):
    key, now = new_key(), provider.clock()
    provider.session_init(key, rec(now, a=1))
    provider.session_touch(key, now + 100)
    got = provider.session_read(key, now + 101)
    assert got.atime == pytest.approx(now + 100, rel=0, abs=0.01)
    assert got.data == {"a": 1}
    missing = new_key()
    provider.session_touch(missing, now)
    assert provider.session_read(missing, now) is None


def test_read_touch_contract(provider):
    key, now = new_key(), provider.clock()
    provider.session_init(key, rec(now, a=1))
    first = provider.session_read(key, now + 50)
    assert first.atime == pytest.approx(now, rel=0, abs=0.01)
    second = provider.session_read(key, now + 60)
    if provider.touches_on_read:
        assert second.atime == pytest.approx(now + 50, rel=0, abs=0.01)
    else:
        assert second.atime == pytest.approx(now, rel=0, abs=0.01)


def test_gc_removes_only_idle(provider):
    clock = provider.test_clock
    now = clock()
    old, live = new_key(), new_key()
    provider.session_init(old, rec(now - 4000, a=1))
    provider.session_init(live, rec(now - 10, b=2))
    removed = provider.session_gc(3600)
    if removed:  # stores with native TTL report 0 and expire on their own
        assert removed == 1
        assert provider.session_read(old, now) is None
    assert provider.session_read(live, now).data == {"b": 2}


def test_corrupt_record_raises_corrupt_error(provider):
    """Only blob providers can be corrupted through their own API; others
    are covered by the manager-level corruption tests."""
    corrupt = getattr(provider, "test_corrupt", None)
    if corrupt is None:
        pytest.skip("backend has no raw-write hook")
    key = new_key()
    corrupt(key, b"\x00not a record\xff")
    with pytest.raises(CorruptRecordError):
        provider.session_read(key, provider.clock())


def test_concurrent_updates_to_different_keys_all_survive(provider):
    key, now = new_key(), provider.clock()
    provider.session_init(key, rec(now))
    concurrent_writers([provider], key, now, writers=6, rounds=20)


def test_session_keys_lists_every_record(provider):
    """``session_keys`` (for ``flask gosession rekey``) yields every stored
    key, or raises NotImplementedError on a store that cannot list."""
    if type(provider).__name__ == "MemcachedProvider":
        with pytest.raises(NotImplementedError):
            provider.session_keys()
        return
    keys = {new_key() for _ in range(3)}
    for key in keys:
        provider.session_init(key, rec(provider.clock(), a=1))
    assert set(provider.session_keys()) == keys


# -- session_create: create-if-absent ----------------------------------------------


def test_create_stores_only_if_absent(provider):
    """Rotation relies on it: of two builders of one new record, one wins,
    and an existing record is never replaced (psycopg 3 once made this
    always succeed on PostgreSQL, silently losing concurrent writes)."""
    key, now = new_key(), provider.clock()
    assert provider.session_create(key, rec(now, a=1)) is True
    assert provider.session_create(key, rec(now, a=2)) is False
    assert provider.session_read(key, now).data == {"a": 1}


def test_create_never_replaces_a_tombstone(provider):
    key, now = new_key(), provider.clock()
    provider.session_init(key, Record({}, {"c": now, "x": 1}, now))
    assert provider.session_create(key, rec(now, a=1)) is False
    assert "x" in provider.session_read(key, now).meta


def test_concurrent_creates_of_one_key_have_one_winner(provider):
    import threading

    key, now = new_key(), provider.clock()
    barrier = threading.Barrier(8)
    results: list[bool] = []

    def create(n: int) -> None:
        barrier.wait(10)
        results.append(provider.session_create(key, rec(now, a=n)))

    threads = [threading.Thread(target=create, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == [False] * 7 + [True]
    assert provider.session_read(key, now).data["a"] in range(8)


def test_event_counters_count_every_event_once_across_threads(provider):
    """``count_event`` is atomic (``flask gosession stats`` shows it);
    stores that cannot count say so."""
    import concurrent.futures

    if not provider.counts_events:
        assert provider.event_counts() is None
        provider.count_event("imported:flask-cookie")  # accepted, not kept
        assert provider.event_counts() is None
        return
    assert provider.event_counts() == {}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: provider.count_event(
            "imported:flask-cookie" if i % 3 else "import-refused:pickle"), range(60)))
    assert provider.event_counts() == {"import-refused:pickle": 20, "imported:flask-cookie": 40}
    # Counters are not sessions.
    assert provider.session_count() == 0
    assert list(provider.session_keys()) == []
    provider.session_gc(3600)
    assert provider.event_counts()["imported:flask-cookie"] == 40
    provider.session_clear()
    assert provider.event_counts() == {}
