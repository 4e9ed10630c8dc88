"""Composite ops: defined by decomposition into primitives, with a direct float64 reference.

Each composite has an `infer` (shape rule with errors naming the composite),
a `reference` (the NumPy formula, float64) and a `decompose(builder, inputs,
attrs)` that appends primitives through a GraphBuilder. Tests check that the
decomposition evaluated primitive by primitive equals the reference.

Decompositions use only primitives (and other composites, which
ops.decompose expands recursively): broadcasts are explicit broadcast_to,
constants come from `full` with shape () then broadcast_to. Inputs in 16-bit or
fp8 floats are cast to f32, computed in f32 and cast back once, as fused
kernels do (compute_dtype); f32 and f64 inputs compute in their own dtype.

Layouts: rotary_embedding takes x [..., S, H, D] with cos/sin [S, D] (the
"rotate_half" form of Llama). Attention takes q [B, Hq, S, D], k [B, Hkv, T, D],
v [B, Hkv, T, Dv] with Hq % Hkv == 0 (query head h uses kv head h // (Hq/Hkv),
like torch's enable_gqa).
"""

from __future__ import annotations

import math

import numpy as np

from hal.dtypes import FLOAT_DTYPES, compute_dtype, i32
from hal.errors import ShapeError
from hal.ir.types import TensorType

from .common import normalize_axes, normalize_axis, require_dtype
from .elementwise import erf
from .movement import broadcast_shape_check
from .reduction import reduced_shape
from .registry import AttrSpec, Category, ErrorModel, OpDef, register_op

FLOATS = tuple(d.name for d in FLOAT_DTYPES)


# -- builder helpers -----------------------------------------------------------

def _scalar(b, value: float, dt, shape):
    """A constant of `shape`: full with shape () broadcast explicitly."""
    c = b.op("full", shape=(), value=float(value), dtype=dt)
    return b.op("broadcast_to", c, shape=tuple(shape)) if tuple(shape) else c


def _bcast(b, v, shape):
    return v if tuple(v.shape) == tuple(shape) else b.op("broadcast_to", v, shape=tuple(shape))


def _to(b, v, dt):
    return v if v.dtype == dt else b.op("cast", v, dtype=dt)


def _count(op: str, shape, axes) -> int:
    dims = [shape[a] for a in axes]
    if not all(isinstance(d, int) for d in dims):
        raise ShapeError(f"{op}: reduced dims {dims} are symbolic", hint="bind them to ints first")
    return math.prod(dims)


def _float_operands(op: str, types) -> TensorType:
    first = types[0]
    require_dtype(op, first, FLOAT_DTYPES, "a float type")
    for i, t in enumerate(types[1:], 1):
        if t.dtype != first.dtype:
            raise ShapeError(f"{op}: operand {i} is {t.dtype}, operand 0 is {first.dtype}",
                             hint="insert a cast")
    return first


def _composite(name, inputs, infer, reference, decompose, attrs=(), doc="", ulps=4.0):
    register_op(OpDef(name, Category.COMPOSITE, inputs, infer, reference, attrs=attrs,
                      error=ErrorModel(ulps=ulps, accumulates=True), decompose=decompose,
                      dtypes=FLOATS, doc=doc))


def _mean_keep(b, x, axes, n):
    s = b.op("reduce_sum", x, axes=axes, keepdims=True)
    return b.op("div", s, _scalar(b, n, x.dtype, s.shape))


# -- softmax / log_softmax -----------------------------------------------------

def _softmax_infer(op):
    def infer(types, attrs):
        t = _float_operands(op, types)
        if t.rank == 0:
            raise ShapeError(f"{op}: operand is a scalar", hint="reshape to shape [1] first")
        axis = normalize_axis(attrs["axis"], t.rank, op)
        if t.shape[axis] == 0:
            raise ShapeError(f"{op}: axis {axis} of shape {list(t.shape)} is empty",
                             hint="softmax needs at least one element per row")
        return [t]
    return infer


def _softmax_ref(xs, attrs):
    x = xs[0]
    axis = normalize_axis(attrs["axis"], x.ndim, "softmax")
    with np.errstate(all="ignore"):
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        return [e / np.sum(e, axis=axis, keepdims=True)]


def _log_softmax_ref(xs, attrs):
    x = xs[0]
    axis = normalize_axis(attrs["axis"], x.ndim, "log_softmax")
    with np.errstate(all="ignore"):
        shifted = x - np.max(x, axis=axis, keepdims=True)
        return [shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))]


def _shifted(b, x, axis):
    m = b.op("reduce_max", x, axes=(axis,), keepdims=True)
    return b.op("sub", x, _bcast(b, m, x.shape))


def _softmax_decompose(b, inputs, attrs):
    x0 = inputs[0]
    x = _to(b, x0, compute_dtype(x0.dtype))
    axis = normalize_axis(attrs["axis"], x.rank, "softmax")
    e = b.op("exp", _shifted(b, x, axis))
    s = b.op("reduce_sum", e, axes=(axis,), keepdims=True)
    return [_to(b, b.op("div", e, _bcast(b, s, x.shape)), x0.dtype)]


def _log_softmax_decompose(b, inputs, attrs):
    x0 = inputs[0]
    x = _to(b, x0, compute_dtype(x0.dtype))
    axis = normalize_axis(attrs["axis"], x.rank, "log_softmax")
    shifted = _shifted(b, x, axis)
    s = b.op("reduce_sum", b.op("exp", shifted), axes=(axis,), keepdims=True)
    out = b.op("sub", shifted, _bcast(b, b.op("log", s), x.shape))
    return [_to(b, out, x0.dtype)]


_AXIS = (AttrSpec("axis", "int", -1, doc="the normalised axis"),)
_composite("softmax", ("x",), _softmax_infer("softmax"), _softmax_ref, _softmax_decompose,
           _AXIS, "exp(x - max) / sum(exp(x - max)) along axis (numerically stable)")
_composite("log_softmax", ("x",), _softmax_infer("log_softmax"), _log_softmax_ref,
           _log_softmax_decompose, _AXIS, "x - max - log(sum(exp(x - max))) along axis")


# -- layer_norm / rms_norm -----------------------------------------------------

def _layer_norm_infer(types, attrs):
    t = _float_operands("layer_norm", types)
    axis = normalize_axis(attrs["axis"], t.rank, "layer_norm")
    for name, p in zip(("weight", "bias"), types[1:], strict=True):
        if p.shape != t.shape[axis:]:
            raise ShapeError(f"layer_norm: {name} has shape {list(p.shape)}, expected "
                             f"{list(t.shape[axis:])} (x.shape[axis:] with axis={axis})",
                             hint="weight and bias cover the normalised trailing dims")
    return [t]


def _layer_norm_ref(xs, attrs):
    x, w, bias = xs
    axes = tuple(range(normalize_axis(attrs["axis"], x.ndim, "layer_norm"), x.ndim))
    with np.errstate(all="ignore"):
        mu = np.mean(x, axis=axes, keepdims=True)
        var = np.mean((x - mu) ** 2, axis=axes, keepdims=True)
        return [(x - mu) / np.sqrt(var + attrs["eps"]) * w + bias]


def _layer_norm_decompose(b, inputs, attrs):
    x0 = inputs[0]
    cdt = compute_dtype(x0.dtype)
    x, w, bias = (_to(b, v, cdt) for v in inputs)
    axes = tuple(range(normalize_axis(attrs["axis"], x.rank, "layer_norm"), x.rank))
    n = _count("layer_norm", x.shape, axes)
    d = b.op("sub", x, _bcast(b, _mean_keep(b, x, axes, n), x.shape))
    var = _mean_keep(b, b.op("mul", d, d), axes, n)
    r = b.op("rsqrt", b.op("add", var, _scalar(b, attrs["eps"], cdt, var.shape)))
    y = b.op("mul", b.op("mul", d, _bcast(b, r, x.shape)), _bcast(b, w, x.shape))
    return [_to(b, b.op("add", y, _bcast(b, bias, x.shape)), x0.dtype)]


_composite("layer_norm", ("x", "weight", "bias"), _layer_norm_infer, _layer_norm_ref,
           _layer_norm_decompose,
           (AttrSpec("axis", "int", -1, doc="normalise over x's dims from axis to the last"),
            AttrSpec("eps", "float", 1e-5, doc="added to the variance")),
           "(x - mean) / sqrt(var + eps) * weight + bias over the trailing dims from axis; "
           "weight and bias have shape x.shape[axis:]")


def _rms_norm_infer(types, attrs):
    t = _float_operands("rms_norm", types)
    if t.rank == 0 or types[1].shape != t.shape[-1:]:
        raise ShapeError(f"rms_norm: weight has shape {list(types[1].shape)}, x has "
                         f"{list(t.shape)}", hint="weight has shape [x.shape[-1]]")
    return [t]


def _rms_norm_ref(xs, attrs):
    x, w = xs
    with np.errstate(all="ignore"):
        return [x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + attrs["eps"]) * w]


def _rms_norm_decompose(b, inputs, attrs):
    x0 = inputs[0]
    cdt = compute_dtype(x0.dtype)
    x, w = (_to(b, v, cdt) for v in inputs)
    axes = (x.rank - 1,)
    ms = _mean_keep(b, b.op("mul", x, x), axes, _count("rms_norm", x.shape, axes))
    r = b.op("rsqrt", b.op("add", ms, _scalar(b, attrs["eps"], cdt, ms.shape)))
    y = b.op("mul", b.op("mul", x, _bcast(b, r, x.shape)), _bcast(b, w, x.shape))
    return [_to(b, y, x0.dtype)]


_composite("rms_norm", ("x", "weight"), _rms_norm_infer, _rms_norm_ref, _rms_norm_decompose,
           (AttrSpec("eps", "float", 1e-6, doc="added to the mean square"),),
           "x / sqrt(mean(x^2) + eps) * weight over the last axis; weight [x.shape[-1]]")


# -- activations ---------------------------------------------------------------

def _same_float_infer(op):
    def infer(types, attrs):
        return [_float_operands(op, types)]
    return infer


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


def _gelu_infer(types, attrs):
    if attrs["approximate"] not in ("none", "tanh"):
        raise ShapeError(f"gelu: approximate='{attrs['approximate']}' is not 'none' or 'tanh'",
                         hint="use approximate='none' (erf) or 'tanh'")
    return [_float_operands("gelu", types)]


def _gelu_ref(xs, attrs):
    x = xs[0]
    with np.errstate(all="ignore"):
        if attrs["approximate"] == "tanh":
            return [0.5 * x * (1.0 + np.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)))]
        return [0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))]


def _gelu_decompose(b, inputs, attrs):
    x0 = inputs[0]
    cdt = compute_dtype(x0.dtype)
    x = _to(b, x0, cdt)

    def c(v):
        return _scalar(b, v, cdt, x.shape)

    if attrs["approximate"] == "tanh":
        cube = b.op("mul", b.op("mul", x, x), x)
        inner = b.op("add", x, b.op("mul", c(0.044715), cube))
        t = b.op("tanh", b.op("mul", c(_SQRT_2_OVER_PI), inner))
    else:
        t = b.op("erf", b.op("mul", x, c(1.0 / math.sqrt(2.0))))
    y = b.op("mul", b.op("mul", c(0.5), x), b.op("add", c(1.0), t))
    return [_to(b, y, x0.dtype)]


_composite("gelu", ("x",), _gelu_infer, _gelu_ref, _gelu_decompose,
           (AttrSpec("approximate", "str", "none", doc="'none' (erf form) or 'tanh'"),),
           "x * Phi(x); approximate='tanh' uses the tanh formula")


def _silu_decompose(b, inputs, attrs):
    x0 = inputs[0]
    x = _to(b, x0, compute_dtype(x0.dtype))
    return [_to(b, b.op("mul", x, b.op("sigmoid", x)), x0.dtype)]


def _silu_ref(xs, attrs):
    with np.errstate(all="ignore"):
        return [xs[0] / (1.0 + np.exp(-xs[0]))]


_composite("silu", ("x",), _same_float_infer("silu"), _silu_ref, _silu_decompose,
           doc="x * sigmoid(x)")


# -- mean / variance -----------------------------------------------------------

_MOMENT_ATTRS = (AttrSpec("axes", "ints", None, doc="reduced axes; default all"),
                 AttrSpec("keepdims", "bool", False, doc="keep reduced axes as size 1"))


def _moment_infer(op):
    def infer(types, attrs):
        t = _float_operands(op, types)
        axes = normalize_axes(attrs["axes"], t.rank, op)
        return [t.with_shape(reduced_shape(t.shape, axes, attrs["keepdims"]))]
    return infer


def _mean_ref(xs, attrs):
    axes = normalize_axes(attrs["axes"], xs[0].ndim, "mean")
    n = math.prod(xs[0].shape[a] for a in axes)
    with np.errstate(all="ignore"):  # the mean of nothing is nan, as in torch
        return [np.asarray(np.sum(xs[0], axis=axes, keepdims=attrs["keepdims"]) / n)]


def _variance_ref(xs, attrs):
    axes = normalize_axes(attrs["axes"], xs[0].ndim, "variance")
    with np.errstate(all="ignore"):
        return [np.asarray(np.var(xs[0], axis=axes, keepdims=attrs["keepdims"],
                                  ddof=attrs["correction"]))]


def _moment_decompose(op, second):
    def decompose(b, inputs, attrs):
        x0 = inputs[0]
        cdt = compute_dtype(x0.dtype)
        x = _to(b, x0, cdt)
        axes = normalize_axes(attrs["axes"], x.rank, op)
        n = _count(op, x.shape, axes)
        if n == 0:  # moments of nothing are nan (as in NumPy and torch): no kernel reads x
            shape = reduced_shape(x.shape, axes, attrs["keepdims"])
            return [_to(b, _scalar(b, math.nan, cdt, shape), x0.dtype)]
        m = _mean_keep(b, x, axes, n)
        if second:
            d = b.op("sub", x, _bcast(b, m, x.shape))
            s = b.op("reduce_sum", b.op("mul", d, d), axes=axes, keepdims=True)
            m = b.op("div", s, _scalar(b, n - attrs["correction"], cdt, s.shape))
        if not attrs["keepdims"]:
            m = b.op("reshape", m, shape=reduced_shape(x.shape, axes, False))
        return [_to(b, m, x0.dtype)]
    return decompose


_composite("mean", ("x",), _moment_infer("mean"), _mean_ref, _moment_decompose("mean", False),
           _MOMENT_ATTRS, "sum(x) / n over axes (empty: nan)")
_composite("variance", ("x",), _moment_infer("variance"), _variance_ref,
           _moment_decompose("variance", True),
           _MOMENT_ATTRS + (AttrSpec("correction", "int", 0, doc="divide by n - correction"),),
           "sum((x - mean)^2) / (n - correction) over axes (two-pass)")


# -- linear --------------------------------------------------------------------

def _linear_infer(op):
    def infer(types, attrs):
        x, w = types[0], types[1]
        _float_operands(op, types)
        if x.rank < 1 or w.rank != 2 or w.shape[1] != x.shape[-1]:
            raise ShapeError(f"{op}: x {list(x.shape)} and weight {list(w.shape)} do not match",
                             hint="weight is [out_features, in_features] with in_features = "
                                  "x.shape[-1], like torch.nn.Linear")
        if len(types) == 3 and types[2].shape != (w.shape[0],):
            raise ShapeError(f"{op}: bias has shape {list(types[2].shape)}, expected "
                             f"[{w.shape[0]}]", hint="bias has shape [out_features]")
        return [x.with_shape(x.shape[:-1] + (w.shape[0],))]
    return infer


def _linear_ref(xs, attrs):
    y = np.matmul(xs[0], xs[1].T)
    return [y + xs[2] if len(xs) == 3 else y]


def _linear_decompose(b, inputs, attrs):
    x, w = inputs[0], inputs[1]
    y = b.op("dot_general", x, w, lhs_contracting=(x.rank - 1,), rhs_contracting=(1,))
    if len(inputs) == 3:
        y = b.op("add", y, _bcast(b, inputs[2], y.shape))
    return [y]


_composite("linear", ("x", "weight"), _linear_infer("linear"), _linear_ref, _linear_decompose,
           doc="x @ weight.T with weight [out, in] (torch.nn.functional.linear)", ulps=0.5)
_composite("linear_bias", ("x", "weight", "bias"), _linear_infer("linear_bias"), _linear_ref,
           _linear_decompose, doc="x @ weight.T + bias with weight [out, in], bias [out]",
           ulps=1.0)


# -- rotary embedding ----------------------------------------------------------

def _rotary_infer(types, attrs):
    x, cos, sin = types
    _float_operands("rotary_embedding", types)
    if x.rank < 3:
        raise ShapeError(f"rotary_embedding: x has shape {list(x.shape)}",
                         hint="x is [..., S, H, D] (rank >= 3)")
    s, d = x.shape[-3], x.shape[-1]
    if not isinstance(d, int) or d % 2:
        raise ShapeError(f"rotary_embedding: head dim {d} is not even",
                         hint="rotate_half splits the head dim in two halves")
    for name, t in (("cos", cos), ("sin", sin)):
        if t.shape != (s, d):
            raise ShapeError(f"rotary_embedding: {name} has shape {list(t.shape)}, expected "
                             f"[{s}, {d}] for x {list(x.shape)}", hint="cos/sin are [S, D]")
    return [x]


def _rotate_half_np(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def _rotary_ref(xs, attrs):
    x, cos, sin = xs
    return [x * cos[:, None, :] + _rotate_half_np(x) * sin[:, None, :]]


def _rotary_decompose(b, inputs, attrs):
    x0 = inputs[0]
    cdt = compute_dtype(x0.dtype)
    x, cos, sin = (_to(b, v, cdt) for v in inputs)
    last, d = x.rank - 1, x.shape[-1]
    half = d // 2
    lo = b.op("slice", x, starts=(0,), stops=(half,), steps=(1,), axes=(last,))
    hi = b.op("slice", x, starts=(half,), stops=(d,), steps=(1,), axes=(last,))
    rotated = b.op("concat", b.op("neg", hi), lo, axis=last)

    def spread(t):  # [S, D] -> [S, 1, D] -> x.shape
        return _bcast(b, b.op("reshape", t, shape=(t.shape[0], 1, d)), x.shape)

    y = b.op("add", b.op("mul", x, spread(cos)), b.op("mul", rotated, spread(sin)))
    return [_to(b, y, x0.dtype)]


_composite("rotary_embedding", ("x", "cos", "sin"), _rotary_infer, _rotary_ref,
           _rotary_decompose, doc="x * cos + rotate_half(x) * sin; x [..., S, H, D], cos/sin "
                                  "[S, D]; rotate_half(x) = concat(-x2, x1) of the two halves",
           ulps=1.0)


# -- attention -----------------------------------------------------------------

def _attention_infer(op):
    def infer(types, attrs):
        q, k, v = types[:3]
        _float_operands(op, types[:3])
        if q.rank != 4 or k.rank != 4 or v.rank != 4:
            raise ShapeError(f"{op}: q {list(q.shape)}, k {list(k.shape)}, v {list(v.shape)} "
                             f"must be rank 4", hint="q [B, Hq, S, D], k/v [B, Hkv, T, D]")
        (bq, hq, s, d), (bk, hk, t, dk), (bv, hv, tv, dv) = q.shape, k.shape, v.shape
        if not (bq == bk == bv and hk == hv and t == tv and d == dk):
            raise ShapeError(f"{op}: q {list(q.shape)}, k {list(k.shape)}, v {list(v.shape)} "
                             f"disagree", hint="q [B, Hq, S, D], k [B, Hkv, T, D], "
                                               "v [B, Hkv, T, Dv]")
        if not hk or hq % hk:
            raise ShapeError(f"{op}: {hq} query heads are not a multiple of {hk} kv heads",
                             hint="grouped-query attention needs Hq % Hkv == 0")
        if t == 0:
            raise ShapeError(f"{op}: the key length T is 0", hint="attend to at least one key")
        if len(types) == 4:
            mask = types[3]
            require_dtype(op, mask, FLOAT_DTYPES, "a float type (additive mask)")
            broadcast_shape_check(op, mask.shape, (bq, hq, s, t))
        return [TensorType(q.dtype, (bq, hq, s, dv))]
    return infer


def _attention_ref(xs, attrs):
    q, k, v = xs[:3]
    group = q.shape[1] // k.shape[1]
    k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
    scale = attrs["scale"] if attrs["scale"] is not None else 1.0 / math.sqrt(q.shape[-1])
    scores = np.matmul(q, np.swapaxes(k, -1, -2)) * scale
    if len(xs) == 4:
        scores = scores + xs[3]
    if attrs.get("causal"):
        s, t = scores.shape[-2:]
        scores = np.where(np.tril(np.ones((s, t), bool)), scores, -np.inf)
    p = _softmax_ref([scores], {"axis": -1})[0]
    return [np.matmul(p, v)]


def _attention_decompose(b, inputs, attrs):
    q, k, v = inputs[:3]
    (bsz, hq, s, d), hk, t, dv = q.shape, k.shape[1], k.shape[2], v.shape[3]
    group = hq // hk
    cdt = compute_dtype(q.dtype)
    scale = attrs["scale"] if attrs["scale"] is not None else 1.0 / math.sqrt(d)
    # Group query heads under their kv head instead of repeating k and v.
    qg = b.op("reshape", q, shape=(bsz, hk, group * s, d))
    scores = b.op("dot_general", qg, k, lhs_contracting=(3,), rhs_contracting=(3,),
                  lhs_batch=(0, 1), rhs_batch=(0, 1), out_dtype=cdt)
    shape = (bsz, hq, s, t)
    scores = b.op("reshape", scores, shape=shape)
    scores = b.op("mul", scores, _scalar(b, scale, cdt, shape))
    if len(inputs) == 4:
        scores = b.op("add", scores, _bcast(b, _to(b, inputs[3], cdt), shape))
    if attrs.get("causal"):
        row = b.op("iota", shape=(s, t), dimension=0, dtype=i32)
        col = b.op("iota", shape=(s, t), dimension=1, dtype=i32)
        keep = _bcast(b, b.op("ge", row, col), shape)
        scores = b.op("select", keep, scores, _scalar(b, -math.inf, cdt, shape))
    p = _to(b, b.op("softmax", scores, axis=-1), q.dtype)
    p = b.op("reshape", p, shape=(bsz, hk, group * s, t))
    out = b.op("dot_general", p, v, lhs_contracting=(3,), rhs_contracting=(2,),
               lhs_batch=(0, 1), rhs_batch=(0, 1))
    return [b.op("reshape", out, shape=(bsz, hq, s, dv))]


_SCALE = AttrSpec("scale", "float", None, doc="score scale; default 1/sqrt(D)")
_composite("scaled_dot_product_attention", ("q", "k", "v"),
           _attention_infer("scaled_dot_product_attention"), _attention_ref,
           _attention_decompose,
           (AttrSpec("causal", "bool", False, doc="lower-triangular mask (key j <= query i)"),
            _SCALE),
           "softmax(q k^T * scale [+ causal mask]) v with grouped-query heads; scores and "
           "softmax in f32 for 16-bit inputs, probabilities cast back before p @ v")
_composite("sdpa_masked", ("q", "k", "v", "mask"), _attention_infer("sdpa_masked"),
           _attention_ref, _attention_decompose, (_SCALE,),
           "softmax(q k^T * scale + mask) v; mask is additive (float, -inf hides a key) and "
           "broadcasts to [B, Hq, S, T]. A fully masked row (every key -inf) is NaN, as the "
           "softmax of no keys is 0/0 (torch >= 2.5 returns 0 there): mask with a large "
           "finite negative (finfo.min) to get a defined row")
