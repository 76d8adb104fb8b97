"""The reconciler's domain objects: copies, event records, outcomes."""

from __future__ import annotations

from enum import IntEnum

# One incoming copy as the reconciler takes it: (event_id, source, event_type,
# produced_at seconds, payload bytes). A plain tuple: the hot path makes millions.
CopyIn = tuple[str, str, str, float, bytes]
# A copy that passed validation, with the canonical digest of its payload appended.
Checked = tuple[str, str, str, float, bytes, bytes]


class OutcomeKind(IntEnum):
    COMPLETE = 1
    MISSING = 2
    INCONSISTENT = 3
    DUPLICATE = 4
    LATE = 5


class Status(IntEnum):
    PENDING = 1
    COMPLETE = 2
    MISSING = 3
    INCONSISTENT = 4


# One source's delivery of an event: (arrived_at, produced_at, payload digest, size).
# A tuple, not an object: the reconciler makes one per copy on the hot path.
CopyState = tuple[float, float, bytes, int]


class Outcome:
    """Something the reconciler decided about an event, in the order it decided it."""

    __slots__ = ("event_id", "event_type", "kind", "late_by", "sequence", "sources", "time")

    def __init__(
        self,
        kind: OutcomeKind,
        event_id: str,
        event_type: str,
        sources: tuple[str, ...],
        time: float,
        late_by: float = 0.0,
    ) -> None:
        self.kind = kind
        self.event_id = event_id
        self.event_type = event_type
        self.sources = sources
        self.time = time
        self.late_by = late_by
        self.sequence = 0

    def __repr__(self) -> str:
        return f"Outcome({self.kind.name}, {self.event_id!r}, {self.sources})"


class EventRecord:
    """Everything known about one event: its copies (by source index) and its status."""

    __slots__ = (
        "copies",
        "counts",
        "deadline",
        "differs",
        "digest",
        "event_id",
        "event_type",
        "expected",
        "first_seen",
        "inconsistent",
        "late_mask",
        "missing",
        "outcomes",
        "payload",
        "seen",
        "status",
    )

    def __init__(
        self,
        event_id: str,
        event_type: str,
        expected: int,
        n_sources: int,
        first_seen: float,
        deadline: float,
    ) -> None:
        self.event_id = event_id
        self.event_type = event_type
        self.expected = expected  # bit mask of source indexes
        self.seen = 0
        self.missing = 0  # bit mask, set when MISSING is declared; late copies clear bits
        self.copies: list[CopyState | None] = [None] * n_sources
        self.first_seen = first_seen
        self.deadline = deadline
        self.status = Status.PENDING
        self.inconsistent = False
        self.late_mask = 0  # sources whose copy arrived after MISSING was declared
        self.counts: dict[int, int] | None = None  # deliveries per source index, when > 1
        self.payload = b""  # the first copy's payload: kept for replay and a fast compare
        self.digest = b""  # and its canonical digest
        self.differs = False  # some copy's digest differs from the first one's
        self.outcomes: list[Outcome] = []

    def count(self, source_index: int) -> int:
        """How many times a source delivered this event (0 = never)."""
        if self.copies[source_index] is None:
            return 0
        return self.counts.get(source_index, 1) if self.counts else 1

    def is_late(self, source_index: int) -> bool:
        return bool(self.late_mask >> source_index & 1)
