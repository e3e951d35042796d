"""Crash safety of the file provider: SIGKILL in the middle of writes.

Writer processes run a tight, bounded loop of ``session_init`` and
``session_update`` on a shared directory, with records large enough that a
write takes a while; each is killed (``SIGKILL``, no clean-up of any kind)
at a random moment, several times over on the same directory. After every
kill:

* every record file decodes with the provider, and is whole: each record
  carries the length of its payload, checked against the payload;
* the only other files are the provider's lock files and temporary files
  named as such (``.<key>.<random>.tmp``), and garbage collection removes
  those temporaries once they are old enough;
* the next writer is never blocked by a lock the dead one held.
"""
from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from flask_gosession.providers import file as file_provider
from flask_gosession.providers.base import Record
from flask_gosession.providers.file import FileProvider
from loadkit import report

pytestmark = pytest.mark.slow

KILLS = 6
WRITERS = 2
KEYS = 24

WRITER = textwrap.dedent(
    """
    import hashlib, os, random, sys, time
    from flask_gosession.providers.base import Change, Record
    from flask_gosession.providers.file import FileProvider

    directory, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    provider = FileProvider(directory)
    keys = [hashlib.sha256(b"crash-%d" % i).hexdigest() for i in range({keys})]
    deadline = time.monotonic() + 60  # bounded even if nobody kills us
    for i in range(10_000_000):
        if time.monotonic() > deadline:
            sys.exit(3)
        key = keys[rng.randrange(len(keys))]
        size = rng.choice((10, 1_000, 100_000, 1_000_000))
        payload = "x" * size
        now = time.time()
        if i % 3 == 0 or provider.session_read(key, now) is None:
            provider.session_init(key, Record(
                {{"payload": payload, "length": size, "writer": seed}},
                {{"c": now, "i": now}}, now))
        else:
            name = "u%d" % rng.randrange(4)
            provider.session_update(key, Change(
                set={{name: payload, name + "_length": size}}, atime=now))
        if i == 20:
            print("ready", flush=True)
    """
).format(keys=KEYS)

RECORD_NAME = re.compile(r"[0-9a-f]{64}")
TEMP_NAME = re.compile(r"\.[0-9a-f]{64}\.[0-9a-f]{12}\.tmp")
LOCK_NAME = re.compile(r"[0-9a-f]{2}\.lock")


def check_directory(provider: FileProvider) -> dict[str, int]:
    """Every file is a whole record, a lock file or a provider temp file."""
    counts = {"records": 0, "temp": 0, "locks": 0}
    for dirpath, dirnames, filenames in os.walk(provider.directory):
        relative = os.path.relpath(dirpath, provider.directory)
        for name in filenames:
            if relative == "locks":
                assert LOCK_NAME.fullmatch(name), name
                counts["locks"] += 1
                continue
            assert re.fullmatch(r"[0-9a-f]{2}/[0-9a-f]{2}", relative), (relative, name)
            if TEMP_NAME.fullmatch(name):
                assert name[1:3] == relative[:2] and name[3:5] == relative[3:5]
                counts["temp"] += 1
                continue
            assert RECORD_NAME.fullmatch(name), name
            assert relative == f"{name[:2]}/{name[2:4]}", (relative, name)
            record = provider.session_read(name, time.time())  # raises if corrupt
            assert isinstance(record, Record)
            data = record.data
            assert len(data["payload"]) == data["length"], name
            for field, value in data.items():
                if field.startswith("u") and not field.endswith("_length"):
                    assert len(value) == data[field + "_length"], (name, field)
            assert record.meta["c"] <= time.time()
            counts["records"] += 1
    return counts


def start_writer(directory: str, seed: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, directory, str(seed)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if line.strip() != "ready":
        proc.kill()
        _, err = proc.communicate(timeout=10)
        pytest.fail(f"writer did not start: {line!r} {err[-2000:]}")
    return proc


def test_sigkill_mid_write_leaves_only_whole_records(tmp_path, capsys, monkeypatch):
    directory = str(tmp_path / "sessions")
    provider = FileProvider(directory)
    rng = random.Random()
    totals = {"kills": 0, "temp_left": 0}
    for round_ in range(KILLS):
        writers = [start_writer(directory, round_ * WRITERS + n) for n in range(WRITERS)]
        try:
            time.sleep(rng.uniform(0.05, 0.6))
            for proc in writers:
                assert proc.poll() is None, proc.stderr.read()[-2000:]  # type: ignore[union-attr]
                os.kill(proc.pid, signal.SIGKILL)
        finally:
            for proc in writers:
                proc.kill()
                proc.communicate(timeout=10)
        assert all(proc.returncode == -signal.SIGKILL for proc in writers)
        totals["kills"] += WRITERS
        counts = check_directory(provider)
        assert counts["records"] > 0
        totals["temp_left"] += counts["temp"]
    # Temporary files are removed by GC once stale (here: at once), records
    # are not (nothing is idle for 10**9 seconds).
    records_before = check_directory(provider)["records"]
    monkeypatch.setattr(file_provider, "STALE_TEMP_AGE", 0)
    time.sleep(0.05)
    provider.session_gc(10**9)
    after = check_directory(provider)
    assert after["temp"] == 0 and after["records"] == records_before
    report(capsys, f"[crash] file: {totals['kills']} writers killed mid-loop, "
                   f"{totals['temp_left']} temp files seen afterwards (all removed by GC), "
                   f"{records_before} whole records")


def test_killed_writer_holding_a_lock_does_not_block_the_next(tmp_path):
    """The kernel drops a dead process's flock: a writer killed inside its
    critical section never blocks the next one."""
    directory = str(tmp_path / "sessions")
    provider = FileProvider(directory)
    key = "ab" + "0" * 62
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(
            """
            import sys, time
            from flask_gosession.providers.file import FileProvider
            provider = FileProvider(sys.argv[1])
            with provider._locked("ab"):
                print("locked", flush=True)
                time.sleep(60)
            """
        ), directory],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"  # type: ignore[union-attr]
        os.kill(holder.pid, signal.SIGKILL)
    finally:
        holder.kill()
        holder.communicate(timeout=10)
    started = time.monotonic()
    provider.session_init(key, Record({"a": 1}, {"c": 1.0, "i": 1.0}, time.time()))
    assert time.monotonic() - started < 5
    assert provider.session_read(key, time.time()).data == {"a": 1}
