"""Elementwise primitives: unary and binary math, logic, comparisons, select and cast.

Each op's `scalar` is a NumPy function that the reference evaluates in float64
(int64 for integer ops) and the simulator evaluates in the kernel's compute
dtype. Elementwise operands must have equal shapes (broadcast_to is explicit)
and, except for select's predicate, equal dtypes.
"""

from __future__ import annotations

import math

import numpy as np

from hal.dtypes import DTYPES, FLOAT_DTYPES, INT_DTYPES, bool_, cast
from hal.ir.types import TensorType

from .common import require_dtype, same_types
from .registry import AttrSpec, Category, ErrorModel, OpDef, register_op

FLOATS = FLOAT_DTYPES
NUMERIC = FLOAT_DTYPES + INT_DTYPES
INTEGRAL = INT_DTYPES + (bool_,)
ALL = tuple(DTYPES.values())

_erf = np.frompyfunc(math.erf, 1, 1)


def erf(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    # frompyfunc gives a Python float for 0-d input: asarray keeps the result an array.
    return np.asarray(_erf(x.astype(np.float64)), dtype=np.float64).astype(x.dtype, copy=False)


def _with_errstate(fn):
    def wrapped(*args):
        with np.errstate(all="ignore"):
            return fn(*args)

    wrapped.__name__ = getattr(fn, "__name__", "scalar")
    wrapped.__wrapped__ = fn  # the bare NumPy body, for callers that set errstate once
    return wrapped


def _rsqrt(x):
    return 1.0 / np.sqrt(x)


def _sigmoid(x):
    # 1 / (1 + exp(-x)), computed without overflow warnings for large |x|; the steps in
    # one new array (a layer's 2048 x 14336 float64 activations are 224 MiB each)
    t = np.negative(x)
    if not isinstance(t, np.ndarray) or t.ndim == 0 or t.dtype.kind != "f":
        return 1.0 / (1.0 + np.exp(-x))
    np.exp(t, out=t)
    np.add(t, 1.0, out=t)
    return np.divide(1.0, t, out=t)


def _round(x):
    return np.round(x)  # ties to even, like rintf / __float2int_rn


def _sign(x):
    return np.sign(x)  # sign(-0.0) = -0.0? numpy gives 0.0 for -0.0; NaN -> NaN


def _remainder(a, b):
    if np.asarray(a).dtype.kind in "iu":
        b_safe = np.where(b == 0, 1, b)
        return np.where(b == 0, 0, np.fmod(a, b_safe))
    return np.fmod(a, b)  # C fmod semantics: sign of the dividend


def _int_div(a, b):
    b_safe = np.where(b == 0, 1, b)
    # exact integer truncated division (C semantics); division by zero gives 0. Floor
    # division rounded toward zero, so that |INT_MIN| never appears (it overflows).
    with np.errstate(all="ignore"):
        q = a // b_safe
        q = np.where((a % b_safe != 0) & ((a < 0) != (b_safe < 0)), q + 1, q)
    return np.where(b == 0, 0, q).astype(np.asarray(a).dtype)


def _div(a, b):
    if np.asarray(a).dtype.kind in "iu":
        return _int_div(a, b)
    return np.true_divide(a, b)


def _pow(a, b):
    return np.power(a, b) if np.asarray(a).dtype.kind == "f" else np.power(a, np.abs(b))


def _maximum(a, b):
    return np.maximum(a, b)  # NaN propagates (fmaxf does not: kernels use the NaN-propagating form)


def _minimum(a, b):
    return np.minimum(a, b)


# Error-model facts beyond the ulps (ErrorModel's docstring): sigmoid's e^-x overflows
# where the result is below 1 / max of the compute dtype, and 1 / (1 + inf) is 0.
_ERROR_EXTRAS = {"sigmoid": {"zero_below_inverse_max": True}}


def _unary(name, fn, dtypes, ulps, doc):
    def infer(types, attrs, _n=name, _d=dtypes):
        t = types[0]
        require_dtype(_n, t, _d, "supported")
        return [t]

    scalar = _with_errstate(fn)

    def reference(xs, attrs, _f=scalar):
        return [_f(xs[0])]

    register_op(OpDef(name, Category.ELEMENTWISE, ("x",), infer, reference,
                      error=ErrorModel(ulps=ulps, **_ERROR_EXTRAS.get(name, {})),
                      scalar=scalar, dtypes=tuple(d.name for d in dtypes), doc=doc))


def _binary(name, fn, dtypes, ulps, doc, out_bool=False):
    def infer(types, attrs, _n=name, _d=dtypes, _b=out_bool):
        t = same_types(_n, types)
        require_dtype(_n, t, _d, "supported")
        return [t.with_dtype(bool_) if _b else t]

    scalar = _with_errstate(fn)

    def reference(xs, attrs, _f=scalar):
        return [_f(xs[0], xs[1])]

    register_op(OpDef(name, Category.ELEMENTWISE, ("a", "b"), infer, reference,
                      error=ErrorModel(ulps=ulps), scalar=scalar,
                      dtypes=tuple(d.name for d in dtypes), doc=doc))


# Transcendental ulps follow the CUDA C Programming Guide's table for the
# non-fast-math single-precision functions (expf 2, logf 1, tanhf 2, erff 2,
# sinf/cosf 2) with one ulp of margin for the HIP/OCML implementations.
for _name, _fn, _dt, _ulps, _doc in [
    ("neg", np.negative, NUMERIC, 0, "-x"),
    ("abs", np.abs, NUMERIC, 0, "|x|"),
    ("exp", np.exp, FLOATS, 3, "e^x"),
    ("exp2", np.exp2, FLOATS, 3, "2^x"),
    ("log", np.log, FLOATS, 2, "natural log"),
    ("log2", np.log2, FLOATS, 2, "log base 2"),
    ("log1p", np.log1p, FLOATS, 2, "log(1 + x)"),
    ("expm1", np.expm1, FLOATS, 2, "e^x - 1"),
    ("sqrt", np.sqrt, FLOATS, 0.5, "square root (correctly rounded)"),
    ("rsqrt", _rsqrt, FLOATS, 2, "1 / sqrt(x)"),
    ("reciprocal", np.reciprocal, FLOATS, 0.5, "1 / x"),
    ("tanh", np.tanh, FLOATS, 3, "hyperbolic tangent"),
    ("sigmoid", _sigmoid, FLOATS, 3, "1 / (1 + e^-x)"),
    ("erf", erf, FLOATS, 3, "error function"),
    ("sin", np.sin, FLOATS, 3, "sine"),
    ("cos", np.cos, FLOATS, 3, "cosine"),
    ("floor", np.floor, FLOATS, 0, "round toward -inf"),
    ("ceil", np.ceil, FLOATS, 0, "round toward +inf"),
    ("round", _round, FLOATS, 0, "round half to even"),
    ("sign", _sign, NUMERIC, 0, "-1, 0 or 1 (NaN stays NaN)"),
]:
    _unary(_name, _fn, _dt, _ulps, _doc)

_unary("logical_not", np.logical_not, (bool_,), 0, "not x (bool)")

for _name, _fn, _dt, _ulps, _doc in [
    ("add", np.add, NUMERIC, 0.5, "a + b"),
    ("sub", np.subtract, NUMERIC, 0.5, "a - b"),
    ("mul", np.multiply, NUMERIC, 0.5, "a * b"),
    ("div", _div, NUMERIC, 0.5, "a / b (integers: truncated, x/0 = 0)"),
    ("pow", _pow, NUMERIC, 4, "a ^ b"),
    ("maximum", _maximum, NUMERIC, 0, "max(a, b), NaN-propagating"),
    ("minimum", _minimum, NUMERIC, 0, "min(a, b), NaN-propagating"),
    ("remainder", _remainder, NUMERIC, 0, "fmod(a, b): sign of the dividend"),
    ("logical_and", np.logical_and, (bool_,), 0, "a and b"),
    ("logical_or", np.logical_or, (bool_,), 0, "a or b"),
    ("logical_xor", np.logical_xor, (bool_,), 0, "a xor b"),
    ("bitwise_and", np.bitwise_and, INTEGRAL, 0, "a & b"),
    ("bitwise_or", np.bitwise_or, INTEGRAL, 0, "a | b"),
    ("bitwise_xor", np.bitwise_xor, INTEGRAL, 0, "a ^ b"),
]:
    _binary(_name, _fn, _dt, _ulps, _doc)

for _name, _fn in [("eq", np.equal), ("ne", np.not_equal), ("lt", np.less),
                   ("le", np.less_equal), ("gt", np.greater), ("ge", np.greater_equal)]:
    _binary(_name, _fn, ALL, 0, f"a {_name} b -> bool", out_bool=True)


def _select_infer(types, attrs):
    pred, a, b = types
    if pred.dtype != bool_:
        from hal.errors import ShapeError

        raise ShapeError(f"select: predicate must be bool, got {pred.dtype}",
                         hint="compare with ne(x, 0) first")
    t = same_types("select", [a, b])
    same_types("select", [pred.with_dtype(t.dtype), t])
    return [t]


def _select(p, a, b):
    return np.where(p, a, b)


register_op(OpDef("select", Category.ELEMENTWISE, ("pred", "on_true", "on_false"),
                  _select_infer, lambda xs, attrs: [_select(*xs)],
                  error=ErrorModel(ulps=0), scalar=_select, dtypes=("bool",),
                  doc="where(pred, on_true, on_false)"))


def _cast_infer(types, attrs):
    return [TensorType(attrs["dtype"], types[0].shape)]


def _cast_reference(xs, attrs):
    # The reference keeps float64/int64 internally; the executor rounds to the
    # declared dtype afterwards, which applies hal's cast rules exactly once.
    to = attrs["dtype"]
    x = xs[0]
    if to.is_float:
        return [np.asarray(x, dtype=np.float64)]
    return [cast(x, to)]


register_op(OpDef("cast", Category.ELEMENTWISE, ("x",), _cast_infer, _cast_reference,
                  attrs=(AttrSpec("dtype", "dtype", doc="the target dtype, e.g. dtype=bf16"),),
                  error=ErrorModel(ulps=0), scalar=None, dtypes=tuple(DTYPES),
                  doc="convert to another dtype (round to nearest even; fp8 saturates)"))
