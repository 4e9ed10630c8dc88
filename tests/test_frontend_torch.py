"""The torch frontends: every ATen converter against eager torch, the example models
through torch.export (.pt2 round trip, f32 and bf16, reference and cpu_sim),
torch.compile(backend="hal") with and without eager fallback, and the errors for
unsupported ops and dynamic shapes."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from hal.backends_registry import get_backend  # noqa: E402
from hal.errors import UnsupportedError  # noqa: E402
from hal.frontends.bringup import compare, tolerance  # noqa: E402
from hal.frontends.torch_export import import_exported_program, import_pt2, load_pt2  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"hal_example_{name}", MODELS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _cpu_sim_available() -> bool:
    try:
        return bool(get_backend("cpu_sim").probe())
    except Exception:  # noqa: BLE001
        return False


CPU_SIM = _cpu_sim_available()
BACKENDS = ["reference"] + (["cpu_sim"] if CPU_SIM else [])


class Fn(torch.nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def _np(t):
    return t.detach().float().numpy() if t.dtype == torch.bfloat16 else t.detach().numpy()


def _flat(x):
    if isinstance(x, torch.Tensor):
        yield x
    else:
        for y in x:
            yield from _flat(y)


def check(fn, *args, backend="reference", rtol=1e-5, atol=1e-5):
    m = Fn(fn).eval()
    expected = list(_flat(m(*args)))
    im = import_exported_program(torch.export.export(m, args), "case")
    got = im.run([a.numpy() for a in args], backend=backend)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == tuple(e.shape)
        if e.dtype.is_floating_point:
            np.testing.assert_allclose(np.asarray(g, np.float64), _np(e), rtol=rtol, atol=atol)
        else:
            np.testing.assert_array_equal(g, e.numpy())
    return im


g = torch.Generator().manual_seed(0)
X = torch.randn(3, 4, 5, generator=g)
Y = torch.randn(3, 4, 5, generator=g)
P = torch.rand(3, 4, 5, generator=g) + 0.5        # positive
IN = torch.randint(-6, 7, (3, 4, 5), generator=g)  # int64
J = torch.randint(1, 4, (3, 4, 5), generator=g)
IDX = torch.tensor([[0, 2], [1, -1]])
M2 = torch.randn(4, 6, generator=g)

CASES = {
    "add_scalar": (lambda x: x + 2.5, X),
    "add_alpha": (lambda x, y: torch.add(x, y, alpha=3), X, Y),
    "sub_rsub": (lambda x, y: (x - y, 1 - x), X, Y),
    "mul_broadcast": (lambda x: x * x[:, :1, :], X),
    "int_float_promotion": (lambda i, x: i + x, IN, X),
    "div_true_int": (lambda i, j: i / j, IN, J),
    "div_trunc_floor_int": (lambda i, j: (torch.div(i, j, rounding_mode="trunc"),
                                          torch.div(i, j, rounding_mode="floor")), IN, J),
    "div_floor_float": (lambda x, y: torch.div(x, y, rounding_mode="floor"), X, P),
    "remainder": (lambda i, j: torch.remainder(i, -j), IN, J),
    "pow": (lambda x, p: (x ** 2, p ** 3.0, p ** x, torch.pow(2.0, x)), X, P),
    "unary_math": (lambda x, p: (torch.rsqrt(p), torch.sin(x), torch.cos(x), -x,
                                 torch.sigmoid(x), torch.tanh(x), torch.exp(x), torch.log(p),
                                 torch.erf(x), torch.sqrt(p), torch.reciprocal(p), x.abs()),
                   X, P),
    "activations": (lambda x: (torch.relu(x), torch.nn.functional.gelu(x),
                               torch.nn.functional.gelu(x, approximate="tanh"),
                               torch.nn.functional.silu(x)), X),
    "max_min_clamp": (lambda x, y: (torch.maximum(x, y), torch.minimum(x, y),
                                    x.clamp(-0.5, 0.5), x.clamp(min=0.1)), X, Y),
    "compare": (lambda x, y, i: (x == y, x != y, x < y, x <= 0.2, x > y, i >= 1), X, Y, IN),
    "logic": (lambda x, y: (torch.bitwise_and(x > 0, y > 0), torch.logical_not(x > 0),
                            ~(x > y), torch.logical_or(x > 0, y)), X, Y),
    "where_masked_fill": (lambda x, y: (torch.where(x > 0, x, y), torch.where(x > 0, x, 0.0),
                                        x.masked_fill(y > 0, float("-inf"))), X, Y),
    "factories": (lambda x: (torch.arange(5) + x.shape[0], torch.arange(2, 11, 3),
                             torch.arange(0.0, 1.0, 0.25), torch.full((2, 3), 7.0),
                             torch.full_like(x, 2), torch.zeros_like(x), torch.ones(2, 2),
                             x + torch.tensor(3.0)), X),
    "triu_tril": (lambda m: (m.triu(1), m.tril(), torch.tril(torch.ones(4, 4), -1)), M2),
    "cumsum": (lambda x, i: (torch.cumsum(x, 1), torch.cumsum(i, -1),
                             torch.cumsum(x > 0, 0)), X, IN),
    "any_all": (lambda x: ((x > 1).any(), (x > -3).all(), (x > 1).any(dim=1),
                           (x > 0).all(dim=-1, keepdim=True)), X),
    "sum_mean": (lambda x, i: (x.sum(), x.sum(dim=(0, 2)), x.sum(-1, keepdim=True),
                               i.sum(1), (x > 0).sum(-1), x.mean(), x.mean(-1, keepdim=True),
                               x.sum(1, dtype=torch.float64)), X, IN),
    "max_argmax": (lambda x: (x.amax(-1), x.amin((0, 1)), x.max(dim=1).values,
                              x.max(dim=1).indices, x.min(-1)[1], x.argmax(), x.argmin(1),
                              x.max()), X),
    "var_mean": (lambda x: (torch.var_mean(x, -1), torch.var(x, 1, unbiased=False),
                            torch.var(x, (0, 2), correction=0, keepdim=True)), X),
    "softmax": (lambda x: (torch.softmax(x, -1), torch.log_softmax(x, 1)), X),
    "layer_norm": (lambda x, w, b: (torch.nn.functional.layer_norm(x, (5,), w, b),
                                    torch.nn.functional.layer_norm(x, (4, 5))),
                   X, torch.randn(5, generator=g), torch.randn(5, generator=g)),
    "views": (lambda x: (x.view(12, 5), x.reshape(-1), x.permute(2, 0, 1), x.transpose(0, 2),
                         x.unsqueeze(1), x[:, :1].squeeze(1), x.flatten(1), x.t() if
                         x.dim() == 2 else x.mT, x.contiguous(), x.clone(), x.detach()), X),
    "slices": (lambda x: (x[:, 1:3], x[..., ::2], x[1], x[:, -1], x[:, 1:100],
                          x.narrow(2, 1, 2)), X),
    "split_cat_stack": (lambda x: (*x.split(2, dim=1), *x.split([1, 4], dim=-1),
                                   torch.cat([x, x * 2], 1), torch.stack([x, x], 0),
                                   *x.unbind(0), *x.chunk(2, dim=-1)), X),
    "expand_repeat": (lambda x: (x[:, :1].expand(3, 4, 5), x[None].expand(2, 3, 4, 5),
                                 x.repeat(1, 2, 1)), X),
    "pad": (lambda x: torch.nn.functional.pad(x, (1, 2, 0, 1), value=-1.0), X),
    "casts": (lambda x, i: (x.to(torch.float16).float(), i.float(), x.to(torch.int32),
                            (x > 0).to(torch.float32), x.double(), x.bfloat16().float()), X, IN),
    "index_tensor": (lambda x, idx: (x[idx], x[:, idx], x[idx, :, idx], x[:, idx, idx],
                                     x[:, :, idx], x[torch.tensor([1, 0, 2])]), X, IDX),
    "embedding_gather": (lambda x, w, idx: (torch.nn.functional.embedding(idx.abs(), w),
                                            torch.index_select(x, 1, idx.abs().reshape(-1)),
                                            torch.gather(x, 2, (idx.abs() % 5)[None].expand(
                                                3, 2, 2))),
                         X, torch.randn(7, 3, generator=g), IDX),
    "matmuls": (lambda a, b, x, w, bias: (a @ b, torch.bmm(x, x.transpose(1, 2)),
                                          torch.addmm(bias, a, b, beta=0.5, alpha=2.0),
                                          torch.nn.functional.linear(x, w, bias[:4]),
                                          x @ w.t(), torch.matmul(x, w.t()[:, :3])),
                torch.randn(3, 4, generator=g), M2, X, torch.randn(4, 5, generator=g),
                torch.randn(6, generator=g)),
    "sdpa": (lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(
        q, k, v, is_causal=True), torch.randn(1, 2, 6, 8, generator=g),
        torch.randn(1, 2, 6, 8, generator=g), torch.randn(1, 2, 6, 8, generator=g)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_converter_matches_eager(case):
    fn, *args = CASES[case]
    check(fn, *args)


@pytest.mark.skipif(not CPU_SIM, reason="cpu_sim backend unavailable")
@pytest.mark.parametrize("case", ["int_float_promotion", "where_masked_fill", "factories",
                                  "index_tensor", "layer_norm", "cumsum", "matmuls", "sdpa",
                                  "div_trunc_floor_int", "max_argmax"])
def test_converter_on_cpu_sim(case):
    fn, *args = CASES[case]
    check(fn, *args, backend="cpu_sim", rtol=1e-4, atol=1e-5)


def test_converter_registry_covers_decoder_ops():
    from hal.frontends.torch_convert import TORCH_CONVERTERS

    for op in ("arange", "full", "full_like", "scalar_tensor", "cumsum", "any", "eq", "ne",
               "le", "lt", "ge", "gt", "bitwise_and", "logical_not", "index", "where",
               "expand", "slice", "cat", "split_with_sizes", "clone", "alias", "_to_copy",
               "_assert_tensor_metadata", "unsqueeze", "view", "permute", "embedding",
               "addmm", "mm", "bmm", "native_layer_norm", "_softmax", "mean", "rsqrt", "pow",
               "sin", "cos", "neg", "sigmoid", "tanh", "add", "sub", "mul", "div", "t",
               "transpose", "squeeze", "select", "sum", "amax", "exp", "log", "gelu", "silu",
               "relu", "var_mean", "erf", "sqrt", "reciprocal", "maximum", "minimum", "clamp",
               "triu", "tril", "_unsafe_view", "copy", "detach", "lift_fresh_copy", "sym_size"):
        assert f"aten.{op}" in TORCH_CONVERTERS, op


# -- whole models -------------------------------------------------------------------

def _assert_parity(im, outs, expected):
    for i, (o, e) in enumerate(zip(outs, expected, strict=True)):
        rtol, atol = tolerance(im.graph, i, e)
        c = compare(o, e, rtol, atol)
        assert c["ok"], (c, rtol, atol)


@pytest.mark.parametrize("name", ["gpt2_style", "llama_style"])
def test_model_pt2_roundtrip_matches_eager(name, tmp_path):
    model, ex = _load(name).make()
    with torch.no_grad():
        expected = model(*ex).numpy()
    path = tmp_path / f"{name}.pt2"
    torch.export.save(torch.export.export(model, ex), path)
    im = import_pt2(path)
    assert load_pt2(path) == im.graph  # a fresh import gives an equal graph
    for backend in BACKENDS:
        out = im.run([ex[0].numpy()], backend=backend)[0]
        assert out.shape == expected.shape
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=2e-5)
        _assert_parity(im, [out], [expected])
    # the saved .hal + .npz run the same
    from hal.ir.text import load_graph
    from hal.reference import evaluate

    hal_path = im.save(tmp_path / "saved" / f"{name}.hal")
    g2 = load_graph(hal_path)
    assert os.path.exists(tmp_path / "saved" / f"{im.graph.name}.weights.npz")
    out2 = evaluate(g2, im.bind([ex[0].numpy()]))[g2.outputs[0].name]
    np.testing.assert_array_equal(out2, im.run([ex[0].numpy()])[0])


@pytest.mark.parametrize("name", ["gpt2_style", "llama_style"])
def test_model_bf16_matches_eager(name):
    model, ex = _load(name).make()
    model = model.to(torch.bfloat16)
    with torch.no_grad():
        expected = model(*ex).float().numpy()
    im = import_exported_program(torch.export.export(model, ex), name)
    assert im.graph.outputs[0].dtype.name == "bf16"
    for backend in BACKENDS:
        out = np.asarray(im.run([ex[0].numpy()], backend=backend)[0], np.float32)
        _assert_parity(im, [out], [expected])
        assert np.abs(out - expected).max() < 0.05


@pytest.mark.parametrize("options", [None, {"backend": "reference", "device": "mi300x"}])
def test_torch_compile_matches_eager(options):
    from hal.frontends import torch_dynamo

    torch._dynamo.reset()
    model, ex = _load("llama_style").make()
    with torch.no_grad():
        expected = model(*ex)
        compiled = torch.compile(model, backend="hal", options=options)
        got = compiled(*ex)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=2e-5)
    s = torch_dynamo.LAST_SUMMARY
    assert s.hal_regions == 1 and not s.eager_ops and s.hal_ops > 100


def test_torch_compile_entry_point_registered():
    from importlib.metadata import entry_points

    names = {ep.name: ep.value for ep in entry_points(group="torch_dynamo_backends")}
    assert names.get("hal") == "hal.frontends.torch_dynamo:hal_backend"
    assert "hal" in torch._dynamo.list_backends()


class WithFFT(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x):
        h = torch.tanh(self.lin(x))
        spec = torch.fft.rfft(h).abs()            # no hal converter (complex)
        return spec.sum(-1) + torch.special.i0(h).mean(-1)


def test_torch_compile_falls_back_to_eager_and_logs(caplog):
    from hal.frontends import torch_dynamo

    torch._dynamo.reset()
    m, x = WithFFT().eval(), torch.randn(4, 8, generator=g)
    with torch.no_grad():
        expected = m(x)
        with caplog.at_level("WARNING", logger="hal.frontends.torch_dynamo"):
            got = torch.compile(m, backend="hal", options={"backend": "reference"})(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    s = torch_dynamo.LAST_SUMMARY
    assert s.hal_regions >= 1 and s.hal_ops >= 2
    assert any("_fft_r2c" in k for k in s.eager_ops) and any("i0" in k for k in s.eager_ops)
    assert "eager fallback" in caplog.text


def test_unsupported_ops_listed_at_once_with_locations():
    m, x = WithFFT().eval(), torch.randn(4, 8, generator=g)
    with pytest.raises(UnsupportedError) as info:
        import_exported_program(torch.export.export(m, (x,)), "fft")
    msg = info.value.message
    assert "aten._fft_r2c" in msg and "aten.i0" in msg and "2 unsupported" in msg
    assert "test_frontend_torch.py:" in msg  # the user's source line
    assert "converts" in (info.value.hint or "")


def test_dynamic_shapes_are_rejected_with_the_fix():
    class Double(torch.nn.Module):
        def forward(self, x):
            return x * 2

    b = torch.export.Dim("b", min=2, max=64)
    ep = torch.export.export(Double(), (torch.randn(4, 3),), dynamic_shapes={"x": {0: b}})
    with pytest.raises(UnsupportedError) as info:
        import_exported_program(ep)
    assert "static" in info.value.message and "dynamic_shapes" in info.value.hint


def test_torch_compile_with_autograd_runs_backward_in_torch():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 4))
    x = torch.randn(3, 8, generator=g)
    model(x).square().sum().backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out = torch.compile(model, backend="hal", options={"backend": "reference"})(x)
    assert out.requires_grad
    out.square().sum().backward()
    for p, e in zip(model.parameters(), expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-5)
