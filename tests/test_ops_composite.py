"""Composites: decomposition (evaluated primitive by primitive) == direct reference == torch."""

import math

import ml_dtypes
import numpy as np
import pytest
from ops_eval_helper import evaluate, one_node_graph, wide

from hal.errors import ShapeError
from hal.ir.builder import GraphBuilder
from hal.ir.graph import Initializer
from hal.ops import get_op, ops_in
from hal.ops.decompose import decompose_graph
from hal.ops.registry import Category

torch = pytest.importorskip("torch", reason="torch is the comparison baseline: pip install hal[torch]")
F = torch.nn.functional

RNG = np.random.default_rng(3)


def _dt_name(a):
    return {np.dtype(np.float64): "f64", np.dtype(np.float32): "f32",
            np.dtype(ml_dtypes.bfloat16): "bf16", np.dtype(np.float16): "f16"}[a.dtype]


def check(op, arrays, attrs=None, rtol=1e-12, atol=1e-12):
    """Decompose a one-node graph, evaluate it, compare with the op's reference; return output."""
    attrs = attrs or {}
    specs = [(f"x{i}", _dt_name(a), a.shape) for i, a in enumerate(arrays)]
    g = one_node_graph(op, specs, **attrs)
    d = decompose_graph(g)
    assert not any(get_op(n.op).is_composite for n in d.nodes)
    assert [v.name for v in d.inputs] == [v.name for v in g.inputs]
    assert [v.name for v in d.outputs] == ["y"] and d.outputs[0].type == g.outputs[0].type
    inputs = {f"x{i}": a for i, a in enumerate(arrays)}
    got = evaluate(d, inputs)["y"]
    direct = evaluate(g, inputs)["y"]
    opdef = get_op(op)
    ref = opdef.reference([wide(a) for a in arrays], opdef.check_attrs(attrs))[0]
    assert got.shape == ref.shape and got.dtype == arrays[0].dtype
    np.testing.assert_allclose(got.astype(np.float64), ref, rtol=rtol, atol=atol)
    np.testing.assert_array_equal(direct.astype(np.float64), ref.astype(arrays[0].dtype)
                                  .astype(np.float64))
    return got


def t(a):
    return torch.from_numpy(np.asarray(a))


def test_all_composites_are_registered_with_decompositions():
    names = {o.name for o in ops_in(Category.COMPOSITE)}
    assert {"softmax", "log_softmax", "layer_norm", "rms_norm", "gelu", "silu", "mean",
            "variance", "linear", "linear_bias", "rotary_embedding",
            "scaled_dot_product_attention", "sdpa_masked"} <= names
    assert all(get_op(n).decompose is not None for n in names)


@pytest.mark.parametrize("shape,axis", [((3, 7), -1), ((2, 5, 4), 1), ((1,), 0), ((4, 1), -1),
                                        ((0, 3), -1)])
def test_softmax_and_log_softmax(shape, axis):
    x = RNG.standard_normal(shape) * 10
    y = check("softmax", [x], {"axis": axis})
    np.testing.assert_allclose(y, F.softmax(t(x), dim=axis).numpy(), rtol=1e-12, atol=1e-15)
    y = check("log_softmax", [x], {"axis": axis})
    np.testing.assert_allclose(y, F.log_softmax(t(x), dim=axis).numpy(), rtol=1e-12, atol=1e-12)


def test_softmax_special_values():
    x = np.array([[1000.0, 1000.0, -np.inf], [-np.inf, -np.inf, -np.inf], [np.inf, 0, 0],
                  [np.nan, 1.0, 2.0], [-0.0, 0.0, 1e-300]])
    for op, fn in (("softmax", F.softmax), ("log_softmax", F.log_softmax)):
        y = check(op, [x], {"axis": -1})
        np.testing.assert_allclose(y, fn(t(x), dim=-1).numpy(), rtol=1e-12, atol=1e-300,
                                   equal_nan=True)


def test_softmax_bf16_casts_to_f32():
    x = (RNG.standard_normal((4, 33)) * 4).astype(ml_dtypes.bfloat16)
    g = decompose_graph(one_node_graph("softmax", [("x", "bf16", x.shape)]))
    assert "cast" in [n.op for n in g.nodes] and g.nodes[-1].op == "cast"
    assert all(n.outputs[0].dtype.name == "f32" for n in g.nodes[1:-1] if n.op != "cast")
    y = evaluate(g, {"x": x})["y"].astype(np.float32)
    ref = F.softmax(t(x.astype(np.float32)).bfloat16(), dim=-1).float().numpy()
    np.testing.assert_allclose(y, ref, rtol=1.6e-2, atol=1e-5)


@pytest.mark.parametrize("shape,axis", [((3, 8), -1), ((2, 3, 4), 1), ((2, 1), -1)])
def test_layer_norm(shape, axis):
    x = RNG.standard_normal(shape) * 3 + 1
    norm_shape = shape[axis % len(shape):]
    w, b = RNG.standard_normal(norm_shape), RNG.standard_normal(norm_shape)
    y = check("layer_norm", [x, w, b], {"axis": axis, "eps": 1e-5}, rtol=1e-10, atol=1e-12)
    ref = F.layer_norm(t(x), norm_shape, t(w), t(b), eps=1e-5).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)


def test_layer_norm_f16_and_errors():
    x = RNG.standard_normal((4, 64)).astype(np.float16)
    w, b = np.ones(64, np.float16), np.zeros(64, np.float16)
    y = check("layer_norm", [x, w, b], rtol=2e-3, atol=2e-3)
    ref = F.layer_norm(t(x), (64,), t(w), t(b)).numpy()
    np.testing.assert_allclose(y.astype(np.float32), ref.astype(np.float32), rtol=2e-3, atol=2e-3)
    with pytest.raises(ShapeError, match="layer_norm: weight has shape"):
        one_node_graph("layer_norm", [("x", "f32", (2, 3)), ("w", "f32", (2,)),
                                      ("b", "f32", (3,))])
    with pytest.raises(ShapeError, match="layer_norm: operand 1 is f16"):
        one_node_graph("layer_norm", [("x", "f32", (2, 3)), ("w", "f16", (3,)),
                                      ("b", "f32", (3,))])


@pytest.mark.parametrize("dt,tol", [(np.float64, 1e-12), (np.float32, 2e-6),
                                    (ml_dtypes.bfloat16, 1.6e-2)])
def test_rms_norm(dt, tol):
    x = (RNG.standard_normal((3, 5, 16)) * 2).astype(dt)
    w = RNG.standard_normal(16).astype(dt)
    y = check("rms_norm", [x, w], {"eps": 1e-6}, rtol=tol, atol=tol)
    xf, wf = t(x.astype(np.float64)), t(w.astype(np.float64))
    ref = F.rms_norm(xf, (16,), wf, eps=1e-6).numpy()
    np.testing.assert_allclose(y.astype(np.float64), ref, rtol=tol, atol=tol)
    with pytest.raises(ShapeError, match="rms_norm: weight has shape"):
        one_node_graph("rms_norm", [("x", "f32", (3, 4)), ("w", "f32", (3,))])


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu(approximate):
    x = np.concatenate([RNG.standard_normal(50) * 4, [0.0, -0.0, 30.0, -30.0, np.inf, -np.inf]])
    y = check("gelu", [x], {"approximate": approximate}, rtol=1e-12, atol=1e-15)
    ref = F.gelu(t(x), approximate=approximate).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-15)
    with pytest.raises(ShapeError, match="gelu: approximate='exact'"):
        one_node_graph("gelu", [("x", "f32", (3,))], approximate="exact")


def test_silu():
    x = np.concatenate([RNG.standard_normal(50) * 4, [0.0, -0.0, 50.0, -50.0]])
    y = check("silu", [x])
    np.testing.assert_allclose(y, F.silu(t(x)).numpy(), rtol=1e-12, atol=1e-15)
    xb = x.astype(ml_dtypes.bfloat16)
    yb = check("silu", [xb], rtol=1e-2, atol=1e-2)
    ref = F.silu(t(xb.astype(np.float32)).bfloat16()).float().numpy()
    np.testing.assert_allclose(yb.astype(np.float32), ref, rtol=1.6e-2, atol=1e-5)


@pytest.mark.parametrize("axes,keepdims,correction", [(None, False, 0), ((1,), True, 1),
                                                      ((0, 2), False, 0), ((-1,), False, 1),
                                                      ((), False, 0)])
def test_mean_and_variance(axes, keepdims, correction):
    x = RNG.standard_normal((3, 4, 5)) + 5
    dims = tuple(range(3)) if axes is None else axes
    y = check("mean", [x], {"axes": axes, "keepdims": keepdims})
    if dims:
        np.testing.assert_allclose(y, torch.mean(t(x), dim=dims, keepdim=keepdims).numpy(),
                                   rtol=1e-12)
    y = check("variance", [x], {"axes": axes, "keepdims": keepdims, "correction": correction},
              rtol=1e-10, atol=1e-12)
    if dims:
        ref = torch.var(t(x), dim=dims, keepdim=keepdims, correction=correction).numpy()
        np.testing.assert_allclose(y, ref, rtol=1e-10)


def test_mean_of_empty_is_nan():
    y = check("mean", [np.zeros((0, 3))], {"axes": (0,)}, rtol=0, atol=0)
    assert np.isnan(y).all() and torch.mean(torch.zeros(0, 3), 0).isnan().all()


@pytest.mark.parametrize("xshape", [(4, 8), (2, 3, 8), (8,), (0, 8)])
def test_linear(xshape):
    x, w, b = RNG.standard_normal(xshape), RNG.standard_normal((5, 8)), RNG.standard_normal(5)
    y = check("linear", [x, w])
    np.testing.assert_allclose(y, F.linear(t(x), t(w)).numpy(), rtol=1e-12, atol=1e-12)
    y = check("linear_bias", [x, w, b])
    np.testing.assert_allclose(y, F.linear(t(x), t(w), t(b)).numpy(), rtol=1e-12, atol=1e-12)
    with pytest.raises(ShapeError, match="linear: x .* and weight"):
        one_node_graph("linear", [("x", "f32", (2, 8)), ("w", "f32", (8, 5))])
    with pytest.raises(ShapeError, match="linear_bias: bias has shape"):
        one_node_graph("linear_bias", [("x", "f32", (2, 8)), ("w", "f32", (5, 8)),
                                       ("b", "f32", (8,))])


def _rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def test_rotary_embedding_llama_form():
    b, s, h, d = 2, 5, 3, 8
    x = RNG.standard_normal((b, s, h, d))
    inv_freq = 1.0 / (10000 ** (np.arange(0, d, 2) / d))
    freqs = np.outer(np.arange(s), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)
    cos, sin = np.cos(emb), np.sin(emb)
    y = check("rotary_embedding", [x, cos, sin])
    # HF Llama's apply_rotary_pos_emb on [B, H, S, D] with cos/sin unsqueezed over heads.
    xt = t(x).transpose(1, 2)
    ref = (xt * t(cos) + _rotate_half(xt) * t(sin)).transpose(1, 2).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ShapeError, match="rotary_embedding: head dim 7 is not even"):
        one_node_graph("rotary_embedding", [("x", "f32", (5, 2, 7)), ("c", "f32", (5, 7)),
                                            ("s", "f32", (5, 7))])
    with pytest.raises(ShapeError, match="rotary_embedding: cos has shape"):
        one_node_graph("rotary_embedding", [("x", "f32", (5, 2, 8)), ("c", "f32", (4, 8)),
                                            ("s", "f32", (5, 8))])


@pytest.mark.parametrize("b,hq,hkv,s,tlen,d,dv", [(2, 4, 4, 5, 5, 8, 8), (1, 8, 2, 6, 6, 4, 4),
                                                  (2, 6, 3, 3, 7, 8, 5), (1, 2, 1, 1, 1, 4, 4)])
@pytest.mark.parametrize("causal", [False, True])
def test_attention_gqa(b, hq, hkv, s, tlen, d, dv, causal):
    q = RNG.standard_normal((b, hq, s, d))
    k, v = RNG.standard_normal((b, hkv, tlen, d)), RNG.standard_normal((b, hkv, tlen, dv))
    y = check("scaled_dot_product_attention", [q, k, v], {"causal": causal},
              rtol=1e-10, atol=1e-12)
    ref = F.scaled_dot_product_attention(t(q), t(k), t(v), is_causal=causal,
                                         enable_gqa=True).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)


def test_attention_scale_bf16_and_errors():
    q = RNG.standard_normal((1, 4, 16, 32)).astype(ml_dtypes.bfloat16)
    k = RNG.standard_normal((1, 2, 16, 32)).astype(ml_dtypes.bfloat16)
    v = RNG.standard_normal((1, 2, 16, 32)).astype(ml_dtypes.bfloat16)
    y = check("scaled_dot_product_attention", [q, k, v], {"causal": True, "scale": 0.3},
              rtol=3e-2, atol=3e-2)

    def tb(a):
        return t(a.astype(np.float32)).bfloat16()

    ref = F.scaled_dot_product_attention(tb(q), tb(k), tb(v), is_causal=True, scale=0.3,
                                         enable_gqa=True).float().numpy()
    np.testing.assert_allclose(y.astype(np.float32), ref, rtol=3e-2, atol=3e-2)
    with pytest.raises(ShapeError, match="3 query heads are not a multiple of 2"):
        one_node_graph("scaled_dot_product_attention", [("q", "f32", (1, 3, 4, 8)),
                                                        ("k", "f32", (1, 2, 4, 8)),
                                                        ("v", "f32", (1, 2, 4, 8))])
    with pytest.raises(ShapeError, match="scaled_dot_product_attention: q .* disagree"):
        one_node_graph("scaled_dot_product_attention", [("q", "f32", (1, 2, 4, 8)),
                                                        ("k", "f32", (1, 2, 4, 4)),
                                                        ("v", "f32", (1, 2, 4, 8))])


@pytest.mark.parametrize("mask_shape", [(5, 7), (2, 1, 5, 7), (1, 7), (2, 4, 5, 7)])
def test_sdpa_masked(mask_shape):
    q = RNG.standard_normal((2, 4, 5, 8))
    k, v = RNG.standard_normal((2, 2, 7, 8)), RNG.standard_normal((2, 2, 7, 8))
    mask = RNG.standard_normal(mask_shape)
    mask[..., 0, 3:] = -np.inf
    y = check("sdpa_masked", [q, k, v, mask], rtol=1e-10, atol=1e-12)
    ref = F.scaled_dot_product_attention(t(q), t(k), t(v), attn_mask=t(mask),
                                         enable_gqa=True).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-12)
    with pytest.raises(ShapeError, match="sdpa_masked: cannot broadcast"):
        one_node_graph("sdpa_masked", [("q", "f32", (2, 4, 5, 8)), ("k", "f32", (2, 2, 7, 8)),
                                       ("v", "f32", (2, 2, 7, 8)), ("m", "f32", (5, 6))])


def test_decompose_graph_keeps_structure_and_names():
    gb = GraphBuilder("block")
    x = gb.input("x", "f32", (2, 4, 8))
    w = gb.constant("w", "f32", (8,), Initializer.make("fill", value=1.0))
    wl = gb.constant("wl", "f32", (16, 8), Initializer.make("random", seed=0, scale=0.1))
    h = gb.op("rms_norm", x, w, name="h")
    u = gb.op("linear", h, wl, name="u")
    a = gb.op("gelu", u, name="act")
    y = gb.op("softmax", a, name="y")
    gb.output(y, h)
    g = gb.build()
    d = decompose_graph(g)
    assert [c.value.name for c in d.constants] == ["w", "wl"]
    assert [v.name for v in d.outputs] == ["y", "h"]
    names = {v for n in d.nodes for v in (o.name for o in n.outputs)}
    assert {"h", "u", "act", "y"} <= names
    assert all(not get_op(n.op).is_composite for n in d.nodes)
    xv = RNG.standard_normal((2, 4, 8)).astype(np.float32)
    got, want = evaluate(d, {"x": xv}), evaluate(g, {"x": xv})
    for k in ("y", "h"):
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)
    # the original graph is untouched and decomposing twice is stable
    assert any(get_op(n.op).is_composite for n in g.nodes)
    assert decompose_graph(d) == d


def test_decompose_graph_name_clash_and_nesting():
    gb = GraphBuilder("clash")
    q = gb.input("q", "f32", (1, 2, 3, 4))
    k = gb.input("y_0", "f32", (1, 1, 3, 4))   # same name the expansion would pick first
    y = gb.op("scaled_dot_product_attention", q, k, k, causal=True, name="y")
    gb.output(y)
    d = decompose_graph(gb.build())
    assert "softmax" not in [n.op for n in d.nodes] and "exp" in [n.op for n in d.nodes]
    qa, ka = RNG.standard_normal((1, 2, 3, 4)), RNG.standard_normal((1, 1, 3, 4))
    out = evaluate(d, {"q": qa, "y_0": ka})["y"]
    ref = F.scaled_dot_product_attention(t(qa).float(), t(ka).float(), t(ka).float(),
                                         is_causal=True, enable_gqa=True).numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    assert math.isfinite(float(out.sum()))


def test_hal_reference_agrees_with_the_test_evaluator():
    reference = pytest.importorskip("hal.reference")
    g = one_node_graph("scaled_dot_product_attention", [("q", "f32", (1, 4, 3, 8)),
                                                        ("k", "f32", (1, 2, 5, 8)),
                                                        ("v", "f32", (1, 2, 5, 8))], causal=True)
    ins = {"q": RNG.standard_normal((1, 4, 3, 8)).astype(np.float32),
           "k": RNG.standard_normal((1, 2, 5, 8)).astype(np.float32),
           "v": RNG.standard_normal((1, 2, 5, 8)).astype(np.float32)}
    np.testing.assert_array_equal(reference.evaluate(g, ins)["y"],
                                  evaluate(decompose_graph(g), ins)["y"])
