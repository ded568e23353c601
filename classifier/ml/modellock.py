"""The lock that makes one process at a time change the served model.

`retrain`, `train --serve` and `models use` take it before they write the served weights, so two
of them never promote at once (each would judge its candidate against a model the other is about
to replace). It is `flock` on a file in the model store beside the weights: the kernel releases
it when its process exits, however it exits (SIGKILL and the out-of-memory killer included), so
a killed run cannot leave it held. The holder writes its pid and purpose into the file, so a
refused run can say who holds it. flock works on local disks and on NFS (as a POSIX lock); a
volume shared by several machines must be one of those.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

# In the model store (`models/` beside the weights), which every writer of the served path uses.
LOCK_NAME = "serving.lock"


class LockHeld(RuntimeError):
    """Another process is changing the served model; the message names the lock and its holder."""

    def __init__(self, path: Path, holder: str) -> None:
        self.path = path
        self.holder = holder
        super().__init__(
            f"another process is changing the served model: {path} is locked"
            f" ({holder or 'by a process that has not said who it is yet'}); "
            "try again when it has finished"
        )


def lock_path(weights: Path | str) -> Path:
    """The lock of the served weights at `weights`: `<weights dir>/models/serving.lock`."""
    return Path(weights).parent / "models" / LOCK_NAME


@contextmanager
def serving_lock(weights: Path | str, purpose: str) -> Iterator[Path]:
    """Hold the lock on changing the served `weights` for the `with` block; raise LockHeld at once
    (never wait) when another process holds it. `purpose` (e.g. "manage.py retrain") is what a
    refused process is told."""
    path = lock_path(weights)
    path.parent.mkdir(parents=True, exist_ok=True)
    # O_CLOEXEC (Python's default): a child process never inherits, and so never keeps, the lock.
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(path, _holder(fd)) from None
        since = datetime.now(UTC).replace(microsecond=0).isoformat()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"held by pid {os.getpid()}, {purpose}, since {since}".encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 512, 0).decode(errors="replace").strip()
    except OSError:
        return ""
