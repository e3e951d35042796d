"""The memory backend: nothing to start."""
from __future__ import annotations

import pytest


@pytest.fixture
def backend_memory() -> dict:
    return {"GOSESSION_PROVIDER": "memory"}
