"""Diagnosis: symptoms -> issue kind, target, confidence, evidence, onset."""

from __future__ import annotations

import pytest
from helios.daemon.diagnosis import diagnose
from helios.daemon.model import OutcomeKind

from tests.helpers import SOURCES

BASE = {
    "missing_rate": (0.001, 0.005),
    "duplicate_rate": (0.002, 0.005),
    "inconsistent_rate": (0.0005, 0.005),
    "latency_aws_gcp_ms": (30.0, 2.0),
    "latency_aws_azure_ms": (70.0, 3.5),
    "latency_gcp_azure_ms": (45.0, 2.25),
    "event_rate_per_minute": (3000.0, 150.0),
    **{
        f"{m}:{s}": (0.0003, 0.005)
        for m in ("missing_rate", "duplicate_rate", "inconsistent_rate")
        for s in SOURCES
    },
}
NORMAL = {m: mean for m, (mean, _) in BASE.items()}


def step(**changes: float) -> dict[str, float]:
    values = dict(NORMAL)
    values.update({k.replace("__", ":"): v for k, v in changes.items()})
    return values


@pytest.mark.parametrize(
    ("values", "responsible", "kind", "target"),
    [
        (
            step(missing_rate=0.25, missing_rate__aws=0.25),
            ["missing_rate:aws", "missing_rate"],
            "missing_events",
            "aws",
        ),
        (
            step(
                missing_rate=0.9,
                missing_rate__aws=0.9,
                missing_rate__gcp=0.9,
                missing_rate__azure=0.9,
            ),
            ["missing_rate:aws", "missing_rate:gcp", "missing_rate:azure"],
            "system_failure",
            "all",
        ),
        (step(event_rate_per_minute=900.0), ["event_rate_per_minute"], "system_failure", "all"),
        (
            step(duplicate_rate=0.1, duplicate_rate__azure=0.3),
            ["duplicate_rate"],
            "duplicate_storm",
            "azure",
        ),
        (
            step(inconsistent_rate=0.05, inconsistent_rate__gcp=0.05),
            ["inconsistent_rate:gcp", "inconsistent_rate"],
            "inconsistent_payloads",
            "gcp",
        ),
        (step(latency_gcp_azure_ms=120.0), ["latency_gcp_azure_ms"], "high_latency", "gcp-azure"),
        (
            step(latency_aws_gcp_ms=150.0, latency_aws_azure_ms=190.0),
            ["latency_aws_gcp_ms", "latency_aws_azure_ms"],
            "source_degraded",
            "aws",
        ),
        (
            step(missing_rate=0.1, missing_rate__gcp=0.1, duplicate_rate__gcp=0.2),
            ["missing_rate:gcp", "duplicate_rate:gcp"],
            "source_degraded",
            "gcp",
        ),
        (step(payload_size_variance=9e9), ["payload_size_variance"], "unknown", ""),
    ],
)
def test_symptoms_name_the_issue(values, responsible, kind, target):
    diagnosis = diagnose(values, BASE, responsible, SOURCES, previous=NORMAL)
    assert (diagnosis.kind, diagnosis.target) == (kind, target)
    assert diagnosis.evidence
    if kind != "unknown":
        assert 0.3 < diagnosis.confidence <= 1.0
        assert diagnosis.onset == "sudden"


def test_a_blamed_aggregate_is_traced_to_its_largest_source_with_less_confidence():
    values = step(duplicate_rate=0.1, duplicate_rate__azure=0.3)
    inferred = diagnose(values, BASE, ["duplicate_rate"], SOURCES)
    named = diagnose(values, BASE, ["duplicate_rate:azure"], SOURCES)
    assert inferred.target == named.target == "azure"
    assert inferred.confidence < named.confidence
    assert "contributes most" in inferred.evidence[-1]


def test_onset_tells_a_jump_from_a_ramp():
    values = step(missing_rate__aws=0.1)
    jump = diagnose(values, BASE, ["missing_rate:aws"], SOURCES, previous=NORMAL)
    ramp = diagnose(
        values, BASE, ["missing_rate:aws"], SOURCES, previous=step(missing_rate__aws=0.06)
    )
    assert (jump.onset, ramp.onset) == ("sudden", "gradual")
    assert diagnose(values, BASE, ["missing_rate:aws"], SOURCES).onset == "unknown"


async def test_the_daemon_diagnoses_an_aws_outage_as_missing_events_from_aws():
    from helios.v1 import helios_pb2 as pb
    from helios.v1 import helios_pb2_grpc as pb_grpc

    from tests.conftest import serve
    from tests.test_detectors import DETECTING, _run_traffic

    async for served in serve(DETECTING):
        await _run_traffic(served.daemon, served.clock, minutes=24, outage_from=18)
        first = next(iter(served.daemon.detection.anomalies))
        assert (first.diagnosis.kind, first.diagnosis.target) == ("missing_events", "aws")
        assert first.diagnosis.onset == "sudden"
        assert any("missing_rate:aws" in line for line in first.diagnosis.evidence)
        got = await pb_grpc.QueryServiceStub(served.channel).GetAnomaly(
            pb.GetAnomalyRequest(id=first.id)
        )
        assert (got.anomaly.diagnosis.kind, got.anomaly.diagnosis.target) == (
            "missing_events",
            "aws",
        )
        counts = served.daemon.reconciler.outcome_counts
        assert counts[OutcomeKind.MISSING] > 0


async def test_an_unknown_diagnosis_with_no_confidence_opens_no_decision():
    from helios.daemon.detection import Anomaly
    from helios.daemon.diagnosis import Diagnosis
    from helios.daemon.domain import IssueKind

    from tests.helpers import make_config, make_daemon

    daemon = make_daemon(make_config())
    unknown = Anomaly(
        "ewma-x", 1, "ewma", 60.0, 60.0, 9.0, "critical", ("payload_size_variance",), "odd",
        {}, {}, Diagnosis(IssueKind.UNKNOWN, "", 0.0, ("payload_size_variance odd",), "sudden"),
    )  # fmt: skip
    daemon.loop.submit([unknown])
    await daemon.loop.cycle()
    assert not daemon.loop.audit.decisions  # nothing to approve, nothing run
