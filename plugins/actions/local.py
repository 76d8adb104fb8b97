"""exec (a configured command), throttle_ingest and quarantine_event."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from helios.daemon.types import ActionContext, ActionError, ActionPlan, ActionResult, Criteria
from helios.plugins.actions import BaseAction, number


class Exec(BaseAction):
    """Runs `command` (a list: no shell), with {target}, {trace_id} and {diagnosis}
    substituted in each argument; exit status 0 is success."""

    name = "exec"
    issue_kinds: tuple[str, ...] = ("*",)
    description = "run the configured command"
    defaults = Criteria(60.0, 0.05, 0.5, 2.0)
    targets_sources = False

    def check(self, target: str, context: ActionContext) -> str | None:
        command = self.options.get("command")
        if not command or not isinstance(command, list):
            return "actions.options.exec.command is not set (a list of arguments)"
        return None

    async def plan(
        self, target: str, params: Mapping[str, str], context: ActionContext
    ) -> ActionPlan:
        self.require(target, context)
        values = {
            "target": target,
            "trace_id": params.get("trace_id", ""),
            "diagnosis": params.get("diagnosis", ""),
        }
        argv = [str(a).format(**values) for a in self.options["command"]]
        return ActionPlan(
            self.name, target, f"run {' '.join(argv)}", size=1, details={"argv": argv}
        )

    async def execute(self, plan: ActionPlan, context: ActionContext) -> ActionResult:
        argv = plan.details["argv"]
        process = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        try:
            output, _ = await process.communicate()
        except asyncio.CancelledError:  # the policy's timeout
            process.kill()
            await process.wait()
            raise
        text = output.decode(errors="replace")[-500:]
        return ActionResult(
            process.returncode == 0,
            f"{argv[0]} exited with {process.returncode}",
            {"exit_status": process.returncode, "output": text},
        )


class ThrottleIngest(BaseAction):
    """Caps the copies/s HELIOS takes from a source ("all" for every source); beyond
    it publishers get RESOURCE_EXHAUSTED (backpressure, nothing dropped). per_second=0
    lifts the cap."""

    name = "throttle_ingest"
    issue_kinds: tuple[str, ...] = ("duplicate_storm", "system_failure")
    description = "cap the copies per second taken from a source (backpressure)"
    defaults = Criteria(30.0, 0.5, 0.5, 2.0)
    targets_sources = False

    def check(self, target: str, context: ActionContext) -> str | None:
        if target != "all" and target not in context.runtime.sources:
            return f"target {target!r} is not a source or 'all'"
        return None

    async def plan(
        self, target: str, params: Mapping[str, str], context: ActionContext
    ) -> ActionPlan:
        problem = self.check(target, context)
        if problem:
            raise ActionError("target", problem, "not_found")
        rate = number(params, "per_second", float(self.options.get("per_second", 1000.0)))
        summary = f"lift the cap on {target}" if rate == 0 else f"cap {target} at {rate:g} copies/s"
        return ActionPlan(self.name, target, summary, details={"per_second": rate})

    async def execute(self, plan: ActionPlan, context: ActionContext) -> ActionResult:
        rate = float(plan.details["per_second"])
        context.runtime.set_throttle(plan.target, rate or None)
        return ActionResult(True, plan.summary)


class QuarantineEvent(BaseAction):
    """Marks events as quarantined: one (`event_id` param) or every INCONSISTENT event
    naming the target source in the lookback. Quarantined events are flagged in
    GetEvent and the console for people to settle."""

    name = "quarantine_event"
    issue_kinds: tuple[str, ...] = ("inconsistent_payloads",)
    description = "quarantine events whose payloads disagree, for people to settle"
    defaults = Criteria(10.0, 0.01, 0.9, 1.0)

    async def plan(
        self, target: str, params: Mapping[str, str], context: ActionContext
    ) -> ActionPlan:
        self.require(target, context)
        if params.get("event_id"):
            ids = [params["event_id"]]
        else:
            lookback = float(self.options.get("lookback_seconds", 3600.0))
            since = number(params, "since", context.runtime.clock.now() - lookback)
            ids = await context.runtime.inconsistent_events(target, since, 1_000_000)
        return ActionPlan(
            self.name, target, f"quarantine {len(ids)} events", size=len(ids), details={"ids": ids}
        )

    async def execute(self, plan: ActionPlan, context: ActionContext) -> ActionResult:
        ids = plan.details["ids"]
        added = context.runtime.quarantine(ids, f"inconsistent payloads from {plan.target}")
        return ActionResult(True, f"{added} events quarantined", {"quarantined": added})
