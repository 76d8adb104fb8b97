"""The Bloom filters: a copy of an event whose record left the index is LATE or
DUPLICATE, not a new window that would close MISSING; their measured false-positive
rate is the configured one; they survive a restart, and a damaged file costs only
itself."""

from __future__ import annotations

import random

from helios.daemon.bloom import DeliveryFilters, FilterStore

from tests.helpers import copy, feed, make_config, make_daemon

SOURCES = ("aws", "gcp", "azure")


async def _forget(daemon, seconds: float) -> None:
    """Move time on, close what is due and age the index past its TTL."""
    daemon.clock.advance(seconds)
    await daemon.pipeline.sweep()
    now = daemon.clock.now()
    await daemon.index.expire(now, now)


def _outcomes(daemon, event_id: str) -> list[str]:
    record = daemon.index.records.get(event_id) or daemon.reconciler.open.get(event_id)
    return [o.kind.name for o in record.outcomes] if record else []


async def test_copies_of_forgotten_events_are_late_or_duplicate_not_new_windows():
    daemon = make_daemon(make_config(INDEX__TTL_SECONDS="60"))
    await feed(daemon, copy("half", "aws"), copy("half", "gcp"))  # azure never comes
    await feed(daemon, *(copy("whole", s) for s in SOURCES))
    await _forget(daemon, 15)  # the window of "half" closes MISSING azure
    assert _outcomes(daemon, "half") == ["MISSING"]
    await _forget(daemon, 120)
    assert await daemon.index.count() == 0  # both records aged out of the index

    await feed(daemon, copy("half", "azure"), copy("whole", "gcp"), copy("new", "aws"))
    assert "half" not in daemon.reconciler.open and "whole" not in daemon.reconciler.open
    assert _outcomes(daemon, "half") == ["LATE"]
    assert _outcomes(daemon, "whole") == ["DUPLICATE"]
    assert "new" in daemon.reconciler.open  # a new event still opens its window
    late = daemon.index.records["half"].outcomes[0]
    assert late.sources == ("azure",) and late.late_by == 60.0  # at least the TTL
    view = daemon.services.reads.storage().bloom
    assert view is not None and (view.aged_late, view.aged_duplicates) == (1, 1)

    # Nothing is fabricated later: no window of them closes MISSING.
    await _forget(daemon, 15)
    assert _outcomes(daemon, "half") == ["LATE"]
    assert _outcomes(daemon, "new") == ["MISSING"]


async def test_without_the_filters_a_forgotten_event_opens_a_window_that_closes_missing():
    daemon = make_daemon(make_config(INDEX__TTL_SECONDS="60", INDEX__BLOOM__ENABLED="false"))
    await feed(daemon, *(copy("whole", s) for s in SOURCES))
    await _forget(daemon, 120)
    await feed(daemon, copy("whole", "gcp"))
    assert "whole" in daemon.reconciler.open
    await _forget(daemon, 15)
    assert _outcomes(daemon, "whole") == ["MISSING"]  # what the filters prevent
    assert daemon.services.reads.storage().bloom is None


async def test_a_route_of_one_source_is_never_judged_by_the_filters():
    daemon = make_daemon(
        make_config(
            '[[routes]]\nevent_type = "solo.*"\nsources = ["aws"]\n', INDEX__TTL_SECONDS="60"
        )
    )
    await feed(daemon, copy("s", "aws", event_type="solo.x"))
    await _forget(daemon, 120)
    await feed(daemon, copy("s", "aws", event_type="solo.x"))
    assert _outcomes(daemon, "s") == ["COMPLETE"]  # judged afresh, as without filters


def test_the_measured_false_positive_rate_is_the_configured_one():
    capacity = 100_000
    filters = DeliveryFilters(SOURCES, capacity, 0.001, 3600.0, 1)
    filters.add_records([(f"known-{i}", 0b001) for i in range(capacity)], 0.0)
    assert all(filters.delivered(f"known-{i}", 0b001) for i in range(0, capacity, 97))
    strangers = 400_000
    false = sum(1 for i in range(strangers) if filters.delivered(f"other-{i}", 0b001))
    assert 0.0008 < false / strangers < 0.0012, false / strangers  # 0.1% +- 5 sigma
    view = filters.stats()
    assert abs(view.false_positive_rate - 0.001) < 0.0001
    assert abs(view.fill - 1.0) < 0.02
    # Another source's filter did not take these ids.
    assert sum(1 for i in range(10_000) if filters.delivered(f"known-{i}", 0b010)) < 30


def test_ten_million_ids_at_a_tenth_of_a_percent_take_at_most_18_mb():
    filters = DeliveryFilters(("aws",), 10_000_000, 0.001, 3600.0, 64)  # the default ring
    filters.add_records([("one", 1)], 0.0)
    assert filters.stats().bytes <= 18_000_000


def test_slices_rotate_and_the_oldest_leave():
    filters = DeliveryFilters(SOURCES, 1_000, 0.01, 60.0, 3)
    for minute in range(5):
        filters.add_records([(f"m{minute}", 0b001)], minute * 60.0 + 1)
    assert filters.slices == 3
    assert not filters.delivered("m0", 0b001) and not filters.delivered("m1", 0b001)
    assert all(filters.delivered(f"m{m}", 0b001) for m in (2, 3, 4))


def test_slices_distrusted_since_a_time_are_not_asked_and_stay_so_after_a_restart(tmp_path):
    """A Kafka member whose session the group ended may have its writes refused: the
    slices that took records since the session began are set aside (the events they
    hold may be in no index), older ones still answer, new records go to a new slice."""
    filters = DeliveryFilters(SOURCES, 1_000, 0.01, 60.0, 8)
    filters.add_records([("old", 0b111)], 10.0)  # minute 0
    filters.add_records([("before", 0b111)], 70.0)  # minute 1, before the session began
    filters.add_records([("refused", 0b111)], 100.0)  # minute 1, after: its write refused
    assert filters.distrust(90.0, 110.0) == 1  # minute 1's slice
    assert filters.aged("old", 0b110) and filters.delivered("old", 0b001)
    assert not filters.aged("refused", 0b110) and not filters.delivered("refused", 0b001)
    assert not filters.aged("before", 0b110)  # in the same slice: set aside with it
    filters.add_records([("after", 0b111)], 115.0)  # a new slice, trusted
    assert filters.aged("after", 0b110)
    store = FilterStore(filters, str(tmp_path))
    store.save(filters.snapshot(120.0))
    again = DeliveryFilters(SOURCES, 1_000, 0.01, 60.0, 8)
    assert FilterStore(again, str(tmp_path)).load() == 120.0
    assert again.aged("old", 0b110) and again.aged("after", 0b110)
    assert not again.aged("refused", 0b110)


async def test_a_snapshot_whose_writes_failed_or_were_refused_meanwhile_is_not_saved(tmp_path):
    """save_stored waits for the index's writes; one failed, or a distrust() while it
    waited (a write refused): nothing is written, and the next run saves."""
    filters = DeliveryFilters(SOURCES, 1_000, 0.01, 60.0, 8)
    store = FilterStore(filters, str(tmp_path))
    filters.add_records([("e1", 0b111)], 10.0)

    async def failed() -> bool:
        return False

    async def refused_meanwhile() -> bool:
        filters.distrust(5.0, 11.0)
        return True

    async def stored() -> bool:
        return True

    assert (await store.save_stored(11.0, failed)).startswith("not saved")
    assert not store.path.exists() and filters.dirty
    assert (await store.save_stored(12.0, refused_meanwhile)).startswith("not saved")
    assert not store.path.exists()
    assert (await store.save_stored(13.0, stored)).endswith("bytes saved")
    again = DeliveryFilters(SOURCES, 1_000, 0.01, 60.0, 8)
    assert FilterStore(again, str(tmp_path)).load() == 13.0
    assert not again.aged("e1", 0b110)  # set aside by the distrust, and saved so
    assert await store.save_stored(14.0, failed) == "unchanged"


def test_filters_survive_a_save_and_a_damaged_or_resized_file_is_set_aside(tmp_path):
    filters = DeliveryFilters(SOURCES, 1_000, 0.01, 60.0, 3)
    store = FilterStore(filters, str(tmp_path))
    rng = random.Random(1)
    ids = [f"e{rng.random()}" for _ in range(200)]
    filters.add_records([(i, 0b101) for i in ids[:100]], 10.0)
    filters.add_records([(i, 0b010) for i in ids[100:]], 70.0)
    store.save(filters.snapshot(70.0))
    assert filters.snapshot(71.0) is None  # nothing changed since

    again = DeliveryFilters(SOURCES, 1_000, 0.01, 60.0, 3)
    assert FilterStore(again, str(tmp_path)).load() == 70.0
    assert all(again.delivered(i, 0b111) == 0b101 for i in ids[:100])
    assert all(again.delivered(i, 0b111) == 0b010 for i in ids[100:])
    assert again.slices == 2 and again.stats().fill == filters.stats().fill

    resized = DeliveryFilters(SOURCES, 2_000, 0.01, 60.0, 3)
    assert FilterStore(resized, str(tmp_path)).load() is None  # capacity changed
    assert (tmp_path / "bloom" / "filters.damaged").exists()
    assert resized.slices == 0

    (tmp_path / "bloom" / "filters.bin").write_bytes(b"not a filter")
    damaged = DeliveryFilters(SOURCES, 1_000, 0.01, 60.0, 3)
    assert FilterStore(damaged, str(tmp_path)).load() is None
    assert not (tmp_path / "bloom" / "filters.bin").exists()


async def test_the_filters_are_saved_on_stop_and_back_after_a_restart(tmp_path):
    config = make_config(
        INDEX__BACKEND='"sqlite"', INDEX__TTL_SECONDS="60", DAEMON__DATA_DIR=f'"{tmp_path}"'
    )
    daemon = make_daemon(config)
    await daemon.start()
    await feed(daemon, *(copy("whole", s) for s in SOURCES))
    await daemon.pipeline.drain()
    await daemon.stop()
    assert (tmp_path / "bloom" / "filters.bin").exists()

    again = make_daemon(config)
    await again.start()
    try:
        assert again.reconciler.filters is not None
        assert again.reconciler.filters.delivered("whole", 0b111) == 0b111
    finally:
        await again.stop()


def test_the_sources_filters_err_independently():
    """Every source delivered the same ids, so with one hash the three filters would be
    one bit array: a stranger hitting one would hit all (a new event taken for an old
    one). With a seed per source, a stranger hitting two filters is about p squared."""
    capacity = 50_000
    filters = DeliveryFilters(SOURCES, capacity, 0.01, 3600.0, 1)
    filters.add_records([(f"known-{i}", 0b111) for i in range(capacity)], 0.0)
    strangers = 200_000
    one = sum(1 for i in range(strangers) if filters.delivered(f"s-{i}", 0b010))
    both = sum(1 for i in range(strangers) if filters.delivered(f"s-{i}", 0b110) == 0b110)
    assert 0.008 < one / strangers < 0.012  # 1% per filter, as configured
    assert both / strangers < 0.0005, both  # ~0.01%; one shared hash gave ~1%


def test_a_full_slice_is_followed_by_a_new_one_and_an_old_event_is_judged_within_one():
    filters = DeliveryFilters(SOURCES, 1_000, 0.01, 3600.0, 10)  # 100 ids per slice
    filters.add_records([(f"a{i}", 0b011) for i in range(250)], 5.0)
    assert filters.slices == 3  # 100 + 100 + 50: no filter past its capacity
    assert filters.stats().fill == 0.5
    assert all(filters.aged(f"a{i}", 0b011) for i in range(250))
    # aws in one slice and gcp in another is not one old event's record.
    filters.add_records([("split", 0b001)], 5.0)
    filters.add_records([(f"b{i}", 0b100) for i in range(60)], 5.0)  # fills the slice
    filters.add_records([("split", 0b010)], 5.0)
    assert filters.delivered("split", 0b011) == 0b011
    assert not filters.aged("split", 0b011)


async def test_a_fresh_copy_is_never_judged_by_the_filters():
    """A copy its producer stamped within its route's window of now cannot be of an
    event whose record has closed, so the filters are not asked: even where they say
    the other sources delivered it (here on purpose: a false positive), a new event
    opens its window. An old copy is asked (and one without a stamp, as above)."""
    daemon = make_daemon(make_config(INDEX__TTL_SECONDS="60"))
    filters = daemon.reconciler.filters
    assert filters is not None
    now = daemon.clock.now()
    for event_id in ("fresh", "old"):
        filters.add(event_id, 0b110, now)  # gcp and azure "delivered" it
    await feed(
        daemon,
        copy("fresh", "aws", produced_at=now - 1.0),
        copy("old", "aws", produced_at=now - 3600.0),
    )
    assert "fresh" in daemon.reconciler.open
    assert _outcomes(daemon, "old") == ["LATE"]


def test_a_flush_of_records_alike_or_mixed_sets_the_bits_they_set_one_by_one():
    """add_records takes a flush whose records all name the same sources (the common
    case) in one step per source, and a mixed one record by record: both set exactly the
    bits that adding each record alone sets."""
    rng = random.Random(5)
    mixed = [(f"m{i}", rng.randrange(1, 8)) for i in range(500)]
    alike = [(f"a{i}", 0b101) for i in range(500)]
    together, alone = (DeliveryFilters(SOURCES, 100_000, 0.001, 3600.0, 4) for _ in range(2))
    together.add_records(mixed, 1.0)
    together.add_records(alike, 1.0)
    for record in mixed + alike:
        alone.add_records([record], 1.0)
    assert all(a.any() for a in together.words)
    assert all((a == b).all() for a, b in zip(together.words, alone.words, strict=True))
    assert together.slots == alone.slots
    assert together.delivered("a7", 0b111) == 0b101


def test_asked_for_many_ids_at_once_the_filters_answer_as_asked_one_by_one():
    """aged_many (what the reconciler asks, per batch) against aged, over slices that
    split an event's sources, a slice set aside, strangers and every mask of others."""
    rng = random.Random(7)
    filters = DeliveryFilters(SOURCES, 2_000, 0.05, 3600.0, 8)  # high error: many hits
    filters.add_records([(f"a{i}", rng.randrange(1, 8)) for i in range(600)], 1.0)
    filters.add_records([(f"a{i}", rng.randrange(1, 8)) for i in range(300, 900)], 2.0)
    filters.distrust(1.5, 2.0)  # the slices of the second add are set aside
    filters.add_records([(f"c{i}", 0b111) for i in range(400)], 3.0)
    asks = [(f"{p}{i}", rng.randrange(1, 8)) for p in "acs" for i in range(900)]
    one_by_one = [filters.aged(event_id, others) for event_id, others in asks]
    assert filters.aged_many(asks) == one_by_one
    assert 0 < sum(one_by_one) < len(asks)  # both answers are given, not one for all
    assert filters.aged_many([]) == []


async def test_the_reconciler_asks_the_filters_once_per_batch():
    """A batch of copies of forgotten events asks the filters once for all of them (one
    gather per source), not once per copy; the outcomes are those of one-by-one asks."""
    daemon = make_daemon(make_config(INDEX__TTL_SECONDS="60"))
    await feed(daemon, *(copy(f"w{i}", s) for i in range(50) for s in SOURCES))
    await _forget(daemon, 120)
    filters = daemon.reconciler.filters
    asked: list[int] = []
    many = filters.aged_many

    def counted(asks):
        asked.append(len(asks))
        return many(asks)

    def one(*_):
        raise AssertionError("asked one id at a time")

    filters.aged_many, filters.aged = counted, one
    await feed(daemon, *(copy(f"w{i}", "gcp") for i in range(50)), copy("new", "aws"))
    assert asked == [51]
    assert all(_outcomes(daemon, f"w{i}") == ["DUPLICATE"] for i in range(50))
    assert "new" in daemon.reconciler.open


async def test_an_event_produced_since_the_index_last_forgot_a_record_is_not_asked():
    """The filters answer only for events whose record may have left the index. An
    event produced after this process began, and after the latest first copy of any
    record the index let go, by more than the window, has its record in the index if
    it has one: the filters are not asked, so a false positive of theirs (forced here)
    cannot make it LATE. The same false positive for an event produced before the
    start is believed: that is what the filters are for."""
    daemon = make_daemon(make_config(INDEX__TTL_SECONDS="60"))
    start = daemon.clock.now()
    filters = daemon.reconciler.filters
    filters.add_records([("fresh", 0b110), ("before", 0b110)], start)  # false positives
    daemon.clock.advance(100.0)
    await feed(daemon, copy("fresh", "aws", produced_at=start + 50.0))
    await feed(daemon, copy("before", "aws", produced_at=start - 50.0))
    assert "fresh" in daemon.reconciler.open  # a new window, as it should be
    assert _outcomes(daemon, "before") == ["LATE"]  # asked: older than this process


async def test_once_the_index_forgets_a_record_the_filters_answer_for_events_before_it():
    """A record that left the index (TTL) moves the line: a stamped late copy of its
    event, produced before its first copy, is recognised by the filters; the
    index says how far it forgot (forgotten_until)."""
    daemon = make_daemon(make_config(INDEX__TTL_SECONDS="60"))
    assert daemon.index.describe()["forgotten"].startswith("nothing yet")
    daemon.clock.advance(30.0)
    produced = daemon.clock.now() - 1.0
    await feed(daemon, *(copy("whole", s, produced_at=produced) for s in SOURCES))
    first_seen = daemon.clock.now()
    await _forget(daemon, 120)
    assert await daemon.index.count() == 0
    assert daemon.index.forgotten_until(daemon.clock.now()) == first_seen
    shown = daemon.services.reads.storage().details["forgotten"]  # the Storage view
    assert shown.startswith("records first seen up to 2026-01-01T00:00:30+00:00"), shown
    await feed(daemon, copy("whole", "gcp", produced_at=produced))
    assert _outcomes(daemon, "whole") == ["DUPLICATE"]
    assert "whole" not in daemon.reconciler.open


def test_the_memory_index_says_how_far_it_forgot_and_redis_while_away_says_everything():
    from helios.daemon.model import EventRecord
    from helios.plugins.index.memory import MemoryIndex

    index = MemoryIndex(ttl_seconds=60.0, max_records=2)
    assert index.forgotten_until(500.0) == float("-inf")
    index._put([EventRecord(f"e{i}", "t", 0b111, 3, 100.0 + i, 200.0) for i in range(3)])
    assert index.forgotten_until(500.0) == 100.0  # e0 evicted by the size bound
    from pathlib import Path

    from helios.daemon.clock import ManualClock
    from helios.plugins.index.redis import RedisIndex

    redis = RedisIndex(
        "redis://127.0.0.1:1/0", "p", "m", 3600.0, 10, Path("/nonexistent/spill"), 1, 1.0,
        ManualClock(), tenant_ttl={"acme": 600.0},
    )  # fmt: skip
    assert redis.forgotten_until(10_000.0) == 10_000.0 - 600.0  # the shortest TTL
    redis.tenant_ttl = {}
    assert redis.forgotten_until(10_000.0) == 10_000.0 - 3600.0
    redis.down_since = 1.0
    assert redis.forgotten_until(10_000.0) == 10_000.0  # nothing is looked up there
