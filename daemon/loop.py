"""The MAPE-K loop: monitor -> analyse -> diagnose -> plan (rank actions with MCDM) ->
execute under the safety policy -> verify by observation -> learn.

A cycle runs on a schedule (`decision.cycle_seconds`) and on every new anomaly. Each
decision is one trace: the anomaly, its diagnosis, the ranking (matrix, weights, every
alternative's score), the policy's verdict, the execution and its verified outcome.
The rooms: `plan` (catalogue, weights, ranking), `execute` (policy, retries,
approvals), `verify` (observation, learning) and `operator` (people's commands)."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from helios.daemon.audit import AuditLog, Decision
from helios.daemon.clock import Clock
from helios.daemon.config import DecisionConfig
from helios.daemon.detection import Anomaly
from helios.daemon.domain import AutomationMode, DecisionStatus, IssueKind
from helios.daemon.execute import Executor
from helios.daemon.metrics import MetricsRollup
from helios.daemon.plan import Planner
from helios.daemon.plugins import PluginManager, Registry
from helios.daemon.safety import PolicyState
from helios.daemon.types import ActionError, Runtime
from helios.daemon.verify import Verifier

ANOMALIES_KEPT = 5000


class DecisionLoop:
    def __init__(
        self,
        config: DecisionConfig,
        action_options: Mapping[str, Mapping[str, Any]],
        registry: Registry,
        runtime: Runtime,
        clock: Clock,
        data_dir: str,
        metrics: MetricsRollup,
        plugins: PluginManager | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.policy = PolicyState(data_dir)
        self.audit = AuditLog(data_dir)
        self.planner = Planner(config, action_options, registry, runtime, self.policy, data_dir)
        self.anomalies: dict[str, Anomaly] = {}
        self.verifier = Verifier(
            config, self.planner, self.audit, metrics, runtime, clock, self.anomalies.get, plugins
        )
        self.executor = Executor(
            config, self.planner, self.policy, self.audit, self.verifier, clock
        )
        self.pending: deque[Anomaly] = deque(maxlen=1000)
        self.handled: deque[tuple[float, str]] = deque(maxlen=1000)  # (minute, issue) decided
        self.incidents: dict[str, tuple[str, float]] = {}  # issue -> (trace id, last decision)
        self.cycles = 0
        self.approve_at = ""  # where people approve (the console's Recovery page), if served

    def open(self) -> None:
        """Read the policy, the audit trail and the actions' record back (start-up)."""
        self.policy.open()
        self.audit.open()
        self.planner.open()
        self.executor.open()

    async def stop(self) -> None:
        await self.executor.stop()

    def submit(self, anomalies: Sequence[Anomaly]) -> None:
        """New anomalies from detection: decided by the next cycle, started at once."""
        for anomaly in anomalies:
            self.pending.append(anomaly)
            self.anomalies[anomaly.id] = anomaly
        while len(self.anomalies) > ANOMALIES_KEPT:
            self.anomalies.pop(next(iter(self.anomalies)))
        if anomalies:
            self.executor.spawn(self.cycle(scheduled=False))

    async def cycle(self, scheduled: bool = True) -> str:
        async with self.executor.deciding:
            return await self._cycle(scheduled)

    async def verify(self) -> str:
        """Expire approvals past their time, then check running verifications."""
        self.executor.expire_approvals(self.clock.now())
        return await self.verifier.verify()

    async def _cycle(self, scheduled: bool) -> str:
        """One MAPE-K cycle: expire approvals, decide on new anomalies, follow up."""
        self.cycles += 1
        now = self.clock.now()
        expired = self.executor.expire_approvals(now)
        best: dict[tuple[float, str], Anomaly] = {}
        while self.pending:
            a = self.pending.popleft()
            key = (a.minute, str(a.diagnosis))
            current = best.get(key)
            if current is None or a.diagnosis.confidence > current.diagnosis.confidence:
                best[key] = a
        # One decision per minute and issue; an "unknown" only when nothing else was found.
        by_minute: dict[float, list[Anomaly]] = {}
        for a in best.values():
            by_minute.setdefault(a.minute, []).append(a)
        decided = 0
        for minute, found in sorted(by_minute.items()):
            # An "unknown" with no confidence is for people to read, not to act on: it
            # stays an anomaly and opens no decision (and so no approval).
            known = [a for a in found if a.diagnosis.kind is not IssueKind.UNKNOWN] or [
                a for a in found[:1] if a.diagnosis.confidence > 0
            ]
            for a in known:
                key = (minute, str(a.diagnosis))
                if key in self.handled:
                    continue
                self.handled.append(key)
                await self.decide(a)
                decided += 1
        follow = await self._follow_up(now) if scheduled else 0
        parts = [f"{decided} decisions"]
        if follow:
            parts.append(f"{follow} follow-ups")
        if expired:
            parts.append(f"{expired} approvals expired")
        return ", ".join(parts)

    async def decide(self, anomaly: Anomaly) -> Decision:
        executor, planner = self.executor, self.planner
        diag = anomaly.diagnosis
        # One incident, one trace: decisions on the same issue while it lasts share it.
        issue = str(diag)
        now = self.clock.now()
        trace = ""
        if (
            issue in self.incidents
            and now - self.incidents[issue][1] <= self.config.follow_up_seconds
        ):
            trace = self.incidents[issue][0]
        d = executor.new_decision(trace)
        if diag.kind is not IssueKind.UNKNOWN:
            self.incidents[issue] = (d.trace_id, now)
        d.anomaly_id, d.diagnosis, d.detected_at = anomaly.id, diag, anomaly.detected_at
        d.decided_by, d.update = "loop", anomaly.until > 0
        d.span(
            anomaly.detected_at,
            "anomaly",
            f"{anomaly.detector}: {anomaly.severity} at minute "
            f"{anomaly.minute:.0f}; {anomaly.explanation}",
        )
        d.span(
            now,
            "diagnosis",
            f"{diag} confidence {diag.confidence:.2f}: " + "; ".join(diag.evidence[:3]),
        )
        d.alternatives = planner.rank(diag)
        best = next((a for a in d.alternatives if a.rank == 1), None)
        table = ", ".join(f"{a.action}({a.target}) {a.score:.3f}" for a in d.alternatives if a.rank)
        d.span(
            now,
            "decision",
            f"{d.method} with {d.weighting} weights: {table or 'no eligible action'}",
        )
        if best is None:
            reasons = "; ".join(f"{a.action}: {a.reason}" for a in d.alternatives)
            return executor.settle(
                d, DecisionStatus.NOT_EXECUTED, f"no applicable action: {reasons or 'none'}"
            )
        d.chosen, d.target = best.action, best.target
        d.mode = planner.mode(best.action)
        if d.mode == AutomationMode.OBSERVE:
            return executor.settle(
                d, DecisionStatus.NOT_EXECUTED, "observe mode: decided, nothing executed"
            )
        settings = planner.entries[d.chosen].settings
        refusal = self.policy.refusal(d.chosen, d.target, settings, now)
        if refusal is not None:
            return executor.settle(d, DecisionStatus.NOT_EXECUTED, refusal)
        if d.mode == AutomationMode.APPROVE:
            waiting = executor.pending_for(d.chosen, d.target, now)
            if waiting is not None:  # one request for people per action and target
                return executor.settle(
                    d,
                    DecisionStatus.NOT_EXECUTED,
                    f"an approval of {d.chosen}({d.target}) is pending already: {waiting.id}",
                )
            ttl = self.config.approval_ttl_seconds
            d.expires_at = now + ttl
            return executor.settle(d, DecisionStatus.PENDING_APPROVAL, self._asking(d, ttl))
        await executor.execute(d)  # MTTR runs from detection (d.detected_at)
        return d

    def _asking(self, d: Decision, ttl: float) -> str:
        """An approval request, saying where to answer it and when it expires in wall
        time (on a simulated clock, the simulated ttl passes `speed` times faster)."""
        wall = ttl / self.clock.speed
        at = time.strftime("%H:%M:%S", time.gmtime(time.time() + wall))
        where = f"the console ({self.approve_at}) or " if self.approve_at else ""
        return (
            f"waiting for approval of {d.chosen}({d.target}): approve in {where}"
            f"`helios decisions approve {d.id}`; expires in {wall:g} s, at {at} UTC"
        )

    async def _follow_up(self, now: float) -> int:
        """Actions that follow up (Action.follows_up, e.g. a replay of missing copies)
        continue while an incident lasts: copies keep going missing until the fault
        ends. For each one the loop decided in the last `follow_up_seconds`, run it again
        on what is left, as a follow-up in the same trace."""
        executor, planner = self.executor, self.planner
        seen: set[tuple[str, str]] = set()
        count = 0
        horizon = now - self.config.follow_up_seconds
        for parent in reversed(executor.recent()):
            if parent.created_at < horizon:
                break
            key = (parent.chosen, parent.target)
            entry = planner.entries.get(parent.chosen)
            if (
                entry is None
                or not entry.action.follows_up
                or parent.status is not DecisionStatus.EXECUTED
                or parent.follow_up_of
                or parent.decided_by != "loop"
                or key in seen
            ):
                continue
            seen.add(key)
            context = planner.context(parent.chosen, parent.diagnosis)
            if planner.mode(parent.chosen) != AutomationMode.AUTO or entry.action.check(
                parent.target, context
            ):
                continue
            if self.policy.refusal(parent.chosen, parent.target, entry.settings, now):
                continue
            try:
                plan = await planner.plan(entry, parent.target, {}, parent.diagnosis)
            except ActionError:
                continue
            if plan.noop or plan.size == 0:
                continue
            d = executor.new_decision(parent.trace_id)
            d.follow_up_of = parent.id
            d.anomaly_id, d.diagnosis, d.detected_at = parent.anomaly_id, parent.diagnosis, now
            d.decided_by, d.mode = "loop", AutomationMode.AUTO.value
            d.method, d.weighting, d.weights = parent.method, parent.weighting, dict(parent.weights)
            d.alternatives = parent.alternatives
            d.chosen, d.target = parent.chosen, parent.target
            d.span(now, "decision", f"follow-up of {parent.id}: {plan.summary}")
            await executor.execute(d)
            count += 1
        return count
