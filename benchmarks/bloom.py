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
    # lookup a window makes when it closes with sources missing ("did every missing
    # source deliver it, in one slice?"). A window that closes with every copy asks
    # nothing, so the ingest path pays only the adds.
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
    # Windows of new events closing with gcp and azure missing, each asked as the
    # sweep asks: one at a time.
    t0 = time.perf_counter()
    false = sum(1 for s in strangers if filters.aged(s, 0b110))
    check = time.perf_counter() - t0
    view = filters.stats()
    print(
        f"heliosd, default sizing, {view.slices} slices full ({total:,} ids per source, "
        f"{view.bytes / 3 / 1e6:.2f} MB per source):"
    )
    print(
        f"  {add / total / 3 * 1e6:.2f} us per copy amortised on the ingest path (an event of "
        f"3 copies added to 3 filters: {per_op(add, total)}); a window closing with sources "
        f"missing asks once: {per_op(check, n)}; were every window to close so, "
        f"{(add / total + check / n) / 3 * 1e6:.2f} us per copy"
    )
    print(
        f"  windows of new events missing two sources taken for old events: {false} of "
        f"{n:,}; estimated false positives {view.false_positive_rate:.4%} per filter "
        f"(configured {view.configured_error_rate:.2%})"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
