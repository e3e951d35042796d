"""The per-user index of sessions: its entries and the one algorithm that
changes it.

Every store that keeps an index (memory, file, sql, redis) keeps, per user,
a mapping from *session store key* to an :class:`IndexEntry`, under a user
key that is the SHA-256 of the user id (:func:`user_key`), so a store dump
holds no user id in clear. Stores that hold the index as one blob (memory,
file, sql) change it with :func:`apply_write` inside their own lock or
transaction; the Redis store runs the same algorithm in a Lua script. So
every store makes the same decisions:

* **Pruning.** Every write and every read first drops the entries whose
  :attr:`~IndexEntry.horizon` has passed. The horizon is an upper bound of
  the session's own expiry (see :mod:`flask_gosession.users`), so pruning
  by it never drops a live session; the index's own expiry is its latest
  horizon, so it is never shorter than its longest-lived member's, and an
  index whose members have all expired disappears.
* **One device, one handle.** A session keeps its public handle across
  rotations. While a rotation is under way the index holds two keys with
  that handle: the id being left (``keep``) and the new one, whose entry
  records ``keep`` as the key it :attr:`~IndexEntry.replaces`. Adding the
  new one drops exactly one other key: the one the kept entry itself
  replaced (the id left by the previous rotation, which the session being
  left still names as the id it replaced, so destroying it destroys that
  one too). It never drops a key merely for sharing the handle: that key
  may be the new id of a rotation racing this one (a re-login and an age
  rotation of the same id, or a horizon refresh during a re-login), whose
  record is about to be created, and dropping it would leave a live
  session outside the index, out of reach of every revocation. A key left
  behind by a rotation that lost such a race has no record; it is pruned
  by its horizon.
* **The limit.** A write that adds an entry may carry a limit of distinct
  handles (devices). Entries marked for eviction do not count. Over the
  limit, the write is refused (nothing is added) or, with ``evict``, the
  oldest devices (by creation) are marked for eviction, atomically with the
  addition. Marked entries stay in the index until the caller has destroyed
  their sessions and removed them, and every write returns all of them, so
  that a request that dies half-way through an eviction leaves it to the
  next writer rather than leaving a live session outside the index.
"""
from __future__ import annotations

import hashlib
import json
import logging
import typing as t
from dataclasses import dataclass, field

from .errors import CorruptRecordError
from .ids import label

log = logging.getLogger("flask_gosession")

#: Fields of an entry as stored (short: one per device, per user).
_HANDLE, _CREATED, _HORIZON, _ADDED, _INFO, _EVICTING, _REPLACES = (
    "h", "c", "z", "a", "i", "e", "p")


def user_key(user_id: str) -> str:
    """The store's name for a user's index: hex SHA-256 of the user id."""
    return hashlib.sha256(b"gosession-user\x00" + user_id.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One session of a user, as the index keeps it."""

    #: The session's store key (SHA-256 of its id: never opens it).
    key: str
    #: The public handle of the device, stable across rotations.
    handle: str
    #: When the session was created.
    created: float
    #: An upper bound of when the session expires; the entry is pruned after it.
    horizon: float
    #: When this entry was written (a rotation or a refresh rewrites it).
    added: float
    #: What the device page shows: ``browser``, ``os``, ``address``.
    info: t.Mapping[str, str] = field(default_factory=dict)
    #: Marked for eviction by the per-user limit: its session is being destroyed.
    evicting: bool = False
    #: The store key this one's rotation left (``IndexWrite.keep``), if any.
    replaces: str | None = None

    def to_json(self) -> dict[str, t.Any]:
        """The stored form (plain JSON types)."""
        obj: dict[str, t.Any] = {
            _HANDLE: self.handle, _CREATED: self.created, _HORIZON: self.horizon,
            _ADDED: self.added, _INFO: dict(self.info),
        }
        if self.evicting:
            obj[_EVICTING] = 1
        if self.replaces is not None:
            obj[_REPLACES] = self.replaces
        return obj

    @classmethod
    def from_json(cls, key: str, obj: t.Any) -> IndexEntry:
        """Decode a stored entry.

        :raises CorruptRecordError: for anything that is not one we wrote.
        """
        if not _is_store_key(key):
            raise CorruptRecordError("bad user index entry: its key is not a store key")
        if not isinstance(obj, dict):
            raise CorruptRecordError("bad user index entry: not an object")
        try:
            replaces = obj.get(_REPLACES)
            if replaces is not None and not _is_store_key(replaces):
                raise TypeError("replaces")
            info = obj[_INFO]
            if not isinstance(info, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in info.items()
            ):
                raise TypeError("info")
            created, horizon, added = (float(obj[name]) for name in (_CREATED, _HORIZON, _ADDED))
            handle = obj[_HANDLE]
            if not isinstance(handle, str):
                raise TypeError("handle")
        except (KeyError, TypeError, ValueError) as err:
            raise CorruptRecordError(f"bad user index entry: {err}") from err
        return cls(key, handle, created, horizon, added, info=info,
                   evicting=bool(obj.get(_EVICTING)), replaces=replaces)


def _is_store_key(key: t.Any) -> bool:
    return isinstance(key, str) and len(key) == 64 and not key.strip("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class IndexWrite:
    """One atomic change to a user's index."""

    #: An entry to add (or rewrite, for a refresh of its horizon).
    add: IndexEntry | None = None
    #: With :attr:`add`: the id a rotation is leaving. It stays, the new
    #: entry records it as the key it replaces, and the key *it* replaced
    #: is dropped. No other key is dropped (see the module docs).
    keep: str | None = None
    #: Keys to remove (sessions already destroyed).
    remove: t.AbstractSet[str] = frozenset()
    #: With :attr:`add`: the most devices the user may have, or ``None``.
    limit: int | None = None
    #: Over the limit: mark the oldest devices for eviction (``True``) or
    #: refuse the addition (``False``).
    evict: bool = False


@dataclass(frozen=True, slots=True)
class IndexResult:
    """What :func:`apply_write` (and every store's index write) did."""

    #: ``False`` when the limit refused the addition (nothing was added).
    added: bool
    #: Every entry marked for eviction, now or by an earlier write: the
    #: caller destroys their sessions, then removes them.
    evicting: tuple[IndexEntry, ...] = ()


def decode_entries(members: t.Mapping[str, t.Any], *, user: str = "") -> dict[str, IndexEntry]:
    """Stored members (key to JSON object) as entries. A member that is not
    one we wrote is left out, with a warning: the others stay reachable, so
    one damaged entry never hides a user's other sessions from revocation.
    """
    entries: dict[str, IndexEntry] = {}
    bad = 0
    for key, obj in members.items():
        try:
            entries[key] = IndexEntry.from_json(key, obj)
        except CorruptRecordError:
            bad += 1
    if bad:
        log.warning("discarding %d corrupt entr%s of user index %s", bad,
                    "y" if bad == 1 else "ies", label(user))
    return entries


def prune(entries: dict[str, IndexEntry], now: float) -> bool:
    """Drop entries whose horizon has passed; return whether any was."""
    dead = [key for key, entry in entries.items() if entry.horizon <= now]
    for key in dead:
        del entries[key]
    return bool(dead)


def apply_write(entries: dict[str, IndexEntry], write: IndexWrite, now: float) -> IndexResult:
    """Apply ``write`` to ``entries`` in place (see the module docs).

    A refused addition still prunes and removes: those changes are right
    whatever the outcome.
    """
    prune(entries, now)
    for key in write.remove:
        entries.pop(key, None)
    add = write.add
    if add is not None:
        kept = entries.get(write.keep) if write.keep is not None else None
        left = kept.replaces if kept is not None else None
        if left is not None and left != add.key and left in entries \
                and entries[left].handle == add.handle:
            del entries[left]
        if write.limit is not None and not _within_limit(entries, add, write.limit, write.evict):
            return IndexResult(False, _evicting(entries))
        marked = any(e.evicting for e in entries.values() if e.handle == add.handle)
        existing = entries.get(add.key)
        replaces = write.keep if write.keep is not None else (
            existing.replaces if existing is not None else None)
        entries[add.key] = IndexEntry(add.key, add.handle, add.created, add.horizon, add.added,
                                      add.info, evicting=marked, replaces=replaces)
    return IndexResult(True, _evicting(entries))


def _within_limit(entries: dict[str, IndexEntry], add: IndexEntry, limit: int, evict: bool) -> bool:
    """Make room for ``add``'s device under ``limit``; ``False`` if refused."""
    oldest: dict[str, float] = {}
    for entry in entries.values():
        if not entry.evicting and entry.handle != add.handle:
            oldest[entry.handle] = min(oldest.get(entry.handle, entry.created), entry.created)
    excess = len(oldest) - (limit - 1)
    if excess <= 0:
        return True
    if not evict:
        return False
    victims = set(sorted(oldest, key=lambda handle: (oldest[handle], handle))[:excess])
    for key, entry in list(entries.items()):
        if entry.handle in victims:
            entries[key] = IndexEntry(entry.key, entry.handle, entry.created, entry.horizon,
                                      entry.added, entry.info, evicting=True,
                                      replaces=entry.replaces)
    return True


def _evicting(entries: dict[str, IndexEntry]) -> tuple[IndexEntry, ...]:
    return tuple(e for e in entries.values() if e.evicting)


def expiry(entries: t.Mapping[str, IndexEntry]) -> float | None:
    """When the index expires: its latest horizon (``None`` when empty)."""
    return max((e.horizon for e in entries.values()), default=None)


def dumps(entries: t.Mapping[str, IndexEntry]) -> bytes:
    """The index as one blob (for stores that keep it whole)."""
    return json.dumps({k: e.to_json() for k, e in entries.items()}, separators=(",", ":")).encode()


def loads(blob: bytes | str | None, *, user: str = "") -> dict[str, IndexEntry]:
    """Decode :func:`dumps`; ``None`` (no index) is an empty one.

    :raises CorruptRecordError: for a blob that is not one we wrote.
    """
    if blob is None:
        return {}
    try:
        members = json.loads(blob)
    except (ValueError, TypeError, RecursionError) as err:
        raise CorruptRecordError(f"undecodable user index: {err}") from err
    if not isinstance(members, dict):
        raise CorruptRecordError("user index is not a mapping")
    return decode_entries(members, user=user)


def rewrite(blob: bytes | str | None, write: IndexWrite | None, now: float, *, user: str = ""
            ) -> tuple[bytes | None, float | None, IndexResult, list[IndexEntry]]:
    """One read-modify-write of a whole-blob index.

    :param write: the change, or ``None`` for a read (which prunes only).
    :returns: the new blob (``None``: delete the index), its expiry, the
        result, and the entries after the change. A corrupt blob (only
        someone with write access to the store makes one) is logged and
        replaced by an empty index; its sessions still expire by
        themselves.
    """
    try:
        entries = loads(blob, user=user)
    except CorruptRecordError as err:
        log.warning("discarding corrupt user index %s: %s", label(user), err)
        entries = {}
    if write is None:
        prune(entries, now)
        result = IndexResult(True, _evicting(entries))
    else:
        result = apply_write(entries, write, now)
    if not entries:
        return None, None, result, []
    return dumps(entries), expiry(entries), result, list(entries.values())
