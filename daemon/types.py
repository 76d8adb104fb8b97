"""The contracts plugins implement: sources, index backends, detectors, MCDM, actions.
Long because every contract a plugin author reads is here, in one place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from helios.daemon.clock import Clock
from helios.daemon.config import IndexConfig, RouteConfig
from helios.daemon.domain import Diagnosis
from helios.daemon.errors import ErrorCode, RequestError
from helios.daemon.model import CopyIn, EventRecord, Outcome
from helios.daemon.query import OutcomeQuery
from helios.daemon.webhooks import InputStats


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


class Fenced(OSError):
    """A write a shared index refused: another member took over what it was for while
    this one could not answer (fencing: helios.plugins.index.redis_scripts)."""


class QueueFull(RequestError):
    """The ingest queue has no room, or a throttled source is over its rate: the caller
    must slow down and retry (gRPC RESOURCE_EXHAUSTED)."""

    def __init__(self, message: str) -> None:
        super().__init__("events", message, ErrorCode.EXHAUSTED)


@runtime_checkable
class Source(Protocol):
    """A running ingest path. It delivers copies through SourceContext.publish.

    SourceBase gives every member but start and stop a default."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def pause(self, source: str) -> None:
        """Hold `source`'s copies back until resume()."""
        ...

    def resume(self, source: str) -> None: ...

    def delivers(self, source: str) -> bool:
        """Whether this input carries copies of `source` (restart and replay target it)."""
        ...

    def replays(self, source: str) -> bool:
        """Whether replay() can re-publish copies through `source`."""
        ...

    async def replay(self, source: str, copies: Sequence[CopyIn]) -> int:
        """Re-publish copies through `source`'s own path; returns how many."""
        ...


class SourceBase:
    """Defaults for a source plugin: delivers every source, cannot replay, and pausing
    is left to the daemon (which refuses a paused source's copies at admission).

    `partitioned`: the source is one member of a group that shares the event ids
    (Kafka): the daemon then resumes no open window at start; the source adopts the
    windows of what it is given. `describe()`: rows for the Storage view."""

    partitioned = False

    def describe(self) -> dict[str, str]:
        return {}

    def pause(self, source: str) -> None:
        return None

    def resume(self, source: str) -> None:
        return None

    def delivers(self, source: str) -> bool:
        return True

    def replays(self, source: str) -> bool:
        return False

    async def replay(self, source: str, copies: Sequence[CopyIn]) -> int:
        raise ActionError("target", f"{type(self).__name__} cannot replay copies of {source}")


@dataclass
class SourceContext:
    """What the daemon hands a source plugin instance."""

    name: str  # the instance name, the key under [sources.inputs]
    sources: list[str]  # the known source names
    routes: list[RouteConfig]
    window_seconds: float
    grace_seconds: float
    clock: Clock
    # Admission.admit: validate and enqueue copies; raises QueueFull when there is no room.
    publish: Callable[..., Awaitable[PublishResult]]
    # Admission.submit: admit without waiting for the store; (result, stored).
    submit: Callable[..., Awaitable[tuple[PublishResult, Awaitable[None]]]] | None = None
    # For a partitioned source (Kafka): adopt(take) takes over the open windows the
    # index holds for the event ids `take` accepts (it answers None for an id it does
    # not take, else the seconds no member worked on that window: one whose deadline
    # was still ahead when work stopped keeps the time it had left); release(owns)
    # hands open windows back undecided (the shared index keeps them open for their
    # next owner). Each returns how many windows.
    adopt: Callable[[Callable[[str], float | None]], Awaitable[int]] | None = None
    release: Callable[[Callable[[str], bool]], Awaitable[int]] | None = None
    # The index's stored marks by prefix (IndexBackend.read_marks).
    read_marks: Callable[[str], Awaitable[dict[str, int]]] | None = None
    # Fencing (IndexBackend.claim/disown): take partitions by their mark names, fencing
    # a holder that did not hand them back; hand them back. void(reason, since) drops
    # the batches still queued (an ended session's, begun at `since`), returning the
    # copies dropped.
    claim: Callable[[Collection[str], str], Awaitable[None]] | None = None
    disown: Callable[[Collection[str]], Awaitable[None]] | None = None
    void: Callable[[str, float | None], int] | None = None
    # IndexBackend.shared and away: wait until the writes made so far are in the store
    # other members read; why they cannot get there now (None: they can).
    shared: Callable[[], Awaitable[None]] | None = None
    away: Callable[[], str | None] | None = None
    # Copies one admission call may carry (ingest.max_batch_events).
    max_batch: int = 10_000
    # Subscribe to every outcome: a queue of outcome lists, and how to unsubscribe.
    watch: Callable[[], Any] | None = None
    unwatch: Callable[[Any], None] | None = None
    # serve(path, handler, max_body, secret_headers): a webhook route (None: no console);
    # stats: what it received and refused; dead_letter(reason, detail, body, where).
    serve: Callable[..., None] | None = None
    stats: InputStats | None = None
    dead_letter: Callable[[str, str, bytes, str], Awaitable[Any]] | None = None


SourceFactory = Callable[[SourceContext, Mapping[str, Any]], Source]


@dataclass(frozen=True)
class Resume:
    """What a durable index read back at open: the records whose windows were open, the
    daemon clock's time of its last write, and the last outcome sequence it stored."""

    open_records: list[EventRecord] = field(default_factory=list)
    saved_at: float | None = None
    last_sequence: int = 0


class IndexBackend(Protocol):
    """Stores event records and the outcome log; ages both out by TTL.

    `resident`: an index that keeps its closed records in this process lends them as a
    mapping, and the pipeline looks records up there in place instead of calling
    `get_many` for every batch; an index elsewhere (a server) says None.
    `durable`: the index keeps state across restarts. The pipeline then also hands it
    the open records each batch changed, acknowledges a batch only once `write` has
    returned for it, and resumes the open windows `open()` returns."""

    resident: Mapping[str, EventRecord] | None
    durable: bool

    async def open(self) -> Resume:
        """Open or create the store (at start, never when built: check-config builds);
        return what to resume."""
        ...

    def write(
        self,
        records: Sequence[EventRecord],
        outcomes: Sequence[Outcome],
        marks: Mapping[str, int] | None = None,
    ) -> Awaitable[None]:
        """Take changed records (closed, and open ones for a durable index) and new
        outcomes now, as they are at the call; the awaitable completes once they are
        stored (a durable index commits both in one transaction). `marks` (name ->
        integer, e.g. a Kafka partition's offset) are stored in that same transaction:
        a source reads them back with read_marks() to skip what it delivered already."""
        ...

    async def read_marks(self, prefix: str) -> dict[str, int]:
        """The stored marks whose names start with `prefix`."""
        ...

    async def claim(self, names: Collection[str], scope: str = "") -> None:
        """A shared index: this process takes over what these marks name (a Kafka
        member's partitions), fencing a holder that did not hand them back, whose
        later writes the index then refuses; in the same step it hands back every
        other name starting with `scope` it holds (what it lost while the index was
        away, or before a restart, and could not disown). It
        first waits until every write it made is in the shared store or refused, and
        raises OSError while that cannot be (the store away, a spill not replayed).
        An index of one process does nothing."""
        ...

    async def shared(self) -> None:
        """Return once every write made before the call is in the store the other
        members read (or was refused there): a Kafka member commits offsets only then.
        A local spill does not count. An index of one process returns at once."""
        ...

    def away(self) -> str | None:
        """Why this process's writes cannot reach the shared store now (they go to a
        local spill, or one is still being replayed), or None."""
        ...

    def when_refused(self, call: Callable[[float, int], None]) -> None:
        """Have `call(since, sequence)` run when the shared store refuses writes of this
        process (fenced: another member took its partitions over), before shared()
        returns for them: `since` is the daemon-clock time of the oldest, `sequence` the
        first outcome sequence they held (or would have). What took their word (the
        Bloom filters, outcomes not yet published) must not trust them. An index of one
        process never refuses."""
        ...

    async def disown(self, names: Collection[str]) -> None:
        """Hand back what claim() took (after the last write for it)."""
        ...

    async def open_windows(self, wanted: Callable[[str], bool] | None = None) -> list[EventRecord]:
        """The open windows the store holds now (PENDING records) whose event id
        `wanted` accepts (None: all), for a member of a group to adopt the windows of
        the partitions it was given. A store that can ask before reading a record
        does, so a member given one partition of twelve reads one twelfth of them."""
        ...

    async def get_many(self, event_ids: Collection[str]) -> dict[str, EventRecord]: ...

    async def list_outcomes(
        self, query: OutcomeQuery, page_size: int, before: int | None
    ) -> tuple[list[Outcome], int | None]: ...

    async def expire(self, now: float, keep_after: float) -> int:
        """Age records and outcomes out (TTL, size bound); a store keeps everything the
        open windows need: what was written at or after `keep_after`, the first copy of
        the oldest open window. Returns how many records left."""
        ...

    async def count(self) -> int: ...

    def forgotten_until(self, now: float) -> float:
        """The latest first_seen (daemon clock) of a record this index may no longer
        hold (TTL, size bound): a record first seen later is still here, so the Bloom
        filters are not asked about copies of events produced later (an event's
        record is first seen after it is produced). An index that cannot tell: `now`."""
        ...

    def pushback(self) -> str | None:
        """Why admission should refuse new batches now (RESOURCE_EXHAUSTED), or None: an
        index buffering for a store that is away says so when its budget is spent."""
        ...

    def describe(self) -> dict[str, str]:
        """What the Storage view shows: backend, durability, file, size..."""
        ...

    async def close(self) -> None: ...


@dataclass
class IndexContext:
    config: IndexConfig
    data_dir: str
    clock: Clock
    shard: int = 0  # which of `shards` this index is (index.shards; 1: not sharded)
    shards: int = 1


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
    threshold: float  # a score at or above it is an anomaly
    # What a score measures, for charts: "spreads" (a z-score) or "probability" (0..1).
    score_unit: str

    def baseline(self, metric: str) -> tuple[float, float] | None:
        """The metric's normal (mean, spread), once learned: diagnosis and
        verification compare against it."""
        ...

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


# ---- recovery actions -----------------------------------------------------------------
# The criteria every action is ranked on, in matrix column order, and their types
# (+1 benefit, -1 cost) for the MCDM methods.
CRITERIA = ("mttr_seconds", "qos_impact", "success_rate", "cost")
CRITERIA_TYPES = (-1.0, -1.0, 1.0, -1.0)


@dataclass(frozen=True)
class Criteria:
    """An action's estimates: they start from config and then follow its verified runs."""

    mttr_seconds: float  # detection to verified recovery
    qos_impact: float  # 0..1: how much good traffic the action disturbs
    success_rate: float  # 0..1: verified successes / runs
    cost: float  # relative cost (> 0): people paged, money, risk

    def row(self) -> list[float]:
        return [self.mttr_seconds, self.qos_impact, self.success_rate, self.cost]


@dataclass(frozen=True)
class ActionPlan:
    """What an action will do, decided before anything is done: dry runs stop here, and
    the safety policy checks `size` against the action's blast-radius cap."""

    action: str
    target: str
    summary: str
    size: int = 0  # how many events (or replicas, requests...) it touches
    details: dict[str, Any] = field(default_factory=dict)
    noop: bool = False  # nothing to do (e.g. no copy is missing): the loop skips it


@dataclass(frozen=True)
class ActionResult:
    """What `execute` reports. It is not the verdict: the loop verifies by observation."""

    ok: bool
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    # (event_id, source) copies the reconciler must see for the action to count as verified.
    expect_copies: tuple[tuple[str, str], ...] = ()


class ActionError(RequestError):
    """A request an action refuses: `field` names what was wrong (target, params...);
    `code` is an ErrorCode (invalid, not_found, precondition, blast_radius)."""


class Runtime(Protocol):
    """What the daemon lets an action touch."""

    clock: Clock
    sources: list[str]

    async def get_event(self, event_id: str) -> EventRecord | None:
        """The record of an event, from its open window or the index."""
        ...

    def source_inputs(self, source: str) -> list[str]:
        """Names of the running source inputs that deliver `source`."""
        ...

    def can_replay(self, source: str) -> bool: ...

    async def replay(self, source: str, copies: Sequence[CopyIn]) -> int:
        """Re-publish copies through the source's own publish path; returns how many."""
        ...

    async def missing_copies(
        self, source: str, since: float, limit: int, tenant: str = ""
    ) -> list[CopyIn]:
        """Stored copies of events MISSING from `source` since `since` (of `tenant` only,
        when given), not healed or replayed yet: the first copy's payload."""
        ...

    def mark_replayed(self, source: str, event_ids: Sequence[str]) -> None: ...

    async def restart_source(self, source: str) -> list[str]: ...

    def set_failover(self, source: str, failed: bool) -> None: ...

    def set_breaker(self, source: str, state: str, reason: str) -> None: ...

    def breaker_state(self, source: str) -> str: ...

    def set_throttle(self, source: str, per_second: float | None) -> None: ...

    def quarantine(self, event_ids: Sequence[str], reason: str) -> int: ...

    async def inconsistent_events(self, source: str, since: float, limit: int) -> list[str]: ...

    def notify(self, level: str, message: str) -> None: ...


@dataclass
class ActionContext:
    """What the daemon hands an action: its options and the runtime."""

    options: Mapping[str, Any]
    runtime: Runtime
    # The issue being fixed; None for an operator's request.
    diagnosis: Diagnosis | None = None


class Action(Protocol):
    """A recovery action: what it applies to, what it needs, and how to run it."""

    name: str
    issue_kinds: tuple[str, ...]  # diagnosis kinds it can fix; "*" = any
    description: str
    defaults: Criteria
    # Its own safety-policy defaults (cooldown_seconds, max_per_hour...), under the
    # options of [actions.options.<name>].
    policy_defaults: Mapping[str, Any]
    # Whether the loop repeats it while the incident lasts (in auto mode): a replay of
    # missing copies does, as copies keep going missing until the fault ends.
    follows_up: bool

    def check(self, target: str, context: ActionContext) -> str | None:
        """Why the action cannot run on `target` now (a prerequisite), or None."""
        ...

    async def plan(
        self, target: str, params: Mapping[str, str], context: ActionContext
    ) -> ActionPlan:
        """Decide what to do without doing it; raise ActionError on a bad request."""
        ...

    async def execute(self, plan: ActionPlan, context: ActionContext) -> ActionResult: ...


ActionFactory = Callable[[Mapping[str, Any]], Action]


def forgotten_until(index: IndexBackend, now: float) -> float:
    """index.forgotten_until(now); `now` (nothing known) for an index plugin without it."""
    method = getattr(index, "forgotten_until", None)
    return now if method is None else float(method(now))
