"""Level 2: a real server on loopback, driven by an HTTP load generator for
a bounded time. Gives requests per second.

The server is gunicorn (one worker process, ``gthread``, keep-alive) serving
every contender's app under its own prefix (:mod:`.httpapp`); the load
generator is ``wrk``, with one connection per thread and one session per
connection, so that concurrent requests never share a session (a shared
session would measure lock and compare-and-swap contention, not the session
layer). As in process, rounds interleave the (contender, scenario) pairs in
a shuffled order, and each round starts from fresh sessions.

Skipped, with the reason printed, when ``wrk`` or gunicorn is missing.
"""
from __future__ import annotations

import http.client
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import typing as t
from dataclasses import dataclass, field

from .httpapp import CONFIG_ENV
from .scenarios import SCENARIOS, cookie_from, dummy_cookie
from .services import Services, free_port

#: The longest a server may take to start (it builds every contender).
SERVER_STARTUP = 60.0

_LUA = """
local cookies = {%(cookies)s}
local counter = 0
function setup(thread)
  counter = counter + 1
  thread:set("cookie", cookies[(counter - 1) %% #cookies + 1] or "")
end
function init(args)
  if cookie ~= nil and cookie ~= "" then
    wrk.headers["Cookie"] = cookie
  end
end
"""


@dataclass
class HTTPCell:
    round_rps: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return statistics.median(self.round_rps) if self.round_rps else float("nan")


@dataclass
class HTTPResults:
    seconds: float
    rounds: int
    connections: int
    server: str
    cells: dict[tuple[str, str], HTTPCell] = field(default_factory=dict)
    skipped: str | None = None

    def cell(self, contender: str, scenario: str) -> HTTPCell:
        return self.cells.setdefault((contender, scenario), HTTPCell())

    def ratio(self, ours: str, theirs: str, scenario: str) -> float | None:
        """Median over rounds of the paired ratios of requests per second."""
        a, b = self.cells.get((ours, scenario)), self.cells.get((theirs, scenario))
        if a is None or b is None or not a.round_rps or not b.round_rps:
            return None
        return statistics.median(x / y for x, y in zip(a.round_rps, b.round_rps, strict=False) if y > 0)


def unavailable() -> str | None:
    """Why the HTTP level cannot run here, or None."""
    if shutil.which("wrk") is None:
        return "wrk is not installed (apt-get install wrk)"
    try:
        import gunicorn  # noqa: F401
    except ImportError:
        return "gunicorn is not installed (pip install -e '.[bench]')"
    return None


class Server:
    """gunicorn serving the dispatcher on a free loopback port."""

    def __init__(self, contenders: list[str], services: Services, threads: int,
                 cpus: t.AbstractSet[int] | None) -> None:
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="gosession-bench-gunicorn-", suffix=".log",
                                               delete=False)
        config = {
            "contenders": contenders,
            "tmpdir": services.directory("http"),
            "tag": services.tag + "h",
            "redis_url": services.redis_url,
            "memcached": services.memcached,
            "postgres_url": services.postgres_url,
        }
        env = dict(os.environ, **{CONFIG_ENV: json.dumps(config)})
        argv = [
            sys.executable, "-m", "gunicorn",
            "--bind", f"127.0.0.1:{self.port}",
            "--workers", "1", "--worker-class", "gthread", "--threads", str(threads),
            "--keep-alive", "30", "--backlog", "256", "--log-level", "warning",
            "--timeout", "60", "--graceful-timeout", "5",
            "benchmarks.httpapp:create_app()",
        ]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

        def preexec() -> None:
            if cpus is not None:
                os.sched_setaffinity(0, cpus)

        self.proc = subprocess.Popen(
            argv, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            start_new_session=True, preexec_fn=preexec,
        )
        deadline = time.monotonic() + SERVER_STARTUP
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                status, _ = self.get("/bare/untouched", None)
                if status == 200:
                    return
            except OSError:
                time.sleep(0.1)
        tail = self.tail()
        self.stop()
        raise RuntimeError(f"gunicorn did not start:\n{tail}")

    def get(self, path: str, cookie: str | None) -> tuple[int, list[tuple[str, str]]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
            response = conn.getresponse()
            response.read()
            return response.status, response.getheaders()
        finally:
            conn.close()

    def seed(self, contender: str) -> str:
        """A fresh session of ``contender``, created by a first visit."""
        status, headers = self.get(f"/{contender}/new", None)
        if status != 200:
            raise RuntimeError(f"seeding {contender} over HTTP failed: {status}")
        return cookie_from(headers) or dummy_cookie()

    def tail(self) -> str:
        try:
            with open(self.log.name, errors="replace") as fh:
                return fh.read()[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.log.close()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass


_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")
_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET_ERRORS = re.compile(r"Socket errors:([^\n]*)")


def wrk(url: str, cookies: list[str | None], seconds: float, connections: int,
        workdir: str, cpus: t.AbstractSet[int] | None) -> tuple[float, str | None]:
    """Run wrk for ``seconds``; return requests/s and an error, if any."""
    script = os.path.join(workdir, "cookies.lua")
    listed = ", ".join(json.dumps(c or "") for c in cookies)
    with open(script, "w") as fh:
        fh.write(_LUA % {"cookies": listed})
    argv = ["wrk", "-t", str(connections), "-c", str(connections), "-d", f"{seconds:g}s",
            "--timeout", "5s", "-s", script, url]

    def preexec() -> None:
        if cpus is not None:
            os.sched_setaffinity(0, cpus)

    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                          preexec_fn=preexec)
    out = done.stdout + done.stderr
    match = _RPS.search(out)
    if done.returncode != 0 or match is None:
        return float("nan"), f"wrk failed: {out[-500:]}"
    error = None
    bad = _NON2XX.search(out)
    if bad is not None and int(bad.group(1)):
        error = f"{bad.group(1)} non-2xx responses"
    sock = _SOCKET_ERRORS.search(out)
    if sock is not None:
        error = (error + "; " if error else "") + "socket errors:" + sock.group(1).strip()
    return float(match.group(1)), error


def run(contenders: list[str], services: Services, *, seconds: float, rounds: int,
        connections: int = 2, threads: int = 4, scenarios: t.Sequence[str] = SCENARIOS,
        seed_value: int = 2, cpus: t.AbstractSet[int] | None = None,
        progress: t.Callable[[str], None] = print) -> HTTPResults:
    """Run the HTTP level; ``cpus`` is the affinity given to server and wrk."""
    results = HTTPResults(seconds, rounds, connections,
                          server=f"gunicorn, 1 worker, gthread x{threads}, keep-alive; "
                                 f"wrk -t{connections} -c{connections}")
    reason = unavailable()
    if reason is not None:
        results.skipped = reason
        return results
    server = Server(contenders, services, threads, cpus)
    workdir = tempfile.mkdtemp(prefix="gosession-bench-wrk-")
    try:
        pairs = [(c, s) for c in contenders for s in scenarios]
        # Warm up every pair: connections, first-request work.
        for contender, scenario in pairs:
            cookie = None if scenario == "new" else server.seed(contender)
            for _ in range(20):
                server.get(f"/{contender}/{scenario}", cookie)
        rng = random.Random(seed_value)
        for number in range(rounds):
            order = pairs[:]
            rng.shuffle(order)
            started = time.monotonic()
            for contender, scenario in order:
                cookies: list[str | None] = [None] * connections
                if scenario != "new":
                    cookies = [server.seed(contender) for _ in range(connections)]
                url = f"http://127.0.0.1:{server.port}/{contender}/{scenario}"
                rps, error = wrk(url, cookies, seconds, connections, workdir, cpus)
                cell = results.cell(contender, scenario)
                cell.round_rps.append(rps)
                if error:
                    cell.errors.append(error)
            progress(f"  HTTP round {number + 1}/{rounds}: {time.monotonic() - started:.1f} s")
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return results
