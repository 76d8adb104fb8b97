"""Cloud envelopes: the documented sample deliveries of each cloud (tests/data/envelopes,
sources in SOURCES.md) parse as each cloud sends them, with a business event id placed
where publishers put it; the same business event through every shape reconciles to one
event id, one type and one canonical payload; malformed deliveries get their code and
no copy; handshakes give no copy."""

from __future__ import annotations

import base64
import copy as copy_mod
import json
from pathlib import Path

import pytest
from helios.daemon.ingest import canonical_digest
from helios.plugins.sources.envelopes import DEFAULTS, EnvelopeError, Fields, lookup, parse

SAMPLES = Path(__file__).parent / "data" / "envelopes" / "samples"
EVENT_ID = "ord-7f3a-0001"
EVENT_TYPE = "order.created"
BUSINESS = {"event_id": EVENT_ID, "order": {"id": 7, "total": 12.5, "items": ["a", "b"]}}
JSON = {"content-type": "application/json"}


def sample(name: str) -> object:
    return json.loads((SAMPLES / name).read_text())


def body(document: object) -> bytes:
    return json.dumps(document).encode()


def eventbridge_delivery() -> tuple[dict[str, str], bytes]:
    event = sample("aws_eventbridge_event.json")
    event["detail-type"] = EVENT_TYPE
    event["detail"] = BUSINESS
    headers = {
        k.lower(): v for k, v in sample("aws_eventbridge_api_destination_headers.json").items()
    }
    return headers, body(event)


def sns_delivery() -> tuple[dict[str, str], bytes]:
    note = sample("aws_sns_notification.json")
    note["Message"] = json.dumps({"order": BUSINESS["order"], "event_id": EVENT_ID}, indent=2)
    note["MessageAttributes"] = {
        "event_id": {"Type": "String", "Value": EVENT_ID},
        "event_type": {"Type": "String", "Value": EVENT_TYPE},
    }
    headers = {
        k.lower(): v for k, v in sample("aws_sns_notification.headers.json")["headers"].items()
    }
    return headers, body(note)


def pubsub_delivery(
    name: str = "gcp_pubsub_push_body_current_form.json",
) -> tuple[dict[str, str], bytes]:
    push = sample(name)
    push["message"]["attributes"] = {"event_id": EVENT_ID, "event_type": EVENT_TYPE}
    push["message"]["data"] = base64.b64encode(json.dumps(BUSINESS).encode()).decode()
    return JSON, body(push)


def eventgrid_delivery() -> tuple[dict[str, str], bytes]:
    events = sample("azure_eventgrid_custom_topic.json")
    events[0]["id"] = EVENT_ID
    events[0]["eventType"] = EVENT_TYPE
    events[0]["data"] = BUSINESS
    headers = {
        k.lower(): v
        for k, v in sample("azure_eventgrid_delivery_headers.json")["notification"].items()
    }
    return headers, body(events)


def cloudevents_structured() -> tuple[dict[str, str], bytes]:
    event = sample("cloudevents_structured_json_data.json")
    event.update(id=EVENT_ID, type=EVENT_TYPE, data=BUSINESS)
    return {"content-type": "application/cloudevents+json; charset=utf-8"}, body(event)


def cloudevents_base64() -> tuple[dict[str, str], bytes]:
    event = sample("cloudevents_structured_data_base64.json")
    event.update(id=EVENT_ID, type=EVENT_TYPE, datacontenttype="application/json")
    event["data_base64"] = base64.b64encode(json.dumps(BUSINESS).encode()).decode()
    return {"content-type": "application/cloudevents+json"}, body(event)


def cloudevents_binary() -> tuple[dict[str, str], bytes]:
    text = (SAMPLES / "cloudevents_binary_json_data.http.txt").read_text()
    head, _, _ = text.partition("\n\n")
    headers = dict(line.split(": ", 1) for line in head.splitlines())
    headers.update({"ce-id": EVENT_ID, "ce-type": EVENT_TYPE})
    return headers, json.dumps(BUSINESS, indent=4).encode()


def cloudevents_batch() -> tuple[dict[str, str], bytes]:
    _, one = cloudevents_structured()
    return {"content-type": "application/cloudevents-batch+json"}, b"[" + one + b"]"


SHAPES = {
    "eventbridge": ("eventbridge", eventbridge_delivery),
    "sns": ("sns", sns_delivery),
    "pubsub current": ("pubsub", pubsub_delivery),
    "pubsub legacy": ("pubsub", lambda: pubsub_delivery("gcp_pubsub_push_body_docs.json")),
    "eventgrid": ("eventgrid", eventgrid_delivery),
    "cloudevents structured": ("cloudevents", cloudevents_structured),
    "cloudevents data_base64": ("cloudevents", cloudevents_base64),
    "cloudevents binary": ("cloudevents", cloudevents_binary),
    "cloudevents batch": ("cloudevents", cloudevents_batch),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_gives_one_event_id_type_and_canonical_payload(shape):
    kind, make = SHAPES[shape]
    headers, raw = make()
    delivery = parse(kind, headers, raw, DEFAULTS[kind], "aws", now=1.0)
    assert not delivery.handshake
    [(event_id, source, event_type, produced_at, payload)] = delivery.copies
    assert (event_id, source, event_type) == (EVENT_ID, "aws", EVENT_TYPE)
    assert canonical_digest(payload) == canonical_digest(json.dumps(BUSINESS).encode())
    # The envelope's own time; the legacy Pub/Sub sample has none: the arrival time.
    assert produced_at == 1.0 if shape == "pubsub legacy" else produced_at > 1e9


def test_transport_ids_are_never_the_event_id():
    _, raw = eventbridge_delivery()
    event = json.loads(raw)
    del event["detail"]["event_id"]  # only EventBridge's own id is left
    with pytest.raises(EnvelopeError) as err:
        parse("eventbridge", JSON, body(event), DEFAULTS["eventbridge"], "aws")
    assert err.value.code == "missing_event_id" and err.value.status == 400
    # Two redeliveries of one Pub/Sub message: the same business id (a DUPLICATE later).
    _, one = pubsub_delivery()
    again = json.loads(one)
    again["message"]["deliveryAttempt"] = 2
    ids = {
        parse("pubsub", JSON, b, DEFAULTS["pubsub"], "gcp").copies[0][0] for b in (one, body(again))
    }
    assert ids == {EVENT_ID}


def test_sns_posts_json_as_text_plain_and_the_id_can_be_read_inside_the_message():
    headers, raw = sns_delivery()
    assert headers["content-type"].startswith("text/plain")
    note = json.loads(raw)
    del note["MessageAttributes"]  # as moto sends it
    fields = Fields("Message.event_id", "Subject", "Timestamp")
    [c] = parse("sns", headers, body(note), fields, "aws").copies
    assert c[0] == EVENT_ID and c[2] == "My First Message"


def test_eventgrid_validation_is_answered_and_gives_no_copy():
    raw = (SAMPLES / "azure_eventgrid_subscription_validation_event.json").read_bytes()
    delivery = parse("eventgrid", JSON, raw, DEFAULTS["eventgrid"], "azure")
    assert delivery.copies == [] and delivery.handshake == "eventgrid_validation"
    expected = sample("azure_eventgrid_subscription_validation_response.json")
    assert delivery.answer == expected


@pytest.mark.parametrize(
    "name", ["aws_sns_subscription_confirmation.json", "aws_sns_unsubscribe_confirmation.json"]
)
def test_sns_handshakes_give_no_copy(name):
    raw = (SAMPLES / name).read_bytes()
    delivery = parse("sns", {"content-type": "text/plain"}, raw, DEFAULTS["sns"], "aws")
    assert delivery.copies == [] and delivery.handshake.startswith("sns_")
    assert delivery.document is not None
    assert delivery.document["Type"] in ("SubscriptionConfirmation", "UnsubscribeConfirmation")


def test_eventgrid_batch_gives_every_event():
    events = sample("azure_eventgrid_custom_topic.json") + sample(
        "azure_eventgrid_blob_created.json"
    )
    copies = parse("eventgrid", JSON, body(events), DEFAULTS["eventgrid"], "azure").copies
    assert [c[0] for c in copies] == [events[0]["id"], events[1]["id"]]
    assert copies[1][2] == "Microsoft.Storage.BlobCreated"


def _pubsub(data: object) -> bytes:
    return body({"message": {"attributes": {"event_id": "e", "event_type": "t"}, "data": data}})


MALFORMED = [
    ("eventbridge", JSON, b"", "invalid_json", 400),
    ("eventbridge", JSON, b'{"detail": {"event_id": "e"', "invalid_json", 400),
    ("eventbridge", JSON, b"\xff\xfe\x00", "invalid_json", 400),
    ("eventbridge", JSON, b'{"id": "transport-only"}', "unknown_envelope", 400),
    ("eventbridge", JSON, b'{"detail": {"event_id": "e"}}', "missing_event_type", 400),
    ("eventbridge", {"content-type": "application/xml"}, b"<a/>", "unsupported_content_type", 415),
    ("sns", {"content-type": "text/plain"}, b'{"Type": "Bogus"}', "unknown_envelope", 400),
    ("sns", {"content-type": "text/plain"}, b'{"Type": "Notification"}', "missing_payload", 400),
    (
        "sns",
        {"content-type": "text/plain"},
        b'{"Type": "Notification", "Message": "{}"}',
        "missing_event_id",
        400,
    ),
    ("pubsub", JSON, _pubsub("not base64!"), "invalid_base64", 400),
    ("pubsub", JSON, _pubsub(12), "invalid_base64", 400),
    ("pubsub", JSON, body({"message": {"attributes": {}}}), "missing_payload", 400),
    ("pubsub", JSON, body({"subscription": "s"}), "unknown_envelope", 400),
    ("pubsub", JSON, body({"message": {"data": "e30="}}), "missing_event_id", 400),
    ("eventgrid", JSON, b"[]", "unknown_envelope", 400),
    ("eventgrid", JSON, body([{"eventType": "t", "data": {}}]), "missing_event_id", 400),
    (
        "eventgrid",
        JSON,
        body([{"eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "data": {}}]),
        "invalid_handshake",
        400,
    ),
    ("cloudevents", {"content-type": "text/html"}, b"<p>", "unsupported_content_type", 415),
    (
        "cloudevents",
        {"content-type": "application/cloudevents+json"},
        b'{"id": "e"}',
        "unknown_envelope",
        400,
    ),
    (
        "cloudevents",
        {"content-type": "application/cloudevents+json"},
        body({"specversion": "1.0", "id": "e", "type": "t", "data_base64": "%%"}),
        "invalid_base64",
        400,
    ),
    (
        "cloudevents",
        {"content-type": "application/cloudevents-batch+json"},
        b"{}",
        "unknown_envelope",
        400,
    ),
    (
        "cloudevents",
        {"ce-specversion": "1.0", "ce-type": "t", "content-type": "application/json"},
        b"{}",
        "missing_event_id",
        400,
    ),
    (
        "cloudevents",
        {"ce-specversion": "1.0", "ce-id": "e", "ce-type": "t", "content-type": "application/xml"},
        b"<a/>",
        "unsupported_content_type",
        415,
    ),
    (
        "cloudevents",
        {"ce-specversion": "0.3", "ce-id": "e", "ce-type": "t"},
        b"{}",
        "unknown_envelope",
        400,
    ),
    ("nonsense", JSON, b"{}", "unknown_envelope", 400),
]


@pytest.mark.parametrize("kind,headers,raw,code,status", MALFORMED)
def test_malformed_deliveries_name_what_is_wrong(kind, headers, raw, code, status):
    with pytest.raises(EnvelopeError) as err:
        parse(kind, headers, raw, DEFAULTS.get(kind, DEFAULTS["eventbridge"]), "aws")
    assert (err.value.code, err.value.status) == (code, status), err.value.detail


def test_lookup_reads_into_json_text_and_lists():
    item = {"Message": json.dumps({"a": [{"b": "x"}]}), "n": 5}
    assert lookup(item, "Message.a.0.b") == "x"
    assert lookup(item, "Message.a.3.b") is None and lookup(item, "n.x") is None
    assert lookup(copy_mod.deepcopy(item), "Message.nope") is None
