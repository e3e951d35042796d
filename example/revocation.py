"""Telling a user that their session was revoked because an old id was reused.

When a rotated-out id comes back after its grace window, flask-gosession
sends ``hijack_suspected`` (``reason="reuse"``) and, with
``GOSESSION_REVOKE_ON_REUSE``, destroys the session that id led to. That
signal fires in the request that presented the *old* id. The victim is
whoever holds the *newest* id, and their next request only finds that id
gone. So the example keeps a small notice board, keyed by public labels
(:func:`flask_gosession.ids.label`, never a raw id):

- on ``session_rotated`` (by age) it remembers which label replaced which;
- on ``hijack_suspected`` it follows those links from the reused label and
  marks every later label as revoked, and flags the current request
  (``g.gosession_reuse``), whose fresh session shows the message at once;
- a request whose cookie was refused asks :meth:`Board.take` with its
  cookie's label; a marked label yields the message once.

The board lives in the process (:class:`MemoryBoard`), or in Redis when
the sessions do (:class:`RedisBoard`), so that under ``gunicorn -w 4`` the
worker that detects the reuse and the one that serves the victim agree.
Entries expire after the idle timeout: no session outlives it.
"""
from __future__ import annotations

import collections
import threading
import time
import typing as t

from flask import Flask, g, has_request_context

from flask_gosession import signals

#: What the board's ``app.extensions`` entry is called.
EXTENSION = "gosession_example_board"
#: How many links and marks a :class:`MemoryBoard` keeps at most.
MEMORY_LIMIT = 10_000
#: The longest chain of rotations followed from a reused id.
MAX_HOPS = 64


class Board(t.Protocol):
    def link(self, old: str, new: str) -> None:
        """``new`` replaced ``old`` (labels)."""

    def successor(self, old: str) -> str | None:
        """The label that replaced ``old``, if known."""

    def mark(self, label: str) -> None:
        """The session ``label`` named was revoked for reuse."""

    def take(self, label: str) -> bool:
        """Whether ``label`` was marked; unmarks it (the message shows once)."""


class MemoryBoard:
    """A board in this process: bounded, thread-safe, entries expire."""

    def __init__(self, ttl: float, limit: int = MEMORY_LIMIT) -> None:
        self.ttl = ttl
        self.limit = limit
        self._links: collections.OrderedDict[str, tuple[str, float]] = collections.OrderedDict()
        self._marks: collections.OrderedDict[str, float] = collections.OrderedDict()
        self._lock = threading.Lock()

    def _put(self, table: collections.OrderedDict[str, t.Any], key: str, value: t.Any) -> None:
        with self._lock:
            table[key] = value
            table.move_to_end(key)
            while len(table) > self.limit:
                table.popitem(last=False)

    def link(self, old: str, new: str) -> None:
        self._put(self._links, old, (new, time.monotonic() + self.ttl))

    def successor(self, old: str) -> str | None:
        entry = self._links.get(old)
        return entry[0] if entry is not None and entry[1] > time.monotonic() else None

    def mark(self, label: str) -> None:
        self._put(self._marks, label, time.monotonic() + self.ttl)

    def take(self, label: str) -> bool:
        with self._lock:
            until = self._marks.pop(label, None)
        return until is not None and until > time.monotonic()


class RedisBoard:
    """A board in the sessions' Redis, under the sessions' key prefix plus
    ``example:``; one single-key command per call (Redis Cluster works)."""

    def __init__(self, client: t.Any, prefix: str, ttl: float) -> None:
        self.client = client
        self.prefix = f"{prefix}example:"
        self.ttl = max(1, int(ttl))

    def link(self, old: str, new: str) -> None:
        self.client.set(f"{self.prefix}next:{old}", new, ex=self.ttl)

    def successor(self, old: str) -> str | None:
        value = self.client.get(f"{self.prefix}next:{old}")
        return value.decode() if isinstance(value, bytes) else value

    def mark(self, label: str) -> None:
        self.client.set(f"{self.prefix}revoked:{label}", "1", ex=self.ttl)

    def take(self, label: str) -> bool:
        return self.client.delete(f"{self.prefix}revoked:{label}") == 1


def install(app: Flask) -> Board:
    """Give ``app`` its board (after ``init_app``) and return it."""
    manager = app.extensions["gosession"]
    ttl = float(manager.settings.max_lifetime)
    board: Board
    if app.config.get("GOSESSION_PROVIDER") == "redis":
        board = RedisBoard(manager.provider.client, manager.provider.key_prefix, ttl)
    else:
        board = MemoryBoard(ttl)
    app.extensions[EXTENSION] = board
    return board


def _board(app: t.Any) -> Board | None:
    return t.cast("Board | None", getattr(app, "extensions", {}).get(EXTENSION))


def _rotated(app: t.Any, *, old: str, new: str, reason: str, **_: t.Any) -> None:
    board = _board(app)
    if board is not None and reason == "age":
        board.link(old, new)


def _hijack(app: t.Any, *, sid_hash: str, reason: str, revoked: bool, **_: t.Any) -> None:
    board = _board(app)
    if board is None or reason != "reuse" or not revoked:
        return
    if has_request_context():
        g.gosession_reuse = True  # this request presented the reused id
    seen = {sid_hash}
    label = board.successor(sid_hash)
    while label is not None and label not in seen and len(seen) <= MAX_HOPS:
        board.mark(label)
        seen.add(label)
        label = board.successor(label)


# Connected once, for every app; an app without a board is ignored.
signals.session_rotated.connect(_rotated)
signals.hijack_suspected.connect(_hijack)
