"""Watch which files the process touches, to prove a store stays in its folder.

An audit hook (:func:`sys.addaudithook`) sees every ``open``, ``os.open``,
rename, remove, mkdir, utime, chmod and directory listing the interpreter
performs, whatever code path leads there. :class:`FileGuard` arms it for one
thread at a time and records every path outside the allowed roots.

Audit hooks cannot be removed, so one hook is installed per process and
does nothing while no guard is armed.
"""
from __future__ import annotations

import os
import sys
import threading
import typing as t

#: Events whose first argument (and, for renames and links, second) is a path.
_PATH_EVENTS = {
    "open", "os.rename", "os.link", "os.symlink", "os.remove", "os.rmdir", "os.mkdir",
    "os.utime", "os.chmod", "os.chown", "os.truncate", "os.listdir", "os.scandir",
    "os.chdir", "os.chflags", "os.lchflags", "os.mkfifo", "os.mknod",
}
_TWO_PATHS = {"os.rename", "os.link", "os.symlink"}
_READ_ONLY_EVENTS = {"os.listdir", "os.scandir"}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

_lock = threading.Lock()
_armed: dict[int, FileGuard] = {}
_installed = False


def _hook(event: str, args: tuple[t.Any, ...]) -> None:
    if not _armed or event not in _PATH_EVENTS:
        return
    guard = _armed.get(threading.get_ident())
    if guard is None:
        return
    paths = args[:2] if event in _TWO_PATHS else args[:1]
    if event == "open":
        mode, flags = args[1], args[2]
        write = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and bool(flags & _WRITE_FLAGS)
        )
    else:
        write = event not in _READ_ONLY_EVENTS
    for path in paths:
        guard._check(event, path, write)


def _install() -> None:
    global _installed
    with _lock:
        if not _installed:
            sys.addaudithook(_hook)
            _installed = True


def _norm(path: str | os.PathLike[str]) -> str:
    return os.path.normpath(os.path.abspath(os.fspath(path)))


class FileGuard:
    """Records file-system access outside the allowed roots by one thread.

    :param write_roots: directories where files may be created, changed or
        removed (the session folder).
    :param read_roots: more directories that may be read (the interpreter,
        the installed packages and this repository, for lazy imports).
    """

    def __init__(self, write_roots: t.Iterable[str], read_roots: t.Iterable[str] = ()) -> None:
        _install()
        self.write_roots = tuple(_norm(p) for p in write_roots)
        self.read_roots = self.write_roots + tuple(_norm(p) for p in read_roots)
        #: ``(event, path, write)`` for every access outside the roots.
        self.violations: list[tuple[str, str, bool]] = []
        #: How many path events were checked (to show the hook is live).
        self.seen = 0

    @staticmethod
    def _under(path: str, roots: tuple[str, ...]) -> bool:
        return any(path == root or path.startswith(root + os.sep) for root in roots)

    def _check(self, event: str, path: t.Any, write: bool) -> None:
        if isinstance(path, int) or path is None:
            return  # a file descriptor: its path was checked when opened
        self.seen += 1
        try:
            raw = os.fsdecode(path)
        except (TypeError, ValueError):
            self.violations.append((event, repr(path), write))
            return
        if "\x00" in raw:
            self.violations.append((event, repr(raw), write))
            return
        norm = _norm(raw)
        if not self._under(norm, self.write_roots if write else self.read_roots):
            self.violations.append((event, norm, write))

    def __enter__(self) -> FileGuard:
        _armed[threading.get_ident()] = self
        return self

    def __exit__(self, *exc: object) -> None:
        _armed.pop(threading.get_ident(), None)


def default_read_roots() -> list[str]:
    """The interpreter, its packages and this repository."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, here}
    roots.update(p for p in sys.path if p and os.path.isdir(p))
    return sorted(roots)


def snapshot(root: str, exclude: t.Iterable[str] = ()) -> dict[str, tuple[int, int]]:
    """``{path: (size, mtime_ns)}`` of every file below ``root``, and
    ``(0, 0)`` for every directory (whose mtime moves with any temporary
    file, such as a SQLite journal), skipping the ``exclude`` trees and
    files."""
    skip = tuple(_norm(p) for p in exclude)
    found: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if _norm(os.path.join(dirpath, d)) not in skip]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if _norm(path) in skip:
                continue
            if name in filenames:
                st = os.lstat(path)
                found[path] = (st.st_size, st.st_mtime_ns)
            else:
                found[path] = (0, 0)
    return found
