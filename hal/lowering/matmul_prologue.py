"""A norm (RMSNorm, LayerNorm) fused into the following matmul as a prologue of its A operand.

A matmul block reads every element of its A row panel (BM rows x all of K) over its K loop.
When A is computed from row reductions over A's contraction extent K (the norm's statistics
of A's rows), the block recomputes those statistics for its BM rows in a pre-pass before the
K loop, and the A tile loads then apply the norm's elementwise prologue exactly as the graph
does (cast(x) * rinv * w, then the cast to bf16), so the result rounds like the graph.

The pre-pass (`emit_prologue_reductions`, called by `hal.lowering.matmul.lower_matmul`):

* reductions are grouped by dependency level (`fusion.cost._reduction_levels`; LayerNorm:
  the mean, then the variance of x - mean); each level is one sweep over the block's rows;
* warp w of the block handles rows w, w + nwarps, ... of its BM rows; the lanes of a warp
  stride K (coalesced loads along A's contiguous axis), accumulating in the reduction's
  accumulation dtype (reduction.py's `acc_setup` / `accumulate`), then an xor shuffle tree
  at the spec's warp width (reduction.py's `block_combine` with a one-warp block) gives every
  lane the row's value; lane 0 stores it (rounded to the reduction's dtype, as the reduction
  lowering does) into a shared array of BM values per reduction; rows past M are masked (they
  load nothing and store the identity); a barrier ends each level; the order of the sums is
  fixed (deterministic);
* the reduction nodes are then taken out of the builder's producers and a load hook serves
  `builder.value(reduce_output, coords)` from the shared array at (row - m0): a reduction
  result is per-row, valid at any coordinates of the row, so it cannot be one fixed-coordinate
  `env` entry (expr.ScalarBuilder's env) the way reduction.py binds a block's single row;
  everything computed from it (mean, rsqrt, the broadcast back to A) is evaluated by the
  builder as usual, in the pre-pass of the next level and in the A tile loads.

`prologue_layout` checks the structure the fusion pass (fusion.structure.structural_veto) admits:
every reduction reduces A's rows (same batch and M index) over A's contraction axes, which
are A's trailing axes, keeps its reduced axes, and feeds only A; the normalised A itself is
not needed outside the kernel.
"""

from __future__ import annotations

import math

from hal.dtypes import compute_dtype
from hal.errors import UnsupportedError
from hal.kernel.ir import Barrier, Binary, Cast, Expr, For, If, Load, Stmt, Store
from hal.lowering.context import KernelContext, contiguous_strides
from hal.lowering.expr import ScalarBuilder, rounded
from hal.ops import Category, get_op

_HINT = "keep the norm in its own kernel (split the group before the matmul)"


def prologue_reductions(nodes) -> list:
    """The reduction nodes of a matmul group (empty: no pre-pass)."""
    return [n for n in nodes if get_op(n.op).category is Category.REDUCTION]


def row_space(r, a, dims) -> tuple[tuple[int, ...], tuple[int, ...]] | str:
    """(input shape, kept shape) of reduction `r` when it reduces A's rows over A's
    contraction axes, or why it does not. The rows are A's own (same shape, reduced axes =
    A's contraction axes), or those of a tensor whose leading axes a reshape merges into A's
    M axis (torch's `x.view(-1, d)` before a Linear: the norm runs on [B, S, D], the matmul
    reads [B*S, D]; row r of A is row r of the tensor in row-major order). `dims` is
    contraction_dims of the matmul."""
    from hal.ops.reduction import reduction_axes

    lb, _rb, lc, _rc, _lf, _rf = dims
    xs, as_ = tuple(r.inputs[0].shape), tuple(a.shape)
    axes = reduction_axes(r)
    what = f"{r.op} (%{r.outputs[0].name})"
    if xs == as_ and axes == tuple(lc):
        keep = tuple(1 if i in lc else d for i, d in enumerate(as_))
    elif not lb and tuple(lc) == (a.rank - 1,) and axes == (len(xs) - 1,) and xs \
            and xs[-1] == as_[-1] and math.prod(xs[:-1]) == math.prod(as_[:-1]):
        keep = xs[:-1] + (1,)
    else:
        return (f"{what} reduces axes {list(axes)} of {list(xs)}: a matmul prologue may only "
                f"reduce A's rows over its contraction axes {list(lc)} of {list(as_)}")
    if tuple(r.outputs[0].shape) != keep:
        return f"{what} drops its reduced axes (row statistics must keep them to broadcast " \
               f"back to A)"
    return xs, keep


def reduction_layout(nodes, dot, reductions) -> tuple[set[int], set, set] | str:
    """(ids of the nodes A is computed from, the reductions' row spaces, their kept
    shapes) when every reduction of `nodes` can be the pre-pass of `dot`'s A operand, or
    why not: A must not be read transposed, and each reduction must feed A, not be an arg
    reduction and reduce A's rows over its contraction axes (row_space). Shared by the
    fusion rule (fusion.structure) and the lowering (prologue_layout)."""
    from hal.ops.contraction import contraction_dims

    a = dot.inputs[0]
    dims = contraction_dims(dot)
    lb, _rb, lc, _rc, lf, _rf = dims
    rank = a.rank
    producer = {o.name: n for n in nodes for o in n.outputs}
    ancestors: set[int] = set()
    stack = [a.name]
    while stack:
        n = producer.get(stack.pop())
        if n is not None and id(n) not in ancestors:
            ancestors.add(id(n))
            stack.extend(v.name for v in n.inputs)
    spaces = {tuple(a.shape)}   # A's rows, or a tensor whose leading axes a reshape merges
    keeps = {tuple(1 if i in lc else d for i, d in enumerate(a.shape))}
    for r in reductions:
        what = f"{r.op} (%{r.outputs[0].name})"
        if id(r) not in ancestors:
            return f"{what} precedes a matmul but does not feed its A operand (only A's rows " \
                   f"can be normalised in its kernel)"
        if r.op in ("argmax", "argmin"):
            return f"{what}: an arg reduction cannot be a matmul prologue"
        if tuple(lc) != tuple(range(rank - len(lc), rank)) or \
                tuple(lb) + tuple(lf) != tuple(range(rank - len(lc))):
            return f"{what}: the matmul reads A transposed (a prologue row reduction needs " \
                   f"K as A's trailing axes)"
        space = row_space(r, a, dims)
        if isinstance(space, str):
            return space
        spaces.add(space[0])
        keeps.add(space[1])
    return ancestors, spaces, keeps


def prologue_layout(group, dot) -> str | None:
    """Why the reductions of matmul group `group` cannot be the pre-pass of `dot`'s A, or None."""
    layout = reduction_layout(group.nodes, dot, prologue_reductions(group.nodes))
    if isinstance(layout, str):
        return layout
    ancestors = layout[0]
    outs = {v.name for v in group.outputs}
    for n in group.nodes:
        if id(n) in ancestors and any(o.name in outs for o in n.outputs):
            return f"%{n.outputs[0].name}, computed before the matmul, is needed outside " \
                   f"the kernel"
    return None


def emit_prologue_reductions(ctx: KernelContext, builder: ScalarBuilder, body: list[Stmt],
                             group, dot, m0: Expr, bcoords, tiles,
                             threads: int | None = None) -> None:
    """Emit the pre-pass computing the row reductions of A's block rows into shared memory
    (see the module docstring) and make `builder` read them there. No-op without reductions.
    `threads`: the block's threads when they differ from `tiles.threads` (the Hopper kernel's
    producer warpgroup joins the pre-pass)."""
    reds = prologue_reductions(group.nodes)
    if not reds:
        return
    from hal.lowering.reduction import RowEmitter, RowLayout, acc_setup, accumulate
    from hal.lowering.traffic import reduction_levels
    from hal.ops.contraction import contraction_dims

    why = prologue_layout(group, dot)
    if why:
        raise UnsupportedError(f"group {group.name}: {why}", hint=_HINT)
    spec = ctx.spec
    w = spec.warp_size
    threads = threads or tiles.threads
    if threads % w:
        raise UnsupportedError(f"group {group.name}: {threads} threads are not whole warps of "
                               f"{w}: the prologue pre-pass reduces a row per warp", hint=_HINT)
    a = dot.inputs[0]
    lb, _rb, lc, _rc, lf, _rf = contraction_dims(dot)
    ms, ks = [a.shape[i] for i in lf], [a.shape[i] for i in lc]
    m, k = math.prod(ms), math.prod(ks)
    keep = tuple(1 if i in lc else d for i, d in enumerate(a.shape))
    levels = reduction_levels(group.nodes, reds)
    lay = RowLayout(tuple(a.shape), tuple(lc), tuple(a.shape[i] for i in (*lb, *lf)),
                         keep, tuple(ks), levels, [], [])
    em = RowEmitter(group, spec, lay, ctx, "block_per_row", w)  # one-warp combine: shuffles
    # one shared array of BM values per reduction, reused by every column-panel segment of
    # the kernel (only one segment runs in a block)
    stats: dict[str, tuple[str, object]] = ctx.__dict__.setdefault("prologue_stats", {})
    for r in reds:
        dt = compute_dtype(r.outputs[0].dtype)
        if r.outputs[0].name not in stats:
            stats[r.outputs[0].name] = (
                ctx.shared_buffer(f"stat_{r.outputs[0].name}", dt, tiles.bm), dt)

    m_strides = contiguous_strides(ms)
    dims = contraction_dims(dot)
    # reduction output -> the shape of its rows' space when it is not A's (a reshape merges
    # its leading axes into A's rows: row-major row index, no batch axes)
    reshaped: dict[str, tuple[int, ...]] = ctx.__dict__.setdefault("prologue_spaces", {})
    for r in reds:
        xs, _keep = row_space(r, a, dims)   # prologue_layout checked it
        if xs != tuple(a.shape):
            reshaped[r.outputs[0].name] = xs

    def hook(b: ScalarBuilder, v, coords, mask):
        if v.name not in stats:
            return prev(b, v, coords, mask) if prev is not None else None
        buf, dt = stats[v.name]
        if v.name in reshaped:
            lead = reshaped[v.name][:-1]
            row = ctx.linear(list(coords[:len(lead)]), contiguous_strides(list(lead)))
        else:
            row = ctx.linear([coords[i] for i in lf], m_strides)
        at = Binary("sub", row, m0)
        if v.name in reshaped:  # a masked-off lane past K maps into the next row: clamp
            at = Binary("minimum", Binary("maximum", at, ctx.c(0)), ctx.c(tiles.bm - 1))
        return Load(buf, ctx.declare(b.stmts, "srow", at), dt)

    # reduction results come from the shared arrays from now on (pre-pass levels > 0 too)
    prev = builder.load_hook
    for name in stats:
        builder.producer.pop(name, None)
    builder.load_hook = hook

    nwarps = threads // w
    tid = ctx.tid()
    warp = ctx.declare(body, "warp", ctx.div(tid, w))
    lane = ctx.declare(body, "lane", ctx.mod(tid, w))
    for level in levels:
        rr = ctx.var("rr", ctx.idx)
        rows: list[Stmt] = []
        r = ctx.declare(rows, "prow", ctx.add(ctx.mul(rr, nwarps), warp))
        gm = ctx.declare(rows, "pm", ctx.add(m0, r))
        row_ok: Expr = gm.lt(ctx.c(m))
        if tiles.bm % nwarps:
            row_ok = Binary("logical_and", r.lt(ctx.c(tiles.bm)), row_ok)
        row_ok = ctx.declare(rows, "pok", row_ok)
        em.body = rows
        setups = [(red, *acc_setup(em, red)) for red in level]
        it = ctx.var("pk", ctx.idx)
        kl: list[Stmt] = []
        kk = ctx.declare(kl, "pkk", ctx.add(ctx.mul(it, w), lane))
        inner: list[Stmt] = []
        coords: list[Expr | None] = [None] * a.rank
        for dd, cs in ((lb, bcoords), (lf, ctx.unravel(gm, ms)), (lc, ctx.unravel(kk, ks))):
            for d, c in zip(dd, cs, strict=True):
                coords[d] = c
        em.b = builder.scope(inner)
        for red, accs, combine, _ident in setups:
            xs = reshaped.get(red.outputs[0].name)
            at = tuple(coords) if xs is None else (*ctx.unravel(gm, list(xs[:-1])), kk)
            accumulate(em, red, accs, combine, inner, at, kk)
        kl.append(If(Binary("logical_and", row_ok, kk.lt(ctx.c(k))), inner))
        steps = k // w if ctx.options.fault("prologue_floor_k") else -(-k // w)  # self-test
        rows.append(For(it, ctx.c(0), ctx.c(steps), ctx.c(1), kl))
        stores: list[Stmt] = []
        for red, accs, combine, _ident in setups:
            (val,) = em.block_combine(accs, combine)  # every lane holds the row's value
            out = red.outputs[0]
            buf, dt = stats[out.name]
            e = rounded(val, out.dtype, ctx.options) if val.dtype == dt else Cast(val, dt)
            stores.append(Store(buf, r, e))
        lane0 = lane.lt(ctx.c(1))   # (lane == 0: `if ((v == 0))` draws clang's -Wparentheses)
        if tiles.bm % nwarps:
            lane0 = Binary("logical_and", lane0, r.lt(ctx.c(tiles.bm)))
        rows.append(If(lane0, stores))
        body.append(For(rr, ctx.c(0), ctx.c(-(-tiles.bm // nwarps)), ctx.c(1), rows))
        body.append(Barrier())
