"""The Redis index against a real redis-server: records, open windows and outcomes in
Redis; a restart resumes from it; an outage (Redis stopped, or answering errors) is
survived by spilling locally, shown while it lasts, and caught up with nothing lost;
past the spill budget admission pushes back."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import redis as redis_py
from helios.daemon.config import ConfigError
from helios.daemon.errors import RequestError
from helios.daemon.query import OutcomeQuery
from helios.daemon.types import QueueFull
from redis.asyncio import Redis as AsyncRedis

from tests.conftest import RedisServer
from tests.helpers import copy, make_config, make_daemon

SOURCES = ("aws", "gcp", "azure")


def redis_config(url: str, data_dir, **extra: str):
    options = f'{{ url = "{url}", timeout_seconds = 0.5 }}'
    env = {"INDEX__BACKEND": '"redis"', "INDEX__OPTIONS": options}
    env["DAEMON__DATA_DIR"] = f'"{data_dir}"'
    env.update(extra)
    return make_config(**env)


async def every_shard_up(daemon, seconds: float = 60.0) -> None:
    """Wait until every shard's Redis health is "up" again (its spill replayed)."""
    deadline = time.monotonic() + seconds
    while any(
        v != "up" for k, v in daemon.services.reads.storage().details.items() if "health" in k
    ):
        assert time.monotonic() < deadline, daemon.services.reads.storage().details
        await asyncio.sleep(0.2)


def cluster_config(url: str, data_dir, more: str = ""):
    """Six index shards on a Redis Cluster: six slots, which land on all three nodes."""
    return make_config(
        INDEX__BACKEND='"redis"',
        INDEX__OPTIONS=f'{{ url = "{url}", cluster = true{more} }}',
        INDEX__SHARDS="6",
        DAEMON__DATA_DIR=f'"{data_dir}"',
    )


async def admit(daemon, *copies) -> None:
    result = await daemon.admission.admit(list(copies))
    assert result.accepted == len(copies), result.rejections


async def records(daemon, ids) -> dict:
    await daemon.pipeline.drain()
    return await daemon.index.get_many(ids)


async def test_records_windows_and_outcomes_live_in_redis_and_a_restart_resumes(
    redis_server, tmp_path
):
    config = redis_config(redis_server.url, tmp_path)
    daemon = make_daemon(config)
    await daemon.start()
    await admit(daemon, *(copy("done", s) for s in SOURCES), copy("open", "aws"))
    found = await records(daemon, ["done", "open"])
    assert found["done"].status.name == "COMPLETE" and found["open"].status.name == "PENDING"
    assert redis_server.cli("ZCARD", "helios:open").split()[0] == "1"
    assert int(redis_server.cli("TTL", "helios:{done}").split()[0]) > 86_000
    page, _ = await daemon.index.list_outcomes(OutcomeQuery(), 10, None)
    assert [(o.kind.name, o.event_id) for o in page] == [("COMPLETE", "done")]
    await daemon.stop()

    again = make_daemon(config)  # another process would read the same
    await again.start()
    try:
        assert "open" in again.reconciler.open  # the window resumed from Redis
        await admit(again, copy("open", "gcp"), copy("open", "azure"), copy("done", "aws"))
        found = await records(again, ["open", "done"])
        assert [o.kind.name for o in found["open"].outcomes] == ["COMPLETE"]
        assert [o.kind.name for o in found["done"].outcomes] == ["COMPLETE", "DUPLICATE"]
        page, _ = await again.index.list_outcomes(OutcomeQuery(), 10, None)
        assert [o.sequence for o in page] == [3, 2, 1]  # numbering went on
        view = again.services.reads.storage()
        assert view.backend == "redis" and view.details["health"] == "up"
    finally:
        await again.stop()


async def test_redis_stopped_for_20_s_during_ingest_loses_nothing(redis_server, tmp_path):
    daemon = make_daemon(redis_config(redis_server.url, tmp_path))
    await daemon.start()
    try:
        events = [f"e{i}" for i in range(300)]
        # Before the outage: the aws copy of every event.
        await admit(daemon, *(copy(e, "aws") for e in events))
        await daemon.pipeline.drain()
        redis_server.stop()
        down_at = time.monotonic()
        # During it: the gcp copies, acknowledged all the same (spilled, fsynced).
        for start in range(0, 300, 30):
            await admit(daemon, *(copy(e, "gcp") for e in events[start : start + 30]))
            await asyncio.sleep(0.5)
        health = daemon.services.reads.storage().details["health"]
        assert health.startswith("DOWN"), health  # the outage shows while it lasts
        assert "writes spill locally" in health
        await asyncio.sleep(max(0.0, 20 - (time.monotonic() - down_at)))
        redis_server.start()
        deadline = time.monotonic() + 30
        while daemon.services.reads.storage().details["health"] != "up":
            assert time.monotonic() < deadline, daemon.services.reads.storage().details
            await asyncio.sleep(0.2)
        # After it: the azure copies close every window COMPLETE, none MISSING.
        await admit(daemon, *(copy(e, "azure") for e in events))
        found = await records(daemon, events)
        assert len(found) == 300
        assert {tuple(o.kind.name for o in r.outcomes) for r in found.values()} == {("COMPLETE",)}
        assert daemon.index.replayed > 0 and daemon.index.spill.rows == 0
        assert redis_server.cli("ZCARD", "helios:open").split()[0] == "0"
    finally:
        await daemon.stop()


async def test_past_the_spill_budget_admission_pushes_back_and_drops_nothing(
    redis_server, tmp_path
):
    config = redis_config(
        redis_server.url,
        tmp_path,
        INDEX__OPTIONS=f'{{ url = "{redis_server.url}", timeout_seconds = 0.5, '
        "spill_max_bytes = 2000 }",
    )
    daemon = make_daemon(config)
    await daemon.start()
    try:
        redis_server.stop()
        accepted: list[str] = []
        with pytest.raises(QueueFull, match="spill_max_bytes"):
            for i in range(200):
                await admit(daemon, copy(f"p{i}", "aws"))
                accepted.append(f"p{i}")
        assert daemon.services.reads.counters().rejections["index_backlog_full"] == 1
        redis_server.start()
        deadline = time.monotonic() + 30
        while daemon.index.pushback() is not None or daemon.index.spill.rows:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        found = await records(daemon, accepted)
        assert sorted(found) == sorted(accepted)  # every acknowledged copy reached Redis
    finally:
        await daemon.stop()


async def test_a_redis_that_answers_errors_is_shown_and_caught_up(redis_server, tmp_path):
    daemon = make_daemon(redis_config(redis_server.url, tmp_path))
    await daemon.start()
    try:
        redis_server.cli("CONFIG", "SET", "maxmemory", "1")  # every write: OOM error
        await admit(daemon, *(copy("oom", s) for s in SOURCES))
        health = daemon.services.reads.storage().details["health"]
        assert "OOM" in health or "maxmemory" in health, health
        redis_server.cli("CONFIG", "SET", "maxmemory", "0")
        deadline = time.monotonic() + 30
        while daemon.services.reads.storage().details["health"] != "up":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        found = await records(daemon, ["oom"])
        assert [o.kind.name for o in found["oom"].outcomes] == ["COMPLETE"]
    finally:
        await daemon.stop()


async def test_a_restart_while_redis_is_away_resumes_from_the_spill(redis_server, tmp_path):
    config = redis_config(redis_server.url, tmp_path)
    daemon = make_daemon(config)
    await daemon.start()
    redis_server.stop()
    await admit(daemon, copy("w", "aws"))
    await daemon.stop()

    again = make_daemon(config)
    await again.start()  # Redis still away: it starts, from the spill
    try:
        assert "w" in again.reconciler.open
        assert again.services.reads.storage().details["health"].startswith("DOWN")
        redis_server.start()
        await admit(again, copy("w", "gcp"), copy("w", "azure"))
        deadline = time.monotonic() + 30
        while again.index.spill.rows or again.services.reads.storage().details["health"] != "up":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        found = await records(again, ["w"])
        assert [o.kind.name for o in found["w"].outcomes] == ["COMPLETE"]
    finally:
        await again.stop()


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ('{ host = "x" }', "unknown keys ['host']"),
        ('{ url = "http://x" }', "redis://"),
        ("{ spill_max_bytes = 0 }", "must be > 0"),
        ("{ replicas = -1 }", "replicas must be an integer >= 0"),
        ('{ replicas = "one" }', "replicas must be an integer >= 0"),
        ("{ replicas = 1, replicas_timeout_ms = 0 }", "replicas_timeout_ms must be an integer"),
        ("{ replicas = 1, replicas_timeout_ms = 2000 }", "WAIT would outlast the socket"),
        ("{ replicas = 1, cluster = true }", "replicas is not supported with cluster"),
    ],
)
def test_bad_redis_options_are_named_at_build(options, named, tmp_path):
    config = make_config(INDEX__BACKEND='"redis"', INDEX__OPTIONS=options)
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        make_daemon(config)


async def test_with_replicas_a_write_is_stored_once_a_replica_has_it(redis_server, tmp_path):
    """index.options.replicas = 1: a batch is acknowledged once a replica has it too
    (WAIT on the write's own connection), so a failover to that replica loses none of
    it. With the replica stopped the writes spill, the Storage view says why, and they
    are replayed once the replica confirms again."""
    (tmp_path / "replica").mkdir()
    replica = RedisServer(tmp_path / "replica")
    replica.extra = ["--replicaof", "127.0.0.1", str(redis_server.port)]
    replica.persistence = ["--appendonly", "no"]  # with one, a stop after a sync waits
    replica.start()
    client = redis_py.Redis.from_url(replica.url)
    options = f'{{ url = "{redis_server.url}", timeout_seconds = 1.0, replicas = 1 }}'
    daemon = make_daemon(redis_config(redis_server.url, tmp_path / "d", INDEX__OPTIONS=options))
    try:
        for _ in range(100):
            if "master_link_status:up" in replica.cli("INFO", "replication"):
                break
            await asyncio.sleep(0.1)
        await daemon.start()
        await admit(daemon, copy("r1", "aws"))
        assert client.exists("helios:{r1}")  # the replica had it before the ack
        assert "once 1 replica(s) confirm it" in daemon.index.describe()["replicas"]
        replica.stop()
        await admit(daemon, copy("r2", "aws"))  # acknowledged: spilled
        assert "0 of 1 replicas confirmed a write" in (daemon.index.away() or "")
        assert "DOWN" in daemon.index.describe()["health"]
        replica.start()
        await asyncio.wait_for(daemon.index.shared(), 30)
        assert client.exists("helios:{r2}")
        assert daemon.index.away() is None
        assert "1 were not in time and spilled" in daemon.index.describe()["replicas"]
    finally:
        await daemon.stop()
        client.close()
        replica.stop()


async def test_a_copy_of_an_event_whose_write_is_still_in_flight_sees_that_write(
    redis_server, tmp_path, monkeypatch
):
    """Read your writes: the records of a write Redis has not answered yet are what a
    lookup finds (else a duplicate copy of a just-closed event opened a new window)."""
    daemon = make_daemon(redis_config(redis_server.url, tmp_path))
    await daemon.start()
    index = daemon.index
    gate = asyncio.Event()
    send = index._send

    async def slow_send(writes):
        await gate.wait()
        return await send(writes)

    monkeypatch.setattr(index, "_send", slow_send)
    try:
        pipeline = daemon.pipeline
        good, _ = pipeline.check([copy("w", s) for s in SOURCES])
        await pipeline.process(good)  # COMPLETE; its write waits at the gate
        again, _ = pipeline.check([copy("w", "aws")])
        await pipeline.process(again)
        assert "w" not in daemon.reconciler.open  # no second window
        assert daemon.pipeline.outcome_counts()["DUPLICATE"] == 1
        gate.set()
        found = await records(daemon, ["w"])
        assert [o.kind.name for o in found["w"].outcomes] == ["COMPLETE", "DUPLICATE"]
        assert index._unsent == {}  # forgotten once Redis has them
    finally:
        gate.set()
        await daemon.stop()


async def test_a_password_in_the_url_is_never_shown(tmp_path):
    config = redis_config("redis://:s3cret@127.0.0.1:1/0", tmp_path)
    daemon = make_daemon(config)  # built, not started: nothing connects
    shown = " ".join(daemon.index.describe().values())
    assert "s3cret" not in shown and "redis://:***@127.0.0.1:1/0" in shown


async def test_a_write_redis_applied_but_whose_answer_was_lost_is_replayed_once(
    redis_server, tmp_path, monkeypatch
):
    """The answer is lost after Redis applied the write (a timeout, a dropped
    connection): the write is spilled and replayed. The replay must not add its
    outcomes a second time, nor fail on the stream's ids and hold the spill forever."""
    daemon = make_daemon(redis_config(redis_server.url, tmp_path))
    await daemon.start()
    index = daemon.index
    send = index._send
    lost = []

    async def answer_lost(writes):
        fenced = await send(writes)
        if not lost:
            lost.append(len(writes))
            raise ConnectionError("the answer never came back")
        return fenced

    monkeypatch.setattr(index, "_send", answer_lost)
    try:
        await admit(daemon, *(copy(e, s) for e in ("a", "b") for s in SOURCES))
        assert lost and index.outages == 1  # the answer was lost: the write was spilled
        deadline = time.monotonic() + 30
        while index.spill.rows or index.describe()["health"] != "up":
            assert time.monotonic() < deadline, index.describe()
            await asyncio.sleep(0.2)
        assert index.replayed >= 1
        page, _ = await index.list_outcomes(OutcomeQuery(), 10, None)
        assert sorted((o.event_id, o.kind.name) for o in page) == [
            ("a", "COMPLETE"),
            ("b", "COMPLETE"),
        ]
        await admit(daemon, copy("c", "aws"), copy("c", "gcp"), copy("c", "azure"))
        await daemon.pipeline.drain()
        page, _ = await index.list_outcomes(OutcomeQuery(), 10, None)
        assert [o.sequence for o in page] == [3, 2, 1]
    finally:
        await daemon.stop()


async def test_batches_queued_together_are_reconciled_and_written_together(redis_server, tmp_path):
    """With an index asked per batch, batches waiting in the queue are taken together:
    one lookup and one write, every batch's acknowledgement settled and the newest
    offsets stored as the marks."""
    daemon = make_daemon(redis_config(redis_server.url, tmp_path))
    await daemon.start()
    try:
        index = daemon.index
        await daemon.pipeline.drain()
        writes_before = index.writes
        stores = []
        for b in range(5):  # nothing here yields: all five are queued before any runs
            copies = [copy(f"m{b}-{i}", s) for i in range(20) for s in SOURCES]
            positions = [("kafka/g/t/0", b * 60 + k) for k in range(60)]
            result, stored = await daemon.admission.submit(copies, None, False, positions)
            assert result.accepted == 60
            stores.append(stored)
        await asyncio.wait_for(asyncio.gather(*stores), 10)
        assert index.writes - writes_before == 1, index.writes - writes_before
        marks = await index.read_marks("kafka/")
        assert marks["kafka/g/t/0"] == 299
        page, _ = await index.list_outcomes(OutcomeQuery(), 200, None)
        assert len(page) == 100 and {o.kind.name for o in page} == {"COMPLETE"}
        assert [o.sequence for o in page] == list(range(100, 0, -1))
    finally:
        await daemon.stop()


async def test_outcomes_written_one_entry_each_by_an_older_heliosd_are_still_listed(
    redis_server, tmp_path
):
    import marshal

    import redis

    client = redis.Redis.from_url(redis_server.url)
    for seq in (1, 2):
        old = (seq, 1, f"old{seq}", "t", ("aws", "gcp"), 1000.0 + seq, 0.0)
        client.xadd("helios:outcomes:main", {"o": marshal.dumps(old)}, id=f"{seq}-0")
    client.hset("helios:meta:main", mapping={"last_sequence": 2, "saved_at": 1000.0})
    client.close()
    daemon = make_daemon(redis_config(redis_server.url, tmp_path))
    await daemon.start()
    try:
        await admit(daemon, *(copy("new", s) for s in SOURCES))
        await daemon.pipeline.drain()
        page, token = await daemon.index.list_outcomes(OutcomeQuery(), 2, None)
        assert [(o.sequence, o.event_id) for o in page] == [(3, "new"), (2, "old2")]
        page, _ = await daemon.index.list_outcomes(OutcomeQuery(), 2, token)
        assert [(o.sequence, o.event_id) for o in page] == [(1, "old1")]
    finally:
        await daemon.stop()


async def test_on_a_redis_cluster_the_shards_spread_over_its_nodes_and_a_restart_resumes(
    redis_cluster, tmp_path
):
    """A real three-node Redis Cluster: each shard's keys share one hash tag (its
    prefix), so every write is one script on one node, and six shards land on all
    three nodes. Records, windows and outcomes live there; a restart resumes."""
    config = cluster_config(redis_cluster.url, tmp_path)
    done = [f"c{i}" for i in range(200)]
    waiting = [f"w{i}" for i in range(100)]
    daemon = make_daemon(config)
    await daemon.start()
    try:
        await admit(daemon, *(copy(e, s) for e in done for s in SOURCES))
        await admit(daemon, *(copy(e, "aws") for e in waiting))
        found = await records(daemon, done + waiting)
        assert {found[e].status.name for e in done} == {"COMPLETE"}
        assert {found[e].status.name for e in waiting} == {"PENDING"}
        page, _ = await daemon.index.list_outcomes(OutcomeQuery(), 500, None)
        assert [o.sequence for o in page] == list(range(200, 0, -1))
        assert all(n > 0 for n in redis_cluster.keys_per_node()), redis_cluster.keys_per_node()
        view = daemon.services.reads.storage()
        assert "(a cluster)" in view.details["shard 0 redis"]
        assert "{helios-0}" in view.details["shard 0 redis"]
        assert await daemon.index.count() == sum(redis_cluster.keys_per_node())
    finally:
        await daemon.stop()

    again = make_daemon(config)
    await again.start()
    try:
        assert set(waiting) <= set(again.reconciler.open)  # resumed from the cluster
        await admit(again, *(copy(e, s) for e in waiting for s in ("gcp", "azure")))
        found = await records(again, waiting)
        assert {found[e].status.name for e in waiting} == {"COMPLETE"}
        page, _ = await again.index.list_outcomes(OutcomeQuery(), 10, None)
        assert [o.sequence for o in page] == list(range(300, 290, -1))  # numbering went on
    finally:
        await again.stop()


def test_the_cluster_option_is_checked(tmp_path, caplog):
    options = '{ url = "unix:///tmp/r.sock", cluster = true }'
    config = make_config(INDEX__BACKEND='"redis"', INDEX__OPTIONS=options)
    with pytest.raises(ConfigError, match="cluster needs a redis:// or rediss:// URL"):
        make_daemon(config)
    config = make_config(INDEX__BACKEND='"redis"', INDEX__OPTIONS='{ cluster = "yes" }')
    with pytest.raises(ConfigError, match="cluster must be true or false"):
        make_daemon(config)
    config = make_config(INDEX__BACKEND='"redis"', INDEX__OPTIONS="{ cluster = true }")
    make_daemon(config)  # one shard on a cluster: allowed, but said
    assert "the whole index is one hash slot on one node" in caplog.text


async def test_a_cluster_node_away_spills_only_its_shards_and_they_catch_up(
    redis_cluster, tmp_path
):
    from redis.cluster import key_slot

    config = cluster_config(redis_cluster.url, tmp_path, ", timeout_seconds = 0.5")
    # The third node serves slots 10923-16383: the shards whose prefix hashes there.
    on_it = {k for k in range(6) if key_slot(f"{{helios-{k}}}:open".encode()) >= 10923}
    assert on_it and len(on_it) < 6
    daemon = make_daemon(config)
    await daemon.start()
    try:
        ids = [f"n{i}" for i in range(100)]
        await admit(daemon, *(copy(e, "aws") for e in ids))
        await daemon.pipeline.drain()
        redis_cluster.nodes[2].stop()
        await admit(daemon, *(copy(e, "gcp") for e in ids))  # acknowledged: spilled
        details = daemon.services.reads.storage().details
        down = {k for k in range(6) if details[f"shard {k} health"].startswith("DOWN")}
        assert down == on_it, details
        redis_cluster.nodes[2].start()
        await admit(daemon, *(copy(e, "azure") for e in ids))
        await every_shard_up(daemon)
        found = await records(daemon, ids)
        assert {found[e].status.name for e in ids} == {"COMPLETE"}
        page, _ = await daemon.index.list_outcomes(OutcomeQuery(), 200, None)
        assert len(page) == 100  # each once
    finally:
        await daemon.stop()


async def test_a_cluster_slot_migrated_while_heliosd_writes_loses_nothing(redis_cluster, tmp_path):
    """Resharding under writes: the slot of shard 0 moves to another node key by key
    (SETSLOT IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE, as redis-cli --cluster reshard
    does) while events are written, each across two batches. Redis refuses a write
    script that reaches a key already moved (its keys are in one slot, named in its
    arguments); heliosd spills that write and replays it once the slot has moved.
    Every event ends COMPLETE with one outcome."""
    from redis.cluster import key_slot

    config = cluster_config(redis_cluster.url, tmp_path, ", timeout_seconds = 0.5")
    slot = key_slot(b"{helios-0}:open")
    source = 0 if slot <= 5460 else 1 if slot <= 10922 else 2  # RedisCluster.start()
    target = (source + 1) % 3
    admins = [redis_py.Redis(port=n.port, decode_responses=True) for n in redis_cluster.nodes]
    ids = [admin.execute_command("CLUSTER", "MYID") for admin in admins]
    daemon = make_daemon(config)
    await daemon.start()
    events = [f"m{i}" for i in range(3000)]

    async def ingest() -> None:
        before: list[str] = []
        for start in range(0, len(events) + 50, 50):
            chunk = events[start : start + 50]
            later = [copy(e, s) for e in before for s in ("gcp", "azure")]
            await admit(daemon, *(copy(e, "aws") for e in chunk), *later)
            before = chunk
            await asyncio.sleep(0.01)

    async def migrate() -> int:
        await asyncio.sleep(0.5)
        admins[target].execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source])
        admins[source].execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target])
        port, moved = redis_cluster.nodes[target].port, 0
        while keys := admins[source].execute_command("CLUSTER", "GETKEYSINSLOT", slot, 5):
            admins[source].execute_command("MIGRATE", "127.0.0.1", port, "", 0, 5000, "KEYS", *keys)
            moved += len(keys)
            await asyncio.sleep(0.05)
        for admin in admins:
            admin.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target])
        return moved

    try:
        _, moved = await asyncio.gather(ingest(), migrate())
        assert moved > 100
        assert admins[source].execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        await daemon.pipeline.drain()
        await every_shard_up(daemon)
        found = await records(daemon, events)
        assert {found[e].status.name for e in events if e in found} == {"COMPLETE"}
        assert len(found) == 3000
        page, _ = await daemon.index.list_outcomes(OutcomeQuery(), 10_000, None)
        assert len(page) == 3000  # each once
    finally:
        await daemon.stop()
        for admin in admins:
            admin.close()


async def test_a_cluster_primary_killed_fails_over_to_its_replica_and_nothing_is_lost(
    redis_cluster_with_replica, tmp_path
):
    """The first primary is killed with -9 in the middle of ingest; its replica takes
    its slots over. heliosd spills the shards on it meanwhile, follows the cluster to
    the new primary, replays, and every event ends COMPLETE with one outcome each."""
    from redis.cluster import key_slot

    cluster = redis_cluster_with_replica
    config = cluster_config(cluster.url, tmp_path, ", timeout_seconds = 0.5")
    on_it = {k for k in range(6) if key_slot(f"{{helios-{k}}}:open".encode()) <= 5460}
    assert on_it and len(on_it) < 6
    daemon = make_daemon(config)
    await daemon.start()
    try:
        ids = [f"f{i}" for i in range(300)]
        await admit(daemon, *(copy(e, "aws") for e in ids))
        await daemon.pipeline.drain()
        await asyncio.sleep(0.5)  # the replica has what its primary acknowledged
        primary = cluster.nodes[0]
        assert primary.proc is not None
        primary.proc.kill()
        primary.proc.wait(10)
        primary.proc = None
        await admit(daemon, *(copy(e, "gcp") for e in ids[:150]))  # spilled or written
        deadline = time.monotonic() + 60
        while "role:master" not in cluster.nodes[3].cli("INFO", "replication"):
            assert time.monotonic() < deadline, "the replica was not promoted"
            await asyncio.sleep(0.2)
        await admit(daemon, *(copy(e, "gcp") for e in ids[150:]))
        await admit(daemon, *(copy(e, "azure") for e in ids))
        await every_shard_up(daemon)
        found = await records(daemon, ids)
        assert {found[e].status.name for e in ids} == {"COMPLETE"}, len(found)
        page, _ = await daemon.index.list_outcomes(OutcomeQuery(), 1000, None)
        assert sorted(o.event_id for o in page) == sorted(ids)  # each once
    finally:
        await daemon.stop()


async def two_members(redis_server, tmp_path):
    """Two started daemons, members a and b, on one Redis (each its own data dir)."""
    url = f'{{ url = "{redis_server.url}", timeout_seconds = 0.5, member = "%s" }}'
    members = []
    for name in ("a", "b"):
        config = redis_config(redis_server.url, tmp_path / name, INDEX__OPTIONS=url % name)
        members.append(make_daemon(config))
        await members[-1].start()
    return members


async def test_a_member_whose_partitions_were_taken_over_unhanded_is_fenced(redis_server, tmp_path):
    """Member a holds a partition; b claims it while a still holds it (a froze past
    its session): a's later writes are refused whole, its admissions fail with a
    retryable error, and nothing of them reaches Redis. Handed back (disown) first,
    the partition moves without fencing anyone; a claims again and writes again."""
    a, b = await two_members(redis_server, tmp_path)
    name = ["kafka/g/helios.events/3"]
    try:
        await a.index.claim(name)
        await admit(a, copy("before", "aws"))
        await b.index.claim(name)  # a did not hand it back: a is fenced
        with pytest.raises(RequestError, match="another member took over"):
            await admit(a, copy("after", "aws"))
        assert "after" not in await b.index.get_many(["before", "after"])
        assert "1 writes refused" in a.index.describe()["fencing"]
        await b.index.disown(name)  # handed back: whoever claims next fences no one
        await a.index.claim(name)  # a learns its new epoch
        await admit(a, copy("again", "aws"))
        await b.index.claim(name)
        await admit(b, copy("by-b", "aws"))  # b was not fenced by a's claim
        await a.index.disown(name)  # not a's any more: nothing changes
        found = await b.index.get_many(["before", "after", "again", "by-b"])
        assert sorted(found) == ["again", "before", "by-b"]
    finally:
        await a.stop()
        await b.stop()


async def test_a_member_adopts_only_the_windows_it_takes_and_reads_only_their_records(
    redis_server, tmp_path
):
    """Member a leaves 300 windows open in Redis; b adopts those `take` accepts (every
    third), their deadlines moved by the shift it says, and Redis reads b only their
    records (keyspace hits), not every open window's."""
    a, b = await two_members(redis_server, tmp_path)
    ids = [f"w-{k:03d}" for k in range(300)]
    taken = set(ids[::3])
    try:
        await admit(a, *(copy(i, "aws") for i in ids))
        await a.pipeline.drain()
        await asyncio.wait_for(a.index.shared(), 5)
        opened = await a.index.get_many(ids)
        client = redis_py.Redis.from_url(redis_server.url)
        hits = client.info("stats")["keyspace_hits"]
        adopted = await b.adopt(lambda e: 5.0 if e in taken else None)
        read = client.info("stats")["keyspace_hits"] - hits
        client.close()
        assert adopted == len(taken)
        assert set(b.reconciler.open) == taken
        for event_id in taken:
            assert b.reconciler.open[event_id].deadline == opened[event_id].deadline + 5.0
        # An unwanted window's record is never fetched (the old way read all 300); a few
        # hits are the members' own keys (epoch, meta), read meanwhile.
        assert len(taken) <= read < len(taken) + 10
    finally:
        await a.stop()
        await b.stop()


async def test_bloom_filters_are_saved_only_once_the_writes_they_cover_are_stored(
    redis_server, tmp_path
):
    """A snapshot of the Bloom filters taken while the write of its records waits for
    Redis (stopped with SIGSTOP: it answers nothing) is written only once that write is
    stored: a kill -9 in between would leave filters remembering an event nothing
    stored, and its copies, sent again, would be judged DUPLICATE."""
    options = f'{{ url = "{redis_server.url}", timeout_seconds = 5.0 }}'
    config = redis_config(
        redis_server.url,
        tmp_path,
        INDEX__OPTIONS=options,
        INDEX__BLOOM__ENABLED="true",
        INDEX__BLOOM__CAPACITY="100000",
    )
    daemon = make_daemon(config)
    await daemon.start()
    assert daemon.filter_store is not None and redis_server.proc is not None
    path, pid = daemon.filter_store.path, redis_server.proc.pid
    try:
        await admit(daemon, copy("e1", "aws"))  # its window is open: no lookup below
        os.kill(pid, signal.SIGSTOP)
        admitting = asyncio.ensure_future(admit(daemon, copy("e1", "gcp"), copy("e1", "azure")))
        filters = daemon.reconciler.filters
        assert filters is not None
        for _ in range(100):  # reconciled: closed and in the filters, its write waits
            if any(info and info[2] for info in filters.slots):
                break
            await asyncio.sleep(0.01)
        saving = asyncio.ensure_future(daemon.save_filters())
        await asyncio.sleep(0.5)
        assert not saving.done() and not path.exists()
        os.kill(pid, signal.SIGCONT)
        assert (await asyncio.wait_for(saving, 10)).endswith("bytes saved")
        await asyncio.wait_for(admitting, 10)
        assert path.exists()
    finally:
        os.kill(pid, signal.SIGCONT)
        await daemon.stop()


async def test_a_partition_is_handed_back_only_after_the_writes_made_for_it(
    redis_server, tmp_path, monkeypatch
):
    """disown() goes to Redis on another connection than the writer: it must wait for
    the writes made before it (a window the sweep closed just before a revocation),
    or the next owner, fencing no one, could adopt a window that a late write of this
    member then closes too: two final outcomes. The writer is slowed by 0.5 s."""
    a, b = await two_members(redis_server, tmp_path)
    name = ["kafka/g/t/1"]
    send = a.index._send

    async def slow(writes):
        await asyncio.sleep(0.5)
        return await send(writes)

    try:
        await a.index.claim(name)
        monkeypatch.setattr(a.index, "_send", slow)
        admitting = asyncio.ensure_future(admit(a, copy("last", "aws")))
        for _ in range(100):  # reconciled: its write is with the writer
            if "last" in a.index._unsent:
                break
            await asyncio.sleep(0.01)
        await a.index.disown(name)
        client = redis_py.Redis.from_url(redis_server.url)
        assert client.exists("helios:{last}")  # the write landed before the hand-back
        assert client.hget("helios:owners", name[0]) is None
        client.close()
        await admitting
        await b.index.claim(name)  # handed back: a is not fenced
        await admit(a, copy("after", "aws"))
        assert "0 writes refused" in a.index.describe()["fencing"]
    finally:
        await a.stop()
        await b.stop()


async def test_shared_waits_for_the_spill_and_claim_waits_for_shared(redis_server, tmp_path):
    """A write only the local spill holds is not "shared": shared() returns once Redis
    holds it, away() says why meanwhile, and claim() is refused until the spill is
    replayed. A member that lost a partition while Redis was away hands it back with
    its next claim (every other one of the claim's scope), so the next holder fences
    no one; partitions of another scope stay held."""
    a, b = await two_members(redis_server, tmp_path)
    lost, kept = ["kafka/g/t/1"], ["kafka/g/t/2"]
    try:
        await a.index.claim(lost + kept)
        await admit(a, copy("in-redis", "aws"))
        await asyncio.wait_for(a.index.shared(), 5)  # at once: Redis has it
        assert a.index.away() is None
        redis_server.stop()
        await admit(a, copy("spilled", "aws"))  # acknowledged: in the spill
        waiting = asyncio.ensure_future(a.index.shared())
        await asyncio.sleep(1.5)
        assert not waiting.done()
        assert "unreachable" in (a.index.away() or "")
        with pytest.raises(OSError, match="cannot be claimed yet"):
            await a.index.claim(kept)
        redis_server.start()
        await asyncio.wait_for(waiting, 20)  # the spill was replayed
        assert a.index.away() is None
        client = redis_py.Redis.from_url(redis_server.url)
        assert client.exists("helios:{spilled}")
        client.close()
        await a.index.claim(kept, "kafka/g/t/")  # keeps 2, hands back the rest: 1
        for _ in range(20):  # b's first call after the restart may meet a closed connection
            try:
                await b.index.claim(lost)  # nobody held it: a is not fenced
                break
            except OSError:
                await asyncio.sleep(0.2)
        await admit(a, copy("after", "aws"))
        assert "0 writes refused" in a.index.describe()["fencing"]
        client = redis_py.Redis.from_url(redis_server.url)
        assert client.hgetall("helios:owners") == {b"kafka/g/t/1": b"b", b"kafka/g/t/2": b"a"}
        await a.index.claim([], "kafka/other/")  # another input's scope: nothing of g/t
        assert client.hget("helios:owners", "kafka/g/t/2") == b"a"
        client.close()
        assert "0 writes refused" in b.index.describe()["fencing"]
    finally:
        await a.stop()
        await b.stop()


async def test_bloom_slices_of_a_spill_redis_refused_are_set_aside(redis_server, tmp_path):
    """A member stopped while Redis is away (its spill holds an event it closed) is
    taken over meanwhile; restarted, its spill is refused. The Bloom slices that took
    the spilled records are set aside: the event's copies, read again by the new
    owner or by itself, open a window instead of being judged LATE or DUPLICATE by
    what nothing stored. (Trusting them once left a restarted member's events
    decided wrongly.)"""
    a, b = await two_members(redis_server, tmp_path)
    part, every = ["kafka/g/t/1"], 0b111
    try:
        await a.index.claim(part)
        redis_server.stop()
        await admit(a, *(copy("gone", s) for s in ("aws", "gcp", "azure")))  # spilled
        await a.pipeline.drain()
        assert a.reconciler.filters is not None and a.reconciler.filters.aged("gone", every)
    finally:
        await a.stop()  # the filters are saved, the spill kept
    redis_server.start()
    for _ in range(20):  # b's first call after the restart may meet a closed connection
        try:
            await b.index.claim(part)  # a did not hand it back: a is fenced
            break
        except OSError:
            await asyncio.sleep(0.2)
    url = f'{{ url = "{redis_server.url}", timeout_seconds = 0.5, member = "a" }}'
    again = make_daemon(redis_config(redis_server.url, tmp_path / "a", INDEX__OPTIONS=url))
    await again.start()  # replays the spill: refused
    try:
        await asyncio.wait_for(again.index.shared(), 10)
        assert "1 writes refused" in again.index.describe()["fencing"]
        view = again.services.reads.storage().bloom
        assert view is not None and view.slices_set_aside == 1
        filters = again.reconciler.filters
        assert filters is not None and not filters.aged("gone", every)
        await again.index.claim(part)
        await admit(again, copy("gone", "aws"))
        assert "gone" in again.reconciler.open  # a window, not a LATE or DUPLICATE
        assert again.pipeline.outcome_counts()["LATE"] == 0
    finally:
        await again.stop()
        await b.stop()


async def test_outcomes_of_a_write_redis_refused_reach_no_watcher(redis_server, tmp_path):
    """Watchers (WatchOutcomes, the console, the Kafka outcomes topic) get an outcome
    only once the index holds it: a fenced member's refused write shows none, so a
    subscriber never sees an event decided by both members."""
    a, b = await two_members(redis_server, tmp_path)
    name = ["kafka/g/helios.events/5"]
    watcher = a.pipeline.watch(None)
    try:
        await a.index.claim(name)
        await admit(a, *(copy("kept", s) for s in SOURCES))
        await b.index.claim(name)  # a did not hand it back: a is fenced
        with pytest.raises(RequestError, match="another member took over"):
            await admit(a, *(copy("refused", s) for s in SOURCES))
        await asyncio.sleep(0.1)
        seen = []
        while not watcher.queue.empty():
            seen += [o.event_id for o in watcher.queue.get_nowait().outcomes]
        assert seen == ["kept"]
        assert a.pipeline.unpublished == 1
    finally:
        await a.stop()
        await b.stop()


async def test_outcomes_of_a_spilled_write_redis_refused_reach_no_watcher(redis_server, tmp_path):
    """With a partitioned input (Kafka) an outcome goes to watchers once the store the
    members share holds its write, not on the local spill's word: member a, cut off
    from Redis, decides an event (its write spilled); b takes a's partition over
    meanwhile; when a reaches Redis again its spill is refused, and the outcome is
    never published (b decides the event). Before, a's watchers had it already."""
    a, b = await two_members(redis_server, tmp_path)
    a.pipeline.shared = a.index.shared  # as a Kafka input has it (Daemon.start)
    name = ["kafka/g/helios.events/5"]
    watcher = a.pipeline.watch(None)
    reaches = a.index.redis
    try:
        await a.index.claim(name)
        a.index.redis = AsyncRedis.from_url("redis://127.0.0.1:1", socket_connect_timeout=0.2)
        await admit(a, *(copy("spilled", s) for s in SOURCES))  # acknowledged: spilled
        assert "unreachable" in (a.index.away() or "") or a.index.spill.rows
        await asyncio.sleep(0.2)
        assert watcher.queue.empty()  # not shared yet
        await b.index.claim(name)  # a did not hand it back: a is fenced
        await a.index.redis.aclose()
        a.index.redis = reaches  # a reaches Redis again: its spill is refused
        await asyncio.wait_for(a.index.shared(), 10)
        await asyncio.sleep(0.1)
        assert watcher.queue.empty()
        assert a.pipeline.unpublished == 1
        assert "1 writes refused" in a.index.describe()["fencing"]
    finally:
        await a.stop()
        await b.stop()


async def test_a_held_reconciler_takes_nothing_and_void_drops_what_waits(redis_server, tmp_path):
    """While an input cannot show it still holds its windows (may_apply is False), the
    reconciler takes no queued batch and the sweep decides nothing; void() then drops
    the queued batches, their admissions failing with a retryable error."""
    daemon = make_daemon(redis_config(redis_server.url, tmp_path))
    await daemon.start()
    held = [True]
    daemon.pipeline.may_apply = lambda: not held[0]
    try:
        result, stored = await daemon.admission.submit([copy("v", s) for s in SOURCES])
        assert result.accepted == 3
        await asyncio.sleep(0.3)
        assert "v" not in daemon.reconciler.open and daemon.pipeline.queued == 3
        assert await daemon.pipeline.sweep() == 0
        await daemon.pipeline.settle()  # returns while held: nothing can be taken
        assert daemon.pipeline.void("the session ended") == 3
        with pytest.raises(RequestError, match="the session ended"):
            await stored
        held[0] = False
        await admit(daemon, copy("w", "aws"))
        assert "w" in daemon.reconciler.open and "v" not in daemon.reconciler.open
    finally:
        await daemon.stop()


async def test_a_store_failure_repeated_is_logged_once_a_minute(caplog):
    """A fenced member's sweep writes fail twice a second until it claims again: the
    log says it once, not every time (each batch's own error still reaches it)."""
    from helios.daemon import pipeline

    async def failing() -> None:
        raise OSError("refused: fenced")

    with caplog.at_level("ERROR", logger="helios.pipeline"):
        for _ in range(5):
            await pipeline._quietly(failing())
        await pipeline._quietly(_fails_otherwise())
    said = [r.getMessage() for r in caplog.records if "storing a flush failed" in r.getMessage()]
    assert len(said) == 2 and "refused: fenced" in said[0] and "disk full" in said[1]


async def _fails_otherwise() -> None:
    raise OSError("disk full")


async def test_an_unexpected_error_while_writing_spills_and_the_writer_goes_on(
    redis_server, tmp_path, monkeypatch
):
    """A fault of heliosd's own in the send (not Redis's) once stopped the writer
    task: every later acknowledgement waited forever. Now the write is spilled, the
    health says why, and once sends work again the spill is replayed."""
    daemon = make_daemon(redis_config(redis_server.url, tmp_path))
    await daemon.start()
    index = daemon.index
    send = index._send
    broken = [True]

    async def faulty(writes):
        if broken[0]:
            raise TypeError("a bug in the send")
        return await send(writes)

    monkeypatch.setattr(index, "_send", faulty)
    try:
        await asyncio.wait_for(admit(daemon, *(copy("u", s) for s in SOURCES)), 10)
        assert "TypeError: a bug in the send" in index.describe()["health"]
        broken[0] = False
        deadline = time.monotonic() + 10
        while index.down_since is not None or index.spill.rows:
            assert time.monotonic() < deadline, index.describe()
            await asyncio.sleep(0.1)
        await admit(daemon, copy("v", "aws"))
        found = await records(daemon, ["u", "v"])
        assert sorted(found) == ["u", "v"]
    finally:
        await daemon.stop()
