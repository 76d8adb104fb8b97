"""One way in: every front door (gRPC Publish and PublishStream, source plugins, replays)
hands its batch to `Admission.admit`. It throttles, claims queue room for the whole
batch (or refuses it whole), validates and enqueues the batch in slices, and gives back
the room that rejected copies did not use."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from helios.daemon.errors import ErrorCode, RequestError
from helios.daemon.model import Checked, CopyIn
from helios.daemon.pipeline import Pipeline
from helios.daemon.telemetry import Telemetry
from helios.daemon.types import PublishResult, QueueFull, Rejected

# Copies validated and reconciled at a time within a batch: an event's outcome waits
# for its slice, not for the whole batch.
SLICE = 128


class Admission:
    def __init__(self, pipeline: Pipeline, max_batch: int, wait_seconds: float) -> None:
        self.pipeline = pipeline
        self.max_batch = max_batch
        self.wait_seconds = wait_seconds  # how long a stream may wait for room
        self.telemetry: Telemetry | None = None  # traces a sampled copy of a batch
        # With index shards: whether a copy at a position (mark name, value) is stored
        # in its shard already (ShardedIndex.stored_already); such a copy is skipped.
        self.stored_already: Callable[[str, int, str], bool] | None = None

    async def admit(
        self,
        copies: Sequence[CopyIn],
        received: float | None = None,
        wait: bool = False,
        positions: Sequence[tuple[str, int]] | None = None,
        whole: bool = False,
        scoped: bool = False,
    ) -> PublishResult:
        """Validate and enqueue a batch, and return once it is stored (with a durable
        index; at once otherwise): the acknowledgement. Each bad copy is reported by its
        index.

        Raises RequestError for a batch over `max_batch`, QueueFull (code EXHAUSTED)
        when the queue has no room (after up to `wait_seconds` with `wait`) or a
        throttled source is over its rate, the batch then refused whole; and
        RequestError (code UNAVAILABLE) when the index could not store it.

        `positions` (one per copy: a mark name and an integer, e.g. a Kafka partition
        and offset) are stored with the copies, the highest of each slice in the same
        write: a source reads them back to skip what was stored already.

        `whole`: one bad copy refuses the batch (nothing enqueued, accepted 0, the
        rejections named): a webhook delivery is taken whole or retried whole.

        `scoped`: the copies come from the API, whose ids may carry a tenant
        (helios.daemon.identity.scoped); an input's never do."""
        result, stored = await self.submit(copies, received, wait, positions, whole, scoped)
        await stored
        return result

    async def submit(
        self,
        copies: Sequence[CopyIn],
        received: float | None = None,
        wait: bool = False,
        positions: Sequence[tuple[str, int]] | None = None,
        whole: bool = False,
        scoped: bool = False,
    ) -> tuple[PublishResult, Awaitable[None]]:
        """admit() without waiting for the store: the result, and what completes when
        the batch is stored. PublishStream reads its next batch meanwhile and sends the
        acknowledgements in order as they complete."""
        pipeline = self.pipeline
        count = len(copies)
        if count > self.max_batch:
            pipeline.rejections["batch_too_large"] += 1
            raise RequestError(
                "events", f"batch has {count} events; at most {self.max_batch} per batch"
            )
        if not count:
            return PublishResult(0), _stored()
        if positions is not None and len(positions) != count:
            raise ValueError(f"{len(positions)} positions for {count} copies")
        if received is None:
            received = time.perf_counter()
        open_ = pipeline.reconciler.open
        if len(open_) + count > pipeline.max_open_windows:  # near the bound: count exactly
            opening = len({c[0] for c in copies if c[0] not in open_})
            if opening and len(open_) + opening > pipeline.max_open_windows:
                pipeline.rejections["open_windows_full"] += count
                raise QueueFull(
                    f"{len(open_):,} windows are open and this batch would open {opening:,} "
                    f"more; reconcile.max_open_windows is {pipeline.max_open_windows:,}: "
                    "retry when some have closed"
                )
        refusal = pipeline.index.pushback()
        if refusal is not None:
            pipeline.rejections["index_backlog_full"] += count
            raise QueueFull(refusal)
        if pipeline.throttles:
            pipeline.throttle([c[1] for c in copies])  # counts "throttled" itself
        try:
            if wait:
                await pipeline.reserve_wait(count, self.wait_seconds)
            else:
                pipeline.reserve(count)
        except QueueFull:
            pipeline.rejections["queue_full"] += count
            raise
        accepted = 0
        rejections: list[Rejected] = []
        stored: list[asyncio.Future[None]] = []
        traced = self.telemetry.start_copy(copies, received) if self.telemetry else None
        try:
            checked = None
            if whole:  # check every slice before enqueueing any
                checked = [
                    pipeline.check(copies[s : s + SLICE], scoped) for s in range(0, count, SLICE)
                ]
                refused = [
                    replace(r, index=r.index + n * SLICE)
                    for n, (_, result) in enumerate(checked)
                    for r in result.rejections
                ]
                if refused:
                    return PublishResult(0, refused), _stored()
            skip = self.stored_already if positions is not None and not whole else None
            for start in range(0, count, SLICE):
                if checked is not None:
                    good, result = checked[start // SLICE]
                elif skip is not None and positions is not None:
                    good, result = self._check_new(copies, positions, start, skip, scoped)
                else:
                    good, result = pipeline.check(copies[start : start + SLICE], scoped)
                for r in result.rejections:
                    rejections.append(replace(r, index=r.index + start) if start else r)
                marks = _marks(positions[start : start + SLICE]) if positions else None
                if good or marks:
                    future = pipeline.enqueue_reserved(good, received, marks)
                    if future is not None:
                        stored.append(future)
                    accepted += len(good)
                    if start + SLICE < count:
                        await asyncio.sleep(0)  # let the reconciler take this slice
        finally:
            pipeline.release(count - accepted)
            if traced is not None and self.telemetry is not None:
                self.telemetry.admitted(traced, accepted, "" if accepted else "nothing accepted")
        if not stored:  # an index in memory: nothing to wait for
            return PublishResult(accepted, rejections), _stored()
        return PublishResult(accepted, rejections), asyncio.ensure_future(_all_stored(stored))

    def _check_new(
        self,
        copies: Sequence[CopyIn],
        positions: Sequence[tuple[str, int]],
        start: int,
        stored_already: Callable[[str, int, str], bool],
        scoped: bool,
    ) -> tuple[list[Checked], PublishResult]:
        """check() of a slice without the copies their shard has stored already (its
        marks still go with the slice); rejections keep their index in the slice."""
        end = min(start + SLICE, len(copies))
        kept = [i for i in range(start, end) if not stored_already(*positions[i], copies[i][0])]
        if len(kept) == end - start:
            return self.pipeline.check(copies[start:end], scoped)
        good, result = self.pipeline.check([copies[i] for i in kept], scoped)
        refused = [replace(r, index=kept[r.index] - start) for r in result.rejections]
        return good, PublishResult(result.accepted, refused)


def _marks(positions: Sequence[tuple[str, int]]) -> dict[str, int]:
    """The highest position of each name in a slice."""
    marks: dict[str, int] = {}
    for name, value in positions:
        if value > marks.get(name, -1):
            marks[name] = value
    return marks


def _stored() -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


async def _all_stored(stored: list[asyncio.Future[None]]) -> None:
    for future in stored:
        try:
            await future
        except RequestError:
            raise
        except Exception as exc:
            raise RequestError(
                "events",
                f"the batch was not stored ({exc}); nothing of it is acknowledged: retry",
                ErrorCode.UNAVAILABLE,
            ) from exc
