"""ATen converters that group elements by value or by a data-given segment: mode,
histogram and segment_reduce, from hal's primitives.

- mode: a stable sort along the axis (torch_ops_index.sort_last), run lengths of equal
  values by a segmented scan (scatter_network), and the longest run; ties go to the
  smallest value (the first run), the index is the run's last element in the input
  order, as torch's CPU kernel (a sort of (value, index) pairs, strict `>` on the
  count) gives for the rows OpInfo and models use.
"""

from __future__ import annotations

from hal.dtypes import bool_, i64
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


__all__ = ["mode_last"]
