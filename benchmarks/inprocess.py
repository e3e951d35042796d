"""Level 1: the WSGI app called directly, in this process, with prepared
environs. Gives mean and p50 microseconds per request (wall clock), CPU
microseconds per request (this thread's CPU time over the batch), and store
calls per request.

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
from .scenarios import BOUND, ONE_SHOT, PATHS, SCENARIOS, call, check, check_users, environ, seed, seed_bound


@dataclass
class Cell:
    """Results of one (contender, scenario) pair."""

    #: mean microseconds per request of each round
    round_means: list[float] = field(default_factory=list)
    #: p50 microseconds per request of each round
    round_p50s: list[float] = field(default_factory=list)
    #: CPU microseconds per request of each round (this thread's CPU time)
    round_cpus: list[float] = field(default_factory=list)
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

    @property
    def cpu(self) -> float:
        return statistics.median(self.round_cpus) if self.round_cpus else float("nan")


@dataclass
class InProcessResults:
    requests: int
    rounds: int
    #: (contender, scenario) -> cell
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    #: contender -> scenario -> why it did not run there
    not_run: dict[str, dict[str, str]] = field(default_factory=dict)

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


def _batch(app: t.Any, envs: list[dict[str, t.Any]]) -> tuple[list[int], int, str | None]:
    """Run one request per environ; return their durations in ns, the CPU
    time this thread spent on the whole batch in ns, and the first error."""
    perf = time.perf_counter_ns
    copies = [dict(env) for env in envs]
    durations = [0] * len(copies)
    status: list[str] = []

    def start_response(s: str, headers: t.Any, exc_info: t.Any = None) -> None:
        status.append(s)

    cpu_start = time.thread_time_ns()
    for i, e in enumerate(copies):
        start = perf()
        body = app(e, start_response)
        for _ in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
        durations[i] = perf() - start
    cpu = time.thread_time_ns() - cpu_start
    bad = next((s for s in status if not s.startswith("200")), None)
    return durations, cpu, bad


def _prepare(contender: Contender, scenario: str, n: int) -> list[dict[str, t.Any]]:
    """The ``n`` environs of one batch: a fresh session for the batch, or
    for each request of a scenario that rotates the id; none for ``new``."""
    path, app = PATHS[scenario], contender.app
    if scenario == "new":
        return [environ(path, None)] * n
    if scenario in ONE_SHOT:
        return [environ(path, seed(app)) for _ in range(n)]
    return [environ(path, seed_bound(app) if scenario in BOUND else seed(app))] * n


def run(
    contenders: list[Contender], *, requests: int, rounds: int, scenarios: t.Sequence[str] = SCENARIOS,
    count_requests: int = 20, seed_value: int = 1, progress: t.Callable[[str], None] = print,
) -> InProcessResults:
    """Run the in-process level and return its results."""
    results = InProcessResults(requests, rounds)
    runs = {c.name: [s for s in scenarios if c.unsupported(s) is None] for c in contenders}
    for c in contenders:
        skipped = {s: reason for s in scenarios if (reason := c.unsupported(s)) is not None}
        if skipped:
            results.not_run[c.name] = skipped
    broken = {c.name: _check(c, runs[c.name]) for c in contenders if c.family != "bare"}
    for name, problem in broken.items():
        if problem is not None:
            progress(f"  {name} is broken and is not timed: {problem}")
            for scenario in runs[name]:
                results.cell(name, scenario).errors.append(problem)
    contenders = [c for c in contenders if broken.get(c.name) is None]
    pairs = [(c, s) for c in contenders for s in runs[c.name]]
    rng = random.Random(seed_value)

    # Warm up: connections, caches, lazily built clients, first-request work.
    for contender, scenario in pairs:
        _batch(contender.app, _prepare(contender, scenario, min(requests, 200)))

    for number in range(rounds):
        order = pairs[:]
        rng.shuffle(order)
        started = time.monotonic()
        for contender, scenario in order:
            envs = _prepare(contender, scenario, requests)
            gc.collect()
            durations, cpu, bad = _batch(contender.app, envs)
            cell = results.cell(contender.name, scenario)
            if bad is not None:
                cell.errors.append(bad)
            cell.round_means.append(statistics.fmean(durations) / 1000)
            cell.round_p50s.append(statistics.median(durations) / 1000)
            cell.round_cpus.append(cpu / len(durations) / 1000)
        progress(f"  in-process round {number + 1}/{rounds}: {time.monotonic() - started:.1f} s")

    # Store calls per request, counted apart from the timed batches.
    for contender, scenario in pairs:
        cell = results.cell(contender.name, scenario)
        cell.store_calls = _count(contender, contender.counter, scenario, count_requests)
        if contender.provider_counter is not None:
            cell.provider_calls = _count(contender, contender.provider_counter, scenario, count_requests)
    return results


def _check(contender: Contender, scenarios: t.Sequence[str]) -> str | None:
    """What :func:`~.scenarios.check` (and, for the user scenarios it runs,
    :func:`~.scenarios.check_users`) finds wrong with ``contender``, or None."""
    problem = check(contender.app)
    if problem is None and set(scenarios) - set(SCENARIOS):
        problem = check_users(contender.app, indexed=contender.unsupported("bind") is None)
    return problem


def _count(contender: Contender, counter: t.Any, scenario: str, n: int) -> float:
    envs = _prepare(contender, scenario, n)
    counter.install()
    counter.count = 0
    try:
        for env in envs:
            call(contender.app, env)
    finally:
        counter.uninstall()
    return counter.count / n
