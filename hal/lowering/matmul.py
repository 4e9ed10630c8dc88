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
* tiles come from the group's KernelPlan (planners_tiled.plan_matmul, which calls
  `tiling.matmul_tiles(spec)`: (BM + BN) * BK elements within
  shared_mem_per_block, threads a whole number of warps within
  max_threads_per_block, TM*TN + TM + TN + 16 registers within
  max_registers_per_thread; `PlanHints(matmul_tiles=...)` overrides);
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
  (silu(gate) * up), storing only the group's outputs;
* sibling contractions reading the same A with different output shapes (fused Q,
  K and V projections with grouped-query attention, see `sibling_segments`): the
  grid concatenates their column panels, grid.x covering sum_i(npm * npn_i)
  blocks; a block-uniform branch sends each block to its contraction's segment,
  which runs that contraction's k-loop (grouped raster order within the segment)
  and the epilogue of the outputs depending on it (each epilogue reads one
  contraction only). One tile configuration for all segments (chosen for the
  smallest N), one A tile, B tile and accumulator reused by every segment.
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
from hal.lowering.context import KernelContext, contiguous_strides, index_dtype_for
from hal.lowering.expr import (
    ScalarBuilder,
    cooperative_tile_load,
    rounded,
    to_storage,
    zero_of,
)
from hal.lowering.matmul_mma import lower_matmul_mma
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions
from hal.lowering.plan import KernelPlan
from hal.lowering.pointwise import group_sizes
from hal.lowering.tiling import MatmulTiles, cdiv, group_rows, matmul_in_flight, matmul_tiles
from hal.ops import Category, get_op
from hal.ops.contraction import contraction_dims  # noqa: F401  (re-exported)


def _scatter(rank: int, parts: list[tuple[tuple[int, ...], list[Expr]]]) -> tuple[Expr, ...]:
    out: list[Expr | None] = [None] * rank
    for dims, coords in parts:
        for d, c in zip(dims, coords, strict=True):
            out[d] = c
    return tuple(out)  # type: ignore[arg-type]


def sibling_contractions(nodes) -> list[Node] | str:
    """The contractions of a matmul group, or why they cannot share one kernel.

    Several contractions fit one kernel when they read the same A value with the same
    dimension structure on A, accumulate in the same dtype and none reads another's
    result (a chain of contractions is an attention, matched separately). Then either
    * they produce equally shaped results (a "dual GEMM", e.g. a SwiGLU's gate and up
      projections): one tile grid, the epilogue may combine them; or
    * their results differ (fused Q, K and V projections with grouped-query attention):
      one column-panel segment of the grid per contraction (`sibling_segments`), so each
      node of the epilogue may depend on one of them only."""
    from hal.ops.contraction import accumulation_dtype

    dots = [n for n in nodes if get_op(n.op).category is Category.CONTRACTION]
    if len(dots) <= 1:
        return dots
    first = dots[0]
    dims0 = contraction_dims(first)
    acc0 = accumulation_dtype(first.inputs[0].dtype, first.attrs)
    for d in dots[1:]:
        if d.inputs[0].name != first.inputs[0].name:
            return "contractions in one kernel must share their left operand"
        dims = contraction_dims(d)
        if (dims[0], dims[2], dims[4]) != (dims0[0], dims0[2], dims0[4]):
            return "sibling contractions read their shared left operand with different " \
                   "batch/contracting/free dims"
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
    if not one_tile_grid(dots):
        segs = _segments(nodes, dots)
        if isinstance(segs, str):
            return segs
    return dots


def one_tile_grid(dots: list[Node]) -> bool:
    """Do sibling contractions share one tile grid (a dual GEMM: equal dims and result
    shapes), rather than one column-panel segment each?"""
    dims0, shape0 = contraction_dims(dots[0]), tuple(dots[0].outputs[0].shape)
    return all(contraction_dims(d) == dims0 and tuple(d.outputs[0].shape) == shape0
               and d.inputs[1].rank == dots[0].inputs[1].rank for d in dots[1:])


def _segments(nodes, dots: list[Node]) -> list[list[Node]] | str:
    """Per contraction, the nodes of its segment: itself, its epilogue (the nodes depending
    on it) and what they read inside the group (operand prologue, bias broadcasts), in
    group order; or why the nodes do not split so."""
    index = {id(d): i for i, d in enumerate(dots)}
    deps: dict[str, frozenset[int]] = {}   # value -> the contractions it depends on
    for n in nodes:
        dep = frozenset().union(*(deps.get(v.name, frozenset()) for v in n.inputs))
        if id(n) in index:
            dep |= {index[id(n)]}
        if len(dep) > 1:
            a, b = (dots[i].outputs[0] for i in sorted(dep)[:2])
            return (f"sibling contractions shaped {list(a.shape)} and {list(b.shape)} differ "
                    f"and {n.op} (%{n.outputs[0].name}) combines them (one tile grid per "
                    f"kernel: an epilogue may read one of them only)")
        for o in n.outputs:
            deps[o.name] = dep
    producer = {o.name: n for n in nodes for o in n.outputs}
    segs: list[list[Node]] = []
    covered: set[int] = set()
    for i in range(len(dots)):
        members = {id(n) for n in nodes if deps[n.outputs[0].name] == {i}}
        stack = [n for n in nodes if id(n) in members]
        while stack:  # what the segment reads inside the group
            for v in stack.pop().inputs:
                p = producer.get(v.name)
                if p is not None and id(p) not in members:
                    members.add(id(p))
                    stack.append(p)
        segs.append([n for n in nodes if id(n) in members])
        covered |= members
    stray = [n for n in nodes if id(n) not in covered]
    if stray:
        return f"{stray[0].op} (%{stray[0].outputs[0].name}) feeds none of the sibling " \
               f"contractions"
    return segs


def sibling_segments(nodes) -> list[list[Node]] | None:
    """The one-contraction node lists a group of sibling contractions of different
    shapes splits into (one column-panel segment of the kernel's grid each), or None
    when the group's contractions share one tile grid (or are invalid siblings)."""
    dots = sibling_contractions(nodes)
    if isinstance(dots, str) or len(dots) <= 1 or one_tile_grid(dots):
        return None
    segs = _segments(nodes, dots)
    return None if isinstance(segs, str) else segs


def epilogue_views(nodes, dots) -> list[Node]:
    """Reshapes of a contraction's result that only regroup its leading axes (torch's
    Linear: `mm` on [B*S, N], then `view` back to [B, S, N]) so the epilogue after them
    (bias, residual add) joins the matmul's kernel: the element at (row, n) of the result
    is the element at (unravel(row), n) of the view."""
    if not dots or len(contraction_dims(dots[0])[5]) != 1:
        return []
    shape = tuple(dots[0].outputs[0].shape)
    derived = {d.outputs[0].name for d in dots}   # the result and the epilogue computed on it
    views = []
    for n in nodes:
        if not any(v.name in derived for v in n.inputs):
            continue
        if n.op == "reshape" and tuple(n.inputs[0].shape) == shape:
            b = tuple(n.outputs[0].shape)
            if b and b[-1] == shape[-1] and math.prod(b) == math.prod(shape) \
                    and all(isinstance(x, int) for x in (*shape, *b)):
                views.append(n)
                continue
        derived.update(o.name for o in n.outputs)
    return views


def fused_reserve(nodes, inputs) -> int:
    """Registers per thread the fused prologue and epilogue of a matmul group hold on top
    of tiling.matmul_registers: two per input beyond A and the Bs (addresses, a loaded
    value) and one per four other nodes (live intermediates). Shared by the tile choice
    here and fusion.cost.estimate_registers, so the veto prices the tiles that run."""
    dots = [n for n in nodes if get_op(n.op).category is Category.CONTRACTION]
    operands = {dots[0].inputs[0].name, *(d.inputs[1].name for d in dots)} if dots else set()
    extra_inputs = sum(1 for v in inputs if v.name not in operands)
    return 2 * extra_inputs + math.ceil((len(nodes) - len(dots)) / 4)


def lower_matmul(group, plan: KernelPlan, spec: DeviceSpec,
                 options: LoweringOptions = DEFAULT_OPTIONS) -> list[Kernel]:
    """Emit `plan` (hal.lowering.planners_tiled.plan_matmul): its tiles, raster group and
    grid; the structure (segments, epilogue views) is checked here."""
    dots = sibling_contractions(group.nodes)
    if isinstance(dots, str) or not dots:
        raise UnsupportedError(f"group {group.name}: " + (dots or "no contraction"),
                               hint="a matmul group holds one dot_general/matmul, or several "
                                    "sharing their left operand")
    dot = dots[0]
    dot_ids = {id(d) for d in dots}
    a = dot.inputs[0]
    lb, _rb, lc, _rc, lf, _rf = contraction_dims(dot)   # A's dims: equal for all siblings
    bs = [a.shape[i] for i in lb]
    ms, ks = [a.shape[i] for i in lf], [a.shape[i] for i in lc]
    nb, m, k = math.prod(bs), math.prod(ms), math.prod(ks)
    # The grid's column-panel segments, each (contractions, outputs): one for a single
    # contraction or a dual GEMM, one per contraction for siblings of different shapes.
    if one_tile_grid(dots):
        segments = [(dots, list(group.outputs))]
    else:
        segs = _segments(group.nodes, dots)  # a list: sibling_contractions checked them
        segments = [([d], [v for v in group.outputs if id(v.producer) in {id(x) for x in seg}])
                    for d, seg in zip(dots, segs, strict=True)]
        owners = [v.name for _ds, outs in segments for v in outs]
        if sorted(owners) != sorted(v.name for v in group.outputs):
            raise UnsupportedError(f"group {group.name}: an output is not the epilogue of "
                                   f"exactly one of its sibling contractions",
                                   hint="split the group after the epilogue")
    views = epilogue_views(group.nodes, dots) if len(segments) == 1 else []
    view_shapes = {tuple(r.outputs[0].shape) for r in views}
    for seg_dots, outs in segments:
        out = seg_dots[0].outputs[0]
        for v in outs:
            if tuple(v.shape) != tuple(out.shape) and tuple(v.shape) not in view_shapes:
                raise UnsupportedError(f"group {group.name}: output %{v.name} {list(v.shape)} "
                                       f"is not shaped like the matmul result "
                                       f"{list(out.shape)}",
                                       hint="split the group after the epilogue")

    def n_dims(d: Node) -> list[int]:
        return [d.inputs[1].shape[j] for j in contraction_dims(d)[5]]

    segments = [(ds, outs) for ds, outs in segments if math.prod(n_dims(ds[0]))]
    if nb * m == 0 or not segments:
        return []
    from hal.ops.contraction import accumulation_dtype

    acc_dt = compute_dtype(accumulation_dtype(a.dtype, dot.attrs))
    if options.fault("f16_accumulation") and a.dtype.is_float and a.dtype.bits == 16:
        acc_dt = a.dtype  # self-test hook: accumulate in the storage dtype
    nops = max(len(ds) for ds, _outs in segments)  # contractions sharing one tile grid
    if plan.strategy == "wgmma" and not options.fault("f16_accumulation"):
        # the Hopper path: TMA producer, wgmma consumers (hal.lowering.matmul_wgmma)
        from hal.lowering.matmul_wgmma import lower_matmul_wgmma

        return lower_matmul_wgmma(group, plan, spec, [(list(ds), list(outs))
                                                      for ds, outs in segments], views, options)
    if plan.strategy == "mma" and not options.fault("f16_accumulation"):
        # the matrix unit: the plan's instruction and tiles (planners_tiled.plan_matmul)
        return lower_matmul_mma(group, plan, spec, [(list(ds), list(outs))
                                                    for ds, outs in segments], views, options)
    if not plan.launches:
        raise UnsupportedError(f"group {group.name}: {'; '.join(plan.reasons)}",
                               hint="keep the epilogue out of the matmul or use a device with "
                                    "more registers/shared memory")
    # self-test hook f16_accumulation on a matrix-unit plan: the SIMT kernel (the matrix
    # unit always accumulates in f32), with SIMT tiles and raster of its own
    simt_for_fault = plan.strategy in ("mma", "wgmma")
    if simt_for_fault:   # self-test hook
        reserve = fused_reserve(group.nodes, group.inputs)
        t = matmul_tiles(m, min(math.prod(n_dims(ds[0])) for ds, _outs in segments), k,
                         acc_dt.itemsize, spec, operands=nops, reserve=reserve)
    else:
        sizes = plan.tile_sizes
        t = MatmulTiles(*(sizes[key] for key in ("bm", "bn", "bk", "tm", "tn")))
    ctx = KernelContext(group.name, spec, index_dtype_for(group_sizes(group), spec), options)
    threads = t.threads
    body: list[Stmt] = []
    tid = ctx.tid()
    cols = t.bn // t.tn
    tx = ctx.declare(body, "tx", ctx.mod(tid, cols))
    ty = ctx.declare(body, "ty", ctx.div(tid, cols))
    # Grouped raster order (as Triton's GROUP_M swizzle): consecutive blocks walk
    # `group_m` row panels of A down each column panel of B, so the A panels of a
    # group stay in L2 while B streams past them once per group (see tiling.group_rows).
    npm = cdiv(m, t.bm)
    gm_rows = group_rows(npm, t.bm, k, a.dtype.itemsize, spec,
                         matmul_in_flight(t, acc_dt.itemsize, spec, nops, reserve)) \
        if simt_for_fault else plan.detail("group_m")
    pid = ctx.declare(body, "pid", ctx.bid("x"))
    bcoords = [c if not isinstance(c, Binary) else ctx.declare(body, "b", c)
               for c in ctx.unravel(ctx.bid("z"), bs)]
    # one A tile for all contractions, one B tile and one accumulator per contraction of
    # a segment; the segments of a grid run in different blocks and reuse them
    a_sh = ctx.shared_buffer("a_tile", acc_dt, t.bm * t.bk)
    b_shs = [ctx.shared_buffer("b_tile", acc_dt, t.bk * t.bn) for _ in range(nops)]
    accs = [ctx.local_buffer("acc", acc_dt, t.tm * t.tn) for _ in range(nops)]
    zero = zero_of(acc_dt)

    def segment(body: list[Stmt], dots: list[Node], outputs: list, pid: Expr) -> None:
        """One column-panel segment: the k-loop of `dots` (one tile grid) and the epilogue
        of `outputs`, for the segment's block `pid`."""
        b = dots[0].inputs[1]
        _lb, rb, _lc, rc, _lf, rf = contraction_dims(dots[0])
        ns = [b.shape[j] for j in rf]
        n = math.prod(ns)
        npn = cdiv(n, t.bn)
        width = gm_rows * npn
        first_m = ctx.declare(body, "first_m", ctx.mul(ctx.div(pid, width), gm_rows))
        size_m = ctx.declare(body, "size_m", Binary("minimum", Binary("sub", ctx.c(npm), first_m),
                                                    ctx.c(gm_rows)))
        if options.fault("raster_full_last_group"):  # self-test hook
            size_m = ctx.c(gm_rows)
        pid_m = ctx.add(first_m, Binary("remainder", pid, size_m))
        pid_n = Binary("div", ctx.mod(pid, width), size_m)
        m0 = ctx.declare(body, "m0", ctx.mul(pid_m, t.bm))
        n0 = ctx.declare(body, "n0", ctx.mul(pid_n, t.bn))
        i = ctx.var("i", ctx.idx)
        body.append(For(i, ctx.c(0), ctx.c(t.tm * t.tn), ctx.c(1),
                        [Store(acc, i, zero) for acc in accs[:len(dots)]], unroll=True))
        builder = ScalarBuilder(ctx, group.nodes, body)
        # a norm fused as A's prologue: its row statistics of the block's rows, in shared
        from hal.lowering.matmul_prologue import emit_prologue_reductions
        emit_prologue_reductions(ctx, builder, body, group, dots[0], m0, bcoords, t)

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
            if options.fault("matmul_k_tail_unmasked"):  # self-test hook
                valid = gm.lt(ctx.c(m))
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

        # one A tile for the segment's contractions, one B tile each (one_tile_grid: same dims)
        tile_load(a_sh, t.bm, t.bk, a, a_coords)
        for d, b_sh in zip(dots, b_shs, strict=False):
            tile_load(b_sh, t.bk, t.bn, d.inputs[1], b_coords)
        kloop.append(Barrier())
        kk = ctx.var("kk", ctx.idx)
        fma: list[Stmt] = []
        a_row = ctx.declare(fma, "arow", ctx.add(ctx.mul(kk, t.bm), ctx.mul(ty, t.tm)))
        b_row = ctx.declare(fma, "brow", ctx.add(ctx.mul(kk, t.bn), ctx.mul(tx, t.tn)))
        av = [ctx.declare(fma, "a", Load(a_sh, ctx.add(a_row, ii), acc_dt)) for ii in range(t.tm)]
        for b_sh, acc in zip(b_shs[:len(dots)], accs, strict=False):
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
                for d, acc in zip(dots, accs, strict=False):  # every accumulator is available
                    o = d.outputs[0]
                    value = Load(acc, ctx.c(ii * t.tn + jj), acc_dt)
                    value = Cast(value, compute_dtype(o.dtype)) \
                        if acc_dt != compute_dtype(o.dtype) else value
                    ep.env[o.name] = (coords, ctx.declare(inner, o.name, rounded(value, o.dtype, options)))
                # a view regrouping the result's leading axes ([B*S, N] -> [B, S, N]): the
                # epilogue after it runs at the view's coordinates of the same element
                space = {tuple(dots[0].outputs[0].shape): coords}
                if views:
                    row = ctx.add(ctx.mul(ctx.linear(list(bcoords), contiguous_strides(bs)), m),
                                  gm) if bs else gm
                    for r in views:
                        lead = [int(x) for x in r.outputs[0].shape[:-1]]
                        vc = (*ctx.unravel(row, lead), gn)
                        space[tuple(r.outputs[0].shape)] = vc
                        ep.env[r.outputs[0].name] = (vc, ep.value(r.inputs[0], coords))
                for v in outputs:
                    at = space[tuple(v.shape)]
                    drop = options.fault("dropped_epilogue") and id(v.producer) not in dot_ids  # self-test
                    e = ep.value(v.producer.inputs[0] if drop else v, at)
                    param, idx = ep.store_index(v, at)
                    inner.append(Store(param, idx, to_storage(e, v.dtype)))
                stmts.append(If(Binary("logical_and", gm.lt(ctx.c(m)), gn.lt(ctx.c(n))), inner))
                body.extend(stmts)

    # Blocks [start_s, start_s + npm * npn_s) of grid.x run segment s: a block-uniform branch
    # (its barriers are reached by all threads of the block or by none).
    branches: list[tuple[int, list[Stmt]]] = []
    start = 0
    for seg_dots, outs in segments:
        stmts = []
        local = ctx.declare(stmts, "seg_pid", ctx.sub(pid, start)) if start else pid
        segment(stmts, seg_dots, outs, local)
        start += npm * cdiv(math.prod(n_dims(seg_dots[0])), t.bn)
        branches.append((start, stmts))
    tail = branches[-1][1]
    for end, stmts in reversed(branches[:-1]):
        tail = [If(pid.lt(ctx.c(end)), stmts, tail)]
    body.extend(tail)
    if simt_for_fault:   # self-test hook
        return [ctx.kernel(body, (start, 1, nb), threads, group, plan)]
    if (start, 1, nb) != plan.grid:   # the plan's grid is the one the blocks above walk
        raise UnsupportedError(f"group {group.name}: grid {(start, 1, nb)} differs from its "
                               f"plan's {plan.grid}", hint="a planner bug: report it")
    return [ctx.kernel(body, plan.grid, threads, group, plan)]
