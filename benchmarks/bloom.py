"""The Bloom filters that remember deliveries past the index TTL: cost per operation on
the ingest path, memory per 10M ids, and the false-positive rate measured against the
configured one. Compares pybloom-live (the design card's choice),
rbloom (Rust, one filter) with a stable XXH3-128 hash, and heliosd's bit-sliced ring
(daemon/bloom.py) as heliosd uses it: every slice full.

    .venv/bin/python benchmarks/bloom.py [IDS]    (default 1,000,000 ids per filter and lookups)
"""

from __future__ import annotations

import sys
import time

from helios.daemon.bloom import DeliveryFilters
from rbloom import Bloom
from xxhash import xxh3_128_intdigest


def stable_hash(event_id: str) -> int:
    return xxh3_128_intdigest(event_id.encode()) - (1 << 127)


SOURCES = ("aws", "gcp", "azure")


def per_op(seconds: float, ops: int) -> str:
    return f"{seconds / ops * 1e6:.2f} us"


def main(n: int) -> None:
    ids = [f"order-{i:012d}-7f3a" for i in range(n)]
    strangers = [f"refund-{i:012d}-9c1e" for i in range(n)]
    print(f"{n:,} event ids, error rate 0.1% at capacity\n")

    try:
        from pybloom_live import BloomFilter
    except ImportError:
        print("pybloom-live: not installed (pip install pybloom-live)")
    else:
        pb = BloomFilter(capacity=n, error_rate=0.001)
        t0 = time.perf_counter()
        for i in ids:
            pb.add(i)
        add = time.perf_counter() - t0
        t0 = time.perf_counter()
        false = sum(1 for s in strangers if s in pb)
        check = time.perf_counter() - t0
        size = BloomFilter(capacity=10_000_000, error_rate=0.001).num_bits / 8 / 1e6
        print(
            f"pybloom-live: add {per_op(add, n)}, check {per_op(check, n)}; "
            f"{size:.2f} MB per 10M ids; measured false positives {false / n:.4%}"
        )

    rb = Bloom(n, 0.001, hash_func=lambda k: k)
    t0 = time.perf_counter()
    for i in ids:
        rb.add(stable_hash(i))
    add = time.perf_counter() - t0
    t0 = time.perf_counter()
    false = sum(1 for s in strangers if stable_hash(s) in rb)
    check = time.perf_counter() - t0
    size = Bloom(10_000_000, 0.001).size_in_bits / 8 / 1e6
    print(
        f"rbloom + XXH3-128 (one filter): add {per_op(add, n)}, check {per_op(check, n)}; "
        f"{size:.2f} MB per 10M ids; measured false positives {false / n:.4%}"
    )

    # As heliosd uses them, sized as by default (10M ids per source in 64 slices) and with
    # every slice full: records added as they close (three sources each), and the one
    # lookup a new event makes ("did every other source deliver it, in one slice?").
    keep = 64
    filters = DeliveryFilters(SOURCES, 10_000_000, 0.001, 3600.0, keep)
    batch = 333  # records closed per flush of a 1000-copy batch
    total = filters.capacity * keep
    add = 0.0  # only add_records is timed: heliosd has the ids when it adds them
    for start in range(0, total, batch):
        records = [(f"order-{i:012d}-7f3a", 0b111) for i in range(start, min(total, start + batch))]
        t0 = time.perf_counter()
        filters.add_records(records, 0.0)
        add += time.perf_counter() - t0
    # The lookups as the reconciler asks them: once per batch, for the first copy of
    # each event (333 new events in a 1000-copy batch), and one by one for comparison.
    asks = [(s, 0b110) for s in strangers]
    t0 = time.perf_counter()
    answers = []
    for start in range(0, n, batch):
        answers += filters.aged_many(asks[start : start + batch])
    check = time.perf_counter() - t0
    false = sum(answers)
    t0 = time.perf_counter()
    alone = [filters.aged(s, 0b110) for s in strangers]
    one_by_one = time.perf_counter() - t0
    assert alone == answers, "aged_many and aged disagree"
    view = filters.stats()
    print(
        f"heliosd, default sizing, {view.slices} slices full ({total:,} ids per source, "
        f"{view.bytes / 3 / 1e6:.2f} MB per source):"
    )
    print(
        f"  {(add / total + check / n) / 3 * 1e6:.2f} us per copy amortised (an event of 3 "
        f"copies: add to 3 filters {per_op(add, total)}, new-event lookup {per_op(check, n)} "
        f"asked per batch of {batch}; {per_op(one_by_one, n)} asked one at a time)"
    )
    print(
        f"  new events taken for old ones: {false} of {n:,}; estimated false positives "
        f"{view.false_positive_rate:.4%} per filter (configured {view.configured_error_rate:.2%})"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
