"""Diagnosis: from an anomaly's symptoms (which metrics, which sources, which pairs, how
fast) to an issue kind, its target, a confidence and the evidence."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import combinations

from helios.daemon.domain import Diagnosis, IssueKind, MetricKey

__all__ = ["ISSUE_KINDS", "Diagnosis", "diagnose"]

ISSUE_KINDS = tuple(k.value for k in IssueKind if k is not IssueKind.MANUAL)


def _key(name: str, source: str) -> str:
    return str(MetricKey(name, source))


def _confidence(z: float, inferred: bool = False) -> float:
    """z spreads from the baseline -> confidence; 4 spreads ~ 0.4, 20 ~ 0.9."""
    value = 1.0 - math.exp(-max(z, 0.0) / 8.0)
    return round(value * (0.7 if inferred else 1.0), 3)


def diagnose(
    values: Mapping[str, float],
    baselines: Mapping[str, tuple[float, float]],
    responsible: Sequence[str],
    sources: Sequence[str],
    previous: Mapping[str, float] | None = None,
) -> Diagnosis:
    """Name the issue behind an anomalous step.

    `responsible` are the metrics the detector blamed; `baselines` map metrics to
    (mean, spread); `previous` is the step before, to tell a jump from a ramp."""

    def z(metric: str) -> float:
        if metric not in values or metric not in baselines:
            return 0.0
        mean, spread = baselines[metric]
        return (values[metric] - mean) / spread if spread > 0 else 0.0

    def say(metric: str) -> str:
        if metric not in baselines:
            return f"{metric} = {values.get(metric, float('nan')):.4g}"
        mean, spread = baselines[metric]
        return (
            f"{metric} = {values[metric]:.4g} against a baseline of {mean:.4g} "
            f"(spread {spread:.3g}, {z(metric):.1f} spreads)"
        )

    def onset(metrics: Sequence[str]) -> str:
        if previous is None:
            return "unknown"
        for metric in metrics:
            if metric in previous and metric in baselines:
                mean, spread = baselines[metric]
                return "sudden" if abs(previous[metric] - mean) < 2 * spread else "gradual"
        return "unknown"

    blamed = set(responsible)

    def per_source(prefix: str) -> tuple[list[str], bool]:
        named = [s for s in sources if _key(prefix, s) in blamed]
        if named or prefix not in blamed:
            return named, False
        # The aggregate is blamed but no single source: the largest contributor.
        worst = max(sources, key=lambda s: values.get(_key(prefix, s), 0.0), default=None)
        return ([worst] if worst and values.get(_key(prefix, worst), 0.0) > 0 else []), True

    missing, missing_inferred = per_source("missing_rate")
    duplicates, dup_inferred = per_source("duplicate_rate")
    inconsistent, inc_inferred = per_source("inconsistent_rate")
    slow_pairs = [
        (a, b) for a, b in combinations(sources, 2) if str(MetricKey.latency(a, b)) in blamed
    ]
    traffic_drop = "event_rate_per_minute" in blamed and z("event_rate_per_minute") < 0

    if (len(sources) > 1 and len(missing) == len(sources)) or traffic_drop:
        metrics = ["event_rate_per_minute"] if traffic_drop else []
        metrics += [_key("missing_rate", s) for s in missing]
        strongest = max((abs(z(m)) for m in metrics), default=0.0)
        return Diagnosis(
            IssueKind.SYSTEM_FAILURE,
            "all",
            _confidence(strongest),
            tuple(say(m) for m in metrics),
            onset(metrics),
        )

    symptoms: dict[str, list[str]] = {s: [] for s in sources}
    for s in missing:
        symptoms[s].append(_key("missing_rate", s))
    for s in duplicates:
        symptoms[s].append(_key("duplicate_rate", s))
    for s in inconsistent:
        symptoms[s].append(_key("inconsistent_rate", s))
    for s in sources:
        own = [p for p in combinations(sources, 2) if s in p]
        if len(own) >= 2 and all(p in slow_pairs for p in own):
            symptoms[s] += [str(MetricKey.latency(a, b)) for a, b in own]
    degraded = [
        s
        for s in sources
        if len({MetricKey.parse(m).name.split("_")[0] for m in symptoms[s]}) >= 2
        or sum(m.startswith("latency_") for m in symptoms[s]) >= 2
    ]
    if degraded:
        target = max(degraded, key=lambda s: max(z(m) for m in symptoms[s]))
        metrics = symptoms[target]
        return Diagnosis(
            IssueKind.SOURCE_DEGRADED,
            target,
            _confidence(max(z(m) for m in metrics)),
            tuple(say(m) for m in metrics),
            onset(metrics),
        )
    for kind, named, inferred, prefix in (
        (IssueKind.MISSING_EVENTS, missing, missing_inferred, "missing_rate"),
        (IssueKind.DUPLICATE_STORM, duplicates, dup_inferred, "duplicate_rate"),
        (IssueKind.INCONSISTENT_PAYLOADS, inconsistent, inc_inferred, "inconsistent_rate"),
    ):
        if named:

            def strength(source: str, prefix: str = prefix) -> float:
                return z(_key(prefix, source)) or values.get(_key(prefix, source), 0.0)

            target = max(named, key=strength)
            metric = _key(prefix, target)
            others = [_key(prefix, s) for s in named if s != target]
            evidence = [say(metric), *(say(m) for m in others)]
            if inferred:
                evidence.append(f"{prefix} was blamed as a whole; {target} contributes most")
            return Diagnosis(
                kind,
                target,
                _confidence(z(metric) or z(prefix), inferred),
                tuple(evidence),
                onset([metric, prefix]),
            )
    if slow_pairs:
        a, b = max(slow_pairs, key=lambda p: z(str(MetricKey.latency(*p))))
        metric = str(MetricKey.latency(a, b))
        return Diagnosis(
            IssueKind.HIGH_LATENCY,
            f"{a}-{b}",
            _confidence(z(metric)),
            tuple(say(str(MetricKey.latency(x, y))) for x, y in slow_pairs),
            onset([metric]),
        )
    return Diagnosis(
        IssueKind.UNKNOWN,
        "",
        0.0,
        tuple(say(m) for m in responsible) or ("no metric was blamed",),
        onset(list(responsible)),
    )
