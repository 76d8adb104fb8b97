"""Index shards: event ids map to N indexes of one backend (several SQLite files, several
Redis servers) by jump consistent hash; writes split by shard and lookups fan out in
parallel. With `index.shards = 1` (the default) the daemon uses the backend directly.

Jump hash (Lamping and Veach, 2014) moves the fewest ids when a shard is added: going
from N to N + 1 shards, 1/(N + 1) of the ids move, all of them to the new shard.
"""

from __future__ import annotations

import asyncio
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)

from helios.daemon.model import EventRecord, Outcome
from helios.daemon.query import OutcomeQuery
from helios.daemon.types import IndexBackend, Resume, forgotten_until
from xxhash import xxh3_64_intdigest

_MASK = (1 << 64) - 1


def jump(event_id: str, shards: int) -> int:
    """The shard of an event id, 0..shards-1 (jump consistent hash of XXH3-64)."""
    key = xxh3_64_intdigest(event_id.encode())
    b, j = -1, 0
    while j < shards:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


class _All:
    """Awaits several shards' writes in turn, with no task per write."""

    __slots__ = ("parts",)

    def __init__(self, parts: list[Awaitable[None]]) -> None:
        self.parts = parts

    def __await__(self) -> Generator[object, None, None]:
        for part in self.parts:
            yield from part.__await__()


class ShardedRecords(Mapping[str, EventRecord]):
    """The resident records of every shard, looked up in the shard of the id."""

    def __init__(self, maps: list[Mapping[str, EventRecord]]) -> None:
        self.maps = maps
        self.n = len(maps)

    def __getitem__(self, event_id: str) -> EventRecord:
        return self.maps[jump(event_id, self.n)][event_id]

    def get(self, event_id: str, default: EventRecord | None = None) -> EventRecord | None:  # type: ignore[override]
        return self.maps[jump(event_id, self.n)].get(event_id, default)

    def __len__(self) -> int:
        return sum(len(m) for m in self.maps)

    def __iter__(self) -> Iterator[str]:
        for m in self.maps:
            yield from m


class ShardedIndex:
    """N indexes of one backend as one."""

    def __init__(self, shards: list[IndexBackend]) -> None:
        self.shards = shards
        self.n = len(shards)
        maps = [s.resident for s in shards]
        self.resident: Mapping[str, EventRecord] | None = (
            None
            if any(m is None for m in maps)
            else ShardedRecords([m for m in maps if m is not None])
        )
        self.durable = all(s.durable for s in shards)
        self.moved = 0  # records re-homed at open after the number of shards changed
        # Marks the shards disagree on, as each shard holds them (read_marks), and the
        # copies found stored already by their shard's mark (stored_already).
        self._floors: dict[str, list[int]] = {}
        self.skipped = 0

    def _split(self, ids: Collection[str]) -> list[list[str]]:
        parts: list[list[str]] = [[] for _ in self.shards]
        for event_id in ids:
            parts[jump(event_id, self.n)].append(event_id)
        return parts

    async def open(self) -> Resume:
        resumes = [await s.open() for s in self.shards]
        saved = [r.saved_at for r in resumes if r.saved_at is not None]
        opened = [rec for r in resumes for rec in r.open_records]
        self._rehome()
        return Resume(opened, max(saved) if saved else None, max(r.last_sequence for r in resumes))

    def _rehome(self) -> None:
        """After a shard was added: a record found in a shard it no longer maps to is
        written to its shard, unless that shard has a version already (a newer one:
        it was written there since). Only resident shards can be walked so."""
        if self.resident is None:
            return
        for number, shard in enumerate(self.shards):
            records = shard.resident
            assert records is not None
            strays: list[list[EventRecord]] = [[] for _ in self.shards]
            for event_id, rec in records.items():
                home = jump(event_id, self.n)
                if home != number:
                    target = self.shards[home].resident
                    if target is not None and event_id not in target:
                        strays[home].append(rec)
            for home, recs in enumerate(strays):
                if recs:
                    self.shards[home].write(recs, [])
                    self.moved += len(recs)

    def write(
        self,
        records: Sequence[EventRecord],
        outcomes: Sequence[Outcome],
        marks: Mapping[str, int] | None = None,
    ) -> Awaitable[None]:
        """Each shard takes its part; marks go to every shard that writes (and all
        when none does), so that read_marks' minimum is a mark every shard holds."""
        n = self.n
        recs: list[list[EventRecord]] = [[] for _ in self.shards]
        outs: list[list[Outcome]] = [[] for _ in self.shards]
        for rec in records:
            recs[jump(rec.event_id, n)].append(rec)
        for outcome in outcomes:
            outs[jump(outcome.event_id, n)].append(outcome)
        return _All(
            [
                s.write(r, o, marks)
                for s, r, o in zip(self.shards, recs, outs, strict=True)
                if r or o or marks
            ]
        )

    async def claim(self, names: Collection[str], scope: str = "") -> None:
        """On every shard: a fenced member's writes go to all of them."""
        await asyncio.gather(*(s.claim(names, scope) for s in self.shards))

    async def shared(self) -> None:
        await asyncio.gather(*(s.shared() for s in self.shards))

    def away(self) -> str | None:
        return next((why for why in (s.away() for s in self.shards) if why), None)

    def when_refused(self, call: Callable[[float, int], None]) -> None:
        for shard in self.shards:
            shard.when_refused(call)

    async def disown(self, names: Collection[str]) -> None:
        await asyncio.gather(*(s.disown(names) for s in self.shards))

    async def read_marks(self, prefix: str) -> dict[str, int]:
        """A mark as every shard has it: the smallest (a crash between two shards'
        writes leaves the later shards behind; their mark is the one that holds).
        Where the shards disagree, each one's mark is kept for stored_already()."""
        parts = await asyncio.gather(*(s.read_marks(prefix) for s in self.shards))
        keys = set().union(*parts)
        found = {k: min(p.get(k, -1) for p in parts) for k in keys}
        for k in keys:
            if k.endswith("@"):
                continue  # when a mark was written, not a position
            each = [p.get(k, -1) for p in parts]
            if max(each) > found[k]:
                self._floors[k] = each
            else:
                self._floors.pop(k, None)
        return found

    def stored_already(self, name: str, position: int, event_id: str) -> bool:
        """Whether the copy at `position` of `name` is stored already in its own shard:
        one a source delivers again after a crash between two shards' writes, above
        the smallest mark but at or below its shard's (so not a DUPLICATE of itself)."""
        each = self._floors.get(name)
        if each is None or position > max(each):
            return False
        if position <= each[jump(event_id, self.n)]:
            self.skipped += 1
            return True
        return False

    async def open_windows(self, wanted: Callable[[str], bool] | None = None) -> list[EventRecord]:
        parts = await asyncio.gather(*(s.open_windows(wanted) for s in self.shards))
        return [rec for part in parts for rec in part]

    async def get_many(self, event_ids: Collection[str]) -> dict[str, EventRecord]:
        parts = self._split(event_ids)
        found: dict[str, EventRecord] = {}
        for part in await asyncio.gather(
            *(s.get_many(ids) for s, ids in zip(self.shards, parts, strict=True) if ids)
        ):
            found.update(part)
        return found

    async def list_outcomes(
        self, query: OutcomeQuery, page_size: int, before: int | None
    ) -> tuple[list[Outcome], int | None]:
        pages = await asyncio.gather(
            *(s.list_outcomes(query, page_size, before) for s in self.shards)
        )
        merged = sorted((o for page, _ in pages for o in page), key=lambda o: -o.sequence)
        more = len(merged) > page_size or any(token is not None for _, token in pages)
        page = merged[:page_size]
        return page, (page[-1].sequence if more and page else None)

    async def expire(self, now: float, keep_after: float) -> int:
        return sum(await asyncio.gather(*(s.expire(now, keep_after) for s in self.shards)))

    async def count(self) -> int:
        return sum(await asyncio.gather(*(s.count() for s in self.shards)))

    def forgotten_until(self, now: float) -> float:
        return max(forgotten_until(s, now) for s in self.shards)

    def pushback(self) -> str | None:
        return next((r for s in self.shards if (r := s.pushback()) is not None), None)

    def describe(self) -> dict[str, str]:
        described = [s.describe() for s in self.shards]
        details: dict[str, str] = {
            "backend": described[0].get("backend", "?"),
            "durability": described[0].get("durability", ""),
        }
        if self.resident is not None:
            sizes = [len(s.resident or {}) for s in self.shards]
            mean = sum(sizes) / len(sizes)
            worst = max(sizes) / mean if mean else 1.0
            details["shards"] = (
                f"{self.n} by jump hash; closed records per shard "
                f"{' / '.join(f'{x:,}' for x in sizes)} (largest {worst:.2f}x the mean)"
            )
        else:
            details["shards"] = f"{self.n} by jump hash"
        if self.moved:
            details["shards"] += f"; {self.moved:,} records moved to a new shard at start"
        if self.skipped:
            details["shards"] += (
                f"; {self.skipped:,} copies delivered again were found stored in their shard"
            )
        for number, d in enumerate(described):
            for key, value in d.items():
                if key not in ("backend", "durability"):
                    details[f"shard {number} {key}"] = value
        return details

    async def close(self) -> None:
        for s in self.shards:
            await s.close()
