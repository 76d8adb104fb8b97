"""The `pubsub` source: copies pulled from a Pub/Sub subscription with the official
client's streaming pull, bound to one HELIOS source (docs/clouds/gcp.md).

    [sources.inputs.gcp_orders]
    plugin = "pubsub"
    subscription = "projects/my-project/subscriptions/helios-orders"
    source = "gcp"

The client's callbacks run in its threads; they hand each message to the event loop,
where messages are admitted in batches and acked only once their copies are durable
(a crash before that: Pub/Sub redelivers them after the ack deadline, which the client
extends while they wait). While the daemon pushes back, messages are held and retried
with backoff. A message HELIOS cannot take is counted, kept as a dead letter on its
first delivery and nacked, for the subscription's dead-letter policy to move on after
its max delivery attempts. Credentials: Google's application default credentials
(PUBSUB_EMULATOR_HOST for the emulator).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from helios.daemon.hookspecs import hookimpl
from helios.daemon.model import CopyIn
from helios.daemon.types import Source, SourceContext, SourceFactory
from helios.plugins.sources import cloudpublish
from helios.plugins.sources.cloudinput import CloudInput, parse_options
from helios.plugins.sources.envelopes import DEFAULTS, EnvelopeError, pubsub
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("helios.pubsub")
RETRY_SECONDS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class PubsubOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    subscription: str = Field(pattern=r"^projects/[^/]+/subscriptions/[^/]+$")
    source: str = Field(min_length=1)
    event_id: str = ""
    event_type: str = ""
    produced_at: str = ""
    event_type_default: str = ""
    max_messages: int = Field(1000, ge=1, le=100_000)  # outstanding (flow control)
    batch: int = Field(500, ge=1, le=10_000)  # admitted together
    publish: dict[str, Any] = Field(default_factory=dict)


class PubsubSource(CloudInput):
    def __init__(self, context: SourceContext, options: PubsubOptions) -> None:
        cloudpublish.require("google.cloud.pubsub_v1")
        self.bind(context, options, DEFAULTS["pubsub"])
        self.options = options
        self.acked = 0
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._future: Any = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from google.cloud import pubsub_v1

        self._loop = asyncio.get_running_loop()
        self._client = pubsub_v1.SubscriberClient()
        flow = pubsub_v1.types.FlowControl(max_messages=self.options.max_messages)
        self._future = self._client.subscribe(
            self.options.subscription, self._received, flow_control=flow
        )
        self._task = asyncio.create_task(self._run(), name=f"pubsub-{self.context.name}")
        if self.publisher is not None:
            await self.publisher.start()
        self.state = "pulling"

    async def stop(self) -> None:
        if self._future is not None:
            self._future.cancel()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._future.result, 10)
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.publisher is not None:
            await self.publisher.stop()

    def info(self) -> dict[str, str]:
        return {
            "kind": "pubsub pull",
            "path": self.options.subscription,
            "verify": "IAM (the subscription's)",
            "event_id": self.fields.event_id,
            "publish": self.publisher.describe() if self.publisher else "",
            "state": self.state,
            "acked": str(self.acked),
        }

    # ---- the client's threads -> the loop ---------------------------------------------
    def _received(self, message: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._queue.put_nowait, message)

    def _copy(self, message: Any) -> CopyIn:
        view = {
            "message": {
                "attributes": dict(message.attributes),
                "data": base64.b64encode(message.data).decode(),
                "messageId": message.message_id,
                "publishTime": message.publish_time.isoformat() if message.publish_time else "",
            }
        }
        return pubsub(view, self.fields, self.options.source, self.context.clock.now())

    async def _run(self) -> None:
        while True:
            messages = [await self._queue.get()]
            while len(messages) < self.options.batch and not self._queue.empty():
                messages.append(self._queue.get_nowait())
            copies, taken = [], []
            for message in messages:
                try:
                    copies.append(self._copy(message))
                    taken.append(message)
                except EnvelopeError as exc:
                    await self._refuse(message, exc.code, exc.detail)
            if not copies:
                continue
            result = await self.admit_held(copies)
            refused = {r.index: r for r in result.rejections}
            for index, message in enumerate(taken):
                if index in refused:
                    await self._refuse(message, refused[index].code, refused[index].reason)
                else:
                    message.ack()
                    self.acked += 1
                    if self.context.stats is not None:
                        self.context.stats.delivered(1)

    async def _refuse(self, message: Any, code: str, detail: str) -> None:
        first = getattr(message, "delivery_attempt", None) in (None, 1)
        await self.kept_once(first, code, detail, bytes(message.data), self.options.subscription)
        message.nack()


def _factory(context: SourceContext, options: Mapping[str, Any]) -> Source:
    return PubsubSource(context, parse_options(PubsubOptions, options, "pubsub"))


@hookimpl(trylast=True)
def register_sources(register: Callable[[str, SourceFactory], None]) -> None:
    register("pubsub", _factory)
