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

Each write is one row (a segment): the versions of the records it changed, each with its
outcomes, as `marshal` data (plain tuples of strings, numbers and bytes: fast, and unlike
pickle it cannot run code from a tampered file). Reading the segments back in order, the
last version of each record wins, and the outcome log is rebuilt from the records. A
COMPLETE record is stored without its payload, which only a replay of a missing copy
needs.

Long because writing (the writer thread, group commit, marks) and reading back (at open,
and the open windows a Kafka input adopts) must agree on one row format, kept here."""

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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from helios.daemon.clock import Clock
from helios.daemon.hookspecs import hookimpl
from helios.daemon.model import EventRecord, Outcome, OutcomeKind, Status
from helios.daemon.types import IndexBackend, IndexContext, IndexFactory, Resume
from helios.plugins.index.memory import MemoryIndex

log = logging.getLogger("helios.index.sqlite")
FORMAT = 3  # of the tables and rows; a store written in another format is refused
# One row per flush: the versions of the records it changed and its outcomes, in write
# order. Reading them back in that order, the last version of each record wins. A row is
# one B-tree append and one lock of the GIL-free SQLite call, however many records it
# holds: per-record rows cost 7-15 µs each in the writer thread, which shares the GIL
# with the event loop (benchmarks/durable_stages.py). Rows are deleted oldest first once
# written before the TTL cutoff: a record's later versions are in later rows.
SCHEMA = """
CREATE TABLE IF NOT EXISTS segments (seq INTEGER PRIMARY KEY, written REAL NOT NULL,
    records BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
PENDING = Status.PENDING
COMPLETE = Status.COMPLETE
PAGE_SIZE = 65536  # rows are 50-150 KB blobs: fewer, larger pages (measured)
CHECKPOINT_PAGES = 512  # checkpoint the WAL into the database every 32 MiB...
WAL_LIMIT = 32 * 1_048_576  # ...and keep the WAL file at about that size after one
PUT_SEGMENT = "INSERT INTO segments (written, records) VALUES (?, ?)"
EXPIRE = "DELETE FROM segments WHERE written < ?"
SAVED_AT = "INSERT OR REPLACE INTO meta VALUES ('saved_at', ?)"
LAST_SEQUENCE = "INSERT OR REPLACE INTO meta VALUES ('last_sequence', ?)"
MARK = "INSERT OR REPLACE INTO meta VALUES (?, ?)"


class StoreError(OSError):
    """The database cannot be used; the message says which file and what to do."""


def record_tuple(r: EventRecord) -> tuple[Any, ...]:
    return (
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


def record_from(values: tuple[Any, ...]) -> EventRecord:
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
    ) = values
    r = EventRecord(event_id, event_type, expected, len(copies), first_seen, deadline)
    r.seen, r.missing, r.copies = seen, missing, list(copies)
    r.status, r.inconsistent, r.late_mask = Status(status), inconsistent, late_mask
    r.counts, r.payload, r.digest, r.differs = counts, payload, digest, differs
    for kind, sources, at, late_by, sequence in outcomes:
        o = Outcome(OutcomeKind(kind), event_id, event_type, tuple(sources), at, late_by)
        o.sequence = sequence
        r.outcomes.append(o)
    return r


Job = tuple[
    bytes,  # the records' versions (marshal), with their outcomes, or b"" for none
    int,  # the last outcome sequence so far
    float,  # expire segments written before this time (0: no expiry)
    float,  # the daemon clock's time of the write (restored windows resume from it)
    Mapping[str, int] | None,  # marks stored with the write (IndexBackend.write)
    asyncio.Future[None],
    asyncio.AbstractEventLoop,
]


class SqliteIndex(MemoryIndex):
    durable = True

    def __init__(
        self,
        path: Path,
        ttl: float,
        max_records: int,
        synchronous: str,
        clock: Clock,
        tenant_ttl: Mapping[str, float] | None = None,
    ) -> None:
        super().__init__(ttl, max_records, tenant_ttl)
        self.clock = clock
        self.saved_at: float | None = None  # the clock's time of the last write before open
        self.track_evictions = True
        self.path = path
        self.synchronous = synchronous
        self.commits = 0
        self.committed_rows = 0
        self.committed_bytes = 0
        self._last_sequence = 0
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
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # before WAL: blobs of 100+ KB a row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA wal_autocheckpoint={CHECKPOINT_PAGES}")
            db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT}")
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
        latest: dict[str, EventRecord] = {}
        for seq, records in db.execute("SELECT seq, records FROM segments ORDER BY seq"):
            try:
                versions = [record_from(v) for v in marshal.loads(records)]
            except (ValueError, TypeError, EOFError, KeyError) as exc:
                self.skipped += 1
                log.warning("segment %d of %s is unreadable, skipped: %s", seq, self.path, exc)
                continue
            for rec in versions:  # a later version replaces an earlier one
                latest.pop(rec.event_id, None)
                latest[rec.event_id] = rec
        live = [r for r in latest.values() if r.first_seen >= cutoff]
        closed = [r for r in live if r.status is not PENDING]
        closed.sort(key=lambda r: r.first_seen)
        closed = closed[-self.max_records :]
        # The outcome log, rebuilt from the records that carry each outcome.
        outcomes = [o for r in (*closed, *live) for o in r.outcomes if o.time >= cutoff]
        outcomes = sorted({o.sequence: o for o in outcomes}.values(), key=lambda o: o.sequence)
        self.load(closed, outcomes)
        return [r for r in live if r.status is PENDING]

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
        row = self._db.execute("SELECT value FROM meta WHERE key = 'last_sequence'").fetchone()
        self._last_sequence = int(row[0]) if row else 0
        rows = self._db.execute("SELECT key, value FROM meta WHERE key LIKE 'mark:%'")
        self.marks = {key[5:]: int(value) for key, value in rows}
        return Resume(open_, self.saved_at, self._last_sequence)

    async def open_windows(self, wanted: Callable[[str], bool] | None = None) -> list[EventRecord]:
        """The open windows as the file holds them now (read in a thread, from a
        connection of its own: WAL lets it read beside the writer)."""
        return await asyncio.to_thread(self._read_open, self.clock.now() - self.ttl, wanted)

    def _read_open(
        self, cutoff: float, wanted: Callable[[str], bool] | None = None
    ) -> list[EventRecord]:
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            latest: dict[str, tuple[Any, ...]] = {}
            for (records,) in db.execute("SELECT records FROM segments ORDER BY seq"):
                with contextlib.suppress(ValueError, TypeError, EOFError):
                    for values in marshal.loads(records):
                        latest[values[0]] = values
        finally:
            db.close()
        return [
            record_from(v)
            for v in latest.values()
            if v[8] == PENDING and v[6] >= cutoff and (wanted is None or wanted(v[0]))
        ]

    # ---- writing -------------------------------------------------------------------
    def write(
        self,
        records: Sequence[EventRecord],
        outcomes: Sequence[Outcome],
        marks: Mapping[str, int] | None = None,
    ) -> Awaitable[None]:
        self.store([r for r in records if r.status is not PENDING], outcomes)
        if marks:
            self.marks.update(marks)
            at = int(self.clock.now() * 1000)
            self.marks.update({k + "@": at for k in marks})
        # Encoded here, on the event loop: the records go on changing after this call.
        self.evicted_since()  # evicted records leave the store with their segments
        if outcomes:
            self._last_sequence = outcomes[-1].sequence
        # Outcomes travel inside their records' versions.
        return self._submit(
            marshal.dumps(tuple(map(record_tuple, records))) if records else b"", 0.0, marks
        )

    async def expire(self, now: float, keep_after: float = 0.0) -> int:
        """Segments go once nothing live needs them: a segment written before the
        oldest record still kept (TTL and size bound) and before `keep_after` (the
        oldest open window) holds only versions of records that are gone. So the file
        holds about what memory holds, not a TTL's worth of writes."""
        removed = await super().expire(now, keep_after)
        oldest_kept = self._order[0][0] if self._order else now
        await self._submit(b"", min(max(now - self.ttl, oldest_kept), keep_after or now))
        return removed

    def _submit(
        self, records: bytes, cutoff: float, marks: Mapping[str, int] | None = None
    ) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        if self._failed is not None:
            done.set_exception(
                StoreError(f"the index {self.path} cannot be written: {self._failed}")
            )
        elif self._writer is None:
            done.set_exception(StoreError(f"the index {self.path} is not open (start() opens it)"))
        elif not (records or cutoff or marks):
            done.set_result(None)
        else:
            job = (records, self._last_sequence, cutoff, self.clock.now(), marks, done, loop)
            self._jobs.put(job)
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
            self.committed_rows += sum(1 for j in jobs if j[0])
            self.committed_bytes += sum(len(j[0]) for j in jobs)
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
            "forgotten": self.forgotten_text(),
            "commits": f"{self.commits:,} ({per_commit:.2f} ms each on average), "
            f"{self.committed_rows:,} segments, {self.committed_bytes / 1_048_576:,.1f} MiB",
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
    for records, _, cutoff, written, marks, _, _ in jobs:
        if records:
            db.execute(PUT_SEGMENT, (written, records))
        if cutoff:
            db.execute(EXPIRE, (cutoff,))
        if marks:  # "<name>@": when, on the daemon clock (ms)
            db.executemany(MARK, [("mark:" + k, str(v)) for k, v in marks.items()])
            at = str(int(written * 1000))
            db.executemany(MARK, [("mark:" + k + "@", at) for k in marks])
    db.execute(SAVED_AT, (repr(jobs[-1][3]),))
    db.execute(LAST_SEQUENCE, (str(jobs[-1][1]),))
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
    if context.shards > 1:  # index.sqlite3 -> index-0.sqlite3, index-1.sqlite3, ...
        stem, dot, suffix = name.rpartition(".")
        name = f"{stem}-{context.shard}.{suffix}" if dot else f"{name}-{context.shard}"
    if options:
        raise ValueError(
            f"index.options: unknown keys {sorted(options)} (sqlite: file, synchronous)"
        )
    path = Path(context.data_dir) / name if not os.path.isabs(name) else Path(name)
    config = context.config
    return SqliteIndex(
        path,
        config.ttl_seconds,
        config.max_records,
        synchronous,
        context.clock,
        config.tenant_ttl_seconds,
    )


@hookimpl(trylast=True)
def register_index_backends(register: Callable[[str, IndexFactory], None]) -> None:
    register("sqlite", _factory)
