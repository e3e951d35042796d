"""Names of the internal fields a record keeps in its ``meta`` part.

Short, because they are stored with every session. The manager owns them;
they are never among the user's keys. The forwarding field is
:data:`flask_gosession.providers.base.FORWARD_FIELD`, because providers act
on it too.
"""
from __future__ import annotations

#: Creation time (absolute timeout counts from here).
CREATED = "c"
#: When the current id was issued (rotation by age counts from here).
ISSUED = "i"
#: The per-session request token, sealed with the session id
#: (:func:`flask_gosession.ids.seal_token`): a store dump holds no usable
#: token.
TOKEN = "t"
#: Present (True) when the session is permanent in Flask's sense.
PERMANENT = "p"
#: Fingerprint of the User-Agent, with GOSESSION_BIND_USER_AGENT.
AGENT = "u"
#: Until when a rotated-out id keeps forwarding. Absent on a record moved
#: by a privilege rotation, which never forwards a request.
FORWARD_UNTIL = "fx"
#: When the forward mark was written (a missing target is only helped into
#: existence while the mark is this fresh: see ``rotation.py``).
FORWARD_AT = "fa"
#: The store key of the id this session replaced by age.
PREVIOUS = "b"
#: The user the session is bound to (:func:`flask_gosession.login_user_session`),
#: as a string.
USER = "n"
#: The public handle of the device in the user's index, kept across rotations.
HANDLE = "h"
#: The session's horizon in the user's index: an upper bound of its expiry,
#: refreshed before the session could outlive it (see ``users.py``).
HORIZON = "z"
#: What the device list shows (browser, OS, truncated address), kept so a
#: rotation can write the new id's index entry without reading the old one.
DEVICE = "d"
