"""The manager's calls to its provider: outage logging and record hygiene
in one place, so neither the manager nor the rotation code repeats them.
"""
from __future__ import annotations

import logging
import typing as t

from .errors import CorruptRecordError, ProviderError
from .ids import label
from .providers.base import DEAD_FIELD, Change, Outcome, Provider, Record

log = logging.getLogger("flask_gosession")


class Store:
    """A provider as the manager uses it.

    * An outage is logged once at ERROR when it starts and once at WARNING
      when it ends; the :class:`~flask_gosession.errors.ProviderError` is
      re-raised (the interface turns it into a 503).
    * A corrupt record is logged, removed and reads as no record.
    * A tombstone (a record being destroyed) reads as no record.
    """

    def __init__(self, provider: Provider) -> None:
        #: The provider every call goes to.
        self.provider = provider
        self._down = False

    def call(self, method: str, *args: t.Any) -> t.Any:
        """Call ``provider.<method>(*args)`` with outage logging."""
        try:
            result = getattr(self.provider, method)(*args)
        except ProviderError as err:
            if not self._down:
                self._down = True
                log.error("session store %s failed: %s", type(self.provider).__name__, err)
            else:
                log.debug("session store still failing: %s", err)
            raise
        if self._down:
            self._down = False
            log.warning("session store %s recovered", type(self.provider).__name__)
        return result

    def read(self, key: str, now: float, *, raw: bool = False) -> Record | None:
        """The record under ``key``, or ``None``.

        :param raw: return a tombstone too (destroying needs its fields).
        """
        try:
            record: Record | None = self.call("session_read", key, now)
        except CorruptRecordError as err:
            self.drop_corrupt(key, err)
            return None
        if record is not None and not raw and DEAD_FIELD in record.meta:
            return None
        return record

    def drop_corrupt(self, key: str, err: Exception) -> None:
        """Log and remove a record that cannot be decoded."""
        log.warning("discarding corrupt session record %s: %s", label(key), err)
        self.call("session_destroy", key)

    def init(self, key: str, record: Record) -> None:
        self.call("session_init", key, record)

    def create(self, key: str, record: Record) -> bool:
        return bool(self.call("session_create", key, record))

    def update(self, key: str, change: Change) -> Outcome:
        return t.cast(Outcome, self.call("session_update", key, change))

    def touch(self, key: str, atime: float) -> None:
        self.call("session_touch", key, atime)

    def destroy(self, key: str) -> None:
        self.call("session_destroy", key)
