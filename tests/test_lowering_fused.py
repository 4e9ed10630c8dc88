"""Hand-built fused groups (make_group) lower to one kernel each and match the reference:
softmax and layer_norm as primitives, matmul + bias + relu, transpose -> add, 16-bit inputs."""

from __future__ import annotations

import numpy as np
import pytest

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.devices.loader import load_spec
from hal.dtypes import bf16, f16, f32
from hal.fusion.group import group_kind, make_group, trivial_groups
from hal.ir import GraphBuilder
from hal.kernel.ir import Barrier, For, LocalBuffer, Shuffle, Stmt
from hal.lowering import lower_group
from hal.lowering.plan import PlanHints
from hal.lowering.tiling import MatmulTiles
from hal.reference import random_inputs

SPECS = ["h100-sxm", "mi300x", "scratch-npu"]


def softmax_graph(rows=13, cols=300, dt=f32):
    b = GraphBuilder("softmax")
    x = b.input("x", dt, (rows, cols))
    m = b.op("reduce_max", x, axes=[1], keepdims=True)
    e = b.op("exp", b.op("sub", x, b.op("broadcast_to", m, shape=[rows, cols])))
    s = b.op("reduce_sum", e, axes=[1], keepdims=True)
    b.output(b.op("div", e, b.op("broadcast_to", s, shape=[rows, cols]), name="y"))
    return b.build()


def layer_norm_graph(rows=11, cols=333, dt=f32):
    b = GraphBuilder("layer_norm")
    x = b.input("x", dt, (rows, cols))
    gamma, beta = b.input("gamma", dt, (cols,)), b.input("beta", dt, (cols,))
    n = b.op("full", shape=[rows, 1], value=float(cols), dtype=dt)
    mean = b.op("div", b.op("reduce_sum", x, axes=[1], keepdims=True), n)
    xc = b.op("sub", x, b.op("broadcast_to", mean, shape=[rows, cols]))
    var = b.op("div", b.op("reduce_sum", b.op("mul", xc, xc), axes=[1], keepdims=True), n)
    eps = b.op("full", shape=[rows, 1], value=1e-5, dtype=dt)
    rstd = b.op("rsqrt", b.op("add", var, eps))
    y = b.op("mul", xc, b.op("broadcast_to", rstd, shape=[rows, cols]))
    y = b.op("add", b.op("mul", y, b.op("broadcast_to", gamma, shape=[rows, cols])),
             b.op("broadcast_to", beta, shape=[rows, cols]))
    b.output(y)
    return b.build()


def mlp_graph(m=70, k=45, n=37, dt=f32):
    b = GraphBuilder("mlp")
    x, w, bias = b.input("x", dt, (m, k)), b.input("w", dt, (k, n)), b.input("bias", dt, (n,))
    y = b.op("add", b.op("matmul", x, w), b.op("broadcast_to", bias, shape=[m, n]))
    zero = b.op("full", shape=[m, n], value=0.0, dtype=dt)
    b.output(b.op("maximum", y, zero))
    return b.build()


def transpose_add_graph():
    b = GraphBuilder("tadd")
    x, y = b.input("x", f32, (45, 37)), b.input("y", f32, (37, 45))
    b.output(b.op("add", b.op("transpose", x, perm=[1, 0]), y))
    return b.build()


def run_fused(g, spec_name, hints=None, seed=0):
    grp = make_group(g, g.nodes, "fused", hints=hints)
    r = CpuSimBackend().run_graph(g, random_inputs(g, seed), load_spec(spec_name), groups=[grp])
    return grp, r


def walk(stmts: list[Stmt]):
    for s in stmts:
        yield s
        for attr in ("body", "then", "orelse"):
            yield from walk(getattr(s, attr, []) or [])


@pytest.mark.parametrize("spec_name", SPECS)
@pytest.mark.parametrize("make", [softmax_graph, layer_norm_graph, mlp_graph,
                                  transpose_add_graph])
def test_fused_group_is_one_kernel_and_matches(make, spec_name):
    grp, r = run_fused(make(), spec_name)
    assert r.report["ok"], r.report
    assert len(r.stats) == 1, [s["kernel"] for s in r.stats]
    assert r.stats[0]["ops"] == grp.ops


def test_group_kinds():
    assert group_kind(softmax_graph().nodes) == "row_reduction"
    assert group_kind(mlp_graph().nodes) == "matmul"
    assert group_kind(transpose_add_graph().nodes) == "pointwise"
    g = softmax_graph()
    assert [x.kind for x in trivial_groups(g)][:2] == ["row_reduction", "pointwise"]


def test_make_group_inputs_outputs():
    g = softmax_graph()
    head = make_group(g, g.nodes[:3], "head")  # reduce_max, broadcast_to, sub
    assert [v.name for v in head.inputs] == ["x"]
    assert [v.name for v in head.outputs] == [g.nodes[2].outputs[0].name]


def test_softmax_structure_two_phases_shared_cache():
    spec = load_spec("h100-sxm")
    g = softmax_graph(rows=5, cols=1000)
    (k,) = lower_group(make_group(g, g.nodes, "sm"), spec)
    kp = k.meta.plan
    assert kp.detail("phases") == 2 and kp.detail("row_cache") == "shared"
    assert k.grid == (5, 1, 1) and k.block % spec.warp_size == 0
    assert k.block <= spec.max_threads_per_block
    stmts = list(walk(k.body))
    assert sum(isinstance(s, Barrier) for s in stmts) == 2
    assert k.meta.inputs == ("x",) and k.meta.outputs == ("y",)
    shuffles = repr(k.body).count("Shuffle(")
    assert shuffles == 2 * int(np.log2(spec.warp_size))  # one xor tree per reduction
    assert any(isinstance(s, For) for s in stmts)


def test_softmax_row_too_big_for_shared_rereads_global():
    g = softmax_graph(rows=3, cols=20000)   # 80 KB of f32 > scratch-npu's 32 KiB
    (k,) = lower_group(make_group(g, g.nodes, "sm"), load_spec("scratch-npu"))
    assert k.meta.plan.detail("row_cache") == "global"
    _, r = run_fused(g, "scratch-npu")
    assert r.report["ok"], r.report


@pytest.mark.parametrize("spec_name", SPECS)
def test_forced_split_reduction(spec_name):
    b = GraphBuilder("rsum")
    x = b.input("x", f32, (3, 5000))
    b.output(b.op("reduce_sum", b.op("mul", x, x), axes=[1]))
    g = b.build()
    grp, r = run_fused(g, spec_name, hints=PlanHints(split=4))
    assert r.report["ok"], r.report
    assert [s["kernel"] for s in r.stats] == ["fused_partial", "fused_final"]
    split = r.stats[0]["plan"]["split"]  # chunks are rounded to whole blocks
    assert 1 < split <= 4 and r.stats[0]["grid"][:2] == [3, split]


def test_split_argmax_and_shuffle_width_follows_spec():
    b = GraphBuilder("am")
    x = b.input("x", f32, (2, 9000))
    b.output(b.op("argmax", x, axis=1))
    g = b.build()
    grp, r = run_fused(g, "mi300x", hints=PlanHints(split=3))
    assert r.report["ok"], r.report
    k = lower_group(grp, load_spec("mi300x"))[0]
    assert all(s.width == 64 for s in _shuffles(k.body))


def _shuffles(stmts):
    out = []

    def visit(e):
        if isinstance(e, Shuffle):
            out.append(e)
        for v in getattr(e, "__dict__", {}).values():
            if hasattr(v, "dtype"):
                visit(v)

    for s in walk(stmts):
        for v in vars(s).values():
            if hasattr(v, "dtype"):
                visit(v)
    return out


def test_matmul_tiles_from_spec_and_local_accumulators():
    for name in SPECS:
        spec = load_spec(name)
        g = mlp_graph(m=200, k=64, n=130)
        (k,) = lower_group(make_group(g, g.nodes, "mm"), spec)
        t = k.meta.plan.tile_sizes
        assert k.shared_bytes <= spec.shared_mem_per_block
        assert k.block == MatmulTiles(**t).threads <= spec.max_threads_per_block
        assert k.block % spec.warp_size == 0
        assert t["tm"] * t["tn"] + t["tm"] + t["tn"] + 16 <= spec.max_registers_per_thread
        assert any(isinstance(lb, LocalBuffer) for lb in k.locals)
        assert sum(isinstance(s, Barrier) for s in walk(k.body)) == 2


@pytest.mark.parametrize("dt", [bf16, f16])
@pytest.mark.parametrize("make", [softmax_graph, layer_norm_graph, mlp_graph])
def test_16bit_inputs_accumulate_in_f32(make, dt):
    g = make(dt=dt)
    grp, r = run_fused(g, "h100-sxm")
    assert r.report["ok"], r.report
    (k,) = lower_group(grp, load_spec("h100-sxm"))
    text = repr(k.body) + repr(k.shared) + repr(k.locals)
    assert "f32" in text  # accumulators/shared tiles are f32
    out = next(iter(r.outputs.values()))
    assert out.dtype == dt.np_dtype


def test_fused_equals_unfused_bf16_values():
    """Intermediate nodes declared bf16 round to bf16 inside a fused chain."""
    b = GraphBuilder("chain")
    x = b.input("x", bf16, (37, 45))
    y = b.op("exp", b.op("mul", x, x))
    b.output(b.op("add", y, x))
    g = b.build()
    ins = random_inputs(g, 3)
    spec = load_spec("h100-sxm")
    fused = CpuSimBackend().run_graph(g, ins, spec, groups=[make_group(g, g.nodes, "f")])
    unfused = CpuSimBackend().run_graph(g, ins, spec, groups=trivial_groups(g))
    a = next(iter(fused.outputs.values())).astype(np.float32)
    u = next(iter(unfused.outputs.values())).astype(np.float32)
    np.testing.assert_array_equal(a, u)
