"""Any interleaving, duplication and delay of copies gives the outcomes that a plain
reference model of the specification gives."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from helios.daemon.clock import ManualClock
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import make_config, make_daemon

SOURCES = ["aws", "gcp", "azure"]
WINDOW, GRACE = 10.0, 2.0
ROUTES = {"x.full": {"aws", "gcp", "azure"}, "x.pair": {"aws", "gcp"}}
BODIES = [{"k": 1, "v": [1, 2]}, {"k": 2, "v": [1, 2]}]


def render(variant: int, style: int) -> bytes:
    body = BODIES[variant]
    if style == 0:
        return json.dumps(body).encode()
    if style == 1:
        return json.dumps(dict(reversed(body.items())), separators=(",", ":")).encode()
    return json.dumps(body, indent=3, sort_keys=True).encode()


@dataclass
class RefEvent:
    expected: set[str]
    deadline: float
    delivered: dict[str, object] = field(default_factory=dict)
    status: str = "PENDING"
    missing: set[str] = field(default_factory=set)
    inconsistent: bool = False
    outcomes: list[tuple[str, tuple[str, ...]]] = field(default_factory=list)

    def disagree(self) -> bool:
        values = list(self.delivered.values())
        return any(v != values[0] for v in values)


class Reference:
    """The specification, written plainly: sets and parsed JSON, no bit masks."""

    def __init__(self) -> None:
        self.events: dict[str, RefEvent] = {}

    def copy(self, t: float, event_id: str, event_type: str, source: str, raw: bytes) -> None:
        ev = self.events.get(event_id)
        if ev is None:
            ev = self.events[event_id] = RefEvent(ROUTES[event_type], t + WINDOW + GRACE)
        if source in ev.delivered:
            ev.outcomes.append(("DUPLICATE", (source,)))
            return
        ev.delivered[source] = json.loads(raw)
        if ev.status == "PENDING":
            if ev.expected <= set(ev.delivered):
                if ev.disagree():
                    ev.inconsistent = True
                    ev.status = "INCONSISTENT"
                    ev.outcomes.append(("INCONSISTENT", ()))
                else:
                    ev.status = "COMPLETE"
                    ev.outcomes.append(("COMPLETE", ()))
            return
        if source in ev.missing:
            ev.missing.discard(source)
            ev.outcomes.append(("LATE", (source,)))
        if ev.disagree() and not ev.inconsistent:
            ev.inconsistent = True
            ev.outcomes.append(("INCONSISTENT", ()))
        if not ev.missing:
            if ev.inconsistent:
                ev.status = "INCONSISTENT"
            elif ev.status == "MISSING":
                ev.status = "COMPLETE"
                ev.outcomes.append(("COMPLETE", ()))

    def sweep(self, t: float) -> None:
        for ev in self.events.values():
            if ev.status == "PENDING" and ev.deadline <= t:
                ev.missing = ev.expected - set(ev.delivered)
                ev.status = "MISSING"
                ev.outcomes.append(("MISSING", tuple(s for s in SOURCES if s in ev.missing)))
                if ev.disagree():
                    ev.inconsistent = True
                    ev.outcomes.append(("INCONSISTENT", ()))


copy_strategy = st.tuples(
    st.integers(0, 5),  # event
    st.sampled_from(SOURCES),
    st.integers(0, 40),  # arrival second
    st.integers(0, 1),  # payload variant (1 = corrupted)
    st.integers(0, 2),  # serialisation style: must not matter
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    copies=st.lists(copy_strategy, min_size=1, max_size=40),
    pair_events=st.sets(st.integers(0, 5)),
    resident=st.booleans(),
)
def test_reconciler_matches_the_reference_model(copies, pair_events, resident):
    asyncio.run(_check(copies, pair_events, resident))


async def _check(copies, pair_events, resident):
    clock = ManualClock(start=0.0)
    daemon = make_daemon(
        make_config('[[routes]]\nevent_type = "x.pair"\nsources = ["aws", "gcp"]\n'), clock
    )
    if not resident:  # as an index kept outside the process: records fetched per batch
        daemon.pipeline.resident = None
    reference = Reference()
    ordered = sorted(enumerate(copies), key=lambda item: (item[1][2], item[0]))
    times = sorted({c[2] for c in copies})
    for t in times:
        clock.set(float(t))
        batch = []
        for _, (ev, source, _, variant, style) in [c for c in ordered if c[1][2] == t]:
            event_type = "x.pair" if ev in pair_events else "x.full"
            raw = render(variant, style)
            batch.append((f"e{ev}", source, event_type, 0.0, raw))
            reference.copy(float(t), f"e{ev}", event_type, source, raw)
        good, result = daemon.pipeline.check(batch)
        assert not result.rejections
        await daemon.pipeline.process(good)
        await daemon.pipeline.sweep()
        reference.sweep(float(t))
    clock.set(1000.0)
    await daemon.pipeline.sweep()
    reference.sweep(1000.0)
    for event_id, expected in reference.events.items():
        record = await daemon.runtime.get_event(event_id)
        assert record is not None
        got = [
            (o.kind.name, o.sources if o.kind.name in ("MISSING", "DUPLICATE", "LATE") else ())
            for o in record.outcomes
        ]
        assert got == expected.outcomes, event_id
        assert record.status.name == expected.status, event_id
