"""The LSTM detector: onnxruntime over a rolling 60-step window of the 8 features.

Falls back to the EWMA detector, with the reason in its status, when the model file is
missing, corrupt or of the wrong shape. An EWMA runs beside it in any case: it names the
metrics behind an LSTM alarm."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from helios.daemon.hookspecs import hookimpl
from helios.daemon.types import DetectionResult, Detector, DetectorFactory
from helios.plugins.detectors.ewma import EwmaDetector

SHIPPED = Path(__file__).resolve().parent.parent.parent / "ml" / "models" / "lstm.onnx"


def shipped_model() -> Path:
    """The model trained by `python -m helios.ml.train`, shipped with the package."""
    from importlib.resources import files

    try:
        return Path(str(files("helios.ml").joinpath("models/lstm.onnx")))
    except (ModuleNotFoundError, TypeError):
        return SHIPPED


class LstmDetector:
    name = "lstm"
    score_unit = "probability"

    def __init__(
        self,
        model: str | None = None,
        threshold: float | None = None,
        ewma: Mapping[str, Any] | None = None,
        corroborate: float = 5.0,
    ) -> None:
        if corroborate < 0:
            raise ValueError(f"corroborate must be >= 0, got {corroborate}")
        self.corroborate = corroborate
        self.ewma = EwmaDetector(**dict(ewma or {}))
        self.model_path = Path(model) if model else shipped_model()
        self.session: Any = None
        self.fallback_reason = ""
        self.threshold = 0.5
        self.window_size = 60
        self.features: list[str] = []
        self.mean: list[float] = []
        self.std: list[float] = []
        self.clip = 20.0
        self.residuals = False  # inputs as residuals against the running baseline
        self._load(threshold)
        self.window: deque[list[float]] = deque(maxlen=self.window_size)
        self.last_score = 0.0
        self.out = False  # in an episode
        self.quiet = 0
        self.missing: list[str] = []  # features the last step lacked

    def _load(self, threshold: float | None) -> None:
        try:
            import numpy  # noqa: F401  (onnxruntime needs it; say so if it is missing)
            import onnxruntime

            meta = json.loads(self.model_path.with_suffix(".json").read_text(encoding="utf-8"))
            self.features = list(meta["features"])
            self.mean = [float(v) for v in meta["mean"]]
            self.std = [float(v) for v in meta["std"]]
            self.clip = float(meta.get("clip", 20.0))
            self.residuals = meta.get("inputs") == "residuals"
            self.window_size = int(meta["window"])
            self.threshold = float(threshold if threshold is not None else meta["threshold"])
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            session = onnxruntime.InferenceSession(
                str(self.model_path), options, providers=["CPUExecutionProvider"]
            )
            shape = session.get_inputs()[0].shape
            if len(shape) != 3 or shape[1:] != [self.window_size, len(self.features)]:
                raise ValueError(
                    f"model input shape {shape} is not [batch, {self.window_size}, "
                    f"{len(self.features)}]"
                )
            self.input_name = session.get_inputs()[0].name
            self.session = session
        except FileNotFoundError as exc:
            self.fallback_reason = f"model file missing: {exc.filename}"
        except ImportError as exc:
            self.fallback_reason = f"onnxruntime is not installed ({exc})"
        except (ValueError, KeyError, TypeError) as exc:
            self.fallback_reason = f"model unusable: {exc}"
        except Exception as exc:  # onnxruntime's own errors: a corrupt or foreign file
            self.fallback_reason = f"model unusable: {type(exc).__name__}: {exc}"

    def _scaled(self, step: Mapping[str, float]) -> list[float]:
        """Each feature as a standardised residual against this deployment's own running
        baseline (the EWMA's mean and spread before this step), clipped: the same model
        serves 50 events a minute and 500,000. The training-time mean and spread in
        lstm.json are used only by a model trained before (lstm.json without
        "inputs": "residuals")."""
        clip = self.clip
        row = []
        for f, m, s in zip(self.features, self.mean, self.std, strict=True):
            if self.residuals:
                # the level alone, no cycle: what the model was trained on (ml/dataset.py)
                base = self.ewma.plain_baseline(f)
                row.append(
                    0.0 if base is None else max(-clip, min(clip, (step[f] - base[0]) / base[1]))
                )
            else:  # a model trained before residuals: its fixed training-time scaling
                row.append(max(-clip, min(clip, (step[f] - m) / s)))
        return row

    def score(self) -> float:
        import numpy as np

        rows = list(self.window)
        if len(rows) < self.window_size:  # residual models only (see warm())
            rows = [[0.0] * len(self.features)] * (self.window_size - len(rows)) + rows
        window = np.asarray([rows], dtype=np.float32)
        return float(self.session.run(None, {self.input_name: window})[0][0][0])

    def warm(self) -> bool:
        """Ready to score. A residual model is ready once its EWMA baseline is (a window
        not full yet is padded with zeros: in residual terms, "at the baseline", the calm
        past it was trained on), so it is warm after `warmup` minutes, not 60; a model of
        fixed scaling needs the full window."""
        if len(self.window) >= self.window_size:
            return True
        return self.residuals and self.ewma.steps > self.ewma.warmup

    def update(self, step: Mapping[str, float]) -> DetectionResult:
        missing = [f for f in self.features if f not in step] if self.session is not None else []
        scaled = self._scaled(step) if self.session is not None and not missing else None
        attributed = self.ewma.update(step)
        if missing:  # never zeros for what was not measured: the per-metric path judges
            self.missing = missing
            return DetectionResult(
                attributed.is_anomaly,
                attributed.score,
                attributed.severity,
                attributed.metrics,
                f"(LSTM not run: the step lacks {', '.join(missing[:4])}"
                f"{' and more' if len(missing) > 4 else ''}; judged per metric by its EWMA) "
                f"{attributed.explanation}",
            )
        self.missing = []
        if self.session is None:
            return DetectionResult(
                attributed.is_anomaly,
                attributed.score,
                attributed.severity,
                attributed.metrics,
                f"(ewma fallback: {self.fallback_reason}) {attributed.explanation}",
            )
        assert scaled is not None
        self.window.append(scaled)
        if not self.warm():
            return DetectionResult(
                False, 0.0, "none", [], f"warming up ({len(self.window)}/{self.window_size} steps)"
            )
        score = self.last_score = self.score()
        # The model's alarm needs a metric at least `corroborate` spreads off its own
        # baseline: a pattern no metric shows is, on unfamiliar noise, mostly a false alarm.
        over = score >= self.threshold and attributed.score >= self.corroborate
        # One anomaly per episode: it opens when the score crosses the threshold and
        # closes after the EWMA's quiet_steps below it.
        if over:
            opened, self.quiet = not self.out, 0
            self.out = True
        else:
            opened = False
            self.quiet += 1
            if self.quiet >= self.ewma.quiet_steps:
                self.out = False
        metrics = attributed.metrics
        if over and not metrics:  # the LSTM saw a pattern no single metric shows
            last = self.window[-1]
            metrics = [self.features[max(range(len(last)), key=lambda i: abs(last[i]))]]
        explanation = (
            f"LSTM score {score:.3f} >= {self.threshold:g}; most off baseline: {', '.join(metrics)}"
            if over
            else f"LSTM score {score:.3f} below {self.threshold:g}"
        )
        return DetectionResult(
            opened, score, self.severity(score), metrics if self.out else [], explanation
        )

    def severity(self, score: float) -> str:
        if score < self.threshold:
            return "none"
        if score >= 0.99:
            return "critical"
        return "major" if score >= 0.9 else "minor"

    def baseline(self, metric: str) -> tuple[float, float] | None:
        return self.ewma.baseline(metric)

    def state(self) -> dict[str, Any]:
        return {"detector": self.name, "window": list(self.window), "ewma": self.ewma.state()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        if state.get("detector") != self.name:
            raise ValueError(f"state is for detector {state.get('detector')!r}, not 'lstm'")
        self.ewma.load_state(state["ewma"])
        rows = [[float(v) for v in row] for row in state["window"]]
        if any(len(row) != len(self.features) for row in rows) and self.session is not None:
            raise ValueError("saved window does not match the model's features")
        self.window = deque(rows, maxlen=self.window_size)

    def status(self) -> str:
        if self.missing:
            return (
                f"model loaded but not run: steps lack {', '.join(self.missing[:4])}; "
                f"judging per metric with its ewma ({self.ewma.status()})"
            )
        if self.session is None:
            return f"fallback to ewma: {self.fallback_reason}; ewma {self.ewma.status()}"
        if not self.warm():
            needed = self.ewma.warmup + 1 if self.residuals else self.window_size
            return f"model loaded; warming up: {len(self.window)} of {needed} steps"
        return f"ready: model {self.model_path.name}, threshold {self.threshold:g}"


def _factory(**options: Any) -> Detector:
    return LstmDetector(**options)


@hookimpl(trylast=True)
def register_detectors(register: Callable[[str, DetectorFactory], None]) -> None:
    register("lstm", _factory)


__all__ = ["LstmDetector"]
