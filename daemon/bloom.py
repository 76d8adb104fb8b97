"""Which sources delivered which events, remembered past the index TTL: a ring of Bloom
filters per source, one per time slice (hourly by default), the oldest dropped.

The index forgets a record after `index.ttl_seconds`. A copy that arrives after that
would open a new window, and the window would close MISSING for every source that
delivered long ago: a fabricated outcome, and in auto mode a replay of copies that
were delivered. The filters answer "has source X delivered event Y?" for events whose
records left: a copy whose every other expected source is in the filters is an old
event, LATE (its source was never seen) or DUPLICATE (it was).

Records are added when they close (and again when a late copy heals them), so a
filter holds each event once per delivering source, not once per copy.

The filters are rbloom's (Rust) with a stable 128-bit hash computed here (XXH3-128 of
the event id), so they can be saved and loaded: Python's own `hash` changes per
process. Each source hashes with its own seed (see stable_hash). benchmarks/bloom.py compares this
with pybloom-live (docs/storage.md has the figures and the choice).
"""

from __future__ import annotations

import logging
import math
import struct
from collections.abc import Iterable
from pathlib import Path

from helios.daemon.files import write_atomic
from helios.daemon.views import BloomView
from rbloom import Bloom
from xxhash import xxh3_128_intdigest

log = logging.getLogger(__name__)

FORMAT = b"HELIOS-BLOOM-1\n"
_TIME = struct.Struct("<d")  # when the slice was saved (clock seconds)
_HEADER = struct.Struct("<II")  # source name length, filter length


_HALF = 1 << 127


def stable_hash(event_id: str, seed: int = 0) -> int:
    """A 128-bit signed hash that is the same in every process (rbloom's contract):
    XXH3-128, 0.08 us, where BLAKE2b took 0.43 us. Each source's filters use their own
    seed: filters of one size fed mostly the same ids (every source delivers most
    events) would otherwise be nearly the same bit array, and a false positive of one
    would be a false positive of all (measured: 21 false DUPLICATEs in 200,000 events
    with one hash, where independent hashes make it about 1 in a billion)."""
    return xxh3_128_intdigest(event_id.encode(), seed) - _HALF


def _identity(value: int) -> int:
    return value


class DeliveryFilters:
    """Per source, a filter per time slice of `rotate_seconds`, `keep` slices kept; each
    sized for `capacity / keep` event ids at `error_rate`, so the ring as a whole holds
    `capacity` at about `error_rate` per filter."""

    def __init__(
        self,
        sources: tuple[str, ...],
        capacity: int,
        error_rate: float,
        rotate_seconds: float,
        keep: int,
    ) -> None:
        self.sources = sources
        self.capacity = max(1, capacity // keep)
        self.error_rate = error_rate
        self.rotate_seconds = rotate_seconds
        self.keep = keep
        # slice number -> one filter per source index, oldest slice first.
        self.slices: dict[int, list[Bloom]] = {}
        self.aged_late = 0
        self.aged_duplicates = 0
        # Per source index, its filters of every slice, newest first (lookups).
        self._by_source: list[list[Bloom]] = [[] for _ in sources]
        self._indexes: dict[int, tuple[int, ...]] = {}  # mask -> source indexes
        self._items: dict[int, float] = {}  # estimated ids per slice (stats)
        self._dirty: set[int] = set()  # slices changed since they were last saved

    # ---- the ingest path ----------------------------------------------------------------
    def _current(self, now: float) -> list[Bloom]:
        number = int(now // self.rotate_seconds)
        filters = self.slices.get(number)
        if filters is None:
            filters = self.slices[number] = [self._new() for _ in self.sources]
            self._trim()
        return filters

    def _trim(self) -> None:
        """Keep the newest `keep` slices; refresh the per-source lists."""
        for old in sorted(self.slices)[: -self.keep]:
            del self.slices[old]
        newest_first = [self.slices[n] for n in sorted(self.slices, reverse=True)]
        self._by_source = [[fs[i] for fs in newest_first] for i in range(len(self.sources))]

    def _bits(self, mask: int) -> tuple[int, ...]:
        found = self._indexes.get(mask)
        if found is None:
            found = tuple(i for i in range(len(self.sources)) if mask >> i & 1)
            self._indexes[mask] = found
        return found

    def _new(self) -> Bloom:
        return Bloom(self.capacity, self.error_rate, hash_func=_identity)

    def add(self, event_id: str, seen: int, now: float) -> None:
        """Remember that the sources in the bit mask `seen` delivered `event_id`."""
        filters = self._current(now)
        encoded = event_id.encode()
        for index in self._bits(seen):
            filters[index].add(xxh3_128_intdigest(encoded, index) - _HALF)
        self._dirty.add(int(now // self.rotate_seconds))

    def add_records(self, records: Iterable[tuple[str, int]], now: float) -> None:
        """`add` for many (event_id, seen mask) at once: the pipeline's closed records."""
        filters = self._current(now)
        bits = self._bits
        for event_id, seen in records:
            encoded = event_id.encode()
            for index in bits(seen):
                filters[index].add(xxh3_128_intdigest(encoded, index) - _HALF)
        self._dirty.add(int(now // self.rotate_seconds))

    def delivered(self, event_id: str, mask: int) -> int:
        """The sources in `mask` that delivered `event_id` in some slice kept, as a mask;
        stops at the first source no slice has (the common answer, for a new event)."""
        encoded = event_id.encode()
        by_source = self._by_source
        found = 0
        for index in self._bits(mask):
            key = xxh3_128_intdigest(encoded, index) - _HALF
            for bloom in by_source[index]:
                if key in bloom:
                    found |= 1 << index
                    break
            else:
                return found
        return found

    # ---- what the Storage view shows -------------------------------------------------------
    def stats(self) -> BloomView:
        if not self.slices:
            return BloomView(0, self.capacity, 0.0, self.error_rate, 0.0, 0.0, 0, 0, 0)
        current = max(self.slices)
        fills: list[float] = []
        for number, filters in self.slices.items():
            items = self._items.get(number)
            if items is None or number == current:  # a slice no longer current is done
                items = max(f.approx_items for f in filters)  # counts bits: cache it
                self._items[number] = items
            fills.append(items)
        for number in [n for n in self._items if n not in self.slices]:
            del self._items[number]
        fullest = self._items[current]
        miss = 1.0  # a lookup asks every slice: it is wrong if any of them is
        for items in fills:
            miss *= 1.0 - self._false_positive_rate(items)
        filters = [f for fs in self.slices.values() for f in fs]
        return BloomView(
            slices=len(self.slices),
            capacity_per_filter=self.capacity,
            fill=fullest / self.capacity,
            configured_error_rate=self.error_rate,
            false_positive_rate=self._false_positive_rate(fullest),
            lookup_false_positive_rate=1.0 - miss,
            bytes=sum(f.size_in_bits for f in filters) // 8,
            aged_late=self.aged_late,
            aged_duplicates=self.aged_duplicates,
        )

    def _false_positive_rate(self, items: float) -> float:
        bits = self._new_bits()
        hashes = max(1, round(bits / self.capacity * math.log(2)))
        return (1.0 - math.exp(-hashes * items / bits)) ** hashes

    def _new_bits(self) -> int:
        # rbloom's sizing: ceil(-n ln p / ln2^2) bits (as pybloom-live's, one bit array).
        return math.ceil(-self.capacity * math.log(self.error_rate) / math.log(2) ** 2)

    # ---- persistence -------------------------------------------------------------------
    def snapshots(self, saved_at: float) -> dict[int, bytes]:
        """The slices changed since the last call, each as one blob (taken on the event
        loop; only the current slice changes, 1.1 MB for three sources by default)."""
        changed = {
            n: self._encode(self.slices[n], saved_at) for n in self._dirty if n in self.slices
        }
        self._dirty.clear()
        return changed

    def _encode(self, filters: list[Bloom], saved_at: float) -> bytes:
        parts = [FORMAT, _TIME.pack(saved_at)]
        for name, bloom in zip(self.sources, filters, strict=True):
            data = bloom.save_bytes()
            encoded = name.encode()
            parts += [_HEADER.pack(len(encoded), len(data)), encoded, data]
        return b"".join(parts)

    def restore(self, number: int, blob: bytes) -> float:
        """Take one slice saved by `snapshots`; returns when it was saved. A source not
        configured any more is dropped, a new one starts empty; a blob of another
        format raises ValueError naming it."""
        if not blob.startswith(FORMAT):
            raise ValueError("not a HELIOS Bloom filter slice (format HELIOS-BLOOM-1)")
        position = len(FORMAT)
        (saved_at,) = _TIME.unpack_from(blob, position)
        position += _TIME.size
        by_name: dict[str, Bloom] = {}
        while position < len(blob):
            name_len, data_len = _HEADER.unpack_from(blob, position)
            position += _HEADER.size
            name = blob[position : position + name_len].decode()
            position += name_len
            data = blob[position : position + data_len]
            if len(data) != data_len:
                raise ValueError("Bloom filter slice is truncated")
            position += data_len
            by_name[name] = Bloom.load_bytes(data, _identity)
        self.slices[number] = [by_name.get(name) or self._new() for name in self.sources]
        self._trim()
        return float(saved_at)


class FilterStore:
    """The filters' files: `<data_dir>/bloom/slice-<number>.bin`, one per time slice,
    written atomically (fsynced) from a thread; a slice dropped from the ring loses its
    file."""

    def __init__(self, filters: DeliveryFilters, data_dir: str) -> None:
        self.filters = filters
        self.directory = Path(data_dir) / "bloom"

    def load(self) -> float | None:
        """Read the saved slices back; returns when the newest was saved (None: none).
        A damaged slice is set aside, not fatal: the filters matter only for events
        older than the index TTL."""
        newest: float | None = None
        if not self.directory.is_dir():
            return None
        for path in sorted(self.directory.glob("slice-*.bin")):
            try:
                number = int(path.stem.removeprefix("slice-"))
                saved_at = self.filters.restore(number, path.read_bytes())
            except (ValueError, struct.error, UnicodeDecodeError) as error:
                aside = path.with_suffix(".damaged")
                path.replace(aside)
                log.error("Bloom filter slice %s unreadable (%s); moved to %s", path, error, aside)
                continue
            newest = saved_at if newest is None else max(newest, saved_at)
        return newest

    def save(self, blobs: dict[int, bytes]) -> None:
        """Write the changed slices and drop the files of slices no longer kept (call
        from a thread: files are fsynced)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for number, blob in blobs.items():
            write_atomic(self.directory / f"slice-{number}.bin", blob)
        kept = set(self.filters.slices)
        for path in self.directory.glob("slice-*.bin"):
            stem = path.stem.removeprefix("slice-")
            if stem.lstrip("-").isdigit() and int(stem) not in kept:
                path.unlink(missing_ok=True)
