"""The planning memos (hal.lowering.memo) and the faster tile searches change no result.

* matmul_tiles / mma_tiles score one tile per block-tile panel: they pick exactly the tile
  the score over every candidate (the search as written before) picks;
* a plan or lowering served by a memo equals the one computed with the memos off, for
  several graphs, dtypes and specs, spec variants and forced hints;
* a lowering with planted faults is never served the fusion veto's fault-free lowering;
* a veto reason (whose text may name values) is only served to the same named candidate;
* every memo is bounded, and a kept lowering is handed out once.
"""

from __future__ import annotations

import dataclasses

import pytest

from hal.devices.loader import load_spec
from hal.dtypes import bf16, f16, f32
from hal.fusion import plan
from hal.fusion.plan import VETOES
from hal.ir import GraphBuilder
from hal.kernel.mma import get_layout
from hal.lowering import lower_group, memo, mma_tiles, plan_group, tiling
from hal.lowering.options import LoweringOptions
from hal.lowering.plan import PlanHints
from hal.lowering.tiling import MatmulTiles, cdiv, round_up

SPECS = ["h100-sxm", "a100-sxm", "mi300x"]


# --------------------------------------------------------------------------- tile searches


def _all_matmul_tiles(m, n, k, acc, spec, ops, reserve):
    """The SIMT tile search as first written: score every candidate, keep the first best."""
    def fits(t):
        return (t.threads % spec.warp_size == 0 and t.threads <= spec.max_threads_per_block
                and tiling.matmul_shared_bytes(t, acc, ops) <= spec.shared_mem_per_block
                and tiling.matmul_registers(t, ops) + reserve
                <= spec.registers_per_thread_at(t.threads))

    cands = [t for bm in (128, 64, 32, 16, 8) for bn in (128, 64, 32, 16, 8)
             for bk in (32, 16, 8) for tm in (8, 4, 2, 1) for tn in (8, 4, 2, 1)
             if tm <= bm and tn <= bn and fits(t := MatmulTiles(bm, bn, bk, tm, tn))]

    def score(t):
        blocks = cdiv(m, t.bm) * cdiv(n, t.bn)
        waste = (round_up(m, t.bm) * round_up(n, t.bn)) / max(1, m * n)
        return (blocks * 4 >= spec.compute_units, -round(waste, 1), t.bm * t.bn,
                -abs(t.bm.bit_length() - t.bn.bit_length()), min(t.threads, 4 * spec.warp_size),
                t.tm * t.tn, -abs(t.tm - t.tn), min(t.bk, round_up(k, 8)))

    return max(cands, key=score) if cands else None


def _all_mma_tiles(m, n, k, spec, instr, itemsize, reserve, ops):
    """The matrix-unit tile search as first written."""
    lay = get_layout(instr.layout)
    stages = (3, 2) if "async_copy" in spec.capabilities else (1,)
    cands = []
    for bm in (128, 64, 32, 16, 8):
        for bn in (128, 64, 32, 16, 8):
            for bk in (64, 32, 16, 8):
                if bk % lay.k or (bk * itemsize) % 16:
                    continue
                for wm in (4, 2, 1):
                    for wn in (4, 2, 1):
                        if bm % (wm * lay.m) or bn % (wn * lay.n):
                            continue
                        for st in stages:
                            t = mma_tiles.MmaTiles(bm, bn, bk, wm, wn, st, lay.name, itemsize, ops)
                            if t.threads <= spec.max_threads_per_block and \
                                    mma_tiles.mma_shared_bytes(t) <= spec.shared_mem_per_block \
                                    and mma_tiles.mma_registers(t) + reserve <= \
                                    spec.registers_per_thread_at(t.threads):
                                cands.append(t)

    def score(t):
        blocks = cdiv(m, t.bm) * cdiv(n, t.bn)
        waste = (round_up(m, t.bm) * round_up(n, t.bn)) / max(1, m * n)
        kwaste = round_up(k, t.bk) / max(1, k)
        wtm, wtn = t.bm // t.wm, t.bn // t.wn
        return (blocks * 4 >= spec.compute_units, -round(waste, 1), -round(kwaste, 1),
                t.bm * t.bn, -abs(t.bm.bit_length() - t.bn.bit_length()),
                min(wtm * wtn, 64 * 64), -abs(wtm.bit_length() - wtn.bit_length()),
                min(t.wm * t.wn, 8), t.stages, -abs(t.bk * t.itemsize - 128))

    return max(cands, key=score) if cands else None


def _spec_variants():
    out = []
    for name in SPECS:
        s = load_spec(name)
        out += [s, dataclasses.replace(s, name=f"{name}+small", compute_units=2),
                dataclasses.replace(s, name=f"{name}+smem16k", shared_mem_per_block=16384,
                                    shared_mem_per_unit=65536)]
    return out


SHAPES = [(1, 1, 1), (7, 33, 5), (64, 128, 96), (100, 24, 130), (256, 320, 128),
          (16, 4096, 64), (1000, 8, 16), (130, 130, 8), (33, 257, 1000)]


@pytest.mark.parametrize("spec", _spec_variants(), ids=lambda s: s.name)
def test_tile_searches_pick_the_tile_scoring_every_candidate_picks(spec):
    for i, (m, n, k) in enumerate(SHAPES):
        acc, ops, reserve = (4, 8, 2)[i % 3], (1, 2)[i % 2], (0, 24, 60)[i % 3]
        try:
            got = tiling.matmul_tiles(m, n, k, acc, spec, ops, reserve)
        except ValueError:
            got = None
        assert got == _all_matmul_tiles(m, n, k, acc, spec, ops, reserve), (m, n, k)
        for instr in (x for x in spec.matrix_instructions if x.scope == "warp"):
            itemsize = 4 if instr.a in ("f32", "tf32") else 1 if "8" in instr.a else 2
            assert mma_tiles.mma_tiles(m, n, k, spec, instr, itemsize, reserve, ops) == \
                _all_mma_tiles(m, n, k, spec, instr, itemsize, reserve, ops), (m, n, k, instr)


# --------------------------------------------------------------------------- plans and lowerings


def _mlp(dt, m=64, k=96, n=80):
    b = GraphBuilder("mlp")
    x, w, bias = b.input("x", dt, (m, k)), b.input("w", dt, (n, k)), b.input("bias", dt, (n,))
    y = b.op("matmul", x, w, transpose_b=True)
    y = b.op("add", y, b.op("broadcast_to", bias, shape=(m, n)))
    b.output(b.op("mul", y, b.op("sigmoid", y), name="out"))
    return b.build()


def _norm(dt, rows=33, cols=257):
    b = GraphBuilder("norm")
    x = b.input("x", dt, (rows, cols))
    x32 = b.op("cast", x, dtype=f32)
    mean = b.op("reduce_sum", x32, axes=(1,), keepdims=True)
    c = b.op("sub", x32, b.op("broadcast_to", mean, shape=(rows, cols)))
    b.output(b.op("cast", b.op("exp", c), dtype=dt, name="out"))
    return b.build()


GRAPHS = [("mlp_f32", lambda: _mlp(f32)), ("mlp_bf16", lambda: _mlp(bf16)),
          ("mlp_f16_odd", lambda: _mlp(f16, 70, 45, 37)), ("norm_f32", lambda: _norm(f32)),
          ("norm_bf16", lambda: _norm(bf16, 8, 4096))]


def _plan_and_kernels(graph, spec):
    p = plan(graph, spec, measure="off")
    return repr(p.to_dict()), [repr(lower_group(g, spec)) for g in p.groups]


@pytest.mark.parametrize("device", SPECS)
@pytest.mark.parametrize("name,make", GRAPHS, ids=[g[0] for g in GRAPHS])
def test_memoised_plans_and_lowerings_equal_fresh_ones(name, make, device):
    spec = load_spec(device)
    with memo.disabled():
        fresh = _plan_and_kernels(make(), spec)
    first = _plan_and_kernels(make(), spec)      # fills the memos
    again = _plan_and_kernels(make(), spec)      # served from them
    assert first == fresh and again == fresh
    assert memo.PLANS.hits > 0


def test_plan_memo_tells_spec_variants_and_hints_apart():
    from hal.fusion.group import make_group

    g = _mlp(f32)
    spec = load_spec("h100-sxm")
    small = dataclasses.replace(spec, compute_units=2, shared_mem_per_block=16384,
                                shared_mem_per_unit=65536)
    grp = make_group(g, g.nodes, "mm")
    forced = dataclasses.replace(grp, hints=PlanHints(matmul_tiles=MatmulTiles(32, 32, 8, 4, 4)))
    plans = [plan_group(x, s) for x in (grp, forced) for s in (spec, small)]
    with memo.disabled():
        fresh = [plan_group(x, s) for x in (grp, forced) for s in (spec, small)]
    assert plans == fresh
    assert plans[0] != plans[1] and plans[0] != plans[2]   # each key has its own plan


def test_a_plan_under_another_group_name_is_renamed_exactly():
    from hal.fusion.group import make_group

    g = _norm(f32, 8, 4096)   # a split row reduction: two launches named after the group
    spec = load_spec("mi300x")
    a, b = make_group(g, g.nodes, "cand"), make_group(g, g.nodes, "k7_reduce_sum")
    pa = plan_group(a, spec)
    pb = plan_group(b, spec)   # served renamed from a's
    with memo.disabled():
        assert pb == plan_group(b, spec) and pa == plan_group(a, spec)
    assert memo.rename_plan(pa, "cand", "k7-sum") is None           # not a C identifier
    noted = dataclasses.replace(pa, reasons=pa.reasons + ("see group cand",))
    assert memo.rename_plan(noted, "cand", "k1") is None            # the name is elsewhere


def _veto_lowers_every_candidate(monkeypatch) -> None:
    """The veto lowers (and keeps) every candidate, none answered from the group it grows
    (fusion.veto_reuse): the tests below hand the kept lowering over."""
    import importlib

    monkeypatch.setattr(importlib.import_module("hal.fusion.plan"), "same_verdict",
                        lambda *a: False)


def test_a_planted_fault_is_never_served_the_vetoes_fault_free_lowering(monkeypatch):
    _veto_lowers_every_candidate(monkeypatch)
    spec = load_spec("h100-sxm")
    faulty = LoweringOptions.planting("dropped_epilogue")
    with memo.disabled():
        p0 = plan(_mlp(f32), spec, measure="off")
        clean = [repr(lower_group(g, spec)) for g in p0.groups]
        bad = [repr(lower_group(g, spec, faulty)) for g in p0.groups]
    assert clean != bad
    p = plan(_mlp(f32), spec, measure="off")   # its veto keeps the fused group's lowering
    assert len(memo.LOWERINGS) >= 1
    assert [repr(lower_group(g, spec, faulty)) for g in p.groups] == bad
    taken = memo.LOWERINGS.hits
    assert [repr(lower_group(g, spec)) for g in p.groups] == clean
    assert memo.LOWERINGS.hits > taken          # the default options took the veto's


def test_a_veto_reason_is_only_served_to_the_same_named_candidate():
    from hal.fusion.plan import signature
    from hal.lowering.memo import group_key

    spec = load_spec("mi300x")
    first = plan(_mlp(bf16), spec, measure="off")
    assert len(VETOES) >= 1
    for key in VETOES.keys():   # every verdict becomes a reason about other values
        VETOES.put(key, (("another", "candidate"), "a reason naming other values"))
    again = plan(_mlp(bf16), spec, measure="off")
    assert again.to_dict() == first.to_dict()   # recomputed, never served
    # the same named candidate is served its stored reason: the memo is what decides
    fused = next(g for g in again.groups if len(g.nodes) > 1)
    cand = dataclasses.replace(fused, name="cand")
    VETOES.put((signature(cand), spec), (group_key(cand), "vetoed for the test"))
    vetoed = plan(_mlp(bf16), spec, measure="off")
    assert any("vetoed for the test" in d.reason for d in vetoed.decisions)
    assert vetoed.kernel_count() > first.kernel_count()


def test_memos_are_bounded_least_recently_used_and_lowerings_handed_out_once(monkeypatch):
    _veto_lowers_every_candidate(monkeypatch)
    m = memo.Memo("test_bounded", 3)
    try:
        for i in range(5):
            m.put(i, i * i)
        assert len(m) == 3 and m.lookup(0) is None and m.lookup(4) == 16
        m.lookup(2)                  # 2 becomes the most recent
        m.put(5, 25)
        assert m.lookup(3) is None and m.lookup(2) == 4
        assert m.take(2) == 4 and m.take(2) is None
        with pytest.raises(ValueError):
            memo.Memo("test_empty", 0)
    finally:
        memo.MEMOS.pop("test_bounded", None)
    for each in memo.MEMOS.values():
        assert 0 < each.maxsize <= 8192
    spec = load_spec("h100-sxm")
    p = plan(_mlp(f32), spec, measure="off")
    fused = next(g for g in p.groups if len(g.nodes) > 1)
    assert memo.take_lowering(fused, spec, LoweringOptions(), plan_group(fused, spec))
    assert memo.take_lowering(fused, spec, LoweringOptions(), plan_group(fused, spec)) is None
