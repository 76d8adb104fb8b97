"""What the Kafka input reads and writes: its options, the partition of an event id,
a message as a copy (or why not), an outcome as a message, and the outcome publisher."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from google.protobuf.message import DecodeError
from helios.control.convert import outcome_pb
from helios.daemon.model import CopyIn, Outcome
from helios.v1 import helios_pb2 as pb
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("helios.kafka")


class KafkaOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    bootstrap_servers: str = "127.0.0.1:9092"
    topic: str = Field("helios.events", min_length=1)
    group_id: str = Field("helios", min_length=1)
    outcomes_topic: str = "helios.outcomes"  # "" publishes no outcomes
    dlq_topic: str = "helios.dlq"  # "" logs and counts refused messages only
    client_id: str = "heliosd"
    max_batch: int = Field(2000, gt=0, le=100_000)  # messages taken per poll
    in_flight: int = Field(8, gt=0, le=64)  # polled batches being stored meanwhile
    session_timeout_ms: int = Field(10_000, ge=1000)
    replay: bool = True  # replay_missing publishes to `topic`


def partition_of(event_id: str, partitions: int) -> int:
    """The partition Kafka's default partitioner (murmur2 of the key) gives an id."""
    return int(murmur2(event_id.encode()) & 0x7FFFFFFF) % partitions


def decode(m: Any) -> tuple[CopyIn | None, tuple[str, str, str] | None]:
    """A message as a copy, or (field, reason, code) naming what is wrong with it."""
    if m.value is None:
        return None, ("value", "the message has no value (a tombstone)", "no_value")
    try:
        e = pb.Event.FromString(m.value)
    except DecodeError as exc:
        return None, ("value", f"the value is not a helios.v1.Event: {exc}", "not_an_event")
    key = m.key.decode("utf-8", "replace") if m.key is not None else None
    if key != e.event_id:
        return None, (
            "key",
            f"the key {key!r} is not the event id {e.event_id!r}: every copy of an event "
            "must carry its id as the key, or its copies land in different partitions",
            "key_not_event_id",
        )
    stamp = e.produced_at
    return (e.event_id, e.source, e.event_type, stamp.seconds + stamp.nanos * 1e-9, e.payload), None


def outcome_bytes(o: Outcome) -> bytes:
    """The outcome as the gRPC API's helios.v1.Outcome (one conversion for both)."""
    return bytes(outcome_pb(o).SerializeToString())


async def publish_outcomes(source: Any) -> None:
    """Publish every outcome this member decides to the outcomes topic (key: the
    event id); the subscription starts at once, so outcomes decided while the
    producer connects wait for it."""
    watch, unwatch = source.context.watch, source.context.unwatch
    if watch is None or unwatch is None:
        return
    watcher = watch()  # from the start: outcomes decided while connecting wait
    try:
        while source.producer is None:
            await asyncio.sleep(0.1)
        producer, topic = source.producer, source.options.outcomes_topic
        while True:
            if watcher.overflowed:
                source.counts["outcomes_lost"] += 1
                log.error("Kafka: outcomes came faster than %s took them; some were lost", topic)
                watcher = watch()
            try:
                batch = await asyncio.wait_for(watcher.queue.get(), 1.0)
                outcomes: list[Outcome] = batch.outcomes
            except TimeoutError:
                continue
            for o in outcomes:
                value = outcome_bytes(o)
                try:
                    await producer.send(topic, value, key=o.event_id.encode())
                    source.counts["outcomes"] += 1
                except KafkaError as exc:
                    source.counts["outcomes_failed"] += 1
                    log.error("publishing an outcome to %s failed: %s", topic, exc)
    finally:
        unwatch(watcher)


async def send_to_dlq(source: Any, refused: list[tuple[Any, str, str, str]]) -> None:
    """Count, log once and publish refused messages unchanged, with why in headers."""
    topic = source.options.dlq_topic
    producer = source.producer
    for *_, code in refused:
        source.dlq_reasons[code] += 1
    source.counts["dlq"] += len(refused)
    first = refused[0]
    log.warning(
        "Kafka: %d messages refused (first: partition %d offset %d, %s: %s)%s",
        len(refused),
        first[0].partition,
        first[0].offset,
        first[1],
        first[2],
        f"; sent to {topic}" if topic else "",
    )
    if not topic or producer is None:
        return
    sent = []
    for m, field, reason, code in refused:
        headers = [
            ("helios-error-code", code.encode()),
            ("helios-error-field", field.encode()),
            ("helios-error-reason", reason.encode()[:1000]),
            ("helios-topic", m.topic.encode()),
            ("helios-partition", str(m.partition).encode()),
            ("helios-offset", str(m.offset).encode()),
        ]
        sent.append(await producer.send(topic, m.value, key=m.key, headers=headers))
    for future in sent:
        try:
            await future
        except KafkaError as exc:
            source.counts["dlq_failed"] += 1
            log.error("publishing to the DLQ %s failed: %s", topic, exc)
