"""The JAX frontend: primitive rules against jax.jit, the example decoder on the
reference and cpu_sim backends, constants from closures, inlined jit/custom_jvp
bodies, and the error that lists every unsupported primitive."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

from hal.backends_registry import get_backend  # noqa: E402
from hal.errors import UnsupportedError  # noqa: E402
from hal.frontends.bringup import compare, tolerance  # noqa: E402
from hal.frontends.jax_import import JAX_RULES, import_jax, trace  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "examples" / "models"


def _cpu_sim() -> bool:
    try:
        return bool(get_backend("cpu_sim").probe())
    except Exception:  # noqa: BLE001
        return False


BACKENDS = ["reference"] + (["cpu_sim"] if _cpu_sim() else [])


def check(fn, *args, backend="reference", rtol=1e-5, atol=1e-5):
    expected = jax.jit(fn)(*args)
    expected = list(expected) if isinstance(expected, (tuple, list)) else [expected]
    im = import_jax(fn, *args)
    got = im.run([np.asarray(a) for a in args], backend=backend)
    for gv, e in zip(got, expected, strict=True):
        e = np.asarray(e)
        assert gv.shape == e.shape
        if e.dtype.kind == "f":
            np.testing.assert_allclose(np.asarray(gv, np.float64), e, rtol=rtol, atol=atol)
        else:
            np.testing.assert_array_equal(gv, e)
    return im


rng = np.random.default_rng(0)
X = jnp.asarray(rng.standard_normal((3, 4, 5)), jnp.float32)
Y = jnp.asarray(rng.standard_normal((3, 4, 5)), jnp.float32)
P = jnp.asarray(rng.uniform(0.5, 1.5, (3, 4, 5)), jnp.float32)
IN = jnp.asarray(rng.integers(-5, 6, (3, 4, 5)), jnp.int32)
TOK = jnp.asarray([[0, 3, -1], [2, 6, 1]], jnp.int32)
W = jnp.asarray(rng.standard_normal((7, 5)), jnp.float32)

CASES = {
    "arith": (lambda x, y: (x + y, x - 2.0, x * y, x / (jnp.abs(y) + 1), jnp.maximum(x, y),
                            jnp.minimum(x, 0.0), -x, x ** 3, x ** -2, jnp.square(x)), X, Y),
    "int_arith": (lambda i: (i + 3, i * i, i // 2, i % 3, jax.lax.div(i, 2), jax.lax.rem(i, 3)),
                  IN),
    "transcendental": (lambda x, p: (jnp.exp(x), jnp.log(p), jnp.tanh(x),
                                     jax.nn.sigmoid(x), jax.scipy.special.erf(x),
                                     jax.lax.rsqrt(p), jnp.sqrt(p), jnp.sin(x), jnp.cos(x),
                                     p ** x, jnp.log1p(p), jnp.round(x), jnp.floor(x)), X, P),
    "activations": (lambda x: (jax.nn.gelu(x), jax.nn.gelu(x, approximate=False),
                               jax.nn.silu(x), jax.nn.relu(x), jax.nn.softmax(x, axis=-1),
                               jax.nn.log_softmax(x, axis=1)), X),
    "compare_select": (lambda x, y, i: (x < y, x >= 0.5, i == 2, i != 0,
                                        jnp.where(x > y, x, y), jnp.where(i > 0, i, -i),
                                        jnp.logical_and(x > 0, y > 0), ~(x > 0),
                                        jnp.clip(x, -0.5, 0.5), jax.lax.select_n(
                                            jnp.clip(i, 0, 2), x, y, x * 2)), X, Y, IN),
    "casts": (lambda x, i: (x.astype(jnp.int32), i.astype(jnp.float32),
                            x.astype(jnp.bfloat16).astype(jnp.float32), (x > 0).astype(
                                jnp.float32), jax.lax.stop_gradient(x)), X, IN),
    "reductions": (lambda x, i: (x.sum(), x.sum(axis=(0, 2)), x.max(-1), x.min(1),
                                 jnp.argmax(x, -1), jnp.argmin(x, 0), x.mean(-1),
                                 jnp.var(x, axis=-1), i.sum(1), jnp.prod(x[0], -1),
                                 (x > 0).all(-1), (x > 2).any(), jnp.cumsum(x, 1),
                                 jax.lax.cumsum(x, 2, reverse=True)), X, IN),
    "shapes": (lambda x: (x.reshape(12, 5), x.T, jnp.transpose(x, (1, 0, 2)), x[None],
                          x[:, :1].squeeze(1), jnp.expand_dims(x, -1), x[:, 1:3, ::2],
                          jnp.concatenate([x, x * 2], 1), *jnp.split(x, [1, 3], axis=1),
                          jnp.pad(x, ((0, 1), (2, 0), (0, 0)), constant_values=-1.0),
                          jnp.broadcast_to(x[:, :1], (3, 4, 5)), jnp.tile(x[0], (2, 1)),
                          jax.lax.dynamic_slice(x, (1, 0, 2), (2, 3, 3)),
                          jnp.stack([x, y := x + 1], 0), y), X),
    "iota_tril": (lambda x: (jnp.arange(6), jnp.arange(1.0, 4.0, 0.5),
                             jnp.tril(jnp.ones((4, 4))), jnp.triu(x[0], 1),
                             jnp.where(jnp.tril(jnp.ones((5, 5), bool)), 0.0, -jnp.inf)), X),
    "dot": (lambda x, w: (x @ w.T, jnp.einsum("bij,bkj->bik", x, x), jnp.dot(x[0], w.T),
                          jnp.einsum("bij,kj->bki", x, w)), X, W),
    "take": (lambda w, t, x: (jnp.take(w, t, axis=0), w[t], jnp.take(x, t[0] % 4, axis=1),
                              jnp.take(w, jnp.abs(t), axis=0, mode="clip")), W, TOK, X),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rule_matches_jax(case):
    fn, *args = CASES[case]
    check(fn, *args)


@pytest.mark.skipif(len(BACKENDS) < 2, reason="cpu_sim backend unavailable")
@pytest.mark.parametrize("case", ["activations", "take", "reductions", "dot"])
def test_rule_on_cpu_sim(case):
    fn, *args = CASES[case]
    check(fn, *args, backend="cpu_sim", rtol=1e-4, atol=1e-5)


def test_rules_cover_the_listed_primitives():
    for p in ("dot_general", "broadcast_in_dim", "reduce_sum", "reduce_max", "reduce_min",
              "argmax", "convert_element_type", "integer_pow", "exp", "log", "tanh",
              "logistic", "erf", "rsqrt", "select_n", "iota", "reshape", "transpose",
              "squeeze", "expand_dims", "slice", "dynamic_slice", "concatenate", "gather",
              "cumsum", "eq", "lt", "add", "sub", "mul", "div", "max", "min", "neg", "sqrt",
              "pow", "stop_gradient", "copy"):
        assert p in JAX_RULES, p


def test_closure_arrays_become_constants_and_bodies_inline():
    w = jnp.asarray(rng.standard_normal((5, 16)), jnp.float32)

    @jax.jit
    def inner(x):
        return jax.nn.relu(x @ w)  # relu is a custom_jvp

    g = trace(lambda x: inner(x) * 2, X)
    assert [c.value.shape for c in g.constants] == [(5, 16)]
    assert g.constants[0].init.kind == "npz"
    assert {n.op for n in g.nodes} >= {"dot_general", "maximum"}


def test_decoder_matches_jit():
    spec = importlib.util.spec_from_file_location("hal_example_jax_decoder",
                                                  MODELS / "jax_decoder.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    fn, args = mod.make()
    expected = np.asarray(jax.jit(fn)(*args))
    im = import_jax(fn, *args, name="decoder")
    assert len(im.graph.constants) >= 10
    for backend in BACKENDS:
        out = im.run([np.asarray(a) for a in args], backend=backend)[0]
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=2e-5)
        rtol, atol = tolerance(im.graph, 0, expected)
        assert compare(out, expected, rtol, atol)["ok"]


def test_unsupported_primitives_listed_at_once():
    def fn(x):
        return jnp.sort(x, axis=-1) + jax.lax.cummax(x, axis=1) + jnp.fft.fft(x).real

    with pytest.raises(UnsupportedError) as info:
        trace(fn, X)
    msg = info.value.message
    for p in ("sort", "cummax", "fft"):
        assert p in msg
    assert "test_frontend_jax.py" in msg
    assert "rule" in (info.value.hint or "")


def test_dynamic_start_index_is_rejected():
    with pytest.raises(UnsupportedError, match="static"):
        trace(lambda x, i: jax.lax.dynamic_slice(x, (i, 0, 0), (1, 4, 5)), X, jnp.int32(1))
