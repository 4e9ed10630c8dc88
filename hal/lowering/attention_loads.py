"""Staging attention tiles in shared memory: vector copies where the layout allows, else
element by element through the group's scalar program.

Both attention kernels (SIMT flash_body and the matrix-unit emitter) stage K and V tiles
of Bc keys x the head dim per key tile. When the operand is a group input itself (no
prologue to evaluate), stored in the shared tile's dtype, with the head dim as its last,
contiguous axis, a tile row is a run of contiguous elements: `stage_tile` copies it with
`VecCopy` statements of `vector_width` elements (16 bytes where the head dim and the
tile's row stride allow: LDG.E.128 on NVIDIA, global_load_dwordx4 on AMD; 8, 4 or 2 bytes
for a head dim that is not a multiple of 16 bytes: the tail path; masked, zero-filled
chunks for keys past T and for the padding columns of the matrix-unit tiles). Otherwise
(a prologue such as a rotary embedding, a cast, a transposed layout) the tile is loaded
element by element (`expr.cooperative_tile_load`), evaluating the prologue. The bytes read
are the same either way: the plan's load counts do not depend on the choice.
"""

from __future__ import annotations

from collections.abc import Callable

from hal.dtypes import DType
from hal.ir.graph import Value
from hal.kernel.ir import Expr, For, If, Select, Stmt, VecCopy
from hal.lowering.context import KernelContext, contiguous_strides
from hal.lowering.expr import ScalarBuilder, cooperative_tile_load

VECTOR_BYTES = 16


def stored_source(group, value: Value) -> Value | None:
    """The group input whose elements `value` is in the same (row-major) order: the value
    itself, or the input a chain of reshapes inside the group views (the composite's GQA
    reshape of q); None for anything else."""
    inputs = {v.name: v for v in group.inputs}
    producer = {o.name: n for n in group.nodes for o in n.outputs}
    while value.name not in inputs:
        n = producer.get(value.name)
        if n is None or n.op != "reshape":
            return None
        value = n.inputs[0]
    return inputs[value.name]


def vector_width(group, value: Value, col_axis: int, cols: int, ld: int, sdt: DType) -> int:
    """Elements per vector copy of a tile whose columns run along `value`'s axis
    `col_axis` (rows of `cols` columns, row stride `ld` in shared memory): the widest power
    of two within 16 bytes dividing the head dim, the tile's columns and its row stride
    (so no vector straddles two rows and every access is aligned), or 1 (element by
    element) when `value` is not a group input of the shared tile's dtype with that axis
    last (a reshape of one counts: `stored_source`)."""
    if stored_source(group, value) is None or value.dtype != sdt or \
            col_axis != value.rank - 1 or value.rank == 0:
        return 1
    d = value.shape[-1]
    w = VECTOR_BYTES // sdt.itemsize
    while w > 1 and (d % w or cols % w or ld % w):
        w //= 2
    return w


def stage_tile(ctx: KernelContext, builder: ScalarBuilder, stmts: list[Stmt], buf: str,
               rows: int, cols: int, ld: int, threads: int, value: Value, sdt: DType,
               coords_of: Callable, width: int, group=None) -> None:
    """Load a rows x cols tile of `value` into shared `buf` (row stride `ld`): by vector
    copies of `width` elements (`vector_width` > 1) or element by element.
    `coords_of(stmts, r, c)` gives the coordinates in `value` of tile element (r, c) and
    whether it exists (no key past T, no column past the head dim); a missing element is
    zero in the tile. `group`: the kernel's group (the vector path's source)."""
    tid = ctx.tid()
    if width == 1:
        def element(st, r, c, _e):
            coords, valid = coords_of(st, r, c)
            return coords, valid, ctx.add(ctx.mul(r, ld), c)

        cooperative_tile_load(ctx, builder, stmts, buf, rows, cols, threads, tid, value, sdt,
                              element)
        return
    per_row = cols // width
    total = rows * per_row
    # a reshape keeps the row-major order: value's linear index is its source's
    param = ctx.buffer(stored_source(group, value), "input")
    strides = contiguous_strides(tuple(value.shape))
    it = ctx.var("l", ctx.idx)
    loop: list[Stmt] = []
    e = ctx.declare(loop, "e", ctx.add(ctx.mul(it, threads), tid))
    inner: list[Stmt] = []
    r = ctx.declare(inner, "r", ctx.div(e, per_row))
    c = ctx.declare(inner, "c", ctx.mul(ctx.mod(e, per_row), width))
    coords, valid = coords_of(inner, r, c)
    full = ctx.declare(inner, "full", valid)
    gidx: Expr = ctx.declare(inner, "gi", Select(full, ctx.linear(coords, strides), ctx.c(0)))
    inner.append(VecCopy(buf, ctx.add(ctx.mul(r, ld), c), param, gidx, width, full))
    loop.extend(inner if total % threads == 0 else [If(e.lt(ctx.c(total)), inner)])
    stmts.append(For(it, ctx.c(0), ctx.c(-(-total // threads)), ctx.c(1), loop))
