"""A stable sort along the last axis as a bitonic network of hal primitives: O(n log^2 n).

The rank-counting sort of torch_ops_index compares every pair (n^2 work and an n x n
intermediate), which is the cheapest graph for short rows but runs out of time and
memory for long ones (an 8000-element row is 64M comparisons). `bitonic_sort_last`
pads the row to a power of two N and runs log2(N) (log2(N) + 1) / 2 compare-exchange
stages. Each stage is elementwise work on index arithmetic from iota (the partner of
element i at distance j is i +- j, the direction comes from bit k of i) plus
take_along_axis gathers of the partner's key: every stage is O(N).

Keys are compared lexicographically as (class, value, position): class 0 for numbers,
1 for NaN (torch sorts NaN as the largest value; first when descending) and 2 for the
padding (always last); equal values keep their order (position), so the sort is
stable, as torch's sort(stable=True) and topk's tie order are. Class and position are
packed in one int64 key (class * N + position) so each stage gathers two arrays.
"""

from __future__ import annotations

import math

from hal.dtypes import i64
from hal.ir.graph import Value

NETWORK_MIN = 128   # rows at least this long use the network; shorter ones count ranks


def bitonic_sort_last(cx, x: Value, descending: bool) -> tuple[Value, Value]:
    """Stable sort of x [..., n] along its last axis: (values, int64 indices)."""
    n = x.shape[-1]
    lead = tuple(x.shape[:-1])
    big = 1 << max(1, math.ceil(math.log2(n)))
    shape = lead + (big,)
    axis = len(lead)
    pos = cx.op("iota", shape=shape, dimension=axis, dtype=i64)

    def k(v: int | float, dt=i64) -> Value:
        return cx.scalar(v, dt, shape)

    xp = x if big == n else cx.op("pad", x, low=(0,) * x.rank,
                                  high=(0,) * len(lead) + (big - n,), value=0.0)
    if x.dtype.is_float:
        nan = cx.op("ne", xp, xp)
        val = cx.op("select", nan, k(0.0, x.dtype), xp)
        cls = cx.op("select", nan, k(0 if descending else 1), k(1 if descending else 0))
    else:
        val = xp
        cls = k(0)
    cls = cx.op("select", cx.op("lt", pos, k(n)), cls, k(2))
    key = cx.op("add", cx.op("mul", cls, k(big)), pos)      # class * N + position
    stage = 2
    while stage <= big:
        j = stage // 2
        while j >= 1:
            val, key = _exchange(cx, val, key, pos, j, stage, big, descending, axis, k)
            j //= 2
        stage *= 2
    idx = cx.op("remainder", key, k(big))
    if big != n:
        idx = cx.op("slice", idx, starts=(0,), stops=(n,), steps=(1,), axes=(axis,))
    return cx.op("take_along_axis", x, idx, axis=axis), idx


def _exchange(cx, val: Value, key: Value, pos: Value, j: int, stage: int, big: int,
              descending: bool, axis: int, k) -> tuple[Value, Value]:
    """One compare-exchange stage: element i pairs with i XOR j; blocks of `stage`
    elements alternate direction (bit `stage` of i), the lower of a pair keeps the
    smaller key in an ascending block."""
    lower = cx.op("eq", cx.op("remainder", cx.op("div", pos, k(j)), k(2)), k(0))
    partner = cx.op("select", lower, cx.op("add", pos, k(j)), cx.op("sub", pos, k(j)))
    up = cx.op("eq", cx.op("remainder", cx.op("div", pos, k(stage)), k(2)), k(0)) \
        if stage < big else None
    pval = cx.op("take_along_axis", val, partner, axis=axis)
    pkey = cx.op("take_along_axis", key, partner, axis=axis)
    # partner before self in the sort order?
    pcls, scls = cx.op("div", pkey, k(big)), cx.op("div", key, k(big))
    vbefore = cx.op("gt" if descending else "lt", pval, val)
    same = cx.op("eq", pval, val)
    p_first = cx.op("logical_or", cx.op("lt", pcls, scls), cx.op("logical_and", cx.op(
        "eq", pcls, scls), cx.op("logical_or", vbefore, cx.op("logical_and", same, cx.op(
            "lt", pkey, key)))))
    # take the partner when it belongs here: the smaller key goes to the lower position of
    # an ascending block (the larger one to the lower position of a descending block)
    want_min = lower if up is None else cx.op("eq", lower, up)
    take = cx.op("select", want_min, p_first, cx.op("logical_not", p_first))
    return cx.op("select", take, pval, val), cx.op("select", take, pkey, key)
