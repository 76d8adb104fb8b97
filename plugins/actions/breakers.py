"""open_breaker / close_breaker: the per-source circuit breaker, by hand."""

from __future__ import annotations

from helios.daemon.types import ActionContext, ActionPlan, ActionResult, Criteria
from helios.plugins.actions import BaseAction


class _SetBreaker(BaseAction):
    state = "open"

    def check(self, target: str, context: ActionContext) -> str | None:
        problem = super().check(target, context)
        if problem is None and context.runtime.breaker_state(target) == self.state:
            return f"the breaker of {target} is {self.state} already"
        return problem

    async def execute(self, plan: ActionPlan, context: ActionContext) -> ActionResult:
        context.runtime.set_breaker(plan.target, self.state, f"{self.name} action")
        return ActionResult(True, f"breaker of {plan.target} set {self.state}")


class OpenBreaker(_SetBreaker):
    name = "open_breaker"
    issue_kinds: tuple[str, ...] = (
        "source_degraded",
        "missing_events",
        "duplicate_storm",
        "inconsistent_payloads",
    )
    description = "open the source's circuit breaker: no recovery traffic goes through it"
    defaults = Criteria(10.0, 0.3, 0.7, 1.0)
    state = "open"


class CloseBreaker(_SetBreaker):
    name = "close_breaker"
    issue_kinds: tuple[str, ...] = ("*",)
    description = "close the source's circuit breaker again"
    defaults = Criteria(5.0, 0.05, 0.6, 1.0)
    state = "closed"
