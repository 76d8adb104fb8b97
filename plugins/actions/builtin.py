"""Registers the built-in recovery actions as a `helios` plugin."""

from __future__ import annotations

from collections.abc import Callable

from helios.daemon.hookspecs import hookimpl
from helios.daemon.types import ActionFactory
from helios.plugins.actions.breakers import CloseBreaker, OpenBreaker
from helios.plugins.actions.http import Notify, Webhook
from helios.plugins.actions.kubernetes import ScaleConsumers
from helios.plugins.actions.local import Exec, QuarantineEvent, ThrottleIngest
from helios.plugins.actions.replay import ReplayMissing
from helios.plugins.actions.sources import FailoverSource, RestartSource

BUILTIN = (
    ReplayMissing,
    OpenBreaker,
    CloseBreaker,
    RestartSource,
    FailoverSource,
    ScaleConsumers,
    ThrottleIngest,
    Webhook,
    Exec,
    Notify,
    QuarantineEvent,
)


@hookimpl(trylast=True)
def register_actions(register: Callable[[str, ActionFactory], None]) -> None:
    for cls in BUILTIN:
        register(cls.name, cls)
