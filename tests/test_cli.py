"""``flask gosession gc|stats|clear`` on every backend."""
from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import typing as t

import pytest

import servers
from apps import make_app
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


# -- a store that is down: exit 1 and one error line ---------------------------------------------
#
# What cron sees. Each store below is really down: a throwaway redis-server
# or memcached that was killed, or a loopback port where no PostgreSQL
# listens.

COMMANDS = [["gc"], ["stats"], ["clear", "--yes"]]


@pytest.fixture(params=["redis", "memcached", "postgresql"])
def dead_store(request) -> dict[str, t.Any]:
    """The settings of a store that does not answer."""
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        server.kill()
        return {"GOSESSION_PROVIDER": "redis", "GOSESSION_REDIS_URL": f"redis://{server.address}/0",
                "GOSESSION_REDIS_TIMEOUT": 1}
    if request.param == "memcached":
        server = request.getfixturevalue("memcached_server")
        server.kill()
        return {"GOSESSION_PROVIDER": "memcached", "GOSESSION_MEMCACHED_SERVERS": [server.address],
                "GOSESSION_MEMCACHED_TIMEOUT": 1, "GOSESSION_MEMCACHED_ALLOW_FLUSH": True}
    pytest.importorskip("psycopg")
    port = servers.free_port()  # nobody listens there
    return {"GOSESSION_PROVIDER": "sql", "GOSESSION_SQL_TIMEOUT": 2,
            "GOSESSION_SQL_URL": f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"}


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_a_dead_store_fails_the_command_with_one_error_line(dead_store, command, clock, tmp_path, caplog):
    app = make_app({**dead_store, "GOSESSION_GC_INTERVAL": 0}, clock, str(tmp_path))
    try:
        result = app.test_cli_runner().invoke(args=["gosession", *command])
    finally:
        app.extensions["gosession"].close()
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: {command[0]} failed: ")
    # The command is the report: nothing else logs the failure a second time.
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


CLI_APP = textwrap.dedent(
    """
    import logging
    import os

    from flask import Flask
    from flask_gosession import GoSession

    if os.environ.get("CLIAPP_LOGGING"):
        logging.basicConfig(level=logging.INFO)
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "test"
    app.config.from_prefixed_env()
    GoSession(app)
    """
)


def run_flask(tmp_path: pathlib.Path, config: dict[str, t.Any], *args: str,
              logging_on: bool = False) -> subprocess.CompletedProcess[str]:
    """``flask --app cliapp gosession ARGS`` in a subprocess, configured
    through ``FLASK_GOSESSION_*`` variables as a deployment would be."""
    (tmp_path / "cliapp.py").write_text(CLI_APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "CLIAPP_"))}
    for key, value in config.items():
        env[f"FLASK_{key}"] = value if isinstance(value, str) else json.dumps(value)
    if logging_on:
        env["CLIAPP_LOGGING"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "cliapp", "gosession", *args],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_the_flask_command_against_a_dead_store(dead_store, command, tmp_path):
    """The real ``flask`` command, with the app's own logging configured."""
    done = run_flask(tmp_path, dead_store, *command, logging_on=True)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"Error: {command[0]} failed: ")


def test_the_flask_command_against_a_dead_sql_store_without_logging_config(tmp_path):
    """With no logging configured, Python's last-resort handler would print
    a log record to stderr: there must be none."""
    pytest.importorskip("psycopg")
    config = {"GOSESSION_PROVIDER": "sql", "GOSESSION_SQL_TIMEOUT": 2,
              "GOSESSION_SQL_URL": f"postgresql+psycopg://postgres@127.0.0.1:{servers.free_port()}/test"}
    done = run_flask(tmp_path, config, "gc")
    assert done.returncode == 1
    (line,) = done.stderr.splitlines()
    assert line.startswith("Error: gc failed: SQL session store")


def test_gc_on_a_native_ttl_store_that_answers_says_why_nothing_was_removed(redis_server, tmp_path):
    done = run_flask(tmp_path, {"GOSESSION_PROVIDER": "redis",
                                "GOSESSION_REDIS_URL": f"redis://{redis_server.address}/0"}, "gc")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "removed 0 expired session(s): the redis store expires sessions by itself"
    assert done.stderr == ""


# -- the memory store: the command line cannot see a server's memory ------------------------------


def test_stats_on_the_memory_store_says_it_sees_only_its_own_process(tmp_path):
    done = run_flask(tmp_path, {"GOSESSION_PROVIDER": "memory"}, "stats")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["provider: memory (MemoryProvider)",
                         "sessions: 0 in this command's own process"]
    assert "not a running server's sessions" in lines[2]


@pytest.mark.parametrize("backend_config", ["memory"], indirect=True)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_every_command_on_the_memory_store_says_so(app, command):
    result = app.test_cli_runner().invoke(args=["gosession", *command])
    assert result.exit_code == 0, result.output
    assert "keeps sessions inside each server process" in result.stdout


@pytest.mark.parametrize("backend_config", ["file"], indirect=True)
def test_a_shared_store_gets_no_note(app):
    result = app.test_cli_runner().invoke(args=["gosession", "stats"])
    assert result.exit_code == 0, result.output
    assert "server process" not in result.output
