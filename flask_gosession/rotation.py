"""Rotation and forwarding: moving a session to a new id, following a
rotated-out id, and destroying or revoking a session with every id that
leads to it.

How a rotation by age works (the protocol every function here relies on):

1. **Mark.** The old record gets a *forward*: the new id sealed with the
   old one (:func:`~flask_gosession.ids.seal_forward`), the end of its grace
   window and the time of the mark. The mark is a provider update, so it is
   atomic, the first of two concurrent rotations wins, and from then on the
   old record is frozen: every later update to it answers ``FORWARDED``.
2. **Build.** The new record is the old one's final data (plus the rotating
   request's change) under the new id, written with ``session_create``.
   Any request that follows a fresh mark and finds the new record missing
   builds it the same way instead of waiting: whoever creates it first
   wins, and the rotating request then merges its change in. So no request
   ever waits on a forward.
3. **Check.** Whoever created the new record reads the old one again. If it
   is gone, a logout destroyed it meanwhile, and the new record is
   destroyed too: a logout racing a rotation never leaves the user logged
   in under the new id.

A rotation by privilege (login) marks the old record with a forward that
has no grace window: nobody follows it, and it lives only until the new
record exists, when the old record is deleted.

Destroying (:meth:`Rotation.destroy_chain`) first turns each record into a
*tombstone* with an update: an update cannot be applied to a record being
destroyed, so no rotation can mark it afterwards, and one that marked it
before is found by the walk and destroyed too. Then the record is deleted.

The forward chain is walked in one place, :meth:`Rotation.walk`, which
judges the grace window on every hop; loading, saving and destroying all
use it.
"""
from __future__ import annotations

import logging
import typing as t
from dataclasses import dataclass

from . import signals
from .errors import CorruptRecordError, RecordTooLarge
from .ids import label, open_forward, open_token, seal_forward, seal_token, store_key
from .meta import CREATED, FORWARD_AT, FORWARD_UNTIL, ISSUED, PREVIOUS, TOKEN, USER
from .providers.base import DEAD_FIELD, FORWARD_FIELD, Change, Outcome, Record, apply_change

if t.TYPE_CHECKING:
    from .manager import Manager
    from .session import ServerSession

log = logging.getLogger("flask_gosession")

#: The longest forward chain a request follows: each age rotation adds
#: one hop while the previous id is in its grace window, and the grace
#: window is shorter than the rotation age.
MAX_HOPS = 4
#: The longest chain destroying walks. Rotated-out ids stay stored (for
#: reuse detection) until they are idle for ``GOSESSION_MAX_LIFETIME``, so
#: an active session's chain is about ``MAX_LIFETIME / ROTATE_AFTER`` long.
MAX_CHAIN = 1000
#: A mark younger than this (seconds) may still lack its target because the
#: rotating request has not written it yet; its followers then build it.
#: Older marks whose target is missing lead nowhere.
FRESH_MARK = 5.0

_FORWARD_FIELDS = (FORWARD_FIELD, FORWARD_UNTIL, FORWARD_AT)


class Reused(Exception):
    """A rotated-out id was presented after its grace window."""

    def __init__(self, key: str, target: str) -> None:
        super().__init__(label(key))
        self.key = key
        self.target = target


class Moved(Exception):
    """The id was moved by a privilege rotation: it leads nowhere."""


@dataclass(slots=True)
class Hop:
    """One record of a forward chain: its id, store key and record
    (``None`` when missing). A consumer of :meth:`Rotation.walk` may replace
    :attr:`record` with a fresher read before the walk goes on from it."""

    sid: str
    key: str
    record: Record | None


@dataclass(frozen=True, slots=True)
class Forward:
    """A record's forward mark, opened with the id that names the record."""

    target: str
    #: End of the grace window; ``None`` for a privilege move.
    until: float | None
    marked: float


def forward_of(sid: str, record: Record) -> Forward:
    """The forward mark of ``record`` (which must carry one).

    :raises CorruptRecordError: for a mark that is not one we wrote.
    """
    meta = record.meta
    target = open_forward(sid, meta.get(FORWARD_FIELD))
    until, marked = meta.get(FORWARD_UNTIL), meta.get(FORWARD_AT)
    if (
        target is None
        or not isinstance(marked, (int, float))
        or (until is not None and not isinstance(until, (int, float)))
    ):
        raise CorruptRecordError("bad forwarding record")
    return Forward(target, None if until is None else float(until), float(marked))


def reseal(meta: dict[str, t.Any], old_sid: str, new_sid: str) -> None:
    """Re-seal the token in ``meta`` (sealed under ``old_sid``) for ``new_sid``."""
    token = open_token(old_sid, meta.get(TOKEN))
    if token is None:
        meta.pop(TOKEN, None)
    else:
        meta[TOKEN] = seal_token(new_sid, token)


def moved_record(record: Record, old_sid: str, new_sid: str, issued: float,
                 *, previous: str | None) -> Record:
    """``record`` (frozen under ``old_sid``) as it is stored under ``new_sid``.

    :param previous: the store key the new record remembers as the id it
        replaced (so that destroying it destroys that id too), or ``None``.
    """
    meta = {k: v for k, v in record.meta.items() if k not in _FORWARD_FIELDS}
    meta[ISSUED] = issued
    if previous is None:
        meta.pop(PREVIOUS, None)
    else:
        meta[PREVIOUS] = previous
    reseal(meta, old_sid, new_sid)
    return Record(dict(record.data), meta, record.atime)


class Rotation:
    """Rotation, forwarding and revocation for one manager."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager

    # -- moving a record (re-sealed for its new id) ------------------------------

    def moved(self, record: Record, old_sid: str, new_sid: str, issued: float,
              *, previous: str | None) -> Record:
        """:func:`moved_record`, re-sealed for ``new_sid`` when encryption is
        on: nothing of the new record is sealed under the old id's key."""
        moved = moved_record(record, old_sid, new_sid, issued, previous=previous)
        return self.manager.encryption.move(moved, old_sid, store_key(old_sid),
                                            new_sid, store_key(new_sid))

    def session_meta(self, session: ServerSession, meta: dict[str, t.Any]) -> dict[str, t.Any]:
        """The meta ``session`` keeps after moving to a record stored with
        ``meta`` (sealed fields in clear)."""
        return self.manager.encryption.session_meta(session, meta)

    # -- the one walk of the forward chain -----------------------------------

    def walk(self, sid: str, key: str, record: Record | None, now: float, *,
             judge: bool = True, build: bool = True, limit: int = MAX_HOPS) -> t.Iterator[Hop]:
        """Yield the hops of the forward chain that starts at ``sid``.

        The first hop is ``(sid, key, record)`` as given. After a hop whose
        record carries a forward, the next hop is its target, read from the
        store (and built from the forwarding record if the mark is fresh and
        the target not written yet). The walk ends after a hop whose record
        is missing or carries no forward.

        :param judge: check each forward: one past its grace window raises
            :class:`Reused`, a privilege move raises :class:`Moved`.
            Destroying walks without judging.
        :param build: build a missing target of a fresh mark (destroying
            does not).
        :param limit: how many forwards to follow at most.
        :raises CorruptRecordError: for a bad mark or a chain longer than
            ``limit``.
        """
        for _ in range(limit + 1):
            hop = Hop(sid, key, record)
            yield hop
            record = hop.record
            if record is None or FORWARD_FIELD not in record.meta:
                return
            forward = forward_of(sid, record)
            if judge:
                if forward.until is None:
                    raise Moved(label(key))
                if now > forward.until:
                    raise Reused(key, forward.target)
            target, target_key = forward.target, store_key(forward.target)
            if build:
                record = self._read_target(sid, key, record, forward, target_key, now)
            else:
                record = self.manager.store.read(target_key, now)
            sid, key = target, target_key
        raise CorruptRecordError("forward chain too long")

    def resolve(self, sid: str, key: str, record: Record | None, now: float) -> Hop:
        """The last hop of the chain from ``sid``, judging every forward."""
        last = Hop(sid, key, record)
        for last in self.walk(sid, key, record, now):  # noqa: B007 (the last one is kept)
            pass
        return last

    def live_end(self, sid: str, key: str, now: float) -> Hop | None:
        """The live session the id ``sid`` leads to now (read afresh), or
        ``None`` if it leads nowhere: missing, moved by privilege, corrupt,
        or past its grace window, which is reuse and handled as such."""
        try:
            last = self.resolve(sid, key, self.manager.store.read(key, now), now)
        except Reused as reuse:
            self.reuse_detected(reuse)
            return None
        except (Moved, CorruptRecordError):
            return None
        return last if last.record is not None else None

    def _read_target(self, sid: str, key: str, record: Record, forward: Forward,
                     target_key: str, now: float) -> Record | None:
        """Read the target of a forward; build it if the mark is fresh and
        the rotating request has not written it yet (step 2 above)."""
        manager = self.manager
        target = manager.store.read(target_key, now)
        # A mark written after this request read its clock (another request
        # rotated meanwhile, or another host's clock is ahead) is fresh too:
        # treating it as old would log the client out. Building from it is
        # safe whatever its age, as _create_checked undoes a build whose
        # source a logout destroyed.
        if (
            target is not None
            or forward.until is None
            or not now - forward.marked < FRESH_MARK
        ):
            return target
        built = self.moved(record, sid, forward.target, forward.marked, previous=key)
        if self._create_checked(key, target_key, built):
            return built
        return manager.store.read(target_key, now)

    def _create_checked(self, old_key: str, new_key: str, record: Record) -> bool:
        """Create the moved record, then check that the old one still exists
        (step 3 above); undo the creation if it was destroyed meanwhile.

        :returns: whether this call created the record and it stands.
        """
        manager = self.manager
        if not manager.store.create(new_key, record):
            return False
        if manager.store.read(old_key, manager.clock()) is None:
            manager.store.destroy(new_key)
            return False
        return True

    # -- loading ----------------------------------------------------------------

    def follow(self, sid: str, key: str, record: Record, now: float,
               tokens: list[str]) -> Hop | None:
        """Follow a rotated-out id to the session it moved to.

        Inside the grace window the request continues on the new session,
        and the tokens of the ids it passed through are added to ``tokens``
        (unless tokens are one-time). After it, the id is treated as stolen.
        :returns: the live hop, or ``None`` if the id leads nowhere.
        """
        one_time = self.manager.settings.token_one_time
        try:
            last = Hop(sid, key, record)
            for last in self.walk(sid, key, record, now):
                if not one_time and last.record is not None and FORWARD_FIELD in last.record.meta:
                    token = open_token(last.sid, last.record.meta.get(TOKEN))
                    if token is not None:
                        tokens.append(token)
        except Reused as reuse:
            self.reuse_detected(reuse)
            return None
        except Moved:
            return None
        except CorruptRecordError as err:
            self.manager.store.drop_corrupt(key, err)
            return None
        return last if last.record is not None else None

    # -- saving -------------------------------------------------------------------

    def save_forwarded(self, session: ServerSession, now: float) -> Hop | None:
        """Re-apply this request's change to the session its id moved to.

        The request loaded the session before another request rotated it.
        Inside the grace window, the change is merged into the current
        session and the client is handed its id. Past the window the save is
        never applied: it counts as reuse of a rotated-out id.

        :returns: the hop the change was applied to, or ``None`` if it was
            not applied (the session is gone, or was moved by privilege).
        """
        manager = self.manager
        sid, key = session.sid, t.cast(str, session.key)
        for _ in range(MAX_HOPS):
            last = self.live_end(sid, key, now)
            if last is None:
                return None
            outcome = manager.store.update(last.key, manager.change_for(session, last.sid, now))
            if outcome is Outcome.APPLIED:
                return last
            if outcome is not Outcome.FORWARDED:
                return None
            # Rotated again since the walk read it: walk again.
        return None

    def rotate(self, session: ServerSession, now: float) -> bool:
        """Move ``session`` to :attr:`~ServerSession.next_sid`, keeping its
        data and this request's change.

        :returns: ``True`` if the session now lives under the new id (the
            session was moved), ``False`` if it no longer exists.
        """
        manager = self.manager
        privilege = session.rotate == "privilege"
        new_sid = t.cast(str, session.next_sid)
        new_key = store_key(new_sid)
        old_sid, old_key = session.sid, t.cast(str, session.key)
        # A bound session's new key joins the user's index before anything
        # can create its record (see flask_gosession.users).
        manager.users.before_move(session, new_sid, now)
        for _ in range(MAX_HOPS):
            mark: dict[str, t.Any] = {FORWARD_FIELD: seal_forward(old_sid, new_sid), FORWARD_AT: now}
            if not privilege:
                mark[FORWARD_UNTIL] = now + manager.settings.rotate_grace
            # The version this request read (first pass only): on memcached
            # the mark is then one cas.
            outcome = manager.store.update(
                old_key, Change(meta=mark, atime=now, base=session.take_version()))
            if outcome is Outcome.APPLIED:
                break
            if outcome is not Outcome.FORWARDED:
                return False  # destroyed meanwhile
            # Rotated by another request first. By age: that rotation
            # carries this one's purpose, so just save into it. By
            # privilege: the id it moved to must be rotated in turn, or the
            # holder of the old id could follow it.
            if not privilege:
                hop = self.save_forwarded(session, now)
                if hop is None:
                    return False
                session.moved_to(hop.sid, hop.key, session.meta)
                return True
            end = self.live_end(old_sid, old_key, now)
            if end is None:
                return False
            old_sid, old_key = end.sid, end.key
        else:
            return False
        frozen = manager.store.read(old_key, now)
        if frozen is None:
            return False
        change = manager.change_for(session, old_sid, now)
        apply_change(frozen, change)
        moved = self.moved(frozen, old_sid, new_sid, now,
                           previous=None if privilege else old_key)
        if privilege:
            previous = frozen.meta.get(PREVIOUS)
            if not manager.store.create(new_key, moved):
                return False  # killed before it was written (an eviction): never overwrite that
            if manager.store.read(old_key, now) is None:  # a logout won the race
                manager.store.destroy(new_key)
                return False
            # The old record is cut down to its forward, which stays until
            # it is idle for MAX_LIFETIME: nobody follows a privilege move,
            # but a logout that loaded the old id before this login finished
            # still finds the logged-in session through it. (Replacing it
            # after a concurrent logout deleted it only leaves a forward to
            # a destroyed session, which leads nowhere.) The id it replaced
            # by age dies now.
            stub = {k: v for k, v in frozen.meta.items() if k in (FORWARD_FIELD, FORWARD_AT, CREATED)}
            stub[ISSUED] = now
            manager.store.init(old_key, Record({}, stub, now))
            if isinstance(previous, str) and len(previous) == 64:
                manager.store.destroy(previous)
        elif not self._create_moved(session, old_sid, old_key, new_sid, new_key, moved, now):
            # A follower built the new record first (or a logout won): merge
            # this request's change into whatever stands there now.
            try:
                outcome = manager.store.update(new_key, manager.change_for(session, new_sid, now))
            except RecordTooLarge as err:
                session.moved_to(new_sid, new_key, self.session_meta(session, moved.meta))
                err.session_moved = True
                raise
            if outcome is not Outcome.APPLIED:
                return False
        session.moved_to(new_sid, new_key, self.session_meta(session, moved.meta))
        signals.session_rotated.send(manager.app(), old=label(old_key), new=label(new_key),
                                     reason="privilege" if privilege else "age")
        return True

    def _create_moved(self, session: ServerSession, old_sid: str, old_key: str,
                      new_sid: str, new_key: str, moved: Record, now: float) -> bool:
        """Steps 2 and 3 for the rotating request itself.

        If this request's change makes the record too large, the session
        still moves, with its data as stored (the old record is marked
        already, so it must move), and the error goes on to become a 413
        that hands the client the new id.
        """
        try:
            return self._create_checked(old_key, new_key, moved)
        except RecordTooLarge as err:
            stored = self.manager.store.read(old_key, now)
            if stored is not None:
                unchanged = self.moved(stored, old_sid, new_sid, now, previous=old_key)
                if self._create_checked(old_key, new_key, unchanged):
                    session.moved_to(new_sid, new_key, self.session_meta(session, unchanged.meta))
                    err.session_moved = True
            raise

    # -- destroying and revoking ------------------------------------------------

    def destroy_chain(self, sid: str, key: str, reason: str, *,
                      previous: str | None = None) -> None:
        """Destroy the session ``sid``, every session it forwards to (by age
        or by privilege), and the id each replaced by age.

        After this returns, none of these ids works, whatever ran
        concurrently (see the module docs). A bad forward ends the walk
        there, with a warning; everything before it is destroyed.
        :param previous: the store key the first record replaced, if known.
        """
        manager = self.manager
        store = manager.store
        now = manager.clock()
        tombstone = Change(meta={DEAD_FIELD: 1}, atime=now)
        hops = self.walk(sid, key, None, now, judge=False, build=False, limit=MAX_CHAIN)
        bound: list[tuple[str, Record]] = []
        try:
            for hop in hops:
                outcome = store.update(hop.key, tombstone)
                record = store.read(hop.key, now, raw=True)
                hop.record = record if outcome is Outcome.FORWARDED else None
                if record is not None and USER in record.meta:
                    bound.append((hop.key, record))
                earlier = record.meta.get(PREVIOUS) if record is not None else previous
                # The id it replaced goes first: while this record's tombstone
                # stands, nobody can rebuild it from that id's forward, and
                # once both are gone, a rebuild finds its source gone and
                # undoes itself.
                if isinstance(earlier, str) and len(earlier) == 64:
                    store.destroy(earlier)
                store.destroy(hop.key)
                previous = None
                if outcome is not Outcome.MISSING:
                    signals.session_destroyed.send(manager.app(), sid_hash=label(hop.key), reason=reason)
        except CorruptRecordError as err:
            log.warning("stopped destroying the forward chain of %s: %s", label(key), err)
        if bound:
            manager.users.destroyed(bound)  # their keys leave the index only now

    def reuse_detected(self, reuse: Reused) -> None:
        """A rotated-out id came back after its grace window: signal it and,
        with ``GOSESSION_REVOKE_ON_REUSE``, revoke the session it led to."""
        manager = self.manager
        revoked = manager.settings.revoke_on_reuse
        if revoked:
            self.destroy_chain(reuse.target, store_key(reuse.target), "revoked")
            manager.store.destroy(reuse.key)
        signals.hijack_suspected.send(manager.app(), sid_hash=label(reuse.key),
                                      reason="reuse", revoked=revoked)
        log.warning("rotated-out session id %s reused after its grace window%s",
                    label(reuse.key), "; session revoked" if revoked else "")
