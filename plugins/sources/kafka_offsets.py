"""Replays from Kafka offsets.

A copy the group refused (its source paused, a source not configured yet, a payload a
rule since relaxed refused) goes to the DLQ topic unchanged, with the topic, partition
and offset it came from. Its event then closes MISSING from that source. When
`replay_missing` asks the Kafka input for copies of such events, the input reads the DLQ
(from where it last stopped), finds the refused copies among them, reads each again
from the topic at its offset, and admits the original message as it was: the record
heals with the source's own copy, its own payload (a copy that disagrees with the
others shows INCONSISTENT), not a copy made from another source's. A message the topic
no longer holds (retention) is taken from the DLQ, which holds the same bytes. Copies
the group never saw are published to the topic as before (helios.plugins.sources.kafka).
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from google.protobuf.message import DecodeError
from helios.daemon.model import CopyIn
from helios.daemon.tenants import unscoped
from helios.plugins.sources.kafka_wire import KafkaOptions, decode
from helios.v1 import helios_pb2 as pb

log = logging.getLogger("helios.kafka")
KEEP = 100_000  # refused copies remembered, the newest
QUIET_POLLS = 2  # empty polls in a row that end a read of the DLQ


class Refused:
    """(event id, source) -> where the group read it, and the bytes the DLQ keeps, for
    every copy in the DLQ topic. Kept up to date by reading the DLQ from where the last
    read stopped, so copies other members refused are found too."""

    def __init__(self, options: KafkaOptions) -> None:
        self.options = options
        self.next: dict[int, int] = {}  # DLQ partition -> next offset to read
        self.found: OrderedDict[tuple[str, str], tuple[str, int, int, bytes]] = OrderedDict()

    async def refresh(self, consumer: AIOKafkaConsumer) -> int:
        """Read what the DLQ gained since the last time; returns how many messages."""
        topic = self.options.dlq_topic
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return 0
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, self.next.get(tp.partition, 0))
        read = quiet = 0
        while quiet < QUIET_POLLS:
            batch = await consumer.getmany(*tps, timeout_ms=300, max_records=5000)
            messages = [m for ms in batch.values() for m in ms]
            quiet = 0 if messages else quiet + 1
            for m in messages:
                read += 1
                self.next[m.partition] = m.offset + 1
                self._take(m)
        return read

    def _take(self, m: Any) -> None:
        headers = {k: v for k, v in (m.headers or ())}
        try:
            event = pb.Event.FromString(m.value or b"")
            where = (
                headers["helios-topic"].decode(),
                int(headers["helios-partition"]),
                int(headers["helios-offset"]),
            )
        except (KeyError, ValueError, DecodeError):  # not an Event, or no origin: not replayable
            return
        key = (event.event_id, event.source)
        self.found.pop(key, None)
        self.found[key] = (*where, m.value)
        while len(self.found) > KEEP:
            self.found.popitem(last=False)


async def replay_refused(
    source: Any, refused: Refused, target: str, copies: Sequence[CopyIn]
) -> tuple[set[str], int]:
    """Admit again, read from the topic at their offsets, the copies of `target` among
    `copies` that the group refused; returns the ids (as in `copies`) found so, and how
    many of them admission accepted."""
    options: KafkaOptions = source.options
    if not options.dlq_topic or not copies:
        return set(), 0
    consumer = AIOKafkaConsumer(
        bootstrap_servers=options.bootstrap_servers,
        client_id=f"{options.client_id}-replay",
        group_id=None,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        await consumer.topics()  # the metadata of the DLQ and the topic
        await refused.refresh(consumer)
        wanted: dict[tuple[str, int, int], tuple[str, bytes]] = {}
        for asked in copies:
            at = refused.found.get((unscoped(asked[0])[1], target))
            if at is not None:
                wanted[at[:3]] = (asked[0], at[3])
        if not wanted:
            return set(), 0
        originals = await _read_at(consumer, sorted(wanted))
    finally:
        await consumer.stop()
    admit: list[CopyIn] = []
    taken: set[str] = set()
    for where, (key, kept) in wanted.items():
        message = originals.get(where)
        copy: CopyIn | None = decode(message)[0] if message is not None else None
        if copy is None:  # gone from the topic (retention): the DLQ's copy of it
            copy = decode(_Message(unscoped(key)[1].encode(), kept))[0]
            if copy is not None:
                source.counts["replayed_from_dlq"] += 1
        if copy is not None and copy[1] == target:
            admit.append(copy)
            taken.add(key)
    if not admit:
        return taken, 0
    result = await source.context.publish(admit)
    source.counts["replayed_from_offsets"] += result.accepted
    log.info(
        "Kafka: %d refused copies of %s read again from their offsets, %d accepted",
        len(admit),
        target,
        result.accepted,
    )
    return taken, result.accepted


async def _read_at(
    consumer: AIOKafkaConsumer, positions: list[tuple[str, int, int]]
) -> dict[tuple[str, int, int], Any]:
    """The messages at (topic, partition, offset); one fetch serves neighbours too."""
    found: dict[tuple[str, int, int], Any] = {}
    tps = {(t, p): TopicPartition(t, p) for t, p, _ in positions}
    consumer.assign(list(tps.values()))
    for topic, part, offset in positions:
        if (topic, part, offset) in found:
            continue
        tp = tps[(topic, part)]
        consumer.seek(tp, offset)
        try:
            batch = await asyncio.wait_for(consumer.getmany(tp, timeout_ms=1000), 5.0)
        except TimeoutError:
            continue
        for m in batch.get(tp, []):
            found[(topic, part, m.offset)] = m
    return found


class _Message:
    """A DLQ value seen as the message it was (decode reads key and value)."""

    def __init__(self, key: bytes, value: bytes) -> None:
        self.key, self.value = key, value
