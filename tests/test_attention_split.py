"""Split-K ("flash-decoding") attention: with few query row tiles (decode: one query row per
head) the keys are split into chunks whose partials (m, l, f32 accumulators) go through
scratch and a combine kernel; it matches the reference on cpu_sim with the race checks on,
is chosen for decode shapes and not for prefill, and the cost model counts it."""

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
from hal.fusion import plan
from hal.fusion.cost import nbytes
from hal.ir import GraphBuilder
from hal.lowering import lower_group, plan_group
from hal.lowering.attention import match_attention
from hal.lowering.plan import PlanHints
from hal.reference import random_inputs
from tests.test_fusion_attention import sdpa_graph

SPECS = ["h100-sxm", "mi300x", "scratch-npu"]

DECODE = [
    dict(h=8, hk=2, t=700, d=32),                 # GQA, 6 key tiles of 128
    dict(h=4, hk=1, t=1337, d=64),                # uneven last chunk
    dict(h=2, hk=2, t=2000, d=16),                # no GQA
]


def _att(g, spec):
    (att,) = [x for x in plan(g, spec).groups if x.kind == "attention"]
    return att


@pytest.mark.parametrize("device", SPECS)
@pytest.mark.parametrize("case", DECODE, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_f32_decode_splits_keys_and_matches_reference(device, case):
    g = sdpa_graph(s=1, causal=False, **case)
    spec = load_spec(device)
    p = plan(g, spec)
    (att,) = [x for x in p.groups if x.kind == "attention"]
    s = plan_group(att, spec).detail("split_k")
    assert s > 1 and any(r.startswith("split-K: ") for r in att.reasons), att.reasons
    res = CpuSimBackend().run_graph(g, random_inputs(g, seed=4), spec, check=True)
    assert res.report["ok"], res.report
    st = [x for x in res.stats if x["kind"] == "attention"]
    assert [x["stage"] for x in st] == ["partial", "combine"]
    assert st[0]["plan"]["split_k"] == s
    # the model's issued bytes are what the two kernels load and store
    assert sum(x["global_bytes"] for x in st) == p.costs[att.name].issued


@pytest.mark.parametrize("device", SPECS)
def test_decode_with_masks_and_empty_chunks(device):
    """Causal decode (s=1: one visible key): every chunk but the first is all -inf."""
    spec = load_spec(device)
    for g in (sdpa_graph(h=4, hk=2, s=1, t=900, d=16, causal=True),
              sdpa_graph(h=2, hk=2, s=1, t=900, d=16, mask=True)):
        assert plan_group(_att(g, spec), spec).detail("split_k") > 1
        res = CpuSimBackend().run_graph(g, random_inputs(g, seed=5), spec, check=True)
        assert res.report["ok"], res.report


@pytest.mark.parametrize("device", SPECS)
@pytest.mark.parametrize("dt", ["bf16", "f16"])
def test_rounded_p_split_stays_exact(device, dt):
    """P rounded before P@V: stats per chunk, combined (m, l), then P rounded where the graph
    rounds it; three kernels, and fused still equals unfused (almost) element for element."""
    g = sdpa_graph(h=8, hk=2, s=1, t=1200, d=32, causal=False, dt=dt)
    spec = load_spec(device)
    att = _att(g, spec)
    assert plan_group(att, spec).detail("split_k") > 1
    inputs = random_inputs(g, seed=6)
    be = CpuSimBackend()
    # exact_rounding: the kernels' own f32 summation order (the simulator's vectorised
    # loops sum in float64), which is what this test compares between the two schedules
    fused = be.run_graph(g, inputs, spec, check=True, exact_rounding=True)
    assert fused.report["ok"], fused.report
    st = [x for x in fused.stats if x["kind"] == "attention"]
    assert [x["stage"] for x in st] == ["stats", "partial", "combine"]
    unfused = be.run_graph(g, inputs, spec, fuse=False)
    p = plan(g, spec)
    ts = plan_group(att, spec).tile_sizes
    for x in p.groups:
        if x.kind == "attention":   # the one-kernel two-pass schedule, SIMT like the split one
            x.hints = PlanHints(split_k=1, attention_tiles=(ts["br"], ts["bc"], ts["tpr"]))
    unsplit = be.run_graph(p.graph, inputs, spec, groups=p.groups, compare_reference=False,
                           exact_rounding=True)
    assert len([x for x in unsplit.stats if x["kind"] == "attention"]) == 1
    (one,) = unsplit.outputs.values()
    for name, b in output_bounds(g, inputs).items():
        a, u = fused.outputs[name], unfused.outputs[name]
        assert check(a, b).ok and diff(a, u, b).ok
        # P rounds as in the unsplit kernel: only the f32 summation order of l and P V differs
        assert np.mean(a == one) >= 0.99


@pytest.mark.parametrize("device", SPECS)
def test_split_for_decode_not_for_prefill(device):
    spec = load_spec(device)
    decode = sdpa_graph(b=1, h=32, hk=8, s=1, t=8192, d=128, causal=False, dt="bf16")
    prefill = sdpa_graph(b=1, h=32, hk=8, s=2048, t=2048, d=128, causal=True, dt="bf16")
    assert plan_group(_att(decode, spec), spec).detail("split_k") > 1
    # the prefill attention is fused where the model prices the (SIMT) flash kernel below
    # the matrix-unit matmuls plus a softmax kernel (not on mi300x, whose matrix rate is 8x
    # its vector rate); where it is fused, it is not split
    for att in [x for x in plan(prefill, spec).groups if x.kind == "attention"]:
        assert plan_group(att, spec).detail("split_k") == 1
        assert not any(r.startswith("split-K") for r in att.reasons)
    small = sdpa_graph(h=4, hk=2, s=1, t=100, d=32, causal=False)   # one key tile: no split
    assert plan_group(_att(small, spec), spec).detail("split_k") == 1


def test_cost_counts_blocks_scratch_and_launches():
    spec = load_spec("h100-sxm")
    g = sdpa_graph(b=1, h=32, hk=8, s=1, t=8192, d=128, causal=False, dt="f32")
    p = plan(g, spec)
    (att,) = [x for x in p.groups if x.kind == "attention"]
    c = p.costs[att.name]
    s = plan_group(att, spec).detail("split_k")
    pat = match_attention(att.nodes)
    assert c.blocks == -(-pat.m // plan_group(att, spec).tile_sizes["br"]) * 8 * s >= spec.compute_units
    assert any(n.startswith(f"split-K: keys in {s} chunks") for n in c.notes)
    scratch = 8 * pat.m * s * (pat.dv + 2) * 4
    assert c.dram_write == nbytes(pat.pv.outputs[0]) + scratch
    assert c.time_s > 2 * spec.launch_overhead_s


@pytest.mark.parametrize("render,device", [(render_cuda, "h100-sxm"), (render_hip, "mi300x")])
def test_split_kernels_render(render, device):
    spec = load_spec(device)
    for dt in ("f32", "bf16"):
        g = sdpa_graph(h=8, hk=2, s=1, t=1200, d=32, causal=False, dt=dt)
        kernels = lower_group(_att(g, spec), spec)
        assert len(kernels) == (2 if dt == "f32" else 3)
        for k in kernels:
            assert "__global__" in render(k, spec)


# --------------------------------------------------------------------------- matrix unit


def _sdpa(dt, q, kv, causal=False):
    b = GraphBuilder("att")
    d = dtype(dt)
    b.output(b.op("scaled_dot_product_attention", b.input("q", d, q), b.input("k", d, kv),
                  b.input("v", d, kv), causal=causal))
    return b.build()


@pytest.mark.parametrize("device", ["h100-sxm", "a100-sxm"])
@pytest.mark.parametrize("q,kv,causal", [
    ((1, 4, 4, 64), (1, 1, 4096, 64), False),   # 16 rows per kv head, 4096 keys
    ((1, 4, 5, 40), (1, 1, 3000, 40), False),   # partial rows, head dim not a k multiple
    ((1, 4, 4, 64), (1, 1, 4096, 64), True),    # causal: every chunk but the first is empty
])
def test_split_k_prefill_on_the_matrix_unit(device, q, kv, causal, monkeypatch):
    """A short bf16 prefill over many keys: split-K, and Q K^T / P V of both partial
    kernels on mma.sync (the contractions bound it on these specs); the simulated result
    matches the reference, its bytes and matrix flops are the plan's."""
    monkeypatch.setenv("HAL_MEASURE", "off")
    g = _sdpa("bf16", q, kv, causal)
    spec = load_spec(device)
    fused = plan(g, spec)
    (att,) = [x for x in fused.groups if x.kind == "attention"]
    p = plan_group(att, spec)
    assert p.strategy == "flash_attention_mma" and p.detail("split_k") > 1, p.reasons
    assert any(r.startswith("split-K on the matrix unit") for r in p.reasons), p.reasons
    assert [x.stage for x in p.launches] == ["stats", "partial", "combine"]
    r = CpuSimBackend().run_graph(g, random_inputs(g, 3), spec)
    assert r.report["ok"], r.report
    stats = [s for s in r.stats if s["name"].startswith(att.name)]
    assert sum(s["global_bytes"] for s in stats) == fused.costs[att.name].issued
    layout = p.detail("mma_choice").tiles.layout
    by_kernel = {s["name"][len(att.name):]: s["matrix_flops"].get(layout, 0) for s in stats}
    assert by_kernel["_split"] == 2 * by_kernel["_stats"] > 0 and by_kernel["_combine"] == 0
    assert sum(by_kernel.values()) == dict(p.flops_by_math)[p.math]


def test_split_k_stays_simt_where_memory_bounds_it():
    """mi300x: the same prefill is memory-bound at its FMA rate: SIMT, with the numbers."""
    g = _sdpa("bf16", (1, 4, 4, 64), (1, 1, 4096, 64))
    spec = load_spec("mi300x")
    (att,) = [x for x in plan(g, spec).groups if x.kind == "attention"]
    p = plan_group(att, spec)
    assert p.strategy == "flash_attention" and p.detail("split_k") > 1
    assert any("memory-bound" in r for r in p.reasons), p.reasons
