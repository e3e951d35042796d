"""memcached store: one blob per session, merged with a CAS loop.

Storage layout
--------------

Each record is one item at ``GOSESSION_KEY_PREFIX + key`` holding the blob
of :meth:`~flask_gosession.providers.base.Provider.pack` (user data, meta
and access time, encoded with the manager's serializer). The item expires
natively after :attr:`~flask_gosession.providers.base.Provider.max_lifetime`
seconds without a write or touch, so :meth:`MemcachedProvider.session_gc`
has nothing to do. Keys are the manager's 64 hex digits after the prefix,
well inside memcached's 250-byte limit.

Round trips and atomicity
-------------------------

* ``session_read`` is one ``get``. Reading does not refresh the access
  time (:attr:`MemcachedProvider.touches_on_read` is false): the manager
  calls ``session_touch`` at most once per refresh interval.
* ``session_init`` is one ``set``.
* ``session_update`` and ``session_touch`` are compare-and-swap loops:
  ``gets`` the blob, merge into it, ``cas`` it back; a concurrent writer in
  between makes ``cas`` fail and the loop start over, so no change is lost.
  Without contention that is two round trips. A record that vanished is
  never written again (no resurrection after a logout).

Servers and failures
--------------------

One server uses a :class:`pymemcache.client.base.PooledClient`; several use
a :class:`pymemcache.client.hash.HashClient` (rendezvous hashing) with
pooled connections. The HashClient is configured so that a failing server
is **never** taken out of the ring: by default pymemcache marks it dead
and hashes its keys to another server, which silently loses every session
on it, and on its return serves stale ones. Here every call to a failing
server raises, which becomes :class:`~flask_gosession.errors.ProviderError`
(HTTP 503) for the sessions on that server only, and the server is used
again as soon as it answers.

``GOSESSION_MEMCACHED_TIMEOUT`` bounds connecting and each reply. A call
that finds its pooled connection closed by the server (it restarted) is
retried once on a fresh connection; every operation is safe to repeat.
"""
from __future__ import annotations

import math
import random
import sys
import time
import typing as t

from ..errors import ConfigError, CorruptRecordError, ProviderError
from ._addresses import flag, parse_address_list, positive_seconds
from .base import Change, Outcome, Provider, Record

if t.TYPE_CHECKING:
    from flask import Flask

#: memcached reads an expiry above 30 days as a Unix timestamp.
_MAX_RELATIVE_EXPIRY = 30 * 24 * 3600
#: memcached's key length limit; our keys are 64 characters plus the prefix.
_MAX_KEY_LENGTH = 250


class MemcachedProvider(Provider):
    """Sessions in one memcached server or a consistent-hashed set of them.

    :param client: a pymemcache client (``PooledClient``, ``HashClient`` or
        ``Client``) built with ``default_noreply=False``; the provider owns
        it and closes it in :meth:`close`.
    :param key_prefix: prepended to every key.
    :param allow_flush: let :meth:`session_clear` run ``flush_all`` on the
        servers (which empties them of *everything*, not just sessions).

    Use :meth:`from_config` rather than building one by hand.
    """

    touches_on_read = False
    native_ttl = True

    #: How many times :meth:`session_update` and :meth:`session_touch` start
    #: over after losing a compare-and-swap race before giving up.
    cas_attempts: int = 50

    def __init__(
        self, client: t.Any, key_prefix: str = "gosession:", *, allow_flush: bool = False
    ) -> None:
        exceptions = _import_pymemcache().exceptions
        #: Prepended to every memcached key.
        self.key_prefix = key_prefix
        #: Whether :meth:`session_clear` may flush the servers.
        self.allow_flush = allow_flush
        self._client = client
        # A pooled connection that the server closed (it restarted) fails
        # with one of these on first use; one retry gets a fresh connection.
        self._stale = (
            exceptions.MemcacheUnexpectedCloseError, ConnectionResetError, BrokenPipeError
        )
        self._errors = (exceptions.MemcacheError, OSError)

    # -- configuration ------------------------------------------------------

    @classmethod
    def config_defaults(cls, app: Flask) -> dict[str, t.Any]:
        return {
            "GOSESSION_MEMCACHED_SERVERS": ["127.0.0.1:11211"],
            "GOSESSION_MEMCACHED_TIMEOUT": 2.0,
            "GOSESSION_MEMCACHED_ALLOW_FLUSH": False,
            "GOSESSION_KEY_PREFIX": "gosession:",
        }

    @classmethod
    def from_config(cls, app: Flask) -> MemcachedProvider:
        """Validate the ``GOSESSION_MEMCACHED_*`` settings and build the provider.

        No connection is made here; the first session operation connects.
        :raises ConfigError: naming the setting and its bad value, or the
            extra to install when pymemcache is missing.
        """
        pymemcache = _import_pymemcache()
        config = app.config
        servers = parse_address_list(
            config["GOSESSION_MEMCACHED_SERVERS"], "GOSESSION_MEMCACHED_SERVERS"
        )
        timeout = positive_seconds(
            config["GOSESSION_MEMCACHED_TIMEOUT"], "GOSESSION_MEMCACHED_TIMEOUT"
        )
        allow_flush = flag(
            config["GOSESSION_MEMCACHED_ALLOW_FLUSH"], "GOSESSION_MEMCACHED_ALLOW_FLUSH"
        )
        prefix = config["GOSESSION_KEY_PREFIX"]
        if (
            not isinstance(prefix, str)
            or not prefix
            or not prefix.isascii()
            or not prefix.isprintable()
            or any(c.isspace() for c in prefix)
            or len(prefix) + 64 > _MAX_KEY_LENGTH
        ):
            raise ConfigError(
                "GOSESSION_KEY_PREFIX must be a non-empty string of at most "
                f"{_MAX_KEY_LENGTH - 64} printable ASCII characters without "
                f"spaces for memcached, got {prefix!r}"
            )
        options: dict[str, t.Any] = {
            "connect_timeout": timeout,
            "timeout": timeout,
            "no_delay": True,
            # Wait for every reply: a write that failed must not look stored.
            "default_noreply": False,
        }
        client: t.Any
        if len(servers) == 1:
            client = pymemcache.client.base.PooledClient(servers[0], **options)
        else:
            client = _ring_client_class(pymemcache.client.hash.HashClient)(
                servers,
                use_pooling=True,
                # Raise instead of returning a default (None for a get, i.e.
                # "no such session") when a server fails...
                ignore_exc=False,
                # ... and never take a server out of the ring, which would
                # move its keys to another one: retry it on every call.
                retry_attempts=sys.maxsize,
                retry_timeout=-1,
                dead_timeout=1,
                **options,
            )
        return cls(client, prefix, allow_flush=allow_flush)

    # -- plumbing -----------------------------------------------------------

    @property
    def client(self) -> t.Any:
        """The pymemcache client in use."""
        return self._client

    def _store_key(self, key: str) -> str:
        return self.key_prefix + key

    def _call(self, method: str, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """Call a client method; one retry on a stale connection.

        :raises ProviderError: from the client's exception.
        """
        func = getattr(self._client, method)
        try:
            try:
                return func(*args, **kwargs)
            except self._stale:
                return func(*args, **kwargs)
        except self._errors as err:
            raise ProviderError(f"memcached {method} failed: {err!r}") from err

    def _expire(self) -> int:
        """The native TTL for a write now, in memcached's convention."""
        lifetime = max(1, math.ceil(self.max_lifetime))
        if lifetime > _MAX_RELATIVE_EXPIRY:
            # The server's clock, not the manager's: memcached compares it
            # with its own time.
            return int(time.time()) + lifetime
        return lifetime

    @staticmethod
    def _backoff(attempt: int) -> None:
        """Sleep a little, with jitter, before trying a lost CAS race again."""
        time.sleep(random.uniform(0, min(0.02, 0.0005 * 2**attempt)))

    # -- the provider contract ---------------------------------------------

    def session_init(self, key: str, record: Record) -> None:
        stored = self._call("set", self._store_key(key), self.pack(record), expire=self._expire())
        if not stored:
            raise ProviderError("memcached did not store the session")

    def session_create(self, key: str, record: Record) -> bool:
        """memcached's ``add``: stores only if the key holds nothing."""
        return bool(self._call("add", self._store_key(key), self.pack(record),
                               expire=self._expire(), noreply=False))

    def session_read(self, key: str, now: float) -> Record | None:
        blob = self._call("get", self._store_key(key))
        if blob is None:
            return None
        return self.unpack(blob)

    def session_update(self, key: str, change: Change) -> Outcome:
        """Merge ``change`` with a CAS loop (see the module docs).

        :raises ProviderError: if :attr:`cas_attempts` races were all lost.
        :raises CorruptRecordError: if the stored blob cannot be decoded.
        """
        store_key = self._store_key(key)
        for attempt in range(self.cas_attempts):
            blob, token = self._call("gets", store_key)
            if blob is None:
                return Outcome.MISSING
            record = self.unpack(blob)
            outcome = self.merge(record, change)
            if outcome is not Outcome.APPLIED:
                return outcome
            stored = self._call("cas", store_key, self.pack(record), token, expire=self._expire())
            if stored:
                return Outcome.APPLIED
            if stored is None:  # deleted since the gets: never bring it back
                return Outcome.MISSING
            self._backoff(attempt)
        raise ProviderError(
            f"memcached update lost {self.cas_attempts} compare-and-swap races in a row"
        )

    def session_touch(self, key: str, atime: float) -> None:
        """Rewrite the blob with the new ``atime`` and TTL, by CAS.

        A missing record stays missing. An undecodable one is left for
        :meth:`session_read` to report. If every CAS race is lost, the
        touch is dropped: the writers that won it refreshed ``atime``
        themselves.
        """
        store_key = self._store_key(key)
        for attempt in range(self.cas_attempts):
            blob, token = self._call("gets", store_key)
            if blob is None:
                return
            try:
                record = self.unpack(blob)
            except CorruptRecordError:
                return
            record.atime = atime
            stored = self._call("cas", store_key, self.pack(record), token, expire=self._expire())
            if stored or stored is None:
                return
            self._backoff(attempt)

    def session_destroy(self, key: str) -> None:
        self._call("delete", self._store_key(key))

    def session_gc(self, max_lifetime: int) -> int:
        """Nothing to do: memcached expires each item by its TTL."""
        return 0

    # -- administration -------------------------------------------------------

    def session_count(self) -> None:
        """memcached cannot count the keys under a prefix: always ``None``."""
        return None

    def session_clear(self) -> int:
        """Flush the servers, if ``GOSESSION_MEMCACHED_ALLOW_FLUSH`` is true.

        memcached cannot list or delete keys by prefix, so the only way to
        remove every session is ``flush_all``, which empties each server of
        *everything* it holds. That is refused unless the servers are known
        to serve sessions only.
        :returns: ``-1``: how many sessions were removed is unknown.
        :raises NotImplementedError: if flushing is not allowed.
        :raises ProviderError: if a server fails.
        """
        if not self.allow_flush:
            raise NotImplementedError(
                "memcached cannot delete keys by prefix; clearing sessions means "
                "flush_all, which removes every item on the servers. Set "
                "GOSESSION_MEMCACHED_ALLOW_FLUSH = True if they hold sessions only."
            )
        clients = getattr(self._client, "clients", None)
        for client in clients.values() if clients is not None else [self._client]:
            try:
                client.flush_all(noreply=False)
            except self._errors as err:
                raise ProviderError(f"memcached flush_all failed: {err!r}") from err
        return -1

    def close(self) -> None:
        """Close every pooled connection."""
        self._client.close()


def _import_pymemcache() -> t.Any:
    """Import pymemcache and the submodules used here.

    :raises ConfigError: naming the extra to install if it is missing.
    """
    try:
        import pymemcache
        import pymemcache.client.base
        import pymemcache.client.hash
        import pymemcache.exceptions
    except ImportError as err:
        raise ConfigError(
            "GOSESSION_PROVIDER='memcached' needs pymemcache: "
            "pip install flask-gosession[memcached]"
        ) from err
    return pymemcache


def _ring_client_class(hash_client: type) -> type:
    """A HashClient that calls the server without its failed-server
    bookkeeping.

    With the settings above the bookkeeping never takes a server out of the
    ring anyway, and it is not thread-safe: two threads succeeding against a
    recovering server both remove it from the failed list, and the second
    raises ``KeyError`` (a 500). Errors now simply propagate, as intended.
    """

    class RingClient(hash_client):  # type: ignore[misc,valid-type]
        def _safely_run_func(self, client: t.Any, func: t.Any, default_val: t.Any,
                             *args: t.Any, **kwargs: t.Any) -> t.Any:
            return func(*args, **kwargs)

    return RingClient
