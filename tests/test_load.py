"""Load: 50 concurrent clients on a real threaded server, on every provider.

Fifty client threads share 25 sessions, two per session, and run a bounded
loop of requests: each writes keys of its own, increments a counter of its
own (read-modify-write of one key; only that client writes it), and reads
its earlier writes back. Required: zero errors (every response a 200 with
the expected body) and zero lost writes (every key and every increment of
both clients is in the stored session at the end, beside the other
client's).
"""
from __future__ import annotations

import json
import threading
import time

import pytest

from backends import ALL_BACKENDS
from flask_gosession.ids import store_key
from liveserver import request as http_request
from liveserver import serve
from loadkit import quiet_server_log, report, run_threads

pytestmark = pytest.mark.slow

CLIENTS = 50
PER_SESSION = 2
ROUNDS = 24


@pytest.fixture(params=ALL_BACKENDS)
def backend_config(request):  # type: ignore[no-untyped-def]
    return request.getfixturevalue(f"backend_{request.param}")


def test_fifty_clients_no_errors_no_lost_writes(app, request, clock, capsys):
    name = request.node.callspec.params["backend_config"]
    provider = app.extensions["gosession"].provider
    lock = threading.Lock()
    errors: list[str] = []
    counts = {"requests": 0, "writes": 0, "increments": 0, "reads": 0}
    slowest = [0.0]

    def call(path: str, cookie: str) -> tuple[int, str]:
        started = time.monotonic()
        try:
            status, body, new = http_request(port, path, cookie, timeout=60)
        except OSError as err:
            status, body, new = 0, repr(err), None
        with lock:
            counts["requests"] += 1
            slowest[0] = max(slowest[0], time.monotonic() - started)
        if new not in (None, cookie):
            errors.append(f"{path}: the session id changed under load")
        return status, body

    with quiet_server_log(), serve(app) as port:
        sessions = []
        for s in range(CLIENTS // PER_SESSION):
            status, _, sid = http_request(port, f"/set/owner/s{s}")
            assert status == 200 and sid
            sessions.append(sid)

        def client(n: int) -> None:
            sid = sessions[n // PER_SESSION]
            for i in range(ROUNDS):
                if len(errors) > 20:
                    return
                status, body = call(f"/set/c{n}_{i}/v{i}", sid)
                if (status, body) != (200, "ok"):
                    errors.append(f"client {n} set {i}: {status} {body[:100]}")
                    continue
                with lock:
                    counts["writes"] += 1
                status, body = call(f"/incr/n{n}", sid)
                if (status, body) != (200, str(i + 1)):
                    errors.append(f"client {n} incr {i}: {status} {body[:100]}")
                    continue
                with lock:
                    counts["increments"] += 1
                if i % 4 == 3:
                    j = (i * 7) % (i + 1)
                    status, body = call(f"/get/c{n}_{j}", sid)
                    value = json.loads(body).get("value") if status == 200 else None
                    if value != f"v{j}":
                        errors.append(f"client {n} read c{n}_{j}: {status} {body[:100]}")
                    with lock:
                        counts["reads"] += 1

        started = time.monotonic()
        run_threads(CLIENTS, client, limit=300)
        elapsed = time.monotonic() - started

    assert errors == [], (f"slowest request {slowest[0]:.2f}s", errors[:10])
    lost = 0
    for s, sid in enumerate(sessions):
        record = provider.session_read(store_key(sid), clock())
        assert record is not None
        data = record.data
        expected = {"owner": f"s{s}"}
        for n in range(s * PER_SESSION, (s + 1) * PER_SESSION):
            expected.update({f"c{n}_{i}": f"v{i}" for i in range(ROUNDS)})
            expected[f"n{n}"] = ROUNDS
        lost += sum(1 for key, value in expected.items() if data.get(key) != value)
        assert set(data) == set(expected), set(expected) ^ set(data)
    assert lost == 0
    report(
        capsys,
        f"[load] {name}: {CLIENTS} clients, {counts['requests']} requests in {elapsed:.1f}s "
        f"({counts['requests'] / elapsed:.0f}/s): {counts['writes']} writes, "
        f"{counts['increments']} increments, {counts['reads']} read-backs, "
        f"slowest {slowest[0]:.2f}s; 0 errors, {lost} lost writes",
    )
