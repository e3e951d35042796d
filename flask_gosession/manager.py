"""The Manager: one per app. Issues ids, opens, loads, saves and destroys
sessions, checks tokens against the store, and owns the GC thread.

It is the Go design's ``Manager`` with its flaws fixed (see DESIGN in the
README): unknown ids are never adopted, rotation keeps the data (see
:mod:`flask_gosession.rotation`), garbage collection runs every
``GOSESSION_GC_INTERVAL`` *seconds* (:mod:`flask_gosession.gc`), and saves
carry only the keys a request changed. The manager changes a session only
through the transitions of :class:`~flask_gosession.session.ServerSession`.
"""
from __future__ import annotations

import enum
import hashlib
import time
import typing as t

from flask import current_app, has_request_context, request

from . import signals
from .encryption import Plain
from .errors import CorruptRecordError, SessionUnreadable
from .gc import GCThread
from .ids import is_valid_sid, label, new_sid, new_token, open_token, seal_token, store_key
from .meta import AGENT, CREATED, ISSUED, PREVIOUS, TOKEN, USER
from .providers.base import FORWARD_FIELD, Binding, Change, Outcome, Provider, Record
from .rotation import Rotation
from .serializers import tag, untag
from .session import ServerSession
from .store import Store
from .users import Users

if t.TYPE_CHECKING:
    from .importing import Importer
    from .settings import Settings
    from .tokens import TokenGuard

#: Flask-Login's instruction to its own ``after_request`` (``"set"`` or
#: ``"clear"`` the remember cookie), kept across :meth:`Manager.destroy`.
REMEMBER_KEY = "_remember"

class Cookie(enum.Enum):
    """What the response must do with the session cookie."""

    #: No stored session and nothing to remove: leave the cookie alone.
    NONE = "none"
    #: The stored session keeps its id: send the cookie only if Flask's
    #: ``should_set_cookie`` says so (modified, or permanent + refresh each
    #: request).
    KEEP = "keep"
    #: Send the cookie: the session is new or its id changed.
    SET = "set"
    #: Remove the cookie: the session was destroyed, cleared or refused.
    DELETE = "delete"


class Manager:
    """Per-app session manager, stored at ``app.extensions["gosession"]``.

    :param provider: the store; bound to this app's serializer, lifetime
        and clock (:meth:`Provider.bind` refuses a conflicting second app).
    :param settings: the validated core settings.
    :param clock: time source in seconds; replace it in tests through
        :attr:`clock`.
    """

    def __init__(self, provider: Provider, settings: Settings,
                 clock: t.Callable[[], float] = time.time) -> None:
        #: The provider, called through outage logging and record hygiene.
        self.store = Store(provider)
        self.settings = settings
        self._clock = clock
        provider.bind(Binding(settings.serializer, settings.max_lifetime, clock))
        self.rotation = Rotation(self)
        #: Binding sessions to users, and the per-user index.
        self.users = Users(self)
        #: Encryption at rest (:mod:`flask_gosession.encryption`); ``init_app``
        #: replaces it when ``GOSESSION_ENCRYPTION_KEYS`` is set.
        self.encryption: Plain = Plain()
        #: The app's token guard, set by ``init_app`` (it also says whether
        #: the token check defers to Flask-WTF); ``None`` for a bare manager.
        self.guard: TokenGuard | None = None
        #: The import of earlier sessions (:mod:`flask_gosession.importing`),
        #: set by ``init_app`` when one is configured.
        self.importer: Importer | None = None
        #: The background GC thread of this manager.
        self.gc_thread = GCThread(
            lambda: self.gc(),  # looked up at each run, so a wrapped gc() is used
            0 if provider.native_ttl else settings.gc_interval,
        )

    @property
    def provider(self) -> Provider:
        """The store's provider."""
        return self.store.provider

    @provider.setter
    def provider(self, value: Provider) -> None:
        self.store.provider = value

    # -- clock ------------------------------------------------------------

    @property
    def clock(self) -> t.Callable[[], float]:
        """The time source, shared with the provider."""
        return self._clock

    @clock.setter
    def clock(self, value: t.Callable[[], float]) -> None:
        self._clock = value
        binding = t.cast(Binding, self.provider.binding)
        self.provider.bind(Binding(binding.serializer, binding.max_lifetime, value), replace=True)

    # -- opening and loading -------------------------------------------------

    def open(self, presented: str | None = None, via_url: bool = False,
             *, request: t.Any = None) -> ServerSession:
        """A lazy session for the id the client presented. No store call.

        :param request: instead of ``presented``, the request whose cookie
            names the session; the cookie is then read on first use.
        """
        self.gc_thread.ensure_started()
        return ServerSession(self, presented, via_url, request=request)

    def assign_new_id(self, session: ServerSession) -> None:
        """Give a new session a fresh id (never the one presented)."""
        sid = new_sid()
        session.set_identity(sid, store_key(sid))

    def load(self, session: ServerSession) -> None:
        """Fill ``session`` from the store, or start it empty.

        Strict mode: an id that is malformed, unknown, expired, corrupt,
        bound to another client or rotated out beyond its grace window is
        refused, and the session starts new with a fresh id. With an import
        configured, a new session may then take an earlier system's session
        (:meth:`Importer.examine <flask_gosession.importing.Importer.examine>`).
        """
        self._load(session)
        importer = self.importer
        if importer is not None and has_request_context():
            importer.examine(session, request, self._clock())

    def _load(self, session: ServerSession) -> None:
        presented = session.presented
        if presented is None:
            return
        if not is_valid_sid(presented):
            session.refuse()
            return
        now = self._clock()
        key = store_key(presented)
        record = self.store.read(key, now)
        if record is None:
            session.refuse()
            return
        sid, tokens = presented, t.cast("list[str]", [])
        if FORWARD_FIELD in record.meta:
            hop = self.rotation.follow(presented, key, record, now, tokens)
            if hop is None:
                session.refuse()
                return
            sid, key, record = hop.sid, hop.key, t.cast(Record, hop.record)
        version = record.version  # the store's, before encryption copies the record
        try:
            expired = self.expired(record, now)
            if expired:
                self.store.destroy(key)
                if USER in record.meta:
                    self.users.destroyed([(key, record)])
                signals.session_expired.send(self.app(), sid_hash=label(key), reason=expired)
                session.refuse()
                return
            record = self.encryption.open(session, sid, key, record)
            if self.settings.bind_user_agent and record.meta.get(AGENT) != self._agent():
                signals.hijack_suspected.send(
                    self.app(), sid_hash=label(key), reason="user-agent", revoked=False
                )
                session.refuse()
                return
            values = {k: untag(v) for k, v in record.data.items()}
        except SessionUnreadable:
            raise  # a 503 that keeps the record and the cookie
        except Exception as err:  # untag() of hostile data raises anything
            self.store.drop_corrupt(key, err)
            session.refuse()
            return
        token = open_token(sid, record.meta.get(TOKEN))
        accepted = tuple(dict.fromkeys(([token] if token else []) + tokens))
        session.adopt(values, record.meta, record.atime, sid, key,
                      token=token, accepted=accepted, moved=sid != presented,
                      version=version)
        rotate_after = self.settings.rotate_after
        if rotate_after is not None and now - record.meta[ISSUED] >= rotate_after:
            # The token is kept: forms rendered before the rotation still
            # submit. The new id is chosen now, for URLs built meanwhile.
            session.plan_rotation("age", new_sid())
        elif USER in record.meta:
            self.users.loaded(session, now)

    def expired(self, record: Record, now: float) -> str | None:
        """Why ``record`` has expired at ``now`` (``"idle"`` or
        ``"absolute"``), or ``None`` if it has not.

        :raises CorruptRecordError: if it lacks its creation times.
        """
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
            cookie = self._save(session, now)
            if session.unindex:
                self.users.saved(session)
            if session.imported is not None:
                t.cast("Importer", self.importer).finish(session)
            return cookie
        except CorruptRecordError as err:
            # The record was corrupted while this request ran: it is
            # dropped like any corrupt record, and the client starts over.
            if session.key is not None:
                self.store.drop_corrupt(session.key, err)
            return Cookie.DELETE
        finally:
            session.forget_changes()

    def _save(self, session: ServerSession, now: float) -> Cookie:
        """The body of :meth:`save` for a loaded, non-discarded session."""
        if session.new:
            return self._save_new(session, now)
        if session.deleted_keys and session.has_nothing_to_store:
            # Emptied (``session.clear()`` as a logout): destroyed like
            # :meth:`destroy`, with every id that leads to it.
            self.rotation.destroy_chain(session.sid, t.cast(str, session.key), "cleared",
                                        previous=session.meta.get(PREVIOUS))
            return Cookie.DELETE
        if session.rotate:
            return Cookie.SET if self.rotation.rotate(session, now) else Cookie.DELETE
        if session.dirty:
            change = self.change_for(session, session.sid, now)
            change.base = session.take_version()
            outcome = self.encryption.update(self.store, session, change)
            if outcome is Outcome.FORWARDED:
                hop = self.rotation.save_forwarded(session, now)
                if hop is None:
                    return Cookie.DELETE
                session.moved_to(hop.sid, hop.key, session.meta)
                return Cookie.SET
            if outcome is not Outcome.APPLIED:
                # Destroyed by a concurrent request (logout): never bring it back.
                return Cookie.DELETE
        elif not self.provider.touches_on_read and now - session.atime >= self.settings.refresh_interval:
            self.store.touch(t.cast(str, session.key), now)
        return Cookie.SET if session.reissue else Cookie.KEEP

    def _save_new(self, session: ServerSession, now: float) -> Cookie:
        if session.imported is not None and not session.has_nothing_to_store:
            t.cast("Importer", self.importer).before_store(session)
        if session.has_nothing_to_store:
            return Cookie.DELETE if session.refused else Cookie.NONE
        sid = session.sid  # gives the session its id
        key = t.cast(str, session.key)
        meta = dict(session.meta)
        meta.setdefault(CREATED, now)  # an imported session's is earlier
        meta[ISSUED] = now
        if session.token is not None:
            meta[TOKEN] = seal_token(sid, session.token)
        if self.settings.bind_user_agent:
            meta[AGENT] = self._agent()
        values = {k: tag(v) for k, v in session.snapshot().items()}
        record = self.encryption.seal_new(session, sid, key, Record(values, meta, now))
        if USER in meta:
            # Bound at login: the key is in the user's index already, and a
            # concurrent eviction may have killed it since; never overwrite
            # that tombstone.
            if not self.store.create(key, record):
                session.start_over()
                return Cookie.DELETE
        else:
            self.store.init(key, record)
        session.stored(meta, now)
        signals.session_created.send(self.app(), sid_hash=label(key))
        return Cookie.SET

    def change_for(self, session: ServerSession, sid: str, now: float) -> Change:
        """This request's change to ``session``, for the record of ``sid``
        (the session's own id, or the one it moved to: the token is sealed
        for the record it is written to)."""
        meta = dict(session.meta_changes)
        if session.token_changed and session.token is not None:
            meta[TOKEN] = seal_token(sid, session.token)
        return self.encryption.seal_change(session, sid, Change(
            set={k: tag(v) for k, v in session.changed_values().items()},
            deleted=frozenset(session.deleted_keys),
            meta=meta,
            atime=now,
        ))

    # -- rotation and destruction ------------------------------------------

    def regenerate(self, session: ServerSession) -> None:
        """Move the session to a new id when it is saved; the old id dies.

        For login and privilege changes: an id planted by an attacker must
        never gain the new privileges, so there is no grace window. The
        token changes at once, so forms rendered after this call carry it.

        With Flask-WTF's ``CSRFProtect`` on the app, its secret is dropped
        too, for the same reason (:func:`~flask_gosession.tokens.forget_flask_wtf_secret`).
        """
        _ = session.sid  # loads, and gives a new session its id
        session.plan_rotation(
            None if session.new else "privilege",
            new_sid(),
            token=None if session.token is None else new_token(),
        )
        from .tokens import forget_flask_wtf_secret

        forget_flask_wtf_secret(session)

    def destroy(self, session: ServerSession) -> None:
        """Remove the session from the store now and start an empty one.

        The cookie is removed unless the request stores something in the
        fresh session (for example a flash message after logout), which
        then gets a new id. Every id that leads to this session dies with
        it, whatever runs concurrently (see :mod:`flask_gosession.rotation`).

        Flask-Login's ``session["_remember"]`` marker, if present, is carried
        into the fresh session: it tells Flask-Login's ``after_request`` to
        delete the remember-me cookie (``logout_user()`` then ``destroy()``),
        and that hook pops it again, so nothing is stored because of it.
        """
        session.ensure_loaded()
        if not session.new and session.key:
            self.rotation.destroy_chain(session.sid, session.key, "destroy",
                                        previous=session.meta.get(PREVIOUS))
        session.start_over(keep=(REMEMBER_KEY,))

    # -- tokens -----------------------------------------------------------------

    def token(self, session: ServerSession) -> str:
        """The session's request token, created (and the session pinned) on
        first use so that an anonymous visitor's form can be checked."""
        session.ensure_loaded()
        if session.token is None:
            session.set_token(new_token(), pin=True)
        return t.cast(str, session.token)

    def consume_token(self, session: ServerSession) -> bool:
        """Replace a one-time token in the store, atomically, before the view
        runs: of concurrent requests presenting one token, exactly one gets
        ``True``. Costs one store round trip.
        """
        sealed = session.meta.get(TOKEN)
        token = new_token()
        replacement = seal_token(session.sid, token)
        change = Change(meta={TOKEN: replacement}, expect={TOKEN: sealed}, atime=self._clock(),
                        base=session.take_version())
        outcome = self.store.update(t.cast(str, session.key), change)
        if outcome is not Outcome.APPLIED:
            return False
        session.token_consumed(token, replacement)
        return True

    # -- garbage collection and shutdown -------------------------------------

    def gc(self) -> int:
        """Remove expired sessions now; return how many were removed."""
        return int(self.store.call("session_gc", self.settings.max_lifetime))

    def close(self) -> None:
        """Stop GC and release the provider's connections."""
        self.gc_thread.stop()
        self.provider.close()

    # -- helpers ------------------------------------------------------------------

    @staticmethod
    def app() -> t.Any:
        """The current app, as the sender of signals."""
        return current_app._get_current_object()  # type: ignore[attr-defined]

    @staticmethod
    def _agent() -> str:
        agent = request.headers.get("User-Agent", "")
        return hashlib.sha256(agent.encode("utf-8", "replace")).hexdigest()[:32]
