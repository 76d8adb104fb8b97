"""The read models' shapes: plain, frozen snapshots that front-ends render."""

from __future__ import annotations

from dataclasses import dataclass

from helios.daemon.audit import Decision, Execution, Span
from helios.daemon.detection import Anomaly
from helios.daemon.domain import BreakerState
from helios.daemon.model import EventRecord
from helios.daemon.safety import ActionSettings
from helios.daemon.types import Criteria


@dataclass(frozen=True)
class SourceStatus:
    source: str
    copies: int
    expected: int
    delivered: int
    completeness: float
    duplicates: int
    paused: bool


@dataclass(frozen=True)
class DetectorStatus:
    name: str
    status: str
    anomalies: int
    threshold: float
    score_unit: str


@dataclass(frozen=True)
class Latency:
    p50: float
    p90: float
    p99: float
    max: float
    count: int


@dataclass(frozen=True)
class BloomView:
    """The per-source Bloom filters that remember deliveries past the index TTL."""

    slices: int  # time slices held (at most `keep`)
    capacity_per_filter: int
    fill: float  # of the current slice's fullest filter, 0..1 of its capacity
    configured_error_rate: float
    false_positive_rate: float  # of one filter at its current fill
    lookup_false_positive_rate: float  # "delivered?" across every slice kept
    bytes: int
    aged_late: int  # copies recognised as LATE after their record left the index
    aged_duplicates: int
    oldest_slice_started: float = 0.0  # daemon clock: the filters remember from then on
    slices_set_aside: int = 0  # held but not asked: their records may not be stored


@dataclass(frozen=True)
class Storage:
    backend: str
    durability: str
    details: dict[str, str]  # file, size, commits...: what the backend says of itself
    open_windows: int
    max_open_windows: int
    data_dir: str
    data_dir_locked: bool
    bloom: BloomView | None = None


@dataclass(frozen=True)
class Stats:
    copies_received: int
    events_seen: int
    outcomes: dict[str, int]
    rejections: dict[str, int]
    refused_requests: dict[str, int]  # "Method:CODE" -> count
    detectors: list[DetectorStatus]
    open_windows: int
    index_records: int
    copies_per_second: float
    events_per_second: float
    sources: list[SourceStatus]
    latency: Latency
    queue_depth: int
    queue_capacity: int
    uptime_seconds: float
    version: str
    now: float
    storage: Storage


@dataclass(frozen=True)
class EventView:
    record: EventRecord
    quarantine_reason: str


@dataclass(frozen=True)
class ActionView:
    name: str
    description: str
    issue_kinds: tuple[str, ...]
    plugin: str
    criteria: Criteria  # current estimates
    configured: Criteria
    runs: int
    successes: int
    mode: str
    settings: ActionSettings
    running: int


@dataclass(frozen=True)
class BreakerView:
    source: str
    state: BreakerState
    forced: bool
    since: float
    reason: str
    trips: int
    ratio: float
    volume: int
    failed_over: bool


@dataclass(frozen=True)
class Notification:
    at: float
    level: str
    text: str


@dataclass(frozen=True)
class Catalogue:
    """The action catalogue and everything the operator controls around it."""

    actions: list[ActionView]
    automation_mode: str
    action_modes: dict[str, str]
    method: str
    weighting: str
    weights: dict[str, float]
    breakers: list[BreakerView]
    notifications: list[Notification]  # newest last
    throttles: dict[str, float]
    quarantined_events: int


@dataclass(frozen=True)
class Trace:
    trace_id: str
    anomalies: list[Anomaly]
    decisions: list[Decision]
    executions: list[Execution]
    spans: list[Span]
