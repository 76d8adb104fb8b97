"""The MAPE-K loop: monitor -> analyse -> diagnose -> plan (rank actions with MCDM) ->
execute under the safety policy -> verify by observation -> learn.

A cycle runs on a schedule (`decision.cycle_seconds`) and on every new anomaly. Each
decision is one trace: the anomaly, its diagnosis, the ranking (matrix, weights, every
alternative's score), the policy's verdict, the execution and its verified outcome."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from helios.daemon.audit import Alternative, AuditLog, Decision, Execution
from helios.daemon.clock import Clock
from helios.daemon.config import ConfigError, DecisionConfig
from helios.daemon.detection import Anomaly
from helios.daemon.metrics import MetricsRollup
from helios.daemon.plugins import PluginManager, Registry
from helios.daemon.safety import MODES, ActionSettings, PolicyState, parse_settings
from helios.daemon.types import (
    CRITERIA,
    CRITERIA_TYPES,
    Action,
    ActionContext,
    ActionError,
    ActionPlan,
    ActionResult,
    Criteria,
    Runtime,
)

log = logging.getLogger("helios.loop")
PRIOR_RUNS = 5  # how many runs' worth of weight the configured estimates carry
HISTORY = 100  # verified runs kept per action
# Per-action policy defaults that differ from ActionSettings' (options override them).
DEFAULT_SETTINGS: dict[str, dict[str, Any]] = {
    "replay_missing": {"cooldown_seconds": 30.0, "max_per_hour": 120},
    "notify": {"cooldown_seconds": 600.0},
}


@dataclass
class ActionStats:
    """The last HISTORY verified runs of an action: (success, mttr_seconds, qos_impact)."""

    runs: deque[tuple[bool, float, float]] = field(default_factory=lambda: deque(maxlen=HISTORY))

    def estimate(self, prior: Criteria) -> Criteria:
        n = len(self.runs)
        if n == 0:
            return prior
        k = PRIOR_RUNS
        ok = [r for r in self.runs if r[0]]
        success = (k * prior.success_rate + len(ok)) / (k + n)
        mttr = (k * prior.mttr_seconds + sum(r[1] for r in ok)) / (k + len(ok))
        qos = (k * prior.qos_impact + sum(r[2] for r in self.runs)) / (k + n)
        return Criteria(mttr, qos, success, prior.cost)


@dataclass
class Entry:
    name: str
    action: Action
    plugin: str
    settings: ActionSettings
    options: dict[str, Any]
    stats: ActionStats = field(default_factory=ActionStats)

    def criteria(self) -> Criteria:
        return self.stats.estimate(self.action.defaults)


@dataclass
class Verifier:
    execution: Execution
    deadline: float
    pending: dict[str, set[int]] = field(default_factory=dict)  # event_id -> source indexes
    metric: str = ""
    limit: float = 0.0
    after: float = 0.0  # only minutes starting at or after this count


def metric_for(diagnosis: Mapping[str, Any]) -> str:
    """The metric whose return to baseline shows that an issue is over."""
    kind, target = diagnosis.get("kind", ""), diagnosis.get("target", "")
    if kind in ("missing_events", "source_degraded"):
        return f"missing_rate:{target}"
    if kind == "duplicate_storm":
        return f"duplicate_rate:{target}"
    if kind == "inconsistent_payloads":
        return f"inconsistent_rate:{target}"
    if kind == "high_latency" and "-" in target:
        a, b = target.split("-", 1)
        return f"latency_{a}_{b}_ms"
    if kind == "system_failure":
        return "missing_rate"
    return ""


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
        self.runtime = runtime
        self.clock = clock
        self.metrics = metrics
        self.plugins = plugins
        self.source_index = {s: i for i, s in enumerate(runtime.sources)}
        method = registry.mcdm_methods.get(config.method)
        if method is None:
            raise ConfigError(
                f"decision.method: unknown MCDM method {config.method!r}; "
                f"loaded: {', '.join(sorted(registry.mcdm_methods)) or 'none'}"
            )
        self.method = method.factory
        weighting = registry.weighting_methods.get(config.weighting)
        if config.weighting != "config" and weighting is None:
            raise ConfigError(
                f"decision.weighting: unknown weighting method {config.weighting!r}; "
                f"loaded: config, {', '.join(sorted(registry.weighting_methods))}"
            )
        self.weighting = weighting.factory if weighting else None
        unknown = set(action_options) - set(registry.actions)
        if unknown:
            raise ConfigError(
                f"actions.options: {sorted(unknown)} are not actions; "
                f"loaded: {', '.join(sorted(registry.actions))}"
            )
        self.entries: dict[str, Entry] = {}
        for name, registered in registry.actions.items():
            options = {**DEFAULT_SETTINGS.get(name, {}), **action_options.get(name, {})}
            try:
                settings = parse_settings(name, options)  # names the key itself
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
            try:
                action = registered.factory(options)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"actions.options.{name}: {exc}") from exc
            self.entries[name] = Entry(name, action, registered.plugin, settings, options)
        self.dir = Path(data_dir) / "decisions"
        self.policy = PolicyState(data_dir)
        self.audit = AuditLog(data_dir)
        self._load_stats()
        self.config_weights = dict(config.weights) or dict.fromkeys(CRITERIA, 1 / len(CRITERIA))
        self.weights = dict(self.config_weights)
        self.weights_note = "config"
        self.recalculate_weights()
        self.pending: deque[Anomaly] = deque(maxlen=1000)
        self.handled: deque[tuple[float, str]] = deque(maxlen=1000)  # (minute, issue) decided
        self.verifying: dict[str, Verifier] = {}
        self.anomalies: dict[str, Anomaly] = {}
        self.incidents: dict[str, tuple[str, float]] = {}  # issue -> (trace id, last decision)
        self._tasks: set[asyncio.Task[None]] = set()
        # Deciding (policy check, plan, start) is one step at a time: two cycles, or a
        # cycle and an operator, must not both pass a check before either starts.
        self._deciding = asyncio.Lock()
        self.cycles = 0
        for execution_id in self.policy.interrupted:
            x = self.audit.executions.get(execution_id)
            if x is not None and x.status == "running":
                x.status, x.error = "interrupted", "heliosd stopped while it ran"
                x.verification = "failed"
                self.audit.save_execution(x)
        if self.policy.interrupted:
            self.policy.save()

    # ---- knowledge -----------------------------------------------------------------
    def _load_stats(self) -> None:
        path = self.dir / "stats.json"
        if not path.exists():
            return
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            for name, runs in data.items():
                if name in self.entries:
                    self.entries[name].stats.runs.extend(
                        (bool(s), float(m), float(q)) for s, m, q in runs
                    )
        except (OSError, ValueError, TypeError) as exc:
            log.warning("action history in %s not restored: %s", path, exc)

    def _save_stats(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        data = {name: list(e.stats.runs) for name, e in self.entries.items() if e.stats.runs}
        tmp = self.dir / "stats.tmp"
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, self.dir / "stats.json")

    def recalculate_weights(self) -> str:
        """Weights: manual (SetWeights) > the weighting method over every action's
        current estimates > config."""
        if self.policy.weights:
            self.weights, self.weights_note = dict(self.policy.weights), "manual"
            return "manual weights in force"
        if self.weighting is None:
            self.weights, self.weights_note = dict(self.config_weights), "config"
            return "config weights"
        matrix = np.array([e.criteria().row() for e in self.entries.values()])
        try:
            values = np.asarray(self.weighting(matrix, np.array(CRITERIA_TYPES)), dtype=float)
        except ValueError as exc:
            self.weights, self.weights_note = dict(self.config_weights), "config"
            return f"{self.config.weighting} failed ({exc}); config weights"
        self.weights = {c: float(w) for c, w in zip(CRITERIA, values, strict=True)}
        self.weights_note = self.config.weighting
        return ", ".join(f"{c} {w:.3f}" for c, w in self.weights.items())

    def set_weights(self, weights: Mapping[str, float] | None) -> dict[str, float]:
        if weights:
            unknown = set(weights) - set(CRITERIA)
            if unknown:
                raise ActionError("weights", f"unknown criteria {sorted(unknown)}; use {CRITERIA}")
            values = {c: float(weights.get(c, 0.0)) for c in CRITERIA}
            if any(v < 0 or v != v for v in values.values()):
                raise ActionError("weights", "weights must be >= 0")
            total = sum(values.values())
            if total <= 0:
                raise ActionError("weights", "weights must not all be 0")
            self.policy.weights = {c: v / total for c, v in values.items()}
        else:
            self.policy.weights = None
        self.policy.save()
        self.recalculate_weights()
        return self.weights

    def mode(self, action: str) -> str:
        entry = self.entries[action]
        return self.policy.mode(action, entry.settings, self.config.automation)

    def set_mode(self, mode: str, action: str = "") -> None:
        if mode not in MODES and not (action and mode == ""):
            raise ActionError("mode", f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if action:
            if action not in self.entries:
                raise ActionError("action", f"unknown action {action!r}", "not_found")
            if mode:
                self.policy.action_modes[action] = mode
            else:
                self.policy.action_modes.pop(action, None)
        else:
            self.policy.mode_override = mode
        self.policy.save()

    def context(self, name: str, diagnosis: Mapping[str, Any] | None = None) -> ActionContext:
        return ActionContext(self.entries[name].options, self.runtime, dict(diagnosis or {}))

    # ---- analyse and plan ------------------------------------------------------------
    def rank(self, diagnosis: Mapping[str, Any]) -> list[Alternative]:
        """Every action that applies to the issue, its best target, and the ranking."""
        kind = str(diagnosis.get("kind", ""))
        target = str(diagnosis.get("target", "")) or "all"
        targets = [target]
        if "-" in target:  # a pair: its sources too
            targets += [t for t in target.split("-") if t in self.source_index]
        alternatives: list[Alternative] = []
        for name, entry in self.entries.items():
            kinds = entry.action.issue_kinds
            if kind not in kinds and "*" not in kinds:
                continue
            if not entry.settings.enabled:
                continue
            reasons = []
            chosen = None
            for t in targets:
                problem = entry.action.check(t, self.context(name, diagnosis))
                if problem is None:
                    chosen = t
                    break
                reasons.append(problem)
            criteria = dict(zip(CRITERIA, entry.criteria().row(), strict=True))
            alternatives.append(
                Alternative(
                    name,
                    chosen or target,
                    {k: round(v, 4) for k, v in criteria.items()},
                    chosen is not None,
                    "" if chosen else "; ".join(reasons),
                )
            )
        eligible = [a for a in alternatives if a.eligible]
        if len(eligible) == 1:
            eligible[0].score, eligible[0].rank = 1.0, 1
        elif eligible:
            matrix = np.array([[a.criteria[c] for c in CRITERIA] for a in eligible])
            weights = np.array([self.weights[c] for c in CRITERIA])
            try:
                scores = np.asarray(self.method(matrix, weights, np.array(CRITERIA_TYPES)))
            except ValueError as exc:  # e.g. an all-zero column: fall back to plain WSM
                log.warning(
                    "%s could not rank (%s); falling back to sum-WSM", self.config.method, exc
                )
                span = matrix.max(axis=0) - matrix.min(axis=0)
                span[span == 0] = 1.0
                norm = (matrix - matrix.min(axis=0)) / span
                norm[:, np.array(CRITERIA_TYPES) < 0] = 1 - norm[:, np.array(CRITERIA_TYPES) < 0]
                scores = norm @ weights
            order = np.argsort(-scores, kind="stable")
            for rank, i in enumerate(order, start=1):
                eligible[i].score = round(float(scores[i]), 6)
                eligible[i].rank = rank
        alternatives.sort(key=lambda a: (a.rank == 0, a.rank, a.action))
        return alternatives

    # ---- the cycle -----------------------------------------------------------------
    def submit(self, anomalies: Sequence[Anomaly]) -> None:
        """New anomalies from detection: decided by the next cycle, started at once."""
        for anomaly in anomalies:
            self.pending.append(anomaly)
            self.anomalies[anomaly.id] = anomaly
        while len(self.anomalies) > 5000:
            self.anomalies.pop(next(iter(self.anomalies)))
        if anomalies:
            self._spawn(self.cycle(scheduled=False))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cycle(self, scheduled: bool = True) -> str:
        async with self._deciding:
            return await self._cycle(scheduled)

    async def _cycle(self, scheduled: bool) -> str:
        """One MAPE-K cycle: expire approvals, decide on new anomalies, follow up."""
        self.cycles += 1
        now = self.clock.now()
        expired = self._expire_approvals(now)
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
            known = [a for a in found if a.diagnosis.kind != "unknown"] or found[:1]
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

    def _new_decision(self, trace_id: str = "") -> Decision:
        return Decision(
            id=self.audit.next_id("d"),
            trace_id=trace_id or uuid.uuid4().hex[:16],
            created_at=self.clock.now(),
            method=self.config.method,
            weighting=self.weights_note,
            weights=dict(self.weights),
        )

    async def decide(self, anomaly: Anomaly) -> Decision:
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
        d = self._new_decision(trace)
        if diag.kind != "unknown":
            self.incidents[issue] = (d.trace_id, now)
        d.anomaly_id = anomaly.id
        d.diagnosis = {
            "kind": diag.kind,
            "target": diag.target,
            "confidence": diag.confidence,
            "evidence": list(diag.evidence),
            "onset": diag.onset,
            "detected_at": anomaly.detected_at,
            "minute": anomaly.minute,
        }
        d.decided_by = "loop"
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
        d.alternatives = self.rank(d.diagnosis)
        best = next((a for a in d.alternatives if a.rank == 1), None)
        table = ", ".join(f"{a.action}({a.target}) {a.score:.3f}" for a in d.alternatives if a.rank)
        d.span(
            now,
            "decision",
            f"{d.method} with {d.weighting} weights: {table or 'no eligible action'}",
        )
        if best is None:
            reasons = "; ".join(f"{a.action}: {a.reason}" for a in d.alternatives)
            return self._settle(d, "not_executed", f"no applicable action: {reasons or 'none'}")
        d.chosen, d.target = best.action, best.target
        d.mode = self.mode(best.action)
        if d.mode == "observe":
            return self._settle(d, "not_executed", "observe mode: decided, nothing executed")
        refusal = self.policy.refusal(d.chosen, d.target, self.entries[d.chosen].settings, now)
        if refusal is not None:
            return self._settle(d, "not_executed", refusal)
        if d.mode == "approve":
            waiting = self._pending_for(d.chosen, d.target, now)
            if waiting is not None:  # one request for people per action and target
                return self._settle(
                    d,
                    "not_executed",
                    f"an approval of {d.chosen}({d.target}) is pending already: {waiting.id}",
                )
            d.expires_at = now + self.config.approval_ttl_seconds
            ttl = self.config.approval_ttl_seconds
            return self._settle(
                d, "pending_approval", f"waiting for approval; expires in {ttl:g} s"
            )
        # MTTR runs from detection.
        await self._execute(d, anomaly.detected_at)
        return d

    def _settle(self, d: Decision, status: str, reason: str) -> Decision:
        """Record the policy's verdict on a decision that does not execute (now)."""
        d.status, d.reason = status, reason
        d.span(self.clock.now(), "policy", reason)
        self.audit.save_decision(d)
        return d

    def _params(self, d: Decision) -> dict[str, str]:
        kind = str(d.diagnosis.get("kind", ""))
        diagnosis = "" if kind in ("", "manual") else f"{kind}({d.diagnosis.get('target', '')})"
        return {"trace_id": d.trace_id, "decision_id": d.id, "diagnosis": diagnosis}

    async def _plan(
        self,
        entry: Entry,
        target: str,
        params: Mapping[str, str],
        diagnosis: Mapping[str, Any] | None = None,
    ) -> ActionPlan:
        limited = {**params, "_limit": str(entry.settings.blast_radius + 1)}
        plan = await entry.action.plan(target, limited, self.context(entry.name, diagnosis))
        cap = entry.settings.blast_radius
        if plan.size > cap:
            raise ActionError(
                "params",
                f"{entry.name} on {target} would touch at least {plan.size} items, over the "
                f"blast-radius cap of {cap} (actions.options.{entry.name}.blast_radius)",
                "blast_radius",
            )
        return plan

    async def _execute(
        self,
        d: Decision,
        detected_at: float,
        params: Mapping[str, str] | None = None,
        dry_run: bool = False,
        planned: ActionPlan | None = None,
    ) -> Execution | None:
        entry = self.entries[d.chosen]
        now = self.clock.now()
        params = {**self._params(d), **(params or {})}
        try:
            plan = planned or await self._plan(entry, d.target, params, d.diagnosis)
        except ActionError as exc:
            self._settle(d, "not_executed", f"{exc.code}: {exc}")
            if d.decided_by != "loop":
                raise
            return None
        if plan.noop and not dry_run:
            self._settle(d, "not_executed", f"nothing to do: {plan.summary}")
            if d.decided_by != "loop":
                raise ActionError("target", d.reason, "precondition")
            return None
        x = Execution(
            id=self.audit.next_id("x"),
            decision_id=d.id,
            trace_id=d.trace_id,
            action=entry.name,
            target=d.target,
            params={k: v for k, v in params.items() if not k.startswith("_")},
            dry_run=dry_run,
            plan=plan.summary,
            size=plan.size,
            started_at=now,
            detected_at=detected_at,
        )
        d.execution_ids.append(x.id)
        if dry_run:
            x.status, x.verification, x.finished_at = "dry_run", "not_applicable", now
            x.result = f"dry run: would {plan.summary}"
            d.status, d.reason = "dry_run", x.result
            d.span(now, "execution", x.result)
            self.audit.save_execution(x)
            self.audit.save_decision(d)
            return x
        d.status = "executed"
        d.span(now, "execution", f"{x.id} started: {plan.summary}")
        self.policy.started(x.id, entry.name, d.target, now)
        self.audit.save_execution(x)
        self.audit.save_decision(d)
        self._spawn(self._run(d, x, entry, plan, params))
        return x

    async def _run(
        self, d: Decision, x: Execution, entry: Entry, plan: ActionPlan, params: Mapping[str, str]
    ) -> None:
        settings = entry.settings
        result: ActionResult | None = None
        timed_out = False
        try:
            for attempt in range(settings.retries + 1):
                x.attempts = attempt + 1
                timed_out = False  # the last attempt's fate names the status
                if attempt:
                    await self.clock.sleep(settings.backoff_seconds * 2 ** (attempt - 1))
                    plan = await self._plan(entry, x.target, params, d.diagnosis)  # moved on
                try:
                    result = await asyncio.wait_for(
                        entry.action.execute(plan, self.context(entry.name)),
                        settings.timeout_seconds / getattr(self.clock, "speed", 1.0),
                    )
                except TimeoutError:
                    timed_out = True
                    x.error = (
                        f"attempt {attempt + 1} timed out after {settings.timeout_seconds:g} s"
                    )
                    result = None
                    continue
                except ActionError as exc:
                    x.error = f"attempt {attempt + 1}: {exc}"
                    result = None
                    break
                except Exception as exc:
                    log.exception("action %s failed", entry.name)
                    x.error = f"attempt {attempt + 1}: {type(exc).__name__}: {exc}"
                    result = None
                    continue
                if result.ok:
                    break
                x.error = f"attempt {attempt + 1}: {result.summary}"
        finally:
            self.policy.finished(x.id)
        now = self.clock.now()
        x.finished_at = now
        if result is not None:
            x.result, x.details = result.summary, dict(result.details)
        if result is None or not result.ok:
            x.status = "timed_out" if timed_out else "failed"
            x.verification, x.verification_detail = "failed", "the action did not complete"
            d.span(now, "execution", f"{x.id} {x.status}: {x.error}")
            self._learn(entry, x, False)
        else:
            x.status, x.error = "succeeded", ""
            d.span(now, "execution", f"{x.id} done: {result.summary}")
            self._start_verification(d, x, result)
        self.audit.save_execution(x)
        self.audit.save_decision(d)

    # ---- verify and learn ----------------------------------------------------------
    def _start_verification(self, d: Decision, x: Execution, result: ActionResult) -> None:
        now = self.clock.now()
        v = Verifier(x, now + self.config.verify_timeout_seconds)
        if result.expect_copies:
            for event_id, source in result.expect_copies:
                v.pending.setdefault(event_id, set()).add(self.source_index[source])
            x.expected_copies = len(result.expect_copies)
            x.verification_detail = f"waiting for {x.expected_copies} copies to arrive"
        else:
            metric = metric_for(d.diagnosis)
            anomaly = self.anomalies.get(d.anomaly_id)
            baseline = anomaly.baselines.get(metric) if anomaly else None
            if not metric or baseline is None:
                # An operator's request, or an issue without a baseline: nothing to watch.
                x.verification = "not_applicable"
                x.verification_detail = "no metric with a baseline to watch"
                if self.plugins is not None:
                    self.plugins.on_action_result(x)
                return
            mean, spread = baseline
            v.metric, v.limit, v.after = metric, mean + 3 * spread, x.finished_at
            x.verification_detail = f"waiting for {metric} <= {v.limit:.4g} in a closed minute"
        self.verifying[x.id] = v

    async def verify(self) -> str:
        """Check running verifications against what reconciliation observed."""
        now = self.clock.now()
        self._expire_approvals(now)
        done = 0
        for xid, v in list(self.verifying.items()):
            x = v.execution
            verdict: bool | None = None
            if v.pending:
                for event_id in list(v.pending):
                    record = await self.runtime_record(event_id)
                    if record is None:
                        continue
                    left = {i for i in v.pending[event_id] if record.copies[i] is None}
                    if left:
                        v.pending[event_id] = left
                    else:
                        del v.pending[event_id]
                x.seen_copies = x.expected_copies - sum(len(s) for s in v.pending.values())
                if not v.pending:
                    verdict = True
                    x.verification_detail = f"all {x.expected_copies} replayed copies arrived"
            elif v.metric:
                for m in self.metrics.query(v.after - 60.0):
                    if m.minute + 60.0 <= v.after:
                        continue
                    value = _metric_value(m, v.metric)
                    if value is not None and value <= v.limit:
                        verdict = True
                        x.verification_detail = (
                            f"{v.metric} = {value:.4g} in the minute from {m.minute:.0f}, "
                            f"within the baseline (<= {v.limit:.4g})"
                        )
                        break
            if verdict is None and now >= v.deadline:
                verdict = False
                x.verification_detail = (
                    f"not verified within {self.config.verify_timeout_seconds:g} s: "
                    + (
                        f"{x.expected_copies - x.seen_copies} copies never arrived"
                        if v.pending
                        else f"{v.metric} stayed above {v.limit:.4g}"
                    )
                )
            if verdict is None:
                continue
            del self.verifying[xid]
            done += 1
            x.verification = "verified" if verdict else "failed"
            x.verified_at = now
            start = x.detected_at or x.started_at
            x.mttr_seconds = round(now - start, 3) if verdict else 0.0
            d = self.audit.decisions.get(x.decision_id)
            if d is not None:
                d.outcome = x.verification
                d.mttr_seconds = x.mttr_seconds
                d.span(
                    now,
                    "verification",
                    f"{x.id} {x.verification}: {x.verification_detail}"
                    + (f"; MTTR {x.mttr_seconds:.1f} s" if verdict else ""),
                )
                self.audit.save_decision(d)
            self.audit.save_execution(x)
            self._learn(self.entries[x.action], x, verdict)
        return f"{done} verified, {len(self.verifying)} watching"

    async def runtime_record(self, event_id: str) -> Any:
        getter = getattr(self.runtime, "get_event", None)
        return await getter(event_id) if getter else None

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

    def _learn(self, entry: Entry, x: Execution, success: bool) -> None:
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
        mttr = x.mttr_seconds if success else 0.0
        entry.stats.runs.append((success, mttr, qos))
        self._save_stats()
        if self.plugins is not None:
            self.plugins.on_action_result(x)

    # ---- approvals, manual triggers, follow-ups ---------------------------------------
    def _expire_approvals(self, now: float) -> int:
        expired = 0
        for d in list(self.audit.decisions.values())[-500:]:
            if d.status == "pending_approval" and now >= d.expires_at:
                self._settle(
                    d, "expired", "approval expired: treated as rejected, nothing executed"
                )
                expired += 1
        return expired

    def _pending_for(self, action: str, target: str, now: float) -> Decision | None:
        for d in reversed(list(self.audit.decisions.values())[-500:]):
            if (
                d.status == "pending_approval"
                and d.expires_at > now
                and (d.chosen, d.target) == (action, target)
            ):
                return d
        return None

    def _pending(self, decision_id: str) -> Decision:
        d = self.audit.decisions.get(decision_id)
        if d is None:
            raise ActionError("id", f"no decision {decision_id!r}", "not_found")
        self._expire_approvals(self.clock.now())
        if d.status != "pending_approval":
            raise ActionError(
                "id", f"decision {decision_id} is {d.status}, not pending approval", "precondition"
            )
        return d

    async def approve(self, decision_id: str, by: str) -> Decision:
        async with self._deciding:
            return await self._approve(decision_id, by)

    async def _approve(self, decision_id: str, by: str) -> Decision:
        d = self._pending(decision_id)
        now = self.clock.now()
        d.decided_by = by or "operator"
        d.span(now, "policy", f"approved by {d.decided_by}")
        entry = self.entries[d.chosen]
        refusal = self.policy.refusal(d.chosen, d.target, entry.settings, now)
        if refusal:
            return self._settle(d, "not_executed", f"approved, but {refusal}")
        d.reason = f"approved by {d.decided_by}"
        detected = float(d.diagnosis.get("detected_at", 0.0))
        with contextlib.suppress(ActionError):  # recorded on the decision
            await self._execute(d, detected)
        return d

    def reject(self, decision_id: str, by: str, reason: str) -> Decision:
        d = self._pending(decision_id)
        text = f"rejected by {by or 'operator'}" + (f": {reason}" if reason else "")
        return self._settle(d, "rejected", text)

    async def trigger(
        self,
        action: str,
        target: str,
        params: Mapping[str, str],
        dry_run: bool,
        by: str,
    ) -> tuple[Decision, Execution]:
        """An operator's request. Errors (ActionError) leave nothing executed."""
        async with self._deciding:
            return await self._trigger(action, target, params, dry_run, by)

    async def _trigger(
        self,
        action: str,
        target: str,
        params: Mapping[str, str],
        dry_run: bool,
        by: str,
    ) -> tuple[Decision, Execution]:
        """An operator's request. Errors (ActionError) leave nothing executed."""
        if not action:
            raise ActionError("action", "action is empty")
        entry = self.entries.get(action)
        if entry is None:
            raise ActionError(
                "action",
                f"unknown action {action!r}; known: {', '.join(sorted(self.entries))}",
                "not_found",
            )
        if not target:
            raise ActionError("target", "target is empty")
        problem = entry.action.check(target, self.context(action))
        if problem is not None:
            code = "not_found" if "not a source" in problem else "precondition"
            raise ActionError("target", problem, code)
        now = self.clock.now()
        if not dry_run:
            refusal = self.policy.refusal(action, target, entry.settings, now)
            if refusal:
                raise ActionError("action", refusal, "precondition")
        d = self._new_decision()  # not saved until the plan holds
        d.decided_by = by or "operator"
        d.chosen, d.target, d.mode = action, target, "manual"
        d.diagnosis = {"kind": "manual", "target": target}
        params = {**self._params(d), **params}
        plan = await self._plan(entry, target, params)  # raises before anything is recorded
        if plan.noop and not dry_run:
            raise ActionError("target", f"nothing to do: {plan.summary}", "precondition")
        d.alternatives = [
            Alternative(
                action,
                target,
                dict(zip(CRITERIA, entry.criteria().row(), strict=True)),
                True,
                "",
                1.0,
                1,
            )
        ]
        d.span(
            now,
            "decision",
            f"{action}({target}) requested by {d.decided_by}"
            + (" (dry run)" if dry_run else "")
            + f": {plan.summary}",
        )
        x = await self._execute(d, 0.0, params, dry_run, plan)
        assert x is not None
        return d, x

    async def _follow_up(self, now: float) -> int:
        """Replays continue while an incident lasts: copies keep going missing until the
        fault ends. For each replay the loop decided in the last `follow_up_seconds`,
        replay what went missing since, as a follow-up in the same trace."""
        seen: set[tuple[str, str]] = set()
        count = 0
        horizon = now - self.config.follow_up_seconds
        for parent in reversed(list(self.audit.decisions.values())[-500:]):
            if parent.created_at < horizon:
                break
            key = (parent.chosen, parent.target)
            if (
                parent.chosen != "replay_missing"
                or parent.status != "executed"
                or parent.follow_up_of
                or parent.decided_by != "loop"
                or key in seen
            ):
                continue
            seen.add(key)
            entry = self.entries[parent.chosen]
            context = self.context(parent.chosen, parent.diagnosis)
            if self.mode(parent.chosen) != "auto" or entry.action.check(parent.target, context):
                continue
            if self.policy.refusal(parent.chosen, parent.target, entry.settings, now):
                continue
            try:
                plan = await self._plan(entry, parent.target, {}, parent.diagnosis)
            except ActionError:
                continue
            if plan.noop or plan.size == 0:
                continue
            d = self._new_decision(parent.trace_id)
            d.follow_up_of = parent.id
            d.anomaly_id, d.diagnosis = parent.anomaly_id, dict(parent.diagnosis)
            d.decided_by, d.mode = "loop", "auto"
            d.method, d.weighting, d.weights = parent.method, parent.weighting, dict(parent.weights)
            d.alternatives = parent.alternatives
            d.chosen, d.target = parent.chosen, parent.target
            d.span(now, "decision", f"follow-up of {parent.id}: {plan.summary}")
            await self._execute(d, now)
            count += 1
        return count

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _metric_value(minute: Any, metric: str) -> float | None:
    if ":" in metric:
        kind, source = metric.split(":", 1)
        table = {
            "missing_rate": minute.missing_rate_by_source,
            "duplicate_rate": minute.duplicate_rate_by_source,
            "inconsistent_rate": minute.inconsistent_rate_by_source,
        }.get(kind, {})
        value = table.get(source)
        return None if value is None else float(value)
    value = minute.features.get(metric)
    return None if value is None else float(value)
