"""Plan: the action catalogue (each action with its safety settings and its record of
verified runs), the criteria weights, and the MCDM ranking of the actions that apply
to an issue."""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from helios.daemon.audit import Alternative
from helios.daemon.config import ConfigError, DecisionConfig
from helios.daemon.domain import Diagnosis
from helios.daemon.files import write_json
from helios.daemon.plugins import Registry
from helios.daemon.safety import ActionSettings, PolicyState, parse_settings
from helios.daemon.types import (
    CRITERIA,
    CRITERIA_TYPES,
    Action,
    ActionContext,
    ActionError,
    ActionPlan,
    Criteria,
    Runtime,
)

log = logging.getLogger("helios.plan")
PRIOR_RUNS = 5  # how many runs' worth of weight the configured estimates carry
HISTORY = 100  # verified runs kept per action
# What the loop reads of an action beyond Protocol methods: checked when the catalogue
# is built, so that an outside action missing one fails at start-up, by name.
ACTION_MEMBERS = ("name", "issue_kinds", "description", "defaults", "policy_defaults", "follows_up")


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


class Planner:
    """The catalogue, the weights and the ranking. Built from config without touching a
    file; `open()` reads the actions' record back."""

    def __init__(
        self,
        config: DecisionConfig,
        action_options: Mapping[str, Mapping[str, Any]],
        registry: Registry,
        runtime: Runtime,
        policy: PolicyState,
        data_dir: str,
    ) -> None:
        self.config = config
        self.runtime = runtime
        self.policy = policy
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
            given = action_options.get(name, {})
            try:
                action = registered.factory(given)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"actions.options.{name}: {exc}") from exc
            lacking = [m for m in ACTION_MEMBERS if not hasattr(action, m)]
            if lacking:
                raise ConfigError(
                    f"action {name!r} of plugin {registered.plugin!r} lacks "
                    f"{', '.join(lacking)} (see helios.daemon.types.Action)"
                )
            options = {**action.policy_defaults, **given}
            try:
                settings = parse_settings(name, options)  # names the key itself
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
            self.entries[name] = Entry(name, action, registered.plugin, settings, options)
        self._stats_path = Path(data_dir) / "decisions" / "stats.json"
        self.config_weights = dict(config.weights) or dict.fromkeys(CRITERIA, 1 / len(CRITERIA))
        self.weights = dict(self.config_weights)
        self.weights_note = "config"

    def open(self) -> None:
        """Read the actions' verified runs back and weigh the criteria (start-up)."""
        path = self._stats_path
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                for name, runs in data.items():
                    if name in self.entries:
                        self.entries[name].stats.runs.extend(
                            (bool(s), float(m), float(q)) for s, m, q in runs
                        )
            except (OSError, ValueError, TypeError) as exc:
                log.warning("action history in %s not restored: %s", path, exc)
        self.recalculate_weights()

    def record(self, entry: Entry, success: bool, mttr: float, qos: float) -> None:
        """Learn from one verified run, durably."""
        entry.stats.runs.append((success, mttr, qos))
        data = {name: list(e.stats.runs) for name, e in self.entries.items() if e.stats.runs}
        write_json(self._stats_path, data)

    # ---- weights -------------------------------------------------------------------
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
        """Manual weights (normalised to sum 1), or None to hand back to the method."""
        if weights:
            unknown = set(weights) - set(CRITERIA)
            if unknown:
                raise ActionError("weights", f"unknown criteria {sorted(unknown)}; use {CRITERIA}")
            values = {c: float(weights.get(c, 0.0)) for c in CRITERIA}
            bad = {c: v for c, v in values.items() if not (math.isfinite(v) and 0 <= v <= 1e6)}
            if bad:
                raise ActionError(
                    "weights",
                    f"weights must be finite numbers from 0 to 1,000,000 (relative), got {bad}",
                )
            total = sum(values.values())
            if total <= 0:
                raise ActionError("weights", "weights must not all be 0")
            self.policy.weights = {c: v / total for c, v in values.items()}
        else:
            self.policy.weights = None
        self.policy.save()
        self.recalculate_weights()
        return self.weights

    # ---- actions -------------------------------------------------------------------
    def mode(self, action: str) -> str:
        entry = self.entries[action]
        return self.policy.mode(action, entry.settings, self.config.automation)

    def context(self, name: str, diagnosis: Diagnosis | None = None) -> ActionContext:
        return ActionContext(self.entries[name].options, self.runtime, diagnosis)

    async def plan(
        self,
        entry: Entry,
        target: str,
        params: Mapping[str, str],
        diagnosis: Diagnosis | None = None,
    ) -> ActionPlan:
        """The action's plan, checked against its blast-radius cap."""
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

    def rank(self, diagnosis: Diagnosis) -> list[Alternative]:
        """Every action that applies to the issue, its best target, and the ranking."""
        kind = diagnosis.kind
        target = diagnosis.target or "all"
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
            self._score(eligible)
        alternatives.sort(key=lambda a: (a.rank == 0, a.rank, a.action))
        return alternatives

    def _score(self, eligible: list[Alternative]) -> None:
        matrix = np.array([[a.criteria[c] for c in CRITERIA] for a in eligible])
        weights = np.array([self.weights[c] for c in CRITERIA])
        types = np.array(CRITERIA_TYPES)
        try:
            scores = np.asarray(self.method(matrix, weights, types))
        except ValueError as exc:  # e.g. an all-zero column: fall back to plain WSM
            log.warning("%s could not rank (%s); falling back to sum-WSM", self.config.method, exc)
            span = matrix.max(axis=0) - matrix.min(axis=0)
            span[span == 0] = 1.0
            norm = (matrix - matrix.min(axis=0)) / span
            norm[:, types < 0] = 1 - norm[:, types < 0]
            scores = norm @ weights
        order = np.argsort(-scores, kind="stable")
        for rank, i in enumerate(order, start=1):
            eligible[i].score = round(float(scores[i]), 6)
            eligible[i].rank = rank
