"""Index shards: event ids spread over N sqlite files by jump hash, lookups and outcome
listing fan out, a restart resumes every shard, and adding a shard moves the ids that
now map to it (a newer version already there is never overwritten)."""

from __future__ import annotations

import asyncio
from collections import Counter

from helios.daemon.query import OutcomeQuery
from helios.daemon.shards import jump

from tests.helpers import copy, make_config, make_daemon

SOURCES = ("aws", "gcp", "azure")


def sharded(tmp_path, shards: int):
    return make_config(
        INDEX__BACKEND='"sqlite"',
        INDEX__SHARDS=str(shards),
        DAEMON__DATA_DIR=f'"{tmp_path}"',
    )


def test_jump_hash_is_balanced_and_moves_only_to_the_new_shard():
    ids = [f"order-{i}" for i in range(30_000)]
    three = Counter(jump(i, 3) for i in ids)
    assert set(three) == {0, 1, 2} and max(three.values()) < 1.05 * 10_000
    moved = [i for i in ids if jump(i, 3) != jump(i, 4)]
    assert all(jump(i, 4) == 3 for i in moved)  # moved ids all go to the new shard
    assert abs(len(moved) / len(ids) - 0.25) < 0.02


async def test_sharded_sqlite_index_stores_lists_resumes_and_grows(tmp_path):
    daemon = make_daemon(sharded(tmp_path, 2))
    await daemon.start()
    done = [f"d{i}" for i in range(60)]
    await daemon.admission.admit([copy(e, s) for e in done for s in SOURCES])
    await daemon.admission.admit([copy("open", "aws")])
    await daemon.pipeline.drain()
    assert sorted(p.name for p in tmp_path.glob("index-*.sqlite3")) == [
        "index-0.sqlite3",
        "index-1.sqlite3",
    ]
    found = await daemon.index.get_many(done)
    assert len(found) == 60
    page, token = await daemon.index.list_outcomes(OutcomeQuery(), 25, None)
    assert [o.sequence for o in page] == list(range(60, 35, -1)) and token == 36
    page, _ = await daemon.index.list_outcomes(OutcomeQuery(), 100, token)
    assert [o.sequence for o in page] == list(range(35, 0, -1))
    balance = daemon.services.reads.storage().details["shards"]
    assert balance.startswith("2 by jump hash")
    await daemon.stop()

    grown = make_daemon(sharded(tmp_path, 3))  # a shard added: stop, raise, start
    await grown.start()
    try:
        assert "open" in grown.reconciler.open  # the open window resumed
        moved = [e for e in done if jump(e, 3) == 2]
        assert moved and grown.index.moved == len(moved)
        assert len(await grown.index.get_many(done)) == 60  # every record found
        await grown.admission.admit([copy(moved[0], "aws")])  # a duplicate, judged right
        await grown.pipeline.drain()
        rec = (await grown.index.get_many([moved[0]]))[moved[0]]
        assert [o.kind.name for o in rec.outcomes] == ["COMPLETE", "DUPLICATE"]
    finally:
        await grown.stop()

    again = make_daemon(sharded(tmp_path, 3))
    await again.start()
    try:
        # The newer version in the new shard won over the stale one left in the old.
        rec = (await again.index.get_many([moved[0]]))[moved[0]]
        assert [o.kind.name for o in rec.outcomes] == ["COMPLETE", "DUPLICATE"]
        assert again.index.moved == 0
    finally:
        await again.stop()


async def test_a_copy_delivered_again_after_a_crash_between_shards_is_not_its_own_duplicate(
    tmp_path, monkeypatch
):
    """A source's batch is written to each shard with its mark; killed after shard 0's
    write and before shard 1's, shard 0 holds the copies and mark 9, shard 1 mark 4.
    The smallest mark (4) is what every shard holds, so the source delivers 5-9 again:
    shard 0's copies among them are found stored by its own mark and skipped (before:
    each became a DUPLICATE of itself); shard 1's are taken, as they were never stored."""
    name = "kafka/g/t/0"
    ids = [f"k{i}" for i in range(10)]
    assert {jump(e, 2) for e in ids} == {0, 1}
    first = [copy(e, "aws") for e in ids]
    daemon = make_daemon(sharded(tmp_path, 2))
    await daemon.start()
    batch = [copy(e, "gcp") for e in ids]
    positions = [(name, 5 + i // 2) for i in range(10)]  # offsets 5..9
    try:
        result = await daemon.admission.admit(first, positions=[(name, i // 2) for i in range(10)])
        assert result.accepted == 10
        shard1 = daemon.index.shards[1]
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        monkeypatch.setattr(shard1, "write", lambda records, outcomes, marks=None: done)
        result = await daemon.admission.admit(batch, positions=positions)  # shard 1 lost it
        assert result.accepted == 10
    finally:
        await daemon.stop()
    monkeypatch.undo()

    again = make_daemon(sharded(tmp_path, 2))
    await again.start()
    try:
        marks = await again.index.read_marks("kafka/")  # what the source does when assigned
        assert marks[name] == 4
        result = await again.admission.admit(batch, positions=positions)  # delivered again
        in_shard_1 = [e for e in ids if jump(e, 2) == 1]
        assert result.accepted == len(in_shard_1)
        await again.pipeline.drain()
        windows = again.reconciler.open  # still open: azure has not delivered
        names = list(again.config.sources.names)
        for e in ids:
            counts = {s: windows[e].count(names.index(s)) for s in SOURCES}
            assert counts == {"aws": 1, "gcp": 1, "azure": 0}, (e, counts)  # never two
        assert again.pipeline.outcome_counts()["DUPLICATE"] == 0
        shown = again.services.reads.storage().details["shards"]
        assert f"{10 - len(in_shard_1)} copies delivered again were found stored" in shown
        assert (await again.index.read_marks("kafka/"))[name] == 9
    finally:
        await again.stop()
