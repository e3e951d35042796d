"""The memcached provider beyond the shared contract: layout, round trips,
native expiry, the CAS loop under real races, failures and recovery, and
consistent hashing over two servers.

Everything runs against real throwaway ``memcached`` processes. Round trips
are read from the server's own command counters (``stats``).
"""
from __future__ import annotations

import hashlib
import re
import secrets
import socket
import time
import typing as t

import pytest
from flask import Flask, session
from pymemcache.exceptions import MemcacheServerError, MemcacheUnexpectedCloseError

import servers
from apps import make_app
from backends.memcached import unique_prefix
from clock import FakeClock
from flask_gosession.errors import ConfigError, CorruptRecordError, ProviderError, RecordTooLarge
from flask_gosession.providers._memcached_lane import CasLane
from flask_gosession.providers.base import DEAD_FIELD, FORWARD_FIELD, Change, Outcome, Record
from flask_gosession.providers.memcached import MemcachedProvider
from helpers import concurrent_writers, overlapping


def new_key() -> str:
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


def rec(now: float, **data: t.Any) -> Record:
    return Record(data=dict(data), meta={"c": now}, atime=now)


def meta_get(server: servers.ServerProcess, command: str) -> bytes:
    """One single-line meta command on a fresh socket; its reply line."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(command.encode() + b"\r\n")
        reply = b""
        deadline = time.monotonic() + 5
        while not reply.endswith(b"\r\n") and time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply


def counters(server: servers.ServerProcess) -> dict[str, int]:
    """The server's command counters, read over a separate connection."""
    stats: dict[str, int] = {}
    for line in raw_stats(server).splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "STAT" and parts[2].isdigit():
            name = parts[1]
            if name.startswith(("cmd_", "cas_", "get_", "delete_", "touch_", "incr_", "decr_")):
                stats[name] = int(parts[2])
    return stats


def raw_stats(server: servers.ServerProcess) -> str:
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(b"stats\r\n")
        reply = b""
        deadline = time.monotonic() + 5
        while not reply.endswith(b"END\r\n") and time.monotonic() < deadline:
            reply += sock.recv(65536)
        return reply.decode()


def ttl_of(server: servers.ServerProcess, key: str) -> int:
    """The remaining TTL of ``key``, from the meta-get command's ``t`` flag."""
    reply = meta_get(server, f"mg {key} t")
    assert reply.startswith(b"HD"), reply
    return int(reply.split()[1][1:])


def wall_clock_ttl(server: servers.ServerProcess, key: str) -> int:
    """The seconds from now, by ``time.time()``, until ``key`` expires.

    For an item whose expiry was given as a Unix time, :func:`ttl_of` counts
    from memcached's own clock, which ticks once a second from its start
    and is often a second behind ``time.time()``. The server's idea of now
    (``STAT time``) is read first, so it is never later than the clock the
    TTL was counted from, and this never overstates the time left.
    """
    server_now = next(
        int(line.split()[2]) for line in raw_stats(server).splitlines()
        if line.startswith("STAT time ")
    )
    ttl = ttl_of(server, key)
    return ttl + server_now - int(time.time())


@pytest.fixture
def make() -> t.Iterator[t.Callable[..., MemcachedProvider]]:
    """Build providers from config, as init_app would; close them afterwards."""
    built: list[MemcachedProvider] = []

    def build(**config: t.Any) -> MemcachedProvider:
        app = Flask(__name__)
        app.config.update(config)
        for key, value in MemcachedProvider.config_defaults(app).items():
            app.config.setdefault(key, value)
        prov = MemcachedProvider.from_config(app)
        prov.clock = FakeClock()
        prov.max_lifetime = 3600
        built.append(prov)
        return prov

    yield build
    for prov in built:
        prov.close()


def config_for(*running: servers.ServerProcess, **extra: t.Any) -> dict[str, t.Any]:
    return {
        "GOSESSION_MEMCACHED_SERVERS": [s.address for s in running],
        "GOSESSION_KEY_PREFIX": unique_prefix(),
        **extra,
    }


# -- layout and expiry ------------------------------------------------------------------


def test_layout_is_one_packed_blob(make, memcached_server):
    prov = make(**config_for(memcached_server))
    key, record = new_key(), rec(1000.5, user="ann")
    prov.session_init(key, record)
    assert prov.client.get(prov.key_prefix + key) == prov.pack(record)


def test_ttl_is_native_and_renewed_by_writes_and_touches(make, memcached_server):
    prov = make(**config_for(memcached_server))
    prov.max_lifetime = 120
    key, now = new_key(), prov.clock()
    store_key = prov.key_prefix + key
    prov.session_init(key, rec(now, a=1))
    assert 110 <= ttl_of(memcached_server, store_key) <= 120
    for operation in (
        lambda: prov.session_update(key, Change(set={"b": 2}, atime=now)),
        lambda: prov.session_touch(key, now + 1),
    ):
        prov.client.touch(store_key, 5)
        operation()
        assert 110 <= ttl_of(memcached_server, store_key) <= 120
    assert prov.session_gc(120) == 0


def test_lifetimes_over_thirty_days_become_timestamps(make, memcached_server):
    """memcached reads an expiry over 30 days as a Unix time: a relative
    value that large would expire the item at once."""
    prov = make(**config_for(memcached_server))
    prov.max_lifetime = 40 * 24 * 3600
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1))
    assert prov.session_read(key, now).data == {"a": 1}
    assert 40 * 24 * 3600 - 10 <= wall_clock_ttl(memcached_server, prov.key_prefix + key) <= 40 * 24 * 3600


def test_touch_rewrites_atime_and_never_creates(make, memcached_server):
    prov = make(**config_for(memcached_server))
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1))
    prov.session_touch(key, now + 30)
    assert prov.session_read(key, now + 31) == Record({"a": 1}, {"c": now}, now + 30)
    missing = new_key()
    prov.session_touch(missing, now)
    change = Change(set={"a": 1}, meta={FORWARD_FIELD: "x"}, atime=now)
    assert prov.session_update(missing, change) is Outcome.MISSING
    assert prov.client.get(prov.key_prefix + missing) is None


# -- round trips ----------------------------------------------------------------------------


def commands(server: servers.ServerProcess, operation: t.Callable[[], t.Any]) -> dict[str, int]:
    """The server's command counters that ``operation`` changed, and by how much."""
    before = counters(server)
    operation()
    after = counters(server)
    return {name: after[name] - before[name] for name in after if after[name] != before[name]}


#: One ``cas`` that stored the item.
CAS_STORED = {"cmd_set": 1, "cas_hits": 1}
#: One ``gets`` that found the item (memcached counts it as a get).
GETS_HIT = {"cmd_get": 1, "get_hits": 1}


def test_round_trips(make, memcached_server):
    prov = make(**config_for(memcached_server))
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1))

    def trips(operation: t.Callable[[], t.Any]) -> dict[str, int]:
        return commands(memcached_server, operation)

    assert trips(lambda: prov.session_read(key, now)) == GETS_HIT
    assert trips(lambda: prov.session_read(new_key(), now)) == {"cmd_get": 1, "get_misses": 1}
    assert trips(lambda: prov.session_init(key, rec(now, b=2))) == {"cmd_set": 1}
    # An update without a base is one gets and one cas...
    assert trips(lambda: prov.session_update(key, Change(set={"c": 3}, atime=now))) == {
        **GETS_HIT, **CAS_STORED,
    }
    assert trips(lambda: prov.session_update(new_key(), Change(atime=now))) == {
        "cmd_get": 1, "get_misses": 1,
    }
    # ... and one with the version of the read is the cas alone.
    base = prov.session_read(key, now).version
    assert trips(lambda: prov.session_update(key, Change(set={"d": 4}, atime=now, base=base))) == (
        CAS_STORED
    )
    assert prov.session_read(key, now).data == {"b": 2, "c": 3, "d": 4}
    assert trips(lambda: prov.session_destroy(key)) == {"delete_hits": 1}


# -- writing at the version read --------------------------------------------------------------


def test_stale_base_loses_the_cas_and_merges_into_what_is_stored(make, memcached_server):
    config = config_for(memcached_server)
    prov, rival = make(**config), make(**config)
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1, b=1))
    base = prov.session_read(key, now).version
    rival.session_update(key, Change(set={"rival": 1}, deleted={"b"}, atime=now))
    change = Change(set={"mine": 1}, deleted={"a"}, atime=now + 1, base=base)
    assert commands(memcached_server, lambda: prov.session_update(key, change)) == {
        "cmd_set": 2, "cas_badval": 1, "cas_hits": 1, **GETS_HIT,
    }
    assert prov.session_read(key, now) == Record({"rival": 1, "mine": 1}, {"c": now}, now + 1)


@pytest.mark.parametrize("since_the_read", ["destroyed", "tombstone", "forwarded"])
def test_stale_base_never_undoes_a_destroy_or_a_rotation(make, memcached_server, since_the_read):
    config = config_for(memcached_server)
    prov, rival = make(**config), make(**config)
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1))
    base = prov.session_read(key, now).version
    if since_the_read == "destroyed":
        rival.session_destroy(key)
    else:
        field = DEAD_FIELD if since_the_read == "tombstone" else FORWARD_FIELD
        assert rival.session_update(key, Change(meta={field: 1}, atime=now)) is Outcome.APPLIED
    before = rival.session_read(key, now)
    change = Change(set={"a": 2}, meta={FORWARD_FIELD: "mine"}, atime=now + 1, base=base)
    expected = {"destroyed": Outcome.MISSING, "tombstone": Outcome.MISSING,
                "forwarded": Outcome.FORWARDED}[since_the_read]
    assert prov.session_update(key, change) is expected
    assert rival.session_read(key, now) == before


def test_one_time_precondition_holds_once_for_two_writers_at_one_version(make, memcached_server):
    """Two requests that read the same token both try to consume it with
    the version they read: the first ``cas`` wins, the second loses its
    race, re-reads, and finds the token replaced."""
    config = config_for(memcached_server)
    first, second = make(**config), make(**config)
    key, now = new_key(), first.clock()
    first.session_init(key, Record({}, {"t": "old"}, now))
    bases = [first.session_read(key, now).version, second.session_read(key, now).version]
    outcomes = [
        prov.session_update(key, Change(meta={"t": new}, expect={"t": "old"}, atime=now, base=base))
        for prov, new, base in zip((first, second), ("one", "two"), bases, strict=True)
    ]
    assert outcomes == [Outcome.APPLIED, Outcome.CONFLICT]
    assert first.session_read(key, now).meta == {"t": "one"}


def test_a_base_read_from_another_key_is_never_written_to_this_one(make, memcached_server):
    prov = make(**config_for(memcached_server))
    mine, other, now = new_key(), new_key(), prov.clock()
    prov.session_init(mine, rec(now, own=1))
    prov.session_init(other, rec(now, secret=1))
    base = prov.session_read(other, now).version
    change = Change(set={"x": 1}, atime=now, base=base)
    # Not even tried against the other item's CAS id (on two servers, it
    # could be this item's too): read and written as without a base.
    assert commands(memcached_server, lambda: prov.session_update(mine, change)) == {
        **GETS_HIT, **CAS_STORED,
    }
    assert prov.session_read(mine, now).data == {"own": 1, "x": 1}
    assert prov.session_read(other, now).data == {"secret": 1}


# -- the CAS loop under real races -----------------------------------------------------------


class Interfering:
    """Wraps a real client; before some ``cas`` calls, lets a rival write.

    :param rival: called with the store key just before the wrapped ``cas``
        for the first ``times`` calls, so that the ``cas`` loses its race.
    """

    def __init__(self, inner: t.Any, rival: t.Callable[[str], None], times: int) -> None:
        self.inner = inner
        self.rival = rival
        self.times = times
        self.cas_calls = 0

    def cas(self, key: str, *args: t.Any, **kwargs: t.Any) -> t.Any:
        self.cas_calls += 1
        if self.cas_calls <= self.times:
            self.rival(key)
        return self.inner.cas(key, *args, **kwargs)

    def __getattr__(self, name: str) -> t.Any:
        return getattr(self.inner, name)


def test_lost_cas_race_is_retried_and_both_changes_survive(make, memcached_server):
    config = config_for(memcached_server)
    prov, rival = make(**config), make(**config)
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1))
    rivals = iter(range(100))
    wrapped = Interfering(
        prov.client,
        lambda _: rival.session_update(key, Change(set={f"r{next(rivals)}": True}, atime=now)),
        times=3,
    )
    prov._client = wrapped
    change = Change(set={"mine": 1}, deleted={"a"}, atime=now)
    assert prov.session_update(key, change) is Outcome.APPLIED
    assert wrapped.cas_calls == 4  # three lost races, then success
    assert prov.session_read(key, now).data == {"mine": 1, "r0": True, "r1": True, "r2": True}


def test_cas_gives_up_with_provider_error(make, memcached_server):
    config = config_for(memcached_server)
    prov, rival = make(**config), make(**config)
    prov.cas_attempts = 5
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now))
    wrapped = Interfering(
        prov.client, lambda _: rival.session_touch(key, now), times=1000
    )
    prov._client = wrapped
    started = time.monotonic()
    with pytest.raises(ProviderError, match="compare-and-swap"):
        prov.session_update(key, Change(set={"x": 1}, atime=now))
    assert wrapped.cas_calls == 5
    assert time.monotonic() - started < 2
    # A touch that keeps losing is dropped quietly.
    prov.session_touch(key, now + 5)


def test_record_deleted_during_update_is_not_resurrected(make, memcached_server):
    config = config_for(memcached_server)
    prov, rival = make(**config), make(**config)
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1))
    prov._client = Interfering(prov.client, lambda _: rival.session_destroy(key), times=1)
    assert prov.session_update(key, Change(set={"a": 2}, atime=now)) is Outcome.MISSING
    assert rival.session_read(key, now) is None


@pytest.mark.parametrize("read_first", [False, True], ids=["no-base", "read-base"])
@pytest.mark.parametrize("pair", [False, True], ids=["one-server", "two-servers"])
def test_concurrent_updates_from_two_clients_all_survive(make, request, pair, read_first):
    config = request.getfixturevalue("backend_memcached_pair" if pair else "backend_memcached")
    providers = [make(**config), make(**config)]
    key, now = new_key(), providers[0].clock()
    providers[0].session_init(key, rec(now, **{f"gone{n}": 0 for n in range(8)}))
    concurrent_writers(providers, key, now, writers=8, rounds=20, delete_own=True,
                       read_first=read_first)


# -- corrupt records ----------------------------------------------------------------------


def test_corrupt_blob(make, memcached_server):
    prov = make(**config_for(memcached_server))
    key, now = new_key(), prov.clock()
    prov.client.set(prov.key_prefix + key, b'{"d": []}', expire=60)
    with pytest.raises(CorruptRecordError):
        prov.session_read(key, now)
    with pytest.raises(CorruptRecordError):
        prov.session_update(key, Change(set={"a": 1}, atime=now))
    prov.session_touch(key, now)  # left alone for session_read to report
    assert prov.client.get(prov.key_prefix + key) == b'{"d": []}'


# -- the size limit ---------------------------------------------------------------------------


def blob_of_size(prov: MemcachedProvider, size: int, now: float) -> Record:
    """A record whose packed blob is exactly ``size`` bytes."""
    base = len(prov.pack(rec(now, v="")))
    record = rec(now, v="x" * (size - base))
    assert len(prov.pack(record)) == size
    return record


@pytest.fixture(params=["one", "pair"])
def servers_config(request):  # type: ignore[no-untyped-def]
    """``fn(**extra)``: config for one private server or a private pair."""
    if request.param == "one":
        running = [request.getfixturevalue("memcached_server")]
    else:
        running = request.getfixturevalue("memcached_pair")
    return lambda **extra: config_for(*running, **extra)


def test_oversized_record_is_refused_before_sending(make, servers_config):
    prov = make(**servers_config(GOSESSION_MAX_RECORD_SIZE=4096))
    key, now = new_key(), prov.clock()
    with pytest.raises(RecordTooLarge) as info:
        prov.session_init(key, rec(now, big="x" * 5000))
    assert info.value.limit == 4096 and info.value.size > 5000 and info.value.label == key[:12]
    assert prov.client.get(prov.key_prefix + key) is None
    prov.session_init(key, rec(now, a=1))
    with pytest.raises(RecordTooLarge):
        prov.session_update(key, Change(set={"big": "x" * 5000}, atime=now))
    assert prov.session_read(key, now).data == {"a": 1}  # memcached never saw it


def test_the_item_limit_fits_the_real_server(make, memcached_server):
    """The largest blob the provider accepts is stored by a memcached with
    the default 1 MiB items; one byte more is refused before sending (the
    server would refuse it *and drop the session*)."""
    prov = make(**config_for(memcached_server, GOSESSION_MAX_RECORD_SIZE=None))
    key, now = new_key(), prov.clock()
    assert prov.max_record_size == prov.item_limit < 1024 * 1024
    prov.session_init(key, blob_of_size(prov, prov.item_limit, now))
    assert len(prov.client.get(prov.key_prefix + key)) == prov.item_limit
    with pytest.raises(RecordTooLarge, match="GOSESSION_MEMCACHED_MAX_ITEM_SIZE"):
        prov.session_update(key, Change(set={"v": "x" * prov.item_limit}, atime=now))
    assert prov.session_read(key, now) is not None


def test_server_refusing_an_item_as_too_large_is_not_an_outage(make, servers_config):
    """Items configured larger than the servers' -I: the server's own
    SERVER_ERROR reply becomes RecordTooLarge, not ProviderError."""
    prov = make(**servers_config(GOSESSION_MEMCACHED_MAX_ITEM_SIZE=4 << 20,
                                 GOSESSION_MAX_RECORD_SIZE=None))
    key, now = new_key(), prov.clock()
    with pytest.raises(RecordTooLarge, match="-I") as info:
        prov.session_init(key, rec(now, big="x" * (2 << 20)))
    assert not isinstance(info.value, ProviderError)
    assert info.value.size > 2 << 20
    prov.session_init(key, rec(now, a=1))
    with pytest.raises(RecordTooLarge):
        prov.session_update(key, Change(set={"big": "x" * (2 << 20)}, atime=now))
    prov.session_init(key, rec(now, a=2))  # the connection is still in step
    assert prov.session_read(key, now).data == {"a": 2}


@pytest.mark.parametrize("value", [0, 1023, "1m", 1.5, True, None])
def test_bad_item_size_is_a_config_error(make, value):
    with pytest.raises(ConfigError, match="GOSESSION_MEMCACHED_MAX_ITEM_SIZE"):
        make(GOSESSION_MEMCACHED_MAX_ITEM_SIZE=value)


# -- servers failing and coming back ---------------------------------------------------------


def test_dead_server_raises_fast_and_restart_recovers(make, memcached_server):
    prov = make(**config_for(memcached_server, GOSESSION_MEMCACHED_TIMEOUT=1.0))
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1))
    memcached_server.kill()
    for operation in (
        lambda: prov.session_read(key, now),
        lambda: prov.session_update(key, Change(set={"a": 2}, atime=now)),
        lambda: prov.session_init(key, rec(now)),
        lambda: prov.session_touch(key, now),
        lambda: prov.session_destroy(key),
    ):
        started = time.monotonic()
        with pytest.raises(ProviderError) as info:
            operation()
        assert time.monotonic() - started < 1.0
        assert isinstance(info.value.__cause__, OSError)
    memcached_server.start()  # same port, empty
    assert prov.session_read(key, now) is None
    prov.session_init(key, rec(now, a=3))
    assert prov.session_read(key, now).data == {"a": 3}


def test_restart_between_calls_is_invisible(make, memcached_server):
    """Pooled connections the old server closed are replaced on first use."""
    prov = make(**config_for(memcached_server))
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1))
    memcached_server.restart()
    assert prov.session_read(key, now) is None  # no error: a fresh connection
    prov.session_init(key, rec(now, a=2))
    assert prov.session_read(key, now).data == {"a": 2}


@pytest.mark.parametrize("count", [1, 2], ids=["one", "pair"])
def test_many_stale_connections_then_a_dead_server_fail_fast_and_recover(
        make, memcached_server, memcached_pair, count):
    """With an idle connection per past concurrent call (the lane's and the
    pools'), a server that is down fails each call at once with
    ProviderError (the stale connections are dropped, the one retry is
    refused), and every call once it is back succeeds: no stale one is
    left for them."""
    running = [memcached_server] if count == 1 else memcached_pair
    prov = make(**config_for(*running, GOSESSION_MEMCACHED_TIMEOUT=1.0))
    now = prov.clock()
    keys = [new_key() for _ in range(8)]
    for victim in running:
        overlapping(victim, [lambda key=key: prov.session_init(key, rec(now, a=1)) for key in keys])
        overlapping(victim, [lambda key=key: prov.session_read(key, now) for key in keys])
    for victim in running:
        victim.kill()
    for key in keys[:count]:  # a key on each server, ideally; at least one down
        started = time.monotonic()
        with pytest.raises(ProviderError):
            prov.session_read(key, now)
        with pytest.raises(ProviderError):
            prov.session_init(key, rec(now))
        assert time.monotonic() - started < 0.5
    for victim in running:
        victim.start()  # same port, empty
    for key in keys:
        assert prov.session_read(key, now) is None
        prov.session_init(key, rec(now, a=2))
        assert prov.session_read(key, now).data == {"a": 2}


def test_hung_server_times_out_within_the_timeout(make, memcached_server):
    prov = make(**config_for(memcached_server, GOSESSION_MEMCACHED_TIMEOUT=0.5))
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now, a=1))
    memcached_server.pause()
    try:
        started = time.monotonic()
        with pytest.raises(ProviderError):
            prov.session_read(key, now)
        elapsed = time.monotonic() - started
    finally:
        memcached_server.resume()
    assert 0.4 <= elapsed < 1.5
    assert prov.session_read(key, now).data == {"a": 1}


def test_pair_spreads_keys_over_both_servers(make, memcached_pair):
    prov = make(**config_for(*memcached_pair))
    assert isinstance(prov.client, __import__("pymemcache.client.hash").client.hash.HashClient)
    now = prov.clock()
    keys = [new_key() for _ in range(40)]
    for key in keys:
        prov.session_init(key, rec(now, k=key))
    per_server = [counters(server)["cmd_set"] for server in memcached_pair]
    assert sum(per_server) == 40
    assert all(count >= 5 for count in per_server), per_server
    assert all(prov.session_read(key, now).data == {"k": key} for key in keys)


def test_pair_dead_server_raises_and_is_used_again(make, memcached_pair):
    """A dead server's sessions fail loudly instead of moving to the other
    server (where they would read as missing) and come back with it."""
    prov = make(**config_for(*memcached_pair, GOSESSION_MEMCACHED_TIMEOUT=1.0))
    now = prov.clock()
    keys = [new_key() for _ in range(40)]
    for key in keys:
        prov.session_init(key, rec(now, a=1))
    victim = memcached_pair[0]
    victim.kill()
    started = time.monotonic()
    for _ in range(3):  # failing repeatedly never takes it out of the ring
        outcomes = []
        for key in keys:
            try:
                outcomes.append(prov.session_read(key, now) is not None)
            except ProviderError:
                outcomes.append(None)
        assert None in outcomes and True in outcomes
        assert False not in outcomes
    assert time.monotonic() - started < 5
    failed = [key for key, ok in zip(keys, outcomes, strict=False) if ok is None]
    with pytest.raises(ProviderError):
        prov.session_init(failed[0], rec(now, moved=True))
    assert counters(memcached_pair[1])["cmd_set"] == 40 - len(failed)
    victim.start()
    prov.session_init(failed[0], rec(now, back=True))
    assert prov.session_read(failed[0], now).data == {"back": True}
    assert counters(victim)["cmd_set"] == 1


# -- administration ---------------------------------------------------------------------------


def test_count_is_unknown_and_clear_needs_permission(make, memcached_server):
    prov = make(**config_for(memcached_server))
    key, now = new_key(), prov.clock()
    prov.session_init(key, rec(now))
    assert prov.session_count() is None
    with pytest.raises(NotImplementedError, match="GOSESSION_MEMCACHED_ALLOW_FLUSH"):
        prov.session_clear()
    assert prov.session_read(key, now) is not None


@pytest.mark.parametrize("pair", [False, True], ids=["one-server", "two-servers"])
def test_clear_flushes_when_allowed(make, memcached_pair, pair):
    running = memcached_pair if pair else memcached_pair[:1]
    prov = make(**config_for(*running, GOSESSION_MEMCACHED_ALLOW_FLUSH=True))
    now = prov.clock()
    keys = [new_key() for _ in range(20)]
    for key in keys:
        prov.session_init(key, rec(now))
    assert prov.session_clear() == -1
    assert all(prov.session_read(key, now) is None for key in keys)


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("GOSESSION_MEMCACHED_SERVERS", "127.0.0.1:11211"),
        ("GOSESSION_MEMCACHED_SERVERS", []),
        ("GOSESSION_MEMCACHED_SERVERS", ["127.0.0.1"]),
        ("GOSESSION_MEMCACHED_SERVERS", [("127.0.0.1", "11211")]),
        ("GOSESSION_MEMCACHED_SERVERS", ["127.0.0.1:0"]),
        ("GOSESSION_MEMCACHED_SERVERS", [None]),
        ("GOSESSION_MEMCACHED_TIMEOUT", 0),
        ("GOSESSION_MEMCACHED_TIMEOUT", "1s"),
        ("GOSESSION_MEMCACHED_TIMEOUT", "0"),
        ("GOSESSION_MEMCACHED_ALLOW_FLUSH", "maybe"),
        ("GOSESSION_KEY_PREFIX", ""),
        ("GOSESSION_KEY_PREFIX", "has space:"),
        ("GOSESSION_KEY_PREFIX", "naïve:"),
        ("GOSESSION_KEY_PREFIX", "x" * 187),
    ],
)
def test_bad_settings_name_the_key_and_value(make, setting, value):
    with pytest.raises(ConfigError) as info:
        make(**{setting: value})
    assert setting in str(info.value)
    assert repr(value) in str(info.value)


def test_numbers_and_flags_from_the_environment_are_accepted(make):
    prov = make(GOSESSION_MEMCACHED_TIMEOUT=" 1.5 ", GOSESSION_MEMCACHED_ALLOW_FLUSH="yes")
    assert prov.client.timeout == 1.5 and prov.client.connect_timeout == 1.5
    assert prov.allow_flush is True
    assert make(GOSESSION_MEMCACHED_TIMEOUT="3", GOSESSION_MEMCACHED_ALLOW_FLUSH="false").allow_flush is False


def test_server_forms(make):
    one = make(GOSESSION_MEMCACHED_SERVERS=[("127.0.0.1", 11211)])
    assert type(one.client).__name__ == "PooledClient"
    two = make(GOSESSION_MEMCACHED_SERVERS=["127.0.0.1:11211", "[::1]:11212"])
    assert isinstance(two.client, __import__("pymemcache.client.hash").client.hash.HashClient)
    assert sorted(two.client.clients) == ["127.0.0.1:11211", "::1:11212"]


# -- a request's round trips, through the manager ------------------------------------------


@pytest.fixture
def request_app(memcached_server, tmp_path):  # type: ignore[no-untyped-def]
    """``fn(**config)``: the test app on a private memcached server."""
    built: list[Flask] = []

    def build(**extra: t.Any) -> Flask:
        config = {"GOSESSION_PROVIDER": "memcached", "GOSESSION_GC_INTERVAL": 0,
                  **config_for(memcached_server), **extra}
        app = make_app(config, FakeClock(), str(tmp_path / f"instance{len(built)}"))
        built.append(app)
        return app

    yield build
    for app in built:
        app.extensions["gosession"].close()


def test_a_read_request_is_one_round_trip_and_a_write_two(request_app, memcached_server):
    client = request_app().test_client()
    client.get("/set/a/1")
    assert commands(memcached_server, lambda: client.get("/get/a")) == GETS_HIT
    assert commands(memcached_server, lambda: client.get("/count")) == {**GETS_HIT, **CAS_STORED}
    assert commands(memcached_server, lambda: client.get("/count")) == {**GETS_HIT, **CAS_STORED}
    assert client.get("/get/n").json == {"value": 2, "keys": ["a", "n"]}


def test_a_one_time_token_is_consumed_with_the_version_read(request_app, memcached_server):
    app = request_app(GOSESSION_TOKEN_CHECK=True, GOSESSION_TOKEN_ONE_TIME=True)
    client = app.test_client()
    field = app.config["GOSESSION_TOKEN_FIELD"]
    token = re.search(r'value="([^"]+)"', client.get("/token").text).group(1)  # type: ignore[union-attr]
    # The load, the token's cas at the version read, then the write: a
    # gets and a cas, since the consumed token made that version stale.
    assert commands(memcached_server, lambda: client.post("/write", data={field: token, "x": "1"})) == {
        "cmd_get": 2, "get_hits": 2, "cmd_set": 2, "cas_hits": 2,
    }
    assert client.post("/write", data={field: token, "x": "2"}).status_code == 400
    assert client.get("/get/x").json["value"] == "1"


@pytest.mark.parametrize("rival_does", ["write", "destroy"])
def test_a_write_between_load_and_save_loses_the_cas_and_is_merged(
    request_app, memcached_server, rival_does
):
    app = request_app()
    rival = app.extensions["gosession"].provider
    clock = app.extensions["gosession"].clock

    @app.get("/race")
    def race() -> str:
        session["mine"] = session["a"] + "!"  # loaded: the version is read
        key = t.cast(str, t.cast(t.Any, session).key)
        if rival_does == "write":
            assert rival.session_update(key, Change(set={"rival": "r"}, deleted={"a"},
                                                    atime=clock())) is Outcome.APPLIED
        else:
            rival.session_destroy(key)
        return "raced"

    client = app.test_client()
    client.get("/set/a/1")
    trips = commands(memcached_server, lambda: client.get("/race"))
    if rival_does == "write":
        # Our load; the rival's gets and cas; our cas, lost; re-read, merged, stored.
        assert trips == {"cmd_get": 3, "get_hits": 3, "cmd_set": 3, "cas_hits": 2, "cas_badval": 1}
        assert client.get("/get/a").json == {"value": None, "keys": ["mine", "rival"]}
    else:
        assert trips["cas_misses"] == 1 and "cas_hits" not in trips
        assert client.get("/get/a").json == {"value": None, "keys": []}


# -- the fast lane ------------------------------------------------------------------------------


def test_one_server_sends_gets_and_cas_through_the_lane(make, memcached_server, backend_memcached_pair):
    prov = make(**config_for(memcached_server))
    assert isinstance(prov.lane, CasLane) and prov.lane.pooled is prov.client
    assert make(**backend_memcached_pair).lane is None  # the ring client's own calls


@pytest.mark.parametrize("size", [0, 1, 4000, 4089, 4090, 4100, 5000, 300_000])
def test_the_lane_reads_and_writes_values_of_every_size(make, memcached_server, size):
    """Small replies come in one read, larger ones in several; a value
    may end in what looks like the end of a reply."""
    prov = make(**config_for(memcached_server, GOSESSION_MAX_RECORD_SIZE=None))
    lane, client = t.cast(CasLane, prov.lane), prov.client
    key = prov.key_prefix + new_key()
    value = (b"x" * size)[: max(0, size - 7)] + b"\r\nEND\r\n"[: size]
    assert lane.gets(key) == (None, None)
    client.set(key, value, expire=60)
    got, token = lane.gets(key)
    assert (got, token) == client.gets(key) and got == value
    assert lane.cas(key, value + b"!", t.cast(bytes, token), expire=60) is True
    assert lane.cas(key, b"late", t.cast(bytes, token), expire=60) is False
    assert client.get(key) == value + b"!"
    client.delete(key)
    assert lane.cas(key, b"gone", t.cast(bytes, token), expire=60) is None
    assert client.get(key) is None


def test_the_lane_raises_the_clients_errors_and_recovers(make, memcached_server):
    prov = make(**config_for(memcached_server, GOSESSION_MAX_RECORD_SIZE=None))
    lane = t.cast(CasLane, prov.lane)
    key = prov.key_prefix + new_key()
    prov.client.set(key, b"v", expire=60)
    token = t.cast(bytes, lane.gets(key)[1])
    with pytest.raises(MemcacheServerError, match="too large"):
        lane.cas(key, b"x" * (2 * 1024 * 1024), token, expire=60)
    # The next exchange is in sync (the refused one's connection is gone).
    assert lane.gets(key) in ((b"v", token), (None, None))
    memcached_server.kill()
    # The idle connection finds the server gone; a new one is refused.
    with pytest.raises(MemcacheUnexpectedCloseError):
        lane.gets(key)
    with pytest.raises(ConnectionRefusedError):
        lane.gets(key)
    memcached_server.start()
    assert lane.gets(key) == (None, None)


def test_a_rotation_marks_the_old_record_with_one_cas(request_app, memcached_server):
    client = request_app().test_client()
    client.get("/set/a/1")
    old = client.get_cookie("gosessionid").value  # type: ignore[union-attr]
    trips = commands(memcached_server, lambda: client.get("/regenerate"))
    # The load; the forward mark at the version read (one cas, no gets);
    # then the rotation's own steps: re-read the old record, add the new
    # one, read it, and store the old one's tombstone.
    assert trips == {"cmd_get": 3, "get_hits": 3, "cmd_set": 3, "cas_hits": 1}
    assert client.get_cookie("gosessionid").value != old  # type: ignore[union-attr]
    assert client.get("/get/a").json["value"] == "1"
