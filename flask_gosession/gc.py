"""The background garbage-collection thread: one per manager and process.

The Go design reschedules ``GC()`` with ``time.AfterFunc``; here a daemon
thread wakes every ``GOSESSION_GC_INTERVAL`` seconds. It is started on the
first request of each process rather than at ``init_app``, so that a
pre-forking server gets one per worker, after the fork; a forked child
notices that the thread it inherited the record of is not its own.
"""
from __future__ import annotations

import logging
import os
import threading
import typing as t

from .errors import ProviderError

log = logging.getLogger("flask_gosession")


class GCThread:
    """Runs ``collect`` every ``interval`` seconds in a daemon thread.

    :param collect: removes expired sessions and returns how many.
    :param interval: seconds between runs; ``0`` never starts a thread.
    """

    def __init__(self, collect: t.Callable[[], int], interval: float) -> None:
        self._collect = collect
        self._interval = interval
        self._lock = threading.Lock()
        #: The process the thread was started in (``None``: not started).
        self.pid: int | None = None
        self._stop = threading.Event()
        #: The running thread, if any.
        self.thread: threading.Thread | None = None

    def ensure_started(self) -> None:
        """Start the thread in this process unless already done (cheap
        enough for every request: one attribute read and a compare)."""
        if self.pid != os.getpid() and self._interval:
            self.start()

    def start(self) -> None:
        """Start the thread of this process (idempotent)."""
        with self._lock:
            if self.pid == os.getpid():
                return
            self.pid = os.getpid()
            if not self._interval:
                return
            self._stop = threading.Event()
            self.thread = threading.Thread(
                target=self._loop, args=(self._stop,), name="gosession-gc", daemon=True
            )
            self.thread.start()

    def stop(self, timeout: float | None = 5) -> None:
        """Stop the thread and wait for it to finish."""
        with self._lock:
            thread, self.thread = self.thread, None
            self._stop.set()
            self.pid = None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _loop(self, stop: threading.Event) -> None:
        while not stop.wait(self._interval):
            try:
                removed = self._collect()
                if removed:
                    log.debug("gc removed %d expired sessions", removed)
            except ProviderError as err:
                # The store's outage log already said so, once per outage.
                log.debug("session gc failed: %s", err)
            except Exception:  # keep the thread alive, and say why
                log.exception("session gc failed")
