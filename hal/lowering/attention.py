"""Lowering of attention groups: dot -> elementwise logits -> row softmax -> dot, one kernel.

An "attention" group holds two contractions and the nodes between them, as the
decomposition of scaled_dot_product_attention (or a user's variant) leaves them:

    s = dot_general(q, k)            # scores, contracting the head dim
    x = f(s, ...)                    # ANY elementwise chain: scale, masks, softcap, GQA ...
    m = reduce_max(x, last axis); e = exp(x - m); l = reduce_sum(e, last axis)
    p = g(e / l)                     # cast / reshape back to s's shape
    o = dot_general(p, v)

`match_attention(nodes)` finds these roles (or says why the nodes are not an attention);
`attention_tiles(...)` picks the tile sizes from the spec; the lowering emits a
FlashAttention-2 style kernel:

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

import functools
import math
from dataclasses import asdict, dataclass, replace
from types import SimpleNamespace

from hal.devices.spec import DeviceSpec
from hal.dtypes import DType, compute_dtype, f32, f64, i32
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
    Unary,
)
from hal.lowering.context import KernelContext, index_dtype_for
from hal.lowering.expr import (
    ScalarBuilder,
    cooperative_tile_load,
    reshape_coords,
    rounded,
    to_storage,
)
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions
from hal.lowering.plan import KernelPlan
from hal.lowering.pointwise import group_sizes
from hal.lowering.tiling import cdiv, round_up
from hal.ops import Category, get_op
from hal.ops.contraction import contraction_dims

# Ops allowed on the score path (s -> x) and on the probability path (e / l -> p).
_SCORE_CATS = {Category.ELEMENTWISE, Category.BROADCAST, Category.SOURCE, Category.MOVEMENT}
_PROB_OPS = {"cast", "reshape"}


@dataclass
class AttentionPattern:
    qk: Node
    pv: Node
    logits: Value       # x: the row-softmax input
    row_max: Node       # reduce_max(x)
    exps: Value         # e = exp(x - m)
    row_sum: Node       # reduce_sum(e)
    probs: Value        # e / l
    batch: tuple[int, ...]
    m: int              # query rows per batch entry
    t: int              # keys
    d: int              # contraction length of q k^T
    dv: int             # value width
    p_round: tuple[DType, ...] = ()  # dtypes the graph rounds P to (in order) before P @ V

    @property
    def two_pass(self) -> bool:
        """P is rounded before P @ V: the kernel must normalise before rounding, so it needs
        the final row max and sum first (a second pass over the keys)."""
        return bool(self.p_round)


def _cat(n: Node) -> Category:
    return get_op(n.op).category


def _last_axis_only(r: Node) -> bool:
    from hal.ops.reduction import reduction_axes

    x = r.inputs[0]
    return x.rank >= 1 and reduction_axes(r) == (x.rank - 1,)


def match_attention(nodes: list[Node]) -> AttentionPattern | str:
    """The attention roles of `nodes` (a group's nodes in graph order), or why there are none."""
    dots = [n for n in nodes if _cat(n) is Category.CONTRACTION]
    reds = [n for n in nodes if _cat(n) is Category.REDUCTION]
    if len(dots) != 2:
        return f"{len(dots)} contractions (attention has two)"
    qk, pv = dots
    maxes = [r for r in reds if r.op == "reduce_max"]
    sums = [r for r in reds if r.op == "reduce_sum"]
    if len(reds) != 2 or len(maxes) != 1 or len(sums) != 1:
        return "the nodes between the contractions are not one row softmax " \
               "(reduce_max and reduce_sum)"
    rmax, rsum = maxes[0], sums[0]
    if not (_last_axis_only(rmax) and _last_axis_only(rsum)):
        return "the softmax does not reduce over the key axis (the last one)"
    producer = {o.name: n for n in nodes for o in n.outputs}
    x, e = rmax.inputs[0], rsum.inputs[0]

    def through_bcast(v: Value) -> Value:
        p = producer.get(v.name)
        return p.inputs[0] if p is not None and p.op == "broadcast_to" else v

    ex = producer.get(e.name)
    sub = producer.get(ex.inputs[0].name) if ex is not None and ex.op == "exp" else None
    if sub is None or sub.op != "sub" or sub.inputs[0].name != x.name or \
            through_bcast(sub.inputs[1]).name != rmax.outputs[0].name:
        return "the softmax numerator is not exp(x - max(x))"
    div = next((n for n in nodes if n.op == "div" and n.inputs[0].name == e.name
                and through_bcast(n.inputs[1]).name == rsum.outputs[0].name), None)
    if div is None:
        return "the softmax is not normalised by div(e, sum(e))"
    # probability path: div -> (cast | reshape)* -> pv lhs
    v = pv.inputs[0]
    path = [v]
    while v.name != div.outputs[0].name:
        p = producer.get(v.name)
        if p is None or p.op not in _PROB_OPS:
            return f"{p.op if p else v.name} between the softmax and the second contraction"
        v = p.inputs[0]
        path.append(v)
    # a value stored narrower than it is computed is a rounding (the div's own included)
    p_round = tuple(x.dtype for x in reversed(path) if producer[x.name].op != "reshape"
                    and x.dtype.is_float and compute_dtype(x.dtype) != x.dtype)
    s0 = qk.outputs[0]
    lb, _rb, lc, _rc, lf, rf = contraction_dims(qk)
    if len(lf) != 1 or len(rf) != 1:
        return "the score contraction must have one query axis and one key axis"
    nb = len(lb)
    if tuple(pv.inputs[0].shape) != tuple(s0.shape):
        return "the probabilities do not have the scores' shape"
    plb, _prb, plc, _prc, plf, prf = contraction_dims(pv)
    if plb != tuple(range(nb)) or plf != (nb,) or plc != (nb + 1,) or len(prf) != 1:
        return "the second contraction does not contract the key axis of the probabilities"
    if x.type.numel != s0.type.numel or x.shape[-1] != s0.shape[-1]:
        return "the logits are not the scores' elements"
    for n in nodes:
        if n in (qk, pv, rmax, rsum, div) or n.op in _PROB_OPS:
            continue
        if _cat(n) not in _SCORE_CATS:
            return f"{n.op} cannot be computed per score element"
    for role, operand in zip("qkv", (*qk.inputs, pv.inputs[1]), strict=True):
        why = _prologue_problem(operand, producer)
        if why:
            return f"the {role} operand {why}"
    a = qk.inputs[0]
    batch = tuple(a.shape[i] for i in lb)
    b_shape = pv.inputs[1].shape
    return AttentionPattern(qk, pv, x, rmax, e, rsum, div.outputs[0], batch,
                            a.shape[lf[0]], s0.shape[-1],
                            math.prod(a.shape[i] for i in lc), b_shape[prf[0]], p_round)


def _prologue_problem(operand: Value, producer: dict[str, Node]) -> str:
    """Why the group's nodes producing `operand` (its prologue, computed per element while
    a tile is loaded) cannot be; "" when they can (elementwise/movement/broadcast/source)."""
    stack, seen = [operand.name], set()
    while stack:
        p = producer.get(stack.pop())
        if p is None or id(p) in seen:
            continue
        seen.add(id(p))
        if _cat(p) not in _SCORE_CATS:
            return f"depends on {p.op} (%{p.outputs[0].name}) inside the group"
        stack.extend(v.name for v in p.inputs)
    return ""


def operand_prologues(pat: AttentionPattern, nodes: list[Node]) -> dict[str, list[Node]]:
    """The group's nodes computing each operand ("q", "k", "v"), evaluated per element while
    that operand's tiles are loaded (a node shared by two operands is in both)."""
    producer = {o.name: n for n in nodes for o in n.outputs}
    out: dict[str, list[Node]] = {}
    for role, operand in zip("qkv", (*pat.qk.inputs, pat.pv.inputs[1]), strict=True):
        found: dict[int, Node] = {}
        stack = [operand.name]
        while stack:
            p = producer.get(stack.pop())
            if p is None or id(p) in found:
                continue
            found[id(p)] = p
            stack.extend(v.name for v in p.inputs)
        out[role] = list(found.values())
    return out


# --------------------------------------------------------------------------- tiles


@dataclass(frozen=True)
class AttentionTiles:
    br: int       # query rows per block
    bc: int       # keys per tile
    tpr: int      # threads per query row
    shared_bytes: int
    registers: int
    passes: int = 1   # 2: max and sum first, then P (normalised, rounded as the graph says) @ V

    @property
    def threads(self) -> int:
        return self.br * self.tpr

    def as_dict(self) -> dict[str, int]:
        return asdict(self) | {"threads": self.threads}


def _smem(br: int, bc: int, d: int, dv: int, qb: int, vb: int, pb: int) -> int:
    parts = [br * d * qb, bc * d * qb, bc * dv * vb, br * bc * pb]
    return sum(round_up(x, 16) for x in parts)


@functools.lru_cache(maxsize=512)  # pure in its arguments; the spec hashes by identity
def attention_tiles(m: int, t: int, d: int, dv: int, qb: int, vb: int, pb: int,
                    blocks_per_row_tile: int, spec: DeviceSpec) -> AttentionTiles | str:
    """The best (Br, Bc, threads per row) that fits the spec, or why none does.

    Fits: Q, K, V and P tiles within shared_mem_per_block, Br * tpr threads whole warps
    within max_threads_per_block, Bc/tpr scores + Dv/tpr accumulators + ~24 registers within
    spec.registers_per_thread_at(threads). Preference: enough blocks to keep a quarter of
    the units busy, then the largest Br * Bc (fewest K/V re-reads per byte of shared
    memory), then the larger Br, then more threads."""
    w = spec.warp_size
    cands = []
    for br in (128, 64, 32, 16, 8):
        for bc in (128, 64, 32, 16, 8):
            tpr = w
            while tpr >= 1:
                threads = br * tpr
                # scores and accumulators: two registers each in f64 (f64 attention)
                regs = (cdiv(bc, tpr) + cdiv(dv, tpr)) * (2 if qb == 8 else 1) + 24
                smem = _smem(br, bc, d, dv, qb, vb, pb)
                if bc % tpr == 0 and threads % w == 0 and threads <= spec.max_threads_per_block \
                        and regs <= spec.registers_per_thread_at(threads) \
                        and smem <= spec.shared_mem_per_block:
                    cands.append(AttentionTiles(br, bc, tpr, smem, regs))
                tpr //= 2
    if not cands:
        small = _smem(8, 8, d, dv, qb, vb, pb)
        return (f"the smallest tiles (Br=8, Bc=8) need {small / 1024:.1f} KiB of shared memory "
                f"for head dims {d}/{dv}, {spec.name} has "
                f"{spec.shared_mem_per_block / 1024:.1f} KiB per block (or too few registers)")

    def score(c: AttentionTiles) -> tuple:
        busy = cdiv(m, c.br) * blocks_per_row_tile * 4 >= spec.compute_units
        waste = round_up(m, c.br) / max(1, m) + round_up(t, c.bc) / max(1, t)
        return (busy, -round(waste, 1), c.br * c.bc, c.br, min(c.threads, 8 * w), -c.registers)

    return max(cands, key=score)


def tiles_for(pat: AttentionPattern, spec: DeviceSpec,
              forced: tuple[int, int, int] | None = None) -> AttentionTiles | str:
    """The tiles of `pat` on `spec` (attention_tiles), or the forced (br, bc, tpr)."""
    qb, vb, pb = (_stage_dtype(x.dtype).itemsize for x in (pat.qk.inputs[0], *pat.pv.inputs[::-1]))
    passes = 2 if pat.two_pass else 1
    if forced:
        br, bc, tpr = forced
        return AttentionTiles(br, bc, tpr, _smem(br, bc, pat.d, pat.dv, qb, vb, pb),
                              (cdiv(bc, tpr) + cdiv(pat.dv, tpr)) * (2 if qb == 8 else 1) + 24,
                              passes)
    # Both schedules stage the same tiles (pass 1 only leaves V and P unused).
    tiles = attention_tiles(pat.m, pat.t, pat.d, pat.dv, qb, vb, pb,
                            math.prod(pat.batch), spec)
    return tiles if isinstance(tiles, str) else replace(tiles, passes=passes)


def schedule_reason(pat: AttentionPattern) -> str:
    """Why the kernel takes one pass over the keys or two (the plan's reason)."""
    if pat.two_pass:
        to = " then ".join(d.name for d in pat.p_round)
        return f"two-pass: P is rounded to {to} before P@V, as the graph says"
    return "one pass: online softmax (P is not rounded before P@V)"


def plan_attention(group, spec: DeviceSpec, forced_tiles: tuple[int, int, int] | None = None,
                   split_k: int | None = None
                   ) -> tuple[AttentionPattern, AttentionTiles, int, tuple[str, ...]] | str:
    """(pattern, tiles, key chunks S, reasons) of an attention group, or why it cannot be
    one kernel on `spec`. Pure: the KernelPlan (planners_tiled.plan_attention_group)
    records the choice; the reasons say one or two passes and split-K."""
    pat = match_attention(group.nodes)
    if isinstance(pat, str):
        return pat
    tiles = tiles_for(pat, spec, forced_tiles)
    if isinstance(tiles, str):
        return tiles
    reasons: list[str] = []
    if split_k is None:  # few row tiles: split the keys (attention_split)
        from hal.lowering.attention_split import choose_split_k

        split_k, split_why = choose_split_k(pat, tiles, spec)
        reasons += [split_why] if split_why else []
    reasons.append(schedule_reason(pat))
    return pat, tiles, split_k, tuple(reasons)


def accumulator_dtype(pat: AttentionPattern) -> DType:
    """The dtype of the scores, softmax statistics and P V accumulators: f64 when the
    graph computes the contractions in f64 (f64 inputs), else f32."""
    ds = (*pat.qk.inputs, pat.pv.inputs[1], pat.qk.outputs[0], pat.pv.outputs[0])
    return f64 if any(compute_dtype(v.dtype) == f64 for v in ds) else f32


def _stage_dtype(d: DType) -> DType:
    """Tiles are staged in shared memory in their storage dtype (floats), else f32."""
    return d if d.is_float else f32


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
    qdt, vdt, pdt = _stage_dtype(q.dtype), _stage_dtype(v.dtype), _stage_dtype(p_val.dtype)
    q_sh, k_sh = ctx.shared_buffer("q_tile", qdt, br * d), ctx.shared_buffer("k_tile", qdt, bc * d)
    v_sh, p_sh = ctx.shared_buffer("v_tile", vdt, bc * dv), ctx.shared_buffer("p_tile", pdt, br * bc)
    acc = ctx.local_buffer("acc", adt, na)
    sreg = ctx.local_buffer("score", adt, ns)
    builder = ScalarBuilder(ctx, group.nodes, body)
    ninf = Const(-math.inf, adt)

    def tile_load(stmts: list[Stmt], buf: str, rows: int, cols: int, value: Value, sdt: DType,
                  coords_of) -> None:
        """Cooperative load of a rows x cols tile of `value` into shared `buf` (row-major)."""
        def element(inner, rr, cc, e):
            return (*coords_of(inner, rr, cc), e)

        cooperative_tile_load(ctx, builder, stmts, buf, rows, cols, threads, tid, value, sdt,
                              element)

    def q_coords(stmts, rr, cc):
        gm = ctx.declare(stmts, "gm", ctx.add(row0, rr))
        coords = _scatter(q.rank, [(lb, bcoords), (lf, [gm]), (lc, ctx.unravel(cc, ks))])
        return coords, gm.lt(ctx.c(pat.m))

    tile_load(body, q_sh, br, d, q, qdt, q_coords)
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

    def key_loop(emit) -> None:
        """for kt over the key tiles: n0 = kt * Bc; `emit(loop, n0)` fills the body."""
        kt = ctx.var("kt", ctx.idx)
        loop: list[Stmt] = []
        n0 = ctx.declare(loop, "n0", ctx.mul(kt, bc))
        emit(loop, n0)
        lo, hi = ctx.c(0), ctx.c(cdiv(pat.t, bc))
        if chunk_tiles:
            lo = ctx.declare(body, "kt0", ctx.mul(ctx.bid("z"), chunk_tiles))
            hi = Binary("minimum", ctx.add(lo, chunk_tiles), hi)
        body.append(For(kt, lo, hi, ctx.c(1), loop))

    def stage(loop: list[Stmt], n0: Expr, with_v: bool) -> None:
        tile_load(loop, k_sh, bc, d, k, qdt, k_coords_at(n0))
        if with_v:
            tile_load(loop, v_sh, bc, dv, v, vdt, v_coords_at(n0))
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
            pb.env[pat.row_sum.outputs[0].name] = (
                None, _as(l_i, compute_dtype(pat.row_sum.outputs[0].dtype)))
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
    if plan.strategy == "flash_attention_mma":   # Q K^T and P V on the matrix unit
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


