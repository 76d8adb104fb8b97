"""The simulator source: realistic multi-cloud traffic with faults and its ground truth.

`Traffic` is the model (usable on its own by tests and `helios bench`); `SimulatorSource`
feeds it to the daemon on the daemon's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import random
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from helios.daemon.config import RouteConfig, route_for
from helios.daemon.hookspecs import hookimpl
from helios.daemon.model import CopyIn
from helios.daemon.types import QueueFull, Source, SourceContext, SourceFactory
from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger("helios.simulator")


def _dumps(value: Any, option: int = 0) -> bytes:
    # orjson hands back a 4 KiB buffer whatever the size; keep only the bytes we use.
    return bytes(memoryview(orjson.dumps(value, option=option)))


class LatencyModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    median: float = Field(50.0, gt=0)  # milliseconds
    sigma: float = Field(0.5, ge=0)


class Scenario(BaseModel):
    """A scheduled fault: e.g. aws drops 25% of copies for 5 minutes from minute 10."""

    model_config = ConfigDict(extra="forbid")
    source: str
    kind: Literal["drop", "duplicate", "corrupt", "delay", "latency"]
    probability: float = Field(1.0, ge=0, le=1)
    factor: float = Field(5.0, gt=0)  # latency: multiply delivery latency by this
    start_minute: float = Field(0.0, ge=0)
    duration_minutes: float = Field(5.0, gt=0)

    def active(self, minute: float) -> bool:
        return self.start_minute <= minute < self.start_minute + self.duration_minutes


class TrafficOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rate_per_second: float = Field(20.0, gt=0)
    sources: list[str] | None = None  # default: every known source
    event_types: list[str] = Field(default_factory=lambda: ["order.created", "payment.captured"])
    seed: int = 7
    id_prefix: str = "sim"
    latency_ms: dict[str, LatencyModel] = Field(default_factory=dict)
    max_latency_ms: float = Field(5000.0, gt=0)
    drop_probability: float = Field(0.0, ge=0, le=1)
    duplicate_probability: float = Field(0.0, ge=0, le=1)
    corrupt_probability: float = Field(0.0, ge=0, le=1)
    delay_probability: float = Field(0.0, ge=0, le=1)
    delay_seconds: float | None = Field(None, gt=0)  # default: past the deadline for sure
    reorder_keys: bool = True  # some sources serialise JSON with other key order/spacing
    scenarios: list[Scenario] = Field(default_factory=list)
    truth_limit: int = Field(2_000_000, gt=0)  # events whose ground truth is kept
    tick_seconds: float = Field(0.01, gt=0)  # arrival times are quantised to this
    batch_size: int = Field(1000, gt=0)


@dataclass
class Truth:
    """What the simulator did to each event, by event_id -> sources."""

    dropped: dict[str, set[str]] = field(default_factory=dict)
    delayed: dict[str, set[str]] = field(default_factory=dict)
    duplicated: dict[str, set[str]] = field(default_factory=dict)
    corrupted: dict[str, set[str]] = field(default_factory=dict)
    # Corrupted events with two or more copies delivered: only those can be seen to disagree.
    inconsistent: dict[str, set[str]] = field(default_factory=dict)
    # Copies withheld from a source (dropped ones), kept so that a replay can deliver them.
    withheld: dict[tuple[str, str], CopyIn] = field(default_factory=dict)
    # Copies re-published by a replay: (event_id, source) -> how many times.
    replayed: dict[tuple[str, str], int] = field(default_factory=dict)
    events: OrderedDict[str, float] = field(default_factory=OrderedDict)

    def missing(self) -> set[str]:
        """Events that must be declared MISSING: a dropped or a late copy."""
        return set(self.dropped) | set(self.delayed)

    def forget_oldest(self) -> None:
        event_id, _ = self.events.popitem(last=False)
        tables = (self.dropped, self.delayed, self.duplicated, self.corrupted, self.inconsistent)
        for table in tables:
            sources = table.pop(event_id, None)
            if table is self.dropped and sources:
                for source in sources:
                    self.withheld.pop((event_id, source), None)


class Traffic:
    """Generates copies in arrival order; every fault it injects is written in `truth`."""

    def __init__(
        self,
        options: TrafficOptions,
        sources: Sequence[str],
        routes: Sequence[RouteConfig] = (),
        window_seconds: float = 60.0,
        grace_seconds: float = 5.0,
        start: float = 0.0,
    ) -> None:
        self.options = options
        self.sources = list(options.sources or sources)
        unknown = [s for s in self.sources if s not in sources]
        if unknown:
            raise ValueError(f"sources: {unknown} are not in sources.names {list(sources)}")
        for scenario in options.scenarios:
            if scenario.source not in self.sources:
                raise ValueError(
                    f"scenarios: source {scenario.source!r} is not one of {self.sources}"
                )
        self.routes = list(routes)
        self.window = window_seconds
        self.grace = grace_seconds
        self.start = start
        self.rng = random.Random(options.seed)
        # Replays draw their latency from their own generator, so that a replay does not
        # change the traffic (and the faults) that follow it.
        self.replay_rng = random.Random(options.seed + 1)
        self.truth = Truth()
        self._next_event = start
        self._heap: list[tuple[float, int, CopyIn]] = []
        self._seq = 0
        self._count = 0
        self.run = f"{int(start):x}"  # in event ids; begin() sets it again
        self._expected: dict[str, list[str]] = {}

    def expected_sources(self, event_type: str) -> list[str]:
        found = self._expected.get(event_type)
        if found is None:
            route = route_for(self.routes, event_type)
            wanted = route.sources if route and route.sources else self.sources
            found = self._expected[event_type] = [s for s in self.sources if s in wanted]
        return found

    def _deadline_margin(self, event_type: str) -> float:
        route = route_for(self.routes, event_type)
        window = route.window_seconds if route and route.window_seconds else self.window
        grace = route.grace_seconds if route and route.grace_seconds is not None else self.grace
        return window + grace

    def _latency(self, source: str, minute: float, rng: random.Random | None = None) -> float:
        model = self.options.latency_ms.get(source) or LatencyModel()
        ms = model.median * math.exp((rng or self.rng).gauss(0.0, model.sigma))
        for scenario in self.options.scenarios:
            if scenario.kind == "latency" and scenario.source == source and scenario.active(minute):
                ms *= scenario.factor
        return min(ms, self.options.max_latency_ms) / 1000.0

    def _chance(self, kind: str, base: float, source: str, minute: float) -> bool:
        p = base
        for scenario in self.options.scenarios:
            if scenario.kind == kind and scenario.source == source and scenario.active(minute):
                p = max(p, scenario.probability)
        return p > 0 and self.rng.random() < p

    def _payload(self, event_id: str, event_type: str, n: int) -> dict[str, Any]:
        rng = self.rng
        return {
            "id": event_id,
            "type": event_type,
            "customer": f"c-{rng.randrange(100_000):05d}",
            "amount": round(rng.uniform(1, 500), 2),
            "currency": rng.choice(("EUR", "USD", "GBP")),
            "items": rng.randrange(1, 9),
            "seq": n,
        }

    def _produce(self, produced_at: float) -> None:
        opts = self.options
        rng = self.rng
        self._count += 1
        event_id = f"{opts.id_prefix}-{opts.seed}-{self.run}-{self._count:09d}"
        event_type = opts.event_types[self._count % len(opts.event_types)]
        body = self._payload(event_id, event_type, self._count)
        plain = _dumps(body)
        minute = (produced_at - self.start) / 60.0
        truth = self.truth
        truth.events[event_id] = produced_at
        if len(truth.events) > opts.truth_limit:
            truth.forget_oldest()
        expected = self.expected_sources(event_type)
        late_at = produced_at + (
            opts.delay_seconds
            if opts.delay_seconds is not None
            else self._deadline_margin(event_type) + opts.max_latency_ms / 1000.0 + 1.0
        )
        fates = []
        for source in expected:
            if self._chance("drop", opts.drop_probability, source, minute):
                fates.append("drop")
            elif self._chance("delay", opts.delay_probability, source, minute):
                fates.append("delay")
            else:
                fates.append("ok")
        if "ok" not in fates:
            fates[0] = "ok"  # an event nobody delivers in time is invisible, not MISSING
        delivered = 0
        for position, (source, fate) in enumerate(zip(expected, fates, strict=True)):
            if opts.reorder_keys and position % 2 == 1:
                payload = _dumps(dict(reversed(body.items())), orjson.OPT_INDENT_2)
            else:
                payload = plain
            copy: CopyIn = (event_id, source, event_type, produced_at, payload)
            if fate == "drop":
                truth.dropped.setdefault(event_id, set()).add(source)
                truth.withheld[(event_id, source)] = copy
                continue
            if self._chance("corrupt", opts.corrupt_probability, source, minute):
                altered = dict(body, amount=round(body["amount"] + rng.uniform(1, 50), 2))
                payload = _dumps(altered)
                copy = (event_id, source, event_type, produced_at, payload)
                truth.corrupted.setdefault(event_id, set()).add(source)
            if fate == "delay":
                arrival = late_at + rng.uniform(0, 1.0)
                truth.delayed.setdefault(event_id, set()).add(source)
            else:
                arrival = produced_at + self._latency(source, minute)
            self._push(arrival, copy)
            delivered += 1
            if self._chance("duplicate", opts.duplicate_probability, source, minute):
                self._push(arrival + rng.uniform(0.001, 0.5), copy)
                truth.duplicated.setdefault(event_id, set()).add(source)
        if delivered >= 2 and event_id in truth.corrupted:
            truth.inconsistent[event_id] = truth.corrupted[event_id]

    def begin(self, now: float) -> None:
        """Start the scenario's clock (its minutes count from here) and production.
        Event ids carry the start time, so that a restarted heliosd, which keeps what it
        stored, does not see this run's events as duplicates of the last run's."""
        self.start = self._next_event = now
        self.run = f"{int(now):x}"

    def replay(self, source: str, copies: Sequence[CopyIn], now: float) -> int:
        """Deliver copies again through `source`, each after its usual latency; the
        ground truth records every replayed copy, and whether it had been withheld."""
        minute = (now - self.start) / 60.0
        truth = self.truth
        for copy in copies:
            key = (copy[0], source)
            truth.replayed[key] = truth.replayed.get(key, 0) + 1
            truth.withheld.pop(key, None)
            replayed: CopyIn = (copy[0], source, copy[2], copy[3], copy[4])
            self._push(now + self._latency(source, minute, self.replay_rng), replayed)
        return len(copies)

    def _push(self, arrival: float, copy: CopyIn) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (arrival, self._seq, copy))

    def until(self, now: float, produce: bool = True) -> list[tuple[float, CopyIn]]:
        """Every copy that arrives by `now`, in arrival order (with produce=False, only
        copies of events already produced)."""
        rate = self.options.rate_per_second
        while produce and self._next_event <= now:
            self._produce(self._next_event)
            self._next_event += self.rng.expovariate(rate)
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            arrival, _, copy = heapq.heappop(heap)
            out.append((arrival, copy))
        return out

    def produce(self, count: int) -> None:
        """Produce `count` more events now-ish, without waiting for their arrival time."""
        for _ in range(count):
            self._produce(self._next_event)
            self._next_event += self.rng.expovariate(self.options.rate_per_second)

    def flush(self) -> list[tuple[float, CopyIn]]:
        """Every copy still in flight, in arrival order, producing no new events."""
        out = []
        while self._heap:
            arrival, _, copy = heapq.heappop(self._heap)
            out.append((arrival, copy))
        return out

    def pending(self) -> int:
        return len(self._heap)


class SimulatorSource:
    """Runs a Traffic model on the daemon's clock and publishes what arrives."""

    def __init__(self, context: SourceContext, options: TrafficOptions) -> None:
        self.context = context
        self.options = options
        self.traffic = Traffic(
            options,
            context.sources,
            context.routes,
            context.window_seconds,
            context.grace_seconds,
            start=context.clock.now(),
        )
        self.paused: set[str] = set()
        self.held: list[CopyIn] = []  # a paused source's copies wait, as on a real bus
        self._task: asyncio.Task[None] | None = None
        self.published = 0
        self.started = False
        self.restarts = 0

    def delivers(self, source: str) -> bool:
        return source in self.traffic.sources

    def replays(self, source: str) -> bool:
        return source in self.traffic.sources

    async def replay(self, source: str, copies: Sequence[CopyIn]) -> int:
        """Re-publish copies through `source`, as its bus would on a replay request:
        each arrives after the source's usual delivery latency. The ground truth records
        every replayed copy, and whether the simulator had withheld it."""
        return self.traffic.replay(source, copies, self.context.clock.now())

    async def start(self) -> None:
        if not self.started:  # a restart keeps the scenario schedule where it was
            self.traffic.begin(self.context.clock.now())
            self.started = True
        self._task = asyncio.create_task(self._run(), name=f"helios-sim-{self.context.name}")

    async def stop(self) -> None:
        self.restarts += 1
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def pause(self, source: str) -> None:
        self.paused.add(source)

    def resume(self, source: str) -> None:
        self.paused.discard(source)

    async def _run(self) -> None:
        clock = self.context.clock
        while True:
            await clock.sleep(self.options.tick_seconds)
            arrived = [copy for _, copy in self.traffic.until(clock.now())]
            ready = [c for c in self.held if c[1] not in self.paused]
            self.held = [c for c in self.held if c[1] in self.paused]
            for copy in arrived:
                (self.held if copy[1] in self.paused else ready).append(copy)
            await self._publish(ready)

    async def _publish(self, copies: list[CopyIn]) -> None:
        size = self.options.batch_size
        for start in range(0, len(copies), size):
            chunk = copies[start : start + size]
            while True:
                try:
                    result = await self.context.publish(chunk)
                    self.published += result.accepted
                    break
                except QueueFull:
                    await asyncio.sleep(0.05)  # real time: the queue drains in real time


def parse_options(options: Mapping[str, Any]) -> TrafficOptions:
    try:
        return TrafficOptions.model_validate(dict(options))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(problems) from None


def _factory(context: SourceContext, options: Mapping[str, Any]) -> Source:
    return SimulatorSource(context, parse_options(options))


@hookimpl(trylast=True)
def register_sources(register: Callable[[str, SourceFactory], None]) -> None:
    register("simulator", _factory)
