"""dot_general_panels (hal.reference_blocked): a narrow operand converted to float64 a
panel at a time gives the same products as the operand converted whole (float64 dgemm
splits the free axes without changing any element's sum; float32 sgemm does change them
on this machine's OpenBLAS, so cpu_sim's float32 functional values keep converting whole)."""

from __future__ import annotations

import numpy as np
import pytest

import hal.reference_blocked as rb
from hal.dtypes import bf16, cast
from hal.ir.builder import GraphBuilder
from hal.ir.graph import Initializer
from hal.ops import get_op
from hal.reference import evaluate, random_inputs


def _attrs(**kw):
    return get_op("dot_general").check_attrs(kw)


def _whole(a, b, attrs, wide):
    return get_op("dot_general").reference([a.astype(wide), b.astype(wide)], attrs)[0]


CASES = [  # lhs shape, rhs shape, attrs
    ((64, 96), (80, 96), dict(lhs_contracting=(1,), rhs_contracting=(1,))),       # linear
    ((64, 96), (96, 80), dict(lhs_contracting=(1,), rhs_contracting=(0,))),       # matmul
    ((3, 40, 24), (3, 24, 56), dict(lhs_contracting=(2,), rhs_contracting=(1,),
                                    lhs_batch=(0,), rhs_batch=(0,))),
]


@pytest.mark.parametrize("narrow", ["rhs", "lhs", "both"])
@pytest.mark.parametrize("lhs,rhs,kw", CASES)
def test_panels_equal_whole_conversion(monkeypatch, lhs, rhs, kw, narrow):
    wide = np.float64
    monkeypatch.setattr(rb, "PANEL_ELEMENTS", 7 * 96)   # several ragged panels
    rng = np.random.default_rng(1)
    a = cast(rng.standard_normal(lhs), bf16)
    b = cast(rng.standard_normal(rhs), bf16)
    attrs = _attrs(**kw)
    want = _whole(a, b, attrs, wide)
    ga = a if narrow in ("lhs", "both") else a.astype(wide)
    gb = b if narrow in ("rhs", "both") else b.astype(wide)
    got = rb.dot_general_panels(ga, gb, attrs)
    assert got.dtype == wide and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def _linear_graph(n, k, m):
    g = GraphBuilder("lin")
    x = g.input("x", bf16, (n, k))
    w = g.constant("w", bf16, (m, k),
                   Initializer("random", (("dist", "normal"), ("scale", 0.5), ("seed", 3))))
    g.output(g.op("linear", x, w))
    return g.build()


def test_reference_keeps_a_large_weight_narrow(monkeypatch):
    graph = _linear_graph(16, 64, 300)
    inputs = random_inputs(graph, seed=2)
    whole = evaluate(graph, inputs)
    calls = []
    real = rb.dot_general_panel_steps
    monkeypatch.setattr(rb, "PANEL_ELEMENTS", 5 * 64)
    monkeypatch.setattr("hal.reference.dot_general_panel_steps",
                        lambda *a, **k: calls.append(a[1].dtype) or real(*a, **k))
    panelled = evaluate(graph, inputs)
    assert calls and calls[0] == bf16.np_dtype   # the weight reached it unconverted
    for name in whole:
        np.testing.assert_array_equal(whole[name], panelled[name])


# -- float32 sums of 16-bit operands (sums_in_float32) ------------------------------------

def test_float32_sums_hold_the_stated_bound_and_are_not_float64s(monkeypatch):
    """Each element of the float32-summed product is within accumulation_factor(K) * 2^-24
    * sum|a b| of the float64 one (the term rtol_atol adds), and the sums really are
    float32's: some element differs from float64's."""
    from conformance.tolerance import accumulation_factor

    monkeypatch.setattr(rb, "PANEL_ELEMENTS", 7 * 512)   # several ragged panels
    rng = np.random.default_rng(4)
    k = 512
    a = cast(rng.standard_normal((48, k)), bf16)
    b = cast(rng.standard_normal((100, k)), bf16)
    attrs = _attrs(lhs_contracting=(1,), rhs_contracting=(1,))
    exact = _whole(a, b, attrs, np.float64)
    for ga, gb in ((a, b), (a.astype(np.float64), b), (a, b.astype(np.float64))):
        got = rb.dot_general_panels(ga, gb, attrs, float32_sums=True)
        assert got.dtype == np.float64 and got.shape == exact.shape
        mag = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64)).T
        assert (np.abs(got - exact) <= accumulation_factor(k) * 2.0 ** -24 * mag).all()
        assert (got != exact).any()


def test_float32_sums_of_a_panel_beyond_float32_range_are_float64s():
    """bf16 products beyond float32's range: float32 sums would give NaN (inf - inf), the
    panel is summed again in float64 (1e60 - 1e60 = 0)."""
    big = cast(np.array([[1e30, 1e30]]), bf16)
    w = cast(np.array([[1e30, -1e30], [1.0, 2.0]]), bf16)
    attrs = _attrs(lhs_contracting=(1,), rhs_contracting=(1,))
    got = rb.dot_general_panels(big, w, attrs, float32_sums=True)
    np.testing.assert_array_equal(got, _whole(big, w, attrs, np.float64))
    assert got[0, 0] == 0.0


@pytest.mark.parametrize("lhs,rhs,out,want", [
    ("bf16", "bf16", "bf16", True), ("f16", "f16", "f16", True),
    ("bf16", "bf16", "f32", False), ("f32", "f32", "bf16", False),
    ("f32", "f32", "f32", False)])
def test_sums_in_float32_only_for_16_bit_operands_and_result(lhs, rhs, out, want):
    g = GraphBuilder("lin")
    x = g.input("x", lhs, (4, 8))
    w = g.input("w", rhs, (8, 3))
    g.output(g.op("dot_general", x, w, lhs_contracting=(1,), rhs_contracting=(0,),
                  out_dtype=out))
    (node,) = g.build().nodes
    assert node.outputs[0].dtype.name == out
    assert rb.sums_in_float32(node) is want


def test_rtol_atol_adds_the_float32_reference_sums(monkeypatch):
    """The value-free bound of a bf16 projection grows by the float32 sums' own error."""
    import math

    import conformance.tolerance as tol

    g = GraphBuilder("proj")
    x = g.input("x", bf16, (16, 4096))
    w = g.input("w", bf16, (8, 4096))
    g.output(g.op("dot_general", x, w, lhs_contracting=(1,), rhs_contracting=(1,)))
    graph = g.build()
    out = graph.outputs[0]
    with_term = tol.rtol_atol(graph, out)
    monkeypatch.setattr(tol, "sums_in_float32", lambda n: False)
    without = tol.rtol_atol(graph, out)
    k = 4096
    term = tol.STATIC_SAFETY * tol.accumulation_factor(k) * math.sqrt(k) * 2.0 ** -24
    assert with_term[0] == pytest.approx(without[0] + term, rel=1e-12)
