"""Cloud delivery envelopes in, copies out: EventBridge, SNS, Pub/Sub push, Event Grid
and CloudEvents (structured, binary, batch), as each cloud actually sends them
(samples and their sources: tests/data/envelopes, docs/webhooks.md).

Pure functions, no I/O: `parse(kind, headers, body, fields, source)` gives the copies
of one delivery, or raises EnvelopeError with a code of the webhook vocabulary
(`invalid_json`, `invalid_base64`, `missing_event_id`, ...). Where the business event
id, type and time are is a `Fields` of dotted paths into the delivered object; a path
step into a string that holds JSON (SNS `Message`, Pub/Sub `data`) reads into it, so
`Message.event_id` finds the id inside an SNS message.

Long because each of the five envelopes has its own shape, defaults and handshakes,
and keeping them side by side is how they stay consistent.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from helios.daemon.model import CopyIn

KINDS = ("eventbridge", "sns", "pubsub", "eventgrid", "cloudevents")
EVENTGRID_VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"
SNS_HANDSHAKES = ("SubscriptionConfirmation", "UnsubscribeConfirmation")
_JSONISH = ("application/json", "text/plain", "text/json", "")


class EnvelopeError(ValueError):
    """A delivery HELIOS cannot take: `code` is the webhook vocabulary's, `status` the
    HTTP status it is answered with."""

    def __init__(self, code: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status


@dataclass(frozen=True)
class Fields:
    """Where the business event's id, type and production time are (dotted paths)."""

    event_id: str
    event_type: str
    produced_at: str
    type_default: str = ""


# Where publishers put the business event id, per envelope (issue 12; docs/webhooks.md).
DEFAULTS: dict[str, Fields] = {
    "eventbridge": Fields("detail.event_id", "detail-type", "time"),
    "sns": Fields(
        "MessageAttributes.event_id.Value", "MessageAttributes.event_type.Value", "Timestamp"
    ),
    "pubsub": Fields("attributes.event_id", "attributes.event_type", "publishTime"),
    "eventgrid": Fields("id", "eventType", "eventTime"),
    "cloudevents": Fields("id", "type", "time"),
}


@dataclass
class Delivery:
    """What one delivery carried: copies, or a handshake answer (no copy)."""

    copies: list[CopyIn]
    handshake: str = ""  # "eventgrid_validation", "sns_subscribe", "sns_unsubscribe"
    answer: dict[str, Any] | None = None  # the body to answer a handshake with
    document: dict[str, Any] | None = None  # the signed SNS message, for verification


def media_type(headers: Mapping[str, str]) -> str:
    return headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _json(body: bytes) -> Any:
    if not body.strip():
        raise EnvelopeError("invalid_json", "the body is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError("invalid_json", f"the body is not JSON: {exc}") from None


def _is_jsonish(kind: str) -> bool:
    return kind in _JSONISH or kind.endswith("+json")


def lookup(item: Any, path: str) -> Any:
    """The value at a dotted path, None when absent; a string holding JSON is read into
    when the path goes on."""
    node = item
    for step in path.split("."):
        if isinstance(node, (str, bytes)):
            try:
                node = orjson.loads(node)
            except orjson.JSONDecodeError:
                return None
        if isinstance(node, dict):
            node = node.get(step)
        elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
        else:
            return None
        if node is None:
            return None
    return node


def _text(item: Any, path: str, what: str, code: str, default: str = "") -> str:
    value = lookup(item, path)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and value:
        return value
    if default:
        return default
    raise EnvelopeError(code, f"no {what} at {path!r}")


def _time(item: Any, path: str, now: float) -> float:
    value = lookup(item, path)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            # RFC 3339 with 7 fractional digits (Event Grid): keep microseconds.
            head, dot, rest = value.partition(".")
            if dot:
                digits = "".join(c for c in rest if c.isdigit())
                zone = rest[len(digits) :].replace("Z", "+00:00")
                try:
                    return datetime.fromisoformat(f"{head}.{digits[:6]}{zone}").timestamp()
                except ValueError:
                    pass
    return now  # no usable time: when it arrived


def _payload(value: Any, what: str) -> bytes:
    if value is None:
        raise EnvelopeError("missing_payload", f"the delivery carries no {what}")
    if isinstance(value, str):
        return value.encode()  # JSON text (an SNS Message); admission checks it is JSON
    return orjson.dumps(value)


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise EnvelopeError("invalid_base64", f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EnvelopeError("invalid_base64", f"{what} is not valid base64: {exc}") from None


def _copy(item: Any, fields: Fields, source: str, payload: bytes, now: float) -> CopyIn:
    event_id = _text(item, fields.event_id, "event id", "missing_event_id")
    event_type = _text(
        item, fields.event_type, "event type", "missing_event_type", fields.type_default
    )
    return (event_id, source, event_type, _time(item, fields.produced_at, now), payload)


# ---- the envelopes ---------------------------------------------------------------------
def eventbridge(item: Any, fields: Fields, source: str, now: float) -> CopyIn:
    """One EventBridge event (an API destination's body, or an SQS message from a rule)."""
    if not isinstance(item, dict) or "detail" not in item:
        raise EnvelopeError("unknown_envelope", "not an EventBridge event (no 'detail')")
    return _copy(item, fields, source, _payload(item["detail"], "detail"), now)


def sns(item: Any, fields: Fields, source: str, now: float) -> Delivery:
    """An SNS HTTP(S) notification or handshake (the body SNS posts, or an SQS message
    SNS sent without raw delivery)."""
    if not isinstance(item, dict) or not isinstance(item.get("Type"), str):
        raise EnvelopeError("unknown_envelope", "not an SNS message (no 'Type')")
    kind = item["Type"]
    if kind in SNS_HANDSHAKES:
        handshake = "sns_subscribe" if kind == "SubscriptionConfirmation" else "sns_unsubscribe"
        return Delivery([], handshake, {"handshake": kind}, item)
    if kind != "Notification":
        raise EnvelopeError("unknown_envelope", f"SNS message type {kind!r} is not known")
    message = item.get("Message")
    if not isinstance(message, str):
        raise EnvelopeError("missing_payload", "the SNS notification has no Message text")
    return Delivery([_copy(item, fields, source, message.encode(), now)], document=item)


def pubsub(item: Any, fields: Fields, source: str, now: float) -> CopyIn:
    """A Pub/Sub push body (wrapped): {"message": {...}, "subscription": ...}; either
    spelling of the message's fields (messageId/message_id, publishTime/publish_time)."""
    if not isinstance(item, dict) or not isinstance(item.get("message"), dict):
        raise EnvelopeError("unknown_envelope", "not a Pub/Sub push body (no 'message')")
    message = dict(item["message"])
    for current, legacy in (("messageId", "message_id"), ("publishTime", "publish_time")):
        if current not in message and legacy in message:
            message[current] = message[legacy]
    if "data" not in message:
        raise EnvelopeError("missing_payload", "the Pub/Sub message has no data")
    data = _b64(message["data"], "message.data")
    message["data"] = data  # so a path like data.event_id reads the payload
    return _copy(message, fields, source, data, now)


def eventgrid(body: Any, fields: Fields, source: str, now: float) -> Delivery:
    """An Event Grid schema delivery: an array of events, or the subscription
    validation handshake (answered with validationResponse)."""
    items = body if isinstance(body, list) else [body]
    if not items or not all(isinstance(i, dict) and "eventType" in i for i in items):
        raise EnvelopeError("unknown_envelope", "not an Event Grid array of events")
    if any(i.get("eventType") == EVENTGRID_VALIDATION for i in items):
        code = lookup(items[0], "data.validationCode")
        if not isinstance(code, str) or not code:
            raise EnvelopeError("invalid_handshake", "validation event without validationCode")
        return Delivery([], "eventgrid_validation", {"validationResponse": code})
    return Delivery([_copy(i, fields, source, _payload(i.get("data"), "data"), now) for i in items])


def cloudevent(item: Any, fields: Fields, source: str, now: float) -> CopyIn:
    """One structured-mode CloudEvent (JSON format): data or data_base64."""
    if not isinstance(item, dict) or item.get("specversion") != "1.0":
        raise EnvelopeError("unknown_envelope", "not a CloudEvents 1.0 event (specversion)")
    if "data_base64" in item:
        payload = _b64(item["data_base64"], "data_base64")
    else:
        payload = _payload(item.get("data"), "data")
    return _copy(item, fields, source, payload, now)


def cloudevents(
    headers: Mapping[str, str], body: bytes, fields: Fields, source: str, now: float
) -> list[CopyIn]:
    """CloudEvents over HTTP: binary mode (ce-* headers, the body is the data),
    structured mode (application/cloudevents+json) or batch mode."""
    kind = media_type(headers)
    if kind == "application/cloudevents-batch+json":
        items = _json(body)
        if not isinstance(items, list):
            raise EnvelopeError("unknown_envelope", "a CloudEvents batch must be a JSON array")
        return [cloudevent(i, fields, source, now) for i in items]
    if kind == "application/cloudevents+json":
        return [cloudevent(_json(body), fields, source, now)]
    if "ce-specversion" in headers:  # binary mode
        if headers["ce-specversion"] != "1.0":
            raise EnvelopeError("unknown_envelope", "ce-specversion must be 1.0")
        if not _is_jsonish(kind):
            raise EnvelopeError(
                "unsupported_content_type",
                f"data of content type {kind!r}: HELIOS reconciles JSON payloads",
                415,
            )
        view: dict[str, Any] = {k[3:]: v for k, v in headers.items() if k.startswith("ce-")}
        view["data"] = body
        _json(body)  # the data must be JSON
        return [_copy(view, fields, source, body, now)]
    raise EnvelopeError(
        "unsupported_content_type",
        f"content type {kind!r} without ce-* headers is no CloudEvents mode "
        "(application/cloudevents+json, application/cloudevents-batch+json, or binary)",
        415,
    )


def parse(
    kind: str,
    headers: Mapping[str, str],
    body: bytes,
    fields: Fields,
    source: str,
    now: float | None = None,
) -> Delivery:
    """The copies (or handshake) of one delivery of envelope `kind`; `headers` have
    lower-case names. Raises EnvelopeError."""
    now = time.time() if now is None else now
    if kind == "cloudevents":
        return Delivery(cloudevents(headers, body, fields, source, now))
    if not _is_jsonish(media_type(headers)):
        raise EnvelopeError(
            "unsupported_content_type",
            f"content type {media_type(headers)!r}; this endpoint takes JSON",
            415,
        )
    document = _json(body)
    if kind == "eventbridge":
        return Delivery([eventbridge(document, fields, source, now)])
    if kind == "sns":
        return sns(document, fields, source, now)
    if kind == "pubsub":
        return Delivery([pubsub(document, fields, source, now)])
    if kind == "eventgrid":
        return eventgrid(document, fields, source, now)
    raise EnvelopeError("unknown_envelope", f"no envelope {kind!r}; known: {', '.join(KINDS)}")
