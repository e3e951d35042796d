"""The Redis backends: throwaway servers, never the system Redis.

``backend_redis`` uses one ``redis-server`` started for the whole run and
``backend_redis_cluster`` one three-master Redis Cluster; each test gets its
own random key prefix, so tests never see each other's keys. Tests that
kill or pause a server use ``redis_server``, a private server per test.
"""
from __future__ import annotations

import secrets
import typing as t

import pytest

import servers
from backends import missing

T = t.TypeVar("T")


def _start(start: t.Callable[[], T], what: str) -> T:
    try:
        return start()
    except servers.ServerUnavailable as err:
        missing(f"{what}: {err}")
        raise  # unreachable: missing() skips or fails


def unique_prefix() -> str:
    """A key prefix no other test uses."""
    return f"gs-test-{secrets.token_hex(6)}:"


@pytest.fixture(scope="session")
def redis_shared_server() -> t.Iterator[servers.RedisServer]:
    """One throwaway ``redis-server`` for every test of the run."""
    server = _start(servers.start_redis, "cannot start redis-server")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> t.Iterator[servers.RedisCluster]:
    """One throwaway three-master Redis Cluster for every test of the run."""
    cluster = _start(servers.start_redis_cluster, "cannot start a Redis Cluster")
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_server() -> t.Iterator[servers.RedisServer]:
    """A private ``redis-server`` this test may kill, pause and restart."""
    server = _start(servers.start_redis, "cannot start redis-server")
    yield server
    server.stop()


@pytest.fixture
def redis_private_cluster() -> t.Iterator[servers.RedisCluster]:
    """A private Redis Cluster whose nodes this test may kill and restart."""
    cluster = _start(servers.start_redis_cluster, "cannot start a Redis Cluster")
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_sentinel() -> t.Iterator[servers.Sentinel]:
    """A private master plus one Sentinel monitoring it as ``mymaster``."""
    sentinel = _start(lambda: servers.start_sentinel("mymaster"), "cannot start a Redis Sentinel")
    yield sentinel
    sentinel.stop()


@pytest.fixture
def backend_redis(redis_shared_server: servers.RedisServer) -> dict[str, t.Any]:
    return {
        "GOSESSION_PROVIDER": "redis",
        "GOSESSION_REDIS_URL": redis_shared_server.url,
        "GOSESSION_KEY_PREFIX": unique_prefix(),
    }


@pytest.fixture
def backend_redis_cluster(redis_cluster: servers.RedisCluster) -> dict[str, t.Any]:
    return {
        "GOSESSION_PROVIDER": "redis",
        "GOSESSION_REDIS_CLUSTER": True,
        "GOSESSION_REDIS_URL": redis_cluster.url,
        "GOSESSION_KEY_PREFIX": unique_prefix(),
    }


def _corrupt_redis(provider: t.Any) -> t.Callable[[str, bytes], None]:
    def write(key: str, raw: bytes) -> None:
        # A session hash with a valid access time and an undecodable value.
        provider.client.hset(provider.key_prefix + key, mapping={"a": "1.0", "d:x": raw})

    return write


@pytest.fixture
def corrupt_redis() -> t.Callable[[t.Any], t.Callable[[str, bytes], None]]:
    """Factory: ``fn(provider)`` returns ``write(key, raw)`` storing raw bytes."""
    return _corrupt_redis


@pytest.fixture
def corrupt_redis_cluster() -> t.Callable[[t.Any], t.Callable[[str, bytes], None]]:
    """Factory: ``fn(provider)`` returns ``write(key, raw)`` storing raw bytes."""
    return _corrupt_redis
