"""Memory and garbage collection: the memory provider's RSS per session, one
GC pass among many live sessions, and SQL GC of many expired rows.

RSS is measured in a fresh interpreter per size (``python -m
benchmarks.memory --sessions N``), so that nothing else the harness built
is counted. Sessions are created through the real code path (the manager
opens a session, the view's ``session.update(...)`` fills it, the manager
saves it), the same small session as the ``new`` scenario.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import secrets
import subprocess
import sys
import time
import typing as t

from .scenarios import NEW_SESSION


def rss_bytes() -> int:
    """This process's resident set size, from /proc (Linux) or getrusage."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(sessions: int, expired: int) -> dict[str, t.Any]:
    """Fill a memory provider with ``expired`` old and ``sessions`` live
    sessions, then time one GC pass (and a full Python ``gc.collect()``)."""
    from flask import Flask

    from flask_gosession import GoSession

    app = Flask("bench_memory")
    app.config.update(SECRET_KEY="x" * 32, GOSESSION_PROVIDER="memory", GOSESSION_GC_INTERVAL=0)
    GoSession(app)
    manager = app.extensions["gosession"]
    provider = manager.provider
    real_clock = manager.clock
    max_lifetime = manager.settings.max_lifetime

    def create(count: int) -> None:
        for i in range(count):
            session = manager.open(None)
            session.update(NEW_SESSION)
            manager.save(session)

    with app.app_context():
        gc.collect()
        base = rss_bytes()
        started = time.perf_counter()
        if expired:
            # Idle for longer than the lifetime: the next GC pass removes them.
            old = real_clock() - max_lifetime - 60
            manager.clock = lambda: old
            create(expired)
            manager.clock = real_clock
        create(sessions)
        create_seconds = time.perf_counter() - started
        gc.collect()
        after = rss_bytes()
        one = next(reversed(provider._entries.values()))[1]

        started = time.perf_counter()
        removed = manager.gc()
        gc_ms = (time.perf_counter() - started) * 1000
        remaining = provider.session_count()

        started = time.perf_counter()
        gc.collect()
        full_collect_ms = (time.perf_counter() - started) * 1000
    total = sessions + expired
    return {
        "sessions": sessions,
        "expired": expired,
        "rss_before": base,
        "rss_after": after,
        "bytes_per_session": (after - base) / total if total else 0.0,
        "blob_bytes": len(one),
        "create_seconds": create_seconds,
        "gc_removed": removed,
        "gc_remaining": remaining,
        "gc_ms": gc_ms,
        "python_full_collect_ms": full_collect_ms,
    }


def run_subprocess(sessions: int, expired: int, timeout: float = 900) -> dict[str, t.Any]:
    """:func:`measure` in a fresh interpreter."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", "--sessions", str(sessions),
         "--expired", str(expired)],
        cwd=root, capture_output=True, text=True, timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"memory measurement failed:\n{done.stderr[-2000:]}")
    return t.cast(dict, json.loads(done.stdout.strip().splitlines()[-1]))


# -- SQL garbage collection ------------------------------------------------------


def sql_gc(url: str, table: str, rows: int, live: int = 1000) -> dict[str, t.Any]:
    """Time flask-gosession's GC of ``rows`` expired rows among ``live`` ones,
    counting the statements it sends."""
    from flask import Flask
    from sqlalchemy import event

    from flask_gosession import GoSession
    from flask_gosession.ids import new_sid, store_key
    from flask_gosession.providers.base import Record

    app = Flask("bench_sqlgc")
    app.config.update(SECRET_KEY="x" * 32, GOSESSION_PROVIDER="sql", GOSESSION_SQL_URL=url,
                      GOSESSION_SQL_TABLE=table, GOSESSION_GC_INTERVAL=0)
    GoSession(app)
    manager = app.extensions["gosession"]
    provider = manager.provider
    try:
        provider.create_table()
        now = manager.clock()
        old = now - manager.settings.max_lifetime - 60
        blob = provider.pack(Record(dict(NEW_SESSION), {"c": old, "i": old}, old))
        params = [{"id": store_key(new_sid()), "data": blob, "atime": old} for _ in range(rows)]
        params += [{"id": store_key(new_sid()), "data": blob, "atime": now} for _ in range(live)]
        _bulk_insert(url, provider.table, params)
        provider.session_count()  # the first call checks the table; not counted
        statements: list[str] = []

        def count(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
            statements.append(statement.split()[0].upper())

        event.listen(provider.engine, "before_cursor_execute", count)
        try:
            started = time.perf_counter()
            removed = manager.gc()
            ms = (time.perf_counter() - started) * 1000
        finally:
            event.remove(provider.engine, "before_cursor_execute", count)
        remaining = provider.session_count()
        return {"rows": rows, "live": live, "removed": removed, "remaining": remaining,
                "statements": len(statements), "kinds": statements, "ms": ms}
    finally:
        with provider.engine.begin() as conn:
            provider.table.drop(conn, checkfirst=True)
        manager.close()


def flask_session_sql_gc(url: str, table: str, rows: int, live: int = 1000) -> dict[str, t.Any]:
    """The same for Flask-Session's ``_delete_expired_sessions`` (its
    ``flask session_cleanup`` command), for comparison."""
    import datetime as dt

    from flask import Flask
    from flask_session import Session
    from flask_sqlalchemy import SQLAlchemy
    from sqlalchemy import event

    app = Flask("bench_fs_sqlgc")
    app.config.update(SECRET_KEY="x" * 32, SQLALCHEMY_DATABASE_URI=url)
    db = SQLAlchemy(app)
    app.config.update(SESSION_TYPE="sqlalchemy", SESSION_SQLALCHEMY=db,
                      SESSION_SQLALCHEMY_TABLE=table)
    Session(app)
    interface = app.session_interface
    model = interface.sql_session_model
    try:
        with app.app_context():
            engine = db.engine
            now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
            old = now - dt.timedelta(days=1)
            # What Flask-Session stores for the same small session: a random
            # id and the msgpack of the data.
            blob = interface.serializer.encode(dict(NEW_SESSION, _permanent=True))
            prefix = interface.key_prefix
            params = [{"session_id": prefix + secrets.token_urlsafe(32), "data": blob, "expiry": old}
                      for _ in range(rows)]
            params += [{"session_id": prefix + secrets.token_urlsafe(32), "data": blob,
                        "expiry": now + dt.timedelta(days=1)} for _ in range(live)]
            _bulk_insert(url, model.__table__, params)
            statements: list[str] = []

            def count(conn: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
                statements.append(statement.split()[0].upper())

            event.listen(engine, "before_cursor_execute", count)
            try:
                started = time.perf_counter()
                interface._delete_expired_sessions()
                ms = (time.perf_counter() - started) * 1000
            finally:
                event.remove(engine, "before_cursor_execute", count)
            remaining = db.session.query(model).count()
            db.session.remove()
            return {"rows": rows, "live": live, "removed": rows + live - remaining,
                    "remaining": remaining, "statements": len(statements), "kinds": statements,
                    "ms": ms}
    finally:
        with app.app_context():
            model.__table__.drop(db.engine, checkfirst=True)
            db.engine.dispose()


def _bulk_insert(url: str, table: t.Any, params: list[dict[str, t.Any]]) -> None:
    """Insert the rows in one transaction, on an engine of its own (the
    provider's autocommit engine would commit, and on SQLite sync, per row)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for start in range(0, len(params), 10_000):
                conn.execute(table.insert(), params[start:start + 10_000])
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory")
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--expired", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.sessions, args.expired)))


if __name__ == "__main__":
    main()
