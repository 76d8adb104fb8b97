"""State files: written whole or not at all, and durable once written."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from pathlib import Path
from typing import Any


def write_atomic(path: Path, text: str | bytes) -> None:
    """Replace `path` with `text`: a crash leaves the old file or the new one, never half
    of either. The file and then its directory are fsynced, so the rename itself
    survives a power cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Each writer its own temporary file: two writes of one file may run at once.
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    data = text.encode() if isinstance(text, str) else text
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def write_json(path: Path, data: Any) -> None:
    """write_atomic of `data` as JSON."""
    write_atomic(path, json.dumps(data))


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DataDirInUse(OSError):
    """Another heliosd holds the data directory."""


class DataDirLock:
    """An exclusive lock on `<data_dir>/heliosd.lock` for as long as heliosd runs: a
    second daemon on the same data directory refuses to start instead of corrupting
    the first one's state. The kernel drops the lock when the process dies, even by
    kill -9, so a stale lock file never blocks a restart."""

    def __init__(self, data_dir: str) -> None:
        self.path = Path(data_dir) / "heliosd.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DataDirInUse(
                f"data directory {self.path.parent} is in use by another heliosd (pid "
                f"{holder}); stop it, or give this one its own daemon.data_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is None:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
