"""Rotating and destroying the current session from application code."""
from __future__ import annotations

import functools
import typing as t

from flask import current_app, session

if t.TYPE_CHECKING:
    from .manager import Manager
    from .session import ServerSession

F = t.TypeVar("F", bound=t.Callable[..., t.Any])


def _current() -> tuple[Manager, ServerSession]:
    manager: Manager = current_app.extensions["gosession"]
    return manager, session._get_current_object()  # type: ignore[attr-defined]


def regenerate() -> None:
    """Give the current session a new id, keeping its data.

    Call it on login and on any privilege change: the id in use until now
    is dead as soon as the response is saved (no grace window), so an id
    planted by an attacker never gains the new privileges. The token
    changes at once.
    """
    manager, sess = _current()
    manager.regenerate(sess)


def destroy() -> None:
    """Log out: remove the session from the store and expire the cookie.

    Ids rotated out of this session die with it. The request may go on
    using ``flask.session``, which is then a new, empty session.
    """
    manager, sess = _current()
    manager.destroy(sess)


def rotate_sid(view: F) -> F:
    """View decorator: the session moves to a new id when this view's
    response is saved, for login and privilege changes.

    The rotation is decided *before* the view runs, so that a form the view
    renders (a login form shown again after a wrong password, the GET of a
    GET+POST login view) already carries the token the next request needs.
    If the view raises, the rotation is cancelled. Works for sync and async
    views (the view is called through ``current_app.ensure_sync``).
    """

    @functools.wraps(view)
    def wrapper(*args: t.Any, **kwargs: t.Any) -> t.Any:
        manager, sess = _current()
        manager.regenerate(sess)
        try:
            return current_app.ensure_sync(view)(*args, **kwargs)
        except BaseException:
            sess.cancel_rotation()
            raise

    return t.cast(F, wrapper)
