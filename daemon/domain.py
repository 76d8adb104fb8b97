"""The healing half's vocabulary: statuses as enums (mirrored one to one by the proto's
enums), the issue kinds a diagnosis names, and the key of the metric that shows an
issue is over. StrEnums, so that the audit trail and policy files keep plain words."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

E = TypeVar("E", bound=StrEnum)


class IssueKind(StrEnum):
    MISSING_EVENTS = "missing_events"  # target: a source
    HIGH_LATENCY = "high_latency"  # target: a pair "a-b"
    DUPLICATE_STORM = "duplicate_storm"  # target: a source
    INCONSISTENT_PAYLOADS = "inconsistent_payloads"  # target: a source
    SOURCE_DEGRADED = "source_degraded"  # target: a source with several symptoms at once
    SYSTEM_FAILURE = "system_failure"  # target: "all": every source, or traffic itself
    UNKNOWN = "unknown"
    MANUAL = "manual"  # an operator's request: no anomaly behind it


class DecisionStatus(StrEnum):
    OPEN = ""  # being decided
    PENDING_APPROVAL = "pending_approval"
    EXECUTED = "executed"
    NOT_EXECUTED = "not_executed"
    REJECTED = "rejected"
    EXPIRED = "expired"
    DRY_RUN = "dry_run"


class ExecutionStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    INTERRUPTED = "interrupted"
    DRY_RUN = "dry_run"


class Verification(StrEnum):
    PENDING = "pending"
    VERIFIED = "verified"
    FAILED = "failed"
    NOT_APPLICABLE = "not_applicable"


class AutomationMode(StrEnum):
    OBSERVE = "observe"
    APPROVE = "approve"
    AUTO = "auto"


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


MODES = tuple(m.value for m in AutomationMode)
# What an operator may set a breaker to: forced open or closed, or back to automatic.
BREAKER_SETTINGS = ("open", "closed", "auto")
# Per-source rates kept beside the global features, by metric name.
PER_SOURCE_RATES = ("missing_rate", "duplicate_rate", "inconsistent_rate")


@dataclass(frozen=True)
class MetricKey:
    """A metric of the per-minute rollup: a feature (`missing_rate`,
    `latency_aws_gcp_ms`) or a per-source rate (`missing_rate` of `aws`). Its text form,
    `missing_rate:aws`, is what anomalies, the console and the API show."""

    name: str
    source: str = ""

    def __str__(self) -> str:
        return f"{self.name}:{self.source}" if self.source else self.name

    @classmethod
    def parse(cls, text: str) -> MetricKey:
        name, _, source = text.partition(":")
        return cls(name, source)

    @classmethod
    def latency(cls, a: str, b: str) -> MetricKey:
        """The latency feature of a pair of sources, in milliseconds."""
        return cls(f"latency_{a}_{b}_ms")


@dataclass(frozen=True)
class Diagnosis:
    """The issue behind an anomaly: its kind, its target (a source, a pair "a-b", or
    "all"), a confidence, the evidence, and how it began. It travels unchanged from
    detection to the decision, the action, verification, the API and the console."""

    kind: IssueKind
    target: str
    confidence: float = 0.0  # 0..1
    evidence: tuple[str, ...] = ()
    onset: str = "unknown"  # "sudden" (in one step), "gradual", or "unknown"
    # One tenant's events only (a burning per-tenant SLO); "" for the whole deployment.
    tenant: str = ""

    def __str__(self) -> str:
        text = f"{self.kind}({self.target})" if self.target else str(self.kind)
        return f"{text} in tenant {self.tenant}" if self.tenant else text

    @classmethod
    def manual(cls, target: str) -> Diagnosis:
        """An operator's request: no anomaly, nothing diagnosed."""
        return cls(IssueKind.MANUAL, target)

    @property
    def diagnosed(self) -> bool:
        return self.kind not in (IssueKind.MANUAL, IssueKind.UNKNOWN)

    def metric(self) -> MetricKey | None:
        """The metric whose return to its baseline shows that the issue is over."""
        kind, target = self.kind, self.target
        if kind in (IssueKind.MISSING_EVENTS, IssueKind.SOURCE_DEGRADED):
            return MetricKey("missing_rate", target)
        if kind is IssueKind.DUPLICATE_STORM:
            return MetricKey("duplicate_rate", target)
        if kind is IssueKind.INCONSISTENT_PAYLOADS:
            return MetricKey("inconsistent_rate", target)
        if kind is IssueKind.HIGH_LATENCY and "-" in target:
            a, b = target.split("-", 1)
            return MetricKey.latency(a, b)
        if kind is IssueKind.SYSTEM_FAILURE:
            return MetricKey("missing_rate")
        return None

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind.value,
            "target": self.target,
            "confidence": self.confidence,
            "evidence": list(self.evidence),
            "onset": self.onset,
            **({"tenant": self.tenant} if self.tenant else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Diagnosis:
        """Read back what to_dict wrote (an audit line); unknown kinds read as unknown."""
        try:
            kind = IssueKind(str(data.get("kind", "manual")))
        except ValueError:
            kind = IssueKind.UNKNOWN
        return cls(
            kind,
            str(data.get("target", "")),
            float(data.get("confidence", 0.0)),
            tuple(str(e) for e in data.get("evidence", ())),
            str(data.get("onset", "unknown")),
            str(data.get("tenant", "")),
        )


def enum_value(kind: type[E], text: str, field: str) -> E:
    """`text` as a member of `kind`, or a ValueError naming the field and what is allowed."""
    try:
        return kind(text)
    except ValueError:
        allowed = ", ".join(m.value for m in kind if m.value)
        raise ValueError(f"{field} must be one of {allowed}, got {text!r}") from None
