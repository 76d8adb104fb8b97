"""The Redis index: records, open windows and outcomes in Redis (redis-py asyncio with
hiredis), so that several heliosd processes can share them and a window can move from
one process to another. Long because the outage path (spill, catch-up, resume from the
spill) is the writer's other half and shares its state; the spill file is spill.py.

Key layout (`<p>` is `index.options.prefix`, "helios" by default):

    <p>:{<event_id>}     the record, open or closed (marshal), with a TTL of
                         index.ttl_seconds (a tenant's of its tenant_ttl_seconds,
                         when it has one)
    <p>:open             sorted set: event ids of open windows, scored by deadline
    <p>:outcomes:<m>     stream of outcomes written by member <m> (index.options.member),
                         entry id "<first sequence>-0", field "b": the outcomes of one
                         write (marshal); trimmed to about 2 x max_records
    <p>:meta:<m>         hash: last_sequence, saved_at (the daemon clock) of member <m>
    <p>:marks            hash: marks stored with the writes (a Kafka source's offsets
                         per partition, and when each was written)
    <p>:owners           hash: mark name (a Kafka partition) -> the member holding it
    <p>:fence            hash: member -> its epoch; a write of an older epoch is refused
                         (fencing: redis_scripts.py)

On a Redis Cluster (options.cluster) <p> is "{prefix}": the prefix is every key's hash
tag, so one index is one slot and a write one script there; shards spread the slots.

Each group of writes is one MULTI/EXEC transaction: all of it is applied or none.

Writes go in order through one writer task, several flushes per Redis pipeline (group
commit); a batch is acknowledged once Redis answered for it. When Redis cannot be
reached or answers errors, writes go to a local spill file (SQLite, fsynced) instead:
ingest goes on, and a batch is still acknowledged only once stored (spilled). Every
second the writer tries Redis again; when it answers, the spill is replayed in order
and deleted. Past `spill_max_bytes` admission pushes back (RESOURCE_EXHAUSTED): nothing
is dropped. While Redis is away, lookups of closed records see only what this process
wrote since; older events are recognised by the Bloom filters (docs/storage.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import marshal
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from helios.daemon.clock import Clock
from helios.daemon.hookspecs import hookimpl
from helios.daemon.housekeeping import freeze_gc
from helios.daemon.model import EventRecord, Outcome, OutcomeKind, Status
from helios.daemon.query import OutcomeQuery
from helios.daemon.tenants import SEP
from helios.daemon.types import Fenced, IndexBackend, IndexContext, IndexFactory, Resume
from helios.plugins.index.redis_scripts import CLAIM, DISOWN, WRITE
from helios.plugins.index.spill import Spill, Write
from helios.plugins.index.sqlite import record_from, record_tuple
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

log = logging.getLogger("helios.index.redis")
PENDING = Status.PENDING
FENCED_TEXT = (
    "another member took over this member's partitions while it could not answer or "
    "reach Redis (a freeze past the Kafka session, a Redis outage during a rebalance); "
    "what it had in hand is not stored, the new owner reads those messages again"
)
RETRY_SECONDS = 1.0
SCAN_LIMIT = 100_000  # outcomes read per ListOutcomes page before handing back a token


class RedisIndex:
    # Records live in Redis: the pipeline asks get_many per batch.
    resident: Mapping[str, EventRecord] | None = None
    durable = True

    def __init__(
        self,
        url: str,
        prefix: str,
        member: str,
        ttl: float,
        max_records: int,
        spill_path: Path,
        spill_max_bytes: int,
        timeout: float,
        clock: Clock,
        tenant_ttl: Mapping[str, float] | None = None,
        cluster: bool = False,
        replicas: int = 0,
        replicas_timeout_ms: int = 500,
    ) -> None:
        self.secret_url = url  # connects with it; everything shown uses self.url
        self.url = redacted(url)
        self.cluster = cluster
        # On a cluster every key of this index starts with the prefix as a hash tag, so
        # all of them are in one slot and a write stays one atomic script there (more
        # shards, index.shards, spread the slots over the nodes).
        self.prefix = "{" + prefix + "}" if cluster else prefix
        self.member = member
        # A write counts as stored once this many replicas have it too (WAIT), else
        # it spills as if Redis were away; 0: once the primary answered.
        self.replicas = replicas
        self.replicas_timeout_ms = replicas_timeout_ms
        self.under_replicated = 0  # writes the replicas did not confirm in time
        self.ttl = ttl
        self.tenant_ttl = {t: max(1, int(seconds)) for t, seconds in (tenant_ttl or {}).items()}
        self.max_records = max_records
        self.spill = Spill(spill_path)
        self.spill_max_bytes = spill_max_bytes
        self.timeout = timeout
        self.clock = clock
        self.redis: Redis | RedisCluster | None = None
        self._sha = hashlib.sha1(WRITE.encode()).hexdigest()
        self._queue: list[tuple[Write, asyncio.Future[None], int]] = []
        self._work = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self.down_since: float | None = None  # wall time Redis was first found away
        self.last_error = ""
        self.outages = 0
        self.writes = 0
        self.write_seconds = 0.0
        self.replayed = 0  # spilled writes sent to Redis after it came back
        # Read your writes: records handed to write() and not yet in Redis (queued,
        # in flight, or spilled while Redis is away), with the write's generation;
        # get_many and open_windows see them. Forgotten once Redis has their write.
        self._unsent: dict[str, tuple[EventRecord, int]] = {}
        self._written: deque[tuple[int, list[str]]] = deque()  # (generation, event ids)
        self._gen = 0  # of the last write()
        self._spilled_gen = 0  # of the last write that went to the spill
        # Every write up to this generation is in Redis or was refused there; shared()
        # waits on it: (generation, future) of each waiter.
        self._in_redis = 0
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []
        self._last_sequence = 0
        self._next_try = 0.0  # monotonic time of the next attempt to reach Redis
        self._marks: dict[str, int] = {}  # written by this process (newest)
        # This member's fencing epoch (redis_scripts.py); None until Redis has said it.
        self.epoch: int | None = None
        self.fenced = 0  # writes Redis refused: their epoch was fenced
        self._on_refused: Callable[[float, int], None] | None = None

    # ---- keys ----------------------------------------------------------------------
    def _key(self, event_id: str) -> str:
        return f"{self.prefix}:{{{event_id}}}"

    @property
    def _open_key(self) -> str:
        return f"{self.prefix}:open"

    @property
    def _stream(self) -> str:
        return f"{self.prefix}:outcomes:{self.member}"

    @property
    def _marks_key(self) -> str:
        return f"{self.prefix}:marks"

    @property
    def _meta(self) -> str:
        return f"{self.prefix}:meta:{self.member}"

    @property
    def _fence(self) -> str:
        return f"{self.prefix}:fence"

    # ---- opening -------------------------------------------------------------------
    async def open(self) -> Resume:
        connect = RedisCluster.from_url if self.cluster else Redis.from_url
        self.redis = connect(
            self.secret_url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
        )
        self.spill.open()
        try:
            await self.redis.script_load(WRITE)  # on every primary of a cluster
            await self._read_epoch(self.redis)
            if self.spill.rows:  # a previous run spilled: replay before reading back
                self._went_down(OSError("writes spilled by the previous run"))
                await self._try_catch_up()
                if self.down_since is not None:
                    raise OSError(self.last_error)
            resume = await self._resume(self.redis)
        except (RedisError, OSError) as exc:
            # Start anyway: serve, spill, and catch up once Redis answers.
            self._went_down(exc)
            resume = await asyncio.to_thread(self._resume_from_spill)
            log.error(
                "Redis at %s unreachable at start (%s): %d open windows from the spill; "
                "spilling until it answers",
                self.url,
                exc,
                len(resume.open_records),
            )
        self._writer = asyncio.create_task(self._write_loop(), name="redis-index-writer")
        return resume

    async def _read_epoch(self, redis: Redis | RedisCluster) -> None:
        epoch = await redis.hget(self._fence, self.member)
        self.epoch = int(epoch or 0)

    async def _resume(self, redis: Redis | RedisCluster) -> Resume:
        meta = await redis.hgetall(self._meta)
        last = int(meta.get(b"last_sequence", 0))
        saved = meta.get(b"saved_at")
        members: list[bytes] = await redis.zrange(self._open_key, 0, -1)  # type: ignore[assignment]
        ids = [i.decode() for i in members]
        found = await self._fetch(redis, ids, lasting=True)
        records = [r for r in found.values() if r.status is PENDING]
        self._last_sequence = last
        log.info("index %s: %d open windows, last outcome %d", self.url, len(records), last)
        return Resume(records, float(saved) if saved is not None else None, last)

    def _resume_from_spill(self) -> Resume:
        """Redis is away at start: the open windows and last sequence the spill holds
        (the newest version of each record wins)."""
        latest: dict[str, tuple[Any, ...]] = {}
        last, saved = 0, None
        for _, write in self.spill.oldest(None):
            records, _, sequence, saved_at = write[:4]
            if len(write) > 4 and write[4]:
                self._marks.update(write[4])
                self._marks.update({k + "@": int(saved_at * 1000) for k in write[4]})
            for values in records:
                latest[values[0]] = values
            last, saved = sequence, saved_at
        for values in latest.values():
            self._unsent[values[0]] = (record_from(values), 0)
        self._written.append((0, list(latest)))
        opened = [r for r, _ in self._unsent.values() if r.status is PENDING]
        self._last_sequence = last
        return Resume(opened, saved, last)

    async def _fetch(
        self,
        redis: Redis | RedisCluster,
        ids: Sequence[str],
        lasting: bool = False,
        wanted: Callable[[str], bool] | None = None,
    ) -> dict[str, EventRecord]:
        """One MGET per 1,000 ids (one command to pack, not one per id). `lasting`:
        the records are open windows about to live on in the reconciler; each chunk
        is put out of the cyclic GC's reach as it is made (housekeeping.freeze_gc), or
        the GC's full collections, which grow with what was made since the last
        freeze, stall the event loop: 140 ms while 100,000 windows were read
        (benchmarks/adopt.py)."""
        found: dict[str, EventRecord] = {}
        key = self._key
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            if wanted is not None:
                chunk = [e for e in chunk if wanted(e)]
                if not chunk:
                    await asyncio.sleep(0)  # the loop's turn, as an MGET would give it
                    continue
            values: list[bytes | None] = await redis.mget([key(e) for e in chunk])  # type: ignore[assignment]
            for event_id, value in zip(chunk, values, strict=True):
                if value is not None:
                    found[event_id] = record_from(marshal.loads(value))
            if lasting:
                freeze_gc()
        return found

    # ---- writing -------------------------------------------------------------------
    def write(
        self,
        records: Sequence[EventRecord],
        outcomes: Sequence[Outcome],
        marks: Mapping[str, int] | None = None,
    ) -> Awaitable[None]:
        done = asyncio.get_running_loop().create_future()
        if outcomes:
            self._last_sequence = outcomes[-1].sequence
        # Encoded now, on the event loop: the records go on changing after this call.
        job: Write = (
            [record_tuple(r) for r in records],
            [
                (o.sequence, int(o.kind), o.event_id, o.event_type, o.sources, o.time, o.late_by)
                for o in outcomes
            ],
            self._last_sequence,
            self.clock.now(),
            dict(marks) if marks else None,
            "" if self.epoch is None else str(self.epoch),  # checked by Redis: fencing
        )
        if marks:
            self._marks.update(marks)
            at = int(job[3] * 1000)
            self._marks.update({k + "@": at for k in marks})
        self._gen = gen = self._gen + 1
        if records:
            unsent = self._unsent
            for r in records:
                unsent[r.event_id] = (r, gen)
            self._written.append((gen, [r.event_id for r in records]))
        self._queue.append((job, done, gen))
        self._work.set()
        return done

    def _forget(self, upto: int) -> None:
        """Redis has every write up to generation `upto`: reads go to it again."""
        if upto > self._in_redis:
            self._in_redis = upto
            waiting, self._waiting = self._waiting, []
            for gen, future in waiting:
                if gen > upto:
                    self._waiting.append((gen, future))
                elif not future.done():
                    future.set_result(None)
        written, unsent = self._written, self._unsent
        while written and written[0][0] <= upto:
            _, ids = written.popleft()
            for event_id in ids:
                entry = unsent.get(event_id)
                if entry is not None and entry[1] <= upto:
                    del unsent[event_id]

    async def shared(self) -> None:
        """Return once every write made so far is in Redis (or Redis refused it): what
        only the local spill holds is not there for the other members yet."""
        gen = self._gen
        if gen <= self._in_redis:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiting.append((gen, future))
        await future

    def away(self) -> str | None:
        if self.down_since is not None:
            return f"Redis at {self.url} is unreachable ({self.last_error}): writes spill"
        if self.spill.rows:
            return f"Redis at {self.url} is back: {self.spill.rows:,} spilled writes to replay"
        return None

    def forgotten_until(self, now: float) -> float:
        """Redis drops a record `ttl` seconds after its last write (a tenant's sooner),
        which is after its first copy: one first seen since then is there. (A Redis
        that evicts keys under maxmemory would break this: run it with noeviction.)
        While Redis is unreachable nothing is looked up there (get_many): every record
        may be missed, so `now`."""
        if self.down_since is not None:
            return now
        return now - min([self.ttl, *self.tenant_ttl.values()])

    def pushback(self) -> str | None:
        if self.spill.bytes >= self.spill_max_bytes:
            return (
                f"Redis at {self.url} is unreachable and the local spill holds "
                f"{self.spill.bytes:,} bytes, its budget (index.options.spill_max_bytes): "
                "retry when Redis is back"
            )
        return None

    async def _write_loop(self) -> None:
        while True:
            if not self._queue:
                self._work.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._work.wait(), RETRY_SECONDS)
            if self.down_since is not None or self.spill.rows:
                await self._try_catch_up()
            jobs, self._queue = self._queue, []
            if not jobs:
                continue
            writes = [job for job, _, _ in jobs]
            last_gen = jobs[-1][2]
            error: BaseException | None = None
            if self.down_since is None and not self.spill.rows:
                try:
                    fenced = await self._send(writes)
                except (RedisError, OSError) as exc:
                    self._went_down(exc)
                except Exception as exc:  # a fault of ours: spill, never stop acknowledging
                    log.exception("writing to Redis failed unexpectedly; spilling")
                    self._went_down(exc)
                else:
                    for k in fenced:
                        self._refuse(*jobs[k])
                    self._refused([writes[k] for k in fenced])
                    self._forget(last_gen)
            if self.down_since is not None or self.spill.rows:
                try:
                    await asyncio.to_thread(self.spill.append, writes)
                    self._spilled_gen = last_gen
                except (sqlite3.Error, OSError) as exc:
                    error = exc
            for _, done, _ in jobs:
                if done.done():
                    continue
                if error is None:
                    done.set_result(None)
                else:
                    done.set_exception(
                        OSError(f"Redis is away and the spill file failed too: {error}")
                    )

    def _refuse(self, job: Write, done: asyncio.Future[None], gen: int) -> None:
        """A write Redis refused as fenced: not stored, and its records no longer read
        as this process's newest (another member holds their windows now)."""
        self.fenced += 1
        for values in job[0]:
            entry = self._unsent.get(values[0])
            if entry is not None and entry[1] == gen:
                del self._unsent[values[0]]
        if not done.done():
            done.set_exception(Fenced(f"{self.url}: {FENCED_TEXT}"))
        if self.fenced == 1 or self.fenced % 1000 == 0:
            log.error("Redis refused %d writes of %s: %s", self.fenced, self.member, FENCED_TEXT)

    def when_refused(self, call: Callable[[float, int], None]) -> None:
        self._on_refused = call

    def _refused(self, writes: list[Write]) -> None:
        """Tell the daemon when the oldest of these refused writes was made, and the
        first outcome sequence they held (after the last one if they held none)."""
        if writes and self._on_refused is not None:
            since = min(float(w[3]) for w in writes)
            self._on_refused(since, min(w[1][0][0] if w[1] else w[2] + 1 for w in writes))

    async def _send(self, writes: list[Write]) -> list[int]:
        """Every write as one call of the WRITE script (its arguments flat), all in one
        MULTI/EXEC: a heliosd killed mid-send leaves none of it, never a record closed
        without its outcome, or copies stored without their source's mark. One command
        per write, not three or four per record: redis-py spends about 7 µs of the
        event loop on each command it packs (benchmarks/durability.sh). Returns the
        writes Redis refused because their member was fenced (they changed nothing)."""
        redis = self.redis
        assert redis is not None
        started = time.perf_counter()
        dumps = marshal.dumps
        calls: list[list[Any]] = []
        for write in writes:
            records, outcomes, last, saved_at = write[:4]
            # The stream keeps about the newest 2 x max_records outcomes.
            minid = f"{max(0, last - 2 * self.max_records)}-0"
            epoch = write[5] if len(write) > 5 else ""  # older spilled writes: none
            head = [self.prefix, max(1, int(self.ttl)), minid, self.member, epoch]
            args: list[Any] = [*head, *self._tenant_ttls(records), len(records)]
            for values in records:
                pending = values[8] == PENDING
                args += (values[0], dumps(values), repr(values[7]) if pending else "")
            if outcomes:
                args += (outcomes[0][0], dumps(outcomes))
            else:
                args += ("", "")
            args += (last, repr(saved_at))
            marks = write[4] if len(write) > 4 else None
            args.append(len(marks) if marks else 0)
            if marks:
                at = int(saved_at * 1000)  # "<name>@": when, on the daemon clock (ms)
                for name, value in marks.items():
                    args += (name, value, name + "@", at)
            calls.append(args)
        if self.replicas:
            results = await self._send_replicated(redis, calls)
        else:
            async with redis.pipeline(transaction=True) as pipe:
                for args in calls:
                    # The open set's key routes it on a cluster; the script uses ARGV.
                    pipe.execute_command("EVALSHA", self._sha, 1, self._open_key, *args)
                results = await pipe.execute(raise_on_error=False)
        fenced = []
        for k, result in enumerate(results):
            if isinstance(result, Exception):
                if not str(result).startswith("FENCED"):
                    raise result
                fenced.append(k)
        self.writes += len(writes)
        self.write_seconds += time.perf_counter() - started
        return fenced

    async def _send_replicated(self, redis: Redis | RedisCluster, calls: list[list[Any]]) -> Any:
        """The same transaction, then WAIT on the same connection (WAIT counts the
        replicas that have this connection's writes; inside MULTI it would not block).
        Fewer replicas than asked within the time: an error, so the writes spill and
        are replayed (their parts are idempotent) until the replicas confirm them."""
        async with redis.pipeline(transaction=False) as pipe:
            pipe.execute_command("MULTI")
            for args in calls:
                pipe.execute_command("EVALSHA", self._sha, 1, self._open_key, *args)
            pipe.execute_command("EXEC")
            pipe.execute_command("WAIT", self.replicas, self.replicas_timeout_ms)
            replies = await pipe.execute(raise_on_error=False)
        results, acked = replies[-2], replies[-1]
        for reply in (results, acked):
            if isinstance(reply, Exception):
                raise reply
        if int(acked) < self.replicas:
            self.under_replicated += len(calls)
            raise RedisError(
                f"{acked} of {self.replicas} replicas confirmed a write within "
                f"{self.replicas_timeout_ms} ms (index.options.replicas)"
            )
        return results

    def _tenant_ttls(self, records: Sequence[Any]) -> list[Any]:
        """The script's tenant TTL arguments: the count, then (tenant, seconds) for the
        tenants of these records only (a thousand tenants configured cost nothing on a
        write that has none of theirs)."""
        ttls = self.tenant_ttl
        if not ttls:
            return [0]
        present = {v[0].partition(SEP)[0] for v in records if SEP in v[0]}
        pairs = [(t, ttls[t]) for t in present if t in ttls]
        return [len(pairs), *(x for pair in pairs for x in pair)]

    def _went_down(self, exc: BaseException) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.down_since is None:
            self.down_since = time.time()
            self.outages += 1
            log.error("Redis at %s failed (%s): spilling writes locally", self.url, exc)

    async def _try_catch_up(self) -> None:
        """Redis was away: when it answers again, replay the spill in order, then go
        back to writing to Redis."""
        redis = self.redis
        assert redis is not None
        if time.monotonic() < self._next_try:
            return
        self._next_try = time.monotonic() + RETRY_SECONDS
        try:
            await redis.ping()
            await redis.script_load(WRITE)  # a Redis that restarted has no scripts
            if self.epoch is None:
                await self._read_epoch(redis)
            while True:
                batch = await asyncio.to_thread(self.spill.oldest, 64)
                if not batch:
                    break
                fenced = await self._send([w for _, w in batch])
                if fenced:  # acknowledged by a session the group has ended since
                    self.fenced += len(fenced)
                    self._refused([batch[k][1] for k in fenced])
                    log.error(
                        "Redis refused %d spilled writes of member %s: %s",
                        len(fenced),
                        self.member,
                        FENCED_TEXT,
                    )
                await asyncio.to_thread(self.spill.remove, batch[-1][0])
                self.replayed += len(batch)
        except Exception as exc:  # Redis still away, or a fault of ours: retried each second
            self.last_error = f"{type(exc).__name__}: {exc}"
            return
        if self.down_since is not None:
            log.info(
                "Redis at %s is back after %.1f s; spill replayed",
                self.url,
                time.time() - self.down_since,
            )
        self.down_since = None
        self._forget(self._spilled_gen)

    # ---- reading -------------------------------------------------------------------
    async def get_many(self, event_ids: Collection[str]) -> dict[str, EventRecord]:
        unsent = self._unsent
        found = {i: unsent[i][0] for i in event_ids if i in unsent} if unsent else {}
        rest = [i for i in event_ids if i not in found]
        if rest and self.down_since is None and self.redis is not None:
            try:
                fetched = await self._fetch(self.redis, rest)
            except (RedisError, OSError) as exc:
                self._went_down(exc)
            else:
                # A record written but not yet sent is newer than Redis's.
                for event_id, rec in fetched.items():
                    found.setdefault(event_id, rec)
        return found

    async def claim(self, names: Collection[str], scope: str = "") -> None:
        """Take these partitions (mark names) for this member, fencing a holder that
        did not hand them back, and hand back every other one of `scope` (a mark-name
        prefix) it holds; this member's writes carry its epoch from now on. Only once
        every write it made is in Redis or refused there: none of an earlier session
        may land after the claim. Raises OSError while Redis cannot be reached or the
        spill is not replayed yet."""
        redis = self.redis
        if redis is None or self.away() is not None:
            raise OSError(f"partitions cannot be claimed yet: {self.away() or 'not open'}")
        await self.shared()  # the writes queued or in flight before the claim
        try:
            epoch = await redis.eval(
                CLAIM, 1, self._open_key, self.prefix, self.member, scope, *names
            )
        except RedisError as exc:
            raise OSError(f"Redis at {self.url}: {exc}") from exc
        self.epoch = int(epoch)
        if not self.spill.rows:  # Redis has every mark this process stored: read those
            self._marks.clear()  # (not the marks of writes it refused as fenced)

    async def disown(self, names: Collection[str]) -> None:
        """Hand these partitions back after this member's last write for them: whoever
        takes them next fences no one. The writes made before go first (DISOWN travels
        on another connection than the writer and could overtake them: the next owner
        would adopt a window a late write of this member then closes too). Not in Redis
        within `timeout_seconds`: OSError, and the partitions stay claimed (the next
        owner fences this member instead)."""
        redis = self.redis
        if redis is None or self.away() is not None:
            raise OSError(f"partitions stay claimed: {self.away() or 'not open'}")
        try:
            await asyncio.wait_for(self.shared(), self.timeout)
        except TimeoutError as exc:
            raise OSError(f"Redis at {self.url}: earlier writes not stored yet") from exc
        try:
            await redis.eval(DISOWN, 1, self._open_key, self.prefix, self.member, *names)
        except RedisError as exc:
            raise OSError(f"Redis at {self.url}: {exc}") from exc

    async def read_marks(self, prefix: str) -> dict[str, int]:
        """Redis's marks, and newer ones this process wrote but has not sent (spilled):
        raises OSError when Redis is away and this process did not write the marks."""
        stored: dict[str, int] = {}
        if self.redis is not None and self.down_since is None:
            try:
                raw: dict[bytes, bytes] = await self.redis.hgetall(self._marks_key)  # type: ignore[assignment]
            except (RedisError, OSError) as exc:
                self._went_down(exc)
            else:
                stored = {k.decode(): int(v) for k, v in raw.items()}
        mine = {k: v for k, v in self._marks.items() if k.startswith(prefix)}
        if self.down_since is not None and not mine:
            raise OSError(f"Redis at {self.url} is unreachable: marks cannot be read now")
        found = {k: v for k, v in stored.items() if k.startswith(prefix)}
        found.update(mine)
        return found

    async def open_windows(self, wanted: Callable[[str], bool] | None = None) -> list[EventRecord]:
        """The open set's ids are read whole (about 15 ms per 100,000), the records only
        of the ids `wanted` accepts (asked a chunk at a time: Kafka's partitioner in
        Python takes 2 µs an id, 200 ms of event loop per 100,000 asked at once)."""
        redis = self.redis
        if redis is None or self.down_since is not None:
            raise OSError(f"Redis at {self.url} is unreachable: open windows cannot be read")
        members: list[bytes] = await redis.zrange(self._open_key, 0, -1)  # type: ignore[assignment]
        ids = [i.decode() for i in members]
        newer = self._unsent  # newer than Redis's
        if wanted is not None:
            newer = {k: v for k, v in newer.items() if wanted(k)}
        found = await self._fetch(redis, ids, lasting=True, wanted=wanted)
        found.update({k: rec for k, (rec, _) in newer.items()})
        return [r for r in found.values() if r.status is PENDING]

    async def list_outcomes(
        self, query: OutcomeQuery, page_size: int, before: int | None
    ) -> tuple[list[Outcome], int | None]:
        redis = self.redis
        if redis is None or self.down_since is not None:
            raise OSError(f"Redis at {self.url} is unreachable: outcomes cannot be listed now")
        page: list[Outcome] = []
        high = "+" if before is None else f"({before}-0"
        scanned = 0
        while len(page) < page_size:
            entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrevrange(  # type: ignore[assignment]
                self._stream, max=high, min="-", count=1000
            )
            if not entries:
                return page, None
            for entry_id, fields in entries:
                packed = fields.get(b"b")  # a write's outcomes; "o": one (before 2026-11-30)
                values = marshal.loads(packed) if packed else [marshal.loads(fields[b"o"])]
                for seq, kind, event_id, event_type, sources, at, late_by in reversed(values):
                    if before is not None and seq >= before:
                        continue  # the newer part of the entry the last page ended in
                    outcome = Outcome(
                        OutcomeKind(kind), event_id, event_type, tuple(sources), at, late_by
                    )
                    outcome.sequence = seq
                    scanned += 1
                    if query.matches(outcome):
                        page.append(outcome)
                        if len(page) == page_size:
                            return page, seq
                high = f"({entry_id.decode()}"
            if scanned >= SCAN_LIMIT:
                return page, int(high[1:].split("-")[0])
        return page, None

    async def expire(self, now: float, keep_after: float) -> int:
        return 0  # records carry a TTL; the outcome stream is trimmed as it grows

    async def count(self) -> int:
        if self.redis is None or self.down_since is not None:
            return 0
        try:
            if isinstance(self.redis, RedisCluster):  # this index's keys: one slot
                slot = self.redis.keyslot(self._open_key)
                return int(await self.redis.cluster_countkeysinslot(slot))
            return int(await self.redis.dbsize())
        except (RedisError, OSError):
            return 0

    def describe(self) -> dict[str, str]:
        per_write = self.write_seconds / self.writes * 1000 if self.writes else 0.0
        if self.down_since is None:
            health = "up" if not self.spill.rows else "catching up"
        else:
            health = (
                f"DOWN for {time.time() - self.down_since:.0f} s ({self.last_error}); "
                "writes spill locally"
            )
        return {
            "backend": "redis",
            "durability": (
                "every acknowledged batch is in Redis (what survives a Redis crash is "
                "Redis's appendonly/appendfsync setting) or, while Redis is away, "
                "committed and fsynced to the local spill file"
            ),
            "redis": f"{self.url}{' (a cluster)' if self.cluster else ''} "
            f"(prefix {self.prefix!r}, member {self.member!r})",
            "health": health,
            "writes": f"{self.writes:,} ({per_write:.2f} ms each on average); "
            f"{self.outages} outages, {self.replayed:,} spilled writes replayed",
            "spill": f"{self.spill.rows:,} writes, {self.spill.bytes:,} of at most "
            f"{self.spill_max_bytes:,} bytes ({self.spill.path})",
            "fencing": f"epoch {'unknown yet' if self.epoch is None else self.epoch}; "
            f"{self.fenced:,} writes refused as fenced",
            "replicas": (
                f"a write is stored once {self.replicas} replica(s) confirm it within "
                f"{self.replicas_timeout_ms} ms (WAIT); {self.under_replicated:,} were not "
                "in time and spilled"
                if self.replicas
                else "not waited for: a write is stored once the primary answered "
                "(index.options.replicas)"
            ),
        }

    async def close(self) -> None:
        if self._writer is not None:
            while self._queue:
                await asyncio.sleep(0.01)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None
        self.spill.close()


def redacted(url: str) -> str:
    """The URL without its password, for logs, errors and the Storage view."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, ""))


OPTIONS = (
    "url",
    "urls",
    "cluster",
    "prefix",
    "member",
    "spill_max_bytes",
    "timeout_seconds",
    "replicas",
    "replicas_timeout_ms",
)


def _factory(context: IndexContext) -> IndexBackend:
    options: dict[str, Any] = dict(context.config.options)
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"index.options: unknown keys {unknown} (redis: {', '.join(OPTIONS)})")
    url = str(options.get("url", "redis://127.0.0.1:6379/0"))
    urls = options.get("urls")
    if urls is not None:  # one server per shard (index.shards)
        if not isinstance(urls, list) or len(urls) != context.shards:
            raise ValueError(
                f"index.options.urls must list one URL per shard ({context.shards}), got {urls!r}"
            )
        url = str(urls[context.shard])
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(f"index.options.url must be redis://, rediss:// or unix://, got {url!r}")
    cluster = options.get("cluster", False)
    if not isinstance(cluster, bool):
        raise ValueError(f"index.options.cluster must be true or false, got {cluster!r}")
    if cluster and not url.startswith(("redis://", "rediss://")):
        raise ValueError(f"index.options.cluster needs a redis:// or rediss:// URL, got {url!r}")
    if cluster and context.shards == 1:
        log.warning(
            "index.options.cluster with index.shards = 1: the whole index is one hash slot "
            "on one node; raise index.shards (16 or more) to spread it over the cluster"
        )
    spill_max = int(options.get("spill_max_bytes", 256 * 1_048_576))
    timeout = float(options.get("timeout_seconds", 2.0))
    if spill_max <= 0 or timeout <= 0:
        raise ValueError("index.options.spill_max_bytes and timeout_seconds must be > 0")
    replicas, wait_ms = options.get("replicas", 0), options.get("replicas_timeout_ms", 500)
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise ValueError(f"index.options.replicas must be an integer >= 0, got {replicas!r}")
    if not isinstance(wait_ms, int) or isinstance(wait_ms, bool) or wait_ms <= 0:
        raise ValueError(
            f"index.options.replicas_timeout_ms must be an integer > 0, got {wait_ms!r}"
        )
    if replicas and wait_ms >= timeout * 1000:
        raise ValueError(
            f"index.options.replicas_timeout_ms ({wait_ms}) must be below timeout_seconds "
            f"({timeout} s): WAIT would outlast the socket timeout"
        )
    if replicas and cluster:
        raise ValueError(
            "index.options.replicas is not supported with cluster = true yet: WAIT must "
            "follow the write on the connection that made it, which redis-py's cluster "
            "client does not lend (use Redis's own min-replicas-to-write on the primaries)"
        )
    member = str(options.get("member", "main"))
    shard = f"-{context.shard}" if context.shards > 1 else ""
    return RedisIndex(
        url=url,
        # Shards on one server (no `urls`) keep apart by prefix: helios-0, helios-1, ...
        prefix=str(options.get("prefix", "helios")) + (shard if urls is None else ""),
        member=member,
        ttl=context.config.ttl_seconds,
        max_records=context.config.max_records,
        spill_path=Path(context.data_dir) / f"redis-spill-{member}{shard}.sqlite3",
        spill_max_bytes=spill_max,
        timeout=timeout,
        clock=context.clock,
        tenant_ttl=context.config.tenant_ttl_seconds,
        cluster=cluster,
        replicas=replicas,
        replicas_timeout_ms=wait_ms,
    )


@hookimpl(trylast=True)
def register_index_backends(register: Callable[[str, IndexFactory], None]) -> None:
    register("redis", _factory)
