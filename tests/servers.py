"""Throwaway Redis and memcached servers on loopback ports, for tests.

Every server here binds ``127.0.0.1`` only, keeps no data on disk and lives
in its own temporary directory. Handles can be killed (``SIGKILL``, as in a
crash), paused (``SIGSTOP``, a server that accepts but never answers) and
restarted on the same port, so tests can show that a provider reports an
outage and recovers from it without being rebuilt.

Every process started here is also killed at interpreter exit, whatever
happens to the test run. Nothing here imports a client library: readiness
is checked with raw sockets.
"""
from __future__ import annotations

import atexit
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import typing as t

#: How long a server may take to start answering.
STARTUP_TIMEOUT = 15.0

#: Every server not yet stopped, for the clean-up at exit.
_servers: set[ServerProcess] = set()
_servers_lock = threading.Lock()


class ServerUnavailable(RuntimeError):
    """A binary is missing or a server could not be started."""


def require_binary(name: str) -> str:
    """Return the path of the executable ``name``.

    :raises ServerUnavailable: if it is not on ``PATH``.
    """
    path = shutil.which(name)
    if path is None:
        raise ServerUnavailable(f"{name} is not installed")
    return path


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(also_free_offset: int | None = None) -> int:
    """A loopback TCP port that nobody listens on right now.

    :param also_free_offset: require ``port + offset`` to be free as well
        (a Redis Cluster node also binds its bus port, ``port + 10000``).
    """
    for _ in range(200):
        # Below the kernel's ephemeral range (32768-60999 here), so a
        # client reconnecting to a stopped server cannot be handed the
        # same port and connect to itself.
        port = random.randint(12000, 22000)  # +10000 (cluster bus) stays below too
        if _port_is_free(port) and (
            also_free_offset is None or _port_is_free(port + also_free_offset)
        ):
            return port
    raise ServerUnavailable("no free loopback port found")


def _exchange(port: int, request: bytes, timeout: float = 1.0) -> bytes:
    """Send ``request`` to a loopback port and return the first reply bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        return sock.recv(65536)


def redis_command(port: int, *args: str, timeout: float = 1.0) -> bytes:
    """Send one Redis command (RESP) with a raw socket; return the raw reply."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return _exchange(port, b"".join(parts), timeout)


class ServerProcess:
    """One server process on a fixed loopback port, restartable in place.

    :param name: a label for messages.
    :param argv: the command line; it must make the server listen on
        ``127.0.0.1:port``.
    :param port: the port ``argv`` binds.
    :param ready: ``ready(port)`` returns true once the server answers; it
        may raise :class:`OSError` while the server is still starting.
    :param workdir: a private directory, removed by :meth:`stop`.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        ready: t.Callable[[int], bool],
        workdir: str,
    ) -> None:
        self.name = name
        self.argv = argv
        self.port = port
        self.host = "127.0.0.1"
        self.workdir = workdir
        self._ready = ready
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path = os.path.join(workdir, f"{name}.log")
        with _servers_lock:
            _servers.add(self)

    @property
    def address(self) -> str:
        """``"127.0.0.1:<port>"``."""
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> ServerProcess:
        """Start the process and wait until it answers.

        :raises ServerUnavailable: if it exits or does not answer in time.
        """
        if self.running:
            return self
        with open(self._log_path, "ab") as log:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            try:
                if self._ready(self.port):
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        log_tail = self.log()[-2000:]
        self.kill()
        raise ServerUnavailable(f"{self.name} on port {self.port} did not start:\n{log_tail}")

    def kill(self) -> None:
        """``SIGKILL`` the process, as a crash would, and reap it."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGCONT)  # a paused process must die too
            except ProcessLookupError:
                pass
            proc.kill()
        proc.wait(10)

    def restart(self) -> ServerProcess:
        """Kill the process and start a fresh one on the same port."""
        self.kill()
        return self.start()

    def pause(self) -> None:
        """``SIGSTOP``: connections are still accepted but never answered."""
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """``SIGCONT`` after :meth:`pause`."""
        if self._proc is not None:
            os.kill(self._proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Kill the process and remove its directory."""
        self.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)
        with _servers_lock:
            _servers.discard(self)

    def log(self) -> str:
        try:
            with open(self._log_path, "rb") as fh:
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.address}>"


class RedisServer(ServerProcess):
    """A throwaway ``redis-server`` (no persistence)."""

    @property
    def url(self) -> str:
        return f"redis://{self.address}/0"

    def command(self, *args: str) -> bytes:
        """Run one command through a raw socket (no client library)."""
        return redis_command(self.port, *args)


def _redis_ready(port: int) -> bool:
    return redis_command(port, "PING").startswith(b"+PONG")


def _memcached_ready(port: int) -> bool:
    return _exchange(port, b"version\r\n").startswith(b"VERSION")


def _redis_argv(binary: str, port: int, workdir: str, *extra: str) -> list[str]:
    return [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--save", "",
        "--appendonly", "no",
        "--dir", workdir,
        "--daemonize", "no",
        "--logfile", "",
        *extra,
    ]


S = t.TypeVar("S", bound=ServerProcess)


def _launch(
    build: t.Callable[[int, str], S], prefix: str, also_free_offset: int | None = None
) -> S:
    """Start ``build(port, workdir)`` on a free port, in a fresh directory.

    Tries three ports, in case another process takes the port between the
    check and the server's bind.
    :raises ServerUnavailable: if every attempt fails.
    """
    for attempt in range(3):
        server = build(free_port(also_free_offset), tempfile.mkdtemp(prefix=prefix))
        try:
            return server.start()
        except ServerUnavailable:
            server.stop()
            if attempt == 2:
                raise
        except BaseException:
            server.stop()
            raise
    raise AssertionError("unreachable")


def start_redis(*extra: str) -> RedisServer:
    """Start a throwaway ``redis-server`` on a free loopback port.

    :param extra: more command-line options, e.g. ``"--maxmemory", "1mb"``.
    :raises ServerUnavailable: if ``redis-server`` is missing or fails.
    """
    binary = require_binary("redis-server")
    return _launch(
        lambda port, workdir: RedisServer(
            "redis", _redis_argv(binary, port, workdir, *extra), port, _redis_ready, workdir
        ),
        "gosession-redis-",
    )


def start_memcached(memory_mb: int = 64) -> ServerProcess:
    """Start a throwaway ``memcached`` on a free loopback port.

    :raises ServerUnavailable: if ``memcached`` is missing or fails.
    """
    binary = require_binary("memcached")

    def build(port: int, workdir: str) -> ServerProcess:
        argv = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", str(memory_mb)]
        if os.geteuid() == 0:
            argv += ["-u", "root"]  # memcached refuses to run as root otherwise
        return ServerProcess("memcached", argv, port, _memcached_ready, workdir)

    return _launch(build, "gosession-memcached-")


class RedisCluster:
    """A real Redis Cluster of three masters and no replicas, on loopback."""

    def __init__(self, nodes: list[RedisServer]) -> None:
        self.nodes = nodes

    @property
    def url(self) -> str:
        """The URL of one node; the client discovers the others."""
        return self.nodes[0].url

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def start_redis_cluster(masters: int = 3) -> RedisCluster:
    """Start ``masters`` cluster-enabled servers and join them into a cluster.

    Waits until every node reports ``cluster_state:ok``.
    :raises ServerUnavailable: if a binary is missing or the cluster does
        not form in time.
    """
    binary = require_binary("redis-server")
    cli = require_binary("redis-cli")
    nodes: list[RedisServer] = []

    def build(port: int, workdir: str) -> RedisServer:
        argv = _redis_argv(
            binary, port, workdir,
            "--cluster-enabled", "yes",
            "--cluster-config-file", os.path.join(workdir, "nodes.conf"),
            "--cluster-node-timeout", "5000",
        )
        return RedisServer("redis-cluster-node", argv, port, _redis_ready, workdir)

    try:
        for _ in range(masters):
            # A node also binds its cluster bus port, port + 10000.
            nodes.append(_launch(build, "gosession-redis-cluster-", also_free_offset=10000))
        try:
            created = subprocess.run(
                [cli, "--cluster", "create", *(n.address for n in nodes),
                 "--cluster-replicas", "0", "--cluster-yes"],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=60,
            )
        except subprocess.TimeoutExpired as err:
            raise ServerUnavailable("redis-cli --cluster create hung") from err
        if created.returncode != 0:
            raise ServerUnavailable(
                "redis-cli --cluster create failed:\n"
                + created.stdout.decode(errors="replace")[-2000:]
                + created.stderr.decode(errors="replace")[-2000:]
            )
        deadline = time.monotonic() + 30
        while True:
            if all(b"cluster_state:ok" in n.command("CLUSTER", "INFO") for n in nodes):
                return RedisCluster(nodes)
            if time.monotonic() > deadline:
                raise ServerUnavailable("the Redis Cluster never reached cluster_state:ok")
            time.sleep(0.05)
    except BaseException:
        for node in nodes:
            node.stop()
        raise


class Sentinel:
    """A throwaway master plus one ``redis-server --sentinel`` watching it."""

    def __init__(self, master: RedisServer, sentinel: ServerProcess, service: str) -> None:
        self.master = master
        self.sentinel = sentinel
        self.service = service

    @property
    def address(self) -> str:
        return self.sentinel.address

    def stop(self) -> None:
        self.sentinel.stop()
        self.master.stop()


def start_sentinel(service: str = "mymaster") -> Sentinel:
    """Start a master and a Sentinel (quorum 1) monitoring it as ``service``.

    :raises ServerUnavailable: if either cannot be started.
    """
    binary = require_binary("redis-server")
    master = start_redis()

    def ready(port: int) -> bool:
        reply = redis_command(port, "SENTINEL", "get-master-addr-by-name", service)
        return str(master.port).encode() in reply

    def build(port: int, workdir: str) -> ServerProcess:
        # Sentinel rewrites its configuration file, so it lives in workdir.
        conf = os.path.join(workdir, "sentinel.conf")
        with open(conf, "w") as fh:
            fh.write(
                f"port {port}\n"
                "bind 127.0.0.1\n"
                "daemonize no\n"
                'logfile ""\n'
                f"dir {workdir}\n"
                f"sentinel monitor {service} 127.0.0.1 {master.port} 1\n"
                f"sentinel down-after-milliseconds {service} 60000\n"
            )
        return ServerProcess("redis-sentinel", [binary, conf, "--sentinel"], port, ready, workdir)

    try:
        return Sentinel(master, _launch(build, "gosession-sentinel-"), service)
    except BaseException:
        master.stop()
        raise


@atexit.register
def _kill_all() -> None:
    """Never leave a server behind, even after an aborted run."""
    with _servers_lock:
        servers = list(_servers)
    for server in servers:
        try:
            server.stop()
        except Exception:  # pragma: no cover - best effort at exit
            pass
