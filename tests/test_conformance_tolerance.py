"""The conformance error model: interval bounds, propagation, comparison rules."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hal.conformance.compare import check, diff
from hal.conformance.tolerance import accumulation_factor, output_bounds, rtol_atol
from hal.dtypes import bf16, cast, f32
from hal.ir import GraphBuilder


def _graph(build):
    b = GraphBuilder("t")
    build(b)
    return b.build()


def test_accumulation_factor_is_sqrt_like_and_capped():
    assert accumulation_factor(1) == 0
    assert accumulation_factor(2) == 1  # capped at the worst case n - 1
    n = 16384
    assert accumulation_factor(n) == pytest.approx(5 * math.sqrt(n) + math.log2(n))
    assert accumulation_factor(n) < n / 20


def test_exact_op_has_a_zero_width_interval():
    g = _graph(lambda b: b.output(b.op("neg", b.input("x", bf16, (8,)))))
    x = cast(np.linspace(-3, 3, 8), bf16)
    (bd,) = output_bounds(g, {"x": x}).values()
    assert np.array_equal(bd.lo, bd.hi) and bd.max_bound == 0 and bd.strict_zero


def test_one_rounding_allows_only_neighbouring_values():
    g = _graph(lambda b: b.output(b.op("exp", b.input("x", bf16, (64,)))))
    x = cast(np.linspace(-2, 2, 64), bf16)
    (bd,) = output_bounds(g, {"x": x}).values()
    width = (bd.hi - bd.lo) / np.maximum(np.abs(bd.ref), 1e-30)
    assert (width <= 2 ** -6).all()  # at most one bf16 ulp wide
    assert (bd.hi == bd.lo).mean() > 0.9  # almost always a single acceptable value
    # truncation instead of round-to-nearest is caught
    trunc = (np.exp(x.astype(np.float64)) * (1 - 2 ** -9)).astype(np.float32)
    assert not check(cast(trunc, bf16), bd).ok


def test_ulps_are_units_in_the_last_place():
    g = _graph(lambda b: b.output(b.op("log", b.input("x", f32, (1,)))))
    x = cast(np.array([0.7270]), f32)
    (bd,) = output_bounds(g, {"x": x}).values()
    ulp = np.spacing(np.float32(bd.ref[0]))
    two_off = np.array([np.float32(bd.ref[0]) + np.float32(2 * ulp)], np.float32)
    assert check(two_off, bd).ok  # log has ulps=2
    assert not check(np.array([np.float32(bd.ref[0]) + np.float32(4 * ulp)]), bd).ok


def test_sum_bound_scales_with_magnitudes_and_length():
    def sum_bound(n):
        g = _graph(lambda b: b.output(b.op("reduce_sum", b.input("x", f32, (n,)))))
        x = cast(np.ones(n), f32)
        return next(iter(output_bounds(g, {"x": x}).values())).max_bound

    assert 0 < sum_bound(256) < sum_bound(16384) < 16384 * 16384 * 2 ** -24


def test_errors_propagate_along_a_chain():
    def bound(depth):
        def build(b):
            v = b.input("x", f32, (32,))
            for _ in range(depth):
                v = b.op("exp", b.op("tanh", v))
            b.output(v)
        g = _graph(build)
        x = cast(np.linspace(-1, 1, 32), f32)
        return next(iter(output_bounds(g, {"x": x}).values())).max_bound

    assert bound(1) < bound(4)


def test_nan_inf_and_signed_zero_rules():
    g = _graph(lambda b: b.output(b.op("neg", b.input("x", f32, (4,)))))
    x = np.array([np.nan, np.inf, 0.0, 1.0], np.float32)
    (bd,) = output_bounds(g, {"x": x}).values()
    assert check(np.array([np.nan, -np.inf, -0.0, -1.0], np.float32), bd).ok
    assert not check(np.array([1.0, -np.inf, -0.0, -1.0], np.float32), bd).ok  # NaN lost
    assert not check(np.array([np.nan, np.inf, -0.0, -1.0], np.float32), bd).ok
    assert not check(np.array([np.nan, -np.inf, 0.0, -1.0], np.float32), bd).ok  # sign of 0


def test_overflow_of_a_near_max_result_may_round_to_inf():
    g = _graph(lambda b: b.output(b.op("add", b.input("x", bf16, (1,)),
                                       b.input("y", bf16, (1,)))))
    big = cast(np.array([bf16.max * 0.9999]), bf16)
    (bd,) = output_bounds(g, {"x": big, "y": cast(np.array([0.0]), bf16)}).values()
    assert check(big, bd).ok


def test_diff_allows_the_interval_width():
    g = _graph(lambda b: b.output(b.op("exp", b.input("x", f32, (16,)))))
    x = cast(np.linspace(0, 1, 16), f32)
    (bd,) = output_bounds(g, {"x": x}).values()
    assert diff(cast(bd.lo, f32), cast(bd.hi, f32), bd).ok
    assert not diff(cast(bd.lo, f32), cast(bd.hi * 1.01, f32), bd).ok


def test_static_rtol_atol_and_parity_use_the_model():
    from hal.backends.cpu_sim.parity import tolerance_for

    g = _graph(lambda b: b.output(b.op("reduce_sum", b.input("x", f32, (4, 4096)), axes=[1]),
                                  b.op("argmax", b.input("y", f32, (4, 8)), axis=1)))
    s, a = g.outputs
    assert tolerance_for(g, s) == rtol_atol(g, s)
    assert rtol_atol(g, a) == (0.0, 0.0)
    assert 0 < rtol_atol(g, s)[0] < 1e-2
