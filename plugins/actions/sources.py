"""restart_source and failover_source."""

from __future__ import annotations

from collections.abc import Mapping

from helios.daemon.types import ActionContext, ActionPlan, ActionResult, Criteria
from helios.plugins.actions import BaseAction


class RestartSource(BaseAction):
    name = "restart_source"
    issue_kinds: tuple[str, ...] = (
        "missing_events",
        "source_degraded",
        "high_latency",
        "duplicate_storm",
    )
    description = "stop and start the source inputs that deliver the source"
    defaults = Criteria(90.0, 0.2, 0.6, 2.0)

    def check(self, target: str, context: ActionContext) -> str | None:
        problem = super().check(target, context)
        if problem is None and not context.runtime.source_inputs(target):
            return f"no running source input delivers {target}"
        return problem

    async def plan(
        self, target: str, params: Mapping[str, str], context: ActionContext
    ) -> ActionPlan:
        self.require(target, context)
        inputs = context.runtime.source_inputs(target)
        return ActionPlan(
            self.name, target, f"restart inputs {', '.join(inputs)}", size=len(inputs)
        )

    async def execute(self, plan: ActionPlan, context: ActionContext) -> ActionResult:
        restarted = await context.runtime.restart_source(plan.target)
        return ActionResult(
            bool(restarted), f"restarted {', '.join(restarted) or 'nothing'}", {"inputs": restarted}
        )


class FailoverSource(BaseAction):
    """Stop expecting the source and stop publishing through it: events are reconciled
    on the healthy sources alone until `restore=true` (or the source's breaker closes)."""

    name = "failover_source"
    issue_kinds: tuple[str, ...] = ("missing_events", "source_degraded", "high_latency")
    description = "stop expecting and publishing through a failed source; healthy ones carry on"
    defaults = Criteria(15.0, 0.4, 0.8, 4.0)

    def check(self, target: str, context: ActionContext) -> str | None:
        problem = super().check(target, context)
        if problem is None and len(context.runtime.sources) < 2:
            return "failover needs another source to carry the traffic"
        return problem

    async def plan(
        self, target: str, params: Mapping[str, str], context: ActionContext
    ) -> ActionPlan:
        self.require(target, context)
        restore = params.get("restore", "false").lower() in ("1", "true", "yes")
        verb = "restore" if restore else "fail over from"
        return ActionPlan(self.name, target, f"{verb} {target}", details={"restore": restore})

    async def execute(self, plan: ActionPlan, context: ActionContext) -> ActionResult:
        restore = bool(plan.details.get("restore"))
        context.runtime.set_failover(plan.target, not restore)
        word = "restored" if restore else "failed over; no longer expected"
        return ActionResult(True, f"{plan.target} {word}")
