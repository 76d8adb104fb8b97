"""The Kafka source against a real Kafka-protocol broker (Tansu): copies from a topic are
reconciled, outcomes published, what is not an Event goes to the DLQ (counted), offsets
are committed once the copies are stored, and a member that restarts after storing but
before committing skips what it stored instead of counting it twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError
from helios.plugins.sources.kafka import KafkaSource, partition_of
from helios.v1 import helios_pb2 as pb

from tests.helpers import make_config, make_daemon

TOPICS = ("helios.events", "helios.outcomes", "helios.dlq")


def kafka_config(
    bootstrap: str, data_dir: Path, group: str = "helios", index: str = "sqlite", **env: str
):
    return make_config(
        f"""
[sources.inputs.bus]
plugin = "kafka"
bootstrap_servers = "{bootstrap}"
group_id = "{group}"
session_timeout_ms = 6000
""",
        INDEX__BACKEND=f'"{index}"',
        DAEMON__DATA_DIR=f'"{data_dir}"',
        **env,
    )


def event_bytes(event_id: str, source: str, payload: object = None) -> bytes:
    body = {"id": event_id, "amount": 5} if payload is None else payload
    return pb.Event(
        event_id=event_id, source=source, event_type="order.created", payload=orjson.dumps(body)
    ).SerializeToString()


async def produce(bootstrap: str, messages: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, value in messages:
            await producer.send("helios.events", value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 30.0) -> list:
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    found: list = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(found) < count and loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for msgs in batch.values():
                found.extend(msgs)
    finally:
        await consumer.stop()
    return found


async def until(condition, timeout: float = 40.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def source_of(daemon) -> KafkaSource:
    source = daemon.inputs["bus"]
    assert isinstance(source, KafkaSource)
    return source


async def test_copies_from_a_topic_are_reconciled_and_bad_messages_go_to_the_dlq(
    kafka_broker, tmp_path
):
    bootstrap = kafka_broker.bootstrap
    await kafka_broker.create_topics(4, *TOPICS)
    await produce(
        bootstrap,
        [(b"e1", event_bytes("e1", s)) for s in ("aws", "gcp", "azure")]
        + [(b"e2", event_bytes("e2", s)) for s in ("aws", "gcp")]
        + [
            (b"junk", b"\xff\x00not a protobuf"),
            (b"other-key", event_bytes("e3", "aws")),
            (b"e4", event_bytes("e4", "nowhere")),
        ],
    )
    # Admission takes at most 3 copies a call here: the input admits its polls in pieces.
    daemon = make_daemon(kafka_config(bootstrap, tmp_path / "data", INGEST__MAX_BATCH_EVENTS="3"))
    await daemon.start()
    try:
        source = source_of(daemon)
        await until(lambda: source.counts["dlq"] == 3)
        assert source.counts["messages"] == 8 and source.counts["copies"] == 5
        await until(lambda: daemon.pipeline.outcome_counts()["COMPLETE"] == 1)
        await daemon.advance(20.0)  # e2's window closes: azure is MISSING
        outcomes = await read_topic(bootstrap, "helios.outcomes", 2)
        decoded = sorted(
            (pb.Outcome.FromString(m.value).event_id, pb.Outcome.FromString(m.value).kind)
            for m in outcomes
        )
        assert decoded == [
            ("e1", pb.OUTCOME_KIND_COMPLETE),
            ("e2", pb.OUTCOME_KIND_MISSING),
        ]
        assert sorted(m.key for m in outcomes) == [b"e1", b"e2"]
        dlq = await read_topic(bootstrap, "helios.dlq", 3)
        codes = sorted(dict(m.headers)["helios-error-code"].decode() for m in dlq)
        assert codes == ["key_not_event_id", "not_an_event", "unknown_source"]
        junk = next(m for m in dlq if m.key == b"junk")
        assert junk.value == b"\xff\x00not a protobuf"  # the message as it came
        assert dict(junk.headers)["helios-error-field"] == b"value"
        assert source.dlq_reasons == Counter(
            {"key_not_event_id": 1, "not_an_event": 1, "unknown_source": 1}
        )
        storage = daemon.services.reads.storage().details
        assert "4 of 4" in storage["kafka partitions"] and "3 to helios.dlq" in storage["kafka dlq"]
        # Every offset read was committed, once stored.
        consumer = source.consumer
        assert consumer is not None
        for p in range(4):
            tp = TopicPartition("helios.events", p)
            high = consumer.highwater(tp) or 0
            assert (await consumer.committed(tp) or 0) == high
    finally:
        await daemon.stop()


async def test_a_member_that_stored_but_did_not_commit_skips_the_redelivered_copies(
    kafka_broker, tmp_path, monkeypatch
):
    bootstrap = kafka_broker.bootstrap
    await kafka_broker.create_topics(2, *TOPICS)
    ids = [f"r{i}" for i in range(200)]
    await produce(bootstrap, [(e.encode(), event_bytes(e, s)) for e in ids for s in ("aws", "gcp")])
    data = tmp_path / "data"
    daemon = make_daemon(kafka_config(bootstrap, data))

    async def no_commit(*args, **kwargs):  # as if killed after storing, before committing
        raise CommitFailedError("test: the member died before committing")

    monkeypatch.setattr(AIOKafkaConsumer, "commit", no_commit)
    await daemon.start()
    source = source_of(daemon)
    try:
        await until(lambda: source.counts["copies"] == 400)
        await until(lambda: source.counts["commit_failed"] >= 1)  # tried once stored
    finally:
        await daemon.stop()
        monkeypatch.undo()

    again = make_daemon(kafka_config(bootstrap, data))
    await again.start()
    try:
        second = source_of(again)
        await until(lambda: second.counts["redelivered_skipped"] == 400)
        assert second.counts["copies"] == 0
        # The 200 windows (aws and gcp, azure awaited) were adopted from the store,
        # none twice, and nothing counted as a DUPLICATE.
        assert len(again.reconciler.open) == 200
        await again.advance(20.0)
        counts = again.pipeline.outcome_counts()
        assert counts["DUPLICATE"] == 0 and counts["MISSING"] == 200
    finally:
        await again.stop()


def test_partition_of_is_kafkas_default_partitioner():
    # Values from the Java client's Utils.murmur2 (toPositive(murmur2(key)) % n), which
    # aiokafka's DefaultPartitioner reproduces: copies and windows must agree on it.
    from aiokafka.partitioner import DefaultPartitioner

    partitioner = DefaultPartitioner()
    for key in ("e1", "order-42", "sim-000123", "ünïcode"):
        expected = partitioner(key.encode(), list(range(12)), list(range(12)))
        assert partition_of(key, 12) == expected


@pytest.mark.parametrize("retained", [True, False], ids=["in-topic", "gone-from-topic"])
async def test_refused_copies_are_replayed_from_their_kafka_offsets(
    kafka_broker, tmp_path, monkeypatch, retained
):
    """aws is paused while its copies arrive: they go to the DLQ (source_paused) and the
    events close MISSING from aws. replay_missing then reads those copies again from the
    topic at their offsets and admits them as they were: four heal, and the fifth,
    whose aws copy carried another payload, shows INCONSISTENT (a copy rebuilt from
    gcp's payload would have hidden that). A message the topic no longer holds (its
    retention passed) is taken from the DLQ, which keeps the same bytes."""
    if not retained:
        from helios.plugins.sources import kafka_offsets

        async def nothing_at(consumer, positions):
            return {}

        monkeypatch.setattr(kafka_offsets, "_read_at", nothing_at)
    bootstrap = kafka_broker.bootstrap
    await kafka_broker.create_topics(2, *TOPICS)
    daemon = make_daemon(kafka_config(bootstrap, tmp_path / "data"))
    await daemon.start()
    try:
        source = source_of(daemon)
        operator = daemon.services.operator
        operator.pause_source("aws")
        ids = [f"p{i}" for i in range(5)]
        await produce(
            bootstrap,
            [(e.encode(), event_bytes(e, s)) for e in ids for s in ("gcp", "azure")]
            + [(e.encode(), event_bytes(e, "aws")) for e in ids[:4]]
            + [(b"p4", event_bytes("p4", "aws", {"id": "p4", "amount": 999}))],
        )
        await until(lambda: source.counts["dlq"] == 5 and source.counts["copies"] == 10)
        assert source.dlq_reasons == Counter({"source_paused": 5})
        await daemon.advance(20.0)
        assert daemon.pipeline.outcome_counts()["MISSING"] == 5
        operator.resume_source("aws")
        _, execution = await operator.trigger(
            "replay_missing", "aws", {}, False, "olga", force=True
        )
        assert "replay 5 missing copies to aws" in execution.plan
        await until(lambda: source.counts["replayed_from_offsets"] == 5)
        assert source.counts["replayed"] == 0  # nothing rebuilt and published to the topic
        assert source.counts["replayed_from_dlq"] == (0 if retained else 5)
        shown = daemon.services.reads.storage().details["kafka replays"]
        assert shown.startswith("5 refused copies read again at their offsets")
        await daemon.advance(5.0)
        kinds = {
            e: [o.kind.name for o in (await daemon.runtime.get_event(e)).outcomes] for e in ids
        }
        healed = ["MISSING", "LATE", "COMPLETE"]  # its aws copy came, late, and agreed
        assert all(k == healed for e, k in kinds.items() if e != "p4"), kinds
        assert kinds["p4"][:2] == ["MISSING", "LATE"] and "INCONSISTENT" in kinds["p4"], kinds
    finally:
        await daemon.stop()


async def test_a_claim_that_waits_longer_than_the_session_loses_nothing_and_keeps_the_member(
    kafka_broker, tmp_path, monkeypatch
):
    """The group's assignment takes effect before the member has claimed the partitions
    (claiming waits while Redis is away). What the fetcher reads meanwhile is read
    again after the claim, never skipped (skipping it once lost every copy a restarted
    member fetched during a Redis outage: later batches committed past them). And the
    group's heartbeats go on meanwhile (the claim runs beside aiokafka's assignment
    callback, which sends none until it returns): past the session they are still
    answered, so a broker has no reason to put the member out of the group."""
    bootstrap = kafka_broker.bootstrap
    await kafka_broker.create_topics(2, *TOPICS)
    ids = [f"c{i}" for i in range(200)]
    await produce(bootstrap, [(e.encode(), event_bytes(e, s)) for e in ids for s in ("aws", "gcp")])
    read_marks = KafkaSource._read_marks
    calls = Counter()

    async def read_marks_late(self):  # longer than session_timeout_ms (6 s)
        calls["claims"] += 1
        await asyncio.sleep(7.0)
        calls["lease valid after 7 s"] += self.lease.valid()  # heartbeats answered
        await asyncio.sleep(2.0)
        return await read_marks(self)

    monkeypatch.setattr(KafkaSource, "_read_marks", read_marks_late)
    daemon = make_daemon(kafka_config(bootstrap, tmp_path / "data"))
    await daemon.start()
    source = source_of(daemon)
    try:
        await until(lambda: source.counts["copies"] == 400, 60)
        assert calls == {"claims": 1, "lease valid after 7 s": 1}, calls
        await daemon.advance(20.0)
        counts = daemon.pipeline.outcome_counts()
        assert counts["MISSING"] == 200, counts  # azure's copies: never sent
        assert source.counts["voided"] == 0
    finally:
        await daemon.stop()
