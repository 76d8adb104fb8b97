"""The daemon's scheduled jobs: sweeping windows, ageing the index, detection, the
MAPE-K cycle and verification, breakers, weights, rate sampling and GC freezing. Each
is a small callback returning one line for `helios jobs` and the console's Jobs page."""

from __future__ import annotations

import gc
import time
from collections import deque
from typing import TYPE_CHECKING

from helios.daemon.reconciler import Reconciler

if TYPE_CHECKING:
    from helios.daemon.app import Daemon


class Rates:
    """Copies/s and events/s from counters sampled every second of real time."""

    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler
        self.samples: deque[tuple[float, int, int]] = deque(maxlen=120)

    def sample(self) -> None:
        r = self.reconciler
        self.samples.append((time.monotonic(), r.copies_received, r.events_seen))

    def per_second(self, window: float = 10.0) -> tuple[float, float]:
        """Copies/s and events/s over about the last `window` seconds."""
        r = self.reconciler
        now = (time.monotonic(), r.copies_received, r.events_seen)
        older = [s for s in self.samples if now[0] - s[0] <= window + 0.5]
        if not older:
            return 0.0, 0.0
        t0, c0, e0 = older[0]
        span = now[0] - t0
        if span < 0.5:
            return 0.0, 0.0
        return (now[1] - c0) / span, (now[2] - e0) / span


def freeze_gc() -> str:
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


def _yes() -> bool:
    return True


def schedule(d: Daemon) -> None:
    """Add every job of the daemon to its scheduler (started by Daemon.start)."""
    jobs, config = d.jobs, d.config

    async def sweep() -> str:
        # An input that cannot show it still holds its windows (a Kafka member frozen
        # past its session: helios.plugins.sources.kafka_lease) holds every decision.
        held = [n for n, i in d.inputs.items() if not getattr(i, "may_decide", _yes)()]
        if held:
            return f"held: {', '.join(held)} cannot show the group still gives it its windows"
        return f"{await d.pipeline.sweep()} windows declared MISSING"

    async def expire() -> str:
        now = d.clock.now()
        oldest = d.reconciler.oldest_open()
        removed = await d.index.expire(now, now if oldest is None else oldest)
        return f"{removed} records expired"

    async def detect() -> str:
        seen = d.detection.minutes_seen
        found = d.detection.process()
        updates, d.detection.updates = d.detection.updates, []
        d.loop.submit(found + updates)
        if d.detection.minutes_seen != seen:  # a new minute learnt: save it, off the loop
            d.detection.save_soon()
        return f"{len(found)} anomalies" if found else "no anomaly"

    async def model_health() -> str:
        return "; ".join(f"{name}: {text}" for name, text in d.detection.status().items())

    async def breakers() -> str:
        counters = {
            name: (c.expected, c.delivered)
            for name, c in zip(d.runtime.sources, d.reconciler.by_source, strict=True)
        }
        for b in d.breakers.observe(d.clock.now(), counters):
            d.runtime.notify("warning", f"breaker of {b.source} is {b.state}: {b.reason}")
        return ", ".join(f"{s}: {b.state}" for s, b in d.breakers.breakers.items())

    async def weights() -> str:
        return d.loop.planner.recalculate_weights()

    async def rates() -> str:
        d.rates.sample()
        return "sampled"

    async def telemetry() -> str:
        if d.telemetry.refresh is not None:
            await d.telemetry.refresh()
        return "snapshot taken for the OTLP export"

    async def gc_freeze() -> str:
        return freeze_gc()

    jobs.add(
        "window-sweep",
        config.reconcile.sweep_interval_seconds,
        sweep,
        "declare MISSING for windows past window + grace; close metrics minutes",
    )
    jobs.add("index-ttl", 10.0, expire, "age records and outcomes out of the index")
    if d.filter_store is not None:
        jobs.add(
            "bloom-save",
            300.0,
            d.save_filters,
            "write the Bloom filters if they changed, once the writes they cover are stored "
            "(from a thread); a restart adds back what the index holds that closed after "
            "the save",
            wall_clock=True,
        )
    if d.detection.detectors:
        jobs.add("detection", 1.0, detect, "feed closed minutes to the detectors")
        jobs.add(
            "model-health", 60.0, model_health, "check each detector's status", run_at_start=True
        )
    decision = config.decision
    jobs.add(
        "mape-k",
        decision.cycle_seconds,
        d.loop.cycle,
        "MAPE-K cycle: decide on anomalies, expire approvals, follow up on replays",
    )
    jobs.add(
        "verify", 1.0, d.loop.verify, "verify executed actions against what reconciliation observes"
    )
    jobs.add("breakers", 1.0, breakers, "update per-source circuit breakers")
    if config.slo.enabled:
        jobs.add("slo", 10.0, d.services.observe.tick, "count SLOs; check burn rates")
    otel = config.telemetry
    if otel.metrics and otel.otlp_endpoint:
        jobs.add(
            "telemetry",
            min(5.0, otel.otlp_interval_seconds),
            telemetry,
            "snapshot the counters the OpenTelemetry instruments read for OTLP",
            wall_clock=True,
        )
    jobs.add(
        "weights",
        decision.weights_interval_seconds,
        weights,
        f"recompute criteria weights ({decision.weighting}) from the actions' record",
    )
    jobs.add(
        "rates",
        1.0,
        rates,
        "sample counters for events/s and copies/s",
        wall_clock=True,
        run_at_start=True,
    )
    if config.daemon.gc_freeze_seconds > 0:
        jobs.add(
            "gc-freeze",
            config.daemon.gc_freeze_seconds,
            gc_freeze,
            "move live records out of the cyclic GC's reach",
            wall_clock=True,
            run_at_start=True,
        )
