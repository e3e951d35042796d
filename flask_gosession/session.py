"""The session object the application sees as ``flask.session``.

:class:`ServerSession` is a ``dict`` whose contents are loaded from the store
on first use, and which records what the request changed, key by key, so
that the manager can save only that.
"""
from __future__ import annotations

import re
import typing as t

from flask.sessions import SessionMixin

from .ids import SID_PATTERN
from .meta import PERMANENT, TOKEN, USER

if t.TYPE_CHECKING:
    from flask import Request

    from .manager import Manager

_MISSING = object()

# One ``name=value`` pair of a Cookie header, as werkzeug's parse_cookie
# reads it when no value is quoted.
_COOKIE_PAIR = re.compile(r'([^ \t=";]+)(?:[ \t]*=[ \t]*([^ \t";]*))?', re.ASCII)


def cookie_value(request: Request, name: str) -> str | None:
    """``request.cookies.get(name)``, without parsing every cookie.

    The pairs of a header without quoted values are read one by one, as
    werkzeug reads them, until ``name`` is found; a header with a quote
    goes to werkzeug's full parser.
    """
    header = request.environ.get("HTTP_COOKIE")
    if not header:
        return None
    if '"' in header:
        return request.cookies.get(name)
    for part in header.split(";"):
        pair = _COOKIE_PAIR.fullmatch(part.strip(" \t"))
        if pair is not None and pair.group(1) == name:
            return pair.group(2) or ""
    return None


#: Appended to the cookie value of a permanent session (``<sid>.p``), so
#: that a request which never touches the session can still refresh the
#: cookie's ``Expires`` without reading the store. ``.`` is outside the id
#: alphabet, so the flag can never be part of an id.
PERMANENT_FLAG = ".p"


def split_flag(value: str | None) -> tuple[str | None, bool]:
    """Split a presented cookie value into the id and the permanence flag.

    Only one trailing :data:`PERMANENT_FLAG` is removed; what remains must
    still be an id of the exact issued shape, or it is refused as before.
    """
    if value is not None and value.endswith(PERMANENT_FLAG):
        return value[:-2], True
    return value, False


class ServerSession(dict, SessionMixin):  # type: ignore[type-arg]
    """A lazily loaded, change-tracking session.

    Flask opens a session for every request, so opening must cost nothing:
    the store is read only when the application first reads or writes the
    session. Every dict method loads first; every mutator records the keys
    it sets or deletes.

    Internal state (creation time, token, ...) lives in :attr:`meta`, never
    among the user's keys.
    """

    # Scalar state starts as these class attributes, so that opening a
    # session (every request, used or not) assigns almost nothing.

    #: True when the session has no stored record yet.
    new: bool = True
    #: True once the application used the session (set by Flask too).
    accessed: bool = False
    #: True once the store was read (or found to have nothing to read).
    loaded: bool = False
    _modified = False
    _explicit_modified = False
    #: True when the client sent no cookie and the id came from the URL.
    via_url: bool = False
    #: The id a pending rotation will move to, chosen when the rotation
    #: is decided so that URLs built during the request already carry it.
    next_sid: str | None = None
    _sid: str | None = None
    #: The store key of :attr:`sid` once known.
    key: str | None = None
    #: Last access time as stored.
    atime: float = 0.0
    #: The raw request token of this session (the store keeps it sealed
    #: with the id), or ``None`` if it has none yet.
    token: str | None = None
    #: Set when :attr:`token` must be written on save.
    token_changed: bool = False
    #: Tokens an unsafe request may present (current, and during a
    #: grace window the token of the id the client still holds).
    accepted_tokens: tuple[str, ...] = ()
    #: Set when the session must be stored even without user keys
    #: (a token was rendered for an anonymous visitor).
    pinned: bool = False
    #: ``"age"`` or ``"privilege"`` when the id must change on save.
    rotate: str | None = None
    #: Set when the response must carry a new cookie value.
    reissue: bool = False
    #: Set when this request's changes must be dropped (token failure).
    discard: bool = False
    #: Set when a presented id was refused, so its cookie is removed.
    refused: bool = False
    _presented: str | None = None
    #: Set when the presented cookie value carried :data:`PERMANENT_FLAG`.
    _flagged: bool = False
    _undo: tuple[t.Any, ...] | None = None
    #: The request whose cookie names the session, until it is read.
    _request: t.Any = None
    #: The id whose key is already in the user's index for this request
    #: (set by binding and by a rotation of a bound session).
    indexed_as: str | None = None
    #: The store's version of the record loaded (:attr:`Record.version
    #: <flask_gosession.providers.base.Record.version>`), until a write of
    #: this request uses it (:meth:`take_version`): memcached then writes
    #: in one round trip instead of two.
    version: t.Any = None
    #: What this request knows of the record's encryption (its seed and
    #: derived ciphers; :class:`flask_gosession.encryption.Vault`), or ``None``.
    vault: t.Any = None
    #: The earlier session system's cookie to delete from the client
    #: (:mod:`flask_gosession.importing`), or ``None``.
    old_cookie: str | None = None
    #: The earlier session this new one was imported from
    #: (:class:`flask_gosession.importing.Imported`), until it is saved.
    imported: t.Any = None

    def __init__(self, manager: Manager, presented: str | None = None, via_url: bool = False,
                 *, request: Request | None = None) -> None:
        # dict.__init__ is not called: the dict starts empty anyway.
        self._manager = manager
        if request is not None:
            # The cookie is parsed only when the session is first used: a
            # request that never touches the session never pays for it.
            self._request = request
        elif via_url:
            self._presented = presented  # an id in a URL never carries the flag
        else:
            self._presented, self._flagged = split_flag(presented)
        if via_url:
            self.via_url = True
        # The change-tracking containers below are created by _ensure(), on
        # first use: nothing reads or writes them before the session loads.

    #: Keys set by this request.
    set_keys: set[str]
    #: Keys deleted by this request.
    deleted_keys: set[str]
    #: Keys read by this request (saved too after ``modified = True``).
    read_keys: set[str]
    #: Internal fields as stored (plus pending changes in meta_changes).
    meta: dict[str, t.Any]
    #: Internal fields changed by this request; ``None`` deletes one.
    meta_changes: dict[str, t.Any]
    #: ``(user, store key)`` pairs to remove from users' indexes once the
    #: response is saved (an unbinding).
    unindex: list[tuple[str, str]]

    @property
    def presented(self) -> str | None:
        """The id the client presented (cookie or URL), not yet validated."""
        request = self._request
        if request is not None:
            self._request = None
            self._presented, self._flagged = split_flag(
                cookie_value(request, self._manager.settings.cookie_name))
        return self._presented

    def flagged_permanent(self) -> bool:
        """Whether the client's cookie is a well-formed id flagged
        permanent (``<sid>.p``). No store call: the flag is the client's
        word, so it only decides whether the cookie's ``Expires`` is
        refreshed on a request that never uses the session.

        Costs a substring search when the cookie header has no flag at all
        (the common, non-permanent case); only a header with one is parsed.
        """
        request = self._request
        if request is not None:
            header = request.environ.get("HTTP_COOKIE")
            if not header or PERMANENT_FLAG not in header:
                return False
        presented = self.presented
        return self._flagged and presented is not None and SID_PATTERN.match(presented) is not None

    # -- identity -----------------------------------------------------------

    @property
    def cookie_text(self) -> str:
        """What the cookie must hold: :attr:`sid`, plus
        :data:`PERMANENT_FLAG` for a permanent session."""
        sid = self.sid
        return sid + PERMANENT_FLAG if self.permanent else sid

    @property
    def sid(self) -> str:
        """The session id. A new session gets its id when first asked."""
        self._ensure()
        if self._sid is None:
            self._manager.assign_new_id(self)
        return t.cast(str, self._sid)

    @property
    def has_sid(self) -> bool:
        return self._sid is not None

    def set_identity(self, sid: str | None, key: str | None) -> None:
        """Name the session (a new one gets its id on first use)."""
        self._sid = sid
        self.key = key

    # -- transitions: the manager changes a session only through these -----

    def refuse(self) -> None:
        """The presented id was refused: stay new, and drop its cookie."""
        self.refused = True

    def adopt(self, values: dict[str, t.Any], meta: dict[str, t.Any], atime: float,
              sid: str, key: str, *, token: str | None, accepted: tuple[str, ...],
              moved: bool, version: t.Any = None) -> None:
        """Become the stored session ``sid``, loaded from the store.

        :param moved: the client presented an id that forwards here, so
            the response must hand it ``sid``.
        :param version: the loaded record's :attr:`version`.
        """
        dict.clear(self)
        dict.update(self, values)
        self.meta = meta
        self.atime = atime
        self.new = False
        self.token = token
        self.accepted_tokens = accepted
        if moved:
            self.reissue = True
        self.version = version
        self.set_identity(sid, key)

    def take_imported(self, values: dict[str, t.Any], meta: dict[str, t.Any],
                      imported: t.Any) -> None:
        """Hold the values of an earlier session system's session (a new
        session only); ``meta`` fields set to ``None`` are left out."""
        dict.update(self, values)
        self.meta.update({k: v for k, v in meta.items() if v is not None})
        self.imported = imported
        self._modified = True

    def stored(self, meta: dict[str, t.Any], atime: float) -> None:
        """A new session was written to the store under its id."""
        self.new = False
        self.meta = meta
        self.atime = atime

    def plan_rotation(self, reason: str | None, next_sid: str | None,
                      token: str | None = None) -> None:
        """Move to ``next_sid`` when saved (``"age"`` or ``"privilege"``;
        ``None`` for a session not stored yet, which has no id to leave).

        :param token: a new request token to take at once, so that forms
            rendered from now on carry the one the next request needs.
        """
        self._undo = (self.rotate, self.next_sid, self.token, self.token_changed,
                      self.accepted_tokens)
        if reason is not None:
            self.rotate = reason
            self.next_sid = next_sid
        if token is not None:
            self.set_token(token)

    def cancel_rotation(self) -> None:
        """Undo the last :meth:`plan_rotation` (the view that asked for it
        failed), token included."""
        undo = self._undo
        if undo is not None:
            (self.rotate, self.next_sid, self.token, self.token_changed,
             self.accepted_tokens) = undo
            self._undo = None

    def moved_to(self, sid: str, key: str, meta: dict[str, t.Any]) -> None:
        """The save moved the session to ``sid`` (rotation or forward)."""
        self.rotate = None
        self.next_sid = None
        self.meta = meta
        self.version = None
        self.set_identity(sid, key)

    def start_over(self, *, keep: t.Iterable[str] = ()) -> None:
        """The stored session was destroyed: become new and empty, with no
        id, and remove the cookie unless something is stored again.

        :param keep: user keys carried into the fresh session (markers that
            another extension's ``after_request`` still acts on).
        """
        kept = {k: dict.__getitem__(self, k) for k in keep if dict.__contains__(self, k)}
        dict.clear(self)
        self.forget_changes()
        self._modified = True  # the session was emptied, as by clear()
        self.meta = {}
        self.token = None
        self.token_changed = False
        self.accepted_tokens = ()
        self.new = True
        self.pinned = False
        self.rotate = None
        self.next_sid = None
        self.reissue = False
        self.refused = True
        self.indexed_as = None
        self.version = None
        self.set_identity(None, None)
        for key, value in kept.items():
            self[key] = value

    def set_token(self, token: str, *, pin: bool = False) -> None:
        """Give the session a new request token, written on save.

        :param pin: store the session even if it holds no user key (a
            token rendered for an anonymous visitor must be checkable).
        """
        self.token = token
        self.token_changed = True
        self.accepted_tokens = (token,)
        self._modified = True
        if pin:
            self.pinned = True

    def take_version(self) -> t.Any:
        """The loaded record's :attr:`version`, for the first write of this
        request; ``None`` afterwards, since that write made it stale."""
        version, self.version = self.version, None
        return version

    def token_consumed(self, token: str, sealed: str) -> None:
        """A one-time token was replaced in the store by ``token`` (sealed
        as ``sealed``): nothing is left to write for it."""
        self.token = token
        self.token_changed = False
        self.accepted_tokens = (token,)
        self.meta[TOKEN] = sealed

    def discard_changes(self) -> None:
        """Drop this request's changes when the response is saved."""
        self.discard = True

    @property
    def has_nothing_to_store(self) -> bool:
        """True when the session holds no user key and need not be stored."""
        return not dict.__len__(self) and not self.pinned

    def snapshot(self) -> dict[str, t.Any]:
        """Every user key and value, read without being tracked."""
        return dict(dict.items(self))

    def changed_values(self) -> dict[str, t.Any]:
        """The user keys this request set (or read, after ``modified = True``)
        with their current values, read without being tracked."""
        return {k: dict.__getitem__(self, k) for k in self.changed_keys()}

    @property
    def user_id(self) -> str | None:
        """The user this session is bound to (:func:`~flask_gosession.login_user_session`),
        or ``None``. Always a string, as Flask-Login's ``get_id()`` is."""
        self._ensure()
        user = self.meta.get(USER)
        return user if isinstance(user, str) else None

    # -- Flask's SessionMixin ---------------------------------------------

    @property
    def permanent(self) -> bool:
        self._ensure()
        return bool(self.meta.get(PERMANENT, False))

    @permanent.setter
    def permanent(self, value: bool) -> None:
        self._ensure()
        value = bool(value)
        if value != bool(self.meta.get(PERMANENT, False)):
            self.set_meta(PERMANENT, True if value else None)

    @property
    def modified(self) -> bool:
        return self._modified

    @modified.setter
    def modified(self, value: bool) -> None:
        # Only the application sets this directly: it mutated a value in
        # place, so every key it read may have changed.
        self._modified = bool(value)
        self._explicit_modified = bool(value)

    # -- loading ------------------------------------------------------------

    def ensure_loaded(self) -> None:
        """Read the store now if this request has not yet done so."""
        self._ensure()

    def _ensure(self) -> None:
        if not self.loaded:
            self.set_keys = set()
            self.deleted_keys = set()
            self.read_keys = set()
            self.meta = {}
            self.meta_changes = {}
            self.unindex = []
            self.loaded = True
            self.accessed = True
            self._manager.load(self)

    def set_meta(self, name: str, value: t.Any) -> None:
        """Change an internal field; ``None`` deletes it."""
        if value is None:
            self.meta.pop(name, None)
        else:
            self.meta[name] = value
        self.meta_changes[name] = value
        self._modified = True

    def reset(self) -> None:
        """Forget every tracked change and clear :attr:`modified` (after a
        destroy)."""
        self.forget_changes()
        self._modified = False

    def forget_changes(self) -> None:
        """Forget the tracked change sets once they are saved.

        :attr:`modified` and :attr:`accessed` keep their values, as Flask
        leaves them after saving: code that runs after the response (a
        ``teardown_request``, a test) still sees what the request did.
        """
        self.set_keys.clear()
        self.deleted_keys.clear()
        self.read_keys.clear()
        self.meta_changes.clear()
        self.token_changed = False
        self._explicit_modified = False

    def changed_keys(self) -> set[str]:
        """Keys whose current value must be written on save."""
        if self._explicit_modified:
            return (self.set_keys | self.read_keys) & dict.keys(self)
        return self.set_keys

    @property
    def dirty(self) -> bool:
        return bool(self.set_keys or self.deleted_keys or self.meta_changes
                    or self.token_changed or (self._explicit_modified and self.read_keys))

    # -- tracked mutators -------------------------------------------------

    def _wrote(self, key: str) -> None:
        self.set_keys.add(key)
        self.deleted_keys.discard(key)
        self._modified = True

    def _removed(self, key: str) -> None:
        self.deleted_keys.add(key)
        self.set_keys.discard(key)
        self._modified = True

    def __setitem__(self, key: str, value: t.Any) -> None:
        self._ensure()
        dict.__setitem__(self, key, value)
        self._wrote(key)

    def __delitem__(self, key: str) -> None:
        self._ensure()
        dict.__delitem__(self, key)
        self._removed(key)

    def update(self, *args: t.Any, **kwargs: t.Any) -> None:
        self._ensure()
        for key, value in dict(*args, **kwargs).items():
            dict.__setitem__(self, key, value)
            self._wrote(key)

    def __ior__(self, other: t.Any) -> ServerSession:
        self.update(other)
        return self

    def setdefault(self, key: str, default: t.Any = None) -> t.Any:
        self._ensure()
        self.read_keys.add(key)
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        dict.__setitem__(self, key, default)
        self._wrote(key)
        return default

    def pop(self, key: str, default: t.Any = _MISSING) -> t.Any:
        self._ensure()
        if dict.__contains__(self, key):
            self._removed(key)
            return dict.pop(self, key)
        if default is _MISSING:
            raise KeyError(key)
        return default

    def popitem(self) -> tuple[str, t.Any]:
        self._ensure()
        key, value = dict.popitem(self)
        self._removed(key)
        return key, value

    def clear(self) -> None:
        self._ensure()
        for key in dict.keys(self):
            self.deleted_keys.add(key)
        self.set_keys.clear()
        dict.clear(self)
        self._modified = True

    # -- tracked readers --------------------------------------------------

    def __getitem__(self, key: str) -> t.Any:
        self._ensure()
        self.read_keys.add(key)
        return dict.__getitem__(self, key)

    def get(self, key: str, default: t.Any = None) -> t.Any:
        self._ensure()
        self.read_keys.add(key)
        return dict.get(self, key, default)

    def __contains__(self, key: object) -> bool:
        self._ensure()
        return dict.__contains__(self, key)

    def __iter__(self) -> t.Iterator[str]:
        self._ensure()
        return dict.__iter__(self)

    def __len__(self) -> int:
        self._ensure()
        return dict.__len__(self)

    def __bool__(self) -> bool:
        self._ensure()
        return dict.__len__(self) > 0

    def keys(self) -> t.KeysView[t.Any]:  # type: ignore[override]
        self._ensure()
        return dict.keys(self)

    def _read_all(self) -> None:
        self.read_keys.update(dict.keys(self))

    def values(self) -> t.ValuesView[t.Any]:  # type: ignore[override]
        self._ensure()
        self._read_all()
        return dict.values(self)

    def items(self) -> t.ItemsView[t.Any, t.Any]:  # type: ignore[override]
        self._ensure()
        self._read_all()
        return dict.items(self)

    def copy(self) -> dict[str, t.Any]:
        self._ensure()
        self._read_all()
        return dict(dict.items(self))

    def __or__(self, other: t.Any) -> dict[str, t.Any]:  # type: ignore[override]
        return self.copy() | dict(other)

    def __reversed__(self) -> t.Iterator[str]:
        self._ensure()
        return dict.__reversed__(self)

    def __eq__(self, other: object) -> bool:
        self._ensure()
        return dict.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if not self.loaded:
            return f"<{type(self).__name__} (not loaded)>"
        return f"<{type(self).__name__} {dict.__repr__(self)}>"

    def __reduce__(self) -> t.NoReturn:
        raise TypeError("a ServerSession cannot be pickled; copy it to a dict")
