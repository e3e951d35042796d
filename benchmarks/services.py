"""The backends the contenders share: throwaway Redis and memcached servers,
a PostgreSQL database, SQLite files and directories, all on this machine.

Redis and memcached are started here on free loopback ports (and killed at
exit) unless an address is given; PostgreSQL is only used if it answers at
its URL. A backend that is unavailable is recorded with the reason, and the
contenders that need it are skipped.
"""
from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import typing as t
from dataclasses import dataclass, field

#: How long a throwaway server may take to answer.
STARTUP_TIMEOUT = 15.0

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

_LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


class Unavailable(RuntimeError):
    """A backend cannot be used; the message says why."""


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def check_loopback(host: str, what: str) -> None:
    """Refuse any address but loopback: benchmarks never leave the machine."""
    if host not in _LOOPBACK:
        raise SystemExit(f"{what}: {host!r} is not a loopback address; benchmarks stay on loopback")


def _answers(port: int, request: bytes, expect: bytes) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(request)
            return expect in sock.recv(1024)
    except OSError:
        return False


class Server:
    """A server process on a loopback port, killed at exit."""

    def __init__(self, name: str, argv: list[str], port: int, probe: bytes, expect: bytes) -> None:
        self.name = name
        self.port = port
        self.workdir = tempfile.mkdtemp(prefix=f"gosession-bench-{name}-")
        log = open(os.path.join(self.workdir, "server.log"), "wb")
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=self.workdir, start_new_session=True,
        )
        log.close()
        atexit.register(self.stop)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if _answers(port, probe, expect):
                return
            time.sleep(0.05)
        self.stop()
        raise Unavailable(f"{name} did not start on port {port}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_redis() -> Server:
    binary = shutil.which("redis-server")
    if binary is None:
        raise Unavailable("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--protected-mode", "yes"]
    return Server("redis", argv, port, b"PING\r\n", b"PONG")


def start_memcached() -> Server:
    binary = shutil.which("memcached")
    if binary is None:
        raise Unavailable("memcached is not installed (apt-get install memcached)")
    port = free_port()
    argv = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "256"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]  # memcached refuses to run as root otherwise
    return Server("memcached", argv, port, b"version\r\n", b"VERSION")


@dataclass
class Services:
    """Addresses of the shared backends, and why the missing ones are missing."""

    tmpdir: str
    redis_url: str | None = None
    memcached: str | None = None
    postgres_url: str | None = None
    #: backend name -> reason it is unavailable
    missing: dict[str, str] = field(default_factory=dict)
    #: A random suffix that keeps this run's tables and keys apart.
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    _servers: list[Server] = field(default_factory=list)
    _cleanups: list[t.Callable[[], None]] = field(default_factory=list)

    def sqlite_url(self, name: str) -> str:
        return "sqlite:///" + os.path.join(self.tmpdir, f"{name}.sqlite3")

    def directory(self, name: str) -> str:
        path = os.path.join(self.tmpdir, name)
        os.makedirs(path, exist_ok=True)
        return path

    def table(self, family: str) -> str:
        return f"bench_{family}_{self.tag}"

    def server_pids(self) -> list[int]:
        """Process ids of the servers started here (not of external ones)."""
        return [server.proc.pid for server in self._servers]

    def on_close(self, fn: t.Callable[[], None]) -> None:
        self._cleanups.append(fn)

    def close(self) -> None:
        for fn in reversed(self._cleanups):
            try:
                fn()
            except Exception as err:  # best effort: report and go on
                print(f"  (cleanup failed: {err})")
        self._cleanups.clear()
        for server in self._servers:
            server.stop()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def _split_hostport(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def start_services(
    *, wanted: t.AbstractSet[str], redis_url: str | None = None,
    memcached: str | None = None, postgres_url: str | None = None,
) -> Services:
    """Bring up the backends in ``wanted`` ("redis", "memcached", "postgresql")."""
    services = Services(tmpdir=tempfile.mkdtemp(prefix="gosession-bench-"))
    if "redis" in wanted:
        if redis_url:
            from urllib.parse import urlsplit

            check_loopback(urlsplit(redis_url).hostname or "", "--redis-url")
            services.redis_url = redis_url
        else:
            try:
                server = start_redis()
                services._servers.append(server)
                services.redis_url = f"redis://127.0.0.1:{server.port}/0"
            except Unavailable as err:
                services.missing["redis"] = str(err)
    if "memcached" in wanted:
        if memcached:
            check_loopback(_split_hostport(memcached)[0], "--memcached")
            services.memcached = memcached
        else:
            try:
                server = start_memcached()
                services._servers.append(server)
                services.memcached = f"127.0.0.1:{server.port}"
            except Unavailable as err:
                services.missing["memcached"] = str(err)
    if "postgresql" in wanted:
        url = postgres_url or os.environ.get("GOSESSION_BENCH_POSTGRES_URL") or DEFAULT_POSTGRES_URL
        try:
            _check_postgres(url)
            services.postgres_url = url
        except Unavailable as err:
            services.missing["postgresql"] = str(err)
    return services


def _check_postgres(url: str) -> None:
    try:
        import sqlalchemy as sa
    except ImportError as err:
        raise Unavailable("SQLAlchemy is not installed") from err
    parsed = sa.engine.make_url(url)
    check_loopback(parsed.host or "127.0.0.1", "PostgreSQL URL")
    try:
        engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    except ImportError as err:
        raise Unavailable(f"no PostgreSQL driver: {err}") from err
    except (TypeError, sa.exc.ArgumentError) as err:
        raise Unavailable(f"unusable PostgreSQL URL {parsed.render_as_string()}: {err}") from err
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.SQLAlchemyError as err:
        raise Unavailable(f"PostgreSQL is not reachable at {parsed.render_as_string()}: "
                          f"{type(err.orig or err).__name__}") from err
    finally:
        engine.dispose()


def drop_table(url: str, table: str) -> None:
    """Drop a benchmark table (clean-up)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{table}"')
    finally:
        engine.dispose()
