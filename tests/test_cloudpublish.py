"""Publish paths with no cloud here: the Event Grid publisher (azure-eventgrid's own
client) and the CloudEvents publisher, against a local HTTP server that records the exact
request each sends, so a replayed copy carries its event id where the receiving webhook
input reads it. Also: a publish table refuses credentials in clear and names what is
missing."""

from __future__ import annotations

import http.server
import json
import threading
from typing import Any

import pytest
from helios.plugins.sources import cloudpublish
from helios.plugins.sources.envelopes import DEFAULTS, parse

COPY = ("ord-9", "azure", "order.created", 1_767_225_600.5, b'{"event_id": "ord-9", "total": 3}')


class Recorder:
    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                owner.requests.append(
                    (self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def recorder():
    r = Recorder()
    yield r
    r.server.shutdown()


async def test_eventgrid_publish_sends_the_event_id_as_the_event_grid_id(recorder, monkeypatch):
    monkeypatch.setenv("HELIOS_TEST_EG_KEY", "topic-key-1")
    publisher = cloudpublish.build(
        {
            "kind": "eventgrid",
            "endpoint": f"{recorder.url}/api/events",
            "key_env": "HELIOS_TEST_EG_KEY",
        }
    )
    assert publisher is not None
    await publisher.start()
    assert await publisher.publish([COPY]) == 1
    await publisher.stop()
    [(path, headers, body)] = recorder.requests
    assert path.startswith("/api/events") and headers["aeg-sas-key"] == "topic-key-1"
    [event] = json.loads(body)
    assert event["id"] == "ord-9" and event["eventType"] == "order.created"
    assert event["data"] == {"event_id": "ord-9", "total": 3} and event["dataVersion"] == "1.0"
    # What the eventgrid webhook input makes of exactly this body: the missing copy.
    [copy] = parse(
        "eventgrid", {"content-type": "application/json"}, body, DEFAULTS["eventgrid"], "azure"
    ).copies
    assert copy[0] == "ord-9" and copy[2] == "order.created"


async def test_cloudevents_publish_posts_a_structured_event_with_the_bearer_token(
    recorder, monkeypatch
):
    monkeypatch.setenv("HELIOS_TEST_CE_TOKEN", "tok")
    publisher = cloudpublish.build(
        {"kind": "cloudevents", "url": f"{recorder.url}/in", "token_env": "HELIOS_TEST_CE_TOKEN"}
    )
    assert publisher is not None
    await publisher.start()
    assert await publisher.publish([COPY, ("ord-10", "azure", "order.created", 1.0, b"{}")]) == 2
    await publisher.stop()
    path, headers, body = recorder.requests[0]
    assert path == "/in" and headers["authorization"] == "Bearer tok"
    assert headers["content-type"] == "application/cloudevents+json"
    event = json.loads(body)
    assert (event["specversion"], event["id"], event["type"]) == ("1.0", "ord-9", "order.created")
    assert event["time"].startswith("2026-01-01T00:00:00.5")
    [copy] = parse("cloudevents", headers, body, DEFAULTS["cloudevents"], "azure").copies
    assert copy[0] == "ord-9" and json.loads(copy[4]) == {"event_id": "ord-9", "total": 3}


@pytest.mark.parametrize(
    "options,problem",
    [
        (
            {"kind": "eventgrid", "endpoint": "https://x", "key": "secret"},
            "credentials never go in",
        ),
        ({"kind": "sns"}, "needs topic_arn"),
        ({"kind": "carrier-pigeon"}, "publish.kind must be one of"),
        ({"kind": "sqs", "queue_url": "q", "colour": "red"}, "unknown keys ['colour']"),
    ],
)
def test_a_bad_publish_table_is_refused_naming_the_problem(options, problem):
    with pytest.raises(ValueError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        cloudpublish.build(options)


def test_eventbridge_replays_carry_the_id_inside_detail():
    assert json.loads(cloudpublish.with_id(b'{"total": 1}', "event_id", "e-1")) == {
        "total": 1,
        "event_id": "e-1",
    }
    assert (
        cloudpublish.with_id(b'{"event_id": "kept"}', "event_id", "e-1") == b'{"event_id": "kept"}'
    )
    assert cloudpublish.with_id(b"[1]", "event_id", "e-1") == b"[1]"
