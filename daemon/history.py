"""The recorded metrics: every closed minute's step as the detectors saw it, with whether
a detector had it in an anomaly episode, one JSON line per minute in
`<data_dir>/metrics/YYYY-MM-DD.jsonl` (UTC days), kept `detectors.history_days`.

What a deployment's own model is fitted to (`python -m helios.ml.train --history
DATA_DIR`, docs/detection.md). Written by the detection job's thread, never on the event
loop."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

DAY = 86_400.0


class MetricsHistory:
    def __init__(self, data_dir: Path, days: int) -> None:
        self.folder = data_dir / "metrics"
        self.days = days
        self._pending: list[str] = []
        self._lock = threading.Lock()

    def add(self, minute: float, step: Mapping[str, float], flagged: bool) -> None:
        if self.days <= 0:
            return
        line = json.dumps({"minute": minute, "flagged": flagged, "step": dict(step)})
        with self._lock:
            self._pending.append(line)

    def flush(self) -> None:
        """Append what was added to the day files (from a thread); drop old days."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        by_day: dict[str, list[str]] = {}
        for line in pending:
            minute = json.loads(line)["minute"]
            by_day.setdefault(time.strftime("%Y-%m-%d", time.gmtime(minute)), []).append(line)
        for day, lines in by_day.items():
            with open(self.folder / f"{day}.jsonl", "a", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
        # Days are counted back from the newest minute (the daemon's clock, which is
        # simulated in the demo and the tests), not from the wall clock.
        newest = max(json.loads(line)["minute"] for line in pending)
        cutoff = time.strftime("%Y-%m-%d", time.gmtime(newest - self.days * DAY))
        for old in self.folder.glob("*.jsonl"):
            if old.stem < cutoff:
                old.unlink(missing_ok=True)


def read(data_dir: Path) -> Iterator[tuple[float, dict[str, float], bool]]:
    """(minute, step, flagged) of every recorded minute, oldest first; a line that cannot
    be read (a torn last line after a crash) is skipped."""
    for path in sorted((data_dir / "metrics").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                yield (
                    float(row["minute"]),
                    {k: float(v) for k, v in row["step"].items()},
                    bool(row["flagged"]),
                )
            except (ValueError, KeyError, TypeError):
                continue
