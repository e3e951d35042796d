"""The Manager: one per app. Issues ids, loads, saves, rotates and destroys
sessions, and schedules garbage collection.

It is the Go design's ``Manager`` with its flaws fixed (see DESIGN in the
README): unknown ids are never adopted, rotation keeps the data, garbage
collection runs every ``GOSESSION_GC_INTERVAL`` *seconds*, and saves carry
only the keys a request changed.
"""
from __future__ import annotations

import enum
import hashlib
import logging
import os
import threading
import time
import typing as t

from flask import current_app, request

from . import signals
from .errors import CorruptRecordError, ProviderError
from .meta import AGENT, CREATED, FORWARD_UNTIL, ISSUED, PREVIOUS, TOKEN
from .ids import is_valid_sid, label, new_sid, new_token, open_forward, seal_forward, store_key
from .providers.base import FORWARD_FIELD, Change, Outcome, Provider, Record, apply_change
from .serializers import get_serializer, tag, untag
from .session import ServerSession

if t.TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger("flask_gosession")

_MAX_HOPS = 4


class Cookie(enum.Enum):
    """What the response must do with the session cookie."""

    #: No stored session and nothing to remove: leave the cookie alone.
    NONE = "none"
    #: The stored session keeps its id: refresh the cookie only if Flask's
    #: ``should_set_cookie`` says so (permanent + refresh each request).
    KEEP = "keep"
    #: Send the cookie: the session is new or its id changed.
    SET = "set"
    #: Remove the cookie: the session was destroyed, cleared or refused.
    DELETE = "delete"


class Manager:
    """Per-app session manager, stored at ``app.extensions["gosession"]``.

    :param provider: the store.
    :param settings: the validated core settings.
    :param clock: time source in seconds; replace it in tests through
        :attr:`clock` (the provider follows).
    """

    def __init__(self, provider: Provider, settings: Settings,
                 clock: t.Callable[[], float] = time.time) -> None:
        self.provider = provider
        self.settings = settings
        provider.serializer = get_serializer(settings.serializer)
        provider.max_lifetime = settings.max_lifetime
        self._clock = clock
        provider.clock = clock
        self._tag = tag
        self._untag = untag
        self._down = False
        self._gc_lock = threading.Lock()
        self._gc_pid: int | None = None
        self._gc_stop = threading.Event()
        self._gc_thread: threading.Thread | None = None

    # -- clock ------------------------------------------------------------

    @property
    def clock(self) -> t.Callable[[], float]:
        """The time source shared with the provider."""
        return self._clock

    @clock.setter
    def clock(self, value: t.Callable[[], float]) -> None:
        self._clock = value
        self.provider.clock = value

    # -- store calls, with outage logging ---------------------------------

    def _store(self, method: t.Callable[..., t.Any], *args: t.Any) -> t.Any:
        try:
            result = method(*args)
        except ProviderError as err:
            if not self._down:
                self._down = True
                log.error("session store %s failed: %s", type(self.provider).__name__, err)
            else:
                log.debug("session store still failing: %s", err)
            raise
        if self._down:
            self._down = False
            log.warning("session store %s recovered", type(self.provider).__name__)
        return result

    def _read(self, key: str, now: float) -> Record | None:
        """Read a record; a corrupt one is logged, removed and reads as None."""
        try:
            return self._store(self.provider.session_read, key, now)
        except CorruptRecordError as err:
            self._drop_corrupt(key, err)
            return None

    def _drop_corrupt(self, key: str, err: Exception) -> None:
        log.warning("discarding corrupt session record %s: %s", label(key), err)
        self._store(self.provider.session_destroy, key)

    # -- opening and loading -------------------------------------------------

    def open(self, presented: str | None = None, via_url: bool = False,
             *, request: t.Any = None) -> ServerSession:
        """A lazy session for the id the client presented. No store call.

        :param request: instead of ``presented``, the request whose cookie
            names the session; the cookie is then read on first use.
        """
        if self._gc_pid != os.getpid() and self.settings.gc_interval:
            self.start_gc()
        return ServerSession(self, presented, via_url, request=request)

    def url_sid(self, session: ServerSession) -> str | None:
        """The id that URLs built during this request must carry, or None.

        Used in URL-rewrite mode for clients that sent no cookie: a session
        that exists (or will be stored by this request) is named by the id
        it will have once the response is saved, so a rotation decided in
        this request never leaves links to the old id in the page.
        """
        if not session.loaded and session.presented is None:
            return None
        session.ensure_loaded()
        if session.new and not dict.__len__(session) and not session.pinned:
            return None
        return session.next_sid or session.sid

    def assign_new_id(self, session: ServerSession) -> None:
        """Give a new session a fresh id (never the one presented)."""
        sid = new_sid()
        session.set_identity(sid, store_key(sid))

    def load(self, session: ServerSession) -> None:
        """Fill ``session`` from the store, or start it empty.

        Strict mode: an id that is malformed, unknown, expired, corrupt,
        bound to another client or rotated out beyond its grace window is
        refused, and the session starts new with a fresh id.
        """
        presented = session.presented
        if presented is None:
            return
        if not is_valid_sid(presented):
            session.refused = True
            return
        now = self._clock()
        key = store_key(presented)
        record = self._read(key, now)
        if record is None:
            session.refused = True
            return
        sid, tokens = presented, []
        if FORWARD_FIELD in record.meta:
            followed = self._follow(presented, key, record, now, tokens)
            if followed is None:
                session.refused = True
                return
            sid, key, record = followed
            session.reissue = True
        try:
            expired = self._expiry(record, now)
            if expired:
                self._store(self.provider.session_destroy, key)
                signals.session_expired.send(self._app(), sid_hash=label(key), reason=expired)
                session.refused = True
                return
            if self.settings.bind_user_agent and record.meta.get(AGENT) != self._agent():
                signals.hijack_suspected.send(
                    self._app(), sid_hash=label(key), reason="user-agent", revoked=False
                )
                session.refused = True
                return
            values = {k: self._untag(v) for k, v in record.data.items()}
        except CorruptRecordError as err:
            self._drop_corrupt(key, err)
            session.refused = True
            return
        except Exception as err:  # untag() of hostile data raises anything
            self._drop_corrupt(key, err)
            session.refused = True
            return
        session.fill(values)
        session.meta = record.meta
        session.atime = record.atime
        session.new = False
        session.set_identity(sid, key)
        token = record.meta.get(TOKEN)
        if isinstance(token, str):
            tokens.insert(0, token)
        session.accepted_tokens = tuple(tokens)
        rotate_after = self.settings.rotate_after
        if rotate_after is not None and now - record.meta[ISSUED] >= rotate_after:
            session.rotate = "age"
            session.next_sid = new_sid()
            if token is not None:
                # Rotate the token now, so a form rendered by this request
                # already carries the token of the new id.
                session.set_meta(TOKEN, new_token())

    def _expiry(self, record: Record, now: float) -> str | None:
        meta = record.meta
        created, issued = meta.get(CREATED), meta.get(ISSUED)
        if not isinstance(created, (int, float)) or not isinstance(issued, (int, float)):
            raise CorruptRecordError("record lacks its creation times")
        if now - record.atime >= self.settings.max_lifetime:
            return "idle"
        absolute = self.settings.absolute_lifetime
        if absolute is not None and now - created >= absolute:
            return "absolute"
        return None

    def _follow(self, sid: str, key: str, record: Record, now: float,
                tokens: list[str]) -> tuple[str, str, Record] | None:
        """Follow a rotated-out id to the session it moved to.

        Inside the grace window the request continues on the new session
        (the tokens of the ids it passed through stay acceptable). After
        it, the id is treated as stolen.
        """
        for _ in range(_MAX_HOPS):
            if FORWARD_FIELD not in record.meta:
                return sid, key, record
            target = open_forward(sid, record.meta[FORWARD_FIELD])
            until = record.meta.get(FORWARD_UNTIL)
            if target is None or not isinstance(until, (int, float)):
                self._drop_corrupt(key, CorruptRecordError("bad forwarding record"))
                return None
            if now > until:
                self._reuse_detected(sid, key, target)
                return None
            token = record.meta.get(TOKEN)
            if isinstance(token, str):
                tokens.append(token)
            sid, key = target, store_key(target)
            next_record = _patiently(lambda: self._read(key, now))
            if next_record is None:
                return None
            record = next_record
        return None

    def _reuse_detected(self, sid: str, key: str, target: str) -> None:
        revoked = self.settings.revoke_on_reuse
        if revoked:
            self._destroy_chain(target)
            self._store(self.provider.session_destroy, key)
        signals.hijack_suspected.send(self._app(), sid_hash=label(key), reason="reuse", revoked=revoked)
        log.warning("rotated-out session id %s reused after its grace window%s",
                    label(key), "; session revoked" if revoked else "")

    def _destroy_chain(self, sid: str) -> None:
        """Destroy the session ``sid`` and every session it forwards to."""
        now = self._clock()
        for _ in range(_MAX_HOPS):
            key = store_key(sid)
            record = self._read(key, now)
            self._store(self.provider.session_destroy, key)
            signals.session_destroyed.send(self._app(), sid_hash=label(key), reason="revoked")
            if record is None or FORWARD_FIELD not in record.meta:
                return
            target = open_forward(sid, record.meta[FORWARD_FIELD])
            if target is None:
                return
            sid = target

    # -- saving ---------------------------------------------------------------

    def save(self, session: ServerSession) -> Cookie:
        """Write what the request changed, and say what the cookie must do.

        Untouched sessions cost nothing; unmodified ones at most a touch.
        """
        if not session.loaded:
            return Cookie.NONE
        if session.discard:
            return Cookie.KEEP if not session.new else Cookie.NONE
        now = self._clock()
        try:
            return self._save(session, now)
        except CorruptRecordError as err:
            # The record was corrupted while this request ran: it is
            # dropped like any corrupt record, and the client starts over.
            if session.key is not None:
                self._drop_corrupt(session.key, err)
            return Cookie.DELETE
        finally:
            session.reset()

    def _save(self, session: ServerSession, now: float) -> Cookie:
        """The body of :meth:`save` for a loaded, non-discarded session."""
        if session.new:
            return self._save_new(session, now)
        if session.deleted_keys and not dict.__len__(session) and not session.pinned:
            self._store(self.provider.session_destroy, t.cast(str, session.key))
            signals.session_destroyed.send(self._app(), sid_hash=label(t.cast(str, session.key)), reason="cleared")
            return Cookie.DELETE
        if session.rotate:
            return self._rotate(session, now)
        if session.dirty:
            return self._update(session, self._change(session, now), now)
        if not self.provider.touches_on_read and now - session.atime >= self.settings.refresh_interval:
            self._store(self.provider.session_touch, session.key, now)
        return Cookie.SET if session.reissue else Cookie.KEEP

    def _save_new(self, session: ServerSession, now: float) -> Cookie:
        if not dict.__len__(session) and not session.pinned:
            return Cookie.DELETE if session.refused else Cookie.NONE
        if not session.has_sid:
            self.assign_new_id(session)
        key = t.cast(str, session.key)
        meta = dict(session.meta)
        meta[CREATED] = now
        meta[ISSUED] = now
        if self.settings.bind_user_agent:
            meta[AGENT] = self._agent()
        self._store(self.provider.session_init, key, Record(self._tag_all(session), meta, now))
        session.new = False
        session.meta = meta
        session.atime = now
        signals.session_created.send(self._app(), sid_hash=label(key))
        return Cookie.SET

    def _tag_all(self, session: ServerSession) -> dict[str, t.Any]:
        tag = self._tag
        return {k: tag(v) for k, v in dict.items(session)}

    def _change(self, session: ServerSession, now: float) -> Change:
        tag = self._tag
        return Change(
            set={k: tag(dict.__getitem__(session, k)) for k in session.changed_keys()},
            deleted=frozenset(session.deleted_keys),
            meta=dict(session.meta_changes),
            atime=now,
        )

    def _update(self, session: ServerSession, change: Change, now: float) -> Cookie:
        key = t.cast(str, session.key)
        outcome = self._store(self.provider.session_update, key, change)
        if outcome is Outcome.APPLIED:
            return Cookie.SET if session.reissue else Cookie.KEEP
        if outcome is Outcome.FORWARDED:
            return self._update_forwarded(session, change, now)
        # Destroyed by a concurrent request (logout): never bring it back.
        return Cookie.DELETE

    def _update_forwarded(self, session: ServerSession, change: Change, now: float) -> Cookie:
        """The id was rotated by age while this request ran: save into the
        session it moved to, and hand the client the new id."""
        sid, key = session.sid, t.cast(str, session.key)
        for _ in range(_MAX_HOPS):
            record = self._read(key, now)
            if record is None:
                return Cookie.DELETE
            if FORWARD_FIELD not in record.meta:
                break
            target = open_forward(sid, record.meta[FORWARD_FIELD])
            if target is None:
                return Cookie.DELETE
            sid, key = target, store_key(target)
            outcome = _patiently(
                lambda: self._store(self.provider.session_update, key, change),
                missing=Outcome.MISSING,
            )
            if outcome is Outcome.APPLIED:
                session.set_identity(sid, key)
                return Cookie.SET
            if outcome is Outcome.MISSING:
                return Cookie.DELETE
        return Cookie.DELETE

    # -- rotation and destruction ------------------------------------------

    def regenerate(self, session: ServerSession) -> None:
        """Move the session to a new id when it is saved; the old id dies.

        For login and privilege changes: an id planted by an attacker must
        never gain the new privileges, so there is no grace window. The
        token changes at once, so forms rendered after this call carry it.
        """
        session.sid  # loads, and gives a new session its id
        if not session.new:
            session.rotate = "privilege"
            session.next_sid = new_sid()
        if session.meta.get(TOKEN) is not None:
            session.set_meta(TOKEN, new_token())

    def _rotate(self, session: ServerSession, now: float) -> Cookie:
        """Move the session to :attr:`ServerSession.next_sid`.

        By age, the old record is first marked as forwarding (atomically;
        the first of two concurrent rotations wins). From then on it is
        frozen: every later update to it is forwarded. Its data, now final,
        plus this request's change, becomes the new record. Updates
        forwarded before the new record exists wait for it (bounded).

        By privilege, the new record is a copy and the old id dies at once.
        """
        reason = session.rotate
        old_sid, old_key = session.sid, t.cast(str, session.key)
        sid = session.next_sid or new_sid()
        session.next_sid = None
        key = store_key(sid)
        change = self._change(session, now)
        if reason == "privilege":
            meta = {k: v for k, v in session.meta.items()
                    if k not in (FORWARD_FIELD, FORWARD_UNTIL, PREVIOUS)}
            meta[ISSUED] = now
            self._store(self.provider.session_init, key, Record(self._tag_all(session), meta, now))
            self._store(self.provider.session_destroy, old_key)
            self._destroy_previous(session.meta)
        else:
            mark = Change(meta={FORWARD_FIELD: seal_forward(old_sid, sid),
                                FORWARD_UNTIL: now + self.settings.rotate_grace}, atime=now)
            outcome = self._store(self.provider.session_update, old_key, mark)
            if outcome is Outcome.MISSING:
                return Cookie.DELETE
            if outcome is Outcome.FORWARDED:  # another request rotated first
                return self._update_forwarded(session, change, now)
            record = self._read(old_key, now)
            if record is None:
                return Cookie.DELETE
            apply_change(record, change)
            meta = record.meta
            for name in (FORWARD_FIELD, FORWARD_UNTIL):
                meta.pop(name, None)
            meta[ISSUED] = now
            meta[PREVIOUS] = old_key
            self._store(self.provider.session_init, key, record)
        session.meta = meta
        session.set_identity(sid, key)
        signals.session_rotated.send(self._app(), old=label(old_key), new=label(key), reason=reason)
        return Cookie.SET

    def _destroy_previous(self, meta: dict[str, t.Any]) -> None:
        """Destroy the record of the id this session replaced by age, whose
        forwarding would otherwise lead to a session that no longer exists."""
        previous = meta.get(PREVIOUS)
        if isinstance(previous, str) and len(previous) == 64:
            self._store(self.provider.session_destroy, previous)

    def destroy(self, session: ServerSession) -> None:
        """Remove the session from the store now and start an empty one.

        The cookie is removed unless the request stores something in the
        fresh session (for example a flash message after logout), which
        then gets a new id. Old ids still forwarding to this session die
        with it.
        """
        session.ensure_loaded()
        if not session.new and session.key:
            self._store(self.provider.session_destroy, session.key)
            self._destroy_previous(session.meta)
            signals.session_destroyed.send(self._app(), sid_hash=label(session.key), reason="destroy")
        session.fill({})
        session.reset()
        session.meta = {}
        session.accepted_tokens = ()
        session.new = True
        session.pinned = False
        session.rotate = None
        session.next_sid = None
        session.reissue = False
        session.refused = True
        session.set_identity(None, None)

    # -- tokens -----------------------------------------------------------------

    def token(self, session: ServerSession) -> str:
        """The session's request token, created (and the session pinned) on
        first use so that an anonymous visitor's form can be checked."""
        session.ensure_loaded()
        token = session.meta.get(TOKEN)
        if not isinstance(token, str):
            token = new_token()
            session.set_meta(TOKEN, token)
            session.accepted_tokens = (token,)
            session.pinned = True
        return token

    # -- garbage collection ------------------------------------------------

    def gc(self) -> int:
        """Remove expired sessions now; return how many were removed."""
        return int(self._store(self.provider.session_gc, self.settings.max_lifetime))

    def start_gc(self) -> None:
        """Start the background GC thread of this process (idempotent).

        Started on the first request rather than at ``init_app``, so that a
        pre-forking server starts one per worker, after the fork.
        """
        with self._gc_lock:
            if self._gc_pid == os.getpid():
                return
            self._gc_pid = os.getpid()
            if not self.settings.gc_interval or self.provider.native_ttl:
                return
            self._gc_stop = threading.Event()
            self._gc_thread = threading.Thread(
                target=self._gc_loop, args=(self._gc_stop,), name="gosession-gc", daemon=True
            )
            self._gc_thread.start()

    def stop_gc(self, timeout: float | None = 5) -> None:
        """Stop the background GC thread and wait for it to finish."""
        with self._gc_lock:
            thread, self._gc_thread = self._gc_thread, None
            self._gc_stop.set()
            self._gc_pid = None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _gc_loop(self, stop: threading.Event) -> None:
        while not stop.wait(self.settings.gc_interval):
            try:
                removed = self.gc()
                if removed:
                    log.debug("gc removed %d expired sessions", removed)
            except Exception:  # keep the thread alive across outages
                log.exception("session gc failed")

    def close(self) -> None:
        """Stop GC and release the provider's connections."""
        self.stop_gc()
        self.provider.close()

    # -- helpers ------------------------------------------------------------------

    @staticmethod
    def _app() -> t.Any:
        return current_app._get_current_object()  # type: ignore[attr-defined]

    @staticmethod
    def _agent() -> str:
        agent = request.headers.get("User-Agent", "")
        return hashlib.sha256(agent.encode("utf-8", "replace")).hexdigest()[:32]


#: How long a request waits for the target of a fresh forwarding record to
#: be written by the request that is rotating it (one store round trip).
ROTATION_WAIT = 2.0


def _patiently(attempt: t.Callable[[], t.Any], missing: t.Any = None) -> t.Any:
    """Retry ``attempt`` while it returns ``missing``, for at most
    :data:`ROTATION_WAIT` seconds: the rotating request marks the old record
    before it writes the new one, so for one round trip the target of a
    forward does not exist yet. If it never appears (the rotating process
    died), the session is gone."""
    deadline = time.monotonic() + ROTATION_WAIT
    delay = 0.001
    while True:
        result = attempt()
        if result is not missing or time.monotonic() >= deadline:
            return result
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
