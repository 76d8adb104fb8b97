"""The operator's commands: pause and resume sources, trigger, approve and reject
actions, set automation modes, breakers and weights. Every front-end (gRPC, the
console) calls these; each checks its input and raises RequestError naming the field."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from helios.daemon import logs
from helios.daemon.audit import Alternative, Decision, Execution
from helios.daemon.domain import MODES, DecisionStatus, Diagnosis
from helios.daemon.errors import ErrorCode, RequestError
from helios.daemon.identity import caller
from helios.daemon.readmodels import BreakerView, ReadModels, SourceStatus
from helios.daemon.tenants import check_tenant
from helios.daemon.types import CRITERIA, ActionError
from helios.daemon.webhooks import WebReply

# Parameters heliosd sets for every decision (Executor.params): a caller cannot set them.
RESERVED_PARAMS = ("trace_id", "decision_id", "diagnosis")

if TYPE_CHECKING:
    from helios.daemon.app import Daemon

F = TypeVar("F", bound=Callable[..., Any])


def audited(action: str, target: Callable[..., str]) -> Callable[[F], F]:
    """Record the command in the audit log with its result (ok, or refused and why)."""

    def wrap(method: F) -> F:
        if inspect.iscoroutinefunction(method):

            @functools.wraps(method)
            async def run_async(self: Operator, *args: Any, **kwargs: Any) -> Any:
                what = target(*args, **kwargs)
                try:
                    result = await method(self, *args, **kwargs)
                except RequestError as exc:
                    self._d.auditlog.record(action, what, f"refused: {exc}")
                    raise
                self._d.auditlog.record(action, what)
                return result

            return run_async  # type: ignore[return-value]

        @functools.wraps(method)
        def run(self: Operator, *args: Any, **kwargs: Any) -> Any:
            what = target(*args, **kwargs)
            try:
                result = method(self, *args, **kwargs)
            except RequestError as exc:
                self._d.auditlog.record(action, what, f"refused: {exc}")
                raise
            self._d.auditlog.record(action, what)
            return result

        return run  # type: ignore[return-value]

    return wrap


def _trigger_target(
    action: str, target: str, params: Any, dry_run: bool, by: str, force: bool = False
) -> str:
    flags = (" dry-run" if dry_run else "") + (" FORCED" if force else "")
    return f"{action}({target}){flags}"


class Operator:
    def __init__(self, daemon: Daemon, reads: ReadModels) -> None:
        self._d = daemon
        self._reads = reads

    # ---- sources -------------------------------------------------------------------
    @audited("pause_source", lambda source: source)
    def pause_source(self, source: str) -> SourceStatus:
        self._require("source", source)
        self._d.runtime.pause_source(source)
        return self._reads.source(source)

    @audited("resume_source", lambda source: source)
    def resume_source(self, source: str) -> SourceStatus:
        self._require("source", source)
        self._d.runtime.resume_source(source)
        return self._reads.source(source)

    @audited("set_breaker", lambda source, state, reason: f"{source} {state}")
    def set_breaker(self, source: str, state: str, reason: str) -> BreakerView:
        self._require("source", source)
        self._d.runtime.set_breaker(source, state, reason)
        return self._reads.breaker_view(source)

    @audited("replay_dead_letters", lambda ids: ",".join(str(i) for i in ids))
    async def replay_dead_letters(self, ids: Sequence[int]) -> list[tuple[int, WebReply]]:
        """Each dead letter through its input again; NOT_FOUND / FAILED_PRECONDITION
        for an unknown or queue-pulled one, before any is replayed."""
        webhooks = self._d.webhooks
        for letter_id in ids:
            letter = webhooks.deadletters.get(letter_id)
            if letter is None or letter.method == "PULL":
                await webhooks.replay(letter_id)  # raises the error naming it
        return [(i, (await webhooks.replay(i))[1]) for i in ids]

    # ---- the loop's policy ---------------------------------------------------------
    @audited("set_mode", lambda mode, action="": f"{action or 'default'} {mode or '(cleared)'}")
    def set_mode(self, mode: str, action: str = "") -> tuple[str, dict[str, str]]:
        """The default automation mode, or one action's ("" clears the action's own).
        Returns the default mode and the per-action modes now in force."""
        loop = self._d.loop
        if mode not in MODES and not (action and mode == ""):
            raise RequestError("mode", f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        policy = loop.policy
        if action:
            if action not in loop.planner.entries:
                raise RequestError("action", f"unknown action {action!r}", ErrorCode.NOT_FOUND)
            if mode:
                policy.action_modes[action] = mode
            else:
                policy.action_modes.pop(action, None)
        else:
            policy.mode_override = mode
        policy.save()
        return self._reads.automation_mode(), self._reads.action_modes()

    @audited("set_weights", lambda weights: str(dict(weights or {})) or "computed")
    def set_weights(self, weights: Mapping[str, float] | None) -> tuple[str, dict[str, float]]:
        """Manual criteria weights, or None/empty to hand back to the weighting method."""
        planner = self._d.loop.planner
        values = planner.set_weights(weights)
        return planner.weights_note, values

    @audited("set_log_level", lambda component, level: f"{component}={level}")
    def set_log_level(self, component: str, level: str) -> tuple[str, dict[str, str]]:
        """One component's log level, now; returns the level it had and all of them."""
        previous = logs.set_level(component, level)
        return previous, logs.levels()

    # ---- decisions -----------------------------------------------------------------
    @audited("approve", lambda decision_id, by: decision_id)
    async def approve(self, decision_id: str, by: str) -> Decision:
        executor = self._d.loop.executor
        async with executor.deciding:
            d = executor.pending(decision_id)
            now = self._d.clock.now()
            d.decided_by = by or "operator"
            d.span(now, "policy", f"approved by {d.decided_by}")
            entry = self._d.loop.planner.entries[d.chosen]
            refusal = self._d.loop.policy.refusal(d.chosen, d.target, entry.settings, now)
            if refusal:
                return executor.settle(d, DecisionStatus.NOT_EXECUTED, f"approved, but {refusal}")
            d.reason = f"approved by {d.decided_by}"
            with contextlib.suppress(ActionError):  # recorded on the decision
                await executor.execute(d)
            return d

    @audited("reject", lambda decision_id, by, reason: decision_id)
    def reject(self, decision_id: str, by: str, reason: str) -> Decision:
        executor = self._d.loop.executor
        d = executor.pending(decision_id)
        text = f"rejected by {by or 'operator'}" + (f": {reason}" if reason else "")
        return executor.settle(d, DecisionStatus.REJECTED, text)

    @audited("trigger", _trigger_target)
    async def trigger(
        self,
        action: str,
        target: str,
        params: Mapping[str, str],
        dry_run: bool,
        by: str,
        force: bool = False,
    ) -> tuple[Decision, Execution]:
        """An operator's request. Errors (ActionError) leave nothing executed. An action
        whose automation mode is observe runs only as a dry run, unless an admin forces
        it (recorded as forced)."""
        async with self._d.loop.executor.deciding:
            return await self._trigger(action, target, params, dry_run, by, force)

    async def _trigger(
        self,
        action: str,
        target: str,
        params: Mapping[str, str],
        dry_run: bool,
        by: str,
        force: bool,
    ) -> tuple[Decision, Execution]:
        loop = self._d.loop
        planner, executor = loop.planner, loop.executor
        if not action:
            raise ActionError("action", "action is empty")
        entry = planner.entries.get(action)
        if entry is None:
            raise ActionError(
                "action",
                f"unknown action {action!r}; known: {', '.join(sorted(planner.entries))}",
                ErrorCode.NOT_FOUND,
            )
        if not target:
            raise ActionError("target", "target is empty")
        problem = entry.action.check(target, planner.context(action))
        if problem is not None:
            code = ErrorCode.NOT_FOUND if "not a source" in problem else ErrorCode.PRECONDITION
            raise ActionError("target", problem, code)
        reserved = sorted(set(params) & set(RESERVED_PARAMS))
        if reserved:
            raise ActionError(
                "params",
                f"{', '.join(reserved)} are set by heliosd for every decision; "
                "a caller cannot set them",
            )
        who = caller()
        if force and who is not None and not who.may("admin"):
            raise ActionError(
                "force",
                f"forcing an action needs the admin permission; {who.name} has role {who.role}",
                ErrorCode.PERMISSION,
            )
        if not dry_run and not force and planner.mode(action) == "observe":
            raise ActionError(
                "action",
                f"{action} is in observe mode: heliosd decides but does not act. Dry-run it, "
                "set its mode (helios heal mode), or force it (admin)",
                ErrorCode.PRECONDITION,
            )
        now = self._d.clock.now()
        if not dry_run:
            refusal = loop.policy.refusal(action, target, entry.settings, now)
            if refusal:
                raise ActionError("action", refusal, ErrorCode.PRECONDITION)
        d = executor.new_decision()  # not saved until the plan holds
        d.decided_by = by or "operator"
        d.chosen, d.target, d.mode = action, target, "manual"
        d.diagnosis = replace(
            Diagnosis.manual(target), tenant=check_tenant(params.get("tenant", ""))
        )
        params = {**params, **executor.params(d)}  # heliosd's own values win
        plan = await planner.plan(entry, target, params)  # raises before anything is recorded
        if plan.noop and not dry_run:
            raise ActionError("target", f"nothing to do: {plan.summary}", ErrorCode.PRECONDITION)
        criteria = dict(zip(CRITERIA, entry.criteria().row(), strict=True))
        d.alternatives = [Alternative(action, target, criteria, True, "", 1.0, 1)]
        d.span(
            now,
            "decision",
            f"{action}({target}) requested by {d.decided_by}"
            + (" (dry run)" if dry_run else "")
            + (" (FORCED past observe)" if force and planner.mode(action) == "observe" else "")
            + f": {plan.summary}",
        )
        x = await executor.execute(d, params, dry_run, plan)
        assert x is not None  # an operator's refusal raises instead
        return d, x

    @staticmethod
    def _require(field: str, value: str) -> None:
        if not value:
            raise RequestError(field, f"{field} is empty")
