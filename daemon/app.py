"""The Daemon: builds the reconciler, index, pipeline and sources from a Config."""

from __future__ import annotations

import gc
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass

from helios.daemon import __version__
from helios.daemon.clock import Clock, make_clock
from helios.daemon.config import Config, ConfigError
from helios.daemon.detection import Detection
from helios.daemon.jobs import Scheduler
from helios.daemon.metrics import MetricsRollup
from helios.daemon.model import EventRecord
from helios.daemon.pipeline import Pipeline
from helios.daemon.plugins import PluginManager, Registry
from helios.daemon.reconciler import Reconciler
from helios.daemon.types import IndexContext, Source, SourceContext

log = logging.getLogger("helios.daemon")


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
        return f"{len(found)} anomalies" if found else "no anomaly"

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
        to a freeze is never collected; asyncio and gRPC make little of it."""
        gc.collect(1)
        gc.freeze()
        return f"{gc.get_freeze_count():,} objects frozen"

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

    def uptime(self) -> float:
        return time.monotonic() - self.started_at
