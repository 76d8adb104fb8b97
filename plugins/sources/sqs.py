"""The `sqs` source: copies pulled from an SQS queue (an EventBridge rule's SQS target,
an SNS subscription without raw delivery, or plain messages with attributes), bound to
one HELIOS source (docs/clouds/aws.md).

    [sources.inputs.aws_queue]
    plugin = "sqs"
    queue_url = "https://sqs.eu-west-1.amazonaws.com/123456789012/helios-orders"
    source = "aws"
    envelope = "eventbridge"       # eventbridge | sns | raw

Long polling (`wait_seconds`), up to 10 messages a receive. A message is deleted only
after its copy is durable (admission returned): a crash before that leaves it in the
queue, and SQS delivers it again after the visibility timeout. A message HELIOS cannot
take is counted, kept as a dead letter on its first receive, and left in the queue for
its redrive policy to move to the queue's dead-letter queue after maxReceiveCount
(configure one: docs/clouds/aws.md). While the daemon pushes back, the messages are
held and admitted again with backoff. Credentials: boto3's own chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

import orjson
from helios.daemon.hookspecs import hookimpl
from helios.daemon.model import CopyIn
from helios.daemon.types import Source, SourceContext, SourceFactory
from helios.plugins.sources.cloudinput import CloudInput, parse_options
from helios.plugins.sources.envelopes import DEFAULTS, EnvelopeError, Fields, eventbridge, sns
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger("helios.sqs")
RETRY_SECONDS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
RAW = Fields("MessageAttributes.event_id", "MessageAttributes.event_type", "SentTimestamp")


class SqsOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    queue_url: str = Field(min_length=1)
    source: str = Field(min_length=1)
    envelope: Literal["eventbridge", "sns", "raw"] = "eventbridge"
    region: str = ""
    endpoint_url: str = ""  # another endpoint than AWS's (tests: moto_server)
    event_id: str = ""
    event_type: str = ""
    produced_at: str = ""
    event_type_default: str = ""
    wait_seconds: int = Field(20, ge=0, le=20)
    max_messages: int = Field(10, ge=1, le=10)
    visibility_timeout: int = Field(60, ge=1, le=43_200)
    publish: dict[str, Any] = Field(default_factory=dict)  # replays (cloudpublish.py)


class SqsSource(CloudInput):
    def __init__(self, context: SourceContext, options: SqsOptions) -> None:
        self.bind(
            context, options, RAW if options.envelope == "raw" else DEFAULTS[options.envelope]
        )
        self.options = options
        self.client: Any = None
        self.received = 0
        self.deleted = 0
        self.paused = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        import boto3

        o = self.options
        self.client = boto3.client(
            "sqs", region_name=o.region or None, endpoint_url=o.endpoint_url or None
        )
        if self.publisher is not None:
            await self.publisher.start()
        self._task = asyncio.create_task(self._run(), name=f"sqs-{self.context.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.publisher is not None:
            await self.publisher.stop()

    def pause(self, source: str) -> None:
        self.paused = source == self.options.source or self.paused

    def resume(self, source: str) -> None:
        if source == self.options.source:
            self.paused = False

    def info(self) -> dict[str, str]:
        return {
            "kind": f"sqs {self.options.envelope}",
            "path": self.options.queue_url,
            "verify": "IAM (the queue's policy)",
            "event_id": self.fields.event_id,
            "publish": self.publisher.describe() if self.publisher else "",
            "state": self.state,
            "deleted": str(self.deleted),
        }

    # ---- the loop --------------------------------------------------------------------
    async def _run(self) -> None:
        o = self.options
        failures = 0
        while True:
            if self.paused:  # leave the messages in the queue
                self.state = "paused"
                await asyncio.sleep(1.0)
                continue
            try:
                answer = await asyncio.to_thread(
                    self.client.receive_message,
                    QueueUrl=o.queue_url,
                    MaxNumberOfMessages=o.max_messages,
                    WaitTimeSeconds=o.wait_seconds,
                    VisibilityTimeout=o.visibility_timeout,
                    MessageAttributeNames=["All"],
                    AttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
                )
            except Exception as exc:  # botocore's errors: the queue is away or refuses us
                failures += 1
                self.state = f"receive failing: {exc}"[:200]
                log.warning("SQS input %s: receive failed: %s", self.context.name, exc)
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))
                continue
            failures = 0
            self.state = "receiving"
            messages = answer.get("Messages", [])
            if messages:
                self.received += len(messages)
                await self._take(messages)

    def _copy(self, message: dict[str, Any]) -> CopyIn | None:
        """The message's copy, None for an SNS handshake; raises EnvelopeError."""
        body = message.get("Body", "")
        source = self.options.source
        envelope = self.options.envelope
        if envelope == "raw":
            attributes = {
                k: v.get("StringValue", "") for k, v in message.get("MessageAttributes", {}).items()
            }
            sent = message.get("Attributes", {}).get("SentTimestamp", "")
            view = {"MessageAttributes": attributes, "Body": body}
            event_id = _field(view, self.fields.event_id, "missing_event_id", "")
            event_type = _field(
                view, self.fields.event_type, "missing_event_type", self.fields.type_default
            )
            produced = int(sent) / 1000.0 if sent.isdigit() else self.context.clock.now()
            return (event_id, source, event_type, produced, body.encode())
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise EnvelopeError("invalid_json", f"the message body is not JSON: {exc}") from None
        if envelope == "eventbridge":
            return eventbridge(document, self.fields, source, self.context.clock.now())
        delivery = sns(document, self.fields, source, self.context.clock.now())
        return delivery.copies[0] if delivery.copies else None

    async def _take(self, messages: list[dict[str, Any]]) -> None:
        copies: list[CopyIn] = []
        taken: list[dict[str, Any]] = []  # the messages of `copies`, in order
        done: list[dict[str, Any]] = []  # handshakes: nothing to admit, delete
        for message in messages:
            try:
                found = self._copy(message)
            except EnvelopeError as exc:
                await self._refuse(message, exc.code, exc.detail)
                continue
            if found is None:
                done.append(message)
            else:
                copies.append(found)
                taken.append(message)
        if copies:
            result = await self.admit_held(copies)
            refused = {r.index: r for r in result.rejections}
            for index, message in enumerate(taken):
                if index in refused:
                    await self._refuse(message, refused[index].code, refused[index].reason)
                else:
                    done.append(message)
        if done:
            await self._delete(done)

    async def _refuse(self, message: dict[str, Any], code: str, detail: str) -> None:
        """Left in the queue (its redrive policy moves it on); kept once as a dead letter."""
        first = message.get("Attributes", {}).get("ApproximateReceiveCount", "1") == "1"
        body = str(message.get("Body", "")).encode()
        await self.kept_once(first, code, detail, body, self.options.queue_url)

    async def _delete(self, messages: list[dict[str, Any]]) -> None:
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        try:
            answer = await asyncio.to_thread(
                self.client.delete_message_batch, QueueUrl=self.options.queue_url, Entries=entries
            )
        except Exception as exc:  # they come back after the visibility timeout: DUPLICATE
            log.warning("SQS input %s: delete failed: %s", self.context.name, exc)
            return
        self.deleted += len(answer.get("Successful", []))
        if self.context.stats is not None:
            for _ in answer.get("Successful", []):
                self.context.stats.delivered(1)


def _field(view: Mapping[str, Any], path: str, code: str, default: str) -> str:
    from helios.plugins.sources.envelopes import lookup

    value = lookup(view, path)
    if isinstance(value, str) and value:
        return value
    if default:
        return default
    raise EnvelopeError(code, f"no value at {path!r}")


def _factory(context: SourceContext, options: Mapping[str, Any]) -> Source:
    return SqsSource(context, parse_options(SqsOptions, options, "sqs"))


@hookimpl(trylast=True)
def register_sources(register: Callable[[str, SourceFactory], None]) -> None:
    register("sqs", _factory)
