"""The Redis index's spill: writes made while Redis was away, in order, in a local
SQLite file (WAL, synchronous = FULL: every append fsynced), replayed and deleted once
Redis answers again."""

from __future__ import annotations

import marshal
import sqlite3
from pathlib import Path
from typing import Any

# A write: the records' versions, the outcomes, the last sequence, the clock's time, the
# marks stored with it (or None), and its member's fencing epoch ("": not known). Spill
# files of earlier versions hold 4- and 5-tuples.
Write = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], int, float, dict[str, int] | None, str]


class Spill:
    """Writes made while Redis was away, in order, in a local SQLite file (fsynced)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        self.bytes = 0
        self._db: sqlite3.Connection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE IF NOT EXISTS spill (seq INTEGER PRIMARY KEY, job BLOB NOT NULL)")
        self.rows, size = db.execute(
            "SELECT count(*), coalesce(sum(length(job)), 0) FROM spill"
        ).fetchone()
        self.bytes = int(size)
        self._db = db

    def append(self, writes: list[Write]) -> None:
        db = self._db
        assert db is not None
        blobs = [marshal.dumps(w) for w in writes]
        db.execute("BEGIN")
        db.executemany("INSERT INTO spill (job) VALUES (?)", [(b,) for b in blobs])
        db.execute("COMMIT")
        self.rows += len(blobs)
        self.bytes += sum(map(len, blobs))

    def oldest(self, limit: int | None) -> list[tuple[int, Write]]:
        db = self._db
        assert db is not None
        rows = db.execute(
            "SELECT seq, job FROM spill ORDER BY seq LIMIT ?", (-1 if limit is None else limit,)
        ).fetchall()
        return [(seq, marshal.loads(job)) for seq, job in rows]

    def remove(self, up_to: int) -> None:
        db = self._db
        assert db is not None
        db.execute("DELETE FROM spill WHERE seq <= ?", (up_to,))
        self._measure()

    def _measure(self) -> None:
        db = self._db
        assert db is not None
        rows, size = db.execute(
            "SELECT count(*), coalesce(sum(length(job)), 0) FROM spill"
        ).fetchone()
        self.rows, self.bytes = int(rows), int(size)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
