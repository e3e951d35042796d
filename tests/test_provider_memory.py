"""The memory store says so when it ends up in more than one process.

Under ``gunicorn -w 4`` each worker has its own copy of the store, so a
login made by one worker is unknown to the others; these tests show that
this is logged, with a real ``os.fork()`` and a real gunicorn.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import re
import subprocess
import sys
import textwrap
import time
import typing as t
import warnings
import weakref

import pytest

import servers
from flask_gosession.providers import memory as memory_module
from flask_gosession.providers.memory import MemoryProvider

FORK_WARNING = "is a fork of it"


class Collect(logging.Handler):
    """Keeps the messages of the ``flask_gosession`` logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def collected() -> t.Iterator[Collect]:
    handler = Collect()
    logger = logging.getLogger("flask_gosession")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def fork(child: t.Callable[[], t.Any]) -> t.Any:
    """Run ``child()`` in a forked process; return what it returned (as JSON)."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12+ warns about forking a process that has threads; the
        # child here only logs and writes to a pipe.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        status = 1
        try:
            os.close(read_end)
            with os.fdopen(write_end, "w") as out:
                json.dump(child(), out)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end) as data:
        text = data.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, text
    return json.loads(text)


@pytest.fixture(autouse=True)
def only_this_tests_stores(monkeypatch):
    """Stores left by earlier tests (not yet collected) would warn in the
    child too; watch only the ones this test builds."""
    monkeypatch.setattr(memory_module, "_stores", weakref.WeakSet())


def test_a_forked_child_logs_one_warning_naming_the_shared_stores():
    store = MemoryProvider()
    parent = os.getpid()
    with collected() as log:

        def child() -> dict[str, t.Any]:
            # The warning was logged at fork time; a later check (and a
            # store built in this process) logs nothing more.
            again = store.check_process()
            MemoryProvider().check_process()
            return {"pid": os.getpid(), "messages": log.messages, "again": again}

        result = fork(child)
        assert store.check_process() is True
        assert log.messages == []  # the parent logged nothing
    (message,) = [m for m in result["messages"] if FORK_WARNING in m]
    assert len(result["messages"]) == 1
    assert result["again"] is False
    assert f"process {parent}" in message and f"({result['pid']})" in message
    for shared in ("file", "sql", "redis", "memcached"):
        assert shared in message


def test_a_store_built_after_the_fork_is_quiet():
    with collected() as log:

        def child() -> list[str]:
            store = MemoryProvider()
            store.check_process()
            return log.messages

        assert [m for m in fork(child) if FORK_WARNING in m] == []


def wait_for(predicate: t.Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _has_setting(name: str) -> bool:
    from gunicorn.config import KNOWN_SETTINGS

    return any(setting.name == name for setting in KNOWN_SETTINGS)


APP = textwrap.dedent(
    """
    from flask import Flask
    from flask_gosession import GoSession

    app = Flask(__name__)
    app.config.update(SECRET_KEY="test")
    GoSession(app)
    """
)


@pytest.mark.parametrize("preload", [True, False], ids=["preload", "no-preload"])
def test_gunicorn_with_two_workers_logs_why_logins_will_fail(tmp_path: pathlib.Path, preload: bool):
    """A real ``gunicorn -w 2``: the warnings reach its stderr, one per worker.

    With ``--preload`` the app (and its store) is built in the master and
    each forked worker logs the fork warning. Without it each worker builds
    the app itself, so no store is forked, and each logs the ``init_app``
    warning for a memory store outside debug and testing.
    """
    pytest.importorskip("gunicorn")
    (tmp_path / "memapp.py").write_text(APP)
    port = servers.free_port()
    stderr_path = tmp_path / "stderr.log"
    argv = [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}", "memapp:app"]
    if preload:
        argv.insert(-1, "--preload")
    if _has_setting("control_socket_disable"):
        argv.insert(-1, "--no-control-socket")  # else newer gunicorn creates ~/.gunicorn
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(argv, cwd=tmp_path, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=stderr)
    marker = FORK_WARNING if preload else "worker processes"

    def output() -> str:
        return stderr_path.read_text(errors="replace")

    try:
        wait_for(lambda: output().count(marker) >= 2 or proc.poll() is not None)
    finally:
        proc.terminate()
        proc.wait(30)
    text = output()
    workers = set(re.findall(r"Booting worker with pid: (\d+)", text))
    assert len(workers) == 2, text
    if preload:
        forked = set(re.findall(r"this process \((\d+)\) is a fork", text))
        assert forked == workers, text
        assert text.count("worker processes") == 1, text  # init_app, in the master
    else:
        assert text.count(marker) == 2, text
        assert FORK_WARNING not in text, text
