"""Plans of the one-thread-per-element and row-walking kinds: pointwise, source, gather,
movement, scan, row and column reductions (matmul and attention: planners_tiled).

Each `plan_*(group, spec) -> KernelPlan` makes the decisions its lowering emits
(grid, block, split factors, the row cache) with the lowering's own functions,
and states what the kernels load (hal.lowering.traffic). The lowering reads these
decisions from the plan; the fusion cost model prices the plan.
"""

from __future__ import annotations

import math

from hal.devices.spec import DeviceSpec
from hal.dtypes import bool_, compute_dtype, i32, i64
from hal.lowering.context import INT32_LIMIT, c_identifier
from hal.lowering.plan import (
    NO_HINTS,
    GroupKind,
    KernelPlan,
    Launch,
    MemoryLevel,
    OperandLoad,
)
from hal.lowering.tiling import (
    auto_split,
    cdiv,
    elementwise_block,
    elementwise_grid,
    round_up,
    row_block,
)
from hal.lowering.traffic import (
    fmt_bytes,
    issued_reads,
    node_flops,
    row_pass_reads,
    ungathered_table_bytes,
)
from hal.ops import Category, get_op


def hints_of(group):
    return getattr(group, "hints", None) or NO_HINTS


def base_registers(group) -> int:
    """32-bit registers per thread of a fused expression: index math, one per live value
    (roughly the group's inputs plus a quarter of its nodes)."""
    return 16 + 2 * len(group.inputs) + math.ceil(len(group.nodes) / 4)


def sources(group, name: str) -> list:
    """The group inputs value `name` is computed from (itself when it is one)."""
    inputs = {v.name: v for v in group.inputs}
    producer = {o.name: n for n in group.nodes for o in n.outputs}
    out, stack, seen = [], [name], set()
    while stack:
        x = stack.pop()
        if x in seen:
            continue
        seen.add(x)
        if x in inputs:
            out.append(inputs[x])
        elif x in producer:
            stack.extend(v.name for v in reversed(producer[x].inputs))
    return out


def by_input(group, per_value: dict[str, float]) -> dict[str, float]:
    """Bytes keyed by any group value, re-keyed by group input: a value computed inside the
    group (a cast operand, a normalised A) passes its bytes to the inputs it is computed
    from, in proportion to their sizes (the total is kept exactly)."""
    out: dict[str, float] = {}
    for name, b in per_value.items():
        src = sources(group, name)
        if not src:
            continue
        total = sum(v.type.nbytes for v in src) or 1
        given = 0.0
        for v in src[:-1]:
            part = b * v.type.nbytes // total if isinstance(b, int) else b * v.type.nbytes / total
            out[v.name] = out.get(v.name, 0) + part
            given += part
        out[src[-1].name] = out.get(src[-1].name, 0) + b - given
    return out


def operand_loads(group, issued: dict[str, float], extra_dram: dict[str, int] | None = None,
                  staged: dict[str, MemoryLevel] | None = None) -> tuple[OperandLoad, ...]:
    """One OperandLoad per group input: `issued` bytes as walked, DRAM bytes = the input
    once (a gathered table: the rows gathered) plus `extra_dram` re-reads (keyed by any
    group value: see by_input); `staged` inputs pass through shared memory."""
    saved = ungathered_table_bytes(group)
    extra = by_input(group, extra_dram or {})
    staged = {v.name: lvl for name, lvl in (staged or {}).items()
              for v in sources(group, name)}
    return tuple(OperandLoad(v.name, v.type.nbytes, int(round(issued.get(v.name, 0.0))),
                             v.type.nbytes - saved.get(v.name, 0) + int(extra.get(v.name, 0)),
                             staged.get(v.name, MemoryLevel.GLOBAL))
                 for v in group.inputs)


def written_bytes(group) -> int:
    return sum(v.type.nbytes for v in group.outputs)


def group_flops(group) -> float:
    return sum(node_flops(n) for n in group.nodes)


def default_blocks(group) -> int:
    """Blocks the bandwidth term assumes for a one-thread-per-element kernel."""
    out_numel = max((o.type.numel for o in group.outputs), default=1)
    return max(1, cdiv(out_numel, 256))


def launch_name(group, suffix: str = "") -> str:
    return c_identifier(f"{group.name}{suffix}")


# --------------------------------------------------------------------------- pointwise

def output_spaces(group) -> list[tuple[tuple[int, ...], list]]:
    """(shape, outputs) per distinct output shape, in output order: one kernel each."""
    by_shape: dict[tuple[int, ...], list] = {}
    for v in group.outputs:
        by_shape.setdefault(tuple(v.shape), []).append(v)
    return list(by_shape.items())


def elementwise_launches(group, spec: DeviceSpec) -> tuple[Launch, ...]:
    spaces = output_spaces(group)
    out = []
    for i, (shape, _outs) in enumerate(spaces):
        numel = math.prod(shape)
        if numel == 0:
            continue
        block = elementwise_block(spec)
        out.append(Launch(launch_name(group, "" if len(spaces) == 1 else f"_{i}"),
                          (elementwise_grid(numel, block, spec), 1, 1), block))
    return tuple(out)


def plan_pointwise(group, spec: DeviceSpec) -> KernelPlan:
    """One thread per output element (pointwise, source, gather and index-math movement):
    a value reached twice at the same coordinates is loaded once in a pointwise kernel
    (the builder's cache)."""
    issued = issued_reads(group, by_coords=group.kind == GroupKind.POINTWISE)
    launches = elementwise_launches(group, spec)
    return KernelPlan(group.name, GroupKind(group.kind), "thread_per_element", launches,
                      registers=base_registers(group), loads=operand_loads(group, issued),
                      written_bytes=written_bytes(group), flops=group_flops(group),
                      blocks=default_blocks(group))


# --------------------------------------------------------------------------- movement

def transpose_geometry(group, spec: DeviceSpec):
    """(x, out, perm, ax_x, ax_y, rest, nrest, t, rows) of a transpose that moves the
    innermost axis (tiled through shared memory), or None for an index-math copy."""
    from hal.lowering.movement import GRID_Z_LIMIT
    from hal.lowering.tiling import transpose_tile

    if len(group.nodes) != 1 or group.nodes[0].op != "transpose":
        return None
    node = group.nodes[0]
    x, out = node.inputs[0], node.outputs[0]
    perm, r = tuple(node.attrs["perm"]), x.rank
    ax_x, ax_y = r - 1, (perm[-1] if perm else r - 1)
    rest = [a for a in range(r) if a not in (ax_x, ax_y)]
    nrest = math.prod(x.shape[a] for a in rest)
    if r < 2 or ax_x == ax_y or nrest > GRID_Z_LIMIT or math.prod(x.shape) == 0:
        return None
    t, rows = transpose_tile(x.dtype.itemsize, spec)
    return x, out, perm, ax_x, ax_y, rest, nrest, t, rows


def plan_movement(group, spec: DeviceSpec) -> KernelPlan:
    geo = transpose_geometry(group, spec)
    if geo is None:
        return plan_pointwise(group, spec)
    x, _out, _perm, ax_x, ax_y, _rest, nrest, t, rows = geo
    grid = (cdiv(x.shape[ax_x], t), cdiv(x.shape[ax_y], t), nrest)
    issued = issued_reads(group)
    return KernelPlan(group.name, GroupKind.MOVEMENT, "smem_transpose",
                      (Launch(launch_name(group), grid, t * rows),),
                      tiles=(("tile", t), ("rows", rows)), registers=base_registers(group),
                      loads=operand_loads(group, issued, staged={x.name: MemoryLevel.SHARED}),
                      written_bytes=written_bytes(group), flops=group_flops(group),
                      blocks=default_blocks(group), details=(("padding", 1),))


# --------------------------------------------------------------------------- scan

def plan_scan(group, spec: DeviceSpec) -> KernelPlan:
    scans = [n for n in group.nodes if get_op(n.op).category is Category.SCAN]
    launches: tuple[Launch, ...] = ()
    details: tuple = ()
    if len(scans) == 1:
        node = scans[0]
        shape = tuple(node.inputs[0].shape)
        axis = node.attrs["axis"] % len(shape)
        rows = math.prod(d for i, d in enumerate(shape) if i != axis)
        block = elementwise_block(spec)
        if rows and shape[axis]:
            launches = (Launch(launch_name(group), (cdiv(rows, block), 1, 1), block),)
        details = (("rows", rows), ("length", shape[axis]))
    return KernelPlan(group.name, GroupKind.SCAN, "thread_per_row_sequential", launches,
                      registers=base_registers(group),
                      loads=operand_loads(group, issued_reads(group)),
                      written_bytes=written_bytes(group), flops=group_flops(group),
                      blocks=default_blocks(group), details=details)


# --------------------------------------------------------------------------- reductions

def _index_dtype(group, spec: DeviceSpec):
    sizes = [math.prod(v.shape) for v in (*group.inputs, *(o for n in group.nodes
                                                            for o in n.outputs))]
    return i64 if spec.index_bits == 64 or any(s >= INT32_LIMIT for s in sizes) else i32


def accumulator_bytes(group, r, spec: DeviceSpec) -> int:
    """Bytes of one reduction's accumulators (a value, and an index for argmax/argmin)."""
    from hal.lowering.reduction import ARG_REDUCTIONS

    x = r.inputs[0]
    cd = bool_ if x.dtype.is_bool else compute_dtype(x.dtype)
    return cd.itemsize + (_index_dtype(group, spec).itemsize if r.op in ARG_REDUCTIONS else 0)


def plan_reduction(group, spec: DeviceSpec) -> KernelPlan:
    """Row reductions: a block per row (row cached in shared memory when it fits, else
    re-read per pass) or split over k blocks per row; column reductions: a thread per row."""
    from hal.lowering.reduction import analyse, row_cache_fits, row_source

    lay = analyse(group)
    kind = GroupKind(group.kind)
    reds = [r for ph in lay.phases for r in ph]
    regs = base_registers(group) + 4 * len(reds)
    written, flops = written_bytes(group), group_flops(group)
    common = dict(registers=regs, written_bytes=written, flops=flops)
    details: list = [("rows", lay.rows), ("row_len", lay.row_len), ("phases", len(lay.phases))]
    if kind == GroupKind.COLUMN_REDUCTION:
        block = elementwise_block(spec)
        launches = (Launch(launch_name(group), (cdiv(lay.rows, block), 1, 1), block),) \
            if lay.rows else ()
        stored = [row_source(v, lay.full_shape) for v in lay.row_outputs]
        issued = row_pass_reads(group, lay.phases, stored, lay.scalar_outputs, set())
        return KernelPlan(group.name, kind, "thread_per_row", launches,
                          loads=operand_loads(group, issued), blocks=default_blocks(group),
                          details=tuple(details), **common)
    block = row_block(lay.row_len, spec)
    splittable = len(lay.phases) == 1 and len(lay.phases[0]) == 1 and not lay.row_outputs
    k = hints_of(group).split
    if k is None:
        k = auto_split(lay.rows, lay.row_len, block, spec) if splittable else 1
    if lay.rows == 0:
        return KernelPlan(group.name, kind, "block_per_row", (), loads=operand_loads(
            group, {}), blocks=1, details=tuple(details), **common)
    if k > 1 and splittable:
        chunk = round_up(cdiv(lay.row_len, k), block)
        k = cdiv(lay.row_len, chunk)
        block2 = max(spec.warp_size, min(spec.max_threads_per_block,
                                         round_up(k, spec.warp_size)))
        partials = lay.rows * k * accumulator_bytes(group, reds[0], spec)
        issued = row_pass_reads(group, lay.phases, [], lay.scalar_outputs, set())
        return KernelPlan(
            group.name, kind, "split",
            (Launch(launch_name(group, "_partial"), (lay.rows, k, 1), block, "partial"),
             Launch(launch_name(group, "_final"), (lay.rows, 1, 1), block2, "final")),
            loads=operand_loads(group, issued), scratch_bytes=partials,
            scratch_issued_bytes=2 * partials, blocks=lay.rows * k,
            details=(*details, ("split", k), ("chunk", chunk)),
            reasons=(f"split: {lay.rows} rows for {spec.compute_units} units, {k} blocks "
                     f"per row, partials through scratch",),
            notes=(f"split over {k} blocks per row: {fmt_bytes(2 * partials)} of partials",),
            **common)
    passes = len(lay.phases) + (1 if lay.row_outputs else 0)
    cached = row_cache_fits(group, lay, block, spec)
    row_cache = "shared" if cached else ("global" if passes > 1 else "none")
    full = {v.name for v in group.inputs if tuple(v.shape) == lay.full_shape}
    stored = [row_source(v, lay.full_shape) for v in lay.row_outputs]  # as the kernel does
    issued = row_pass_reads(group, lay.phases, stored, lay.scalar_outputs,
                            full if cached else set())
    # DRAM: a row re-read from global memory (row_cache "global") comes from L2 when the
    # rows in flight fit there, else from DRAM once more per pass
    on_chip = row_bytes_on_chip(group, lay.row_len)
    extra: dict[str, int] = {}
    reasons, notes = [], []
    if row_cache == "shared":
        reasons.append(f"one pass: a row needs {fmt_bytes(on_chip)}, "
                       f"{fmt_bytes(spec.shared_mem_per_block)} of shared memory per block on "
                       f"{spec.name}")
    elif row_cache == "global":
        reasons.append(f"{passes} passes over each row: a row needs {fmt_bytes(on_chip)}, "
                       f"shared memory per block is {fmt_bytes(spec.shared_mem_per_block)} on "
                       f"{spec.name}")
        in_flight = on_chip * min(lay.rows, spec.compute_units * 2)
        if in_flight > spec.l2_bytes:
            extra = {v.name: (passes - 1) * v.type.nbytes for v in group.inputs
                     if v.type.numel >= lay.row_len}
            notes.append(f"{passes} passes over rows that fit neither on chip nor in L2")
        else:
            notes.append(f"{passes} passes; re-reads hit L2")
    staged = {n: MemoryLevel.SHARED for n in full} if cached else {}
    return KernelPlan(group.name, kind, "block_per_row",
                      (Launch(launch_name(group), (lay.rows, 1, 1), block),),
                      loads=operand_loads(group, issued, extra, staged), blocks=lay.rows,
                      details=(*details, ("row_passes", passes), ("row_cache", row_cache),
                               ("row_bytes", on_chip)),
                      reasons=tuple(reasons), notes=tuple(notes), **common)


def row_bytes_on_chip(group, row: int) -> int:
    """Bytes to keep one row of every row-domain input on chip, in the compute dtype."""
    row = max(row, 1)
    per_elem = 0
    for v in group.inputs:
        if v.type.is_static and v.type.numel >= row and v.type.numel % row == 0:
            per_elem += compute_dtype(v.dtype).itemsize
    return row * max(per_elem, 4)
