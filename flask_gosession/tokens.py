"""The per-request token checked on state-changing requests.

A token is 256 random bits from :mod:`secrets`, stored in the session's
metadata and compared in constant time. It is accepted from the form field
``GOSESSION_TOKEN_FIELD`` or the header ``GOSESSION_TOKEN_HEADER``.

An unsafe request that arrives with no session at all is rejected
(reason ``"no-session"``): there is no token it could match. Render a form
with :func:`gosession_token_field` first (that creates the session), or
exempt the view.

With ``GOSESSION_TOKEN_CHECK = "auto"`` (the default) the check defers to
Flask-WTF when its ``CSRFProtect`` is registered on the app: one CSRF
system, one hidden field, one header, one exemption decorator. The
template helpers then render Flask-WTF's token, so templates written for
either library work.
"""
from __future__ import annotations

import hmac
import typing as t

from flask import current_app, g, has_request_context, request, session
from markupsafe import Markup, escape

from . import signals
from .errors import TokenError
from .ids import label

if t.TYPE_CHECKING:
    from .manager import Manager
    from .session import ServerSession

F = t.TypeVar("F", bound=t.Callable[..., t.Any])

#: Attribute set on exempt view functions by :func:`token_exempt`.
EXEMPT_ATTR = "gosession_token_exempt"


def token_exempt(view: F) -> F:
    """Exempt a view from the token check (webhooks, token-less APIs)."""
    setattr(view, EXEMPT_ATTR, True)
    return view


def gosession_token() -> str:
    """The current session's token, creating the session if needed.

    When the check defers to Flask-WTF (see :meth:`TokenGuard.defers`),
    Flask-WTF's ``csrf_token()`` instead: the token that is checked.
    """
    manager: Manager = current_app.extensions["gosession"]
    if _defers(manager):
        from flask_wtf.csrf import generate_csrf

        return t.cast(str, generate_csrf())
    return manager.token(t.cast("ServerSession", session._get_current_object()))  # type: ignore[attr-defined]


def gosession_token_field() -> Markup:
    """A hidden ``<input>`` carrying the token, for HTML forms.

    When deferring to Flask-WTF, the field is Flask-WTF's
    (``WTF_CSRF_FIELD_NAME``, the same value ``hidden_tag()`` renders), so a
    form that renders both still sends one valid token.
    """
    manager: Manager = current_app.extensions["gosession"]
    if _defers(manager):
        field = current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
    else:
        field = manager.settings.token_field
    return Markup('<input type="hidden" name="{}" value="{}">').format(
        escape(field), escape(gosession_token())
    )


def _defers(manager: Manager) -> bool:
    return manager.guard is not None and manager.guard.defers()


def flask_wtf_csrf(app: t.Any) -> t.Any:
    """Flask-WTF's ``CSRFProtect`` registered on ``app``, or ``None``.

    Recognised by its module, so another extension that happens to use the
    ``"csrf"`` key is not mistaken for it, and Flask-WTF is never imported.
    """
    ext = app.extensions.get("csrf")
    if ext is not None and type(ext).__module__.partition(".")[0] == "flask_wtf":
        return ext
    return None


def forget_flask_wtf_secret(session: ServerSession) -> None:
    """Drop Flask-WTF's CSRF secret at a privilege change, if ``CSRFProtect``
    is on the app: forms rendered after a login must carry a fresh token,
    not one known before it. The request itself was already checked."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if flask_wtf_csrf(app) is not None:
        field = app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
        session.pop(field, None)
        g.pop(field, None)  # generate_csrf()'s per-request cache


class TokenGuard:
    """Checks the token before unsafe requests; one per app, at
    ``manager.guard`` (also when the check is off: the template helpers ask
    it whether to defer).

    :param exempt_blueprints: names of blueprints whose views are exempt.
    """

    def __init__(self, manager: Manager, exempt_blueprints: t.AbstractSet[str]) -> None:
        self.manager = manager
        self.exempt_blueprints = exempt_blueprints
        #: Whether this app defers to Flask-WTF, decided on first use in a
        #: request (``CSRFProtect`` may be initialised after us).
        self._defers: bool | None = None

    def defers(self) -> bool:
        """``True`` when ``GOSESSION_TOKEN_CHECK`` is ``"auto"`` and
        Flask-WTF's ``CSRFProtect`` is registered on the app: our check
        then does nothing and Flask-WTF's is the only one.

        Decided once, at the first call inside a request; outside a request
        (app setup, CLI) it is computed without being remembered.
        """
        defers = self._defers
        if defers is None:
            defers = (self.manager.settings.token_check == "auto"
                      and flask_wtf_csrf(current_app) is not None)
            if has_request_context():
                self._defers = defers
        return defers

    def is_exempt(self) -> bool:
        view = current_app.view_functions.get(request.endpoint or "")
        if view is not None and getattr(view, EXEMPT_ATTR, False):
            return True
        return any(bp in self.exempt_blueprints for bp in request.blueprints)

    def hook(self) -> t.Callable[[], None]:
        """The ``before_request`` function to register: :meth:`check` for
        the methods that need a token, nothing else.

        A plain function that reaches the request through one context
        lookup, because it runs on every request of the app, most of them
        safe methods that need nothing.
        """
        methods = self.manager.settings.token_methods
        current_request = request._get_current_object  # type: ignore[attr-defined]
        check = self.check

        def gosession_check_token() -> None:
            if current_request().method in methods:
                check()

        return gosession_check_token

    def check(self) -> None:
        """Raise :class:`TokenError` on a bad token, for a request whose
        method needs one."""
        settings = self.manager.settings
        if request.method not in settings.token_methods or self.defers() or self.is_exempt():
            return
        sess = t.cast("ServerSession", session._get_current_object())  # type: ignore[attr-defined]
        sess.ensure_loaded()
        provided = request.headers.get(settings.token_header)
        if not provided:
            provided = request.form.get(settings.token_field)
        if sess.new:
            reason = "no-session"
        elif not provided:
            reason = "missing"
        elif not _matches(provided, sess.accepted_tokens):
            reason = "mismatch"
        elif settings.token_one_time and not self.manager.consume_token(sess):
            # Another request consumed it first (or the session moved).
            reason = "mismatch"
        else:
            return
        sess.discard_changes()
        signals.token_rejected.send(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            sid_hash=None if sess.new else label(t.cast(str, sess.key)),
            reason=reason,
        )
        raise TokenError(_DESCRIPTIONS[reason])


def _matches(provided: str, accepted: t.Iterable[str]) -> bool:
    given = provided.encode("utf-8", "replace")
    ok = False
    for token in accepted:
        # No early exit: every candidate is compared.
        ok |= hmac.compare_digest(given, token.encode())
    return ok


_DESCRIPTIONS = {
    "no-session": "This request needs a session token, but no session was found. "
    "Reload the page that sent it and try again.",
    "missing": "The session token is missing from this request.",
    "mismatch": "The session token of this request is invalid or has already been used.",
}
