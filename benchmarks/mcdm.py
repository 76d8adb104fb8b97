"""Time the MCDM methods on 10 actions x 4 criteria (the decision loop's size).

.venv/bin/python benchmarks/mcdm.py
"""

from __future__ import annotations

import timeit

import numpy as np
from helios.plugins.mcdm import critic_weights, entropy_weights, topsis, vikor, wpm, wsm


def main() -> None:
    rng = np.random.default_rng(1)
    matrix = rng.uniform(1, 100, (10, 4))
    weights = np.full(4, 0.25)
    types = np.array([1.0, -1.0, 1.0, -1.0])
    calls = {
        "topsis (vector)": lambda: topsis(matrix, weights, types),
        "topsis (minmax)": lambda: topsis(matrix, weights, types, "minmax"),
        "wsm (linear)": lambda: wsm(matrix, weights, types),
        "wpm": lambda: wpm(matrix, weights, types),
        "vikor": lambda: vikor(matrix, weights, types),
        "entropy_weights": lambda: entropy_weights(matrix),
        "critic_weights": lambda: critic_weights(matrix, types),
    }
    for name, call in calls.items():
        number = 5000
        best = min(timeit.repeat(call, number=number, repeat=5)) / number
        print(f"{name:<18} {best * 1e6:7.1f} us per call (10 x 4)")


if __name__ == "__main__":
    main()
