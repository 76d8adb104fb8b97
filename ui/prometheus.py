"""Prometheus text exposition of heliosd's counters, served at /metrics by the console."""

from __future__ import annotations

from helios.daemon.readmodels import Stats


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(stats: Stats) -> str:
    """The metrics, in Prometheus text format 0.0.4."""
    lines: list[str] = []

    def metric(
        name: str, kind: str, help_text: str, samples: list[tuple[dict[str, str], float]]
    ) -> None:
        lines.append(f"# HELP helios_{name} {help_text}")
        lines.append(f"# TYPE helios_{name} {kind}")
        for labels, value in samples:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(
                f"helios_{name}{{{text}}} {value:.17g}" if text else f"helios_{name} {value:.17g}"
            )

    metric(
        "copies_received_total",
        "counter",
        "Copies accepted into reconciliation.",
        [({}, stats.copies_received)],
    )
    metric("events_seen_total", "counter", "Distinct events seen.", [({}, stats.events_seen)])
    metric(
        "outcomes_total",
        "counter",
        "Outcomes decided, by kind.",
        [({"kind": k}, v) for k, v in stats.outcomes.items()],
    )
    metric(
        "rejected_copies_total",
        "counter",
        "Copies refused, by reason.",
        [({"reason": k}, v) for k, v in sorted(stats.rejections.items())],
    )
    metric(
        "refused_requests_total",
        "counter",
        "API requests refused, by method and code.",
        [
            ({"method": k.split(":")[0], "code": k.split(":")[-1]}, v)
            for k, v in sorted(stats.refused_requests.items())
        ],
    )
    metric("open_windows", "gauge", "Events whose window is open.", [({}, stats.open_windows)])
    metric("index_records", "gauge", "Records the index holds.", [({}, stats.index_records)])
    metric(
        "max_open_windows",
        "gauge",
        "The bound on open windows (reconcile.max_open_windows).",
        [({}, stats.storage.max_open_windows)],
    )
    metric(
        "ingest_queue_depth",
        "gauge",
        "Copies waiting for the reconciler.",
        [({}, stats.queue_depth)],
    )
    metric(
        "ingest_queue_capacity",
        "gauge",
        "Capacity of the ingest queue.",
        [({}, stats.queue_capacity)],
    )
    sources = stats.sources
    metric(
        "source_copies_total",
        "counter",
        "Copies received per source.",
        [({"source": s.source}, s.copies) for s in sources],
    )
    metric(
        "source_expected_total",
        "counter",
        "Closed events that expected the source.",
        [({"source": s.source}, s.expected) for s in sources],
    )
    metric(
        "source_delivered_total",
        "counter",
        "Closed events the source delivered.",
        [({"source": s.source}, s.delivered) for s in sources],
    )
    metric(
        "source_completeness",
        "gauge",
        "delivered / expected per source.",
        [({"source": s.source}, s.completeness) for s in sources],
    )
    metric(
        "source_paused",
        "gauge",
        "1 when the source is paused.",
        [({"source": s.source}, 1.0 if s.paused else 0.0) for s in sources],
    )
    latency = stats.latency
    metric(
        "reconcile_latency_ms",
        "gauge",
        "Receipt of a batch to the COMPLETE outcome, over recent samples.",
        [
            ({"quantile": q}, value)
            for q, value in (("0.5", latency.p50), ("0.9", latency.p90), ("0.99", latency.p99))
        ],
    )
    metric(
        "detector_anomalies_total",
        "counter",
        "Anomalies raised, by detector.",
        [({"detector": d.name}, d.anomalies) for d in stats.detectors],
    )
    return "\n".join(lines) + "\n"
