"""Lowering of reduction groups: row reductions (block per row) and column reductions.

A reduction group has one iteration space, the shape S of its reductions' input,
split into kept axes (one "row" per kept index) and reduced axes (the row's
elements, flat index j). Every reduction in the group must reduce S over the
same axes. Values are either per-element (shape S) or per-row (the reduced
shape, with or without keepdims); a broadcast_to back to S reads the per-row
value (softmax's x - max(x)).

Phases: a reduction whose input depends on another reduction runs after it.
Phase p loops over the row accumulating every reduction whose input needs p
earlier reductions (layer_norm's mean and mean-of-squares share a phase);
a final loop stores the per-element outputs; per-row outputs are stored by
one thread. softmax as primitives is ONE kernel: two reduction phases and
an epilogue loop.

Strategies (decided by the group's KernelPlan, hal.lowering.planners.plan_reduction;
this module emits them):
* "block_per_row" (row_reduction): `row_block(L, spec)` threads stride the
  row and accumulate in the compute dtype (f32 for 16-bit/fp8), then an xor
  shuffle tree at the spec's warp width, one partial per warp in shared
  memory, a barrier, and every thread combines the partials (same order in
  every thread, so all hold the same result). When several loops read the
  row and it fits in shared memory next to the partials, the row's inputs
  are cached in shared memory on the first loop (row_cache "shared",
  `row_cache_fits`), otherwise later loops re-read global memory ("global").
* "split" (PlanHints(split=k), or automatic when rows are too few to
  fill the device): k blocks per row write partials to a scratch buffer,
  a second kernel combines them. Single-phase groups without per-element
  outputs only.
* "thread_per_row" (column_reduction): one thread per kept index loops over
  the reduced elements; consecutive threads read consecutive kept indices
  (coalesced when the kept axes are the trailing ones).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from hal.devices.spec import DeviceSpec
from hal.dtypes import DType, bool_, compute_dtype, i32
from hal.errors import UnsupportedError
from hal.ir.graph import Node, Value
from hal.kernel.ir import (
    Assign,
    Barrier,
    Binary,
    Cast,
    Const,
    Declare,
    Expr,
    For,
    If,
    Kernel,
    Load,
    Select,
    Shuffle,
    Stmt,
    Store,
    Var,
)
from hal.lowering.context import KernelContext, contiguous_strides, index_dtype_for
from hal.lowering.expr import ScalarBuilder, rounded, to_storage
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions
from hal.lowering.plan import KernelPlan
from hal.lowering.pointwise import group_sizes
from hal.lowering.tiling import cdiv, row_block
from hal.ops import Category, get_op
from hal.ops.reduction import reduction_axes

# --------------------------------------------------------------------------- combiners

@dataclass(frozen=True)
class Reducer:
    combine: Callable[[Expr, Expr], Expr]
    identity: Callable[[DType], Const]


def _extreme(sign: int) -> Callable[[DType], Const]:
    def ident(d: DType) -> Const:
        if d.is_float:
            return Const(sign * math.inf, d)
        return Const(d.max if sign > 0 else d.min, d)

    return ident


REDUCERS: dict[str, Reducer] = {}


def register_reducer(op: str, reducer: Reducer) -> None:
    """How reduction op `op` combines two partial results, and its identity."""
    REDUCERS[op] = reducer


register_reducer("reduce_sum", Reducer(lambda a, b: Binary("add", a, b),
                                       lambda d: Const(0.0 if d.is_float else 0, d)))
register_reducer("reduce_prod", Reducer(lambda a, b: Binary("mul", a, b),
                                        lambda d: Const(1.0 if d.is_float else 1, d)))
register_reducer("reduce_max", Reducer(lambda a, b: Binary("maximum", a, b), _extreme(-1)))
register_reducer("reduce_min", Reducer(lambda a, b: Binary("minimum", a, b), _extreme(1)))
register_reducer("reduce_any", Reducer(lambda a, b: Binary("logical_or", a, b),
                                       lambda d: Const(False, bool_)))
register_reducer("reduce_all", Reducer(lambda a, b: Binary("logical_and", a, b),
                                       lambda d: Const(True, bool_)))
ARG_REDUCTIONS = {"argmax": "gt", "argmin": "lt"}


# --------------------------------------------------------------------------- analysis

@dataclass
class RowLayout:
    full_shape: tuple[int, ...]
    red_axes: tuple[int, ...]
    kept_shape: tuple[int, ...]
    keep_shape: tuple[int, ...]       # with keepdims
    red_shape: tuple[int, ...]
    phases: list[list[Node]]
    row_outputs: list[Value]
    scalar_outputs: list[Value]

    @property
    def rows(self) -> int:
        return math.prod(self.kept_shape)

    @property
    def row_len(self) -> int:
        return math.prod(self.red_shape)


def analyse(group) -> RowLayout:
    reds = [n for n in group.nodes if get_op(n.op).category is Category.REDUCTION]
    shape, axes = tuple(reds[0].inputs[0].shape), reduction_axes(reds[0])
    for r in reds[1:]:
        if tuple(r.inputs[0].shape) != shape or reduction_axes(r) != axes:
            raise UnsupportedError(
                f"group {group.name}: reductions {reds[0].op} (%{reds[0].outputs[0].name}) and "
                f"{r.op} (%{r.outputs[0].name}) reduce different shapes or axes",
                hint="put them in different groups")
    level: dict[str, int] = {}
    for n in group.nodes:
        lv = max((level.get(v.name, 0) for v in n.inputs), default=0)
        for o in n.outputs:
            level[o.name] = lv + (1 if n in reds else 0)
    nphases = max(level.get(r.inputs[0].name, 0) for r in reds) + 1
    phases = [[r for r in reds if level.get(r.inputs[0].name, 0) == p] for p in range(nphases)]
    kept = tuple(d for i, d in enumerate(shape) if i not in axes)
    keep = tuple(1 if i in axes else d for i, d in enumerate(shape))
    red = tuple(shape[i] for i in axes)
    row_out, scalar_out = [], []
    for v in group.outputs:
        if tuple(v.shape) == shape and v.producer not in reds or \
                row_source(v, shape) is not v:
            row_out.append(v)
        elif tuple(v.shape) in (kept, keep):
            scalar_out.append(v)
        else:
            raise UnsupportedError(f"group {group.name}: output %{v.name} {list(v.shape)} is "
                                   f"neither per-element {list(shape)} nor per-row",
                                   hint="split the group before this value")
    return RowLayout(shape, axes, kept, keep, red, phases, row_out, scalar_out)


# --------------------------------------------------------------------------- emission

class RowEmitter:
    """Builds one reduction kernel: rows, loops over the row, block reductions."""

    def __init__(self, group, spec: DeviceSpec, lay: RowLayout, ctx: KernelContext,
                 strategy: str, block: int):
        self.g, self.spec, self.lay, self.ctx = group, spec, lay, ctx
        self.strategy, self.block = strategy, block
        self.body: list[Stmt] = []
        self.env: dict = {}
        self.cached: dict[str, tuple[str, int]] = {}   # value -> (shared buffer, first pass)
        self.cache_candidates: set[str] = set()
        self.pass_no = 0
        self.b = ScalarBuilder(ctx, group.nodes, self.body, self.env, self._hook)

    # coordinates
    def setup_row(self, row: Expr) -> None:
        ctx, p = self.ctx, self.lay
        self.row = ctx.declare(self.body, "row", row)
        kc = [c if isinstance(c, (Var, Const)) else ctx.declare(self.body, "k", c)
              for c in ctx.unravel(self.row, p.kept_shape)]
        self.kept = tuple(kc)
        it = iter(self.kept)
        self.keep = tuple(ctx.c(0) if i in p.red_axes else next(it)
                          for i in range(len(p.full_shape)))

    def scalar_coords(self, v: Value) -> tuple[Expr, ...]:
        return self.kept if tuple(v.shape) == self.lay.kept_shape else self.keep

    def element_coords(self, stmts: list[Stmt], j: Expr) -> tuple[Expr, ...]:
        ctx, p = self.ctx, self.lay
        rc = iter([c if isinstance(c, (Var, Const)) else ctx.declare(stmts, "r", c)
                   for c in ctx.unravel(j, p.red_shape)])
        kc = iter(self.kept)
        return tuple(next(rc) if i in p.red_axes else next(kc)
                     for i in range(len(p.full_shape)))

    def _hook(self, b: ScalarBuilder, v: Value, coords, mask) -> Expr | None:
        if v.name not in self.cache_candidates or mask is not None or coords != self._coords:
            return None
        from hal.lowering.expr import to_compute

        if v.name not in self.cached:
            buf = self.ctx.shared_buffer(f"row_{v.name}", compute_dtype(v.dtype),
                                         self.lay.row_len)
            self.cached[v.name] = (buf, self.pass_no)
        buf, first = self.cached[v.name]
        cd = compute_dtype(v.dtype)
        if first == self.pass_no:
            x = b.ctx.declare(b.stmts, v.name, to_compute(b.global_load(v, coords, None), v.dtype))
            b.stmts.append(Store(buf, self._j, x))
            return x
        return Load(buf, self._j, cd)

    def row_loop(self, start: Expr, count: int, emit: Callable[[list[Stmt], tuple], None]) -> None:
        """for each element j of this thread's part of the row: emit(stmts, coords)."""
        ctx = self.ctx
        stride = self.block if self.strategy != "thread_per_row" else 1
        lane = ctx.tid() if self.strategy != "thread_per_row" else ctx.c(0)
        it = ctx.var("it", ctx.idx)
        loop: list[Stmt] = []
        j = ctx.declare(loop, "j", ctx.add(ctx.add(start, ctx.mul(it, stride)), lane))
        inner: list[Stmt] = []
        self._j = j
        self._coords = self.element_coords(inner, j)
        self.b = self.b.scope(inner)
        emit(inner, self._coords)
        end = ctx.c(self.lay.row_len) if self._limit is None else self._limit
        exact = (stride == 1 or self.lay.row_len % stride == 0) and self._limit is None \
            and count * stride == self.lay.row_len
        loop.extend(inner) if exact else loop.append(If(j.lt(end), inner))
        self.body.append(For(it, ctx.c(0), ctx.c(count), ctx.c(1), loop))
        self.b = self.b.scope(self.body)
        self.pass_no += 1

    _limit: Expr | None = None

    # block-level combination
    def block_combine(self, accs: list[Var], combine) -> list[Expr]:
        """Combine per-thread accumulators over the block; returns block-uniform values.
        Only block_per_row emitters combine (a thread_per_row kernel has nothing to)."""
        ctx, w = self.ctx, self.spec.warp_size
        off = 16 if ctx.options.fault("butterfly_offset_16") else w // 2  # self-test hook
        while off >= 1:
            others = [ctx.declare(self.body, "sh", Shuffle(a, "xor", Const(off, i32), w))
                      for a in accs]
            self._assign_combined(accs, others, combine)
            off //= 2
        nw = self.block // w
        if nw == 1:
            return list(accs)
        bufs = [ctx.shared_buffer("partial", a.dtype, nw) for a in accs]
        lane0 = ctx.mod(ctx.tid(), w).eq(ctx.c(0))
        self.body.append(If(lane0, [Store(buf, ctx.div(ctx.tid(), w), a)
                                    for buf, a in zip(bufs, accs, strict=True)]))
        if not ctx.options.fault("missing_barrier"):  # self-test hook
            self.body.append(Barrier())
        res = [ctx.declare(self.body, "blk", Load(buf, ctx.c(0), a.dtype))
               for buf, a in zip(bufs, accs, strict=True)]
        for k in range(1, nw):  # the same order in every thread: all get the same value
            others = [ctx.declare(self.body, "p", Load(buf, ctx.c(k), a.dtype))
                      for buf, a in zip(bufs, accs, strict=True)]
            self._assign_combined(res, others, combine)
        return res

    def _assign_combined(self, accs, others, combine) -> None:
        new = combine(self, accs, others)
        for a, e in zip(accs, new, strict=True):
            self.body.append(Assign(a, e))


def _simple_combine(reducer: Reducer):
    def combine(em: RowEmitter, accs, others):
        return [reducer.combine(accs[0], others[0])]

    return combine


def _arg_combine(cmp: str):
    def combine(em: RowEmitter, accs, others):
        (v, i), (v2, i2) = accs, others
        nan2 = Binary("ne", v2, v2)
        nan1 = Binary("ne", v, v)
        better = Binary("logical_or", Binary(cmp, v2, v),
                        Binary("logical_and", nan2, Unary_not(nan1)))
        tie = Binary("logical_and",
                     Binary("logical_or", Binary("eq", v2, v), Binary("logical_and", nan2, nan1)),
                     Binary("lt", i2, i))
        take = em.ctx.declare(em.body, "take", Binary("logical_or", better, tie))
        return [Select(take, v2, v), Select(take, i2, i)]

    return combine


def Unary_not(x: Expr) -> Expr:
    from hal.kernel.ir import Unary

    return Unary("logical_not", x)


def acc_setup(em: RowEmitter, red: Node) -> tuple[list[Var], Callable, list[Const]]:
    """Declare the accumulators of one reduction; returns (accs, combine, identities)."""
    ctx = em.ctx
    x = red.inputs[0]
    cd = bool_ if x.dtype.is_bool else compute_dtype(x.dtype)
    if ctx.options.fault("f16_accumulation") and x.dtype.is_float and x.dtype.bits == 16:
        cd = x.dtype  # self-test hook: accumulate in the storage dtype
    if red.op in ARG_REDUCTIONS:
        idents = [_extreme(-1 if red.op == "argmax" else 1)(cd), ctx.c(em.lay.row_len)]
        combine = _arg_combine(ARG_REDUCTIONS[red.op])
    else:
        reducer = REDUCERS.get(red.op)
        if reducer is None:
            raise UnsupportedError(f"reduction {red.op} (%{red.outputs[0].name}) has no "
                                   f"combiner", hint="register one with register_reducer")
        idents = [reducer.identity(cd)]
        if ctx.options.fault("wrong_reduction_identity") and red.op == "reduce_sum":
            idents = [Const(idents[0].value + 1, cd)]  # self-test hook
        combine = _simple_combine(reducer)
    accs = [ctx.var(f"acc_{red.outputs[0].name}", c.dtype) for c in idents]
    for a, c in zip(accs, idents, strict=True):
        em.body.append(Declare(a, c))
    return accs, combine, idents


def accumulate(em: RowEmitter, red: Node, accs, combine, stmts, coords, j: Expr) -> None:
    b = em.b
    x = b.value(red.inputs[0], coords)
    if x.dtype != accs[0].dtype:   # self-test hook: f16_accumulation's narrowed accumulator
        x = Cast(x, accs[0].dtype)
    others = [x, j] if len(accs) == 2 else [x]
    saved = em.body
    em.body = stmts
    new = combine(em, accs, others)
    em.body = saved
    for a, e in zip(accs, new, strict=True):
        stmts.append(Assign(a, e))


def _finish(em: RowEmitter, red: Node, vals: list[Expr]) -> None:
    out = red.outputs[0]
    if red.op in ARG_REDUCTIONS:
        e: Expr = Cast(vals[1], out.dtype)
    else:
        e = rounded(vals[0], out.dtype, em.ctx.options) if vals[0].dtype == compute_dtype(out.dtype) \
            else vals[0]
    v = em.ctx.declare(em.body, out.name, e)
    em.env[out.name] = (em.scalar_coords(out), v)


def _store_scalars(em: RowEmitter) -> None:
    stmts: list[Stmt] = []
    b = em.b.scope(stmts)
    for v in em.lay.scalar_outputs:
        coords = em.scalar_coords(v)
        e = b.value(v, coords)
        param, idx = b.store_index(v, coords)
        stmts.append(Store(param, idx, to_storage(e, v.dtype)))
    if em.strategy == "thread_per_row":
        em.body.extend(stmts)
    else:
        em.body.append(If(em.ctx.tid().eq(em.ctx.c(0)), stmts))


def row_source(v: Value, shape: tuple) -> Value:
    """The per-element value a row output stores: itself, or for a reshape of a value shaped
    like the rows (the group's last op, e.g. torch's x.view(-1, d) after a norm) that value,
    stored at the same row-major index."""
    x = v
    while x.producer is not None and x.producer.op == "reshape" and tuple(x.shape) != shape:
        x = x.producer.inputs[0]
    return x if tuple(x.shape) == shape and x.type.numel == v.type.numel else v


def _store_rows(em: RowEmitter, count: int) -> None:
    strides = contiguous_strides(em.lay.full_shape)

    def emit(stmts, coords):
        for v in em.lay.row_outputs:
            e = em.b.value(row_source(v, em.lay.full_shape), coords)
            param = em.ctx.buffer(v, "output")
            stmts.append(Store(param, em.ctx.linear(coords, strides), to_storage(e, v.dtype)))

    em.row_loop(em.ctx.c(0), count, emit)


def _phase(em: RowEmitter, reds: list[Node], count: int, start: Expr) -> list[tuple]:
    setups = [(r, *acc_setup(em, r)) for r in reds]

    def emit(stmts, coords):
        for r, accs, combine, _ in setups:
            accumulate(em, r, accs, combine, stmts, coords, em._j)

    em.row_loop(start, count, emit)
    return setups


def row_cache_fits(group, lay: RowLayout, block: int, spec: DeviceSpec) -> bool:
    """The row cache decision (made once, by the plan): a block-per-row kernel that walks
    its row more than once keeps the row's per-element inputs in shared memory (compute
    dtype) when they fit beside the partials of its block reductions (+64 bytes slack)."""
    passes = len(lay.phases) + (1 if lay.row_outputs else 0)
    partial_bytes = sum(_reds_bytes(r) for ph in lay.phases for r in ph) * (block //
                                                                            spec.warp_size)
    full_inputs = [v for v in group.inputs if tuple(v.shape) == lay.full_shape]
    cache_bytes = sum(lay.row_len * compute_dtype(v.dtype).itemsize for v in full_inputs)
    return bool(passes > 1 and full_inputs and cache_bytes + partial_bytes + 64
                <= spec.shared_mem_per_block)


def lower_reduction(group, plan: KernelPlan, spec: DeviceSpec,
                    options: LoweringOptions = DEFAULT_OPTIONS) -> list[Kernel]:
    """Emit `plan` (hal.lowering.planners.plan_reduction): its strategy, block, split and
    row cache decisions."""
    lay = analyse(group)
    if not plan.launches:
        return []
    idx = index_dtype_for(group_sizes(group), spec)
    if plan.strategy == "thread_per_row":
        return [_lower_thread_per_row(group, plan, spec, lay, idx, options)]
    if plan.strategy == "split":
        return _lower_split(group, plan, spec, lay, idx, options)
    (launch,) = plan.launches
    block = launch.block
    if options.fault("row_block_partial_warp"):  # self-test hook
        block = row_block(lay.row_len, spec, options)
    ctx = KernelContext(group.name, spec, idx, options)
    em = RowEmitter(group, spec, lay, ctx, "block_per_row", block)
    em.setup_row(ctx.bid())
    count = cdiv(lay.row_len, block)
    if plan.detail("row_cache") == "shared":
        em.cache_candidates = {v.name for v in group.inputs if tuple(v.shape) == lay.full_shape}
    for reds in lay.phases:
        setups = _phase(em, reds, count, ctx.c(0))
        for r, accs, combine, _ in setups:
            _finish(em, r, em.block_combine(accs, combine))
    if lay.row_outputs:
        _store_rows(em, count)
    _store_scalars(em)
    return [ctx.kernel(em.body, launch.grid, block, group, plan)]


def _reds_bytes(r: Node) -> int:
    d = compute_dtype(r.inputs[0].dtype)
    return d.itemsize + (8 if r.op in ARG_REDUCTIONS else 0)


def _lower_thread_per_row(group, plan: KernelPlan, spec, lay: RowLayout, idx,
                          options: LoweringOptions) -> Kernel:
    ctx = KernelContext(group.name, spec, idx, options)
    block, grid = plan.block, plan.grid[0]
    em = RowEmitter(group, spec, lay, ctx, "thread_per_row", block)
    em.setup_row(ctx.add(ctx.mul(ctx.bid(), block), ctx.tid()))
    head = len(em.body)
    for reds in lay.phases:
        for r, accs, _combine, _ in _phase(em, reds, lay.row_len, ctx.c(0)):
            _finish(em, r, list(accs))
    if lay.row_outputs:
        _store_rows(em, lay.row_len)
    _store_scalars(em)
    outer, rest = em.body[:head], em.body[head:]
    if grid * block != lay.rows:  # the tail mask: threads past the last row do nothing
        rest = [If(em.row.lt(ctx.c(lay.rows)), rest)]
    outer.extend(rest)
    return ctx.kernel(outer, plan.grid, block, group, plan)


def _lower_split(group, plan: KernelPlan, spec, lay: RowLayout, idx,
                 options: LoweringOptions) -> list[Kernel]:
    (red,) = lay.phases[0]
    first, second = plan.launches
    block, k, chunk = first.block, plan.detail("split"), plan.detail("chunk")
    grid1 = first.grid
    if options.fault("split_drops_partial_chunk"):  # self-test hook
        k = lay.row_len // chunk
        grid1 = (grid1[0], k, grid1[2])
    # kernel 1: k blocks per row, partials to scratch
    ctx = KernelContext(f"{group.name}_partial", spec, idx, options)
    em = RowEmitter(group, spec, lay, ctx, "block_per_row", block)
    em.setup_row(ctx.bid())
    start = ctx.declare(em.body, "start", ctx.mul(ctx.bid("y"), chunk))
    em._limit = ctx.declare(em.body, "stop", Binary("minimum", ctx.add(start, chunk),
                                                    ctx.c(lay.row_len)))
    (r, accs, combine, idents), = _phase(em, [red], chunk // block, start)
    vals = em.block_combine(accs, combine)
    names = [f"{group.name}_partial{i}" for i in range(len(accs))]
    bufs = [ctx.scratch_buffer(n, a.dtype, lay.rows * k, readonly=False)
            for n, a in zip(names, accs, strict=True)]
    slot = ctx.add(ctx.mul(em.row, k), ctx.bid("y"))
    em.body.append(If(ctx.tid().eq(ctx.c(0)), [Store(b, slot, v)
                                               for b, v in zip(bufs, vals, strict=True)]))
    k1 = ctx.kernel(em.body, grid1, block, group, plan, first.stage)
    # kernel 2: one block per row combines the k partials
    block2 = second.block
    ctx2 = KernelContext(f"{group.name}_final", spec, idx, options)
    em2 = RowEmitter(group, spec, lay, ctx2, "block_per_row", block2)
    em2.setup_row(ctx2.bid())
    bufs2 = [ctx2.scratch_buffer(n, a.dtype, lay.rows * k, readonly=True)
             for n, a in zip(names, accs, strict=True)]
    has = ctx2.tid().lt(ctx2.c(k))
    slot2 = ctx2.add(ctx2.mul(em2.row, k), ctx2.tid())
    accs2 = []
    for b2, a, ident in zip(bufs2, accs, idents, strict=True):
        v = ctx2.var("acc", a.dtype)
        em2.body.append(Declare(v, Select(has, Load(b2, slot2, a.dtype, has, ident), ident)))
        accs2.append(v)
    _finish(em2, r, em2.block_combine(accs2, combine))
    _store_scalars(em2)
    k2 = ctx2.kernel(em2.body, second.grid, block2, group, plan, second.stage)
    return [k1, k2]


