"""Matrix-unit flash attention: Q.K^T and P.V on mma.sync, MFMA or the scratch-npu's unit.

Used by hal.lowering.attention.lower_attention when the plan's strategy is
"flash_attention_mma" (`attention_mma_choice` picked it in planners_tiled): the spec
lists a matrix instruction for the operands' dtype (f32 accumulate), Q, K, V and the
graph's P share that dtype (a split-K plan: hal.lowering.attention_mma_split, a subclass
of this emitter, where `attention_split.split_mma_verdict` says the matrix unit pays;
memory-bound decode stays SIMT). P has the instruction's input dtype only when the
graph rounds it before P@V (the 16-bit composite does): that is the two-pass schedule
(hal.lowering.attention), so P is formed normalised and rounded exactly where the graph
rounds it, and the P@V product adds no rounding the graph does not have (no tolerance
change; a one-pass FA2 schedule would round the unnormalised P, which the graph never
does, so hal does not emit it). Softmax statistics stay in f32 registers.

The kernel (`AttentionMmaEmitter`), per block of Br = warps x m query rows of one batch
entry (grid as the SIMT kernel: x row tiles, y batch entries):

* Q is staged once in shared memory [Br][D'] (D' = D rounded up to the instruction's k,
  rows padded by 16 bytes, zero where there is no row or column); per key tile of Bc
  keys K [Bc][D'] (and, in pass 2, V [Bc][Dv']) are staged the same way: by 16-byte
  vector copies where the operand is stored in that layout, else element by element,
  evaluating the operands' prologues (rotary, casts) through the group's ScalarBuilder,
  as the SIMT kernel's loads do (hal.lowering.attention_loads); a causal mask ends the
  key loop at the block's diagonal (hal.lowering.attention_causal);
* each warp computes S = Q K^T for its m rows and the Bc keys: A fragments from Q, B
  fragments from K ([BN][BK], k-contiguous), by ldmatrix on the 16-bit mma.sync layout,
  else per-lane loads at the layout's base + offsets (hal.kernel.mma);
* every S element, at the (row, key) its C layout gives it, goes through the group's
  own logits program (scale, causal mask, softcap ...); keys past T are -inf;
* pass 1: row max and sum, online, per row slot of the lane (the distinct C rows a lane
  holds), combined across the lanes sharing a row by an xor butterfly over the C
  layout's column lane bits;
* pass 2: S again, P = g(exp(x - m) / l) through the group's sub/exp/div/cast nodes,
  stored to a shared P tile [Br][Bc] in the input dtype, then O += P V: A fragments from
  P, B fragments from V ([BK][BN]: ldmatrix .trans);
* the epilogue stores O at its C layout coordinates, rounded to the output dtype.

Self-test fault planted here: attention_pv_fragment_transposed (V's fragments read
transposed).
"""

from __future__ import annotations

import math

from hal.devices.spec import DeviceSpec
from hal.dtypes import DType, compute_dtype, f32
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
    LdMatrix,
    Load,
    Mma,
    Select,
    Shuffle,
    Stmt,
    Store,
    Unary,
)
from hal.kernel.mma import Terms, get_layout
from hal.lowering.attention_causal import causal_bound, emit_key_tile_limit
from hal.lowering.attention_loads import stage_tile, vector_width
from hal.lowering.attention_mma_tiles import (  # noqa: F401  (re-exported)
    LDMATRIX_LAYOUT,
    AttentionMmaChoice,
    AttentionMmaTiles,
    attention_mma_choice,
    column_lane_offsets,
    mma_flops,
    row_slots,
)
from hal.lowering.context import KernelContext, index_dtype_for
from hal.lowering.expr import ScalarBuilder, reshape_coords, rounded
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions
from hal.lowering.tiling import cdiv
from hal.ops.contraction import contraction_dims


def _lane_expr(ctx: KernelContext, lane: Expr, terms: Terms) -> Expr:
    out: Expr = ctx.c(0)
    for coef, div, mod in terms:
        out = ctx.add(out, ctx.mul(ctx.mod(ctx.div(lane, div), mod), coef))
    return out


def _scatter(rank: int, parts) -> tuple[Expr, ...]:
    out: list[Expr | None] = [None] * rank
    for dims, coords in parts:
        for dim, c in zip(dims, coords, strict=True):
            out[dim] = c
    return tuple(out)  # type: ignore[arg-type]


class AttentionMmaEmitter:
    """Builds the matrix-unit two-pass flash kernel of one attention plan (module doc)."""

    def __init__(self, group, plan, spec: DeviceSpec, pat, choice: AttentionMmaChoice,
                 options: LoweringOptions = DEFAULT_OPTIONS):
        from hal.lowering.pointwise import group_sizes

        self.group, self.plan, self.spec, self.pat = group, plan, spec, pat
        self.t = choice.tiles
        self.lay = get_layout(self.t.layout)
        self.options = options
        self.index_dtype = index_dtype_for(group_sizes(group), spec)
        self.fault = options.fault
        self.dt: DType = pat.qk.inputs[0].dtype
        self.ldmatrix = self.lay.name == LDMATRIX_LAYOUT
        self.slots = row_slots(self.lay)
        self.slot_of = [self.slots.index(int(r)) for r in self.lay.offsets["c"][:, 0]]

    # ------------------------------------------------------------------ setup
    def lower(self) -> list[Kernel]:
        self._setup(self.group.name)
        self._key_loop(self._pass1)
        self._final_stats()
        self._key_loop(self._pass2)
        self._epilogue()
        return [self.ctx.kernel(self.body, self.plan.grid, self.plan.block, self.group,
                                self.plan)]

    def _final_stats(self) -> None:
        """m_fin: the final row max of each row slot (0 for a row with no key)."""
        ninf = Const(-math.inf, f32)
        self.m_fin = [self.ctx.declare(self.body, "m_fin", Select(mv.eq(ninf), Const(0.0, f32),
                                                                  mv)) for mv in self.m_run]

    def _setup(self, name: str) -> None:
        """A fresh kernel `name`: lane coordinates, buffers, running statistics, the key
        tile range [kt_lo, kt_hi) (causal: up to the block's diagonal), Q staged, O zero."""
        self.ctx = KernelContext(name, self.spec, self.index_dtype, self.options)
        ctx, t, lay, pat = self.ctx, self.t, self.lay, self.pat
        body: list[Stmt] = []
        self.body = body
        tid = ctx.tid()
        warp = ctx.declare(body, "warp", self._warp_index(tid))
        self.lane = ctx.declare(body, "lane", ctx.mod(tid, lay.lanes))
        self.row0 = ctx.declare(body, "row0", ctx.mul(ctx.bid("x"), t.br))
        self.wrow = ctx.declare(body, "wrow", ctx.mul(warp, lay.m))
        self.bcoords = [x if not isinstance(x, Binary) else ctx.declare(body, "b", x)
                        for x in ctx.unravel(ctx.bid("y"), list(pat.batch))]
        self.ns, self.no = t.bc // lay.n, t.dvp // lay.n
        self._buffers()
        self.s_acc = ctx.local_buffer("s_acc", f32, self.ns * lay.c_elems)
        self.o_acc = ctx.local_buffer("o_acc", f32, self.no * lay.c_elems)
        self.builder = ScalarBuilder(ctx, self.group.nodes, body)
        cr, cc = (_lane_expr(ctx, self.lane, x) for x in lay.base["c"])
        self.cr_local = ctx.declare(body, "cr", cr)
        self.crow = ctx.declare(body, "crow", ctx.add(self.row0, ctx.add(self.wrow,
                                                                         self.cr_local)))
        self.ccol = ctx.declare(body, "ccol", cc)
        # this lane's rows (one per row slot) and their statistics
        self.grows = [ctx.declare(body, "grow", ctx.add(self.crow, r)) for r in self.slots]
        ninf = Const(-math.inf, f32)
        self.m_run = [ctx.var("m_run", f32) for _ in self.slots]
        self.l_run = [ctx.var("l_run", f32) for _ in self.slots]
        for mv, lv in zip(self.m_run, self.l_run, strict=True):
            body += [Declare(mv, ninf), Declare(lv, Const(0.0, f32))]
        self._fragment_bases()
        # a causal mask: the key tiles past the block's diagonal are skipped
        bound = causal_bound(pat, self.group.nodes)
        ntiles = cdiv(pat.t, t.bc)
        self.kt_lo: Expr = ctx.c(0)
        self.kt_hi: Expr = ctx.c(ntiles) if bound is None else emit_key_tile_limit(
            ctx, body, bound, self.row0, t.br, pat.m, t.bc, ntiles)
        self._load_q()
        self._zero(body, self.o_acc, self.no * lay.c_elems)

    def _warp_index(self, tid: Expr) -> Expr:
        """The warp whose m rows of the block's Br this thread's fragments hold."""
        return self.ctx.div(tid, self.lay.lanes)

    def _buffers(self) -> None:
        """Shared tiles Q, K, V, P (rows padded by 16 bytes) and the fragment registers."""
        ctx, t, lay = self.ctx, self.t, self.lay
        p = t.pad
        self.ldq, self.ldv, self.ldp = t.dp + p, t.dvp + p, t.bc + p
        self.q_sh = ctx.shared_buffer("q_tile", self.dt, t.br * self.ldq)
        self.k_sh = ctx.shared_buffer("k_tile", self.dt, t.bc * self.ldq)
        self.v_sh = ctx.shared_buffer("v_tile", self.dt, t.bc * self.ldv)
        self.p_sh = ctx.shared_buffer("p_tile", self.dt, t.br * self.ldp)
        self.fa = ctx.local_buffer("frag_a", self.dt, lay.a_elems)
        self.fb = ctx.local_buffer("frag_b", self.dt, 2 * lay.b_elems)

    def _zero(self, stmts: list[Stmt], buf: str, n: int) -> None:
        i = self.ctx.var("z", self.ctx.idx)
        stmts.append(For(i, self.ctx.c(0), self.ctx.c(n), self.ctx.c(1),
                         [Store(buf, i, Const(0.0, f32))], unroll=True))

    # ------------------------------------------------------------------ tiles
    def _load_q(self) -> None:
        ctx, pat = self.ctx, self.pat
        q = pat.qk.inputs[0]
        lb, _rb, lc, _rc, lf, _rf = contraction_dims(pat.qk)
        ks = [q.shape[i] for i in lc]

        def q_coords(st, r, c):
            gm = ctx.declare(st, "gm", ctx.add(self.row0, r))
            coords = _scatter(q.rank, [(lb, self.bcoords), (lf, [gm]),
                                       (lc, ctx.unravel(c, ks))])
            return coords, Binary("logical_and", gm.lt(ctx.c(pat.m)), c.lt(ctx.c(pat.d)))

        qw = vector_width(self.group, q, lc[-1] if len(lc) == 1 else -1, self.t.dp, self.ldq,
                          self.dt)
        stage_tile(self.ctx, self.builder, self.body, self.q_sh, self.t.br, self.t.dp, self.ldq,
                   self.t.threads, q, self.dt, q_coords, qw, self.group)

    def _stage(self, loop: list[Stmt], n0: Expr, with_v: bool) -> None:
        ctx, pat = self.ctx, self.pat
        k, v = pat.qk.inputs[1], pat.pv.inputs[1]
        _lb, rb, lc, rc, _lf, rf = contraction_dims(pat.qk)
        _plb, prb, _plc, prc, _plf, prf = contraction_dims(pat.pv)
        ks = [pat.qk.inputs[0].shape[i] for i in lc]

        def k_coords(st, r, c):
            gn = ctx.declare(st, "gn", ctx.add(n0, r))
            coords = _scatter(k.rank, [(rb, self.bcoords), (rf, [gn]), (rc, ctx.unravel(c, ks))])
            return coords, Binary("logical_and", gn.lt(ctx.c(pat.t)), c.lt(ctx.c(pat.d)))

        def v_coords(st, r, c):
            gn = ctx.declare(st, "gn", ctx.add(n0, r))
            coords = _scatter(v.rank, [(prb, self.bcoords), (prc, [gn]), (prf, [c])])
            return coords, Binary("logical_and", gn.lt(ctx.c(pat.t)), c.lt(ctx.c(pat.dv)))

        t, ctx, b = self.t, self.ctx, self.builder
        # K and V rows by vector copies where the layout allows (attention_loads)
        kw = vector_width(self.group, k, rc[-1] if len(rc) == 1 else -1, t.dp, self.ldq,
                          self.dt)
        stage_tile(ctx, b, loop, self.k_sh, t.bc, t.dp, self.ldq, t.threads, k, self.dt,
                   k_coords, kw, self.group)
        if with_v:
            vw = vector_width(self.group, v, prf[0], t.dvp, self.ldv, self.dt)
            stage_tile(ctx, b, loop, self.v_sh, t.bc, t.dvp, self.ldv, t.threads, v, self.dt,
                       v_coords, vw, self.group)
        loop.append(Barrier())

    def _key_loop(self, emit) -> None:
        ctx = self.ctx
        kt = ctx.var("kt", ctx.idx)
        loop: list[Stmt] = []
        n0 = ctx.declare(loop, "n0", ctx.mul(kt, self.t.bc))
        emit(loop, n0)
        self.body.append(For(kt, self.kt_lo, self.kt_hi, ctx.c(1), loop))

    # ------------------------------------------------------------------ fragments
    def _fragment_bases(self) -> None:
        """Per-lane parts of the fragment addresses: A rows from the warp's rows of Q or P;
        K as B with rows n ([BN][BK]); V as B with rows k ([BK][BN])."""
        ctx, lay, body, lane = self.ctx, self.lay, self.body, self.lane
        if self.ldmatrix:
            lr, lj = ctx.mod(lane, 8), ctx.div(lane, 8)
            a_row = ctx.declare(body, "ar", ctx.add(self.wrow, ctx.add(lr, ctx.mul(
                ctx.mod(lj, 2), 8))))
            a_col = ctx.declare(body, "ac", ctx.mul(ctx.div(lj, 2), 8))
            kb, nb = ctx.mod(lj, 2), ctx.div(lj, 2)
            self.k_base = ctx.declare(body, "fk0", ctx.add(
                ctx.mul(ctx.add(ctx.mul(nb, 8), lr), self.ldq), ctx.mul(kb, 8)))
            trans = not self.fault("attention_pv_fragment_transposed")
            self.v_base = ctx.declare(body, "fv0", ctx.add(
                ctx.mul(ctx.add(ctx.mul(kb, 8), lr), self.ldv), ctx.mul(nb, 8)) if trans
                else ctx.add(ctx.mul(ctx.add(ctx.mul(nb, 8), lr), self.ldv), ctx.mul(kb, 8)))
        else:
            ar, a_col = (_lane_expr(ctx, lane, x) for x in lay.base["a"])
            a_row = ctx.declare(body, "ar", ctx.add(self.wrow, ar))
            a_col = ctx.declare(body, "ac", a_col)
            bk_, bn_ = (_lane_expr(ctx, lane, x) for x in lay.base["b"])
            self.k_base = ctx.declare(body, "fk0", ctx.add(ctx.mul(bn_, self.ldq), bk_))
            self.v_base = ctx.declare(body, "fv0", ctx.add(ctx.mul(bk_, self.ldv), bn_))
        self.q_base = ctx.declare(body, "fq0", ctx.add(ctx.mul(a_row, self.ldq), a_col))
        self.p_base = ctx.declare(body, "fp0", ctx.add(ctx.mul(a_row, self.ldp), a_col))

    def _a_frags(self, stmts: list[Stmt], buf: str, base: Expr, ld: int, kk: int) -> None:
        ctx, lay = self.ctx, self.lay
        if self.ldmatrix:
            stmts.append(LdMatrix(self.fa, 0, buf, ctx.add(base, kk * lay.k), 4))
            return
        for i in range(lay.a_elems):
            r, c = (int(x) for x in lay.offsets["a"][i])
            stmts.append(Store(self.fa, ctx.c(i), Load(buf, ctx.add(base, r * ld + c + kk * lay.k),
                                                      self.dt)))

    def _b_frags(self, stmts: list[Stmt], buf: str, base: Expr, ld: int, kk: int, n_tile: int,
                 count: int, n_major: bool) -> None:
        """B fragments of n tiles n_tile.. (count of them: 1, or 2 by one ldmatrix .x4) at k
        step kk into frag_b; n_major: the tile is [BN][BK] (K), else [BK][BN] (V)."""
        ctx, lay = self.ctx, self.lay
        swap = not n_major and self.fault("attention_pv_fragment_transposed")
        if self.ldmatrix:
            off = (n_tile * 8 * ld + kk * 16) if n_major or swap else (kk * 16 * ld + n_tile * 8)
            stmts.append(LdMatrix(self.fb, 0, buf, ctx.add(base, off), 2 * count,
                                  trans=not n_major and not swap))
            return
        for j in range(count):
            for i in range(lay.b_elems):
                kr, nc = (int(x) for x in lay.offsets["b"][i])
                kr += kk * lay.k
                nc += (n_tile + j) * lay.n
                if swap:   # self-test hook: V's fragment read transposed
                    kr, nc = nc, kr
                off = nc * ld + kr if n_major else kr * ld + nc
                stmts.append(Store(self.fb, ctx.c(j * lay.b_elems + i),
                                   Load(buf, ctx.add(base, off), self.dt)))

    def _gemm(self, stmts: list[Stmt], a_buf: str, a_base: Expr, a_ld: int, ksteps: int,
              b_buf: str, b_base: Expr, b_ld: int, n_tiles: int, acc: str, n_major: bool) -> None:
        """acc[n tile] += A (this warp's m rows) @ B over ksteps k steps."""
        lay = self.lay
        per = 2 if self.ldmatrix else 1
        for kk in range(ksteps):
            self._a_frags(stmts, a_buf, a_base, a_ld, kk)
            for p in range(0, n_tiles, per):
                count = min(per, n_tiles - p)
                self._b_frags(stmts, b_buf, b_base, b_ld, kk, p, count, n_major)
                for j in range(count):
                    c_off = (p + j) * lay.c_elems
                    stmts.append(Mma(lay.name, acc, c_off, self.fa, 0, self.fb,
                                     j * lay.b_elems, acc, c_off))

    # ------------------------------------------------------------------ scores
    def _scores(self, loop: list[Stmt], n0: Expr) -> None:
        """S = Q K^T into s_acc, then each element through the logits program (-inf where
        there is no key or row)."""
        ctx, lay, pat = self.ctx, self.lay, self.pat
        self._qk(loop)
        s0 = pat.qk.outputs[0]
        s_cd = compute_dtype(s0.dtype)
        ninf = Const(-math.inf, f32)
        j = ctx.var("j", ctx.idx)
        sl: list[Stmt] = []
        for i in range(lay.c_elems):
            idx = ctx.declare(sl, "si", ctx.add(ctx.mul(j, lay.c_elems), i))
            gn = self._key(sl, n0, j, i)
            grow = self.grows[self.slot_of[i]]
            ok = Binary("logical_and", grow.lt(ctx.c(pat.m)), gn.lt(ctx.c(pat.t)))
            if self.fault("attention_key_mask"):   # self-test hook
                ok = grow.lt(ctx.c(pat.m))
            inner: list[Stmt] = []
            dot = Load(self.s_acc, idx, f32)
            s_val = ctx.declare(inner, "s0", rounded(Cast(dot, s_cd) if s_cd != f32 else dot,
                                                     s0.dtype, ctx.options))
            sb = self.builder.scope(inner)
            sb.env = dict(self.builder.env)
            sb.env[s0.name] = (None, s_val)
            xv = sb.value(pat.logits, self._coords(grow, gn)[1])
            inner.append(Store(self.s_acc, idx, xv if xv.dtype == f32 else Cast(xv, f32)))
            sl.append(If(ok, inner, [Store(self.s_acc, idx, ninf)]))
        loop.append(For(j, ctx.c(0), ctx.c(self.ns), ctx.c(1), sl, unroll=True))

    def _qk(self, loop: list[Stmt]) -> None:
        """s_acc = Q K^T of this warp's rows and the key tile."""
        t, lay = self.t, self.lay
        self._zero(loop, self.s_acc, self.ns * lay.c_elems)
        self._gemm(loop, self.q_sh, self.q_base, self.ldq, t.dp // lay.k, self.k_sh,
                   self.k_base, self.ldq, self.ns, self.s_acc, True)

    def _key(self, stmts: list[Stmt], n0: Expr, j: Expr, i: int) -> Expr:
        """The key (global column) of S element i of n tile j of this lane."""
        ctx, lay = self.ctx, self.lay
        c = int(self.lay.offsets["c"][i][1])
        return ctx.declare(stmts, "gn", ctx.add(n0, ctx.add(ctx.mul(j, lay.n),
                                                            ctx.add(self.ccol, c))))

    def _coords(self, grow: Expr, gn: Expr):
        pat, s0 = self.pat, self.pat.qk.outputs[0]
        s_coords = (*self.bcoords, grow, gn)
        x_coords = s_coords if tuple(pat.logits.shape) == tuple(s0.shape) else \
            reshape_coords(self.ctx, s_coords, s0.shape, pat.logits.shape)
        return s_coords, x_coords

    def _row_reduce(self, stmts: list[Stmt], v, op: str) -> None:
        for off in column_lane_offsets(self.lay):
            other = self.ctx.declare(stmts, "sh", Shuffle(v, "xor", Const(off, self.ctx.idx),
                                                          self.lay.lanes))
            stmts.append(Assign(v, Binary(op, v, other)))

    def _prob_builder(self, stmts: list[Stmt], x: Expr, slot: int, row_max: Expr):
        pat = self.pat
        eb = self.builder.scope(stmts)
        eb.env = dict(self.builder.env)
        xcd = compute_dtype(pat.logits.dtype)
        eb.env[pat.logits.name] = (None, self.ctx.declare(stmts, "x", _as(x, xcd)))
        eb.env[pat.row_max.outputs[0].name] = (None, _as(row_max, xcd))
        return eb

    # ------------------------------------------------------------------ passes
    def _pass1(self, loop: list[Stmt], n0: Expr) -> None:
        """Online row max and sum over this key tile (K staged only)."""
        ctx, lay, pat = self.ctx, self.lay, self.pat
        self._stage(loop, n0, False)
        self._scores(loop, n0)
        ninf = Const(-math.inf, f32)
        tmax = [ctx.var("tmax", f32) for _ in self.slots]
        loop += [Declare(v, ninf) for v in tmax]
        j = ctx.var("j", ctx.idx)
        ml: list[Stmt] = []
        for i in range(lay.c_elems):
            v = tmax[self.slot_of[i]]
            ml.append(Assign(v, Binary("maximum", v, Load(
                self.s_acc, ctx.add(ctx.mul(j, lay.c_elems), i), f32))))
        loop.append(For(j, ctx.c(0), ctx.c(self.ns), ctx.c(1), ml, unroll=True))
        m_use, alpha = [], []
        for s, v in enumerate(tmax):
            self._row_reduce(loop, v, "maximum")
            m_new = ctx.declare(loop, "m_new", Binary("maximum", self.m_run[s], v))
            mu = ctx.declare(loop, "m_use", Select(m_new.eq(ninf), Const(0.0, f32), m_new))
            alpha.append(ctx.declare(loop, "alpha", Unary("exp", self.m_run[s] - mu)))
            m_use.append(mu)
            loop.append(Assign(self.m_run[s], m_new))
        tsum = [ctx.var("tsum", f32) for _ in self.slots]
        loop += [Declare(v, Const(0.0, f32)) for v in tsum]
        sl: list[Stmt] = []
        for i in range(lay.c_elems):
            s = self.slot_of[i]
            gn = self._key(sl, n0, j, i)
            x = Load(self.s_acc, ctx.add(ctx.mul(j, lay.c_elems), i), f32)
            eb = self._prob_builder(sl, x, s, m_use[s])
            ev = eb.value(pat.exps, self._coords(self.grows[s], gn)[1])
            sl.append(Assign(tsum[s], tsum[s] + _as(ev, f32)))
        loop.append(For(j, ctx.c(0), ctx.c(self.ns), ctx.c(1), sl, unroll=True))
        for s, v in enumerate(tsum):
            self._row_reduce(loop, v, "add")
            loop.append(Assign(self.l_run[s], self.l_run[s] * alpha[s] + v))
        self._release(loop)

    def _release(self, loop: list[Stmt]) -> None:
        """The key tile's end: the next one overwrites K (and V and P)."""
        loop.append(Barrier())

    def _pass2(self, loop: list[Stmt], n0: Expr) -> None:
        """P = g(exp(x - m) / l) (rounded where the graph rounds it) to shared, O += P V."""
        ctx, lay, pat = self.ctx, self.lay, self.pat
        self._stage(loop, n0, True)
        self._scores(loop, n0)
        p_val = pat.pv.inputs[0]
        j = ctx.var("j", ctx.idx)
        pl: list[Stmt] = []
        for i in range(lay.c_elems):
            s = self.slot_of[i]
            r, c = (int(x) for x in lay.offsets["c"][i])
            gn = self._key(pl, n0, j, i)
            x = Load(self.s_acc, ctx.add(ctx.mul(j, lay.c_elems), i), f32)
            pb = self._prob_builder(pl, x, s, self.m_fin[s])
            # the row sum rounded where the graph stores it (a bf16 reduce_sum: P = e / z
            # divides by the rounded z)
            zs = pat.row_sum.outputs[0]
            pb.env[zs.name] = (None, rounded(_as(self.l_run[s], compute_dtype(zs.dtype)), zs.dtype,
                                             ctx.options))
            s_coords = self._coords(self.grows[s], gn)[0]
            pv = _as(pb.value(p_val, s_coords), self.dt)
            # a row past M has l = 0 (P = 0/0): its P row is zero, as its tiles are
            pv = Select(self.grows[s].lt(ctx.c(pat.m)), pv, Const(0.0, self.dt))
            self._put_p(pl, j, i, r, c, pv)
        loop.append(For(j, ctx.c(0), ctx.c(self.ns), ctx.c(1), pl, unroll=True))
        self._pv(loop)
        self._release(loop)

    def _put_p(self, pl: list[Stmt], j: Expr, i: int, r: int, c: int, pv: Expr) -> None:
        """P element i of n tile j (C-layout offsets r, c) to the shared P tile."""
        ctx = self.ctx
        local_row = ctx.add(ctx.add(self.wrow, self.cr_local), r)
        col = ctx.add(ctx.mul(j, self.lay.n), ctx.add(self.ccol, c))
        pl.append(Store(self.p_sh, ctx.add(ctx.mul(local_row, self.ldp), col), pv))

    def _pv(self, loop: list[Stmt]) -> None:
        """O += P V (P from its shared tile once every warp stored its part)."""
        t, lay = self.t, self.lay
        loop.append(Barrier())
        self._gemm(loop, self.p_sh, self.p_base, self.ldp, t.bc // lay.k, self.v_sh,
                   self.v_base, self.ldv, self.no, self.o_acc, False)

    # ------------------------------------------------------------------ epilogue
    def _epilogue(self) -> None:
        from hal.lowering.attention import store_output

        ctx, lay = self.ctx, self.lay
        j = ctx.var("j", ctx.idx)
        el: list[Stmt] = []
        for i in range(lay.c_elems):
            c = int(lay.offsets["c"][i][1])
            dvo = ctx.declare(el, "dv", ctx.add(ctx.mul(j, lay.n), ctx.add(self.ccol, c)))
            res = Load(self.o_acc, ctx.add(ctx.mul(j, lay.c_elems), i), f32)
            el.append(store_output(ctx, self.builder, self.pat, self.bcoords,
                                   self.grows[self.slot_of[i]], dvo, res))
        self.body.append(For(j, ctx.c(0), ctx.c(self.no), ctx.c(1), el, unroll=True))


def _as(e: Expr, d: DType) -> Expr:
    return e if e.dtype == d else Cast(e, d)


def lower_attention_mma(group, plan, spec: DeviceSpec, pat,
                        options: LoweringOptions = DEFAULT_OPTIONS) -> list[Kernel]:
    """The matrix-unit kernel of an attention plan (strategy "flash_attention_mma")."""
    return AttentionMmaEmitter(group, plan, spec, pat, plan.detail("mma_choice"),
                               options).lower()
