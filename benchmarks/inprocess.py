"""Level 1: the WSGI app called directly, in this process, with prepared
environs. Gives mean and p50 microseconds per request, and store calls
per request.

Contenders and scenarios are interleaved: every round runs one batch of
each (contender, scenario) pair, in an order rotated from round to round,
so that drift in the machine's speed (other processes, frequency scaling)
lands on every contender alike. Each batch starts from a freshly created
session, so no batch ever meets an id rotation or a refresh interval.
"""
from __future__ import annotations

import gc
import random
import statistics
import time
import typing as t
from dataclasses import dataclass, field

from .contenders import Contender
from .scenarios import SCENARIOS, call, check, environ, seed


@dataclass
class Cell:
    """Results of one (contender, scenario) pair."""

    #: mean microseconds per request of each round
    round_means: list[float] = field(default_factory=list)
    #: p50 microseconds per request of each round
    round_p50s: list[float] = field(default_factory=list)
    #: CPU microseconds per request of each round (this thread's CPU time:
    #: what the process itself spent, without waiting on a store)
    round_cpu: list[float] = field(default_factory=list)
    #: store calls per request (counting pass)
    store_calls: float | None = None
    #: flask-gosession provider operations per request (counting pass)
    provider_calls: float | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return statistics.median(self.round_means) if self.round_means else float("nan")

    @property
    def p50(self) -> float:
        return statistics.median(self.round_p50s) if self.round_p50s else float("nan")


@dataclass
class InProcessResults:
    requests: int
    rounds: int
    #: (contender, scenario) -> cell
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)

    def cell(self, contender: str, scenario: str) -> Cell:
        return self.cells.setdefault((contender, scenario), Cell())

    def ratio(self, ours: str, theirs: str, scenario: str) -> float | None:
        """Throughput ratio ours/theirs: the median over rounds of the
        paired per-round ratios (theirs' mean time / ours')."""
        a, b = self.cells.get((ours, scenario)), self.cells.get((theirs, scenario))
        if a is None or b is None or not a.round_means or not b.round_means:
            return None
        pairs = [their / our for our, their in zip(a.round_means, b.round_means, strict=False)]
        return statistics.median(pairs)


def _batch(app: t.Any, env: dict[str, t.Any], n: int) -> tuple[list[int], str | None]:
    """Run ``n`` requests; return their durations in ns and the first error."""
    perf = time.perf_counter_ns
    copies = [dict(env) for _ in range(n)]
    durations = [0] * n
    status: list[str] = []

    def start_response(s: str, headers: t.Any, exc_info: t.Any = None) -> None:
        status.append(s)

    for i, e in enumerate(copies):
        start = perf()
        body = app(e, start_response)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
        durations[i] = perf() - start
    bad = next((s for s in status if not s.startswith("200")), None)
    return durations, bad


def _prepare(contender: Contender, scenario: str) -> dict[str, t.Any]:
    """The environ of one batch, with a fresh session where one is needed."""
    path = f"/{scenario}"
    if scenario == "new":
        return environ(path, None)
    return environ(path, seed(contender.app))


def run(
    contenders: list[Contender], *, requests: int, rounds: int, scenarios: t.Sequence[str] = SCENARIOS,
    count_requests: int = 20, seed_value: int = 1, progress: t.Callable[[str], None] = print,
) -> InProcessResults:
    """Run the in-process level and return its results."""
    results = InProcessResults(requests, rounds)
    broken = {c.name: check(c.app) for c in contenders if c.family != "bare"}
    for name, problem in broken.items():
        if problem is not None:
            progress(f"  {name} is broken and is not timed: {problem}")
            for scenario in scenarios:
                results.cell(name, scenario).errors.append(problem)
    contenders = [c for c in contenders if broken.get(c.name) is None]
    pairs = [(c, s) for c in contenders for s in scenarios]
    rng = random.Random(seed_value)

    # Warm up: connections, caches, lazily built clients, first-request work.
    for contender, scenario in pairs:
        _batch(contender.app, _prepare(contender, scenario), min(requests, 200))

    for number in range(rounds):
        order = pairs[:]
        rng.shuffle(order)
        started = time.monotonic()
        for contender, scenario in order:
            env = _prepare(contender, scenario)
            gc.collect()
            cpu = time.thread_time_ns()
            durations, bad = _batch(contender.app, env, requests)
            cpu = time.thread_time_ns() - cpu
            cell = results.cell(contender.name, scenario)
            cell.round_cpu.append(cpu / requests / 1000)
            if bad is not None:
                cell.errors.append(bad)
            cell.round_means.append(statistics.fmean(durations) / 1000)
            cell.round_p50s.append(statistics.median(durations) / 1000)
        progress(f"  in-process round {number + 1}/{rounds}: {time.monotonic() - started:.1f} s")

    # Store calls per request, counted apart from the timed batches.
    for contender, scenario in pairs:
        cell = results.cell(contender.name, scenario)
        cell.store_calls = _count(contender, contender.counter, scenario, count_requests)
        if contender.provider_counter is not None:
            cell.provider_calls = _count(contender, contender.provider_counter, scenario, count_requests)
    return results


def _count(contender: Contender, counter: t.Any, scenario: str, n: int) -> float:
    env = _prepare(contender, scenario)
    counter.install()
    counter.count = 0
    try:
        for _ in range(n):
            call(contender.app, env)
    finally:
        counter.uninstall()
    return counter.count / n
