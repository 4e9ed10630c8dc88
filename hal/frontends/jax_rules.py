"""Conversion rules for JAX primitives, registered into `jax_import.JAX_RULES`.

Each rule takes the JaxContext, the operands (hal Values, or NumPy arrays for
literals and folded constants) and the equation's params, and returns the
result Value(s). JAX lets scalars and size-1 dims broadcast implicitly in some
binary ops; the rules broadcast explicitly to the result shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hal.dtypes import bool_, dtype
from hal.errors import UnsupportedError
from hal.frontends.jax_import import JaxContext, rule
from hal.ir.graph import Value

# -- elementwise ------------------------------------------------------------------

_UNARY = {"neg": "neg", "exp": "exp", "exp2": "exp2", "log": "log", "log1p": "log1p",
          "expm1": "expm1", "tanh": "tanh", "logistic": "sigmoid", "erf": "erf",
          "rsqrt": "rsqrt", "sqrt": "sqrt", "sin": "sin", "cos": "cos", "abs": "abs",
          "floor": "floor", "ceil": "ceil", "sign": "sign"}


def _unary(hal_op: str):
    def convert(cx: JaxContext, x: Any, **params: Any) -> Value:
        return cx.op(hal_op, cx.tensor(x, cx.out_dtype()))
    return convert


for _p, _h in _UNARY.items():
    rule(_p)(_unary(_h))


@rule("round")
def _round(cx: JaxContext, x: Any, rounding_method: Any = 1) -> Value:
    if int(rounding_method) != 1:  # AWAY_FROM_ZERO = 0, TO_NEAREST_EVEN = 1
        raise UnsupportedError("round away from zero",
                               hint="use jnp.round (round half to even)")
    return cx.op("round", cx.tensor(x))


@rule("stop_gradient", "copy", "copy_p", "optimization_barrier", "sharding_constraint",
      "reduce_precision")
def _identity(cx: JaxContext, *xs: Any, **params: Any) -> Any:
    return list(xs) if len(xs) > 1 else xs[0]


@rule("not")
def _not(cx: JaxContext, x: Any) -> Value:
    v = cx.tensor(x)
    if v.dtype == bool_:
        return cx.op("logical_not", v)
    return cx.op("bitwise_xor", v, cx.tensor(np.asarray(-1), v.dtype, v.shape))


@rule("square")
def _square(cx: JaxContext, x: Any) -> Value:
    v = cx.tensor(x)
    return cx.op("mul", v, v)


@rule("integer_pow")
def _integer_pow(cx: JaxContext, x: Any, y: int) -> Value:
    v = cx.tensor(x)
    if y == 0:
        return cx.tensor(np.asarray(1), v.dtype, v.shape)
    base = v if y > 0 else cx.op("reciprocal", v)
    acc, p, n = None, base, abs(y)
    while n:  # square-and-multiply, as XLA expands integer_pow
        if n & 1:
            acc = p if acc is None else cx.op("mul", acc, p)
        n >>= 1
        if n:
            p = cx.op("mul", p, p)
    return acc


_BINARY = {"add": "add", "sub": "sub", "mul": "mul", "div": "div", "rem": "remainder",
           "max": "maximum", "min": "minimum", "pow": "pow"}


def _binary(hal_op: str):
    def convert(cx: JaxContext, a: Any, b: Any, **params: Any) -> Value:
        av, bv = cx.same(a, b, dt=cx.out_dtype())
        return cx.op(hal_op, av, bv)
    return convert


for _p, _h in _BINARY.items():
    rule(_p)(_binary(_h))


def _logic(logical: str, bitwise: str):
    def convert(cx: JaxContext, a: Any, b: Any) -> Value:
        av, bv = cx.same(a, b, dt=cx.out_dtype())
        return cx.op(logical if av.dtype == bool_ else bitwise, av, bv)
    return convert


rule("and")(_logic("logical_and", "bitwise_and"))
rule("or")(_logic("logical_or", "bitwise_or"))
rule("xor")(_logic("logical_xor", "bitwise_xor"))


def _compare(hal_op: str):
    def convert(cx: JaxContext, a: Any, b: Any) -> Value:
        av, bv = cx.same(a, b)
        return cx.op(hal_op, av, bv)
    return convert


for _p in ("eq", "ne", "lt", "le", "gt", "ge"):
    rule(_p)(_compare(_p))


@rule("select_n")
def _select_n(cx: JaxContext, pred: Any, *cases: Any) -> Value:
    dt, shape = cx.out_dtype(), cx.out_shape()
    vals = [cx.tensor(c, dt, shape) for c in cases]
    p = cx.tensor(pred, None, shape)
    if p.dtype == bool_:
        return cx.op("select", p, vals[1], vals[0])
    out = vals[0]
    for k in range(1, len(vals)):
        hit = cx.op("eq", p, cx.tensor(np.asarray(k), p.dtype, shape))
        out = cx.op("select", hit, vals[k], out)
    return out


@rule("clamp")
def _clamp(cx: JaxContext, lo: Any, x: Any, hi: Any) -> Value:
    xv, lov, hiv = cx.same(x, lo, hi, dt=cx.out_dtype())
    return cx.op("minimum", cx.op("maximum", xv, lov), hiv)


@rule("convert_element_type")
def _convert(cx: JaxContext, x: Any, new_dtype: Any = None, **params: Any) -> Value:
    return cx.tensor(x, dtype(np.dtype(new_dtype)))


# -- shapes -----------------------------------------------------------------------

@rule("broadcast_in_dim")
def _broadcast_in_dim(cx: JaxContext, x: Any, *dyn: Any, shape: Any,
                      broadcast_dimensions: Any, **params: Any) -> Value:
    v = cx.tensor(x)
    dims = tuple(broadcast_dimensions)
    if list(dims) != sorted(dims):
        order = sorted(range(len(dims)), key=lambda i: dims[i])
        v = cx.op("transpose", v, perm=tuple(order))
        dims = tuple(sorted(dims))
    inter = [1] * len(shape)
    for src, d in zip(v.shape, dims, strict=True):
        inter[d] = src
    return cx.bcast(cx.reshape(v, inter), tuple(shape))


@rule("reshape", "squeeze", "expand_dims")
def _reshape(cx: JaxContext, x: Any, *dyn: Any, dimensions: Any = None, **params: Any) -> Value:
    v = cx.tensor(x)
    if dimensions is not None and cx.eqn.primitive.name == "reshape":
        v = cx.op("transpose", v, perm=tuple(dimensions))
    return cx.reshape(v, cx.out_shape())


@rule("transpose")
def _transpose(cx: JaxContext, x: Any, permutation: Any) -> Value:
    return cx.op("transpose", cx.tensor(x), perm=tuple(permutation))


@rule("slice")
def _slice(cx: JaxContext, x: Any, start_indices: Any, limit_indices: Any,
           strides: Any = None) -> Value:
    v = cx.tensor(x)
    steps = tuple(strides) if strides else (1,) * v.rank
    return cx.op("slice", v, starts=tuple(start_indices), stops=tuple(limit_indices),
                 steps=steps)


@rule("dynamic_slice")
def _dynamic_slice(cx: JaxContext, x: Any, *starts: Any, slice_sizes: Any) -> Value:
    v = cx.tensor(x)
    begins = []
    for axis, s in enumerate(starts[:v.rank]):
        if isinstance(s, Value):
            raise UnsupportedError("dynamic_slice with a start index computed at run time",
                                   hint="use static (Python int) start indices")
        # XLA clamps the start so the slice stays in bounds
        size = slice_sizes[axis]
        begins.append(int(min(max(int(np.asarray(s)), 0), v.shape[axis] - size)))
    stops = tuple(b + n for b, n in zip(begins, slice_sizes, strict=True))
    return cx.op("slice", v, starts=tuple(begins), stops=stops, steps=(1,) * v.rank)


@rule("concatenate")
def _concatenate(cx: JaxContext, *xs: Any, dimension: int) -> Value:
    dt = cx.out_dtype()
    vals = [cx.tensor(x, dt) for x in xs]
    return vals[0] if len(vals) == 1 else cx.op("concat", *vals, axis=dimension)


@rule("split")
def _split(cx: JaxContext, x: Any, sizes: Any, axis: int) -> list[Value]:
    v = cx.tensor(x)
    outs, start = [], 0
    for n in sizes:
        outs.append(cx.op("slice", v, starts=(start,), stops=(start + n,), steps=(1,),
                          axes=(axis,)))
        start += n
    return outs


@rule("pad")
def _pad(cx: JaxContext, x: Any, value: Any, padding_config: Any) -> Value:
    if isinstance(value, Value):
        raise UnsupportedError("pad with a padding value computed at run time",
                               hint="pad with a constant")
    if any(i != 0 or lo < 0 or hi < 0 for lo, hi, i in padding_config):
        raise UnsupportedError("pad with interior or negative padding",
                               hint="use slice and concatenate instead")
    return cx.op("pad", cx.tensor(x), low=tuple(p[0] for p in padding_config),
                 high=tuple(p[1] for p in padding_config), value=float(np.asarray(value)))


@rule("iota")
def _iota(cx: JaxContext, dtype: Any = None, shape: Any = None, dimension: int = 0,
          **params: Any) -> Value:
    return cx.op("iota", shape=tuple(shape), dimension=dimension, dtype=cx.out_dtype())


# -- reductions and scans ---------------------------------------------------------

def _reduce(hal_op: str, to_bool: bool = False):
    def convert(cx: JaxContext, x: Any, axes: Any, **params: Any) -> Value:
        v = cx.tensor(x)
        if to_bool and v.dtype != bool_:
            raise UnsupportedError("bitwise reductions on integers",
                                   hint="reduce booleans, or compare first")
        return cx.op(hal_op, v, axes=tuple(axes), keepdims=False) if axes else v
    return convert


for _p, _h in {"reduce_sum": "reduce_sum", "reduce_max": "reduce_max",
               "reduce_min": "reduce_min", "reduce_prod": "reduce_prod"}.items():
    rule(_p)(_reduce(_h))
rule("reduce_and")(_reduce("reduce_all", True))
rule("reduce_or")(_reduce("reduce_any", True))


def _arg(hal_op: str):
    def convert(cx: JaxContext, x: Any, axes: Any, index_dtype: Any) -> Value:
        return cx.op(hal_op, cx.tensor(x), axis=int(axes[0]),
                     dtype=dtype(np.dtype(index_dtype)))
    return convert


rule("argmax")(_arg("argmax"))
rule("argmin")(_arg("argmin"))


@rule("cumsum")
def _cumsum(cx: JaxContext, x: Any, axis: int, reverse: bool = False) -> Value:
    return cx.op("cumsum", cx.tensor(x), axis=axis, reverse=bool(reverse))


# -- contraction and gather ---------------------------------------------------------

@rule("dot_general")
def _dot_general(cx: JaxContext, a: Any, b: Any, dimension_numbers: Any,
                 preferred_element_type: Any = None, **params: Any) -> Value:
    (lc, rc), (lb, rb) = dimension_numbers
    av, bv = cx.tensor(a), cx.tensor(b)
    if av.dtype != bv.dtype:
        common = dtype(np.promote_types(av.dtype.np_dtype, bv.dtype.np_dtype))
        av, bv = cx.cast(av, common), cx.cast(bv, common)
    out = cx.out_dtype()
    return cx.op("dot_general", av, bv, lhs_contracting=tuple(lc), rhs_contracting=tuple(rc),
                 lhs_batch=tuple(lb), rhs_batch=tuple(rb),
                 out_dtype=None if out == av.dtype else out)


@rule("gather")
def _gather(cx: JaxContext, operand: Any, indices: Any, dimension_numbers: Any,
            slice_sizes: Any, **params: Any) -> Value:
    """The jnp.take / x[idx] pattern: one collapsed axis, full slices elsewhere."""
    x, idx = cx.tensor(operand), cx.tensor(indices)
    dn = dimension_numbers
    ok = (len(dn.collapsed_slice_dims) == 1 and tuple(dn.start_index_map) ==
          tuple(dn.collapsed_slice_dims) and not dn.operand_batching_dims
          and idx.rank >= 1 and idx.shape[-1] == 1)
    axis = dn.collapsed_slice_dims[0] if ok else 0
    nb = idx.rank - 1
    ok = ok and all(s == (1 if i == axis else x.shape[i]) for i, s in enumerate(slice_sizes))
    expect = tuple(range(axis)) + tuple(range(axis + nb, nb + x.rank - 1))
    if not ok or tuple(dn.offset_dims) != expect:
        raise UnsupportedError(f"gather with dimension numbers {dn} and slice sizes "
                               f"{tuple(slice_sizes)}",
                               hint="hal imports the jnp.take / x[indices] pattern only")
    return cx.op("gather", x, cx.reshape(idx, idx.shape[:-1]), axis=axis)


@rule("erfc")
def _erfc(cx: JaxContext, x: Any) -> Value:
    v = cx.tensor(x, cx.out_dtype())
    return cx.op("sub", cx.tensor(np.asarray(1), v.dtype, v.shape), cx.op("erf", v))


@rule("stack")
def _stack(cx: JaxContext, *xs: Any, axis: int) -> Value:
    dt, shape = cx.out_dtype(), cx.out_shape()
    axis %= len(shape)
    parts = [cx.reshape(cx.tensor(x, dt), shape[:axis] + (1,) + shape[axis + 1:]) for x in xs]
    return parts[0] if len(parts) == 1 else cx.op("concat", *parts, axis=axis)


@rule("tile")
def _tile(cx: JaxContext, x: Any, reps: Any) -> Value:
    v = cx.tensor(x)
    reps = tuple(int(r) for r in reps)
    src = (1,) * (len(reps) - v.rank) + tuple(v.shape)
    spread = tuple(d for s in src for d in (1, s))
    inter = tuple(d for r, s in zip(reps, src, strict=True) for d in (r, s))
    return cx.reshape(cx.op("broadcast_to", cx.reshape(v, spread), shape=inter), cx.out_shape())
