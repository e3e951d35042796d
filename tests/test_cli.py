"""``flask gosession gc|stats|clear`` on every backend."""
from __future__ import annotations

import re

import pytest

from backends import ALL_BACKENDS


@pytest.fixture(params=ALL_BACKENDS)
def backend_config(request):
    config = dict(request.getfixturevalue(f"backend_{request.param}"))
    if request.param.startswith("memcached"):
        config["GOSESSION_MEMCACHED_ALLOW_FLUSH"] = True
    return config


def native_ttl(app) -> bool:
    return type(app.extensions["gosession"].provider).__name__ in {"RedisProvider", "MemcachedProvider"}


def test_gc_removes_expired_and_prints_count(app, clock):
    runner = app.test_cli_runner()
    client = app.test_client()
    client.get("/set/a/1")
    clock.advance(4000)
    fresh = app.test_client()
    fresh.get("/set/b/2")
    result = runner.invoke(args=["gosession", "gc"])
    assert result.exit_code == 0, result.output
    removed = int(re.search(r"removed (\d+) expired", result.output).group(1))
    assert removed == (0 if native_ttl(app) else 1)
    assert fresh.get("/get/b").json["value"] == "2"


def test_stats_prints_count_where_known(app):
    for n in range(3):
        app.test_client().get(f"/set/k/{n}")
    result = app.test_cli_runner().invoke(args=["gosession", "stats"])
    assert result.exit_code == 0, result.output
    assert "provider:" in result.output
    count = app.extensions["gosession"].provider.session_count()
    if count is None:
        assert "unknown" in result.output
    else:
        assert count == 3 and "sessions: 3" in result.output


def test_clear_asks_then_removes_everything(app):
    clients = [app.test_client() for _ in range(3)]
    for c in clients:
        c.get("/set/a/1")
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["gosession", "clear"], input="n\n")
    assert refused.exit_code != 0 and "Aborted" in refused.output
    assert clients[0].get("/get/a").json["value"] == "1"
    done = runner.invoke(args=["gosession", "clear", "--yes"])
    assert done.exit_code == 0, done.output
    assert "removed" in done.output
    for c in clients:
        assert c.get("/get/a").json["value"] is None


@pytest.mark.parametrize("backend_config", ["memcached"], indirect=True)
@pytest.mark.parametrize("app_config", [{"GOSESSION_TOKEN_CHECK": False, "GOSESSION_GC_INTERVAL": 0,
                                         "GOSESSION_MEMCACHED_ALLOW_FLUSH": False}])
def test_clear_refused_on_memcached_without_flush_permission(app):
    result = app.test_cli_runner().invoke(args=["gosession", "clear", "--yes"])
    assert result.exit_code != 0 and "clear failed" in result.output
