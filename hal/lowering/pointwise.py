"""Lowering of pointwise groups (and source, gather and generic movement groups).

One thread per output element, 1-D blocks of `elementwise_block(spec)` threads,
a grid sized to fill the device (both from the plan: planners.plan_pointwise) and a uniform grid-stride loop whose last
iteration is masked (`if (i < numel)`). Each element unravels its flat index
into coordinates; `ScalarBuilder` turns the group's nodes into the scalar
program (broadcasts are stride-0 loads, transposes permuted strides, slices
offsets, pad/concat masked loads). Outputs of different shapes get one kernel
each. Index math is i32 unless an extent reaches 2^31.
"""

from __future__ import annotations

import math

from hal.devices.spec import DeviceSpec
from hal.ir.graph import Value
from hal.kernel.ir import Const, For, If, Kernel, Stmt, Store, Var
from hal.lowering.context import KernelContext, index_dtype_for
from hal.lowering.expr import ScalarBuilder, to_storage
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions
from hal.lowering.plan import KernelPlan, Launch
from hal.lowering.tiling import cdiv


def group_sizes(group) -> list[int]:
    vals = [*group.inputs, *(v for n in group.nodes for v in n.outputs)]
    return [math.prod(v.shape) for v in vals]


def lower_elementwise_space(group, plan: KernelPlan, launch: Launch, spec: DeviceSpec,
                            shape: tuple[int, ...], outs: list[Value],
                            options: LoweringOptions = DEFAULT_OPTIONS) -> Kernel:
    numel = math.prod(shape)
    ctx = KernelContext(launch.name, spec, index_dtype_for(group_sizes(group), spec), options)
    block, grid = launch.block, launch.grid[0]
    iters = cdiv(numel, block * grid)
    loop: list[Stmt] = []
    it = ctx.var("it", ctx.idx)
    base = ctx.add(ctx.mul(ctx.bid(), block), ctx.tid())
    step = block if options.fault("grid_stride_block_step") else grid * block  # self-test
    flat = ctx.declare(loop, "i", ctx.add(ctx.mul(it, step), base) if iters > 1 else base)
    inner: list[Stmt] = []
    coords = tuple(c if isinstance(c, (Var, Const)) else ctx.declare(inner, f"c{d}", c)
                   for d, c in enumerate(ctx.unravel(flat, shape)))
    b = ScalarBuilder(ctx, group.nodes, inner)
    for v in outs:
        e = b.value(v, coords)
        param, _ = b.store_index(v, coords)  # contiguous output: its flat index is `flat`
        inner.append(Store(param, flat, to_storage(e, v.dtype)))
    if iters * grid * block != numel:
        limit = numel + 1 if options.fault("off_by_one_mask") else numel  # self-test
        loop.append(If(flat.lt(ctx.c(limit)), inner))  # the tail mask
    else:
        loop.extend(inner)
    body: list[Stmt] = ([For(it, ctx.c(0), ctx.c(iters), ctx.c(1), loop)] if iters > 1
                        else loop)
    return ctx.kernel(body, launch.grid, block, group, plan)


def lower_pointwise(group, plan: KernelPlan, spec: DeviceSpec,
                    options: LoweringOptions = DEFAULT_OPTIONS) -> list[Kernel]:
    """Emit `plan` (hal.lowering.planners.plan_pointwise): one kernel per output shape."""
    from hal.lowering.planners import output_spaces

    spaces = [(shape, outs) for shape, outs in output_spaces(group) if math.prod(shape)]
    return [lower_elementwise_space(group, plan, launch, spec, shape, outs, options)
            for (shape, outs), launch in zip(spaces, plan.launches, strict=True)]
