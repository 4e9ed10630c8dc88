"""The blocked attention reference (hal.reference_blocked) gives the decomposition's values.

Each case evaluates one attention graph twice through hal.reference.evaluate: with a
tile budget below the score tensor (blocked: a few query rows at a time) and with one
above it (the primitive decomposition, whole tensors). The outputs must be equal
element for element (NaN where the decomposition gives NaN)."""

from __future__ import annotations

import numpy as np
import pytest

from hal.dtypes import cast, dtype
from hal.ir.builder import GraphBuilder
from hal.reference import evaluate
from hal.reference_blocked import use_blocked

WHOLE = 1 << 40  # a tile budget no test tensor reaches: the decomposed path


def _graph(dt, b, hq, hk, s, t, d, dv, *, causal=False, scale=None, mask_shape=None):
    g = GraphBuilder("attn")
    q = g.input("q", dt, (b, hq, s, d))
    k = g.input("k", dt, (b, hk, t, d))
    v = g.input("v", dt, (b, hk, t, dv))
    if mask_shape is None:
        out = g.op("scaled_dot_product_attention", q, k, v, causal=causal, scale=scale)
    else:
        m = g.input("mask", dt, mask_shape)
        out = g.op("sdpa_masked", q, k, v, m, scale=scale)
    g.output(out)
    return g.build()


def _inputs(graph, seed, mask_fill=None):
    rng = np.random.default_rng(seed)
    out = {}
    for v in graph.inputs:
        a = rng.normal(0.0, 2.0, v.shape)
        if v.name == "mask":
            a = np.where(rng.random(v.shape) < 0.3, -np.inf, a)
            if mask_fill is not None:
                a[..., 0, :] = mask_fill  # a whole row masked: NaN in both evaluations
        out[v.name] = cast(a, v.dtype)
    return out


def _same(blocked, whole):
    a = np.asarray(blocked, np.float64)
    b = np.asarray(whole, np.float64)
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_array_equal(a[~np.isnan(a)], b[~np.isnan(b)])


CASES = [
    # dtype, B, Hq, Hkv, S, T, D, Dv, causal
    ("f32", 1, 4, 4, 37, 37, 16, 16, True),
    ("bf16", 2, 8, 2, 33, 33, 32, 16, True),
    ("f16", 1, 6, 3, 20, 45, 8, 8, True),   # S < T: the top-left aligned mask of the decomposition
    ("bf16", 1, 4, 1, 50, 23, 16, 24, False),
    ("f64", 1, 2, 1, 19, 19, 8, 8, True),
    ("f8e4m3fn", 1, 2, 2, 16, 16, 16, 16, True),
]


@pytest.mark.parametrize("dt,b,hq,hk,s,t,d,dv,causal", CASES)
@pytest.mark.parametrize("tile", [1, 100, 300])
def test_blocked_attention_equals_decomposition(dt, b, hq, hk, s, t, d, dv, causal, tile):
    g = _graph(dt, b, hq, hk, s, t, d, dv, causal=causal)
    assert use_blocked(g.nodes[0], tile) and not use_blocked(g.nodes[0], WHOLE)
    ins = _inputs(g, seed=s + tile)
    blocked = evaluate(g, ins, tile_elements=tile)
    whole = evaluate(g, ins, tile_elements=WHOLE)
    (name,) = blocked
    assert blocked[name].dtype == dtype(dt).np_dtype
    _same(blocked[name], whole[name])


@pytest.mark.parametrize("mask_shape", [(1, 4, 24, 30), (24, 30), (1, 1, 1, 30)])
def test_blocked_masked_attention_equals_decomposition(mask_shape):
    g = _graph("bf16", 1, 4, 2, 24, 30, 16, 16, scale=0.3, mask_shape=mask_shape)
    ins = _inputs(g, seed=3, mask_fill=-np.inf if len(mask_shape) == 4 else None)
    blocked = evaluate(g, ins, tile_elements=64)
    whole = evaluate(g, ins, tile_elements=WHOLE)
    if len(mask_shape) == 4:
        assert np.isnan(np.asarray(whole["attn_0"] if "attn_0" in whole else
                                   next(iter(whole.values())), np.float64)[0, :, 0]).all()
    _same(next(iter(blocked.values())), next(iter(whole.values())))


def test_blocked_tile_bounds_the_score_intermediates(monkeypatch):
    """No score-sized float64 intermediate of a tile holds more than the budget."""
    import hal.reference_blocked as rb

    seen = []
    real = rb._prim

    def spy(name, *args, **attrs):
        out = real(name, *args, **attrs)
        seen.append(out.size)
        return out

    monkeypatch.setattr(rb, "_prim", spy)
    g = _graph("bf16", 1, 8, 2, 64, 64, 16, 16, causal=True)
    evaluate(g, _inputs(g, seed=0), tile_elements=4 * 64 * 8)
    assert seen and max(seen) <= 4 * 64 * 8


# -- the float32 tile steps (reference_blocked._Float32Tiles) -----------------------------

def _tile_case(rng, scale_bits, qdt, width, t, special=None, masked=False):
    from hal.dtypes import f32, round_to

    group, rows = 3, 5
    raw = rng.standard_normal((group * rows, width)) * 2.0 ** scale_bits
    if special is not None:
        raw[4, 1] = special
    scale_c = round_to(np.float64(0.37), f32)
    mask = None
    if masked:
        mask = round_to(rng.standard_normal((group, rows, width)) * 8, f32)
        mask[rng.random(mask.shape) < 0.2] = -np.inf
        mask[..., 0] = 0.0   # each row keeps a key (a row masked whole is the next test's)
    drop = np.arange(rows)[:, None] + width - rows < np.arange(width)[None, :]
    return raw, (group, rows, width), scale_c, mask, drop, t, qdt


@pytest.mark.parametrize("qdt", ["bf16", "f16", "f32"])
@pytest.mark.parametrize("scale_bits", [0, 4, 7, 40])   # 7, 40: exps that underflow
@pytest.mark.parametrize("masked", [False, True])
def test_float32_tile_steps_equal_the_float64_steps(qdt, scale_bits, masked):
    """The float32 tile steps give the float64 steps' probabilities bit for bit (exps
    that round to float32 subnormals or to 0 included; a width under the key axis)."""
    from hal.dtypes import f32
    from hal.reference_blocked import _Float32Tiles, _probs_f64

    rng = np.random.default_rng(scale_bits)
    for width, t in ((7, 7), (6, 11), (40, 64)):
        raw, shape, scale_c, mask, drop, t, qd = _tile_case(rng, scale_bits, dtype(qdt),
                                                             width, t, masked=masked)
        fast = _Float32Tiles(scale_c, t, qd).probs(raw.copy(), shape, mask, drop)
        assert fast is not None
        slow = _probs_f64(raw.copy(), shape, scale_c, mask, drop, f32, t, qd)
        assert fast.shape == slow.shape
        np.testing.assert_array_equal(fast.view(np.uint64), slow.view(np.uint64))


@pytest.mark.parametrize("special", [np.nan, np.inf, -np.inf, 1e300])
def test_float32_tile_steps_leave_non_finite_rows_to_the_float64_steps(special):
    """A NaN or inf score (or one that overflows float32) makes a row's sum NaN: the
    float32 steps decline the tile (None), and the float64 steps give NaN there."""
    from hal.dtypes import bf16, f32
    from hal.reference_blocked import _Float32Tiles, _probs_f64

    rng = np.random.default_rng(1)
    raw, shape, scale_c, mask, drop, t, qd = _tile_case(rng, 0, bf16, 9, 9, special)
    fast = _Float32Tiles(scale_c, t, qd).probs(raw.copy(), shape, None, None)
    slow = _probs_f64(raw.copy(), shape, scale_c, None, None, f32, t, qd)
    if special == -np.inf:   # a key masked out: an ordinary row
        np.testing.assert_array_equal(fast.view(np.uint64), slow.view(np.uint64))
    else:
        assert fast is None and np.isnan(slow.reshape(raw.shape[0], t)[4]).all()


def test_blocked_attention_runs_the_float32_steps(monkeypatch):
    """A 16-bit attention's tiles go through the float32 steps (and give the
    decomposition's values: test_blocked_attention_equals_decomposition)."""
    import hal.reference_blocked as rb

    taken = []
    real = rb._Float32Tiles.probs

    def spy(self, *args):
        out = real(self, *args)
        taken.append(out is not None)
        return out

    monkeypatch.setattr(rb._Float32Tiles, "probs", spy)
    g = _graph("bf16", 1, 4, 2, 24, 24, 16, 16, causal=True)
    evaluate(g, _inputs(g, seed=0), tile_elements=64)
    assert taken and all(taken)
