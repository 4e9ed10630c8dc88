"""Lowering of movement groups.

A transpose that moves the innermost axis goes through shared memory: a
T x T tile (T = the spec's warp size, shrunk only if the tile does not fit
shared memory) with one padding column (row stride T + 1) so that the
column-wise reads hit distinct banks. A block of T x rows threads loads the
tile with reads coalesced along the input's contiguous axis, barriers, and
writes it transposed with stores coalesced along the output's contiguous axis;
the remaining axes go on grid axis z. Every other movement group (slice,
pad, concat, reshape copies, transposes that keep the innermost axis) is a
pointwise kernel whose loads carry the index math (hal.lowering.pointwise).
"""

from __future__ import annotations

from hal.devices.spec import DeviceSpec
from hal.kernel.ir import Barrier, Binary, For, If, Kernel, Load, Stmt, Store
from hal.lowering.context import KernelContext, contiguous_strides, index_dtype_for
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions
from hal.lowering.plan import KernelPlan
from hal.lowering.pointwise import group_sizes, lower_pointwise

GRID_Z_LIMIT = 65535


def _tiled_transpose(group, plan: KernelPlan, spec: DeviceSpec,
                     options: LoweringOptions) -> Kernel:
    from hal.lowering.planners import transpose_geometry

    x, out, perm, ax_x, ax_y, rest, _nrest, _t, _rows = transpose_geometry(group, spec)
    t, rows = plan.tile_sizes["tile"], plan.tile_sizes["rows"]
    r = x.rank
    sx, sy = x.shape[ax_x], x.shape[ax_y]
    ctx = KernelContext(group.name, spec, index_dtype_for(group_sizes(group), spec), options)
    src = ctx.buffer(x, "input")
    dst = ctx.buffer(out, "output")
    tile = ctx.shared_buffer("tile", x.dtype, t * (t + 1))
    body: list[Stmt] = []
    tx = ctx.declare(body, "tx", ctx.mod(ctx.tid(), t))
    ty = ctx.declare(body, "ty", ctx.div(ctx.tid(), t))
    x0 = ctx.declare(body, "x0", ctx.mul(ctx.bid("x"), t))
    y0 = ctx.declare(body, "y0", ctx.mul(ctx.bid("y"), t))
    rc = [c if not isinstance(c, Binary) else ctx.declare(body, "z", c)
          for c in ctx.unravel(ctx.bid("z"), [x.shape[a] for a in rest])]
    in_strides = contiguous_strides(x.shape)
    out_strides = contiguous_strides(out.shape)
    out_axis = {a: perm.index(a) for a in range(r)}
    p = ctx.var("p", ctx.idx)

    def coords_in(yv, xv):
        c = [ctx.c(0)] * r
        for a, v in zip(rest, rc, strict=True):
            c[a] = v
        c[ax_y], c[ax_x] = yv, xv
        return c

    # load: thread (tx, ty + p*rows) reads input (y0 + ty + p*rows, x0 + tx)
    load: list[Stmt] = []
    ly = ctx.declare(load, "ly", ctx.add(ty, ctx.mul(p, rows)))
    gy = ctx.declare(load, "gy", ctx.add(y0, ly))
    gx = ctx.declare(load, "gx", ctx.add(x0, tx))
    ok = Binary("logical_and", gy.lt(ctx.c(sy)), gx.lt(ctx.c(sx)))
    val = Load(src, ctx.linear(coords_in(gy, gx), in_strides), x.dtype)
    load.append(If(ok, [Store(tile, ctx.add(ctx.mul(ly, t + 1), tx), val)]))
    body.append(For(p, ctx.c(0), ctx.c(t // rows), ctx.c(1), load))
    body.append(Barrier())
    # store: thread writes output element whose last axis (input ax_y) is y0 + tx
    q = ctx.var("q", ctx.idx)
    store: list[Stmt] = []
    lx = ctx.declare(store, "lx", ctx.add(ty, ctx.mul(q, rows)))
    oy = ctx.declare(store, "oy", ctx.add(y0, tx))
    ox = ctx.declare(store, "ox", ctx.add(x0, lx))
    ok2 = Binary("logical_and", oy.lt(ctx.c(sy)), ox.lt(ctx.c(sx)))
    ci = coords_in(oy, ox)
    co = [ci[perm[d]] for d in range(r)]
    assert all(out_axis[perm[d]] == d for d in range(r))
    pitch = t if options.fault("transpose_tile_pitch") else t + 1  # self-test hook
    v = Load(tile, ctx.add(ctx.mul(tx, pitch), lx), x.dtype)
    store.append(If(ok2, [Store(dst, ctx.linear(co, out_strides), v)]))
    body.append(For(q, ctx.c(0), ctx.c(t // rows), ctx.c(1), store))
    return ctx.kernel(body, plan.grid, plan.block, group, plan)


def lower_movement(group, plan: KernelPlan, spec: DeviceSpec,
                   options: LoweringOptions = DEFAULT_OPTIONS) -> list[Kernel]:
    """Emit `plan` (hal.lowering.planners.plan_movement)."""
    if plan.strategy == "smem_transpose":
        return [_tiled_transpose(group, plan, spec, options)]
    return lower_pointwise(group, plan, spec, options)
