"""Detectors: plugins that watch per-minute reconciliation metrics.

Usable outside the daemon, e.g. in a notebook::

    from helios.plugins.detectors import create
    detector = create("ewma", threshold=4.0)
    result = detector.update({"value": 3.2})
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from helios.daemon.plugins import Registry, load
from helios.daemon.types import Detector


@lru_cache(maxsize=1)
def _registry() -> Registry:
    return load()[1]


def available() -> list[str]:
    """The detector names the installed plugins register."""
    return sorted(_registry().detectors)


def create(name: str, **options: Any) -> Detector:
    """A new detector by name (any installed plugin's), configured with `options`."""
    entry = _registry().detectors.get(name)
    if entry is None:
        raise ValueError(f"unknown detector {name!r}; available: {', '.join(available())}")
    return entry.factory(**options)
