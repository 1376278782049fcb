"""Atomic writes: a reader (or a resumed run) never sees a half-written file or directory.

A file is written to a temporary name beside it, flushed to disk and renamed over the old one; a directory
is filled under a hidden staging name and renamed into place. A crash at any moment leaves either the old
version or the new one.
"""

from __future__ import annotations

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
