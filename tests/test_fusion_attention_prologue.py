"""Operand prologues fused into attention: the rotary embedding of q and k (mul by cos,
rotate_half's slice/neg/concat, mul by sin, add, casts, and the cos/sin tables computed from
iota) joins the attention group, the tile loads evaluate it (rounding where the graph rounds),
so no separate rotary kernel writes q and k back. Matches the reference on cpu_sim with the
race checks on, one- and two-pass, prefill and split-K decode; a rotated value needed
elsewhere stays outside; the modelled issued bytes equal what the simulator counts."""

from __future__ import annotations

import numpy as np
import pytest

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.backends.cuda.render import render_cuda
from hal.backends.rocm.render import render_hip
from hal.conformance.compare import check, diff
from hal.conformance.tolerance import output_bounds
from hal.devices.loader import load_spec
from hal.dtypes import dtype
from hal.examples.build import _rope_tables, make_llama_block
from hal.fusion import plan
from hal.fusion.attention import attention_candidates
from hal.fusion.cost import node_flops
from hal.ir import GraphBuilder
from hal.lowering import lower_group, plan_group
from hal.lowering.attention import match_attention, operand_prologues
from hal.ops.decompose import decompose_graph
from hal.reference import random_inputs

SPECS = ["h100-sxm", "mi300x"]
ROTARY_OPS = {"cos", "sin", "iota", "slice", "neg", "concat"}


def small_llama(dt: str = "bf16", s: int = 64):
    return make_llama_block(256, s, dt=dt, heads=4, kv_heads=2, ffn=256)


def _rope_nodes(nodes) -> list[str]:
    return [n.outputs[0].name for n in nodes
            if n.outputs[0].name.startswith(("q.rope", "k.rope", "rope."))]


def _att(p):
    (att,) = [x for x in p.groups if x.kind == "attention"]
    return att


def _agrees(g, inputs, fused) -> None:
    """Fused output within the conformance bound of the reference (and of unfused)."""
    assert fused.report["ok"], fused.report
    for name, b in output_bounds(g, inputs).items():
        assert check(fused.outputs[name], b).ok, check(fused.outputs[name], b)


@pytest.mark.parametrize("device", SPECS)
@pytest.mark.parametrize("dt", ["f32", "bf16"])
def test_llama_rotary_runs_inside_the_attention_kernel(device, dt):
    g = small_llama(dt, s=128)
    spec = load_spec(device)
    p = plan(g, spec)
    att = _att(p)
    # the rotary embedding (and its cos/sin tables) is in the attention group, nowhere else
    assert ROTARY_OPS <= set(att.ops), att.ops
    assert all(not _rope_nodes(x.nodes) for x in p.groups if x is not att)
    assert {v.name for v in att.inputs} == {"q", "k", "v", "rope.inv_freq"}
    pat = match_attention(att.nodes)
    assert pat.two_pass == (dt == "bf16")
    pro = operand_prologues(pat, att.nodes)
    assert {"cos", "sin", "concat"} <= {n.op for n in pro["q"]} & {n.op for n in pro["k"]}
    assert {n.op for n in pro["v"]} <= {"reshape", "transpose"}
    inputs = random_inputs(g, seed=7)
    fused = CpuSimBackend().run_graph(g, inputs, spec, check=True)
    _agrees(g, inputs, fused)
    (st,) = [x for x in fused.stats if x["kind"] == "attention"]
    assert st["plan"]["passes"] == (2 if dt == "bf16" else 1)
    # only O leaves the kernel: rotated q and k are never written
    out = pat.pv.outputs[0]
    assert st["global_bytes_written"] == out.type.numel * out.dtype.itemsize
    # the model's issued bytes are what the kernel loads and stores, prologue included
    assert st["global_bytes"] == p.costs[att.name].issued
    if dt == "bf16":   # P and the rotated q, k round where the graph rounds them
        unfused = CpuSimBackend().run_graph(g, inputs, spec, fuse=False)
        for name, b in output_bounds(g, inputs).items():
            a, u = fused.outputs[name], unfused.outputs[name]
            assert diff(a, u, b).ok, diff(a, u, b)
            assert np.mean(a == u) >= 0.99


def test_llama_d4096_plan_has_no_rotary_kernel():
    g = make_llama_block(4096, 128, ffn=14336)
    for device in SPECS:
        p = plan(g, load_spec(device))
        att = _att(p)
        assert ROTARY_OPS <= set(att.ops)
        assert all(not _rope_nodes(x.nodes) for x in p.groups if x is not att)
        assert not [x for x in p.groups if x.kind == "pointwise"]


def test_prologue_flops_count_the_recomputation():
    """K's prologue runs once per tile of query rows (and per pass), Q's once."""
    g = small_llama("bf16", s=128)
    spec = load_spec("mi300x")
    p = plan(g, spec)
    att = _att(p)
    pat = match_attention(att.nodes)
    rt = -(-pat.m // plan_group(att, spec).tile_sizes["br"])
    assert rt > 1
    loads = {"q": 1, "k": 2 * rt, "v": rt}
    evals: dict[int, int] = {}
    for role, ns in operand_prologues(pat, att.nodes).items():
        for n in ns:
            evals[id(n)] = evals.get(id(n), 0) + loads[role]
    extra = sum(node_flops(n) * (evals[id(n)] - 1) for n in att.nodes if id(n) in evals)
    assert extra > 0
    c = p.costs[att.name]
    assert c.flops == sum(node_flops(n) for n in att.nodes) + node_flops(pat.qk) + extra
    assert any(n.startswith("operand prologues") for n in c.notes), c.notes


def decode_rope_graph(h=8, hk=2, t=700, d=32, dt="f32", q_out=False):
    """One query row per head at position t-1, keys at 0..t-1, both rotated in the graph
    (cos/sin tables from iota; q's row of them is a slice)."""
    b = GraphBuilder("decode_rope")
    q = b.input("q", dtype(dt), (1, h, d))
    k = b.input("k", dtype(dt), (t, hk, d))
    v = b.input("v", dtype(dt), (1, hk, t, d))
    cos, sin = _rope_tables(b, t, d, dtype(dt), "")
    cq, sq = (b.op("slice", x, starts=(t - 1, 0), stops=(t, d), steps=(1, 1)) for x in (cos, sin))
    qr = b.op("rotary_embedding", q, cq, sq, name="q.rope")
    kr = b.op("rotary_embedding", k, cos, sin, name="k.rope")
    qh = b.op("reshape", b.op("transpose", qr, perm=(1, 0, 2)), shape=(1, h, 1, d))
    kh = b.op("reshape", b.op("transpose", kr, perm=(1, 0, 2)), shape=(1, hk, t, d))
    b.output(b.op("scaled_dot_product_attention", qh, kh, v, causal=False, name="attn"))
    if q_out:
        b.output(qr)
    return b.build()


@pytest.mark.parametrize("device", SPECS)
@pytest.mark.parametrize("dt", ["f32", "bf16"])
def test_decode_split_k_with_rotary(device, dt):
    g = decode_rope_graph(dt=dt)
    spec = load_spec(device)
    p = plan(g, spec)
    att = _att(p)
    assert p.kernel_count() == 1 and ROTARY_OPS <= set(att.ops)
    assert plan_group(att, spec).detail("split_k") > 1
    inputs = random_inputs(g, seed=8)
    fused = CpuSimBackend().run_graph(g, inputs, spec, check=True)
    _agrees(g, inputs, fused)
    st = [x for x in fused.stats if x["kind"] == "attention"]
    stages = ["stats", "partial", "combine"] if dt == "bf16" else ["partial", "combine"]
    assert [x["stage"] for x in st] == stages
    assert sum(x["global_bytes"] for x in st) == p.costs[att.name].issued


@pytest.mark.parametrize("device", SPECS)
def test_rotated_q_needed_elsewhere_stays_outside(device):
    """q's rotary is also a graph output: it is computed (and written) once by its own
    kernel and the attention reads it; k's rotary still joins the attention."""
    g = decode_rope_graph(t=300, q_out=True)
    spec = load_spec(device)
    p = plan(g, spec)
    att = _att(p)
    names = {n.outputs[0].name for n in att.nodes}
    assert "q.rope" not in names and not any(x.startswith("q.rope_") for x in names)
    assert "q.rope" in {v.name for v in att.inputs}
    # k's rotary joins the attention unless the model prices it out (on mi300x at this
    # one-block decode shape, reading raw k and the tables in the attention is slower
    # than a kernel over the whole device), with the decision logged
    kept_out = any("not fused into the attention" in d.reason for d in p.decisions)
    assert kept_out or any(x.startswith("k.rope") for x in names)
    # the tables are read by q's rotary outside too: the attention takes them as inputs
    if not kept_out:  # the tables are shared with q's kernel: inputs of the attention
        assert {"rope.cos", "rope.sin"} <= {v.name for v in att.inputs}
    inputs = random_inputs(g, seed=9)
    fused = CpuSimBackend().run_graph(g, inputs, spec, check=True)
    _agrees(g, inputs, fused)
    st = [x for x in fused.stats if x["kind"] == "attention"]
    assert sum(x["global_bytes"] for x in st) == p.costs[att.name].issued


def test_candidates_stop_at_values_read_elsewhere_and_reductions():
    for g in (decompose_graph(decode_rope_graph(t=300, q_out=True)),
              decompose_graph(small_llama("f32"))):
        (nodes,) = attention_candidates(g)
        outs, users, ids = {v.name for v in g.outputs}, g.users(), {id(n) for n in nodes}
        for n in nodes[:-1]:   # all but pv: read by members only, never a graph output
            for o in n.outputs:
                assert o.name not in outs and all(id(u) in ids for u in users[o.name]), o.name
        # the chains stop at contractions and reductions (RMSNorm, the projections)
        ops = [n.op for n in nodes]
        assert ops.count("dot_general") == 2
        assert sorted(x for x in ops if x.startswith("reduce_")) == ["reduce_max", "reduce_sum"]


def test_match_attention_rejects_a_prologue_that_needs_the_scores():
    """An operand computed from the group's own scores is not a prologue a tile load can
    evaluate: match_attention says so."""
    b = GraphBuilder("bad")
    q = b.input("q", dtype("f32"), (1, 2, 16, 8))
    k = b.input("k", dtype("f32"), (1, 2, 16, 8))
    s = b.op("dot_general", q, k, lhs_contracting=(3,), rhs_contracting=(3,),
             lhs_batch=(0, 1), rhs_batch=(0, 1))
    pr = b.op("softmax", s, axis=-1)
    v = b.op("mul", b.op("slice", s, starts=(0, 0, 0, 0), stops=(1, 2, 16, 8),
                         steps=(1, 1, 1, 1)), b.op("slice", s, starts=(0, 0, 0, 8),
                                                    stops=(1, 2, 16, 16), steps=(1, 1, 1, 1)))
    b.output(b.op("dot_general", pr, v, lhs_contracting=(3,), rhs_contracting=(2,),
                  lhs_batch=(0, 1), rhs_batch=(0, 1)))
    prim = decompose_graph(b.build())
    why = match_attention(list(prim.nodes))
    assert isinstance(why, str) and "the v operand depends on dot_general" in why, why
    assert not attention_candidates(prim)
    res = CpuSimBackend().run_graph(prim, random_inputs(prim, seed=10), "h100-sxm")
    assert res.report["ok"] and not [x for x in res.stats if x["kind"] == "attention"]


@pytest.mark.parametrize("render,device", [(render_cuda, "h100-sxm"), (render_hip, "mi300x")])
def test_prologue_kernels_render(render, device):
    spec = load_spec(device)
    for g in (small_llama("bf16"), decode_rope_graph(dt="bf16")):
        srcs = [render(k, spec) for k in lower_group(_att(plan(g, spec)), spec)]
        assert all("__global__" in x for x in srcs)
        assert "cosf(" in srcs[0] and "sinf(" in srcs[0]   # the rotary runs in the tile loads


def test_prologue_stays_out_when_the_model_says_it_does_not_pay(monkeypatch):
    """The planner prices the attention with and without its operand prologues; when the
    wide kernel is modelled slower (here: made so), the rotary stays a kernel of its own,
    the decision says why, and the plan still runs and matches the reference."""
    import importlib

    plan_mod = importlib.import_module("hal.fusion.plan")

    real = plan_mod.group_cost

    def slow_wide(grp, spec):
        c = real(grp, spec)
        if grp.kind == "attention" and "cos" in grp.ops:
            c.time_s *= 100
        return c

    monkeypatch.setattr(plan_mod, "group_cost", slow_wide)
    g = small_llama("f32", s=32)
    spec = load_spec("h100-sxm")
    p = plan(g, spec, measure=None)
    att = _att(p)
    assert not {"cos", "sin", "neg", "concat"} & set(att.ops), att.ops
    assert any(x is not att and _rope_nodes(x.nodes) for x in p.groups)
    assert any(not d.fused and "not fused into the attention" in d.reason
               for d in p.decisions)
    inputs = random_inputs(g, seed=3)
    fused = CpuSimBackend().run_graph(g, inputs, spec, check=True)  # plans the same way
    assert any(x["kind"] == "pointwise" and "cos" in x["ops"] for x in fused.stats)
    _agrees(g, inputs, fused)


def test_prologue_inside_carries_its_reason():
    p = plan(small_llama("f32", s=32), load_spec("h100-sxm"), measure=None)
    assert any("computed in the tile loads" in r for r in _att(p).reasons)
