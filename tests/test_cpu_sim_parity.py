"""backends/cpu_sim/parity.compare: the numbers a `hal run` parity table prints."""

import math

import numpy as np

from hal.backends.cpu_sim.parity import _compare_general, compare


def test_max_rel_leaves_out_reference_elements_under_atol():
    """A zero reference element with a small absolute difference is judged by atol; its
    relative error (1e306 when divided by the smallest float) is not the reported max."""
    e = np.array([0.0, 2.0, -4.0, 1e-30])
    a = np.array([1e-3, 2.002, -4.0, 0.0])
    r = compare(a, e, rtol=1e-2, atol=1e-2)
    assert r["ok"]
    assert math.isclose(r["max_rel"], 1e-3)      # 0.002 / 2.0, not 1e-3 / 0 or 1e-30 / 1e-30
    assert math.isclose(r["max_abs"], 2e-3, rel_tol=1e-9)


def test_failures_still_show():
    e = np.array([1.0, 0.0, np.nan, np.inf])
    a = np.array([1.5, 0.0, np.nan, np.inf])
    r = compare(a, e, rtol=1e-3, atol=1e-3)
    assert not r["ok"] and math.isclose(r["max_rel"], 0.5) and math.isclose(r["max_abs"], 0.5)
    r = compare(np.array([0.0, 1.0]), np.array([0.0, np.inf]), 1e-3, 1e-3)
    assert not r["ok"] and r["max_abs"] == math.inf
    r = compare(np.array([1.0]), np.array([np.nan]), 1e-3, 1e-3)
    assert not r["ok"] and r["max_abs"] == math.inf


def test_integers_are_exact():
    r = compare(np.array([1, 2, 3]), np.array([1, 2, 4]), 0.0, 0.0)
    assert r == {"max_abs": 1.0, "max_rel": 1.0, "ok": False}


def _compare_oracle(a, e, rtol, atol):
    """compare's general path (the NaN and inf rules), which the finite path must equal."""
    return _compare_general(np.asarray(a).astype(np.float64), np.asarray(e).astype(np.float64),
                            rtol, atol)


def test_finite_reference_fast_path_equals_the_general_rules():
    """A finite reference takes compare's short path: its numbers are those of the full
    NaN/inf rules, at the atol edge, with an inf in the actual values, for bf16 inputs."""
    import ml_dtypes

    rng = np.random.default_rng(0)
    atol, rtol = 1e-2, 1e-2
    e = rng.standard_normal(4000) * np.where(rng.random(4000) < 0.2, 1e-3, 1.0)
    e[:4] = [atol, -atol, 0.0, -0.0]               # magnitudes exactly at atol, zeros
    a = e + rng.standard_normal(4000) * 1e-2
    a[5] = 2 * atol                                 # fails only through the bound
    cases = [(a, e), (np.where(np.arange(4000) == 7, np.inf, a), e),
             (a[np.abs(a - e) < atol], e[np.abs(a - e) < atol]),
             (a.astype(ml_dtypes.bfloat16), e.astype(ml_dtypes.bfloat16)), (a[:0], e[:0])]
    for got, want in cases:
        assert compare(got, want, rtol, atol) == _compare_oracle(got, want, rtol, atol)


def test_finite_fast_path_edges_exactly():
    """A reference element of magnitude exactly atol counts in max_rel; a difference
    exactly at the bound passes."""
    tol = 2.0 ** -7
    for a, e in ((np.array([1.5 * tol, 0.0]), np.array([tol, 0.0])),
                 (np.array([1.0 + 2 * tol, 3.0]), np.array([1.0, 3.0]))):
        assert compare(a, e, tol, tol) == _compare_oracle(a, e, tol, tol)
    assert compare(np.array([1.5 * tol]), np.array([tol]), tol, tol)["max_rel"] == 0.5
    assert compare(np.array([1.0 + 2 * tol]), np.array([1.0]), tol, tol)["ok"]
