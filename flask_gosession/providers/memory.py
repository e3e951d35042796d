"""The embedded default store: a dict in this process.

Sessions live only as long as the process and are not shared between
workers; use ``file``, ``sql``, ``redis`` or ``memcached`` for that.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

from .base import Change, Outcome, Provider, Record


class MemoryProvider(Provider):
    """A thread-safe, access-ordered dict of encoded records.

    Records are kept encoded (:meth:`Provider.pack`), so the store never
    shares an object with a live request: every read decodes a fresh copy.
    The dict is ordered by access time (every touch moves the entry to the
    end), so garbage collection pops expired entries from the front and
    costs O(expired), not O(sessions). Keys are kept as 32-byte digests to
    halve their memory.
    """

    touches_on_read = True

    def __init__(self) -> None:
        #: digest -> (atime, blob), least recently accessed first.
        self._entries: OrderedDict[bytes, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def session_init(self, key: str, record: Record) -> None:
        blob = self.pack(record)
        digest = bytes.fromhex(key)
        with self._lock:
            self._entries[digest] = (record.atime, blob)
            self._entries.move_to_end(digest)

    def session_create(self, key: str, record: Record) -> bool:
        blob = self.pack(record)
        digest = bytes.fromhex(key)
        with self._lock:
            if digest in self._entries:
                return False
            self._entries[digest] = (record.atime, blob)
        return True

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
                self._entries[digest] = (record.atime, self.pack(record))
                self._entries.move_to_end(digest)
            return outcome

    def session_touch(self, key: str, atime: float) -> None:
        digest = bytes.fromhex(key)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is not None:
                self._entries[digest] = (atime, entry[1])
                self._entries.move_to_end(digest)

    def session_destroy(self, key: str) -> None:
        with self._lock:
            self._entries.pop(bytes.fromhex(key), None)

    def session_gc(self, max_lifetime: int) -> int:
        deadline = self.clock() - max_lifetime
        removed = 0
        entries = self._entries
        with self._lock:
            while entries:
                digest, (atime, _) = next(iter(entries.items()))
                if atime > deadline:
                    break
                del entries[digest]
                removed += 1
        return removed

    def session_count(self) -> int:
        return len(self._entries)

    def session_clear(self) -> int:
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
        return count
