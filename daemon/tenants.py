"""Tenants (docs/security.md, "Tenants"): a key scoped to a tenant publishes and reads
that tenant's events only, and nothing deployment-wide.

A tenant's events live under keys "TENANT<US>EVENT_ID" (the ASCII unit separator, which
no event id may contain): the reconciler, every index backend, the Bloom filters and the
outcome log keep tenants apart without knowing of them. The deployment's own events (no
tenant) keep their plain ids."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from helios.daemon.config import TENANT_PATTERN
from helios.daemon.errors import ErrorCode, RequestError
from helios.daemon.identity import caller
from helios.daemon.model import CopyIn

if TYPE_CHECKING:
    from helios.daemon.types import SourceContext

SEP = "\x1f"
TENANT = re.compile(TENANT_PATTERN)
# What a key scoped to a tenant may call: its own events in and out, and the decisions
# taken on its own objectives; nothing that shows or changes the deployment as a whole.
TENANT_RPCS = frozenset(
    {
        "IngestService/Publish",
        "IngestService/PublishStream",
        "QueryService/GetEvent",
        "QueryService/ListOutcomes",
        "QueryService/WatchOutcomes",
        # its own incidents: decisions on a burning objective of its own (its tenant)
        "QueryService/ListDecisions",
        "QueryService/GetDecision",
    }
)


def check_tenant(tenant: str) -> str:
    if tenant and not TENANT.fullmatch(tenant):
        raise RequestError(
            "tenant", "a tenant is 1-64 of a-z, 0-9, -, _, . (a letter or digit first)"
        )
    return tenant


def tenant_in_force(requested: str = "") -> str:
    """The tenant a request acts in: a scoped caller's own (naming another is refused),
    else what a deployment-wide caller asked for."""
    identity = caller()
    own = identity.tenant if identity is not None else ""
    if own:
        if requested and requested != own:
            raise RequestError(
                "tenant",
                f"this key is scoped to tenant {own!r}; it may not act in {requested!r}",
                ErrorCode.PERMISSION,
            )
        return own
    return check_tenant(requested)


def tenant_filter(requested: str | None) -> str | None:
    """The tenant a query is limited to: a scoped caller's own, always; else the one a
    deployment-wide caller names, or None (all)."""
    identity = caller()
    if identity is not None and identity.tenant:
        return tenant_in_force(requested or "")
    return None if requested is None else check_tenant(requested)


def scoped(event_id: str, tenant: str) -> str:
    """The internal key of a tenant's event."""
    return f"{tenant}{SEP}{event_id}" if tenant else event_id


def unscoped(key: str) -> tuple[str, str]:
    """(tenant, event id) of an internal key."""
    tenant, sep, event_id = key.partition(SEP)
    return (tenant, event_id) if sep else ("", key)


def scope_input(context: SourceContext, tenant: str) -> None:
    """Make an input's copies its tenant's (`sources.inputs.NAME.tenant`): each id gets
    the tenant's key (one that has it already, a replay, is left as it is); an id that
    carries the separator otherwise is refused (event_id_invalid)."""
    prefix = tenant + SEP

    def keyed(copies: Sequence[CopyIn]) -> list[CopyIn]:
        return [
            c if c[0].startswith(prefix) else (_key(c[0], prefix), c[1], c[2], c[3], c[4])
            for c in copies
        ]

    publish, submit = context.publish, context.submit

    async def scoped_publish(copies: Sequence[CopyIn], *args: Any, **kwargs: Any) -> Any:
        return await publish(keyed(copies), *args, **{**kwargs, "scoped": True})

    context.publish = scoped_publish
    if submit is not None:

        async def scoped_submit(copies: Sequence[CopyIn], *args: Any, **kwargs: Any) -> Any:
            return await submit(keyed(copies), *args, **{**kwargs, "scoped": True})

        context.submit = scoped_submit


def past_retention(key: str, first_seen: float, ttls: Mapping[str, float], now: float) -> bool:
    """Whether a record of event `key`, first seen at `first_seen`, is older than its
    tenant's retention (index.tenant_ttl_seconds): reads leave it out, though a store may
    hold it until its next expiry round (docs/security.md, "Tenants")."""
    tenant, sep, _ = key.partition(SEP)
    ttl = ttls.get(tenant) if sep else None
    return ttl is not None and first_seen < now - ttl


def _key(event_id: str, prefix: str) -> str:
    return SEP + event_id if SEP in event_id else prefix + event_id
