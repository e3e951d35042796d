"""What an app may show about the current session, without its id.

:func:`session_info` is the public view of the session an app's pages
describe ("your session", a rotation countdown, "you were signed out"):
labels instead of ids, and times as aware UTC datetimes. No store call
beyond the one that loading the session makes anyway.
"""
from __future__ import annotations

import datetime as dt
import typing as t
from dataclasses import dataclass

from .ids import is_valid_sid, label, store_key
from .meta import CREATED, ISSUED

if t.TYPE_CHECKING:
    from .session import ServerSession


@dataclass(frozen=True)
class SessionInfo:
    """The current session, as the response will leave it."""

    #: Public label of the id the response carries (a short hash prefix of
    #: its store key: safe to show and log, useless to present).
    label: str
    #: When the session was created (the absolute timeout counts from here).
    created_at: dt.datetime
    #: When the current id was issued.
    issued_at: dt.datetime
    #: When an age rotation will next replace the id, or ``None`` when
    #: ``GOSESSION_ROTATE_AFTER`` is off.
    rotates_at: dt.datetime | None
    #: True when this request moves the session to a new id (the label and
    #: ``issued_at`` are already the new id's).
    rotating: bool
    #: True when the session has no stored record yet.
    new: bool
    #: Label of an id the client presented and that was refused on this
    #: request (unknown, expired, revoked, rotated out), or ``None``: the
    #: way to tell "you were signed out" from a first visit.
    refused_label: str | None


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)


def session_info(session: t.Any = None) -> SessionInfo:
    """The :class:`SessionInfo` of ``session`` (default: ``flask.session``).

    Loads the session if this request has not yet; a new session gets its
    id (and so its label) now, as it would when first saved.
    """
    if session is None:
        from flask import session as current

        session = current._get_current_object()  # type: ignore[attr-defined]
    sess = t.cast("ServerSession", session)
    sess.ensure_loaded()
    manager = sess._manager
    now = manager.clock()
    rotating = sess.next_sid is not None and not sess.new
    sid = sess.next_sid if sess.next_sid is not None else sess.sid
    meta = sess.meta
    created = meta.get(CREATED, now)
    issued = now if rotating or sess.new else meta.get(ISSUED, now)
    after = manager.settings.rotate_after
    presented = sess.presented
    refused = presented if sess.refused and presented and is_valid_sid(presented) else None
    return SessionInfo(
        label=label(store_key(sid)),
        created_at=_utc(created),
        issued_at=_utc(issued),
        rotates_at=None if after is None else _utc(issued + after),
        rotating=rotating,
        new=sess.new,
        refused_label=None if refused is None else label(store_key(refused)),
    )
