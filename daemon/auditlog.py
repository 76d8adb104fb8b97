"""The audit log: every control action, sign-in and key change, who did it (the
authenticated identity), from where, when, and with what result. Append-only JSON lines
in `<data_dir>/audit.log`, each line fsynced by a writer thread (never the event loop);
read back newest first for `helios audit`, AuditService.ListAuditEvents and the console.

It is not the decision trail (decisions, executions, traces: helios.daemon.audit): that
one says what the MAPE-K loop decided and did; this one says what people and clients
asked of heliosd."""

from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from pathlib import Path

from helios.daemon.identity import caller

_PEER: ContextVar[str] = ContextVar("helios_peer", default="")


@contextmanager
def from_peer(peer: str) -> Iterator[None]:
    """Where the request being served comes from (the front door sets it)."""
    token = _PEER.set(peer)
    try:
        yield
    finally:
        with suppress(ValueError):  # a generator resumed in another context
            _PEER.reset(token)


@dataclass(frozen=True)
class AuditEntry:
    time: float
    who: str
    via: str  # how they proved it: an API key's id, a certificate, a session, none
    peer: str
    action: str  # e.g. "trigger", "approve", "set_breaker", "key.create", "login"
    target: str
    result: str  # "ok" or why it was refused
    detail: str = ""


class AuditLog:
    def __init__(self, path: Path, keep_in_memory: int = 10_000) -> None:
        self.path = path
        self.recent: deque[AuditEntry] = deque(maxlen=keep_in_memory)
        self._queue: queue.SimpleQueue[AuditEntry | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self.failed = ""

    def open(self) -> None:
        """Read back the newest entries and start the writer thread."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            with self.path.open(encoding="utf-8", errors="replace") as f:
                for line in deque(f, maxlen=self.recent.maxlen):
                    try:
                        self.recent.append(AuditEntry(**json.loads(line)))
                    except (ValueError, TypeError):
                        continue  # a torn last line after a crash
        self._thread = threading.Thread(target=self._write, name="helios-audit", daemon=True)
        self._thread.start()

    def record(
        self, action: str, target: str, result: str = "ok", detail: str = "", who: str = ""
    ) -> AuditEntry:
        identity = caller()
        entry = AuditEntry(
            time=time.time(),
            who=who or (identity.name if identity else "heliosd"),
            via=identity.via if identity else "",
            peer=_PEER.get(),
            action=action,
            target=target,
            result=result,
            detail=detail[:500],
        )
        self.recent.append(entry)
        if self._thread is not None:
            self._queue.put(entry)
        return entry

    def query(self, limit: int, who: str = "", action: str = "") -> list[AuditEntry]:
        """Newest first."""
        found: list[AuditEntry] = []
        for entry in reversed(self.recent):
            if (who and entry.who != who) or (action and not entry.action.startswith(action)):
                continue
            found.append(entry)
            if len(found) >= limit:
                break
        return found

    def _write(self) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            while True:
                entry = self._queue.get()
                if entry is None:
                    return
                try:
                    f.write(json.dumps(asdict(entry)) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                except OSError as exc:
                    self.failed = str(exc)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None
