"""The memcached backends: throwaway ``memcached`` processes on loopback.

``backend_memcached`` uses one server for the whole run and
``backend_memcached_pair`` two (a consistent-hashing client); each test
gets its own random key prefix. Tests that kill or restart a server use
``memcached_server`` / ``memcached_pair``, private servers per test.
"""
from __future__ import annotations

import secrets
import typing as t

import pytest

import servers
from backends import missing


def _start() -> servers.ServerProcess:
    try:
        return servers.start_memcached()
    except servers.ServerUnavailable as err:
        missing(f"cannot start memcached: {err}")
        raise  # unreachable: missing() skips or fails


def unique_prefix() -> str:
    """A key prefix no other test uses."""
    return f"gs-test-{secrets.token_hex(6)}:"


@pytest.fixture(scope="session")
def memcached_shared_servers() -> t.Iterator[list[servers.ServerProcess]]:
    """Two throwaway ``memcached`` for every test of the run."""
    yield from _two_servers()


@pytest.fixture
def memcached_server() -> t.Iterator[servers.ServerProcess]:
    """A private ``memcached`` this test may kill, pause and restart."""
    server = _start()
    yield server
    server.stop()


@pytest.fixture
def memcached_pair() -> t.Iterator[list[servers.ServerProcess]]:
    """Two private ``memcached`` this test may kill and restart."""
    yield from _two_servers()


@pytest.fixture
def backend_memcached(memcached_shared_servers: list[servers.ServerProcess]) -> dict[str, t.Any]:
    return {
        "GOSESSION_PROVIDER": "memcached",
        "GOSESSION_MEMCACHED_SERVERS": [memcached_shared_servers[0].address],
        "GOSESSION_KEY_PREFIX": unique_prefix(),
    }


@pytest.fixture
def backend_memcached_pair(
    memcached_shared_servers: list[servers.ServerProcess],
) -> dict[str, t.Any]:
    return {
        "GOSESSION_PROVIDER": "memcached",
        "GOSESSION_MEMCACHED_SERVERS": [s.address for s in memcached_shared_servers],
        "GOSESSION_KEY_PREFIX": unique_prefix(),
    }


def _corrupt_memcached(provider: t.Any) -> t.Callable[[str, bytes], None]:
    def write(key: str, raw: bytes) -> None:
        provider.client.set(provider.key_prefix + key, raw, expire=600, noreply=False)

    return write


@pytest.fixture
def corrupt_memcached() -> t.Callable[[t.Any], t.Callable[[str, bytes], None]]:
    """Factory: ``fn(provider)`` returns ``write(key, raw)`` storing raw bytes."""
    return _corrupt_memcached


@pytest.fixture
def corrupt_memcached_pair() -> t.Callable[[t.Any], t.Callable[[str, bytes], None]]:
    """Factory: ``fn(provider)`` returns ``write(key, raw)`` storing raw bytes."""
    return _corrupt_memcached


def _two_servers() -> t.Iterator[list[servers.ServerProcess]]:
    """Start two ``memcached``, yield them, and stop whichever started."""
    started = [_start()]
    try:
        started.append(_start())
        yield started
    finally:
        for server in started:
            server.stop()
