"""Webhook deliveries into a real heliosd, with verification on as in production (locally
made keys and certificates: tests/cloudkeys.py): one business event through EventBridge,
SNS, Pub/Sub push, Event Grid and CloudEvents is one COMPLETE event; every delivery that
is unauthenticated, malformed, oversize or a handshake gets its answer and no copy, is
counted by input and reason and kept as a dead letter; a dead letter survives a restart
and is replayed after a fix; pushback is 429/503 with Retry-After."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import time
import uuid

import grpc
import httpx
import pytest
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc

from tests import cloudkeys
from tests.conftest import DaemonProcess, start_daemon_process, stop_daemon_process

SA = "push@helios-test.iam.gserviceaccount.com"
EG_KEY = base64.b64encode(b"event-grid-topic-key-0123456789").decode()
TOPIC = "arn:aws:sns:us-east-1:123456789012:orders"


class Env:
    def __init__(self, tmp, certs: cloudkeys.CertServer, key, google_key) -> None:
        self.tmp = tmp
        self.certs = certs
        self.sns_key = key
        self.google_key = google_key
        self.daemon: DaemonProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.daemon.console_port}"

    def config(self, fixed: bool = False) -> str:
        (self.tmp / "eb.secret").write_text("eb-api-key\n")
        (self.tmp / "eg.secret").write_text(EG_KEY)
        (self.tmp / "ce.secret").write_text("ce-token")
        (self.tmp / "jwks.json").write_text(cloudkeys.jwks(self.google_key, "k1"))
        pattern = f"^http://127\\\\.0\\\\.0\\\\.1:{self.certs.port}/"
        return f"""
[sources]
names = ["aws", "awssns", "gcp", "azure", "edge"]
[reconcile]
window_seconds = 30.0
grace_seconds = 5.0
max_open_windows = 1000
[[routes]]
event_type = "order.*"
sources = ["aws", "awssns", "gcp", "azure", "edge"]
[[routes]]
event_type = "*"
sources = ["aws"]
[sources.inputs.eb]
plugin = "webhook"
envelope = "eventbridge"
source = "aws"
secret_file = "{self.tmp / "eb.secret"}"
{'event_type_default = "order.untyped"' if fixed else ""}
[sources.inputs.sns]
plugin = "webhook"
envelope = "sns"
source = "awssns"
cert_url = "{pattern}.*\\\\.pem$"
subscribe_url = "{pattern}"
topics = ["{TOPIC}"]
[sources.inputs.pubsub]
plugin = "webhook"
envelope = "pubsub"
source = "gcp"
audience = "https://helios.example/ingest/gcp/pubsub"
service_accounts = ["{SA}"]
jwks_file = "{self.tmp / "jwks.json"}"
[sources.inputs.eg]
plugin = "webhook"
envelope = "eventgrid"
source = "azure"
secret_file = "{self.tmp / "eg.secret"}"
[sources.inputs.ce]
plugin = "webhook"
envelope = "cloudevents"
source = "edge"
secret_file = "{self.tmp / "ce.secret"}"
max_body_bytes = 4096
"""

    def start(self, fixed: bool = False) -> None:
        (self.tmp / "ready").unlink(missing_ok=True)  # the last run's
        self.daemon = start_daemon_process(self.tmp, self.config(fixed), console=True)

    def stop(self) -> None:
        stop_daemon_process(self.daemon)

    def query(self) -> pb_grpc.QueryServiceStub:
        return pb_grpc.QueryServiceStub(grpc.insecure_channel(self.daemon.address))

    def event(self, event_id: str) -> pb.GetEventResponse | None:
        try:
            return self.query().GetEvent(pb.GetEventRequest(event_id=event_id), timeout=5)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.NOT_FOUND
            return None

    def inputs(self) -> dict[str, pb.InputStatus]:
        return {i.name: i for i in self.query().ListInputs(pb.ListInputsRequest()).inputs}

    def token(self, **claims) -> str:
        return cloudkeys.google_token(
            self.google_key, "k1", "https://helios.example/ingest/gcp/pubsub", SA, **claims
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    key, google_key = cloudkeys.rsa_key(), cloudkeys.rsa_key()
    certs = cloudkeys.CertServer(cloudkeys.certificate(key))
    e = Env(tmp_path_factory.mktemp("webhooks"), certs, key, google_key)
    e.start()
    yield e
    e.stop()
    certs.close()


# ---- deliveries as each cloud makes them -----------------------------------------------
def business(event_id: str) -> dict:
    return {"event_id": event_id, "order": {"id": 42, "total": 99.5}}


def eventbridge(event_id: str, **extra) -> dict:
    return {
        "version": "0",
        "id": str(uuid.uuid4()),  # EventBridge's own id: differs per copy
        "detail-type": "order.created",
        "source": "shop",
        "time": "2026-11-29T10:00:00Z",
        "detail": business(event_id),
        **extra,
    }


def sns_note(env: Env, event_id: str, version: str = "2") -> dict:
    return cloudkeys.sign_sns(
        {
            "Type": "Notification",
            "MessageId": str(uuid.uuid4()),
            "TopicArn": TOPIC,
            "Message": json.dumps(business(event_id)),
            "Timestamp": "2026-11-29T10:00:00.100Z",
            "SigningCertURL": f"{env.certs.url}/SimpleNotificationService-1.pem",
            "MessageAttributes": {
                "event_id": {"Type": "String", "Value": event_id},
                "event_type": {"Type": "String", "Value": "order.created"},
            },
        },
        env.sns_key,
        version,
    )


def pubsub_push(event_id: str, message_id: str = "", attempt: int = 1) -> dict:
    data = base64.b64encode(json.dumps(business(event_id)).encode()).decode()
    message_id = message_id or str(uuid.uuid4().int)[:16]
    return {
        "message": {
            "attributes": {"event_id": event_id, "event_type": "order.created"},
            "data": data,
            "messageId": message_id,
            "message_id": message_id,
            "publishTime": "2026-11-29T10:00:00.200Z",
            "publish_time": "2026-11-29T10:00:00.200Z",
        },
        "subscription": "projects/helios-test/subscriptions/orders-push",
        "deliveryAttempt": attempt,
    }


def eventgrid(event_id: str) -> list:
    return [
        {
            "id": event_id,
            "topic": "/subscriptions/x/resourceGroups/rg/providers/Microsoft.EventGrid/topics/o",
            "subject": "orders",
            "eventType": "order.created",
            "eventTime": "2026-11-29T10:00:00.3000000Z",
            "data": business(event_id),
            "dataVersion": "1",
        }
    ]


def cloudevent(event_id: str) -> dict:
    return {
        "specversion": "1.0",
        "id": event_id,
        "type": "order.created",
        "source": "/shop",
        "time": "2026-11-29T10:00:00.400Z",
        "datacontenttype": "application/json",
        "data": business(event_id),
    }


def post(env: Env, path: str, body, headers=None, raw: bytes | None = None) -> httpx.Response:
    content = raw if raw is not None else json.dumps(body).encode()
    with httpx.Client(timeout=10) as http:
        return http.post(env.url + path, content=content, headers=headers or {})


EB = "/ingest/aws/eventbridge"
SNS = "/ingest/aws/sns"
PS = "/ingest/gcp/pubsub"
EG = "/ingest/azure/eventgrid"
CE = "/ingest/cloudevents"
JSON = {"content-type": "application/json"}


def deliver_everywhere(env: Env, event_id: str) -> list[httpx.Response]:
    return [
        post(env, EB, eventbridge(event_id), {**JSON, "x-api-key": "eb-api-key"}),
        post(env, SNS, sns_note(env, event_id), {"content-type": "text/plain; charset=UTF-8"}),
        post(env, PS, pubsub_push(event_id), {**JSON, "authorization": f"Bearer {env.token()}"}),
        post(
            env,
            f"{EG}?code={EG_KEY}",
            eventgrid(event_id),
            {**JSON, "aeg-event-type": "Notification"},
        ),
        post(
            env,
            CE,
            cloudevent(event_id),
            {"content-type": "application/cloudevents+json", "authorization": "Bearer ce-token"},
        ),
    ]


def test_one_event_through_every_cloud_is_one_complete_event(env):
    replies = deliver_everywhere(env, "ord-all-1")
    assert [r.status_code for r in replies] == [200] * 5, [r.text for r in replies]
    assert all(r.json() == {"accepted": 1} for r in replies)
    got = env.event("ord-all-1")
    assert got is not None and got.event.status == pb.EVENT_STATUS_COMPLETE, got
    assert got.event.event_type == "order.created"
    assert len({c.payload_hash for c in got.event.copies}) == 1  # one canonical payload
    rows = env.inputs()
    assert rows["sns"].verify == "signature" and rows["pubsub"].verify == "oidc"
    assert all(rows[n].deliveries >= 1 for n in ("eb", "sns", "pubsub", "eg", "ce"))


def test_a_pubsub_redelivery_is_a_duplicate_not_a_new_event(env):
    headers = {**JSON, "authorization": f"Bearer {env.token()}"}
    first = pubsub_push("ord-dup-1", message_id="777")
    again = pubsub_push("ord-dup-1", message_id="777", attempt=2)
    assert post(env, PS, first, headers).status_code == 200
    assert post(env, PS, again, headers).status_code == 200
    got = env.event("ord-dup-1")
    [gcp] = [c for c in got.event.copies if c.source == "gcp"]
    assert gcp.count == 2
    kinds = {o.kind for o in got.event.outcomes}
    assert pb.OUTCOME_KIND_DUPLICATE in kinds


UNVERIFIED = [
    ("eventbridge no key", EB, lambda e: eventbridge("u-1"), JSON, 401, "unauthenticated"),
    (
        "eventbridge wrong key",
        EB,
        lambda e: eventbridge("u-2"),
        {**JSON, "x-api-key": "guess"},
        403,
        "forbidden",
    ),
    (
        "sns tampered",
        SNS,
        lambda e: {**sns_note(e, "u-3"), "Message": json.dumps(business("u-3x"))},
        {},
        403,
        "forbidden",
    ),
    (
        "sns foreign cert",
        SNS,
        lambda e: {**sns_note(e, "u-4"), "SigningCertURL": "https://evil.example/x.pem"},
        {},
        403,
        "forbidden",
    ),
    (
        "sns unsigned",
        SNS,
        lambda e: {k: v for k, v in sns_note(e, "u-5").items() if k != "Signature"},
        {},
        401,
        "unauthenticated",
    ),
    (
        "sns other topic",
        SNS,
        lambda e: cloudkeys.sign_sns(
            {**sns_note(e, "u-6"), "TopicArn": "arn:aws:sns:us-east-1:1:other"}, e.sns_key
        ),
        {},
        403,
        "forbidden",
    ),
    ("pubsub no token", PS, lambda e: pubsub_push("u-7"), JSON, 401, "unauthenticated"),
    ("pubsub wrong audience", PS, lambda e: pubsub_push("u-8"), "aud", 403, "forbidden"),
    ("pubsub expired", PS, lambda e: pubsub_push("u-9"), "exp", 403, "forbidden"),
    ("pubsub other account", PS, lambda e: pubsub_push("u-10"), "email", 403, "forbidden"),
    ("pubsub foreign key", PS, lambda e: pubsub_push("u-11"), "key", 403, "forbidden"),
    ("eventgrid no key", EG, lambda e: eventgrid("u-12"), JSON, 401, "unauthenticated"),
    (
        "eventgrid wrong code",
        EG + "?code=nope",
        lambda e: eventgrid("u-13"),
        JSON,
        403,
        "forbidden",
    ),
    ("eventgrid expired sas", EG, lambda e: eventgrid("u-14"), "sas-expired", 403, "forbidden"),
    (
        "cloudevents no token",
        CE,
        lambda e: cloudevent("u-15"),
        {"content-type": "application/cloudevents+json"},
        401,
        "unauthenticated",
    ),
    (
        "cloudevents wrong token",
        CE,
        lambda e: cloudevent("u-16"),
        {"content-type": "application/cloudevents+json", "authorization": "Bearer x"},
        403,
        "forbidden",
    ),
]


def _headers(env: Env, spec):
    if isinstance(spec, dict):
        return spec
    if spec == "aud":
        token = cloudkeys.google_token(env.google_key, "k1", "https://other.example", SA)
    elif spec == "exp":
        token = env.token(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)
    elif spec == "email":
        token = cloudkeys.google_token(
            env.google_key, "k1", "https://helios.example/ingest/gcp/pubsub", "x@evil.example"
        )
    elif spec == "key":
        token = cloudkeys.google_token(
            cloudkeys.rsa_key(), "k1", "https://helios.example/ingest/gcp/pubsub", SA
        )
    else:  # an SAS token signed with the right key, expired
        past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        return {
            **JSON,
            "aeg-sas-token": cloudkeys.sas_token("https://t.example/api/events", EG_KEY, past),
        }
    return {**JSON, "authorization": f"Bearer {token}"}


@pytest.mark.parametrize("case", UNVERIFIED, ids=[c[0] for c in UNVERIFIED])
def test_an_unverified_delivery_is_refused_counted_and_gives_no_copy(env, case):
    _, path, make, headers, status, code = case
    body = make(env)
    reply = post(env, path, body, _headers(env, headers))
    assert reply.status_code == status, reply.text
    assert reply.json()["error"] == code and reply.json()["detail"]
    for event_id in {f"u-{n}" for n in range(1, 17)} | {"u-3x"}:
        assert env.event(event_id) is None


def test_a_valid_sas_token_and_signature_version_1_are_accepted(env):
    future = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    sas = cloudkeys.sas_token("https://t.example/api/events", EG_KEY, future)
    assert post(env, EG, eventgrid("ord-sas-1"), {**JSON, "aeg-sas-token": sas}).status_code == 200
    v1 = sns_note(env, "ord-v1-1", version="1")
    assert post(env, SNS, v1, {"content-type": "text/plain"}).status_code == 200
    assert env.event("ord-sas-1") is not None and env.event("ord-v1-1") is not None


def test_handshakes_are_answered_and_give_no_copy(env):
    before = env.query().GetStats(pb.GetStatsRequest()).copies_received
    # Event Grid subscription validation: 200 with validationResponse.
    validation = [
        {
            "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
            "topic": "/subscriptions/x",
            "subject": "",
            "data": {
                "validationCode": "512d38b6-c7b8",
                "validationUrl": "https://rp.example/validate",
            },
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2018-01-25T22:12:19.4556811Z",
            "metadataVersion": "1",
            "dataVersion": "1",
        }
    ]
    reply = post(
        env, f"{EG}?code={EG_KEY}", validation, {**JSON, "aeg-event-type": "SubscriptionValidation"}
    )
    assert reply.status_code == 200 and reply.json() == {"validationResponse": "512d38b6-c7b8"}
    # SNS subscription confirmation: verified, then HELIOS GETs SubscribeURL.
    confirm = cloudkeys.sign_sns(
        {
            "Type": "SubscriptionConfirmation",
            "MessageId": "165545c9",
            "Token": "2336412f37",
            "TopicArn": TOPIC,
            "Message": "You have chosen to subscribe.",
            "SubscribeURL": f"{env.certs.url}/?Action=ConfirmSubscription&Token=2336412f37",
            "Timestamp": "2026-11-29T10:00:00.000Z",
            "SigningCertURL": f"{env.certs.url}/SimpleNotificationService-1.pem",
        },
        env.sns_key,
    )
    reply = post(
        env,
        SNS,
        confirm,
        {"content-type": "text/plain", "x-amz-sns-message-type": "SubscriptionConfirmation"},
    )
    assert reply.status_code == 200 and reply.json()["confirmed"] is True
    assert env.certs.visits == ["/?Action=ConfirmSubscription&Token=2336412f37"]
    forged = {**confirm, "SubscribeURL": f"{env.certs.url}/?Action=Forged"}
    assert post(env, SNS, forged, {"content-type": "text/plain"}).status_code == 403
    assert len(env.certs.visits) == 1
    # CloudEvents webhook validation (OPTIONS).
    with httpx.Client() as http:
        reply = http.options(
            env.url + CE, headers={"WebHook-Request-Origin": "eventemitter.example.com"}
        )
    assert reply.status_code == 200
    assert reply.headers["webhook-allowed-origin"] == "eventemitter.example.com"
    assert env.query().GetStats(pb.GetStatsRequest()).copies_received == before


BOMB = gzip.compress(b"{" + b" " * 3_000_000 + b"}")
MALFORMED = [
    ("truncated json", EB, b'{"detail": {"event_id": "m-1"', JSON, 400, "invalid_json"),
    ("not json", EB, b"hello", JSON, 400, "invalid_json"),
    ("empty", EB, b"", JSON, 400, "invalid_json"),
    (
        "missing id",
        EB,
        json.dumps({"detail-type": "order.created", "detail": {"x": 1}}).encode(),
        JSON,
        400,
        "missing_event_id",
    ),
    ("unknown envelope", EB, b'{"hello": 1}', JSON, 400, "unknown_envelope"),
    ("xml", EB, b"<a/>", {"content-type": "application/xml"}, 415, "unsupported_content_type"),
    (
        "payload not json",
        CE,
        json.dumps(
            {
                "specversion": "1.0",
                "id": "m-2",
                "type": "order.created",
                "data_base64": base64.b64encode(b"\x00binary").decode(),
            }
        ).encode(),
        {"content-type": "application/cloudevents+json"},
        422,
        "payload_not_json",
    ),
    (
        "bad base64",
        CE,
        json.dumps({"specversion": "1.0", "id": "m-3", "type": "t", "data_base64": "***"}).encode(),
        {"content-type": "application/cloudevents+json"},
        400,
        "invalid_base64",
    ),
    (
        "oversize",
        CE,
        b"{" + b" " * 5000 + b"}",
        {"content-type": "application/cloudevents+json"},
        413,
        "payload_too_large",
    ),
    ("gzip bomb", EB, BOMB, {**JSON, "content-encoding": "gzip"}, 413, "payload_too_large"),
    (
        "bad gzip",
        EB,
        b"\x1f\x8b\x08not gzip",
        {**JSON, "content-encoding": "gzip"},
        400,
        "invalid_encoding",
    ),
    ("brotli", EB, b"x", {**JSON, "content-encoding": "br"}, 415, "unsupported_content_encoding"),
    (
        "batch with one bad",
        EG,
        json.dumps([*eventgrid("m-4"), {"eventType": "t", "data": {}}]).encode(),
        JSON,
        400,
        "missing_event_id",
    ),
    ("id too long", EG, json.dumps(eventgrid("m" * 600)).encode(), JSON, 422, "event_id_too_long"),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_a_malformed_delivery_gets_its_4xx_and_no_copy(env, case):
    _, path, raw, headers, status, code = case
    auth = {
        EB: {"x-api-key": "eb-api-key"},
        CE: {"authorization": "Bearer ce-token"},
        EG: {"aeg-sas-key": EG_KEY},
    }[path]
    before = env.query().GetStats(pb.GetStatsRequest()).copies_received
    reply = post(env, path, None, {**headers, **auth}, raw=raw)
    assert reply.status_code == status, reply.text
    assert reply.json()["error"] == code
    assert isinstance(reply.json()["dead_letter"], int)
    assert env.query().GetStats(pb.GetStatsRequest()).copies_received == before
    assert env.event("m-4") is None  # the good event of a refused batch was not taken
    [inp] = [i for i in env.inputs().values() if i.path == path]
    assert inp.errors[code] >= 1


def test_oversize_is_refused_before_the_body_is_read(env):
    with httpx.Client(timeout=10) as http:

        def chunks():
            for _ in range(100):
                yield b" " * 65536  # 6.5 MB, chunked, never all held

        reply = http.post(
            env.url + CE,
            content=chunks(),
            headers={
                "content-type": "application/cloudevents+json",
                "authorization": "Bearer ce-token",
            },
        )
        assert reply.status_code == 413 and reply.json()["error"] == "payload_too_large"
        reply = http.post(env.url + "/ingest/nowhere", content=b"{}")
        assert reply.status_code == 404 and reply.json()["error"] == "unknown_input"
        reply = http.get(env.url + EB)
        assert reply.status_code == 405 and reply.json()["error"] == "method_not_allowed"


def test_pushback_is_429_or_503_with_retry_after_and_not_a_dead_letter(env):
    control = pb_grpc.ControlServiceStub(grpc.insecure_channel(env.daemon.address))
    control.PauseSource(pb.PauseSourceRequest(source="edge"))
    try:
        reply = post(
            env,
            CE,
            cloudevent("ord-paused-1"),
            {"content-type": "application/cloudevents+json", "authorization": "Bearer ce-token"},
        )
    finally:
        control.ResumeSource(pb.ResumeSourceRequest(source="edge"))
    assert reply.status_code == 503 and int(reply.headers["retry-after"]) > 0
    assert reply.json()["error"] == "source_paused" and "dead_letter" not in reply.json()
    assert env.event("ord-paused-1") is None


def test_a_dead_letter_survives_a_restart_and_is_replayed_after_the_fix(env):
    untyped = eventbridge("ord-fix-1")
    del untyped["detail-type"]
    reply = post(env, EB, untyped, {**JSON, "x-api-key": "eb-api-key"})
    assert reply.status_code == 400 and reply.json()["error"] == "missing_event_type"
    letter_id = reply.json()["dead_letter"]
    shown = env.query().GetDeadLetter(pb.GetDeadLetterRequest(id=letter_id)).dead_letter
    assert shown.headers["x-api-key"] == "(redacted)" and b"ord-fix-1" in shown.body
    assert shown.verified
    env.stop()
    env.start(fixed=True)  # the fix: a default type for untyped EventBridge events
    listed = env.query().ListDeadLetters(pb.ListDeadLettersRequest(input="eb"))
    assert letter_id in [d.id for d in listed.dead_letters]
    control = pb_grpc.ControlServiceStub(grpc.insecure_channel(env.daemon.address))
    result = control.ReplayDeadLetters(pb.ReplayDeadLettersRequest(ids=[letter_id]))
    assert result.results[0].accepted and result.results[0].copies == 1
    got = env.event("ord-fix-1")
    assert got is not None and got.event.event_type == "order.untyped"
    with pytest.raises(grpc.RpcError) as err:
        env.query().GetDeadLetter(pb.GetDeadLetterRequest(id=letter_id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_200_means_durable_across_kill_9(env):
    headers = {**JSON, "x-api-key": "eb-api-key"}
    with httpx.Client(timeout=10) as http:
        for n in range(40):
            body = json.dumps(eventbridge(f"ord-k9-{n}")).encode()
            assert http.post(env.url + EB, content=body, headers=headers).status_code == 200
    env.daemon.proc.kill()  # no clean stop: what was answered 200 must be on disk
    env.daemon.proc.wait(10)
    env.start()
    missing = [n for n in range(40) if env.event(f"ord-k9-{n}") is None]
    assert missing == []
    assert env.event("ord-k9-0").event.copies[0].source == "aws"
