"""Detection: every enabled detector sees each closed minute of metrics; anomalies are
kept, announced to plugins, and detector state is saved so that it survives a restart."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from helios.daemon.clock import Clock
from helios.daemon.config import ConfigError, DetectorsConfig
from helios.daemon.diagnosis import Diagnosis, diagnose
from helios.daemon.files import write_json
from helios.daemon.history import MetricsHistory
from helios.daemon.metrics import MetricsMinute, MetricsRollup
from helios.daemon.plugins import PluginManager, Registry
from helios.daemon.query import FilterError, PageRequest, newest_first, parse_terms, parse_time
from helios.daemon.types import DetectionResult, Detector

log = logging.getLogger("helios.detection")
HISTORY_MINUTES = 240


@dataclass(frozen=True)
class Anomaly:
    """A step a detector found anomalous, with the evidence."""

    id: str
    sequence: int
    detector: str
    minute: float  # start of the metrics minute
    detected_at: float
    score: float
    severity: str
    metrics: tuple[str, ...]
    explanation: str
    values: dict[str, float]
    baselines: dict[str, tuple[float, float]]  # metric -> (mean, spread), when known
    diagnosis: Diagnosis
    until: float = 0.0  # the last minute its episode was still on (0: only its first)


@dataclass
class StepRecord:
    """One minute as the console charts it: values, and per detector its verdict."""

    minute: float
    values: dict[str, float]
    results: dict[str, DetectionResult] = field(default_factory=dict)
    baselines: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)


@dataclass(frozen=True)
class AnomalyQuery:
    detector: str | None = None
    severity: frozenset[str] | None = None
    metric: str | None = None
    since: float | None = None
    until: float | None = None

    def matches(self, a: Anomaly) -> bool:
        return (
            (self.detector is None or a.detector == self.detector)
            and (self.severity is None or a.severity in self.severity)
            and (self.metric is None or self.metric in a.metrics)
            and (self.since is None or a.minute >= self.since)
            and (self.until is None or a.minute < self.until)
        )


def parse_anomaly_filter(text: str) -> AnomalyQuery:
    """`detector=ewma AND severity=major,critical metric=missing_rate since=...`"""
    values = parse_terms(text, ("detector", "severity", "metric", "since", "until"))
    return AnomalyQuery(
        detector=values.get("detector"),
        severity=frozenset(values["severity"].split(",")) if "severity" in values else None,
        metric=values.get("metric"),
        since=parse_time("since", values["since"]) if "since" in values else None,
        until=parse_time("until", values["until"]) if "until" in values else None,
    )


def step_of(minute: MetricsMinute) -> dict[str, float]:
    """The step detectors see (MetricsMinute.step)."""
    return minute.step()


class Detection:
    def __init__(
        self,
        config: DetectorsConfig,
        registry: Registry,
        metrics: MetricsRollup,
        clock: Clock,
        data_dir: str,
        plugins: PluginManager | None = None,
        retention: int = 10_000,
    ) -> None:
        self.clock = clock
        self.plugins = plugins
        self.state_dir = Path(data_dir) / "detectors"
        self.recorded = MetricsHistory(Path(data_dir), config.history_days)
        promoted = Path(data_dir) / "models"
        self.detectors: dict[str, Detector] = {}
        self.notes: dict[str, str] = {}  # why a detector's saved state was not restored
        for name in config.enabled:
            entry = registry.detectors.get(name)
            if entry is None:
                raise ConfigError(
                    f"detectors.enabled: unknown detector {name!r}; "
                    f"loaded: {', '.join(sorted(registry.detectors)) or 'none'}"
                )
            options = dict(config.options.get(name, {}))
            if "model" not in options and (promoted / f"{name}.onnx").exists():
                # A model fitted to this deployment and promoted (helios.ml.train --history).
                options["model"] = str(promoted / f"{name}.onnx")
            try:
                self.detectors[name] = entry.factory(**options)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"detectors.options.{name}: {exc}") from exc
        # Options of a registered detector that is not enabled are kept for when it is;
        # a name no plugin registers is a typo.
        unknown = set(config.options) - set(registry.detectors)
        if unknown:
            raise ConfigError(
                f"detectors.options: {sorted(unknown)} are not detectors; "
                f"loaded: {', '.join(sorted(registry.detectors))}"
            )
        self.sources = list(metrics.sources)
        self._queue = metrics.subscribe()
        self.anomalies: deque[Anomaly] = deque(maxlen=retention)
        self._by_id: dict[str, Anomaly] = {}
        self.history: deque[StepRecord] = deque(maxlen=HISTORY_MINUTES)
        self.minutes_seen = 0  # closed minutes fed to the detectors since start
        self._write_lock = threading.Lock()
        self._written = -1  # the generation (minutes_seen) of the last snapshot written
        self._saving: set[asyncio.Future[None]] = set()
        self.sequence = 0
        self.counts: dict[str, int] = dict.fromkeys(self.detectors, 0)
        self.episodes: dict[str, Anomaly] = {}  # per detector: the anomaly of its open episode
        self.updates: list[Anomaly] = []  # open episodes seen again since the last take

    def _path(self, name: str) -> Path:
        return self.state_dir / f"{name}.json"

    def open(self) -> None:
        """Restore each detector's saved state (start-up)."""
        for name, detector in self.detectors.items():
            path = self._path(name)
            if not path.exists():
                continue
            try:
                detector.load_state(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                self.notes[name] = f"saved state in {path} not restored ({exc}); learning afresh"
                log.warning("detector %s: %s", name, self.notes[name])

    def save(self) -> None:
        """Write each detector's state (atomically: a crash leaves the old file)."""
        self.write(self.snapshot())

    def snapshot(self) -> tuple[int, dict[Path, Any]]:
        """Each detector's state as it is now, by file, with the number of minutes it
        has learnt: taken on the event loop, written by write() from any thread."""
        states = {self._path(name): d.state() for name, d in self.detectors.items()}
        return self.minutes_seen, states

    def save_soon(self) -> None:
        """save(), with the files written from a thread while the loop goes on."""
        task = asyncio.ensure_future(asyncio.to_thread(self.write, self.snapshot()))
        self._saving.add(task)
        task.add_done_callback(self._saved)

    def _saved(self, task: asyncio.Future[None]) -> None:
        self._saving.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("saving detector state failed: %s", task.exception())

    def write(self, snapshot: tuple[int, dict[Path, Any]]) -> None:
        """Write a snapshot, unless a newer one was written already (writes from the
        detection job's thread and from stop() may overlap)."""
        generation, states = snapshot
        self.recorded.flush()
        with self._write_lock:
            if generation < self._written:
                return
            for path, state in states.items():
                write_json(path, state)
            self._written = generation

    def process(self) -> list[Anomaly]:
        """Feed every minute closed since the last call to every detector (their state
        is saved by whoever calls: the detection job after each new minute, from a
        thread, and Daemon.stop)."""
        found: list[Anomaly] = []
        while self._queue:
            minute = self._queue.popleft()
            step = step_of(minute)
            record = StepRecord(minute.minute, step)
            for name, detector in self.detectors.items():
                result = detector.update(step)
                record.results[name] = result
                record.baselines[name] = {
                    m: b for m in step if (b := detector.baseline(m)) is not None
                }
                previous = self.history[-1].values if self.history else None
                if result.is_anomaly:
                    anomaly = self._record(
                        name, minute.minute, step, result, record.baselines.get(name, {}), previous
                    )
                    found.append(anomaly)
                    self.episodes[name] = anomaly
                elif result.metrics and name in self.episodes:
                    # The episode goes on: one anomaly, updated; the decision loop hears
                    # of it each minute (an expired approval is asked for again).
                    self.updates.append(
                        self._update(name, minute.minute, step, result, record, previous)
                    )
                else:
                    self.episodes.pop(name, None)
            self.history.append(record)
            self.recorded.add(minute.minute, step, any(r.metrics for r in record.results.values()))
            self.minutes_seen += 1
        for anomaly in found:
            diag = anomaly.diagnosis
            log.info(
                "anomaly %s: %s %s at minute %s, %s; diagnosis %s (confidence %.2f)",
                anomaly.id,
                anomaly.detector,
                anomaly.severity,
                time.strftime("%H:%M", time.gmtime(anomaly.minute)),
                anomaly.explanation or ", ".join(anomaly.metrics),
                diag,
                diag.confidence,
                extra={"anomaly": anomaly.id, "stage": "anomaly"},
            )
            if self.plugins is not None:
                self.plugins.on_anomaly(anomaly)
        return found

    def _record(
        self,
        name: str,
        minute: float,
        step: Mapping[str, float],
        result: DetectionResult,
        baselines: Mapping[str, tuple[float, float]],
        previous: Mapping[str, float] | None = None,
    ) -> Anomaly:
        self.sequence += 1
        stamp = time.strftime("%Y%m%dT%H%M", time.gmtime(minute))
        anomaly = Anomaly(
            id=f"{name}-{stamp}",
            sequence=self.sequence,
            detector=name,
            minute=minute,
            detected_at=self.clock.now(),
            score=result.score,
            severity=result.severity,
            metrics=tuple(result.metrics),
            explanation=result.explanation,
            values=dict(step),
            baselines={m: baselines[m] for m in result.metrics if m in baselines},
            diagnosis=diagnose(step, baselines, result.metrics, self.sources, previous),
        )
        if len(self.anomalies) == self.anomalies.maxlen:
            self._by_id.pop(self.anomalies[0].id, None)
        self.anomalies.append(anomaly)
        self._by_id[anomaly.id] = anomaly
        self.counts[name] += 1
        return anomaly

    def raise_external(
        self,
        name: str,
        minute: float,
        score: float,
        severity: str,
        metrics: tuple[str, ...],
        explanation: str,
        diagnosis: Diagnosis,
    ) -> Anomaly:
        """An anomaly found outside the detectors (a burning SLO budget): kept, counted,
        listed and logged like theirs; the caller hands it to the decision loop."""
        self.sequence += 1
        stamp = time.strftime("%Y%m%dT%H%M", time.gmtime(minute))
        tenant = f"-{diagnosis.tenant}" if diagnosis.tenant else ""
        anomaly = Anomaly(
            f"{name}-{diagnosis.target}{tenant}-{stamp}",
            self.sequence,
            name,
            minute - minute % 60.0,
            self.clock.now(),
            score,
            severity,
            metrics,
            explanation,
            {},
            {},
            diagnosis,
        )
        if len(self.anomalies) == self.anomalies.maxlen:
            self._by_id.pop(self.anomalies[0].id, None)
        self.anomalies.append(anomaly)
        self._by_id[anomaly.id] = anomaly
        self.counts[name] = self.counts.get(name, 0) + 1
        log.info("anomaly %s: %s; diagnosis %s", anomaly.id, explanation, diagnosis)
        return anomaly

    def _update(
        self,
        name: str,
        minute: float,
        step: Mapping[str, float],
        result: DetectionResult,
        record: StepRecord,
        previous: Mapping[str, float] | None,
    ) -> Anomaly:
        """The open episode's anomaly as of this minute: same id, the metrics still out,
        their values and a fresh diagnosis; kept as `until` on the stored one."""
        opened = self.episodes[name]
        baselines = record.baselines.get(name, {})
        current = replace(
            opened,
            minute=minute,
            detected_at=self.clock.now(),
            score=result.score,
            metrics=tuple(result.metrics),
            values=dict(step),
            baselines={m: baselines[m] for m in result.metrics if m in baselines},
            diagnosis=diagnose(step, baselines, result.metrics, self.sources, previous),
            until=minute,
        )
        stored = self._by_id.get(opened.id)
        if stored is not None:
            kept = replace(stored, until=minute)
            self._by_id[opened.id] = kept
            for i in range(len(self.anomalies) - 1, -1, -1):
                if self.anomalies[i].id == opened.id:
                    self.anomalies[i] = kept
                    break
        return current

    def get(self, anomaly_id: str) -> Anomaly | None:
        return self._by_id.get(anomaly_id)

    def list(self, query: AnomalyQuery, page: PageRequest) -> tuple[list[Anomaly], str]:
        """A page of anomalies, newest first, and the next page's token."""
        return newest_first(self.anomalies, page, lambda a: a.sequence, query.matches)

    def status(self) -> dict[str, str]:
        out = {}
        for name, detector in self.detectors.items():
            note = self.notes.get(name)
            out[name] = detector.status() + (f" ({note})" if note else "")
        return out


def describe(anomaly: Anomaly) -> dict[str, Any]:
    """A plain dict for logs and JSON output."""
    return {
        "id": anomaly.id,
        "detector": anomaly.detector,
        "minute": anomaly.minute,
        "score": anomaly.score,
        "severity": anomaly.severity,
        "metrics": list(anomaly.metrics),
        "explanation": anomaly.explanation,
    }


__all__ = ["Anomaly", "AnomalyQuery", "Detection", "FilterError", "parse_anomaly_filter"]
