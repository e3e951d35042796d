"""Built-in session stores. Each module is imported only when selected."""
from __future__ import annotations

from .base import FORWARD_FIELD, Change, Outcome, Provider, Record

__all__ = ["FORWARD_FIELD", "Change", "Outcome", "Provider", "Record"]
