"""Sibling contractions sharing A with different N (a fused QKV projection with grouped-query
attention) become one kernel: grid.x concatenates the column panels of every sibling, each block
runs its sibling's k-loop and epilogue behind a block-uniform branch; the planner merges them
as siblings, the cost model reads A once and counts what cpu_sim counts."""

from __future__ import annotations

import pytest

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.devices.loader import load_spec
from hal.dtypes import bf16, f32
from hal.examples.build import make_llama_block
from hal.fusion import plan
from hal.fusion.group import make_group
from hal.fusion.plan import structural_veto
from hal.ir import GraphBuilder
from hal.kernel.ir import Barrier, If
from hal.lowering import lower_group
from hal.lowering.matmul import sibling_contractions, sibling_segments
from hal.lowering.plan import PlanHints
from hal.lowering.tiling import MatmulTiles
from hal.reference import random_inputs

SPECS = ["h100-sxm", "mi300x"]


def qkv_graph(m=37, k=45, nq=43, nkv=19, dt=f32, epilogues=False):
    """x @ wq^T, x @ wk^T, x @ wv^T; with `epilogues`, q + bias and cast(k) to f32."""
    b = GraphBuilder("qkv")
    x = b.input("x", dt, (m, k))
    wq, wk, wv = (b.input(f"w{c}", dt, (n, k)) for c, n in zip("qkv", (nq, nkv, nkv),
                                                                    strict=True))
    q = b.op("matmul", x, wq, transpose_b=True, name="q")
    kk = b.op("matmul", x, wk, transpose_b=True, name="k")
    v = b.op("matmul", x, wv, transpose_b=True, name="v")
    if epilogues:
        bias = b.input("bq", dt, (nq,))
        q = b.op("add", q, b.op("broadcast_to", bias, shape=[m, nq]), name="q_bias")
        kk = b.op("cast", kk, dtype=f32, name="k32")
    for val in (q, kk, v):
        b.output(val)
    return b.build()


def _walk(stmts):
    for s in stmts:
        yield s
        for f in ("then", "orelse", "body"):
            yield from _walk(getattr(s, f, []) or [])


@pytest.mark.parametrize("spec_name", SPECS)
@pytest.mark.parametrize("dt", [f32, bf16])
@pytest.mark.parametrize("epilogues", [False, True])
def test_qkv_one_kernel_matches_reference(spec_name, dt, epilogues):
    g = qkv_graph(dt=dt, epilogues=epilogues)
    assert structural_veto(g.nodes) is None
    segs = sibling_segments(g.nodes)
    assert segs is not None and [sum(n.op == "matmul" for n in s) for s in segs] == [1, 1, 1]
    grp = make_group(g, g.nodes, "qkv")
    assert grp.kind == "matmul"
    spec = load_spec(spec_name)
    (kern,) = lower_group(grp, spec)
    kp = kern.meta.plan
    assert kp.detail("column_segments") == (43, 19, 19) and kp.detail("contractions") == 3
    t = kp.tile_sizes
    npm = -(-37 // t["bm"])
    assert kern.grid[0] == sum(npm * -(-n // t["bn"]) for n in (43, 19, 19))
    # one A and one B tile, one accumulator (and, on the matrix unit, one A and one B
    # fragment array), reused by every segment
    mma = kp.strategy == "mma"
    assert mma == (dt == bf16)
    assert len(kern.shared) == 2 and len(kern.locals) == (3 if mma else 1)
    # the segments are a block-uniform if / else chain holding the k-loop barriers
    branches = [s for s in kern.body if isinstance(s, If)]
    assert len(branches) == 1 and any(isinstance(s, Barrier) for s in _walk(branches[0].then))
    r = CpuSimBackend().run_graph(g, random_inputs(g, 1), spec, groups=[grp])
    assert r.report["ok"], r.report
    assert len(r.stats) == 1
    assert sorted(kern.meta.outputs) == sorted(v.name for v in g.outputs)


@pytest.mark.parametrize("spec_name", SPECS)
def test_forced_tiles_and_uneven_segments(spec_name):
    g = qkv_graph(m=29, k=21, nq=33, nkv=9)
    grp = make_group(g, g.nodes, "qkv", hints=PlanHints(matmul_tiles=MatmulTiles(16, 8, 8, 2, 2)))
    (kern,) = lower_group(grp, load_spec(spec_name))
    assert kern.grid[0] == 2 * (5 + 2 + 2)
    r = CpuSimBackend().run_graph(g, random_inputs(g, 2), spec_name, groups=[grp])
    assert r.report["ok"], r.report


@pytest.mark.parametrize("spec_name", SPECS)
@pytest.mark.parametrize("dt", ["f32", "bf16"])
def test_gqa_block_fuses_q_k_v_into_one_kernel(spec_name, dt):
    g = make_llama_block(d=96, s=29, dt=dt, heads=6, kv_heads=2, ffn=80)
    spec = load_spec(spec_name)
    p = plan(g, spec, measure=None)
    (qkv,) = [x for x in p.groups if x.kind == "matmul" and x.ops.count("dot_general") == 3]
    assert "multi_dot_general" in qkv.name
    assert sorted(v.name for v in qkv.outputs) == ["k", "q", "v"]
    assert any(d.fused and d.reason.startswith("fused siblings") and "%v" in d.consumer
               for d in p.decisions)
    assert any("sibling contractions read A once" in n for n in p.costs[qkv.name].notes)
    unfused = plan(g, spec, fuse=False, measure=None)
    assert p.kernel_count() < unfused.kernel_count()
    r = CpuSimBackend().run_graph(p.graph, random_inputs(g, 0), spec, groups=p.groups)
    assert r.report["ok"], r.report
    (st,) = [x for x in r.stats if x["group"] == qkv.name]
    assert st["global_bytes"] == p.costs[qkv.name].issued   # the cost model's issued bytes


def test_structural_rule_for_different_n_siblings():
    b = GraphBuilder("rules")
    x, y = b.input("x", f32, (8, 16)), b.input("y", f32, (8, 16))
    w1, w2 = b.input("w1", f32, (16, 8)), b.input("w2", f32, (16, 4))
    q = b.op("matmul", x, w1)
    kk = b.op("matmul", x, w2)
    other = b.op("matmul", y, w2)
    wide = b.op("concat", q, kk, axis=1)  # combines both results
    b.output(b.op("exp", q))
    b.output(b.op("neg", kk))
    b.output(other)
    b.output(wide)
    g = b.build()
    q, kk, other, wide, eq, nk = g.nodes[:6]
    assert structural_veto([q, kk]) is None                    # different N, shared A
    assert structural_veto([q, kk, eq, nk]) is None            # each epilogue reads one
    why = structural_veto([kk, other])
    assert "must share their left operand" in why              # different A
    why = structural_veto([q, kk, wide])
    assert "differ" in why and "concat" in why and "combines them" in why
    assert isinstance(sibling_contractions([q, kk, wide]), str)
    # an epilogue a single matmul could not take stays out of a segment too
    b = GraphBuilder("moves")
    x, w1, w2 = b.input("x", f32, (8, 16)), b.input("w1", f32, (16, 8)), b.input("w2", f32,
                                                                                 (16, 4))
    q, kk = b.op("matmul", x, w1), b.op("matmul", x, w2)
    b.output(b.op("transpose", q, perm=[1, 0]))
    b.output(kk)
    g = b.build()
    assert "epilogue keeps the output layout" in structural_veto(g.nodes)


def test_planner_keeps_non_sibling_matmuls_apart_with_reason():
    b = GraphBuilder("shared_b")
    x, y = b.input("x", f32, (24, 32)), b.input("y", f32, (24, 32))
    w = b.input("w", f32, (32, 20))
    b.output(b.op("matmul", x, w, name="xa"))
    b.output(b.op("matmul", y, w, name="ya"))
    g = b.build()
    p = plan(g, load_spec("h100-sxm"), measure=None)
    assert p.kernel_count() == 2
    assert any(not d.fused and "must share their left operand" in d.reason
               for d in p.decisions)


@pytest.mark.parametrize("spec_name", SPECS + ["scratch-npu"])
def test_issued_bytes_agree_with_simulator(spec_name):
    g = qkv_graph(m=70, k=45, nq=41, nkv=19, epilogues=True)
    spec = load_spec(spec_name)
    p = plan(g, spec, measure=None)
    (qkv,) = [x for x in p.groups if x.kind == "matmul"]
    assert qkv.ops.count("matmul") == 3
    if spec_name != "scratch-npu":   # its register budget may keep epilogues apart
        assert p.kernel_count() == 1
    c = p.costs[qkv.name]
    r = CpuSimBackend().run_graph(g, random_inputs(g, 3), spec, measure=None)
    assert r.report["ok"], r.report
    (st,) = [x for x in r.stats if x["group"] == qkv.name]
    assert st["global_bytes"] == c.issued
    assert sum(x["global_bytes"] for x in r.stats) == p.issued_bytes
    assert st["grid"][0] == c.blocks
    # A is loaded once per column panel of every sibling, each B once per row panel
    t = st["plan"]["tiles"]
    npm = -(-70 // t["bm"])
    panels = sum(-(-n // t["bn"]) for n in (41, 19, 19))
    a_b, w_b = 70 * 45 * 4, (41 + 19 + 19) * 45 * 4
    bias = 70 * 41 * 4 if "add" in qkv.ops else 0   # loaded per output element
    assert c.issued - sum(v.type.nbytes for v in qkv.outputs) == panels * a_b + npm * w_b + bias
    # DRAM: A once, each B once (the operands fit in L2)
    assert c.dram_read == a_b + w_b + (41 * 4 if bias else 0)
