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

* ``session_read`` is one ``gets``: the blob and its CAS id, which the
  returned record keeps as its :attr:`~.base.Record.version`. Reading does
  not refresh the access time (:attr:`MemcachedProvider.touches_on_read`
  is false): the manager calls ``session_touch`` at most once per refresh
  interval.
* ``session_init`` is one ``set``.
* ``session_update`` given the version it was read at
  (:attr:`~.base.Change.base`: the manager passes the request's read)
  merges the change into the record as read and writes it with one
  ``cas``: a write request is two round trips, ``gets`` and ``cas``. If
  anything wrote the item since the read, the ``cas`` fails and the update
  falls back to the loop below. ``gets`` and ``cas`` to a single server go
  through :class:`~._memcached_lane.CasLane`.
* Otherwise ``session_update`` and ``session_touch`` are compare-and-swap
  loops: ``gets`` the blob, merge into it, ``cas`` it back; a concurrent
  writer in between makes ``cas`` fail and the loop start over, so no
  change is lost. Without contention that is two round trips. A record
  that vanished is never written again (no resurrection after a logout):
  ``cas`` on a missing item stores nothing.

The version lives on the request's record and change, never in the
provider, so concurrent requests on one provider share no state.

Size
----

memcached refuses an item larger than its ``-I`` option (1 MiB by
default), and on refusing a ``set`` or ``cas`` it also **drops the item it
held**, so the session would be lost. The provider therefore checks every
blob before sending it: at most ``GOSESSION_MEMCACHED_MAX_ITEM_SIZE`` (set
it to the servers' ``-I``; default 1 MiB) minus the key and
:data:`ITEM_OVERHEAD` bytes of the server's item header, and at most
``GOSESSION_MAX_RECORD_SIZE`` (default 1 MiB; ``None`` for no cap beyond
the item size). A larger record raises
:class:`~flask_gosession.errors.RecordTooLarge` and nothing is sent. If the
server refuses an item all the same (``SERVER_ERROR object too large for
cache``: its ``-I`` is lower than the setting), that is
:class:`~flask_gosession.errors.RecordTooLarge` too, never an outage.

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
Before the retry every idle connection, the lane's and the pools' of every
server, is closed (after a restart all of them are stale), so the retry
and the calls after it connect afresh; a server that is really down fails
the retry at once (connection refused), a 503.

A process forked after the provider was used (a preforking server's
workers) never uses the parent's connections: at ``fork()`` the child's
pools start empty and its descriptors of the inherited sockets are closed,
with nothing sent on them (:mod:`._memcached_pools`), and the lane's idle
connections are left to the parent (:mod:`._idle`).
"""
from __future__ import annotations

import math
import os
import random
import sys
import time
import typing as t
import weakref

from ..errors import ConfigError, CorruptRecordError, ProviderError, RecordTooLarge
from ._addresses import flag, parse_address_list, positive_seconds
from ._limits import (
    DEFAULT_MAX_RECORD_SIZE,
    MAX_RECORD_SIZE,
    MAX_RECORD_SIZE_DESCRIPTION,
    lowest,
    positive_int,
    record_cap,
)
from ._memcached_lane import CasLane
from ._memcached_pools import drop_idle, forget_inherited
from .base import Change, Outcome, Provider, Record, redact

if t.TYPE_CHECKING:
    from flask import Flask

#: memcached reads an expiry above 30 days as a Unix timestamp.
_MAX_RELATIVE_EXPIRY = 30 * 24 * 3600
#: The commands :class:`~._memcached_lane.CasLane` sends.
_LANE_COMMANDS = frozenset({"gets", "cas"})
#: memcached's key length limit; our keys are 64 characters plus the prefix.
_MAX_KEY_LENGTH = 250
#: The config key of the servers' item size limit (their ``-I`` option).
MAX_ITEM_SIZE = "GOSESSION_MEMCACHED_MAX_ITEM_SIZE"
#: memcached's default ``-I``: 1 MiB.
DEFAULT_MAX_ITEM_SIZE = 1024 * 1024
#: Bytes of an item that are not the key or the value: the item header, the
#: CAS id, flags and line ends (59 on memcached 1.6, 64-bit), with margin.
ITEM_OVERHEAD = 96


class MemcachedProvider(Provider):
    """Sessions in one memcached server or a consistent-hashed set of them.

    :param client: a pymemcache client (``PooledClient``, ``HashClient`` or
        ``Client``) built with ``default_noreply=False``; the provider owns
        it and closes it in :meth:`close`.
    :param key_prefix: prepended to every key.
    :param allow_flush: let :meth:`session_clear` run ``flush_all`` on the
        servers (which empties them of *everything*, not just sessions).
    :param max_item_size: the servers' item size limit (``-I``), in bytes.
    :param max_record_size: the application's cap on one blob, in bytes, or
        ``None``; the item size limit applies as well (see the module docs).
    :param fast_lane: send ``gets`` and ``cas`` through a
        :class:`~._memcached_lane.CasLane` on ``client``'s connection
        settings, a few microseconds of CPU less per command. Only for a
        ``PooledClient`` built as :meth:`from_config` builds it (no key
        prefix or serde of its own) and a prefix it checked.

    Use :meth:`from_config` rather than building one by hand.
    """

    touches_on_read = False
    native_ttl = True
    #: Memcached can neither list keys nor keep an index it will not evict
    #: at will: a revocation that silently missed a session would be worse
    #: than none, so the per-user index is refused (see UserIndexUnsupported).
    user_index = False

    #: How many times :meth:`session_update` and :meth:`session_touch` start
    #: over after losing a compare-and-swap race before giving up.
    cas_attempts: int = 50

    def __init__(
        self, client: t.Any, key_prefix: str = "gosession:", *, allow_flush: bool = False,
        max_item_size: int = DEFAULT_MAX_ITEM_SIZE, max_record_size: int | None = None,
        fast_lane: bool = False,
    ) -> None:
        exceptions = _import_pymemcache().exceptions
        #: Prepended to every memcached key.
        self.key_prefix = key_prefix
        item = positive_int(max_item_size, MAX_ITEM_SIZE, minimum=1024)
        cap = positive_int(max_record_size, MAX_RECORD_SIZE, optional=True)
        #: The largest blob that fits in an item next to our key.
        self.item_limit = t.cast(int, item) - len(key_prefix) - 64 - ITEM_OVERHEAD
        self.max_record_size = lowest(cap, self.item_limit)
        if cap is None or self.item_limit < cap:
            self.max_record_setting = f"{MAX_ITEM_SIZE} = {item}"
        self._server_error = exceptions.MemcacheServerError
        #: Whether :meth:`session_clear` may flush the servers.
        self.allow_flush = allow_flush
        self._client = client
        self._lane = CasLane(client) if fast_lane else None
        # A pooled connection that the server closed (it restarted) fails
        # with one of these on first use; every idle one is as stale, so
        # all are dropped and one retry gets a fresh connection.
        self._stale = (
            exceptions.MemcacheUnexpectedCloseError, ConnectionResetError, BrokenPipeError
        )
        self._errors = (exceptions.MemcacheError, OSError)
        # A forked worker must never share the parent's pooled sockets (the
        # lane's idle connections reset themselves after fork()).
        os.register_at_fork(after_in_child=_forget_after_fork(weakref.ref(self)))

    # -- configuration ------------------------------------------------------

    config_descriptions: t.ClassVar[t.Mapping[str, str]] = {
        "GOSESSION_MEMCACHED_SERVERS": "One `host:port` server, or several for consistent hashing.",
        "GOSESSION_MEMCACHED_TIMEOUT": "Connect and read timeout in seconds.",
        "GOSESSION_MEMCACHED_ALLOW_FLUSH": (
            "Let `flask gosession clear` run `flush_all` (Memcached cannot list keys, so "
            "clearing empties the whole server)."),
        "GOSESSION_KEY_PREFIX": "Prefix of every key the store writes in Memcached.",
        MAX_ITEM_SIZE: (
            "The servers' item size limit (`memcached -I`); set it to match, since a server "
            "that refuses an item also drops the session it held."),
        MAX_RECORD_SIZE: MAX_RECORD_SIZE_DESCRIPTION,
    }

    @classmethod
    def config_defaults(cls, app: Flask) -> dict[str, t.Any]:
        return {
            "GOSESSION_MEMCACHED_SERVERS": ["127.0.0.1:11211"],
            "GOSESSION_MEMCACHED_TIMEOUT": 2.0,
            "GOSESSION_MEMCACHED_ALLOW_FLUSH": False,
            "GOSESSION_KEY_PREFIX": "gosession:",
            MAX_ITEM_SIZE: DEFAULT_MAX_ITEM_SIZE,
            MAX_RECORD_SIZE: DEFAULT_MAX_RECORD_SIZE,
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
        max_item_size = positive_int(config[MAX_ITEM_SIZE], MAX_ITEM_SIZE, minimum=1024)
        max_record_size = record_cap(config)
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
        one = len(servers) == 1
        if one:
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
        return cls(client, prefix, allow_flush=allow_flush,
                   max_item_size=t.cast(int, max_item_size), max_record_size=max_record_size,
                   fast_lane=one)

    # -- plumbing -----------------------------------------------------------

    @property
    def client(self) -> t.Any:
        """The pymemcache client in use."""
        return self._client

    @property
    def lane(self) -> CasLane | None:
        """The fast lane that sends ``gets`` and ``cas``, or ``None``."""
        return self._lane

    def _store_key(self, key: str) -> str:
        return self.key_prefix + key

    def _call(self, method: str, *args: t.Any, **kwargs: t.Any) -> t.Any:
        """Call a client method; on a stale connection, drop every idle
        connection (:meth:`drop_idle`) and retry once on a fresh one.

        :raises ProviderError: from the client's exception.
        """
        client, lane = self._client, self._lane
        # The lane, for its two commands, while the client is the one it
        # was built for (a test may wrap the client).
        func = getattr(lane if lane is not None and lane.pooled is client
                       and method in _LANE_COMMANDS else client, method)
        try:
            try:
                return func(*args, **kwargs)
            except self._stale:
                self.drop_idle()
                return func(*args, **kwargs)
        except self._errors as err:
            raise ProviderError(f"memcached {method} failed: {redact(repr(err))}") from err

    def drop_idle(self) -> None:
        """Close every idle connection, the lane's and the client's on every
        server: after a server restart all of them are closed at its end."""
        if self._lane is not None:
            self._lane.close()
        drop_idle(self._client)

    def _expire(self) -> int:
        """The native TTL for a write now, in memcached's convention."""
        lifetime = max(1, math.ceil(self.max_lifetime))
        if lifetime > _MAX_RELATIVE_EXPIRY:
            # The server's clock, not the manager's: memcached compares it
            # with its own time.
            return int(time.time()) + lifetime
        return lifetime

    def _write(self, method: str, key: str, blob: bytes, *args: t.Any, check: bool = True,
               **kwargs: t.Any) -> t.Any:
        """``set`` or ``cas`` one blob, refusing it first if it is too large.

        :param check: check the blob against :attr:`max_record_size` first.
        :raises RecordTooLarge: for a blob over :attr:`max_record_size`, or
            one the server refuses as too large for its items.
        :raises ProviderError: as :meth:`_call`.
        """
        if check:
            self.check_size(key, len(blob))
        try:
            return self._call(method, self._store_key(key), blob, *args, expire=self._expire(), **kwargs)
        except ProviderError as err:
            cause = err.__cause__
            if isinstance(cause, self._server_error) and "too large" in str(cause):
                raise RecordTooLarge(
                    key, len(blob), self.item_limit, "the memcached server's -I, "
                    f"lower than {MAX_ITEM_SIZE}"
                ) from cause
            raise

    @staticmethod
    def _backoff(attempt: int) -> None:
        """Sleep a little, with jitter, before trying a lost CAS race again."""
        time.sleep(random.uniform(0, min(0.02, 0.0005 * 2**attempt)))

    # -- the provider contract ---------------------------------------------

    def session_init(self, key: str, record: Record) -> None:
        stored = self._write("set", key, self.pack(record))
        if not stored:
            raise ProviderError("memcached did not store the session")

    def session_create(self, key: str, record: Record) -> bool:
        """memcached's ``add``: stores only if the key holds nothing."""
        return bool(self._write("add", key, self.pack(record), noreply=False))

    def session_read(self, key: str, now: float) -> Record | None:
        store_key = self._store_key(key)
        blob, token = self._call("gets", store_key)
        if blob is None:
            return None
        record = self.unpack(blob)
        # Copies of the two mappings: the session keeps the record's meta
        # as its own and changes it.
        record.version = _Version(store_key, token, dict(record.data), dict(record.meta),
                                  record.atime)
        return record

    def session_update(self, key: str, change: Change) -> Outcome:
        """Merge ``change``: one ``cas`` against the version it was made
        against, else a CAS loop (see the module docs).

        :raises ProviderError: if :attr:`cas_attempts` races were all lost.
        :raises CorruptRecordError: if the stored blob cannot be decoded.
        """
        store_key = self._store_key(key)
        base = change.base
        if type(base) is _Version and base.store_key == store_key:
            record = Record(dict(base.data), dict(base.meta), base.atime)
            if self.merge(record, change) is Outcome.APPLIED:
                stored = self._write("cas", key, self.pack(record), base.token)
                if stored:
                    return Outcome.APPLIED
                if stored is None:  # deleted since the read: never bring it back
                    return Outcome.MISSING
            # Written since the read (or the read's state refuses the
            # change): decide against what is stored now.
        for attempt in range(self.cas_attempts):
            blob, token = self._call("gets", store_key)
            if blob is None:
                return Outcome.MISSING
            record = self.unpack(blob)
            outcome = self.merge(record, change)
            if outcome is not Outcome.APPLIED:
                return outcome
            stored = self._write("cas", key, self.pack(record), token)
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
        themselves. The blob is already stored, so the size cap is not
        applied again (a lowered ``GOSESSION_MAX_RECORD_SIZE`` does not
        make reading an older session fail); if the server refuses it,
        it has dropped the item and the session is simply gone.
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
            try:
                stored = self._write("cas", key, self.pack(record), token, check=False)
            except RecordTooLarge:
                return
            if stored or stored is None:
                return
            self._backoff(attempt)

    def session_destroy(self, key: str) -> None:
        self._call("delete", self._store_key(key))

    # -- another library's keys (imports) -----------------------------------

    @staticmethod
    def legacy_key_ok(name: str) -> bool:
        """Whether ``name`` can be a memcached key at all (so that a client's
        refusal of a bad key is never taken for an outage)."""
        return (0 < len(name) <= _MAX_KEY_LENGTH and name.isascii() and name.isprintable()
                and not any(c.isspace() for c in name))

    def legacy_get(self, name: str) -> bytes | None:
        """The value stored under the full memcached key ``name`` (outside our
        prefix, e.g. Flask-Session's ``session:<sid>``); ``None`` if absent or
        not a possible key. Memcached does not tell an item's expiry.

        :raises ProviderError: if memcached fails.
        """
        if not self.legacy_key_ok(name):
            return None
        value = self._call("get", name)
        return bytes(value) if isinstance(value, (bytes, bytearray)) else None

    def legacy_delete(self, name: str) -> None:
        """Delete the full memcached key ``name``, as :meth:`legacy_get` names it.

        :raises ProviderError: if memcached fails.
        """
        if self.legacy_key_ok(name):
            self._call("delete", name)

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
                raise ProviderError(f"memcached flush_all failed: {redact(repr(err))}") from err
        return -1

    def close(self) -> None:
        """Close every pooled connection."""
        self._client.close()
        if self._lane is not None:
            self._lane.close()


class _Version(t.NamedTuple):
    """What :meth:`MemcachedProvider.session_read` read: a record's
    :attr:`~.base.Record.version`, which the one-``cas`` update merges
    into (a decoded copy, not the blob: decoding it again would cost a
    write more than the copies).

    The values inside ``data`` and ``meta`` are shared with the record
    returned: plain JSON values decoded from the store, which the manager
    only reads (it untags them into new values) or replaces whole.
    """

    #: The memcached key read, so that a change is never applied to the
    #: record of another session.
    store_key: str
    #: The item's CAS id at the read.
    token: bytes
    #: The record's user keys at the read (a copy of the mapping).
    data: dict[str, t.Any]
    #: Its meta at the read (a copy of the mapping).
    meta: dict[str, t.Any]
    #: Its access time at the read.
    atime: float


def _forget_after_fork(ref: weakref.ref[MemcachedProvider]) -> t.Callable[[], None]:
    """The ``after_in_child`` hook of one provider: the child starts with
    empty pools (:func:`~._memcached_pools.forget_inherited`); nothing once
    the provider is gone."""

    def hook() -> None:
        provider = ref()
        if provider is not None:
            forget_inherited(provider.client)

    return hook


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

    class RingClient(hash_client):  # type: ignore[misc]
        def _safely_run_func(self, client: t.Any, func: t.Any, default_val: t.Any,
                             *args: t.Any, **kwargs: t.Any) -> t.Any:
            return func(*args, **kwargs)

    return RingClient
