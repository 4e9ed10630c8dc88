"""A norm (RMSNorm, LayerNorm) fused into the following matmul as a prologue of its A operand
(hal.lowering.matmul_prologue): the planner makes norm + matmul one kernel with a reason, the
kernel recomputes the row statistics of its block's rows in a pre-pass and matches the
reference; norms needed elsewhere stay apart; the structural rule rejects reductions that
are not rows of A over K or come after the contraction; the cost model's issued bytes equal
cpu_sim's counts; the rendered kernel compiles for sm_90a and gfx942."""

from __future__ import annotations

import pytest

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.devices.loader import load_spec
from hal.dtypes import bf16, f32
from hal.fusion import plan
from hal.fusion.group import group_kind
from hal.fusion.plan import structural_veto
from hal.ir import GraphBuilder
from hal.lowering import lower_group
from hal.lowering.plan import PlanHints
from hal.lowering.tiling import MatmulTiles
from hal.ops.decompose import decompose_graph
from hal.reference import random_inputs

DEVICES = ["h100-sxm", "mi300x"]


def norm_matmul_graph(norm="rms_norm", m=37, k=45, n=29, dt=f32, extra_use=None):
    """x -> norm -> x_n @ wt^T; M=37 and K=45 divide no tile. `extra_use`: "output" makes the
    normalised x a graph output too, "neg" reads it by a non-matmul op as well."""
    b = GraphBuilder(f"{norm}_mm")
    x = b.input("x", dt, (m, k))
    w = b.input("w", dt, (k,))
    params = (x, w, b.input("bias", dt, (k,))) if norm == "layer_norm" else (x, w)
    h = b.op(norm, *params, name="h")
    b.output(b.op("matmul", h, b.input("wt", dt, (n, k)), transpose_b=True, name="y"))
    if extra_use == "output":
        b.output(h)
    elif extra_use == "neg":
        b.output(b.op("neg", h, name="hn"))
    return b.build()


def _fused_group(p):
    (grp,) = [g for g in p.groups if g.kind == "matmul"]
    return grp


def _sim_bytes(res) -> int:
    return sum(s["global_bytes_read"] + s["global_bytes_written"] for s in res.stats)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dt", [f32, bf16])
@pytest.mark.parametrize("norm,levels", [("rms_norm", 1), ("layer_norm", 2)])
def test_norm_fuses_into_matmul_and_matches_reference(norm, levels, dt, device):
    g = norm_matmul_graph(norm, dt=dt)
    spec = load_spec(device)
    p = plan(g, spec, measure=None)
    assert p.kernel_count() == 1
    grp = _fused_group(p)
    assert grp.ops.count("reduce_sum") == levels and "rsqrt" in grp.ops
    assert [v.name for v in grp.outputs] == ["y"]
    assert any(d.fused and "reduce_sum" in d.producer and "matmul" in d.consumer
               and "saves" in d.reason for d in p.decisions)
    assert any("norm prologue" in n for n in p.costs[grp.name].notes)
    (k,) = lower_group(grp, spec)
    assert sum(1 for s in k.shared if s.name.startswith("stat_")) == levels
    assert k.shared_bytes <= spec.shared_mem_per_block
    res = CpuSimBackend().run_graph(g, random_inputs(g, seed=2), spec)
    assert res.report["ok"], res.report
    assert len(res.stats) == 1
    # (e) the cost model's issued bytes are what the simulator counts
    assert _sim_bytes(res) == p.issued_bytes


@pytest.mark.parametrize("tiles", [{"bm": 16, "bn": 16, "bk": 8, "tm": 1, "tn": 1},
                                   {"bm": 8, "bn": 64, "bk": 8, "tm": 1, "tn": 1}])
def test_forced_tiles_more_warps_than_rows(tiles):
    """BM not a multiple of the warps (8 rows, 16 warps): masked rows, still exact."""
    from hal.fusion.group import make_group

    g = decompose_graph(norm_matmul_graph("layer_norm", dt=bf16))
    grp = make_group(g, g.nodes, "fused", hints=PlanHints(matmul_tiles=MatmulTiles(**tiles)))
    assert grp.kind == "matmul"
    spec = load_spec("h100-sxm")
    res = CpuSimBackend().run_graph(g, random_inputs(g, seed=5), spec, groups=[grp])
    assert res.report["ok"], res.report


@pytest.mark.parametrize("device", DEVICES)
def test_llama_mlp_norm_joins_the_dual_gemm(device):
    from hal.examples.build import make_llama_block

    g = make_llama_block(84, 19, "bf16", heads=2, kv_heads=1, ffn=52)
    spec = load_spec(device)
    p = plan(g, spec, measure=None)
    (mlp,) = [x for x in p.groups if x.kind == "matmul" and x.ops.count("dot_general") == 2]
    assert "reduce_sum" in mlp.ops and "sigmoid" in mlp.ops
    assert [v.name for v in mlp.outputs] == ["swiglu"]
    # reads the residual stream and the norm weight, not the normalised activations
    assert {v.name for v in mlp.inputs} == {"resid1", "ffn_norm.w", "w_gate", "w_up"}
    res = CpuSimBackend().run_graph(g, random_inputs(g, seed=1), spec)
    assert res.report["ok"], res.report
    assert _sim_bytes(res) == p.issued_bytes


def test_scratch_npu_plans_stay_valid():
    """32 KiB of shared memory: whatever is fused must lower within the limits."""
    spec = load_spec("scratch-npu")
    for norm in ("rms_norm", "layer_norm"):
        g = norm_matmul_graph(norm, m=70, k=300, n=150, dt=bf16)
        p = plan(g, spec, measure=None)
        for grp in p.groups:
            for k in lower_group(grp, spec):
                assert k.shared_bytes <= spec.shared_mem_per_block
                assert k.block <= spec.max_threads_per_block


@pytest.mark.parametrize("use", ["output", "neg"])
def test_norm_needed_elsewhere_stays_its_own_kernel(use):
    g = norm_matmul_graph("rms_norm", dt=bf16, extra_use=use)
    p = plan(g, load_spec("h100-sxm"), measure=None)
    kinds = {grp.kind: grp for grp in p.groups}
    assert "row_reduction" in kinds
    assert "reduce_sum" not in kinds["matmul"].ops
    assert CpuSimBackend().run_graph(g, random_inputs(g, seed=3), "h100-sxm").report["ok"]


def _rms_parts(b, x, axis=1):
    rows, cols = x.shape
    s = b.op("reduce_sum", b.op("mul", x, x), axes=[axis], keepdims=True)
    r = b.op("rsqrt", s)
    return b.op("mul", x, b.op("broadcast_to", r, shape=[rows, cols])), r


def test_structural_rule_for_prologue_reductions():
    # allowed: rows of A over K, feeding only A; group_kind calls it a matmul
    b = GraphBuilder("ok")
    x, w = b.input("x", f32, (8, 16)), b.input("w", f32, (16, 4))
    xn, _ = _rms_parts(b, x)
    b.output(b.op("matmul", xn, w))
    g = b.build()
    assert structural_veto(g.nodes) is None and group_kind(g.nodes) == "matmul"

    # a reduction over A's rows axis (a column statistic), not its contraction axis
    b = GraphBuilder("cols")
    x, w = b.input("x", f32, (8, 16)), b.input("w", f32, (16, 4))
    s = b.op("reduce_sum", x, axes=[0], keepdims=True)
    xn = b.op("mul", x, b.op("broadcast_to", s, shape=[8, 16]))
    b.output(b.op("matmul", xn, w))
    g = b.build()
    why = structural_veto(g.nodes)
    assert "column reduction" in why or "contraction axes" in why

    # A read transposed: K is A's leading axis, the row reduction is over M
    b = GraphBuilder("transposed")
    x, w = b.input("x", f32, (16, 8)), b.input("w", f32, (16, 4))
    xn, _ = _rms_parts(b, x)
    b.output(b.op("matmul", xn, w, transpose_a=True))
    assert "reads A transposed" in structural_veto(b.build().nodes)

    # a reduction after the contraction (a norm of the matmul result)
    b = GraphBuilder("after")
    x, w = b.input("x", f32, (8, 16)), b.input("w", f32, (16, 4))
    y, _ = _rms_parts(b, b.op("matmul", x, w))
    b.output(y)
    assert "cannot join a matmul's epilogue" in structural_veto(b.build().nodes)

    # the statistic also read by the epilogue
    b = GraphBuilder("epilogue")
    x, w = b.input("x", f32, (8, 16)), b.input("w", f32, (16, 4))
    xn, r = _rms_parts(b, x)
    b.output(b.op("mul", b.op("matmul", xn, w), b.op("broadcast_to", r, shape=[8, 4])))
    assert "epilogue reads a reduction result" in structural_veto(b.build().nodes)
    b = GraphBuilder("epilogue_direct")
    x, w = b.input("x", f32, (8, 16)), b.input("w", f32, (16, 1))
    xn, r = _rms_parts(b, x)
    b.output(b.op("mul", b.op("matmul", xn, w), r))   # [8, 1] * [8, 1]: r read directly
    assert "epilogue reads a reduction result" in structural_veto(b.build().nodes)

    # a norm of B
    b = GraphBuilder("b_operand")
    x, w = b.input("x", f32, (8, 16)), b.input("w", f32, (16, 4))
    wn, _ = _rms_parts(b, w)
    b.output(b.op("matmul", x, wn))
    assert "does not feed its A operand" in structural_veto(b.build().nodes)


def _fused_kernel(spec_name):
    g = norm_matmul_graph("layer_norm", m=70, k=300, n=150, dt=bf16)
    spec = load_spec(spec_name)
    grp = _fused_group(plan(g, spec, measure=None))
    assert "reduce_sum" in grp.ops
    (k,) = lower_group(grp, spec)
    return k, spec


@pytest.mark.parametrize("compiler,spec_name,arch", [("nvcc", "h100-sxm", "sm_90a"),
                                                     ("clang-19", "mi300x", "gfx942")])
def test_fused_norm_matmul_compiles(compiler, spec_name, arch, tmp_path, monkeypatch):
    from hal.backends.cuda.compiler import nvcc_available
    from hal.backends.rocm.compiler import clang_available
    from hal.render.check import check_kernels

    why = {"nvcc": nvcc_available, "clang-19": clang_available}[compiler]()
    if why:
        pytest.skip(why)
    monkeypatch.setenv("HAL_CACHE_DIR", str(tmp_path / "cache"))
    k, spec = _fused_kernel(spec_name)
    (rec,) = check_kernels([k], spec, [compiler], arch=arch, name="norm_mm",
                           raise_on_limit=False)
    assert rec.arch == arch and rec.registers and rec.status == "ok", rec.notes
