"""Record blinker signals sent during a test."""
from __future__ import annotations

import contextlib
import typing as t

from flask_gosession import signals

ALL = ("session_created", "session_rotated", "session_destroyed", "session_expired",
       "token_rejected", "hijack_suspected", "session_imported")


@contextlib.contextmanager
def captured() -> t.Iterator[list[tuple[str, t.Any, dict[str, t.Any]]]]:
    seen: list[tuple[str, t.Any, dict[str, t.Any]]] = []
    handlers = []
    for name in ALL:
        def handler(sender: t.Any, _name: str = name, **kwargs: t.Any) -> None:
            seen.append((_name, sender, kwargs))
        getattr(signals, name).connect(handler)
        handlers.append((name, handler))
    try:
        yield seen
    finally:
        for name, handler in handlers:
            getattr(signals, name).disconnect(handler)


def named(seen: list[tuple[str, t.Any, dict[str, t.Any]]], name: str) -> list[dict[str, t.Any]]:
    return [kwargs for n, _, kwargs in seen if n == name]
