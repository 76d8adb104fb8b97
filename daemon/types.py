"""The contracts plugins implement: sources, index backends, detectors, MCDM, actions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from helios.daemon.clock import Clock
from helios.daemon.config import IndexConfig, RouteConfig
from helios.daemon.model import CopyIn, EventRecord, Outcome
from helios.daemon.query import OutcomeQuery


@dataclass(frozen=True)
class Rejected:
    """One refused copy: its position in the batch, the field at fault and why."""

    index: int
    event_id: str
    field: str
    reason: str
    code: str  # a short counter name, e.g. "payload_not_json"


@dataclass(frozen=True)
class PublishResult:
    accepted: int
    rejections: list[Rejected] = field(default_factory=list)


class QueueFull(Exception):
    """The ingest queue has no room: the caller must slow down and retry."""


@runtime_checkable
class Source(Protocol):
    """A running ingest path. It delivers copies through SourceContext.publish."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def pause(self, source: str) -> None: ...

    def resume(self, source: str) -> None: ...


@dataclass
class SourceContext:
    """What the daemon hands a source plugin instance."""

    name: str  # the instance name, the key under [sources.inputs]
    sources: list[str]  # the known source names
    routes: list[RouteConfig]
    window_seconds: float
    grace_seconds: float
    clock: Clock
    # Validate and enqueue copies; raises QueueFull when there is no room.
    publish: Callable[[Sequence[CopyIn]], Awaitable[PublishResult]]


SourceFactory = Callable[[SourceContext, Mapping[str, Any]], Source]


class IndexBackend(Protocol):
    """Stores closed event records and the outcome log; ages both out by TTL."""

    async def get_many(self, event_ids: Collection[str]) -> dict[str, EventRecord]: ...

    async def put_many(self, records: Sequence[EventRecord]) -> None: ...

    async def add_outcomes(self, outcomes: Sequence[Outcome]) -> None: ...

    async def list_outcomes(
        self, query: OutcomeQuery, page_size: int, before: int | None
    ) -> tuple[list[Outcome], int | None]: ...

    async def expire(self, now: float) -> int: ...

    async def count(self) -> int: ...

    async def close(self) -> None: ...


@dataclass
class IndexContext:
    config: IndexConfig
    data_dir: str
    clock: Clock


IndexFactory = Callable[[IndexContext], IndexBackend]


@dataclass(frozen=True)
class DetectionResult:
    is_anomaly: bool
    score: float
    severity: str
    metrics: list[str]
    explanation: str


class Detector(Protocol):
    """Fed one step of metrics at a time; says whether the step is anomalous."""

    name: str

    def update(self, step: Mapping[str, float]) -> DetectionResult: ...

    def state(self) -> dict[str, Any]:
        """Everything needed to resume after a restart (JSON-serialisable)."""
        ...

    def load_state(self, state: Mapping[str, Any]) -> None: ...

    def status(self) -> str:
        """One line for people: ready, warming up, fallback and why."""
        ...


DetectorFactory = Callable[..., Detector]
# matrix (alternatives x criteria), weights, types (+1 benefit / -1 cost) -> scores
McdmMethod = Callable[..., Any]
# matrix (and optionally types) -> weights summing to 1
WeightingMethod = Callable[..., Any]


class Action(Protocol):
    """A recovery action: what it applies to and how to run it."""

    name: str
    issue_kinds: tuple[str, ...]

    async def execute(self, request: Mapping[str, Any]) -> Mapping[str, Any]: ...


ActionFactory = Callable[[Mapping[str, Any]], Action]
