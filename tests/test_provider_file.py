"""Behaviour of the ``file`` provider beyond the shared contract.

Real files in a temporary directory; concurrency across processes uses real
subprocesses, and expiry uses the injected clock, never ``sleep``.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import stat
import subprocess
import sys
import textwrap
import threading

import pytest
from flask import Flask

from clock import FakeClock
from flask_gosession.errors import ConfigError, ProviderError
from flask_gosession.providers import file as file_module
from flask_gosession.providers.base import Change, Outcome, Record
from flask_gosession.providers.file import STALE_TEMP_AGE, FileProvider


def new_key() -> str:
    return hashlib.sha256(secrets.token_bytes(32)).hexdigest()


def rec(now: float, **data: object) -> Record:
    return Record(data=dict(data), meta={"c": now}, atime=now)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def directory(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return str(tmp_path / "sessions")


@pytest.fixture
def provider(directory, clock):  # type: ignore[no-untyped-def]
    prov = FileProvider(directory)
    prov.clock = clock
    yield prov
    prov.close()


def all_files(root: str) -> list[str]:
    return sorted(
        os.path.relpath(os.path.join(dirpath, name), root)
        for dirpath, _, names in os.walk(root)
        for name in names
    )


def temp_files(root: str) -> list[str]:
    return [path for path in all_files(root) if os.path.basename(path).startswith(".")]


# -- configuration ------------------------------------------------------------


def build(tmp_path, **config):  # type: ignore[no-untyped-def]
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(config)
    for key, value in FileProvider.config_defaults(app).items():
        app.config.setdefault(key, value)
    return FileProvider.from_config(app)


def test_default_directory_is_in_instance_path(tmp_path):
    prov = build(tmp_path)
    assert prov.directory == str(tmp_path / "instance" / "gosession")
    assert stat.S_IMODE(os.stat(prov.directory).st_mode) == 0o700
    assert prov.fsync is False


@pytest.mark.parametrize(
    "config",
    [
        {"GOSESSION_FILE_DIR": ""},
        {"GOSESSION_FILE_DIR": 42},
        {"GOSESSION_FILE_FSYNC": "maybe"},
        {"GOSESSION_FILE_FSYNC": 2},
    ],
)
def test_bad_config_is_rejected(tmp_path, config):
    with pytest.raises(ConfigError):
        build(tmp_path, **config)


@pytest.mark.parametrize("raw, expected", [("true", True), (" Yes ", True), ("0", False), (1, True)])
def test_flags_from_the_environment_are_accepted(tmp_path, raw, expected):
    assert build(tmp_path, GOSESSION_FILE_FSYNC=raw).fsync is expected


def test_uncreatable_directory_is_a_config_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="GOSESSION_FILE_DIR"):
        build(tmp_path, GOSESSION_FILE_DIR=str(blocker / "sessions"))


# -- permissions: a directory others can write is refused -------------------------------

#: The uid the "other local user" tests hand directories to.
NOBODY = 65534

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


def forge(directory: str, sid: str) -> None:
    """What a local attacker plants: a record saying ``user: admin``."""
    key = hashlib.sha256(sid.encode()).hexdigest()
    shard = os.path.join(directory, key[:2], key[2:4])
    os.makedirs(shard, exist_ok=True)
    now = FakeClock()()
    blob = FileProvider.pack(FileProvider.__new__(FileProvider),
                             Record({"user": "admin"}, {"c": now, "i": now}, now))
    with open(os.path.join(shard, key), "wb") as fh:
        fh.write(blob)


def refusal(tmp_path, directory) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        build(tmp_path, GOSESSION_FILE_DIR=str(directory))
    return str(info.value)


def test_precreated_world_writable_directory_is_refused_at_init_app(tmp_path):
    """The attack: a local user creates the directory 0777 before the app
    starts and plants a record; the app must refuse to start on it."""
    from flask_gosession import GoSession

    directory = tmp_path / "shared"
    directory.mkdir()
    os.chmod(directory, 0o777)
    forge(str(directory), "A" * 43)
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(SECRET_KEY="x", GOSESSION_PROVIDER="file", GOSESSION_FILE_DIR=str(directory))
    with pytest.raises(ConfigError) as info:
        GoSession(app)
    message = str(info.value)
    assert str(directory) in message
    assert "writable by its group and others" in message and "0777" in message
    assert f"chmod 700 {directory}" in message


def test_group_writable_directory_is_refused(tmp_path):
    directory = tmp_path / "sessions"
    directory.mkdir()
    os.chmod(directory, 0o770)
    message = refusal(tmp_path, directory)
    assert "writable by its group" in message and "others" not in message.split("(")[0]
    assert f"chmod 700 {directory}" in message


@needs_root
def test_directory_owned_by_another_user_is_refused(tmp_path):
    directory = tmp_path / "sessions"
    directory.mkdir(mode=0o700)
    os.chown(directory, NOBODY, NOBODY)
    message = refusal(tmp_path, directory)
    assert str(directory) in message and f"owned by uid {NOBODY}" in message
    assert f"chown {os.geteuid()} {directory}" in message


def test_symlink_to_a_good_directory_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    FileProvider(str(real)).close()  # a perfectly good store
    link = tmp_path / "link"
    link.symlink_to(real)
    message = refusal(tmp_path, link)
    assert str(link) in message and "symbolic link" in message
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    assert "symbolic link" in refusal(tmp_path, dangling)
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("which", ["locks", "top", "leaf"])
@pytest.mark.parametrize("problem", ["world-writable", "group-writable", "other-owner", "symlink"])
def test_a_bad_subdirectory_is_refused(tmp_path, which, problem):
    directory = str(tmp_path / "sessions")
    key = new_key()
    prov = FileProvider(directory)
    prov.session_init(key, rec(1000.0, a=1))
    path = {
        "locks": os.path.join(directory, "locks"),
        "top": os.path.join(directory, key[:2]),
        "leaf": os.path.join(directory, key[:2], key[2:4]),
    }[which]
    if problem == "world-writable":
        os.chmod(path, 0o777)
    elif problem == "group-writable":
        os.chmod(path, 0o720)
    elif problem == "other-owner":
        if os.geteuid() != 0:
            pytest.skip("chown to another uid needs root")
        os.chown(path, NOBODY, NOBODY)
    else:
        elsewhere = str(tmp_path / "elsewhere")
        os.rename(path, elsewhere)
        os.symlink(elsewhere, path)
    message = refusal(tmp_path, directory)
    assert repr(path) in message


def test_fresh_default_directory_works_and_is_private(tmp_path):
    prov = build(tmp_path)
    key, now = new_key(), 1000.0
    prov.session_init(key, rec(now, a=1))
    assert prov.session_read(key, now).data == {"a": 1}
    build(tmp_path)  # and it is accepted again on the next start
    for path in (prov.directory, os.path.join(prov.directory, "locks"),
                 os.path.join(prov.directory, key[:2]), os.path.join(prov.directory, key[:2], key[2:4])):
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o700


def test_a_stray_file_named_like_a_shard_does_not_stop_the_start(tmp_path, directory):
    FileProvider(directory)
    with open(os.path.join(directory, "ab"), "w") as fh:
        fh.write("not a directory")
    FileProvider(directory)


@needs_root
def test_a_record_file_owned_by_another_user_reads_as_corrupt(provider, directory):
    from flask_gosession.errors import CorruptRecordError

    key, now = new_key(), provider.clock()
    provider.session_init(key, rec(now, user="ann"))
    os.chown(provider.path_for(key), NOBODY, NOBODY)
    with pytest.raises(CorruptRecordError):
        provider.session_read(key, now)


# -- the size cap -----------------------------------------------------------------------------


def test_oversized_record_is_refused_before_any_file_is_written(tmp_path, directory):
    from flask_gosession.errors import RecordTooLarge

    prov = build(tmp_path, GOSESSION_FILE_DIR=directory, GOSESSION_MAX_RECORD_SIZE=4096)
    key, now = new_key(), 1000.0
    with pytest.raises(RecordTooLarge) as info:
        prov.session_init(key, rec(now, big="x" * 5000))
    assert info.value.limit == 4096 and info.value.size > 5000 and info.value.label == key[:12]
    assert all_files(directory) == []
    prov.session_init(key, rec(now, a=1))
    before = all_files(directory)
    with pytest.raises(RecordTooLarge):
        prov.session_update(key, Change(set={"big": "x" * 5000}, atime=now))
    assert prov.session_read(key, now).data == {"a": 1}
    assert all_files(directory) == before  # no temporary file left behind


def test_record_size_cap_defaults_to_one_mib(tmp_path):
    assert build(tmp_path).max_record_size == 1024 * 1024
    assert FileProvider(str(tmp_path / "by-hand")).max_record_size is None


# -- keys and layout ------------------------------------------------------------


BAD_KEYS = [
    "../../etc/passwd",
    "../" + "0" * 61,
    "/" + "0" * 63,
    "0" * 63,
    "0" * 65,
    "A" * 64,
    "g" * 64,
    "0" * 63 + "\n",
    "0" * 62 + "/x",
    "",
    b"0" * 64,
    None,
]


@pytest.mark.parametrize("key", BAD_KEYS, ids=repr)
def test_bad_keys_are_refused_before_touching_disk(provider, directory, tmp_path, key):
    outside_before = sorted(os.listdir(tmp_path))
    inside_before = all_files(directory)
    now = provider.clock()
    calls = [
        lambda: provider.session_init(key, rec(now, a=1)),
        lambda: provider.session_read(key, now),
        lambda: provider.session_update(key, Change(set={"a": 1}, atime=now)),
        lambda: provider.session_touch(key, now),
        lambda: provider.session_destroy(key),
        lambda: provider.path_for(key),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    assert sorted(os.listdir(tmp_path)) == outside_before
    assert all_files(directory) == inside_before


def test_sharded_layout_and_private_modes(provider, directory):
    key, now = new_key(), provider.clock()
    old_umask = os.umask(0)  # the provider must not rely on the umask
    try:
        provider.session_init(key, rec(now, a=1))
    finally:
        os.umask(old_umask)
    path = os.path.join(directory, key[:2], key[2:4], key)
    assert provider.path_for(key) == path
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for folder in (directory, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(os.path.join(directory, "locks", key[:2] + ".lock")).st_mode) == 0o600


def test_lock_files_are_bounded(provider, directory):
    now = provider.clock()
    keys = [new_key() for _ in range(600)]
    for key in keys:
        provider.session_init(key, rec(now))
    for key in keys:
        provider.session_destroy(key)
    locks = os.listdir(os.path.join(directory, "locks"))
    assert 0 < len(locks) <= 256
    assert provider.session_count() == 0


# -- atime lives in the mtime ------------------------------------------------------


def test_atime_is_the_file_mtime_and_touch_does_not_rewrite(provider):
    key, now = new_key(), provider.clock()
    provider.session_init(key, rec(now - 100, a=1))
    path = provider.path_for(key)
    before = os.stat(path)
    assert before.st_mtime == pytest.approx(now - 100, rel=0, abs=0.01)
    provider.session_touch(key, now)
    after = os.stat(path)
    assert after.st_ino == before.st_ino  # metadata only, not a new file
    assert after.st_mtime == pytest.approx(now, rel=0, abs=0.01)
    got = provider.session_read(key, now + 5)
    assert got.atime == pytest.approx(now, rel=0, abs=0.01)
    assert os.stat(path).st_ino == before.st_ino
    assert os.stat(path).st_mtime == pytest.approx(now + 5, rel=0, abs=0.01)


def test_reading_an_expired_record_does_not_refresh_it(provider):
    key, now = new_key(), provider.clock()
    provider.max_lifetime = 3600
    provider.session_init(key, rec(now - 3600, a=1))
    assert provider.session_read(key, now).atime == pytest.approx(now - 3600, rel=0, abs=0.01)
    # Still expired for the manager's next look and for GC.
    assert provider.session_read(key, now + 1).atime == pytest.approx(now - 3600, rel=0, abs=0.01)
    assert provider.session_gc(3600) == 1


def test_update_sets_mtime_to_the_change_atime(provider):
    key, now = new_key(), provider.clock()
    provider.session_init(key, rec(now, a=1))
    assert provider.session_update(key, Change(set={"b": 2}, atime=now + 42)) is Outcome.APPLIED
    assert os.stat(provider.path_for(key)).st_mtime == pytest.approx(now + 42, rel=0, abs=0.01)


# -- atomic writes -------------------------------------------------------------------


def test_writes_leave_no_temporary_files(provider, directory):
    key, now = new_key(), provider.clock()
    provider.session_init(key, rec(now, a=1))
    for i in range(50):
        provider.session_update(key, Change(set={"a": i}, atime=now))
    assert temp_files(directory) == []
    assert provider.session_read(key, now).data == {"a": 49}


def test_failed_replace_keeps_old_record_and_cleans_up(provider, directory, monkeypatch):
    key, now = new_key(), provider.clock()
    provider.session_init(key, rec(now, a=1))

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(file_module.os, "replace", refuse)
    with pytest.raises(ProviderError, match="No space left"):
        provider.session_update(key, Change(set={"a": 2}, atime=now))
    monkeypatch.undo()
    assert provider.session_read(key, now).data == {"a": 1}
    assert temp_files(directory) == []


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from flask_gosession.providers import file as file_module
    from flask_gosession.providers.base import Change

    # Die like a killed process between writing the temp file and renaming it.
    file_module.os.replace = lambda src, dst: os._exit(17)
    prov = file_module.FileProvider(sys.argv[1])
    prov.session_update(sys.argv[2], Change(set={"a": 2}, atime=float(sys.argv[3])))
    """
)


def test_crash_mid_write_leaves_old_record_and_gc_removes_the_temp_file(provider, directory):
    key, now = new_key(), provider.clock()
    provider.session_init(key, rec(now, a=1))
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, directory, key, repr(now)],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 17, proc.stderr.decode()
    assert len(temp_files(directory)) == 1
    # The dead writer's lock was released with its process.
    assert provider.session_read(key, now).data == {"a": 1}
    assert provider.session_gc(3600) == 0
    assert len(temp_files(directory)) == 1  # too young: may be a live writer
    provider.clock.advance(STALE_TEMP_AGE + 1)
    assert provider.session_gc(3600) == 0  # temp files are not counted
    assert temp_files(directory) == []
    assert provider.session_read(key, provider.clock()).data == {"a": 1}


def test_gc_spares_a_fresh_temp_file_with_an_old_mtime(provider, directory):
    """A live writer sets its temp file's mtime to the record's atime, which
    can be old; GC judges temp files by ctime, which only real activity sets."""
    key, now = new_key(), provider.clock()
    provider.session_init(key, rec(now))
    temp = os.path.join(os.path.dirname(provider.path_for(key)), f".{key}.0123456789ab.tmp")
    with open(temp, "wb") as fh:
        fh.write(b"half")
    os.utime(temp, (now - 86400, now - 86400))
    provider.session_gc(3600)
    assert os.path.exists(temp)
    provider.clock.advance(STALE_TEMP_AGE + 1)
    provider.session_gc(10**9)
    assert not os.path.exists(temp)


def test_fsync_mode_writes_and_reads(directory, clock):
    prov = FileProvider(directory, fsync=True)
    prov.clock = clock
    key, now = new_key(), clock()
    prov.session_init(key, rec(now, a=1))
    assert prov.session_update(key, Change(set={"b": 2}, atime=now)) is Outcome.APPLIED
    assert prov.session_read(key, now).data == {"a": 1, "b": 2}


# -- garbage collection and administration ---------------------------------------------


def test_gc_removes_only_expired_records(provider):
    now = provider.clock()
    expired = [new_key() for _ in range(5)]
    live = [new_key() for _ in range(3)]
    for key in expired:
        provider.session_init(key, rec(now - 3600))  # exactly at the limit counts
    for key in live:
        provider.session_init(key, rec(now - 3599))
    assert provider.session_gc(3600) == 5
    assert all(provider.session_read(key, now) is None for key in expired)
    assert all(provider.session_read(key, now) is not None for key in live)
    assert provider.session_count() == 3


def test_gc_spares_a_record_touched_after_it_was_found(provider, monkeypatch):
    key, now = new_key(), provider.clock()
    provider.session_init(key, rec(now - 4000))
    real_locked = provider._locked

    def touch_then_lock(stripe: str):  # type: ignore[no-untyped-def]
        # A request refreshes the session between GC's scan and its removal.
        provider.session_touch(key, now)
        return real_locked(stripe)

    monkeypatch.setattr(provider, "_locked", touch_then_lock)
    assert provider.session_gc(3600) == 0
    monkeypatch.undo()
    assert provider.session_read(key, now) is not None


def test_count_and_clear(provider, directory):
    now = provider.clock()
    keys = [new_key() for _ in range(7)]
    for key in keys:
        provider.session_init(key, rec(now))
    assert provider.session_count() == 7
    assert provider.session_clear() == 7
    assert provider.session_count() == 0
    assert all(provider.session_read(key, now) is None for key in keys)
    assert temp_files(directory) == []


def test_unrelated_files_are_ignored(provider, directory):
    now = provider.clock()
    key = new_key()
    provider.session_init(key, rec(now - 9999))
    stray = os.path.join(directory, key[:2], key[2:4], "README")
    with open(stray, "w") as fh:
        fh.write("not a session")
    os.utime(stray, (0, 0))
    assert provider.session_count() == 1
    assert provider.session_gc(3600) == 1
    assert os.path.exists(stray)


def test_os_errors_become_provider_errors(provider, directory):
    key, now = new_key(), provider.clock()
    # A file where the key's shard directory should be: every write fails
    # with NotADirectoryError, whoever runs the tests (root included).
    with open(os.path.join(directory, key[:2]), "w") as fh:
        fh.write("in the way")
    with pytest.raises(ProviderError) as info:
        provider.session_init(key, rec(now, a=1))
    assert isinstance(info.value.__cause__, OSError)
    # The paths in the message and in the chained error name the key only
    # by its label.
    assert key[:12] in str(info.value) and key not in str(info.value)
    assert key not in str(info.value.__cause__)
    with pytest.raises(ProviderError):
        provider.session_destroy(key)
    with pytest.raises(ProviderError):
        provider.session_read(key, now)


# -- concurrency ---------------------------------------------------------------------


def test_update_racing_destroy_never_resurrects(provider):
    now = provider.clock()
    for _ in range(20):
        key = new_key()
        provider.session_init(key, rec(now))
        outcomes: list[Outcome] = []
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                for i in range(30):
                    outcomes.append(provider.session_update(key, Change(set={"i": i}, atime=now)))
            except BaseException as err:  # pragma: no cover - reported below
                errors.append(err)

        threads = [threading.Thread(target=writer) for _ in range(3)]
        for th in threads:
            th.start()
        provider.session_destroy(key)
        for th in threads:
            th.join(30)
        assert not errors
        assert provider.session_read(key, now) is None
        # Once MISSING, always MISSING for that writer's later calls.
        assert Outcome.MISSING in outcomes or len(outcomes) == 90


WRITER_SCRIPT = textwrap.dedent(
    """
    import sys
    from flask_gosession.providers.base import Change, Outcome
    from flask_gosession.providers.file import FileProvider

    directory, key, name, rounds, atime = sys.argv[1:]
    prov = FileProvider(directory)
    for i in range(int(rounds)):
        out = prov.session_update(key, Change(set={name: i}, atime=float(atime)))
        assert out is Outcome.APPLIED, out
    """
)


def test_processes_updating_different_keys_all_survive(provider, directory):
    key, now = new_key(), provider.clock()
    provider.session_init(key, rec(now, base=True))
    rounds, names = 40, [f"p{n}" for n in range(4)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER_SCRIPT, directory, key, name, str(rounds), repr(now)],
            stderr=subprocess.PIPE,
        )
        for name in names
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()
    expected = {name: rounds - 1 for name in names}
    expected["base"] = True
    assert provider.session_read(key, now).data == expected
    assert temp_files(directory) == []
