"""The safety policy under which recovery actions run, and per-source circuit breakers.

Policy: automation mode (observe | approve | auto, overridable per action), per-action
cooldown (per target), concurrency and hourly rate limits, a blast-radius cap, timeouts
and retries with backoff. Its counters live in `<data_dir>/decisions/policy.json`,
written atomically on every change, so a restart keeps cooldowns and limits.

Breakers: closed -> open when a source's failure ratio (expected copies it did not
deliver) over the last `window_seconds` reaches `failure_threshold` with at least
`min_volume` expected copies; open -> half-open after `open_seconds`; half-open ->
closed when the ratio is back under the threshold, else open again. The daemon checks
them every second, so a breaker trips within about a second of the threshold."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helios.daemon.domain import BREAKER_SETTINGS, MODES, AutomationMode, BreakerState
from helios.daemon.files import write_json
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["MODES", "ActionSettings", "Breaker", "Breakers", "PolicyState", "parse_settings"]


class ActionSettings(BaseModel):
    """Policy keys of `[actions.options.<name>]`; other keys go to the action."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    enabled: bool = True
    automation: AutomationMode | None = None  # None: decision.automation
    cooldown_seconds: float = Field(60.0, ge=0)
    max_concurrent: int = Field(1, ge=1)
    max_per_hour: int = Field(30, ge=1)
    blast_radius: int = Field(10_000, ge=0)
    timeout_seconds: float = Field(30.0, gt=0)
    retries: int = Field(2, ge=0)
    backoff_seconds: float = Field(1.0, ge=0)


def parse_settings(name: str, options: Mapping[str, Any]) -> ActionSettings:
    try:
        return ActionSettings.model_validate(dict(options))
    except ValidationError as exc:
        problems = "; ".join(
            f"actions.options.{name}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors()
        )
        raise ValueError(problems) from None


class PolicyState:
    """The durable part of the policy: modes, when each action last ran on each target,
    runs in the last hour, running executions, manual weights."""

    def __init__(self, data_dir: str) -> None:
        self.path = Path(data_dir) / "decisions" / "policy.json"
        self.mode_override: str | None = None  # set by SetAutomationMode, beats config
        self.action_modes: dict[str, str] = {}
        self.last_run: dict[str, float] = {}  # "action|target" -> start time
        self.starts: dict[str, list[float]] = {}  # action -> start times in the last hour
        self.running: dict[str, str] = {}  # execution id -> action
        self.weights: dict[str, float] | None = None  # manual weights (SetWeights)
        self.interrupted: list[str] = []  # running when the daemon stopped
        self.load_note = ""

    def open(self) -> None:
        """Read the saved policy back (start-up)."""
        if not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self.mode_override = data.get("mode_override")
            self.action_modes = dict(data.get("action_modes", {}))
            self.last_run = {k: float(v) for k, v in data.get("last_run", {}).items()}
            self.starts = {k: [float(t) for t in v] for k, v in data.get("starts", {}).items()}
            self.weights = data.get("weights")
            # Executions cannot survive a restart: they were interrupted; free their slots.
            self.interrupted = list(data.get("running", {}))
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            self.load_note = f"{self.path} not restored ({exc}); starting with a clean policy"
        self.running = {}

    def save(self) -> None:
        data = {
            "mode_override": self.mode_override,
            "action_modes": self.action_modes,
            "last_run": self.last_run,
            "starts": self.starts,
            "running": self.running,
            "weights": self.weights,
        }
        write_json(self.path, data)

    def mode(self, action: str, settings: ActionSettings, default: str) -> str:
        if action in self.action_modes:
            return self.action_modes[action]
        if settings.automation is not None:
            return settings.automation
        return self.mode_override or default

    def refusal(self, action: str, target: str, settings: ActionSettings, now: float) -> str | None:
        """Why the policy will not start `action` on `target` now, or None."""
        if not settings.enabled:
            return f"{action} is disabled (actions.options.{action}.enabled)"
        last = self.last_run.get(f"{action}|{target}")
        if last is not None and now - last < settings.cooldown_seconds:
            left = settings.cooldown_seconds - (now - last)
            return f"cooldown: {action} ran on {target} {now - last:.0f} s ago; {left:.0f} s left"
        running = sum(1 for a in self.running.values() if a == action)
        if running >= settings.max_concurrent:
            return f"concurrency: {running} of {settings.max_concurrent} {action} runs in progress"
        recent = [t for t in self.starts.get(action, []) if now - t < 3600.0]
        if len(recent) >= settings.max_per_hour:
            most = settings.max_per_hour
            return f"rate limit: {len(recent)} {action} runs in the last hour (max {most})"
        return None

    def started(self, execution_id: str, action: str, target: str, now: float) -> None:
        self.running[execution_id] = action
        self.last_run[f"{action}|{target}"] = now
        self.starts[action] = [t for t in self.starts.get(action, []) if now - t < 3600.0] + [now]
        self.save()

    def finished(self, execution_id: str) -> None:
        if self.running.pop(execution_id, None) is not None:
            self.save()


class BreakerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    failure_threshold: float = Field(0.5, gt=0, le=1)
    min_volume: int = Field(20, ge=1)
    window_seconds: float = Field(60.0, gt=0)
    open_seconds: float = Field(120.0, gt=0)


@dataclass
class Breaker:
    source: str
    state: BreakerState = BreakerState.CLOSED
    forced: bool = False  # set by hand (SetBreaker / an action): no automatic change
    since: float = 0.0
    reason: str = ""
    trips: int = 0
    ratio: float = 0.0
    volume: int = 0
    samples: deque[tuple[float, int, int]] = field(default_factory=lambda: deque(maxlen=4096))


class Breakers:
    """Per-source breakers fed from the reconciler's per-source expected/delivered."""

    def __init__(self, sources: list[str], settings: BreakerSettings) -> None:
        self.settings = settings
        self.breakers = {s: Breaker(s) for s in sources}

    def state(self, source: str) -> BreakerState:
        return self.breakers[source].state

    def set(self, source: str, state: str, reason: str, now: float) -> Breaker:
        """By hand: "open" or "closed" hold until changed; "auto" hands control back."""
        b = self.breakers[source]
        if state == "auto":
            b.forced = False
            b.reason = f"automatic again ({reason})"
            return b
        if state not in BREAKER_SETTINGS:
            raise ValueError(f"state must be {', '.join(BREAKER_SETTINGS)}, got {state!r}")
        if state != b.state:
            b.since = now
            if state == "open":
                b.trips += 1
        b.state = BreakerState.OPEN if state == "open" else BreakerState.CLOSED
        b.forced = True
        b.reason = reason
        return b

    def observe(self, now: float, counters: Mapping[str, tuple[int, int]]) -> list[Breaker]:
        """Feed cumulative (expected, delivered) per source; returns breakers that changed."""
        s = self.settings
        changed = []
        for source, (expected, delivered) in counters.items():
            b = self.breakers[source]
            b.samples.append((now, expected, delivered))
            while b.samples and now - b.samples[0][0] > s.window_seconds:
                b.samples.popleft()
            _, e0, d0 = b.samples[0]
            volume = expected - e0
            failed = volume - (delivered - d0)
            b.volume = volume
            b.ratio = failed / volume if volume > 0 else 0.0
            if b.forced:
                continue
            bad = volume >= s.min_volume and b.ratio >= s.failure_threshold
            before = b.state
            if b.state is BreakerState.CLOSED and bad:
                b.state, b.trips = BreakerState.OPEN, b.trips + 1
                b.reason = (
                    f"{b.ratio:.0%} of {volume} expected copies failed in {s.window_seconds:g} s"
                )
            elif b.state is BreakerState.OPEN and now - b.since >= s.open_seconds:
                b.state, b.reason = BreakerState.HALF_OPEN, "probing after open_seconds"
                b.samples.clear()  # judge the probe on what happens from now on
                b.samples.append((now, expected, delivered))
            elif b.state is BreakerState.HALF_OPEN and volume >= s.min_volume:
                if bad:
                    b.state, b.trips = BreakerState.OPEN, b.trips + 1
                    b.reason = f"still failing: {b.ratio:.0%}"
                else:
                    b.state, b.reason = BreakerState.CLOSED, f"recovered: {b.ratio:.0%} failed"
            if b.state != before:
                b.since = now
                changed.append(b)
        return changed
