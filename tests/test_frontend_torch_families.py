"""Issue 17: the OpInfo crashes and rejections as regressions, and the new op families
(convolution, pooling, batch/group norm, scatter/index_put, sort/topk, flip, cumprod,
norms, classification, trigonometry, lgamma, interpolation) against eager torch.

Each case is exported with torch.export, imported and run on hal's reference
(float64 evaluation of the primitive graph); a few also run on cpu_sim for
h100-sxm, the way `hal bringup` runs them."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from hal.frontends.torch_export import import_exported_program  # noqa: E402


class Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def _flat(x):
    if isinstance(x, torch.Tensor):
        yield x
    else:
        for y in x:
            yield from _flat(y)


def check(fn, *args, backend="reference", rtol=2e-5, atol=2e-5):
    m = Fn(fn).eval()
    expected = list(_flat(m(*args)))
    im = import_exported_program(torch.export.export(m, args), "case")
    got = im.run([a.numpy() for a in args], backend=backend,
                 **({"compare_reference": False} if backend == "cpu_sim" else {}))
    assert len(got) == len(expected)
    for gv, e in zip(got, expected, strict=True):
        assert gv.shape == tuple(e.shape)
        if e.dtype.is_floating_point:
            np.testing.assert_allclose(np.asarray(gv, np.float64), e.detach().numpy(),
                                       rtol=rtol, atol=atol)
        else:
            np.testing.assert_array_equal(gv, e.numpy())
    return im


g = torch.Generator().manual_seed(17)
X = torch.randn(3, 4, 5, generator=g)
U = torch.rand(3, 4, 5, generator=g) * 1.8 - 0.9          # in (-0.9, 0.9)
IMG = torch.randn(2, 4, 9, 9, generator=g)
Z = torch.tensor(1.5)                                     # 0-d


# -- the crashes and rejections -------------------------------------------

REGRESSIONS = {
    # aten.round.decimals reached the plain round converter (TypeError)
    "round_decimals": (lambda x: (torch.round(x * 100, decimals=1), torch.round(x, decimals=3),
                                  torch.round(x * 1e4, decimals=-2)), X),
    # dim %= rank on 0-d inputs (ZeroDivisionError)
    "index_select_gather_0d": (lambda z: (torch.index_select(z, 0, torch.tensor([0])),
                                          torch.gather(z, 0, torch.tensor(0))), Z),
    # mul on bool tensors, as decomposed isfinite, isclose and logaddexp emit
    "bool_arithmetic": (lambda x, y: ((x > 0) * (y > 0), (x > 0) + (y > 1), torch.isclose(x, y),
                                      torch.isfinite(x / y), torch.logaddexp(x, y)), X, U),
    # max/min/argmax/argmin with dim 0 on 0-d tensors
    "reductions_0d": (lambda z: (torch.max(z, 0), torch.min(z, -1, keepdim=True),
                                 torch.argmax(z, 0), torch.argmin(z)), Z),
    # var/std over a zero-size axis (the kernel verifier saw a size-0 buffer)
    "moments_empty_axis": (lambda e: (torch.var(e, 0), torch.std(e, 0), torch.var_mean(e, 0),
                                      torch.var(e, 0, correction=0.5)),
                           torch.zeros(0, 3)),
    # softmax on 0-d and on an empty axis
    "softmax_0d_empty": (lambda z, e: (torch.softmax(z, 0), torch.log_softmax(z, -1),
                                       torch.softmax(e, 1)), Z, torch.zeros(2, 0)),
    "fractional_correction": (lambda x: torch.var(x, 1, correction=1.5), X),
}


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression(name):
    fn, *args = REGRESSIONS[name]
    check(fn, *args)


# -- new op families ---------------------------------------------------------------

FAMILIES = {
    "conv2d": (lambda x, w, b: (F.conv2d(x, w, b, stride=2, padding=1),
                                F.conv2d(x, w[:, :2], None, padding=(2, 1), dilation=2, groups=2)),
               IMG, torch.randn(6, 4, 3, 3, generator=g), torch.randn(6, generator=g)),
    "conv1d_conv3d": (lambda x, w1, w3: (F.conv1d(x.flatten(2), w1, stride=3),
                                         F.conv3d(x.unsqueeze(1), w3, padding=1)),
                      IMG, torch.randn(3, 4, 5, generator=g), torch.randn(2, 1, 3, 3, 3,
                                                                          generator=g)),
    "pooling": (lambda x: (F.max_pool2d(x, 3, 2, 1), F.max_pool2d(x, 2, ceil_mode=True),
                           F.max_pool2d(x, 3, return_indices=True)[1],
                           F.avg_pool2d(x, 3, 2, 1), F.avg_pool2d(x, 3, 2, 1,
                                                                  count_include_pad=False),
                           F.adaptive_avg_pool2d(x, (4, 3)), F.adaptive_max_pool2d(x, 3),
                           F.max_pool1d(x.flatten(2), 4), F.avg_pool3d(x.unsqueeze(0), 2)), IMG),
    "batch_group_norm": (lambda x, rm, rv, w, b: (
        F.batch_norm(x, rm, rv, w, b, training=False),
        F.batch_norm(x, None, None, w, b, training=True),
        F.group_norm(x, 2, w, b)), IMG, torch.randn(4, generator=g),
        torch.rand(4, generator=g) + 0.5, torch.randn(4, generator=g), torch.randn(4, generator=g)),
    "scatter_family": (lambda x, i, s: (
        torch.scatter(x, 1, i, s), torch.scatter_add(x, 1, i, s),
        torch.scatter_reduce(x, 1, i, s, "amax", include_self=False),
        torch.scatter_reduce(x, 1, i, s, "mean"), torch.scatter_reduce(x, 0, i % 3, s, "prod"),
        x.index_add(1, torch.tensor([3, 0]), s[:, :2], alpha=2),
        x.index_copy(1, torch.tensor([4, 1]), s[:, :2])),
        torch.randn(3, 5, generator=g), torch.tensor([[0, 4, 4], [1, 2, 1], [3, 3, 0]]),
        torch.randn(3, 3, generator=g)),
    "index_put_kv_cache": (lambda cache, new, pos: (
        torch.ops.aten.index_put(cache, [None, None, pos], new),
        torch.ops.aten.index_put(cache, [pos - 3, None, pos - 1], new[0:1, :, 0] * 2, True)),
        torch.randn(4, 2, 6, 3, generator=g), torch.randn(4, 2, 1, 3, generator=g),
        torch.tensor([4])),
    "sort_topk": (lambda x, xs: (torch.sort(x, -1), torch.sort(x, 0, descending=True),
                                 torch.argsort(xs, stable=True), torch.topk(x, 2, 1),
                                 torch.topk(x, 3, largest=False), torch.median(x, 1),
                                 torch.kthvalue(x, 2, 2), torch.msort(x)),
                  X, torch.tensor([3.0, 1.0, float("nan"), 1.0, -2.0, 3.0])),
    "movement": (lambda x: (torch.flip(x, (0, 2)), torch.roll(x, (2, -1), (1, 2)),
                            torch.diagonal(x, 1, 1, 2), torch.diagonal(x, -2, 0, 2),
                            x.unfold(2, 2, 2), torch.as_strided(x.flatten(), (4, 3), (2, 5))), X),
    "classify_fmax": (lambda x: (torch.isnan(x), torch.isinf(x), torch.isposinf(x),
                                 torch.isneginf(x), torch.signbit(x), torch.fmax(x, x.flip(0)),
                                 torch.fmin(x, x.flip(0)), torch.copysign(x.abs(), x.flip(0))),
                      torch.tensor([1.0, -0.0, 0.0, math.inf, -math.inf, math.nan, -2.5])),
    "trig": (lambda x, u: (torch.atan(x * 3), torch.atan2(x, u), torch.asin(u), torch.acos(u),
                           torch.tan(u), torch.sinh(x), torch.cosh(x), torch.asinh(x * 10),
                           torch.acosh(x.abs() + 1), torch.atanh(u)), X, U),
    "lgamma": (lambda x: (torch.lgamma(x * 4), torch.lgamma(x.abs() * 50 + 0.1)), X),
    "digamma_polygamma": (lambda x: (torch.digamma(x * 4), torch.polygamma(1, x * 4),
                                     torch.polygamma(2, x.abs() + 0.2)), X),
    "index_reduce": (lambda x, s: (x.index_reduce(0, torch.tensor([0, 2, 0]), s, "amax"),
                                   x.index_reduce(1, torch.tensor([1, 1, 4]), s[:, :3], "mean",
                                                  include_self=False)),
                     torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)),
    "norms_scans": (lambda x: (torch.linalg.vector_norm(x), torch.linalg.vector_norm(x, 1, 1),
                               torch.linalg.vector_norm(x, math.inf, (0, 2), keepdim=True),
                               torch.linalg.vector_norm(x, 3.0, -1),
                               torch.linalg.vector_norm(x, 0, -1), torch.cumprod(x, 1),
                               torch.cummax(x, 2), torch.cummin(x, 0),
                               torch.logcumsumexp(x, 1)), X),
    "interpolate": (lambda x: (F.interpolate(x, scale_factor=2, mode="nearest"),
                               F.interpolate(x, size=(5, 13), mode="bilinear"),
                               F.interpolate(x, size=(4, 4), mode="bilinear", align_corners=True)),
                    IMG),
    "blas_misc": (lambda m, v, b: (torch.addmv(v[:4], m, v, beta=0.5), torch.addbmm(
        m[:, :4], b, b.transpose(1, 2)), torch.addr(m, v[:4], v, alpha=2), torch.trunc(m * 3),
        torch.frac(m * 3), torch.log10(m.abs()), F.leaky_relu(m, 0.2), F.elu(m),
        torch.searchsorted(torch.arange(6.0) - 2, m)),
        torch.randn(4, 6, generator=g), torch.randn(6, generator=g), torch.randn(2, 4, 3,
                                                                               generator=g)),
}


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_reference(name):
    fn, *args = FAMILIES[name]
    check(fn, *args, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["conv2d", "index_put_kv_cache", "sort_topk", "pooling"])
def test_family_cpu_sim(name):
    """The same graphs fused, lowered for h100-sxm and simulated (what bringup runs)."""
    fn, *args = FAMILIES[name]
    check(fn, *args, backend="cpu_sim", rtol=1e-4, atol=1e-4)


def test_conv_is_one_matmul():
    """The convolution lowers as an implicit GEMM: one matmul on the patches, no loops."""
    im = check(lambda x, w: F.conv2d(x, w, padding=1), IMG, torch.randn(8, 4, 3, 3, generator=g))
    ops = [n.op for n in im.graph.nodes]
    assert ops.count("matmul") == 1 and ops.count("slice") == 9


def test_complex_outputs_are_reported_unsupported():
    """bringup's NumPy conversion crashed on complex outputs and conjugate-bit tensors."""
    from hal.errors import UnsupportedError
    from hal.frontends.bringup import load_subject

    with pytest.raises(UnsupportedError, match="complex"):
        load_subject("tests/test_frontend_torch_families.py:_complex_model")


def _complex_model():
    return Fn(lambda x: torch.view_as_complex(x).conj()), (torch.randn(3, 2),)


def test_resnet_style_example_brings_up():
    """The CNN example: conv + batch norm + pooling import, plan to matmul kernels (conv as
    implicit GEMM, batch norm fused) and match eager torch on the reference."""
    from hal.devices.loader import load_spec
    from hal.frontends.bringup import load_subject
    from hal.fusion import plan

    s = load_subject("examples/models/resnet_style.py:make")
    assert s.model is not None and not s.unsupported
    kinds = [g["kind"] for g in plan(s.model.graph, load_spec("h100-sxm")).to_dict()["groups"]]
    assert kinds.count("matmul") == 7          # six convolutions and the head
    out = s.model.run(s.inputs, backend="reference")[0]
    np.testing.assert_allclose(out, s.expected[0], rtol=1e-4, atol=1e-5)


_PT2_PKG = '''
from dataclasses import dataclass
import torch

@dataclass
class Out:
    logits: torch.Tensor
    extra: torch.Tensor

torch.utils._pytree.register_dataclass(Out, serialized_type_name="{pkg}.outputs.Out")
'''

_PT2_MAKE = '''
import sys, torch
sys.path.insert(0, {root!r})
from {pkg}.outputs import Out

class M(torch.nn.Module):
    def forward(self, ids, scale=None, use_cache=True):
        y = ids.float() * 2
        return Out(y * scale, y + 1)

ep = torch.export.export(M(), (torch.arange(6).reshape(2, 3),),
                         kwargs={{"scale": torch.tensor(3.0), "use_cache": False}})
torch.export.save(ep, {out!r})
'''


def _save_pt2(tmp_path, pkg):
    import subprocess
    import sys

    (tmp_path / pkg).mkdir()
    (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / pkg / "outputs.py").write_text(_PT2_PKG.format(pkg=pkg))
    out = str(tmp_path / "m.pt2")
    subprocess.run([sys.executable, "-c", _PT2_MAKE.format(root=str(tmp_path), pkg=pkg, out=out)],
                   check=True, capture_output=True)
    return out


def test_pt2_with_output_class_and_kwargs(tmp_path, monkeypatch):
    """A .pt2 whose output class lives in an importable (not yet imported) module and whose
    program takes keyword inputs: the module is imported, (args, kwargs) are used."""
    from hal.frontends.bringup import bringup, load_subject
    from hal.frontends.torch_export import pytree_types

    path = _save_pt2(tmp_path, "hal_t17_pkg_a")
    assert "hal_t17_pkg_a.outputs.Out" in pytree_types(path)
    monkeypatch.syspath_prepend(str(tmp_path))
    s = load_subject(path)
    assert s.model is not None and len(s.inputs) == 2           # ids and scale; use_cache baked
    from hal.devices.loader import load_spec

    rep = bringup(s, "reference", load_spec("h100-sxm"))
    assert rep["ok"] and len(rep["parity"]) == 2


def test_pt2_unregistered_class_names_it(tmp_path):
    from hal.errors import HalError
    from hal.frontends.bringup import load_subject

    path = _save_pt2(tmp_path, "hal_t17_pkg_b")   # the package is not on sys.path here
    with pytest.raises(HalError, match=r"hal_t17_pkg_b\.outputs\.Out.*not registered"):
        load_subject(path)
