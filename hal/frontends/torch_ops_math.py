"""ATen converters for the math hal has no primitive for, decomposed into primitives.

Floating-point classification (isnan, isinf, isfinite, signbit), the inverse
and hyperbolic trigonometric functions (atan by the Cephes single-precision
polynomial with range reduction; asin, acos, atan2 from it; sinh, cosh, tan,
asinh, acosh, atanh by their exp/log identities), lgamma (Lanczos, g = 7,
with the reflection formula below 0.5), vector norms, cumulative products and
extrema, fmax/fmin and the remaining BLAS-style contractions (addmv, addbmm).
Everything is built from hal primitives, so the fusion pass fuses it like any
other elementwise, reduction or scan chain (DESIGN.md decision 2).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hal.dtypes import bool_, compute_dtype, i64
from hal.errors import UnsupportedError
from hal.frontends.torch_convert import TorchContext, converts
from hal.frontends.torch_ops import axpby
from hal.ir.graph import Value

# -- classification ----------------------------------------------------------------


def isnan(cx: TorchContext, x: Value) -> Value:
    return cx.op("ne", x, x) if x.dtype.is_float else cx.scalar(False, bool_, x.shape)


def isinf(cx: TorchContext, x: Value) -> Value:
    if not x.dtype.is_float:
        return cx.scalar(False, bool_, x.shape)
    return cx.op("eq", cx.op("abs", x), cx.scalar(math.inf, x.dtype, x.shape))


@converts("aten.isnan")
def _isnan(cx: TorchContext, x: Value) -> Value:
    return isnan(cx, x)


@converts("aten.isinf")
def _isinf(cx: TorchContext, x: Value) -> Value:
    return isinf(cx, x)


@converts("aten.isposinf", "aten.isneginf")
def _is_signed_inf(cx: TorchContext, x: Value) -> Value:
    if not x.dtype.is_float:
        return cx.scalar(False, bool_, x.shape)
    inf = math.inf if cx.node.target.__name__.startswith("isposinf") else -math.inf
    return cx.op("eq", x, cx.scalar(inf, x.dtype, x.shape))


@converts("aten.isfinite")
def _isfinite(cx: TorchContext, x: Value) -> Value:
    if not x.dtype.is_float:
        return cx.scalar(True, bool_, x.shape)
    return cx.op("lt", cx.op("abs", x), cx.scalar(math.inf, x.dtype, x.shape))


@converts("aten.signbit")
def _signbit(cx: TorchContext, x: Value) -> Value:
    if not x.dtype.is_float:
        return cx.op("lt", x, cx.scalar(0, x.dtype, x.shape))
    # -0.0 has its sign bit set: 1 / -0.0 = -inf
    neg = cx.op("lt", x, cx.scalar(0, x.dtype, x.shape))
    zero = cx.op("eq", x, cx.scalar(0, x.dtype, x.shape))
    negzero = cx.op("logical_and", zero, cx.op("lt", cx.op("reciprocal", x),
                                               cx.scalar(0, x.dtype, x.shape)))
    return cx.op("logical_or", neg, negzero)


@converts("aten.fmax", "aten.fmin")
def _fmax(cx: TorchContext, a: Any, b: Any) -> Value:
    """maximum/minimum that ignore a NaN operand (NaN only when both are NaN)."""
    dt, shape = cx.out_dtype(), cx.out_shape()
    av, bv = cx.tensor(a, dt, shape), cx.tensor(b, dt, shape)
    m = cx.op("maximum" if cx.node.target.__name__.startswith("fmax") else "minimum", av, bv)
    if not dt.is_float:
        return m
    return cx.op("select", isnan(cx, av), bv, cx.op("select", isnan(cx, bv), av, m))


@converts("aten.copysign")
def _copysign(cx: TorchContext, a: Any, b: Any) -> Value:
    dt, shape = cx.out_dtype(), cx.out_shape()
    av, bv = cx.tensor(a, dt, shape), cx.tensor(b, dt, shape)
    mag = cx.op("abs", av)
    return cx.op("select", _signbit(cx, bv), cx.op("neg", mag), mag)


# -- trigonometry ------------------------------------------------------------------


def _float_in(cx: TorchContext, x: Value) -> tuple[Value, Any]:
    """x in its compute dtype (f32 for 16-bit floats), and the output dtype."""
    dt = cx.out_dtype()
    return cx.cast(x, compute_dtype(dt)), dt


def _k(cx: TorchContext, v: float, like: Value) -> Value:
    return cx.scalar(v, like.dtype, like.shape)


def _poly(cx: TorchContext, z: Value, coeffs: tuple[float, ...]) -> Value:
    """Horner: coeffs[0] z^n + ... + coeffs[n]."""
    acc = _k(cx, coeffs[0], z)
    for c in coeffs[1:]:
        acc = cx.op("add", cx.op("mul", acc, z), _k(cx, c, z))
    return acc


def atan(cx: TorchContext, x: Value) -> Value:
    """Cephes atanf: reduce |x| to [0, tan(pi/8)], odd polynomial, add pi/2 or pi/4 back."""
    ax = cx.op("abs", x)
    big = cx.op("gt", ax, _k(cx, 2.414213562373095, ax))
    mid = cx.op("gt", ax, _k(cx, 0.4142135623730950, ax))
    one = _k(cx, 1.0, ax)
    # big: -1/|x|; mid: (|x| - 1) / (|x| + 1)
    r_big = cx.op("neg", cx.op("reciprocal", ax))
    r_mid = cx.op("div", cx.op("sub", ax, one), cx.op("add", ax, one))
    r = cx.op("select", big, r_big, cx.op("select", mid, r_mid, ax))
    base = cx.op("select", big, _k(cx, math.pi / 2, ax),
                 cx.op("select", mid, _k(cx, math.pi / 4, ax), _k(cx, 0.0, ax)))
    z = cx.op("mul", r, r)
    p = _poly(cx, z, (8.05374449538e-2, -1.38776856032e-1, 1.99777106478e-1, -3.33329491539e-1))
    y = cx.op("add", base, cx.op("add", cx.op("mul", cx.op("mul", p, z), r), r))
    return cx.op("select", _signbit(cx, x), cx.op("neg", y), y)


@converts("aten.atan")
def _atan(cx: TorchContext, x: Value) -> Value:
    v, dt = _float_in(cx, x)
    return cx.cast(atan(cx, v), dt)


@converts("aten.atan2", "aten.arctan2")
def _atan2(cx: TorchContext, y: Any, x: Any) -> Value:
    dt, shape = cx.out_dtype(), cx.out_shape()
    cdt = compute_dtype(dt)
    yv, xv = cx.tensor(y, cdt, shape), cx.tensor(x, cdt, shape)
    base = atan(cx, cx.op("div", yv, xv))
    pi = _k(cx, math.pi, yv)
    zero = _k(cx, 0.0, yv)
    # x < 0: add pi with the sign of y; x == 0: +-pi/2 (0 when y == 0)
    ysign_neg = _signbit(cx, yv)
    shifted = cx.op("select", ysign_neg, cx.op("sub", base, pi), cx.op("add", base, pi))
    out = cx.op("select", cx.op("lt", xv, zero), shifted, base)
    xzero = cx.op("eq", xv, zero)
    half = cx.op("select", ysign_neg, _k(cx, -math.pi / 2, yv), _k(cx, math.pi / 2, yv))
    at_zero = cx.op("select", cx.op("eq", yv, zero),
                    cx.op("select", _signbit(cx, xv),
                          cx.op("select", ysign_neg, cx.op("neg", pi), pi), yv), half)
    out = cx.op("select", xzero, at_zero, out)
    # both infinite: +-pi/4 or +-3pi/4
    both_inf = cx.op("logical_and", isinf(cx, xv), isinf(cx, yv))
    q = cx.op("select", _signbit(cx, xv), _k(cx, 3 * math.pi / 4, yv), _k(cx, math.pi / 4, yv))
    out = cx.op("select", both_inf, cx.op("select", ysign_neg, cx.op("neg", q), q), out)
    return cx.cast(out, dt)


@converts("aten.asin")
def _asin(cx: TorchContext, x: Value) -> Value:
    v, dt = _float_in(cx, x)
    # asin x = atan(x / sqrt(1 - x^2)); |x| > 1 gives nan through the sqrt
    s = cx.op("sqrt", cx.op("mul", cx.op("sub", _k(cx, 1, v), v), cx.op("add", _k(cx, 1, v), v)))
    return cx.cast(atan(cx, cx.op("div", v, s)), dt)


@converts("aten.acos")
def _acos(cx: TorchContext, x: Value) -> Value:
    v, dt = _float_in(cx, x)
    # acos x = 2 atan(sqrt((1 - x) / (1 + x))): accurate near 1, exact pi at -1
    one = _k(cx, 1, v)
    r = cx.op("sqrt", cx.op("div", cx.op("sub", one, v), cx.op("add", one, v)))
    return cx.cast(cx.op("mul", _k(cx, 2, v), atan(cx, r)), dt)


@converts("aten.tan")
def _tan(cx: TorchContext, x: Value) -> Value:
    v, dt = _float_in(cx, x)
    return cx.cast(cx.op("div", cx.op("sin", v), cx.op("cos", v)), dt)


@converts("aten.sinh")
def _sinh(cx: TorchContext, x: Value) -> Value:
    v, dt = _float_in(cx, x)
    # (e^x - e^-x) / 2 with expm1 to keep small x exact
    d = cx.op("sub", cx.op("expm1", v), cx.op("expm1", cx.op("neg", v)))
    return cx.cast(cx.op("mul", d, _k(cx, 0.5, v)), dt)


@converts("aten.cosh")
def _cosh(cx: TorchContext, x: Value) -> Value:
    v, dt = _float_in(cx, x)
    s = cx.op("add", cx.op("exp", v), cx.op("exp", cx.op("neg", v)))
    return cx.cast(cx.op("mul", s, _k(cx, 0.5, v)), dt)


@converts("aten.asinh")
def _asinh(cx: TorchContext, x: Value) -> Value:
    v, dt = _float_in(cx, x)
    a = cx.op("abs", v)
    # log1p(|x| + x^2 / (1 + sqrt(1 + x^2))), odd; large |x|: log(2|x|) avoids x^2 overflow
    x2 = cx.op("mul", a, a)
    t = cx.op("add", a, cx.op("div", x2, cx.op("add", _k(cx, 1, a),
                                                   cx.op("sqrt", cx.op("add", _k(cx, 1, a), x2)))))
    small = cx.op("log1p", t)
    large = cx.op("add", cx.op("log", a), _k(cx, math.log(2), a))
    y = cx.op("select", cx.op("gt", a, _k(cx, 1e18, a)), large, small)
    return cx.cast(cx.op("select", _signbit(cx, v), cx.op("neg", y), y), dt)


@converts("aten.acosh")
def _acosh(cx: TorchContext, x: Value) -> Value:
    v, dt = _float_in(cx, x)
    # log(x + sqrt(x^2 - 1)) = log1p((x - 1) + sqrt((x - 1)(x + 1)))
    one = _k(cx, 1, v)
    xm1 = cx.op("sub", v, one)
    y = cx.op("log1p", cx.op("add", xm1, cx.op("sqrt", cx.op("mul", xm1, cx.op("add", v, one)))))
    large = cx.op("add", cx.op("log", v), _k(cx, math.log(2), v))
    return cx.cast(cx.op("select", cx.op("gt", v, _k(cx, 1e18, v)), large, y), dt)


@converts("aten.atanh")
def _atanh(cx: TorchContext, x: Value) -> Value:
    v, dt = _float_in(cx, x)
    # 0.5 (log1p(x) - log1p(-x)): both logs see exact arguments, the terms never cancel
    d = cx.op("sub", cx.op("log1p", v), cx.op("log1p", cx.op("neg", v)))
    return cx.cast(cx.op("mul", _k(cx, 0.5, v), d), dt)


# -- lgamma ------------------------------------------------------------------------

_LANCZOS_G = 7.0
_LANCZOS = (0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
            -176.61502916214059, 12.507343278686905, -0.13857109526572012,
            9.9843695780195716e-6, 1.5056327351493116e-7)


def lgamma(cx: TorchContext, x: Value) -> Value:
    """log|Gamma(x)|: Lanczos for x >= 0.5, reflection log(pi / |sin(pi x)|) - lgamma(1 - x)."""
    half = _k(cx, 0.5, x)
    refl = cx.op("lt", x, half)
    z = cx.op("select", refl, cx.op("sub", _k(cx, 1, x), x), x)   # z >= 0.5
    zm1 = cx.op("sub", z, _k(cx, 1, x))
    s = _k(cx, _LANCZOS[0], x)
    for i, c in enumerate(_LANCZOS[1:], 1):
        s = cx.op("add", s, cx.op("div", _k(cx, c, x), cx.op("add", zm1, _k(cx, float(i), x))))
    t = cx.op("add", zm1, _k(cx, _LANCZOS_G + 0.5, x))
    # 0.5 log(2 pi) + (z - 0.5) log t - t + log s
    lg = cx.op("add", cx.op("add", _k(cx, 0.5 * math.log(2 * math.pi), x),
                            cx.op("mul", cx.op("sub", zm1, _k(cx, -0.5, x)), cx.op("log", t))),
               cx.op("sub", cx.op("log", s), t))
    sin = cx.op("abs", cx.op("sin", cx.op("mul", _k(cx, math.pi, x), x)))
    reflected = cx.op("sub", cx.op("log", cx.op("div", _k(cx, math.pi, x), sin)), lg)
    out = cx.op("select", refl, reflected, lg)
    # poles (0, -1, -2, ...) are +inf; +-inf gives +inf
    pole = cx.op("logical_and", refl, cx.op("eq", cx.op("floor", x), x))
    inf = _k(cx, math.inf, x)
    return cx.op("select", cx.op("logical_or", pole, isinf(cx, x)), inf, out)


@converts("aten.lgamma")
def _lgamma(cx: TorchContext, x: Value) -> Value:
    dt = cx.out_dtype()
    v = cx.cast(x, f64_or(dt))
    return cx.cast(lgamma(cx, v), dt)


def f64_or(dt: Any) -> Any:
    """The dtype lgamma computes in: f64 for f32 and f64 (the series cancels), else f32."""
    from hal.dtypes import f64

    return f64 if dt.bits >= 32 else compute_dtype(dt)


# -- norms -------------------------------------------------------------------------


def _axes(x: Value, dim: Any) -> tuple[int, ...]:
    if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        return tuple(range(x.rank))
    dims = dim if isinstance(dim, (list, tuple)) else (dim,)
    return tuple(sorted({d % x.rank for d in dims})) if x.rank else ()


@converts("aten.linalg_vector_norm")
def _vector_norm(cx: TorchContext, x: Value, ord: Any = 2, dim: Any = None,
                 keepdim: bool = False, *, dtype: Any = None) -> Value:
    dt = cx.out_dtype()
    v = cx.op("abs", cx.cast(x, compute_dtype(dt)))
    axes = _axes(x, dim)
    kd = bool(keepdim)
    if not axes:
        out = v if ord != 0 else cx.cast(cx.op("ne", v, _k(cx, 0, v)), v.dtype)
        return cx.cast(cx.reshape(out, cx.out_shape()), dt)
    return cx.cast(norm_reduce(cx, v, float(ord), axes, kd), dt)


def norm_reduce(cx: TorchContext, v: Value, o: float, axes: tuple[int, ...], kd: bool) -> Value:
    """The `o`-norm of |x| (`v`) over `axes`: max, min, count of nonzeros, sum, root of sums."""
    if o == math.inf:
        return cx.op("reduce_max", v, axes=axes, keepdims=kd)
    if o == -math.inf:
        return cx.op("reduce_min", v, axes=axes, keepdims=kd)
    if o == 0:
        nz = cx.cast(cx.op("ne", v, _k(cx, 0, v)), v.dtype)
        return cx.op("reduce_sum", nz, axes=axes, keepdims=kd)
    if o == 1:
        return cx.op("reduce_sum", v, axes=axes, keepdims=kd)
    if o == 2:
        return cx.op("sqrt", cx.op("reduce_sum", cx.op("mul", v, v), axes=axes, keepdims=kd))
    s = cx.op("reduce_sum", cx.op("pow", v, _k(cx, o, v)), axes=axes, keepdims=kd)
    return cx.op("pow", s, _k(cx, 1.0 / o, s))


@converts("aten._pdist_forward")
def _pdist(cx: TorchContext, x: Value, p: float = 2.0) -> Value:
    """Distances between rows i < j of x [n, m], in torch's order (0,1), (0,2), ..., (1,2)."""
    dt = cx.out_dtype()
    n, m = x.shape
    rows_i, rows_j = np.triu_indices(n, k=1)
    if rows_i.size == 0:
        return cx.scalar(0, dt, (0,))
    x = cx.cast(x, compute_dtype(dt))
    xi = cx.op("gather", x, cx.constant(f"{cx.node.name}_i", i64, rows_i), axis=0)
    xj = cx.op("gather", x, cx.constant(f"{cx.node.name}_j", i64, rows_j), axis=0)
    v = cx.op("abs", cx.op("sub", xi, xj))
    if m == 0:
        return cx.scalar(0, dt, (rows_i.size,))
    return cx.cast(norm_reduce(cx, v, float(p), (1,), False), dt)


# -- scans -------------------------------------------------------------------------


def _tri_mask(cx: TorchContext, shape: tuple[int, ...]) -> Value:
    """[..., n, n] bool: [i, j] is j <= i (element j is in the prefix ending at i)."""
    r = cx.op("iota", shape=shape, dimension=len(shape) - 2, dtype=i64)
    c = cx.op("iota", shape=shape, dimension=len(shape) - 1, dtype=i64)
    return cx.op("le", c, r)


def _prefix(cx: TorchContext, x: Value, dim: int) -> tuple[Value, Value, tuple[int, ...]]:
    """x moved so `dim` is last and broadcast to [..., n (prefix end), n (element)]."""
    perm = tuple(a for a in range(x.rank) if a != dim) + (dim,)
    xt = x if perm == tuple(range(x.rank)) else cx.op("transpose", x, perm=perm)
    n = x.shape[dim]
    lead = tuple(xt.shape[:-1])
    wide = cx.bcast(cx.reshape(xt, lead + (1, n)), lead + (n, n))
    return wide, _tri_mask(cx, lead + (n, n)), perm


def _unperm(cx: TorchContext, y: Value, perm: tuple[int, ...]) -> Value:
    if perm == tuple(range(len(perm))):
        return y
    inv = tuple(perm.index(a) for a in range(len(perm)))
    return cx.op("transpose", y, perm=inv)


@converts("aten.cumprod")
def _cumprod(cx: TorchContext, x: Value, dim: int, *, dtype: Any = None) -> Value:
    dt = cx.out_dtype()
    v = cx.cast(x, dt)
    if v.rank == 0 or v.shape[dim % v.rank] <= 1:
        return v
    wide, mask, perm = _prefix(cx, v, dim % v.rank)
    y = cx.op("reduce_prod", cx.op("select", mask, wide, cx.scalar(1, dt, wide.shape)),
              axes=(v.rank,), keepdims=False)
    return _unperm(cx, y, perm)


@converts("aten.cummax", "aten.cummin")
def _cummax(cx: TorchContext, x: Value, dim: int) -> tuple[Value, Value]:
    is_max = cx.node.target.__name__.startswith("cummax")
    if x.rank == 0:
        return x, cx.scalar(0, i64, ())
    dim %= x.rank
    wide, mask, perm = _prefix(cx, x, dim)
    if x.dtype.is_float:
        fill = -math.inf if is_max else math.inf
    elif x.dtype.is_bool:
        raise UnsupportedError(f"{cx.node.target.__name__} on bool tensors",
                               hint="cast to an integer type first")
    else:
        info = np.iinfo(x.dtype.np_dtype)
        fill = int(info.min if is_max else info.max)
    masked = cx.op("select", mask, wide, cx.scalar(fill, x.dtype, wide.shape))
    vals = cx.op("reduce_max" if is_max else "reduce_min", masked, axes=(x.rank,),
                 keepdims=False)
    # torch's index is the last position holding the running extreme (NaN counts as extreme)
    hit = cx.op("eq", wide, cx.bcast(cx.reshape(vals, vals.shape + (1,)), wide.shape))
    if x.dtype.is_float:
        nan_hit = cx.op("logical_and", isnan(cx, wide),
                        isnan(cx, cx.bcast(cx.reshape(vals, vals.shape + (1,)), wide.shape)))
        hit = cx.op("logical_or", hit, nan_hit)
    col = cx.op("iota", shape=wide.shape, dimension=x.rank, dtype=i64)
    cand = cx.op("select", cx.op("logical_and", hit, mask), col, cx.scalar(-1, i64, wide.shape))
    idx = cx.op("reduce_max", cand, axes=(x.rank,), keepdims=False)
    return _unperm(cx, vals, perm), _unperm(cx, idx, perm)


@converts("aten.logcumsumexp")
def _logcumsumexp(cx: TorchContext, x: Value, dim: int) -> Value:
    dt = cx.out_dtype()
    v = cx.cast(x, compute_dtype(dt))
    if v.rank == 0:
        return cx.cast(v, dt)
    dim %= v.rank
    wide, mask, perm = _prefix(cx, v, dim)
    masked = cx.op("select", mask, wide, cx.scalar(-math.inf, v.dtype, wide.shape))
    m = cx.op("reduce_max", masked, axes=(v.rank,), keepdims=True)
    m = cx.op("select", isinf(cx, m), cx.scalar(0, v.dtype, m.shape), m)
    s = cx.op("reduce_sum", cx.op("exp", cx.op("sub", masked, cx.bcast(m, wide.shape))),
              axes=(v.rank,), keepdims=True)
    y = cx.reshape(cx.op("add", cx.op("log", s), m), tuple(wide.shape[:-1]))
    return cx.cast(_unperm(cx, y, perm), dt)


# -- contractions ------------------------------------------------------------------


@converts("aten.addmv")
def _addmv(cx: TorchContext, bias: Any, a: Value, v: Value, *, beta: Any = 1,
           alpha: Any = 1) -> Value:
    dt, shape = cx.out_dtype(), cx.out_shape()
    y = cx.reshape(cx.op("matmul", cx.cast(a, dt), cx.reshape(cx.cast(v, dt), (v.shape[0], 1))),
                   shape)
    return axpby(cx, y, bias, alpha, beta, dt, shape)


@converts("aten.addbmm")
def _addbmm(cx: TorchContext, bias: Any, a: Value, b: Value, *, beta: Any = 1,
            alpha: Any = 1) -> Value:
    dt, shape = cx.out_dtype(), cx.out_shape()
    prod = cx.op("matmul", cx.cast(a, dt), cx.cast(b, dt))
    y = cx.op("reduce_sum", prod, axes=(0,), keepdims=False) if a.shape[0] else \
        cx.scalar(0, dt, shape)
    return axpby(cx, y, bias, alpha, beta, dt, shape)


@converts("aten.addr")
def _addr(cx: TorchContext, bias: Any, a: Value, b: Value, *, beta: Any = 1,
          alpha: Any = 1) -> Value:
    dt, shape = cx.out_dtype(), cx.out_shape()
    outer = cx.op("mul", cx.bcast(cx.reshape(cx.cast(a, dt), (a.shape[0], 1)), shape),
                  cx.bcast(cx.reshape(cx.cast(b, dt), (1, b.shape[0])), shape))
    if dt == bool_:
        raise UnsupportedError("addr on bool tensors", hint="cast to an integer type first")
    return axpby(cx, outer, bias, alpha, beta, dt, shape)


# -- simple elementwise --------------------------------------------------------------


@converts("aten.trunc", "aten.fix")
def _trunc(cx: TorchContext, x: Value) -> Value:
    if not x.dtype.is_float:
        return x
    neg = cx.op("lt", x, _k(cx, 0, x))
    return cx.op("select", neg, cx.op("ceil", x), cx.op("floor", x))


@converts("aten.frac")
def _frac(cx: TorchContext, x: Value) -> Value:
    return cx.op("sub", x, _trunc(cx, x))


@converts("aten.log10")
def _log10(cx: TorchContext, x: Value) -> Value:
    v, dt = _float_in(cx, x)
    return cx.cast(cx.op("div", cx.op("log", v), _k(cx, math.log(10), v)), dt)


@converts("aten.leaky_relu")
def _leaky_relu(cx: TorchContext, x: Value, slope: float = 0.01) -> Value:
    pos = cx.op("gt", x, _k(cx, 0, x))
    return cx.op("select", pos, x, cx.op("mul", x, _k(cx, slope, x)))


@converts("aten.elu")
def _elu(cx: TorchContext, x: Value, alpha: float = 1.0, scale: float = 1.0,
         input_scale: float = 1.0) -> Value:
    v, dt = _float_in(cx, x)
    neg = cx.op("mul", _k(cx, alpha, v), cx.op("expm1", cx.op("mul", v, _k(cx, input_scale, v))))
    y = cx.op("select", cx.op("gt", v, _k(cx, 0, v)), v, neg)
    return cx.cast(cx.op("mul", y, _k(cx, scale, v)) if scale != 1 else y, dt)


# -- digamma / polygamma -------------------------------------------------------------

_SHIFT = 20  # recurrence steps before the asymptotic series (x + 20 >= 10 for x >= -10)
_BERNOULLI = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730)   # B_2 .. B_12


def polygamma(cx: TorchContext, n: int, x: Value) -> Value:
    """psi^(n)(x) in x's dtype: the recurrence psi^(n)(x) = psi^(n)(x + m) + (-1)^(n+1) n!
    sum 1/(x + k)^(n+1), then the asymptotic (Stirling) series at x + m."""
    y = cx.op("add", x, _k(cx, float(_SHIFT), x))
    inv = cx.op("reciprocal", y)
    if n == 0:
        series = cx.op("sub", cx.op("log", y), cx.op("mul", _k(cx, 0.5, x), inv))
    else:
        # (n-1)!/y^n + n!/(2 y^(n+1))
        series = cx.op("add", cx.op("mul", _k(cx, math.factorial(n - 1), x), _ipow(cx, inv, n)),
                       cx.op("mul", _k(cx, math.factorial(n) / 2, x), _ipow(cx, inv, n + 1)))
    sign = 1.0 if n == 0 else (-1.0) ** (n + 1)
    for j, b in enumerate(_BERNOULLI, 1):
        k2 = 2 * j
        # digamma: - B_2k / (2k y^2k); polygamma: B_2k (2k + n - 1)! / ((2k)! y^(2k + n))
        coef = -b / k2 if n == 0 else b * math.factorial(k2 + n - 1) / math.factorial(k2)
        series = cx.op("add", series, cx.op("mul", _k(cx, coef, x), _ipow(cx, inv, k2 + n)))
    if n:
        series = cx.op("mul", series, _k(cx, sign, x))
    # the recurrence terms
    acc = None
    for k in range(_SHIFT):
        t = _ipow(cx, cx.op("reciprocal", cx.op("add", x, _k(cx, float(k), x))), n + 1)
        acc = t if acc is None else cx.op("add", acc, t)
    c = -1.0 if n == 0 else sign * math.factorial(n)
    out = cx.op("add", series, cx.op("mul", _k(cx, c, x), acc))
    # poles: digamma(0) = -inf (torch: -inf at 0, nan at negative integers)
    pole = cx.op("logical_and", cx.op("le", x, _k(cx, 0, x)), cx.op("eq", cx.op("floor", x), x))
    if n == 0:
        at_pole = cx.op("select", cx.op("eq", x, _k(cx, 0, x)),
                        _k(cx, -math.inf, x), _k(cx, math.nan, x))
    else:
        at_pole = _k(cx, math.inf if n % 2 == 0 else math.nan, x)
    return cx.op("select", pole, at_pole, out)


def _ipow(cx: TorchContext, v: Value, p: int) -> Value:
    out = v
    for _ in range(p - 1):
        out = cx.op("mul", out, v)
    return out


@converts("aten.digamma")
def _digamma(cx: TorchContext, x: Value) -> Value:
    dt = cx.out_dtype()
    return cx.cast(polygamma(cx, 0, cx.cast(x, f64_or(dt))), dt)


@converts("aten.polygamma")
def _polygamma(cx: TorchContext, n: int, x: Value) -> Value:
    dt = cx.out_dtype()
    if n > 8:
        raise UnsupportedError(f"polygamma of order {n}", hint="orders 0 to 8 are supported")
    return cx.cast(polygamma(cx, int(n), cx.cast(x, f64_or(dt))), dt)


@converts("aten._conj", "aten._conj_physical", "aten.conj_physical", "aten.resolve_conj",
          "aten.resolve_neg")
def _conj(cx: TorchContext, x: Value) -> Value:
    return x  # real tensors only reach here (complex dtypes are reported unsupported)
