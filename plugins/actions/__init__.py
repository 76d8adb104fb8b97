"""Built-in recovery actions, one module per family, and `BaseAction` for plugin authors.

An action says which diagnosis kinds it fixes, checks its prerequisites against what is
configured and healthy, plans (what it would do, how big), and executes. Whether it
worked is not its call: the decision loop verifies by watching reconciliation."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from helios.daemon.types import (
    CRITERIA,
    ActionContext,
    ActionError,
    ActionPlan,
    ActionResult,
    Criteria,
)


class BaseAction(ABC):
    """Defaults for an action: criteria from the class overridden by options, no
    prerequisite beyond a known source target, and a plan that touches nothing.
    `execute` has no default: a subclass without one cannot be instantiated."""

    name = "base"
    issue_kinds: tuple[str, ...] = ("*",)
    description = ""
    defaults = Criteria(60.0, 0.1, 0.5, 1.0)
    targets_sources = True  # the target must be a configured source
    policy_defaults: Mapping[str, Any] = {}
    follows_up = False

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = dict(options)
        overrides = {k: float(options[k]) for k in CRITERIA if k in options}
        if overrides:
            self.defaults = replace(self.defaults, **overrides)

    def check(self, target: str, context: ActionContext) -> str | None:
        if self.targets_sources and target not in context.runtime.sources:
            return f"target {target!r} is not a source ({', '.join(context.runtime.sources)})"
        return None

    def require(self, target: str, context: ActionContext) -> None:
        """check() as an error, for plan()."""
        problem = self.check(target, context)
        if problem is not None:
            code = "not_found" if "is not a source" in problem else "precondition"
            raise ActionError("target", problem, code)

    async def plan(
        self, target: str, params: Mapping[str, str], context: ActionContext
    ) -> ActionPlan:
        self.require(target, context)
        return ActionPlan(self.name, target, f"{self.name} on {target}")

    @abstractmethod
    async def execute(self, plan: ActionPlan, context: ActionContext) -> ActionResult:
        """Do what `plan` says, or raise ActionError naming what stopped it."""


def number(params: Mapping[str, str], key: str, default: float) -> float:
    """A numeric request parameter, or ActionError naming it."""
    raw = params.get(key)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ActionError(f"params.{key}", f"{key} must be a number, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ActionError(f"params.{key}", f"{key} must be a finite number >= 0, got {raw!r}")
    return value
