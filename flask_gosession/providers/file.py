"""The ``file`` provider: one file per session in a local directory.

Storage layout under ``GOSESSION_FILE_DIR`` (default
``<instance_path>/gosession``)::

    <dir>/                                  mode 0700
      locks/<k[:2]>.lock                    256 striped lock files, 0600
      <k[:2]>/<k[2:4]>/<k>                  one record per session, 0600
      <k[:2]>/<k[2:4]>/.<k>.<random>.tmp    a write in progress
      users/<u[:2]>/<u>                     one per-user index, 0600
      users/<u[:2]>/.<u>.<random>.tmp       an index write in progress

``<k>`` is the key: the 64-character lowercase hex SHA-256 that the manager
computes from the session id. File names are built from the key *only*, and
a key that is not exactly 64 lowercase hex digits is refused with
:class:`ValueError`, so no input can name a file outside the directory. Two
levels of 256 shard directories keep every directory small (a million
sessions is about 15 files per leaf). Shard directories are never removed,
so a writer never races a cleaner for its directory; there are at most
65,536 of them.

Permissions. Whoever can write to the directory can plant a record, that
is forge a session (``user: admin``). So the directory, ``locks/``,
``users/`` and every shard directory below them must be real directories (not symbolic links), owned
by the process's effective user and not writable by its group or by
others; :class:`FileProvider` checks them when it is built (at
``init_app``) and refuses anything else with
:class:`~flask_gosession.errors.ConfigError`, naming the path, the problem
and the fix (``chmod 700 ...``, ``chown ...``). It creates every directory
0700 and every file 0600, and a record file that another user owns reads
as corrupt. Directories above ``GOSESSION_FILE_DIR`` are not checked: keep
them out of reach of other users too (a world-writable parent needs the
sticky bit, as ``/tmp`` has).

Size. A record is at most ``GOSESSION_MAX_RECORD_SIZE`` bytes encoded
(default 1 MiB; ``None`` for no limit, the default when built by hand);
larger ones raise :class:`~flask_gosession.errors.RecordTooLarge` before
any file is written. The store itself has no limit of its own.

Each file holds the record encoded with :meth:`Provider.pack`. The record's
``atime`` lives in the file's **modification time**, not in the blob (the
copy in the blob is ignored on read): touching a session, on every read or
through :meth:`FileProvider.session_touch`, is one ``utime`` call instead of
a rewrite, and garbage collection only needs ``stat``.

Writes are atomic: the record is written to a fresh temporary file in the
same directory (``O_CREAT | O_EXCL``, mode 0600), its mtime set, optionally
``fsync``-ed (``GOSESSION_FILE_FSYNC``), then moved over the old file with
:func:`os.replace`. A reader therefore sees the old record or the new one,
never a mix, and a writer that dies mid-write leaves the old record intact
plus a temporary file that :meth:`FileProvider.session_gc` removes once it
has not changed for :data:`STALE_TEMP_AGE` seconds (by its ctime).

Every write (init, update, destroy, and the removals done by GC and clear)
holds an exclusive :func:`fcntl.flock` on the lock file of the key's stripe
(``locks/<k[:2]>.lock``, a fixed set of 256 files, so locks never pile up).
Because :meth:`FileProvider.session_update` checks that the record exists and
replaces it under that lock, and :meth:`FileProvider.session_destroy` unlinks
under the same lock, a concurrent update can never bring a destroyed session
back. Each operation opens the lock file afresh, so the lock excludes
threads of one process as well as other processes sharing the directory.
Reads and touches take no lock.

Per-user index. The index of a user (see :mod:`flask_gosession.userindex`)
is one file under ``users/``, named by the user key ``<u>`` (a SHA-256 hex
digest, refused like a session key if it is anything else), holding
:func:`~flask_gosession.userindex.dumps`'s blob. Its **mtime is the
index's expiry** (its latest horizon), so an expired index reads as none
and :meth:`FileProvider.session_gc` removes it with one ``stat``.
:meth:`FileProvider.index_write` reads, changes and atomically replaces the
file (temp file and :func:`os.replace`, as for records) under the lock
``locks/u<u[:2]>.lock``: a stripe namespace of its own, so index writes
never wait for session writes; no index operation takes a session lock,
and no session operation an index lock, so there is no lock order to get
wrong. :meth:`FileProvider.index_read` reads without the lock and takes it
only when it has something to prune. :meth:`FileProvider.session_peek`
reads records without the ``utime`` of a normal read.

POSIX only (it needs :mod:`fcntl`). Do not put the directory on NFS: there
``flock`` is emulated with per-process POSIX locks, which do not exclude
threads of the same process.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shlex
import stat
import typing as t

from .. import userindex
from ..errors import ConfigError, CorruptRecordError, ProviderError
from ..ids import label
from ._addresses import flag
from ._limits import DEFAULT_MAX_RECORD_SIZE, MAX_RECORD_SIZE, MAX_RECORD_SIZE_DESCRIPTION, positive_int, record_cap
from .base import Change, Outcome, Provider, Record, redact

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

if t.TYPE_CHECKING:
    from flask import Flask

#: A key as the manager makes it: a lowercase hex SHA-256 digest.
_KEY_RE = re.compile(r"[0-9a-f]{64}")
#: A shard directory name: two lowercase hex digits.
_SHARD_RE = re.compile(r"[0-9a-f]{2}")
_TEMP_PREFIX = "."
_TEMP_SUFFIX = ".tmp"
_NS = 1_000_000_000
#: The directory of the per-user indexes, and the prefix of their lock stripes.
_USERS = "users"
_USER_STRIPE = "u"
#: Event counters (``count_event``): one file per counter, one byte per event.
_EVENTS = "events"
_EVENT_RE = re.compile(r"[a-z0-9][a-z0-9.-]{0,63}")
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)

log = logging.getLogger("flask_gosession")

#: Seconds after which :meth:`FileProvider.session_gc` treats a temporary
#: file as left behind by a crashed writer and removes it.
STALE_TEMP_AGE = 600

_OPEN_READ = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
_OPEN_TEMP = (
    os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
)
_OPEN_LOCK = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)


def check_key(key: t.Any, what: str = "session key") -> str:
    """Return ``key`` if it is a 64-character lowercase hex string.

    :raises ValueError: for anything else, before any file is touched.
    """
    if not isinstance(key, str) or _KEY_RE.fullmatch(key) is None:
        # The value itself is not shown: it may be a session id.
        length = len(key) if isinstance(key, str) else "?"
        raise ValueError(
            f"invalid {what} ({type(key).__name__} of length {length}): "
            "expected a lowercase hex SHA-256 digest"
        )
    return key


def _ns(seconds: float) -> int:
    return int(seconds * _NS)


def _read_opener(path: str, flags: int) -> int:
    return os.open(path, _OPEN_READ)


def _scandir(path: str) -> list[os.DirEntry[str]]:
    """The entries of ``path``, or none if it vanished or never existed."""
    try:
        with os.scandir(path) as it:
            return list(it)
    except FileNotFoundError:
        return []


def _mkdir(path: str) -> None:
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass


def _is_shard(entry: os.DirEntry[str]) -> bool:
    """A shard directory, or a link or directory posing as one (a stray
    regular file of that name only makes writes to its shard fail)."""
    return _SHARD_RE.fullmatch(entry.name) is not None and (
        entry.is_symlink() or entry.is_dir(follow_symlinks=False)
    )


def check_private_dir(path: str) -> None:
    """Refuse ``path`` unless it is a directory only this user can write.

    Not a symbolic link (checked with :func:`os.lstat`, so a link is never
    followed), owned by the effective user, and not writable by its group
    or by others.
    :raises ConfigError: naming the path, the problem and the fix.
    """
    quoted = shlex.quote(path)
    try:
        st = os.lstat(path)
    except OSError as err:
        raise ConfigError(f"GOSESSION_FILE_DIR: cannot inspect {path!r}: {err.strerror}") from err
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(
            f"GOSESSION_FILE_DIR: {path!r} is a symbolic link, which whoever owns it "
            "could point elsewhere; the session store does not follow links. "
            "Set GOSESSION_FILE_DIR to the real directory."
        )
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"GOSESSION_FILE_DIR: {path!r} is not a directory")
    euid = os.geteuid()
    if st.st_uid != euid:
        raise ConfigError(
            f"GOSESSION_FILE_DIR: {path!r} is owned by uid {st.st_uid}, not by this "
            f"process's user (uid {euid}), so its owner could plant forged sessions. "
            f"Fix: chown {euid} {quoted} && chmod 700 {quoted}, or use a directory "
            "of your own."
        )
    writable = [who for who, bit in (("its group", stat.S_IWGRP), ("others", stat.S_IWOTH))
                if st.st_mode & bit]
    if writable:
        raise ConfigError(
            f"GOSESSION_FILE_DIR: {path!r} is writable by {' and '.join(writable)} "
            f"(mode {stat.S_IMODE(st.st_mode):04o}), so another local user could plant "
            f"forged sessions. Fix: chmod 700 {quoted}"
        )


class FileProvider(Provider):
    """Sessions as files in one directory, safe for many processes.

    :param directory: where to keep the sessions; created (mode 0700) if
        missing, and checked with its subdirectories (see the module docs).
    :param fsync: ``fsync`` every record and its directory before a write
        returns. Off by default: sessions are cheap to lose, and without it
        a power failure can at worst lose recent writes or leave an empty
        file, which reads as a corrupt record and becomes a fresh session.
    :param max_record_size: the largest encoded record stored, in bytes;
        ``None`` for no limit.
    :raises ConfigError: if the directory cannot be created, is a symbolic
        link, or it or a subdirectory is not owned by the effective user or
        is writable by group or others; or on a platform without
        :mod:`fcntl`.
    """

    #: Reads refresh the file's mtime with one ``utime`` call.
    touches_on_read = True

    def __init__(self, directory: str | os.PathLike[str], *, fsync: bool = False,
                 max_record_size: int | None = None) -> None:
        if fcntl is None:  # pragma: no cover - Windows
            raise ConfigError("the 'file' session provider needs a POSIX system (fcntl)")
        #: Absolute path of the session directory.
        self.directory = os.path.abspath(os.fspath(directory))
        #: Whether writes are flushed to disk before they return.
        self.fsync = fsync
        self.max_record_size = positive_int(max_record_size, MAX_RECORD_SIZE, optional=True)
        self._lock_dir = os.path.join(self.directory, "locks")
        self._users_dir = os.path.join(self.directory, _USERS)
        self._euid = os.geteuid()
        try:
            if not os.path.lexists(self.directory):
                os.makedirs(self.directory, mode=0o700, exist_ok=True)
            check_private_dir(self.directory)
            _mkdir(self._lock_dir)
            _mkdir(self._users_dir)
        except OSError as err:
            raise ConfigError(
                f"GOSESSION_FILE_DIR={self.directory!r} cannot be created: {err}"
            ) from err
        self._check_subdirectories()

    def _check_subdirectories(self) -> None:
        """:func:`check_private_dir` on ``locks/``, ``users/`` and every
        shard directory.

        One ``lstat`` per directory (at most 66,050), at startup only: the
        directory itself is private from here on, so no other user can add
        a shard later.
        """
        check_private_dir(self._lock_dir)
        check_private_dir(self._users_dir)
        for shard in _scandir(self._users_dir):
            if _is_shard(shard):
                check_private_dir(shard.path)
        for top in _scandir(self.directory):
            if _is_shard(top):
                check_private_dir(top.path)
                for leaf in _scandir(top.path):
                    if _is_shard(leaf):
                        check_private_dir(leaf.path)

    config_descriptions: t.ClassVar[t.Mapping[str, str]] = {
        "GOSESSION_FILE_DIR": (
            "Directory of the `file` store (default `instance_path/gosession`); must be a real "
            "directory (no symlink) owned by the app's user and not writable by group or "
            "others, or `init_app` refuses it."),
        "GOSESSION_FILE_FSYNC": "fsync each session file before it replaces the old one.",
        MAX_RECORD_SIZE: MAX_RECORD_SIZE_DESCRIPTION,
    }

    @classmethod
    def config_defaults(cls, app: Flask) -> dict[str, t.Any]:
        return {
            "GOSESSION_FILE_DIR": os.path.join(app.instance_path, "gosession"),
            "GOSESSION_FILE_FSYNC": False,
            MAX_RECORD_SIZE: DEFAULT_MAX_RECORD_SIZE,
        }

    @classmethod
    def from_config(cls, app: Flask) -> FileProvider:
        """Build from ``GOSESSION_FILE_DIR``, ``GOSESSION_FILE_FSYNC`` and
        ``GOSESSION_MAX_RECORD_SIZE``.

        :raises ConfigError: for a directory that is not a non-empty path,
            cannot be created or is not private (see the module docs), a
            non-boolean ``GOSESSION_FILE_FSYNC``, or a bad size.
        """
        directory = app.config["GOSESSION_FILE_DIR"]
        if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
            raise ConfigError(f"GOSESSION_FILE_DIR must be a directory path, got {directory!r}")
        fsync = flag(app.config["GOSESSION_FILE_FSYNC"], "GOSESSION_FILE_FSYNC")
        return cls(directory, fsync=fsync, max_record_size=record_cap(app.config))

    # -- paths and locks ----------------------------------------------------

    def path_for(self, key: str) -> str:
        """The file that holds (or would hold) the record under ``key``.

        :raises ValueError: if ``key`` is not a lowercase hex SHA-256.
        """
        check_key(key)
        return os.path.join(self.directory, key[:2], key[2:4], key)

    def index_path_for(self, user: str) -> str:
        """The file that holds (or would hold) the index of ``user``.

        :raises ValueError: if ``user`` is not a lowercase hex SHA-256 (a
            :func:`~flask_gosession.userindex.user_key`).
        """
        check_key(user, "user key")
        return os.path.join(self._users_dir, user[:2], user)

    @contextlib.contextmanager
    def _locked(self, stripe: str) -> t.Iterator[None]:
        """Hold the exclusive lock of one stripe (the key's first two digits)."""
        path = os.path.join(self._lock_dir, stripe + ".lock")
        try:
            fd = os.open(path, _OPEN_LOCK, 0o600)
        except FileNotFoundError:  # the directory was removed under us
            os.makedirs(self._lock_dir, mode=0o700, exist_ok=True)
            fd = os.open(path, _OPEN_LOCK, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    @contextlib.contextmanager
    def _errors(self, action: str) -> t.Iterator[None]:
        try:
            yield
        except OSError as err:
            # The paths name the key: keep only its label, in the message and
            # in the chained exception (a logged traceback shows it).
            for attr in ("filename", "filename2"):
                name = getattr(err, attr, None)
                if isinstance(name, str):
                    setattr(err, attr, redact(name))
            raise ProviderError(f"file session store: cannot {action}: {err}") from err

    # -- reading and writing one file ----------------------------------------

    def _load(self, path: str, touch: float | None = None) -> Record | None:
        """Read the record at ``path`` (``None`` if absent), atime from mtime.

        With ``touch``, the file's mtime is then set to that time, through
        the same open file, so the returned atime is the previous one. A
        record already idle for :attr:`max_lifetime` is not touched: reading
        an expired session must not make it look fresh to the next read or
        to :meth:`session_gc`.
        """
        try:
            fh = open(path, "rb", opener=_read_opener)
        except FileNotFoundError:
            return None
        with fh:
            st = os.fstat(fh.fileno())
            if st.st_uid != self._euid:
                # Planted by another user: never trusted, dropped as corrupt.
                raise CorruptRecordError("session file is owned by another user")
            mtime_ns = st.st_mtime_ns
            blob = fh.read()
            if touch is not None and mtime_ns > _ns(touch - self.max_lifetime):
                os.utime(fh.fileno(), ns=(_ns(touch), _ns(touch)))
        record = self.unpack(blob)
        record.atime = mtime_ns / _NS
        return record

    def _write(self, key: str, blob: bytes, atime: float) -> None:
        """Atomically replace the record under ``key``. Caller holds the lock."""
        self._replace(os.path.join(self.directory, key[:2], key[2:4]), key, blob, atime)

    def _replace(self, shard: str, name: str, blob: bytes, mtime: float) -> None:
        """Atomically replace ``shard/name`` with ``blob``, its mtime set to
        ``mtime``. Caller holds the stripe's lock."""
        temp = os.path.join(shard, f"{_TEMP_PREFIX}{name}.{secrets.token_hex(6)}{_TEMP_SUFFIX}")
        try:
            fd = os.open(temp, _OPEN_TEMP, 0o600)
        except FileNotFoundError:
            # Created on first use, one level at a time so both get 0700.
            _mkdir(os.path.dirname(shard))
            _mkdir(shard)
            fd = os.open(temp, _OPEN_TEMP, 0o600)
        try:
            with open(fd, "wb") as fh:
                fh.write(blob)
                fh.flush()
                if self.fsync:
                    os.fsync(fd)
                # After the data, or the write would move the mtime again.
                os.utime(fd, ns=(_ns(mtime), _ns(mtime)))
            os.replace(temp, os.path.join(shard, name))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        if self.fsync:
            dir_fd = os.open(shard, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    # -- the provider contract -------------------------------------------------

    def session_init(self, key: str, record: Record) -> None:
        check_key(key)
        blob = self.pack_checked(key, record)
        with self._errors("store the session"), self._locked(key[:2]):
            self._write(key, blob, record.atime)

    def session_create(self, key: str, record: Record) -> bool:
        check_key(key)
        blob = self.pack_checked(key, record)
        with self._errors("create the session"), self._locked(key[:2]):
            if os.path.lexists(self.path_for(key)):
                return False
            self._write(key, blob, record.atime)
        return True

    def session_read(self, key: str, now: float) -> Record | None:
        path = self.path_for(key)
        with self._errors("read the session"):
            return self._load(path, touch=now)

    def session_update(self, key: str, change: Change) -> Outcome:
        path = self.path_for(key)
        with self._errors("update the session"), self._locked(key[:2]):
            record = self._load(path)
            if record is None:
                return Outcome.MISSING
            outcome = self.merge(record, change)
            if outcome is Outcome.APPLIED:
                self._write(key, self.pack_checked(key, record), record.atime)
            return outcome

    def session_touch(self, key: str, atime: float) -> None:
        path = self.path_for(key)
        # No lock: utime never creates a file, so a touch racing a destroy
        # cannot resurrect it, and a touch lost to a concurrent update is
        # harmless (the update sets a fresh atime itself).
        with self._errors("touch the session"):
            try:
                os.utime(path, ns=(_ns(atime), _ns(atime)), follow_symlinks=False)
            except FileNotFoundError:
                pass

    def session_destroy(self, key: str) -> None:
        path = self.path_for(key)
        with self._errors("destroy the session"), self._locked(key[:2]):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def session_gc(self, max_lifetime: int) -> int:
        """Remove records whose mtime is ``max_lifetime`` or more seconds old,
        and indexes whose mtime (their expiry) has passed.

        Also removes temporary files older than :data:`STALE_TEMP_AGE`
        (not counted). Candidates are found without a lock, then re-checked
        and removed under their stripe's lock, so a record refreshed by a
        concurrent update in the meantime survives.

        :returns: how many session records were removed (indexes are not
            counted).
        """
        now = self.clock()
        temp_deadline = _ns(now - STALE_TEMP_AGE)
        removed = 0
        with self._errors("collect expired sessions"):
            for stripe, files in self._stripes():
                removed += self._collect(stripe, files, _ns(now - max_lifetime), temp_deadline)
            for stripe, files in self._index_stripes():
                self._collect(stripe, files, _ns(now), temp_deadline)
        return removed

    def _collect(self, stripe: str, files: list[os.DirEntry[str]], deadline: int,
                 temp_deadline: int) -> int:
        """Remove the files of one stripe whose mtime is at or before
        ``deadline``, and its abandoned temporary files; return how many
        of the former."""
        expired = []
        stale = []
        for entry in files:
            if _KEY_RE.fullmatch(entry.name):
                mtime = self._mtime_ns(entry.path)
                if mtime is not None and mtime <= deadline:
                    expired.append(entry.path)
            elif self._is_temp(entry.name):
                # ctime, not mtime: a writer sets its temp file's
                # mtime to the record's atime, which may be old.
                try:
                    ctime = os.stat(entry.path, follow_symlinks=False).st_ctime_ns
                except FileNotFoundError:
                    continue
                if ctime <= temp_deadline:
                    stale.append(entry.path)
        removed = 0
        if expired or stale:
            # Writers hold the stripe lock from creating their temp
            # file until they rename it, so a temp file seen under
            # the lock was abandoned by a writer that died.
            with self._locked(stripe):
                for path in stale:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                for path in expired:
                    mtime = self._mtime_ns(path)
                    if mtime is not None and mtime <= deadline:
                        os.unlink(path)
                        removed += 1
        return removed

    # -- the per-user index --------------------------------------------------------

    def index_write(self, user: str, write: userindex.IndexWrite, now: float) -> userindex.IndexResult:
        return self._index_rewrite(user, write, now)[0]

    def index_read(self, user: str, now: float) -> list[userindex.IndexEntry]:
        path = self.index_path_for(user)
        with self._errors("read the user index"):
            blob = self._load_index(path, user, now)
        new, _, _, entries = userindex.rewrite(blob, None, now, user=user)
        if new == blob:
            return entries
        # Something to prune (or a corrupt or expired file to drop): under
        # the lock, against what is there now.
        return self._index_rewrite(user, None, now)[1]

    def _index_rewrite(self, user: str, write: userindex.IndexWrite | None, now: float
                       ) -> tuple[userindex.IndexResult, list[userindex.IndexEntry]]:
        """One locked read-modify-write of the index file of ``user``."""
        path = self.index_path_for(user)
        with self._errors("write the user index"), self._locked(_USER_STRIPE + user[:2]):
            blob = self._load_index(path, user, now)
            new, expires, result, entries = userindex.rewrite(blob, write, now, user=user)
            if new is None:
                if blob is not None or os.path.lexists(path):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
            elif new != blob:
                self._replace(os.path.dirname(path), user, new, t.cast(float, expires))
        return result, entries

    def _load_index(self, path: str, user: str, now: float) -> bytes | None:
        """The index blob at ``path``; ``None`` if absent or expired (its
        mtime is its expiry). A file another user owns is logged and read
        as absent (the next write replaces it)."""
        try:
            fh = open(path, "rb", opener=_read_opener)
        except FileNotFoundError:
            return None
        with fh:
            st = os.fstat(fh.fileno())
            if st.st_uid != self._euid:
                log.warning("discarding user index %s: the file is owned by another user",
                            label(user))
                return None
            if st.st_mtime_ns <= _ns(now):
                return None
            return fh.read()

    def session_peek(self, keys: t.Sequence[str], now: float) -> dict[str, Record | None]:
        """Read each record like :meth:`session_read`, but without the
        ``utime`` that refreshes it; a corrupt record, or a key that is no
        store key, reads as ``None``."""
        records: dict[str, Record | None] = {}
        with self._errors("read the sessions"):
            for key in keys:
                try:
                    records[key] = self._load(self.path_for(key))
                except (CorruptRecordError, ValueError):
                    records[key] = None
        return records

    # -- administration ----------------------------------------------------------

    def session_count(self) -> int:
        with self._errors("count sessions"):
            return sum(
                1
                for _, files in self._stripes()
                for entry in files
                if _KEY_RE.fullmatch(entry.name)
            )

    counts_events = True

    def count_event(self, name: str) -> None:
        """Append one byte to ``events/<name>``: ``O_APPEND`` writes are
        atomic, so the file's size is the count, across processes, without
        a lock."""
        path = self._event_path(name)
        with self._errors("count an event"):
            _mkdir(os.path.dirname(path))
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NO_FOLLOW, 0o600)
            try:
                os.write(fd, b".")
            finally:
                os.close(fd)

    def event_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._errors("read the event counters"):
            for entry in _scandir(os.path.join(self.directory, _EVENTS)):
                if _EVENT_RE.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                    counts[entry.name.replace(".", ":")] = entry.stat(follow_symlinks=False).st_size
        return dict(sorted(counts.items()))

    def _event_path(self, name: str) -> str:
        filename = name.replace(":", ".")
        if not _EVENT_RE.fullmatch(filename):
            raise ValueError(f"not an event counter name: {name!r}")
        return os.path.join(self.directory, _EVENTS, filename)

    def session_clear(self) -> int:
        """Remove every record, every user index and the event counters;
        return how many records."""
        removed = 0
        with self._errors("clear sessions"):
            for stripes, count in ((self._stripes(), True), (self._index_stripes(), False)):
                for stripe, files in stripes:
                    paths = [entry.path for entry in files if _KEY_RE.fullmatch(entry.name)]
                    if not paths:
                        continue
                    with self._locked(stripe):
                        for path in paths:
                            with contextlib.suppress(FileNotFoundError):
                                os.unlink(path)
                                removed += count
            for entry in _scandir(os.path.join(self.directory, _EVENTS)):
                if _EVENT_RE.fullmatch(entry.name):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
        return removed

    def session_keys(self) -> t.Iterator[str]:
        with self._errors("list sessions"):
            names = [entry.name for _, files in self._stripes() for entry in files
                     if _KEY_RE.fullmatch(entry.name)]
        return iter(names)

    # -- walking the shards --------------------------------------------------------

    def _stripes(self) -> t.Iterator[tuple[str, list[os.DirEntry[str]]]]:
        """Yield each first-level shard name with the files below it."""
        for top in _scandir(self.directory):
            if not _SHARD_RE.fullmatch(top.name) or not top.is_dir(follow_symlinks=False):
                continue
            files: list[os.DirEntry[str]] = []
            for leaf in _scandir(top.path):
                if _SHARD_RE.fullmatch(leaf.name) and leaf.is_dir(follow_symlinks=False):
                    files.extend(
                        entry for entry in _scandir(leaf.path) if entry.is_file(follow_symlinks=False)
                    )
            yield top.name, files

    def _index_stripes(self) -> t.Iterator[tuple[str, list[os.DirEntry[str]]]]:
        """Yield the lock stripe of each ``users/`` shard with its files."""
        for shard in _scandir(self._users_dir):
            if _SHARD_RE.fullmatch(shard.name) and shard.is_dir(follow_symlinks=False):
                files = [entry for entry in _scandir(shard.path) if entry.is_file(follow_symlinks=False)]
                yield _USER_STRIPE + shard.name, files

    @staticmethod
    def _is_temp(name: str) -> bool:
        return name.startswith(_TEMP_PREFIX) and name.endswith(_TEMP_SUFFIX)

    @staticmethod
    def _mtime_ns(path: str) -> int | None:
        try:
            return os.stat(path, follow_symlinks=False).st_mtime_ns
        except FileNotFoundError:
            return None
