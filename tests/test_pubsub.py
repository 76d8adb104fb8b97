"""GCP Pub/Sub for real, through the Pub/Sub emulator of the machine's Google Cloud SDK:
the `pubsub` input's streaming pull (acked once durable), a push subscription POSTing
its wrapped body to heliosd's webhook, and `replay_missing` publishing the missing copy
back with the official client, with its event id in the attributes, so it comes back in
through the subscription and heals the event."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import grpc
import pytest
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc

from tests.conftest import start_daemon_process, stop_daemon_process
from tests.helpers import free_port
from tests.test_aws import TWO_SOURCES, get, publish_grpc, replay_heals, wait_for

PROJECT = "helios-test"
GCLOUD = shutil.which("gcloud")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    if GCLOUD is None:
        pytest.skip(
            "no Google Cloud SDK (gcloud) on this machine: the Pub/Sub emulator ships in it"
        )
    port = free_port()
    log = tmp_path_factory.mktemp("pubsub") / "emulator.log"
    proc = subprocess.Popen(
        [
            GCLOUD,
            "beta",
            "emulators",
            "pubsub",
            "start",
            f"--host-port=127.0.0.1:{port}",
            "--quiet",
        ],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its java child goes with the group
    )
    deadline = time.monotonic() + 90
    while "Server started" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"the Pub/Sub emulator did not start:\n{log.read_text()}")
        time.sleep(0.3)
    saved = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{port}"
    yield f"127.0.0.1:{port}"
    if saved is None:
        os.environ.pop("PUBSUB_EMULATOR_HOST", None)
    else:
        os.environ["PUBSUB_EMULATOR_HOST"] = saved
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def test_pull_and_push_in_and_replays_back_through_publish(emulator, tmp_path):
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(PROJECT, "orders")
    publisher.create_topic(name=topic)
    pull = subscriber.subscription_path(PROJECT, "helios-pull")
    subscriber.create_subscription(name=pull, topic=topic)
    daemon = start_daemon_process(
        tmp_path,
        TWO_SOURCES
        + f"""
[sources]
names = ["gcp", "gcppush", "aws"]
[[routes]]
event_type = "order.*"
sources = ["gcp", "aws"]
[[routes]]
event_type = "shipment.*"
sources = ["gcppush", "aws"]
[sources.inputs.gcp_pull]
plugin = "pubsub"
subscription = "{pull}"
source = "gcp"
publish = {{ kind = "pubsub", topic = "{topic}" }}
[sources.inputs.gcp_push]
plugin = "webhook"
envelope = "pubsub"
source = "gcppush"
verify = "none"   # the emulator's push sends no OIDC token
""",
        console=True,
    )
    try:
        push_topic = publisher.topic_path(PROJECT, "shipments")
        publisher.create_topic(name=push_topic)
        subscriber.create_subscription(
            name=subscriber.subscription_path(PROJECT, "helios-push"),
            topic=push_topic,
            push_config={
                "push_endpoint": f"http://127.0.0.1:{daemon.console_port}/ingest/gcp/pubsub"
            },
        )
        query = pb_grpc.QueryServiceStub(grpc.insecure_channel(daemon.address))
        for n in range(3):
            body = {"event_id": f"ps-{n}", "order": n}
            publish_grpc(daemon.address, "aws", f"ps-{n}", body)
            if n != 2:  # ps-2 never reaches Pub/Sub: MISSING from gcp
                publisher.publish(
                    topic, json.dumps(body).encode(), event_id=f"ps-{n}", event_type="order.created"
                ).result(30)
        body = {"event_id": "sh-1", "parcel": 9}
        event = pb.Event(
            event_id="sh-1",
            source="aws",
            event_type="shipment.sent",
            payload=json.dumps(body).encode(),
        )
        pb_grpc.IngestServiceStub(grpc.insecure_channel(daemon.address)).Publish(
            pb.PublishRequest(events=[event])
        )
        publisher.publish(
            push_topic, json.dumps(body).encode(), event_id="sh-1", event_type="shipment.sent"
        ).result(30)
        for n in range(2):
            wait_for(
                lambda n=n: (e := get(query, f"ps-{n}")) and e.status == pb.EVENT_STATUS_COMPLETE,
                30,
            )
        wait_for(lambda: (e := get(query, "sh-1")) and e.status == pb.EVENT_STATUS_COMPLETE, 30)
        wait_for(lambda: (e := get(query, "ps-2")) and e.status == pb.EVENT_STATUS_MISSING, 30)
        replay_heals(daemon.address, "gcp", "ps-2", 30)
        rows = {i.name: i for i in query.ListInputs(pb.ListInputsRequest()).inputs}
        assert rows["gcp_pull"].copies == 3 and rows["gcp_push"].copies == 1
    finally:
        stop_daemon_process(daemon)
        publisher.stop()
        subscriber.close()
