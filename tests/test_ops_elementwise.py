"""Elementwise ops (ops/elementwise.py) and hal.dtypes.cast against torch, on special values."""

import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from ops_eval_helper import one_node_graph, run_op

from hal.dtypes import DTYPES, cast
from hal.errors import ShapeError
from hal.ops import get_op

torch = pytest.importorskip("torch", reason="torch is the comparison baseline: pip install hal[torch]")

SPECIAL = np.array([0.0, -0.0, 1.0, -1.0, 0.5, -2.5, 3.5, 1e-30, -1e-30, 1e30, 88.0, -88.0,
                    np.inf, -np.inf, np.nan, 2.0, 0.25, 7.75], np.float32)
RNG = np.random.default_rng(4)
RANDOM = (RNG.standard_normal(64) * 3).astype(np.float32)

UNARY = {
    "neg": torch.neg, "abs": torch.abs, "exp": torch.exp, "exp2": torch.exp2, "log": torch.log,
    "log2": torch.log2, "log1p": torch.log1p, "expm1": torch.expm1, "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt, "reciprocal": torch.reciprocal, "tanh": torch.tanh,
    "sigmoid": torch.sigmoid, "erf": torch.erf, "sin": torch.sin, "cos": torch.cos,
    "floor": torch.floor, "ceil": torch.ceil, "round": torch.round, "sign": torch.sign,
}
BINARY = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "pow": torch.pow,
    "maximum": torch.maximum, "minimum": torch.minimum, "remainder": torch.fmod,
    "eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt,
    "ge": torch.ge,
}


def _compare(op, y, ref):
    ulps = get_op(op).error.ulps
    assert y.shape == ref.shape
    if ref.dtype == np.bool_ or ulps == 0:
        np.testing.assert_array_equal(y, ref)
    else:
        # f32 result of a float64 reference vs torch's f32: a few ulp apart at most
        np.testing.assert_allclose(y, ref, rtol=(ulps + 1) * 2.0**-23, atol=1e-37)
    finite_zero = (ref == 0) & ~np.isnan(ref)
    if ref.dtype.kind == "f":
        assert (np.signbit(y[finite_zero]) == np.signbit(ref[finite_zero])).all(), op


@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary_special_values(op):
    for x in (SPECIAL, RANDOM):
        with np.errstate(all="ignore"):
            (y,) = run_op(op, x)
        assert y.dtype == np.float32
        ref = UNARY[op](torch.from_numpy(x)).numpy()
        if op == "sign":
            # torch's CPU sign maps NaN to 0; hal (like NumPy, JAX and copysign) keeps NaN.
            assert np.isnan(y[np.isnan(x)]).all() and np.isnan(jnp.sign(x[np.isnan(x)])).all()
            ref = np.where(np.isnan(x), np.nan, ref)
        _compare(op, y, ref)


@pytest.mark.parametrize("op", ["neg", "exp", "abs"])
@pytest.mark.parametrize("shape", [(0,), (1,), (0, 3), (1, 1)])
def test_unary_empty_and_unit_shapes(op, shape):
    x = np.full(shape, -1.5, np.float32)
    (y,) = run_op(op, x)
    _compare(op, y, UNARY[op](torch.from_numpy(x)).numpy())


@pytest.mark.parametrize("op", sorted(BINARY))
def test_binary_special_values(op):
    a = np.repeat(SPECIAL, len(SPECIAL))
    b = np.tile(SPECIAL, len(SPECIAL))
    (y,) = run_op(op, a, b)
    ref = BINARY[op](torch.from_numpy(a), torch.from_numpy(b)).numpy()
    if op == "remainder":
        # fmod is exact (C fmodf, CUDA fmodf); torch's CPU fmod computes a - trunc(a/b)*b and
        # gives NaN where a/b overflows (1e30 fmod 1e-30), so compare those with C's fmodf.
        with np.errstate(all="ignore"):
            overflow = np.isinf(a / b) & np.isfinite(a)
            ref = np.where(overflow, np.fmod(a, b), ref)
        assert overflow.any()
    _compare(op, y, ref)


@pytest.mark.parametrize("op", ["add", "mul", "lt"])
@pytest.mark.parametrize("shape", [(0,), (1,), (2, 0), (1, 1, 1)])
def test_binary_empty_and_unit_shapes(op, shape):
    a, b = np.full(shape, 2.0, np.float32), np.full(shape, -0.0, np.float32)
    (y,) = run_op(op, a, b)
    _compare(op, y, BINARY[op](torch.from_numpy(a), torch.from_numpy(b)).numpy())


def test_binary_requires_equal_shapes_and_dtypes():
    with pytest.raises(ShapeError, match="add: operand 1 has shape"):
        one_node_graph("add", [("a", "f32", (2, 3)), ("b", "f32", (3,))])
    with pytest.raises(ShapeError, match="mul: operand 1 is f16"):
        one_node_graph("mul", [("a", "f32", (3,)), ("b", "f16", (3,))])
    with pytest.raises(ShapeError, match="exp: operand dtype i32"):
        one_node_graph("exp", [("a", "i32", (3,))])


@pytest.mark.parametrize("dt", [np.int32, np.int8, np.int64])
def test_integer_div_and_remainder_truncate(dt):
    a = np.array([7, -7, 7, -7, 0, 1, -1, 5], dt)
    b = np.array([2, 2, -2, -2, 3, 5, 5, -5], dt)
    (q,) = run_op("div", a, b)
    (r,) = run_op("remainder", a, b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    np.testing.assert_array_equal(q, torch.div(ta, tb, rounding_mode="trunc").numpy())
    np.testing.assert_array_equal(r, torch.fmod(ta, tb).numpy())
    assert q.dtype == dt and r.dtype == dt
    np.testing.assert_array_equal(q * b + r, a)  # C identity
    # division by zero is defined as 0 in hal (torch raises)
    (q0,) = run_op("div", a, np.zeros_like(a))
    (r0,) = run_op("remainder", a, np.zeros_like(a))
    assert not q0.any() and not r0.any()


def test_integer_min_div_minus_one_wraps():
    a, b = np.array([np.iinfo(np.int32).min], np.int32), np.array([-1], np.int32)
    (q,) = run_op("div", a, b)
    assert q.dtype == np.int32 and q[0] == np.iinfo(np.int32).min  # two's-complement wrap


def test_integer_ops_match_torch():
    a = RNG.integers(-50, 50, 40).astype(np.int32)
    b = RNG.integers(-50, 50, 40).astype(np.int32)
    b[b == 0] = 3
    for op, fn in [("add", torch.add), ("sub", torch.sub), ("mul", torch.mul),
                   ("maximum", torch.maximum), ("minimum", torch.minimum),
                   ("bitwise_and", torch.bitwise_and), ("bitwise_or", torch.bitwise_or),
                   ("bitwise_xor", torch.bitwise_xor), ("lt", torch.lt), ("eq", torch.eq)]:
        (y,) = run_op(op, a, b)
        np.testing.assert_array_equal(y, fn(torch.from_numpy(a), torch.from_numpy(b)).numpy())
    for op, fn in [("neg", torch.neg), ("abs", torch.abs), ("sign", torch.sign)]:
        (y,) = run_op(op, a)
        np.testing.assert_array_equal(y, fn(torch.from_numpy(a)).numpy())
    e = np.abs(b) % 4
    (y,) = run_op("pow", a, e)
    np.testing.assert_array_equal(y, torch.pow(torch.from_numpy(a), torch.from_numpy(e)).numpy())


def test_logical_and_select():
    p = np.array([True, False, True, False])
    q = np.array([True, True, False, False])
    for op, fn in [("logical_and", torch.logical_and), ("logical_or", torch.logical_or),
                   ("logical_xor", torch.logical_xor)]:
        (y,) = run_op(op, p, q)
        np.testing.assert_array_equal(y, fn(torch.from_numpy(p), torch.from_numpy(q)).numpy())
    (y,) = run_op("logical_not", p)
    np.testing.assert_array_equal(y, ~p)
    a, b = SPECIAL[:4], SPECIAL[4:8]
    (y,) = run_op("select", p, a, b)
    np.testing.assert_array_equal(y, torch.where(torch.from_numpy(p), torch.from_numpy(a),
                                                 torch.from_numpy(b)).numpy())
    with pytest.raises(ShapeError, match="select: predicate must be bool"):
        one_node_graph("select", [("p", "f32", (4,)), ("a", "f32", (4,)), ("b", "f32", (4,))])


FP8 = [("f8e4m3fn", torch.float8_e4m3fn, 448.0), ("f8e5m2", torch.float8_e5m2, 57344.0)]


@pytest.mark.parametrize("name,tdt,fmax", FP8)
def test_fp8_cast_saturates_like_clamped_torch(name, tdt, fmax):
    x = np.concatenate([SPECIAL, RNG.standard_normal(200).astype(np.float32) * 300,
                        np.float32([fmax, -fmax, fmax * 1.01, 1e6, -1e6, 2.0**-10, 2.0**-20,
                                    2.0**-9 * 1.5])])
    got = cast(x, DTYPES[name])
    ref = torch.clamp(torch.from_numpy(x), -fmax, fmax).to(tdt)
    got_bits = got.view(np.uint8)
    ref_bits = ref.view(torch.uint8).numpy()
    nan = np.isnan(x)
    np.testing.assert_array_equal(got_bits[~nan], ref_bits[~nan])
    assert np.isnan(got.astype(np.float32)[nan]).all()


@pytest.mark.parametrize("name,tdt,fmax", FP8)
def test_fp8_cast_op_through_the_graph(name, tdt, fmax):
    x = np.float32([1e9, -1e9, np.inf, -np.inf, 3.3, -0.0])
    (y,) = run_op("cast", x, dtype=name)
    assert y.dtype == DTYPES[name].np_dtype
    ref = torch.clamp(torch.from_numpy(x), -fmax, fmax).to(tdt).float().numpy()
    np.testing.assert_array_equal(y.astype(np.float32), ref)
    assert np.signbit(y.astype(np.float32)[-1])


@pytest.mark.parametrize("src,dst", [("f32", "bf16"), ("f32", "f16"), ("bf16", "f32"),
                                     ("f32", "i32"), ("f16", "i8"), ("i32", "f16"),
                                     ("f32", "bool"), ("bool", "f32")])
def test_casts_match_torch(src, dst):
    tmap = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16,
            "i32": torch.int32, "i8": torch.int8, "bool": torch.bool}
    base = np.float32([0.0, -0.0, 1.0, -1.5, 2.5, 1000.7, -100.2, 65519.0, 70000.0, 3.0e38,
                       1.00390625, 1.0 + 2**-9])
    xt = torch.from_numpy(base).to(tmap[src])
    x = xt.float().numpy().astype(DTYPES[src].np_dtype) if src != "bf16" else \
        xt.float().numpy().astype(ml_dtypes.bfloat16)
    if dst in ("i32", "i8"):
        keep = np.abs(x.astype(np.float64)) < (100 if dst == "i8" else 1e9)  # torch wraps/UB
        x, xt = x[keep], xt[torch.from_numpy(keep)]
    (y,) = run_op("cast", x, dtype=dst)
    ref = xt.to(tmap[dst])
    ref = ref.float().numpy() if dst == "bf16" else ref.numpy()
    np.testing.assert_array_equal(y.astype(np.float64), ref.astype(np.float64))


def test_float_to_int_cast_saturates_and_nan_is_zero():
    x = np.float32([np.nan, np.inf, -np.inf, 3e9, -3e9, 2.9, -2.9])
    y = cast(x, DTYPES["i32"])
    np.testing.assert_array_equal(y, [0, 2**31 - 1, -2**31, 2**31 - 1, -2**31, 2, -2])
    y = cast(x, DTYPES["i64"])
    assert y[1] == 2**63 - 1 and y[2] == -2**63


def test_int64_extreme_division_truncates():
    lo = np.iinfo(np.int64).min
    a = np.array([lo, lo, lo, lo + 1, -7], np.int64)
    b = np.array([2, 3, -1, -1, 2], np.int64)
    (q,) = run_op("div", a, b)
    np.testing.assert_array_equal(q, [lo // 2, -3074457345618258602, lo, -(lo + 1), -3])
    (r,) = run_op("remainder", a, b)
    np.testing.assert_array_equal(r, torch.fmod(torch.from_numpy(a), torch.from_numpy(b)).numpy())
