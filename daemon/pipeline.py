"""From validated copies to outcomes: the bounded ingest queue, the reconciler task,
the sweeper, and the fan-out of outcomes to the index, watchers and plugins.

Long because these share one lock and one order of work (a batch is reconciled, its
changes handed to the index and its outcomes to the watchers, in that order, before the
next): split, the order would be spread over modules."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from helios.daemon.clock import Clock
from helios.daemon.config import Config
from helios.daemon.ingest import validate
from helios.daemon.model import Checked, CopyIn, EventRecord, Outcome, OutcomeKind
from helios.daemon.plugins import PluginManager
from helios.daemon.query import OutcomeQuery
from helios.daemon.reconciler import Reconciler
from helios.daemon.telemetry import Telemetry
from helios.daemon.types import IndexBackend, PublishResult, QueueFull, forgotten_until

log = logging.getLogger("helios.pipeline")
COMPLETE = OutcomeKind.COMPLETE
MAX_WRITES_IN_FLIGHT = 64  # index writes the reconciler may run ahead of
MERGE_COPIES = 1024  # queued copies reconciled together when each batch asks the index
# The sweep decides windows in chunks, letting the event loop serve others between two:
# a chunk is sized to take about SWEEP_SLICE_SECONDS, from what the last one took, so a
# slower machine (or index) gets smaller chunks, not longer waits.
SWEEP_SLICE_SECONDS = 0.008
SWEEP_CHUNK = 2000  # the first chunk's size
SWEEP_CHUNK_BOUNDS = (50, 20_000)
HOLD_SECONDS = 0.05  # how often a held reconciler looks again


class Voided(OSError):
    """A queued batch dropped undecided: its input's session ended (Pipeline.void)."""


Queued = tuple[list[Checked], float, asyncio.Future[None] | None, Mapping[str, int] | None]


class Batch:
    """The outcomes one flush gives one filter: every watcher with that filter gets the
    same object, so a front-end encodes it once (`encoded`), not once per watcher."""

    __slots__ = ("encoded", "outcomes")

    def __init__(self, outcomes: list[Outcome]) -> None:
        self.outcomes = outcomes
        self.encoded: bytes | None = None


@dataclass(eq=False)
class Watcher:
    """A subscriber to outcomes (WatchOutcomes, the console, the Kafka sink)."""

    query: OutcomeQuery | None
    queue: asyncio.Queue[Batch] = field(default_factory=lambda: asyncio.Queue(2000))
    overflowed: bool = False
    key: str = ""  # the filter's text: watchers with the same one share their batches


class Pipeline:
    """Owns the order of work: batches and sweeps run one at a time under one lock."""

    def __init__(
        self,
        config: Config,
        clock: Clock,
        reconciler: Reconciler,
        index: IndexBackend,
        plugins: PluginManager | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.reconciler = reconciler
        self.index = index
        # An index holding its records in this process lends them as a mapping: looked up
        # in place, with no get_many round per batch.
        self.resident: Mapping[str, EventRecord] | None = index.resident
        self.plugins = plugins
        self.sources = frozenset(config.sources.names)
        self.paused: set[str] = set()
        self.capacity = config.ingest.queue_capacity_events
        self.max_payload = config.ingest.max_payload_bytes
        self.max_id_length = config.ingest.max_event_id_length
        self.max_type_length = config.ingest.max_event_type_length
        self.max_open_windows = config.reconcile.max_open_windows
        self.rejections: Counter[str] = Counter()
        self.latencies_ms: deque[float] = deque(maxlen=config.reconcile.latency_samples)
        self.watchers: set[Watcher] = set()
        self.sequence = 0
        self.lock = asyncio.Lock()
        # Batches waiting for the reconciler: copies, receipt time, the future the
        # admission awaits for its acknowledgement (settled once the batch is stored),
        # and the marks to store with it (IndexBackend.write).
        self._queue: deque[Queued] = deque()
        self.durable = index.durable
        self._writing: deque[Awaitable[None]] = deque()  # writes not yet stored, oldest first
        self.queued = 0
        self.reserved = 0  # room claimed by batches that are still being validated
        self._work = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._tasks: list[asyncio.Task[None]] = []
        self.started_at = time.monotonic()
        # throttle_ingest: source (or "all") -> [copies per second, tokens, last refill]
        self.throttles: dict[str, list[float]] = {}
        self.telemetry: Telemetry | None = None  # outcomes counted, batches timed
        # False while an input cannot show it still holds its windows (a Kafka member
        # frozen past its session): queued batches wait, the sweep decides nothing.
        self.may_apply: Callable[[], bool] | None = None
        self.voided = 0  # queued copies dropped by void()
        # Outcomes whose write is not stored yet, oldest first: watchers and observers
        # get an outcome only once the index holds it, so a write the index refuses (a
        # fenced Kafka member's) or loses (kill -9 before the commit) never shows one.
        # Each entry: [the write, its outcomes, withheld]; withheld: the store refused
        # a write that took the local spill's word (refused()).
        self._unpublished: deque[list[Any]] = deque()
        self.unpublished = 0  # outcomes never published: their write failed
        # With a partitioned input (Kafka), stored means in the store the members
        # share: a spilled write is refused if its partitions moved meanwhile.
        self.shared: Callable[[], Awaitable[None]] | None = None
        self.sweep_chunk = SWEEP_CHUNK  # windows per sweep chunk, adapted as it goes
        # Records first seen since this process began are in the index unless it says
        # it forgot them (forgotten_until): the Bloom filters are asked only about
        # copies of events produced before (Reconciler._aged).
        self.since = clock.now()
        self.timer: Callable[[], float] = time.perf_counter  # what a chunk took (tests)

    # ---- ingest -------------------------------------------------------------------
    def check(
        self, copies: Sequence[CopyIn], scoped: bool = False
    ) -> tuple[list[Checked], PublishResult]:
        """Validate copies; `scoped`: the API's, whose ids may carry a tenant."""
        good, bad = validate(
            copies,
            self.sources,
            self.paused,
            self.max_payload,
            self.rejections,
            self.reconciler.open,
            self.max_id_length,
            self.max_type_length,
            scoped,
        )
        return good, PublishResult(len(good), bad)

    def _claim(self, count: int) -> None:
        waiting = self.queued + self.reserved
        if waiting + count > self.capacity and waiting > 0:
            self._room.clear()
            raise QueueFull(
                f"ingest queue full: {waiting} of {self.capacity} copies waiting; retry later"
            )
        self.reserved += count

    def reserve(self, count: int) -> None:
        """Claim room for a whole batch before validating it, or raise QueueFull: a batch
        is taken whole or not at all, never half-accepted."""
        self._claim(count)

    def release(self, count: int) -> None:
        """Give back room claimed by reserve() that rejected copies did not use."""
        self.reserved = max(0, self.reserved - count)
        if self.queued + self.reserved < self.capacity:
            self._room.set()

    def enqueue_reserved(
        self, good: list[Checked], received: float, marks: Mapping[str, int] | None = None
    ) -> asyncio.Future[None] | None:
        """Enqueue copies whose room reserve() claimed; the reconciler takes them next.
        With a durable index, returns the future that settles when they are stored
        (with `marks`, in the same write)."""
        self.reserved -= len(good)
        stored = asyncio.get_running_loop().create_future() if self.durable else None
        self._queue.append((good, received, stored, marks))
        self.queued += len(good)
        self._work.set()
        return stored

    async def reserve_wait(self, count: int, timeout: float) -> None:
        """reserve(), waiting up to `timeout` seconds for room (stream backpressure)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.reserve(count)
                return
            except QueueFull:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                try:
                    await asyncio.wait_for(self._room.wait(), remaining)
                except TimeoutError:
                    raise QueueFull(
                        f"ingest queue stayed full for {timeout:g} s: {self.queued} of "
                        f"{self.capacity} copies waiting; slow down"
                    ) from None

    def set_throttle(self, source: str, per_second: float | None) -> None:
        if per_second is None:
            self.throttles.pop(source, None)
        else:
            self.throttles[source] = [per_second, per_second, self.clock.now()]

    def throttle(self, sources: Sequence[str]) -> None:
        """Take tokens for a batch from these sources (one name per copy), or raise
        QueueFull naming the throttled source: the batch is refused whole."""
        now = self.clock.now()
        counts = Counter(sources)
        wanted: list[tuple[list[float], float]] = []
        for name, bucket in self.throttles.items():
            n = len(sources) if name == "all" else counts.get(name, 0)
            if not n:
                continue
            rate, tokens, last = bucket
            tokens = min(rate, tokens + (now - last) * rate)
            bucket[1], bucket[2] = tokens, now
            if n > tokens and not (tokens >= rate and n > rate):
                self.rejections["throttled"] += len(sources)
                raise QueueFull(
                    f"source {name} is throttled to {rate:g} copies/s (throttle_ingest); "
                    f"retry in {(n - tokens) / rate:.2f} s"
                )
            wanted.append((bucket, n))
        for bucket, taken in wanted:
            bucket[1] -= taken

    # ---- processing ---------------------------------------------------------------
    async def process(
        self,
        copies: list[Checked],
        received: float | None = None,
        stored: asyncio.Future[None] | None = None,
        marks: Mapping[str, int] | None = None,
    ) -> None:
        """Reconcile one batch now (the consumer task calls this; tests may too).
        `stored` settles once the index has stored what the batch changed, and `marks`
        with it."""
        async with self.lock:
            open_ = self.reconciler.open
            closed = self.resident
            if closed is None:  # fetch the closed records this batch touches
                unknown = {c[0] for c in copies if c[0] not in open_}
                closed = await self.index.get_many(unknown) if unknown else {}
            now = self.clock.now()
            if self.reconciler.filters is not None:
                self.reconciler.forgotten = max(self.since, forgotten_until(self.index, now))
            self.reconciler.apply(copies, now, closed)
            completes = self.reconciler.completed_in_batch
            if received is not None and self.telemetry is not None and copies:
                self.telemetry.reconciled(copies[0][0], received, completes)
            touched: list[EventRecord] = []
            if self.durable:  # the open windows this batch changed are stored too
                touched = [open_[e] for e in dict.fromkeys(c[0] for c in copies) if e in open_]
            written = self._flush(touched, marks)
        if stored is not None:
            _chain(written, stored)
        await self._bound_writes(written)
        if received is not None and completes:
            latency = (time.perf_counter() - received) * 1000.0
            self.latencies_ms.extend([latency] * completes)

    async def sweep(self) -> int:
        """Decide every window past its deadline in chunks, letting the event loop serve
        others between them: 400,000 windows expiring together held it 1.3 s in one
        piece (benchmarks/sweep_stalls.py). Each chunk is sized from what the last one
        took (deciding it and handing it to the index) to take about
        SWEEP_SLICE_SECONDS: chunks of a fixed 2,000 took 27 ms each on a machine twice
        as slow as usual, and two of them back to back (the sweep and a batch, or two
        sweeps) held the loop 56-67 ms."""
        total = 0
        low, high = SWEEP_CHUNK_BOUNDS
        while True:
            if self.may_apply is not None and not self.may_apply():
                return total  # a freeze between two chunks: the rest waits
            async with self.lock:
                chunk = self.sweep_chunk
                started = self.timer()
                declared = self.reconciler.sweep(self.clock.now(), chunk)
                written = self._flush([])
                took = self.timer() - started
            if declared == chunk and took > 0:  # a full chunk: its time says what fits
                scale = min(2.0, max(0.5, SWEEP_SLICE_SECONDS / took))
                self.sweep_chunk = min(high, max(low, round(chunk * scale)))
            await self._bound_writes(written)
            total += declared
            if declared < chunk:
                return total
            await asyncio.sleep(0)

    async def drain(self) -> None:
        """Process everything queued so far and wait until it is stored (tests and
        shutdown)."""
        while self._queue:
            copies, received, stored, marks = self._queue.popleft()
            self.queued -= len(copies)
            await self.process(copies, received, stored, marks)
        self._room.set()
        while self._writing:
            await _quietly(self._writing.popleft())

    async def stored_so_far(self) -> bool:
        """Wait for every write handed to the index so far; False if one failed."""
        results = await asyncio.gather(*self._writing, return_exceptions=True)
        return not any(isinstance(r, BaseException) for r in results)

    async def settle(self) -> None:
        """Wait until the reconciler task has taken every queued batch (drain() does
        the work itself: for tests and shutdown, when that task is stopped). While the
        reconciler is held nothing is taken: it returns at once."""
        while self._queue and (self.may_apply is None or self.may_apply()):
            await asyncio.sleep(0.005)

    def distrust(self, since: float) -> None:
        """Records closed since `since` may never be stored (the shared store refused,
        or will refuse, their writes): the Bloom slices that took them are not asked
        again, so their copies, read again, open windows instead of being judged LATE
        or DUPLICATE by what nothing stored."""
        filters = self.reconciler.filters
        if filters is not None:
            slices = filters.distrust(since, self.clock.now())
            log.warning("%d Bloom slices set aside: their records may not be stored", slices)

    def void(self, reason: str, since: float | None = None) -> int:
        """Drop the queued batches undecided (their admissions fail with `reason`): an
        input's session ended while they waited (a Kafka member the group put out while
        it was frozen), so they belong to another member now. Returns the copies
        dropped. An index that acknowledges at admission (in memory) keeps its batches:
        they are acknowledged already. `since`: when the session began (its writes since
        may be refused): the Bloom slices that took records since are not asked again."""
        if since is not None:
            self.distrust(since)
        if not self.durable:
            return 0
        dropped = 0
        while self._queue:
            copies, _, stored, _ = self._queue.popleft()
            self.queued -= len(copies)
            dropped += len(copies)
            if stored is not None and not stored.done():
                stored.set_exception(Voided(reason))
        self.voided += dropped
        self._room.set()
        return dropped

    def _flush(
        self, touched: list[EventRecord], marks: Mapping[str, int] | None = None
    ) -> Awaitable[None]:
        """Hand what changed to the index (it takes the records now) and the outcomes to
        the watchers; returns the index's write, done once stored."""
        outcomes, dirty = self.reconciler.drain()
        sequence = self.sequence
        for outcome in outcomes:
            sequence += 1
            outcome.sequence = sequence
        self.sequence = sequence
        filters = self.reconciler.filters
        if filters is not None and dirty:
            filters.add_records([(r.event_id, r.seen) for r in dirty], self.clock.now())
        records = dirty + touched if touched else dirty
        written = (
            self.index.write(records, outcomes, marks)
            if marks
            else self.index.write(records, outcomes)
        )
        if outcomes:
            self._publish(written, outcomes)
            if self.telemetry is not None:
                self.telemetry.count(outcomes)
        return written

    def _publish(self, written: Awaitable[None], outcomes: list[Outcome]) -> None:
        """Fan the outcomes out once their write is stored, in the order they were
        decided (an index in memory: at once)."""
        if not self.durable and not self._unpublished:
            self._fan_out(outcomes)
            return
        future = asyncio.ensure_future(written if self.shared is None else self._shared(written))
        self._unpublished.append([future, outcomes, False])
        future.add_done_callback(self._published)

    async def _shared(self, written: Awaitable[None]) -> None:
        await written
        assert self.shared is not None
        await self.shared()

    def _published(self, _: object) -> None:
        waiting = self._unpublished
        while waiting and waiting[0][0].done():
            future, outcomes, withheld = waiting.popleft()
            if withheld or future.cancelled() or future.exception() is not None:
                self.unpublished += len(outcomes)  # the store refused or lost them
            else:
                self._fan_out(outcomes)

    def refused(self, since: float, sequence: int) -> None:
        """The index's hook (IndexBackend.when_refused): the shared store refused writes
        made since `since` (daemon clock), the first of them holding outcome `sequence`
        on. Their outcomes are withheld from watchers (their write may have completed
        on the spill's word) and the Bloom slices that took their records set aside."""
        for entry in self._unpublished:
            if entry[1][0].sequence >= sequence:
                entry[2] = True
        self.distrust(since)

    async def _bound_writes(self, written: Awaitable[None]) -> None:
        """Let the index's writes run behind the reconciler, but not unboundedly: wait
        for the oldest when more than MAX_WRITES_IN_FLIGHT are outstanding."""
        if not self.durable:
            return
        writing = self._writing
        writing.append(written)
        while writing and (len(writing) > MAX_WRITES_IN_FLIGHT or _done(writing[0])):
            await _quietly(writing.popleft())

    def _fan_out(self, outcomes: list[Outcome]) -> None:
        """Each distinct filter is applied once per flush and its batch shared by every
        watcher with that filter (50 watchers of everything cost 50 encodings of every
        outcome before: benchmarks/watchers.py)."""
        notable: list[Outcome] | None = None  # all but COMPLETE: a small share of outcomes
        batches: dict[str, Batch | None] = {}
        for watcher in list(self.watchers):
            key = watcher.key
            if key in batches:
                batch = batches[key]
            else:
                query = watcher.query
                if query is None:
                    chosen = outcomes
                else:
                    candidates = outcomes
                    if query.kinds is not None and COMPLETE not in query.kinds:
                        if notable is None:
                            notable = [o for o in outcomes if o.kind is not COMPLETE]
                        candidates = notable
                    if query.kinds_only:
                        kinds = query.kinds or ()
                        chosen = [o for o in candidates if o.kind in kinds]
                    else:
                        chosen = [o for o in candidates if query.matches(o)]
                batch = batches[key] = Batch(chosen) if chosen else None
            if batch is None:
                continue
            try:
                watcher.queue.put_nowait(batch)
            except asyncio.QueueFull:
                watcher.overflowed = True
                self.watchers.discard(watcher)
        if self.plugins is not None and self.plugins.has_observers("on_outcome"):
            for outcome in outcomes:
                self.plugins.on_outcome(outcome)

    def watch(self, query: OutcomeQuery | None, size: int = 2000, key: str = "") -> Watcher:
        """Subscribe; `key` names the filter (watchers with equal keys share batches; a
        watcher of a private filter gets a key of its own)."""
        watcher = Watcher(query, asyncio.Queue(size), key=key if key else f"#{id(query)}")
        if query is None:
            watcher.key = ""
        self.watchers.add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)

    # ---- tasks ----------------------------------------------------------------------
    async def _consume(self) -> None:
        while True:
            await self._work.wait()
            while self._queue:
                if self.may_apply is not None and not self.may_apply():
                    await asyncio.sleep(HOLD_SECONDS)
                    continue
                copies, received, stored, marks = self._take()
                if self.queued + self.reserved < self.capacity:
                    self._room.set()
                try:
                    await self.process(copies, received, stored, marks)
                except Exception as exc:
                    log.exception("reconciling a batch of %d copies failed", len(copies))
                    if stored is not None and not stored.done():
                        stored.set_exception(exc)
            self._work.clear()

    def _take(self) -> Queued:
        """The next queued batch; with an index that is asked per batch (Redis), the
        batches queued behind it too, up to MERGE_COPIES copies: one lookup and one
        write for all of them instead of one each."""
        copies, received, stored, marks = self._queue.popleft()
        self.queued -= len(copies)
        if self.resident is not None or not self._queue:
            return copies, received, stored, marks
        merged = list(copies)
        stores = [stored] if stored is not None else []
        joined = dict(marks) if marks else {}
        while self._queue and len(merged) + len(self._queue[0][0]) <= MERGE_COPIES:
            more, _, also, their_marks = self._queue.popleft()
            self.queued -= len(more)
            merged += more
            if also is not None:
                stores.append(also)
            if their_marks:
                joined.update(their_marks)  # a later batch's offsets are higher
        if len(stores) > 1:
            together = asyncio.get_running_loop().create_future()
            for each in stores:
                _chain(together, each)
            stores = [together]
        return merged, received, stores[0] if stores else None, joined or None

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._consume(), name="helios-reconcile"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    # ---- reading --------------------------------------------------------------------
    def latency_summary(self) -> dict[str, float]:
        samples = sorted(self.latencies_ms)
        if not samples:
            return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0, "count": 0.0}

        def pick(q: float) -> float:
            return samples[min(len(samples) - 1, int(q * len(samples)))]

        return {
            "p50": pick(0.50),
            "p90": pick(0.90),
            "p99": pick(0.99),
            "max": samples[-1],
            "count": float(len(samples)),
        }

    def describe(self) -> dict[str, str]:
        """The Storage view's line on when outcomes reach watchers."""
        when = "once stored" if self.durable else "as decided (the index is in memory)"
        if self.shared is not None:
            when = "once in the store the members share (not on a local spill's word)"
        return {
            "publishing": f"outcomes go to watchers {when}; {self.unpublished:,} never "
            f"published (the store refused their write), {self.voided:,} queued copies "
            "dropped undecided (their input's session ended)"
        }

    def outcome_counts(self) -> dict[str, int]:
        counts = self.reconciler.outcome_counts
        return {kind.name: counts.get(kind, 0) for kind in OutcomeKind}


def _done(written: Awaitable[None]) -> bool:
    return isinstance(written, asyncio.Future) and written.done()


_said: dict[str, float] = {}  # a failure's text -> when it was last logged


async def _quietly(written: Awaitable[None]) -> None:
    """Wait for a write; its failure reaches the batch's own acknowledgement (and the
    log, each kind once a minute: a fenced member refused every sweep logged twice a
    second), not the reconciler."""
    try:
        await written
    except Exception as exc:
        text, now = str(exc), time.monotonic()
        if now - _said.get(text, -60.0) >= 60.0:
            if len(_said) > 100:
                _said.clear()
            _said[text] = now
            log.error("storing a flush failed (said once a minute): %s", exc)


def _chain(written: Awaitable[None], stored: asyncio.Future[None]) -> None:
    """Settle `stored` as `written` settles."""
    future = asyncio.ensure_future(written)

    def settle(done: asyncio.Future[None]) -> None:
        if stored.done():
            return
        error = done.exception()
        if error is None:
            stored.set_result(None)
        else:
            stored.set_exception(error)

    future.add_done_callback(settle)
