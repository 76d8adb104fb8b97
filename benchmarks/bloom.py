"""The Bloom filters that remember deliveries past the index TTL: cost per operation on
the ingest path, memory per 10M ids, and the false-positive rate measured against the
configured one. Compares pybloom-live (the design card's choice) with what HELIOS uses,
rbloom with a stable XXH3-128 hash (daemon/bloom.py).

    .venv/bin/python benchmarks/bloom.py [IDS]    (default 1,000,000 ids per filter)
"""

from __future__ import annotations

import sys
import time

from helios.daemon.bloom import DeliveryFilters, stable_hash
from rbloom import Bloom

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

    # As heliosd uses them: one slice, a filter per source; records added as they close
    # (each id hashed once for its three sources), one lookup per new event.
    filters = DeliveryFilters(SOURCES, n, 0.001, 3600.0, 1)
    batch = 333  # records closed per flush of a 1000-copy batch
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        filters.add_records([(i, 0b111) for i in ids[start : start + batch]], 0.0)
    add = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in strangers:
        filters.delivered(s, 0b110)
    check = time.perf_counter() - t0
    copies = 3 * n
    print(
        f"heliosd (3 sources): {per_op(add + check, copies)} per copy amortised "
        f"(an event of 3 copies: add to 3 filters {per_op(add, n)}, "
        f"new-event lookup {per_op(check, n)})"
    )
    view = filters.stats()
    print(
        f"  estimated false positives at this fill: {view.false_positive_rate:.4%} per filter "
        f"(configured {view.configured_error_rate:.2%}); {view.bytes / 3 / 1e6:.2f} MB per filter"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
