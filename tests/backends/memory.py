"""The memory backend: nothing to start."""
from __future__ import annotations

import pytest


@pytest.fixture
def backend_memory() -> dict:
    return {"GOSESSION_PROVIDER": "memory"}


@pytest.fixture
def corrupt_memory():  # type: ignore[no-untyped-def]
    """Factory: ``fn(provider)`` returns ``write(key, raw)`` storing raw bytes."""

    def factory(provider):  # type: ignore[no-untyped-def]
        def write(key: str, raw: bytes) -> None:
            provider._entries[bytes.fromhex(key)] = (provider.clock(), raw)

        return write

    return factory
