"""Scatter along the last axis by sorting the indices: O(m log^2 m + n log m), no m x n work.

torch_ops_index.scatter_last matches every index against every output position (a
one-hot [..., m, n] intermediate): the cheapest graph for a KV-cache slot write, but
quadratic for large scatters. `scatter_sorted_last` instead

1. sorts the m indices stably with the bitonic network (hal.frontends.sort_network),
   carrying the source values along, so equal indices form contiguous runs in their
   original order;
2. combines each run with a segmented inclusive scan (Hillis-Steele: log2(m) steps of
   a shifted gather and a select on "same index"), so the run's last element holds the
   run's sum / product / max / min (a plain write needs no scan: the last one wins,
   as in torch's CPU kernels);
3. finds, for each output position j, the end of its run by binary search over the
   sorted indices (ceil(log2(m + 1)) steps of a gather and a compare, for all j at
   once) and the run's start the same way (for "no write here" and mean's count).

Every step is elementwise work or a gather over [..., m] or [..., n]. Indices equal to n
(the padding torch_ops_index uses for "writes nothing") sort last and match no j.
"""

from __future__ import annotations

import math

from hal.dtypes import bool_, i64
from hal.errors import UnsupportedError
from hal.frontends.sort_network import bitonic_sort_last
from hal.ir.graph import Value

SORTED_MIN_WORK = 1 << 15   # m * n at least this (and m >= 32): sort instead of one-hot
SORTED_MIN_M = 32

_COMBINE = {"sum": "add", "mean": "add", "prod": "mul", "amax": "maximum", "amin": "minimum"}
_BOOL_COMBINE = {"sum": "logical_or", "mean": None, "prod": "logical_and",
                 "amax": "logical_or", "amin": "logical_and"}


def use_sorted(m: int, n: int) -> bool:
    return m >= SORTED_MIN_M and m * n >= SORTED_MIN_WORK


def scatter_sorted_last(cx, x: Value, idx: Value, src: Value, mode: str,
                        include_self: bool = True) -> Value:
    """x [..., n] with src [..., m] written at idx [..., m] (int64 in [0, n], n = nowhere)."""
    n, m = x.shape[-1], idx.shape[-1]
    lead = tuple(x.shape[:-1])
    axis = len(lead)
    if mode != "set":
        table = _BOOL_COMBINE if x.dtype == bool_ else _COMBINE
        if mode not in table or table[mode] is None:
            raise UnsupportedError(f"scatter reduce '{mode}'" + (" on bool tensors"
                                                                   if x.dtype == bool_ else ""),
                                   hint="sum, prod, mean, amax and amin are supported")
    keys, perm = bitonic_sort_last(cx, idx, False)
    vals = cx.op("take_along_axis", cx.cast(src, x.dtype), perm, axis=axis)
    if mode != "set":
        vals = segmented_scan(cx, keys, vals, table[mode], lead, m)
    jpos = cx.op("iota", shape=lead + (n,), dimension=axis, dtype=i64)
    right = _search(cx, keys, jpos, "le", lead, m, n)    # keys <= j
    left = _search(cx, keys, jpos, "lt", lead, m, n)     # keys < j
    anyhit = cx.op("gt", right, left)
    last = cx.op("maximum", cx.op("sub", right, _k(cx, 1, right)), _k(cx, 0, right))
    picked = cx.op("take_along_axis", vals, last, axis=axis)
    if mode == "set":
        return cx.op("select", anyhit, picked, x)
    if mode == "mean":
        count = cx.cast(cx.op("sub", right, left), x.dtype)
        red = picked
        if include_self:
            red = cx.op("add", red, x)
            count = cx.op("add", count, _k(cx, 1, count))
        safe = cx.op("maximum", count, _k(cx, 1, count))
        q = cx.op("div", red, safe) if x.dtype.is_float else _floor_div(cx, red, safe)
        return cx.op("select", anyhit, q, x)
    y = cx.op(table[mode], x, picked) if include_self else picked
    return cx.op("select", anyhit, y, x)


def _k(cx, v, like: Value) -> Value:
    return cx.scalar(v, like.dtype, like.shape)


def segmented_scan(cx, keys: Value, vals: Value, combine: str, lead: tuple[int, ...],
                    m: int) -> Value:
    """Inclusive scan of vals within runs of equal keys (keys sorted along the last axis)."""
    axis = len(lead)
    pos = cx.op("iota", shape=lead + (m,), dimension=axis, dtype=i64)
    s = 1
    while s < m:
        src_pos = cx.op("maximum", cx.op("sub", pos, _k(cx, s, pos)), _k(cx, 0, pos))
        kp = cx.op("take_along_axis", keys, src_pos, axis=axis)
        vp = cx.op("take_along_axis", vals, src_pos, axis=axis)
        same = cx.op("logical_and", cx.op("ge", pos, _k(cx, s, pos)), cx.op("eq", kp, keys))
        vals = cx.op("select", same, cx.op(combine, vp, vals), vals)
        s *= 2
    return vals


def _search(cx, keys: Value, q: Value, cmp: str, lead: tuple[int, ...], m: int,
            n: int) -> Value:
    """For each query q [..., n]: how many of the sorted keys [..., m] are `cmp` q
    (binary search, all queries at once)."""
    axis = len(lead)
    shape = lead + (n,)
    lo = cx.scalar(0, i64, shape)
    hi = cx.scalar(m, i64, shape)
    for _ in range(max(1, math.ceil(math.log2(m + 1)))):
        active = cx.op("lt", lo, hi)
        mid = cx.op("div", cx.op("add", lo, hi), cx.scalar(2, i64, shape))
        km = cx.op("take_along_axis", keys,
                   cx.op("minimum", mid, cx.scalar(m - 1, i64, shape)), axis=axis)
        go = cx.op(cmp, km, q)
        lo = cx.op("select", cx.op("logical_and", active, go),
                   cx.op("add", mid, cx.scalar(1, i64, shape)), lo)
        hi = cx.op("select", cx.op("logical_and", active, cx.op("logical_not", go)), mid, hi)
    return lo


def _floor_div(cx, a: Value, b: Value) -> Value:
    q = cx.op("div", a, b)
    zero = _k(cx, 0, a)
    inexact = cx.op("ne", cx.op("remainder", a, b), zero)
    signs = cx.op("ne", cx.op("lt", a, zero), cx.op("lt", b, zero))
    return cx.op("sub", q, cx.cast(cx.op("logical_and", inexact, signs), a.dtype))


__all__ = ["scatter_sorted_last", "segmented_scan", "use_sorted", "SORTED_MIN_WORK", "SORTED_MIN_M"]
