"""The :class:`~flask.sessions.SessionInterface` that Flask calls."""
from __future__ import annotations

import logging
import typing as t
from datetime import datetime, timezone

from flask import current_app, request
from flask.sessions import SessionInterface
from werkzeug.datastructures import Headers

from . import urlrewrite
from .errors import ProviderError, RecordTooLarge, SessionTooLarge, StoreUnavailable
from .manager import Cookie
from .session import PERMANENT_FLAG, ServerSession

if t.TYPE_CHECKING:
    from flask import Flask, Request, Response
    from werkzeug.exceptions import HTTPException

    from .manager import Manager

log = logging.getLogger("flask_gosession")


class GoSessionInterface(SessionInterface):
    """Opens lazy :class:`ServerSession` objects and saves their changes.

    Cookie attributes come from Flask's ``SESSION_COOKIE_*`` settings
    through the inherited getters; only the name is ours
    (``GOSESSION_COOKIE_NAME``).
    """

    session_class = ServerSession

    def get_cookie_name(self, app: Flask) -> str:
        return _manager(app).settings.cookie_name

    def open_session(self, app: Flask, request: Request) -> ServerSession:
        manager: Manager = app.extensions["gosession"]
        if not manager.settings.url_rewrite:
            # The common case: the cookie is read when the session is used.
            return manager.open(request=request)
        name = manager.settings.cookie_name
        presented = request.cookies.get(name)
        if presented is None:
            try:
                presented = request.args.get(name)
            except UnicodeDecodeError:  # raw non-UTF-8 bytes in the query
                presented = None
            if presented is not None:
                return manager.open(presented, via_url=True)
            return manager.open(None, via_url=True)
        return manager.open(presented)

    def save_session(self, app: Flask, session: t.Any, response: Response) -> None:
        self._save(app, session, response)
        importer = _manager(app).importer
        if importer is not None and response.status_code != 503:
            # Not after a store failure: what was not imported stays importable.
            importer.drop_old_cookie(session, request, response, self._delete_cookie)

    def _delete_cookie(self, response: Response, name: str) -> None:
        """Delete cookie ``name`` as set with this app's cookie settings."""
        app = current_app
        response.delete_cookie(
            name, domain=self.get_cookie_domain(app), path=self.get_cookie_path(app),
            secure=self.get_cookie_secure(app), partitioned=self.get_cookie_partitioned(app),
            samesite=self.get_cookie_samesite(app), httponly=self.get_cookie_httponly(app),
        )
        _vary_cookie(response)

    def _save(self, app: Flask, session: t.Any, response: Response) -> None:
        if not session.loaded and not session.via_url:
            # Never read (Flask marks the session accessed as soon as the
            # ``flask.session`` proxy is touched, even without a read):
            # nothing to save. Only a cookie flagged permanent is sent
            # again, as Flask refreshes a permanent session's cookie on
            # every response.
            if session.accessed:
                _vary_cookie(response)
            if session.flagged_permanent() and app.config["SESSION_REFRESH_EACH_REQUEST"]:
                self._refresh_untouched(app, session, response)
            return
        if session.accessed:
            _vary_cookie(response)
        manager = _manager(app)
        try:
            if session.via_url and session.presented is not None and "Location" in response.headers:
                # A cookieless client follows this redirect: validate its id
                # (one read, only in URL-rewrite mode) so the redirect can
                # carry it.
                session.ensure_loaded()
            action = manager.save(session)
        except ProviderError:
            if session.via_url:
                _become_unavailable_via_url(app, response)
            else:
                _become_unavailable(app, response)
            return
        except RecordTooLarge as err:
            # This session's data, not the store: a 413, never an outage.
            warn_too_large(err)
            _become(app, response, SessionTooLarge())
            if not err.session_moved:
                return
            action = Cookie.SET  # the id changed all the same
        if action is Cookie.NONE:
            return
        if action is Cookie.KEEP and not session.via_url and not self.should_set_cookie(app, session):
            return  # the common read: no cookie, so no cookie settings to look up
        name = manager.settings.cookie_name
        domain = self.get_cookie_domain(app)
        path = self.get_cookie_path(app)
        secure = self.get_cookie_secure(app)
        partitioned = self.get_cookie_partitioned(app)
        samesite = self.get_cookie_samesite(app)
        httponly = self.get_cookie_httponly(app)
        if action is Cookie.DELETE:
            response.delete_cookie(
                name, domain=domain, path=path, secure=secure,
                partitioned=partitioned, samesite=samesite, httponly=httponly,
            )
            _vary_cookie(response)
            return
        if session.via_url:
            # Only to this host; adds Referrer-Policy and Cache-Control when
            # it does (pages whose links got the id get them from the
            # url_defaults hook).
            urlrewrite.rewrite_location(response, name, session.sid)
        if action is Cookie.KEEP and not self.should_set_cookie(app, session):
            return
        response.set_cookie(
            name, session.cookie_text, expires=self.get_expiration_time(app, session),
            httponly=httponly, domain=domain, path=path, secure=secure,
            partitioned=partitioned, samesite=samesite,
        )
        _vary_cookie(response)

    def _refresh_untouched(self, app: Flask, session: ServerSession, response: Response) -> None:
        """Send the cookie of an unused session flagged permanent again, with
        a fresh ``Expires``, without reading the store.

        The flag is the client's word: a forged one only refreshes the
        client's own cookie, and the store's idle and absolute timeouts
        still decide whether the id is valid.
        """
        response.set_cookie(
            self.get_cookie_name(app), t.cast(str, session.presented) + PERMANENT_FLAG,
            expires=datetime.now(timezone.utc) + app.permanent_session_lifetime,
            httponly=self.get_cookie_httponly(app), domain=self.get_cookie_domain(app),
            path=self.get_cookie_path(app), secure=self.get_cookie_secure(app),
            partitioned=self.get_cookie_partitioned(app),
            samesite=self.get_cookie_samesite(app),
        )
        _vary_cookie(response)


def _vary_cookie(response: Response) -> None:
    """``response.vary.add("Cookie")``, without parsing a header that is not
    there or says just that (``getlist`` rather than ``in``: a missing key
    costs ``in`` an exception; parsing costs a few microseconds, and a
    response that sets the cookie comes here twice)."""
    headers = response.headers
    values = headers.getlist("Vary")
    if not values:
        headers.add("Vary", "Cookie")
    elif values != ["Cookie"]:
        response.vary.add("Cookie")


def _manager(app: Flask) -> Manager:
    return app.extensions["gosession"]  # type: ignore[no-any-return]


def _become_unavailable_via_url(app: Flask, response: Response) -> None:
    """:func:`_become_unavailable` in URL-rewrite mode: the 503 page gets
    the id-in-URL headers only if its own links carry the id (an error
    handler that calls ``url_for``), whatever the replaced page had."""
    urlrewrite.unmark()
    _become_unavailable(app, response)
    if urlrewrite.marked():
        urlrewrite.protect(response)


def warn_too_large(err: RecordTooLarge) -> None:
    """The one warning for a session refused as too large (label, size, limit)."""
    log.warning(
        "session %s not saved: its record is %d bytes, over the store's limit of %d bytes%s",
        err.label, err.size, err.limit, f" ({err.setting})" if err.setting else "",
    )


def _become_unavailable(app: Flask, response: Response) -> None:
    """Turn the finished response into the 503 for an unavailable store."""
    _become(app, response, StoreUnavailable())


def _become(app: Flask, response: Response, error: HTTPException) -> None:
    """Turn the finished response into the response for ``error``.

    Flask saves the session after the response is built, where a raised
    exception would become a 500; so the response is rewritten in place,
    through the app's own error handler for ``error``'s class.
    """
    error_response = app.make_response(app.handle_http_exception(error))
    response.status_code = error_response.status_code
    response.headers = Headers(error_response.headers)
    response.set_data(error_response.get_data())
