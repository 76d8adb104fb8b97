"""The console's Detection page: detector status, scores, every metric against its
baseline band, and the anomalies with their diagnoses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from helios.daemon.readmodels import ReadModels
from helios.ui.widgets import clock_text as _clock
from helios.ui.widgets import columns as _columns
from nicegui import ui


def _metric_chart() -> dict[str, Any]:
    line = {"type": "line", "showSymbol": False, "animation": False}
    band = {**line, "lineStyle": {"type": "dashed", "width": 1}, "itemStyle": {"color": "#94a3b8"}}
    return {
        "grid": {"left": 50, "right": 10, "top": 10, "bottom": 25},
        "tooltip": {"trigger": "axis"},
        "xAxis": {"type": "time"},
        "yAxis": {"type": "value", "scale": True},
        "series": [
            {**line, "name": "value", "data": [], "itemStyle": {"color": "#0f172a"}},
            {**band, "name": "baseline + threshold", "data": []},
            {**band, "name": "baseline - threshold", "data": []},
            {
                "type": "scatter",
                "name": "anomaly",
                "data": [],
                "symbolSize": 9,
                "itemStyle": {"color": "#dc2626"},
            },
        ],
    }


def detection_page(reads: ReadModels, header: Callable[[str], None]) -> None:
    header("Detection")
    detectors = {d.name: d for d in reads.detectors()}
    names = reads.metric_names()
    with ui.row().classes("w-full gap-4"):
        statuses = {}
        if not detectors:
            ui.label(
                "No detector is enabled: add one to [detectors] enabled in the config."
            ).classes("text-orange-700 helios-no-detectors")
        for name in detectors:
            with ui.card().classes("min-w-72"):
                ui.label(f"detector {name}").classes("font-semibold")
                statuses[name] = ui.label("-").classes(f"text-sm helios-detector-{name}")
    with ui.card().classes("w-full"):
        ui.label("Detector scores (an anomaly at or above the threshold)").classes("font-semibold")
        # Scores in spreads (z) and probabilities (0..1): two axes, as each detector says.
        score_chart = ui.echart(
            {
                "grid": {"left": 50, "right": 50, "top": 30, "bottom": 25},
                "tooltip": {"trigger": "axis"},
                "legend": {"data": list(detectors), "top": 0},
                "xAxis": {"type": "time"},
                "yAxis": [
                    {"type": "value", "name": "z"},
                    {"type": "value", "name": "p", "min": 0, "max": 1},
                ],
                "series": [
                    {
                        "type": "line",
                        "name": name,
                        "showSymbol": False,
                        "data": [],
                        "animation": False,
                        "yAxisIndex": 1 if d.score_unit == "probability" else 0,
                    }
                    for name, d in detectors.items()
                ],
            }
        ).classes("w-full h-48 helios-detector-scores")
    charts = {}
    with ui.grid(columns=2).classes("w-full gap-4"):
        for metric in names:
            with ui.card().classes("w-full"):
                ui.label(metric).classes("font-mono text-sm")
                charts[metric] = ui.echart(_metric_chart()).classes(
                    f"w-full h-48 helios-metric-{metric}"
                )
    with ui.card().classes("w-full"):
        ui.label("Anomalies").classes("font-semibold")
        table = ui.table(
            columns=_columns(
                "minute", "until", "detector", "severity", "score", "metrics", "explanation"
            ),
            rows=[],
            row_key="id",
            pagination=10,
        ).classes("w-full helios-anomalies")

    def refresh() -> None:
        for d in reads.detectors():
            statuses[d.name].set_text(f"{d.status}; {d.anomalies} anomalies")
        history = reads.detection_history()
        for series in score_chart.options["series"]:
            series["data"] = [
                [r.minute * 1000, r.results[series["name"]].score]
                for r in history
                if series["name"] in r.results
            ]
        score_chart.update()
        first = next(iter(detectors), None)
        threshold = detectors[first].threshold if first else 0.0
        for metric, chart in charts.items():
            series = chart.options["series"]
            values, upper, lower, marks = [], [], [], []
            for record in history:
                x = record.minute * 1000
                value = record.values.get(metric, 0.0)
                values.append([x, value])
                band = record.baselines.get(first or "", {}).get(metric)
                if band and threshold:
                    upper.append([x, band[0] + threshold * band[1]])
                    lower.append([x, max(0.0, band[0] - threshold * band[1])])
                if any(metric in r.metrics for r in record.results.values()):
                    marks.append([x, value])
            series[0]["data"], series[1]["data"] = values, upper
            series[2]["data"], series[3]["data"] = lower, marks
            chart.update()
        table.rows = [
            {
                "id": a.id,
                "minute": _clock(a.minute)[:5],
                "until": _clock(a.until)[:5] if a.until else "-",  # one anomaly per episode
                "detector": a.detector,
                "severity": a.severity,
                "score": f"{a.score:.1f}",
                "diagnosis": f"{a.diagnosis} ({a.diagnosis.confidence:.2f})",
                "metrics": ",".join(a.metrics),
                "explanation": a.explanation,
            }
            for a in reversed(reads.recent_anomalies())
        ]
        table.update()

    refresh()
    ui.timer(3.0, refresh)
