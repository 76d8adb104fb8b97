"""Verify and learn: an executed action counts as a success only when reconciliation
shows it (the replayed copies arrive, or the issue's metric returns to its baseline in
a closed minute); the verdict, its MTTR and the QoS impact measured around the action
become the action's record, which the next ranking reads."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from helios.daemon.audit import AuditLog, Decision, Execution
from helios.daemon.clock import Clock
from helios.daemon.config import DecisionConfig
from helios.daemon.detection import Anomaly
from helios.daemon.domain import MetricKey, Verification
from helios.daemon.metrics import MetricsRollup
from helios.daemon.plan import Entry, Planner
from helios.daemon.plugins import PluginManager
from helios.daemon.types import ActionResult, Runtime


@dataclass
class Watch:
    """What one execution waits for: copies to arrive, or a metric to come back."""

    execution: Execution
    deadline: float
    pending: dict[str, set[int]] = field(default_factory=dict)  # event_id -> source indexes
    metric: MetricKey | None = None
    limit: float = 0.0
    after: float = 0.0  # only minutes starting at or after this count


class Verifier:
    def __init__(
        self,
        config: DecisionConfig,
        planner: Planner,
        audit: AuditLog,
        metrics: MetricsRollup,
        runtime: Runtime,
        clock: Clock,
        anomaly: Callable[[str], Anomaly | None],
        plugins: PluginManager | None = None,
    ) -> None:
        self.config = config
        self.planner = planner
        self.audit = audit
        self.metrics = metrics
        self.runtime = runtime
        self.clock = clock
        self.anomaly = anomaly
        self.plugins = plugins
        self.watching: dict[str, Watch] = {}

    def start(self, d: Decision, x: Execution, result: ActionResult) -> None:
        """Begin watching reconciliation for the effect of a finished execution."""
        now = self.clock.now()
        w = Watch(x, now + self.config.verify_timeout_seconds)
        if result.expect_copies:
            index = self.planner.source_index
            for event_id, source in result.expect_copies:
                w.pending.setdefault(event_id, set()).add(index[source])
            x.expected_copies = len(result.expect_copies)
            x.verification_detail = f"waiting for {x.expected_copies} copies to arrive"
        else:
            metric = d.diagnosis.metric()
            anomaly = self.anomaly(d.anomaly_id)
            baseline = anomaly.baselines.get(str(metric)) if anomaly and metric else None
            if metric is None or baseline is None:
                # An operator's request, or an issue without a baseline: nothing to watch.
                x.verification = Verification.NOT_APPLICABLE
                x.verification_detail = "no metric with a baseline to watch"
                if self.plugins is not None:
                    self.plugins.on_action_result(x)
                return
            mean, spread = baseline
            w.metric, w.limit, w.after = metric, mean + 3 * spread, x.finished_at
            x.verification_detail = f"waiting for {metric} <= {w.limit:.4g} in a closed minute"
        self.watching[x.id] = w

    async def _copies_arrived(self, w: Watch) -> bool:
        x = w.execution
        for event_id in list(w.pending):
            record = await self.runtime.get_event(event_id)
            if record is None:
                continue
            left = {i for i in w.pending[event_id] if record.copies[i] is None}
            if left:
                w.pending[event_id] = left
            else:
                del w.pending[event_id]
        x.seen_copies = x.expected_copies - sum(len(s) for s in w.pending.values())
        if w.pending:
            return False
        x.verification_detail = f"all {x.expected_copies} replayed copies arrived"
        return True

    def _metric_back(self, w: Watch) -> bool:
        assert w.metric is not None
        for m in self.metrics.query(w.after - 60.0):
            if m.minute + 60.0 <= w.after:
                continue
            value = m.value(w.metric)
            if value is not None and value <= w.limit:
                w.execution.verification_detail = (
                    f"{w.metric} = {value:.4g} in the minute of "
                    f"{time.strftime('%H:%M', time.gmtime(m.minute))} UTC, "
                    f"within the baseline (<= {w.limit:.4g})"
                )
                return True
        return False

    async def verify(self) -> str:
        """Check running verifications against what reconciliation observed."""
        now = self.clock.now()
        done = 0
        for xid, w in list(self.watching.items()):
            x = w.execution
            verdict: bool | None = None
            if w.pending:
                verdict = True if await self._copies_arrived(w) else None
            elif w.metric is not None:
                verdict = True if self._metric_back(w) else None
            if verdict is None and now >= w.deadline:
                verdict = False
                x.verification_detail = (
                    f"not verified within {self.config.verify_timeout_seconds:g} s: "
                    + (
                        f"{x.expected_copies - x.seen_copies} copies never arrived"
                        if w.pending
                        else f"{w.metric} stayed above {w.limit:.4g}"
                    )
                )
            if verdict is None:
                continue
            del self.watching[xid]
            done += 1
            self._conclude(x, verdict, now)
        return f"{done} verified, {len(self.watching)} watching"

    def _conclude(self, x: Execution, verdict: bool, now: float) -> None:
        x.verification = Verification.VERIFIED if verdict else Verification.FAILED
        x.verified_at = now
        start = x.detected_at or x.started_at
        x.mttr_seconds = round(now - start, 3) if verdict else 0.0
        d = self.audit.decisions.get(x.decision_id)
        if d is not None:
            d.outcome = x.verification.value
            d.mttr_seconds = x.mttr_seconds
            d.span(
                now,
                "verification",
                f"{x.id} {x.verification}: {x.verification_detail}"
                + (f"; MTTR {x.mttr_seconds:.1f} s" if verdict else ""),
            )
            self.audit.save_decision(d)
        self.audit.save_execution(x)
        self.learn(self.planner.entries[x.action], x, verdict)

    def measured_qos(self, x: Execution) -> float | None:
        """The share of good traffic lost around an action: events closed in the last
        minute before it started against the first minute after it finished (None until
        both minutes are closed)."""
        before = after = None
        for m in self.metrics.query(x.started_at - 180.0):
            if m.minute + 60.0 <= x.started_at:
                before = m.events_closed
            elif m.minute >= x.finished_at and after is None:
                after = m.events_closed
        if not before or after is None:
            return None
        return round(max(0.0, (before - after) / before), 4)

    def learn(self, entry: Entry, x: Execution, success: bool) -> None:
        """Add a verdict to the action's record and tell the observers."""
        measured = self.measured_qos(x)
        reported = x.details.get("qos_impact")
        qos = float(
            reported
            if reported is not None
            else measured
            if measured is not None
            else entry.action.defaults.qos_impact
        )
        x.details.setdefault("qos_impact_measured", measured)
        self.planner.record(entry, success, x.mttr_seconds if success else 0.0, qos)
        if self.plugins is not None:
            self.plugins.on_action_result(x)
