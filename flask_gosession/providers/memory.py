"""The embedded default store: a dict in this process.

Sessions live only as long as the process and are not shared between
workers; use ``file``, ``sql``, ``redis`` or ``memcached`` for that. Since
that is the most common silent failure (under ``gunicorn -w 4`` logins
"fail" because each worker sees its own sessions), a store that finds
itself in a process forked from the one that built it logs a WARNING once
in that process. The check runs at fork time (:func:`os.register_at_fork`),
so requests pay nothing for it.

Limits. The store holds at most ``GOSESSION_MEMORY_MAX_SESSIONS`` records
(default 100,000; ``None`` for no limit): anonymous traffic creates a
session per client that stores anything, and without a bound it could fill
the process's memory. Past the bound, each new session evicts the least
recently used one (O(1) per insert), and the ``flask_gosession`` logger
warns at most once a minute. One record is at most
``GOSESSION_MAX_RECORD_SIZE`` bytes encoded (default 1 MiB; ``None`` for no
limit): larger ones raise :class:`~flask_gosession.errors.RecordTooLarge`.
"""
from __future__ import annotations

import logging
import os
import threading
import time
import typing as t
import weakref
from collections import OrderedDict

from .. import userindex
from ._limits import (
    DEFAULT_MAX_RECORD_SIZE,
    MAX_RECORD_SIZE,
    MAX_RECORD_SIZE_DESCRIPTION,
    positive_int,
    record_cap,
)
from .base import DEAD_FIELD, FORWARD_FIELD, Change, Outcome, Provider, Record

if t.TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("flask_gosession")

#: The config key bounding how many sessions the store holds.
MAX_SESSIONS = "GOSESSION_MEMORY_MAX_SESSIONS"
#: Its default.
DEFAULT_MAX_SESSIONS = 100_000
#: The least number of seconds between two eviction warnings.
EVICTION_WARNING_INTERVAL = 60.0

#: Every live memory store, for the after-fork check.
_stores: weakref.WeakSet[MemoryProvider] = weakref.WeakSet()
_stores_lock = threading.Lock()
_fork_hook_installed = False


def _watch_forks(store: MemoryProvider) -> None:
    """Check ``store`` in every forked child (the hook is installed once,
    by the first store built, not at import)."""
    global _fork_hook_installed
    with _stores_lock:
        _stores.add(store)
        if not _fork_hook_installed and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _fork_hook_installed = True


def _after_fork_in_child() -> None:
    global _stores_lock
    # A thread of the parent may have held the lock at fork time, and only
    # this thread exists in the child: a fresh lock, or building a store
    # here could block for ever.
    _stores_lock = threading.Lock()
    for store in list(_stores):
        store.check_process()


class MemoryProvider(Provider):
    """A thread-safe, access-ordered dict of encoded records.

    Records are kept encoded (:meth:`Provider.pack`), so the store never
    shares an object with a live request: every read decodes a fresh copy.
    The dict is ordered by access time (every touch moves the entry to the
    end), so garbage collection pops expired entries from the front and
    costs O(expired), not O(sessions), and eviction pops the least recently
    used entry from the front in O(1). Keys are kept as 32-byte digests to
    halve their memory.

    :meth:`session_count` is every record held; :meth:`live_session_count`
    (the ``gosession_active_sessions`` gauge) only the live ones: neither
    rotated away (a forward stub, :data:`FORWARD_FIELD`) nor being
    destroyed (a tombstone, :data:`DEAD_FIELD`). The store keeps the set of
    such stubs beside the dict, updated under its lock on every write and
    removal (O(1) each), so the live count is ``len(entries) - len(stubs)``,
    never a scan. A record past its idle lifetime still counts until
    :meth:`session_gc` (or eviction) removes it.

    :param max_sessions: the most records held (default 100,000); past it,
        each new record evicts the least recently used one. ``None`` for no
        limit.
    :param max_record_size: the largest encoded record stored, in bytes;
        ``None`` (the default when built by hand) for no limit.
    """

    touches_on_read = True
    process_local = True
    cheap_count = True  # two len()s

    def __init__(self, *, max_sessions: int | None = DEFAULT_MAX_SESSIONS,
                 max_record_size: int | None = None) -> None:
        #: digest -> (atime, blob), least recently accessed first.
        self._entries: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()
        #: The digests of :attr:`_entries` that are not live sessions
        #: (forward stubs, tombstones); always a subset of its keys.
        self._stubs: set[bytes] = set()
        #: user key -> (expiry, index blob); never evicted: an index is small
        #: and dropping one would hide live sessions from revocation.
        self._indexes: dict[str, tuple[float, bytes]] = {}
        self._lock = threading.Lock()
        #: Event counters (:meth:`count_event`), kept in this process.
        self._events: dict[str, int] = {}
        #: The most records held, or ``None``.
        self.max_sessions = positive_int(max_sessions, MAX_SESSIONS, optional=True)
        self.max_record_size = positive_int(max_record_size, MAX_RECORD_SIZE, optional=True)
        #: Time source for rate-limiting the eviction warning.
        self.monotonic: t.Callable[[], float] = time.monotonic
        self._evicted = 0  # since the last warning
        self._warned_at: float | None = None
        #: The process that built the store, and the last one warned in.
        self._pid = self._warned_pid = os.getpid()
        _watch_forks(self)

    config_descriptions: t.ClassVar[t.Mapping[str, str]] = {
        MAX_SESSIONS: (
            "Most sessions the `memory` store holds; past it the least recently used are "
            "evicted (a warning at most once a minute); `None` for no limit."),
        MAX_RECORD_SIZE: MAX_RECORD_SIZE_DESCRIPTION,
    }

    @classmethod
    def config_defaults(cls, app: Flask) -> dict[str, t.Any]:
        return {MAX_SESSIONS: DEFAULT_MAX_SESSIONS, MAX_RECORD_SIZE: DEFAULT_MAX_RECORD_SIZE}

    @classmethod
    def from_config(cls, app: Flask) -> MemoryProvider:
        """Build from ``GOSESSION_MEMORY_MAX_SESSIONS`` and ``GOSESSION_MAX_RECORD_SIZE``.

        :raises ConfigError: for a value that is not a positive integer or
            ``None``.
        """
        return cls(max_sessions=app.config[MAX_SESSIONS], max_record_size=record_cap(app.config))

    def check_process(self) -> bool:
        """Log one WARNING per process if this is not the process that
        built the store (it was forked since); return whether it is.

        Called in every forked child; callable at any time.
        """
        pid = os.getpid()
        if pid == self._pid:
            return True
        if self._warned_pid != pid:
            self._warned_pid = pid
            log.warning(
                "the memory session store was created in process %d and this process "
                "(%d) is a fork of it: each process now has its own copy of the "
                "sessions, so a session created by one worker is unknown to the "
                "others (logins seem to fail, requests see a new, empty session). "
                "Use a store shared between processes: file, sql, redis or memcached.",
                self._pid, pid,
            )
        return False

    def session_init(self, key: str, record: Record) -> None:
        self._insert(key, record, replace=True)

    def session_create(self, key: str, record: Record) -> bool:
        return self._insert(key, record, replace=False)

    def _insert(self, key: str, record: Record, *, replace: bool) -> bool:
        """Store ``record`` (only if absent unless ``replace``), evicting the
        least recently used records past :attr:`max_sessions`."""
        blob = self.pack_checked(key, record)
        digest = bytes.fromhex(key)
        entries = self._entries
        evicted = 0
        with self._lock:
            if not replace and digest in entries:
                return False
            entries[digest] = (record.atime, blob)
            entries.move_to_end(digest)
            self._classify(digest, record)
            limit = self.max_sessions
            if limit is not None:
                while len(entries) > limit:
                    self._stubs.discard(entries.popitem(last=False)[0])
                    evicted += 1
        if evicted:
            self._evicted_some(evicted)
        return True

    def _classify(self, digest: bytes, record: Record) -> None:
        """Note whether the record just stored under ``digest`` is a live
        session (call under the lock)."""
        meta = record.meta
        if FORWARD_FIELD in meta or DEAD_FIELD in meta:
            self._stubs.add(digest)
        else:
            self._stubs.discard(digest)

    def _evicted_some(self, count: int) -> None:
        """Count evictions; warn at most once per :data:`EVICTION_WARNING_INTERVAL`."""
        now = self.monotonic()
        with self._lock:
            self._evicted += count
            if self._warned_at is not None and now - self._warned_at < EVICTION_WARNING_INTERVAL:
                return
            count, self._evicted, self._warned_at = self._evicted, 0, now
        log.warning(
            "memory session store full: evicted %d least recently used session(s) "
            "to stay within %s = %d; raise it, or use a shared store",
            count, MAX_SESSIONS, self.max_sessions,
        )

    def session_read(self, key: str, now: float) -> Record | None:
        digest = bytes.fromhex(key)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            self._entries[digest] = (now, entry[1])
            self._entries.move_to_end(digest)
        record = self.unpack(entry[1])
        record.atime = entry[0]
        return record

    def session_update(self, key: str, change: Change) -> Outcome:
        digest = bytes.fromhex(key)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return Outcome.MISSING
            record = self.unpack(entry[1])
            outcome = self.merge(record, change)
            if outcome is Outcome.APPLIED:
                self._entries[digest] = (record.atime, self.pack_checked(key, record))
                self._entries.move_to_end(digest)
                self._classify(digest, record)
            return outcome

    def session_touch(self, key: str, atime: float) -> None:
        digest = bytes.fromhex(key)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is not None:
                self._entries[digest] = (atime, entry[1])
                self._entries.move_to_end(digest)

    def session_destroy(self, key: str) -> None:
        digest = bytes.fromhex(key)
        with self._lock:
            self._entries.pop(digest, None)
            self._stubs.discard(digest)

    def session_gc(self, max_lifetime: int) -> int:
        self.index_gc(self.clock())
        deadline = self.clock() - max_lifetime
        removed = 0
        entries = self._entries
        with self._lock:
            while entries:
                digest, (atime, _) = next(iter(entries.items()))
                if atime > deadline:
                    break
                del entries[digest]
                self._stubs.discard(digest)
                removed += 1
        return removed

    def session_count(self) -> int:
        return len(self._entries)

    def live_session_count(self) -> int:
        """Records that are neither forward stubs nor tombstones (see the
        class docstring); O(1)."""
        with self._lock:
            return len(self._entries) - len(self._stubs)

    counts_events = True

    def count_event(self, name: str) -> None:
        with self._lock:
            self._events[name] = self._events.get(name, 0) + 1

    def event_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._events.items()))

    def session_clear(self) -> int:
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
            self._stubs.clear()
            self._indexes.clear()
            self._events.clear()
        return count

    # -- the per-user index -------------------------------------------------

    def session_peek(self, keys: t.Sequence[str], now: float) -> dict[str, Record | None]:
        records: dict[str, Record | None] = {}
        for key in keys:
            with self._lock:
                entry = self._entries.get(bytes.fromhex(key))
            record = None
            if entry is not None:
                try:
                    record = self.unpack(entry[1])
                    record.atime = entry[0]
                except Exception:  # corrupt: reads as missing here
                    record = None
            records[key] = record
        return records

    def index_write(self, user: str, write: userindex.IndexWrite, now: float) -> userindex.IndexResult:
        return self._index(user, write, now)[0]

    def index_read(self, user: str, now: float) -> list[userindex.IndexEntry]:
        return self._index(user, None, now)[1]

    def _index(self, user: str, write: userindex.IndexWrite | None, now: float
               ) -> tuple[userindex.IndexResult, list[userindex.IndexEntry]]:
        with self._lock:
            stored = self._indexes.get(user)
            blob = stored[1] if stored is not None and stored[0] > now else None
            new, expires, result, entries = userindex.rewrite(blob, write, now, user=user)
            if new is None:
                self._indexes.pop(user, None)
            else:
                self._indexes[user] = (t.cast(float, expires), new)
        return result, entries

    def index_gc(self, now: float) -> int:
        """Drop expired indexes (run with :meth:`session_gc`)."""
        with self._lock:
            dead = [user for user, (expires, _) in self._indexes.items() if expires <= now]
            for user in dead:
                del self._indexes[user]
        return len(dead)
    def session_keys(self) -> t.Iterator[str]:
        with self._lock:
            digests = list(self._entries)
        return (digest.hex() for digest in digests)
