"""The Daemon: the composition root. Phase one, build(), reads and checks the config
and plugins and builds every part without touching a file; phase two, start(), opens
state and starts the pipeline, sources and jobs. Front-ends get `services` only."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from helios.daemon import __version__
from helios.daemon.admission import Admission
from helios.daemon.auditlog import AuditLog
from helios.daemon.bloom import DeliveryFilters, FilterStore
from helios.daemon.clock import Clock, ManualClock, make_clock
from helios.daemon.config import Config, ConfigError
from helios.daemon.deadletters import DeadLetters
from helios.daemon.detection import Detection
from helios.daemon.files import DataDirLock
from helios.daemon.housekeeping import Rates, schedule
from helios.daemon.jobs import Scheduler
from helios.daemon.loop import DecisionLoop
from helios.daemon.metrics import MetricsRollup
from helios.daemon.model import EventRecord
from helios.daemon.observe import Observability
from helios.daemon.oidc import guard_from
from helios.daemon.operator import Operator
from helios.daemon.pipeline import Pipeline
from helios.daemon.plugins import PluginManager, Registry, load
from helios.daemon.readmodels import ReadModels
from helios.daemon.reconciler import Reconciler
from helios.daemon.runtime import ActionRuntime
from helios.daemon.safety import Breakers, BreakerSettings
from helios.daemon.services import Services
from helios.daemon.shards import ShardedIndex
from helios.daemon.telemetry import Telemetry
from helios.daemon.tenants import scope_input
from helios.daemon.types import IndexBackend, IndexContext, PublishResult, Source, SourceContext
from helios.daemon.webhooks import Webhooks

log = logging.getLogger("helios.daemon")
SOURCE_MEMBERS = ("start", "stop", "pause", "resume", "delivers", "replays", "replay")


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
        try:
            shards = config.index.shards
            made = [
                backend.factory(
                    IndexContext(config.index, config.daemon.data_dir, self.clock, k, shards)
                )
                for k in range(shards)
            ]
            self.index: IndexBackend = made[0] if shards == 1 else ShardedIndex(made)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"index ({config.index.backend}): {exc}") from exc
        self.metrics = MetricsRollup(
            config.sources.names, config.reconcile.metrics_retention_minutes
        )
        self.reconciler = Reconciler(
            config.sources.names,
            config.routes,
            config.reconcile.window_seconds,
            config.reconcile.grace_seconds,
            self.metrics,
            config.reconcile.max_routes_cached,
        )
        bloom = config.index.bloom
        self.filter_store: FilterStore | None = None
        if bloom.enabled:
            self.reconciler.filters = DeliveryFilters(
                tuple(config.sources.names),
                bloom.capacity,
                bloom.error_rate,
                bloom.rotate_seconds,
                bloom.keep,
            )
            self.reconciler.aged_late_by = config.index.ttl_seconds
            self.filter_store = FilterStore(self.reconciler.filters, config.daemon.data_dir)
        self.pipeline = Pipeline(config, self.clock, self.reconciler, self.index, manager)
        self.index.when_refused(self.pipeline.refused)
        self.admission = Admission(
            self.pipeline, config.ingest.max_batch_events, config.ingest.stream_wait_seconds
        )
        if isinstance(self.index, ShardedIndex):
            self.admission.stored_already = self.index.stored_already
        self.detection = Detection(
            config.detectors, registry, self.metrics, self.clock, config.daemon.data_dir, manager
        )
        self.deadletters = DeadLetters(
            Path(config.daemon.data_dir),
            config.ingest.dead_letters_max,
            config.ingest.dead_letters_max_bytes,
        )
        self.webhooks = Webhooks(self.deadletters, config.ingest.max_webhook_deliveries)
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
                publish=self.admission.admit,
                submit=self.admission.submit,
                adopt=self.adopt,
                release=self.release,
                read_marks=self.index.read_marks,
                claim=self.index.claim,
                disown=self.index.disown,
                void=self.pipeline.void,
                shared=self.index.shared,
                away=self.index.away,
                max_batch=config.ingest.max_batch_events,
                watch=partial(self.pipeline.watch, None, 100_000),
                unwatch=self.pipeline.unwatch,
                serve=partial(self.webhooks.serve, name) if config.daemon.console_address else None,
                stats=self.webhooks.stats_of(name),
                dead_letter=partial(self.webhooks.dead_letter, name),
            )
            if spec.tenant:  # before the plugin sees the context: its copies are the tenant's
                scope_input(context, spec.tenant)
            try:
                instance = factory.factory(context, spec.options())
            except (ValueError, TypeError) as exc:
                raise ConfigError(f"sources.inputs.{name}: {exc}") from exc
            if not isinstance(instance, Source):
                lacking = [m for m in SOURCE_MEMBERS if not hasattr(instance, m)]
                raise ConfigError(
                    f"sources.inputs.{name}: plugin {plugin!r} made a source that lacks "
                    f"{', '.join(lacking)} (see helios.daemon.types.Source and SourceBase)"
                )
            if not getattr(instance, "counts_deliveries", False):
                _count_deliveries(context)  # each accepted copy is one delivery
            self.inputs[name] = instance
        held = [i.may_decide for i in self.inputs.values() if hasattr(i, "may_decide")]
        self.pipeline.may_apply = (lambda: all(h() for h in held)) if held else None
        self.rates = Rates(self.reconciler)
        self.jobs = Scheduler(self.clock)
        self.started_at = time.monotonic()
        self.ready = False
        self.partitioned = False  # a source shares the event ids with other members
        decision = config.decision
        self.breakers = Breakers(
            list(config.sources.names),
            BreakerSettings(
                failure_threshold=decision.breaker_failure_threshold,
                min_volume=decision.breaker_min_volume,
                window_seconds=decision.breaker_window_seconds,
                open_seconds=decision.breaker_open_seconds,
            ),
        )
        self.runtime = ActionRuntime(
            config.sources.names,
            self.clock,
            self.pipeline,
            self.reconciler,
            self.index,
            self.inputs,
            self.breakers,
            config.daemon.data_dir,
            config.index.tenant_ttl_seconds,
            {name: spec.tenant for name, spec in config.sources.inputs.items() if spec.tenant},
        )
        self.loop = DecisionLoop(
            decision,
            config.actions.options,
            registry,
            self.runtime,
            self.clock,
            config.daemon.data_dir,
            self.metrics,
            manager,
        )
        reads = ReadModels(self)
        self.telemetry = Telemetry.attach(self)
        try:
            guard = guard_from(config.security, config.daemon.data_dir)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.auditlog = AuditLog(Path(config.daemon.data_dir) / "audit.log")
        observe = Observability(self)
        self.services = Services(
            self.admission,
            reads,
            Operator(self, reads),
            guard,
            self.auditlog,
            self.webhooks,
            observe,
        )
        self.refused = self.services.refused
        self.lock = DataDirLock(config.daemon.data_dir)
        schedule(self)

    @classmethod
    def build(
        cls,
        config: Config,
        manager: PluginManager | None = None,
        registry: Registry | None = None,
        clock: Clock | None = None,
    ) -> Daemon:
        """Phase one: read and check the config and the plugins, and build every part.
        It touches no file: `heliosd check-config` runs exactly this."""
        if manager is None or registry is None:
            manager, registry = load(config.plugins.allow, config.plugins.deny)
        return cls(config, manager, registry, clock)

    async def start(self) -> None:
        """Phase two: open state (policy, audit trail, detector states, the record of
        replayed copies, the index), then start the pipeline, the sources and the jobs."""
        self.lock.acquire()
        # Bloom slices first: open() may replay a spill the store refuses (sets some aside).
        saved_filters = self.filter_store.load() if self.filter_store is not None else None
        try:
            resume = await self.index.open()
        except Exception:
            self.lock.release()
            raise
        self.partitioned = any(getattr(s, "partitioned", False) for s in self.inputs.values())
        self.pipeline.shared = self.index.shared if self.partitioned else None
        if resume.open_records and self.partitioned:
            log.info(
                "%d open windows in the index are left to the members that own them "
                "(a partitioned source adopts those of its partitions)",
                len(resume.open_records),
            )
        elif resume.open_records:
            saved = resume.saved_at
            shift = self.clock.now() - saved if saved is not None else 0.0
            self.reconciler.restore(resume.open_records, shift)
            log.info(
                "resumed %d open windows (deadlines moved by %.1f s)",
                len(resume.open_records),
                shift,
            )
        self.pipeline.sequence = max(self.pipeline.sequence, resume.last_sequence)
        if self.filter_store is not None:
            self._refill_filters(self.filter_store, saved_filters)
        self.runtime.open()
        self.auditlog.open()
        self.deadletters.open()
        self.detection.open()
        self.loop.open()
        self.pipeline.start()
        for name, source in self.inputs.items():
            try:
                await source.start()
            except Exception:
                log.exception("source input %s failed to start", name)
                raise
        self.jobs.start()
        self.started_at = time.monotonic()
        self.ready = True

    def announce(self, console_url: str) -> None:
        """Where the console serves (once it does): approval requests say where to go."""
        self.loop.approve_at = f"{console_url}/recovery"

    async def adopt(self, take: Callable[[str], float | None]) -> int:
        """SourceContext.adopt: the index's open windows `take` accepts, moved as it says."""
        ask = functools.cache(take)  # once an id (Kafka's partitioner: 2 µs each)
        records = await self.index.open_windows(lambda e: ask(e) is not None)
        now = self.clock.now()
        chosen: list[EventRecord] = []
        for rec in records:
            shift = ask(rec.event_id)
            if shift is None:
                continue
            if rec.deadline > now - shift:  # it had time left when work on it stopped
                rec.deadline += shift
            chosen.append(rec)
        async with self.pipeline.lock:
            return self.reconciler.adopt(chosen, 0.0)

    async def release(self, owns: Callable[[str], bool]) -> int:
        """SourceContext.release: open windows leave undecided (the index keeps them)."""
        await self.pipeline.settle()
        async with self.pipeline.lock:
            return len(self.reconciler.release(owns))

    def _refill_filters(self, store: FilterStore, saved_at: float | None) -> None:
        """Records the index holds that closed after the newest save of the Bloom
        slices (a kill -9 lost them from the filters) go in again."""
        records = self.index.resident
        if records is None or not self.index.durable:
            return
        since = float("-inf") if saved_at is None else saved_at - 3600.0
        filters = store.filters
        now = self.clock.now()
        again = 0
        for rec in records.values():
            if rec.first_seen >= since:
                filters.add(rec.event_id, rec.seen, now)
                again += 1
        if again:
            log.info("Bloom filters: %d records of the index added again", again)

    async def save_filters(self) -> str:
        """Write the Bloom filters if they changed, once what they hold is stored."""
        store = self.filter_store
        if store is None:
            return "off"
        return await store.save_stored(self.clock.now(), self.pipeline.stored_so_far)

    async def stop(self) -> None:
        self.ready = False
        for source in self.inputs.values():
            await source.stop()
        await self.jobs.stop()
        await self.loop.stop()
        await self.pipeline.drain()
        await self.pipeline.stop()
        self.detection.process()
        self.detection.save()
        await self.save_filters()
        await self.index.close()
        self.auditlog.close()
        self.deadletters.close()
        self.telemetry.shutdown()
        self.lock.release()

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


def _count_deliveries(context: SourceContext) -> None:
    """Count what an input that does not count its own deliveries (the simulator, Kafka)
    gets accepted, each copy as one delivery, in its InputStats."""
    stats, publish, submit = context.stats, context.publish, context.submit
    assert stats is not None

    async def counted_publish(*args: Any, **kwargs: Any) -> PublishResult:
        result: PublishResult = await publish(*args, **kwargs)
        if result.accepted:
            stats.delivered(result.accepted, result.accepted)
        return result

    context.publish = counted_publish
    if submit is not None:

        async def counted_submit(*args: Any, **kwargs: Any) -> tuple[PublishResult, Any]:
            result, stored = await submit(*args, **kwargs)
            if result.accepted:
                stats.delivered(result.accepted, result.accepted)
            return result, stored

        context.submit = counted_submit
