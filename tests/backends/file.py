"""The file backend: a fresh directory per test, nothing to start."""
from __future__ import annotations

import os
import typing as t

import pytest


@pytest.fixture
def backend_file(tmp_path) -> dict[str, t.Any]:  # type: ignore[no-untyped-def]
    return {"GOSESSION_PROVIDER": "file", "GOSESSION_FILE_DIR": str(tmp_path / "sessions")}


@pytest.fixture
def corrupt_file() -> t.Callable[[t.Any], t.Callable[[str, bytes], None]]:
    """Factory: ``fn(provider)`` returns ``write(key, raw)`` storing raw bytes."""

    def factory(provider: t.Any) -> t.Callable[[str, bytes], None]:
        def write(key: str, raw: bytes) -> None:
            path = provider.path_for(key)
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            with open(path, "wb") as fh:
                fh.write(raw)

        return write

    return factory
