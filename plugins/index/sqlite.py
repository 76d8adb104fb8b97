"""The SQLite index: the in-memory index for lookups, written through to an embedded
SQLite database (WAL) under the data directory, so that records, open windows and
outcomes survive a restart or a kill -9.

Every write (a flush of the pipeline: the records a batch changed, open or closed, and
its outcomes) is encoded on the event loop, then committed by one writer thread; writes
that queue up while a commit runs go into the next transaction together (group commit).
The pipeline acknowledges a batch only when its write has committed. With
`synchronous = "full"` (the default) every commit is fsynced: an acknowledged copy
survives a power cut. With "normal" the WAL is fsynced only at checkpoints: it survives
kill -9 of heliosd, not a power cut, and commits cost less.

Records and outcomes are stored with `marshal` (plain tuples of strings, numbers and
bytes): fast, and unlike pickle it cannot run code from a tampered file."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import marshal
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from helios.daemon.clock import Clock
from helios.daemon.hookspecs import hookimpl
from helios.daemon.model import EventRecord, Outcome, OutcomeKind, Status
from helios.daemon.types import IndexBackend, IndexContext, IndexFactory, Resume
from helios.plugins.index.memory import MemoryIndex

log = logging.getLogger("helios.index.sqlite")
FORMAT = 1  # of the encoded rows; a store written by another format is refused
SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    event_id TEXT PRIMARY KEY, first_seen REAL NOT NULL, open INTEGER NOT NULL,
    data BLOB NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_first_seen ON records (first_seen);
CREATE TABLE IF NOT EXISTS outcomes (sequence INTEGER PRIMARY KEY, time REAL NOT NULL,
    data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
PENDING = Status.PENDING
PUT_RECORD = "INSERT OR REPLACE INTO records VALUES (?, ?, ?, ?)"
PUT_OUTCOME = "INSERT OR REPLACE INTO outcomes VALUES (?, ?, ?)"
DELETE_RECORD = "DELETE FROM records WHERE event_id = ?"
EXPIRE_RECORDS = "DELETE FROM records WHERE first_seen < ? AND open = 0"
EXPIRE_OUTCOMES = "DELETE FROM outcomes WHERE time < ?"
SAVED_AT = "INSERT OR REPLACE INTO meta VALUES ('saved_at', ?)"


class StoreError(OSError):
    """The database cannot be used; the message says which file and what to do."""


def encode_record(r: EventRecord) -> bytes:
    return marshal.dumps(
        (
            r.event_id,
            r.event_type,
            r.expected,
            r.seen,
            r.missing,
            tuple(r.copies),
            r.first_seen,
            r.deadline,
            int(r.status),
            r.inconsistent,
            r.late_mask,
            r.counts,
            r.payload,
            r.digest,
            r.differs,
            tuple((int(o.kind), o.sources, o.time, o.late_by, o.sequence) for o in r.outcomes),
        )
    )


def decode_record(data: bytes) -> EventRecord:
    (
        event_id,
        event_type,
        expected,
        seen,
        missing,
        copies,
        first_seen,
        deadline,
        status,
        inconsistent,
        late_mask,
        counts,
        payload,
        digest,
        differs,
        outcomes,
    ) = marshal.loads(data)
    r = EventRecord(event_id, event_type, expected, len(copies), first_seen, deadline)
    r.seen, r.missing, r.copies = seen, missing, list(copies)
    r.status, r.inconsistent, r.late_mask = Status(status), inconsistent, late_mask
    r.counts, r.payload, r.digest, r.differs = counts, payload, digest, differs
    for kind, sources, at, late_by, sequence in outcomes:
        o = Outcome(OutcomeKind(kind), event_id, event_type, tuple(sources), at, late_by)
        o.sequence = sequence
        r.outcomes.append(o)
    return r


def encode_outcome(o: Outcome) -> bytes:
    return marshal.dumps((int(o.kind), o.event_id, o.event_type, o.sources, o.late_by))


def decode_outcome(sequence: int, at: float, data: bytes) -> Outcome:
    kind, event_id, event_type, sources, late_by = marshal.loads(data)
    o = Outcome(OutcomeKind(kind), event_id, event_type, tuple(sources), at, late_by)
    o.sequence = sequence
    return o


Job = tuple[
    list[tuple[str, float, int, bytes]],  # records: event_id, first_seen, open, data
    list[tuple[int, float, bytes]],  # outcomes: sequence, time, data
    list[str],  # event ids to delete (evicted)
    float,  # expire before this time (0: no expiry)
    float,  # the daemon clock's time of the write (restored windows resume from it)
    asyncio.Future[None],
    asyncio.AbstractEventLoop,
]


class SqliteIndex(MemoryIndex):
    durable = True

    def __init__(
        self, path: Path, ttl: float, max_records: int, synchronous: str, clock: Clock
    ) -> None:
        super().__init__(ttl, max_records)
        self.clock = clock
        self.saved_at: float | None = None  # the clock's time of the last write before open
        self.track_evictions = True
        self.path = path
        self.synchronous = synchronous
        self.commits = 0
        self.committed_rows = 0
        self.commit_seconds = 0.0
        self.skipped = 0  # unreadable rows found at open
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        self._failed: BaseException | None = None

    # ---- opening -------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            db.executescript(SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('format', ?)", (str(FORMAT),))
            elif row[0] != str(FORMAT):
                raise StoreError(
                    f"{self.path} holds index format {row[0]}, this heliosd reads format "
                    f"{FORMAT}; move the file aside to start with an empty index"
                )
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StoreError(
                f"{self.path} is not a usable SQLite database ({exc}); move it aside "
                "(heliosd then starts with an empty index) or restore it from a backup"
            ) from None
        return db

    def _load(self, db: sqlite3.Connection, cutoff: float) -> list[EventRecord]:
        closed: list[EventRecord] = []
        open_: list[EventRecord] = []
        for event_id, data in db.execute(
            "SELECT event_id, data FROM records WHERE first_seen >= ? ORDER BY first_seen",
            (cutoff,),
        ):
            try:
                rec = decode_record(data)
            except (ValueError, TypeError, EOFError) as exc:
                self.skipped += 1
                log.warning("record %r in %s is unreadable, skipped: %s", event_id, self.path, exc)
                continue
            (open_ if rec.status is PENDING else closed).append(rec)
        outcomes: list[Outcome] = []
        for sequence, at, data in db.execute(
            "SELECT sequence, time, data FROM outcomes WHERE time >= ? ORDER BY sequence",
            (cutoff,),
        ):
            try:
                outcomes.append(decode_outcome(sequence, at, data))
            except (ValueError, TypeError, EOFError):
                self.skipped += 1
        self.load(closed[-self.max_records :], outcomes)
        return open_

    async def open(self) -> Resume:
        loop = asyncio.get_running_loop()
        self._db = await loop.run_in_executor(None, self._connect)
        row = self._db.execute("SELECT value FROM meta WHERE key = 'saved_at'").fetchone()
        self.saved_at = float(row[0]) if row else None
        cutoff = self.clock.now() - self.ttl
        open_ = await loop.run_in_executor(None, self._load, self._db, cutoff)
        self._writer = threading.Thread(target=self._write_loop, name="helios-sqlite-writer")
        self._writer.daemon = True
        self._writer.start()
        log.info(
            "index %s: %d closed records, %d open windows, %d outcomes%s",
            self.path,
            len(self.records),
            len(open_),
            len(self._log),
            f"; {self.skipped} unreadable rows skipped" if self.skipped else "",
        )
        last = self._db.execute("SELECT MAX(sequence) FROM outcomes").fetchone()[0]
        return Resume(open_, self.saved_at, int(last or 0))

    # ---- writing -------------------------------------------------------------------
    def write(self, records: Sequence[EventRecord], outcomes: Sequence[Outcome]) -> Awaitable[None]:
        self.store([r for r in records if r.status is not PENDING], outcomes)
        # Encoded here, on the event loop: the records go on changing after this call.
        job_records = [
            (r.event_id, r.first_seen, 1 if r.status is PENDING else 0, encode_record(r))
            for r in records
        ]
        job_outcomes = [(o.sequence, o.time, encode_outcome(o)) for o in outcomes]
        return self._submit(job_records, job_outcomes, self.evicted_since(), 0.0)

    async def expire(self, now: float) -> int:
        removed = await super().expire(now)
        await self._submit([], [], self.evicted_since(), now - self.ttl)
        return removed

    def _submit(
        self,
        records: list[tuple[str, float, int, bytes]],
        outcomes: list[tuple[int, float, bytes]],
        delete: list[str],
        cutoff: float,
    ) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if self._failed is not None:
            done.set_exception(
                StoreError(f"the index {self.path} cannot be written: {self._failed}")
            )
        elif self._writer is None:
            done.set_exception(StoreError(f"the index {self.path} is not open (start() opens it)"))
        elif not (records or outcomes or delete or cutoff):
            done.set_result(None)
        else:
            self._jobs.put((records, outcomes, delete, cutoff, self.clock.now(), done, loop))
        return done

    def _write_loop(self) -> None:
        db = self._db
        assert db is not None
        while True:
            job = self._jobs.get()
            if job is None:
                return
            jobs = [job]
            while True:  # group commit: everything queued meanwhile goes in too
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._jobs.put(None)
                    break
                jobs.append(more)
            error: BaseException | None = None
            started = time.perf_counter()
            try:
                _commit(db, jobs)
            except BaseException as exc:  # reported to every waiting write
                error = self._failed = exc
                log.error("writing the index %s failed: %s", self.path, exc)
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            self.commits += 1
            self.committed_rows += sum(len(j[0]) + len(j[1]) for j in jobs)
            self.commit_seconds += time.perf_counter() - started
            for *_, done, loop in jobs:
                loop.call_soon_threadsafe(_settle, done, error)

    # ---- reading and closing -------------------------------------------------------
    def describe(self) -> dict[str, str]:
        size = sum(
            p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.exists()
        )
        per_commit = self.commit_seconds / self.commits * 1000 if self.commits else 0.0
        return {
            "backend": "sqlite",
            "durability": (
                "every acknowledged batch is committed and fsynced (synchronous = full)"
                if self.synchronous == "full"
                else "every acknowledged batch is committed; fsync at WAL checkpoints "
                "(synchronous = normal: survives kill -9, not a power cut)"
            ),
            "file": f"{self.path} ({size / 1_048_576:.1f} MiB with its WAL)",
            "records": f"{len(self.records):,} closed in memory, at most {self.max_records:,}",
            "commits": f"{self.commits:,} ({per_commit:.2f} ms each on average)",
            **({"unreadable rows skipped": str(self.skipped)} if self.skipped else {}),
        }

    async def close(self) -> None:
        if self._writer is not None:
            self._jobs.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._writer.join)
            self._writer = None
        if self._db is not None:
            self._db.close()
            self._db = None
        await super().close()


def _commit(db: sqlite3.Connection, jobs: list[Job]) -> None:
    """Every queued write in one transaction (group commit)."""
    db.execute("BEGIN")
    for records, outcomes, delete, cutoff, _, _, _ in jobs:
        if records:
            db.executemany(PUT_RECORD, records)
        if outcomes:
            db.executemany(PUT_OUTCOME, outcomes)
        if delete:
            db.executemany(DELETE_RECORD, ((e,) for e in delete))
        if cutoff:
            db.execute(EXPIRE_RECORDS, (cutoff,))
            db.execute(EXPIRE_OUTCOMES, (cutoff,))
    db.execute(SAVED_AT, (repr(jobs[-1][4]),))
    db.execute("COMMIT")


def _settle(done: asyncio.Future[None], error: BaseException | None) -> None:
    if done.done():
        return
    if error is None:
        done.set_result(None)
    else:
        done.set_exception(StoreError(f"the index could not be written: {error}"))


SYNCHRONOUS = ("full", "normal")


def _factory(context: IndexContext) -> IndexBackend:
    options: dict[str, Any] = dict(context.config.options)
    synchronous = str(options.pop("synchronous", "full"))
    if synchronous not in SYNCHRONOUS:
        raise ValueError(f"index.options.synchronous must be full or normal, got {synchronous!r}")
    name = str(options.pop("file", "index.sqlite3"))
    if options:
        raise ValueError(
            f"index.options: unknown keys {sorted(options)} (sqlite: file, synchronous)"
        )
    path = Path(context.data_dir) / name if not os.path.isabs(name) else Path(name)
    return SqliteIndex(
        path, context.config.ttl_seconds, context.config.max_records, synchronous, context.clock
    )


@hookimpl(trylast=True)
def register_index_backends(register: Callable[[str, IndexFactory], None]) -> None:
    register("sqlite", _factory)
