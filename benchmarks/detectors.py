"""Detector cost per metric per step, and EWMA's detection figures on generated data.

.venv/bin/python benchmarks/detectors.py
"""

from __future__ import annotations

import time

from helios.ml.generate import generate
from helios.plugins.detectors import create


def main() -> None:
    series = generate(days=7, seed=21)
    steps = series.steps
    metrics = len(steps[0])
    detector = create("ewma")
    started = time.perf_counter()
    alarms = sum(detector.update(step).is_anomaly for step in steps)
    elapsed = time.perf_counter() - started
    print(
        f"ewma: {elapsed / len(steps) / metrics * 1e6:.2f} us per metric per step "
        f"({metrics} metrics, {len(steps):,} steps)"
    )
    print(f"ewma: {alarms} false alarms over 7 days of normal traffic")

    labelled = generate(days=7, seed=22, anomalies_per_day=6)
    detector = create("ewma")
    episodes: dict[tuple[str, int], int | None] = {}
    false_alarms = 0
    start, previous = 0, None
    for i, (step, label) in enumerate(zip(labelled.steps, labelled.labels, strict=True)):
        result = detector.update(step)
        if label and label != previous:
            start = i
            episodes[(label, start)] = None
        if label and result.is_anomaly and episodes[(label, start)] is None:
            episodes[(label, start)] = i - start + 1
        if result.is_anomaly and not label:
            false_alarms += 1
        previous = label
    print(
        f"ewma on 7 days with {len(episodes)} anomaly episodes: "
        f"{false_alarms} alarms outside episodes"
    )
    kinds = sorted({k for k, _ in episodes})
    print(f"{'KIND':<22}{'EPISODES':>9}{'DETECTED':>9}{'MEAN DELAY (steps)':>20}")
    for kind in kinds:
        delays = [d for (k, _), d in episodes.items() if k == kind]
        found = [d for d in delays if d is not None]
        mean = f"{sum(found) / len(found):.1f}" if found else "-"
        print(f"{kind:<22}{len(delays):>9}{len(found):>9}{mean:>20}")


def lstm_latency(samples: int = 3000) -> None:
    """LSTM inference time on one thread: p50 and p99 over `samples` single windows."""
    detector = create("lstm")
    if detector.session is None:
        print(f"lstm: {detector.status()}")
        return
    steps = generate(days=1, seed=23).steps
    for step in steps[:60]:
        detector.update(step)
    timings = []
    for step in steps[60 : 60 + samples]:
        started = time.perf_counter()
        detector.update(step)
        timings.append(time.perf_counter() - started)
    inference = []
    for _ in range(samples):
        started = time.perf_counter()
        detector.score()
        inference.append(time.perf_counter() - started)
    for label, values in (
        ("inference (onnxruntime, 1 thread)", inference),
        ("update (scaling + EWMA + inference)", timings),
    ):
        values.sort()
        print(
            f"lstm {label}: p50 {values[len(values) // 2] * 1e3:.3f} ms, "
            f"p99 {values[int(len(values) * 0.99)] * 1e3:.3f} ms"
        )


if __name__ == "__main__":
    main()
    lstm_latency()
