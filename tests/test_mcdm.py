"""MCDM methods against published worked examples, and their refusals of degenerate input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helios.daemon.plugins import load
from helios.plugins.mcdm import (
    critic_weights,
    entropy_weights,
    rank,
    topsis,
    vikor,
    wpm,
    wsm,
)
from hypothesis import given, settings
from hypothesis import strategies as st

# Opricovic, S., & Tzeng, G. H. (2004). Compromise solution by MCDM methods: A comparative
# analysis of VIKOR and TOPSIS. EJOR 156(2), 445-455: two criteria (cost, benefit).
OPRICOVIC = [[1, 3000], [2, 3750], [5, 4500]]


def test_topsis_reproduces_opricovic_and_tzeng_2004():
    closeness = topsis(OPRICOVIC, [0.5, 0.5], [-1, 1], normalization="minmax")
    assert np.round(closeness, 3).tolist() == [0.5, 0.617, 0.5]


def test_topsis_vector_normalisation_by_hand():
    # Column norms 5 and 5 (3-4-5 triangles): r = x/5; weights 0.5 each; both benefit.
    # v = [[0.3, 0.4], [0.4, 0.3]]; ideal (0.4, 0.4), anti (0.3, 0.3):
    # each alternative is 0.1 from both, so both have closeness 0.5.
    assert topsis([[3, 4], [4, 3]], [0.5, 0.5], [1, 1]).tolist() == pytest.approx([0.5, 0.5])
    # A dominating alternative is the ideal itself: closeness 1, and the dominated one 0.
    assert topsis([[4, 4], [3, 3]], [0.5, 0.5], [1, 1]).tolist() == pytest.approx([1.0, 0.0])


def test_vikor_reproduces_opricovic_and_tzeng_2004():
    result = vikor(OPRICOVIC, [0.5, 0.5], [-1, 1])
    assert result.Q.tolist() == [1.0, 0.0, 1.0]
    assert result.compromise == [1] and result.acceptable_advantage
    assert result.acceptable_stability


def test_vikor_reproduces_yang_and_wu_2020():
    # Yang, W., & Wu, Y. (2020). A new improvement method to avoid rank reversal in VIKOR.
    # IEEE Access, 8, 21261-21271.
    matrix = [[78, 56, 34, 6], [4, 45, 3, 97], [18, 2, 50, 63], [9, 14, 11, 92], [85, 9, 100, 29]]
    result = vikor(matrix, [0.25] * 4, [1] * 4)
    assert np.round(result.Q, 4).tolist() == [0.5679, 0.7667, 1.0, 0.7493, 0.0]
    assert rank(result.Q, higher_is_better=False)[0] == 4


def test_entropy_reproduces_xu_2004():
    # Xu, X. (2004). A note on the subjective and objective integrated approach to determine
    # attribute weights. EJOR 156(2), 530-532.
    matrix = [[30, 30, 38, 29], [19, 54, 86, 29], [19, 15, 85, 28.9], [68, 70, 60, 29]]
    assert np.round(entropy_weights(matrix), 4).tolist() == [0.463, 0.3992, 0.1378, 0.0]


def test_entropy_reproduces_zavadskas_and_podvezko_2016():
    # Zavadskas, E. K., & Podvezko, V. (2016). Integrated determination of objective criteria
    # weights in MCDM. IJITDM 15(02), 267-283.
    matrix = [[3.0, 100, 10, 7], [2.5, 80, 8, 5], [1.8, 50, 20, 11], [2.2, 70, 12, 9]]
    assert np.round(entropy_weights(matrix), 4).tolist() == [0.1146, 0.1981, 0.4185, 0.2689]


TUS = [
    [5000, 3, 3, 4, 3, 2],
    [680, 5, 3, 2, 2, 1],
    [2000, 3, 2, 3, 4, 3],
    [600, 4, 3, 1, 2, 2],
    [800, 2, 4, 3, 3, 4],
]


def test_critic_reproduces_tus_and_aytac_adali_2019_with_their_normalisation():
    # Tus, A., & Aytac Adali, E. (2019). Opsearch 56(2), 528-538. The paper's weights come
    # out when every column is normalised as a benefit, as its computation did.
    assert np.round(critic_weights(TUS, [1] * 6), 3).tolist() == [
        0.157,
        0.249,
        0.168,
        0.121,
        0.154,
        0.151,
    ]


def test_critic_is_type_aware_as_diakoulaki_1995_defines_it():
    # Turning a column upside down and calling it a cost gives the same weights.
    flipped = np.array(TUS, dtype=float)
    flipped[:, 0] = flipped[:, 0].max() + flipped[:, 0].min() - flipped[:, 0]
    same = critic_weights(flipped, [-1, 1, 1, 1, 1, 1])
    assert same.tolist() == pytest.approx(critic_weights(TUS, [1] * 6).tolist())
    assert math.isclose(critic_weights(TUS, [-1, 1, 1, 1, 1, 1]).sum(), 1.0)


def test_wsm_and_wpm_by_hand():
    matrix = [[2, 10], [4, 5]]  # criterion 0 benefit, criterion 1 cost
    # linear: benefit x/max -> [0.5, 1]; cost min/x -> [0.5, 1]; weights 0.6/0.4.
    assert wsm(matrix, [0.6, 0.4], [1, -1]).tolist() == pytest.approx([0.5, 1.0])
    # sum: benefit x/sum -> [1/3, 2/3]; cost (1/x)/sum(1/x) -> [1/3, 2/3].
    assert wsm(matrix, [0.6, 0.4], [1, -1], "sum").tolist() == pytest.approx([1 / 3, 2 / 3])
    assert wsm(matrix, [0.6, 0.4], [1, -1], "minmax").tolist() == pytest.approx([0.0, 1.0])
    # WPM on raw values: 2^0.6 * 10^-0.4 and 4^0.6 * 5^-0.4.
    expected = [2**0.6 * 10**-0.4, 4**0.6 * 5**-0.4]
    assert wpm(matrix, [0.6, 0.4], [1, -1]).tolist() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: topsis([[1, np.nan]], [0.5, 0.5], [1, 1]), r"matrix\[0\]\[1\] is nan"),
        (lambda: topsis([[1, 2]], [0.5, 0.4], [1, 1]), "weights must sum to 1"),
        (lambda: topsis([[1, 2]], [0.5, 0.5, 0.0], [1, 1]), "one value per criterion"),
        (lambda: topsis([[1, 2]], [0.5, 0.5], [1, 0]), r"types must be \+1"),
        (lambda: topsis([[1, 2], [1, 3]], [0.5, 0.5], [1, 1], "minmax"), "criterion 0 is constant"),
        (lambda: topsis([[0, 2], [0, 3]], [0.5, 0.5], [1, 1]), "criterion 0 is all zero"),
        (lambda: topsis([[1, 2], [1, 2]], [0.5, 0.5], [1, 1]), "every alternative is identical"),
        (lambda: wpm([[0, 2], [1, 3]], [0.5, 0.5], [1, 1]), "WPM needs positive values"),
        (lambda: wsm([[-1, 2], [1, 3]], [0.5, 0.5], [1, -1]), "needs positive values"),
        (lambda: vikor([[1, 2], [1, 3]], [0.5, 0.5], [1, 1]), "criterion 0 is constant"),
        (lambda: entropy_weights([[-1, 2], [1, 3]]), "non-negative"),
        (lambda: entropy_weights([[0, 2], [0, 3]]), "criterion 0 is all zero"),
        (lambda: critic_weights([[1, 2], [2, 1]], [1, 1]), "at least three alternatives"),
        (lambda: topsis([1, 2, 3], [1.0], [1]), "must be 2-D"),
    ],
)
def test_degenerate_input_is_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_methods_are_registered_as_plugins():
    _, registry = load()
    assert {"topsis", "wsm", "wpm", "vikor"} <= set(registry.mcdm_methods)
    assert {"entropy", "critic"} <= set(registry.weighting_methods)
    scores = registry.mcdm_methods["vikor"].factory(OPRICOVIC, [0.5, 0.5], [-1, 1])
    assert rank(scores)[0] == 1  # 1 - Q: higher is better, like every registered method
    weights = registry.weighting_methods["entropy"].factory([[1, 2], [3, 4]], [1, 1])
    assert math.isclose(float(np.sum(weights)), 1.0)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 12).flatmap(
        lambda m: st.integers(1, 6).flatmap(
            lambda n: st.tuples(
                st.lists(
                    st.lists(st.floats(0.01, 1e6), min_size=n, max_size=n), min_size=m, max_size=m
                ),
                st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n).filter(lambda w: sum(w) > 0),
                st.lists(st.sampled_from([1.0, -1.0]), min_size=n, max_size=n),
            )
        )
    )
)
def test_the_small_topsis_fast_path_agrees_with_numpy(case):
    from helios.plugins.mcdm import _topsis_numpy, _topsis_vector_small

    matrix, raw, types = case
    weights = [w / sum(raw) for w in raw]
    try:
        expected = _topsis_numpy(matrix, weights, types)
    except ValueError:
        assert _topsis_vector_small(matrix, weights, types) is None  # numpy raises instead
        return
    fast = _topsis_vector_small(np.array(matrix), np.array(weights), np.array(types))
    assert fast is not None
    np.testing.assert_allclose(fast, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(topsis(matrix, weights, types), expected, rtol=1e-9, atol=1e-12)


def test_topsis_tells_apart_alternatives_that_differ_only_under_a_tiny_weight():
    """Found by hypothesis: the numpy path squared a 1e-309 difference to zero and called
    the alternatives identical, where the fast path (math.dist) separated them."""
    from helios.plugins.mcdm import _topsis_numpy

    matrix, weights, types = [[1.0, 1.0], [2.0, 1.0]], [2.225073858507203e-309, 1.0], [1.0, 1.0]
    assert list(_topsis_numpy(matrix, weights, types)) == [0.0, 1.0]
