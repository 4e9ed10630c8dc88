"""Causal key-tile skipping (hal.lowering.attention_causal): which masks are recognised
(and which are not), that the SIMT and matrix-unit kernels walk exactly the key tiles up
to each row tile's diagonal (counted independently here, by brute force over the rows),
that the simulated results still match the float64 reference (odd sizes, partial tiles,
tiles ending exactly on the diagonal, S != T both ways, GQA), and that the plan's
numbers (matrix flops, issued bytes) equal the simulator's counts."""

from __future__ import annotations

import math

import pytest

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.devices.loader import load_spec
from hal.dtypes import dtype, f32, i32
from hal.fusion.plan import plan
from hal.ir import GraphBuilder
from hal.lowering import plan_group
from hal.lowering.attention import match_attention
from hal.lowering.attention_causal import CausalBound, causal_bound
from hal.lowering.tiling import cdiv
from hal.reference import random_inputs


@pytest.fixture(autouse=True)
def _no_measure(monkeypatch):
    monkeypatch.setenv("HAL_MEASURE", "off")


def sdpa(dt: str, q, kv, causal: bool = True):
    b = GraphBuilder("att")
    d = dtype(dt)
    b.output(b.op("scaled_dot_product_attention", b.input("q", d, q), b.input("k", d, kv),
                  b.input("v", d, kv), causal=causal))
    return b.build()


def primitive_attention(s: int, t: int, d: int, keep: str, offset: int = 0):
    """softmax(q k^T + mask) v in primitives, masked by select(keep(i + offset, j), s, -inf)
    (keep "ge": key j <= i + offset, "le": key j >= i + offset) or, for "hide", by
    select(lt(i + offset, j), -inf, s)."""
    b = GraphBuilder("prim")
    q, k, v = (b.input(n, f32, (s if n == "q" else t, d)) for n in "qkv")
    sc = b.op("dot_general", q, k, lhs_contracting=(1,), rhs_contracting=(1,))
    row = b.op("iota", shape=(s, t), dimension=0, dtype=i32)
    col = b.op("iota", shape=(s, t), dimension=1, dtype=i32)
    if offset:
        row = b.op("add", row, b.op("broadcast_to", b.op("full", shape=(), value=offset,
                                                         dtype=i32), shape=(s, t)))
    ninf = b.op("broadcast_to", b.op("full", shape=(), value=-math.inf, dtype=f32),
                shape=(s, t))
    if keep == "hide":
        x = b.op("select", b.op("lt", row, col), ninf, sc)
    else:
        x = b.op("select", b.op(keep, row, col), sc, ninf)
    m = b.op("broadcast_to", b.op("reduce_max", x, axes=(1,), keepdims=True), shape=(s, t))
    e = b.op("exp", b.op("sub", x, m))
    z = b.op("broadcast_to", b.op("reduce_sum", e, axes=(1,), keepdims=True), shape=(s, t))
    p = b.op("div", e, z)
    b.output(b.op("dot_general", p, v, lhs_contracting=(1,), rhs_contracting=(0,)))
    return b.build()


def attention_group(g, spec):
    return next(x for x in plan(g, spec).groups if x.kind == "attention")


def bound_of(g, spec=None):
    group = attention_group(g, spec or load_spec("h100-sxm"))
    return causal_bound(match_attention(group.nodes), group.nodes)


# --------------------------------------------------------------------------- matching


def test_composite_causal_mask_is_recognised_with_the_query_period():
    # GQA: 2 query heads per kv head, their 40 rows each packed consecutively
    assert bound_of(sdpa("bf16", (1, 4, 40, 16), (1, 2, 130, 16))) == CausalBound(0, 40)
    assert bound_of(sdpa("f32", (2, 2, 33, 16), (2, 2, 33, 16))) == CausalBound(0, 33)


@pytest.mark.parametrize("keep,offset,want", [
    ("ge", 0, CausalBound(0, 24)),
    ("ge", 16, CausalBound(16, 24)),      # a bottom-right aligned mask: T - S = 16
    ("hide", 16, CausalBound(16, 24)),    # select(i + 16 < j, -inf, s)
    ("le", 0, None),                      # key j >= query i: the upper triangle is kept
])
def test_primitive_masks(keep, offset, want):
    assert bound_of(primitive_attention(24, 40, 16, keep, offset)) == want


def test_unmasked_and_additive_masks_skip_nothing():
    assert bound_of(sdpa("f32", (1, 2, 33, 16), (1, 2, 33, 16), causal=False)) is None
    b = GraphBuilder("masked")
    q, k, v = (b.input(n, f32, (1, 2, 33, 16)) for n in "qkv")
    b.output(b.op("sdpa_masked", q, k, v, b.input("mask", f32, (1, 1, 33, 33))))
    assert bound_of(b.build()) is None


# --------------------------------------------------------------------------- kernels


def walked_pairs(rows: int, period: int, keys: int, br: int, bc: int, offset: int = 0) -> int:
    """Brute force: per tile of br packed rows, the key tiles up to the last one holding a
    key that some row sees (query r % period sees keys j <= query + offset), at least 1."""
    pairs = 0
    for row0 in range(0, rows, br):
        last = max(min(r % period + offset, keys - 1) for r in range(row0, min(rows, row0 + br)))
        pairs += max(0, last) // bc + 1
    return pairs


def run_checked(g, device):
    spec = load_spec(device)
    group = attention_group(g, spec)
    p = plan_group(group, spec)
    r = CpuSimBackend().run_graph(g, random_inputs(g, 7), spec)
    assert r.report["ok"], r.report
    (st,) = [s for s in r.stats if s["kind"] == "attention"]
    cost = plan(g, spec).costs[group.name]
    assert st["global_bytes"] == cost.issued     # the plan's bytes are the kernel's
    return p, st


CASES = [   # q, kv: odd sizes, partial tiles, exact tile boundaries, S != T, GQA
    ((1, 2, 130, 16), (1, 2, 130, 16)),
    ((1, 2, 128, 32), (1, 2, 128, 32)),
    ((1, 4, 40, 16), (1, 2, 130, 16)),
    ((1, 2, 130, 16), (1, 1, 40, 16)),
]


@pytest.mark.parametrize("device", ["h100-sxm", "mi300x"])
@pytest.mark.parametrize("q,kv", CASES)
def test_matrix_unit_kernel_walks_the_tiles_up_to_the_diagonal(device, q, kv):
    from hal.lowering.attention_mma import mma_flops

    p, st = run_checked(sdpa("bf16", q, kv), device)
    assert p.strategy == "flash_attention_mma", p.reasons
    t = p.detail("mma_choice").tiles
    rows = q[1] // kv[1] * q[2]
    pairs = walked_pairs(rows, q[2], kv[2], t.br, t.bc)
    assert p.detail("key_tile_pairs") == pairs
    want = mma_flops(t, pairs * p.grid[1], 2)
    assert st["matrix_flops"] == {t.layout: want}
    assert dict(p.flops_by_math)[p.math] == want


@pytest.mark.parametrize("device", ["h100-sxm", "mi300x"])
@pytest.mark.parametrize("q,kv", CASES)
def test_simt_kernel_walks_the_tiles_up_to_the_diagonal(device, q, kv):
    p, _st = run_checked(sdpa("f32", q, kv), device)
    assert p.strategy == "flash_attention"
    sizes = p.tile_sizes
    rows = q[1] // kv[1] * q[2]
    assert p.detail("key_tile_pairs") == walked_pairs(rows, q[2], kv[2], sizes["br"],
                                                      sizes["bc"])


def test_skipping_is_real_on_a_long_prefill():
    """s = T = 512 on h100-sxm: about half of the (row tile, key tile) pairs are walked,
    and the plan's matrix flops and K/V bytes drop accordingly."""
    spec = load_spec("h100-sxm")
    causal = plan_group(attention_group(sdpa("bf16", (1, 2, 512, 64), (1, 2, 512, 64)),
                                        spec), spec)
    full = plan_group(attention_group(sdpa("bf16", (1, 2, 512, 64), (1, 2, 512, 64), False),
                                      spec), spec)
    # the Hopper kernel on h100-sxm (hal.lowering.attention_wgmma), the same skipping
    assert causal.strategy == "flash_attention_wgmma", causal.reasons
    t = causal.detail("attention_wgmma_choice").tiles
    nt, rt = cdiv(512, t.bc), cdiv(512, t.br)
    assert full.detail("key_tile_pairs") == nt * rt
    assert causal.detail("key_tile_pairs") == walked_pairs(512, 512, 512, t.br, t.bc)
    assert causal.detail("key_tile_pairs") < 0.7 * nt * rt
    ratio = dict(causal.flops_by_math)[causal.math] / dict(full.flops_by_math)[full.math]
    assert ratio == pytest.approx(causal.detail("key_tile_pairs") / (nt * rt))
    assert causal.issued_bytes < full.issued_bytes


@pytest.mark.parametrize("offset", [16, -8])
def test_primitive_offset_masks_match_the_reference(offset):
    """A bottom-right (offset T - S) and a negative-offset mask (the first rows see no key:
    NaN rows, as the reference) give the reference's numbers with the tiles skipped."""
    g = primitive_attention(70, 86, 16, "ge", offset)
    spec = load_spec("h100-sxm")
    assert bound_of(g, spec) == CausalBound(offset, 70)
    r = CpuSimBackend().run_graph(g, random_inputs(g, 5), spec)
    assert r.report["ok"], r.report
