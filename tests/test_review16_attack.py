"""An outside review's attacks on issue 16: Memcached writes in two round
trips (the read's CAS id kept as the session's version, the save one
``cas``, the fast lane's shared connections) and the Prometheus metrics.

Everything runs over real HTTP on a threaded werkzeug server, against real
throwaway ``memcached`` processes this module may pause, kill and restart.
Tests whose docstring starts "Found by the review" reproduced a broken
promise, now fixed; the others are attacks the design held against, kept
as regression guards. Requests that must overlap are ordered by
events (a view waiting on a ``threading.Event`` the test sets, or a paused
server), never by sleeping.
"""
from __future__ import annotations

import json
import re
import threading
import typing as t

import pytest
from flask import session

import servers
from apps import make_app
from backends.memcached import unique_prefix
from clock import FakeClock
from flask_gosession import metrics
from flask_gosession.ids import store_key
from helpers import live_record, overlapping, together, token_and_cookie
from liveserver import request, serve

prometheus_client = pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry  # noqa: E402

#: The label values every gosession metric may carry: fixed sets only.
ALLOWED_LABELS = {
    "reason": {"age", "privilege", "destroy", "cleared", "revoked", "evicted", "idle", "absolute",
               "missing", "mismatch", "no-session", "reuse", "user-agent"},
    "source": {"flask-cookie", "flask-session"},
    "operation": set(metrics.OPERATIONS.values()),
    "provider": {"memcached"},
    "kind": set(metrics.ERROR_KINDS),
}


@pytest.fixture
def build(tmp_path: t.Any) -> t.Iterator[t.Callable[..., t.Any]]:
    """Apps on given memcached servers, each with its own key prefix and a
    gate route (``/held/<key>``: loads the session, waits for the test,
    then writes ``key``); closed afterwards."""
    built: list[t.Any] = []

    def make(*running: servers.ServerProcess, **extra: t.Any) -> t.Any:
        config = {
            "GOSESSION_PROVIDER": "memcached",
            "GOSESSION_MEMCACHED_SERVERS": [s.address for s in running],
            "GOSESSION_KEY_PREFIX": unique_prefix(),
            "GOSESSION_MEMCACHED_TIMEOUT": 1.0,
            **extra,
        }
        app = make_app(config, FakeClock(), str(tmp_path / f"instance{len(built)}"))
        app.config["loaded"], app.config["release"] = threading.Event(), threading.Event()

        @app.get("/held/<key>")
        def held(key: str) -> str:
            _ = session.get("a")  # loads: the version is read now
            app.config["loaded"].set()
            assert app.config["release"].wait(20)
            session[key] = "held"
            return "written"

        built.append(app)
        return app

    yield make
    for app in built:
        app.extensions["gosession"].close()


def new_session(port: int, **values: str) -> str:
    sid = None
    for key, value in values.items():
        status, _, new = request(port, f"/set/{key}/{value}", sid)
        assert status == 200
        sid = new or sid
    return t.cast(str, sid)


def value_of(port: int, sid: str, key: str) -> t.Any:
    status, body, _ = request(port, f"/get/{key}", sid)
    assert status == 200, body
    return json.loads(body)["value"]


# -- the fast lane and the pools after a restart ------------------------------------------


def test_restart_with_many_idle_lane_connections_is_invisible(build, memcached_server):
    """Found by the review (fixed: a stale connection drops every idle one,
    the lane's and the pools', before the one retry). After memcached
    restarts, requests failed with 503 although the server was back: the
    lane kept one idle connection per past concurrent call, all of them
    closed by the old server, and the provider's single retry took the next
    stale one from the deque, not a fresh connection (memcached.py module
    docs: "retried once on a fresh connection";
    test_restart_between_calls_is_invisible only has one idle connection).
    With N idle connections the first N/2 requests after the restart were
    503s, on every worker thread's provider."""
    app = build(memcached_server)
    with serve(app) as port:
        sid = new_session(port, a="1")
        statuses = overlapping(memcached_server, [lambda: request(port, "/get/a", sid)[0]] * 8)
        assert statuses == [200] * 8
        lane = app.extensions["gosession"].provider.lane
        assert len(lane._idle._idle) >= 6  # one per overlapping call
        memcached_server.restart()
        after = [request(port, "/get/a", sid)[0] for _ in range(4)]
    assert after == [200] * 4, f"statuses after the restart: {after}"


def test_restart_with_many_idle_pooled_connections_is_invisible(build, memcached_server):
    """Found by the review (fixed: as above). The same for the
    ``PooledClient``'s own pool (``set``, ``add``,
    ``delete``): new sessions stored by overlapping requests leave one pooled
    connection each; after a restart the single retry takes another stale
    one, so creating a session is a 503 while the server is up."""
    app = build(memcached_server)
    with serve(app) as port:
        statuses = overlapping(memcached_server, [lambda: request(port, "/set/a/1")[0]] * 8)
        assert statuses == [200] * 8
        memcached_server.restart()
        after = [request(port, "/set/a/1")[0] for _ in range(4)]
    assert after == [200] * 4, f"statuses after the restart: {after}"


def test_a_pair_restart_with_many_idle_connections_is_invisible(build, memcached_pair):
    """Found by the review (fixed: every server's idle connections are
    dropped). The same on two servers (``HashClient`` with pooling): a
    restarted server's stale pooled connections made its sessions 503s
    after it was back."""
    app = build(*memcached_pair)
    with serve(app) as port:
        sids = [new_session(port, a=str(n)) for n in range(8)]
        calls = [lambda sid=sid: request(port, "/get/a", sid)[0] for sid in sids for _ in range(3)]
        statuses = overlapping(memcached_pair[0], calls)
        assert statuses == [200] * len(calls)
        memcached_pair[0].restart()
        after = [request(port, "/get/a", sid)[0] for sid in sids]
    assert after == [200] * len(sids), f"statuses after the restart: {after}"


def test_killed_server_is_a_503_then_recovers_without_a_restart_of_the_app(build, memcached_server):
    """Held: a dead server is a 503 (never a 500) on every overlapping
    request, and once it is back (empty) new sessions work in the same app."""
    app = build(memcached_server)
    with serve(app) as port:
        sid = new_session(port, a="1")
        memcached_server.kill()
        statuses = together([lambda: request(port, "/get/a", sid)[0]] * 10)
        assert statuses == [503] * 10
        memcached_server.start()
        # The failed calls left no connection behind: the app recovers by
        # itself within a few requests.
        seen = [request(port, "/set/b/2")[0] for _ in range(12)]
        assert 500 not in seen and seen[-4:] == [200] * 4


def test_a_paused_server_is_a_503_and_late_replies_never_reach_other_requests(build, memcached_server):
    """Held: requests that time out on a paused server are 503s; their
    connections are dropped, so when the server wakes and answers them, no
    late reply is read by a later request: each session reads its own value."""
    app = build(memcached_server, GOSESSION_MEMCACHED_TIMEOUT=0.3)
    with serve(app) as port:
        sids = {n: new_session(port, a=f"v{n}" + "x" * (n * 997 % 6000)) for n in range(12)}
        memcached_server.pause()
        try:
            statuses = together([lambda sid=sid: request(port, "/get/a", sid)[0] for sid in sids.values()])
        finally:
            memcached_server.resume()
        assert statuses == [503] * len(sids)
        for _ in range(3):
            got = together([lambda n=n, sid=sid: (n, value_of(port, sid, "a")) for n, sid in sids.items()])
            assert all(value == f"v{n}" + "x" * (n * 997 % 6000) for n, value in got)


def server_connections(server: servers.ServerProcess) -> int:
    """``curr_connections`` of ``server`` (this probe's own included)."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as sock:
        sock.sendall(b"stats\r\n")
        reply = b""
        while not reply.endswith(b"END\r\n"):
            chunk = sock.recv(65536)
            assert chunk
            reply += chunk
    match = re.search(rb"STAT curr_connections (\d+)", reply)
    assert match is not None
    return int(match.group(1))


def test_timed_out_connections_are_closed_not_leaked(build, memcached_server):
    """Held: forty requests that time out on a paused server leave no
    connection open: once the server wakes, it holds no more connections
    than before the outage (the lane and the pool drop every connection
    whose exchange failed)."""
    app = build(memcached_server, GOSESSION_MEMCACHED_TIMEOUT=0.2)
    with serve(app) as port:
        sid = new_session(port, a="1")
        together([lambda: request(port, "/get/a", sid)[0]] * 4)
        before = server_connections(memcached_server)
        memcached_server.pause()
        try:
            statuses = [s for _ in range(4)
                        for s in together([lambda: request(port, "/get/a", sid)[0]] * 10)]
        finally:
            memcached_server.resume()
        assert statuses == [503] * 40
        for _ in range(100):  # the server reads the clients' FINs once awake
            if server_connections(memcached_server) <= before:
                break
            threading.Event().wait(0.05)
        assert server_connections(memcached_server) <= before
        assert value_of(port, sid, "a") == "1"


def test_a_paused_server_of_a_pair_fails_only_its_own_sessions(build, memcached_pair):
    """Held: with one server of two paused, the sessions on it are 503s
    within the timeout, the others keep working, and all work once it wakes."""
    app = build(*memcached_pair, GOSESSION_MEMCACHED_TIMEOUT=0.3)
    client = app.extensions["gosession"].provider.client
    with serve(app) as port:
        sids = [new_session(port, a=str(n)) for n in range(20)]
        prefix = app.config["GOSESSION_KEY_PREFIX"]
        home = {sid: client._get_client(prefix + store_key(sid)).server for sid in sids}
        victim = memcached_pair[0]
        assert {server[1] for server in home.values()} == {s.port for s in memcached_pair}
        victim.pause()
        try:
            got = together([lambda sid=sid: (sid, request(port, "/get/a", sid)[0]) for sid in sids])
        finally:
            victim.resume()
        for sid, status in got:
            assert status == (503 if home[sid][1] == victim.port else 200)
        assert [value_of(port, sid, "a") for sid in sids] == [str(n) for n in range(20)]


def test_a_server_killed_during_big_writes_is_503s_never_500s(build, memcached_server):
    """Held: memcached killed while big writes are in flight: each request is a
    200 or a 503 (each writer goes on until it sees the outage), never a 500;
    started again (empty), new sessions work."""
    app = build(memcached_server, GOSESSION_TOKEN_CHECK=False)
    with serve(app) as port:
        sid = new_session(port, a="1")
        form = {"Content-Type": "application/x-www-form-urlencoded"}

        def write(n: int) -> list[int]:
            """Write until the kill shows (a 503), at most 500 times."""
            seen: list[int] = []
            for r in range(500):
                seen.append(request(port, "/write", sid, method="POST", headers=form,
                                    body=f"k{n}={r}".encode() + b"z" * 150_000)[0])
                if seen[-1] != 200:
                    break
            return seen

        killer = threading.Thread(target=memcached_server.kill)
        calls = [lambda n=n: write(n) for n in range(5)] + [lambda: killer.start()]
        statuses = [s for result in together(calls)[:-1] for s in result]
        killer.join(10)
        assert set(statuses) <= {200, 503} and 503 in statuses
        memcached_server.start()
        seen = [request(port, "/set/b/2")[0] for _ in range(8)]
        assert 500 not in seen and seen[-3:] == [200] * 3


# -- concurrency guarantees with the one-cas save ------------------------------------------


@pytest.fixture(params=["one", "pair"])
def running(request: t.Any) -> list[servers.ServerProcess]:
    """One private memcached (the lane), or two (the ring client's pools)."""
    if request.param == "one":
        return [request.getfixturevalue("memcached_server")]
    return t.cast("list[servers.ServerProcess]", request.getfixturevalue("memcached_pair"))


def test_concurrent_big_writes_of_different_keys_all_survive(build, running):
    """Held: six requests of one session write different keys of ~120 KB each
    at once, four rounds (a record near the 1 MiB item limit, replies read in
    many chunks on shared lane connections): no write is lost, and every
    value read back is the one written, never another request's reply."""
    app = build(*running, GOSESSION_TOKEN_CHECK=False)
    writers, rounds, size = 6, 4, 120_000
    with serve(app) as port:
        sid = new_session(port, a="1")

        def writer(n: int) -> list[int]:
            statuses = []
            for r in range(rounds):
                body = f"k{n}={n}-{r}-" + "y" * size
                status, _, _ = request(port, "/write", sid, method="POST", body=body.encode(),
                                       headers={"Content-Type": "application/x-www-form-urlencoded"})
                statuses.append(status)
                assert status == 200
                got = value_of(port, sid, f"k{n}")
                assert got.startswith(f"{n}-{r}-") and len(got) == len(f"{n}-{r}-") + size
            return statuses

        results = together([lambda n=n: writer(n) for n in range(writers)])
        assert results == [[200] * rounds] * writers
        record = live_record(app, sid)
    assert sorted(record.data) == ["a"] + [f"k{n}" for n in range(writers)]
    for n in range(writers):
        assert record.data[f"k{n}"].startswith(f"{n}-{rounds - 1}-")


def held_write(app: t.Any, port: int, sid: str, key: str,
               meanwhile: t.Callable[[], t.Any]) -> tuple[t.Any, t.Any]:
    """Start ``/held/<key>`` for ``sid`` and wait until it has loaded the
    session; run ``meanwhile``; let the held request save. Returns
    (the held request's response, what ``meanwhile`` returned)."""
    held: list[t.Any] = []
    runner = threading.Thread(target=lambda: held.append(request(port, f"/held/{key}", sid)))
    runner.start()
    assert app.config["loaded"].wait(10)
    outcome = meanwhile()
    app.config["release"].set()
    runner.join(20)
    return held[0], outcome


def test_a_logout_during_a_write_is_never_undone_by_its_stale_cas(build, memcached_server):
    """Held: a request loads the session (keeping its CAS id), a logout
    destroys it, then the first request saves: its ``cas`` finds nothing and
    the session stays dead; the cookie is removed."""
    app = build(memcached_server)
    with serve(app) as port:
        sid = new_session(port, a="1")
        (status, _, new), logout = held_write(app, port, sid, "late",
                                              lambda: request(port, "/logout", sid))
        assert logout[0] == 200
        assert status == 200 and new is None
        assert live_record(app, sid) is None
        assert value_of(port, sid, "late") is None


def test_a_privilege_rotation_during_a_write_never_carries_the_old_ids_write(build, memcached_server):
    """Held: a request of the old id loads the session; a login
    (``regenerate``) moves it to a new id; the old request then saves. Its
    stale ``cas`` loses, the re-read finds a privilege forward (no grace
    window): the write never reaches the logged-in session, and the old id
    gets no cookie for it."""
    app = build(memcached_server)
    with serve(app) as port:
        sid = new_session(port, a="1")
        held, (status, _, moved) = held_write(app, port, sid, "planted",
                                              lambda: request(port, "/regenerate", sid))
        assert status == 200 and moved and moved != sid
        assert held[2] != moved  # the old id is never handed the new one
        assert value_of(port, moved, "planted") is None
        assert value_of(port, moved, "a") == "1"


def test_an_age_rotation_during_a_write_keeps_the_write_in_the_grace_window(build, memcached_server):
    """Held: a request loads the session, an age rotation moves it, then the
    request saves inside the grace window: its stale ``cas`` loses, and the
    write lands in the rotated session (handed to the client)."""
    app = build(memcached_server, GOSESSION_ROTATE_AFTER=900, GOSESSION_ROTATE_GRACE=30)
    clock = app.extensions["gosession"].clock
    with serve(app) as port:
        sid = new_session(port, a="1")

        def rotate() -> t.Any:
            clock.advance(901)
            return request(port, "/set/b/2", sid)

        held, (status, _, rotated) = held_write(app, port, sid, "late", rotate)
        assert status == 200 and rotated and rotated != sid
        assert held[0] == 200 and held[2] == rotated
        assert value_of(port, rotated, "late") == "held"
        assert value_of(port, rotated, "b") == "2"


def test_a_one_time_token_is_accepted_once_by_many_overlapping_posts(build, memcached_server):
    """Held: sixteen POSTs carrying one one-time token, all loaded at the
    same CAS id (the server is paused while they load): exactly one passes."""
    app = build(memcached_server, GOSESSION_TOKEN_CHECK=True, GOSESSION_TOKEN_ONE_TIME=True)
    field = app.config["GOSESSION_TOKEN_FIELD"]
    with serve(app) as port:
        token, sid = token_and_cookie(port)
        body = f"{field}={token}&x=1".encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        statuses = overlapping(memcached_server, [
            lambda: request(port, "/write", sid, method="POST", body=body, headers=headers)[0]
        ] * 16)
        assert sorted(statuses) == [200] + [400] * 15
        assert value_of(port, sid, "x") == "1"


# -- metrics ------------------------------------------------------------------------------


def with_metrics(app: t.Any) -> CollectorRegistry:
    registry = CollectorRegistry()
    metrics.install(app, registry)
    return registry


def samples(registry: CollectorRegistry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in registry.collect() for sample in family.samples
    }


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def test_counters_are_exact_under_concurrent_requests(build, memcached_server):
    """Held: 48 overlapping new sessions, then 48 overlapping writes to one
    session and 48 reads: every counter and histogram count is exact."""
    app = build(memcached_server)
    registry = with_metrics(app)
    with serve(app) as port:
        created = together([lambda: request(port, "/set/a/1")[0]] * 48)
        sid = new_session(port, a="1")
        writes = together([lambda n=n: request(port, f"/set/k{n}/v", sid)[0] for n in range(48)])
        reads = together([lambda: request(port, "/get/a", sid)[0]] * 48)
    assert created == writes == reads == [200] * 48
    assert value(registry, "gosession_sessions_created_total") == 49
    latency = "gosession_store_latency_seconds_count"
    assert value(registry, latency, operation="init", provider="memcached") == 49
    # One read per request that presented the cookie (48 writes, 48 reads,
    # and the 1 new session's later keys: none), one update per write.
    assert value(registry, latency, operation="read", provider="memcached") == 96
    assert value(registry, latency, operation="update", provider="memcached") == 48
    assert live_record(app, sid).data.keys() == {"a"} | {f"k{n}" for n in range(48)}


def test_a_dead_or_paused_memcached_with_metrics_is_a_503_counted_by_kind(build, memcached_server):
    """Held: with metrics on, a killed server makes every request a 503
    counted ``unavailable``, a paused one a 503 counted ``timeout``; the
    scrape itself still answers."""
    app = build(memcached_server, GOSESSION_MEMCACHED_TIMEOUT=0.3)
    registry = with_metrics(app)
    errors = "gosession_store_errors_total"
    with serve(app) as port:
        sid = new_session(port, a="1")
        memcached_server.pause()
        try:
            paused = together([lambda: request(port, "/get/a", sid)[0]] * 6)
        finally:
            memcached_server.resume()
        memcached_server.kill()
        dead = together([lambda: request(port, "/get/a", sid)[0]] * 6)
        assert prometheus_client.generate_latest(registry)
    assert paused == dead == [503] * 6
    assert value(registry, errors, kind="timeout", provider="memcached") == 6
    assert value(registry, errors, kind="unavailable", provider="memcached") == 6


def test_hostile_requests_never_widen_the_label_sets(build, memcached_server):
    """Held: junk cookies, forged and missing tokens, replayed rotated ids,
    odd user agents and huge paths give no label value outside fixed sets
    and no 500."""
    app = build(memcached_server, GOSESSION_TOKEN_CHECK=True, GOSESSION_BIND_USER_AGENT=True,
                GOSESSION_ROTATE_AFTER=900, GOSESSION_ROTATE_GRACE=30)
    registry = with_metrics(app)
    clock = app.extensions["gosession"].clock
    field = app.config["GOSESSION_TOKEN_FIELD"]
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    seen: list[int] = []
    with serve(app) as port:
        token, sid = token_and_cookie(port)
        for cookie in ["", "x" * 4000, "../../etc", sid + "0", sid.upper(), "\u00e9t\u00e9",
                       "a" * 43, sid[:-1] + ("A" if sid[-1] != "A" else "B")]:
            seen.append(request(port, "/get/a", cookie or None,
                                headers={"Cookie": f"gosessionid={cookie}"})[0])
            seen.append(request(port, "/write", cookie or None, method="POST",
                                body=f"{field}={token}&x=1".encode(), headers=form)[0])
        seen.append(request(port, "/write", sid, method="POST", body=b"x=1", headers=form)[0])
        seen.append(request(port, "/write", sid, method="POST",
                            body=f"{field}=forged{sid}&x=1".encode(), headers=form)[0])
        seen.append(request(port, "/get/a", sid, headers={"User-Agent": f"evil {sid}"})[0])
        _, sid2 = token_and_cookie(port)
        clock.advance(901)
        rotated = request(port, "/get/a", sid2)[2]
        clock.advance(60)
        seen.append(request(port, "/get/a", sid2)[0])  # reused past the grace window
        assert rotated
    assert 500 not in seen
    for (_, labels), _count in samples(registry).items():
        for name, label_value in labels:
            if name == "le":
                continue
            assert label_value in ALLOWED_LABELS[name], (name, label_value)
    assert value(registry, "gosession_hijacks_suspected_total", reason="reuse") == 1
    assert value(registry, "gosession_hijacks_suspected_total", reason="user-agent") == 1


def test_metrics_off_adds_nothing_to_the_request_path(build, memcached_server):
    """Held: without metrics the manager's store is the plain ``Store`` and
    no signal has a receiver from this module; installing twice reuses the
    first, another registry is refused, and a second app shares the metric
    objects of the registry, counting its own events."""
    from flask_gosession import signals
    from flask_gosession.errors import ConfigError
    from flask_gosession.store import Store

    app = build(memcached_server)
    assert type(app.extensions["gosession"].store) is Store
    for name in metrics._SIGNALS:
        assert not getattr(signals, name).receivers_for(app) or all(
            getattr(receiver, "__module__", "") != metrics.__name__
            for receiver in getattr(signals, name).receivers.values())
    registry = with_metrics(app)
    assert metrics.install(app, registry) is app.extensions[metrics.EXTENSION_KEY]
    with pytest.raises(ConfigError):
        metrics.install(app, CollectorRegistry())
    other = build(memcached_server)
    metrics.install(other, registry)
    with serve(app) as port, serve(other) as other_port:
        new_session(port, a="1")
        new_session(other_port, a="1")
        new_session(other_port, a="1")
    assert value(registry, "gosession_sessions_created_total") == 3
    assert re.search(r"gosession_sessions_created_total 3\.0",
                     prometheus_client.generate_latest(registry).decode())
    assert store_key("x") not in prometheus_client.generate_latest(registry).decode()


def test_the_active_sessions_gauge_counts_only_live_sessions(tmp_path):
    """Found by the review (fixed: the gauge reads the memory store's
    ``live_session_count``, records minus the forward stubs and tombstones
    it tracks on every write, O(1)): ``gosession_active_sessions`` counted
    every record of the memory store, including what a privilege rotation
    leaves behind (the old id's forward, kept until idle expiry) and what
    survives a logout: one session that logged in twice and then logged out
    showed as 2 active sessions. The gauge named "active sessions" grew by
    one per login and never showed zero after everyone logged out, until
    idle expiry."""
    app = make_app({"GOSESSION_PROVIDER": "memory"}, FakeClock(), str(tmp_path / "instance"))
    registry = with_metrics(app)

    def active() -> float:
        return value(registry, "gosession_active_sessions", provider="memory")

    with serve(app) as port:
        sid = new_session(port, a="1")
        assert active() == 1
        _, _, first = request(port, "/regenerate", sid)
        _, _, second = request(port, "/regenerate", t.cast(str, first))
        counted = [active()]
        assert request(port, "/logout", t.cast(str, second))[0] == 200
        counted.append(active())
    assert counted == [1, 0], f"one session, two logins, then a logout, counted as {counted}"


_MULTIPROCESS_APP = """
import sys
from apps import make_app
from clock import FakeClock
from prometheus_client import CollectorRegistry, generate_latest, multiprocess

app = make_app({"GOSESSION_PROVIDER": "memory", "GOSESSION_METRICS": True}, FakeClock(), sys.argv[1])
client = app.test_client()
client.get("/set/a/1")
client.get("/get/a")
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)  # what a gunicorn /metrics serves
sys.stdout.write(generate_latest(registry).decode())
"""


def test_store_latency_and_record_size_survive_multiprocess_mode(tmp_path):
    """Found by the review (fixed: with a multiprocess directory set at
    install time the two histograms are ``prometheus_client.Histogram``
    objects, written to the shared files): under ``prometheus_client``'s
    multiprocess mode (gunicorn workers: ``PROMETHEUS_MULTIPROC_DIR`` and a
    ``MultiProcessCollector``, as prometheus_flask_exporter's
    ``GunicornPrometheusMetrics`` serves them) the counters appeared but
    ``gosession_store_latency_seconds`` and ``gosession_record_size_bytes``
    vanished: they were custom collectors (metrics._Histogram) registered in
    one process's registry, never written to the shared files. The issue's
    own deployment (gunicorn, 4 workers) had no store latency at all."""
    import os
    import subprocess
    import sys

    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    tests = os.path.dirname(os.path.abspath(__file__))
    done = subprocess.run([sys.executable, "-c", _MULTIPROCESS_APP, str(tmp_path / "instance")],
                          cwd=tests, env={**env, "PYTHONPATH": tests}, capture_output=True,
                          text=True, timeout=60, check=True)
    names = {line.split("{")[0].split(" ")[0] for line in done.stdout.splitlines()
             if line and not line.startswith("#")}
    assert "gosession_sessions_created_total" in names  # the mode works for counters
    missing = {"gosession_store_latency_seconds_count", "gosession_record_size_bytes_count"} - names
    assert not missing, f"absent under multiprocess mode: {sorted(missing)}"
    # The right values: one create (an init), one read, one record sized.
    for sample in ('gosession_store_latency_seconds_count{operation="init",provider="memory"} 1.0',
                   'gosession_store_latency_seconds_count{operation="read",provider="memory"} 1.0',
                   'gosession_record_size_bytes_count{provider="memory"} 1.0'):
        assert sample in done.stdout.splitlines(), sample
    # As documented: the per-process gauge is not in the shared files.
    assert "gosession_active_sessions" not in names


def _after_fork_statuses(app: t.Any, sids: list[str], rounds: int) -> list[tuple[int, str]]:
    """What one preforked worker sees: each of ``sids`` read ``rounds``
    times, with a new session stored between reads (a pooled ``set``)."""
    client = app.test_client()
    seen = []
    for _ in range(rounds):
        for n, sid in enumerate(sids):
            client.set_cookie("gosessionid", sid)
            response = client.get("/get/a")
            got = response.json["value"] if response.status_code == 200 else None
            seen.append((response.status_code, "ok" if got == str(n) else f"{got!r} for {n}"))
            client.delete_cookie("gosessionid")
            seen.append((client.get("/set/b/1").status_code, "ok"))
    return seen


def test_connections_made_before_a_fork_are_never_shared_by_the_workers(build, running):
    """Found by the review (fixed: an ``os.register_at_fork`` hook empties
    the child's pools, ``_memcached_pools.forget_inherited``). A worker
    forked after the app used memcached (gunicorn
    ``--preload`` with a warm-up, any pre-fork request) shares the parent's
    pooled sockets. The lane starts afresh after ``fork()`` (``_idle.py``),
    but the ``HashClient``'s pools (every command on two servers) and the
    ``PooledClient``'s (``set``/``add``/``delete`` on one server) do not:
    one worker reads the reply meant for the other, so a request on a
    healthy server times out (a 503; on the pair also a session read as
    missing). At provider level pymemcache also raised a raw ``KeyError``
    naming the other process's full store key (a 500, and a full key in the
    log); swapped ``STORED``/``EXISTS`` replies of two ``cas`` could lose a
    write or accept a one-time token twice."""
    import os

    app = build(*running, GOSESSION_MEMCACHED_TIMEOUT=0.5)
    client = app.test_client()
    sids = []
    for n in range(12):
        client.delete_cookie("gosessionid")
        client.get(f"/set/a/{n}")
        sids.append(t.cast(str, client.get_cookie("gosessionid").value))  # type: ignore[union-attr]
    _after_fork_statuses(app, sids, 1)  # the pools hold connections now
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child worker: report and leave at once
        try:
            os.close(read_end)
            result = json.dumps(_after_fork_statuses(app, sids, 30)).encode()
        except BaseException as err:  # reported to the parent
            result = json.dumps([[0, repr(err)]]).encode()
        with os.fdopen(write_end, "wb") as out:
            out.write(result)
        os._exit(0)
    os.close(write_end)
    mine = _after_fork_statuses(app, sids, 30)
    with os.fdopen(read_end, "rb") as pipe:
        child = [tuple(pair) for pair in json.loads(pipe.read() or b"[]")]
    os.waitpid(pid, 0)
    bad = [seen for seen in mine + child if seen != (200, "ok")]
    assert len(child) == len(mine) and not bad, f"{len(bad)} bad of {len(mine) * 2}: {bad[:5]}"
