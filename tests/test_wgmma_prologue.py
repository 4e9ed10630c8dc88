"""The Hopper GEMM's A prologue (hal.lowering.matmul_wgmma_prologue) and its sibling
segments of different N (hal.lowering.matmul_wgmma) on cpu_sim: the plan takes the wgmma path
and says so, the kernel rewrites the TMA tile in place (fence.proxy.async, a warpgroup
mbarrier), results match the float64 reference, and the planted fault is caught."""

from __future__ import annotations

import pytest

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.devices.loader import load_spec
from hal.dtypes import bf16, f16, f32
from hal.fusion.group import make_group
from hal.ir import GraphBuilder
from hal.kernel import ir_async as ira
from hal.kernel.ir import Store, walk_stmts
from hal.lowering import lower_group
from hal.lowering.options import LoweringOptions
from hal.ops.decompose import decompose_graph
from hal.reference import random_inputs


@pytest.fixture(autouse=True)
def _no_measure(monkeypatch):
    monkeypatch.setenv("HAL_MEASURE", "off")


def _run(g, spec_name="h100-sxm", options=None):
    spec = load_spec(spec_name)
    g = decompose_graph(g)
    grp = make_group(g, g.nodes, "g")
    opts = options or LoweringOptions()
    (k,) = lower_group(grp, spec, options=opts)
    r = CpuSimBackend().run_graph(g, random_inputs(g, 1), spec, groups=[grp],
                                  lowering_options=opts)
    return k, r


def _norm_mm(m, k, n, norm="rms_norm", dt=bf16, view=0, tb=True):
    b = GraphBuilder("nm")
    x = b.input("x", dt, (view, m // view, k) if view else (m, k))
    w = b.input("w", dt, (k,))
    y = b.op(norm, x, w) if norm == "rms_norm" else b.op(norm, x, w, b.input("bb", dt, (k,)))
    if view:
        y = b.op("reshape", y, shape=[m, k])
    wm = b.input("wm", dt, (n, k) if tb else (k, n))
    b.output(b.op("matmul", y, wm, transpose_b=tb))
    return b.build()


def _assert_prologue_kernel(kern):
    plan = kern.meta.plan
    assert plan.strategy == "wgmma", plan.detail("matmul_path")
    path, why = plan.detail("matmul_path")
    assert path == "wgmma+tma" and "prologue rewritten in shared memory" in why
    stmts = list(walk_stmts(kern.body))
    (roles,) = [s for s in stmts if isinstance(s, ira.Roles)]
    cons = list(walk_stmts(roles.second))
    # the consumers: wait full, rewrite the tile (a shared store), fence.proxy.async, arrive
    # and wait on their warpgroup's ready barrier, then wgmma
    order = [type(s) for s in cons if isinstance(s, (ira.MbarrierWait, ira.FenceProxyAsync,
                                                      ira.MbarrierArrive, ira.Wgmma, Store))]
    i_fence = order.index(ira.FenceProxyAsync)
    assert Store in order[:i_fence] and ira.Wgmma in order[i_fence:]
    assert order[i_fence + 1] is ira.MbarrierArrive and order[i_fence + 2] is ira.MbarrierWait
    assert any(s.name.startswith("ready_bar") for s in kern.shared)


@pytest.mark.parametrize("spec_name", ["h100-sxm", "h200"])
@pytest.mark.parametrize("m,k,n,norm,view,tb", [
    (64, 64, 64, "rms_norm", 0, True),        # one consumer warpgroup
    (200, 136, 72, "rms_norm", 0, True),      # two consumers, edges in M, N and K
    (130, 72, 96, "layer_norm", 0, False),    # two reductions; the K tail must stay zero
    (96, 64, 128, "rms_norm", 2, True),       # torch's x.view(-1, d) before the Linear
])
def test_norm_prologue_on_the_hopper_path(spec_name, m, k, n, norm, view, tb):
    kern, r = _run(_norm_mm(m, k, n, norm, view=view, tb=tb), spec_name)
    _assert_prologue_kernel(kern)
    assert r.report["ok"], r.report


def test_prologue_refusals_keep_mma_sync_with_a_reason():
    # an f32 stream normalised and cast to bf16: the tile TMA lands is not A's dtype
    b = GraphBuilder("nm32")
    x = b.input("x", f32, (64, 64))
    y = b.op("cast", b.op("rms_norm", x, b.input("w", f32, (64,))), dtype="bf16")
    b.output(b.op("matmul", y, b.input("wm", bf16, (64, 64)), transpose_b=True))
    kern, r = _run(b.build())
    assert kern.meta.plan.strategy == "mma" and r.report["ok"]
    path, why = kern.meta.plan.detail("matmul_path")
    assert path == "mma.sync" and "prologue" in why and "f32" in why


def test_dual_gemm_with_norm_prologue():
    b = GraphBuilder("swiglu")
    x = b.input("x", bf16, (96, 64))
    h = b.op("rms_norm", x, b.input("nw", bf16, (64,)))
    gate = b.op("matmul", h, b.input("wg", bf16, (128, 64)), transpose_b=True)
    up = b.op("matmul", h, b.input("wu", bf16, (128, 64)), transpose_b=True)
    b.output(b.op("mul", b.op("mul", gate, b.op("sigmoid", gate)), up))
    kern, r = _run(b.build())
    _assert_prologue_kernel(kern)
    assert kern.meta.plan.detail("contractions") == 2
    assert r.report["ok"], r.report


@pytest.mark.parametrize("norm", [None, "rms_norm"])
def test_sibling_segments_of_different_n(norm):
    """Q, K, V projections of different N sharing A: one column-panel segment each, each
    with its own B tensor maps, behind a block-uniform branch."""
    b = GraphBuilder("qkv")
    x = b.input("x", f16, (128, 64))
    h = x if norm is None else b.op(norm, x, b.input("nw", f16, (64,)))
    for name, n in (("q", 128), ("k", 64), ("v", 64)):
        b.output(b.op("matmul", h, b.input("w" + name, f16, (n, 64)), transpose_b=True))
    kern, r = _run(b.build())
    plan = kern.meta.plan
    assert plan.strategy == "wgmma" and "3 column-panel segments" in \
        plan.detail("matmul_path")[1]
    assert plan.detail("column_segments") == (128, 64, 64)
    assert len([t for t in kern.tensor_maps if t.name.startswith("tmap_b")]) == 3
    assert len([s for s in walk_stmts(kern.body) if isinstance(s, ira.Roles)]) == 3
    assert r.report["ok"], r.report


def _f32_scale_mm(m, k, n):
    """A = bf16(f32(x) * s) with an f32 per-column scale: the chunk's 8 scales are two
    16-byte loads."""
    b = GraphBuilder("scale_mm")
    s = b.op("broadcast_to", b.input("s", f32, (k,)), shape=[m, k])
    y = b.op("cast", b.op("mul", b.op("cast", b.input("x", bf16, (m, k)), dtype="f32"), s),
             dtype="bf16")
    b.output(b.op("matmul", y, b.input("wm", bf16, (n, k)), transpose_b=True))
    return b.build()


@pytest.mark.parametrize("graph,weight_loads", [
    (lambda: _norm_mm(200, 136, 72), 1),                        # edges in M, N and K
    (lambda: _norm_mm(130, 72, 96, "layer_norm", tb=False), 2),  # weight and bias
    # the view, f16: through the reshape the weight's column is an unravelled flat index,
    # which the rewrite does not prove contiguous: the weight stays a load per element
    (lambda: _norm_mm(96, 64, 128, view=2, dt=f16), 1),
    (lambda: _f32_scale_mm(130, 72, 96), 2),                    # f32: two 16-byte loads
])
def test_vector_rewrite_is_bitwise_the_scalar_one(graph, weight_loads):
    """The 16-byte chunk rewrite (LDS.128/STS.128, the norm weight as 16-byte loads) does the
    same element math in the same order as the element-by-element one: cpu_sim's outputs
    are bitwise equal."""
    from hal.kernel.ir import VecCopy
    g = graph()

    def copies(kern):
        vc = [s for s in walk_stmts(kern.body) if isinstance(s, VecCopy)]
        return ([s for s in vc if "a_tile" in (s.dst, s.src)],
                [s for s in vc if s.dst.startswith("pw_") and s.width * 4 >= 16])

    kv, rv = _run(g)
    ks, rs = _run(g, options=LoweringOptions(scalar_prologue=True))
    assert [len(c) for c in copies(kv)] == [2, weight_loads]   # x in and out, weights
    assert copies(ks) == ([], [])
    assert rv.report["ok"] and rs.report["ok"], (rv.report, rs.report)
    for name, out in rs.outputs.items():
        assert out.dtype == rv.outputs[name].dtype
        assert out.tobytes() == rv.outputs[name].tobytes(), name


def test_unswizzled_prologue_fault_is_caught():
    g = _norm_mm(64, 64, 64)
    opts = LoweringOptions.planting("wgmma_prologue_unswizzled")
    kern, r = _run(g, options=opts)
    assert kern.meta.plan.strategy == "wgmma"
    assert not r.report["ok"]


def test_missing_proxy_fence_is_a_race():
    """The prologue's rewrite is a generic-proxy write; wgmma reads through the async proxy.
    Without fence.proxy.async between them cpu_sim names the race (kernel, word, writer)."""
    from hal.backends.cpu_sim.checks import SimulationError

    g = _norm_mm(64, 64, 64)
    with pytest.raises(SimulationError, match="generic proxy with no fence.proxy.async"):
        _run(g, options=LoweringOptions.planting("wgmma_prologue_no_proxy_fence"))


def test_missing_warpgroup_barrier_is_a_race():
    """The four warps of a consumer warpgroup each rewrite part of the A stage; wgmma reads
    all of it. Without the warpgroup's mbarrier between them, cpu_sim (whose lanes run in
    lock step, so the numbers come out right) still names the race and the writer."""
    from hal.backends.cpu_sim.checks import SimulationError

    g = _norm_mm(64, 64, 64)
    with pytest.raises(SimulationError, match="stored with no barrier since; the writer "
                                              "never arrived on an mbarrier"):
        _run(g, options=LoweringOptions.planting("wgmma_prologue_no_warpgroup_barrier"))


@pytest.mark.parametrize("heads,s,d,n", [(4, 96, 128, 64), (2, 130, 64, 128)])
def test_head_merge_view_is_read_by_a_4d_tensor_map(heads, s, d, n):
    """The attention output [1, H, S, D] -> [S, H, D] -> [S, H*D] before the output
    projection: TMA reads A's tiles through the transpose (dims (D, S, H, 1)), no copy
    kernel; a K tile stays inside one head."""
    b = GraphBuilder("oproj")
    attn = b.input("attn", bf16, (1, heads, s, d))
    y = b.op("reshape", attn, shape=[heads, s, d])
    y = b.op("transpose", y, perm=[1, 0, 2])
    y = b.op("reshape", y, shape=[s, heads * d])
    b.output(b.op("matmul", y, b.input("wo", bf16, (n, heads * d)), transpose_b=True))
    kern, r = _run(b.build())
    assert kern.meta.plan.strategy == "wgmma", kern.meta.plan.detail("matmul_path")
    assert "view of %attn" in kern.meta.plan.detail("matmul_path")[1]
    (ta,) = [t for t in kern.tensor_maps if t.name.startswith("tmap_a")]
    assert ta.dims == (d, s, heads) and ta.strides == (d * 2, s * d * 2)
    assert ta.box == (64, kern.meta.plan.detail("wgmma_choice").tiles.bm, 1)
    assert r.report["ok"], r.report


def test_a_view_refusals():
    from hal.lowering.tma_views import _reshape, a_view

    # [H, S, D] transposed to [S, H, D], reshaped to [S, H * D]: K is two pieces
    assert _reshape([[(3, 8)], [(2, 24)], [(8, 1)]], [3, 16]) == [[(3, 8)], [(2, 24), (8, 1)]]
    assert _reshape([[(12, 1)]], [3, 4]) == [[(3, 4)], [(4, 1)]]
    assert _reshape([[(6, 1)]], [4, 3]) is None      # 4 does not divide 6
    b = GraphBuilder("ta")
    x = b.input("x", bf16, (64, 128))
    b.output(b.op("matmul", b.op("transpose", x, perm=[1, 0]), b.input("w", bf16, (64, 64))))
    g = b.build()
    producers = {o.name: nd for nd in g.nodes for o in nd.outputs}
    dot = [nd for nd in g.nodes if nd.op == "matmul"][0]
    assert "not contiguous" in a_view(dot, producers, 64, 64)


def test_lane_split_proves_only_chunk_contiguous_indices():
    """lane_split: x(gk0 + e) == base + e (lane) or == base for all e < 8, checked by
    evaluating both sides; forms it cannot prove are refused (None)."""
    from hal.dtypes import i32
    from hal.kernel.ir import Binary, Const, Var
    from hal.lowering.matmul_wgmma_prologue import lane_split

    gk, gk0, m = Var("gk", i32), Var("gk0", i32), Var("m", i32)

    def c(v):
        return Const(v, i32)

    def ev(x, env):
        if isinstance(x, Const):
            return x.value
        if isinstance(x, Var):
            return env[x.name]
        a, b = ev(x.a, env), ev(x.b, env)
        return {"add": lambda: a + b, "mul": lambda: a * b, "div": lambda: a // b,
                "remainder": lambda: a % b}[x.op]()

    flat = Binary("add", Binary("mul", m, c(64)), gk)      # a view's flat index, D = 64
    proved = [gk, flat, Binary("remainder", flat, c(64)), Binary("div", flat, c(64)),
              Binary("remainder", Binary("div", flat, c(64)), c(48)), Binary("mul", m, c(3))]
    for x in proved:
        base, lane = lane_split(x, gk, gk0, 8)
        for mv in (0, 1, 5):
            for g0 in (0, 8, 56, 64, 120):
                for e in range(8):
                    env = {"gk": g0 + e, "gk0": g0, "m": mv}
                    assert ev(x, env) == ev(base, env) + (e if lane else 0), (x, env)
    refused = [Binary("mul", gk, c(2)), Binary("remainder", flat, c(12)),
               Binary("div", flat, c(4)), Binary("add", Binary("mul", m, c(3)), gk),
               Binary("add", gk, gk)]
    assert all(lane_split(x, gk, gk0, 8) is None for x in refused)
