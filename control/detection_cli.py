"""`helios anomalies` and `metrics`: the detection side of the thin client."""

from __future__ import annotations

import argparse
import json
from typing import Any

from helios.control.common import OK, channel, table
from helios.control.common import when as _when
from helios.v1 import helios_pb2 as pb
from helios.v1 import helios_pb2_grpc as pb_grpc


def _anomaly_dict(a: pb.Anomaly) -> dict[str, Any]:
    return {
        "id": a.id,
        "detector": a.detector,
        "minute": _when(a.minute),
        "score": round(a.score, 3),
        "severity": a.severity,
        "metrics": list(a.metrics),
        "explanation": a.explanation,
        "diagnosis": {
            "kind": a.diagnosis.kind,
            "target": a.diagnosis.target,
            "confidence": a.diagnosis.confidence,
            "onset": a.diagnosis.onset,
            "evidence": list(a.diagnosis.evidence),
            **({"tenant": a.diagnosis.tenant} if a.diagnosis.tenant else {}),
        },
        "values": dict(a.values),
        "baselines": {
            m: {"mean": a.baseline_means[m], "spread": a.baseline_spreads[m]}
            for m in a.baseline_means
        },
    }


def cmd_anomalies_list(args: argparse.Namespace) -> int:
    terms = [
        f"{k}={getattr(args, k)}"
        for k in ("detector", "severity", "metric", "since", "until")
        if getattr(args, k)
    ]
    response = pb_grpc.QueryServiceStub(channel(args.address)).ListAnomalies(
        pb.ListAnomaliesRequest(page_size=args.limit, filter=" AND ".join(terms)), timeout=10
    )
    if args.json:
        print(json.dumps([_anomaly_dict(a) for a in response.anomalies], indent=2))
        return OK
    table(
        [("ID", "MINUTE", "UNTIL", "SEVERITY", "SCORE", "DIAGNOSIS", "CONFIDENCE", "METRICS")]
        + [
            (
                a.id,
                _when(a.minute)[:16],
                _when(a.until)[11:16] if a.HasField("until") else "-",
                a.severity,
                f"{a.score:.1f}",
                _diagnosis(a.diagnosis),
                f"{a.diagnosis.confidence:.2f}",
                ",".join(a.metrics),
            )
            for a in response.anomalies
        ]
    )
    return OK


def _diagnosis(d: pb.Diagnosis) -> str:
    return f"{d.kind}({d.target})" if d.target else d.kind


def cmd_anomalies_get(args: argparse.Namespace) -> int:
    a = (
        pb_grpc.QueryServiceStub(channel(args.address))
        .GetAnomaly(pb.GetAnomalyRequest(id=args.id), timeout=10)
        .anomaly
    )
    if args.json:
        print(json.dumps(_anomaly_dict(a), indent=2))
        return OK
    print(f"anomaly {a.id}  detector {a.detector}  minute {_when(a.minute)}")
    if a.HasField("until"):
        print(f"its episode lasted until {_when(a.until)}")
    print(f"severity {a.severity}  score {a.score:.2f}")
    print(a.explanation)
    d = a.diagnosis
    print(f"diagnosis {_diagnosis(d)}  confidence {d.confidence:.2f}  onset {d.onset}")
    for line in d.evidence:
        print(f"  - {line}")
    print()
    table(
        [("METRIC", "VALUE", "BASELINE", "SPREAD", "RESPONSIBLE")]
        + [
            (
                m,
                f"{v:.4g}",
                f"{a.baseline_means[m]:.4g}" if m in a.baseline_means else "-",
                f"{a.baseline_spreads[m]:.3g}" if m in a.baseline_spreads else "-",
                "yes" if m in a.metrics else "",
            )
            for m, v in sorted(a.values.items())
        ]
    )
    return OK


def cmd_metrics(args: argparse.Namespace) -> int:
    stub = pb_grpc.QueryServiceStub(channel(args.address))
    minutes = list(stub.GetMetrics(pb.GetMetricsRequest(), timeout=10).minutes)[-args.minutes :]
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "minute": _when(m.minute),
                        **dict(m.features),
                        "missing_rate_by_source": dict(m.missing_rate_by_source),
                    }
                    for m in minutes
                ],
                indent=2,
            )
        )
        return OK
    if not minutes:
        print("no closed minute yet")
        return OK
    names = list(minutes[0].features)
    table(
        [("MINUTE", *names)]
        + [(_when(m.minute)[11:16], *(f"{m.features[n]:.4g}" for n in names)) for m in minutes]
    )
    return OK
