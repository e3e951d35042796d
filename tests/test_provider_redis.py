"""The Redis provider beyond the shared contract: layout, round trips, TTLs,
failures and recovery, Redis Cluster and Sentinel.

Everything runs against real throwaway servers (see ``servers.py``); round
trips are counted on redis-py's real connections, which record each
command they send (one command sent, one round trip).
"""
from __future__ import annotations

import hashlib
import os
import secrets
import time
import typing as t

import pytest
import redis
from flask import Flask

import servers
from backends.redis import unique_prefix
from clock import FakeClock
from flask_gosession.errors import ConfigError, CorruptRecordError, ProviderError, RecordTooLarge
from flask_gosession.providers.base import FORWARD_FIELD, Change, Outcome, Record
from flask_gosession.providers.redis import RedisProvider
from helpers import concurrent_writers, overlapping


def new_key() -> str:
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


def rec(now: float, **data: t.Any) -> Record:
    return Record(data=dict(data), meta={"c": now}, atime=now)


@pytest.fixture
def make() -> t.Iterator[t.Callable[..., RedisProvider]]:
    """Build providers from config, as init_app would; close them afterwards."""
    built: list[RedisProvider] = []

    def build(**config: t.Any) -> RedisProvider:
        app = Flask(__name__)
        app.config.update(config)
        for key, value in RedisProvider.config_defaults(app).items():
            app.config.setdefault(key, value)
        prov = RedisProvider.from_config(app)
        prov.clock = FakeClock()
        prov.max_lifetime = 3600
        built.append(prov)
        return prov

    yield build
    for prov in built:
        prov.close()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the commands every redis-py connection sends from now on.

    Every command, from the client's machinery and from the provider's fast
    lane alike, goes out through ``Connection.send_command``.
    """
    names: list[str] = []
    send = redis.connection.AbstractConnection.send_command

    def counting(self: t.Any, *args: t.Any, **kwargs: t.Any) -> None:
        names.append(str(args[0]).upper())
        send(self, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_command", counting)
    return names


@pytest.fixture(params=["built", "supplied"])
def client_config(request, redis_shared_server: servers.RedisServer) -> t.Iterator[dict[str, t.Any]]:
    """Config for a provider on a client it builds from the URL (which
    takes the fast lane) or on one the application supplies."""
    config: dict[str, t.Any] = {"GOSESSION_KEY_PREFIX": unique_prefix()}
    if request.param == "built":
        config["GOSESSION_REDIS_URL"] = redis_shared_server.url
        yield config
        return
    client = redis.Redis.from_url(redis_shared_server.url)
    config["GOSESSION_REDIS"] = client
    yield config
    client.close()


# -- layout and TTL ---------------------------------------------------------------


def test_layout_is_one_hash_per_session(make, backend_redis):
    prov = make(**backend_redis)
    key, now = new_key(), 1000.5
    prov.session_init(key, Record({"user": "ann", "n": [1, 2]}, {"c": now}, now))
    stored = prov.client.hgetall(prov.key_prefix + key)
    # s: the bytes of the d: and m: names and values (11 + 8 + 9).
    assert stored == {b"d:user": b'"ann"', b"d:n": b"[1,2]", b"m:c": b"1000.5", b"a": b"1000.5",
                      b"s": b"28"}
    assert prov.client.type(prov.key_prefix + key) == b"hash"


def test_ttl_is_native_and_renewed_by_every_write(make, backend_redis):
    prov = make(**backend_redis)
    prov.max_lifetime = 120
    key, now = new_key(), prov.clock()
    store_key = prov.key_prefix + key
    prov.session_init(key, rec(now, a=1))
    assert 110 <= prov.client.ttl(store_key) <= 120
    for operation in (
        lambda: prov.session_update(key, Change(set={"b": 2}, atime=now)),
        lambda: prov.session_touch(key, now),
    ):
        prov.client.expire(store_key, 5)
        operation()
        assert 110 <= prov.client.ttl(store_key) <= 120
    assert prov.session_gc(120) == 0


def test_read_is_one_plain_hgetall_that_changes_nothing(make, client_config, sent):
    # The read is the cheapest possible round trip; the manager refreshes
    # the access time and TTL with a touch once per refresh interval.
    prov = make(**client_config)
    assert prov.touches_on_read is False
    key = new_key()
    store_key = prov.key_prefix + key
    prov.session_init(key, rec(100.0, a=1))
    prov.client.expire(store_key, 50)
    sent.clear()
    assert prov.session_read(key, 150.25) == Record({"a": 1}, {"c": 100.0}, 100.0)
    assert sent == ["HGETALL"]
    assert prov.client.hget(store_key, "a") == b"100.0"
    assert prov.client.ttl(store_key) <= 50


def test_touch_and_update_never_create(make, backend_redis):
    prov = make(**backend_redis)
    key, now = new_key(), prov.clock()
    prov.session_touch(key, now)
    change = Change(set={"a": 1}, meta={FORWARD_FIELD: "x"}, atime=now)
    assert prov.session_update(key, change) is Outcome.MISSING
    assert prov.client.exists(prov.key_prefix + key) == 0


def test_forwarded_record_is_frozen(make, backend_redis):
    prov = make(**backend_redis)
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1))
    assert prov.session_update(key, Change(meta={FORWARD_FIELD: "t"}, atime=now)) is Outcome.APPLIED
    for change in (
        Change(set={"a": 2}, atime=now + 1),
        Change(meta={FORWARD_FIELD: "other"}, atime=now + 1),
        Change(set={"a": 3}, meta={FORWARD_FIELD: None}, atime=now + 1),
    ):
        assert prov.session_update(key, change) is Outcome.FORWARDED
    got = prov.session_read(key, now)
    assert got.data == {"a": 1} and got.meta[FORWARD_FIELD] == "t" and got.atime == now


def test_large_records_pass_lua_argument_limits(make, backend_redis):
    """More arguments than Lua's unpack() takes at once: the scripts chunk them."""
    prov = make(**backend_redis)
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, **{f"k{i}": i for i in range(6000)}))
    change = Change(
        set={f"n{i}": i for i in range(5000)},
        deleted={f"k{i}" for i in range(0, 6000, 2)},
        atime=now,
    )
    assert prov.session_update(key, change) is Outcome.APPLIED
    data = prov.session_read(key, now).data
    assert len(data) == 3000 + 5000
    assert data["k1"] == 1 and "k0" not in data and data["n4999"] == 4999


# -- round trips --------------------------------------------------------------------


def test_each_operation_is_one_round_trip(make, client_config, sent):
    prov = make(**client_config)
    key, now = new_key(), prov.clock()
    # Warm up: the connection handshake and loading the scripts.
    prov.session_init(key, rec(now, a=1))
    prov.session_read(key, now)
    prov.session_update(key, Change(set={"a": 1}, atime=now))
    prov.session_touch(key, now)

    def trips(operation: t.Callable[[], t.Any]) -> int:
        sent.clear()
        operation()
        return len(sent)

    assert trips(lambda: prov.session_init(key, rec(now, a=1, b=2))) == 1
    assert trips(lambda: prov.session_read(key, now + 1)) == 1
    assert trips(lambda: prov.session_read(new_key(), now)) == 1
    change = Change(set={"c": 3}, deleted={"a"}, atime=now)
    assert trips(lambda: prov.session_update(key, change)) == 1
    assert trips(lambda: prov.session_touch(key, now + 2)) == 1
    assert trips(lambda: prov.session_destroy(key)) == 1


def test_scripts_reload_after_script_flush(make, client_config):
    prov = make(**client_config)
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1))
    prov.client.script_flush()
    assert prov.session_update(key, Change(set={"b": 2}, atime=now)) is Outcome.APPLIED
    prov.client.script_flush()
    prov.session_touch(key, now + 1)
    assert prov.session_read(key, now) == Record({"a": 1, "b": 2}, {"c": now}, now + 1)


# -- corrupt records -------------------------------------------------------------------


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda c, k: c.set(k, b"a string"), id="wrong-type"),
        pytest.param(lambda c, k: c.hset(k, mapping={"d:x": b"1"}), id="no-atime"),
        pytest.param(lambda c, k: c.hset(k, mapping={"a": b"soon"}), id="bad-atime"),
        pytest.param(lambda c, k: c.hset(k, mapping={"a": b"nan"}), id="nan-atime"),
        pytest.param(lambda c, k: c.hset(k, mapping={"a": b"1", "m:c": b"{"}), id="bad-meta"),
        pytest.param(lambda c, k: c.hset(k, mapping={"a": b"1", b"d:\xff": b"1"}), id="bad-name"),
    ],
)
def test_corrupt_records_raise_corrupt_error(make, backend_redis, write):
    prov = make(**backend_redis)
    key = new_key()
    write(prov.client, prov.key_prefix + key)
    with pytest.raises(CorruptRecordError):
        prov.session_read(key, prov.clock())


def test_update_and_touch_leave_a_wrong_type_alone(make, backend_redis):
    prov = make(**backend_redis)
    key = new_key()
    prov.client.set(prov.key_prefix + key, b"not a hash")
    with pytest.raises(CorruptRecordError):
        prov.session_update(key, Change(set={"a": 1}, atime=1.0))
    prov.session_touch(key, 1.0)
    assert prov.client.get(prov.key_prefix + key) == b"not a hash"


def test_unknown_fields_are_ignored(make, backend_redis):
    prov = make(**backend_redis)
    key = new_key()
    prov.client.hset(prov.key_prefix + key, mapping={"a": b"5", "x:future": b"?", "d:k": b"1"})
    assert prov.session_read(key, 6.0) == Record({"k": 1}, {}, 5.0)


# -- the size limit -----------------------------------------------------------------


def stored_size(prov: RedisProvider, key: str) -> tuple[int, int]:
    """The ``s`` field, and the size it must equal, from the hash itself."""
    fields = prov.client.hgetall(prov.key_prefix + key)
    actual = sum(len(n) + len(v) for n, v in fields.items() if n[:2] in (b"d:", b"m:"))
    return int(fields[b"s"]), actual


@pytest.fixture(params=["backend_redis", "backend_redis_cluster"])
def capped(request, make) -> RedisProvider:  # type: ignore[no-untyped-def]
    return make(**request.getfixturevalue(request.param), GOSESSION_MAX_RECORD_SIZE=4096)


def test_oversized_init_is_refused_and_nothing_is_sent(capped, sent):
    key, now = new_key(), capped.clock()
    _ = capped.client  # connect first: count only the session's commands
    sent.clear()
    with pytest.raises(RecordTooLarge) as info:
        capped.session_init(key, rec(now, big="x" * 5000))
    assert info.value.limit == 4096 and info.value.size > 5000 and info.value.label == key[:12]
    assert sent == [] and capped.session_read(key, now) is None


def test_a_record_grown_past_the_limit_by_updates_is_refused_whole(capped):
    """Each update alone is small; the script sees the total and refuses
    the one that would cross the limit, writing none of it."""
    key, now = new_key(), capped.clock()
    capped.session_init(key, rec(now, a="x" * 1500))
    assert capped.session_update(key, Change(set={"b": "y" * 1500}, atime=now)) is Outcome.APPLIED
    with pytest.raises(RecordTooLarge) as info:
        capped.session_update(key, Change(set={"c": "z" * 1500}, deleted={"a0"}, meta={"m": 1},
                                          atime=now + 5))
    assert 4096 < info.value.size < 5000 and info.value.limit == 4096
    got = capped.session_read(key, now)
    assert set(got.data) == {"a", "b"} and "m" not in got.meta and got.atime == now
    # Replacing and deleting shrink it again, and the size stays exact.
    assert capped.session_update(
        key, Change(set={"a": "x" * 3000}, deleted={"b"}, atime=now)) is Outcome.APPLIED
    size, actual = stored_size(capped, key)
    assert size == actual
    assert capped.session_update(key, Change(set={"c": "z" * 900}, atime=now)) is Outcome.APPLIED


def test_size_field_stays_exact_through_many_changes(make, backend_redis):
    prov = make(**backend_redis)
    key, now = new_key(), prov.clock()
    prov.session_init(key, Record({"é": "ü" * 10, "n": 1}, {"c": now, "t": "tok"}, now))
    assert stored_size(prov, key)[0] == stored_size(prov, key)[1]
    changes = [
        Change(set={"n": 123456, "new": [1, 2, 3]}, atime=now),
        Change(deleted={"é", "missing"}, meta={"t": None}, atime=now),
        Change(set={"n": 1}, meta={"t": "longer token", "y": {"k": "v"}}, atime=now),
        Change(set={"é": "back"}, deleted={"new"}, atime=now),
    ]
    for change in changes:
        assert prov.session_update(key, change) is Outcome.APPLIED
        size, actual = stored_size(prov, key)
        assert size == actual


def test_a_hash_without_a_size_field_gets_one(make, backend_redis):
    """Records written before the ``s`` field existed are measured once."""
    prov = make(**backend_redis, GOSESSION_MAX_RECORD_SIZE=4096)
    key = new_key()
    prov.client.hset(prov.key_prefix + key,
                     mapping={"a": b"5", "d:k": b'"' + b"x" * 3000 + b'"', "m:c": b"5"})
    with pytest.raises(RecordTooLarge):
        prov.session_update(key, Change(set={"k2": "y" * 1500}, atime=6.0))
    assert b"s" not in prov.client.hgetall(prov.key_prefix + key)
    assert prov.session_update(key, Change(set={"k2": "y"}, atime=6.0)) is Outcome.APPLIED
    size, actual = stored_size(prov, key)
    assert size == actual


def test_a_value_over_redis_own_limit_is_refused(make, backend_redis, monkeypatch):
    from flask_gosession.providers import redis as redis_module

    # Redis refuses values over 512 MB; the check is the same for a lower
    # bound, which spares the test half a gigabyte.
    monkeypatch.setattr(redis_module, "MAX_VALUE_SIZE", 100)
    prov = make(**backend_redis, GOSESSION_MAX_RECORD_SIZE=None)
    key, now = new_key(), prov.clock()
    with pytest.raises(RecordTooLarge, match="one value") as info:
        prov.session_init(key, rec(now, big="x" * 200))
    assert info.value.limit == 100
    prov.session_init(key, rec(now, a="x" * 50, b="y" * 50))  # many small values are fine


def test_the_cap_defaults_to_one_mib(make, backend_redis):
    assert make(**backend_redis).max_record_size == 1024 * 1024


# -- count and clear ------------------------------------------------------------------


def test_count_and_clear_only_touch_the_prefix(make, redis_shared_server):
    # Glob characters in the prefix must be matched literally by SCAN.
    prefix = unique_prefix() + "[*?]\\:"
    prov = make(GOSESSION_REDIS_URL=redis_shared_server.url, GOSESSION_KEY_PREFIX=prefix)
    neighbour = make(
        GOSESSION_REDIS_URL=redis_shared_server.url, GOSESSION_KEY_PREFIX=prefix[:-6] + "x:"
    )
    now = prov.clock()
    for _ in range(1203):
        prov.session_init(new_key(), rec(now))
    neighbour.session_init(new_key(), rec(now))
    assert prov.session_count() == 1203
    assert prov.session_clear() == 1203
    assert prov.session_count() == 0
    assert neighbour.session_count() == 1


def test_cluster_spreads_counts_and_clears_over_every_node(
    make, backend_redis_cluster, redis_cluster
):
    prov = make(**backend_redis_cluster)
    now = prov.clock()
    keys = [new_key() for _ in range(60)]
    for key in keys:
        prov.session_init(key, rec(now, k=key))
    for node in redis_cluster.nodes:
        with redis.Redis.from_url(node.url) as direct:
            assert any(True for _ in direct.scan_iter(match=prov.key_prefix + "*"))
    assert all(prov.session_read(key, now).data == {"k": key} for key in keys)
    assert prov.session_count() == 60
    assert prov.session_clear() == 60
    assert prov.session_count() == 0


# -- concurrency --------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["backend_redis", "backend_redis_cluster"])
def test_concurrent_updates_from_several_clients_all_survive(make, request, backend):
    config = request.getfixturevalue(backend)
    providers = [make(**config) for _ in range(3)]
    key, now = new_key(), providers[0].clock()
    providers[0].session_init(key, rec(now, **{f"gone{n}": 0 for n in range(8)}))
    concurrent_writers(providers, key, now, writers=8, rounds=25, delete_own=True, timeout=30)


# -- the fast lane ------------------------------------------------------------------------


def test_fast_lane_speaks_resp3_too(make, redis_shared_server):
    prov = make(GOSESSION_REDIS_URL=redis_shared_server.url + "?protocol=3",
                GOSESSION_KEY_PREFIX=unique_prefix())
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=[1, 2]))
    assert prov.session_update(key, Change(set={"b": "x"}, atime=now + 1)) is Outcome.APPLIED
    assert prov.session_read(key, now) == Record({"a": [1, 2], "b": "x"}, {"c": now}, now + 1)


def test_fast_lane_reuses_a_connection_after_an_error_reply(make, redis_shared_server):
    prov = make(GOSESSION_REDIS_URL=redis_shared_server.url, GOSESSION_KEY_PREFIX=unique_prefix())
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1))
    connection = prov._send("CLIENT", "ID")
    prov.client.set(prov.key_prefix + "wrong", b"a string")
    for _ in range(5):
        with pytest.raises(CorruptRecordError):
            prov.session_read("wrong", now)
        # The error reply was read in full: the connection stays, in sync.
        assert prov.session_read(key, now).data == {"a": 1}
    assert prov._send("CLIENT", "ID") == connection


def test_fast_lane_replaces_a_connection_the_server_closed(make, redis_shared_server):
    name = "lane-" + secrets.token_hex(4)
    prov = make(GOSESSION_REDIS_URL=f"{redis_shared_server.url}?client_name={name}",
                GOSESSION_KEY_PREFIX=unique_prefix())
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1))
    with redis.Redis.from_url(redis_shared_server.url) as admin:
        killed = sum(
            admin.client_kill_filter(_id=c["id"]) for c in admin.client_list()
            if c.get("name", "").startswith(name)
        )
        assert killed >= 1
        # Every idle connection of the provider is dead now; the one retry
        # on a fresh connection hides it from the caller.
        assert prov.session_read(key, now).data == {"a": 1}
        assert prov.session_update(key, Change(set={"b": 2}, atime=now)) is Outcome.APPLIED


def test_forked_child_never_shares_the_parents_connections(make, redis_shared_server):
    """Neither the lane's idle connections nor redis-py's own pool (``SCAN``,
    counters, script loading; its pid check resets it) reach a child."""
    prov = make(GOSESSION_REDIS_URL=redis_shared_server.url, GOSESSION_KEY_PREFIX=unique_prefix())
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1))
    parent_id, pooled_id = prov._send("CLIENT", "ID"), prov.client.client_id()
    assert prov._send("CLIENT", "ID") == parent_id  # the idle connection is reused
    assert prov.client.client_id() == pooled_id  # and the pooled one
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its connections and what it read, then leave
        try:
            child_id, child_pooled = prov._send("CLIENT", "ID"), prov.client.client_id()
            data = prov.session_read(key, now).data
            os.write(write_end, f"{child_id} {child_pooled} {data['a']} {prov.session_count()}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child_id, child_pooled, value, count = pipe.read().split()
    os.waitpid(pid, 0)
    assert {int(child_id), int(child_pooled)}.isdisjoint({parent_id, pooled_id})
    assert value == "1" and count == "1"
    assert prov._send("CLIENT", "ID") == parent_id and prov.client.client_id() == pooled_id
    assert prov.session_read(key, now).data == {"a": 1}


# -- failures and recovery ---------------------------------------------------------------


def test_dead_server_raises_fast_and_restart_recovers(make, redis_server):
    prov = make(GOSESSION_REDIS_URL=redis_server.url, GOSESSION_REDIS_TIMEOUT=1.0)
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1))
    redis_server.kill()
    for operation in (
        lambda: prov.session_read(key, now),
        lambda: prov.session_update(key, Change(set={"a": 2}, atime=now)),
        lambda: prov.session_init(key, rec(now)),
        lambda: prov.session_touch(key, now),
        lambda: prov.session_destroy(key),
        lambda: prov.session_count(),
        lambda: prov.session_clear(),
    ):
        started = time.monotonic()
        with pytest.raises(ProviderError) as info:
            operation()
        assert time.monotonic() - started < 1.0
        assert isinstance(info.value.__cause__, redis.RedisError)
    redis_server.start()  # same port, empty, no scripts loaded
    assert prov.session_read(key, now) is None
    prov.session_init(key, rec(now, a=3))
    assert prov.session_read(key, now).data == {"a": 3}


def test_restart_with_many_idle_connections_is_invisible(make, redis_server):
    """After a restart, the lane's idle connections (one per past
    concurrent call) and the pool's are all closed at the server's end;
    the next calls still succeed, not just the first."""
    prov = make(GOSESSION_REDIS_URL=redis_server.url, GOSESSION_REDIS_TIMEOUT=5.0)
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1))
    reads = overlapping(redis_server, [lambda: prov.session_read(key, now).data] * 8)
    counts = overlapping(redis_server, [prov.session_count] * 8)
    assert reads == [{"a": 1}] * 8 and counts == [1] * 8
    assert len(prov._lane._idle._idle) >= 6  # one per overlapping call
    redis_server.restart()  # same port, empty
    for n in range(4):
        prov.session_init(key, rec(now, a=n))
        assert prov.session_read(key, now).data == {"a": n}
        assert prov.session_count() == 1


def test_hung_server_times_out_within_the_timeout(make, redis_server):
    prov = make(GOSESSION_REDIS_URL=redis_server.url, GOSESSION_REDIS_TIMEOUT=0.5)
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1))
    redis_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(ProviderError):
            prov.session_read(key, now)
        elapsed = time.monotonic() - started
    finally:
        redis_server.resume()
    assert 0.4 <= elapsed < 1.5  # one timeout: timeouts are not retried
    assert prov.session_read(key, now).data == {"a": 1}


@pytest.mark.parametrize("cluster", [False, True], ids=["standalone", "cluster"])
def test_server_down_at_startup_is_not_a_config_error(make, cluster):
    port = servers.free_port()
    prov = make(
        GOSESSION_REDIS_URL=f"redis://127.0.0.1:{port}/0",
        GOSESSION_REDIS_CLUSTER=cluster,
        GOSESSION_REDIS_TIMEOUT=0.5,
    )
    started = time.monotonic()
    with pytest.raises(ProviderError):
        prov.session_read(new_key(), 0.0)
    with pytest.raises(ProviderError):
        prov.session_count()
    assert time.monotonic() - started < 1.0


def test_cluster_node_failure_raises_and_recovers(make, redis_private_cluster):
    prov = make(
        GOSESSION_REDIS_CLUSTER=True,
        GOSESSION_REDIS_URL=redis_private_cluster.url,
        GOSESSION_REDIS_TIMEOUT=1.0,
        GOSESSION_KEY_PREFIX=unique_prefix(),
    )
    now = prov.clock()
    keys = [new_key() for _ in range(30)]
    for key in keys:
        prov.session_init(key, rec(now, a=1))
    victim = redis_private_cluster.nodes[1]
    victim.kill()
    started = time.monotonic()
    outcomes = []
    for key in keys:
        try:
            outcomes.append(prov.session_read(key, now) is not None)
        except ProviderError:
            outcomes.append(None)
    assert None in outcomes  # the victim's keys fail loudly ...
    assert True in outcomes  # ... the others still work
    assert False not in outcomes  # and nothing reads as missing
    assert time.monotonic() - started < 20
    victim.start()
    deadline = time.monotonic() + 30
    nodes = redis_private_cluster.nodes
    while not all(b"cluster_state:ok" in n.command("CLUSTER", "INFO") for n in nodes):
        assert time.monotonic() < deadline, "the cluster did not recover"
        time.sleep(0.1)
    recovered = False
    for _ in range(50):  # the client refreshes its slot map after a failure
        try:
            prov.session_init(keys[0], rec(now, b=2))
            recovered = prov.session_read(keys[0], now).data == {"b": 2}
            break
        except ProviderError:
            time.sleep(0.1)
    assert recovered


# -- Sentinel ------------------------------------------------------------------------------


def test_sentinel_finds_the_master(make, redis_sentinel):
    prov = make(
        GOSESSION_REDIS_SENTINELS=[redis_sentinel.address],
        GOSESSION_REDIS_SENTINEL_MASTER=redis_sentinel.service,
        GOSESSION_REDIS_URL="redis://ignored.invalid:1/3",
        GOSESSION_KEY_PREFIX=unique_prefix(),
    )
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1))
    assert prov.session_update(key, Change(set={"b": 2}, atime=now)) is Outcome.APPLIED
    assert prov.session_read(key, now).data == {"a": 1, "b": 2}
    assert prov.session_count() == 1
    # The master holds it, in the database named by the URL.
    with redis.Redis(port=redis_sentinel.master.port, db=3) as direct:
        assert direct.exists(prov.key_prefix + key) == 1


# -- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("GOSESSION_REDIS_TIMEOUT", 0),
        ("GOSESSION_REDIS_TIMEOUT", -1),
        ("GOSESSION_REDIS_TIMEOUT", "2s"),
        ("GOSESSION_REDIS_TIMEOUT", "inf"),
        ("GOSESSION_REDIS_TIMEOUT", True),
        ("GOSESSION_REDIS_TIMEOUT", float("nan")),
        ("GOSESSION_REDIS_TIMEOUT", float("inf")),
        ("GOSESSION_REDIS_URL", "http://127.0.0.1:6379"),
        ("GOSESSION_REDIS_URL", None),
        ("GOSESSION_REDIS_CLUSTER", "maybe"),
        ("GOSESSION_REDIS_SENTINELS", "127.0.0.1:26379"),
        ("GOSESSION_REDIS_SENTINELS", []),
        ("GOSESSION_REDIS_SENTINELS", ["127.0.0.1"]),
        ("GOSESSION_REDIS_SENTINELS", [("127.0.0.1", "26379")]),
        ("GOSESSION_REDIS_SENTINELS", ["127.0.0.1:99999"]),
        ("GOSESSION_REDIS", "redis://127.0.0.1"),
        ("GOSESSION_KEY_PREFIX", ""),
        ("GOSESSION_KEY_PREFIX", b"gosession:"),
    ],
)
def test_bad_settings_name_the_key_and_value(make, setting, value):
    config = {setting: value}
    if setting == "GOSESSION_REDIS_SENTINELS":
        config["GOSESSION_REDIS_SENTINEL_MASTER"] = "mymaster"
    with pytest.raises(ConfigError) as info:
        make(**config)
    assert setting in str(info.value)
    assert repr(value) in str(info.value) or str(value) in str(info.value)


def test_numbers_and_flags_from_the_environment_are_accepted(make):
    prov = make(GOSESSION_REDIS_TIMEOUT=" 2.5 ", GOSESSION_REDIS_CLUSTER="false")
    assert type(prov.client) is redis.Redis
    assert prov.client.connection_pool.connection_kwargs["socket_timeout"] == 2.5


def test_sentinels_need_a_master_name_and_exclude_cluster(make):
    with pytest.raises(ConfigError, match="GOSESSION_REDIS_SENTINEL_MASTER"):
        make(GOSESSION_REDIS_SENTINELS=["127.0.0.1:26379"])
    with pytest.raises(ConfigError, match="cannot both"):
        make(
            GOSESSION_REDIS_SENTINELS=[("127.0.0.1", 26379)],
            GOSESSION_REDIS_SENTINEL_MASTER="m",
            GOSESSION_REDIS_CLUSTER=True,
        )


def test_decoding_client_is_refused(make, redis_shared_server):
    with redis.Redis.from_url(redis_shared_server.url, decode_responses=True) as client:
        with pytest.raises(ConfigError, match="decode_responses"):
            make(GOSESSION_REDIS=client)


def test_supplied_client_is_used_and_left_open(make, redis_shared_server):
    with redis.Redis.from_url(redis_shared_server.url) as client:
        prov = make(GOSESSION_REDIS=client, GOSESSION_REDIS_URL="redis://ignored.invalid:1/0")
        key = new_key()
        prov.session_init(key, rec(1.0, a=1))
        assert client.exists(prov.key_prefix + key) == 1
        prov.close()
        assert client.ping()


def test_built_client_uses_the_timeout_and_a_bounded_retry(make):
    prov = make(GOSESSION_REDIS_URL="redis://127.0.0.1:1/0", GOSESSION_REDIS_TIMEOUT=0.75)
    kwargs = prov.client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 0.75
    assert kwargs["socket_connect_timeout"] == 0.75
    assert prov.client.get_retry().get_retries() == 1
