"""open_breaker / close_breaker: the per-source circuit breaker, by hand."""

from __future__ import annotations

from helios.daemon.types import ActionContext, ActionPlan, ActionResult, Criteria
from helios.plugins.actions import BaseAction


class OpenBreaker(BaseAction):
    name = "open_breaker"
    issue_kinds: tuple[str, ...] = (
        "source_degraded",
        "missing_events",
        "duplicate_storm",
        "inconsistent_payloads",
    )
    description = "open the source's circuit breaker: no recovery traffic goes through it"
    defaults = Criteria(10.0, 0.3, 0.7, 1.0)

    def check(self, target: str, context: ActionContext) -> str | None:
        problem = super().check(target, context)
        if problem is None and context.runtime.breaker_state(target) == "open":
            return f"the breaker of {target} is open already"
        return problem

    async def execute(self, plan: ActionPlan, context: ActionContext) -> ActionResult:
        context.runtime.set_breaker(plan.target, "open", "open_breaker action")
        return ActionResult(True, f"breaker of {plan.target} opened")


class CloseBreaker(BaseAction):
    name = "close_breaker"
    issue_kinds: tuple[str, ...] = ("*",)
    description = "close the source's circuit breaker again"
    defaults = Criteria(5.0, 0.05, 0.6, 1.0)

    def check(self, target: str, context: ActionContext) -> str | None:
        problem = super().check(target, context)
        if problem is None and context.runtime.breaker_state(target) == "closed":
            return f"the breaker of {target} is closed already"
        return problem

    async def execute(self, plan: ActionPlan, context: ActionContext) -> ActionResult:
        context.runtime.set_breaker(plan.target, "closed", "close_breaker action")
        return ActionResult(True, f"breaker of {plan.target} closed")
