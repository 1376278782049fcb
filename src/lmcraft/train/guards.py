"""What guards a training run from the outside world: signals (Ctrl-C, SIGTERM) turned into a checkpoint
and a clean stop, a lock on the run directory so that two runs never write into it at once, and the
staging folders a crashed run left behind."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from lmcraft.fsutil import clean_staging, directory_lock
from lmcraft.train.distributed import Distributed
from lmcraft.train.errors import RunLockedError


class Interrupt:
    """Ctrl-C (SIGINT) or SIGTERM (what schedulers and ``docker stop`` send) sets a flag that the loop reads
    between steps, so that it can save a checkpoint first. A second signal interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True
        self._restore()
        print(f"\nlmcraft: {signal.Signals(signum).name}: stopping after this step to save a checkpoint (send it "
              "again to stop now)", file=sys.stderr)

    def _restore(self) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous = {}

    def __exit__(self, *exc: object) -> None:
        self._restore()


@contextmanager
def hold_run_dir(run_dir: Path, dist: Distributed) -> Iterator[None]:
    """Lock the run directory for the whole run (rank 0 holds it; every rank stops if it cannot), then
    remove the staging folders that a crashed run left behind."""
    with ExitStack() as stack:
        held_by = ""
        if dist.is_main:
            try:
                stack.enter_context(directory_lock(run_dir))
            except BlockingIOError as e:
                held_by = f" ({e.strerror})"
        if dist.max(int(bool(held_by))):
            raise RunLockedError(f"{run_dir} is in use by another training run{held_by}; wait for it to end, or "
                                 "train into another --out")
        if dist.is_main:
            removed = clean_staging(run_dir / "checkpoints", "step-") + clean_staging(run_dir, "best.")
            if removed:
                print(f"lmcraft: removed {len(removed)} staging folder(s) left by an interrupted run in {run_dir}",
                      file=sys.stderr)
        yield


def mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path
