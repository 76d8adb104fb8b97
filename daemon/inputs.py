"""The inputs read model: each configured input (webhook, SQS, Kafka, simulator), the
sources it delivers, what it received and refused, and its sources' breakers
(`helios sources list`, ListInputs, the console's Sources page)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from helios.daemon.app import Daemon


@dataclass(frozen=True)
class InputView:
    name: str
    plugin: str
    kind: str
    sources: list[str]
    path: str
    verify: str
    deliveries: int
    copies: int
    rate_per_second: float
    last_delivery: float  # wall time; 0 = never
    errors: dict[str, int]
    breakers: dict[str, str]
    paused: list[str]
    details: dict[str, str] = field(default_factory=dict)


def input_views(daemon: Daemon) -> list[InputView]:
    views = []
    specs = daemon.config.sources.inputs
    for name, source in daemon.inputs.items():
        info = dict(getattr(source, "info", dict)())
        delivered = [s for s in daemon.config.sources.names if source.delivers(s)]
        stats = daemon.webhooks.stats_of(name)
        plugin = specs[name].plugin or name
        views.append(
            InputView(
                name=name,
                plugin=plugin,
                kind=info.pop("kind", plugin),
                sources=delivered,
                path=info.pop("path", ""),
                verify=info.pop("verify", ""),
                deliveries=stats.deliveries,
                copies=stats.copies,
                rate_per_second=stats.rate(),
                last_delivery=stats.last_delivery,
                errors=dict(stats.errors),
                breakers={s: daemon.runtime.breaker_state(s) for s in delivered},
                paused=[s for s in delivered if s in daemon.pipeline.paused],
                details={k: v for k, v in info.items() if v},
            )
        )
    return views
