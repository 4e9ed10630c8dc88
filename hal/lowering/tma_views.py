"""A's TMA box through reshapes and transposes: the Hopper GEMM reads A where it is stored.

A matmul's A is often a view of a group input rather than the input itself: the attention
output [1, H, S, D] transposed to [S, H, D] and reshaped to [S, H * D] before the output
projection, or a norm's source seen as [B * S, K]. TMA copies boxes of any strided tensor
(cuTensorMapEncodeTiled takes a byte stride per dimension), so such an A needs no copy
kernel: `a_view` replays the chain of reshapes and transposes on the source's layout, each
axis a list of (size, stride) factors (CuTe's hierarchical layouts: [S, H, D] transposed
from [H, S, D] and reshaped to [S, H * D] has K = (H : S*D, D : 1)), and describes A's K, M
and batch axes as tensor-map dimensions:

* K = (outer factors ..., Kd): Kd, the innermost factor, has stride 1 (TMA's innermost
  dimension is contiguous) and the box's BK columns (a K tile never straddles two outer K
  factors: Kd % BK == 0 unless K is one factor, where the box's overhang is zero-filled);
  the outer factors are map dimensions with box 1 (the head index of the attention output);
* M must be one strided dimension after merging (box BM rows);
* batch axes: dimensions with box 1.

The map's dimensions, innermost first: (Kd, M, outer K factors innermost first, batch axes
innermost first); a box lands as BM rows of BK elements: A's tile, as for a plain A.
`ATmaView.coords(ctx, k0, m0, bz)` gives the copy's coordinates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hal.ir.graph import Value


@dataclass(frozen=True)
class ATmaView:
    """A as a tensor map over group input `source`: dims / byte strides innermost first,
    the box, and how k and batch coordinates split."""

    source: Value
    dims: tuple[int, ...]
    strides: tuple[int, ...]        # bytes, dims[1:]
    box: tuple[int, ...]
    kd: int                         # the contiguous K factor
    k_outer: tuple[int, ...]        # outer K factors, outermost first
    batch: tuple[int, ...]          # batch factors, outermost first
    m_inner: int = 0                # rows in two strided pieces: the inner one's length

    def coords(self, ctx, k0, m0, bz) -> tuple:
        """Copy coordinates (innermost first) of the tile at k offset `k0`, row `m0`, batch
        `bz`."""
        ko = ctx.unravel(ctx.div(k0, self.kd), list(self.k_outer)) if self.k_outer else []
        bs = ctx.unravel(bz, list(self.batch)) if self.batch else []
        inner = ctx.mod(k0, self.kd) if self.k_outer else k0
        ms = (ctx.mod(m0, self.m_inner), ctx.div(m0, self.m_inner)) if self.m_inner else (m0,)
        return (inner, *ms, *reversed(ko), *reversed(bs))


Factors = list[tuple[int, int]]     # (size, element stride) pieces of one axis, outer first


def _reshape(axes: list[Factors], new: list[int]) -> list[Factors] | None:
    """The factor lists of shape `new` viewing `axes` in row-major order, or None when an
    axis would need a piece of a factor that does not divide it."""
    flat = [f for ax in axes for f in ax if f[0] != 1]
    out: list[Factors] = []
    for n in new:
        ax: Factors = []
        need = n
        while need > 1:     # flat's sizes multiply to the rest of `new`: never exhausted
            size, stride = flat[0]
            if size <= need:
                if need % size:
                    return None
                ax.append(flat.pop(0))
                need //= size
            else:
                if size % need:
                    return None
                ax.append((need, stride * (size // need)))
                flat[0] = (size // need, stride)
                need = 1
        out.append(ax)
    return out if not flat else None


def strided_layout(v: Value, producers: dict) -> tuple[Value, list[Factors]] | str:
    """(group input, per axis of `v` its factors) when `v` is a group input seen through
    reshapes and transposes, or why not."""
    chain = []
    while v.name in producers:
        n = producers[v.name]
        if n.op not in ("reshape", "transpose"):
            return f"%{v.name} is computed by {n.op}"
        chain.append(n)
        v = n.inputs[0]
    sizes = list(v.shape)
    axes: list[Factors] = [[(sz, math.prod(sizes[i + 1:]))] for i, sz in enumerate(sizes)]
    for n in reversed(chain):
        if n.op == "transpose":
            axes = [axes[p] for p in n.attrs["perm"]]
        else:
            got = _reshape(axes, list(n.outputs[0].shape))
            if got is None:
                return f"%{n.outputs[0].name} splits a strided piece unevenly"
            axes = got
    return v, axes


def _merge(dims: Factors) -> Factors:
    """Merge adjacent (size, stride) factors that are contiguous with each other; drop 1s."""
    out: Factors = []
    for s, t in dims:
        if s == 1:
            continue
        if out and out[-1][1] == s * t:
            out[-1] = (out[-1][0] * s, t)
        else:
            out.append((s, t))
    return out


def a_view(dot, producers: dict, bm: int, bk: int, source: Value | None = None
           ) -> ATmaView | str:
    """A's tensor map (module docstring), or why TMA cannot copy A's tiles. `source`: a
    prologue's TMA source laid out as A (hal.lowering.matmul_wgmma_prologue)."""
    from hal.lowering.matmul import contraction_dims

    lb, _rb, lc, _rc, lf, _rf = contraction_dims(dot)
    return tile_view(dot.inputs[0], producers, lb, lf, lc, bm, bk, source, "A")


def tile_view(v: Value, producers: dict, batch_axes, row_axes, col_axes, rows: int,
              cols: int, source: Value | None = None, what: str = "A",
              split_rows: bool = False) -> ATmaView | str:
    """The tensor map of `v`'s tiles of `rows` x `cols` elements: `col_axes` (A's K: the
    contiguous one) by `row_axes` (A's M), `batch_axes` a box of 1 each (module docstring;
    the attention operands Q, K and V use it too), or why TMA cannot copy them.
    `split_rows`: rows may be two strided pieces (GQA's query heads of a kv head over the
    positions of a [B, S, H, D] tensor) when tiles never straddle the outer one (the inner
    length a multiple of `rows`): the outer piece is a map dimension of box 1."""
    if source is not None:
        src = source
        axes = [[(sz, math.prod(v.shape[i + 1:]))] for i, sz in enumerate(v.shape)]
    else:
        got = strided_layout(v, producers)
        if isinstance(got, str):
            return got
        src, axes = got
    isz = src.dtype.itemsize
    ks = _merge([f for i in col_axes for f in axes[i]])
    ms = _merge([f for i in row_axes for f in axes[i]])
    bs = _merge([f for i in batch_axes for f in axes[i]])
    if not ks or ks[-1][1] != 1:
        return f"{what}'s K axis is not contiguous in memory ({what} is read transposed)"
    kd = ks[-1][0]
    if len(ks) > 1 and kd % cols:
        return f"{what}'s K is {kd}-element pieces {ks[0][1] * isz} bytes apart, not whole " \
               f"{cols}-element tiles"
    two = split_rows and len(ms) == 2 and ms[1][0] % rows == 0
    if len(ms) > 1 and not two:
        return f"{what}'s rows are not one strided dimension" + (
            f" (nor two whose inner one holds whole {rows}-row tiles)" if split_rows else "")
    m_dims = list(reversed(ms)) if ms else [(1, kd)]    # innermost first
    dims = (kd, *(s for s, _t in m_dims), *(s for s, _t in reversed(ks[:-1])),
            *(s for s, _t in reversed(bs)))
    strides_b = (*(t * isz for _s, t in m_dims), *(t * isz for _s, t in reversed(ks[:-1])),
                 *(t * isz for _s, t in reversed(bs)))
    if any(t % 16 for t in strides_b):
        return f"{what}'s view has byte strides {list(strides_b)}: TMA needs 16-byte multiples"
    if len(dims) > 5:
        return f"{what}'s view needs a rank-{len(dims)} tensor map (TMA takes 5)"
    box = (cols, rows, *([1] * (len(dims) - 2)))
    return ATmaView(src, dims, strides_b, box, kd, tuple(s for s, _t in ks[:-1]),
                    tuple(s for s, _t in bs), ms[1][0] if two else 0)


__all__ = ["ATmaView", "a_view", "strided_layout", "tile_view"]
