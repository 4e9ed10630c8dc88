"""Lowering of attention groups: the SIMT flash kernel (one kernel, or split-K partials).

The attention group's roles come from hal.lowering.attention_match (`match_attention`),
its tiles and schedule from hal.lowering.attention_tiles (`plan_attention`); this module
emits the FlashAttention-2 style kernel:

* a block owns Br query rows of one batch entry (grid x: row tiles, grid y: batch
  entries, e.g. (batch, kv head) in the GQA layout, where the rows of the G query heads
  sharing a kv head are consecutive); each row is handled by `tpr` consecutive threads;
* the Q tile is staged in shared memory once; per key tile of Bc keys the block stages K
  and V in shared memory, each thread computes Bc/tpr scores of its row, runs them
  through the group's own scalar program for x (the ScalarBuilder walks the nodes:
  nothing here knows about scales or masks), takes the row max with a shuffle tree of
  width tpr, computes e = exp(x - m_new) through the builder again, writes P = g(e) to
  shared memory and accumulates the row sum; the running max and sum rescale the Dv/tpr
  accumulators of the thread by exp(m_old - m_new) (online softmax);
* at the end o = acc / l is rounded to the output dtype and stored.

A causal mask (hal.lowering.attention_causal) ends the key loop at the block's diagonal:
key tiles above it for every row of the block are neither loaded nor computed.

The group may also hold the operands' prologues (fusion.attention): elementwise, movement,
broadcast and source nodes computing q, k or v from the group's inputs (head split
transposes, a rotary embedding with its cos/sin tables, casts). The tile loads evaluate
them through the builder at the tile's coordinates, rounding where the graph rounds, so Q's
prologue runs once per block and K's and V's once per key tile of every block (every tile
of query rows: the cost model counts the recomputation). `match_attention` rejects a
prologue that needs anything but such nodes (`operand_prologues` lists them per operand).

When the graph rounds P before P @ V (a cast to f16/bf16 after the division, as the
composite does for 16-bit inputs), the online schedule cannot round like the graph, so
the kernel takes two passes over the key tiles (`AttentionPattern.two_pass`, "passes":
2): pass 1 stages K only and computes the final row max m and sum l online; pass 2
recomputes the scores and forms P through the group's own sub, exp, div and cast nodes
with m and l bound, so P rounds where the graph rounds it, and accumulates P V without
rescaling. It costs a second q k^T and a second read of K per row tile.

Scores, softmax statistics and accumulators are f32, or f64 when the graph computes the
contractions in f64 (`accumulator_dtype`). When the spec has a matrix instruction for the
operands' dtype, the planner picks hal.lowering.attention_mma instead (strategy
"flash_attention_mma": Q K^T and P V on the matrix unit, the same two-pass schedule).

With few row tiles (decode), `plan_attention` may split the keys into S chunks
("split_k", hal.lowering.attention_split): `flash_body` walks one chunk per block and
partials go through scratch to a combine kernel. The S x T scores never reach memory.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

from hal.devices.spec import DeviceSpec
from hal.dtypes import DType, compute_dtype, i32
from hal.errors import UnsupportedError
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
    Unary,
)
from hal.lowering.attention_causal import causal_bound, emit_key_tile_limit
from hal.lowering.attention_loads import stage_tile, vector_width
from hal.lowering.attention_match import (  # noqa: F401  (re-exported: the attention API)
    AttentionPattern,
    accumulator_dtype,
    match_attention,
    operand_prologues,
)
from hal.lowering.attention_tiles import (  # noqa: F401  (re-exported)
    AttentionTiles,
    attention_tiles,
    plan_attention,
    schedule_reason,
    stage_dtype,
    tiles_for,
)
from hal.lowering.context import KernelContext, index_dtype_for
from hal.lowering.expr import (
    ScalarBuilder,
    reshape_coords,
    rounded,
    to_storage,
)
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions
from hal.lowering.plan import KernelPlan
from hal.lowering.pointwise import group_sizes
from hal.lowering.tiling import cdiv
from hal.ops.contraction import contraction_dims

# --------------------------------------------------------------------------- lowering


def _scatter(rank: int, parts) -> tuple[Expr, ...]:
    out: list[Expr | None] = [None] * rank
    for dims, coords in parts:
        for dim, c in zip(dims, coords, strict=True):
            out[dim] = c
    return tuple(out)  # type: ignore[arg-type]


def flash_body(group, spec: DeviceSpec, pat: AttentionPattern, t: AttentionTiles, name: str, *,
               chunk_tiles: int = 0, only: str = "", stats=None,
               options: LoweringOptions = DEFAULT_OPTIONS) -> SimpleNamespace:
    """The kernel body but its epilogue, and its live names. chunk_tiles: the block walks key
    tiles [z * chunk_tiles, +chunk_tiles) only (split-K); only="pass1"/"pass2": that pass of
    the two-pass schedule alone, pass 2 taking (m, l) from `stats(ctx, body, grow, bcoords)`."""
    ctx = KernelContext(name, spec, index_dtype_for(group_sizes(group), spec), options)
    adt = accumulator_dtype(pat)

    def _acc(e: Expr) -> Expr:
        return _as(e, adt)
    (q, k), (p_val, v), s0 = pat.qk.inputs, pat.pv.inputs, pat.qk.outputs[0]
    lb, rb, lc, rc, lf, rf = contraction_dims(pat.qk)
    plb, prb, plc, prc, plf, prf = contraction_dims(pat.pv)
    ks = [q.shape[i] for i in lc]
    threads, br, bc, tpr, d, dv = t.threads, t.br, t.bc, t.tpr, pat.d, pat.dv
    ns, na = bc // tpr, cdiv(dv, tpr)
    body: list[Stmt] = []
    tid = ctx.tid()
    r = ctx.declare(body, "r", ctx.div(tid, tpr))
    c = ctx.declare(body, "c", ctx.mod(tid, tpr))
    row0 = ctx.declare(body, "row0", ctx.mul(ctx.bid("x"), br))
    grow = ctx.declare(body, "grow", ctx.add(row0, r))
    bcoords = [x if not isinstance(x, Binary) else ctx.declare(body, "b", x)
               for x in ctx.unravel(ctx.bid("y"), list(pat.batch))]
    qdt, vdt, pdt = stage_dtype(q.dtype), stage_dtype(v.dtype), stage_dtype(p_val.dtype)
    q_sh, k_sh = ctx.shared_buffer("q_tile", qdt, br * d), ctx.shared_buffer("k_tile", qdt, bc * d)
    v_sh, p_sh = ctx.shared_buffer("v_tile", vdt, bc * dv), ctx.shared_buffer("p_tile", pdt, br * bc)
    acc = ctx.local_buffer("acc", adt, na)
    sreg = ctx.local_buffer("score", adt, ns)
    builder = ScalarBuilder(ctx, group.nodes, body)
    ninf = Const(-math.inf, adt)

    def q_coords(stmts, rr, cc):
        gm = ctx.declare(stmts, "gm", ctx.add(row0, rr))
        coords = _scatter(q.rank, [(lb, bcoords), (lf, [gm]), (lc, ctx.unravel(cc, ks))])
        return coords, gm.lt(ctx.c(pat.m))

    q_vec = vector_width(group, q, lc[-1] if len(lc) == 1 else -1, d, d, qdt)
    stage_tile(ctx, builder, body, q_sh, br, d, d, threads, q, qdt, q_coords, q_vec, group)
    m_i = ctx.var("m_run", adt)
    l_i = ctx.var("l_run", adt)
    body += [Declare(m_i, ninf), Declare(l_i, Const(0.0, adt))]
    i0 = ctx.var("i", ctx.idx)
    body.append(For(i0, ctx.c(0), ctx.c(na), ctx.c(1), [Store(acc, i0, Const(0.0, adt))],
                    unroll=True))

    def k_coords_at(n0: Expr):
        def k_coords(stmts, rr, cc):
            gn = ctx.declare(stmts, "gn", ctx.add(n0, rr))
            coords = _scatter(k.rank, [(rb, bcoords), (rf, [gn]), (rc, ctx.unravel(cc, ks))])
            return coords, gn.lt(ctx.c(pat.t))
        return k_coords

    def v_coords_at(n0: Expr):
        def v_coords(stmts, rr, cc):
            gn = ctx.declare(stmts, "gn", ctx.add(n0, rr))
            coords = _scatter(v.rank, [(prb, bcoords), (prc, [gn]), (prf, [cc])])
            return coords, gn.lt(ctx.c(pat.t))
        return v_coords

    # a causal mask: the key tiles past the block's diagonal are skipped (attention_causal)
    bound = causal_bound(pat, group.nodes)
    kt_lim = None if bound is None else emit_key_tile_limit(
        ctx, body, bound, row0, br, pat.m, bc, cdiv(pat.t, bc))

    def key_loop(emit) -> None:
        """for kt over the key tiles: n0 = kt * Bc; `emit(loop, n0)` fills the body."""
        kt = ctx.var("kt", ctx.idx)
        loop: list[Stmt] = []
        n0 = ctx.declare(loop, "n0", ctx.mul(kt, bc))
        emit(loop, n0)
        lo, hi = ctx.c(0), kt_lim if kt_lim is not None else ctx.c(cdiv(pat.t, bc))
        if chunk_tiles:
            lo = ctx.declare(body, "kt0", ctx.mul(ctx.bid("z"), chunk_tiles))
            hi = Binary("minimum", ctx.add(lo, chunk_tiles), hi)
        body.append(For(kt, lo, hi, ctx.c(1), loop))

    # K and V rows by vector copies where the layout allows (attention_loads)
    k_vec = vector_width(group, k, rc[-1] if len(rc) == 1 else -1, d, d, qdt)
    v_vec = vector_width(group, v, prf[0], dv, dv, vdt)

    def stage(loop: list[Stmt], n0: Expr, with_v: bool) -> None:
        stage_tile(ctx, builder, loop, k_sh, bc, d, d, threads, k, qdt, k_coords_at(n0), k_vec,
                   group)
        if with_v:
            stage_tile(ctx, builder, loop, v_sh, bc, dv, dv, threads, v, vdt, v_coords_at(n0),
                       v_vec, group)
        loop.append(Barrier())

    def score_coords(gn: Expr) -> tuple[tuple[Expr, ...], tuple[Expr, ...]]:
        s_coords = (*bcoords, grow, gn)
        x_coords = s_coords if tuple(pat.logits.shape) == tuple(s0.shape) else \
            reshape_coords(ctx, s_coords, s0.shape, pat.logits.shape)
        return s_coords, x_coords

    si = ctx.var("s", ctx.idx)

    def scores(loop: list[Stmt], n0: Expr, track_max: bool):
        """x of this thread's Bc/tpr keys into `score` (-inf where there is no key), through
        the group's logits program; with track_max, their max in `tmax`."""
        tmax = ctx.var("tmax", adt) if track_max else None
        if tmax is not None:
            loop.append(Declare(tmax, ninf))
        sl: list[Stmt] = []
        j = ctx.declare(sl, "j", ctx.add(ctx.mul(si, tpr), c))
        gn = ctx.declare(sl, "gn", ctx.add(n0, j))
        ok = ctx.declare(sl, "ok", grow.lt(ctx.c(pat.m)) if ctx.options.fault("attention_key_mask")
                         else Binary("logical_and", grow.lt(ctx.c(pat.m)), gn.lt(ctx.c(pat.t))))
        sl.append(Store(sreg, si, ninf))
        dot = ctx.var("dot", adt)
        inner: list[Stmt] = [Declare(dot, Const(0.0, adt))]
        dd = ctx.var("d", ctx.idx)
        qv = Load(q_sh, ctx.add(ctx.mul(r, d), dd), qdt)
        kv = Load(k_sh, ctx.add(ctx.mul(j, d), dd), qdt)
        inner.append(For(dd, ctx.c(0), ctx.c(d), ctx.c(1),
                         [Assign(dot, dot + _acc(qv) * _acc(kv))]))
        _s_coords, x_coords = score_coords(gn)
        s_cd = compute_dtype(s0.dtype)
        s_val = ctx.declare(inner, "s0",
                            rounded(Cast(dot, s_cd) if s_cd != adt else dot, s0.dtype,
                                    ctx.options))
        lb_ = builder.scope(inner)
        lb_.env = dict(builder.env)
        lb_.env[s0.name] = (None, s_val)
        xv = lb_.value(pat.logits, x_coords)
        inner.append(Store(sreg, si, _acc(xv)))
        sl.append(If(ok, inner))
        if tmax is not None:
            sl.append(Assign(tmax, Binary("maximum", tmax, Load(sreg, si, adt))))
        loop.append(For(si, ctx.c(0), ctx.c(ns), ctx.c(1), sl))
        return tmax

    def prob_builder(pl: list[Stmt], n0: Expr, row_max: Expr):
        """(builder, score coords, logits coords, key in tile) for key s of this thread: the
        builder reads x from `score` and the row max as `row_max`."""
        j2 = ctx.declare(pl, "j", ctx.add(ctx.mul(si, tpr), c))
        gn2 = ctx.declare(pl, "gn", ctx.add(n0, j2))
        s2, x2 = score_coords(gn2)
        eb = builder.scope(pl)
        eb.env = dict(builder.env)
        xcd = compute_dtype(pat.logits.dtype)
        eb.env[pat.logits.name] = (None, ctx.declare(pl, "x", _as(Load(sreg, si, adt), xcd)))
        eb.env[pat.row_max.outputs[0].name] = (None, _as(row_max, xcd))
        return eb, s2, x2, j2

    def online(loop: list[Stmt], n0: Expr, with_p: bool) -> Expr:
        """Running max and sum over this key tile; with_p, also P = g(exp(x - m_new)) to
        shared memory (one-pass). Returns alpha = exp(m_old - m_new)."""
        tmax = scores(loop, n0, True)
        _row_allreduce(loop, ctx, tmax, "maximum", tpr)
        m_new = ctx.declare(loop, "m_new", Binary("maximum", m_i, tmax))
        m_use = ctx.declare(loop, "m_use", Select(m_new.eq(ninf), Const(0.0, adt), m_new))
        alpha = ctx.declare(loop, "alpha", Unary("exp", m_i - m_use))
        tsum = ctx.var("tsum", adt)
        loop.append(Declare(tsum, Const(0.0, adt)))
        pl: list[Stmt] = []
        eb, s2, x2, j2 = prob_builder(pl, n0, m_use)
        ev = ctx.declare(pl, "ev", eb.value(pat.exps, x2))
        pl.append(Assign(tsum, tsum + _acc(ev)))
        if with_p:
            pb = builder.scope(pl)
            pb.env = dict(builder.env)
            pb.env[pat.probs.name] = (None, ev)
            pl.append(Store(p_sh, ctx.add(ctx.mul(r, bc), j2), _as(pb.value(p_val, s2), pdt)))
        loop.append(For(si, ctx.c(0), ctx.c(ns), ctx.c(1), pl))
        _row_allreduce(loop, ctx, tsum, "add", tpr)
        loop.append(Assign(l_i, l_i * alpha + tsum))
        loop.append(Assign(m_i, m_new))
        return alpha

    ai = ctx.var("a", ctx.idx)

    def accumulate(loop: list[Stmt], alpha: Expr | None) -> None:
        """acc = acc * alpha + P V over this key tile (P and V from shared memory)."""
        al: list[Stmt] = []
        dvi = ctx.declare(al, "dv", ctx.add(ctx.mul(ai, tpr), c))
        o = ctx.var("o", adt)
        old = Load(acc, ai, adt)
        rescale = alpha is not None and not ctx.options.fault("attention_no_rescale")
        ain: list[Stmt] = [Declare(o, old * alpha if rescale else old)]  # (self-test hook)
        jj = ctx.var("jj", ctx.idx)
        pv_l = Load(p_sh, ctx.add(ctx.mul(r, bc), jj), pdt)
        vv_l = Load(v_sh, ctx.add(ctx.mul(jj, dv), dvi), vdt)
        ain.append(For(jj, ctx.c(0), ctx.c(bc), ctx.c(1),
                       [Assign(o, o + _acc(pv_l) * _acc(vv_l))]))
        ain.append(Store(acc, ai, o))
        al.extend(ain) if dv % tpr == 0 else al.append(If(dvi.lt(ctx.c(dv)), ain))
        loop.append(For(ai, ctx.c(0), ctx.c(na), ctx.c(1), al))

    if not pat.two_pass:
        # one pass: P = g(exp(x - m_run)) unnormalised, acc rescaled per tile, o = acc / l
        def one_pass(loop: list[Stmt], n0: Expr) -> None:
            stage(loop, n0, True)
            alpha = online(loop, n0, True)
            loop.append(Barrier())
            accumulate(loop, alpha)
            loop.append(Barrier())  # the next key tile overwrites K, V and P

        key_loop(one_pass)
    else:
        # P = exp(x - m) / l is rounded before P @ V: pass 1 finds the final m and l, pass 2
        # forms P through the group's own sub, exp, div, cast nodes (rounds like the graph)
        def pass1(loop: list[Stmt], n0: Expr) -> None:
            stage(loop, n0, False)
            online(loop, n0, False)
            loop.append(Barrier())  # the next key tile overwrites K

        if only != "pass2":
            key_loop(pass1)
        if stats is not None:
            m_s, l_s = stats(ctx, body, grow, bcoords)
            body += [Assign(m_i, m_s), Assign(l_i, l_s)]
        m_fin = ctx.declare(body, "m_fin", Select(m_i.eq(ninf), Const(0.0, adt), m_i))

        def pass2(loop: list[Stmt], n0: Expr) -> None:
            stage(loop, n0, True)
            scores(loop, n0, False)
            pl: list[Stmt] = []
            pb, s2, _x2, j2 = prob_builder(pl, n0, m_fin)
            # the row sum rounded where the graph stores it (a bf16 reduce_sum: P = e / z
            # divides by the rounded z)
            zs = pat.row_sum.outputs[0]
            pb.env[zs.name] = (None, rounded(_as(l_i, compute_dtype(zs.dtype)), zs.dtype,
                                             ctx.options))
            pl.append(Store(p_sh, ctx.add(ctx.mul(r, bc), j2), _as(pb.value(p_val, s2), pdt)))
            loop.append(For(si, ctx.c(0), ctx.c(ns), ctx.c(1), pl))
            loop.append(Barrier())
            accumulate(loop, None)
            loop.append(Barrier())  # the next key tile overwrites K, V and P

        if only != "pass1":
            key_loop(pass2)
    return SimpleNamespace(ctx=ctx, body=body, builder=builder, ai=ai, c=c, grow=grow,
                           bcoords=bcoords, na=na, acc=acc, m_i=m_i, l_i=l_i, adt=adt)


def lower_attention(group, plan: KernelPlan, spec: DeviceSpec,
                    options: LoweringOptions = DEFAULT_OPTIONS) -> list[Kernel]:
    """Emit `plan` (planners_tiled.plan_attention_group): its tiles and split-K."""
    pat = match_attention(group.nodes)
    if isinstance(pat, str) or not plan.tiles:
        why = pat if isinstance(pat, str) else "; ".join(plan.reasons)
        raise UnsupportedError(f"group {group.name}: not a fusable attention: {why}",
                               hint="split the group at its contractions")
    out = pat.pv.outputs[0]
    for v in group.outputs:
        if v.name != out.name:
            raise UnsupportedError(f"group {group.name}: %{v.name} is needed outside the "
                                   f"attention kernel", hint="only the attention output leaves")
    nb = math.prod(pat.batch)
    if nb * pat.m * pat.dv == 0:
        return []
    if plan.strategy == "flash_attention_wgmma":   # Hopper: wgmma + TMA, warp-specialised
        from hal.lowering.attention_wgmma import lower_attention_wgmma

        return lower_attention_wgmma(group, plan, spec, pat, options)
    if plan.strategy == "flash_attention_mma":   # Q K^T and P V on the matrix unit
        if plan.detail("split_k", 1) > 1:
            from hal.lowering.attention_mma_split import lower_split_mma

            return lower_split_mma(group, plan, spec, pat, options)
        from hal.lowering.attention_mma import lower_attention_mma

        return lower_attention_mma(group, plan, spec, pat, options)
    sizes = plan.tile_sizes
    t = tiles_for(pat, spec, (sizes["br"], sizes["bc"], sizes["tpr"]))
    if plan.detail("split_k", 1) > 1:
        from hal.lowering.attention_split import lower_split_k

        return lower_split_k(group, plan, spec, pat, t, options)
    f = flash_body(group, spec, pat, t, group.name, options=options)
    ctx, ai, grow = f.ctx, f.ai, f.grow
    # epilogue: o = acc / l (two-pass: acc, P is normalised), rounded to the output dtype
    el: list[Stmt] = []
    dvo = ctx.declare(el, "dv", ctx.add(ctx.mul(ai, t.tpr), f.c))
    res = Load(f.acc, ai, f.adt) if pat.two_pass else Binary("div", Load(f.acc, ai, f.adt),
                                                             f.l_i)
    el.append(store_output(ctx, f.builder, pat, f.bcoords, grow, dvo, res))
    f.body.append(For(ai, ctx.c(0), ctx.c(f.na), ctx.c(1), el))
    return [ctx.kernel(f.body, plan.grid, plan.block, group, plan)]


def store_output(ctx: KernelContext, builder: ScalarBuilder, pat: AttentionPattern, bcoords,
                 grow: Expr, dvo: Expr, res: Expr) -> Stmt:
    """If (row, dv) in range: out[batch, row, dv] = res rounded to the output dtype."""
    out, nbd = pat.pv.outputs[0], len(pat.batch)
    st: list[Stmt] = []
    res = ctx.declare(st, out.name, rounded(_as(res, compute_dtype(out.dtype)), out.dtype,
                                              ctx.options))
    coords = _scatter(out.rank, [(tuple(range(nbd)), bcoords), ((nbd,), [grow]),
                                 ((nbd + 1,), [dvo])])
    param, idx = builder.store_index(out, coords)
    st.append(Store(param, idx, to_storage(res, out.dtype)))
    return If(Binary("logical_and", grow.lt(ctx.c(pat.m)), dvo.lt(ctx.c(pat.dv))), st)


def _as(e: Expr, d: DType) -> Expr:
    return e if e.dtype == d else Cast(e, d)


def _row_allreduce(stmts: list[Stmt], ctx: KernelContext, v, op: str, width: int) -> None:
    """Combine `v` over the `width` threads of a row (xor butterfly: all of them get it)."""
    off = width // 2
    while off >= 1:
        other = ctx.declare(stmts, "sh", Shuffle(v, "xor", Const(off, i32), width))
        stmts.append(Assign(v, Binary(op, v, other)))
        off //= 2


