"""The one command: ``python -m benchmarks`` runs every level and prints
the tables (``--help`` for the flags)."""
from __future__ import annotations

import argparse
import datetime as dt
import fnmatch
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import typing as t

from . import contenders as contenders_mod
from . import inprocess, memory, overhttp, report
from .contenders import CONTENDERS, RIVALS, SERVICE_OF
from .scenarios import ALL_SCENARIOS, COUNTERPART, SCENARIOS, USER_SCENARIOS
from .services import Services, Unavailable, start_services


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark flask-gosession against bare Flask, Flask's cookie session and "
        "Flask-Session, in process and over HTTP, and report the targets.",
    )
    parser.add_argument("--contenders", default="*",
                        help="comma-separated names or globs (default: all): "
                        + ", ".join(CONTENDERS))
    parser.add_argument("--scenarios", default=",".join(ALL_SCENARIOS),
                        help="comma-separated subset of " + ", ".join(ALL_SCENARIOS)
                        + " (the last four, in process and flask-gosession only)")
    parser.add_argument("--requests", type=int, default=None,
                        help="requests per in-process batch (default 200)")
    parser.add_argument("--rounds", type=int, default=None, help="in-process rounds (default 15)")
    parser.add_argument("--pin-cpu", type=int, default=None, metavar="N",
                        help="run the in-process level with the harness and its Redis and "
                        "memcached servers on CPU N (default: not pinned)")
    parser.add_argument("--http-seconds", type=float, default=None,
                        help="seconds per wrk run; 0 skips the HTTP level (default 1)")
    parser.add_argument("--http-rounds", type=int, default=None, help="HTTP rounds (default 5)")
    parser.add_argument("--http-contenders", default=None,
                        help="contenders for the HTTP level (default: those of --contenders)")
    parser.add_argument("--http-connections", type=int, default=2,
                        help="wrk connections (one thread and one session each; default 2)")
    parser.add_argument("--memory-sessions", default=None,
                        help="comma-separated session counts for the RSS measurement; "
                        "empty skips it (default 100000,1000000)")
    parser.add_argument("--gc-expired", type=int, default=None,
                        help="expired sessions for the GC pass, added to the largest count "
                        "(default 10000)")
    parser.add_argument("--sql-gc-rows", type=int, default=None,
                        help="expired rows for the SQL GC measurement; 0 skips it (default 100000)")
    parser.add_argument("--redis-url", help="use this Redis (loopback) instead of a throwaway one")
    parser.add_argument("--memcached", help="use this memcached host:port (loopback) instead of a "
                        "throwaway one")
    parser.add_argument("--postgres-url", help="PostgreSQL URL (loopback; default "
                        "$GOSESSION_BENCH_POSTGRES_URL or postgresql+psycopg://postgres@127.0.0.1:5432/test)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile the flask-gosession request path and print it")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run that only shows the harness works (CI smoke test); "
                        "flags given explicitly still apply")
    parser.add_argument("--json", metavar="PATH", help="write every result as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write the report as Markdown")
    args = parser.parse_args(argv)
    for name, (full, quick) in DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    return args


#: Defaults of the sizing flags: (full run, --quick).
DEFAULTS: dict[str, tuple[t.Any, t.Any]] = {
    # Many short rounds rather than a few long ones: on a shared or virtual
    # machine the cost of a loopback round trip changes from one second to
    # the next (an idle CPU wakes up slowly), and short interleaved batches
    # let every contender see every phase alike.
    "requests": (200, 20),
    "rounds": (15, 2),
    "http_seconds": (1.0, 1.0),
    "http_rounds": (5, 1),
    "memory_sessions": ("100000,1000000", "2000"),
    "gc_expired": (10_000, 100),
    "sql_gc_rows": (100_000, 1000),
}


def select(pattern: str) -> list[str]:
    wanted = [p.strip() for p in pattern.split(",") if p.strip()]
    names = [n for n in CONTENDERS if any(fnmatch.fnmatchcase(n, p) for p in wanted)]
    unknown = [p for p in wanted if not any(fnmatch.fnmatchcase(n, p) for n in CONTENDERS)]
    if unknown:
        raise SystemExit(f"unknown contenders: {', '.join(unknown)}")
    return names


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = select(args.contenders)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    if not set(scenarios) <= set(ALL_SCENARIOS):
        raise SystemExit(f"unknown scenarios: {', '.join(set(scenarios) - set(ALL_SCENARIOS))}")
    command = "python -m benchmarks" + ("" if argv is None and len(sys.argv) <= 1 else
                                        " " + shlex.join(sys.argv[1:] if argv is None else argv))
    wanted_services = {SERVICE_OF[CONTENDERS[n][1]] for n in names if CONTENDERS[n][1] in SERVICE_OF}
    if args.sql_gc_rows:
        wanted_services.add("postgresql")
    log("starting backends ...")
    services = start_services(wanted=wanted_services, redis_url=args.redis_url,
                              memcached=args.memcached, postgres_url=args.postgres_url)
    results: dict[str, t.Any] = {"meta": {"command": command, "started": dt.datetime.now().isoformat(
        timespec="seconds"), "machine": machine(services), "versions": versions()}}
    built: list[contenders_mod.Contender] = []
    skipped: dict[str, str] = {}
    errors = 0
    try:
        for name in names:
            try:
                built.append(contenders_mod.build(name, services))
            except Unavailable as err:
                skipped[name] = str(err)
                log(f"  skipping {name}: {err}")
        results["skipped"] = skipped

        if built and args.requests > 0 and args.rounds > 0:
            log(f"in process: {len(built)} contenders x {len(scenarios)} scenarios, "
                f"{args.rounds} rounds of {args.requests} requests ...")
            everything = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
            if args.pin_cpu is not None:
                pin(services, {args.pin_cpu})
            try:
                level1 = inprocess.run(built, requests=args.requests, rounds=args.rounds,
                                       scenarios=scenarios, progress=log)
            finally:
                if args.pin_cpu is not None and everything is not None:
                    pin(services, everything)
            results["inprocess"] = inprocess_dict(level1, args.pin_cpu)
            errors += sum(len(c.errors) for c in level1.cells.values())
            if args.profile:
                results["profiles"] = profiles(built, scenarios)
        for contender in built:
            contender.close()
        built.clear()

        http_names = names if args.http_contenders is None else select(args.http_contenders)
        available = [n for n in http_names if n not in skipped and n in names]
        # The user scenarios rotate the id on every request: wrk cannot
        # give each request a fresh session, so they stay in process.
        http_scenarios = [s for s in scenarios if s in SCENARIOS]
        if args.http_seconds > 0 and available and http_scenarios:
            log(f"over HTTP: {len(available)} contenders x {len(http_scenarios)} scenarios, "
                f"{args.http_rounds} rounds of {args.http_seconds:g} s ...")
            level2 = overhttp.run(available, services, seconds=args.http_seconds,
                                  rounds=args.http_rounds, connections=args.http_connections,
                                  scenarios=http_scenarios, progress=log)
            if level2.skipped:
                log(f"  HTTP level skipped: {level2.skipped}")
            if services.postgres_url and any(CONTENDERS[n][1] == "postgresql" for n in available):
                for family in ("gs", "fs"):
                    table = f"bench_{family}_{services.tag}h"
                    url = services.postgres_url
                    services.on_close(lambda url=url, table=table: drop_pg(url, table))
            results["http"] = http_dict(level2)
            errors += sum(len(c.errors) for c in level2.cells.values())

        sizes = [int(s) for s in args.memory_sessions.split(",") if s.strip() and int(s) > 0]
        if sizes:
            log(f"memory provider RSS at {', '.join(f'{s:,}' for s in sizes)} sessions ...")
            runs = []
            for size in sizes:
                expired = args.gc_expired if size == max(sizes) else 0
                runs.append(memory.run_subprocess(size, expired))
            results["memory"] = {"runs": runs}

        if args.sql_gc_rows > 0:
            log(f"SQL GC of {args.sql_gc_rows:,} expired rows ...")
            results["sql_gc"] = sql_gc(services, args.sql_gc_rows)
    finally:
        for contender in built:
            contender.close()
        services.close()

    for level in ("inprocess", "http"):
        if level in results:
            results[level]["ratios"] = ratios(results[level])
            if level == "inprocess":
                results[level]["cpu_ratios"] = ratios(results[level], clock="cpu")
            annotate(results[level])
    if "inprocess" in results:
        annotate_costs(results["inprocess"])
    text = report.full_report(results)
    print(text)
    if args.profile and results.get("profiles"):
        for title, body in results["profiles"].items():
            print(f"\n## Profile: {title}\n\n```\n{body}\n```")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1, default=str)
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(text)
    if errors:
        log(f"{errors} batches had failed requests: see the errors column")
        return 1
    return 0


# -- results as plain data --------------------------------------------------------


def inprocess_dict(level: inprocess.InProcessResults, pinned: int | None) -> dict[str, t.Any]:
    cells: dict[str, dict[str, t.Any]] = {}
    for (name, scenario), cell in level.cells.items():
        cells.setdefault(name, {})[scenario] = {
            "mean_us": cell.mean, "p50_us": cell.p50, "cpu_us": cell.cpu,
            "round_means_us": cell.round_means, "round_p50s_us": cell.round_p50s,
            "round_cpus_us": cell.round_cpus, "store_calls": cell.store_calls,
            "provider_calls": cell.provider_calls, "errors": cell.errors,
        }
    return {"requests": level.requests, "rounds": level.rounds, "pinned": pinned, "cells": cells,
            "not_run": level.not_run}


def http_dict(level: overhttp.HTTPResults) -> dict[str, t.Any]:
    if level.skipped:
        return {"skipped": level.skipped}
    cells: dict[str, dict[str, t.Any]] = {}
    for (name, scenario), cell in level.cells.items():
        cells.setdefault(name, {})[scenario] = {"rps": cell.rps, "round_rps": cell.round_rps,
                                                "errors": cell.errors}
    return {"seconds": level.seconds, "rounds": level.rounds, "connections": level.connections,
            "server": level.server, "cells": cells}


def _paired(ours: list[float], theirs: list[float], per_request_time: bool) -> float | None:
    """Median of per-round throughput ratios ours/theirs."""
    import statistics

    pairs = [(b / a if per_request_time else a / b) for a, b in zip(ours, theirs, strict=False) if a > 0 and b > 0]
    return statistics.median(pairs) if pairs else None


def ratios(level: dict[str, t.Any], clock: str = "wall") -> dict[str, float | None]:
    """Throughput ratios for every comparison the report and targets use.

    :param clock: ``"wall"``, or ``"cpu"`` for the in-process level's
        ratios of this thread's CPU time per request (the other side's over
        ours, so that above 1 is better, as for the wall clock).
    """
    cells = level.get("cells", {})
    timed = "rounds" in level and "connections" not in level  # in process: times, not rates
    key = ("round_cpus_us" if clock == "cpu" else "round_means_us") if timed else "round_rps"
    out: dict[str, float | None] = {}
    comparisons = []
    for name in cells:
        comparisons.append((name, "bare"))
        if name in RIVALS:
            comparisons.append((name, RIVALS[name]))
    comparisons.append(("gosession-memory", "cookie"))
    for ours, theirs in comparisons:
        if ours not in cells or theirs not in cells:
            continue
        for scenario, cell in cells[ours].items():
            other = cells[theirs].get(scenario)
            if other is None:
                continue
            out[f"{ours}/{theirs}/{scenario}"] = _paired(cell[key], other[key], timed)
    return out


def annotate(level: dict[str, t.Any]) -> None:
    """Copy the ratios vs bare and vs the Flask-Session rival into each cell
    (``vs_bare``, ``vs_rival``; by CPU time ``vs_bare_cpu``, ``vs_rival_cpu``)."""
    for suffix, table in (("", level.get("ratios", {})), ("_cpu", level.get("cpu_ratios"))):
        if table is None:
            continue
        for name, scenarios in level.get("cells", {}).items():
            for scenario, cell in scenarios.items():
                if name != "bare":
                    cell["vs_bare" + suffix] = table.get(f"{name}/bare/{scenario}")
                if name in RIVALS:
                    cell["vs_rival" + suffix] = table.get(f"{name}/{RIVALS[name]}/{scenario}")


def annotate_costs(level: dict[str, t.Any]) -> None:
    """Add to each user-scenario cell its cost against the same contender's
    unbound read (``wall_vs_read``, ``cpu_vs_read``) and against its
    counterpart (:data:`~.scenarios.COUNTERPART`: ``wall_vs_pair``,
    ``cpu_vs_pair``): time ratios (above 1 costs more), each the median of
    the per-round ratios, both sides timed in the same round of this process."""
    for scenarios in level.get("cells", {}).values():
        for scenario in USER_SCENARIOS:
            cell = scenarios.get(scenario)
            if cell is None:
                continue
            for suffix, other in (("read", scenarios.get("read")),
                                  ("pair", scenarios.get(COUNTERPART[scenario]))):
                for clock, key in (("wall", "round_means_us"), ("cpu", "round_cpus_us")):
                    # _paired(..., per_request_time=False) divides ours by
                    # theirs: a time ratio, not a throughput ratio.
                    cell[f"{clock}_vs_{suffix}"] = (
                        None if other is None else _paired(cell[key], other[key], False))


# -- other measurements ------------------------------------------------------------


def sql_gc(services: Services, rows: int) -> list[dict[str, t.Any]]:
    out = []
    targets = [("SQLite", services.sqlite_url("gc")), ("PostgreSQL", services.postgres_url)]
    for backend, url in targets:
        for who, fn, table in (("flask-gosession", memory.sql_gc, services.table("gc_gs")),
                               ("Flask-Session", memory.flask_session_sql_gc, services.table("gc_fs"))):
            entry = {"backend": backend, "who": who}
            if url is None:
                entry["skipped"] = services.missing.get("postgresql", "unavailable")
            else:
                try:
                    entry.update(fn(url, table, rows))
                except ImportError as err:
                    entry["skipped"] = f"{err.name} is not installed"
            out.append(entry)
    return out


def profiles(built: list[contenders_mod.Contender], scenarios: list[str]) -> dict[str, str]:
    from .hotpath import profile

    out = {}
    for contender in built:
        if contender.name not in ("gosession-memory", "gosession-redis", "gosession-memcached"):
            continue
        for scenario in scenarios:
            if scenario in ("read", "write"):
                out[f"{contender.name} {scenario}"] = profile(contender, scenario, 3000)
    return out


def pin(services: Services, cpus: set[int]) -> None:
    """Set the CPU affinity of this process and of the servers it started."""
    pids = [os.getpid(), *services.server_pids()]
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            tasks = [str(pid)]
        for task in tasks:
            try:
                os.sched_setaffinity(int(task), cpus)
            except OSError:
                pass


def drop_pg(url: str, table: str) -> None:
    from .services import drop_table

    drop_table(url, table)


def machine(services: Services) -> dict[str, str]:
    info = {
        "CPUs (nproc)": str(os.cpu_count()),
        "CPU": _cpu_model(),
        "memory": _meminfo(),
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
    }
    for name, argv in (("Redis", ["redis-server", "--version"]), ("memcached", ["memcached", "-V"]),
                       ("wrk", ["wrk", "-v"])):
        if shutil.which(argv[0]):
            try:
                out = subprocess.run(argv, capture_output=True, text=True, timeout=5)
                info[name] = (out.stdout + out.stderr).strip().splitlines()[0][:80]
            except (OSError, subprocess.SubprocessError, IndexError):
                pass
    if services.postgres_url:
        try:
            import sqlalchemy as sa

            engine = sa.create_engine(services.postgres_url)
            with engine.connect() as conn:
                info["PostgreSQL"] = conn.exec_driver_sql("SHOW server_version").scalar_one()
            engine.dispose()
        except Exception as err:  # informational only
            info["PostgreSQL"] = f"? ({type(err).__name__})"
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _meminfo() -> str:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "?"


def versions() -> dict[str, str]:
    out = {}
    for dist in ("flask", "werkzeug", "flask-gosession", "flask-session", "cachelib", "redis",
                 "hiredis", "pymemcache", "sqlalchemy", "flask-sqlalchemy", "psycopg", "gunicorn"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


if __name__ == "__main__":
    raise SystemExit(main())
