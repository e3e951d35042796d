"""Importing the sessions of an earlier session system on first visit, so
that switching to flask-gosession logs nobody out.

Two sources, both off by default:

* ``GOSESSION_IMPORT_FLASK_COOKIE``: Flask's own signed-cookie session
  (:mod:`flask_gosession.importing.flask_cookie`);
* ``GOSESSION_IMPORT_FLASK_SESSION``: a Flask-Session 0.6–0.8 record in the
  same backend as ours (:mod:`flask_gosession.importing.flask_session`);
  only msgpack and JSON records are decoded, a pickle-era one is refused.

Both read the cookie Flask names ``SESSION_COOKIE_NAME``. The contract:

* **Lazy.** The old cookie is looked at only when the request uses the
  session and presented no valid session of ours. A request that never
  touches ``flask.session`` imports nothing and makes no store call.
* **A fresh id.** The import is a new session with a new id: the old
  cookie value never becomes one of ours. With the Flask-Login
  integration on, a session holding ``_user_id`` is bound to that user
  (:func:`~flask_gosession.login_user_session`'s index and limit).
* **Never a longer life.** The old session's last save (the cookie's
  signature time, or a Flask-Session record's expiry minus
  ``PERMANENT_SESSION_LIFETIME``) becomes our creation time, so
  ``GOSESSION_ABSOLUTE_LIFETIME`` counts from there; ``permanent`` carries
  over.
* **The old cookie goes.** Whenever it was looked at (imported, invalid,
  tampered, expired), the response deletes it; after
  ``GOSESSION_IMPORT_UNTIL`` every response to a request carrying it does,
  and nothing is imported any more. When both systems use the same cookie
  name, our ``Set-Cookie`` replaces it instead.
* **Once.** A Flask-Session record is deleted once our session holding its
  data is stored. A Flask cookie cannot be revoked (it is self-contained):
  until it is deleted or expires, a copy of it imports again, which is
  why ``GOSESSION_IMPORT_UNTIL`` should end the window.
* **Seen.** Each import sends :data:`~flask_gosession.signals.session_imported`
  and adds to the store's ``imported:<source>`` counter (``flask gosession
  stats``), on stores that count; each refused pickle record adds to
  ``import-refused:pickle`` and is logged at most once a minute.

Cost: an import is CPU only for a Flask cookie, and two round trips more
for a Flask-Session record (the read and the delete of the old record),
plus one for the counter, once per migrated visitor.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import threading
import time
import typing as t
from dataclasses import dataclass

from .. import signals
from ..errors import ConfigError, ProviderError, SessionLimitReached
from ..ids import label
from ..meta import CREATED, PERMANENT
from ..session import cookie_value
from ..users import handle_for

if t.TYPE_CHECKING:
    from flask import Flask, Request, Response

    from ..manager import Manager
    from ..session import ServerSession

log = logging.getLogger("flask_gosession")

COOKIE_KEY = "GOSESSION_IMPORT_FLASK_COOKIE"
SESSION_KEY = "GOSESSION_IMPORT_FLASK_SESSION"
UNTIL_KEY = "GOSESSION_IMPORT_UNTIL"

#: The import settings and their defaults (all off).
DEFAULTS: dict[str, t.Any] = {
    COOKIE_KEY: False,
    SESSION_KEY: False,
    UNTIL_KEY: None,
}

#: One line per import setting, for the documentation's configuration table.
DESCRIPTIONS: dict[str, str] = {
    COOKIE_KEY: (
        "On a first visit, import a visitor's Flask signed-cookie session (`SESSION_COOKIE_NAME`, "
        "signed with `SECRET_KEY` or one of `SECRET_KEY_FALLBACKS`) into a new session, then "
        "delete the old cookie."),
    SESSION_KEY: (
        "On a first visit, import the Flask-Session 0.6-0.8 record of the visitor's cookie "
        "(msgpack or JSON, never pickle) from the same backend, then delete it."),
    UNTIL_KEY: (
        "End of the migration window: a `date` (its whole day, UTC), a `datetime` (naive means "
        "UTC) or an ISO 8601 string; after it nothing is imported and old cookies are only "
        "deleted. `None` for no end."),
}

#: The ``source`` of :data:`~flask_gosession.signals.session_imported`.
FLASK_COOKIE = "flask-cookie"
FLASK_SESSION = "flask-session"

#: Flask's ``permanent`` flag, kept among a Flask session's values.
FLASK_PERMANENT = "_permanent"
#: Flask-Login's user key.
FLASK_LOGIN_USER = "_user_id"

#: At most one warning per this many seconds about refused pickle records.
WARN_EVERY = 60.0


@dataclass(frozen=True)
class Imported:
    """An earlier session, read and checked, ready to become ours."""

    source: str
    data: dict[str, t.Any]
    #: The old session's last save (our creation time), Unix time.
    created: float
    #: The Flask-Session id whose record is deleted once ours is stored.
    legacy_sid: str | None = None
    #: Flask-Login's user, to bind the session to when it is stored (with
    #: the Flask-Login integration), or ``None``.
    user: str | None = None
    #: The device handle of that binding: derived from the old cookie, so
    #: the parallel first requests of one browser are one device.
    device: str = ""


def parse_until(value: t.Any) -> float | None:
    """``GOSESSION_IMPORT_UNTIL`` as a Unix time, or ``None`` for no end.

    A :class:`~datetime.datetime` (naive means UTC) ends the window at that
    moment; a :class:`~datetime.date` at the end of that day, UTC (the
    window includes it); a string is read as ISO 8601, either form.
    :raises ValueError: for anything else.
    """
    from .. import coerce

    if coerce.is_none(value):
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = dt.date.fromisoformat(text)
        except ValueError:
            value = dt.datetime.fromisoformat(text)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return float(value.timestamp())
    if isinstance(value, dt.date):
        end = dt.datetime.combine(value + dt.timedelta(days=1), dt.time(), dt.timezone.utc)
        return float(end.timestamp())
    raise ValueError(value)


def load_importer(app: Flask, manager: Manager) -> Importer | None:
    """Validate the import settings of ``app``; ``None`` when no import is
    configured (then nothing runs on any request).

    :raises ConfigError: for a bad value, an import of Flask cookies
        without ``SECRET_KEY``, or an import of Flask-Session records on a
        store that has no Flask-Session counterpart.
    """
    from .. import coerce

    config = app.config
    for key, value in DEFAULTS.items():
        config.setdefault(key, value)
    flags = {}
    for key in (COOKIE_KEY, SESSION_KEY):
        try:
            config[key] = flags[key] = coerce.flag(config[key])
        except ValueError:
            raise ConfigError(f"{key} must be True or False, got {config[key]!r}") from None
    try:
        until = parse_until(config[UNTIL_KEY])
    except (ValueError, TypeError, OverflowError):
        raise ConfigError(
            f"{UNTIL_KEY} must be a date, a datetime or an ISO 8601 string "
            f"(the end of the migration window), or None; got {config[UNTIL_KEY]!r}"
        ) from None
    if not flags[COOKIE_KEY] and not flags[SESSION_KEY] and until is None:
        return None
    if flags[COOKIE_KEY] and not app.secret_key:
        raise ConfigError(
            f"{COOKIE_KEY} needs the SECRET_KEY (and SECRET_KEY_FALLBACKS) the old "
            "Flask session cookies were signed with"
        )
    if flags[SESSION_KEY]:
        from . import flask_session

        flask_session.check_supported(app, manager.provider)
    name = config.get("SESSION_COOKIE_NAME") or "session"
    if not isinstance(name, str):
        raise ConfigError(f"SESSION_COOKIE_NAME must be a cookie name, got {name!r}")
    return Importer(app, manager, flask_cookie=flags[COOKIE_KEY],
                    flask_session=flags[SESSION_KEY], until=until, old_name=name)


class Importer:
    """The import of one app (``manager.importer``); see the module docs.

    The manager calls :meth:`examine` when a session is loaded and
    :meth:`finish` after it is saved; the interface calls
    :meth:`drop_old_cookie` on every response.
    """

    def __init__(self, app: Flask, manager: Manager, *, flask_cookie: bool,
                 flask_session: bool, until: float | None, old_name: str) -> None:
        self.app = app
        self.manager = manager
        self.flask_cookie = flask_cookie
        self.flask_session = flask_session
        #: End of the migration window (Unix time), or ``None``.
        self.until = until
        #: The old systems' cookie, Flask's ``SESSION_COOKIE_NAME``.
        self.old_name = old_name
        #: Both systems use one cookie name: the old value arrives as ours.
        self.same_name = old_name == manager.settings.cookie_name
        self._warn_lock = threading.Lock()
        self._warned_at: float | None = None
        self._refused = 0

    def window_open(self, now: float) -> bool:
        return (self.flask_cookie or self.flask_session) and (self.until is None or now < self.until)

    # -- on load ----------------------------------------------------------

    def examine(self, session: ServerSession, request: Request, now: float) -> None:
        """Look at the old cookie of a request that uses its session: mark it
        for deletion, and import it when the session is new and the window
        open. Costs nothing without an old cookie."""
        if self.same_name:
            # Our cookie's value, refused as an id of ours, may be theirs.
            if not (session.new and session.refused):
                return
            value = cookie_value(request, self.old_name)
        else:
            value = cookie_value(request, self.old_name)
            if value is None:
                return
            session.old_cookie = self.old_name
        if not value or not session.new or not self.window_open(now):
            return
        imported = self._read(value, now)
        if imported is not None and self._storable(imported):
            self._adopt(session, dataclasses.replace(imported, device=handle_for(
                hashlib.sha256(b"gosession-import\x00" + value.encode()).hexdigest())))

    def _read(self, value: str, now: float) -> Imported | None:
        absolute = self.manager.settings.absolute_lifetime
        if self.flask_cookie:
            from . import flask_cookie

            cookie = flask_cookie.read(self.app, value)
            if cookie is not None:
                if absolute is not None and now - cookie.signed_at >= absolute:
                    return None  # would be over our absolute lifetime at once
                return Imported(FLASK_COOKIE, cookie.data, min(now, cookie.signed_at))
        if self.flask_session:
            from . import flask_session

            sid = flask_session.sid_from_cookie(self.app, value)
            if sid is None:
                return None
            try:
                record = flask_session.fetch(self.app, self.manager.provider, sid, now)
            except flask_session.LegacyRefused as refused:
                self._refuse(refused.reason)
                return None
            if record is None:
                return None
            lifetime = self.app.permanent_session_lifetime.total_seconds()
            created = now if record.expires_at is None else min(now, record.expires_at - lifetime)
            if absolute is not None and now - created >= absolute:
                return None
            return Imported(FLASK_SESSION, record.data, created, legacy_sid=sid)
        return None

    def _storable(self, imported: Imported) -> bool:
        """Whether our serializer can store every value (a Flask-Session
        record may hold what the tagger cannot take); refused if not."""
        from ..serializers import tag

        try:
            self.manager.provider.serializer.dumps({k: tag(v) for k, v in imported.data.items()})
        except Exception as err:
            log.debug("old session not imported: cannot store its values (%s)", type(err).__name__)
            self._refuse("undecodable")
            return False
        return True

    def _adopt(self, session: ServerSession, imported: Imported) -> None:
        data = dict(imported.data)
        permanent = bool(data.pop(FLASK_PERMANENT, False))
        user = data.get(FLASK_LOGIN_USER)
        if self.manager.settings.flask_login and isinstance(user, (str, int)) \
                and not isinstance(user, bool):
            imported = dataclasses.replace(imported, user=str(user))
        session.take_imported(data, {CREATED: imported.created, PERMANENT: True if permanent else None},
                              imported)

    def before_store(self, session: ServerSession) -> None:
        """Just before an imported session is first stored: bind it to its
        Flask-Login user (with the integration on), as the device of the old
        cookie, without a rotation (its id is new). Not at load time: a
        request that is then refused (a token check) or that signs out binds
        nobody. Under the ``"refuse"`` limit, the login is dropped instead.
        """
        imported = t.cast(Imported, session.imported)
        user = imported.user
        if user is None or dict.get(session, FLASK_LOGIN_USER) != user:
            return  # no login to bind, or it was signed out meanwhile
        try:
            self.manager.users.bind(session, user, device=imported.device)
        except SessionLimitReached:
            from ..integrations.flask_login import LOGIN_KEYS

            for key in LOGIN_KEYS:
                dict.pop(session, key, None)
        except (TypeError, ValueError):
            pass  # not a user id the index takes: stored unbound

    def _refuse(self, reason: str) -> None:
        """Count a refused record, and warn at most once a minute (whatever
        the reason: the count in the message covers the quiet minute)."""
        self._count(f"import-refused:{reason}")
        now = time.monotonic()
        with self._warn_lock:
            self._refused += 1
            if self._warned_at is not None and now - self._warned_at < WARN_EVERY:
                return
            count, self._refused, self._warned_at = self._refused, 0, now
        why = ("pickle-era records are never unpickled" if reason == "pickle"
               else "they cannot be decoded or stored")
        log.warning(
            "refused to import %d old session record(s) (%s): %s; those visitors start a "
            "new session (see 'Migrating to flask-gosession')", count, reason, why,
        )

    def _count(self, name: str) -> None:
        provider = self.manager.provider
        if not provider.counts_events:
            return
        try:
            self.manager.store.call("count_event", name)
        except ProviderError:
            pass  # logged by the store; a counter never fails a request

    # -- after save -------------------------------------------------------

    def finish(self, session: ServerSession) -> None:
        """After the save of a session that imported: delete the old
        Flask-Session record, and report the import if ours was stored."""
        imported = t.cast(Imported, session.imported)
        session.imported = None
        if imported.legacy_sid is not None:
            from . import flask_session

            flask_session.discard(self.app, self.manager.provider, imported.legacy_sid)
        if not session.new and session.key is not None:
            self._count(f"imported:{imported.source}")
            signals.session_imported.send(self.app, sid_hash=label(session.key),
                                          source=imported.source)

    # -- on every response ------------------------------------------------

    def drop_old_cookie(self, session: ServerSession, request: Request,
                        response: Response, delete: t.Callable[[Response, str], None]) -> None:
        """Delete the old cookie when :meth:`examine` saw it, or, after the
        window, whenever the request carries it (with different names)."""
        if session.discard and session.imported is not None:
            return  # the request was refused (a token check): import it next time
        name = session.old_cookie
        if (name is None and not self.same_name and not self.window_open(self.manager.clock())
                and cookie_value(request, self.old_name) is not None):
            name = self.old_name
        if name is not None:
            delete(response, name)
