"""Lowering of scan groups (cumsum with an elementwise prologue and epilogue).

One thread per row (every position except the scanned axis) walks the axis
sequentially, accumulating in the compute dtype (f32 for 16-bit floats) and
storing each prefix. This is simple and exact in order (the same summation
order as the reference); a work-efficient block scan is future work, and
rows shorter than a few thousand elements are cheap this way.
"""

from __future__ import annotations

import math

from hal.devices.spec import DeviceSpec
from hal.dtypes import compute_dtype
from hal.errors import UnsupportedError
from hal.kernel.ir import Assign, Cast, Declare, For, If, Kernel, Stmt, Store
from hal.lowering.context import KernelContext, index_dtype_for
from hal.lowering.expr import ScalarBuilder, rounded, to_storage, zero_of
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions
from hal.lowering.plan import KernelPlan
from hal.lowering.pointwise import group_sizes
from hal.ops import Category, get_op


def lower_scan(group, plan: KernelPlan, spec: DeviceSpec,
               options: LoweringOptions = DEFAULT_OPTIONS) -> list[Kernel]:
    """Emit `plan` (hal.lowering.planners.plan_scan)."""
    scans = [n for n in group.nodes if get_op(n.op).category is Category.SCAN]
    if len(scans) != 1 or scans[0].op != "cumsum":
        raise UnsupportedError(f"group {group.name}: expects exactly one cumsum, got "
                               f"{[n.op for n in scans]}", hint="one scan per group")
    node = scans[0]
    x, out = node.inputs[0], node.outputs[0]
    shape = tuple(x.shape)
    axis = node.attrs["axis"] % len(shape)
    length = shape[axis]
    row_shape = tuple(d for i, d in enumerate(shape) if i != axis)
    rows = math.prod(row_shape)
    for v in group.outputs:
        if tuple(v.shape) != shape:
            raise UnsupportedError(f"group {group.name}: output %{v.name} is not shaped like "
                                   f"the scan {list(shape)}", hint="split the group")
    if not plan.launches:
        return []
    ctx = KernelContext(group.name, spec, index_dtype_for(group_sizes(group), spec), options)
    block, grid = plan.block, plan.grid[0]
    body: list[Stmt] = []
    row = ctx.declare(body, "row", ctx.add(ctx.mul(ctx.bid(), block), ctx.tid()))
    guarded: list[Stmt] = []
    rc = ctx.unravel(row, row_shape)
    acc_dt = compute_dtype(x.dtype)
    acc = ctx.var("acc", acc_dt)
    guarded.append(Declare(acc, zero_of(acc_dt)))
    t = ctx.var("t", ctx.idx)
    step: list[Stmt] = []
    last = length if options.fault("scan_reverse_off_by_one") else length - 1  # self-test
    pos = ctx.declare(step, "pos", ctx.c(last) - t if node.attrs["reverse"] else t)
    coords = (*rc[:axis], pos, *rc[axis:])
    b = ScalarBuilder(ctx, group.nodes, step)
    term = b.value(x, coords)
    term = Cast(term, acc_dt) if term.dtype != acc_dt else term
    if not node.attrs["exclusive"]:
        step.append(Assign(acc, acc + term))
    b.env[out.name] = (coords, ctx.declare(step, out.name,
                                           rounded(acc, out.dtype, options)))
    for v in group.outputs:
        e = b.value(v, coords)
        param, idx = b.store_index(v, coords)
        step.append(Store(param, idx, to_storage(e, v.dtype)))
    if node.attrs["exclusive"]:
        step.append(Assign(acc, acc + term))
    guarded.append(For(t, ctx.c(0), ctx.c(length), ctx.c(1), step))
    if grid * block != rows:
        body.append(If(row.lt(ctx.c(rows)), guarded))
    else:
        body.extend(guarded)
    return [ctx.kernel(body, plan.grid, block, group, plan)]
