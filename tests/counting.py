"""Instrumentation: count the calls a real provider receives.

Not a mock: every call goes through to the wrapped provider unchanged.
"""
from __future__ import annotations

import collections
import typing as t

from flask_gosession.providers.base import Change, Outcome, Provider, Record

OPERATIONS = ("session_init", "session_create", "session_read", "session_update", "session_touch",
              "session_destroy", "session_gc", "index_write", "index_read", "session_peek",
              "count_event")


class CountingProvider(Provider):
    """Wraps a provider and counts calls per operation."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner
        self.calls: collections.Counter[str] = collections.Counter()
        self.touches_on_read = inner.touches_on_read  # type: ignore[misc]
        self.native_ttl = inner.native_ttl  # type: ignore[misc]
        self.user_index = inner.user_index  # type: ignore[misc]
        self.counts_events = inner.counts_events  # type: ignore[misc]

    @property  # type: ignore[override]
    def clock(self) -> t.Callable[[], float]:
        return self.inner.clock

    @clock.setter
    def clock(self, value: t.Callable[[], float]) -> None:
        self.inner.clock = value

    def total(self) -> int:
        return sum(self.calls.values())

    def reset(self) -> None:
        self.calls.clear()

    def session_init(self, key: str, record: Record) -> None:
        self.calls["session_init"] += 1
        self.inner.session_init(key, record)

    def session_create(self, key: str, record: Record) -> bool:
        self.calls["session_create"] += 1
        return self.inner.session_create(key, record)

    def session_read(self, key: str, now: float) -> Record | None:
        self.calls["session_read"] += 1
        return self.inner.session_read(key, now)

    def session_update(self, key: str, change: Change) -> Outcome:
        self.calls["session_update"] += 1
        return self.inner.session_update(key, change)

    def session_touch(self, key: str, atime: float) -> None:
        self.calls["session_touch"] += 1
        self.inner.session_touch(key, atime)

    def session_destroy(self, key: str) -> None:
        self.calls["session_destroy"] += 1
        self.inner.session_destroy(key)

    def session_gc(self, max_lifetime: int) -> int:
        self.calls["session_gc"] += 1
        return self.inner.session_gc(max_lifetime)

    def index_write(self, user: str, write: t.Any, now: float) -> t.Any:
        self.calls["index_write"] += 1
        return self.inner.index_write(user, write, now)

    def index_read(self, user: str, now: float) -> t.Any:
        self.calls["index_read"] += 1
        return self.inner.index_read(user, now)

    def session_peek(self, keys: t.Sequence[str], now: float) -> t.Any:
        self.calls["session_peek"] += 1
        return self.inner.session_peek(keys, now)

    def count_event(self, name: str) -> None:
        self.calls["count_event"] += 1
        self.inner.count_event(name)

    def event_counts(self) -> dict[str, int] | None:
        return self.inner.event_counts()

    def session_count(self) -> int | None:
        return self.inner.session_count()

    def session_clear(self) -> int:
        return self.inner.session_clear()

    def close(self) -> None:
        self.inner.close()


def install(app: t.Any) -> CountingProvider:
    """Put a counter in front of the app's provider and return it."""
    manager = app.extensions["gosession"]
    counter = CountingProvider(manager.provider)
    manager.provider = counter
    return counter
