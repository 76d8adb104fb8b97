"""The Daemon: builds the reconciler, index, pipeline and sources from a Config."""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import os
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from helios.daemon import __version__
from helios.daemon.clock import Clock, ManualClock, make_clock
from helios.daemon.config import Config, ConfigError
from helios.daemon.detection import Detection
from helios.daemon.jobs import Scheduler
from helios.daemon.loop import DecisionLoop
from helios.daemon.metrics import MetricsRollup
from helios.daemon.model import CopyIn, EventRecord, OutcomeKind
from helios.daemon.pipeline import Pipeline
from helios.daemon.plugins import PluginManager, Registry
from helios.daemon.query import OutcomeQuery
from helios.daemon.reconciler import Reconciler
from helios.daemon.safety import Breakers, BreakerSettings
from helios.daemon.types import IndexContext, Source, SourceContext

log = logging.getLogger("helios.daemon")
REPLAYED_KEPT = 500_000  # replayed copies remembered per source


class UnknownSource(KeyError):
    """A source name that is not in sources.names."""


@dataclass(frozen=True)
class SourceStatus:
    source: str
    copies: int
    expected: int
    delivered: int
    completeness: float
    duplicates: int
    paused: bool


class Daemon:
    """Everything heliosd runs, minus the network front-ends (gRPC, console)."""

    def __init__(
        self,
        config: Config,
        manager: PluginManager,
        registry: Registry,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.manager = manager
        self.registry = registry
        self.clock = clock or make_clock(config.daemon.clock, config.daemon.clock_speed)
        self.version = __version__
        backend = registry.index_backends.get(config.index.backend)
        if backend is None:
            raise ConfigError(
                f"index.backend: unknown index backend {config.index.backend!r}; "
                f"loaded: {', '.join(sorted(registry.index_backends)) or 'none'}"
            )
        self.index = backend.factory(IndexContext(config.index, config.daemon.data_dir, self.clock))
        self.metrics = MetricsRollup(
            config.sources.names, config.reconcile.metrics_retention_minutes
        )
        self.reconciler = Reconciler(
            config.sources.names,
            config.routes,
            config.reconcile.window_seconds,
            config.reconcile.grace_seconds,
            self.metrics,
        )
        self.pipeline = Pipeline(config, self.clock, self.reconciler, self.index, manager)
        self.detection = Detection(
            config.detectors, registry, self.metrics, self.clock, config.daemon.data_dir, manager
        )
        self.inputs: dict[str, Source] = {}
        for name, spec in config.sources.inputs.items():
            if not spec.enabled:
                continue
            plugin = spec.plugin or name
            factory = registry.sources.get(plugin)
            if factory is None:
                raise ConfigError(
                    f"sources.inputs.{name}.plugin: unknown source plugin {plugin!r}; "
                    f"loaded: {', '.join(sorted(registry.sources)) or 'none'}"
                )
            context = SourceContext(
                name=name,
                sources=list(config.sources.names),
                routes=list(config.routes),
                window_seconds=config.reconcile.window_seconds,
                grace_seconds=config.reconcile.grace_seconds,
                clock=self.clock,
                publish=self.pipeline.publish,
            )
            try:
                self.inputs[name] = factory.factory(context, spec.options())
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"sources.inputs.{name}: {exc}") from exc
        self._rates: deque[tuple[float, int, int]] = deque(maxlen=120)
        self.errors: Counter[str] = Counter()  # refused API requests, by "Method:CODE"
        self.jobs = Scheduler(self.clock)
        self.started_at = time.monotonic()
        self.ready = False
        # ---- what recovery actions act on (the Runtime of helios.daemon.types) ----
        self.sources = list(config.sources.names)
        decision = config.decision
        self.breakers = Breakers(
            self.sources,
            BreakerSettings(
                failure_threshold=decision.breaker_failure_threshold,
                min_volume=decision.breaker_min_volume,
                window_seconds=decision.breaker_window_seconds,
                open_seconds=decision.breaker_open_seconds,
            ),
        )
        self.failed_over: set[str] = set()
        self.quarantined: OrderedDict[str, str] = OrderedDict()
        self.notifications: deque[tuple[float, str, str]] = deque(maxlen=500)
        self._replayed_path = Path(config.daemon.data_dir) / "decisions" / "replayed.log"
        # Replayed copies by source, oldest first (a dict as an ordered set), bounded: a
        # copy older than the index TTL cannot be replayed anyway.
        self.replayed: dict[str, dict[str, None]] = {s: {} for s in self.sources}
        self._replayed_lines = 0
        self._load_replayed()
        self.loop = DecisionLoop(
            decision,
            config.actions.options,
            registry,
            self,
            self.clock,
            config.daemon.data_dir,
            self.metrics,
            manager,
        )

    async def start(self) -> None:
        self.pipeline.start()
        for name, source in self.inputs.items():
            try:
                await source.start()
            except Exception:
                log.exception("source input %s failed to start", name)
                raise
        self._add_jobs()
        self.jobs.start()
        self.started_at = time.monotonic()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for source in self.inputs.values():
            await source.stop()
        await self.jobs.stop()
        await self.loop.stop()
        await self.pipeline.drain()
        await self.pipeline.stop()
        self.detection.process()
        await self.index.close()

    def _add_jobs(self) -> None:
        jobs = self.jobs
        if jobs.jobs:
            return
        jobs.add(
            "window-sweep",
            self.config.reconcile.sweep_interval_seconds,
            self._sweep,
            "declare MISSING for windows past window + grace; close metrics minutes",
        )
        jobs.add("index-ttl", 10.0, self._expire, "age records and outcomes out of the index")
        if self.detection.detectors:
            jobs.add("detection", 1.0, self._detect, "feed closed minutes to the detectors")
            jobs.add(
                "model-health",
                60.0,
                self._model_health,
                "check each detector's status",
                run_at_start=True,
            )
        decision = self.config.decision
        jobs.add(
            "mape-k",
            decision.cycle_seconds,
            self.loop.cycle,
            "MAPE-K cycle: decide on anomalies, expire approvals, follow up on replays",
        )
        jobs.add(
            "verify",
            1.0,
            self.loop.verify,
            "verify executed actions against what reconciliation observes",
        )
        jobs.add("breakers", 1.0, self._breakers, "update per-source circuit breakers")
        jobs.add(
            "weights",
            decision.weights_interval_seconds,
            self._weights,
            f"recompute criteria weights ({decision.weighting}) from the actions' record",
        )
        jobs.add(
            "rates",
            1.0,
            self._sample_rates,
            "sample counters for events/s and copies/s",
            wall_clock=True,
            run_at_start=True,
        )
        if self.config.daemon.gc_freeze_seconds > 0:
            jobs.add(
                "gc-freeze",
                self.config.daemon.gc_freeze_seconds,
                self._freeze_gc,
                "move live records out of the cyclic GC's reach",
                wall_clock=True,
                run_at_start=True,
            )

    async def _sweep(self) -> str:
        return f"{await self.pipeline.sweep()} windows declared MISSING"

    async def _expire(self) -> str:
        return f"{await self.index.expire(self.clock.now())} records expired"

    async def _detect(self) -> str:
        found = self.detection.process()
        self.loop.submit(found)
        return f"{len(found)} anomalies" if found else "no anomaly"

    async def _breakers(self) -> str:
        counters = {
            name: (c.expected, c.delivered)
            for name, c in zip(self.sources, self.reconciler.by_source, strict=True)
        }
        changed = self.breakers.observe(self.clock.now(), counters)
        for b in changed:
            self.notify("warning", f"breaker of {b.source} is {b.state}: {b.reason}")
        return ", ".join(f"{s}: {b.state}" for s, b in self.breakers.breakers.items())

    async def _weights(self) -> str:
        return self.loop.recalculate_weights()

    async def _model_health(self) -> str:
        return "; ".join(f"{name}: {text}" for name, text in self.detection.status().items())

    async def _sample_rates(self) -> str:
        r = self.reconciler
        self._rates.append((time.monotonic(), r.copies_received, r.events_seen))
        return "sampled"

    async def _freeze_gc(self) -> str:
        """Move live objects out of the cyclic GC's reach, on a schedule.

        Event records, copies and outcomes hold no reference cycles (refcounting frees
        them), yet with millions alive a full collection scans them all: about 0.9 s per
        3 million objects here, a pause in the middle of ingest. Freezing them keeps
        collections proportional to what is new. The cost: cyclic garbage that survives
        to a freeze is never collected; asyncio and gRPC make little of it.

        Not gc.get_freeze_count(): it walks the whole permanent generation, 100-270 ms
        with 5 million objects frozen, a stall of the event loop every run."""
        gc.collect(1)
        gc.freeze()
        return f"frozen; {gc.get_stats()[2]['collections']} full collections so far"

    def rates(self, window: float = 10.0) -> tuple[float, float]:
        """Copies/s and events/s over about the last `window` seconds of real time."""
        r = self.reconciler
        now = (time.monotonic(), r.copies_received, r.events_seen)
        older = [s for s in self._rates if now[0] - s[0] <= window + 0.5]
        if not older:
            return 0.0, 0.0
        t0, c0, e0 = older[0]
        span = now[0] - t0
        if span < 0.5:
            return 0.0, 0.0
        return (now[1] - c0) / span, (now[2] - e0) / span

    # ---- services used by the gRPC API and the console ----------------------------------
    async def get_event(self, event_id: str) -> EventRecord | None:
        record = self.reconciler.open.get(event_id)
        if record is not None:
            return record
        found = await self.index.get_many([event_id])
        return found.get(event_id)

    def source_status(self) -> list[SourceStatus]:
        out = []
        for name, counters in zip(
            self.config.sources.names, self.reconciler.by_source, strict=True
        ):
            completeness = counters.delivered / counters.expected if counters.expected else 1.0
            out.append(
                SourceStatus(
                    name,
                    counters.copies,
                    counters.expected,
                    counters.delivered,
                    completeness,
                    counters.duplicates,
                    name in self.pipeline.paused,
                )
            )
        return out

    def _check_source(self, source: str) -> None:
        if source not in self.config.sources.names:
            raise UnknownSource(source)

    def pause_source(self, source: str) -> SourceStatus:
        self._check_source(source)
        self.pipeline.paused.add(source)
        for instance in self.inputs.values():
            instance.pause(source)
        return next(s for s in self.source_status() if s.source == source)

    def resume_source(self, source: str) -> SourceStatus:
        self._check_source(source)
        self.pipeline.paused.discard(source)
        for instance in self.inputs.values():
            instance.resume(source)
        return next(s for s in self.source_status() if s.source == source)

    async def advance(self, seconds: float, step: float = 0.5) -> None:
        """On a ManualClock: move simulated time on in steps, letting the daemon's tasks
        (sources, pipeline, jobs, the decision loop) catch up after each one. Tests and
        `benchmarks/heal.py` replay scenarios with it."""
        clock = self.clock
        if not isinstance(clock, ManualClock):
            raise TypeError("advance() needs a ManualClock")
        end = clock.now() + seconds
        while clock.now() < end:
            clock.advance(step)
            for _ in range(30):
                await asyncio.sleep(0)
            while self.pipeline.queued:
                await asyncio.sleep(0)

    def uptime(self) -> float:
        return time.monotonic() - self.started_at

    # ---- the Runtime that recovery actions act through --------------------------------
    def _delivers(self, instance: Source, source: str) -> bool:
        delivers = getattr(instance, "delivers", None)
        return bool(delivers(source)) if callable(delivers) else True

    def source_inputs(self, source: str) -> list[str]:
        return [name for name, inst in self.inputs.items() if self._delivers(inst, source)]

    def _replayer(self, source: str) -> Source | None:
        if source in self.failed_over:
            return None
        for instance in self.inputs.values():
            if self._delivers(instance, source) and callable(getattr(instance, "replay", None)):
                return instance
        return None

    def can_replay(self, source: str) -> bool:
        return self._replayer(source) is not None

    async def replay(self, source: str, copies: Sequence[CopyIn]) -> int:
        instance = self._replayer(source)
        if instance is None:
            raise RuntimeError(f"no source input can publish through {source}")
        replay = getattr(instance, "replay")  # noqa: B009 - optional method of a Source
        return int(await replay(source, copies))

    def _load_replayed(self) -> None:
        try:
            with self._replayed_path.open(encoding="utf-8") as handle:
                for line in handle:
                    self._replayed_lines += 1
                    source, _, event_id = line.rstrip("\n").partition("\t")
                    if source in self.replayed and event_id:
                        self.replayed[source][event_id] = None
        except FileNotFoundError:
            return
        self._trim_replayed()

    def _trim_replayed(self) -> None:
        """Keep the newest REPLAYED_KEPT per source; rewrite the log when it has grown
        to twice what is kept."""
        for done in self.replayed.values():
            extra = len(done) - REPLAYED_KEPT
            if extra > 0:
                for event_id in list(itertools.islice(done, extra)):
                    del done[event_id]
        kept = sum(len(d) for d in self.replayed.values())
        if self._replayed_lines > 2 * kept + 10_000:
            tmp = self._replayed_path.with_suffix(".tmp")
            with tmp.open("w", encoding="utf-8") as handle:
                for source, done in self.replayed.items():
                    handle.writelines(f"{source}\t{e}\n" for e in done)
            os.replace(tmp, self._replayed_path)
            self._replayed_lines = kept

    def mark_replayed(self, source: str, event_ids: Sequence[str]) -> None:
        """Remember replayed copies (durably) so that none is replayed twice."""
        done = self.replayed[source]
        for event_id in event_ids:
            done[event_id] = None
        self._replayed_path.parent.mkdir(parents=True, exist_ok=True)
        with self._replayed_path.open("a", encoding="utf-8") as handle:
            handle.writelines(f"{source}\t{e}\n" for e in event_ids)
        self._replayed_lines += len(event_ids)
        self._trim_replayed()

    async def _outcome_ids(
        self, kind: OutcomeKind, source: str, since: float, limit: int
    ) -> list[str]:
        query = OutcomeQuery(kinds=frozenset({kind}), sources=frozenset({source}), since=since)
        ids: list[str] = []
        seen: set[str] = set()
        before: int | None = None
        while len(ids) < limit:
            page, before = await self.index.list_outcomes(query, 1000, before)
            for outcome in page:
                if outcome.event_id not in seen:
                    seen.add(outcome.event_id)
                    ids.append(outcome.event_id)
            if before is None:
                break
        return ids

    async def missing_copies(self, source: str, since: float, limit: int) -> list[CopyIn]:
        si = self.sources.index(source)
        bit = 1 << si
        done = self.replayed[source]
        ids = [
            e
            for e in await self._outcome_ids(OutcomeKind.MISSING, source, since, 10 * limit + 1000)
            if e not in done
        ]
        records = await self.index.get_many(ids)
        copies: list[CopyIn] = []
        for event_id in reversed(ids):  # oldest first
            rec = records.get(event_id) or self.reconciler.open.get(event_id)
            if rec is None or not rec.missing & bit or not rec.payload:
                continue
            produced = next((c[1] for c in rec.copies if c is not None), rec.first_seen)
            copies.append((event_id, source, rec.event_type, produced, rec.payload))
            if len(copies) >= limit:
                break
        return copies

    async def inconsistent_events(self, source: str, since: float, limit: int) -> list[str]:
        return await self._outcome_ids(OutcomeKind.INCONSISTENT, source, since, limit)

    async def restart_source(self, source: str) -> list[str]:
        restarted = []
        for name in self.source_inputs(source):
            instance = self.inputs[name]
            await instance.stop()
            await instance.start()
            restarted.append(name)
        return restarted

    def set_failover(self, source: str, failed: bool) -> None:
        self._check_source(source)
        (self.failed_over.add if failed else self.failed_over.discard)(source)
        self.reconciler.set_excluded(self.failed_over)
        self.notify("warning", f"{source} {'failed over' if failed else 'restored'}")

    def set_breaker(self, source: str, state: str, reason: str) -> None:
        self._check_source(source)
        b = self.breakers.set(source, state, reason, self.clock.now())
        self.notify("warning", f"breaker of {source} set to {state}: {reason} (now {b.state})")

    def breaker_state(self, source: str) -> str:
        return self.breakers.state(source)

    def set_throttle(self, source: str, per_second: float | None) -> None:
        self.pipeline.set_throttle(source, per_second)

    def quarantine(self, event_ids: Sequence[str], reason: str) -> int:
        added = 0
        for event_id in event_ids:
            if event_id not in self.quarantined:
                added += 1
            self.quarantined[event_id] = reason
        while len(self.quarantined) > 100_000:
            self.quarantined.popitem(last=False)
        return added

    def notify(self, level: str, message: str) -> None:
        self.notifications.append((self.clock.now(), level, message))
        log.warning("%s", message) if level != "info" else log.info("%s", message)
