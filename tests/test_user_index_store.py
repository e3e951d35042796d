"""The per-user index, exercised on every store that keeps one.

These call ``index_write``, ``index_read`` and ``session_peek`` directly,
without the manager, so each promise of
:mod:`flask_gosession.userindex` and of the provider contract
(:mod:`flask_gosession.providers.base`) is checked against the real store:
the raw helpers below look at what the store itself holds (the memory
dict, the index file, the ``*_users`` row, the Redis hash).
"""
from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat
import threading
import time
import typing as t

import pytest
from flask import Flask

import servers
from backends import ALL_BACKENDS, missing
from clock import FakeClock
from flask_gosession.errors import ConfigError, UserIndexUnsupported
from flask_gosession.providers.base import Record
from flask_gosession.providers.file import FileProvider
from flask_gosession.providers.memory import MemoryProvider
from flask_gosession.providers.redis import RedisProvider
from flask_gosession.providers.sql import SQLProvider
from flask_gosession.registry import build_provider
from flask_gosession.userindex import IndexEntry, IndexWrite, user_key

UNSUPPORTED = [name for name in ALL_BACKENDS if name.startswith("memcached")]
#: Every store that keeps an index, plus the ways of reaching one that
#: change how its writes run: Sentinel, and a shared (transactional) engine.
INDEX_BACKENDS = [name for name in ALL_BACKENDS if name not in UNSUPPORTED] + [
    "redis_sentinel", "sql_sqlite_shared", "sql_postgresql_shared", "sql_mariadb_shared",
]


# -- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def module_sentinel() -> t.Iterator[servers.Sentinel]:
    try:
        sentinel = servers.start_sentinel("mymaster")
    except servers.ServerUnavailable as err:
        missing(f"cannot start a Redis Sentinel: {err}")
    yield sentinel
    sentinel.stop()


@pytest.fixture
def backend_redis_sentinel(module_sentinel: servers.Sentinel) -> dict[str, t.Any]:
    return {
        "GOSESSION_PROVIDER": "redis",
        "GOSESSION_REDIS_SENTINELS": [module_sentinel.address],
        "GOSESSION_REDIS_SENTINEL_MASTER": module_sentinel.service,
        "GOSESSION_KEY_PREFIX": f"gs-test-{secrets.token_hex(6)}:",
    }


def _shared(request: pytest.FixtureRequest, name: str) -> t.Iterator[dict[str, t.Any]]:
    """The backend ``name`` on an engine the app shares (not autocommit)."""
    import sqlalchemy as sa

    config = request.getfixturevalue(f"backend_{name}")
    engine = sa.create_engine(config["GOSESSION_SQL_URL"])
    yield {**config, "GOSESSION_SQL_ENGINE": engine}
    engine.dispose()


@pytest.fixture
def backend_sql_sqlite_shared(request: pytest.FixtureRequest) -> t.Iterator[dict[str, t.Any]]:
    yield from _shared(request, "sql_sqlite")


@pytest.fixture
def backend_sql_postgresql_shared(request: pytest.FixtureRequest) -> t.Iterator[dict[str, t.Any]]:
    yield from _shared(request, "sql_postgresql")


@pytest.fixture
def backend_sql_mariadb_shared(request: pytest.FixtureRequest) -> t.Iterator[dict[str, t.Any]]:
    yield from _shared(request, "sql_mariadb")


def _build(request: pytest.FixtureRequest, name: str, tmp_path: t.Any) -> t.Any:
    config = request.getfixturevalue(f"backend_{name}")
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(config)
    prov = build_provider(app)
    clock = FakeClock()
    prov.clock = clock
    prov.max_lifetime = 3600
    prov.test_clock = clock
    prov.test_app = app
    try:
        prov.test_corrupt = request.getfixturevalue(f"corrupt_{name}")(prov)
    except pytest.FixtureLookupError:
        pass
    return prov


@pytest.fixture(params=INDEX_BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: t.Any) -> t.Iterator[t.Any]:
    prov = _build(request, request.param, tmp_path)
    yield prov
    prov.close()


@pytest.fixture
def twin(store: t.Any) -> t.Iterator[t.Any]:
    """A second provider on the same store (another process, in effect);
    the memory store itself, which no other instance can see."""
    if store.process_local:
        yield store
        return
    other = build_provider(store.test_app)
    other.clock = store.clock
    other.max_lifetime = store.max_lifetime
    yield other
    other.close()


# -- helpers -------------------------------------------------------------------------


def new_key() -> str:
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


def new_user() -> str:
    return user_key(secrets.token_hex(8))


def entry(handle: str, created: float, horizon: float, key: str | None = None, **info: str) -> IndexEntry:
    return IndexEntry(key or new_key(), handle, created, horizon, created, info)


def add(store: t.Any, user: str, item: IndexEntry, now: float, **write: t.Any) -> t.Any:
    return store.index_write(user, IndexWrite(add=item, **write), now)


def keys_of(entries: t.Iterable[IndexEntry]) -> set[str]:
    return {e.key for e in entries}


def raw_exists(store: t.Any, user: str) -> bool:
    """Whether the store still holds anything for ``user``'s index."""
    if isinstance(store, MemoryProvider):
        return user in store._indexes
    if isinstance(store, FileProvider):
        return os.path.lexists(store.index_path_for(user))
    if isinstance(store, SQLProvider):
        table = store.user_table
        with store.engine.connect() as conn:
            return conn.execute(table.select().where(table.c.user_key == user)).first() is not None
    assert isinstance(store, RedisProvider)
    return bool(store.client.exists(index_name(store, user)))


def raw_expiry(store: t.Any, user: str, now: float) -> float:
    """When the store itself will drop ``user``'s index."""
    if isinstance(store, MemoryProvider):
        return store._indexes[user][0]
    if isinstance(store, FileProvider):
        return os.stat(store.index_path_for(user)).st_mtime
    if isinstance(store, SQLProvider):
        import sqlalchemy as sa

        table = store.user_table
        with store.engine.connect() as conn:
            query = sa.select(table.c.expires).where(table.c.user_key == user)
            return float(conn.execute(query).scalar_one())
    return now + store.client.pttl(index_name(store, user)) / 1000


def raw_corrupt(store: t.Any, user: str, now: float) -> None:
    """Store a garbage index for ``user``, as only someone with write
    access to the store could."""
    garbage = b"\x00{not json\xff"
    if isinstance(store, MemoryProvider):
        store._indexes[user] = (now + 100, garbage)
    elif isinstance(store, FileProvider):
        path = store.index_path_for(user)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(garbage)
        os.utime(path, (now + 100, now + 100))
    elif isinstance(store, SQLProvider):
        store.create_table()
        with store.engine.begin() as conn:
            conn.execute(store.user_table.insert().values(user_key=user, data=garbage, expires=now + 100))
    else:
        store.client.hset(index_name(store, user), new_key(), garbage)


def index_name(store: RedisProvider, user: str) -> str:
    return store.key_prefix + "u:" + user


def rec(now: float, **data: t.Any) -> Record:
    return Record(data=dict(data), meta={"c": now}, atime=now)


def race(threads: int, target: t.Callable[[int], t.Any]) -> list[t.Any]:
    """Run ``target(n)`` on ``threads`` threads at once; return the results."""
    results: list[t.Any] = [None] * threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def run(n: int) -> None:
        try:
            start.wait()
            results[n] = target(n)
        except BaseException as err:  # reported below
            errors.append(err)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert not errors, errors
    return results


# -- round trip, pruning, expiry ---------------------------------------------------------


def test_add_then_read_round_trips(store):
    user, now = new_user(), store.clock()
    item = entry("Hd1", now, now + 600, browser="Firefox", os="Linux", address="192.0.2.0/24")
    assert add(store, user, item, now).added
    assert store.index_read(user, now) == [item]
    assert store.index_read(new_user(), now) == []


def test_read_prunes_by_horizon(store):
    user, now = new_user(), store.clock()
    short, long = entry("a", now, now + 10), entry("b", now, now + 100)
    add(store, user, short, now)
    add(store, user, long, now)
    assert keys_of(store.index_read(user, now + 10)) == {long.key}  # horizon <= now: gone
    # Pruned in the store too: an earlier clock no longer sees it.
    assert keys_of(store.index_read(user, now)) == {long.key}
    assert store.index_read(user, now + 100) == []


def test_write_prunes_by_horizon(store):
    user, now = new_user(), store.clock()
    old = entry("a", now, now + 10)
    add(store, user, old, now)
    fresh = entry("b", now + 20, now + 100)
    add(store, user, fresh, now + 20)
    assert keys_of(store.index_read(user, now + 5)) == {fresh.key}


def test_index_expiry_is_its_latest_horizon(store):
    user, now = new_user(), store.clock()
    add(store, user, entry("a", now, now + 50), now)
    add(store, user, entry("b", now, now + 300), now)
    add(store, user, entry("c", now, now + 100), now)
    assert raw_expiry(store, user, now) == pytest.approx(now + 300, abs=1)


def test_index_disappears_once_every_horizon_passed(store):
    """Real time and real short horizons: Redis drops the hash by its own
    TTL; the other stores drop it at their next GC."""
    store.clock = time.time
    user, now = new_user(), time.time()
    add(store, user, entry("a", now, now + 0.3), now)
    add(store, user, entry("b", now, now + 0.5), now)
    assert raw_exists(store, user)
    time.sleep(0.8)
    if not store.native_ttl:
        assert raw_exists(store, user)  # nothing but GC removes it
        store.session_gc(3600)
    assert not raw_exists(store, user)
    assert store.index_read(user, time.time()) == []


def test_a_thousand_sessions_leave_a_bounded_residue_then_nothing(store):
    """1,000 sessions of one user, each living 10 seconds, one a second:
    every write prunes, so the index never holds more than the live ones,
    and once the last has expired nothing is left."""
    user, start = new_user(), store.clock()
    for i in range(1000):
        now = start + i
        add(store, user, entry(f"h{i}", now, now + 10), now)
        if i % 100 == 99:
            assert len(store.index_read(user, now)) == 10
    end = start + 1000 + 10
    assert store.index_read(user, end) == []
    store.clock = lambda: end
    store.session_gc(3600)
    assert not raw_exists(store, user)


# -- the per-handle rule, removal, the limit ------------------------------------------------


def test_one_handle_keeps_the_key_being_left_and_drops_older_ones(store):
    user, now = new_user(), store.clock()
    first = entry("dev", now, now + 600)
    add(store, user, first, now)
    second = entry("dev", now, now + 600)
    add(store, user, second, now, keep=first.key)  # a rotation under way
    assert keys_of(store.index_read(user, now)) == {first.key, second.key}
    third = entry("dev", now, now + 600)
    add(store, user, third, now, keep=second.key)  # the next rotation
    assert keys_of(store.index_read(user, now)) == {second.key, third.key}
    # A sibling: another rotation of the id being left, racing the first
    # (a re-login and an age rotation). Neither drops the other's key: the
    # one whose record gets written must stay in the index.
    sibling = entry("dev", now, now + 600)
    add(store, user, sibling, now, keep=second.key)
    assert keys_of(store.index_read(user, now)) == {second.key, third.key, sibling.key}
    # No keep (a refresh of the horizon, rewriting an entry): nothing dropped,
    # and the rewritten entry still replaces what it replaced.
    refreshed = IndexEntry(third.key, "dev", now, now + 900, now, {})
    add(store, user, refreshed, now)
    assert keys_of(store.index_read(user, now)) == {second.key, third.key, sibling.key}
    fourth = entry("dev", now, now + 600)
    add(store, user, fourth, now, keep=third.key)  # the next rotation drops second
    assert keys_of(store.index_read(user, now)) == {third.key, sibling.key, fourth.key}


def test_rewriting_an_entry_refreshes_its_horizon(store):
    user, now = new_user(), store.clock()
    item = entry("dev", now, now + 100)
    add(store, user, item, now)
    refreshed = IndexEntry(item.key, "dev", now, now + 900, now + 50, {})
    add(store, user, refreshed, now + 50)
    assert store.index_read(user, now + 500) == [refreshed]


def test_remove(store):
    user, now = new_user(), store.clock()
    a, b = entry("a", now, now + 600), entry("b", now, now + 600)
    add(store, user, a, now)
    add(store, user, b, now)
    store.index_write(user, IndexWrite(remove={a.key, new_key()}), now)
    assert store.index_read(user, now) == [b]
    store.index_write(user, IndexWrite(remove={b.key}), now)
    assert store.index_read(user, now) == []
    assert not raw_exists(store, user)  # an emptied index is deleted at once


def test_limit_refuses_a_new_device(store):
    user, now = new_user(), store.clock()
    a, b = entry("a", now, now + 600), entry("b", now + 1, now + 600)
    assert add(store, user, a, now, limit=2).added
    assert add(store, user, b, now, limit=2).added
    refused = add(store, user, entry("c", now + 2, now + 600), now, limit=2)
    assert not refused.added and refused.evicting == ()
    assert keys_of(store.index_read(user, now)) == {a.key, b.key}
    # A rotation of a device already counted is not a new device.
    rotated = entry("a", now, now + 600)
    assert add(store, user, rotated, now, limit=2, keep=a.key).added
    assert keys_of(store.index_read(user, now)) == {a.key, rotated.key, b.key}


def test_limit_evicts_the_oldest_device_until_it_is_removed(store):
    user, now = new_user(), store.clock()
    oldest, middle = entry("a", now, now + 600), entry("b", now + 1, now + 600)
    add(store, user, oldest, now, limit=2, evict=True)
    add(store, user, middle, now, limit=2, evict=True)
    newest = entry("c", now + 2, now + 600)
    result = add(store, user, newest, now, limit=2, evict=True)
    assert result.added
    assert [(e.key, e.evicting) for e in result.evicting] == [(oldest.key, True)]
    stored = {e.key: e for e in store.index_read(user, now)}
    assert set(stored) == {oldest.key, middle.key, newest.key}
    assert stored[oldest.key].evicting and not stored[middle.key].evicting
    # Marked entries keep their times (the script re-encodes them).
    assert stored[oldest.key].created == oldest.created
    assert stored[oldest.key].horizon == oldest.horizon
    # Every later write hands the marked entry back, until it is removed.
    later = store.index_write(user, IndexWrite(), now + 1)
    assert keys_of(later.evicting) == {oldest.key}
    # A rotation of the evicted device stays marked.
    moved = entry("a", now, now + 600)
    again = add(store, user, moved, now + 1, keep=oldest.key)
    assert keys_of(again.evicting) == {oldest.key, moved.key}
    done = store.index_write(user, IndexWrite(remove={oldest.key, moved.key}), now + 2)
    assert done.evicting == ()
    assert keys_of(store.index_read(user, now + 2)) == {middle.key, newest.key}


def test_concurrent_new_devices_never_exceed_a_refusing_limit(store, twin):
    user, now = new_user(), store.clock()
    stores = [store, twin]

    def login(n: int) -> bool:
        item = entry(f"dev{n}", now + n, now + 600)
        return bool(add(stores[n % 2], user, item, now, limit=3).added)

    added = race(20, login)
    assert sum(added) == 3
    assert len(store.index_read(user, now)) == 3


def test_concurrent_new_devices_with_eviction_leave_exactly_the_limit(store, twin):
    user, now = new_user(), store.clock()
    stores = [store, twin]

    def login(n: int) -> bool:
        item = entry(f"dev{n}", now + n, now + 600)
        return bool(add(stores[n % 2], user, item, now, limit=3, evict=True).added)

    assert all(race(20, login))
    entries = store.index_read(user, now)
    assert len(entries) == 20  # marked ones stay until their sessions are gone
    assert len([e for e in entries if not e.evicting]) == 3
    evicting = store.index_write(user, IndexWrite(), now).evicting
    assert len(evicting) == 17


# -- corruption ---------------------------------------------------------------------------


def test_a_corrupt_index_reads_as_empty_with_a_warning(store, caplog):
    user, now = new_user(), store.clock()
    raw_corrupt(store, user, now)
    with caplog.at_level(logging.WARNING, logger="flask_gosession"):
        assert store.index_read(user, now) == []
    warned = [r for r in caplog.records if r.name == "flask_gosession" and r.levelno == logging.WARNING]
    assert warned and "corrupt" in warned[0].getMessage() and "user index" in warned[0].getMessage()
    assert user not in warned[0].getMessage()  # the user key appears as its label only
    # And a write starts it afresh.
    caplog.clear()
    raw_corrupt(store, user, now)
    item = entry("a", now, now + 600)
    with caplog.at_level(logging.WARNING, logger="flask_gosession"):
        assert add(store, user, item, now).added
    assert store.index_read(user, now) == [item]


def raw_corrupt_member(store: t.Any, user: str, now: float) -> None:
    """Replace one member of ``user``'s stored index by garbage, keeping the others."""
    import json as _json

    if isinstance(store, RedisProvider):
        store.client.hset(index_name(store, user), new_key(), b"\x00{not json\xff")
        return
    if isinstance(store, MemoryProvider):
        expires, blob = store._indexes[user]
    elif isinstance(store, FileProvider):
        with open(store.index_path_for(user), "rb") as fh:
            blob = fh.read()
    else:
        with store.engine.begin() as conn:
            blob = conn.execute(store.user_table.select().where(
                store.user_table.c.user_key == user)).one().data
    members = _json.loads(blob)
    members[new_key()] = {"h": 5, "garbage": True}
    members["../../etc/passwd"] = {"h": "x", "c": now, "z": now + 600, "a": now, "i": {}}
    new = _json.dumps(members).encode()
    if isinstance(store, MemoryProvider):
        store._indexes[user] = (expires, new)
    elif isinstance(store, FileProvider):
        path = store.index_path_for(user)
        mtime = os.stat(path).st_mtime
        with open(path, "wb") as fh:
            fh.write(new)
        os.utime(path, (mtime, mtime))
    else:
        with store.engine.begin() as conn:
            conn.execute(store.user_table.update().where(
                store.user_table.c.user_key == user).values(data=new))


def test_one_corrupt_entry_never_hides_the_others(store, caplog):
    """A damaged member is dropped with a warning; the user's other
    sessions stay in the index, so revocation still reaches them."""
    user, now = new_user(), store.clock()
    good = [entry("a", now, now + 600), entry("b", now, now + 600)]
    for item in good:
        assert add(store, user, item, now).added
    raw_corrupt_member(store, user, now)
    with caplog.at_level(logging.WARNING, logger="flask_gosession"):
        assert sorted(store.index_read(user, now), key=lambda e: e.handle) == good
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    assert add(store, user, entry("c", now, now + 600), now).added
    assert len(store.index_read(user, now)) == 3


def test_redis_index_key_of_another_type_reads_as_empty(store, caplog):
    if not isinstance(store, RedisProvider):
        pytest.skip("Redis only")
    user, now = new_user(), store.clock()
    store.client.set(index_name(store, user), b"not a hash")
    with caplog.at_level(logging.WARNING, logger="flask_gosession"):
        assert store.index_read(user, now) == []
    assert any("corrupt user index" in r.getMessage() and "not a hash" in r.getMessage()
               for r in caplog.records)
    item = entry("a", now, now + 600)
    assert add(store, user, item, now).added
    assert store.index_read(user, now) == [item]


# -- session_peek, count and clear -----------------------------------------------------------


def test_peek_does_not_refresh_the_access_time(store):
    clock = store.test_clock
    t0 = clock()
    key, missing_key = new_key(), new_key()
    store.session_init(key, rec(t0, a=1))
    ttl = store.client.pttl(store.key_prefix + key) if isinstance(store, RedisProvider) else None
    peeked = store.session_peek([key, missing_key], t0 + 100)
    assert peeked[missing_key] is None
    got = peeked[key]
    assert got is not None and got.data == {"a": 1}
    assert got.atime == pytest.approx(t0, abs=1e-3)
    if isinstance(store, FileProvider):
        assert os.stat(store.path_for(key)).st_mtime == pytest.approx(t0, abs=1e-3)
    if ttl is not None:
        assert store.client.pttl(store.key_prefix + key) <= ttl
    # The stored access time is the one written (a touching read returns
    # the previous one, so this holds for every store).
    assert store.session_read(key, t0 + 200).atime == pytest.approx(t0, abs=1e-3)
    assert store.session_peek([], t0) == {}


def test_peek_reads_a_corrupt_record_as_none(store):
    corrupt = getattr(store, "test_corrupt", None)
    if corrupt is None:
        pytest.skip("backend has no raw-write hook")
    bad, good, now = new_key(), new_key(), store.clock()
    corrupt(bad, b"\x00not a record\xff")
    store.session_init(good, rec(now, b=2))
    peeked = store.session_peek([bad, good], now)
    assert peeked[bad] is None and peeked[good].data == {"b": 2}


def test_count_ignores_indexes_and_clear_removes_them(store):
    now = store.clock()
    store.session_clear()
    keys = [new_key() for _ in range(3)]
    for key in keys:
        store.session_init(key, rec(now))
    user = new_user()
    for key in keys:
        add(store, user, entry(key[:12], now, now + 600, key=key), now)
    assert store.session_count() == 3
    assert store.session_clear() == 3
    assert not raw_exists(store, user)
    assert store.index_read(user, now) == []


# -- Memcached ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_memcached_refuses_the_index_naming_the_stores_that_keep_one(request, name, tmp_path):
    prov = _build(request, name, tmp_path)
    try:
        assert prov.user_index is False
        now = prov.clock()
        with pytest.raises(UserIndexUnsupported) as caught:
            prov.index_write(new_user(), IndexWrite(add=entry("a", now, now + 60)), now)
        assert all(name in str(caught.value) for name in ("memory", "file", "sql", "redis"))
        with pytest.raises(UserIndexUnsupported):
            prov.index_read(new_user(), now)
    finally:
        prov.close()


# -- store-specific layout ------------------------------------------------------------------


def test_file_index_layout_and_permissions(tmp_path):
    directory = tmp_path / "sessions"
    prov = FileProvider(directory)
    user, now = new_user(), time.time()
    add(prov, user, entry("a", now, now + 600), now)
    path = prov.index_path_for(user)
    assert path == str(directory / "users" / user[:2] / user)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for folder in (directory / "users", directory / "users" / user[:2]):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert prov.session_count() == 0
    for bad in ("../" + user[3:], user.upper(), user[:-1], "x" * 64):
        with pytest.raises(ValueError):
            prov.index_read(bad, now)
    os.chmod(directory / "users" / user[:2], 0o770)
    with pytest.raises(ConfigError, match="writable by its group"):
        FileProvider(directory)


def test_redis_index_is_one_hash_of_entry_json(request, tmp_path):
    import json

    for name in ("redis", "redis_cluster"):
        prov = _build(request, name, tmp_path)
        try:
            user, now = new_user(), prov.clock()
            item = entry("a", now, now + 600, browser="Firefox")
            add(prov, user, item, now)
            stored = prov.client.hgetall(index_name(prov, user))
            assert {k.decode(): json.loads(v) for k, v in stored.items()} == {item.key: item.to_json()}
            assert 599_000 < prov.client.pttl(index_name(prov, user)) <= 600_000
        finally:
            prov.session_clear()
            prov.close()


def test_sql_index_write_is_one_transaction_that_claims_the_row_first(store):
    """Insert-if-absent that locks, then the read, then the write: a plain
    ``FOR UPDATE`` would lock nothing for a user with no row yet."""
    if not isinstance(store, SQLProvider) or not store._explicit:
        pytest.skip("SQL on an engine the provider owns")
    import sqlalchemy as sa

    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append(" ".join(statement.split()))

    user, now = new_user(), store.clock()
    add(store, user, entry("warm", now, now + 600), now)  # creates the tables
    sa.event.listen(store.engine, "before_cursor_execute", record)
    try:
        add(store, user, entry("a", now, now + 600), now)
        peek = store.session_peek([new_key(), new_key()], now)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", record)
    assert seen[0] in ("BEGIN", "BEGIN IMMEDIATE", "START TRANSACTION")
    assert seen[1].startswith("INSERT INTO") and ("ON CONFLICT" in seen[1] or "ON DUPLICATE KEY" in seen[1])
    assert seen[2].startswith("SELECT")
    if store.engine.dialect.name != "sqlite":  # SQLite holds the database lock instead
        assert seen[2].endswith("FOR UPDATE")
    assert seen[3].startswith("UPDATE") and seen[4] == "COMMIT"
    assert len(seen) == 6 and seen[5].startswith("SELECT") and " IN " in seen[5]  # the peek
    assert set(peek.values()) == {None}
