"""The memory provider beyond the shared contract: its bound on the number
of sessions (LRU eviction) and on a record's size."""
from __future__ import annotations

import hashlib
import logging
import typing as t

import pytest
from flask import Flask

from clock import FakeClock
from flask_gosession.errors import ConfigError, RecordTooLarge
from flask_gosession.providers.base import DEAD_FIELD, FORWARD_FIELD, Change, Outcome, Record
from flask_gosession.providers.memory import EVICTION_WARNING_INTERVAL, MemoryProvider


def key_of(n: int) -> str:
    return hashlib.sha256(b"memory-%d" % n).hexdigest()


def rec(now: float, **data: t.Any) -> Record:
    return Record(data=dict(data), meta={"c": now}, atime=now)


class Monotonic:
    """A settable stand-in for :func:`time.monotonic`."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def build(**config: t.Any) -> MemoryProvider:
    app = Flask(__name__)
    app.config.update(config)
    for key, value in MemoryProvider.config_defaults(app).items():
        app.config.setdefault(key, value)
    prov = MemoryProvider.from_config(app)
    prov.clock = FakeClock()
    return prov


def evictions(caplog: t.Any) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "flask_gosession" and "evicted" in r.getMessage()]


# -- the bound on sessions --------------------------------------------------------------


def test_least_recently_used_sessions_are_evicted_past_the_cap(caplog):
    prov = build(GOSESSION_MEMORY_MAX_SESSIONS=10)
    now = prov.clock()
    with caplog.at_level(logging.WARNING, logger="flask_gosession"):
        for n in range(10):
            prov.session_init(key_of(n), rec(now, n=n))
        # Used recently: read, updated, touched. They must survive.
        assert prov.session_read(key_of(0), now) is not None
        assert prov.session_update(key_of(1), Change(set={"x": 1}, atime=now)) is Outcome.APPLIED
        prov.session_touch(key_of(2), now)
        for n in range(10, 15):
            prov.session_init(key_of(n), rec(now, n=n))
    assert prov.session_count() == 10
    gone = [n for n in range(15) if prov.session_read(key_of(n), now) is None]
    assert gone == [3, 4, 5, 6, 7]  # the five least recently used
    warnings = evictions(caplog)
    assert len(warnings) == 1, caplog.text
    assert warnings[0].levelno == logging.WARNING
    assert "GOSESSION_MEMORY_MAX_SESSIONS" in warnings[0].getMessage()


def test_eviction_warning_at_most_once_a_minute_with_the_count(caplog):
    prov = build(GOSESSION_MEMORY_MAX_SESSIONS=2)
    prov.monotonic = clock = Monotonic()
    now = prov.clock()
    with caplog.at_level(logging.WARNING, logger="flask_gosession"):
        for n in range(6):  # evicts 4: the first warns at once
            prov.session_init(key_of(n), rec(now, n=n))
        clock.now += EVICTION_WARNING_INTERVAL - 1
        prov.session_init(key_of(6), rec(now))  # the 5th eviction: still quiet
        assert len(evictions(caplog)) == 1
        assert "evicted 1 " in evictions(caplog)[0].getMessage()
        clock.now += 1
        prov.session_init(key_of(7), rec(now))  # a minute on: 5 since the last warning
    warnings = evictions(caplog)
    assert len(warnings) == 2
    assert "evicted 5 " in warnings[1].getMessage()


def test_replacing_a_record_evicts_nothing(caplog):
    prov = build(GOSESSION_MEMORY_MAX_SESSIONS=3)
    now = prov.clock()
    with caplog.at_level(logging.WARNING, logger="flask_gosession"):
        for n in range(3):
            prov.session_init(key_of(n), rec(now))
        prov.session_init(key_of(0), rec(now, again=True))
    assert prov.session_count() == 3 and not evictions(caplog)


def test_no_cap_with_none():
    prov = build(GOSESSION_MEMORY_MAX_SESSIONS=None)
    now = prov.clock()
    for n in range(200):
        prov.session_init(key_of(n), rec(now))
    assert prov.session_count() == 200


def test_default_cap():
    assert build().max_sessions == 100_000
    assert MemoryProvider().max_sessions == 100_000


def test_eviction_is_constant_time_per_insert():
    """A full store at its cap: each insert evicts exactly one entry, from
    the front (no scan), so a large cap costs no more than a small one."""
    prov = build(GOSESSION_MEMORY_MAX_SESSIONS=50_000)
    prov.monotonic = Monotonic()
    now = prov.clock()
    for n in range(50_000):
        prov.session_init(key_of(n), rec(now))
    first = next(iter(prov._entries))
    prov.session_init(key_of(50_000), rec(now))
    assert first not in prov._entries and len(prov._entries) == 50_000


@pytest.mark.parametrize("value", [0, -1, 1.5, "10abc", "many", True])
def test_bad_cap_is_a_config_error(value):
    with pytest.raises(ConfigError, match="GOSESSION_MEMORY_MAX_SESSIONS"):
        build(GOSESSION_MEMORY_MAX_SESSIONS=value)


def test_cap_from_the_environment_is_accepted():
    assert build(GOSESSION_MEMORY_MAX_SESSIONS=" 10 ").max_sessions == 10
    assert build(GOSESSION_MEMORY_MAX_SESSIONS="none").max_sessions is None


# -- the bound on a record's size ---------------------------------------------------------


def test_oversized_record_is_refused_and_the_old_one_kept():
    prov = build(GOSESSION_MAX_RECORD_SIZE=1000)
    key, now = key_of(1), FakeClock()()
    with pytest.raises(RecordTooLarge) as info:
        prov.session_init(key, rec(now, big="x" * 2000))
    assert info.value.limit == 1000 and info.value.size > 2000
    assert info.value.label == key[:12] and key not in str(info.value)
    assert prov.session_read(key, now) is None  # nothing was written
    prov.session_init(key, rec(now, a=1))
    with pytest.raises(RecordTooLarge):
        prov.session_update(key, Change(set={"big": "x" * 2000}, atime=now))
    assert prov.session_read(key, now).data == {"a": 1}


@pytest.mark.parametrize("value", [0, -5, 1.0, "1MB", False])
def test_bad_record_size_is_a_config_error(value):
    with pytest.raises(ConfigError, match="GOSESSION_MAX_RECORD_SIZE"):
        build(GOSESSION_MAX_RECORD_SIZE=value)


def test_record_size_cap_defaults_to_one_mib_and_none_disables_it():
    assert build().max_record_size == 1024 * 1024
    prov = build(GOSESSION_MAX_RECORD_SIZE=None)
    now = prov.clock()
    prov.session_init(key_of(1), rec(now, big="x" * (2 << 20)))
    assert len(prov.session_read(key_of(1), now).data["big"]) == 2 << 20


# -- the live count (the active-sessions gauge) -------------------------------------------


def test_the_live_count_leaves_out_forward_stubs_and_tombstones_on_every_path():
    """``live_session_count`` is the records that are neither a forward stub
    nor a tombstone, kept right by every write and removal: an update that
    marks a record, an init that replaces a stub, destroy, eviction,
    garbage collection and clear. ``session_count`` stays every record."""
    prov = build(GOSESSION_MEMORY_MAX_SESSIONS=6)
    now = prov.clock()
    for n in range(6):
        prov.session_init(key_of(n), rec(now, n=n))
    assert (prov.session_count(), prov.live_session_count()) == (6, 6)
    assert prov.session_update(key_of(0), Change(meta={FORWARD_FIELD: "to"}, atime=now)) \
        is Outcome.APPLIED
    assert prov.session_update(key_of(1), Change(meta={DEAD_FIELD: 1}, atime=now)) \
        is Outcome.APPLIED
    # Refused changes to a stub change nothing.
    assert prov.session_update(key_of(1), Change(set={"x": 1}, atime=now)) is Outcome.MISSING
    assert not prov.session_create(key_of(0), rec(now))
    assert (prov.session_count(), prov.live_session_count()) == (6, 4)
    prov.session_init(key_of(2), Record({}, {FORWARD_FIELD: "to"}, now))  # a stub written whole
    prov.session_init(key_of(0), rec(now))  # a stub replaced by a live record
    assert (prov.session_count(), prov.live_session_count()) == (6, 4)
    prov.session_destroy(key_of(1))  # a tombstone removed
    prov.session_destroy(key_of(3))  # a live record removed
    assert (prov.session_count(), prov.live_session_count()) == (4, 3)
    # Eviction: the stub (2) is now the least recently used of four; three
    # new records past the cap of 6 push it out.
    for n in (4, 5, 0):
        prov.session_read(key_of(n), now)
    for n in (6, 7, 8):
        prov.session_init(key_of(n), rec(now, n=n))
    assert prov.session_read(key_of(2), now) is None
    assert (prov.session_count(), prov.live_session_count()) == (6, 6)
    # Garbage collection of stubs and live records alike.
    prov.session_update(key_of(6), Change(meta={FORWARD_FIELD: "to"}, atime=now))
    assert prov.live_session_count() == 5
    t.cast(FakeClock, prov.clock).advance(1000)
    assert prov.session_gc(500) == 6
    assert (prov.session_count(), prov.live_session_count()) == (0, 0)
    # Clear.
    prov.session_init(key_of(9), Record({}, {DEAD_FIELD: 1}, now))
    prov.session_init(key_of(10), rec(now))
    assert (prov.session_count(), prov.live_session_count()) == (2, 1)
    assert prov.session_clear() == 2
    assert (prov.session_count(), prov.live_session_count()) == (0, 0)
