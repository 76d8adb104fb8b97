"""AWS for real, through moto_server on loopback: an EventBridge rule's SQS target read
by the `sqs` input (a message deleted only once its copy is durable; a malformed one
left for the queue's redrive and kept once as a dead letter), SNS delivering to an
HTTP subscription on heliosd's webhook path, and `replay_missing` publishing the
missing copies back through EventBridge PutEvents and SNS Publish, where they travel the
cloud's own path back in and heal the event (LATE)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import boto3
import grpc
import pytest
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc

from tests.conftest import start_daemon_process, stop_daemon_process
from tests.helpers import free_port

REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto(tmp_path_factory):
    binary = shutil.which("moto_server", path=os.path.dirname(sys.executable))
    assert binary, "moto[server] is a dev dependency"
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    proc = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    saved = {
        k: os.environ.get(k)
        for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
    }
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION=REGION
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            boto3.client("sqs", endpoint_url=url, region_name=REGION).list_queues()
            break
        except Exception:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"moto_server did not start: {log.read_text()}") from None
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def client(moto: str, service: str):
    return boto3.client(service, endpoint_url=moto, region_name=REGION)


def wait_for(check, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("timed out")


def get(query, event_id):
    try:
        return query.GetEvent(pb.GetEventRequest(event_id=event_id), timeout=5).event
    except grpc.RpcError:
        return None


def publish_grpc(address: str, source: str, event_id: str, payload: dict) -> None:
    event = pb.Event(
        event_id=event_id,
        source=source,
        event_type="order.created",
        payload=json.dumps(payload).encode(),
    )
    pb_grpc.IngestServiceStub(grpc.insecure_channel(address)).Publish(
        pb.PublishRequest(events=[event]), timeout=10
    )


def replay_heals(address: str, source: str, event_id: str, seconds: float = 20.0) -> pb.EventRecord:
    """replay_missing through `source`'s cloud, forced now; the event, once a LATE copy
    of the replay has healed it."""
    control = pb_grpc.ControlServiceStub(grpc.insecure_channel(address))
    done = control.TriggerAction(
        pb.TriggerActionRequest(action="replay_missing", target=source, force=True), timeout=30
    )
    assert done.execution.action == "replay_missing", done
    query = pb_grpc.QueryServiceStub(grpc.insecure_channel(address))
    healed = wait_for(lambda: (e := get(query, event_id)) and not e.missing_sources and e, seconds)
    assert pb.OUTCOME_KIND_LATE in [o.kind for o in healed.outcomes]
    return healed


# Two sources, short windows: a copy missing from one is MISSING within seconds.
TWO_SOURCES = """
[reconcile]
window_seconds = 2.0
grace_seconds = 1.0
[decision]
automation = "observe"
"""


def test_eventbridge_to_sqs_in_and_replays_back_through_putevents(moto, tmp_path):
    sqs, events = client(moto, "sqs"), client(moto, "events")
    dlq_url = sqs.create_queue(QueueName="helios-orders-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    queue_url = sqs.create_queue(
        QueueName="helios-orders",
        Attributes={
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "2"})
        },
    )["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    events.put_rule(
        Name="orders-to-helios", EventPattern=json.dumps({"source": ["shop", "helios.replay"]})
    )
    events.put_targets(Rule="orders-to-helios", Targets=[{"Id": "helios", "Arn": queue_arn}])
    daemon = start_daemon_process(
        tmp_path,
        TWO_SOURCES
        + f"""
[sources]
names = ["aws", "gcp"]
[[routes]]
event_type = "order.*"
sources = ["aws", "gcp"]
[sources.inputs.aws_queue]
plugin = "sqs"
queue_url = "{queue_url}"
endpoint_url = "{moto}"
region = "{REGION}"
source = "aws"
envelope = "eventbridge"
wait_seconds = 1
visibility_timeout = 2
[sources.inputs.aws_queue.publish]
kind = "eventbridge"
bus = "default"
source = "helios.replay"
endpoint_url = "{moto}"
region = "{REGION}"
""",
    )
    try:
        query = pb_grpc.QueryServiceStub(grpc.insecure_channel(daemon.address))
        for n in range(4):
            body = {"event_id": f"eb-{n}", "order": n}
            publish_grpc(daemon.address, "gcp", f"eb-{n}", body)
            if n != 3:  # eb-3 never reaches EventBridge: MISSING from aws
                answer = events.put_events(
                    Entries=[
                        {
                            "Source": "shop",
                            "DetailType": "order.created",
                            "Detail": json.dumps(body),
                        }
                    ]
                )
                assert answer["FailedEntryCount"] == 0
        sqs.send_message(QueueUrl=queue_url, MessageBody="not an EventBridge event")
        for n in range(3):
            wait_for(
                lambda n=n: (e := get(query, f"eb-{n}")) and e.status == pb.EVENT_STATUS_COMPLETE
            )
        missing = wait_for(
            lambda: (e := get(query, "eb-3")) and e.status == pb.EVENT_STATUS_MISSING and e
        )
        assert list(missing.missing_sources) == ["aws"]
        # Taken messages are deleted; the malformed one is left to the redrive policy
        # (maxReceiveCount 2), and kept once as a dead letter.
        wait_for(lambda: "Messages" in sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=1), 30)
        letters = query.ListDeadLetters(pb.ListDeadLettersRequest(input="aws_queue")).dead_letters
        assert [d.reason for d in letters] == ["invalid_json"] and letters[0].path == queue_url
        [row] = [
            i for i in query.ListInputs(pb.ListInputsRequest()).inputs if i.name == "aws_queue"
        ]
        assert row.kind == "sqs eventbridge" and row.copies == 3
        assert row.errors["invalid_json"] >= 1
        # replay_missing publishes eb-3's stored payload through PutEvents; the rule
        # carries it to the queue and the input back in: a LATE copy heals the event.
        healed = replay_heals(daemon.address, "aws", "eb-3")
        assert len({c.payload_hash for c in healed.copies}) == 1  # the replay is the same event
        attrs = sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )
        assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "0"
    finally:
        stop_daemon_process(daemon)


def test_sns_delivers_to_the_webhook_and_replays_back_through_publish(moto, tmp_path):
    sns = client(moto, "sns")
    topic = sns.create_topic(Name="orders")["TopicArn"]
    daemon = start_daemon_process(
        tmp_path,
        TWO_SOURCES
        + f"""
[sources]
names = ["aws", "gcp"]
[[routes]]
event_type = "*"
sources = ["aws", "gcp"]
[sources.inputs.sns]
plugin = "webhook"
envelope = "sns"
source = "aws"
verify = "none"                      # moto signs with a certificate URL only AWS serves
event_id = "Message.event_id"        # moto puts no MessageAttributes in the body
event_type_default = "order.created"
publish = {{ kind = "sns", topic_arn = "{topic}", endpoint_url = "{moto}", region = "{REGION}" }}
""",
        console=True,
    )
    try:
        endpoint = f"http://127.0.0.1:{daemon.console_port}/ingest/aws/sns"
        sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=endpoint)
        query = pb_grpc.QueryServiceStub(grpc.insecure_channel(daemon.address))
        for n in range(3):
            body = {"event_id": f"sn-{n}", "order": n}
            publish_grpc(daemon.address, "gcp", f"sn-{n}", body)
            if n != 2:
                sns.publish(TopicArn=topic, Message=json.dumps(body))
        for n in range(2):
            wait_for(
                lambda n=n: (e := get(query, f"sn-{n}")) and e.status == pb.EVENT_STATUS_COMPLETE
            )
        wait_for(lambda: (e := get(query, "sn-2")) and e.status == pb.EVENT_STATUS_MISSING)
        replay_heals(daemon.address, "aws", "sn-2")
    finally:
        stop_daemon_process(daemon)
