"""The audit trail: every decision cycle and every execution, linked by one trace id
(anomaly -> diagnosis -> decision -> execution -> verified outcome).

Records are appended as JSON lines to `<data_dir>/decisions/audit.jsonl` on every
change (the last line of an id wins when the file is read back at start), so the trail
survives restarts; the file is compacted when it grows past four times what is kept."""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from helios.daemon.domain import DecisionStatus, Diagnosis, ExecutionStatus, Verification
from helios.daemon.files import write_atomic

log = logging.getLogger("helios.audit")
# The story of each decision, a line per stage, with its trace id (docs/observability.md).
story = logging.getLogger("helios.decisions")


@dataclass
class Alternative:
    action: str
    target: str
    criteria: dict[str, float]
    eligible: bool
    reason: str = ""  # why not eligible (prerequisite)
    score: float = 0.0
    rank: int = 0  # 1 = best; 0 = not ranked


@dataclass
class Span:
    at: float
    stage: str  # anomaly, diagnosis, decision, policy, execution, verification
    text: str


@dataclass
class Decision:
    id: str
    trace_id: str
    created_at: float
    anomaly_id: str = ""
    diagnosis: Diagnosis = field(default_factory=lambda: Diagnosis.manual(""))
    detected_at: float = 0.0  # when the anomaly behind it was detected (0: an operator's)
    method: str = ""
    weighting: str = ""  # entropy, critic, manual, config
    weights: dict[str, float] = field(default_factory=dict)
    alternatives: list[Alternative] = field(default_factory=list)
    chosen: str = ""  # action
    target: str = ""
    mode: str = ""  # the AutomationMode in force, or "manual" for an operator's request
    status: DecisionStatus = DecisionStatus.OPEN
    reason: str = ""
    expires_at: float = 0.0
    decided_by: str = ""  # "loop", or who approved / triggered
    execution_ids: list[str] = field(default_factory=list)
    follow_up_of: str = ""  # the decision whose replay this one continues
    outcome: str = ""  # a Verification (verified, failed), "" while open
    mttr_seconds: float = 0.0
    spans: list[Span] = field(default_factory=list)
    update: bool = False  # decided on a minute of an anomaly episode already decided on

    def span(self, at: float, stage: str, text: str) -> None:
        self.spans.append(Span(at, stage, text))
        if stage != "anomaly":  # detection logs the anomaly itself, once per episode
            # Detail, at DEBUG: a follow-up (the same replay again while the fault
            # lasts), and an episode's later minutes unless they act or ask again.
            quiet = self.follow_up_of or (
                self.update
                and stage in ("diagnosis", "decision", "policy")
                and not text.startswith("waiting for approval")
            )
            story.log(
                logging.DEBUG if quiet else logging.INFO,
                "%s %s: %s",
                stage,
                self.id,
                text,
                extra={"trace_id": self.trace_id, "decision": self.id, "stage": stage},
            )


@dataclass
class Execution:
    id: str
    decision_id: str
    trace_id: str
    action: str
    target: str
    params: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False
    plan: str = ""
    size: int = 0
    status: ExecutionStatus = ExecutionStatus.RUNNING
    attempts: int = 0
    started_at: float = 0.0
    finished_at: float = 0.0
    result: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    verification: Verification = Verification.PENDING
    verification_detail: str = ""
    verified_at: float = 0.0
    mttr_seconds: float = 0.0
    detected_at: float = 0.0  # when the anomaly behind it was detected (0: manual)
    expected_copies: int = 0
    seen_copies: int = 0


def _decision(data: dict[str, Any]) -> Decision:
    data = dict(data)
    data["alternatives"] = [Alternative(**a) for a in data.get("alternatives", [])]
    data["spans"] = [Span(**s) for s in data.get("spans", [])]
    diagnosis = data.get("diagnosis") or {}
    data["diagnosis"] = Diagnosis.from_dict(diagnosis)
    # Lines written before Decision had detected_at kept it in the diagnosis.
    data.setdefault("detected_at", float(diagnosis.get("detected_at", 0.0)))
    data["status"] = DecisionStatus(data.get("status", ""))
    return Decision(**data)


def _execution(data: dict[str, Any]) -> Execution:
    data = dict(data)
    data["status"] = ExecutionStatus(data.get("status", "running"))
    data["verification"] = Verification(data.get("verification", "pending"))
    return Execution(**data)


def _line(kind: str, record: Decision | Execution) -> str:
    data = asdict(record)
    if isinstance(record, Decision):
        data["diagnosis"] = record.diagnosis.to_dict()
    return json.dumps({"type": kind, **data}, default=str)


class Observer(Protocol):
    """Told of every decision and execution saved (helios.daemon.telemetry)."""

    def decision(self, d: Decision) -> None: ...

    def execution(self, x: Execution) -> None: ...


class AuditLog:
    def __init__(self, data_dir: str, keep: int = 5000) -> None:
        self.observer: Observer | None = None
        self.path = Path(data_dir) / "decisions" / "audit.jsonl"
        self.keep = keep
        self.decisions: OrderedDict[str, Decision] = OrderedDict()
        self.executions: OrderedDict[str, Execution] = OrderedDict()
        self.lines = 0
        self.note = ""
        self.sequence = 0

    def open(self) -> None:
        """Read the trail back (start-up)."""
        if not self.path.exists():
            return
        bad = 0
        with self.path.open(encoding="utf-8") as handle:
            for line in handle:
                self.lines += 1
                try:
                    item = json.loads(line)
                    kind = item.pop("type")
                    if kind == "decision":
                        d = _decision(item)
                        self.decisions.pop(d.id, None)
                        self.decisions[d.id] = d
                    elif kind == "execution":
                        x = _execution(item)
                        self.executions.pop(x.id, None)
                        self.executions[x.id] = x
                except (ValueError, TypeError, KeyError):
                    bad += 1  # a torn last line after a crash, or a foreign line
        if bad:
            self.note = f"{bad} unreadable lines in {self.path} skipped"
            log.warning(self.note)
        for table in (self.decisions, self.executions):
            while len(table) > self.keep:
                table.popitem(last=False)
        ids = [int(k.split("-")[1]) for k in [*self.decisions, *self.executions] if "-" in k]
        self.sequence = max(ids, default=0)

    def next_id(self, prefix: str) -> str:
        self.sequence += 1
        return f"{prefix}-{self.sequence:06d}"

    def _append(self, kind: str, record: Decision | Execution) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = _line(kind, record)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        self.lines += 1
        if self.lines > 4 * self.keep + 1000:
            self._compact()

    def _compact(self) -> None:
        lines = [_line("decision", d) for d in self.decisions.values()]
        lines += [_line("execution", x) for x in self.executions.values()]
        write_atomic(self.path, "".join(line + "\n" for line in lines))
        self.lines = len(self.decisions) + len(self.executions)

    def save_decision(self, d: Decision) -> None:
        if d.id not in self.decisions and len(self.decisions) >= self.keep:
            self.decisions.popitem(last=False)
        self.decisions[d.id] = d
        self._append("decision", d)
        if self.observer is not None:
            self.observer.decision(d)

    def save_execution(self, x: Execution) -> None:
        if x.id not in self.executions and len(self.executions) >= self.keep:
            self.executions.popitem(last=False)
        self.executions[x.id] = x
        self._append("execution", x)
        if self.observer is not None:
            self.observer.execution(x)

    def by_trace(self, trace_id: str) -> tuple[list[Decision], list[Execution]]:
        return (
            [d for d in self.decisions.values() if d.trace_id == trace_id],
            [x for x in self.executions.values() if x.trace_id == trace_id],
        )
