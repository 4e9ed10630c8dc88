"""Every primitive op, lowered alone (trivial groups) and simulated on cpu_sim, matches the
float64 reference within tolerance, on three device specs, on shapes that divide no tile."""

from __future__ import annotations

import pytest

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.devices.loader import load_spec
from hal.dtypes import bf16, bool_, f16, f32, i32
from hal.ir import GraphBuilder
from hal.ops import OPS, Category
from hal.reference import random_inputs

SPECS = ["h100-sxm", "mi300x", "scratch-npu"]
SHAPE = (37, 45)


def _elementwise_case(name: str):
    op = OPS[name]
    if name == "select":
        def build(b):
            p = b.input("p", bool_, SHAPE)
            x, y = b.input("x", f32, SHAPE), b.input("y", f32, SHAPE)
            b.output(b.op("select", p, x, y))
        return build
    if name == "cast":
        def build(b):
            x = b.input("x", f32, SHAPE)
            b.output(b.op("cast", x, dtype=bf16), b.op("cast", x, dtype=i32))
        return build
    dt = f32 if "f32" in op.dtypes else (bool_ if "bool" in op.dtypes else i32)

    def build(b):
        xs = [b.input(f"x{i}", dt, SHAPE) for i in range(len(op.inputs))]
        b.output(b.op(name, *xs))
    return build


def _case(build):
    return build


OTHER_CASES = {
    "broadcast_to": lambda b: b.output(b.op("broadcast_to", b.input("x", f32, (37, 1)),
                                            shape=[3, 37, 45])),
    "reshape": lambda b: b.output(b.op("exp", b.op("reshape", b.input("x", f32, SHAPE),
                                                   shape=[45, 37]))),
    "transpose": lambda b: b.output(b.op("transpose", b.input("x", f32, (5, 37, 45)),
                                         perm=[2, 0, 1])),
    "slice": lambda b: b.output(b.op("slice", b.input("x", f32, SHAPE), starts=[1, 3],
                                     stops=[36, 44], steps=[2, 3])),
    "pad": lambda b: b.output(b.op("pad", b.input("x", f32, SHAPE), low=[1, 2], high=[3, 0],
                                   value=1.5)),
    "concat": lambda b: b.output(b.op("concat", b.input("x", f32, SHAPE),
                                      b.input("y", f32, (37, 7)), axis=1)),
    "reduce_sum": lambda b: b.output(b.op("reduce_sum", b.input("x", f32, SHAPE), axes=[1])),
    "reduce_prod": lambda b: b.output(b.op("reduce_prod", b.input("x", f32, (37, 9)), axes=[1])),
    "reduce_max": lambda b: b.output(b.op("reduce_max", b.input("x", f32, SHAPE), axes=[0])),
    "reduce_min": lambda b: b.output(b.op("reduce_min", b.input("x", f32, SHAPE), axes=[1],
                                          keepdims=True)),
    "reduce_any": lambda b: b.output(b.op("reduce_any", b.input("x", bool_, SHAPE), axes=[1])),
    "reduce_all": lambda b: b.output(b.op("reduce_all", b.input("x", bool_, SHAPE), axes=[0])),
    "argmax": lambda b: b.output(b.op("argmax", b.input("x", f32, SHAPE), axis=1)),
    "argmin": lambda b: b.output(b.op("argmin", b.input("x", f32, SHAPE), axis=0)),
    "dot_general": lambda b: b.output(b.op(
        "dot_general", b.input("a", f32, (3, 45, 37)), b.input("b", f32, (3, 29, 45)),
        lhs_contracting=[1], rhs_contracting=[2], lhs_batch=[0], rhs_batch=[0])),
    "matmul": lambda b: b.output(b.op("matmul", b.input("a", f32, (37, 45)),
                                      b.input("b", f32, (29, 45)), transpose_b=True)),
    "gather": lambda b: b.output(b.op("gather", b.input("t", f32, (37, 45)),
                                      b.input("i", i32, (3, 5)), axis=0)),
    "take_along_axis": lambda b: b.output(b.op("take_along_axis", b.input("t", f32, (37, 45)),
                                               b.input("i", i32, (37, 6)), axis=1)),
    "iota": lambda b: b.output(b.op("iota", shape=[37, 45], dimension=1, dtype=f32)),
    "full": lambda b: b.output(b.op("full", shape=[37, 45], value=2.5, dtype=f16)),
    "cumsum": lambda b: b.output(b.op("cumsum", b.input("x", f32, SHAPE), axis=1)),
}


def all_cases():
    out = {}
    for name, op in sorted(OPS.items()):
        if op.category is Category.COMPOSITE:
            continue
        if op.category is Category.ELEMENTWISE:
            out[name] = _elementwise_case(name)
        elif name in OTHER_CASES:
            out[name] = OTHER_CASES[name]
    return out


CASES = all_cases()


def test_every_primitive_has_a_case():
    # Names starting with "_" are test-only ops other test modules register.
    prims = {n for n, o in OPS.items()
             if o.category is not Category.COMPOSITE and not n.startswith("_")}
    assert prims <= set(CASES), sorted(prims - set(CASES))


@pytest.mark.parametrize("spec_name", SPECS)
@pytest.mark.parametrize("op", sorted(CASES))
def test_primitive_matches_reference(op, spec_name):
    b = GraphBuilder(op)
    CASES[op](b)
    g = b.build()
    r = CpuSimBackend().run_graph(g, random_inputs(g, seed=1), load_spec(spec_name))
    assert r.report["ok"], r.report
    assert r.stats, "at least one kernel ran"
    for s in r.stats:
        assert s["global_bytes_written"] > 0
