"""The plugin manager: loads `helios` entry points, applies allow/deny, collects factories."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pluggy
from helios.daemon import hookspecs
from helios.daemon.types import (
    ActionFactory,
    DetectorFactory,
    IndexFactory,
    McdmMethod,
    SourceFactory,
    WeightingMethod,
)

if TYPE_CHECKING:  # these modules import this one
    from helios.daemon.audit import Execution
    from helios.daemon.detection import Anomaly
    from helios.daemon.model import Outcome

log = logging.getLogger("helios.plugins")
ENTRY_POINT_GROUP = "helios"
ENV_ALLOW = "HELIOS_PLUGINS"
BUILTIN_DISTRIBUTION = "helios"

T = TypeVar("T")


@dataclass
class Registered(Generic[T]):
    name: str
    factory: T
    plugin: str  # the plugin (entry-point name) that registered it


@dataclass
class PluginInfo:
    name: str
    distribution: str
    version: str
    hooks: list[str]
    builtin: bool


@dataclass
class Registry:
    """Everything the loaded plugins registered, by kind and name."""

    sources: dict[str, Registered[SourceFactory]] = field(default_factory=dict)
    index_backends: dict[str, Registered[IndexFactory]] = field(default_factory=dict)
    detectors: dict[str, Registered[DetectorFactory]] = field(default_factory=dict)
    mcdm_methods: dict[str, Registered[McdmMethod]] = field(default_factory=dict)
    weighting_methods: dict[str, Registered[WeightingMethod]] = field(default_factory=dict)
    actions: dict[str, Registered[ActionFactory]] = field(default_factory=dict)

    def kinds(self) -> dict[str, dict[str, Any]]:
        return {
            "sources": self.sources,
            "index_backends": self.index_backends,
            "detectors": self.detectors,
            "mcdm_methods": self.mcdm_methods,
            "weighting_methods": self.weighting_methods,
            "actions": self.actions,
        }


class PluginManager:
    """pluggy's manager with one typed method per hook and a record of what loaded."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("helios")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.skipped: dict[str, str] = {}

    def load_entry_points(
        self,
        allow: Iterable[str] = (),
        deny: Iterable[str] = (),
        environ: Mapping[str, str] | None = None,
    ) -> None:
        """Load every `helios` entry point that the allow/deny lists and $HELIOS_PLUGINS let in."""
        env = os.environ if environ is None else environ
        allowed = set(allow)
        if env.get(ENV_ALLOW):
            allowed = {name.strip() for name in env[ENV_ALLOW].split(",") if name.strip()}
        denied = set(deny)
        points: list[EntryPoint] = sorted(
            entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name
        )
        seen: set[str] = set()
        for ep in points:
            if ep.name in seen:
                continue  # the same distribution found twice on sys.path
            seen.add(ep.name)
            if ep.name in denied:
                self.skipped[ep.name] = "denied by plugins.deny"
                continue
            dist = ep.dist
            builtin = dist is not None and dist.name == BUILTIN_DISTRIBUTION
            if "*" in allowed:
                if not builtin:
                    log.warning('plugin %s loads because plugins.allow has "*"', ep.name)
            elif allowed and ep.name not in allowed:
                self.skipped[ep.name] = "not in the allow-list"
                continue
            elif not allowed and not builtin:
                # Code from any installed package runs inside heliosd: never by default.
                self.skipped[ep.name] = (
                    f"an outside plugin ({dist.name if dist else '?'}): name it in "
                    "plugins.allow to load it"
                )
                continue
            try:
                module = ep.load()
            except Exception as exc:
                # A broken outside plugin must not take the daemon down; it is reported.
                self.skipped[ep.name] = f"failed to load: {exc!r}"
                log.error("plugin %s failed to load: %r", ep.name, exc)
                continue
            self.register(
                module,
                ep.name,
                distribution=dist.name if dist else "?",
                version=dist.version if dist else "?",
            )
        self.pm.check_pending()

    def register(
        self, plugin: ModuleType | object, name: str, distribution: str = "?", version: str = "?"
    ) -> None:
        """Register a plugin object directly (tests, embedding)."""
        self.pm.register(plugin, name=name)
        hooks = sorted(
            h.name for h in self.pm.get_hookcallers(plugin) or [] if not h.name.startswith("_")
        )
        self.plugins.append(
            PluginInfo(name, distribution, version, hooks, distribution == BUILTIN_DISTRIBUTION)
        )

    def collect(self) -> Registry:
        """Call every register_* hook and gather what the plugins registered."""
        registry = Registry()
        hook = self.pm.hook
        calls: list[tuple[str, Any, dict[str, Any]]] = [
            ("register_sources", hook.register_sources, registry.sources),
            ("register_index_backends", hook.register_index_backends, registry.index_backends),
            ("register_detectors", hook.register_detectors, registry.detectors),
            ("register_mcdm_methods", hook.register_mcdm_methods, registry.mcdm_methods),
            (
                "register_weighting_methods",
                hook.register_weighting_methods,
                registry.weighting_methods,
            ),
            ("register_actions", hook.register_actions, registry.actions),
        ]
        for hook_name, caller, target in calls:
            for impl in caller.get_hookimpls()[::-1]:  # pluggy calls the last registered first
                register = _registrar(target, impl.plugin_name, hook_name)
                impl.function(register=register)
        return registry

    def has_observers(self, hook_name: str) -> bool:
        return bool(getattr(self.pm.hook, hook_name).get_hookimpls())

    def on_outcome(self, outcome: Outcome) -> None:
        self.pm.hook.on_outcome(outcome=outcome)

    def on_anomaly(self, anomaly: Anomaly) -> None:
        self.pm.hook.on_anomaly(anomaly=anomaly)

    def on_action_result(self, result: Execution) -> None:
        self.pm.hook.on_action_result(result=result)


def _registrar(target: dict[str, Any], plugin: str, hook_name: str) -> Callable[[str, Any], None]:
    def register(name: str, factory: Any) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"plugin {plugin!r}: {hook_name} registered an empty name")
        if name in target:
            log.info(
                "%s: %r from plugin %s is shadowed by plugin %s",
                hook_name,
                name,
                plugin,
                target[name].plugin,
            )
            return
        target[name] = Registered(name, factory, plugin)

    return register


BUILTIN_DISTRIBUTION = "helios"


def load(allow: Iterable[str] = (), deny: Iterable[str] = ()) -> tuple[PluginManager, Registry]:
    """Load the entry-point plugins and collect their registrations."""
    manager = PluginManager()
    manager.load_entry_points(allow, deny)
    return manager, manager.collect()
