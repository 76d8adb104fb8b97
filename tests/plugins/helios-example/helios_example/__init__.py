"""An outside HELIOS plugin, written the way a third party would write one."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import orjson
import pluggy

hookimpl = pluggy.HookimplMarker("helios")
seen_outcomes: list[Any] = []
seen_anomalies: list[Any] = []
seen_results: list[Any] = []


class FixedSource:
    """Publishes `count` events, one copy per configured source, once started."""

    def __init__(self, context: Any, options: Mapping[str, Any]) -> None:
        self.context = context
        self.count = int(options.get("count", 10))
        self.prefix = str(options.get("prefix", "example"))
        self.paused: set[str] = set()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.run())

    async def run(self) -> None:
        copies = [
            (f"{self.prefix}-{i}", source, "example.event", 0.0, orjson.dumps({"i": i}))
            for i in range(self.count)
            for source in self.context.sources
            if source not in self.paused
        ]
        await self.context.publish(copies)

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()

    def pause(self, source: str) -> None:
        self.paused.add(source)

    def resume(self, source: str) -> None:
        self.paused.discard(source)

    def delivers(self, source: str) -> bool:
        return True

    def replays(self, source: str) -> bool:
        return False

    async def replay(self, source: str, copies: Any) -> int:
        raise RuntimeError("FixedSource cannot replay")


class PageOnCall:
    """A recovery action: pages whoever `who` names (here: remembers it)."""

    name = "example_page"
    issue_kinds: tuple[str, ...] = ("missing_events",)
    description = "page the on-call engineer"
    policy_defaults: Mapping[str, Any] = {"cooldown_seconds": 300.0}
    follows_up = False

    def __init__(self, options: Mapping[str, Any]) -> None:
        from helios.daemon.types import Criteria

        self.options = options
        self.defaults = Criteria(600.0, 0.0, 0.5, 3.0)
        self.paged: list[str] = []

    def check(self, target: str, context: Any) -> str | None:
        return None

    async def plan(self, target: str, params: Mapping[str, str], context: Any) -> Any:
        from helios.daemon.types import ActionPlan

        who = params.get("who", str(self.options.get("who", "on-call")))
        return ActionPlan(self.name, target, f"page {who} about {target}", 1, {"who": who})

    async def execute(self, plan: Any, context: Any) -> Any:
        from helios.daemon.types import ActionResult

        self.paged.append(plan.details["who"])
        return ActionResult(True, f"paged {plan.details['who']}")


@hookimpl
def register_sources(register: Callable[[str, Any], None]) -> None:
    register("example_source", FixedSource)


@hookimpl
def register_actions(register: Callable[[str, Any], None]) -> None:
    register("example_page", PageOnCall)


@hookimpl
def register_detectors(register: Callable[[str, Any], None]) -> None:
    register("example_threshold", lambda **options: None)


@hookimpl
def register_mcdm_methods(register: Callable[[str, Any], None]) -> None:
    register("example_first", lambda matrix, weights, types: [1.0] + [0.0] * (len(matrix) - 1))


@hookimpl
def register_weighting_methods(register: Callable[[str, Any], None]) -> None:
    register("example_equal", lambda matrix: [1.0 / len(matrix[0])] * len(matrix[0]))


@hookimpl
def register_index_backends(register: Callable[[str, Any], None]) -> None:
    # Shadowing the built-in "memory" is ignored: the plugin's own name is distinct.
    register("example_null", lambda context: None)


@hookimpl
def on_outcome(outcome: Any) -> None:
    seen_outcomes.append(outcome)


@hookimpl
def on_anomaly(anomaly: Any) -> None:
    seen_anomalies.append(anomaly)


@hookimpl
def on_action_result(result: Any) -> None:
    seen_results.append(result)
