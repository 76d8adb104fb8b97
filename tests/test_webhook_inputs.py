"""Webhook inputs in process (the daemon and the ASGI door, no browser, no network):
pushback answers 429 with Retry-After and keeps no dead letter; a bad input config is
refused at build or start naming the key; fuzzed deliveries (random bodies, headers,
encodings, lengths) never get a 5xx, never crash, and give a copy only with a 200;
the dead-letter store keeps its bounds and redacts credentials."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import pytest
from helios.daemon.config import ConfigError
from helios.daemon.deadletters import DeadLetter, DeadLetters
from helios.ui import webhooks as door
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.helpers import make_config, make_daemon

INPUTS = """
[[routes]]
event_type = "*"
sources = ["aws", "gcp", "azure"]
[sources.inputs.eb]
plugin = "webhook"
envelope = "eventbridge"
source = "aws"
verify = "none"
[sources.inputs.ps]
plugin = "webhook"
envelope = "pubsub"
source = "gcp"
verify = "none"
[sources.inputs.eg]
plugin = "webhook"
envelope = "eventgrid"
source = "azure"
verify = "none"
[sources.inputs.ce]
plugin = "webhook"
envelope = "cloudevents"
source = "azure"
verify = "none"
max_body_bytes = 2048
"""


def config(text: str, windows: int = 100_000):
    """A test config with the console's address set (webhooks need it; not started here)."""
    return make_config(
        text, DAEMON__CONSOLE_ADDRESS='"127.0.0.1:0"', RECONCILE__MAX_OPEN_WINDOWS=str(windows)
    )


async def call(
    daemon, method: str, path: str, body: bytes, headers: dict[str, str], chunks: int = 1
):
    """One request through the ASGI door; (status, headers, JSON body)."""
    raw_headers = [(k.lower().encode(), v.encode("latin-1")) for k, v in headers.items()]
    path, _, query = path.partition("?")
    scope = {
        "type": "http", "method": method, "path": path, "query_string": query.encode(),
        "headers": raw_headers, "client": ("127.0.0.1", 5000),
    }  # fmt: skip
    size = max(1, len(body) // chunks + 1)
    parts = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(parts) - 1}
        for i, p in enumerate(parts)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await door.serve(daemon.services.webhooks, scope, receive, send)
    start, content = sent[0], sent[1]
    reply_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], reply_headers, json.loads(content["body"])


@pytest.fixture
async def daemon():
    d = make_daemon(config(INPUTS, windows=3))
    await d.start()
    yield d
    await d.stop()


def eventbridge(event_id: str) -> bytes:
    return json.dumps({"detail-type": "order.created", "detail": {"event_id": event_id}}).encode()


JSON = {"content-type": "application/json"}


async def test_a_full_daemon_answers_429_with_retry_after_and_keeps_no_dead_letter(daemon):
    for n in range(3):
        status, _, body = await call(
            daemon, "POST", "/ingest/aws/eventbridge", eventbridge(f"w-{n}"), JSON
        )
        assert status == 200, body
        await daemon.pipeline.settle()  # its window is open
    status, headers, body = await call(
        daemon, "POST", "/ingest/aws/eventbridge", eventbridge("w-4"), JSON
    )
    assert status == 429 and headers["retry-after"] == "1"
    assert body["error"] == "overloaded" and "max_open_windows" in body["detail"]
    assert daemon.webhooks.deadletters.list() == []
    assert daemon.webhooks.stats_of("eb").errors["overloaded"] == 1
    assert "w-4" not in daemon.reconciler.open


@pytest.mark.parametrize(
    "options,problem",
    [
        ('envelope = "smoke-signals"\nsource = "aws"', "envelope"),
        ('envelope = "sns"\nsource = "nowhere"', "source 'nowhere' is not one of sources.names"),
        (
            'envelope = "eventgrid"\nsource = "aws"\nverify = "signature"',
            "verify = 'signature' is for sns",
        ),
        ('envelope = "pubsub"\nsource = "aws"', "needs audience"),
        ('envelope = "sns"\nsource = "aws"\ncert_url = "(["', "cert_url: not a regular expression"),
        ('envelope = "sns"\nsource = "aws"\nmax_body_bytes = 0', "max_body_bytes"),
        ('envelope = "sns"\nsource = "aws"\ncolour = "red"', "colour"),
        (
            'envelope = "sns"\nsource = "aws"\npublish = {kind = "sns", topic_arn = "t", key = ""}',
            "credentials never go in",
        ),
    ],
)
def test_a_bad_webhook_input_is_refused_at_build_naming_the_key(options, problem):
    text = f'[sources.inputs.w]\nplugin = "webhook"\n{options}\n'
    with pytest.raises(ConfigError) as err:
        make_daemon(config(text))
    assert "sources.inputs.w" in str(err.value) and problem in str(err.value), str(err.value)


def test_a_webhook_input_needs_the_console():
    text = '[sources.inputs.w]\nplugin = "webhook"\nenvelope = "sns"\nsource = "aws"\n'
    with pytest.raises(ConfigError, match="served by the console"):
        make_daemon(make_config(text))


async def test_a_missing_secret_stops_the_start_naming_where_it_was_looked_for(tmp_path):
    text = (
        '[sources.inputs.w]\nplugin = "webhook"\n'
        'envelope = "cloudevents"\nsource = "aws"\nsecret_env = "HELIOS_TEST_UNSET_SECRET"\n'
    )
    d = make_daemon(config(text))
    with pytest.raises(ValueError, match="HELIOS_TEST_UNSET_SECRET is not set"):
        await d.start()
    d.lock.release()


PATHS = [
    "/ingest/aws/eventbridge",
    "/ingest/gcp/pubsub",
    "/ingest/azure/eventgrid",
    "/ingest/cloudevents",
]
TYPES = [
    "application/json",
    "text/plain",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "application/xml",
    "",
    "multipart/form-data",
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)


@st.composite
def deliveries(draw) -> tuple[str, str, bytes, dict[str, str], int]:
    path = draw(st.sampled_from([*PATHS, "/ingest/nowhere"]))
    kind = draw(st.integers(0, 4))
    if kind == 0:
        body = draw(st.binary(max_size=300))
    elif kind == 1:
        body = json.dumps(draw(json_values)).encode()
    else:  # near-valid shapes with random holes
        event = {
            "specversion": draw(st.sampled_from(["1.0", "0.3"])),
            "id": draw(st.text(max_size=8)),
            "type": draw(st.sampled_from(["", "order.x"])),
            "eventType": draw(
                st.sampled_from(["order.x", "Microsoft.EventGrid.SubscriptionValidationEvent"])
            ),
            "detail-type": "order.x",
            "detail": draw(json_values),
            "data": draw(json_values),
            "data_base64": draw(st.sampled_from(["e30=", "!!", "eyJhIjoxfQ=="])),
            "message": {
                "data": draw(st.sampled_from(["e30=", "%%", 5])),
                "attributes": {"event_id": draw(st.text(max_size=5))},
            },
        }
        body = json.dumps([event] if kind == 3 else event).encode()
    headers = {"content-type": draw(st.sampled_from(TYPES))}
    if draw(st.booleans()):
        headers["ce-specversion"] = "1.0"
        headers["ce-id"] = draw(st.text(alphabet="abc-1", max_size=6))
        headers["ce-type"] = "order.x"
    encoding = draw(st.sampled_from(["", "", "gzip", "deflate", "br", "gzip-broken"]))
    if encoding == "gzip":
        body = gzip.compress(body)
        headers["content-encoding"] = "gzip"
    elif encoding == "gzip-broken":
        headers["content-encoding"] = "gzip"
    elif encoding:
        headers["content-encoding"] = encoding
    if draw(st.booleans()):
        headers["content-length"] = draw(
            st.sampled_from([str(len(body)), "-1", "abc", "99999999999"])
        )
    method = draw(st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "OPTIONS"]))
    return method, path, body, headers, draw(st.integers(1, 4))


GOOD = (
    "POST",
    "/ingest/cloudevents",
    json.dumps(
        {"specversion": "1.0", "id": "ok-1", "type": "order.x", "source": "/x", "data": {}}
    ).encode(),
    {"content-type": "application/cloudevents+json"},
    1,
)


def test_fuzzed_deliveries_never_get_a_5xx_and_give_a_copy_only_with_a_200():
    loop = asyncio.new_event_loop()
    d = make_daemon(config(INPUTS))
    loop.run_until_complete(d.start())

    async def check(method: str, path: str, body: bytes, headers: dict[str, str], chunks: int):
        before = sum(c.copies for c in d.reconciler.by_source)
        status, _, reply = await call(d, method, path, body, headers, chunks)
        await d.pipeline.drain()
        copies = sum(c.copies for c in d.reconciler.by_source) - before
        assert status < 500, reply
        if status == 200:
            assert copies == reply.get("accepted", 0)
        else:
            assert copies == 0 and reply["error"], reply
            assert status in (404, 405, 429) or reply.get("dead_letter"), reply

    @settings(max_examples=400, deadline=None)
    @given(delivery=deliveries())
    @example(delivery=GOOD)  # a delivery that must be taken: random ones rarely are
    def one(delivery: tuple[str, str, bytes, dict[str, str], int]) -> None:
        loop.run_until_complete(check(*delivery))

    try:
        one()
        assert sum(d.webhooks.stats_of(n).deliveries for n in ("eb", "ps", "eg", "ce")) > 0
    finally:
        loop.run_until_complete(d.stop())
        loop.close()


def test_the_dead_letter_store_keeps_its_bounds_and_survives_a_reopen(tmp_path):
    async def fill() -> None:
        store = DeadLetters(tmp_path, max_entries=5, max_bytes=10_000)
        store.open()
        for _ in range(8):
            await store.add(
                DeadLetter(
                    0, 1.0, "eb", "invalid_json", 400, "x", "POST", "/p", "", {}, b"b" * 100, False
                )
            )
        big = DeadLetter(
            0, 1.0, "eb", "invalid_json", 400, "x", "POST", "/p", "", {}, b"z" * 9_000, False
        )
        await store.add(big)
        assert [d.id for d in store.list()] == [9] and store.dropped == 8
        store.close()
        again = DeadLetters(tmp_path, max_entries=5, max_bytes=10_000)
        again.open()
        assert [d.id for d in again.list()] == [9] and again.get(9).body == b"z" * 9_000
        again.close()

    asyncio.run(fill())


async def test_credentials_are_redacted_before_a_dead_letter_is_kept(daemon):
    headers = {**JSON, "authorization": "Bearer s3cret", "aeg-sas-key": "k", "x-api-key": "k2"}
    status, _, body = await call(
        daemon, "POST", "/ingest/azure/eventgrid?code=topsecret&x=1", b"[]", headers
    )
    assert status == 400
    letter = daemon.webhooks.deadletters.get(body["dead_letter"])
    assert letter.query == "code=(redacted)&x=1"
    assert {letter.headers[k] for k in ("authorization", "aeg-sas-key", "x-api-key")} == {
        "(redacted)"
    }


def test_a_flood_of_unverified_junk_cannot_push_out_the_verified_dead_letters(tmp_path):
    async def flood() -> None:
        store = DeadLetters(tmp_path, max_entries=20, max_bytes=1 << 20)
        store.open()
        for n in range(5):
            await store.add(
                DeadLetter(
                    0, 1.0, "eb", "missing_event_id", 400, f"{n}", "POST", "/p", "", {}, b"", True
                )
            )
        for _ in range(500):
            await store.add(
                DeadLetter(
                    0, 1.0, "", "unknown_input", 404, "junk", "POST", "/x", "", {}, b"", False
                )
            )
        kept = store.list(limit=100)
        assert sum(1 for d in kept if d.verified) == 5
        assert sum(1 for d in kept if not d.verified) == 2  # a tenth of 20
        store.close()

    asyncio.run(flood())


async def test_past_max_webhook_deliveries_a_delivery_is_refused_unread(daemon):
    webhooks = daemon.services.webhooks
    webhooks.in_flight = webhooks.max_in_flight  # that many bodies held right now
    read = []

    async def receive() -> dict[str, Any]:
        read.append(1)
        return {"type": "http.request", "body": eventbridge("busy-1"), "more_body": False}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/ingest/aws/eventbridge",
             "query_string": b"", "headers": [(b"content-type", b"application/json")]}  # fmt: skip
    await door.serve(webhooks, scope, receive, send)
    assert sent[0]["status"] == 503 and not read
    assert json.loads(sent[1]["body"])["error"] == "overloaded"
    assert webhooks.stats_of("eb").errors["overloaded"] == 1 and not webhooks.deadletters.list()
    webhooks.in_flight = 0
    status, _, _ = await call(daemon, "POST", "/ingest/aws/eventbridge", eventbridge("ok-1"), JSON)
    assert status == 200 and webhooks.in_flight == 0


async def test_token_keys_that_cannot_be_read_are_reported_and_the_token_refused(tmp_path):
    from helios.plugins.sources.webauth import Verifier

    from tests import cloudkeys

    key = cloudkeys.rsa_key()
    verifier = Verifier("oidc", audience="aud", jwks_file=str(tmp_path / "absent.json"))
    token = cloudkeys.google_token(key, "k1", "aud", "sa@x")
    problem = await verifier.check({"authorization": f"Bearer {token}"}, "", None)
    assert problem is not None and problem.status == 403
    assert "absent.json" in verifier.key_error
    (tmp_path / "absent.json").write_text(cloudkeys.jwks(key, "k1"))
    verifier._keys_at = 0.0  # the next refresh is due
    assert await verifier.check({"authorization": f"Bearer {token}"}, "", None) is None


async def test_a_webhook_delivery_with_traceparent_continues_the_producers_trace():
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    d = make_daemon(config(INPUTS + "\n[telemetry]\ntrace_copies_ratio = 0.0\n"))
    spans = InMemorySpanExporter()
    d.telemetry.add_span_processor(SimpleSpanProcessor(spans))
    await d.start()
    try:
        status, _, _ = await call(d, "POST", "/ingest/aws/eventbridge", eventbridge("t-0"), JSON)
        assert status == 200 and not spans.get_finished_spans()  # ratio 0: no trace
        trace_id, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
        headers = {**JSON, "traceparent": f"00-{trace_id}-{parent}-01"}
        status, _, _ = await call(d, "POST", "/ingest/aws/eventbridge", eventbridge("t-1"), headers)
        assert status == 200
        await d.pipeline.settle()
        roots = [s for s in spans.get_finished_spans() if s.name in ("helios.copy", "admission")]
        assert roots and all(f"{s.context.trace_id:032x}" == trace_id for s in roots)
        copy = next(s for s in spans.get_finished_spans() if s.name == "admission")
        assert copy.parent is not None
    finally:
        await d.stop()
