"""Replays back through the clouds: `replay_missing` (and failover) publish a missing
copy through the same cloud path the missing one should have taken, carrying the
business event id where the receiving input reads it, so the replayed copy reconciles
as the missing one (docs/webhooks.md, "Replays").

    publish = { kind = "eventbridge", bus = "orders", region = "eu-west-1" }

kinds and what each sends:
- `eventbridge`: PutEvents; Detail = the payload (its `event_id` set when absent),
  DetailType = the event type (boto3);
- `sns`: Publish; Message = the payload, message attributes event_id and event_type (boto3);
- `sqs`: SendMessage; the body = the payload, message attributes event_id and event_type;
- `pubsub`: publish; data = the payload, attributes event_id and event_type
  (google-cloud-pubsub; PUBSUB_EMULATOR_HOST honoured);
- `eventgrid`: an Event Grid schema event with id = the event id (azure-eventgrid),
  the topic key from the environment variable `key_env`;
- `cloudevents`: an HTTP POST of a structured CloudEvent with id = the event id, a
  bearer token from `token_env` if set.

Credentials come from each SDK's own chain (AWS profiles, roles and environment; Google
application default credentials; environment variables named here), never from
helios.toml. The SDKs are the `clouds` extra: `pip install 'helios[clouds]'`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from helios.daemon.errors import ErrorCode, RequestError
from helios.daemon.model import CopyIn

KINDS = ("eventbridge", "sns", "sqs", "pubsub", "eventgrid", "cloudevents")
_NEEDS = {
    "eventbridge": ("bus",),
    "sns": ("topic_arn",),
    "sqs": ("queue_url",),
    "pubsub": ("topic",),
    "eventgrid": ("endpoint", "key_env"),
    "cloudevents": ("url",),
}
_KNOWN = {
    "kind",
    "region",
    "endpoint_url",
    "source",
    "id_field",
    "token_env",
    *sum(_NEEDS.values(), ()),
}


def require(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ValueError(f"publish needs {module}: pip install 'helios[clouds]'")


def with_id(payload: bytes, field: str, event_id: str) -> bytes:
    """The payload with `field` set to the event id when it is a JSON object lacking it
    (EventBridge has no attributes: the id travels inside Detail)."""
    try:
        body = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload
    if isinstance(body, dict) and field and field not in body:
        body[field] = event_id
        return orjson.dumps(body)
    return payload


class Publisher:
    def __init__(self, options: dict[str, Any]) -> None:
        self.kind = str(options["kind"])
        self.options = options
        self.sent = 0
        self.failed = 0
        self._client: Any = None
        self._http: httpx.AsyncClient | None = None

    def describe(self) -> str:
        o = self.options
        where = next((str(o[k]) for k in _NEEDS[self.kind] if k != "key_env"), "")
        return f"{self.kind} {where}".strip()

    async def start(self) -> None:
        o = self.options
        if self.kind in ("eventbridge", "sns", "sqs"):
            import boto3

            service = {"eventbridge": "events", "sns": "sns", "sqs": "sqs"}[self.kind]
            self._client = boto3.client(  # type: ignore[call-overload]
                service,
                region_name=o.get("region") or None,
                endpoint_url=o.get("endpoint_url") or None,
            )
        elif self.kind == "pubsub":
            from google.cloud import pubsub_v1

            self._client = pubsub_v1.PublisherClient()
        elif self.kind == "eventgrid":
            from azure.core.credentials import AzureKeyCredential
            from azure.eventgrid import EventGridPublisherClient

            key = os.environ.get(str(o["key_env"]), "")
            if not key:
                raise ValueError(f"publish.key_env: environment variable {o['key_env']} is not set")
            self._client = EventGridPublisherClient(str(o["endpoint"]), AzureKeyCredential(key))
        else:
            self._http = httpx.AsyncClient(timeout=10.0)

    async def stop(self) -> None:
        if self._http is not None:
            await self._http.aclose()
        if self.kind == "pubsub" and self._client is not None:
            await asyncio.to_thread(self._client.stop)

    async def publish(self, copies: Sequence[CopyIn]) -> int:
        """Publish each copy; returns how many the cloud accepted."""
        if self._client is None and self._http is None:
            raise RequestError(
                "target", f"{self.kind} publisher not started", ErrorCode.UNAVAILABLE
            )
        try:
            if self.kind == "cloudevents":
                sent = await self._cloudevents(copies)
            else:
                sent = await asyncio.to_thread(self._blocking, list(copies))
        except Exception as exc:
            self.failed += len(copies)
            raise RequestError(
                "target", f"publishing through {self.kind} failed: {exc}", ErrorCode.UNAVAILABLE
            ) from exc
        self.sent += sent
        self.failed += len(copies) - sent
        return sent

    def _blocking(self, copies: list[CopyIn]) -> int:
        o, client = self.options, self._client
        if self.kind == "eventbridge":
            sent = 0
            for start in range(0, len(copies), 10):  # PutEvents takes 10 entries a call
                entries = [
                    {
                        "Source": str(o.get("source") or "helios.replay"),
                        "DetailType": event_type,
                        "Detail": with_id(
                            payload, str(o.get("id_field", "event_id")), event_id
                        ).decode(),
                        "EventBusName": str(o["bus"]),
                        "Time": datetime.fromtimestamp(produced_at, UTC),
                    }
                    for event_id, _, event_type, produced_at, payload in copies[start : start + 10]
                ]
                answer = client.put_events(Entries=entries)
                sent += len(entries) - int(answer.get("FailedEntryCount", 0))
            return sent
        if self.kind in ("sns", "sqs"):
            for event_id, _, event_type, _, payload in copies:
                attributes = {
                    "event_id": {"DataType": "String", "StringValue": event_id},
                    "event_type": {"DataType": "String", "StringValue": event_type},
                }
                if self.kind == "sns":
                    client.publish(
                        TopicArn=str(o["topic_arn"]),
                        Message=payload.decode(),
                        MessageAttributes=attributes,
                    )
                else:
                    client.send_message(
                        QueueUrl=str(o["queue_url"]),
                        MessageBody=payload.decode(),
                        MessageAttributes=attributes,
                    )
            return len(copies)
        if self.kind == "pubsub":
            futures = [
                client.publish(str(o["topic"]), payload, event_id=event_id, event_type=event_type)
                for event_id, _, event_type, _, payload in copies
            ]
            return sum(1 for f in futures if f.result(timeout=30))
        if self.kind == "eventgrid":
            from azure.eventgrid import EventGridEvent

            client.send(
                [
                    EventGridEvent(
                        subject=str(o.get("source") or "helios/replay"),
                        event_type=event_type,
                        data=orjson.loads(payload),
                        data_version="1.0",
                        id=event_id,
                        event_time=datetime.fromtimestamp(produced_at, UTC),
                    )
                    for event_id, _, event_type, produced_at, payload in copies
                ]
            )
            return len(copies)
        raise ValueError(self.kind)

    async def _cloudevents(self, copies: Sequence[CopyIn]) -> int:
        assert self._http is not None
        o = self.options
        headers = {"content-type": "application/cloudevents+json"}
        token_env = str(o.get("token_env", ""))
        if token_env and os.environ.get(token_env):
            headers["authorization"] = f"Bearer {os.environ[token_env]}"
        sent = 0
        for event_id, _, event_type, produced_at, payload in copies:
            event = {
                "specversion": "1.0",
                "id": event_id,
                "type": event_type,
                "source": str(o.get("source") or "helios/replay"),
                "time": datetime.fromtimestamp(produced_at, UTC).isoformat().replace("+00:00", "Z"),
                "datacontenttype": "application/json",
                "data": orjson.loads(payload),
            }
            answer = await self._http.post(
                str(o["url"]), content=orjson.dumps(event), headers=headers
            )
            if answer.is_success:
                sent += 1
        return sent


def build(options: dict[str, Any], envelope: str = "") -> Publisher | None:
    """The publisher an input's `publish` table describes (None without one); ValueError
    names what is wrong with it."""
    if not options:
        return None
    kind = options.get("kind") or {"eventbridge": "eventbridge", "sns": "sns"}.get(envelope, "")
    if kind not in KINDS:
        raise ValueError(f"publish.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if any(k in options for k in ("key", "token", "secret", "password")):
        raise ValueError("publish: credentials never go in helios.toml (key_env, token_env)")
    unknown = sorted(set(options) - _KNOWN)
    if unknown:
        raise ValueError(f"publish: unknown keys {unknown}")
    missing = [k for k in _NEEDS[kind] if not options.get(k)]
    if missing:
        raise ValueError(f"publish ({kind}) needs {', '.join(missing)}")
    require(
        {
            "eventbridge": "boto3",
            "sns": "boto3",
            "sqs": "boto3",
            "pubsub": "google.cloud.pubsub_v1",
            "eventgrid": "azure.eventgrid",
            "cloudevents": "httpx",
        }[kind]
    )
    return Publisher({**options, "kind": kind})
