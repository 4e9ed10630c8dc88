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
    real = rb.dot_general_panels
    monkeypatch.setattr(rb, "PANEL_ELEMENTS", 5 * 64)
    monkeypatch.setattr("hal.reference.dot_general_panels",
                        lambda *a, **k: calls.append(a[1].dtype) or real(*a, **k))
    panelled = evaluate(graph, inputs)
    assert calls and calls[0] == bf16.np_dtype   # the weight reached it unconverted
    for name in whole:
        np.testing.assert_array_equal(whole[name], panelled[name])
