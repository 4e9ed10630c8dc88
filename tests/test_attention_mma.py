"""Matrix-unit attention (hal.lowering.attention_mma): Q K^T and P V of the two-pass flash
kernel issue the spec's matrix instruction on every spec that has one for the dtypes, the
simulated kernel matches the float64 reference (causal, GQA, odd rows/keys, Dv != D), the
simulator's matrix flops are the plan's, f32 stays SIMT, split-K decode stays SIMT with the
cost model's reason, and the row-slot / butterfly tables follow the C layouts."""

from __future__ import annotations

import pytest

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.devices.loader import load_spec
from hal.dtypes import dtype
from hal.fusion.plan import plan
from hal.ir import GraphBuilder
from hal.kernel.mma import get_layout
from hal.lowering import lower_group
from hal.lowering.attention_mma import column_lane_offsets, row_slots
from hal.reference import random_inputs

SPECS = {"h100-sxm": "nv_m16n8k16_b16", "h200": "nv_m16n8k16_b16",
         "a100-sxm": "nv_m16n8k16_b16", "mi300x": "amd_16x16x16_b16",
         "mi250x-gcd": "amd_16x16x16_b16", "scratch-npu": "npu_8x8x8"}


@pytest.fixture(autouse=True)
def _no_measure(monkeypatch):
    monkeypatch.setenv("HAL_MEASURE", "off")


def sdpa(dt: str, q, kv, causal: bool, dv: int | None = None):
    b = GraphBuilder("att")
    d = dtype(dt)
    vshape = kv if dv is None else (*kv[:-1], dv)
    b.output(b.op("scaled_dot_product_attention", b.input("q", d, q), b.input("k", d, kv),
                  b.input("v", d, vshape), causal=causal))
    return b.build()


def attention_plan(g, device):
    spec = load_spec(device)
    group = next(x for x in plan(g, spec).groups if x.kind == "attention")
    return group, group_plan(group, spec), spec


def group_plan(group, spec):
    from hal.lowering import plan_group

    return plan_group(group, spec)


@pytest.mark.parametrize("device", sorted(SPECS))
def test_bf16_attention_plans_the_spec_instruction(device):
    _g, p, spec = attention_plan(sdpa("bf16", (1, 4, 40, 32), (1, 2, 40, 32), True), device)
    assert p.strategy == "flash_attention_mma", p.reasons
    choice = p.detail("mma_choice")
    assert choice.tiles.layout == SPECS[device]
    assert p.math.name == choice.instruction.name
    assert choice.instruction in spec.matrix_instructions
    assert p.block == choice.tiles.threads and p.block % spec.warp_size == 0


@pytest.mark.parametrize("device", sorted(SPECS))
@pytest.mark.parametrize("dt,q,kv,causal,dv", [
    ("bf16", (1, 2, 17, 16), (1, 2, 17, 16), True, None),     # partial row and key tiles
    ("f16", (2, 4, 9, 24), (2, 2, 33, 24), False, 16),        # GQA, D not a k multiple, Dv != D
])
def test_matrix_unit_attention_matches_reference(device, dt, q, kv, causal, dv):
    g = sdpa(dt, q, kv, causal, dv)
    group, p, spec = attention_plan(g, device)
    assert p.strategy == "flash_attention_mma", p.reasons
    r = CpuSimBackend().run_graph(g, random_inputs(g, 3), spec)
    assert r.report["ok"], r.report
    (st,) = [s for s in r.stats if s["kind"] == "attention"]
    from hal.lowering.attention_mma import mma_flops
    from hal.lowering.tiling import cdiv

    t = p.detail("mma_choice").tiles
    # the (block, key tile) pairs walked: every key tile, or (causal) the tiles up to the
    # last one holding a key some row of the block sees (key j <= query i; rows of the
    # GQA heads are consecutive blocks of S)
    sq, nt = q[2], cdiv(kv[2], t.bc)
    pairs = 0
    for row0 in range(0, p.detail("rows"), t.br):
        rows = range(row0, min(row0 + t.br, p.detail("rows")))
        pairs += max(1, max(min(r % sq, kv[2] - 1) // t.bc + 1 for r in rows)) if causal \
            else nt
    want = mma_flops(t, pairs * p.grid[1], 2)
    assert st["matrix_flops"] == {t.layout: want}
    assert dict(p.flops_by_math)[p.math] == want


def test_f32_attention_stays_simt_with_the_reason():
    _g, p, _spec = attention_plan(sdpa("f32", (1, 2, 17, 16), (1, 2, 17, 16), True),
                                  "h100-sxm")
    assert p.strategy == "flash_attention" and not p.math.matrix
    assert any("no matrix instruction for f32" in r for r in p.reasons), p.reasons


def test_split_k_decode_stays_simt_with_cost_model_numbers():
    g = sdpa("bf16", (1, 4, 1, 32), (1, 2, 1500, 32), False)
    _group, p, _spec = attention_plan(g, "h100-sxm")
    assert p.detail("split_k") > 1 and p.strategy == "flash_attention"
    why = next(r for r in p.reasons if r.startswith("split-K decode stays SIMT"))
    assert "memory-bound" in why and "us at DRAM bandwidth" in why and "FMAs" in why


def test_lowered_kernel_issues_mma_outside_branches():
    from hal.kernel.ir import If, Mma, walk_stmts

    g = sdpa("bf16", (1, 2, 17, 16), (1, 2, 17, 16), True)
    group, _p, spec = attention_plan(g, "h100-sxm")
    (k,) = lower_group(group, spec)
    mmas = [s for s in walk_stmts(k.body) if isinstance(s, Mma)]
    assert mmas
    for s in walk_stmts(k.body):   # a warp-wide instruction under a thread branch diverges
        if isinstance(s, If):
            assert not any(isinstance(x, Mma) for x in walk_stmts(s.then + s.orelse))


def test_row_slots_and_butterflies_follow_the_c_layouts():
    # PTX mma.m16n8k16 C: row groupID (+8), col 2*tig + e: 2 rows per lane, 4 lanes a row
    nv = get_layout("nv_m16n8k16_b16")
    assert row_slots(nv) == [0, 8] and column_lane_offsets(nv) == [1, 2]
    # CDNA 16x16x16 D: row 4*(lane/16) + i, col lane % 16: 4 rows, 16 lanes a row
    amd = get_layout("amd_16x16x16_b16")
    assert row_slots(amd) == [0, 1, 2, 3] and column_lane_offsets(amd) == [1, 2, 4, 8]
    amd32 = get_layout("amd_32x32x8_b16")
    assert len(row_slots(amd32)) == 16 and column_lane_offsets(amd32) == [1, 2, 4, 8, 16]
    npu = get_layout("npu_8x8x8")
    assert row_slots(npu) == [0, 1, 2, 3] and column_lane_offsets(npu) == [1, 2, 4]
    for lay in (nv, amd, amd32, npu):   # the lanes a butterfly joins hold the same rows
        for lane in range(lay.lanes):
            for off in column_lane_offsets(lay):
                rows = {int(r) for r in lay.c[lane, :, 0]}
                assert rows == {int(r) for r in lay.c[lane ^ off, :, 0]}
