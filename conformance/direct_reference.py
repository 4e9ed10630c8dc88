"""Direct float64 formulas for the composite ops, written independently of their
decompositions (issue 21), and the conformance check against them.

The error model's reference evaluates a composite through its decomposition into
primitives (hal.conformance.tolerance): a wrong constant or a wrong step in the
decomposition moves the kernel and the reference together and no bound can see
it. Each formula here is a second, independent statement of the op: other
algebraic forms where one exists (gelu-tanh as x * sigmoid(2z), gelu-erf through
erfc, softmax through log-sum-exp, rotate_half through a signed roll,
attention head by head with explicit key masks), constants spelled out as
numbers, nothing imported from hal.ops.

`check_direct(graph, bounds, outputs)`: for every graph output produced by a
composite node, the device's value must lie within twice the error model's
half-width (before rounding, of the last op that computes the value; plus one ulp
of the output dtype) of the direct formula evaluated on
the reference's (rounded) inputs of that node: the device may be off the
decomposition's exact value by one half-width, and the decomposition's own
rounded steps off the true function by at most another (each rounding is inside
the local error terms); the ulp covers the final rounding to storage, which an
interval that rounds to a single value does not show.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from hal.dtypes import f32, round_to

Direct = Callable[[list[np.ndarray], dict], np.ndarray]
DIRECT: dict[str, Direct] = {}

SQRT_2_OVER_PI = 0.7978845608028654    # sqrt(2 / pi)
GELU_TANH_CUBIC = 0.044715             # Hendrycks & Gimpel 2016, eq. for GELU(tanh)
_erfc = np.frompyfunc(math.erfc, 1, 1)


def register_direct(op: str) -> Callable[[Direct], Direct]:
    """Register the direct formula of composite `op` (inputs float64, attrs checked, plus
    "_dtype": the dtype of its first input)."""
    def deco(fn: Direct) -> Direct:
        DIRECT[op] = fn
        return fn

    return deco


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-z) without cancellation on either side (e^z / (1 + e^z) below 0)."""
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


@register_direct("gelu")
def gelu(xs, attrs):
    x = _f64(xs[0])
    if attrs.get("approximate", "none") == "tanh":
        return x * _sigmoid(2.0 * SQRT_2_OVER_PI * (x + GELU_TANH_CUBIC * x * x * x))
    return 0.5 * x * _erfc(-x / math.sqrt(2.0)).astype(np.float64)   # 1 + erf(t) = erfc(-t)


@register_direct("silu")
def silu(xs, attrs):
    x = _f64(xs[0])
    return x * _sigmoid(x)


def _trailing(x: np.ndarray, axis: int) -> tuple[int, ...]:
    return tuple(range(axis % x.ndim, x.ndim))


@register_direct("layer_norm")
def layer_norm(xs, attrs):
    x, w, b = (_f64(a) for a in xs)
    axes = _trailing(x, attrs.get("axis", -1))
    mu = x.mean(axis=axes, keepdims=True)
    var = np.square(x - mu).mean(axis=axes, keepdims=True)
    return (x - mu) * (1.0 / np.sqrt(var + attrs.get("eps", 1e-5))) * w + b


@register_direct("rms_norm")
def rms_norm(xs, attrs):
    x, w = (_f64(a) for a in xs)
    n = x.shape[-1]
    rms = np.linalg.norm(x, axis=-1, keepdims=True) / math.sqrt(n)
    return x * w / np.sqrt(rms * rms + attrs.get("eps", 1e-6))


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    return np.logaddexp.reduce(x, axis=axis, keepdims=True)


@register_direct("log_softmax")
def log_softmax(xs, attrs):
    x = _f64(xs[0])
    with np.errstate(invalid="ignore"):
        return x - _logsumexp(x, attrs.get("axis", -1))


@register_direct("softmax")
def softmax(xs, attrs):
    with np.errstate(invalid="ignore"):
        return np.exp(log_softmax(xs, attrs))


@register_direct("rotary_embedding")
def rotary_embedding(xs, attrs):
    x, cos, sin = (_f64(a) for a in xs)
    half = x.shape[-1] // 2
    sign = np.concatenate([-np.ones(half), np.ones(half)])
    rot = np.roll(x, half, axis=-1) * sign            # rotate_half: (-x2, x1)
    return x * cos[:, None, :] + rot * sin[:, None, :]


def _attention(q, k, v, scale, causal: bool, mask=None, dtype=None) -> np.ndarray:
    """Head by head. `dtype` 16-bit or fp8: the op's probabilities are rounded to it before
    P @ V (its documented semantics: scores and softmax in f32, P cast back)."""
    b, hq, s, d = q.shape
    hk, t = k.shape[1], k.shape[2]
    out = np.empty((b, hq, s, v.shape[-1]))
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    qi, kj = np.arange(s)[:, None], np.arange(t)[None, :]
    for bi in range(b):
        for h in range(hq):
            kv = h // (hq // hk)                          # the kv head this query head reads
            sc = np.einsum("sd,td->st", q[bi, h], k[bi, kv]) * scale
            if mask is not None:
                sc = sc + np.broadcast_to(mask, (b, hq, s, t))[bi, h]
            if causal:
                sc = np.where(kj <= qi, sc, -np.inf)
            with np.errstate(invalid="ignore"):
                p = np.exp(sc - _logsumexp(sc, -1))
            if dtype is not None and dtype.is_float and dtype.bits < 32:
                p = round_to(round_to(p, f32), dtype)
            out[bi, h] = np.einsum("st,te->se", p, v[bi, kv])
    return out


@register_direct("scaled_dot_product_attention")
def sdpa(xs, attrs):
    q, k, v = (_f64(a) for a in xs)
    return _attention(q, k, v, attrs.get("scale"), bool(attrs.get("causal")),
                      dtype=attrs.get("_dtype"))


@register_direct("sdpa_masked")
def sdpa_masked(xs, attrs):
    q, k, v, m = (_f64(a) for a in xs)
    return _attention(q, k, v, attrs.get("scale"), False, m, attrs.get("_dtype"))


@register_direct("mean")
def mean(xs, attrs):
    x = _f64(xs[0])
    axes = tuple(range(x.ndim)) if attrs.get("axes") is None else \
        tuple(a % x.ndim for a in attrs["axes"])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(x.sum(axis=axes, keepdims=attrs.get("keepdims", False)) /
                          math.prod(x.shape[a] for a in axes))


@register_direct("variance")
def variance(xs, attrs):
    x = _f64(xs[0])
    axes = tuple(range(x.ndim)) if attrs.get("axes") is None else \
        tuple(a % x.ndim for a in attrs["axes"])
    n = math.prod(x.shape[a] for a in axes)
    mu = x.sum(axis=axes, keepdims=True) / n
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.square(x - mu).sum(axis=axes, keepdims=attrs.get("keepdims", False))
                          / (n - attrs.get("correction", 0)))


@register_direct("linear")
@register_direct("linear_bias")
def linear(xs, attrs):
    """x @ w.T (+ b); in a 16-bit or fp8 dtype the product is stored (rounded) before the
    bias is added, as the op defines it."""
    x, w = _f64(xs[0]), _f64(xs[1])
    y = np.einsum("...i,oi->...o", x, w)
    dt = attrs.get("_dtype")
    if len(xs) == 3 and dt is not None and dt.is_float and dt.bits < 32:
        y = round_to(y, dt)
    return y + _f64(xs[2]) if len(xs) == 3 else y


# --------------------------------------------------------------------------- the check

@dataclass
class DirectComparison:
    op: str
    max_dev: float        # max |device - direct| over checked elements
    allowed: float        # the largest allowance at any element (2 x the bound's half-width)
    bad: int
    checked: int
    worst: dict

    @property
    def ok(self) -> bool:
        return self.bad == 0

    def to_dict(self) -> dict:
        return {"op": self.op, "max_dev": self.max_dev, "allowed": self.allowed,
                "bad": self.bad, "checked": self.checked, "worst": self.worst,
                "ok": self.ok}


def _computing_value(prim, name: str) -> str:
    """The value whose op last computes `name`: `name` itself, or the source of the
    reshapes it is made by (attention's output is a reshape of its P @ V dot)."""
    producer = {o.name: n for n in prim.nodes for o in n.outputs}
    n = producer.get(name)
    while n is not None and n.op == "reshape":
        name = n.inputs[0].name
        n = producer.get(name)
    return name


def _computed_width(prim, bounds: Mapping, name: str) -> np.ndarray:
    """The unrounded half-width of the last op that computes `name`, in `name`'s shape."""
    shape = np.shape(bounds[name].ref)
    src = bounds[_computing_value(prim, name)]
    return np.zeros(shape) if src.delta is None else np.reshape(np.broadcast_to(
        src.delta, np.shape(src.ref)), shape)


def _checked_nodes(graph):
    """The nodes of `graph` that check_direct may check: a composite with a direct formula
    whose output is a graph output."""
    out_names = {v.name for v in graph.outputs}
    return [n for n in graph.nodes if n.op in DIRECT and n.outputs[0].name in out_names]


def values_read(graph, prim) -> set[str]:
    """The names of the values whose Bounds check_direct(graph, prim, ...) reads (for
    graph_bounds' `keep`)."""
    names: set[str] = set()
    for node in _checked_nodes(graph):
        o = node.outputs[0].name
        names.update(v.name for v in node.inputs)
        names.update((o, _computing_value(prim, o)))
    return names


def check_direct(graph, prim, bounds: Mapping, outputs: Mapping[str, np.ndarray]
                 ) -> dict[str, DirectComparison]:
    """Graph outputs produced by a composite with a direct formula, against it (module
    docstring). `prim`, `bounds`: hal.conformance.tolerance.graph_bounds' primitive graph
    and per-value bounds (the composite's inputs keep their names in the primitive graph)."""
    from hal.dtypes import ulp
    from hal.ops import get_op
    from hal.reference import widen

    res: dict[str, DirectComparison] = {}
    for node in _checked_nodes(graph):
        fn = DIRECT[node.op]
        o = node.outputs[0]
        if o.name not in outputs or any(v.name not in bounds for v in node.inputs) or \
                o.name not in bounds:
            continue
        b = bounds[o.name]
        if not b.dtype.is_float:
            continue
        attrs = {**get_op(node.op).check_attrs(node.attrs), "_dtype": node.inputs[0].dtype}
        with np.errstate(all="ignore"):
            direct = _f64(fn([_f64(bounds[v.name].ref) for v in node.inputs], attrs))
            act = _f64(widen(np.asarray(outputs[o.name]), b.dtype))
            half = np.maximum(_f64(b.hi) - _f64(b.exact), _f64(b.exact) - _f64(b.lo))
            width = _computed_width(prim, bounds, o.name)
            half = np.maximum(half, np.nan_to_num(width, nan=np.inf))
            # plus one ulp of the output dtype: the reference and the device each round a
            # computed result to storage (an interval that rounds to one value has no width)
            allowed = 2.0 * half + ulp(np.nan_to_num(direct), b.dtype) + \
                2.0 ** -40 * np.abs(direct)
            dev = np.abs(act - direct)
        use = ~b.free & np.isfinite(direct) & np.isfinite(allowed)
        bad = use & ~(dev <= allowed)   # NaN device values where direct is finite: bad
        worst = {}
        if bad.any():
            i = np.unravel_index(int(np.argmax(np.where(bad, np.nan_to_num(dev, nan=np.inf),
                                                        -1.0))), bad.shape)
            worst = {"index": [int(x) for x in i], "actual": float(act[i]),
                     "direct": float(direct[i]), "allowed": float(allowed[i])}
        d_use = dev[use]
        res[o.name] = DirectComparison(
            node.op, float(np.nan_to_num(d_use, nan=np.inf).max()) if d_use.size else 0.0,
            float(allowed[use].max()) if use.any() else 0.0, int(bad.sum()),
            int(use.sum()), worst)
    return res
