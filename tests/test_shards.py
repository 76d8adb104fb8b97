"""Index shards: event ids spread over N sqlite files by jump hash, lookups and outcome
listing fan out, a restart resumes every shard, and adding a shard moves the ids that
now map to it (a newer version already there is never overwritten)."""

from __future__ import annotations

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
