"""Sibling matmuls sharing their left operand (a "dual GEMM", SwiGLU's gate and up) become one
kernel: one A tile, one B tile and one accumulator micro-tile per contraction, the epilogue
silu(gate) * up sees both accumulators; the planner fuses them with a reason and the cost
model counts A once."""

from __future__ import annotations

import pytest

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.devices.loader import load_spec
from hal.dtypes import bf16, f32
from hal.fusion import plan
from hal.fusion.group import make_group
from hal.fusion.plan import structural_veto
from hal.ir import GraphBuilder
from hal.ir.text import load_graph
from hal.lowering import lower_group
from hal.lowering.plan import PlanHints
from hal.lowering.tiling import MatmulTiles
from hal.reference import random_inputs

SPECS = ["h100-sxm", "mi300x", "scratch-npu"]


def swiglu_graph(m=70, k=45, n=37, dt=f32, cast=False):
    b = GraphBuilder("swiglu")
    x = b.input("x", dt, (m, k))
    wg, wu = b.input("wg", dt, (n, k)), b.input("wu", dt, (n, k))
    gate = b.op("matmul", x, wg, transpose_b=True)
    up = b.op("matmul", x, wu, transpose_b=True)
    g32 = b.op("cast", gate, dtype=f32) if cast else gate
    act = b.op("mul", g32, b.op("sigmoid", g32))
    act = b.op("cast", act, dtype=dt) if cast else act
    b.output(b.op("mul", act, up, name="y"))
    return b.build()


def dual_group(g, hints=None):
    grp = make_group(g, g.nodes, "dual", hints=hints)
    grp.kind = "matmul"  # group_kind calls any two contractions an attention
    return grp


@pytest.mark.parametrize("spec_name", SPECS)
@pytest.mark.parametrize("dt,cast", [(f32, False), (bf16, False), (bf16, True)])
@pytest.mark.parametrize("tiles", [None, {"bm": 32, "bn": 16, "bk": 8, "tm": 4, "tn": 2}])
def test_dual_matmul_one_kernel_matches_reference(spec_name, dt, cast, tiles):
    g = swiglu_graph(dt=dt, cast=cast)
    assert structural_veto(g.nodes) is None
    grp = dual_group(g, PlanHints(matmul_tiles=MatmulTiles(**tiles)) if tiles else None)
    spec = load_spec(spec_name)
    (k,) = lower_group(grp, spec)
    assert k.meta.plan.detail("contractions") == 2
    # one A tile, two B tiles, two accumulators (and one A and one B fragment array on the
    # matrix unit, which bf16 takes unless SIMT tiles are forced)
    mma = k.meta.plan.strategy == "mma"
    assert mma == (dt == bf16 and tiles is None)
    assert len(k.shared) == 3 and len(k.locals) == (4 if mma else 2)
    assert k.shared_bytes <= spec.shared_mem_per_block
    r = CpuSimBackend().run_graph(g, random_inputs(g, 1), spec, groups=[grp])
    assert r.report["ok"], r.report
    assert len(r.stats) == 1 and k.meta.outputs == ("y",)


def test_dual_tiles_fit_the_spec_with_two_operands():
    from hal.lowering.tiling import matmul_registers, matmul_shared_bytes, matmul_tiles

    for name in SPECS:
        spec = load_spec(name)
        t = matmul_tiles(2048, 14336, 4096, 4, spec, operands=2)
        assert matmul_shared_bytes(t, 4, 2) <= spec.shared_mem_per_block
        assert matmul_registers(t, 2) <= spec.registers_per_thread_at(t.threads)


def test_structural_rule_for_sibling_contractions():
    b = GraphBuilder("qk")
    x = b.input("x", f32, (8, 16))
    w1, w2 = b.input("w1", f32, (16, 8)), b.input("w2", f32, (16, 4))
    b.output(b.op("add", b.op("matmul", x, w1), b.op("matmul", x, w1)))
    b.output(b.op("matmul", x, w2))
    g = b.build()
    assert structural_veto(g.nodes[:3]) is None           # equal shapes, shared A
    # different N: one grid segment each (test_fusion_sibling_matmul.py) ...
    assert structural_veto([g.nodes[0], g.nodes[3]]) is None
    b = GraphBuilder("qk_concat")
    x = b.input("x", f32, (8, 16))
    w1, w2 = b.input("w1", f32, (16, 8)), b.input("w2", f32, (16, 4))
    b.output(b.op("concat", b.op("matmul", x, w1), b.op("matmul", x, w2), axis=1))
    g = b.build()
    assert "differ" in structural_veto(g.nodes)   # ... unless an epilogue combines them
    b = GraphBuilder("chain")
    x, w = b.input("x", f32, (8, 8)), b.input("w", f32, (8, 8))
    b.output(b.op("matmul", b.op("matmul", x, w), w))
    g = b.build()
    assert "one contraction per kernel" in structural_veto(g.nodes)


def test_llama_plan_fuses_gate_up_and_silu_mul():
    g = load_graph("examples/llama_block_d4096_s128.hal")
    for dev in ("h100-sxm", "mi300x"):
        p = plan(g, load_spec(dev), measure=None)
        (dual,) = [x for x in p.groups if x.kind == "matmul"
                   and x.ops.count("dot_general") == 2]
        assert "sigmoid" in dual.ops and [v.name for v in dual.outputs] == ["swiglu"]
        assert any("fused" in r for r in dual.reasons)
        assert any(d.fused and "gate.act" in d.producer and "swiglu" in d.consumer
                   for d in p.decisions)
        # Q, K and V projections are one kernel too (test_fusion_sibling_matmul.py), with
        # the attention norm as its prologue; on sm_90a both take the Hopper (wgmma + TMA)
        # GEMM, its A prologue rewritten in shared memory (hal.lowering.matmul_wgmma_prologue)
        assert p.kernel_count() == 5
        assert any(n.op == "reduce_sum" for n in dual.nodes)    # the FFN norm's statistics
        if dev == "h100-sxm":
            assert "prologue rewritten" in p.costs[dual.name].plan.detail("matmul_path")[1]


def test_llama_s2048_modelled_bytes_drop():
    g = load_graph("examples/llama_block_d4096_s2048.hal")
    p = plan(g, load_spec("mi300x"), measure=None)
    (dual,) = [x for x in p.groups if x.ops.count("dot_general") == 2 and x.kind == "matmul"]
    # before dual GEMMs: 11 kernels, 1.3 GiB modelled (gate.act written and read back, h twice);
    # the fused QKV projection reads h once instead of three times.
    assert p.kernel_count() == 5
    assert p.modelled_bytes < 1.2 * (1 << 30)
    c = p.costs[dual.name]
    assert c.flops >= 2 * (2 * 2048 * 14336 * 4096)   # both contractions' flops


def test_llama_s2048_on_h100_fuses_both_norms_into_wgmma_gemms():
    """sm_90a: the norms are prologues of the Hopper GEMMs (QKV in three column-panel
    segments, gate/up dual GEMM) and the head-merge transpose is read by the output
    projection's 3-d tensor map; all four GEMMs on wgmma. The attention takes the wgmma
    kernel too, which TMA must feed, so the fusion cost comparison puts the rotary in a
    kernel of its own: 6 kernels (mi300x: 5, the rotary inside its MFMA attention)."""
    g = load_graph("examples/llama_block_d4096_s2048.hal")
    p = plan(g, load_spec("h100-sxm"), measure=None)
    assert p.kernel_count() == 6
    (att,) = [x for x in p.groups if x.kind == "attention"]
    assert p.costs[att.name].plan.strategy == "flash_attention_wgmma"
    mms = [x for x in p.groups if x.kind == "matmul"]
    assert len(mms) == 4
    for grp in mms:
        assert p.costs[grp.name].plan.strategy == "wgmma", grp.name
    normed = [x for x in mms if any(n.op == "reduce_sum" for n in x.nodes)]
    assert len(normed) == 2
    assert {x.ops.count("dot_general") for x in normed} == {2, 3}
    assert any("transpose" in x.ops for x in mms)
    assert p.modelled_bytes < 0.9 * (1 << 30)
