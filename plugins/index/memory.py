"""The in-memory index: a dict of records and an append-only outcome log, both TTL-bound."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import deque
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from datetime import UTC, datetime

from helios.daemon.hookspecs import hookimpl
from helios.daemon.model import EventRecord, Outcome
from helios.daemon.query import OutcomeQuery
from helios.daemon.tenants import SEP
from helios.daemon.types import IndexBackend, IndexContext, IndexFactory, Resume

SCAN_LIMIT = 1_000_000  # outcomes looked at per ListOutcomes page before handing back a token
SHARD_BITS = 7  # records live in 2**SHARD_BITS dicts, so no single resize copies them all


class RecordMap(Mapping[str, EventRecord]):
    """Records by event_id in 128 dicts chosen by the id's hash. One dict of 2.8 million
    records copied itself in 81 ms when it grew (benchmarks/index_stalls.py): a stall of
    the event loop. Here a resize copies one shard, 1/128 of the records."""

    __slots__ = ("_mask", "_shards")

    def __init__(self) -> None:
        self._shards: list[dict[str, EventRecord]] = [{} for _ in range(1 << SHARD_BITS)]
        self._mask = (1 << SHARD_BITS) - 1

    def __getitem__(self, event_id: str) -> EventRecord:
        return self._shards[hash(event_id) & self._mask][event_id]

    def get(self, event_id: str, default: EventRecord | None = None) -> EventRecord | None:  # type: ignore[override]
        return self._shards[hash(event_id) & self._mask].get(event_id, default)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._shards[hash(event_id) & self._mask]

    def __setitem__(self, event_id: str, record: EventRecord) -> None:
        self._shards[hash(event_id) & self._mask][event_id] = record

    def pop(self, event_id: str, default: EventRecord | None = None) -> EventRecord | None:
        return self._shards[hash(event_id) & self._mask].pop(event_id, default)

    def __len__(self) -> int:
        return sum(map(len, self._shards))

    def __iter__(self) -> Iterator[str]:
        for shard in self._shards:
            yield from shard

    def clear(self) -> None:
        for shard in self._shards:
            shard.clear()


class _Stored:
    """An awaitable that is already done: what an index in memory returns from write."""

    def __await__(self) -> Generator[None, None, None]:
        return
        yield


_STORED = _Stored()


class MemoryIndex:
    """Records by event_id plus the outcome log; the oldest leave first (TTL, then size)."""

    def __init__(
        self,
        ttl_seconds: float,
        max_records: int,
        tenant_ttl: Mapping[str, float] | None = None,
    ) -> None:
        self.ttl = ttl_seconds
        self.max_records = max_records
        # index.tenant_ttl_seconds: those tenants' records leave sooner, from a queue each.
        self.tenant_ttl = dict(tenant_ttl or {})
        self._tenant_order: dict[str, deque[tuple[float, str]]] = {}
        self.records = RecordMap()
        self.resident: Mapping[str, EventRecord] | None = self.records  # looked up in place
        self._order: deque[tuple[float, str]] = deque()  # (first_seen, event_id), oldest first
        self._log: list[Outcome] = []
        self._head = 0  # outcomes before this position have expired
        # Evicted by the size bound, for a store to delete: (first_seen, event_id).
        self._dropped: list[tuple[float, str]] = []
        self.track_evictions = False
        self.marks: dict[str, int] = {}
        self._forgotten = -math.inf  # the latest first_seen of a record that left

    durable = False

    async def open(self) -> Resume:
        return Resume()  # nothing on disk, nothing to resume

    def write(
        self,
        records: Sequence[EventRecord],
        outcomes: Sequence[Outcome],
        marks: Mapping[str, int] | None = None,
    ) -> Awaitable[None]:
        self.store(records, outcomes)
        if marks:
            self.marks.update(marks)
        return _STORED

    async def read_marks(self, prefix: str) -> dict[str, int]:
        return {k: v for k, v in self.marks.items() if k.startswith(prefix)}

    async def claim(self, names: Collection[str], scope: str = "") -> None:
        return None  # one process's index: no other writer to fence

    async def shared(self) -> None:
        return None  # nobody else reads it

    def away(self) -> str | None:
        return None

    def when_refused(self, call: Callable[[float, int], None]) -> None:
        return None  # nothing is ever refused

    async def disown(self, names: Collection[str]) -> None:
        return None

    async def open_windows(self, wanted: Callable[[str], bool] | None = None) -> list[EventRecord]:
        return []  # open windows live in the reconciler of this process only

    def store(self, records: Sequence[EventRecord], outcomes: Sequence[Outcome]) -> None:
        """Keep closed records and outcomes, at once."""
        if records:
            self._put(records)
        if outcomes:
            self._add(outcomes)

    def describe(self) -> dict[str, str]:
        return {
            "backend": "memory",
            "durability": "none: records and outcomes are lost when heliosd stops",
            "records": f"{len(self.records):,} of at most {self.max_records:,}",
            "forgotten": self.forgotten_text(),
        }

    def forgotten_text(self) -> str:
        """What the Storage view says of forgotten_until."""
        if self._forgotten == -math.inf:
            return "nothing yet (no record has left by TTL or size)"
        when = datetime.fromtimestamp(self._forgotten, UTC).isoformat(timespec="seconds")
        return (
            f"records first seen up to {when} may have left (TTL, size bound); the Bloom "
            "filters answer for events produced before then"
        )

    async def get_many(self, event_ids: Collection[str]) -> dict[str, EventRecord]:
        records = self.records
        return {i: records[i] for i in event_ids if i in records}

    async def put_many(self, records: Sequence[EventRecord]) -> None:
        self._put(records)

    def _put(self, records: Sequence[EventRecord]) -> None:
        stored = self.records
        order = self._order
        tenants = self.tenant_ttl
        for rec in records:
            if rec.event_id not in stored:
                order.append((rec.first_seen, rec.event_id))
                if tenants and SEP in rec.event_id:
                    self._track(rec)
            stored[rec.event_id] = rec
        excess = len(stored) - self.max_records
        while excess > 0 and order:
            first_seen, event_id = order.popleft()
            if stored.pop(event_id, None) is not None:
                excess -= 1
                self._forgotten = max(self._forgotten, first_seen)
                if self.track_evictions:
                    self._dropped.append((first_seen, event_id))

    def _track(self, rec: EventRecord) -> None:
        tenant = rec.event_id.partition(SEP)[0]
        if tenant in self.tenant_ttl:
            queue = self._tenant_order.setdefault(tenant, deque())
            queue.append((rec.first_seen, rec.event_id))

    async def add_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        self._add(outcomes)

    def _add(self, outcomes: Sequence[Outcome]) -> None:
        self._log.extend(outcomes)
        excess = len(self._log) - self._head - 2 * self.max_records
        if excess > 0:
            self._head += excess
            self._compact()

    def _compact(self) -> None:
        if self._head > 100_000 and self._head > len(self._log) // 2:
            del self._log[: self._head]
            self._head = 0

    async def list_outcomes(
        self, query: OutcomeQuery, page_size: int, before: int | None
    ) -> tuple[list[Outcome], int | None]:
        log = self._log
        key: Callable[[Outcome], int] = lambda o: o.sequence  # noqa: E731
        end = len(log) if before is None else bisect_left(log, before, lo=self._head, key=key)
        page: list[Outcome] = []
        scanned = 0
        position = end - 1
        while position >= self._head:
            outcome = log[position]
            if query.matches(outcome):
                page.append(outcome)
                if len(page) == page_size:
                    break
            scanned += 1
            if scanned >= SCAN_LIMIT:
                return page, outcome.sequence
            position -= 1
        more = len(page) == page_size and position > self._head
        return page, (page[-1].sequence if more else None)

    async def expire(self, now: float, keep_after: float = 0.0) -> int:
        cutoff = now - self.ttl
        stored = self.records
        order = self._order
        removed = 0
        forgotten = self._forgotten
        while order and order[0][0] < cutoff:
            first_seen, event_id = order.popleft()
            if stored.pop(event_id, None) is not None:
                removed += 1
                forgotten = max(forgotten, first_seen)
        for tenant, queue in self._tenant_order.items():
            tenant_cutoff = now - self.tenant_ttl[tenant]
            while queue and queue[0][0] < tenant_cutoff:
                first_seen, event_id = queue.popleft()
                if stored.pop(event_id, None) is not None:
                    removed += 1
                    forgotten = max(forgotten, first_seen)
        self._forgotten = forgotten
        # A tenant's outcomes stay in the log until the index's own TTL: ListOutcomes
        # leaves out those past the tenant's (OutcomeQuery.cutoffs).
        log = self._log
        while self._head < len(log) and log[self._head].time < cutoff:
            self._head += 1
        self._compact()
        return removed

    async def count(self) -> int:
        return len(self.records)

    def forgotten_until(self, now: float) -> float:
        return self._forgotten

    def pushback(self) -> str | None:
        return None

    async def close(self) -> None:
        self.records.clear()
        self._log.clear()

    def load(self, records: Sequence[EventRecord], outcomes: Sequence[Outcome]) -> None:
        """Take records (oldest first) and outcomes (in sequence order) read back from a
        store, without writing them anywhere."""
        stored, order, tenants = self.records, self._order, self.tenant_ttl
        for rec in records:
            if rec.event_id not in stored:
                order.append((rec.first_seen, rec.event_id))
                if tenants and SEP in rec.event_id:
                    self._track(rec)
            stored[rec.event_id] = rec
        self._log.extend(outcomes)

    def evicted_since(self) -> list[tuple[float, str]]:
        """Event ids dropped by the size bound since the last call (a store deletes them)."""
        dropped, self._dropped = self._dropped, []
        return dropped


def _factory(context: IndexContext) -> IndexBackend:
    config = context.config
    return MemoryIndex(config.ttl_seconds, config.max_records, config.tenant_ttl_seconds)


@hookimpl(trylast=True)
def register_index_backends(register: Callable[[str, IndexFactory], None]) -> None:
    register("memory", _factory)
