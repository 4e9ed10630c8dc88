"""backends/cpu_sim/parity.compare: the numbers a `hal run` parity table prints."""

import math

import numpy as np

from hal.backends.cpu_sim.parity import compare


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
