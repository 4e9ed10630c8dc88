"""Issue 17, session 5: `torch.nn.functional.linear_cross_entropy` with the chunked
options exports as torch_nn's `_linear_cross_entropy_batch_chunked` custom ops (no
decomposition registered); hal converts them to one matmul + log_softmax + a gather
(hal/frontends/torch_ops_nn.py). Checked against eager torch with class weights,
bias, ignore_index (including a batch where every target is ignored) and every
reduction, on hal's reference and on cpu_sim for h100-sxm."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from tests.test_frontend_torch_families import Fn, check  # noqa: E402

g = torch.Generator().manual_seed(5)
X = torch.randn(12, 6, generator=g)
W = torch.randn(5, 6, generator=g)
B = torch.randn(5, generator=g)
CW = torch.rand(5, generator=g) + 0.5
T = torch.tensor([0, 4, 2, -100, 1, 3, 3, 2, -100, 0, 4, 1])


def _lce(reduction, **kw):
    from torch.nn.modules.linear_cross_entropy_options import LinearCrossEntropyOptions

    opts = LinearCrossEntropyOptions(batch_chunk_size=5)
    return lambda x, w, t, b, cw: F.linear_cross_entropy(
        x, w, t, reduction=reduction, options=opts,
        **{k: {"bias": b, "weight": cw}.get(v, v) for k, v in kw.items()})


CASES = {
    "mean": ({}, "mean"),
    "sum_bias_weight": ({"linear_bias": "bias", "weight": "weight"}, "sum"),
    "mean_ignore_weight": ({"ignore_index": -100, "weight": "weight"}, "mean"),
    "none_ignore": ({"ignore_index": -100, "linear_bias": "bias"}, "none"),
}


def _targets(name):
    return T if "ignore" in name else T.clamp(min=0)


@pytest.mark.parametrize("name", sorted(CASES))
def test_reference(name):
    kw, red = CASES[name]
    fn = _lce(red, **kw)
    ep = torch.export.export(Fn(fn), (X, W, _targets(name), B, CW))
    assert any(str(n.target).startswith("torch_nn._linear_cross_entropy_batch_chunked")
               for n in ep.graph.nodes)      # the custom op, not torch's fallback path
    im = check(fn, X, W, _targets(name), B, CW, rtol=1e-5, atol=1e-6)
    assert "matmul" in [n.op for n in im.graph.nodes]


def test_cpu_sim():
    kw, red = CASES["mean_ignore_weight"]
    check(_lce(red, **kw), X, W, T, B, CW, backend="cpu_sim", rtol=1e-4, atol=1e-5)


def test_all_ignored_mean_is_nan():
    """Every target ignored: torch's mean is 0 / 0 = NaN, and so is hal's."""
    t = torch.full((12,), -100)
    check(_lce("mean", ignore_index=-100), X, W, t, B, CW)
