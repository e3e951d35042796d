"""Throwaway Redis and memcached servers on loopback ports, for tests.

Every server here binds ``127.0.0.1`` only, keeps no data on disk and lives
in its own temporary directory. Handles can be killed (``SIGKILL``, as in a
crash), paused (``SIGSTOP``, a server that accepts but never answers) and
restarted on the same port, so tests can show that a provider reports an
outage and recovers from it without being rebuilt.

Each of these returns only once the change has happened, not when the
signal was sent: a signal to a multithreaded server reaches its threads one
by one, and a worker thread can answer one more request meanwhile. So
:meth:`ServerProcess.pause` waits until every thread is stopped,
:meth:`~ServerProcess.resume` until none is, :meth:`~ServerProcess.kill`
until the process is reaped and its listening sockets are gone, and
:meth:`~ServerProcess.start` until the process itself (not some other one
on the port) answers. A server that does not get there in
:data:`SIGNAL_TIMEOUT` raises :class:`ServerStuck`. This reads ``/proc``:
Linux only.

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

#: How long a server may take to stop, continue or close its sockets
#: after a signal.
SIGNAL_TIMEOUT = 5.0

#: Every server not yet stopped, for the clean-up at exit.
_servers: set[ServerProcess] = set()
_servers_lock = threading.Lock()


class ServerUnavailable(RuntimeError):
    """A binary is missing or a server could not be started."""


class ServerStuck(RuntimeError):
    """A server did not reach the state a signal asked for in time.

    Deliberately not a :class:`ServerUnavailable`, which fixtures turn into
    a skip: this is a failure of the test run.
    """


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


def thread_states(pid: int) -> dict[int, str]:
    """The scheduler state of each thread of process ``pid``, by thread id.

    ``"T"`` is stopped by a signal, ``"R"`` running, ``"S"`` sleeping and so
    on (``proc(5)``). Empty once the process is gone. The state is the field
    after the command name in ``/proc/PID/task/TID/stat``; that name is in
    parentheses and may itself hold spaces and parentheses, so the line is
    split on its last ``)``.
    """
    states: dict[int, str] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return states
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as fh:
                stat = fh.read()
        except (FileNotFoundError, ProcessLookupError):
            continue  # that thread exited meanwhile
        states[int(tid)] = stat.rsplit(b")", 1)[1].split()[0].decode()
    return states


def _listening_sockets() -> dict[int, int]:
    """Every listening TCP socket of this network namespace: port by inode."""
    found: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                rows = fh.read().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            fields = row.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN.
            if len(fields) > 9 and fields[3] == "0A":
                found[int(fields[9])] = int(fields[1].rsplit(":", 1)[1], 16)
    return found


def _socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` holds open; empty once it
    has exited (a zombie has closed its files)."""
    inodes: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:["):-1]))
    return inodes


def listening_sockets(pid: int) -> dict[int, int]:
    """The TCP sockets process ``pid`` listens on: port by socket inode."""
    inodes = _socket_inodes(pid)
    return {inode: port for inode, port in _listening_sockets().items() if inode in inodes}


def _wait_until(done: t.Callable[[], bool], what: str, detail: t.Callable[[], object]) -> None:
    """Poll ``done()`` until it is true.

    :raises ServerStuck: naming ``what`` and ``detail()`` after
        :data:`SIGNAL_TIMEOUT` seconds.
    """
    deadline = time.monotonic() + SIGNAL_TIMEOUT
    while not done():
        if time.monotonic() > deadline:
            raise ServerStuck(f"{what} after {SIGNAL_TIMEOUT}s: {detail()}")
        time.sleep(0.002)


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
                # The answer must come from this process: if its bind
                # failed, another server on the port may be answering.
                if self._ready(self.port) and self._listens_on_port(self._proc.pid):
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        log_tail = self.log()[-2000:]
        self.kill()
        raise ServerUnavailable(f"{self.name} on port {self.port} did not start:\n{log_tail}")

    def _listens_on_port(self, pid: int) -> bool:
        return self.port in listening_sockets(pid).values()

    def _running_pid(self, action: str) -> int:
        if self._proc is None or self._proc.poll() is not None:
            raise ServerStuck(f"cannot {action} {self!r}: it is not running")
        return self._proc.pid

    def kill(self) -> None:
        """``SIGKILL`` the process, as a crash would; return once it is reaped
        and every socket it listened on is closed, so the next connection
        to its port is refused.

        :raises ServerStuck: if a listening socket outlives it (a child
            process holding it) for :data:`SIGNAL_TIMEOUT`.
        """
        proc, self._proc = self._proc, None
        if proc is None:
            return
        sockets = _socket_inodes(proc.pid)  # empty if it exited already
        if proc.poll() is None:
            proc.kill()  # SIGKILL ends a stopped process too
        proc.wait(10)
        left: dict[int, int] = {}

        def closed() -> bool:
            left.clear()
            left.update((i, port) for i, port in _listening_sockets().items() if i in sockets)
            return not left

        _wait_until(closed, f"{self!r}: sockets still listening", lambda: sorted(left.values()))

    def restart(self) -> ServerProcess:
        """Kill the process and start a fresh one on the same port; return
        once the new one answers."""
        self.kill()
        return self.start()

    def pause(self) -> None:
        """``SIGSTOP``: connections are still accepted but never answered.

        Returns once every thread is stopped (state ``T``): until then a
        worker thread the stop has not reached yet may still answer.
        :raises ServerStuck: if the process is not running, or a thread is
            not stopped within :data:`SIGNAL_TIMEOUT`.
        """
        pid = self._running_pid("pause")
        os.kill(pid, signal.SIGSTOP)
        _wait_until(
            lambda: self._threads_are(pid, stopped=True),
            f"{self!r}: not every thread stopped",
            lambda: thread_states(pid),
        )

    def resume(self) -> None:
        """``SIGCONT`` after :meth:`pause`; returns once no thread is stopped.

        :raises ServerStuck: if the process is not running, or a thread is
            still stopped after :data:`SIGNAL_TIMEOUT`.
        """
        pid = self._running_pid("resume")
        os.kill(pid, signal.SIGCONT)
        _wait_until(
            lambda: self._threads_are(pid, stopped=False),
            f"{self!r}: threads still stopped",
            lambda: thread_states(pid),
        )

    def _threads_are(self, pid: int, stopped: bool) -> bool:
        """Whether every thread of ``pid`` is (or none is) in state ``T``.

        :raises ServerStuck: if the process died meanwhile.
        """
        states = thread_states(pid)
        if not states or self._proc is None or self._proc.poll() is not None:
            raise ServerStuck(f"{self!r} died while waiting for its threads")
        return all((state == "T") == stopped for state in states.values())

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
