"""replay_missing: re-publish stored copies to the source that lacks them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from helios.daemon.domain import IssueKind
from helios.daemon.types import ActionContext, ActionPlan, ActionResult, Criteria
from helios.plugins.actions import BaseAction, number


class ReplayMissing(BaseAction):
    """Every event declared MISSING from the target source (since `since`, default the
    last `lookback_seconds`; with `tenant`, that tenant's events only), not healed and
    not replayed before, is re-published through that source's publish path with the
    stored payload. Each copy is replayed once."""

    name = "replay_missing"
    policy_defaults: Mapping[str, Any] = {"cooldown_seconds": 30.0, "max_per_hour": 120}
    # Copies keep going missing until the fault ends: the loop replays them while the
    # incident lasts.
    follows_up = True
    issue_kinds: tuple[str, ...] = ("missing_events", "source_degraded")
    description = "re-publish stored copies of MISSING events through the source that lacks them"
    defaults = Criteria(20.0, 0.02, 0.9, 1.0)

    def check(self, target: str, context: ActionContext) -> str | None:
        problem = super().check(target, context)
        if problem:
            return problem
        runtime = context.runtime
        if not runtime.can_replay(target):
            return f"no running source input can publish through {target}"
        if runtime.breaker_state(target) == "open":
            return f"the circuit breaker of {target} is open"
        diagnosis = context.diagnosis
        if (
            diagnosis is not None
            and diagnosis.kind is IssueKind.SOURCE_DEGRADED
            and not any("missing_rate" in line for line in diagnosis.evidence)
        ):
            return f"the diagnosis names no missing copies from {target}"
        return None

    async def plan(
        self, target: str, params: Mapping[str, str], context: ActionContext
    ) -> ActionPlan:
        self.require(target, context)
        runtime = context.runtime
        lookback = float(self.options.get("lookback_seconds", 3600.0))
        since = number(params, "since", runtime.clock.now() - lookback)
        # One more than the cap: the policy must see that the cap is exceeded.
        limit = int(params.get("_limit", "1000000"))
        tenant = params.get("tenant", "")  # a tenant's incident: its events only
        copies = await runtime.missing_copies(target, since, limit, tenant)
        of = f" of tenant {tenant}" if tenant else ""
        return ActionPlan(
            self.name,
            target,
            f"replay {len(copies)} missing copies{of} to {target}",
            size=len(copies),
            details={"copies": copies, "since": since, "tenant": tenant},
            noop=not copies,
        )

    async def execute(self, plan: ActionPlan, context: ActionContext) -> ActionResult:
        copies = plan.details["copies"]
        if not copies:
            return ActionResult(True, f"nothing to replay to {plan.target}")
        runtime = context.runtime
        # Marked first: at most once, even if the publish path fails half way.
        runtime.mark_replayed(plan.target, [c[0] for c in copies])
        sent = await runtime.replay(plan.target, copies)
        return ActionResult(
            sent == len(copies),
            f"replayed {sent} of {len(copies)} copies to {plan.target}",
            {"replayed": sent, "planned": len(copies)},
            expect_copies=tuple((c[0], plan.target) for c in copies[:sent]),
        )
