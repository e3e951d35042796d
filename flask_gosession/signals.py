"""Lifecycle signals (blinker). The sender is always the Flask app.

No signal ever carries a raw session id: ``sid_hash`` (and ``old``/``new``)
are short prefixes of the SHA-256 store key (:func:`flask_gosession.ids.label`).
"""
from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

#: A new session was stored for the first time. Kwargs: ``sid_hash``.
session_created = _signals.signal("gosession-session-created")

#: A session moved to a new id. Kwargs: ``old``, ``new`` (hash labels),
#: ``reason`` (``"age"`` or ``"privilege"``).
session_rotated = _signals.signal("gosession-session-rotated")

#: A session was removed on purpose. Kwargs: ``sid_hash``, ``reason``
#: (``"destroy"``, ``"cleared"`` or ``"revoked"``).
session_destroyed = _signals.signal("gosession-session-destroyed")

#: A read found the session expired and discarded it. Kwargs: ``sid_hash``,
#: ``reason`` (``"idle"`` or ``"absolute"``).
session_expired = _signals.signal("gosession-session-expired")

#: An unsafe request failed the token check. Kwargs: ``sid_hash`` (``None``
#: when the request had no session), ``reason`` (``"missing"``,
#: ``"mismatch"`` or ``"no-session"``).
token_rejected = _signals.signal("gosession-token-rejected")

#: A request looks like a stolen id is being used. Kwargs: ``sid_hash``,
#: ``reason`` (``"reuse"`` for a rotated-out id after its grace window,
#: ``"user-agent"`` for a binding mismatch), ``revoked`` (whether the
#: session the id led to was destroyed).
hijack_suspected = _signals.signal("gosession-hijack-suspected")

#: A session was imported from an earlier session system on first visit
#: (:mod:`flask_gosession.importing`). Kwargs: ``sid_hash`` (of the new
#: session), ``source`` (``"flask-cookie"`` or ``"flask-session"``).
session_imported = _signals.signal("gosession-session-imported")
