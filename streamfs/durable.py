"""Atomic, durable file writes: a reader or a crash sees the whole new file or the old state.

Write to a hidden temporary name in the same directory, fsync it, rename it over the target,
then fsync the directory (and the parents of directories this created), so the rename itself
survives a power cut. The offline store, checkpoints and the commit log all write this way.
`exclusive_lock` is the one advisory lock for files several workers share.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_SUFFIX = ".tmp"
"""Every temporary file ends so; a leftover one is from a write a crash interrupted."""


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` durably, on error it is removed."""
    created = make_dirs(path.parent)
    temp = path.parent / f".{path.name}.{uuid.uuid4().hex}{TEMP_SUFFIX}"
    try:
        yield temp
        fd = os.open(temp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    for directory in created:  # a new directory's entry lives in its parent
        fsync_dir(directory.parent)


def write_bytes(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, atomically and durably."""
    with atomic_path(path) as temp:
        temp.write_bytes(data)


def make_dirs(directory: Path) -> list[Path]:
    """mkdir -p, returning the directories it created (outermost first)."""
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    directory.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


def fsync_dir(directory: Path) -> None:
    """Make renames and unlinks in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock (flock) on `lock_path`, created if missing, between the
    processes sharing this file system; without fcntl (not POSIX) there is no lock."""
    try:
        import fcntl
    except ImportError:  # not POSIX: one worker per data directory there
        yield
        return
    make_dirs(lock_path.parent)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
