"""Lowering of matmul groups: one dot_general/matmul (or several sharing A), its operand
prologue, its epilogue.

Tiled through shared memory (the classic SGEMM structure):
* a block computes a BM x BN tile of (batch, M, N), batch on grid axis z,
  N tiles on x, M tiles on y; each of its (BM/TM)*(BN/TN) threads owns a
  TM x TN micro-tile of accumulators in a per-thread LocalBuffer;
* per K step of BK, the block loads the A tile (BM x BK) and the B tile
  (BK x BN) into shared memory, stored k-major, consecutive threads reading
  consecutive elements of each operand's contiguous dim; out-of-range
  elements load as 0 (masked), so no shape has to divide the tiles;
  barrier; each thread multiplies TM A values by TN B values for each of the
  BK steps; barrier before the next tiles overwrite shared memory;
* tiles come from `tiling.matmul_tiles(spec)`: (BM + BN) * BK elements within
  shared_mem_per_block, threads a whole number of warps within
  max_threads_per_block, TM*TN + TM + TN + 16 registers within
  max_registers_per_thread; `schedule={"tiles": {...}}` overrides;
* operands may be any expression of their coordinates (a transpose or cast in
  the group, matmul's transpose flags, dot_general's dimension numbers): the
  loads go through the shared ScalarBuilder, so transposed operands are
  strided loads;
* accumulation in the contraction's acc dtype (f32 for 16-bit inputs), the
  elementwise epilogue (bias via broadcast_to, activation, residual, scale,
  cast) applied to each accumulator before its store;
* sibling contractions ("dual GEMM", e.g. SwiGLU's gate and up projections,
  see `sibling_contractions`): k contractions reading the same A with equal
  output shapes share the A tile; each has its own B tile in shared memory and
  its own accumulator micro-tile per thread (tiles are chosen for k B tiles and
  k micro-tiles), and the epilogue sees all k accumulators of an output element
  (silu(gate) * up), storing only the group's outputs.
"""

from __future__ import annotations

import math

from hal.devices.spec import DeviceSpec
from hal.dtypes import compute_dtype
from hal.errors import UnsupportedError
from hal.ir.graph import Node
from hal.kernel.ir import (
    Barrier,
    Binary,
    Cast,
    Expr,
    For,
    If,
    Kernel,
    Load,
    Stmt,
    Store,
)
from hal.lowering import faults
from hal.lowering.context import KernelContext, index_dtype_for
from hal.lowering.expr import (
    ScalarBuilder,
    cooperative_tile_load,
    rounded,
    to_storage,
    zero_of,
)
from hal.lowering.pointwise import group_sizes
from hal.lowering.registry import register_lowering
from hal.lowering.tiling import MatmulTiles, cdiv, group_rows, matmul_tiles
from hal.ops import Category, get_op


def contraction_dims(node: Node):
    """(lhs_batch, rhs_batch, lhs_contract, rhs_contract, lhs_free, rhs_free) of a contraction."""
    a, b = node.inputs
    if node.op == "matmul":
        ra, rb = a.rank, b.rank
        batch = tuple(range(ra - 2))
        lc, lf = (ra - 2, ra - 1) if node.attrs["transpose_a"] else (ra - 1, ra - 2)
        rc, rf = (rb - 1, rb - 2) if node.attrs["transpose_b"] else (rb - 2, rb - 1)
        return batch, tuple(range(rb - 2)), (lc,), (rc,), (lf,), (rf,)
    from hal.ops.contraction import dot_general_dims

    return dot_general_dims(a.rank, b.rank, node.attrs)


def _scatter(rank: int, parts: list[tuple[tuple[int, ...], list[Expr]]]) -> tuple[Expr, ...]:
    out: list[Expr | None] = [None] * rank
    for dims, coords in parts:
        for d, c in zip(dims, coords, strict=True):
            out[d] = c
    return tuple(out)  # type: ignore[arg-type]


def sibling_contractions(nodes) -> list[Node] | str:
    """The contractions of a matmul group, or why they cannot share one kernel.

    Several contractions fit one kernel (a "dual GEMM", e.g. a SwiGLU's gate and up
    projections) when they read the same A value with the same dimension structure,
    accumulate in the same dtype, produce equally shaped results and none reads another's
    result (a chain of contractions is an attention, matched separately)."""
    from hal.ops.contraction import accumulation_dtype

    dots = [n for n in nodes if get_op(n.op).category is Category.CONTRACTION]
    if len(dots) <= 1:
        return dots
    first = dots[0]
    dims0, shape0 = contraction_dims(first), tuple(first.outputs[0].shape)
    acc0 = accumulation_dtype(first.inputs[0].dtype, first.attrs)
    for d in dots[1:]:
        if d.inputs[0].name != first.inputs[0].name:
            return "contractions in one kernel must share their left operand"
        if contraction_dims(d) != dims0 or tuple(d.outputs[0].shape) != shape0 \
                or d.inputs[1].rank != first.inputs[1].rank:
            return (f"sibling contractions shaped {list(shape0)} and "
                    f"{list(d.outputs[0].shape)} differ (one tile grid per kernel)")
        if accumulation_dtype(d.inputs[0].dtype, d.attrs) != acc0:
            return "sibling contractions accumulate in different dtypes"
    ids = {id(d) for d in dots}
    for d in dots:  # does any contraction (transitively) read another's result?
        seen = {o.name for o in d.outputs}
        for n in nodes:
            if n is d:
                continue
            if any(v.name in seen for v in n.inputs):
                if id(n) in ids:
                    return "one contraction reads another's result (attention is matched " \
                           "separately)"
                seen.update(o.name for o in n.outputs)
    return dots


def lower_matmul(group, spec: DeviceSpec) -> list[Kernel]:
    dots = sibling_contractions(group.nodes)
    if isinstance(dots, str) or not dots:
        raise UnsupportedError(f"group {group.name}: " + (dots or "no contraction"),
                               hint="a matmul group holds one dot_general/matmul, or several "
                                    "sharing their left operand")
    dot = dots[0]
    nops, dot_ids = len(dots), {id(d) for d in dots}
    a, b = dot.inputs
    out = dot.outputs[0]
    lb, rb, lc, rc, lf, rf = contraction_dims(dot)
    bs = [a.shape[i] for i in lb]
    ms, ns, ks = [a.shape[i] for i in lf], [b.shape[j] for j in rf], [a.shape[i] for i in lc]
    nb, m, n, k = math.prod(bs), math.prod(ms), math.prod(ns), math.prod(ks)
    for v in group.outputs:
        if tuple(v.shape) != tuple(out.shape):
            raise UnsupportedError(f"group {group.name}: output %{v.name} {list(v.shape)} is not "
                                   f"shaped like the matmul result {list(out.shape)}",
                                   hint="split the group after the epilogue")
    if nb * m * n == 0:
        return []
    from hal.ops.contraction import accumulation_dtype

    acc_dt = compute_dtype(accumulation_dtype(a.dtype, dot.attrs))
    if faults.active("f16_accumulation") and a.dtype.is_float and a.dtype.bits == 16:
        acc_dt = a.dtype  # self-test hook: accumulate in the storage dtype
    forced = group.schedule.get("tiles")
    t = MatmulTiles(**{key: forced[key] for key in ("bm", "bn", "bk", "tm", "tn")}) if forced \
        else matmul_tiles(m, n, k, acc_dt.itemsize, spec, operands=nops)
    ctx = KernelContext(group.name, spec, index_dtype_for(group_sizes(group), spec))
    threads = t.threads
    body: list[Stmt] = []
    tid = ctx.tid()
    cols = t.bn // t.tn
    tx = ctx.declare(body, "tx", ctx.mod(tid, cols))
    ty = ctx.declare(body, "ty", ctx.div(tid, cols))
    # Grouped raster order (as Triton's GROUP_M swizzle): consecutive blocks walk
    # `group_m` row panels of A down each column panel of B, so the A panels of a
    # group stay in L2 while B streams past them once per group (see tiling.group_rows).
    npm, npn = cdiv(m, t.bm), cdiv(n, t.bn)
    gm_rows = group_rows(npm, t.bm, k, a.dtype.itemsize, spec)
    pid = ctx.declare(body, "pid", ctx.bid("x"))
    width = gm_rows * npn
    first_m = ctx.declare(body, "first_m", ctx.mul(ctx.div(pid, width), gm_rows))
    size_m = ctx.declare(body, "size_m", Binary("minimum", Binary("sub", ctx.c(npm), first_m),
                                                ctx.c(gm_rows)))
    pid_m = ctx.add(first_m, Binary("remainder", pid, size_m))
    pid_n = Binary("div", ctx.mod(pid, width), size_m)
    m0 = ctx.declare(body, "m0", ctx.mul(pid_m, t.bm))
    n0 = ctx.declare(body, "n0", ctx.mul(pid_n, t.bn))
    bcoords = [c if not isinstance(c, Binary) else ctx.declare(body, "b", c)
               for c in ctx.unravel(ctx.bid("z"), bs)]
    a_sh = ctx.shared_buffer("a_tile", acc_dt, t.bm * t.bk)
    b_shs = [ctx.shared_buffer("b_tile", acc_dt, t.bk * t.bn) for _ in dots]
    accs = [ctx.local_buffer("acc", acc_dt, t.tm * t.tn) for _ in dots]
    zero = zero_of(acc_dt)
    i = ctx.var("i", ctx.idx)
    body.append(For(i, ctx.c(0), ctx.c(t.tm * t.tn), ctx.c(1),
                    [Store(acc, i, zero) for acc in accs], unroll=True))
    builder = ScalarBuilder(ctx, group.nodes, body)

    kstep = ctx.var("k0", ctx.idx)
    kbase = ctx.mul(kstep, t.bk)
    kloop: list[Stmt] = []

    def tile_load(buf: str, rows: int, cols_: int, value, coords_of) -> None:
        cooperative_tile_load(ctx, builder, kloop, buf, rows, cols_, threads, tid, value,
                              acc_dt, lambda st, r, c, _e: coords_of(st, r, c))

    def a_coords(stmts, mm, kk):  # A tile: rows = m, cols = k (k contiguous in row-major A)
        gm = ctx.declare(stmts, "gm", ctx.add(m0, mm))
        gk = ctx.declare(stmts, "gk", ctx.add(kbase, kk))
        valid = Binary("logical_and", gm.lt(ctx.c(m)), gk.lt(ctx.c(k)))
        coords = _scatter(a.rank, [(lb, bcoords), (lf, ctx.unravel(gm, ms)),
                                   (lc, ctx.unravel(gk, ks))])
        return coords, valid, ctx.add(ctx.mul(kk, t.bm), mm)

    def b_coords(stmts, kk, nn):  # B tile: rows = k, cols = n
        gk = ctx.declare(stmts, "gk", ctx.add(kbase, kk))
        gn = ctx.declare(stmts, "gn", ctx.add(n0, nn))
        valid = Binary("logical_and", gk.lt(ctx.c(k)), gn.lt(ctx.c(n)))
        coords = _scatter(b.rank, [(rb, bcoords), (rc, ctx.unravel(gk, ks)),
                                   (rf, ctx.unravel(gn, ns))])
        return coords, valid, ctx.add(ctx.mul(kk, t.bn), nn)

    # one A tile for all contractions, one B tile each (sibling_contractions: same dims)
    tile_load(a_sh, t.bm, t.bk, a, a_coords)
    for d, b_sh in zip(dots, b_shs, strict=True):
        tile_load(b_sh, t.bk, t.bn, d.inputs[1], b_coords)
    kloop.append(Barrier())
    kk = ctx.var("kk", ctx.idx)
    fma: list[Stmt] = []
    a_row = ctx.declare(fma, "arow", ctx.add(ctx.mul(kk, t.bm), ctx.mul(ty, t.tm)))
    b_row = ctx.declare(fma, "brow", ctx.add(ctx.mul(kk, t.bn), ctx.mul(tx, t.tn)))
    av = [ctx.declare(fma, "a", Load(a_sh, ctx.add(a_row, ii), acc_dt)) for ii in range(t.tm)]
    for b_sh, acc in zip(b_shs, accs, strict=True):
        bv = [ctx.declare(fma, "b", Load(b_sh, ctx.add(b_row, jj), acc_dt))
              for jj in range(t.tn)]
        for ii in range(t.tm):
            for jj in range(t.tn):
                slot = ctx.c(ii * t.tn + jj)
                fma.append(Store(acc, slot, Load(acc, slot, acc_dt) + av[ii] * bv[jj]))
    kloop.append(For(kk, ctx.c(0), ctx.c(t.bk), ctx.c(1), fma))
    kloop.append(Barrier())  # the next K step overwrites the tiles others may still read
    body.append(For(kstep, ctx.c(0), ctx.c(cdiv(k, t.bk)), ctx.c(1), kloop))

    # epilogue: each accumulator through the fused elementwise chain, then stored
    for ii in range(t.tm):
        for jj in range(t.tn):
            stmts: list[Stmt] = []
            gm = ctx.declare(stmts, "om", ctx.add(m0, ctx.add(ctx.mul(ty, t.tm), ii)))
            gn = ctx.declare(stmts, "on", ctx.add(n0, ctx.add(ctx.mul(tx, t.tn), jj)))
            inner: list[Stmt] = []
            coords = (*bcoords, *ctx.unravel(gm, ms), *ctx.unravel(gn, ns))
            ep = builder.scope(inner)
            for d, acc in zip(dots, accs, strict=True):  # every accumulator is available
                o = d.outputs[0]
                value = Load(acc, ctx.c(ii * t.tn + jj), acc_dt)
                value = Cast(value, compute_dtype(o.dtype)) \
                    if acc_dt != compute_dtype(o.dtype) else value
                ep.env[o.name] = (coords, ctx.declare(inner, o.name, rounded(value, o.dtype)))
            for v in group.outputs:
                drop = faults.active("dropped_epilogue") and id(v.producer) not in dot_ids  # self-test
                e = ep.value(v.producer.inputs[0] if drop else v, coords)
                param, idx = ep.store_index(v, coords)
                inner.append(Store(param, idx, to_storage(e, v.dtype)))
            stmts.append(If(Binary("logical_and", gm.lt(ctx.c(m)), gn.lt(ctx.c(n))), inner))
            body.extend(stmts)
    grid = (npm * npn, 1, nb)
    sched = {**group.schedule, "strategy": "smem_tiled", "tiles": t.as_dict(),
             "group_m": gm_rows, "contractions": nops,
             "acc_dtype": acc_dt.name, "m": m, "n": n, "k": k, "batch": nb}
    return [ctx.kernel(body, grid, threads, {"ops": group.ops, "group": group.name,
                                             "schedule": sched})]


register_lowering("matmul")(lower_matmul)
