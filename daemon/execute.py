"""Execute: a decision's plan run under the safety policy (cooldowns, limits, blast
radius, timeouts, retries with backoff), approvals and their expiry, and the record of
every verdict, including "decided, nothing executed" and why."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Coroutine, Mapping
from typing import Any

from helios.daemon.audit import AuditLog, Decision, Execution
from helios.daemon.clock import Clock
from helios.daemon.config import DecisionConfig
from helios.daemon.domain import DecisionStatus, ExecutionStatus, Verification
from helios.daemon.errors import ErrorCode
from helios.daemon.plan import Entry, Planner
from helios.daemon.safety import PolicyState
from helios.daemon.types import ActionError, ActionPlan, ActionResult
from helios.daemon.verify import Verifier

log = logging.getLogger("helios.execute")
RECENT = 500  # decisions looked at for approvals and follow-ups


class Executor:
    def __init__(
        self,
        config: DecisionConfig,
        planner: Planner,
        policy: PolicyState,
        audit: AuditLog,
        verifier: Verifier,
        clock: Clock,
    ) -> None:
        self.config = config
        self.planner = planner
        self.policy = policy
        self.audit = audit
        self.verifier = verifier
        self.clock = clock
        # Deciding (policy check, plan, start) is one step at a time: two cycles, or a
        # cycle and an operator, must not both pass a check before either starts.
        self.deciding = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def open(self) -> None:
        """Executions that were running when heliosd stopped are interrupted (start-up)."""
        for execution_id in self.policy.interrupted:
            x = self.audit.executions.get(execution_id)
            if x is not None and x.status is ExecutionStatus.RUNNING:
                x.status, x.error = ExecutionStatus.INTERRUPTED, "heliosd stopped while it ran"
                x.verification = Verification.FAILED
                self.audit.save_execution(x)
        if self.policy.interrupted:
            self.policy.save()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ---- decisions -----------------------------------------------------------------
    def new_decision(self, trace_id: str = "") -> Decision:
        return Decision(
            id=self.audit.next_id("d"),
            trace_id=trace_id or uuid.uuid4().hex,  # 128 bits: an OpenTelemetry trace id
            created_at=self.clock.now(),
            method=self.config.method,
            weighting=self.planner.weights_note,
            weights=dict(self.planner.weights),
        )

    def settle(self, d: Decision, status: DecisionStatus, reason: str) -> Decision:
        """Record the policy's verdict on a decision that does not execute (now)."""
        d.status, d.reason = status, reason
        d.span(self.clock.now(), "policy", reason)
        self.audit.save_decision(d)
        return d

    def params(self, d: Decision) -> dict[str, str]:
        diagnosis = str(d.diagnosis) if d.diagnosis.diagnosed else ""
        found = {"trace_id": d.trace_id, "decision_id": d.id, "diagnosis": diagnosis}
        if d.diagnosis.tenant:  # the action works on that tenant's events only
            found["tenant"] = d.diagnosis.tenant
        return found

    def recent(self) -> list[Decision]:
        return list(self.audit.decisions.values())[-RECENT:]

    # ---- approvals -----------------------------------------------------------------
    def expire_approvals(self, now: float) -> int:
        expired = 0
        for d in self.recent():
            if d.status is DecisionStatus.PENDING_APPROVAL and now >= d.expires_at:
                self.settle(
                    d,
                    DecisionStatus.EXPIRED,
                    "approval expired: treated as rejected, nothing executed",
                )
                expired += 1
        return expired

    def pending_for(self, action: str, target: str, now: float) -> Decision | None:
        for d in reversed(self.recent()):
            if (
                d.status is DecisionStatus.PENDING_APPROVAL
                and d.expires_at > now
                and (d.chosen, d.target) == (action, target)
            ):
                return d
        return None

    def pending(self, decision_id: str) -> Decision:
        """The decision waiting for approval, or ActionError naming why it is not."""
        d = self.audit.decisions.get(decision_id)
        if d is None:
            raise ActionError("id", f"no decision {decision_id!r}", ErrorCode.NOT_FOUND)
        self.expire_approvals(self.clock.now())
        if d.status is not DecisionStatus.PENDING_APPROVAL:
            shown = d.status.value or "still being decided"
            raise ActionError(
                "id",
                f"decision {decision_id} is {shown}, not pending approval",
                ErrorCode.PRECONDITION,
            )
        return d

    # ---- execution -----------------------------------------------------------------
    async def execute(
        self,
        d: Decision,
        params: Mapping[str, str] | None = None,
        dry_run: bool = False,
        planned: ActionPlan | None = None,
    ) -> Execution | None:
        """Plan (unless `planned`) and start the decision's action. A refusal is recorded
        on the decision; for an operator's decision it is raised as ActionError too."""
        entry = self.planner.entries[d.chosen]
        now = self.clock.now()
        params = {**self.params(d), **(params or {})}
        by_operator = d.decided_by != "loop"
        try:
            plan = planned or await self.planner.plan(entry, d.target, params, d.diagnosis)
        except ActionError as exc:
            self.settle(d, DecisionStatus.NOT_EXECUTED, f"{exc.code}: {exc}")
            if by_operator:
                raise
            return None
        if plan.noop and not dry_run:
            self.settle(d, DecisionStatus.NOT_EXECUTED, f"nothing to do: {plan.summary}")
            if by_operator:
                raise ActionError("target", d.reason, ErrorCode.PRECONDITION)
            return None
        x = Execution(
            id=self.audit.next_id("x"),
            decision_id=d.id,
            trace_id=d.trace_id,
            action=entry.name,
            target=d.target,
            params={k: v for k, v in params.items() if not k.startswith("_")},
            dry_run=dry_run,
            plan=plan.summary,
            size=plan.size,
            started_at=now,
            detected_at=d.detected_at,
        )
        d.execution_ids.append(x.id)
        if dry_run:
            x.status, x.verification = ExecutionStatus.DRY_RUN, Verification.NOT_APPLICABLE
            x.finished_at = now
            x.result = f"dry run: would {plan.summary}"
            d.status, d.reason = DecisionStatus.DRY_RUN, x.result
            d.span(now, "execution", x.result)
            self.audit.save_execution(x)
            self.audit.save_decision(d)
            return x
        d.status = DecisionStatus.EXECUTED
        d.span(now, "execution", f"{x.id} started: {plan.summary}")
        self.policy.started(x.id, entry.name, d.target, now)
        self.audit.save_execution(x)
        self.audit.save_decision(d)
        self.spawn(self._run(d, x, entry, plan, params))
        return x

    async def _attempt(self, entry: Entry, plan: ActionPlan) -> ActionResult:
        # Timeouts are real seconds of the action's own work, whatever the clock's speed.
        return await asyncio.wait_for(
            entry.action.execute(plan, self.planner.context(entry.name)),
            entry.settings.timeout_seconds / self.clock.speed,
        )

    async def _run(
        self, d: Decision, x: Execution, entry: Entry, plan: ActionPlan, params: Mapping[str, str]
    ) -> None:
        settings = entry.settings
        result: ActionResult | None = None
        timed_out = False
        try:
            for attempt in range(settings.retries + 1):
                x.attempts = attempt + 1
                timed_out = False  # the last attempt's fate names the status
                if attempt:
                    await self.clock.sleep(settings.backoff_seconds * 2 ** (attempt - 1))
                    plan = await self.planner.plan(entry, x.target, params, d.diagnosis)
                try:
                    result = await self._attempt(entry, plan)
                except TimeoutError:
                    timed_out = True
                    x.error = (
                        f"attempt {attempt + 1} timed out after {settings.timeout_seconds:g} s"
                    )
                    result = None
                    continue
                except ActionError as exc:
                    x.error = f"attempt {attempt + 1}: {exc}"
                    result = None
                    break
                except Exception as exc:
                    log.exception("action %s failed", entry.name)
                    x.error = f"attempt {attempt + 1}: {type(exc).__name__}: {exc}"
                    result = None
                    continue
                if result.ok:
                    break
                x.error = f"attempt {attempt + 1}: {result.summary}"
        finally:
            self.policy.finished(x.id)
        now = self.clock.now()
        x.finished_at = now
        if result is not None:
            x.result, x.details = result.summary, dict(result.details)
        if result is None or not result.ok:
            x.status = ExecutionStatus.TIMED_OUT if timed_out else ExecutionStatus.FAILED
            x.verification = Verification.FAILED
            x.verification_detail = "the action did not complete"
            d.span(now, "execution", f"{x.id} {x.status}: {x.error}")
            self.verifier.learn(entry, x, False)
        else:
            x.status, x.error = ExecutionStatus.SUCCEEDED, ""
            d.span(now, "execution", f"{x.id} done: {result.summary}")
            self.verifier.start(d, x, result)
        self.audit.save_execution(x)
        self.audit.save_decision(d)
