"""The background GC, running every 0.05 s during a load, never removes a
live session.

Clients keep using their sessions on a real threaded server while the
fake clock moves forward in steps, so that a batch of abandoned sessions
ages past ``GOSESSION_MAX_LIFETIME`` and the GC thread has real work to do
at the same time. Every session used within the lifetime must survive,
through id rotations by age as well; the abandoned ones must be collected
(on the providers whose expiry the GC does; Redis and Memcached expire
records natively, in real time, and run no GC thread).
"""
from __future__ import annotations

import json
import threading
import time

import pytest

from backends import ALL_BACKENDS
from flask_gosession.ids import store_key
from liveserver import request, serve
from loadkit import quiet_server_log, report, run_threads

pytestmark = pytest.mark.slow

CLIENTS = 10
ABANDONED = 60
MAX_LIFETIME = 3600
#: How far the clock jumps at each step, and how often (real seconds).
STEP = 300
STEP_EVERY = 0.1
STEPS = 30  # 9000 s of fake time: every abandoned session expires twice over


@pytest.fixture(params=ALL_BACKENDS)
def backend_config(request):  # type: ignore[no-untyped-def]
    return request.getfixturevalue(f"backend_{request.param}")


@pytest.fixture
def app_config():  # type: ignore[no-untyped-def]
    return {
        "GOSESSION_TOKEN_CHECK": False,
        "GOSESSION_GC_INTERVAL": 0.05,
        "GOSESSION_MAX_LIFETIME": MAX_LIFETIME,
        "GOSESSION_REFRESH_INTERVAL": 60,
    }


def test_gc_never_removes_a_live_session(app, clock, request, capsys):
    manager = app.extensions["gosession"]
    provider = manager.provider
    native = getattr(provider, "native_ttl", False)  # no GC thread: expiry is the store's
    removed: list[int] = []
    original_gc = manager.gc

    def counting_gc() -> int:
        count = original_gc()
        removed.append(count)
        return count

    manager.gc = counting_gc  # type: ignore[method-assign]
    with quiet_server_log(), serve(app) as port:
        abandoned = []
        for n in range(ABANDONED):
            status, _, sid = request_(port, f"/set/old/{n}")
            assert status == 200 and sid
            abandoned.append(sid)
        stop = threading.Event()
        failures: list[str] = []
        requests = [0] * CLIENTS
        cookies: dict[int, str] = {}

        def client(n: int) -> None:
            status, _, sid = request_(port, f"/set/owner/{n}")
            assert status == 200 and sid
            cookies[n] = sid
            for _ in range(20_000):
                if stop.is_set():
                    return
                status, body, new = request_(port, "/get/owner", cookies[n])
                requests[n] += 1
                value = json.loads(body)["value"] if status == 200 else None
                if status != 200 or value != str(n):
                    failures.append(f"client {n}: {status} {body[:120]}")
                    return
                if new:
                    cookies[n] = new  # rotated by age
                time.sleep(0.005)

        def conductor() -> None:
            try:
                time.sleep(0.2)
                for _ in range(STEPS):
                    if failures:
                        return
                    clock.advance(STEP)
                    time.sleep(STEP_EVERY)
                time.sleep(0.2)
            finally:
                stop.set()

        def body(n: int) -> None:
            conductor() if n == CLIENTS else client(n)

        run_threads(CLIENTS + 1, body, limit=STEPS * STEP_EVERY + 60)
    assert failures == [], failures[:5]
    now = clock()
    for n, sid in cookies.items():
        record = provider.session_read(store_key(sid), now)
        assert record is not None and record.data["owner"] == str(n)
    if not native:
        assert sum(removed) >= ABANDONED, removed
        assert all(provider.session_read(store_key(sid), now) is None for sid in abandoned)
    gc_runs = len(removed)
    report(capsys, f"[gc] {request.node.callspec.params['backend_config']}: {sum(requests)} requests "
                   f"by {CLIENTS} live clients over {STEPS * STEP} s of fake time, {gc_runs} GC runs "
                   f"removed {sum(removed)} records, 0 live sessions lost")


def request_(port: int, path: str, cookie: str | None = None) -> tuple[int, str, str | None]:
    return request(port, path, cookie, timeout=20)


def test_file_gc_never_removes_a_temporary_file_being_written(tmp_path, capsys):
    """GC removes temporary files that crashed writers left behind, once
    they are ``STALE_TEMP_AGE`` old on the provider's clock. A temporary
    file that a live writer is still filling has the file system's time as
    its mtime until the record's atime is set at the end, so with a clock
    ahead of real time (an injected clock, like the one the GC test above
    ages sessions with) it looks stale. GC must still never remove it:
    the writer holds its stripe's lock, and a live write failing with
    ENOENT would be a 503 for a healthy store."""
    import hashlib

    from flask_gosession.errors import ProviderError
    from flask_gosession.providers.base import Change, Record
    from flask_gosession.providers.file import STALE_TEMP_AGE, FileProvider

    provider = FileProvider(tmp_path / "sessions")
    provider.clock = lambda: time.time() + 2 * STALE_TEMP_AGE  # type: ignore[method-assign]
    keys = [hashlib.sha256(b"gc-%d" % i).hexdigest() for i in range(8)]
    for key in keys:
        now = provider.clock()
        provider.session_init(key, Record({"blob": ""}, {"c": now, "i": now}, now))
    stop = threading.Event()
    failures: list[str] = []
    counts = {"writes": 0, "gc_runs": 0}

    def body(n: int) -> None:
        if n == 2:
            for _ in range(1_000_000):
                if stop.is_set():
                    return
                provider.session_gc(10**9)  # records never expire here, temp files may
                counts["gc_runs"] += 1
            return
        deadline = time.monotonic() + 3
        try:
            for i in range(100_000):
                if time.monotonic() > deadline or failures:
                    return
                key = keys[(i * 2 + n) % len(keys)]
                try:
                    provider.session_update(key, Change(set={"blob": "x" * 400_000}, atime=provider.clock()))
                    counts["writes"] += 1
                except ProviderError as err:
                    failures.append(str(err))
        finally:
            if n == 0:
                stop.set()

    run_threads(3, body, limit=60)
    assert failures == [], failures[:3]
    report(capsys, f"[gc] file temp files: {counts['writes']} large writes during "
                   f"{counts['gc_runs']} GC runs, 0 failed")
