"""Prometheus metrics (flask_gosession.metrics): scraped from ``/metrics``
after a scripted session life, on the memory, Redis and SQLite stores."""
from __future__ import annotations

import collections
import typing as t

import pytest
from flask.sessions import SecureCookieSessionInterface

pytest.importorskip("prometheus_client")

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from apps import make_app
from flask_gosession import metrics, signals
from flask_gosession.ids import new_sid, store_key
from flask_gosession.store import Store
from helpers import cookie_value

BACKENDS = ["memory", "redis", "sql_sqlite"]
PROVIDER_LABEL = {"memory": "memory", "redis": "redis", "sql_sqlite": "sql"}
SIGNAL_METRICS = (
    "gosession_sessions_created_total", "gosession_sessions_rotated_total",
    "gosession_sessions_destroyed_total", "gosession_sessions_expired_total",
    "gosession_sessions_imported_total", "gosession_tokens_rejected_total",
    "gosession_hijacks_suspected_total",
)
LIFE_CONFIG = {
    "GOSESSION_TOKEN_CHECK": True, "GOSESSION_GC_INTERVAL": 0, "GOSESSION_ROTATE_AFTER": 900,
    "GOSESSION_ROTATE_GRACE": 30, "GOSESSION_MAX_LIFETIME": 3600,
    "GOSESSION_IMPORT_FLASK_COOKIE": True,
}


@pytest.fixture(params=BACKENDS)
def backend_name(request: t.Any) -> str:
    return t.cast(str, request.param)


@pytest.fixture
def backend_config(request: t.Any, backend_name: str) -> dict[str, t.Any]:
    return t.cast("dict[str, t.Any]", request.getfixturevalue(f"backend_{backend_name}"))


@pytest.fixture
def app_config() -> dict[str, t.Any]:
    return dict(LIFE_CONFIG)


def add_metrics_view(app: t.Any, registry: t.Any) -> None:
    """A plain ``/metrics`` endpoint, exempt from the token check."""
    from flask_gosession import token_exempt

    @app.get("/metrics")
    @token_exempt
    def scrape() -> t.Any:
        return generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST}


def scrape(client: t.Any) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample ``/metrics`` answers: (name, labels) -> value."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def values(samples: dict[t.Any, float], name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: value for (n, labels), value in samples.items() if n == name}


def nonzero(found: dict[t.Any, float]) -> dict[t.Any, float]:
    """The samples that counted something (known label values start at 0)."""
    return {labels: value for labels, value in found.items() if value}


def by(label: str, found: dict[frozenset[tuple[str, str]], float]) -> dict[str, float]:
    return {dict(labels)[label]: value for labels, value in found.items()}


def count_calls(provider: t.Any) -> collections.Counter[str]:
    """Count the calls the store makes to ``provider`` (each passes
    through unchanged), per latency ``operation``."""
    calls: collections.Counter[str] = collections.Counter()
    for method, operation in metrics.OPERATIONS.items():
        inner = getattr(provider, method)

        def counted(*args: t.Any, _inner: t.Any = inner, _op: str = operation) -> t.Any:
            calls[_op] += 1
            return _inner(*args)

        setattr(provider, method, counted)
    return calls


def count_sizes(provider: t.Any) -> list[int]:
    """Record the sizes ``check_size`` accepts (after metrics hooked it)."""
    sizes: list[int] = []
    inner = provider.check_size

    def check_size(key: str, size: int) -> None:
        inner(key, size)
        sizes.append(size)

    provider.check_size = check_size
    return sizes


def token_of(client: t.Any) -> str:
    import re

    match = re.search(r'value="([^"]+)"', client.get("/token").text)
    assert match is not None
    return match.group(1)


def test_a_scripted_session_life_counts_every_event_exactly(app, clock, backend_name):
    registry = CollectorRegistry()
    metrics.install(app, registry)
    add_metrics_view(app, registry)
    provider = app.extensions["gosession"].provider
    calls = count_calls(provider)
    sizes = count_sizes(provider)
    client = app.test_client()

    # Session A: create, read, write, rotate by age and by privilege,
    # two rejected tokens, destroy.
    assert client.get("/set/a/1").status_code == 200                        # created
    assert client.get("/get/a").json["value"] == "1"                       # read
    assert client.get("/set/b/2").status_code == 200                        # write
    clock.advance(1000)
    before = cookie_value(client)
    assert client.get("/get/a").json["value"] == "1"                       # rotated: age
    assert cookie_value(client) != before
    assert client.get("/regenerate").status_code == 200                     # rotated: privilege
    assert client.post("/write", data={"x": "1"}).status_code == 400        # rejected: missing
    assert client.post("/write", data={"x": "1"},
                       headers={"X-GoSession-Token": "wrong"}).status_code == 400  # mismatch
    assert client.post("/write", data={"x": "1"},
                       headers={"X-GoSession-Token": token_of(client)}).status_code == 200
    assert client.get("/logout").status_code == 200                         # destroyed: destroy

    # A request without a session fails the token check too.
    assert app.test_client().post("/write", data={"x": "1"}).status_code == 400  # no-session

    # Session B expires idle.
    other = app.test_client()
    assert other.get("/set/a/1").status_code == 200                         # created
    clock.advance(3601)
    assert other.get("/get/a").json["value"] is None                        # expired: idle

    # Session C is rotated by age; its old id comes back after the grace
    # window: a suspected hijack, and the session is revoked.
    victim = app.test_client()
    assert victim.get("/set/a/1").status_code == 200                        # created
    old = cookie_value(victim)
    clock.advance(1000)
    assert victim.get("/get/a").status_code == 200                          # rotated: age
    clock.advance(31)
    thief = app.test_client()
    thief.set_cookie("gosessionid", t.cast(str, old))
    assert thief.get("/get/a").json["value"] is None                        # hijack: reuse
    assert victim.get("/get/a").json["value"] is None                       # revoked

    # A visitor with a Flask cookie session is imported (and created);
    # another sender's signal is not this app's.
    migrated = app.test_client()
    serializer = SecureCookieSessionInterface().get_signing_serializer(app)
    migrated.set_cookie("session", serializer.dumps({"a": "kept"}))
    assert migrated.get("/get/a").json["value"] == "kept"                   # imported
    signals.session_imported.send(object(), sid_hash="x", source="flask-cookie")

    samples = scrape(client)
    assert values(samples, "gosession_sessions_created_total") == {frozenset(): 4}
    assert by("reason", values(samples, "gosession_sessions_rotated_total")) == {
        "age": 2, "privilege": 1}
    assert by("reason", values(samples, "gosession_sessions_destroyed_total")) == {
        "destroy": 1, "revoked": 1}
    assert by("reason", values(samples, "gosession_sessions_expired_total")) == {"idle": 1}
    assert by("source", values(samples, "gosession_sessions_imported_total")) == {"flask-cookie": 1}
    assert by("reason", values(samples, "gosession_tokens_rejected_total")) == {
        "missing": 1, "mismatch": 1, "no-session": 1}
    assert by("reason", values(samples, "gosession_hijacks_suspected_total")) == {"reuse": 1}

    # Latency: one observation per store call, per operation.
    name = PROVIDER_LABEL[backend_name]
    counts = values(samples, "gosession_store_latency_seconds_count")
    assert {dict(labels)["provider"] for labels in counts} == {name}
    assert by("operation", counts) == {op: float(calls[op]) for op in set(metrics.OPERATIONS.values())}
    assert calls["read"] >= 10 and calls["init"] >= 3 and calls["update"] >= 2 and calls["destroy"] >= 1
    buckets = values(samples, "gosession_store_latency_seconds_bucket")
    inf = {dict(labels)["operation"]: v for labels, v in buckets.items() if dict(labels)["le"] == "+Inf"}
    assert inf == by("operation", counts)

    # Record sizes: every accepted check, with its size.
    assert sizes and values(samples, "gosession_record_size_bytes_count") == {
        frozenset({("provider", name)}): len(sizes)}
    assert values(samples, "gosession_record_size_bytes_sum") == {
        frozenset({("provider", name)}): sum(sizes)}

    # No store error happened (every kind is exported, at 0); only the
    # memory store has the gauge.
    errors = values(samples, "gosession_store_errors_total")
    assert by("kind", errors) == dict.fromkeys(metrics.ERROR_KINDS, 0.0)
    active = values(samples, "gosession_active_sessions")
    if backend_name == "memory":
        assert active == {frozenset({("provider", "memory")}): provider.live_session_count()}
    else:
        assert active == {}

    # No label value is an id, a hash label or anything else unbounded.
    allowed = {"reason", "source", "operation", "provider", "kind", "le"}
    for (_, labels) in samples:
        for key, value in labels:
            assert key in allowed, key
            assert len(value) <= 16, (key, value)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_corrupt_and_too_large_records_are_counted(request, app, backend_name):
    registry = CollectorRegistry()
    metrics.install(app, registry)
    add_metrics_view(app, registry)
    provider = app.extensions["gosession"].provider
    write = request.getfixturevalue(f"corrupt_{backend_name}")(provider)
    sid = new_sid()
    write(store_key(sid), b"\xff not a record")
    client = app.test_client()
    client.set_cookie("gosessionid", sid)
    assert client.get("/get/a").status_code == 200  # a corrupt record reads as none
    provider.max_record_size = 200
    assert client.get(f"/set/a/{'x' * 300}").status_code == 413
    samples = scrape(client)
    name = PROVIDER_LABEL[backend_name]
    assert nonzero(values(samples, "gosession_store_errors_total")) == {
        frozenset({("kind", "corrupt"), ("provider", name)}): 1,
        frozenset({("kind", "too_large"), ("provider", name)}): 1,
    }


@pytest.fixture
def private_redis_app(redis_server, clock, tmp_path):  # type: ignore[no-untyped-def]
    """An app with metrics (and ``/metrics``) on a private Redis this test
    may kill or freeze, with a short timeout."""
    app = make_app({"GOSESSION_PROVIDER": "redis", "GOSESSION_REDIS_URL": redis_server.url,
                    "GOSESSION_REDIS_TIMEOUT": 0.3, "GOSESSION_GC_INTERVAL": 0,
                    "GOSESSION_TOKEN_CHECK": False}, clock, str(tmp_path))
    registry = CollectorRegistry()
    metrics.install(app, registry)
    add_metrics_view(app, registry)
    yield app
    app.extensions["gosession"].close()


def store_errors(client: t.Any) -> dict[str, float]:
    """The Redis store's error counts that are not 0, by kind."""
    found = nonzero(values(scrape(client), "gosession_store_errors_total"))
    assert {dict(labels)["provider"] for labels in found} <= {"redis"}
    return by("kind", found)


def test_a_killed_redis_is_a_503_counted_unavailable(private_redis_app, redis_server):
    client = private_redis_app.test_client()
    assert client.get("/set/a/1").status_code == 200
    redis_server.kill()
    assert client.get("/get/a").status_code == 503
    assert store_errors(client) == {"unavailable": 1}
    # The failed read is timed too.
    assert by("operation", nonzero(values(scrape(client), "gosession_store_latency_seconds_count"))) == {
        "init": 1, "read": 1}


def test_a_frozen_redis_is_a_503_counted_timeout(private_redis_app, redis_server):
    client = private_redis_app.test_client()
    assert client.get("/set/a/1").status_code == 200
    redis_server.pause()
    try:
        assert client.get("/get/a").status_code == 503
    finally:
        redis_server.resume()
    assert client.get("/get/a").json["value"] == "1"  # recovered
    assert store_errors(client) == {"timeout": 1}


def test_timeouts_are_told_from_outages() -> None:
    from flask_gosession.errors import ProviderError

    def raised(cause: BaseException) -> ProviderError:
        try:
            try:
                raise cause
            except BaseException as err:
                raise ProviderError("failed") from err
        except ProviderError as err:
            return err

    redis = pytest.importorskip("redis")
    assert metrics.error_kind(raised(redis.exceptions.TimeoutError("slow"))) == "timeout"
    assert metrics.error_kind(raised(TimeoutError("slow"))) == "timeout"
    assert metrics.error_kind(raised(redis.exceptions.ConnectionError("refused"))) == "unavailable"
    assert metrics.error_kind(ProviderError("no cause")) == "unavailable"


def test_metrics_off_install_nothing(app):
    manager = app.extensions["gosession"]
    assert app.config["GOSESSION_METRICS"] is False
    assert metrics.EXTENSION_KEY not in app.extensions
    assert type(manager.store) is Store
    assert "check_size" not in vars(manager.provider)
    for name in metrics._SIGNALS:
        signal = getattr(signals, name)
        # Nothing connected for this app beyond what listens to every sender.
        assert set(signal.receivers_for(app)) == set(signal.receivers_for(object())), name


def test_the_setting_installs_into_the_default_registry(clock, tmp_path):
    from prometheus_client import REGISTRY

    app = make_app({"GOSESSION_METRICS": "true", "GOSESSION_GC_INTERVAL": 0,
                    "GOSESSION_TOKEN_CHECK": False}, clock, str(tmp_path))
    second = make_app({"GOSESSION_METRICS": True, "GOSESSION_GC_INTERVAL": 0,
                       "GOSESSION_TOKEN_CHECK": False}, clock, str(tmp_path))  # no duplicate error
    try:
        assert app.extensions[metrics.EXTENSION_KEY].registry is REGISTRY
        assert isinstance(app.extensions["gosession"].store, metrics.InstrumentedStore)
        created = REGISTRY.get_sample_value("gosession_sessions_created_total") or 0.0
        assert app.test_client().get("/set/a/1").status_code == 200
        assert second.test_client().get("/set/a/1").status_code == 200
        assert REGISTRY.get_sample_value("gosession_sessions_created_total") == created + 2
        # Installing again is a no-op; another registry is refused.
        assert metrics.install(app) is app.extensions[metrics.EXTENSION_KEY]
        from flask_gosession.errors import ConfigError

        with pytest.raises(ConfigError):
            metrics.install(app, CollectorRegistry())
    finally:
        app.extensions["gosession"].close()
        second.extensions["gosession"].close()


def test_two_apps_in_one_registry_count_their_own_events(clock, tmp_path):
    registry = CollectorRegistry()
    apps = [make_app({"GOSESSION_GC_INTERVAL": 0, "GOSESSION_TOKEN_CHECK": False}, clock,
                     str(tmp_path / str(n))) for n in range(2)]
    try:
        for app in apps:
            metrics.install(app, registry)
        assert apps[0].test_client().get("/set/a/1").status_code == 200
        assert registry.get_sample_value("gosession_sessions_created_total") == 1
        assert registry.get_sample_value(
            "gosession_record_size_bytes_count", {"provider": "memory"}) == 1
        assert registry.get_sample_value("gosession_active_sessions", {"provider": "memory"}) == 1
    finally:
        for app in apps:
            app.extensions["gosession"].close()


def test_coexists_with_prometheus_flask_exporter(clock, tmp_path):
    exporter = pytest.importorskip("prometheus_flask_exporter")
    registry = CollectorRegistry()
    app = make_app({"GOSESSION_GC_INTERVAL": 0, "GOSESSION_TOKEN_CHECK": False}, clock,
                   str(tmp_path))
    try:
        exporter.PrometheusMetrics(app, registry=registry)
        metrics.install(app, registry)
        client = app.test_client()
        assert client.get("/set/a/1").status_code == 200
        assert client.get("/get/a").status_code == 200
        samples = scrape(client)  # the exporter's own /metrics
        assert values(samples, "gosession_sessions_created_total") == {frozenset(): 1}
        assert by("operation", nonzero(values(samples, "gosession_store_latency_seconds_count"))) == {
            "init": 1, "read": 1}
        assert any(name.startswith("flask_http_request") for name, _ in samples)
    finally:
        app.extensions["gosession"].close()
