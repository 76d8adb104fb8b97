"""The Kafka source: copies from a topic (key = event id, value = a helios.v1.Event), the
outcomes this member decides to another topic, and what it cannot take to a DLQ topic.

Several heliosd processes in one consumer group share the topic's partitions. Every
copy of an event has the event id as its key, so all of them land in one partition and
so in one member; the member owns the open windows of its partitions. Their state is in
the shared index (Redis), so on a rebalance a member that loses a partition hands its
windows back undecided (release) and the member that gets it takes them over (adopt).

Delivery is at least once and processing idempotent: a batch's copies are admitted and
stored together with each partition's offset (a *mark*, in the same index write), and
only then is the offset committed to Kafka. A copy redelivered after a crash (stored,
but its offset not committed) is found at or below the partition's mark and skipped,
so it never counts as a DUPLICATE. See docs/kafka.md.

Long because polling, committing in order and the rebalance hand-over share one state
(the partitions held, their marks, the batches in flight, the commit lock): one protocol.
What goes over the wire (decoding, the DLQ, outcomes) is kafka_wire.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from helios.daemon.errors import ErrorCode, RequestError
from helios.daemon.hookspecs import hookimpl
from helios.daemon.model import CopyIn
from helios.daemon.pipeline import Voided
from helios.daemon.types import (
    Fenced,
    QueueFull,
    Source,
    SourceBase,
    SourceContext,
    SourceFactory,
)
from helios.plugins.sources.cloudinput import parse_options
from helios.plugins.sources.kafka_lease import Lease
from helios.plugins.sources.kafka_offsets import Refused, replay_refused
from helios.plugins.sources.kafka_wire import (
    KafkaOptions,
    decode,
    partition_of,
    publish_outcomes,
    send_to_dlq,
)
from helios.v1 import helios_pb2 as pb

log = logging.getLogger("helios.kafka")
T = TypeVar("T")
Ends = tuple[dict[TopicPartition, int], int]  # offsets to commit, and the session
RETRY_SECONDS = (0.05, 0.1, 0.2, 0.5, 1.0)  # backoff while the daemon pushes back
ADMIT_CHUNK = 1000  # copies per admission call
VOID_TEXT = (
    "the group ended this member's session while it could not answer (frozen past "
    "session_timeout_ms); its batches in hand are void, the new owners read them again"
)
AWAY_TEXT = (
    "the group took partitions back while the index could not reach its shared store "
    "({why}); the batches in hand are void (none was committed: the new owners read them "
    "again) and the partitions are not handed back, so a write of this session that "
    "reaches the store after their new owner claimed them is refused"
)
LOG_EVERY = 60  # attempts between two log lines while the index cannot be reached


class KafkaSource(SourceBase):
    partitioned = True

    def __init__(self, context: SourceContext, options: KafkaOptions) -> None:
        self.context = context
        self.options = options
        self.mark_prefix = f"kafka/{options.group_id}/{options.topic}/"
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.partitions = 0  # of the topic
        self.assigned: set[int] = set()
        self.stored: dict[int, int] = {}  # partition -> highest offset stored (its mark)
        self.lag: dict[int, int] = {}
        self.busy = asyncio.Lock()  # held while offsets are committed
        self.admitting = asyncio.Lock()  # polls enter admission one at a time, in order
        # Polled batches being admitted and stored, oldest first, and room for more.
        self.pending: asyncio.Queue[asyncio.Task[Ends]] = asyncio.Queue()
        self.slots = asyncio.Semaphore(options.in_flight)
        self.counts: Counter[str] = Counter()
        self.dlq_reasons: Counter[str] = Counter()
        self.state = "starting"
        self._tasks: list[asyncio.Task[None]] = []
        self.refused = Refused(options)  # copies in the DLQ, for replays from offsets
        self.lease = Lease(options.session_timeout_ms)  # fencing: kafka_lease.py
        self.heartbeats_followed = False
        # Bumped when the group ended this member's session while it could not answer,
        # or took partitions back while the shared store was away: batches of an older
        # session are void (dropped, never committed).
        self.session = 0
        self.claimed_at: float | None = None  # on the daemon clock; None: never claimed
        # Claiming the partitions just assigned (paused meanwhile): a task, so that the
        # group's heartbeats go on while the claim waits for Redis.
        self.claiming: asyncio.Task[None] | None = None

    # ---- life ------------------------------------------------------------------------
    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(), name="kafka-source"),
            asyncio.create_task(self._commit_loop(), name="kafka-commits"),
        ]
        if self.options.outcomes_topic:
            self._tasks.append(asyncio.create_task(publish_outcomes(self), name="kafka-outcomes"))

    async def stop(self) -> None:
        """Stop polling, let the batches in hand be stored and committed, then leave
        the group (its members adopt this one's windows)."""
        await self._stop_claiming()
        if self._tasks:
            self._tasks[0].cancel()
            await asyncio.gather(self._tasks[0], return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(), 30.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.consumer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await self.consumer.stop()  # revokes: windows go back undecided
        if self.producer is not None:
            with contextlib.suppress(KafkaError, OSError):
                await self.producer.stop()  # sends what it holds first
        self._tasks = []

    async def _drained(self) -> None:
        """Every polled batch stored and committed (unless the committer stopped)."""
        if len(self._tasks) > 1 and not self._tasks[1].done():
            await self.pending.join()

    async def _connect(self) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
        """Start the producer and the group member, retrying while the broker is away
        (heliosd keeps serving meanwhile; the Storage view shows why)."""
        o = self.options
        delay = 1.0
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=o.bootstrap_servers, client_id=o.client_id, linger_ms=5
            )
            consumer = AIOKafkaConsumer(
                bootstrap_servers=o.bootstrap_servers,
                group_id=o.group_id,
                client_id=o.client_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=o.session_timeout_ms,
            )
            # Topics go to subscribe() only, never also to the constructor (aiokafka #796).
            consumer.subscribe([o.topic], listener=_Listener(self))
            self.consumer = consumer  # the rebalance listener reads the topic's size
            try:
                await producer.start()
                await consumer.start()
                return consumer, producer
            except (KafkaError, OSError) as exc:
                self.state = f"DOWN: {o.bootstrap_servers} unreachable ({exc}); retrying"
                log.error("Kafka at %s: %s; retrying in %.0f s", o.bootstrap_servers, exc, delay)
                with contextlib.suppress(KafkaError, OSError):
                    await consumer.stop()
                with contextlib.suppress(KafkaError, OSError):
                    await producer.stop()
                await asyncio.sleep(delay)
                delay = min(30.0, delay * 2)

    async def _run(self) -> None:
        try:
            await self._consume()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._stopped(exc)

    def _stopped(self, exc: BaseException) -> None:
        self.state = f"STOPPED after an error: {type(exc).__name__}: {exc}"
        log.error("the Kafka input stopped (%s); offsets stay at the last stored batch", exc)

    async def _consume(self) -> None:
        self.consumer, self.producer = await self._connect()
        consumer = self.consumer
        self.heartbeats_followed = self.lease.watch(consumer)
        self.state = "up"
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=500, max_records=self.options.max_batch)
            except KafkaError as exc:
                self.state = f"poll failed: {exc}"
                log.error("Kafka poll failed: %s", exc)
                await asyncio.sleep(1.0)
                continue
            if not self.heartbeats_followed:
                self.lease.renew()  # the weaker proof: the broker answered a fetch
            elif batches and not self.lease.valid():
                for tp, msgs in batches.items():  # read again once the group has answered
                    consumer.seek(tp, msgs[0].offset)
                continue
            self.state = "up"
            batches = self._claimed_only(consumer, batches)
            if batches:
                # The next poll overlaps this batch's store; the committer keeps order.
                await self.slots.acquire()
                task = asyncio.create_task(self._take(consumer, batches))
                task.add_done_callback(lambda _: self.slots.release())
                self.pending.put_nowait(task)

    def _claimed_only(
        self, consumer: AIOKafkaConsumer, batches: Mapping[TopicPartition, list[Any]]
    ) -> Mapping[TopicPartition, list[Any]]:
        """The messages of claimed partitions. The group's assignment takes effect
        before assigned_now has claimed the partitions and read their marks (the
        fetcher does not wait for it, and claiming waits while Redis is away): messages
        of a partition given but not yet claimed are read again once it is (seek
        back; dropped, the position had moved past them and they were never read in
        this session). Those of a partition no longer assigned are another member's."""
        if all(tp.partition in self.assigned for tp in batches):
            return batches
        held = consumer.assignment()
        kept = {}
        for tp, msgs in batches.items():
            if tp.partition in self.assigned:
                kept[tp] = msgs
            elif tp in held:
                consumer.seek(tp, msgs[0].offset)
                self.counts["unclaimed_reread"] += len(msgs)
        return kept

    async def _commit_loop(self) -> None:
        """Commit each polled batch's offsets once it is stored in the store the other
        members read (a local spill does not count: a partition that moves starts from
        its committed offset), in poll order. A batch that failed stops the input: no
        offset past it is ever committed."""
        pending = self.pending
        while True:
            task = await pending.get()
            try:
                ends, session = await task
                ends = {tp: end for tp, end in ends.items() if tp.partition in self.assigned}
                if ends and not await self._in_store(session):
                    self.counts["not_committed"] += 1  # its session ended while it waited
                elif ends and self.consumer is not None:
                    async with self.busy:
                        await self.consumer.commit(ends)
            except KafkaError as exc:  # a rebalance: the marks keep redeliveries out
                self.counts["commit_failed"] += 1
                log.warning("committing offsets failed (%s): marks skip redeliveries", exc)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._stopped(exc)
                for other in self._tasks[:1]:  # the consumer: nothing more is taken
                    other.cancel()
                return
            finally:
                pending.task_done()

    async def _in_store(self, session: int) -> bool:
        """Wait until the index's writes so far are in its shared store (Redis); False
        if the session ends meanwhile (its batches are void, never committed)."""
        shared = self.context.shared
        if shared is None:
            return session == self.session
        waiting = asyncio.ensure_future(shared())
        while session == self.session:
            done, _ = await asyncio.wait({waiting}, timeout=0.5)
            if done:
                waiting.result()
                return session == self.session
        waiting.cancel()
        return False

    # ---- one batch -------------------------------------------------------------------
    async def _take(
        self, consumer: AIOKafkaConsumer, batches: Mapping[TopicPartition, list[Any]]
    ) -> Ends:
        """Admit a polled batch and wait until it is stored; refused messages to the
        DLQ. Returns the offsets to commit, and the session they belong to."""
        session = self.session
        copies: list[CopyIn] = []
        positions: list[tuple[str, int]] = []
        messages: list[Any] = []
        refused: list[tuple[Any, str, str, str]] = []  # message, field, reason, code
        ends: dict[TopicPartition, int] = {}
        for tp, msgs in batches.items():
            if tp.partition not in self.assigned:
                continue  # revoked while this batch was fetched
            name = f"{self.mark_prefix}{tp.partition}"
            done = self.stored.get(tp.partition, -1)
            for m in msgs:
                ends[tp] = m.offset + 1
                if m.offset <= done:
                    self.counts["redelivered_skipped"] += 1
                    continue
                copy, problem = decode(m)
                if copy is not None:
                    copies.append(copy)
                    positions.append((name, m.offset))
                    messages.append(m)
                elif problem is not None:
                    refused.append((m, *problem))
            high = consumer.highwater(tp)
            if high is not None and tp in ends:
                self.lag[tp.partition] = max(0, high - ends[tp])
        self.counts["messages"] += sum(len(m) for m in batches.values())
        chunk = min(ADMIT_CHUNK, self.context.max_batch)  # within ingest.max_batch_events
        spans = [(s, min(s + chunk, len(copies))) for s in range(0, len(copies), chunk)]
        # A poll's chunks enter admission together, before the next poll's: the index
        # then stores them in offset order, so a partition's mark never goes back and
        # everything at or below it is stored (chunks of two polls interleaved once
        # stored a later chunk before an earlier one, and its mark after it).
        submitted = []
        async with self.admitting:
            for start, end in spans:
                got = await self._submit(copies[start:end], positions[start:end], session)
                if got is None:
                    return self._void(len(copies) - start, session)
                submitted.append(got)
        for (start, end), got in zip(spans, submitted, strict=True):
            result = await self._stored(got, copies[start:end], positions[start:end], session)
            if result is None or session != self.session:  # the partitions moved
                return self._void(len(copies) - start, session)
            for r in result.rejections:
                refused.append((messages[start + r.index], r.field, r.reason, r.code))
            self.counts["copies"] += result.accepted
        if copies:
            for i, (_, offset) in enumerate(positions):
                part = messages[i].partition
                if offset > self.stored.get(part, -1):
                    self.stored[part] = offset
        if refused:
            await send_to_dlq(self, refused)
        return ends, session

    def _void(self, copies: int, session: int) -> Ends:
        self.counts["voided"] += copies
        return {}, session  # nothing to commit: the partitions' new owners read them again

    async def _submit(
        self, copies: list[CopyIn], positions: list[tuple[str, int]], session: int
    ) -> tuple[Any, Awaitable[None]] | None:
        """Admit (the caller holds `admitting`); while the daemon pushes back, wait and
        retry: a copy taken from Kafka is never dropped, unless its session has ended
        (None: its partition is another member's, which reads it again)."""
        attempt = 0
        submit = self.context.submit
        while True:
            if session != self.session:
                return None
            try:
                if submit is None:
                    result = await self.context.publish(copies, None, True, positions)
                    return result, _done()
                return await submit(copies, None, True, positions)
            except QueueFull as exc:
                self.counts["pushed_back"] += 1
                reason = str(exc)
            except RequestError as exc:  # publish() waits for the store: it may fail
                if exc.code is not ErrorCode.UNAVAILABLE:
                    raise
                if isinstance(exc.__cause__, Fenced | Voided):
                    return None
                self.counts["store_failed"] += 1
                reason = str(exc)
            attempt = await self._wait(attempt, len(copies), reason)

    async def _stored(
        self,
        got: tuple[Any, Awaitable[None]],
        copies: list[CopyIn],
        positions: list[tuple[str, int]],
        session: int,
    ) -> Any:
        """Wait until an admitted chunk is stored; one the index could not store is
        admitted again (None once its session has ended)."""
        attempt = 0
        while True:
            result, stored = got
            try:
                await stored
                return result
            except RequestError as exc:
                if exc.code is not ErrorCode.UNAVAILABLE:
                    raise
                if isinstance(exc.__cause__, Fenced | Voided):
                    return None  # another member's now: it reads them again
                self.counts["store_failed"] += 1
                reason = str(exc)
            attempt = await self._wait(attempt, len(copies), reason)
            async with self.admitting:
                again = await self._submit(copies, positions, session)
            if again is None:
                return None
            got = again

    async def _wait(self, attempt: int, copies: int, reason: str) -> int:
        delay = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
        if attempt == 0 or attempt % 50 == 0:
            log.warning("Kafka batch of %d copies waits: %s", copies, reason)
        await asyncio.sleep(delay)
        return attempt + 1

    # ---- ownership -------------------------------------------------------------------
    async def assigned_now(self, assigned: set[TopicPartition]) -> None:
        consumer = self.consumer
        if consumer is not None:
            found = consumer.partitions_for_topic(self.options.topic)
            self.partitions = len(found) if found else self.partitions
        if not self.partitions:
            log.error("Kafka: the size of %s is unknown: no window adopted", self.options.topic)
        self.lease.renew()  # the group has just said what this member holds
        mine = [tp for tp in assigned if tp.topic == self.options.topic]
        if consumer is not None:
            consumer.pause(*mine)  # nothing is fetched before they are claimed
        # The claim runs beside the group's protocol, not inside this callback: aiokafka
        # sends no heartbeat until the callback returns, and a claim waiting for Redis
        # longer than the session had the member put out of the group, again and again.
        await self._stop_claiming()
        self.claiming = asyncio.create_task(self._claim_then_resume(mine), name="kafka-claim")

    async def _claim_then_resume(self, mine: list[TopicPartition]) -> None:
        consumer = self.consumer
        try:
            await self._claim(mine)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a fault of ours: nothing of these partitions is taken
            self._stopped(exc)
            return
        if consumer is not None:
            held = consumer.assignment()
            consumer.resume(*[tp for tp in mine if tp in held])

    async def _stop_claiming(self) -> None:
        """A claim still in progress is dropped (its partitions are being revoked, or
        assigned anew): what it may have claimed is handed back with them, or by the
        next claim's scope."""
        claiming, self.claiming = self.claiming, None
        if claiming is not None and not claiming.done():
            claiming.cancel()
            await asyncio.gather(claiming, return_exceptions=True)

    async def _claim(self, mine: list[TopicPartition]) -> None:
        """Claim the partitions given, read their stored offsets, adopt their open
        windows; only then are they worked on."""
        parts = {tp.partition for tp in mine}
        # Partitions this member still holds in the index but was not given (lost
        # while the store was away, or before a restart) go back in the same step, now
        # that its writes are all in the store or refused (claim waits for that).
        names = [f"{self.mark_prefix}{p}" for p in sorted(parts)]
        if self.context.claim is not None:
            claim = self.context.claim
            await self._until_stored(lambda: claim(names, self.mark_prefix), "claimed")
            # Every write before the claim is stored or refused by now; a write after
            # it may be refused if another member takes the partitions over unhanded.
            self.claimed_at = self.context.clock.now()
        marks = await self._read_marks()
        now = self.context.clock.now()
        shifts: dict[int, float] = {}
        for p in parts:
            name = f"{self.mark_prefix}{p}"
            self.stored[p] = marks.get(name, -1)
            # The partition's windows keep the time they had left when its last batch
            # was stored: no member worked on them since.
            at = marks.get(name + "@")
            shifts[p] = max(0.0, now - at / 1000) if at is not None else 0.0
        self.assigned = parts
        n = self.partitions

        def take(event_id: str) -> float | None:
            p = partition_of(event_id, n)
            if p not in parts:
                return None
            return shifts[p]

        adopted = 0
        adopt = self.context.adopt
        if n and parts and adopt is not None:
            adopted = await self._until_stored(lambda: adopt(take), "adopted")
        log.info(
            "Kafka: partitions %s of %s assigned; %d open windows adopted",
            sorted(parts),
            self.options.topic,
            adopted,
        )

    async def revoked_now(self, revoked: set[TopicPartition]) -> None:
        await self._stop_claiming()
        if self.assigned and not self.lease.valid():
            # Put out of the group while it could not answer: what it has in hand is
            # another member's now. Queued batches are dropped; writes already made
            # are refused by the index (fenced by the member that took over).
            self._end_session(VOID_TEXT)
        handing_back = True
        drained = asyncio.ensure_future(self._drained())
        # Every batch in hand is stored and committed first, unless the shared store is
        # away: what the batches wrote is then in the local spill only, and waiting for
        # it would hold the whole group's rebalance as long as the outage lasts.
        while not (await asyncio.wait({drained}, timeout=1.0))[0]:
            away = self.context.away() if self.context.away is not None else None
            if away is not None and handing_back and self.assigned:
                self._end_session(AWAY_TEXT.format(why=away))
                handing_back = False
        if self.context.away is not None and self.context.away() is not None:
            handing_back = False  # its writes may be spilled: the next owner fences them
        async with self.busy:
            parts = {tp.partition for tp in revoked if tp.topic == self.options.topic}
            n = self.partitions
            released = 0
            if n and parts and self.context.release is not None:
                released = await self.context.release(lambda e: partition_of(e, n) in parts)
            self.assigned -= parts
            for p in parts:
                self.stored.pop(p, None)
                self.lag.pop(p, None)
            # Else the next owner's claim fences this member (its next claim hands the
            # partitions back, once its writes are all in the store or refused).
            if handing_back:
                await self._fenced(self.context.disown, parts, "handed back")
            if parts:
                log.info(
                    "Kafka: partitions %s revoked; %d open windows handed back",
                    sorted(parts),
                    released,
                )

    def _end_session(self, reason: str) -> None:
        """The batches in hand belong to a session the group has ended: none of them
        is committed, and the queued ones are dropped (the new owners read them)."""
        self.session += 1
        void = self.context.void
        dropped = void(reason, self.claimed_at) if void is not None else 0
        log.warning("Kafka: %s; %d queued copies dropped", reason, dropped)

    async def _until_stored(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """Call the index until it answers: a partition is not worked on before it is
        claimed, its stored offsets read and its windows adopted (the rebalance waits;
        the group's other members go on)."""
        attempt = 0
        while True:
            try:
                return await call()
            except OSError as exc:
                if attempt % LOG_EVERY == 0:
                    log.error("Kafka: partitions cannot be %s yet (%s); retrying", what, exc)
                attempt += 1
                await asyncio.sleep(0.5)

    async def _fenced(
        self, call: Callable[[Collection[str]], Awaitable[None]] | None, parts: set[int], what: str
    ) -> None:
        """disown the partitions in the index (fencing: redis_scripts.py), retrying a
        while when it cannot be reached."""
        if call is None or not parts:
            return
        names = [f"{self.mark_prefix}{p}" for p in sorted(parts)]
        for attempt in range(20):
            try:
                await call(names)
                return
            except OSError as exc:
                if attempt == 0:
                    log.error("Kafka: partitions cannot be %s in the index yet (%s)", what, exc)
                await asyncio.sleep(0.5)
        log.error("Kafka: partitions %s not %s in the index: weaker fencing", sorted(parts), what)

    async def _read_marks(self) -> dict[str, int]:
        read = self.context.read_marks
        if read is None:
            return {}
        return await self._until_stored(lambda: read(self.mark_prefix), "given their offsets")

    def may_decide(self) -> bool:
        """Whether windows may be decided now: not while the lease on the partitions
        has run out (a member frozen past its session). Asked by the window sweep."""
        return not self.assigned or self.lease.valid()

    # ---- outcomes and replays ----------------------------------------------------------
    def replays(self, source: str) -> bool:
        return self.options.replay and source in self.context.sources

    async def replay(self, source: str, copies: Sequence[CopyIn]) -> int:
        """Copies the group refused are read again at their offsets (kafka_offsets.py);
        the others are published to the topic, from the stored copy."""
        taken, accepted = await replay_refused(self, self.refused, source, copies)
        copies = [c for c in copies if c[0] not in taken]
        if not copies:
            return accepted
        producer = self.producer
        if producer is None:
            raise RequestError(
                "target", "Kafka is not connected: nothing replayed", ErrorCode.UNAVAILABLE
            )
        sent = []
        for event_id, _, event_type, produced_at, payload in copies:
            event = pb.Event(
                event_id=event_id, source=source, event_type=event_type, payload=payload
            )
            event.produced_at.FromNanoseconds(int(produced_at * 1e9))
            event.attributes["helios-replay"] = "1"
            sent.append(
                await producer.send(
                    self.options.topic, event.SerializeToString(), key=event_id.encode()
                )
            )
        delivered = 0
        for future in sent:
            with contextlib.suppress(KafkaError):
                await future
                delivered += 1
        self.counts["replayed"] += delivered
        return delivered + accepted

    def describe(self) -> dict[str, str]:
        o, c = self.options, self.counts
        parts = sorted(self.assigned)
        lag = sum(self.lag.get(p, 0) for p in parts)
        refused = ", ".join(f"{k} {v:,}" for k, v in self.dlq_reasons.most_common()) or "none"
        return {
            "kafka": f"{self.state}; {o.bootstrap_servers}, topic {o.topic} "
            f"({self.partitions} partitions), group {o.group_id}",
            "kafka partitions": (
                f"{len(parts)} of {self.partitions}: "
                + ", ".join(f"{p} (lag {self.lag.get(p, 0):,})" for p in parts)
                + f"; lag {lag:,}"
            )
            if parts
            else "none assigned"
            + (
                "; claiming those just given (they wait for the index)"
                if self.claiming is not None and not self.claiming.done()
                else ""
            ),
            "kafka messages": f"{c['messages']:,} read, {c['copies']:,} copies admitted, "
            f"{c['redelivered_skipped']:,} redelivered and skipped (stored already), "
            f"{c['unclaimed_reread']:,} fetched before their partition was claimed (read "
            f"again after), {c['pushed_back']:,} waits for room",
            "kafka lease": (
                f"{self.lease.left():.1f} s left" if self.lease.left() > 0 else "RUN OUT"
            )
            + f" (of {self.lease.seconds:.1f} s from the last heartbeat answered); "
            f"{self.lease.held:,} sweeps and batches held; {self.session:,} sessions ended "
            f"while frozen or while the index was away, {c['voided']:,} copies in hand dropped "
            f"and {c['not_committed']:,} batches left uncommitted (the new owner reads them)",
            "kafka dlq": f"{c['dlq']:,} to {o.dlq_topic or '(no topic)'}: {refused}",
            "kafka outcomes": f"{c['outcomes']:,} to {o.outcomes_topic or '(off)'}, "
            f"{c['outcomes_failed']:,} failed, {c['outcomes_lost']:,} overflows",
            "kafka replays": f"{c['replayed_from_offsets']:,} refused copies read again at "
            f"their offsets ({c['replayed_from_dlq']:,} of them from the DLQ), "
            f"{c['replayed']:,} published to {o.topic}",
        }


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource) -> None:
        self.source = source

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.source.revoked_now(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self.source.assigned_now(set(assigned))


async def _done() -> None:
    """What a chunk admitted through `publish` (which waits for the store) awaits."""


def _factory(context: SourceContext, options: Mapping[str, Any]) -> Source:
    return KafkaSource(context, parse_options(KafkaOptions, options, "kafka"))


@hookimpl(trylast=True)
def register_sources(register: Callable[[str, SourceFactory], None]) -> None:
    register("kafka", _factory)
