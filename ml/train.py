"""Train the LSTM detector on generated metrics of many deployments (regimes) and export
it to a single ONNX file. Its inputs are standardised residuals against each
deployment's own running baseline (helios.ml.dataset.residuals), so no level learnt
here decides what is normal where it runs.

    pip install -e '.[train]'          # torch==2.13.0, CPU
    python -m helios.ml.train          # writes ml/models/lstm.onnx, lstm.json

Deterministic for a given --seed on the same machine and torch version.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
from helios.ml.dataset import WINDOW, fit_scaling, residual_windows
from helios.ml.generate import FEATURES, REGIME, generate, random_regime

MODELS = Path(__file__).resolve().parent / "models"


def build(hidden: tuple[int, int], dense: int) -> Any:
    """The seed plan's shape, LSTM -> LSTM -> dense -> sigmoid, scaled down to run in
    well under a millisecond on one CPU thread."""
    import torch
    from torch import nn

    class Detector(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm1 = nn.LSTM(len(FEATURES), hidden[0], batch_first=True)
            self.drop1 = nn.Dropout(0.2)
            self.lstm2 = nn.LSTM(hidden[0], hidden[1], batch_first=True)
            self.drop2 = nn.Dropout(0.2)
            self.dense = nn.Linear(hidden[1], dense)
            self.out = nn.Linear(dense, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # logits, (batch, 1)
            h, _ = self.lstm1(x)
            h, _ = self.lstm2(self.drop1(h))
            last = self.drop2(h[:, -1, :])
            return self.out(torch.relu(self.dense(last)))

    return Detector()


def choose_threshold(scores: np.ndarray, labels: np.ndarray, min_precision: float) -> float:
    """The threshold with the best F1 on validation data among those whose precision is at
    least min_precision (0.5 when none is)."""
    best, best_f1 = 0.5, -1.0
    for threshold in np.linspace(0.05, 0.95, 91):
        predicted = scores >= threshold
        tp = float((predicted & (labels > 0)).sum())
        fp = float((predicted & (labels == 0)).sum())
        fn = float((~predicted & (labels > 0)).sum())
        if not tp or tp / (tp + fp) < min_precision:
            continue
        f1 = 2 * tp / (2 * tp + fp + fn)
        if f1 > best_f1:
            best, best_f1 = float(threshold), f1
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--days", type=float, default=48.0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--regimes", type=int, default=12, help="deployments drawn")
    parser.add_argument("--out", type=Path, default=MODELS)
    parser.add_argument(
        "--history",
        type=Path,
        help="a heliosd data directory: fit a model to its recorded metrics, shadow-evaluate "
        "it against the running one and promote it only when it is better",
    )
    args = parser.parse_args()
    if args.history is not None:
        from helios.ml.fit_history import fit_history

        raise SystemExit(fit_history(args))
    started = time.time()
    # Many deployments: the default regime and random ones (traffic from tens to
    # hundreds of thousands of events a minute, other latencies, noise, cycles).
    draw = random.Random(args.seed)
    per = args.days / args.regimes
    parts = [
        residual_windows(
            generate(per, seed=args.seed * 1000 + 10 + i, anomalies_per_day=8,
                     regime=REGIME if i == 0 else random_regime(draw))
        )
        for i in range(args.regimes)
    ]  # fmt: skip
    valid = [
        residual_windows(
            generate(3, seed=args.seed * 1000 + 500 + i, anomalies_per_day=8,
                     regime=random_regime(draw))
        )
        for i in range(3)
    ]  # fmt: skip
    command = (
        f"python -m helios.ml.train --seed {args.seed} --days {args.days:g} "
        f"--regimes {args.regimes} --epochs {args.epochs}"
    )
    fit_and_export(
        parts, valid, args.seed, args.epochs, args.out, started,
        {"days": args.days, "regimes": args.regimes, "command": command},
    )  # fmt: skip


def fit_and_export(
    parts: list[tuple[np.ndarray, np.ndarray]],
    valid: list[tuple[np.ndarray, np.ndarray]],
    seed: int,
    epochs: int,
    out: Path,
    started: float,
    trained_extra: dict[str, Any],
    name: str = "lstm",
) -> Path:
    """Train on residual windows, choose the threshold on `valid`, and write
    `out/<name>.onnx` and `out/<name>.json`; returns the .onnx path."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    rng = np.random.default_rng(seed)
    x_train = np.concatenate([p[0] for p in parts])
    y_train = np.concatenate([p[1] for p in parts])
    x_valid = np.concatenate([p[0] for p in valid])
    y_valid = np.concatenate([p[1] for p in valid])
    scaling = fit_scaling(generate(2, seed=seed * 1000 + 1))  # a fallback only
    hidden, dense = (32, 16), 16
    model = build(hidden, dense)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    positives = float(y_train.sum())
    loss_fn = torch.nn.BCEWithLogitsLoss(
        pos_weight=torch.tensor([(len(y_train) - positives) / max(positives, 1.0)])
    )
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    for epoch in range(epochs):
        model.train()
        order = torch.from_numpy(rng.permutation(len(xt)))
        total = 0.0
        for start in range(0, len(order), 256):
            batch = order[start : start + 256]
            optimiser.zero_grad()
            loss = loss_fn(model(xt[batch]).squeeze(1), yt[batch])
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(xt):.4f}", flush=True)

    model.eval()
    with torch.no_grad():
        valid_scores = torch.sigmoid(model(torch.from_numpy(x_valid))).squeeze(1).numpy()
    threshold = choose_threshold(valid_scores, y_valid, min_precision=0.97)

    class WithSigmoid(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, window: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(self.inner(window))

    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / f"{name}.onnx"
    torch.onnx.export(
        WithSigmoid(model),
        (torch.zeros(1, WINDOW, len(FEATURES)),),
        str(onnx_path),
        input_names=["window"],
        output_names=["score"],
        dynamic_axes={"window": {0: "batch"}, "score": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    meta = {
        "inputs": "residuals",  # against the running baseline (helios.ml.dataset)
        "features": scaling.features,
        "mean": scaling.mean,
        "std": scaling.std,
        "clip": scaling.clip,
        "window": WINDOW,
        "threshold": round(threshold, 4),
        "trained": {
            "seed": seed,
            "epochs": epochs,
            "hidden": list(hidden),
            "dense": dense,
            "torch": torch.__version__,
            "train_windows": len(x_train),
            "positive_share": round(positives / len(y_train), 4),
            "seconds": round(time.time() - started, 1),
            **trained_extra,
        },
    }
    (out / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"wrote {onnx_path} ({onnx_path.stat().st_size:,} bytes), threshold {threshold:.3f}")
    return onnx_path


if __name__ == "__main__":
    main()
