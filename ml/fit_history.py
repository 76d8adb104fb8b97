"""Fit the LSTM to a deployment's own recorded metrics, shadow-evaluate it next to the
model it runs now, and promote it only when it is better.

    python -m helios.ml.train --history DATA_DIR [--epochs 10] [--seed 1]

- The data: the minutes heliosd recorded in `DATA_DIR/metrics/*.jsonl` (see
  helios.daemon.history; at least 2 days). Minutes a detector had in an anomaly
  episode are never taught as normal. The first 80% is for fitting: the recorded
  traffic as normal, and copies of it with episodes of the 7 kinds injected (the
  generator's injections, on this deployment's own levels); plus 6 generated
  deployments, so the model keeps what it knows of other levels.
- Shadow evaluation: the last 20%, with injected episodes (a seed fitting never used),
  run through the candidate and through the model in use (`DATA_DIR/models/lstm.onnx`
  if one was promoted before, else the shipped one): episodes found and false alarms.
- Promotion: only when the candidate finds at least as many episodes with no more false
  alarms, and is better on one of them. It then becomes `DATA_DIR/models/lstm.onnx`
  (+ .json), which heliosd loads at its next start (unless detectors.options.lstm.model
  names another). Every candidate stays in `DATA_DIR/models/candidates/` with its
  card, and every evaluation is a line of `DATA_DIR/models/evaluations.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import time
from pathlib import Path

from helios.daemon.history import read
from helios.ml.dataset import residual_windows
from helios.ml.evaluate import episodes
from helios.ml.generate import FEATURES, KINDS, Series, _inject, _params, generate, random_regime

MIN_MINUTES = 2 * 1440


def with_episodes(steps: list[dict[str, float]], seed: int, per_day: float = 8.0) -> Series:
    """A copy of recorded steps with anomaly episodes (5-30 minutes, the 7 kinds)
    injected at random, never overlapping, each step labelled with its episode's kind."""
    rng = random.Random(seed)
    minutes = len(steps)
    count = round(minutes / 1440 * per_day)
    placed: list[tuple[int, int, str, dict[str, float | str]]] = []
    attempts = 0
    while len(placed) < count and attempts < count * 50:
        attempts += 1
        kind = KINDS[len(placed) % len(KINDS)]
        length = 30 if kind == "slow_ramp" else rng.randint(5, 30)
        start = rng.randint(60, max(60, minutes - length - 1))
        if all(start > e + 60 or start + length + 60 < s for s, e, _, _ in placed):
            placed.append((start, start + length, kind, _params(kind, rng)))
    series = Series()
    active = {m: (s, e, k, p) for s, e, k, p in placed for m in range(s, e)}
    for minute, recorded in enumerate(steps):
        step = dict(recorded)
        label = None
        if minute in active:
            s, e, kind, params = active[minute]
            for source in ("aws", "gcp", "azure"):  # the generator's per-source key
                step.setdefault(f"missing_rate:{source}", 0.0)
            _inject(step, kind, (minute - s + 1) / (e - s), rng, params)
            label = kind
        series.steps.append(step)
        series.labels.append(label)
    return series


def shadow(model: Path, series: Series) -> dict[str, float]:
    """Episodes found and false alarms of an LSTM with `model` on labelled steps."""
    from helios.plugins.detectors import create

    detector = create("lstm", model=str(model))
    if getattr(detector, "session", None) is None:
        raise SystemExit(f"cannot load {model}: {detector.status()}")
    alarms = [detector.update(step).is_anomaly for step in series.steps]
    found, covered = 0, set[int]()
    all_episodes = episodes(series)
    for start, end, _ in all_episodes:
        covered.update(range(start, end + 2))
        found += any(alarms[start : min(end + 2, len(alarms))])
    false = sum(1 for i, a in enumerate(alarms) if a and i >= 60 and i not in covered)
    return {"episodes": len(all_episodes), "found": found, "false_alarms": false}


def fit_history(args: argparse.Namespace) -> int:
    from helios.ml.train import fit_and_export
    from helios.plugins.detectors.lstm import shipped_model

    data_dir: Path = args.history
    rows = list(read(data_dir))
    usable = [(m, s, f) for m, s, f in rows if all(name in s for name in FEATURES)]
    if len(usable) < MIN_MINUTES:
        print(
            f"{data_dir}/metrics holds {len(usable):,} usable minutes (of {len(rows):,}); "
            f"fitting needs at least {MIN_MINUTES:,} (2 days). heliosd records them while "
            "detectors.history_days > 0."
        )
        return 2
    started = time.time()
    cut = int(len(usable) * 0.8)
    fit_steps = [s for _, s, _ in usable[:cut]]
    flagged = [f for _, _, f in usable[:cut]]
    parts = []
    for copy in range(3):
        series = with_episodes(fit_steps, seed=args.seed * 7000 + copy)
        x, y = residual_windows(series)
        # A window whose last minute a detector had in an episode teaches nothing.
        keep = [not flagged[i + 59] or y[i] > 0 for i in range(len(y))]
        parts.append((x[keep], y[keep]))
    draw = random.Random(args.seed)
    parts += [
        residual_windows(
            generate(2, seed=args.seed * 1000 + 700 + i, anomalies_per_day=8,
                     regime=random_regime(draw))
        )
        for i in range(6)
    ]  # fmt: skip
    valid = [residual_windows(with_episodes(fit_steps[-1440:], seed=args.seed * 7000 + 50))]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    candidates = data_dir / "models" / "candidates"
    candidate = fit_and_export(
        parts, valid, args.seed, args.epochs, candidates, started,
        {
            "history": str(data_dir),
            "history_minutes": len(usable),
            "fitted_minutes": cut,
            "command": f"python -m helios.ml.train --history {data_dir} --seed {args.seed} "
            f"--epochs {args.epochs}",
        },
        name=f"lstm-{stamp}",
    )  # fmt: skip
    current = data_dir / "models" / "lstm.onnx"
    running = current if current.exists() else shipped_model()
    test = with_episodes([s for _, s, _ in usable[cut:]], seed=args.seed * 7000 + 999)
    new, old = shadow(candidate, test), shadow(running, test)
    better = (
        new["found"] >= old["found"]
        and new["false_alarms"] <= old["false_alarms"]
        and (new["found"] > old["found"] or new["false_alarms"] < old["false_alarms"])
    )
    record = {
        "at": stamp,
        "candidate": str(candidate),
        "running": str(running),
        "candidate_score": new,
        "running_score": old,
        "promoted": better,
    }
    with open(data_dir / "models" / "evaluations.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    print(
        f"shadow evaluation on the last {len(usable) - cut:,} recorded minutes with "
        f"{new['episodes']} injected episodes: candidate found {new['found']}, "
        f"{new['false_alarms']} false alarms; running ({running.name}) found {old['found']}, "
        f"{old['false_alarms']} false alarms"
    )
    if not better:
        print(f"not promoted: the running model is as good or better ({candidate} kept)")
        return 1
    for suffix in (".onnx", ".json"):
        temp = current.with_suffix(suffix + ".tmp")
        shutil.copyfile(candidate.with_suffix(suffix), temp)
        temp.replace(current.with_suffix(suffix))
    print(f"promoted: {current} (heliosd loads it at its next start)")
    return 0
