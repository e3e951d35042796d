"""Users and their devices: binding sessions to users, listing a user's
sessions, revoking one device or all of them, and the per-user limit.

A session is *bound* to a user by :func:`login_user_session` (or by
Flask-Login's ``login_user`` with ``GOSESSION_FLASK_LOGIN``). Binding is a
privilege change, so the id rotates. The bound session keeps, in its meta,
the user id, a public *handle* for the device (random, kept across
rotations, never anything that opens the session) and its *horizon*.

The index (:mod:`flask_gosession.userindex`) maps each user to the store
keys of their sessions. The invariants, and the order of writes that keeps
them on every store (Redis Cluster included, where a session and its
user's index live in different slots, so no write covers both):

1. **A live bound session is always in its user's index.** A key is added
   to the index *before* the record with that key is created: on binding,
   during the view, before the response saves the new id; on each
   rotation of a bound session, before the old record is marked, with the
   old key kept beside it. A key leaves the index only *after* its session
   is destroyed. Entries are pruned by their horizon, an upper bound of
   the session's expiry: it is set to ``now + 3 * GOSESSION_MAX_LIFETIME``
   (never past the absolute lifetime) and refreshed by the first request
   that finds it less than two lifetimes away, so even a refresh that
   fails leaves a whole lifetime of margin.
2. **After a revocation returns, no session it covered is usable.**
   :meth:`Users.revoke` reads the index, *kills* every key it selects (a
   tombstone replaces the record, and for a key whose record is not
   written yet the tombstone is created first, so its creation fails),
   removes them from the index, and reads the index again until it finds
   no selected key it has not killed. A rotation racing it added its new
   key before marking the old record: either the mark fails on the
   tombstone, or the new key is in the next read. A save racing it finds
   the tombstone and writes nothing (the existing no-resurrection rule).
3. **The per-user limit holds under concurrent logins.** The limit is
   checked by the index write that adds the new key, atomically. Over it,
   that write adds nothing; the login prunes the entries of sessions that
   are gone (expired ones never count) and writes again, checking again.
   Still over it, the login is refused
   (:class:`~flask_gosession.errors.SessionLimitReached`) or the oldest
   devices are marked for eviction in that same write; the
   login then kills them, and any later index write hands still-marked
   entries back, so an eviction cut short by a crash is finished by the
   next login. A login whose own key was marked before its record was
   written finds its creation refused, and ends signed out.

Costs in store round trips: binding adds one (the index write) to the
login's rotation (three more at the limit: the prune's read of the index
and of its sessions, and the second write, plus the kills); each later rotation of a bound session adds one; a
logout adds one (the removal); a request on a bound session adds nothing,
except the one request per ``GOSESSION_MAX_LIFETIME`` that refreshes the
horizon (one index write, and the record update that stores it).
:func:`sessions_of` is one index read plus one batched read of that
user's records: O(that user's sessions), never a scan.

Memcached keeps no index (it evicts at will, and a revocation that
silently missed a session would be worse than none): binding works there
(``session.user_id``), the listing and revocation calls raise
:class:`~flask_gosession.errors.UserIndexUnsupported`, and
``GOSESSION_MAX_SESSIONS_PER_USER`` is refused at ``init_app``.
"""
from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import secrets
import typing as t
from dataclasses import dataclass

from flask import current_app, has_request_context, request, session

from . import signals
from .devices import describe
from .errors import CorruptRecordError, SessionLimitReached, UserIndexUnsupported
from .ids import label, store_key
from .meta import CREATED, DEVICE, HANDLE, HORIZON, ISSUED, PREVIOUS, USER
from .providers.base import DEAD_FIELD, FORWARD_FIELD, Change, Outcome, Record
from .userindex import IndexEntry, IndexWrite, user_key

if t.TYPE_CHECKING:
    from .manager import Manager
    from .session import ServerSession

#: Horizons are set this many lifetimes ahead ...
HORIZON_LIFETIMES = 3
#: ... and refreshed once fewer than this many remain.
REFRESH_LIFETIMES = 2
#: An index entry younger than this (seconds) may belong to a login or a
#: rotation whose record is not written yet: it is never pruned as dead.
FRESH_ENTRY = 30.0
#: How many times a revocation reads the index again for keys added by
#: rotations racing it, at most.
REVOKE_ROUNDS = 32
#: The longest user id accepted (as a string).
MAX_USER_ID = 256


@dataclass(frozen=True, slots=True)
class DeviceSession:
    """One live session of a user, as :func:`sessions_of` lists it."""

    #: Public handle of the device: pass it to :func:`revoke_session`.
    handle: str
    #: When the session was created (signed in), UTC.
    created: dt.datetime
    #: When it was last used (to within ``GOSESSION_REFRESH_INTERVAL``), UTC.
    last_seen: dt.datetime
    #: ``"Firefox 128"``; ``"Unknown browser"`` if the User-Agent says nothing known.
    browser: str
    #: ``"Windows"``, ``"macOS"``, ``"iOS"``...; ``"Unknown OS"`` otherwise.
    os: str
    #: The client's network, ``"203.0.113.0/24"`` or ``"2001:db8:1::/48"``.
    address: str
    #: Whether this is the session of the current request.
    current: bool


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def normalise_user_id(user_id: t.Any) -> str:
    """The user id as the index keys it: a non-empty string (Flask-Login's
    ``get_id()`` is one; an int becomes its decimal form).

    :raises TypeError: for ``None``, a bool, or an empty or overlong id.
    """
    if user_id is None or isinstance(user_id, bool) or not isinstance(user_id, (str, int)):
        raise TypeError(f"a user id must be a string or an int, got {type(user_id).__name__}")
    text = str(user_id)
    if not text or len(text) > MAX_USER_ID:
        raise TypeError(f"a user id must be 1 to {MAX_USER_ID} characters long")
    return text


class Users:
    """The per-user side of one manager (``manager.users``)."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager

    @property
    def indexed(self) -> bool:
        """Whether the store keeps per-user indexes."""
        return self.manager.provider.user_index

    def _require_index(self) -> None:
        if not self.indexed:
            raise UserIndexUnsupported(type(self.manager.provider).__name__)

    def _horizon(self, now: float, created: float) -> float:
        settings = self.manager.settings
        horizon = now + HORIZON_LIFETIMES * settings.max_lifetime
        if settings.absolute_lifetime is not None:
            horizon = min(horizon, created + settings.absolute_lifetime)
        return horizon

    def _write(self, user: str, write: IndexWrite, now: float) -> t.Any:
        return self.manager.store.call("index_write", user_key(user), write, now)

    # -- binding --------------------------------------------------------------

    def bind(self, sess: ServerSession, user_id: t.Any, *, device: str | None = None) -> None:
        """Bind ``sess`` to ``user_id`` and rotate its id (see the module docs).

        :param device: for a new session that already has a fresh id and is
            about to be stored (an import): bind it without a rotation, as
            the device named by this handle, so that the parallel requests
            of one browser count as one device.
        :raises SessionLimitReached: with the ``"refuse"`` policy, when the
            user already has the most sessions allowed; nothing changed.
        """
        user = normalise_user_id(user_id)
        manager = self.manager
        sess.ensure_loaded()
        previous_user = sess.meta.get(USER)
        if device is None:
            manager.regenerate(sess)
        target = sess.next_sid if sess.rotate else sess.sid
        now = manager.clock()
        created = sess.meta.get(CREATED, now)
        same_device = previous_user == user and isinstance(sess.meta.get(HANDLE), str)
        if device is not None:
            handle = device
        elif same_device:
            handle = sess.meta[HANDLE]
        else:
            # Derived from the id being left, so that a login form submitted
            # twice from one browser session is one device, not two.
            handle = new_handle() if sess.new else handle_for(t.cast(str, sess.key))
        horizon = self._horizon(now, created)
        info = describe(request)
        if self.indexed:
            entry = IndexEntry(store_key(t.cast(str, target)), handle, created, horizon, now, info)
            settings = manager.settings
            # Over the limit, the first write refuses under either policy:
            # the dead entries are pruned, and only then does the second
            # write evict, so an expired session never costs a live one.
            write = IndexWrite(add=entry, keep=None if sess.new else sess.key,
                               limit=settings.max_sessions_per_user)
            try:
                result = self._write(user, write, now)
                if not result.added:
                    self.prune(user, now)
                    write = dataclasses.replace(
                        write, evict=settings.session_limit_policy == "evict")
                    result = self._write(user, write, now)
                if not result.added:
                    raise SessionLimitReached(t.cast(int, settings.max_sessions_per_user))
            except BaseException:
                sess.cancel_rotation()
                raise
            self._finish_evictions(user, result.evicting, now)
            if previous_user is not None and previous_user != user and not sess.new:
                sess.unindex.append((previous_user, t.cast(str, sess.key)))
        sess.set_meta(USER, user)
        sess.set_meta(HANDLE, handle)
        sess.set_meta(HORIZON, horizon)
        sess.set_meta(DEVICE, info)
        sess.indexed_as = target

    def unbind(self, sess: ServerSession) -> None:
        """Unbind ``sess`` from its user, keeping its data; the id rotates
        (a privilege change) and the old key leaves the index once the
        response is saved."""
        manager = self.manager
        sess.ensure_loaded()
        user = sess.meta.get(USER)
        if user is None:
            return
        manager.regenerate(sess)
        if self.indexed and not sess.new:
            sess.unindex.append((user, t.cast(str, sess.key)))
        for name in (USER, HANDLE, HORIZON, DEVICE):
            sess.set_meta(name, None)

    # -- hooks called by the manager and the rotation ---------------------

    def loaded(self, sess: ServerSession, now: float) -> None:
        """A bound session was loaded: refresh its horizon if it is due."""
        meta = sess.meta
        horizon = meta.get(HORIZON)
        if not self.indexed or not isinstance(horizon, (int, float)):
            return
        created = meta.get(CREATED, now)
        settings = self.manager.settings
        if horizon - now >= REFRESH_LIFETIMES * settings.max_lifetime:
            return
        fresh = self._horizon(now, created)
        if fresh <= horizon:
            return  # capped by the absolute lifetime: already covers it
        self._add(sess, t.cast(str, sess.key), keep=None, horizon=fresh, now=now)
        sess.set_meta(HORIZON, fresh)

    def before_move(self, sess: ServerSession, new_sid: str, now: float) -> None:
        """A bound session is about to move to ``new_sid`` (a rotation):
        add the new key to the index first, keeping the old one."""
        if not self.indexed or sess.indexed_as == new_sid:
            return
        user = sess.meta.get(USER)
        if user is None or not isinstance(sess.meta.get(HANDLE), str):
            return
        horizon = self._horizon(now, sess.meta.get(CREATED, now))
        self._add(sess, store_key(new_sid), keep=sess.key, horizon=horizon, now=now)
        sess.set_meta(HORIZON, horizon)
        sess.indexed_as = new_sid

    def _add(self, sess: ServerSession, key: str, *, keep: str | None, horizon: float,
             now: float) -> None:
        meta = sess.meta
        info = meta.get(DEVICE)
        entry = IndexEntry(key, meta[HANDLE], meta.get(CREATED, now), horizon, now,
                           info if isinstance(info, dict) else {})
        result = self._write(meta[USER], IndexWrite(add=entry, keep=keep), now)
        self._finish_evictions(meta[USER], result.evicting, now)

    def saved(self, sess: ServerSession) -> None:
        """After a save: remove the keys an unbinding left behind."""
        pending = sess.unindex
        if not pending:
            return
        now = self.manager.clock()
        for user, key in pending:
            self._write(user, IndexWrite(remove=frozenset((key,))), now)
        pending.clear()

    def destroyed(self, records: t.Iterable[tuple[str, Record]]) -> None:
        """Sessions were destroyed: remove their keys from their users' indexes."""
        if not self.indexed:
            return
        by_user: dict[str, set[str]] = {}
        for key, record in records:
            user = record.meta.get(USER)
            if isinstance(user, str):
                by_user.setdefault(user, set()).add(key)
                earlier = record.meta.get(PREVIOUS)
                if isinstance(earlier, str):
                    by_user[user].add(earlier)
        now = self.manager.clock()
        for user, keys in by_user.items():
            self._write(user, IndexWrite(remove=frozenset(keys)), now)

    # -- killing by store key ------------------------------------------------

    def kill(self, key: str, reason: str | None, *, user: str | None = None) -> bool:
        """Make the session stored under ``key`` unusable, for ever: it is
        replaced by a tombstone, and a key with no record yet gets one
        created, so that the record can never be written. The id it
        replaced by age dies too.

        :param reason: for ``session_destroyed``; ``None`` sends nothing
            (pruning sessions that had already expired).
        :param user: kill only if the session is bound to this user (or not
            written yet): a key can linger in an index it has left, when
            the session was bound to someone else since.
        :returns: whether a live session was destroyed.
        """
        store = self.manager.store
        now = self.manager.clock()
        tombstone = Record({}, {DEAD_FIELD: 1, CREATED: now, ISSUED: now}, now)
        if user is not None:
            current = store.read(key, now)
            if (current is not None and FORWARD_FIELD not in current.meta
                    and current.meta.get(USER) != user):
                return False
        for _ in range(3):
            outcome = store.update(key, Change(meta={DEAD_FIELD: 1}, atime=now))
            record = store.read(key, now, raw=True)
            if record is None:
                if store.create(key, tombstone):
                    return False
                continue  # created meanwhile: kill what is there now
            live = outcome is not Outcome.MISSING or DEAD_FIELD not in record.meta
            earlier = record.meta.get(PREVIOUS)
            if isinstance(earlier, str) and len(earlier) == 64:
                store.destroy(earlier)
            store.init(key, tombstone)
            if live and FORWARD_FIELD not in record.meta:
                if reason is not None:
                    signals.session_destroyed.send(self.manager.app(), sid_hash=label(key),
                                                   reason=reason)
                return True
            return False
        return False

    def _finish_evictions(self, user: str, entries: t.Sequence[IndexEntry], now: float) -> None:
        """Kill the sessions marked for eviction, then remove them."""
        if not entries:
            return
        for entry in entries:
            self.kill(entry.key, "evicted", user=user)
        self._write(user, IndexWrite(remove=frozenset(e.key for e in entries)), now)

    # -- listing and revoking ------------------------------------------------

    def _live(self, user: str, entries: t.Sequence[IndexEntry], now: float
              ) -> tuple[dict[str, tuple[IndexEntry, Record]], list[IndexEntry]]:
        """Read the sessions behind ``entries``: the live one of each handle,
        and the entries of handles with no live session that are old enough
        to be dead (not a login or rotation still being written)."""
        manager = self.manager
        records = manager.store.call("session_peek", [e.key for e in entries], now)
        live: dict[str, tuple[IndexEntry, Record]] = {}
        for entry in entries:
            record = records.get(entry.key)
            if (
                record is None or entry.evicting
                or DEAD_FIELD in record.meta or FORWARD_FIELD in record.meta
                or record.meta.get(USER) != user
            ):
                continue
            try:
                if manager.expired(record, now):
                    continue
            except CorruptRecordError:
                continue
            best = live.get(entry.handle)
            if best is None or record.meta.get(ISSUED, 0) > best[1].meta.get(ISSUED, 0):
                live[entry.handle] = (entry, record)
        dead = [e for e in entries
                if e.handle not in live and not e.evicting and now - e.added >= FRESH_ENTRY]
        return live, dead

    def prune(self, user: str, now: float) -> dict[str, tuple[IndexEntry, Record]]:
        """Read the index of ``user``, kill and remove the entries whose
        sessions are gone, and return the live sessions by handle."""
        entries = self.manager.store.call("index_read", user_key(user), now)
        live, dead = self._live(user, entries, now)
        if dead:
            for entry in dead:
                self.kill(entry.key, None)
            self._write(user, IndexWrite(remove=frozenset(e.key for e in dead)), now)
        return live

    def sessions_of(self, user_id: t.Any) -> list[DeviceSession]:
        """The live sessions of ``user_id``, newest first (see :func:`sessions_of`)."""
        self._require_index()
        user = normalise_user_id(user_id)
        now = self.manager.clock()
        current = self._current_handle(user)
        devices = []
        for handle, (entry, record) in self.prune(user, now).items():
            info = entry.info
            devices.append(DeviceSession(
                handle=handle, created=_utc(entry.created), last_seen=_utc(record.atime),
                browser=info.get("browser", ""), os=info.get("os", ""),
                address=info.get("address", ""), current=handle == current,
            ))
        devices.sort(key=lambda d: (d.created, d.handle), reverse=True)
        return devices

    def revoke(self, user_id: t.Any, select: t.Callable[[IndexEntry], bool]) -> int:
        """Kill every session of ``user_id`` whose entry ``select`` accepts,
        including those a rotation adds meanwhile (see the module docs).

        :returns: how many devices (handles) had a live session destroyed.
        """
        self._require_index()
        user = normalise_user_id(user_id)
        manager = self.manager
        killed: set[str] = set()
        devices: set[str] = set()
        for _ in range(REVOKE_ROUNDS):
            now = manager.clock()
            entries = manager.store.call("index_read", user_key(user), now)
            todo = [e for e in entries if select(e) and e.key not in killed]
            if not todo:
                break
            for entry in todo:
                if self.kill(entry.key, "revoked", user=user):
                    devices.add(entry.handle)
                killed.add(entry.key)
            self._write(user, IndexWrite(remove=frozenset(e.key for e in todo)), now)
        return len(devices)

    def _current_handle(self, user: str) -> str | None:
        """The handle of the current request's session if it is bound to ``user``."""
        if not has_request_context() or current_app.extensions.get("gosession") is not self.manager:
            return None
        from .session import ServerSession

        sess = session._get_current_object()  # type: ignore[attr-defined]
        if not isinstance(sess, ServerSession):
            return None
        sess.ensure_loaded()
        handle = sess.meta.get(HANDLE)
        return handle if sess.meta.get(USER) == user and isinstance(handle, str) else None


def new_handle() -> str:
    """A fresh public device handle: 12 URL-safe characters (72 random bits)."""
    return secrets.token_urlsafe(9)


def handle_for(key: str) -> str:
    """The public device handle of a first binding of the session stored
    under ``key``: 12 URL-safe characters of a SHA-256 of the key (itself a
    hash of the id), so it opens nothing and says nothing about the id."""
    digest = hashlib.sha256(b"gosession-handle\x00" + key.encode()).digest()
    return base64.urlsafe_b64encode(digest[:9]).decode()


# -- the public functions --------------------------------------------------------


def _users(app: t.Any = None) -> Users:
    manager: Manager = (app or current_app).extensions["gosession"]
    return manager.users


def login_user_session(user_id: t.Any) -> None:
    """Bind the current session to ``user_id``, as a login: the session id
    rotates (a privilege change), the session joins the user's index, and
    ``session.user_id`` tells the user from now on.

    Called by Flask-Login's ``login_user`` when ``GOSESSION_FLASK_LOGIN`` is
    on. Costs one store round trip more than the rotation alone.

    :raises SessionLimitReached: if ``GOSESSION_MAX_SESSIONS_PER_USER`` is
        reached and the policy is ``"refuse"``; the session is unchanged.
    """
    users = _users()
    users.bind(session._get_current_object(), user_id)  # type: ignore[attr-defined]


def logout_user_session() -> None:
    """Unbind the current session from its user but keep its data (the id
    rotates). To sign out completely, use :func:`~flask_gosession.destroy`,
    which also removes the session from the user's index."""
    _users().unbind(session._get_current_object())  # type: ignore[attr-defined]


def sessions_of(user_id: t.Any, *, app: t.Any = None) -> list[DeviceSession]:
    """The live sessions of ``user_id``, newest first: never an expired,
    revoked or rotated-out one, and each device once.

    Works in a request (``current`` marks its own session) or in an app
    context (the CLI, a task). Prunes the user's index of dead entries.
    :raises UserIndexUnsupported: on Memcached.
    """
    return _users(app).sessions_of(user_id)


def revoke_session(user_id: t.Any, handle: str, *, app: t.Any = None) -> bool:
    """Sign out one device of ``user_id``: every id of the session with
    this handle stops working now, ``session_destroyed`` fires with reason
    ``"revoked"``, and the device gets a fresh, empty session on its next
    request.

    :returns: whether a live session was signed out.
    :raises UserIndexUnsupported: on Memcached.
    """
    return _users(app).revoke(user_id, lambda entry: entry.handle == handle) > 0


def revoke_user(user_id: t.Any, *, keep_current: bool = False, keep: str | None = None,
                app: t.Any = None) -> int:
    """Sign out every session of ``user_id`` ("sign out everywhere", after
    a password change or a compromise). When this returns, no session
    bound before the call works, even one a concurrent request was saving.

    :param keep_current: keep the current request's session (sign out
        every *other* device); it must be bound to ``user_id``.
    :param keep: the handle of a session to keep instead (the CLI's
        ``--others-of``).
    :returns: how many devices were signed out.
    :raises UserIndexUnsupported: on Memcached.
    """
    users = _users(app)
    if keep_current:
        keep = users._current_handle(normalise_user_id(user_id))
        if keep is None:
            raise LookupError("keep_current: the current session is not bound to this user")
    return users.revoke(user_id, lambda entry: entry.handle != keep)
