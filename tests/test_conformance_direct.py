"""Direct float64 formulas of the composites: equal to the decompositions, and a
conformance check that sees what a shared decomposition bug hides."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hal.conformance.direct_reference import DIRECT, check_direct
from hal.conformance.tolerance import graph_bounds
from hal.dtypes import cast
from hal.ir import GraphBuilder
from hal.ops import OPS, Category
from hal.reference import evaluate

# op -> (input shapes, attrs, positive inputs?)
SHAPES = {
    "gelu": ([(7, 33)], {}),
    "silu": ([(7, 33)], {}),
    "softmax": ([(5, 31)], {"axis": -1}),
    "log_softmax": ([(5, 31)], {"axis": -1}),
    "layer_norm": ([(4, 3, 17), (3, 17), (3, 17)], {"axis": 1}),
    "rms_norm": ([(6, 40), (40,)], {}),
    "rotary_embedding": ([(2, 5, 3, 8), (5, 8), (5, 8)], {}),
    "scaled_dot_product_attention": ([(2, 4, 5, 8), (2, 2, 7, 8), (2, 2, 7, 6)],
                                     {"causal": True}),
    "sdpa_masked": ([(1, 2, 5, 8), (1, 1, 9, 8), (1, 1, 9, 8), (1, 1, 5, 9)], {}),
    "mean": ([(6, 9)], {"axes": [1]}),
    "variance": ([(6, 9)], {"axes": [0], "correction": 1}),
    "linear": ([(5, 12), (7, 12)], {}),
    "linear_bias": ([(5, 12), (7, 12), (7,)], {}),
}
VARIANTS = [("gelu", {"approximate": "tanh"}), ("gelu", {"approximate": "none"}),
            ("scaled_dot_product_attention", {"causal": False, "scale": 0.3})]


def _graph(op, dt, shapes, attrs):
    b = GraphBuilder("t")
    ins = [b.input(f"x{i}", dt, s) for i, s in enumerate(shapes)]
    b.output(b.op(op, *ins, **attrs))
    return b.build()


def _inputs(g, seed=0):
    rng = np.random.default_rng(seed)
    return {v.name: cast(rng.standard_normal(tuple(v.shape)) * 1.5, v.dtype) for v in g.inputs}


def test_every_composite_has_a_direct_formula():
    # names starting with "_" are ops other test modules register as fixtures
    composites = {n for n, o in OPS.items()
                  if o.category is Category.COMPOSITE and not n.startswith("_")}
    assert composites <= set(DIRECT), composites - set(DIRECT)
    assert set(SHAPES) == set(DIRECT)


CASES = [(op, dict(a)) for op, (_s, a) in SHAPES.items()] + VARIANTS


@pytest.mark.parametrize("op,attrs", CASES, ids=[f"{o}-{a}" for o, a in CASES])
def test_direct_equals_decomposition_and_registry_in_f64(op, attrs):
    shapes = SHAPES[op][0]
    g = _graph(op, "f64", shapes, attrs)
    x = _inputs(g)
    dec = evaluate(g, x)[g.outputs[0].name].astype(np.float64)   # the decomposition
    node = g.nodes[0]
    checked = OPS[op].check_attrs(node.attrs)
    direct = DIRECT[op]([x[v.name] for v in node.inputs], checked)
    reg = OPS[op].reference([x[v.name] for v in node.inputs], checked)[0]
    np.testing.assert_allclose(direct, dec, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(direct, reg, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("dt", ["f32", "bf16"])
def test_direct_check_passes_the_decomposition_reference(dt):
    # the reference's own rounded values are a correct device: within the allowance
    for op, attrs in CASES:
        g = _graph(op, dt, SHAPES[op][0], attrs)
        x = _inputs(g, 3)
        prim, bounds = graph_bounds(g, x)
        out = g.outputs[0].name
        res = check_direct(g, prim, bounds, {out: cast(bounds[out].ref, bounds[out].dtype)})
        assert res[out].ok and res[out].checked > 0, (op, res[out])


def test_direct_check_sees_a_wrong_decomposition_constant():
    # gelu(tanh) with 0.0447 instead of 0.044715: the reference built from the same
    # decomposition cannot see it, the direct formula does
    g = _graph("gelu", "f32", [(16, 64)], {"approximate": "tanh"})
    x = _inputs(g, 1)
    prim, bounds = graph_bounds(g, x)
    xv = x["x0"].astype(np.float64)
    wrong = 0.5 * xv * (1 + np.tanh(math.sqrt(2 / math.pi) * (xv + 0.0447 * xv ** 3)))
    out = g.outputs[0].name
    res = check_direct(g, prim, bounds, {out: cast(wrong, bounds[out].dtype)})
    assert not res[out].ok and res[out].bad > 10, res[out]


def test_conformance_runs_the_direct_check():
    from hal.conformance.cases import get_case
    from hal.conformance.runner import execute

    r = execute(get_case("fused/layer_norm/f32/33x257"), "cpu_sim", "h100-sxm")
    assert r["verdict"] == "pass", r
    d = r["direct"]
    (c,) = d.values()
    assert c["op"] == "layer_norm" and c["checked"] == 33 * 257 and c["max_dev"] <= c["allowed"]
