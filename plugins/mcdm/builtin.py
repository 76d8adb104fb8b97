"""The built-in MCDM and weighting methods, registered as `helios` plugins.

A registered method takes (matrix, weights, types) and returns one score per alternative,
higher is better (VIKOR's Q is turned around: 1 - Q). A weighting method takes
(matrix, types) and returns weights summing to 1."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from helios.daemon.hookspecs import hookimpl
from helios.daemon.types import McdmMethod, WeightingMethod
from helios.plugins.mcdm import critic_weights, entropy_weights, topsis, vikor, wpm, wsm
from numpy.typing import ArrayLike


def _vikor_scores(matrix: ArrayLike, weights: ArrayLike, types: ArrayLike) -> Any:
    return 1.0 - vikor(matrix, weights, types).Q


def _entropy(matrix: ArrayLike, types: ArrayLike) -> Any:
    return entropy_weights(matrix)


@hookimpl(trylast=True)
def register_mcdm_methods(register: Callable[[str, McdmMethod], None]) -> None:
    register("topsis", topsis)
    register("wsm", wsm)
    register("wpm", wpm)
    register("vikor", _vikor_scores)


@hookimpl(trylast=True)
def register_weighting_methods(register: Callable[[str, WeightingMethod], None]) -> None:
    register("entropy", _entropy)
    register("critic", critic_weights)
