"""What the cloud inputs (webhook, sqs, pubsub) share: each is bound to one HELIOS
source, reads the business event's id, type and time at configurable paths, replays
through an optional publisher, counts its own deliveries, and, for the pull inputs,
holds messages while the daemon pushes back. Also the options parsing every source
plugin's factory does (`parse_options`)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

from helios.daemon.errors import ErrorCode, RequestError
from helios.daemon.model import CopyIn
from helios.daemon.types import PublishResult, QueueFull, SourceBase, SourceContext
from helios.plugins.sources import cloudpublish
from helios.plugins.sources.envelopes import Fields
from pydantic import BaseModel, ValidationError

RETRY_SECONDS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)  # backoff while the daemon pushes back
M = TypeVar("M", bound=BaseModel)


class BoundOptions(Protocol):
    source: str
    event_id: str
    event_type: str
    produced_at: str
    event_type_default: str
    publish: dict[str, Any]


def parse_options(model: type[M], options: Mapping[str, Any], plugin: str) -> M:
    """A plugin's options as its pydantic model; ValueError naming the first bad key."""
    try:
        return model.model_validate(dict(options))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{plugin} options: {where}: {first['msg']}") from None


class CloudInput(SourceBase):
    counts_deliveries = True  # InputStats: deliveries as the cloud made them
    state = "starting"

    def bind(
        self,
        context: SourceContext,
        options: BoundOptions,
        default: Fields,
        envelope: str = "",
    ) -> None:
        """Check the bound source, set where the fields are read and the publisher."""
        if options.source not in context.sources:
            raise ValueError(
                f"source {options.source!r} is not one of sources.names "
                f"({', '.join(context.sources)})"
            )
        self.context = context
        self.bound = options.source
        self.fields = Fields(
            options.event_id or default.event_id,
            options.event_type or default.event_type,
            options.produced_at or default.produced_at,
            options.event_type_default,
        )
        self.publisher = cloudpublish.build(options.publish, envelope)

    def delivers(self, source: str) -> bool:
        return source == self.bound

    def replays(self, source: str) -> bool:
        return self.publisher is not None and source == self.bound

    async def replay(self, source: str, copies: Sequence[CopyIn]) -> int:
        if self.publisher is None:
            return await super().replay(source, copies)
        return await self.publisher.publish(copies)

    async def admit_held(self, copies: list[CopyIn]) -> PublishResult:
        """Admit pulled copies, holding them with backoff while the daemon pushes back
        (a full queue, an index that could not store): never a dropped message."""
        attempt = 0
        while True:
            try:
                result = await self.context.publish(copies)
                self.state = "receiving"
                return result
            except QueueFull:
                pass
            except RequestError as exc:
                if exc.code != ErrorCode.UNAVAILABLE:
                    raise
            self.state = "held: the daemon is pushing back"
            await asyncio.sleep(RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)])
            attempt += 1

    async def kept_once(self, first: bool, code: str, detail: str, body: bytes, where: str) -> None:
        """A pulled message refused: a dead letter on its first delivery, counted after."""
        if first and self.context.dead_letter is not None:
            await self.context.dead_letter(code, detail, body, where)
        elif self.context.stats is not None:
            self.context.stats.refused(code)
