"""exec (a configured command), throttle_ingest and quarantine_event."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from collections.abc import Mapping

from helios.daemon.types import ActionContext, ActionError, ActionPlan, ActionResult, Criteria
from helios.plugins.actions import BaseAction, number


class Exec(BaseAction):
    """Runs `command` (a list: no shell). An argument that is exactly {target},
    {trace_id}, {decision_id} or {diagnosis} becomes that value, as one argv item of its
    own; a placeholder inside a longer argument is refused (a shell would parse it);
    every other argument is passed as written.
    Targets come from `targets` (default: the sources and "all"). The command runs in
    its own process group, killed whole on timeout or shutdown, and dies with heliosd
    (PR_SET_PDEATHSIG). Exit status 0 is success."""

    name = "exec"
    issue_kinds: tuple[str, ...] = ("*",)
    description = "run the configured command"
    defaults = Criteria(60.0, 0.05, 0.5, 2.0)
    targets_sources = False

    def _targets(self, context: ActionContext) -> list[str]:
        configured = self.options.get("targets")
        if isinstance(configured, list):
            return [str(t) for t in configured]
        return [*context.runtime.sources, "all"]

    def check(self, target: str, context: ActionContext) -> str | None:
        command = self.options.get("command")
        if not command or not isinstance(command, list):
            return "actions.options.exec.command is not set (a list of arguments)"
        for i, arg in enumerate(command):
            text = str(arg)
            if text not in PLACEHOLDERS and any(p in text for p in PLACEHOLDERS):
                return (
                    f"actions.options.exec.command[{i}] = {text!r}: a placeholder must be a "
                    f"whole argument ({', '.join(PLACEHOLDERS)}); values are passed as argv "
                    "items of their own, never inside a string a shell would parse"
                )
        allowed = self._targets(context)
        if target not in allowed:
            return (
                f"target {target!r} is not one exec may run for (actions.options.exec.targets: "
                f"{', '.join(allowed)})"
            )
        return None

    async def plan(
        self, target: str, params: Mapping[str, str], context: ActionContext
    ) -> ActionPlan:
        problem = self.check(target, context)
        if problem:
            raise ActionError("target", problem)
        values = {
            "{target}": target,
            "{trace_id}": params.get("trace_id", ""),
            "{decision_id}": params.get("decision_id", ""),
            "{diagnosis}": params.get("diagnosis", ""),
        }
        argv = [values.get(str(a), str(a)) for a in self.options["command"]]
        return ActionPlan(
            self.name, target, f"run {' '.join(argv)}", size=1, details={"argv": argv}
        )

    async def execute(self, plan: ActionPlan, context: ActionContext) -> ActionResult:
        argv = plan.details["argv"]
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,  # its own process group: killed whole
            preexec_fn=_die_with_parent,
        )
        RUNNING.add(process.pid)
        try:
            output, _ = await process.communicate()
        except asyncio.CancelledError:  # the policy's timeout, or heliosd stopping
            _kill_group(process.pid)
            await process.wait()
            raise
        finally:
            RUNNING.discard(process.pid)
        text = output.decode(errors="replace")[-500:]
        return ActionResult(
            process.returncode == 0,
            f"{argv[0]} exited with {process.returncode}",
            {"exit_status": process.returncode, "output": text},
        )


PLACEHOLDERS = ("{target}", "{trace_id}", "{decision_id}", "{diagnosis}")
RUNNING: set[int] = set()  # process groups of exec commands still running


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _die_with_parent() -> None:  # in the child, before exec: SIGKILL when heliosd dies
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


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
