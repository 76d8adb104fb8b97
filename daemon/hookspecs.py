"""The hooks a HELIOS plugin can implement (pluggy project "helios").

Each register_* hook hands the plugin a `register(name, factory)` callback. Outside
plugins are called before the built-ins (which are `trylast`), and the first
registration of a name wins, so an outside plugin can replace a built-in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy
from helios.daemon.types import (
    ActionFactory,
    DetectorFactory,
    IndexFactory,
    McdmMethod,
    SourceFactory,
    WeightingMethod,
)

if TYPE_CHECKING:  # the observed objects' modules load plugins themselves
    from helios.daemon.audit import Execution
    from helios.daemon.detection import Anomaly
    from helios.daemon.model import Outcome

hookspec = pluggy.HookspecMarker("helios")
hookimpl = pluggy.HookimplMarker("helios")


@hookspec
def register_sources(register: Callable[[str, SourceFactory], None]) -> None:
    """Register source plugins: factories of ingest paths that deliver copies."""


@hookspec
def register_index_backends(register: Callable[[str, IndexFactory], None]) -> None:
    """Register index backends that store event records and outcomes."""


@hookspec
def register_detectors(register: Callable[[str, DetectorFactory], None]) -> None:
    """Register anomaly detectors that watch the per-minute metrics."""


@hookspec
def register_mcdm_methods(register: Callable[[str, McdmMethod], None]) -> None:
    """Register multi-criteria decision methods that rank recovery actions."""


@hookspec
def register_weighting_methods(register: Callable[[str, WeightingMethod], None]) -> None:
    """Register methods that derive criteria weights from a decision matrix."""


@hookspec
def register_actions(register: Callable[[str, ActionFactory], None]) -> None:
    """Register recovery actions the decision loop can execute."""


@hookspec
def on_outcome(outcome: Outcome) -> None:
    """Called for every outcome the reconciler decides (COMPLETE, MISSING, ...)."""


@hookspec
def on_anomaly(anomaly: Anomaly) -> None:
    """Called for every anomaly a detector raises."""


@hookspec
def on_action_result(result: Execution) -> None:
    """Called when a recovery action's execution is settled: verified, failed, or with
    nothing to verify."""
