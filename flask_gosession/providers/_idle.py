"""Idle connections of a provider's fast lane (``_redis_lane``,
``_memcached_lane``), shared by threads and safe across ``fork()``.

A deque holds them: ``pop`` and ``append`` are atomic, so threads need no
lock, and there are at most as many as there were concurrent calls. After
``fork()`` the child starts with none: the inherited ones are kept
referenced, never used, so the child neither writes to nor shuts down the
parent's sockets.
"""
from __future__ import annotations

import collections
import os
import typing as t


class IdleConnections:
    """The idle connections of one lane.

    :param new: builds a connection when none is idle.
    """

    def __init__(self, new: t.Callable[[], t.Any]) -> None:
        self._new = new
        self._idle: collections.deque[t.Any] = collections.deque()
        self._pid = os.getpid()
        self._inherited: list[t.Any] = []

    def take(self) -> t.Any:
        """An idle connection of this process, or a new one."""
        if self._pid != os.getpid():
            self._inherited.extend(self._idle)
            self._idle = collections.deque()
            self._pid = os.getpid()
        try:
            return self._idle.pop()
        except IndexError:
            return self._new()

    def put(self, connection: t.Any) -> None:
        """Keep ``connection`` for reuse: its last exchange completed."""
        self._idle.append(connection)

    def drain(self) -> t.Iterator[t.Any]:
        """Remove and yield every idle connection of this process (to close
        them); none in a child that has not taken one yet."""
        if self._pid != os.getpid():
            return
        while True:
            try:
                yield self._idle.pop()
            except IndexError:
                return
