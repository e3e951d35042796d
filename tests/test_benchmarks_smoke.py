"""The benchmark harness still runs, on a tiny count, and reports what it
must. Behaviour only: no timing is asserted here (benchmarks are not tests).

It runs the README's command (``python -m benchmarks``) in a subprocess and
reads its JSON: every table is printed, no request failed, and the store
calls per request are as designed (none for an untouched session, one
operation for a read). The user scenarios (issue 13) run on every store
with a per-user index and cost what the issue says: a bound session is read
in one round trip and none when untouched, and a login (bind) costs its
rotation plus one (the index write); a store without the index says why.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

CONTENDERS = [
    "bare", "cookie",
    "gosession-memory", "gosession-memory-sealed", "gosession-memory-metrics",
    "flask-session-simplecache",
    "gosession-redis", "gosession-redis-sealed", "flask-session-redis",
    "gosession-sqlite", "flask-session-sqlite",
    "gosession-memcached",
]

#: flask-gosession provider operations per request, by scenario.
DESIGNED = {"untouched": 0, "read": 1, "write": 2, "new": 1}
#: flask-gosession's user scenarios; those but ``rotate`` need a per-user index.
USER_SCENARIOS = {"rotate", "bind", "read-bound", "untouched-bound"}
#: Stores whose store calls are one per provider operation (a round trip
#: each); SQL counts statements, several per transaction.
ONE_CALL_PER_OPERATION = ("gosession-memory", "gosession-file", "gosession-redis")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick",
         "--contenders", ",".join(CONTENDERS),
         "--http-contenders", "bare,gosession-memory", "--http-seconds", "1",
         "--memory-sessions", "1000", "--gc-expired", "100", "--sql-gc-rows", "200",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done, json.loads(out.read_text())


def test_every_table_is_printed(run):
    done, _ = run
    for heading in ("## Machine and command", "## Targets", "## In process",
                    "### Store round trips per request", "### Users and their devices",
                    "### Encryption at rest", "### Prometheus metrics", "## Over HTTP",
                    "## Memory provider: RSS and GC", "## SQL garbage collection"):
        assert heading in done.stdout
    for scenario in ("untouched", "read", "write", "new"):
        assert f"**{scenario}**" in done.stdout


def test_every_contender_ran_or_says_why(run):
    _, results = run
    cells = results["inprocess"]["cells"]
    for name in CONTENDERS:
        if name in results["skipped"]:
            if os.environ.get("CI") == "true":
                pytest.fail(f"{name} skipped in CI: {results['skipped'][name]}")
            continue
        expected = set(DESIGNED)
        if name.startswith("gosession-"):
            expected |= USER_SCENARIOS - set(results["inprocess"]["not_run"].get(name, {}))
        assert set(cells[name]) == expected
        for scenario, cell in cells[name].items():
            assert cell["errors"] == [], (name, scenario, cell["errors"])
            assert cell["mean_us"] > 0 and cell["p50_us"] > 0


def test_store_calls_are_as_designed(run):
    _, results = run
    cells = results["inprocess"]["cells"]
    ours = [n for n in CONTENDERS if n.startswith("gosession-") and n in cells]
    assert "gosession-memory" in ours
    for name in ours:
        for scenario, operations in DESIGNED.items():
            assert cells[name][scenario]["provider_calls"] == operations, (name, scenario)
        # Lazy: an untouched session costs no round trip at all.
        assert cells[name]["untouched"]["store_calls"] == 0, name
    for name in ("gosession-memory", "gosession-redis"):
        if name in cells:
            # One round trip for a read (Redis: one HGETALL).
            assert cells[name]["read"]["store_calls"] == 1, name
    for name in ("bare", "cookie"):
        for cell in cells[name].values():
            assert cell["store_calls"] == 0


def test_user_scenarios_run_wherever_there_is_an_index(run):
    _, results = run
    cells, not_run = results["inprocess"]["cells"], results["inprocess"]["not_run"]
    assert {"bind", "read-bound", "untouched-bound", "rotate"} <= set(cells["gosession-memory"])
    assert "gosession-memory" not in not_run
    if "gosession-memcached" not in results["skipped"]:
        reasons = not_run["gosession-memcached"]
        assert set(reasons) == {"bind", "read-bound", "untouched-bound"}
        assert all("no per-user index" in reason for reason in reasons.values())
        assert "rotate" in cells["gosession-memcached"]
    for name in ("bare", "cookie", "flask-session-redis"):
        if name in cells:
            assert not USER_SCENARIOS & set(cells[name])


def test_bound_sessions_cost_what_the_issue_says(run):
    done, results = run
    cells = results["inprocess"]["cells"]
    bound = [n for n in CONTENDERS if "bind" in cells.get(n, {})]
    assert "gosession-memory" in bound
    for name in bound:
        ops = {s: cells[name][s]["provider_calls"] for s in cells[name]}
        trips = {s: cells[name][s]["store_calls"] for s in cells[name]}
        assert ops["read-bound"] == ops["read"] == 1, name
        assert ops["untouched-bound"] == 0 and trips["untouched-bound"] == 0, name
        assert trips["read-bound"] == trips["read"], name
        assert ops["bind"] == ops["rotate"] + 1, name  # the index write
        if name in ONE_CALL_PER_OPERATION:
            assert trips["bind"] == trips["rotate"] + 1, name
        for scenario in ("bind", "read-bound", "rotate"):
            cell = cells[name][scenario]
            assert cell["cpu_us"] > 0
            assert cell["wall_vs_read"] > 0 and cell["cpu_vs_read"] > 0, (name, scenario)
            assert cell["wall_vs_pair"] > 0 and cell["cpu_vs_pair"] > 0, (name, scenario)
    assert re.search(r"^\| gosession-memory +\| bind +\|", done.stdout, re.MULTILINE)


def test_ratios_and_targets_are_computed(run):
    done, results = run
    ratios = results["inprocess"]["ratios"]
    assert ratios["gosession-memory/bare/untouched"] > 0
    assert ratios["gosession-memory/flask-session-simplecache/read"] > 0
    assert ratios["gosession-memory/cookie/write"] > 0
    assert "memory read vs Flask's cookie session" in done.stdout
    # Encryption at rest: CPU time of each encrypted contender against its
    # plain twin, per round, and a target row for reads and writes.
    cells = results["inprocess"]["cells"]
    assert len(cells["gosession-memory-sealed"]["read"]["round_cpus_us"]) == results["inprocess"]["rounds"]
    assert "encrypted read vs plain read, CPU time" in done.stdout
    assert "encrypted write vs plain write, CPU time" in done.stdout
    # Metrics (issue 16): the same store with and without them, by wall
    # clock and CPU time, and a target row for reads.
    assert len(cells["gosession-memory-metrics"]["read"]["round_cpus_us"]) == results["inprocess"]["rounds"]
    assert "metrics on read vs plain read, CPU time" in done.stdout
    assert re.search(r"^\| memory +\| read +\|.*× +\|.*× +\| ≤ 1.05×", done.stdout, re.MULTILINE)


def test_http_level_ran_or_says_why(run):
    _, results = run
    http = results["http"]
    if http.get("skipped"):
        assert "not installed" in http["skipped"]
        return
    for name in ("bare", "gosession-memory"):
        for scenario in DESIGNED:
            cell = http["cells"][name][scenario]
            assert cell["rps"] > 0 and cell["errors"] == [], (name, scenario, cell)


def test_memory_and_gc_measurements(run):
    _, results = run
    [measured] = results["memory"]["runs"]
    assert measured["sessions"] == 1000 and measured["expired"] == 100
    assert measured["gc_removed"] == 100 and measured["gc_remaining"] == 1000
    assert measured["bytes_per_session"] > 0
    sqlite = [r for r in results["sql_gc"] if r["backend"] == "SQLite" and r["who"] == "flask-gosession"]
    # One DELETE of expired sessions, one of expired per-user indexes.
    assert sqlite[0]["kinds"] == ["DELETE", "DELETE"] and sqlite[0]["removed"] == 200
