"""Which sources delivered which events, remembered past the index TTL: per source, a
ring of Bloom filters, one per time slice (hourly by default), the oldest dropped.

The index forgets a record after `index.ttl_seconds`. A copy that arrives after that
would open a new window, and the window would close MISSING for every source that
delivered long ago: a fabricated outcome, and in auto mode a replay of copies that
were delivered. The filters answer "did every other source deliver event Y, recorded in
one slice?": if so the copy is of an old event, LATE (its source was never seen) or
DUPLICATE (it was).

Records are added when they close (and again when a late copy heals them), all their
sources into one slice, so a filter holds each event once per delivering source.

Bit-sliced: the `keep` filters of a source are one array of words, bit j of word i
being bit i of slice j's filter. A lookup reads k words per source and ANDs them: the
bits left are the slices holding the id, so "in one slice for every other source" is
an AND across sources, and the ring costs one filter's reads, not `keep` of them (with
a filter per slice, 48 full slices made a new event's lookup 11.9 us). Dropping a slice
clears its bit in every word. Each source hashes with its own seed (XXH3-128, stable
across processes, so the filters can be saved): every source delivers most events, so
with one hash the filters would be nearly the same bits and a false positive of one a
false positive of all (measured: 21 false DUPLICATEs in 200,000 bench events).
benchmarks/bloom.py measures it and compares with pybloom-live and rbloom.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import struct
from collections.abc import Awaitable, Callable, Sequence
from itertools import pairwise
from pathlib import Path

import numpy as np
from helios.daemon.files import write_atomic
from helios.daemon.views import BloomView
from numpy.typing import NDArray
from xxhash import xxh3_128_digest, xxh3_128_intdigest

log = logging.getLogger(__name__)

FORMAT = b"HELIOS-BLOOM-2\n"
_META = struct.Struct("<I")  # length of the JSON that describes the arrays
_M64 = (1 << 64) - 1
# Slice numbers: period number x _PER_PERIOD + the slices opened early in that period.
_PER_PERIOD = 1_000


def _dtype(keep: int) -> type[np.unsignedinteger]:
    for bits, dtype in ((8, np.uint8), (16, np.uint16), (32, np.uint32), (64, np.uint64)):
        if keep <= bits:
            return dtype
    raise ValueError(f"index.bloom.keep must be at most 64, got {keep}")


class DeliveryFilters:
    """Per source, `keep` slices of `capacity / keep` ids at `error_rate` each."""

    def __init__(
        self,
        sources: tuple[str, ...],
        capacity: int,
        error_rate: float,
        rotate_seconds: float,
        keep: int,
    ) -> None:
        self.sources = sources
        self.capacity = max(1, capacity // keep)  # ids per slice
        self.error_rate = error_rate
        self.rotate_seconds = rotate_seconds
        self.keep = keep
        self.m = math.ceil(-self.capacity * math.log(error_rate) / math.log(2) ** 2)
        self.k = max(1, round(self.m / self.capacity * math.log(2)))
        self.dtype = _dtype(keep)
        self.words: list[NDArray[np.unsignedinteger]] = [
            np.zeros(self.m, dtype=self.dtype) for _ in sources
        ]
        self._views = [w.data for w in self.words]  # memoryviews: Python ints, fast reads
        # slot -> [slice number, started (clock), records added]; None: free.
        self.slots: list[list[float] | None] = [None] * keep
        self.live = 0  # bit mask of slots in use
        # Slots whose records may not be in the index (distrust): not asked any more.
        self.distrusted = 0
        self.distrusts = 0  # calls of distrust(): a save waiting for writes checks it
        self._slot: int | None = None  # the current slice's slot
        self.aged_late = 0
        self.aged_duplicates = 0
        self.dirty = False
        self._indexes: dict[int, tuple[int, ...]] = {}  # mask -> source indexes
        self._steps = np.arange(self.k, dtype=np.uint64)

    @property
    def slices(self) -> int:
        return self.live.bit_count()

    def _bits(self, mask: int) -> tuple[int, ...]:
        found = self._indexes.get(mask)
        if found is None:
            found = tuple(i for i in range(len(self.sources)) if mask >> i & 1)
            self._indexes[mask] = found
        return found

    # ---- the ingest path ----------------------------------------------------------------
    def _current(self, now: float) -> int:
        """The slot records go to: a new slice each `rotate_seconds`, and earlier when the
        current one holds its capacity (so no filter passes its error rate; under heavy
        traffic the slices kept then cover less time: the Storage view says how much)."""
        base = int(now // self.rotate_seconds) * _PER_PERIOD
        slot = self._slot
        info = None if slot is None else self.slots[slot]
        if info is not None and info[0] >= base and info[2] < self.capacity:
            return slot  # type: ignore[return-value]
        number = base if info is None or info[0] < base else int(info[0]) + 1
        return self._open_slice(number, now)

    def _open_slice(self, number: int, now: float) -> int:
        free = [j for j in range(self.keep) if not self.live >> j & 1]
        if free:
            slot = free[0]
        else:  # drop the oldest slice: clear its bit everywhere
            slot = min(range(self.keep), key=lambda j: self.slots[j][0])  # type: ignore[index]
            keep_bits = self.dtype(~(1 << slot) & ((1 << (8 * self.dtype().nbytes)) - 1))
            for words in self.words:
                np.bitwise_and(words, keep_bits, out=words)
        self.slots[slot] = [number, now, 0]
        self.live |= 1 << slot
        self.distrusted &= ~(1 << slot)
        self._slot = slot
        self.dirty = True
        return slot

    def distrust(self, since: float, now: float) -> int:
        """Stop asking the slices that took records since `since`: the writes of those
        records may never reach the index (a Kafka member whose session the group ended:
        its writes are refused), so the filters would say an event was delivered that
        nothing stored, and its copies, read again, would be judged LATE or DUPLICATE.
        New records go to a new slice. What is lost: recognising, once they age out of
        the index, the events those slices held. Returns how many slices."""
        live = [j for j in range(self.keep) if self.live >> j & 1]
        order = sorted(live, key=lambda j: self.slots[j][0])  # type: ignore[index]
        ends = {j: self.slots[k][1] for j, k in pairwise(order)}  # type: ignore[index]
        hit = [j for j in live if ends.get(j, now) >= since]
        self.distrusts += 1
        for j in hit:
            self.distrusted |= 1 << j
        if self._slot is not None and self._slot in hit:
            self._open_slice(int(self.slots[self._slot][0]) + 1, now)  # type: ignore[index]
        self.dirty = True
        return len(hit)

    def add(self, event_id: str, seen: int, now: float) -> None:
        """Remember that the sources in the bit mask `seen` delivered `event_id`."""
        self.add_records([(event_id, seen)], now)

    def add_records(self, records: Sequence[tuple[str, int]], now: float) -> None:
        """Remember (event_id, seen mask) pairs, the pipeline's closed records: all the
        sources of a record in one slice. Hashing is per id and source; setting the
        k bits of each is one numpy call per source and flush."""
        start = 0
        while start < len(records):
            slot = self._current(now)
            info = self.slots[slot]
            assert info is not None
            room = max(1, self.capacity - int(info[2]))
            chunk = records[start : start + room]
            bit = self.dtype(1 << slot)
            per_source: list[list[bytes]] = [[] for _ in self.sources]
            masks = {seen for _, seen in chunk}
            if len(masks) == 1:  # the common case: every record of the flush alike
                encoded = [event_id.encode() for event_id, _ in chunk]
                for index in self._bits(masks.pop()):
                    per_source[index] = encoded
            else:
                for event_id, seen in chunk:
                    one = event_id.encode()
                    for index in self._bits(seen):
                        per_source[index].append(one)
            for index, ids in enumerate(per_source):
                if ids:
                    self._set(index, ids, bit)
            info[2] += len(chunk)
            start += len(chunk)
            self.dirty = True

    def _positions(self, index: int, ids: list[bytes]) -> NDArray[np.uint64]:
        """The k positions of each id in source `index`'s words, one row per id: (h1 + i
        h2) mod m, h1 and h2 the halves of the id's hash (as _slots_holding)."""
        digests = b"".join([xxh3_128_digest(e, index) for e in ids])
        pairs = np.frombuffer(digests, dtype=">u8").astype(np.uint64).reshape(-1, 2)
        m = np.uint64(self.m)
        h1 = pairs[:, :1] % m
        h2 = (pairs[:, 1:] | np.uint64(1)) % m
        return (h1 + self._steps * h2) % m  # < 64 m: no overflow

    def _set(self, index: int, ids: list[bytes], bit: np.unsignedinteger) -> None:
        # One bit for the whole flush: where a position repeats, every write is the same
        # value, so plain fancy indexing is right (and 3x faster than bitwise_or.at).
        words = self.words[index]
        flat = self._positions(index, ids).ravel()
        words[flat] |= bit

    def _slots_holding(self, encoded: bytes, index: int, slots: int) -> int:
        """The slots (of `slots`) whose filter of source `index` holds the id: the k
        positions (h1 + i h2) mod m, h1 and h2 the halves of the id's hash."""
        h = xxh3_128_intdigest(encoded, index)
        m = self.m
        position = (h >> 64) % m
        step = ((h & _M64) | 1) % m
        words = self._views[index]
        for _ in range(self.k):
            slots &= words[position]
            if not slots:
                return 0
            position += step
            if position >= m:
                position -= m
        return slots

    def aged(self, event_id: str, others: int) -> bool:
        """Did every source in `others` deliver `event_id`, recorded in one slice? An
        old event's sources are in one slice together; a new event passes only if each
        of those filters errs at once, in the same slice (the product of their rates)."""
        encoded = event_id.encode()
        slots = self.live & ~self.distrusted
        for index in self._bits(others):
            slots = self._slots_holding(encoded, index, slots)
            if not slots:
                return False  # a new event: the common answer, after a few reads
        return True

    def aged_many(self, asks: Sequence[tuple[str, int]]) -> list[bool]:
        """aged() for many (event_id, others) at once, as the reconciler asks for a
        batch: per source, one numpy gather of the k words of every id still in
        question, ANDed along each row. The same answers; about a third of the time per
        id with every slice full (benchmarks/bloom.py), because the reads of many ids
        overlap instead of one Python step each."""
        slots = np.full(len(asks), self.live & ~self.distrusted, dtype=np.uint64)
        others = np.fromiter((o for _, o in asks), dtype=np.int64, count=len(asks))
        encoded: list[bytes] | None = None
        for index in range(len(self.sources)):
            # the ids this source is asked about and that every earlier one held
            rows = np.flatnonzero((others >> index & 1).astype(bool) & (slots != 0))
            if not len(rows):
                continue
            if encoded is None:
                encoded = [event_id.encode() for event_id, _ in asks]
            positions = self._positions(index, [encoded[r] for r in rows])
            held = np.bitwise_and.reduce(self.words[index][positions], axis=1)
            slots[rows] &= held.astype(np.uint64)
        return (slots != 0).tolist()  # type: ignore[no-any-return]

    def delivered(self, event_id: str, mask: int) -> int:
        """The sources in `mask` that delivered `event_id` in some slice kept."""
        encoded = event_id.encode()
        found = 0
        trusted = self.live & ~self.distrusted
        for index in self._bits(mask):
            if self._slots_holding(encoded, index, trusted):
                found |= 1 << index
        return found

    # ---- what the Storage view shows -------------------------------------------------------
    def _false_positive_rate(self, items: float) -> float:
        return float((1.0 - math.exp(-self.k * items / self.m)) ** self.k)

    def stats(self) -> BloomView:
        infos = [info for info in self.slots if info is not None]
        current = self.slots[self._slot] if self._slot is not None else None
        fullest = current[2] if current is not None else 0.0
        miss = 1.0  # a lookup of one source asks every slice: wrong if any of them is
        for info in infos:
            miss *= 1.0 - self._false_positive_rate(info[2])
        return BloomView(
            slices=len(infos),
            capacity_per_filter=self.capacity,
            fill=fullest / self.capacity,
            configured_error_rate=self.error_rate,
            false_positive_rate=self._false_positive_rate(fullest),
            lookup_false_positive_rate=1.0 - miss,
            bytes=sum(w.nbytes for w in self.words),
            aged_late=self.aged_late,
            aged_duplicates=self.aged_duplicates,
            oldest_slice_started=min((info[1] for info in infos), default=0.0),
            slices_set_aside=(self.distrusted & self.live).bit_count(),
        )

    # ---- persistence -------------------------------------------------------------------
    def _shape(self) -> dict[str, object]:
        return {"sources": list(self.sources), "m": self.m, "k": self.k, "keep": self.keep}

    def snapshot(self, saved_at: float) -> bytes | None:
        """Everything, as one blob, if anything changed since the last snapshot (taken
        on the event loop: a copy of the arrays, about 1.8 bytes per id kept)."""
        if not self.dirty:
            return None
        self.dirty = False
        meta = json.dumps(
            {
                **self._shape(),
                "saved_at": saved_at,
                "slots": self.slots,
                "distrusted": self.distrusted,
            }
        )
        encoded = meta.encode()
        return b"".join([FORMAT, _META.pack(len(encoded)), encoded, *map(bytes, self.words)])

    def restore(self, blob: bytes) -> float:
        """Take a snapshot back; returns when it was saved. A blob of another format or
        of other sizing (sources, capacity, error rate, keep changed) raises ValueError
        naming what differs."""
        if not blob.startswith(FORMAT):
            raise ValueError("not a HELIOS Bloom filter file (format HELIOS-BLOOM-2)")
        position = len(FORMAT)
        (length,) = _META.unpack_from(blob, position)
        position += _META.size
        meta = json.loads(blob[position : position + length])
        position += length
        shape = self._shape()
        differs = [key for key in shape if meta.get(key) != shape[key]]
        if differs:
            raise ValueError(f"saved with other {', '.join(differs)}: the sizing changed")
        size = self.m * self.dtype().nbytes
        if len(blob) != position + size * len(self.sources):
            raise ValueError("Bloom filter file is truncated")
        for index in range(len(self.sources)):
            chunk = blob[position + index * size : position + (index + 1) * size]
            self.words[index][:] = np.frombuffer(chunk, dtype=self.dtype)
        self.slots = [None if s is None else [float(v) for v in s] for s in meta["slots"]]
        self.live = sum(1 << j for j, s in enumerate(self.slots) if s is not None)
        self.distrusted = int(meta.get("distrusted", 0)) & self.live
        live = [j for j, s in enumerate(self.slots) if s is not None]
        self._slot = max(live, key=lambda j: self.slots[j][0]) if live else None  # type: ignore[index]
        return float(meta["saved_at"])


class FilterStore:
    """The filters' file, `<data_dir>/bloom/filters.bin`, written atomically (fsynced)
    from a thread."""

    def __init__(self, filters: DeliveryFilters, data_dir: str) -> None:
        self.filters = filters
        self.path = Path(data_dir) / "bloom" / "filters.bin"

    def load(self) -> float | None:
        """Read the saved filters back; returns when they were saved (None: never). A
        damaged file, or one of other sizing, is set aside, not fatal: the filters
        matter only for events older than the index TTL."""
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return self.filters.restore(blob)
        except (ValueError, struct.error, UnicodeDecodeError, KeyError, TypeError) as error:
            aside = self.path.with_suffix(".damaged")
            self.path.replace(aside)
            log.error("Bloom filters in %s unusable (%s); moved to %s", self.path, error, aside)
            return None

    def save(self, blob: bytes) -> None:
        """Write a snapshot (from a thread: it is fsynced)."""
        write_atomic(self.path, blob)

    async def save_stored(self, now: float, stored: Callable[[], Awaitable[bool]]) -> str:
        """Write the filters if they changed since the last save, but only once every
        write handed to the index before the snapshot is stored (`stored()`: False if
        one failed). A record's bits and its write are made in one step
        (Pipeline._flush); the write is stored later. Saved in between, then killed
        with -9, the filters would remember events nothing stored, and their copies,
        sent or read again, would be judged DUPLICATE or LATE. A failed write, or a
        distrust() meanwhile (a write refused): this snapshot is dropped, the next
        run saves."""
        filters = self.filters
        distrusts = filters.distrusts
        blob = filters.snapshot(now)
        if blob is None:
            return "unchanged"
        if not await stored() or filters.distrusts != distrusts:
            filters.dirty = True
            return "not saved: a write it covers was not stored; the next run saves"
        await asyncio.to_thread(self.save, blob)
        return f"{len(blob):,} bytes saved"
