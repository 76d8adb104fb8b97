"""The dead-letter store: deliveries HELIOS refused (malformed, unauthenticated, over a
limit), kept so an operator can read them and replay them after a fix
(`helios dlq list|show|replay`, the console's Sources page).

Bounded by entries and by bytes (the oldest go first; unverified deliveries, which anyone
can send, within a tenth of the entries), kept in memory for reading and
in `<data_dir>/deadletters.sqlite3` so they survive a restart; the file is written by
one thread, never on the event loop. Credentials in headers and in the query are
redacted before anything is kept.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import orjson

log = logging.getLogger("helios.deadletters")
SECRET_HEADERS = frozenset(
    {"authorization", "aeg-sas-key", "aeg-sas-token", "x-api-key", "cookie", "proxy-authorization"}
)
REDACTED = "(redacted)"
# Deliveries that never passed their input's check (or reached no input) keep at most
# 1/UNVERIFIED_SHARE of the store: a flood of junk cannot push out the real ones.
UNVERIFIED_SHARE = 10


@dataclass
class DeadLetter:
    id: int
    at: float  # wall time
    input: str  # the input it was sent to ("" for an unknown path)
    reason: str  # the webhook error code
    status: int  # the HTTP status it was answered with
    detail: str
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes  # empty when it was refused before being read (payload_too_large)
    verified: bool  # it had passed its input's authenticity check
    attempts: int = 1
    replayed: list[str] = field(default_factory=list)  # results of replays

    @property
    def size(self) -> int:
        return len(self.body) + 512


def redact(
    headers: dict[str, str], query: str, extra: frozenset[str] = frozenset()
) -> tuple[dict[str, str], str]:
    hidden = SECRET_HEADERS | extra
    kept = {k: (REDACTED if k in hidden else v) for k, v in headers.items()}
    if "code=" in query:
        query = "&".join(
            f"code={REDACTED}" if part.startswith("code=") else part for part in query.split("&")
        )
    return kept, query


class DeadLetters:
    def __init__(self, data_dir: Path | None, max_entries: int, max_bytes: int) -> None:
        self.path = data_dir / "deadletters.sqlite3" if data_dir is not None else None
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.entries: OrderedDict[int, DeadLetter] = OrderedDict()
        self.bytes = 0
        self.next_id = 1
        self.dropped = 0  # pushed out by the bounds
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="helios-dlq")

    # ---- life ------------------------------------------------------------------------
    def open(self) -> None:
        """Read the kept entries back (at start, before serving)."""
        if self.path is None:
            return
        db = sqlite3.connect(self.path, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS letters (id INTEGER PRIMARY KEY, doc BLOB, body BLOB)"
        )
        for id_, doc, body in db.execute("SELECT id, doc, body FROM letters ORDER BY id"):
            try:
                fields = orjson.loads(doc)
                letter = DeadLetter(id=id_, body=bytes(body), **fields)
            except (orjson.JSONDecodeError, TypeError) as exc:
                log.warning("dead letter %d is unreadable and skipped: %s", id_, exc)
                continue
            self.entries[id_] = letter
            self.bytes += letter.size
            self.next_id = max(self.next_id, id_ + 1)
        self._db = db
        self._bound()

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        if self._db is not None:
            self._db.close()
            self._db = None

    # ---- writing ---------------------------------------------------------------------
    async def add(self, letter: DeadLetter) -> DeadLetter:
        letter.id = self.next_id
        self.next_id += 1
        gone = []
        if not letter.verified:  # anyone can send those: they may not push out the rest
            unverified = [i for i, d in self.entries.items() if not d.verified]
            cap = max(1, self.max_entries // UNVERIFIED_SHARE)
            for old_id in unverified[: max(0, len(unverified) - cap + 1)]:
                old = self.entries.pop(old_id)
                self.bytes -= old.size
                self.dropped += 1
                gone.append(old_id)
        self.entries[letter.id] = letter
        self.bytes += letter.size
        gone += self._bound()
        await self._write([letter], gone)
        return letter

    async def update(self, letter: DeadLetter) -> None:
        if letter.id in self.entries:
            await self._write([letter], [])

    async def remove(self, letter_id: int) -> None:
        letter = self.entries.pop(letter_id, None)
        if letter is not None:
            self.bytes -= letter.size
            await self._write([], [letter_id])

    def _bound(self) -> list[int]:
        gone = []
        while self.entries and (
            len(self.entries) > self.max_entries or self.bytes > self.max_bytes
        ):
            old_id, old = self.entries.popitem(last=False)
            self.bytes -= old.size
            self.dropped += 1
            gone.append(old_id)
        return gone

    async def _write(self, letters: list[DeadLetter], gone: list[int]) -> None:
        if self._db is None:
            return
        rows = [(d.id, orjson.dumps(_doc(d)), d.body) for d in letters]
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._thread, self._store, rows, gone)
        except sqlite3.Error as exc:  # the entries stay readable in memory
            log.warning("dead letters not written to %s: %s", self.path, exc)

    def _store(self, rows: list[tuple[int, bytes, bytes]], gone: list[int]) -> None:
        assert self._db is not None
        with self._db:
            if gone:
                self._db.executemany("DELETE FROM letters WHERE id = ?", [(i,) for i in gone])
            if rows:
                self._db.executemany("INSERT OR REPLACE INTO letters VALUES (?, ?, ?)", rows)

    # ---- reading ---------------------------------------------------------------------
    def get(self, letter_id: int) -> DeadLetter | None:
        return self.entries.get(letter_id)

    def count(self, input_name: str = "", reason: str = "") -> int:
        if not input_name and not reason:
            return len(self.entries)
        return sum(
            1
            for d in self.entries.values()
            if (not input_name or d.input == input_name) and (not reason or d.reason == reason)
        )

    def list(self, input_name: str = "", reason: str = "", limit: int = 100) -> list[DeadLetter]:
        found = []
        for letter in reversed(self.entries.values()):  # newest first
            if input_name and letter.input != input_name:
                continue
            if reason and letter.reason != reason:
                continue
            found.append(letter)
            if len(found) >= limit:
                break
        return found


def _doc(letter: DeadLetter) -> dict[str, object]:
    return {
        "at": letter.at,
        "input": letter.input,
        "reason": letter.reason,
        "status": letter.status,
        "detail": letter.detail,
        "method": letter.method,
        "path": letter.path,
        "query": letter.query,
        "headers": letter.headers,
        "verified": letter.verified,
        "attempts": letter.attempts,
        "replayed": letter.replayed,
    }


def now() -> float:
    return time.time()
