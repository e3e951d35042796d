"""An injectable clock, so expiry tests never sleep."""
from __future__ import annotations

import time


class FakeClock:
    """A clock that only moves when told to. Starts at the real time."""

    def __init__(self, start: float | None = None) -> None:
        self.now = float(time.time() if start is None else start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
