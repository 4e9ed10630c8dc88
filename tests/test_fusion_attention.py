"""Attention as primitives becomes ONE "attention" group (online softmax, tiled K/V) that runs
on cpu_sim, matches the reference with the race checks on, and is sized by each device.
When the graph rounds P (f16/bf16 inputs) the kernel takes two passes and rounds P exactly
where the graph does, so fused and unfused agree."""

from __future__ import annotations

import numpy as np
import pytest

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.conformance.compare import check, diff
from hal.conformance.tolerance import output_bounds
from hal.devices.loader import load_spec
from hal.dtypes import dtype
from hal.fusion import plan
from hal.fusion.cost import group_cost, nbytes, node_flops
from hal.ir import GraphBuilder
from hal.lowering import plan_group
from hal.lowering.attention import attention_tiles, match_attention
from hal.reference import random_inputs

SPECS = ["h100-sxm", "mi300x", "scratch-npu"]


def sdpa_graph(b=1, h=4, hk=4, s=33, t=33, d=16, causal=True, dt="f32", mask=False):
    g = GraphBuilder("attn")
    q = g.input("q", dtype(dt), (b, h, s, d))
    k = g.input("k", dtype(dt), (b, hk, t, d))
    v = g.input("v", dtype(dt), (b, hk, t, d))
    if mask:
        m = g.input("mask", dtype(dt), (b, 1, s, t))
        g.output(g.op("sdpa_masked", q, k, v, m))
    else:
        g.output(g.op("scaled_dot_product_attention", q, k, v, causal=causal))
    return g.build()


CASES = [
    dict(s=33, t=33, d=16),
    dict(s=70, t=130, d=32, causal=False),
    dict(h=4, hk=2, s=50, t=50, d=64),            # GQA
    dict(h=4, hk=1, s=64, t=64, d=32, dt="bf16"),
    dict(s=40, t=72, d=16, mask=True),            # additive mask, loaded per score
]


@pytest.mark.parametrize("device", SPECS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_attention_is_one_kernel_and_matches_reference(device, case):
    g = sdpa_graph(**case)
    spec = load_spec(device)
    p = plan(g, spec)
    att = [x for x in p.groups if x.kind == "attention"]
    assert len(att) == 1
    assert any(r.startswith("fused attention") and "Br=" in r for r in att[0].reasons)
    assert {"reduce_max", "exp", "reduce_sum", "div"} <= set(att[0].ops)
    res = CpuSimBackend().run_graph(g, random_inputs(g, seed=1), spec, check=True)
    assert res.report["ok"], res.report
    (st,) = [s for s in res.stats if s["kind"] == "attention"]
    # the SIMT flash kernel, or its matrix-unit form (issue 14) where the spec has one
    assert st["plan"]["strategy"] in ("flash_attention", "flash_attention_mma")
    assert st["plan"]["passes"] == (2 if case.get("dt") in ("bf16", "f16") else 1)
    out = g.outputs[0]
    # only O is written: the S x T score matrix never reaches memory
    assert st["global_bytes_written"] == out.type.numel * out.dtype.itemsize


def test_user_variant_softcap_lowers_through_the_builder():
    """A variant (tanh softcap on the scores) is not a template: its nodes are lowered."""
    g = GraphBuilder("softcap")
    q = g.input("q", dtype("f32"), (1, 2, 40, 16))
    k = g.input("k", dtype("f32"), (1, 2, 40, 16))
    v = g.input("v", dtype("f32"), (1, 2, 40, 16))
    s = g.op("dot_general", q, k, lhs_contracting=(3,), rhs_contracting=(3,),
             lhs_batch=(0, 1), rhs_batch=(0, 1))
    cap = g.op("broadcast_to", g.op("full", shape=(), value=5.0, dtype=dtype("f32")),
               shape=(1, 2, 40, 40))
    s = g.op("mul", g.op("tanh", g.op("div", s, cap)), cap)
    p = g.op("softmax", s, axis=-1)
    g.output(g.op("dot_general", p, v, lhs_contracting=(3,), rhs_contracting=(2,),
                  lhs_batch=(0, 1), rhs_batch=(0, 1)))
    g = g.build()
    spec = load_spec("h100-sxm")
    p_ = plan(g, spec)
    (att,) = [x for x in p_.groups if x.kind == "attention"]
    assert "tanh" in att.ops
    res = CpuSimBackend().run_graph(g, random_inputs(g, seed=2), spec)
    assert res.report["ok"], res.report


def test_tiles_follow_the_hierarchy():
    """Llama head dim 128, bf16: big tiles on H100's 227 KiB, smaller on MI300X's 64 KiB LDS,
    smaller again on the 32 KiB scratchpad; too wide heads do not fit the scratchpad."""
    args = (8192, 2048, 128, 128, 2, 2, 2, 8)
    h100 = attention_tiles(*args, load_spec("h100-sxm"))
    mi = attention_tiles(*args, load_spec("mi300x"))
    npu = attention_tiles(*args, load_spec("scratch-npu"))
    assert (h100.br, h100.bc) == (128, 128) and h100.shared_bytes == 128 * 1024
    assert mi.br * mi.bc < h100.br * h100.bc and mi.shared_bytes <= 64 * 1024
    assert npu.br * npu.bc < mi.br * mi.bc and npu.shared_bytes <= 32 * 1024
    why = attention_tiles(4096, 4096, 512, 512, 4, 4, 4, 8, load_spec("scratch-npu"))
    assert isinstance(why, str) and "32.0 KiB" in why


def test_attention_not_fused_reason_when_tiles_do_not_fit():
    g = sdpa_graph(h=2, hk=2, s=16, t=16, d=512)
    p = plan(g, load_spec("scratch-npu"))
    assert not [x for x in p.groups if x.kind == "attention"]
    assert any("attention not fused on scratch-npu" in d.reason for d in p.decisions)
    p2 = plan(g, load_spec("h100-sxm"))
    assert [x for x in p2.groups if x.kind == "attention"]


LOW_PRECISION = [
    dict(s=33, t=33, d=16),                       # causal
    dict(h=4, hk=2, s=50, t=50, d=32),            # GQA, causal
    dict(s=40, t=72, d=16, mask=True),            # additive mask
]


@pytest.mark.parametrize("device", SPECS)
@pytest.mark.parametrize("dt", ["bf16", "f16"])
@pytest.mark.parametrize("case", LOW_PRECISION,
                         ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_low_precision_attention_rounds_p_like_the_graph(device, dt, case):
    """The graph casts P to the input dtype before P @ V: the fused kernel takes two passes
    (final max and sum first) and rounds the normalised P there too, so it agrees with the
    unfused primitive graph, element for element up to the conformance bound."""
    g = sdpa_graph(dt=dt, **case)
    spec = load_spec(device)
    (att,) = [x for x in plan(g, spec).groups if x.kind == "attention"]
    assert f"two-pass: P is rounded to {dt} before P@V, as the graph says" in att.reasons
    assert plan_group(att, spec).detail("passes") == 2
    inputs = random_inputs(g, seed=3)
    be = CpuSimBackend()
    fused = be.run_graph(g, inputs, spec, check=True)     # race checks on, both passes
    assert fused.report["ok"], fused.report
    (st,) = [x for x in fused.stats if x["kind"] == "attention"]
    assert st["plan"]["passes"] == 2
    unfused = be.run_graph(g, inputs, spec, fuse=False)
    assert not [x for x in unfused.stats if x["kind"] == "attention"]
    for name, b in output_bounds(g, inputs).items():
        a, u = fused.outputs[name], unfused.outputs[name]
        assert check(a, b).ok, check(a, b)
        assert diff(a, u, b).ok, diff(a, u, b)
        # the rounding of P no longer separates them: (almost) every element is equal
        assert np.mean(a == u) >= 0.99


def test_f32_attention_stays_one_pass():
    g = sdpa_graph(dt="f32")
    (att,) = [x for x in plan(g, load_spec("h100-sxm")).groups if x.kind == "attention"]
    assert plan_group(att, load_spec("h100-sxm")).detail("passes") == 1
    assert not any(r.startswith("two-pass") for r in att.reasons)
    assert match_attention(att.nodes).p_round == ()


@pytest.mark.parametrize("device", SPECS)
def test_two_pass_cost_counts_the_second_qk_and_k_pass(device):
    """Cost: q k^T twice; issued bytes read K twice per row tile (the simulator agrees).
    Not causal: every key tile is walked (test_attention_causal covers the skipping)."""
    g = sdpa_graph(h=4, hk=1, s=64, t=64, d=32, dt="bf16", causal=False)
    spec = load_spec(device)
    p = plan(g, spec)
    (att,) = [x for x in p.groups if x.kind == "attention"]
    pat = match_attention(att.nodes)
    assert pat.two_pass and [d.name for d in pat.p_round] == ["bf16"]
    c = p.costs[att.name]
    assert c.flops == sum(node_flops(n) for n in att.nodes) + node_flops(pat.qk)
    res = CpuSimBackend().run_graph(g, random_inputs(g, seed=1), spec)
    (st,) = [x for x in res.stats if x["kind"] == "attention"]
    assert st["global_bytes"] == c.issued
    rt = -(-pat.m // plan_group(att, spec).tile_sizes["br"])
    k, v = pat.qk.inputs[1], pat.pv.inputs[1]
    q_o = c.issued - (2 * rt * nbytes(k) + rt * nbytes(v))
    assert q_o == nbytes(pat.qk.inputs[0]) + nbytes(pat.pv.outputs[0])


def test_two_pass_rereads_k_from_dram_when_it_exceeds_l2():
    """Llama-sized bf16 attention on the scratchpad: K/V of the blocks in flight exceed L2,
    so the second pass reads K from DRAM again, once per row tile: the keys up to the row
    tile's diagonal (causal: the tiles above it are skipped)."""
    g = sdpa_graph(b=1, h=32, hk=8, s=4096, t=4096, d=64, dt="bf16")
    spec = load_spec("scratch-npu")
    (att,) = [x for x in plan(g, spec).groups if x.kind == "attention"]
    pat = match_attention(att.nodes)
    c = group_cost(att, spec)
    assert any("K read twice per row tile" in n for n in c.notes), c.notes
    tiles = plan_group(att, spec).tile_sizes
    br, bc = tiles["br"], tiles["bc"]
    # K/V loads in units of the whole K: per row tile (the 4 query heads of a kv head are
    # consecutive blocks of 4096 rows), the key tiles up to its last row's query index
    loads = sum(min(4096, ((r0 + br - 1) % 4096 // bc + 1) * bc)
                for r0 in range(0, pat.m, br)) / 4096
    k, v = nbytes(pat.qk.inputs[1]), nbytes(pat.pv.inputs[1])
    once = sum(nbytes(x) for x in att.inputs)
    assert c.dram_read == pytest.approx(once + (loads - 1) * (k + v) + loads * k, rel=1e-12)
    rt = -(-pat.m // br)
    assert loads < 0.6 * rt    # about half of the non-causal (rt) re-reads
