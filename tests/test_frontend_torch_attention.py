"""torch's scaled_dot_product_attention through torch.export -> hal (hal.frontends.
torch_ops_attention): kept whole, converted to hal's attention composites, masks folded
when they depend on no input, torch's zero rows for fully masked queries, and the fused
attention kernel the fusion pass finds for each form."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hal.devices.loader import load_spec  # noqa: E402
from hal.errors import UnsupportedError  # noqa: E402
from hal.frontends.torch_export import import_exported_program  # noqa: E402
from hal.fusion import plan  # noqa: E402

F = torch.nn.functional
G = torch.Generator().manual_seed(0)
Q = torch.randn(1, 4, 6, 8, generator=G)
K = torch.randn(1, 4, 6, 8, generator=G)
V = torch.randn(1, 4, 6, 8, generator=G)
KG = torch.randn(1, 2, 6, 8, generator=G)   # 2 kv heads for 4 query heads
VG = torch.randn(1, 2, 6, 8, generator=G)


class Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def causal_from_arange(q, k, v):
    """A causal mask built in the graph from positions, as libraries do."""
    s, t = q.shape[-2], k.shape[-2]
    mask = torch.arange(t)[None, :] <= torch.arange(s)[:, None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[None, None])


def window_from_arange(q, k, v):
    i, j = torch.arange(q.shape[-2])[:, None], torch.arange(k.shape[-2])[None, :]
    mask = (j <= i) & (j > i - 3)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def additive_min_from_arange(q, k, v):
    """transformers' eager-style additive mask: 0 where visible, finfo.min elsewhere."""
    keep = torch.arange(6)[None, :] <= torch.arange(6)[:, None]
    add = torch.zeros(6, 6).masked_fill(~keep, torch.finfo(torch.float32).min)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=add)


def empty_row_constant(q, k, v):
    keep = torch.arange(6)[None, :] < torch.arange(6)[:, None]   # row 0 sees no key
    return F.scaled_dot_product_attention(q, k, v, attn_mask=keep)


def input_mask(q, k, v, mask):
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


BOOL_MASK = torch.rand(1, 1, 6, 6, generator=G) > 0.4
BOOL_MASK[0, 0, 2] = False          # query 2 sees no key: torch gives 0
ADD_MASK = torch.randn(1, 4, 6, 6, generator=G)
ADD_MASK[0, 1, 3] = -math.inf       # a fully -inf row

CASES = {
    "plain": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v), Q, K, V),
    "is_causal": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                  Q, K, V),
    "scale": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.3), Q, K, V),
    "gqa": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                           enable_gqa=True), Q, KG, VG),
    "rank3": (lambda q, k, v: F.scaled_dot_product_attention(q, k, v), Q[0], K[0], V[0]),
    "causal_from_arange": (causal_from_arange, Q, K, V),
    "window_from_arange": (window_from_arange, Q, K, V),
    "additive_min_from_arange": (additive_min_from_arange, Q, K, V),
    "empty_row_constant": (empty_row_constant, Q, K, V),
    "bool_input_mask": (input_mask, Q, K, V, BOOL_MASK),
    "additive_input_mask": (input_mask, Q, K, V, ADD_MASK),
}


def _import(case):
    fn, *args = CASES[case]
    m = Fn(fn).eval()
    with torch.no_grad():
        expected = m(*args).numpy()
    im = import_exported_program(torch.export.export(m, tuple(args)), case)
    return im, args, expected


@pytest.mark.parametrize("case", sorted(CASES))
def test_sdpa_matches_eager(case):
    im, args, expected = _import(case)
    got = im.run([a.numpy() for a in args])[0]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def _ops(im):
    return [n.op for n in im.graph.nodes]


def test_causal_mask_from_positions_becomes_causal_attention():
    """The folded mask is exactly the causal pattern: no mask tensor is read."""
    im, _, _ = _import("causal_from_arange")
    node = next(n for n in im.graph.nodes if n.op == "scaled_dot_product_attention")
    assert node.attrs["causal"] is True
    assert not im.graph.constants
    assert not {"iota", "le", "lt"} & set(_ops(im))
    im2, _, _ = _import("additive_min_from_arange")   # finfo.min hides keys as -inf does
    assert next(n for n in im2.graph.nodes
                if n.op == "scaled_dot_product_attention").attrs["causal"] is True


def test_other_constant_masks_become_additive_constants():
    im, _, _ = _import("window_from_arange")
    assert "sdpa_masked" in _ops(im) and "select" not in _ops(im)   # every row sees a key
    (c,) = im.graph.constants
    assert c.value.dtype.name == "f32" and tuple(c.value.shape) == (1, 1, 6, 6)
    im2, _, _ = _import("empty_row_constant")
    assert "select" in _ops(im2)   # query 0 sees nothing: torch's zero row is kept


@pytest.mark.parametrize("case,empty", [("bool_input_mask", (0, slice(None), 2)),
                                        ("additive_input_mask", (0, 1, 3))])
def test_input_masks_keep_torchs_zero_rows(case, empty):
    im, args, expected = _import(case)
    assert {"sdpa_masked", "reduce_any", "select"} <= set(_ops(im))
    assert np.all(expected[empty] == 0)     # torch: a query that sees no key gives 0
    got = im.run([a.numpy() for a in args])[0]
    assert np.all(got[empty] == 0) and np.isfinite(got).all()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["is_causal", "gqa", "causal_from_arange",
                                  "window_from_arange", "bool_input_mask"])
def test_sdpa_fuses_into_one_attention_kernel(case):
    im, _, _ = _import(case)
    p = plan(im.graph, load_spec("h100-sxm"))
    assert [g.kind.value for g in p.groups].count("attention") == 1


@pytest.mark.parametrize("case", ["causal_from_arange", "bool_input_mask"])
def test_sdpa_on_cpu_sim(case):
    im, args, expected = _import(case)
    got = im.run([a.numpy() for a in args], backend="cpu_sim", spec=load_spec("h100-sxm"))[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_attention_dropout_is_unsupported():
    m = Fn(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, dropout_p=0.5)).eval()
    ep = torch.export.export(m, (Q, K, V))
    with pytest.raises(UnsupportedError, match="dropout"):
        import_exported_program(ep, "dropout")


def test_fold_takes_input_free_values_only():
    """TorchContext.fold: a value built from arange folds; one that reads a model input or
    draws random numbers does not."""
    from hal.frontends.torch_convert import fold_fx_value

    class M(torch.nn.Module):
        def forward(self, x):
            return torch.arange(4) * 2 + x, torch.rand(4) + x, x * 3

    ep = torch.export.export(M(), (torch.ones(4),))
    adds = [n for n in ep.graph.nodes if n.op == "call_function" and "add" in str(n.target)]
    folded = fold_fx_value(adds[0].args[0], {}, ep.graph_module)
    assert torch.equal(folded, torch.arange(4) * 2)
    assert fold_fx_value(adds[1].args[0], {}, ep.graph_module) is None   # random
    mul = next(n for n in ep.graph.nodes if n.op == "call_function" and "mul" in str(n.target)
               and n.args[0].op == "placeholder")
    assert fold_fx_value(mul, {}, ep.graph_module) is None               # reads x


def test_input_free_expensive_values_become_constants():
    """An input-free value with a gather or scan among its producers (a library's mask from
    cumsum'd positions) is imported as a constant; an elementwise chain of arange is not
    (its consumers' kernels recompute it for free)."""
    class M(torch.nn.Module):
        def forward(self, x):
            pos = torch.cumsum(torch.ones(6, dtype=torch.int64), 0) - 1      # a scan
            mask = torch.where(pos[None, :] <= pos[:, None], 0.0, float("-inf"))
            ramp = torch.arange(6.0) * 0.5                                  # elementwise
            return torch.softmax(x + mask, -1) + ramp

    x = torch.randn(2, 6, 6, generator=G)
    m = M().eval()
    im = import_exported_program(torch.export.export(m, (x,)), "fold")
    ops = _ops(im)
    assert "cumsum" not in ops and "iota" in ops        # the mask folded, the ramp kept
    assert any(tuple(c.value.shape) == (6, 6) for c in im.graph.constants)
    np.testing.assert_allclose(im.run([x.numpy()])[0], m(x).numpy(), rtol=1e-6, atol=1e-6)
