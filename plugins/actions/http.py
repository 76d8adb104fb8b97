"""webhook (a runbook call) and notify (people), over HTTP."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from helios.daemon.types import ActionContext, ActionPlan, ActionResult, Criteria
from helios.plugins.actions import BaseAction


async def post(url: str, body: Mapping[str, Any], options: Mapping[str, Any]) -> httpx.Response:
    headers = {str(k): str(v) for k, v in (options.get("headers") or {}).items()}
    async with httpx.AsyncClient(timeout=float(options.get("timeout_seconds", 10.0))) as client:
        return await client.post(url, json=dict(body), headers=headers)


class Webhook(BaseAction):
    """POSTs {action, target, trace_id, decision_id, diagnosis, params} as JSON to `url`;
    a 2xx answer is success."""

    name = "webhook"
    issue_kinds: tuple[str, ...] = ("*",)
    description = "HTTP POST a runbook call to the configured URL"
    defaults = Criteria(300.0, 0.01, 0.5, 2.0)
    targets_sources = False

    def check(self, target: str, context: ActionContext) -> str | None:
        if not self.options.get("url"):
            return "actions.options.webhook.url is not set"
        return None

    async def plan(
        self, target: str, params: Mapping[str, str], context: ActionContext
    ) -> ActionPlan:
        self.require(target, context)
        body = {
            "action": "webhook",
            "target": target,
            "trace_id": params.get("trace_id", ""),
            "decision_id": params.get("decision_id", ""),
            "diagnosis": params.get("diagnosis", ""),
            "params": {k: v for k, v in params.items() if not k.startswith("_")},
        }
        return ActionPlan(
            self.name, target, f"POST to {self.options['url']}", size=1, details={"body": body}
        )

    async def execute(self, plan: ActionPlan, context: ActionContext) -> ActionResult:
        response = await post(str(self.options["url"]), plan.details["body"], self.options)
        ok = 200 <= response.status_code < 300
        return ActionResult(
            ok,
            f"POST {self.options['url']}: HTTP {response.status_code}",
            {"status": response.status_code, "body": response.text[:500]},
        )


class Notify(BaseAction):
    """Tells people: the console's notification feed and the log, and Slack-style
    {"text": ...} to `url` when one is set."""

    name = "notify"
    policy_defaults: Mapping[str, Any] = {
        "cooldown_seconds": 600.0
    }  # one message per issue, not a flood
    issue_kinds: tuple[str, ...] = ("*",)
    description = "tell people: console feed and log, and a chat webhook when configured"
    defaults = Criteria(900.0, 0.01, 0.3, 0.5)
    targets_sources = False

    async def plan(
        self, target: str, params: Mapping[str, str], context: ActionContext
    ) -> ActionPlan:
        text = params.get("message") or (
            f"HELIOS: {params.get('diagnosis') or 'an operator request'} on {target} "
            f"(trace {params.get('trace_id', '-')})"
        )
        return ActionPlan(self.name, target, f"notify: {text}", size=1, details={"text": text})

    async def execute(self, plan: ActionPlan, context: ActionContext) -> ActionResult:
        text = str(plan.details["text"])
        context.runtime.notify("warning", text)
        url = self.options.get("url")
        if not url:
            return ActionResult(True, "notified the console and the log")
        response = await post(str(url), {"text": text}, self.options)
        ok = 200 <= response.status_code < 300
        return ActionResult(ok, f"notified; POST {url}: HTTP {response.status_code}")
