"""The throwaway-server helpers in ``servers.py`` do what they promise.

The fault tests trust these helpers: that a paused server answers nothing,
that a killed one refuses connections and that a started one is the one
answering. Each promise is checked here against real processes, at the
moment the helper returns, not some time later.
"""
from __future__ import annotations

import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

import servers

pytestmark = pytest.mark.slow


def _wait_for_states(pid: int, stopped: bool) -> dict[int, str]:
    deadline = time.monotonic() + 5
    while True:
        states = servers.thread_states(pid)
        if states and all((s == "T") == stopped for s in states.values()):
            return states
        assert time.monotonic() < deadline, states
        time.sleep(0.005)


def test_thread_states_reads_the_state_after_the_command_name(tmp_path):
    """The command name in ``/proc/PID/stat`` may hold spaces and parentheses."""
    sleep = shutil.which("sleep")
    assert sleep is not None
    odd = tmp_path / "a) R (b c"  # the command name is the executable's name
    odd.symlink_to(sleep)
    proc = subprocess.Popen([str(odd), "30"])
    try:
        with open(f"/proc/{proc.pid}/stat", "rb") as fh:
            assert b"(a) R (b c)" in fh.read()  # the name really is odd
        os.kill(proc.pid, signal.SIGSTOP)
        assert set(_wait_for_states(proc.pid, stopped=True).values()) == {"T"}
        os.kill(proc.pid, signal.SIGCONT)
        assert "T" not in _wait_for_states(proc.pid, stopped=False).values()
    finally:
        proc.kill()
        proc.wait(10)
    assert servers.thread_states(proc.pid) == {}


def test_a_paused_server_answers_nothing_the_moment_pause_returns(memcached_server):
    """A signal reaches a multithreaded server's threads one by one; pause()
    returns only once none of them can answer. Each round keeps every
    worker thread busy up to the pause (memcached hands connections to its
    workers in turn); with a bare ``SIGSTOP``, a worker still answered in
    nearly every run."""
    answered = []
    socks = [
        socket.create_connection(("127.0.0.1", memcached_server.port), timeout=2)
        for _ in range(8)
    ]
    try:
        for round_ in range(60):
            for sock in socks:
                sock.sendall(b"version\r\n")
            for sock in socks:
                assert sock.recv(100).startswith(b"VERSION")
            memcached_server.pause()
            for sock in socks:
                sock.sendall(b"version\r\n")
            early, _, _ = select.select(socks, [], [], 0.02)
            answered += [round_] * len(early)
            memcached_server.resume()
            for sock in socks:  # every request is answered once it runs again
                assert sock.recv(100).startswith(b"VERSION")
    finally:
        for sock in socks:
            sock.close()
    assert answered == []


def test_kill_returns_only_once_the_port_refuses_connections(memcached_server):
    for _ in range(5):
        memcached_server.kill()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", memcached_server.port), timeout=1).close()
        memcached_server.start()


#: A "server" whose listening socket outlives it: a child inherits it.
FORKING_SERVER = textwrap.dedent(
    """
    import os, socket, sys, time
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", int(sys.argv[1])))
    sock.listen()
    if os.fork() == 0:
        time.sleep(30)  # holds the listening socket, answers nothing
        os._exit(0)
    while True:
        conn, _ = sock.accept()
        conn.recv(100)
        conn.sendall(b"VERSION fake\\r\\n")
        conn.close()
    """
)


def test_kill_fails_loudly_while_a_child_keeps_the_port_open(monkeypatch):
    monkeypatch.setattr(servers, "SIGNAL_TIMEOUT", 0.3)
    port = servers.free_port()
    workdir = tempfile.mkdtemp(prefix="gosession-forking-")
    server = servers.ServerProcess(
        "forking", [sys.executable, "-c", FORKING_SERVER, str(port)],
        port, lambda p: servers._exchange(p, b"version\r\n").startswith(b"VERSION"), workdir,
    )
    server.start()
    group = os.getpgid(server._proc.pid)  # type: ignore[union-attr]
    try:
        with pytest.raises(servers.ServerStuck, match=f"sockets still listening after .*: \\[{port}\\]"):
            server.kill()
    finally:
        os.killpg(group, signal.SIGKILL)
        server.stop()


def test_start_is_not_fooled_by_another_server_on_the_port(memcached_server):
    """A second server whose bind fails must not pass for started because
    the first one answers on the port."""
    binary = servers.require_binary("memcached")
    argv = [binary, "-l", "127.0.0.1", "-p", str(memcached_server.port), "-U", "0"]
    if os.geteuid() == 0:
        argv += ["-u", "root"]
    intruder = servers.ServerProcess(
        "memcached-intruder", argv, memcached_server.port,
        lambda p: servers._exchange(p, b"version\r\n").startswith(b"VERSION"),
        tempfile.mkdtemp(prefix="gosession-intruder-"),
    )
    try:
        with pytest.raises(servers.ServerUnavailable, match="did not start"):
            intruder.start()
    finally:
        intruder.stop()
    assert memcached_server.running


def test_pause_and_resume_refuse_a_server_that_is_not_running(memcached_server):
    memcached_server.kill()
    with pytest.raises(servers.ServerStuck, match="not running"):
        memcached_server.pause()
    with pytest.raises(servers.ServerStuck, match="not running"):
        memcached_server.resume()
