"""Atomic writes: a reader (or a resumed run) never sees a half-written file or directory.

A file is written to a temporary name beside it, flushed to disk and renamed over the old one; a directory
is filled under a hidden staging name and renamed into place. A crash at any moment leaves either the old
version or the new one.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def fsync_path(path: Path) -> None:
    """Flush a file's (or a directory's entries') data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


@contextmanager
def staged_dir(path: str | Path, *, durable: bool = False) -> Iterator[Path]:
    """Yield an empty staging directory; when the block ends without an error, it replaces ``path``.

    ``durable`` fsyncs every file and the parent directory before returning (checkpoints need it: after a
    power cut the newest one must be whole or absent).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield staging
        if durable:
            for file in staging.iterdir():
                fsync_path(file)
            fsync_path(staging)
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.replace(old)
        staging.replace(path)
        shutil.rmtree(old, ignore_errors=True)
        if durable:
            fsync_path(path.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def sha256_of(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` (or an error it was raised from) is "no space left" or "quota exceeded".

    torch.save reports a short write as ``RuntimeError: [enforce fail at inline_container.cc] unexpected pos``;
    given an open file (not a path) it writes through Python, and the ``OSError`` is kept as the context.
    """
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(seen) or "os error 28" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def clean_staging(folder: Path, name_prefix: str) -> list[Path]:
    """Remove what a crashed :func:`staged_dir` left in ``folder`` for names starting with ``name_prefix``:
    its staging directories (``.NAME.xxxxxxxx``) go; an ``.NAME.old`` whose ``NAME`` is missing (a crash
    between the two renames) is renamed back, since it is the last whole version. Only while no other
    process writes there (the loop holds the run's lock). Returns what was removed."""
    removed = []
    if not folder.is_dir():
        return removed
    for entry in sorted(folder.iterdir()):
        if not entry.name.startswith("." + name_prefix) or not entry.is_dir():
            continue
        real = folder / entry.name[1:].rpartition(".")[0]
        if entry.name.endswith(".old") and not real.exists():
            entry.replace(real)
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


@contextmanager
def directory_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` (its file ``.lock``) for the block; raise ``BlockingIOError``
    with the holder's pid at once if another process holds it. The kernel drops the lock when its holder
    dies, so a crashed run leaves nothing that blocks the next one. No-op where ``fcntl`` is missing."""
    try:
        import fcntl
    except ImportError:  # Windows
        yield
        return
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            holder = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip() or "?"
            raise BlockingIOError(e.errno, f"held by process {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
