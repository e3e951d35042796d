"""The per-request token checked on state-changing requests.

A token is 256 random bits from :mod:`secrets`, stored in the session's
metadata and compared in constant time. It is accepted from the form field
``GOSESSION_TOKEN_FIELD`` or the header ``GOSESSION_TOKEN_HEADER``.

An unsafe request that arrives with no session at all is rejected
(reason ``"no-session"``): there is no token it could match. Render a form
with :func:`gosession_token_field` first (that creates the session), or
exempt the view.
"""
from __future__ import annotations

import hmac
import typing as t

from flask import current_app, request, session
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
    """The current session's token, creating the session if needed."""
    manager: Manager = current_app.extensions["gosession"]
    return manager.token(t.cast("ServerSession", session._get_current_object()))  # type: ignore[attr-defined]


def gosession_token_field() -> Markup:
    """A hidden ``<input>`` carrying the token, for HTML forms."""
    field = current_app.extensions["gosession"].settings.token_field
    return Markup('<input type="hidden" name="{}" value="{}">').format(
        escape(field), escape(gosession_token())
    )


class TokenGuard:
    """Checks the token before unsafe requests; one per app.

    :param exempt_blueprints: names of blueprints whose views are exempt.
    """

    def __init__(self, manager: Manager, exempt_blueprints: t.AbstractSet[str]) -> None:
        self.manager = manager
        self.exempt_blueprints = exempt_blueprints

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
        if request.method not in settings.token_methods or self.is_exempt():
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
