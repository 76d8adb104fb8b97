"""scale_consumers: set the replicas of a consumer Deployment through the Kubernetes
scale subresource, with the official client.

Options: `deployments` (source -> Deployment name; "*" for any target), `namespace`,
`step` (replicas added per run, default 1), `max_replicas`, and how to reach the API:
`host` + `token` (+ `verify_ssl`), or `kubeconfig` (a file), or neither for in-cluster."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from helios.daemon.types import ActionContext, ActionError, ActionPlan, ActionResult, Criteria
from helios.plugins.actions import BaseAction, number


class ScaleConsumers(BaseAction):
    name = "scale_consumers"
    issue_kinds: tuple[str, ...] = ("high_latency", "system_failure", "missing_events")
    description = "add consumer replicas (Kubernetes Deployment scale subresource)"
    defaults = Criteria(120.0, 0.05, 0.6, 3.0)
    targets_sources = False

    def _deployment(self, target: str) -> str | None:
        deployments = self.options.get("deployments") or {}
        if not isinstance(deployments, Mapping):
            return None
        found = deployments.get(target) or deployments.get("*")
        if found is None and "-" in target:  # a pair "a-b": the first source's consumers
            found = deployments.get(target.split("-")[0])
        return str(found) if found else None

    def check(self, target: str, context: ActionContext) -> str | None:
        try:
            import kubernetes  # noqa: F401
        except ImportError:
            return "the kubernetes package is not installed"
        if self._deployment(target) is None:
            return f"actions.options.scale_consumers.deployments names no Deployment for {target!r}"
        return None

    def _api(self) -> Any:
        from kubernetes import client, config

        host = self.options.get("host")
        if host:
            configuration = client.Configuration()
            configuration.host = str(host)
            token = self.options.get("token")
            if token:
                configuration.api_key = {"authorization": str(token)}
                configuration.api_key_prefix = {"authorization": "Bearer"}
            configuration.verify_ssl = bool(self.options.get("verify_ssl", True))
            return client.AppsV1Api(client.ApiClient(configuration))
        if self.options.get("kubeconfig"):
            config.load_kube_config(config_file=str(self.options["kubeconfig"]))
        else:
            config.load_incluster_config()
        return client.AppsV1Api()

    async def plan(
        self, target: str, params: Mapping[str, str], context: ActionContext
    ) -> ActionPlan:
        self.require(target, context)
        name = self._deployment(target) or ""
        namespace = str(self.options.get("namespace", "default"))
        step = int(number(params, "step", float(self.options.get("step", 1))))
        ceiling = int(self.options.get("max_replicas", 20))
        api = self._api()
        try:
            scale = await asyncio.to_thread(api.read_namespaced_deployment_scale, name, namespace)
        except Exception as exc:
            raise ActionError(
                "target", f"cannot read {namespace}/{name} scale: {exc}", "precondition"
            ) from None
        current = int(scale.spec.replicas or 0)
        wanted = int(number(params, "replicas", float(min(current + step, ceiling))))
        if wanted > ceiling:
            raise ActionError(
                "params.replicas",
                f"{wanted} replicas is over max_replicas {ceiling}",
                "blast_radius",
            )
        return ActionPlan(
            self.name,
            target,
            f"scale {namespace}/{name} from {current} to {wanted} replicas",
            size=abs(wanted - current),
            details={"namespace": namespace, "deployment": name, "from": current, "to": wanted},
        )

    async def execute(self, plan: ActionPlan, context: ActionContext) -> ActionResult:
        d = plan.details
        api = self._api()
        body = {"spec": {"replicas": d["to"]}}
        result = await asyncio.to_thread(
            api.patch_namespaced_deployment_scale, d["deployment"], d["namespace"], body
        )
        replicas = int(result.spec.replicas or 0)
        return ActionResult(
            replicas == d["to"],
            f"{d['namespace']}/{d['deployment']} scaled to {replicas} replicas",
            {"replicas": replicas},
        )
