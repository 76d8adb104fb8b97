"""The reconciler: copies in, outcomes out, with constant work per copy.

Windows open at an event's first copy and close when every expected source delivered
(COMPLETE or INCONSISTENT, at once) or when window + grace pass (MISSING). Deadlines of
one route only ever grow, so each route keeps a FIFO of open records: expiry is a pop
from the left, with no timer or task per event.

Long because the per-copy path is one inlined loop and every way a copy can end
(new, duplicate, late, aged out past the index, complete, missing) changes the same
counters: split, they would be reached through attribute lookups on the hot path.
"""

from __future__ import annotations

import fnmatch
import heapq
import math
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from helios.daemon.bloom import DeliveryFilters
from helios.daemon.config import RouteConfig
from helios.daemon.metrics import MetricsRollup, MinuteAccumulator
from helios.daemon.model import Checked, EventRecord, Outcome, OutcomeKind, Status
from helios.daemon.tenants import SEP

COMPLETE = OutcomeKind.COMPLETE
MISSING = OutcomeKind.MISSING
INCONSISTENT = OutcomeKind.INCONSISTENT
DUPLICATE = OutcomeKind.DUPLICATE
LATE = OutcomeKind.LATE
PENDING = Status.PENDING


@dataclass
class Route:
    pattern: str
    expected: int  # bit mask
    window: float
    grace: float
    queue: deque[EventRecord] = field(default_factory=deque)
    base: int = 0  # the configured mask; `expected` drops failed-over sources from it
    tenants: frozenset[str] = frozenset()  # the tenants it is for; empty: every one

    def __post_init__(self) -> None:
        self.base = self.expected


@dataclass
class SourceCounters:
    copies: int = 0
    expected: int = 0
    delivered: int = 0
    duplicates: int = 0

    @property
    def share(self) -> float:
        """Completeness: delivered of expected (1.0 before any was expected)."""
        return self.delivered / self.expected if self.expected else 1.0


class Reconciler:
    """Keeps open windows and decides outcomes; closed records go to the index."""

    def __init__(
        self,
        sources: Sequence[str],
        routes: Sequence[RouteConfig],
        window: float,
        grace: float,
        metrics: MetricsRollup,
        max_routes_cached: int = 10_000,
    ) -> None:
        self.sources = list(sources)
        self.source_index = {name: i for i, name in enumerate(self.sources)}
        self.n = len(self.sources)
        all_mask = (1 << self.n) - 1
        self.routes = [
            Route(
                r.event_type,
                self._mask(r.sources) if r.sources else all_mask,
                window if r.window_seconds is None else r.window_seconds,
                grace if r.grace_seconds is None else r.grace_seconds,
                tenants=frozenset(r.tenants),
            )
            for r in routes
        ]
        self.tenanted = any(r.tenants for r in self.routes)  # routes differ by tenant
        self.default_route = Route("*", all_mask, window, grace)
        self._route_cache: dict[str, Route] = {}
        self.max_routes_cached = max_routes_cached
        self.metrics = metrics
        self.open: dict[str, EventRecord] = {}
        self.now = 0.0
        # Emitted since the last drain(): outcomes in order, and closed records changed.
        self.outcomes: list[Outcome] = []
        self.dirty: dict[str, EventRecord] = {}
        self.completed_in_batch = 0
        self.events_seen = 0
        self.copies_received = 0
        self.outcome_counts: Counter[OutcomeKind] = Counter()
        self.by_source = [SourceCounters() for _ in self.sources]
        self._bits: dict[int, tuple[int, ...]] = {}
        self._pairs = [(p, a, b) for p, (a, b) in enumerate(metrics.pairs)]
        # Events closed with every expected copy, by expected mask, not yet counted per source.
        self._closed_full: Counter[int] = Counter()
        self.excluded = 0  # sources failed over: not expected until restored
        # Who delivered what, past the index TTL (daemon/bloom.py); None: not kept.
        self.filters: DeliveryFilters | None = None
        self._batch: list[Checked] | None = None  # the batch apply() takes (for _ask)
        self._asked: dict[tuple[str, int], bool] | None = None  # its answers, once asked
        self.aged_late_by = 0.0  # the LATE of an aged-out event: late by at least the TTL
        # Records first seen after this are all in the index (Pipeline.process sets it
        # from the index); inf: not known, the filters are asked about every stamp.
        self.forgotten = math.inf

    def set_excluded(self, names: Iterable[str]) -> None:
        """Stop expecting these sources (failover): new events do not wait for them and
        open windows no longer miss them. A route keeps its sources if all would go."""
        self.excluded = self._mask(names)
        for route in (*self.routes, self.default_route, *self._route_cache.values()):
            route.expected = route.base & ~self.excluded or route.base

    def _mask(self, names: Iterable[str]) -> int:
        mask = 0
        for name in names:
            mask |= 1 << self.source_index[name]
        return mask

    def names(self, mask: int) -> tuple[str, ...]:
        return tuple(s for i, s in enumerate(self.sources) if mask >> i & 1)

    def _indexes(self, mask: int) -> tuple[int, ...]:
        found = self._bits.get(mask)
        if found is None:
            found = self._bits[mask] = tuple(i for i in range(self.n) if mask >> i & 1)
        return found

    def route_sources(self, pattern: str) -> tuple[str, ...]:
        """The sources a route (by its pattern, "*" the default) expects."""
        for r in (*self.routes, self.default_route):
            if r.pattern == pattern:
                return self.names(r.base)
        return ()

    def route(self, event_type: str, event_id: str = "") -> Route:
        """The first route whose pattern matches the type (and, when routes name
        tenants, that is for the event's tenant, read from its key)."""
        tenant = ""
        if self.tenanted and SEP in event_id:
            tenant = event_id.partition(SEP)[0]
        key = f"{tenant}{SEP}{event_type}" if tenant else event_type
        route = self._route_cache.get(key)
        if route is None:
            route = next(
                (
                    r
                    for r in self.routes
                    if fnmatch.fnmatchcase(event_type, r.pattern)
                    and (not r.tenants or tenant in r.tenants)
                ),
                self.default_route,
            )
            if len(self._route_cache) < self.max_routes_cached:
                self._route_cache[key] = route
        return route

    def _emit(
        self, kind: OutcomeKind, rec: EventRecord, sources: tuple[str, ...], late_by: float = 0.0
    ) -> None:
        outcome = Outcome(kind, rec.event_id, rec.event_type, sources, self.now, late_by)
        rec.outcomes.append(outcome)
        self.outcomes.append(outcome)
        self.outcome_counts[kind] += 1

    def _emit_inconsistent(self, rec: EventRecord) -> None:
        sources = self._disagreeing(rec)
        self._emit(INCONSISTENT, rec, sources)
        counts = self.metrics.at(self.now).inconsistent_by_source
        for name in sources:
            counts[self.source_index[name]] += 1

    def apply(
        self, copies: Iterable[Checked], now: float, closed: Mapping[str, EventRecord]
    ) -> None:
        """Take a batch of validated copies arriving at `now`; `closed` holds index records."""
        self.now = now = max(now, self.now)
        if self.filters is not None:  # the filters are asked for the batch at once (_ask)
            self._asked = None
            self._batch = copies = copies if isinstance(copies, list) else list(copies)
        acc = self.metrics.at(now)
        open_ = self.open
        closed_get = closed.get
        source_index = self.source_index
        by_source = self.by_source
        outcomes = self.outcomes
        dirty = self.dirty
        pairs = self._pairs
        pair_sum = acc.pair_sum
        pair_n = acc.pair_n
        closed_full = self._closed_full
        copies_by_source = acc.copies_by_source
        n = self.n
        received = size_sum = size_sq = new_events = completes = 0
        for event_id, source, event_type, produced_at, payload, digest in copies:
            received += 1
            si = source_index[source]
            by_source[si].copies += 1
            copies_by_source[si] += 1
            size = len(payload)
            size_sum += size
            size_sq += size * size
            rec = open_.get(event_id)
            if rec is None:
                # Records closed since the last drain are in `dirty`, newer than the index's.
                rec = dirty.get(event_id) or closed_get(event_id)
                if rec is None:
                    route = self.route(event_type, event_id)
                    if self.filters is not None and self._aged(
                        route, event_id, event_type, si, source, produced_at, payload, digest
                    ):
                        continue
                    rec = EventRecord(
                        event_id,
                        event_type,
                        route.expected,
                        n,
                        now,
                        now + route.window + route.grace,
                    )
                    rec.payload = payload
                    rec.digest = digest
                    rec.copies[si] = (now, produced_at, digest, size)
                    rec.seen = 1 << si
                    open_[event_id] = rec
                    route.queue.append(rec)
                    new_events += 1
                    if rec.seen == rec.expected:  # a route that expects one source
                        self._decide(rec, acc)
                    continue
            copies_ = rec.copies
            if copies_[si] is not None:
                counts = rec.counts
                if counts is None:
                    counts = rec.counts = {}
                counts[si] = counts.get(si, 1) + 1
                by_source[si].duplicates += 1
                acc.duplicates += 1
                acc.duplicates_by_source[si] += 1
                self._emit(DUPLICATE, rec, (source,))
                if rec.status is not PENDING:
                    dirty[event_id] = rec
                continue
            copies_[si] = (now, produced_at, digest, size)
            if digest != rec.digest:
                rec.differs = True
            seen = rec.seen = rec.seen | 1 << si
            if rec.status is not PENDING:
                self._late_copy(rec, si, 1 << si, acc)
            elif seen & rec.expected == rec.expected:
                if rec.differs:
                    self._decide(rec, acc)
                    continue
                # COMPLETE, inlined: the path almost every event takes.
                rec.status = Status.COMPLETE
                outcome = Outcome(COMPLETE, event_id, rec.event_type, (), now)
                rec.outcomes.append(outcome)
                outcomes.append(outcome)
                completes += 1
                closed_full[rec.expected] += 1
                for p, a, b in pairs:
                    ca = copies_[a]
                    cb = copies_[b]
                    if ca is not None and cb is not None:
                        pair_sum[p] += abs(cb[0] - ca[0])
                        pair_n[p] += 1
                del open_[event_id]
                dirty[event_id] = rec
        acc.copies += received
        acc.size_sum += size_sum
        acc.size_sq += size_sq
        acc.events += new_events
        acc.closed += completes
        self.events_seen += new_events
        self.copies_received += received
        self.completed_in_batch += completes
        self.outcome_counts[COMPLETE] += completes
        self._count_closed_full(acc)
        self._batch = self._asked = None

    def _may_be_forgotten(self, route: Route, produced_at: float) -> bool:
        """Could the index have forgotten the record of an event its producer stamped
        `produced_at`? If not, the filters are not asked, so their false positives
        (keep x error_rate^2 per new event with every slice full) never turn a new
        event LATE or DUPLICATE:
        - stamped within the route's window (+ grace) of now: its record, if any, has
          hardly closed, let alone left;
        - stamped after `forgotten` (the latest first_seen of a record the index may
          no longer hold, or this process's start), by more than that window: its
          record was first seen later still, so it is in the index. The window is the
          room left for a producer's clock running ahead.
        Unstamped (0) or older: asked."""
        margin = route.window + route.grace
        return abs(self.now - produced_at) >= margin and produced_at <= self.forgotten + margin

    def _ask(self, event_id: str, others: int) -> bool:
        """filters.aged(event_id, others), asked at the batch's first need for every copy
        of the batch that may need it (DeliveryFilters.aged_many: one gather per source
        for all of them, 2.9 us a new event asked one at a time with every slice full).
        The filters take no bits during apply(), so the answers are the same."""
        filters = self.filters
        assert filters is not None
        asked = self._asked
        if asked is None:
            # An event's first copy asks; after it the event is open or closed (dirty).
            firsts: dict[str, int] = {}
            open_, dirty, source_index = self.open, self.dirty, self.source_index
            for copy in self._batch or ():
                if copy[0] in firsts or copy[0] in open_ or copy[0] in dirty:
                    continue
                route = self.route(copy[2], copy[0])
                if not self._may_be_forgotten(route, copy[3]):
                    continue  # never asked (_aged)
                firsts[copy[0]] = route.expected & ~(1 << source_index[copy[1]])
            keys = [item for item in firsts.items() if item[1]]
            asked = self._asked = dict(zip(keys, filters.aged_many(keys), strict=True))
        found = asked.get((event_id, others))
        return filters.aged(event_id, others) if found is None else found

    def _count_closed_full(self, acc: MinuteAccumulator) -> None:
        """Per-source expected/delivered counts for events closed with every copy."""
        for mask, count in self._closed_full.items():
            for i in self._indexes(mask):
                acc.expected_by_source[i] += count
                counters = self.by_source[i]
                counters.expected += count
                counters.delivered += count
        self._closed_full.clear()

    def _disagreeing(self, rec: EventRecord) -> tuple[str, ...]:
        """Sources whose payload differs from the most common one; () when all agree."""
        if not rec.differs:
            return ()
        digests = [(i, c[2]) for i, c in enumerate(rec.copies) if c is not None]
        ranked = Counter(d for _, d in digests).most_common()
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            return tuple(self.sources[i] for i, _ in digests)  # a tie: no majority to trust
        majority = ranked[0][0]
        return tuple(self.sources[i] for i, d in digests if d != majority)

    def _close_metrics(self, rec: EventRecord, missing: int, acc: MinuteAccumulator) -> None:
        acc.closed += 1
        if missing:
            acc.missing += 1
        if rec.inconsistent:
            acc.inconsistent += 1
        for i in self._indexes(rec.expected):
            acc.expected_by_source[i] += 1
            counters = self.by_source[i]
            counters.expected += 1
            if missing >> i & 1:
                acc.missing_by_source[i] += 1
            else:
                counters.delivered += 1
        copies = rec.copies
        for p, a, b in self._pairs:
            ca, cb = copies[a], copies[b]
            if ca is not None and cb is not None:
                acc.pair_sum[p] += abs(cb[0] - ca[0])
                acc.pair_n[p] += 1

    def _decide(self, rec: EventRecord, acc: MinuteAccumulator) -> None:
        """Every expected copy is here: COMPLETE, or INCONSISTENT when payloads disagree."""
        if rec.differs:
            rec.inconsistent = True
            rec.status = Status.INCONSISTENT
            self._emit_inconsistent(rec)
        else:
            rec.status = Status.COMPLETE
            self._emit(COMPLETE, rec, ())
            self.completed_in_batch += 1
        self._close_metrics(rec, 0, acc)
        del self.open[rec.event_id]
        self.dirty[rec.event_id] = rec

    def _aged(
        self,
        route: Route,
        event_id: str,
        event_type: str,
        si: int,
        source: str,
        produced_at: float,
        payload: bytes,
        digest: bytes,
    ) -> bool:
        """A copy of an event the index forgot, if the filters say every other expected
        source delivered it: LATE (this source never did) or DUPLICATE. Its record comes
        back closed, so the next copy is judged against it. A route of one source is
        never judged so: one filter's false positive would hide a new event."""
        filters = self.filters
        assert filters is not None
        now = self.now
        if not self._may_be_forgotten(route, produced_at):
            return False
        others = route.expected & ~(1 << si)
        if not others or not self._ask(event_id, others):
            return False
        rec = EventRecord(event_id, event_type, route.expected, self.n, now, now)
        rec.payload = payload
        rec.digest = digest
        rec.copies[si] = (now, produced_at, digest, len(payload))
        rec.seen = route.expected
        rec.status = Status.COMPLETE
        if filters.delivered(event_id, 1 << si):
            rec.counts = {si: 2}
            self.by_source[si].duplicates += 1
            acc = self.metrics.at(now)
            acc.duplicates += 1
            acc.duplicates_by_source[si] += 1
            filters.aged_duplicates += 1
            self._emit(DUPLICATE, rec, (source,))
        else:
            rec.late_mask = 1 << si
            filters.aged_late += 1
            self._emit(LATE, rec, (source,), self.aged_late_by)
        self.dirty[event_id] = rec
        return True

    def _late_copy(self, rec: EventRecord, si: int, bit: int, acc: MinuteAccumulator) -> None:
        """A copy for a closed record: LATE if MISSING named it; it heals the record."""
        if rec.missing & bit:
            rec.late_mask |= bit
            rec.missing &= ~bit
            self.by_source[si].delivered += 1
            self._emit(LATE, rec, (self.sources[si],), self.now - rec.deadline)
        if rec.differs and not rec.inconsistent:
            rec.inconsistent = True
            self._emit_inconsistent(rec)
        if not rec.missing:
            if rec.inconsistent:
                rec.status = Status.INCONSISTENT
            elif rec.status is Status.MISSING:
                rec.status = Status.COMPLETE
                self._emit(COMPLETE, rec, ())
        self.dirty[rec.event_id] = rec

    def sweep(self, now: float, limit: int = 0) -> int:
        """Declare MISSING for open windows whose deadline has passed, at most `limit`
        of them (0: all); returns how many were decided."""
        self.now = now = max(now, self.now)
        acc = self.metrics.at(now)
        declared = 0
        for route in (*self.routes, self.default_route):
            queue = route.queue
            while queue and queue[0].deadline <= now and not (limit and declared >= limit):
                rec = queue.popleft()
                if rec.status is not PENDING:
                    continue
                missing = rec.expected & ~rec.seen & ~self.excluded
                if not missing:  # only failed-over sources were awaited
                    rec.expected &= ~self.excluded
                    self._decide(rec, acc)
                    declared += 1
                    continue
                rec.missing = missing
                rec.status = Status.MISSING
                self._emit(MISSING, rec, self.names(missing))
                if rec.differs:
                    rec.inconsistent = True
                    self._emit_inconsistent(rec)
                self._close_metrics(rec, missing, acc)
                del self.open[rec.event_id]
                self.dirty[rec.event_id] = rec
                declared += 1
        return declared

    def oldest_open(self) -> float | None:
        """A lower bound of the first copy's time of every open window (the head of each
        route's FIFO, which may be a record closed early: never later than an open one)."""
        heads = [r.queue[0].first_seen for r in (*self.routes, self.default_route) if r.queue]
        return min(heads) if heads else None

    def restore(self, records: Iterable[EventRecord], shift: float) -> int:
        """Resume open windows read back from a store, each deadline moved by `shift`
        (the time heliosd was away), so that a window keeps the time it had left and
        no source is declared MISSING for the time no copy could arrive."""
        restored = sorted(records, key=lambda r: r.deadline)
        for rec in restored:
            rec.deadline += shift
            self.open[rec.event_id] = rec
            self.route(rec.event_type, rec.event_id).queue.append(rec)
        return len(restored)

    def adopt(self, records: Iterable[EventRecord], shift: float) -> int:
        """Take over open windows another member (or an earlier owner) left in a shared
        store, each deadline moved by `shift` (the time no one worked on them); windows
        open here already are kept. Each route's queue stays in deadline order."""
        taken = [r for r in records if r.event_id not in self.open]
        for rec in taken:
            rec.deadline += shift
            self.open[rec.event_id] = rec
        by_route: dict[int, tuple[Route, list[EventRecord]]] = {}
        for rec in taken:
            route = self.route(rec.event_type, rec.event_id)
            by_route.setdefault(id(route), (route, []))[1].append(rec)
        for route, recs in by_route.values():
            recs.sort(key=lambda r: r.deadline)
            route.queue = deque(heapq.merge(route.queue, recs, key=lambda r: r.deadline))
        return len(taken)

    def release(self, owns: Callable[[str], bool]) -> list[EventRecord]:
        """Hand back the open windows of the event ids `owns` accepts, undecided (the
        store keeps them open for their next owner); returns them."""
        released = [rec for event_id, rec in self.open.items() if owns(event_id)]
        if not released:
            return []
        for rec in released:
            del self.open[rec.event_id]
            self.dirty.pop(rec.event_id, None)
        gone = {id(r) for r in released}
        for route in (*self.routes, self.default_route):
            if any(id(r) in gone for r in route.queue):
                route.queue = deque(r for r in route.queue if id(r) not in gone)
        return released

    def drain(self) -> tuple[list[Outcome], list[EventRecord]]:
        """Hand over what changed since the last drain."""
        outcomes, dirty = self.outcomes, list(self.dirty.values())
        self.outcomes = []
        self.dirty = {}
        self.completed_in_batch = 0
        return outcomes, dirty
