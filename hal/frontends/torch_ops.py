"""ATen converters for arithmetic: elementwise math, comparisons, reductions, norms, matmuls.

Each converter follows torch's semantics: operands are promoted to torch's
result dtype (`cx.promote`, or the node's output dtype) and broadcast to the
output shape explicitly, since hal ops take equal dtypes and shapes. Ops hal
defines as composites (softmax, layer_norm, gelu, silu, mean, variance) map
to the composite, so the fusion pass sees one op and its decomposition.
"""

from __future__ import annotations

import math
from typing import Any

from hal.dtypes import bool_, f32, i64
from hal.errors import UnsupportedError
from hal.frontends.torch_convert import TorchContext, converts
from hal.ir.graph import Value

# -- elementwise unary -----------------------------------------------------------

_UNARY = {
    "neg": "neg", "abs": "abs", "exp": "exp", "exp2": "exp2", "log": "log", "log2": "log2",
    "log1p": "log1p", "expm1": "expm1", "sqrt": "sqrt", "rsqrt": "rsqrt",
    "reciprocal": "reciprocal", "tanh": "tanh", "sigmoid": "sigmoid", "erf": "erf",
    "sin": "sin", "cos": "cos", "floor": "floor", "ceil": "ceil", "round": "round",
    "sign": "sign",
}


def _unary(hal_op: str):
    def convert(cx: TorchContext, x: Value) -> Value:
        dt = cx.out_dtype()
        if hal_op in ("floor", "ceil", "round") and not dt.is_float:
            return x  # integer rounding is the identity
        return cx.op(hal_op, cx.cast(x, dt))
    return convert


for _aten, _hal in _UNARY.items():
    converts(f"aten.{_aten}")(_unary(_hal))


@converts("aten.round.decimals")
def _round_decimals(cx: TorchContext, x: Value, *, decimals: int = 0) -> Value:
    # torch: round(x * 10^d) / 10^d for d >= 0, round(x / 10^-d) * 10^-d for d < 0
    dt = cx.out_dtype()
    x = cx.cast(x, dt)
    if not dt.is_float:
        return x
    if decimals == 0:
        return cx.op("round", x)
    scale = cx.scalar(10.0 ** abs(int(decimals)), dt, x.shape)
    up, down = ("mul", "div") if decimals > 0 else ("div", "mul")
    return cx.op(down, cx.op("round", cx.op(up, x, scale)), scale)


@converts("aten.logical_not", "aten.bitwise_not")
def _not(cx: TorchContext, x: Value) -> Value:
    if x.dtype == bool_ or cx.node.target.__name__.startswith("logical"):
        return cx.op("logical_not", _truth(cx, x))
    return cx.op("bitwise_xor", x, cx.scalar(-1, x.dtype, x.shape))


def _truth(cx: TorchContext, x: Value) -> Value:
    return x if x.dtype == bool_ else cx.op("ne", x, cx.scalar(0, x.dtype, x.shape))


@converts("aten.relu")
def _relu(cx: TorchContext, x: Value) -> Value:
    return cx.op("maximum", x, cx.scalar(0, x.dtype, x.shape))


@converts("aten.gelu")
def _gelu(cx: TorchContext, x: Value, approximate: str = "none") -> Value:
    return cx.op("gelu", x, approximate=approximate)


@converts("aten.silu")
def _silu(cx: TorchContext, x: Value) -> Value:
    return cx.op("silu", x)


@converts("aten.clamp", "aten.clamp_min", "aten.clamp_max", "aten.hardtanh")
def _clamp(cx: TorchContext, x: Value, lo: Any = None, hi: Any = None) -> Value:
    name = cx.node.target.__name__
    if name.startswith("clamp_max"):
        lo, hi = None, lo
    if name.startswith("hardtanh"):
        lo = -1.0 if lo is None else lo
        hi = 1.0 if hi is None else hi
    dt, shape = cx.out_dtype(), cx.out_shape()
    y = cx.bcast(cx.cast(x, dt), shape)
    if lo is not None:
        y = cx.op("maximum", y, cx.tensor(lo, dt, shape))
    if hi is not None:
        y = cx.op("minimum", y, cx.tensor(hi, dt, shape))
    return y


# -- elementwise binary ----------------------------------------------------------

# torch's arithmetic on bool tensors (isfinite, isclose and logaddexp decompose to it) is
# logic: a * b is and, a + b is or, max/min are or/and
_BOOL_OPS = {"mul": "logical_and", "add": "logical_or", "maximum": "logical_or",
             "minimum": "logical_and"}


def _binary(hal_op: str, scaled: bool = False):
    def convert(cx: TorchContext, a: Any, b: Any, alpha: Any = 1) -> Value:
        dt, shape = cx.out_dtype(), cx.out_shape()
        av, bv = cx.tensor(a, dt, shape), cx.tensor(b, dt, shape)
        if dt == bool_ and hal_op in _BOOL_OPS:
            return cx.op(_BOOL_OPS[hal_op], av, bv)
        if scaled and alpha != 1:
            bv = cx.op("mul", bv, cx.scalar(alpha, dt, shape))
        return cx.op(hal_op, av, bv)
    return convert


for _aten, _hal in {"add": "add", "sub": "sub"}.items():
    converts(f"aten.{_aten}")(_binary(_hal, scaled=True))
for _aten, _hal in {"mul": "mul", "maximum": "maximum", "minimum": "minimum",
                    "fmod": "remainder"}.items():
    converts(f"aten.{_aten}")(_binary(_hal))


@converts("aten.rsub")
def _rsub(cx: TorchContext, a: Any, b: Any, alpha: Any = 1) -> Value:
    return _binary("sub", scaled=True)(cx, b, a, alpha)


@converts("aten.div")
def _div(cx: TorchContext, a: Any, b: Any, rounding_mode: str | None = None) -> Value:
    dt, shape = cx.out_dtype(), cx.out_shape()
    av, bv = cx.tensor(a, dt, shape), cx.tensor(b, dt, shape)
    q = cx.op("div", av, bv)
    if rounding_mode is None or (rounding_mode == "trunc" and not dt.is_float):
        return q
    if dt.is_float:
        if rounding_mode == "floor":
            return cx.op("floor", q)
        neg = cx.op("lt", q, cx.scalar(0, dt, shape))
        return cx.op("select", neg, cx.op("ceil", q), cx.op("floor", q))
    # integer floor division: truncated quotient minus one where the signs differ and
    # the division is inexact
    zero = cx.scalar(0, dt, shape)
    inexact = cx.op("ne", cx.op("remainder", av, bv), zero)
    signs = cx.op("ne", cx.op("lt", av, zero), cx.op("lt", bv, zero))
    fix = cx.op("logical_and", inexact, signs)
    return cx.op("sub", q, cx.cast(fix, dt))


@converts("aten.remainder")
def _remainder(cx: TorchContext, a: Any, b: Any) -> Value:
    # torch.remainder has the sign of the divisor (Python %); hal's follows the dividend
    dt, shape = cx.out_dtype(), cx.out_shape()
    av, bv = cx.tensor(a, dt, shape), cx.tensor(b, dt, shape)
    r = cx.op("remainder", av, bv)
    zero = cx.scalar(0, dt, shape)
    fix = cx.op("logical_and", cx.op("ne", r, zero),
                cx.op("ne", cx.op("lt", r, zero), cx.op("lt", bv, zero)))
    return cx.op("select", fix, cx.op("add", r, bv), r)


@converts("aten.pow")
def _pow(cx: TorchContext, a: Any, b: Any) -> Value:
    dt, shape = cx.out_dtype(), cx.out_shape()
    if isinstance(a, Value) and not isinstance(b, Value):
        x = cx.bcast(cx.cast(a, dt), shape)
        if b == 2:
            return cx.op("mul", x, x)
        if b == 1:
            return x
        if b == 0.5 and dt.is_float:
            return cx.op("sqrt", x)
        if b == -1 and dt.is_float:
            return cx.op("reciprocal", x)
    return cx.op("pow", cx.tensor(a, dt, shape), cx.tensor(b, dt, shape))


def _compare(hal_op: str):
    def convert(cx: TorchContext, a: Any, b: Any) -> Value:
        dt, shape = cx.promote(a, b), cx.out_shape()
        return cx.op(hal_op, cx.tensor(a, dt, shape), cx.tensor(b, dt, shape))
    return convert


for _name in ("eq", "ne", "lt", "le", "gt", "ge"):
    converts(f"aten.{_name}")(_compare(_name))


def _bitwise(hal_op: str):
    def convert(cx: TorchContext, a: Any, b: Any) -> Value:
        dt, shape = cx.out_dtype(), cx.out_shape()
        return cx.op(hal_op, cx.tensor(a, dt, shape), cx.tensor(b, dt, shape))
    return convert


for _name in ("and", "or", "xor"):
    converts(f"aten.bitwise_{_name}")(_bitwise(f"bitwise_{_name}"))


def _logical(hal_op: str):
    def convert(cx: TorchContext, a: Any, b: Any) -> Value:
        shape = cx.out_shape()
        av = cx.bcast(_truth(cx, cx.tensor(a, cx.promote(a))), shape)
        bv = cx.bcast(_truth(cx, cx.tensor(b, cx.promote(b))), shape)
        return cx.op(hal_op, av, bv)
    return convert


for _name in ("and", "or", "xor"):
    converts(f"aten.logical_{_name}")(_logical(f"logical_{_name}"))


@converts("aten.where")
def _where(cx: TorchContext, cond: Value, a: Any, b: Any) -> Value:
    dt, shape = cx.out_dtype(), cx.out_shape()
    pred = cx.bcast(_truth(cx, cond), shape)
    return cx.op("select", pred, cx.tensor(a, dt, shape), cx.tensor(b, dt, shape))


@converts("aten.masked_fill")
def _masked_fill(cx: TorchContext, x: Value, mask: Value, value: Any) -> Value:
    return _where(cx, mask, value, x)


# -- reductions --------------------------------------------------------------------

def _axes(x: Value, dim: Any) -> tuple[int, ...] | None:
    if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        return None
    dims = dim if isinstance(dim, (list, tuple)) else (dim,)
    return tuple(d % x.rank for d in dims) if x.rank else None


def _reduce(hal_op: str, to_bool: bool = False):
    def convert(cx: TorchContext, x: Value, dim: Any = None, keepdim: bool = False,
                *, dtype: Any = None) -> Value:
        if isinstance(dim, bool):  # prod.default(x, dtype) and friends have no dim
            dim, keepdim = None, False
        v = _truth(cx, x) if to_bool else cx.cast(x, cx.out_dtype())
        if x.rank == 0:
            return v
        return cx.op(hal_op, v, axes=_axes(x, dim), keepdims=bool(keepdim))
    return convert


for _aten, _hal in {"sum": "reduce_sum", "prod": "reduce_prod", "amax": "reduce_max",
                    "amin": "reduce_min"}.items():
    converts(f"aten.{_aten}")(_reduce(_hal))
for _aten, _hal in {"any": "reduce_any", "all": "reduce_all"}.items():
    converts(f"aten.{_aten}")(_reduce(_hal, to_bool=True))


@converts("aten.mean")
def _mean(cx: TorchContext, x: Value, dim: Any = None, keepdim: bool = False, *,
          dtype: Any = None) -> Value:
    return cx.op("mean", cx.cast(x, cx.out_dtype()), axes=_axes(x, dim), keepdims=bool(keepdim))


def _minmax(hal_red: str, hal_arg: str):
    def convert(cx: TorchContext, x: Value, dim: Any = None, keepdim: bool = False) -> Any:
        if dim is None:
            return cx.op(hal_red, x) if x.rank else x
        if x.rank == 0:  # torch allows dim 0 (or -1) on a 0-d tensor: the value, index 0
            return x, cx.scalar(0, i64, ())
        axis = dim % x.rank
        values = cx.op(hal_red, x, axes=(axis,), keepdims=keepdim)
        return values, cx.op(hal_arg, x, axis=axis, keepdims=keepdim, dtype=i64)
    return convert


converts("aten.max.dim", "aten.max.default")(_minmax("reduce_max", "argmax"))
converts("aten.min.dim", "aten.min.default")(_minmax("reduce_min", "argmin"))
converts("aten.max.other")(_binary("maximum"))
converts("aten.min.other")(_binary("minimum"))


def _arg(hal_op: str):
    def convert(cx: TorchContext, x: Value, dim: Any = None, keepdim: bool = False) -> Value:
        if x.rank == 0 or math.prod(x.shape) == 1:
            return cx.scalar(0, i64, cx.out_shape())
        if dim is None:
            flat = cx.reshape(x, (math.prod(x.shape),))
            return cx.reshape(cx.op(hal_op, flat, axis=0, dtype=i64), cx.out_shape())
        return cx.op(hal_op, x, axis=dim % x.rank, keepdims=keepdim, dtype=i64)
    return convert


converts("aten.argmax")(_arg("argmax"))
converts("aten.argmin")(_arg("argmin"))


def _correction(correction: Any, unbiased: Any = None) -> float:
    if correction is None:
        return 1 if unbiased is None or unbiased else 0
    return float(correction)


@converts("aten.var_mean", "aten.var")
def _var_mean(cx: TorchContext, x: Value, dim: Any = None, *args: Any,
              correction: Any = None, keepdim: bool = False) -> Any:
    unbiased = args[0] if args and isinstance(args[0], bool) else None
    axes = _axes(x, dim)
    c = _correction(correction, unbiased)
    if c == int(c):
        var = cx.op("variance", x, axes=axes, keepdims=keepdim, correction=int(c))
    else:  # a fractional correction rescales the biased variance: n / (n - c)
        n = math.prod(x.shape[a] for a in (axes if axes is not None else range(x.rank)))
        var = cx.op("variance", x, axes=axes, keepdims=keepdim, correction=0)
        var = cx.op("mul", var, cx.scalar(n / (n - c) if n != c else math.inf, var.dtype,
                                          var.shape))
    if cx.node.target.__name__.startswith("var_mean"):
        return var, cx.op("mean", x, axes=axes, keepdims=keepdim)
    return var


@converts("aten.cumsum")
def _cumsum(cx: TorchContext, x: Value, dim: int, *, dtype: Any = None) -> Value:
    v = cx.cast(x, cx.out_dtype())
    if v.rank == 0:
        return v
    return cx.op("cumsum", v, axis=dim % v.rank)


# -- normalisation and softmax -------------------------------------------------------

@converts("aten._softmax", "aten.softmax.int")
def _softmax(cx: TorchContext, x: Value, dim: int, half_to_float: Any = False) -> Value:
    return _softmax_like(cx, "softmax", x, dim)


@converts("aten._log_softmax", "aten.log_softmax.int")
def _log_softmax(cx: TorchContext, x: Value, dim: int, half_to_float: Any = False) -> Value:
    return _softmax_like(cx, "log_softmax", x, dim)


def _softmax_like(cx: TorchContext, op: str, x: Value, dim: int) -> Value:
    v = cx.cast(x, cx.out_dtype())
    if v.rank == 0:  # torch treats a 0-d tensor as one row of one element
        return cx.reshape(cx.op(op, cx.reshape(v, (1,)), axis=0), ())
    return cx.op(op, v, axis=dim % v.rank)


@converts("aten.native_layer_norm")
def _layer_norm(cx: TorchContext, x: Value, normalized_shape: Any, weight: Value | None,
                bias: Value | None, eps: float) -> tuple[Value, Value, Value]:
    n = len(normalized_shape)
    tail = tuple(x.shape[x.rank - n:])
    w = weight if weight is not None else cx.scalar(1, x.dtype, tail)
    b = bias if bias is not None else cx.scalar(0, x.dtype, tail)
    y = cx.op("layer_norm", x, cx.cast(w, x.dtype), cx.cast(b, x.dtype), axis=x.rank - n,
              eps=float(eps))
    # mean and rstd (kept dims, f32 for low-precision x); removed unless used
    axes = tuple(range(x.rank - n, x.rank))
    stat_dt = cx.out_dtype(1)
    xs = cx.cast(x, stat_dt)
    mean = cx.op("mean", xs, axes=axes, keepdims=True)
    var = cx.op("variance", xs, axes=axes, keepdims=True)
    rstd = cx.op("rsqrt", cx.op("add", var, cx.scalar(eps, stat_dt, var.shape)))
    return y, mean, rstd


@converts("aten.native_dropout")
def _dropout(cx: TorchContext, x: Value, p: float, train: Any) -> tuple[Value, Value]:
    if train and p > 0:
        raise UnsupportedError("dropout in training mode", hint="call model.eval() first")
    return x, cx.scalar(1, bool_, x.shape)


# -- contractions ---------------------------------------------------------------------

def _mm(cx: TorchContext, a: Value, b: Value) -> Value:
    dt = cx.promote(a, b)
    return cx.op("matmul", cx.cast(a, dt), cx.cast(b, dt))


@converts("aten.mm", "aten.bmm")
def _matmul(cx: TorchContext, a: Value, b: Value) -> Value:
    return _mm(cx, a, b)


@converts("aten.addmm", "aten.baddbmm")
def _addmm(cx: TorchContext, bias: Value, a: Value, b: Value, *, beta: Any = 1,
           alpha: Any = 1) -> Value:
    dt, shape = cx.out_dtype(), cx.out_shape()
    return axpby(cx, _mm(cx, a, b), bias, alpha, beta, dt, shape)


def axpby(cx: TorchContext, y: Value, bias: Any, alpha: Any, beta: Any, dt: Any,
          shape: tuple[int, ...]) -> Value:
    """alpha * y + beta * bias, the BLAS-style epilogue of addmm/addmv/addr/addbmm (beta 0:
    bias is not read, as torch does)."""
    if alpha != 1:
        y = cx.op("mul", y, cx.scalar(alpha, dt, shape))
    if beta == 0:
        return y
    c = cx.tensor(bias, dt, shape)
    if beta != 1:
        c = cx.op("mul", c, cx.scalar(beta, dt, shape))
    return cx.op("add", y, c)


@converts("aten.dot")
def _dot(cx: TorchContext, a: Value, b: Value) -> Value:
    y = _mm(cx, cx.reshape(a, (1, a.shape[0])), cx.reshape(b, (b.shape[0], 1)))
    return cx.reshape(y, ())


@converts("aten.mv")
def _mv(cx: TorchContext, a: Value, b: Value) -> Value:
    return cx.reshape(_mm(cx, a, cx.reshape(b, (b.shape[0], 1))), (a.shape[0],))



# fp8 scaled matmul: torch's ScalingType and SwizzleType values
_TENSORWISE, _ROWWISE, _NO_SWIZZLE = 0, 1, 0


@converts("aten._scaled_mm_v2")
def _scaled_mm_v2(cx: TorchContext, a: Value, b: Value, scale_a: Any, recipe_a: Any,
                  swizzle_a: Any, scale_b: Any, recipe_b: Any, swizzle_b: Any, bias: Any = None,
                  out_dtype: Any = None, contraction_dim: Any = (),
                  use_fast_accum: bool = False) -> Value:
    """(a @ b) * scale_a * scale_b (+ bias) in f32, rounded to out_dtype: the fp8 matmul
    accumulates in f32 (hal's matmul with out_dtype f32); per-tensor or per-row/column
    scales broadcast over the product."""
    recipes = tuple(recipe_a) + tuple(recipe_b)
    if (len(scale_a) != 1 or len(scale_b) != 1 or any(r not in (_TENSORWISE, _ROWWISE)
                                                      for r in recipes)
            or any(z != _NO_SWIZZLE for z in tuple(swizzle_a) + tuple(swizzle_b))
            or tuple(contraction_dim or ()) not in ((), (1, 0))):
        raise UnsupportedError(f"_scaled_mm_v2 with recipes {list(recipes)}, "
                               f"swizzles {list(swizzle_a) + list(swizzle_b)}: only one "
                               "tensor-wise or row-wise scale per operand, unswizzled",
                               hint="block-scaled (MX/NVFP4) recipes are not converted")
    return _scaled(cx, a, b, scale_a[0], scale_b[0], bias)


@converts("aten._scaled_mm")
def _scaled_mm(cx: TorchContext, a: Value, b: Value, scale_a: Value, scale_b: Value,
               bias: Any = None, scale_result: Any = None, out_dtype: Any = None,
               use_fast_accum: bool = False) -> Value:
    if scale_result is not None:
        raise UnsupportedError("_scaled_mm with scale_result (an fp8 output)",
                               hint="use a 16- or 32-bit out_dtype")
    return _scaled(cx, a, b, scale_a, scale_b, bias)


def _scaled(cx: TorchContext, a: Value, b: Value, scale_a: Value, scale_b: Value,
            bias: Any) -> Value:
    out = cx.out_dtype()
    if out.saturates:
        raise UnsupportedError(f"scaled matmul with an {out} result: torch's "
                               "float -> fp8 conversion overflows to inf/NaN, hal's fp8 cast "
                               "saturates", hint="use a 16- or 32-bit out_dtype")
    m, n = a.shape[0], b.shape[1]
    if a.dtype != b.dtype:          # e4m3 x e5m2: the products are exact in f32
        a, b = cx.cast(a, f32), cx.cast(b, f32)
    y = cx.op("matmul", a, b, out_dtype=f32)
    for sc, shape in ((scale_a, (m, 1)), (scale_b, (1, n))):
        s = cx.cast(sc, f32)
        s = cx.reshape(s, (1, 1) if math.prod(s.shape) == 1 else shape)
        y = cx.op("mul", y, cx.bcast(s, (m, n)))
    if bias is not None:
        y = cx.op("add", y, cx.bcast(cx.reshape(cx.cast(bias, f32), (1, n)), (m, n)))
    return cx.cast(y, out)
