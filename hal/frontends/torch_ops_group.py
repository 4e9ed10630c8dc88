"""ATen converters that group elements by value or by a data-given segment: mode,
histogram and segment_reduce, from hal's primitives.

- mode: a stable sort along the axis (torch_ops_index.sort_last), run lengths of equal
  values by a segmented scan (scatter_network), and the longest run; ties go to the
  smallest value (the first run), the index is the run's last element in the input
  order, as torch's CPU kernel (a sort of (value, index) pairs, strict `>` on the
  count) gives for the rows OpInfo and models use;
- segment_reduce (lengths or offsets, given as data): each segment's [start, end) along
  the axis, a one-hot membership mask [segments, axis length] and a masked reduction
  (sum, mean, max, min, prod) with torch's initial value, NaN propagation and the
  mean of an empty segment (NaN without `initial`). O(segments x axis length), like
  the one-hot scatter;
- histogram (a bin count or given edges; range, weight, density): torch's edges (the
  input's min and max widened by 0.5 when equal, then linspace with its two-sided
  formula), each element's bin as the number of edges at or below it (the rightmost
  bin includes its right edge, elements outside are skipped) and a one-hot weighted
  count per bin.
"""

from __future__ import annotations

import math
from typing import Any

from hal.dtypes import bool_, i64
from hal.errors import UnsupportedError
from hal.frontends.scatter_network import segmented_scan
from hal.frontends.torch_convert import TorchContext, converts
from hal.frontends.torch_ops_index import sort_last
from hal.ir.graph import Value


def _iota(cx: TorchContext, shape: tuple[int, ...], dim: int) -> Value:
    return cx.op("iota", shape=tuple(shape), dimension=dim, dtype=i64)


def mode_last(cx: TorchContext, x: Value) -> tuple[Value, Value]:
    """(most frequent value, its index) along x's last axis."""
    n = x.shape[-1]
    lead = tuple(x.shape[:-1])
    axis = len(lead)
    s, idx = sort_last(cx, x, False)
    ones = cx.scalar(1, i64, s.shape)
    count = segmented_scan(cx, s, ones, "add", lead, n)      # run length so far
    pos = _iota(cx, s.shape, axis)
    nxt = cx.op("minimum", cx.op("add", pos, ones), cx.scalar(n - 1, i64, s.shape))
    last = cx.op("logical_or", cx.op("eq", pos, cx.scalar(n - 1, i64, s.shape)),
                 cx.op("ne", cx.op("take_along_axis", s, nxt, axis=axis), s))
    cand = cx.op("select", last, count, cx.scalar(-1, i64, s.shape))
    best = cx.op("reduce_max", cand, axes=(axis,), keepdims=True)
    hit = cx.op("eq", cand, cx.bcast(best, s.shape))
    first = cx.op("reduce_min", cx.op("select", hit, pos, cx.scalar(n, i64, s.shape)),
                  axes=(axis,), keepdims=True)
    return (cx.reshape(cx.op("take_along_axis", s, first, axis=axis), lead),
            cx.reshape(cx.op("take_along_axis", idx, first, axis=axis), lead))


@converts("aten.mode")
def _mode(cx: TorchContext, x: Value, dim: int = -1, keepdim: bool = False) -> tuple[Value, Value]:
    shape = cx.out_shape(0)
    if x.rank == 0 or x.shape[dim % x.rank] == 1:
        return cx.reshape(x, shape), cx.scalar(0, i64, shape)
    dim %= x.rank
    v = cx.cast(x, i64) if x.dtype == bool_ else x
    perm = tuple(a for a in range(x.rank) if a != dim) + (dim,)
    vt = v if perm == tuple(range(x.rank)) else cx.op("transpose", v, perm=perm)
    val, idx = mode_last(cx, vt)
    return cx.reshape(cx.cast(val, x.dtype), shape), cx.reshape(idx, shape)


_IDENTITY = {"sum": 0.0, "mean": 0.0, "max": -math.inf, "min": math.inf, "prod": 1.0}
_REDUCE = {"sum": "reduce_sum", "mean": "reduce_sum", "max": "reduce_max", "min": "reduce_min",
           "prod": "reduce_prod"}


def segment_reduce(cx: TorchContext, data: Value, reduce: str, start: Value, end: Value,
                   initial: Any) -> Value:
    """data [*outer, N, *inner]; start/end [*outer, S] (int64): the reduction of each
    segment data[..., start:end, ...] into [*outer, S, *inner]."""
    if reduce not in _IDENTITY:
        raise UnsupportedError(f"segment_reduce reduction {reduce!r}",
                               hint="use sum, mean, max, min or prod")
    outer = tuple(start.shape[:-1])
    s_cnt, axis = start.shape[-1], len(start.shape) - 1
    n, inner = data.shape[axis], tuple(data.shape[axis + 1:])
    dt = data.dtype
    full = outer + (s_cnt, n) + inner
    pos = _iota(cx, outer + (s_cnt, n), axis + 1)
    member = cx.op("logical_and",
                   cx.op("ge", pos, cx.bcast(cx.reshape(start, outer + (s_cnt, 1)), pos.shape)),
                   cx.op("lt", pos, cx.bcast(cx.reshape(end, outer + (s_cnt, 1)), pos.shape)))
    member = cx.bcast(cx.reshape(member, outer + (s_cnt, n) + (1,) * len(inner)), full)
    d = cx.bcast(cx.reshape(data, outer + (1, n) + inner), full)
    ident = _IDENTITY[reduce]
    red = cx.op(_REDUCE[reduce], cx.op("select", member, d, cx.scalar(ident, dt, full)),
                axes=(axis + 1,), keepdims=False)
    out_shape = red.shape
    init = cx.scalar(ident if initial is None else float(initial), dt, out_shape)
    if reduce in ("sum", "mean"):
        y = cx.op("add", init, red)
    elif reduce == "prod":
        y = cx.op("mul", init, red)
    else:
        y = cx.op("maximum" if reduce == "max" else "minimum", init, red)
        # a NaN in the segment wins (torch: isnan(x) ? x : max(acc, x))
        has_nan = cx.op("reduce_max", cx.cast(cx.op("logical_and", member, cx.op("ne", d, d)),
                                               i64), axes=(axis + 1,), keepdims=False)
        y = cx.op("select", cx.op("gt", has_nan, cx.scalar(0, i64, out_shape)),
                  cx.scalar(math.nan, dt, out_shape), y)
    if reduce == "mean":
        length = cx.op("sub", end, start)
        length = cx.bcast(cx.reshape(length, outer + (s_cnt,) + (1,) * len(inner)), out_shape)
        empty = cx.op("le", length, cx.scalar(0, i64, out_shape))
        y = cx.op("select", empty, y, cx.op("div", y, cx.cast(length, dt)))
        if initial is None:
            y = cx.op("select", empty, cx.scalar(math.nan, dt, out_shape), y)
    return y


@converts("aten.segment_reduce")
def _segment_reduce(cx: TorchContext, data: Value, reduce: str, *, lengths: Any = None,
                    indices: Any = None, offsets: Any = None, axis: int = 0,
                    unsafe: bool = False, initial: Any = None) -> Value:
    if lengths is not None:
        ln = cx.cast(lengths, i64)
        end = cx.op("cumsum", ln, axis=ln.rank - 1)
        start = cx.op("sub", end, ln)
    elif offsets is not None:
        off = cx.cast(offsets, i64)
        k = off.shape[-1] - 1
        last = off.rank - 1
        start = cx.op("slice", off, starts=(0,), stops=(k,), steps=(1,), axes=(last,))
        end = cx.op("slice", off, starts=(1,), stops=(k + 1,), steps=(1,), axes=(last,))
    else:
        raise UnsupportedError("segment_reduce by indices (torch does not "
                               "implement it either)", hint="pass lengths or offsets")
    return segment_reduce(cx, cx.cast(data, cx.out_dtype()), reduce, start, end, initial)


def _linspace(cx: TorchContext, lo: Value, hi: Value, steps: int) -> Value:
    """torch's CPU linspace: start + step i for i < steps / 2, end - step (steps - 1 - i)
    after, step = (end - start) / (steps - 1); lo, hi are 0-d."""
    shape = (steps,)
    i = cx.cast(_iota(cx, shape, 0), lo.dtype)
    step = cx.op("div", cx.op("sub", hi, lo), cx.scalar(steps - 1, lo.dtype, ()))
    lo_b, hi_b, st_b = (cx.bcast(cx.reshape(v, (1,)), shape) for v in (lo, hi, step))
    up = cx.op("add", lo_b, cx.op("mul", st_b, i))
    down = cx.op("sub", hi_b, cx.op("mul", st_b, cx.op("sub", cx.scalar(steps - 1, lo.dtype,
                                                                           shape), i)))
    return cx.op("select", cx.op("lt", i, cx.scalar(steps // 2, lo.dtype, shape)), up, down)


def histogram(cx: TorchContext, x: Value, edges: Value, weight: Any,
              density: bool) -> Value:
    """Counts (or summed weights) of x's elements per bin of the sorted `edges` [B + 1]."""
    dt = edges.dtype
    m, nb = max(1, math.prod(x.shape)), edges.shape[0]
    xf = cx.reshape(cx.cast(x, dt), (m,))
    if math.prod(x.shape) == 0:
        return cx.scalar(0, dt, (nb - 1,))
    pair = (m, nb)
    xe = cx.bcast(cx.reshape(xf, (m, 1)), pair)
    ee = cx.bcast(cx.reshape(edges, (1, nb)), pair)
    pos = cx.op("sub", cx.op("reduce_sum", cx.cast(cx.op("le", ee, xe), i64), axes=(1,),
                             keepdims=False), cx.scalar(1, i64, (m,)))
    pos = cx.op("minimum", pos, cx.scalar(nb - 2, i64, (m,)))   # the last bin is closed
    first = cx.reshape(cx.op("slice", edges, starts=(0,), stops=(1,), steps=(1,), axes=(0,)), ())
    last = cx.reshape(cx.op("slice", edges, starts=(nb - 1,), stops=(nb,), steps=(1,),
                            axes=(0,)), ())
    inside = cx.op("logical_and", cx.op("ge", xf, cx.bcast(cx.reshape(first, (1,)), (m,))),
                   cx.op("le", xf, cx.bcast(cx.reshape(last, (1,)), (m,))))
    w = cx.scalar(1, dt, (m,)) if weight is None else cx.reshape(cx.cast(weight, dt), (m,))
    w = cx.op("select", inside, w, cx.scalar(0, dt, (m,)))
    bins = (m, nb - 1)
    hit = cx.op("eq", cx.bcast(cx.reshape(pos, (m, 1)), bins), _iota(cx, bins, 1))
    hist = cx.op("reduce_sum", cx.op("select", hit, cx.bcast(cx.reshape(w, (m, 1)), bins),
                                     cx.scalar(0, dt, bins)), axes=(0,), keepdims=False)
    if not density:
        return hist
    total = cx.bcast(cx.reshape(cx.op("reduce_sum", hist, axes=(0,), keepdims=True), (1,)),
                     (nb - 1,))
    widths = cx.op("sub", cx.op("slice", edges, starts=(1,), stops=(nb,), steps=(1,), axes=(0,)),
                   cx.op("slice", edges, starts=(0,), stops=(nb - 1,), steps=(1,), axes=(0,)))
    return cx.op("div", cx.op("div", hist, total), widths)


@converts("aten.histogram.bin_ct")
def _histogram_bin_ct(cx: TorchContext, x: Value, bins: int = 100, *, range: Any = None,
                      weight: Any = None, density: bool = False) -> tuple[Value, Value]:
    dt = cx.out_dtype(0)
    if range is not None:
        lo, hi = cx.scalar(float(range[0]), dt), cx.scalar(float(range[1]), dt)
    elif math.prod(x.shape) == 0:
        lo, hi = cx.scalar(0, dt), cx.scalar(0, dt)
    else:
        xf = cx.reshape(cx.cast(x, dt), (math.prod(x.shape),))
        lo = cx.op("reduce_min", xf, axes=(0,), keepdims=False)
        hi = cx.op("reduce_max", xf, axes=(0,), keepdims=False)
    same = cx.op("eq", lo, hi)                      # widened as numpy does
    lo = cx.op("select", same, cx.op("sub", lo, cx.scalar(0.5, dt)), lo)
    hi = cx.op("select", same, cx.op("add", hi, cx.scalar(0.5, dt)), hi)
    edges = _linspace(cx, lo, hi, int(bins) + 1)
    return histogram(cx, x, edges, weight, bool(density)), edges


@converts("aten.histogram.bins_tensor")
def _histogram_edges(cx: TorchContext, x: Value, bins: Value, *, weight: Any = None,
                     density: bool = False) -> tuple[Value, Value]:
    edges = cx.cast(bins, cx.out_dtype(0))
    return histogram(cx, x, edges, weight, bool(density)), edges


__all__ = ["mode_last", "segment_reduce", "histogram"]
