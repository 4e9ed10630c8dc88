"""ATen converters for data-dependent writes and reorderings, decomposed into primitives.

- flip, roll, diagonal, unfold: gathers with indices built from iota, so they
  stay movement/gather kernels;
- scatter, scatter_add, scatter_reduce, index_put, index_copy, index_add (the
  KV-cache update): a one-hot match `index == iota` along the written axis,
  then a select and a reduction over the candidates (sum, prod, amax, amin,
  mean; a plain write takes the last matching candidate, as torch's CPU
  kernels do). The work is O(candidates x axis length), which fits cache
  updates; large scatters (hal.frontends.scatter_network.use_sorted) sort the
  indices instead and combine runs with a segmented scan, O(m log^2 m + n log m);
- sort, argsort, topk: each element's rank is counted by comparisons
  (stable: ties keep their order; NaN sorts as the largest value, as in
  torch), and the rank-th element is found by a one-hot reduction; long rows
  go through a bitonic network instead (hal.frontends.sort_network, O(n log^2 n)).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from hal.dtypes import bool_, i64
from hal.errors import UnsupportedError
from hal.frontends.scatter_network import scatter_sorted_last, use_sorted
from hal.frontends.sort_network import NETWORK_MIN, bitonic_sort_last
from hal.frontends.torch_convert import TorchContext, converts
from hal.ir.graph import Value


def _iota(cx: TorchContext, shape: tuple[int, ...], dim: int) -> Value:
    return cx.op("iota", shape=tuple(shape), dimension=dim, dtype=i64)


def _k(cx: TorchContext, v: Any, like: Value) -> Value:
    return cx.scalar(v, like.dtype, like.shape)


def _move_last(cx: TorchContext, x: Value, dim: int) -> tuple[Value, tuple[int, ...]]:
    perm = tuple(a for a in range(x.rank) if a != dim) + (dim,)
    return (x if perm == tuple(range(x.rank)) else cx.op("transpose", x, perm=perm)), perm


def _restore(cx: TorchContext, y: Value, perm: tuple[int, ...]) -> Value:
    if perm == tuple(range(len(perm))):
        return y
    return cx.op("transpose", y, perm=tuple(perm.index(a) for a in range(len(perm))))


def _wrap(cx: TorchContext, idx: Value, size: int) -> Value:
    idx = cx.cast(idx, i64)
    neg = cx.op("lt", idx, _k(cx, 0, idx))
    return cx.op("select", neg, cx.op("add", idx, _k(cx, size, idx)), idx)


# -- reorderings -------------------------------------------------------------------


@converts("aten.flip")
def _flip(cx: TorchContext, x: Value, dims: Any) -> Value:
    y = x
    for d in sorted({int(d) % max(x.rank, 1) for d in dims}) if x.rank else ():
        n = x.shape[d]
        if n <= 1:
            continue
        rev = cx.op("sub", cx.scalar(n - 1, i64, (n,)), _iota(cx, (n,), 0))
        y = cx.op("gather", y, rev, axis=d)
    return y


@converts("aten.roll")
def _roll(cx: TorchContext, x: Value, shifts: Any, dims: Any = ()) -> Value:
    shifts = [int(s) for s in (shifts if isinstance(shifts, (list, tuple)) else (shifts,))]
    dims = list(dims) if isinstance(dims, (list, tuple)) else [dims]
    if not dims:  # roll the flattened tensor
        flat = cx.reshape(x, (math.prod(x.shape),))
        return cx.reshape(_roll_axis(cx, flat, 0, shifts[0]), x.shape)
    y = x
    for s, d in zip(shifts, dims, strict=True):
        y = _roll_axis(cx, y, int(d) % x.rank, s)
    return y


def _roll_axis(cx: TorchContext, x: Value, d: int, s: int) -> Value:
    n = x.shape[d]
    if n == 0 or s % n == 0:
        return x
    src = cx.op("remainder", cx.op("add", _iota(cx, (n,), 0), cx.scalar(n - s % n, i64, (n,))),
                cx.scalar(n, i64, (n,)))
    return cx.op("gather", x, src, axis=d)


@converts("aten.diagonal", "aten.diagonal_copy")
def _diagonal(cx: TorchContext, x: Value, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Value:
    d1, d2 = dim1 % x.rank, dim2 % x.rank
    rest = [a for a in range(x.rank) if a not in (d1, d2)]
    perm = tuple(rest + [d1, d2])
    xt = x if perm == tuple(range(x.rank)) else cx.op("transpose", x, perm=perm)
    n1, n2 = x.shape[d1], x.shape[d2]
    out_shape = cx.out_shape()
    m = out_shape[-1]
    if m == 0:
        return cx.scalar(0, x.dtype, out_shape)
    r0, c0 = (0, offset) if offset >= 0 else (-offset, 0)
    flat_idx = cx.op("add", cx.op("mul", _iota(cx, (m,), 0), cx.scalar(n2 + 1, i64, (m,))),
                     cx.scalar(r0 * n2 + c0, i64, (m,)))
    lead = tuple(xt.shape[:-2])
    return cx.op("gather", cx.reshape(xt, lead + (n1 * n2,)), flat_idx, axis=len(lead))


@converts("aten.unfold")
def _unfold(cx: TorchContext, x: Value, dim: int, size: int, step: int) -> Value:
    if x.rank == 0:
        return cx.reshape(x, cx.out_shape())
    dim %= x.rank
    out = cx.out_shape()
    windows = out[dim]
    if windows * size == 0:
        return cx.scalar(0, x.dtype, out)
    # index [windows, size] = w * step + j, gathered along dim, window axis in place, size last
    idx = cx.op("add", cx.op("mul", _iota(cx, (windows, size), 0),
                             cx.scalar(step, i64, (windows, size))), _iota(cx, (windows, size), 1))
    g = cx.op("gather", x, idx, axis=dim)   # [..., windows, size, ...]
    perm = tuple(a for a in range(g.rank) if a != dim + 1) + (dim + 1,)
    return cx.op("transpose", g, perm=perm) if perm != tuple(range(g.rank)) else g


# -- scatter family ----------------------------------------------------------------

_FILL = {"sum": 0.0, "add": 0.0, "prod": 1.0, "multiply": 1.0, "mean": 0.0}


def scatter_last(cx: TorchContext, x: Value, idx: Value, src: Value, mode: str,
                 include_self: bool = True) -> Value:
    """Scatter along the last axis: x [..., n], idx and src [..., m] (same leading dims).

    mode: "set" (last match wins), "sum", "prod", "mean", "amax", "amin"."""
    n, m = x.shape[-1], idx.shape[-1]
    lead = tuple(x.shape[:-1])
    if m == 0:
        return x
    if use_sorted(m, n):
        return scatter_sorted_last(cx, x, _wrap(cx, idx, n), src, mode, include_self)
    cand = lead + (m, n)
    hit = cx.op("eq", cx.bcast(cx.reshape(_wrap(cx, idx, n), lead + (m, 1)), cand),
                _iota(cx, cand, len(cand) - 1))
    vals = cx.bcast(cx.reshape(cx.cast(src, x.dtype), lead + (m, 1)), cand)
    axis = len(lead)
    anyhit = cx.op("reduce_any", hit, axes=(axis,), keepdims=False)
    if mode == "set":
        pos = cx.op("select", hit, _iota(cx, cand, axis), cx.scalar(-1, i64, cand))
        last = cx.op("reduce_max", pos, axes=(axis,), keepdims=False)       # [..., n]
        safe = cx.op("maximum", last, cx.scalar(0, i64, last.shape))
        picked = cx.op("take_along_axis", cx.cast(src, x.dtype), safe, axis=axis)
        return cx.op("select", anyhit, picked, x)
    if x.dtype == bool_:
        if mode in ("sum", "amax"):
            red = cx.op("reduce_any", cx.op("logical_and", hit, vals), axes=(axis,))
            return cx.op("logical_or", x, red) if include_self else \
                cx.op("select", anyhit, red, x)
        raise UnsupportedError(f"scatter reduce '{mode}' on bool tensors",
                               hint="cast to an integer type first")
    if mode in ("sum", "mean"):
        red = cx.op("reduce_sum", cx.op("select", hit, vals, cx.scalar(0, x.dtype, cand)),
                    axes=(axis,), keepdims=False)
    elif mode == "prod":
        red = cx.op("reduce_prod", cx.op("select", hit, vals, cx.scalar(1, x.dtype, cand)),
                    axes=(axis,), keepdims=False)
    elif mode in ("amax", "amin"):
        if x.dtype.is_float:
            fill = -math.inf if mode == "amax" else math.inf
        else:
            info = np.iinfo(x.dtype.np_dtype)
            fill = int(info.min if mode == "amax" else info.max)
        red = cx.op("reduce_max" if mode == "amax" else "reduce_min",
                    cx.op("select", hit, vals, cx.scalar(fill, x.dtype, cand)),
                    axes=(axis,), keepdims=False)
    else:
        raise UnsupportedError(f"scatter reduce '{mode}'",
                               hint="sum, prod, mean, amax and amin are supported")
    if mode == "mean":
        count = cx.op("reduce_sum", cx.cast(hit, x.dtype), axes=(axis,), keepdims=False)
        if include_self:
            red = cx.op("add", red, x)
            count = cx.op("add", count, _k(cx, 1, count))
        safe = cx.op("maximum", count, _k(cx, 1, count))
        q = cx.op("div", red, safe)
        if not x.dtype.is_float:  # torch floors the integer mean
            q = _floor_div(cx, red, safe)
        return cx.op("select", anyhit, q, x)
    if include_self:
        combine = {"sum": "add", "prod": "mul", "amax": "maximum", "amin": "minimum"}[mode]
        return cx.op(combine, x, red)
    return cx.op("select", anyhit, red, x)


def _floor_div(cx: TorchContext, a: Value, b: Value) -> Value:
    q = cx.op("div", a, b)
    zero = _k(cx, 0, a)
    inexact = cx.op("ne", cx.op("remainder", a, b), zero)
    signs = cx.op("ne", cx.op("lt", a, zero), cx.op("lt", b, zero))
    return cx.op("sub", q, cx.cast(cx.op("logical_and", inexact, signs), a.dtype))


def _scatter_dim(cx: TorchContext, x: Value, dim: int, index: Value, src: Any, mode: str,
                 include_self: bool = True) -> Value:
    """torch.scatter*: index may be smaller than x (and src) in every dim."""
    dt = cx.out_dtype()
    x = cx.cast(x, dt)
    if x.rank == 0:
        x1 = cx.reshape(x, (1,))
        s = src if not isinstance(src, Value) else cx.reshape(src, (1,) * max(src.rank, 1))
        return cx.reshape(_scatter_dim(cx, x1, 0, cx.reshape(index, (1,) * max(index.rank, 1)),
                                       s, mode, include_self), ())
    dim %= x.rank
    if index.rank == 0:
        index = cx.reshape(index, (1,) * x.rank)
    if math.prod(index.shape) == 0:
        return x
    if isinstance(src, Value):
        if src.rank == 0:
            src = cx.reshape(src, (1,) * x.rank)
        for ax in range(x.rank):
            if src.shape[ax] != index.shape[ax]:
                src = cx.op("slice", src, starts=(0,), stops=(index.shape[ax],), steps=(1,),
                            axes=(ax,))
        src = cx.cast(src, dt)
    else:
        src = cx.scalar(src, dt, index.shape)
    # pad index (with n: out of range, matches nothing) and src to x's shape outside the
    # scatter axis
    low = (0,) * x.rank
    high = tuple(0 if ax == dim else x.shape[ax] - index.shape[ax] for ax in range(x.rank))
    if any(high):
        index = cx.op("pad", cx.cast(index, i64), low=low, high=high,
                      value=float(x.shape[dim]))
        src = cx.op("pad", src, low=low, high=high, value=0.0)
    xt, perm = _move_last(cx, x, dim)
    it, _ = _move_last(cx, index, dim)
    st, _ = _move_last(cx, src, dim)
    return _restore(cx, scatter_last(cx, xt, it, st, mode, include_self), perm)


@converts("aten.scatter.src", "aten.scatter.value")
def _scatter(cx: TorchContext, x: Value, dim: int, index: Value, src: Any) -> Value:
    return _scatter_dim(cx, x, dim, index, src, "set")


@converts("aten.scatter.reduce", "aten.scatter.value_reduce")
def _scatter_reduce_old(cx: TorchContext, x: Value, dim: int, index: Value, src: Any, *,
                        reduce: str) -> Value:
    return _scatter_dim(cx, x, dim, index, src, {"add": "sum", "multiply": "prod"}[reduce])


@converts("aten.scatter_add")
def _scatter_add(cx: TorchContext, x: Value, dim: int, index: Value, src: Value) -> Value:
    return _scatter_dim(cx, x, dim, index, src, "sum")


@converts("aten.scatter_reduce.two")
def _scatter_reduce(cx: TorchContext, x: Value, dim: int, index: Value, src: Value, reduce: str,
                    *, include_self: bool = True) -> Value:
    return _scatter_dim(cx, x, dim, index, src, reduce, include_self)


def _index_dim(cx: TorchContext, x: Value, dim: int, index: Value, src: Value,
               mode: str, include_self: bool = True) -> Value:
    """index_copy / index_add: slices src[..., j, ...] go to x[..., index[j], ...]."""
    dt = cx.out_dtype()
    x = cx.cast(x, dt)
    if x.rank == 0:
        return cx.reshape(_index_dim(cx, cx.reshape(x, (1,)), 0, index,
                                     cx.reshape(cx.cast(src, dt), (1,)), mode,
                                     include_self), ())
    dim %= x.rank
    index = cx.reshape(index, (math.prod(index.shape),))
    src = cx.cast(src, dt)
    if src.rank == 0:
        src = cx.reshape(src, (1,) * x.rank)
    xt, perm = _move_last(cx, x, dim)
    st, _ = _move_last(cx, src, dim)
    it = cx.bcast(index, tuple(st.shape))
    return _restore(cx, scatter_last(cx, xt, it, st, mode, include_self), perm)


@converts("aten.index_reduce")
def _index_reduce(cx: TorchContext, x: Value, dim: int, index: Value, src: Value, reduce: str,
                  *, include_self: bool = True) -> Value:
    return _index_dim(cx, x, dim, index, src, reduce, include_self)


@converts("aten.index_copy")
def _index_copy(cx: TorchContext, x: Value, dim: int, index: Value, src: Value) -> Value:
    return _index_dim(cx, x, dim, index, src, "set")


@converts("aten.index_add")
def _index_add(cx: TorchContext, x: Value, dim: int, index: Value, src: Value, *,
               alpha: Any = 1) -> Value:
    if alpha != 1:
        src = cx.op("mul", src, cx.scalar(alpha, src.dtype, src.shape))
    return _index_dim(cx, x, dim, index, src, "sum")


@converts("aten.index_put")
def _index_put(cx: TorchContext, x: Value, indices: Any, values: Value,
               accumulate: bool = False) -> Value:
    """x[idx0, idx1, ...] = values (or +=): the indexed axes are merged into one and written."""
    dt = cx.out_dtype()
    x = cx.cast(x, dt)
    pos = [i for i, t in enumerate(indices) if t is not None]
    if not pos:
        return cx.bcast(cx.cast(values, dt), x.shape)
    if len(pos) == 1 and indices[pos[0]].dtype == bool_ and math.prod(values.shape) == 1:
        # x[mask] = v with one value: a select, whatever the mask holds
        mask = indices[pos[0]]
        lead = (1,) * pos[0]
        m = cx.reshape(mask, lead + tuple(mask.shape) + (1,) * (x.rank - pos[0] - mask.rank))
        v = cx.bcast(cx.reshape(cx.cast(values, dt), ()), x.shape)
        if accumulate:
            v = cx.op("logical_or" if dt == bool_ else "add", x, v)
        return cx.op("select", cx.bcast(m, x.shape), v, x)
    if any(indices[i].dtype == bool_ for i in pos):
        raise UnsupportedError("index_put with a boolean mask gives a data-dependent shape",
                               hint="use torch.where(mask, values, x) instead")
    tensors = [indices[i] for i in pos]
    idx_shape = np.broadcast_shapes(*[tuple(t.shape) for t in tensors])
    adjacent = pos == list(range(pos[0], pos[0] + len(pos)))
    # move the indexed axes first (torch's layout of x[idx] when they are not adjacent)
    rest = [a for a in range(x.rank) if a not in pos]
    order = tuple(pos + rest)
    xt = x if order == tuple(range(x.rank)) else cx.op("transpose", x, perm=order)
    linear, stride = None, 1
    for p, t in zip(reversed(pos), reversed(tensors), strict=True):
        t = cx.bcast(_wrap(cx, t, x.shape[p]), idx_shape)
        term = t if stride == 1 else cx.op("mul", t, cx.scalar(stride, i64, idx_shape))
        linear = term if linear is None else cx.op("add", linear, term)
        stride *= x.shape[p]
    k = math.prod(idx_shape)
    post = tuple(x.shape[a] for a in rest)
    merged = cx.reshape(xt, (stride,) + post)
    # values broadcast to x[idx]'s shape, then laid out as [k, post...]
    if adjacent and pos[0] > 0:
        pre = tuple(x.shape[: pos[0]])
        after = tuple(x.shape[pos[-1] + 1:])
        vshape = pre + tuple(idx_shape) + after
        v = cx.bcast(cx.cast(values, dt), vshape)
        v = cx.reshape(v, pre + (k,) + after)
        perm = (len(pre),) + tuple(a for a in range(len(pre) + 1 + len(after)) if a != len(pre))
        v = cx.op("transpose", v, perm=perm)
    else:
        v = cx.reshape(cx.bcast(cx.cast(values, dt), tuple(idx_shape) + post), (k,) + post)
    # merged axis last: x [post..., N], values [post..., k], index [k]
    xl, perm = _move_last(cx, merged, 0)
    vl, _ = _move_last(cx, v, 0)
    il = cx.bcast(cx.reshape(linear, (k,)), tuple(vl.shape))
    y = _restore(cx, scatter_last(cx, xl, il, vl, "sum" if accumulate else "set"), perm)
    y = cx.reshape(y, tuple(xt.shape))
    if order == tuple(range(x.rank)):
        return y
    return cx.op("transpose", y, perm=tuple(order.index(a) for a in range(x.rank)))


# -- sorting -----------------------------------------------------------------------


def sort_last(cx: TorchContext, x: Value, descending: bool) -> tuple[Value, Value]:
    """Stable sort along the last axis: (values, int64 indices). NaN is the largest value.
    Rows of NETWORK_MIN elements or more go through the bitonic network (sort_network);
    shorter ones count each element's rank (n^2 comparisons, fewer kernels)."""
    n = x.shape[-1]
    if n >= NETWORK_MIN:
        return bitonic_sort_last(cx, x, descending)
    lead = tuple(x.shape[:-1])
    pair = lead + (n, n)
    xi = cx.bcast(cx.reshape(x, lead + (n, 1)), pair)   # [.., i, j] = x_i
    xj = cx.bcast(cx.reshape(x, lead + (1, n)), pair)   # [.., i, j] = x_j
    before = cx.op("gt" if descending else "lt", xj, xi)
    same = cx.op("eq", xj, xi)
    if x.dtype.is_float:
        ni, nj = cx.op("ne", xi, xi), cx.op("ne", xj, xj)
        # NaN sorts last ascending, first descending; NaNs tie with each other
        nan_first = cx.op("logical_and", nj, cx.op("logical_not", ni)) if descending else \
            cx.op("logical_and", ni, cx.op("logical_not", nj))
        before = cx.op("logical_or", before, nan_first)
        same = cx.op("logical_or", same, cx.op("logical_and", ni, nj))
    jlt = cx.op("lt", _iota(cx, pair, len(lead) + 1), _iota(cx, pair, len(lead)))
    ahead = cx.op("logical_or", before, cx.op("logical_and", same, jlt))
    rank = cx.op("reduce_sum", cx.cast(ahead, i64), axes=(len(lead) + 1,), keepdims=False)
    # indices[r] = the i whose rank is r
    hit = cx.op("eq", cx.bcast(cx.reshape(rank, lead + (n, 1)), pair),
                _iota(cx, pair, len(lead) + 1))                     # [.., i, r]
    idx = cx.op("reduce_sum", cx.op("select", hit, _iota(cx, pair, len(lead)),
                                    cx.scalar(0, i64, pair)), axes=(len(lead),), keepdims=False)
    return cx.op("take_along_axis", x, idx, axis=len(lead)), idx


def _sort_dim(cx: TorchContext, x: Value, dim: int, descending: bool) -> tuple[Value, Value]:
    if x.rank == 0:
        return x, cx.scalar(0, i64, ())
    dim %= x.rank
    if x.shape[dim] <= 1:
        return x, cx.scalar(0, i64, x.shape)
    if x.dtype == bool_:
        v, i = _sort_dim(cx, cx.cast(x, i64), dim, descending)
        return cx.cast(v, bool_), i
    xt, perm = _move_last(cx, x, dim)
    v, i = sort_last(cx, xt, descending)
    return _restore(cx, v, perm), _restore(cx, i, perm)


@converts("aten.sort.default")
def _sort(cx: TorchContext, x: Value, dim: int = -1, descending: bool = False) -> Any:
    return _sort_dim(cx, x, dim, descending)


@converts("aten.sort.stable")
def _sort_stable(cx: TorchContext, x: Value, *, stable: Any = None, dim: int = -1,
                 descending: bool = False) -> Any:
    return _sort_dim(cx, x, dim, descending)


@converts("aten.argsort")
def _argsort(cx: TorchContext, x: Value, *args: Any, **kwargs: Any) -> Value:
    dim = kwargs.get("dim", args[0] if args and not isinstance(args[0], bool) else -1)
    descending = kwargs.get("descending", args[1] if len(args) > 1 else False)
    return _sort_dim(cx, x, dim, bool(descending))[1]


@converts("aten.topk")
def _topk(cx: TorchContext, x: Value, k: int, dim: int = -1, largest: bool = True,
          sorted: bool = True) -> Any:
    v, i = _sort_dim(cx, x, dim, bool(largest))
    if x.rank == 0:
        return v, i
    dim %= x.rank
    if x.shape[dim] == k:
        return v, i
    sl = {"starts": (0,), "stops": (int(k),), "steps": (1,), "axes": (dim,)}
    return cx.op("slice", v, **sl), cx.op("slice", i, **sl)


@converts("aten.kthvalue")
def _kthvalue(cx: TorchContext, x: Value, k: int, dim: int = -1, keepdim: bool = False) -> Any:
    return _pick_sorted(cx, x, dim, keepdim, lambda n: int(k) - 1, nan_wins=True)


@converts("aten.median.dim", "aten.nanmedian.dim")
def _median_dim(cx: TorchContext, x: Value, dim: int = 0, keepdim: bool = False) -> Any:
    nan_wins = not cx.node.target.__name__.startswith("nanmedian")
    return _pick_sorted(cx, x, dim, keepdim, lambda n: (n - 1) // 2, nan_wins=nan_wins)


@converts("aten.median.default", "aten.nanmedian.default")
def _median(cx: TorchContext, x: Value) -> Value:
    flat = cx.reshape(x, (max(1, math.prod(x.shape)),))
    nan_wins = not cx.node.target.__name__.startswith("nanmedian")
    v, _ = _pick_sorted(cx, flat, 0, False, lambda n: (n - 1) // 2, nan_wins=nan_wins)
    return cx.reshape(v, ())


def _pick_sorted(cx: TorchContext, x: Value, dim: int, keepdim: bool, which: Any,
                 nan_wins: bool) -> tuple[Value, Value]:
    """The which(n)-th smallest along dim (value, index); with NaN present, nan_wins gives
    NaN (median, kthvalue) and otherwise the which(count of non-NaN)-th (nanmedian)."""
    if x.rank == 0:
        return x, cx.scalar(0, i64, ())
    dim %= x.rank
    n = x.shape[dim]
    xt, perm = _move_last(cx, x, dim)
    v, i = sort_last(cx, xt, False)
    lead = tuple(xt.shape[:-1])
    if x.dtype.is_float and not nan_wins:
        cnt = cx.op("reduce_sum", cx.cast(cx.op("eq", xt, xt), i64), axes=(len(lead),))
        cnt = cx.op("maximum", cnt, cx.scalar(1, i64, lead))
        pos = cx.op("div", cx.op("sub", cnt, cx.scalar(1, i64, lead)), cx.scalar(2, i64, lead))
    else:
        pos = cx.scalar(which(n), i64, lead)
    pos = cx.reshape(pos, lead + (1,))
    val = cx.op("take_along_axis", v, pos, axis=len(lead))
    idx = cx.op("take_along_axis", i, pos, axis=len(lead))
    if x.dtype.is_float and nan_wins:
        # torch: a NaN anywhere along the axis is the answer (its first position)
        nan = cx.op("ne", xt, xt)
        has = cx.op("reduce_any", nan, axes=(len(lead),), keepdims=True)
        first = cx.op("argmax", cx.cast(nan, i64), axis=len(lead), keepdims=True, dtype=i64)
        val = cx.op("select", has, cx.scalar(math.nan, x.dtype, val.shape), val)
        idx = cx.op("select", has, first, idx)
    out = lead if not keepdim else lead + (1,)
    val, idx = cx.reshape(val, out), cx.reshape(idx, out)
    if keepdim:
        val, idx = _restore(cx, val, perm), _restore(cx, idx, perm)
    return val, idx


@converts("aten.masked_scatter")
def _masked_scatter(cx: TorchContext, x: Value, mask: Value, source: Value) -> Value:
    """x where mask is false; where it is true, source's elements in row-major order: the
    k-th true position (a running count of the mask) takes source.flatten()[k]."""
    dt, shape = cx.out_dtype(), cx.out_shape()
    n, ns = math.prod(shape), math.prod(source.shape)
    x = cx.bcast(cx.cast(x, dt), shape)
    m = cx.reshape(cx.bcast(mask, shape), (n,))
    if n == 0 or ns == 0:
        return x
    pos = cx.op("sub", cx.op("cumsum", cx.cast(m, i64), axis=0), cx.scalar(1, i64, (n,)))
    pos = cx.op("minimum", cx.op("maximum", pos, cx.scalar(0, i64, (n,))),
                cx.scalar(ns - 1, i64, (n,)))
    vals = cx.op("gather", cx.reshape(cx.cast(source, dt), (ns,)), pos, axis=0)
    return cx.op("select", cx.reshape(m, shape), cx.reshape(vals, shape), x)


@converts("aten.slice_scatter")
def _slice_scatter(cx: TorchContext, x: Value, src: Value, dim: int = 0, start: Any = None,
                   end: Any = None, step: int = 1) -> Value:
    dim %= x.rank
    lo, hi, st = slice(start, end, step).indices(x.shape[dim])
    count = len(range(lo, hi, st))
    if count == 0:
        return cx.cast(x, cx.out_dtype())
    idx = cx.op("add", cx.op("mul", _iota(cx, (count,), 0), cx.scalar(st, i64, (count,))),
                cx.scalar(lo, i64, (count,)))
    return _index_dim(cx, x, dim, idx, src, "set")


@converts("aten.as_strided", "aten.as_strided_copy")
def _as_strided(cx: TorchContext, x: Value, size: Any, stride: Any,
                storage_offset: Any = None) -> Value:
    """A strided view of x's (contiguous, row-major) storage: a gather of flat indices."""
    shape = cx.out_shape()
    if math.prod(shape) == 0:
        return cx.scalar(0, x.dtype, shape)
    flat = cx.reshape(x, (max(1, math.prod(x.shape)),))
    idx = cx.scalar(int(storage_offset or 0), i64, shape)
    for a, s in enumerate(stride):
        if shape[a] > 1:
            idx = cx.op("add", idx, cx.op("mul", _iota(cx, shape, a), cx.scalar(int(s), i64, shape)))
    return cx.op("gather", flat, idx, axis=0)


@converts("aten.searchsorted.Tensor")
def _searchsorted(cx: TorchContext, seq: Value, x: Any, *, out_int32: bool = False,
                  right: bool = False, side: Any = None, sorter: Any = None) -> Value:
    if sorter is not None:
        raise UnsupportedError("searchsorted with a sorter", hint="sort the sequence first")
    right = right or side == "right"
    dt = cx.promote(seq, x)
    n = seq.shape[-1]
    xs = cx.tensor(x, dt)
    if xs.rank == 0:
        xs = cx.reshape(xs, (1,))
    lead = tuple(xs.shape)
    pair = lead + (n,)
    sv = cx.cast(seq, dt)
    sv = cx.bcast(cx.reshape(sv, (1,) * (len(lead) - 1) + (1, n)) if seq.rank == 1 else
                  cx.reshape(sv, tuple(seq.shape[:-1]) + (1, n)), pair)
    xv = cx.bcast(cx.reshape(xs, lead + (1,)), pair)
    below = cx.op("le" if right else "lt", sv, xv)
    cnt = cx.op("reduce_sum", cx.cast(below, i64), axes=(len(lead),), keepdims=False)
    return cx.reshape(cnt, cx.out_shape())
