"""A deployment's own model: heliosd records every closed minute it detects on, and
`python -m helios.ml.train --history DATA_DIR` fits a candidate to them, shadow-evaluates
it next to the running model on the recorded tail with injected episodes, and promotes
it only when it is better; heliosd then loads the promoted model. (Fitting itself needs
torch, the `train` extra; here a stand-in candidate is fitted so the rest runs.)"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
from helios.daemon.history import MetricsHistory, read
from helios.ml import fit_history
from helios.ml.generate import KINDS, Regime, generate
from helios.plugins.detectors.lstm import shipped_model

from tests.helpers import make_config, make_daemon
from tests.test_detectors import DETECTING, _run_traffic


async def test_the_daemon_records_each_detected_minute_in_day_files():
    from helios.daemon.clock import ManualClock

    clock = ManualClock()
    daemon = make_daemon(make_config(DETECTING), clock)
    await _run_traffic(daemon, clock, minutes=25, outage_from=18)
    daemon.detection.save()
    rows = list(read(Path(daemon.config.daemon.data_dir)))
    assert len(rows) >= 24
    minutes = [m for m, _, _ in rows]
    assert minutes == sorted(minutes) and all("missing_rate" in s for _, s, _ in rows)
    assert any(flagged for _, _, flagged in rows)  # the outage's minutes are marked
    assert not rows[0][2]


def test_a_torn_line_is_skipped_and_old_days_are_dropped(tmp_path):
    history = MetricsHistory(tmp_path, days=2)
    history.add(1_000_000.0, {"x": 1.0}, False)  # 1970: older than 2 days
    history.add(4_102_444_800.0, {"x": 2.0}, True)  # 2100
    history.flush()
    (tmp_path / "metrics" / "2100-01-01.jsonl").open("a").write('{"minute": 5, "st')
    assert [s["x"] for _, s, _ in read(tmp_path)] == [2.0]


def record(data_dir: Path, days: float, seed: int) -> None:
    history = MetricsHistory(data_dir, 3650)
    regime = Regime(events=60.0, latency=0.4, noise=2.0, payload=205.0, season=0.1)
    for i, step in enumerate(generate(days, seed=seed, regime=regime).steps):
        history.add(1_767_225_600.0 + 60 * i, step, False)
    history.flush()


def test_injected_episodes_cover_every_kind_on_the_deployments_own_levels():
    steps = generate(3, seed=5).steps
    series = fit_history.with_episodes(steps, seed=1)
    kinds = {label for label in series.labels if label}
    assert kinds == set(KINDS)
    quiet = [i for i, label in enumerate(series.labels) if label is None]
    assert all(series.steps[i] == steps[i] for i in quiet[:500])  # untouched outside


def _args(data_dir: Path) -> argparse.Namespace:
    return argparse.Namespace(history=data_dir, seed=1, epochs=1)


def _stand_in(monkeypatch):
    """fit_and_export without torch: the shipped model copied as the candidate."""

    def fake(parts, valid, seed, epochs, out, started, extra, name="lstm"):
        assert parts and valid and extra["history_minutes"] > 0
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shipped_model(), out / f"{name}.onnx")
        shutil.copyfile(shipped_model().with_suffix(".json"), out / f"{name}.json")
        return out / f"{name}.onnx"

    from helios.ml import train

    monkeypatch.setattr(train, "fit_and_export", fake)


def test_too_little_history_is_refused_naming_what_is_needed(tmp_path, capsys):
    record(tmp_path, 0.5, seed=3)
    assert fit_history.fit_history(_args(tmp_path)) == 2
    assert "at least 2,880" in capsys.readouterr().out


@pytest.mark.slow
def test_a_candidate_no_better_than_the_running_model_is_not_promoted(tmp_path, monkeypatch):
    record(tmp_path, 3, seed=3)
    _stand_in(monkeypatch)
    assert fit_history.fit_history(_args(tmp_path)) == 1  # the same model: not better
    assert not (tmp_path / "models" / "lstm.onnx").exists()
    [evaluation] = [json.loads(x) for x in (tmp_path / "models" / "evaluations.jsonl").open()]
    assert evaluation["promoted"] is False
    assert evaluation["candidate_score"] == evaluation["running_score"]
    assert evaluation["candidate_score"]["episodes"] > 0


@pytest.mark.slow
def test_a_better_candidate_is_promoted_and_the_daemon_loads_it(tmp_path, monkeypatch):
    record(tmp_path, 3, seed=3)
    _stand_in(monkeypatch)
    scores = iter([{"episodes": 5, "found": 5, "false_alarms": 0},
                   {"episodes": 5, "found": 4, "false_alarms": 0}])  # fmt: skip
    monkeypatch.setattr(fit_history, "shadow", lambda model, series: next(scores))
    assert fit_history.fit_history(_args(tmp_path)) == 0
    promoted = tmp_path / "models" / "lstm.onnx"
    assert promoted.exists() and promoted.with_suffix(".json").exists()
    daemon = make_daemon(
        make_config('[detectors]\nenabled = ["lstm"]\n', DAEMON__DATA_DIR=f'"{tmp_path}"')
    )
    assert daemon.detection.detectors["lstm"].model_path == promoted
