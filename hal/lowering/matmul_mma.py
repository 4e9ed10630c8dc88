"""Matrix-unit lowering of matmul groups: tensor-core mma.sync, MFMA, the scratch-npu's unit.

Used by hal.lowering.matmul.lower_matmul whenever the spec lists a native matrix
instruction for the contraction's operand and accumulator dtypes (mma_choice, in
hal.lowering.mma_operands with the operands' access paths); f32 matmuls stay SIMT. The kernel (one `_MmaEmitter`):

* a block computes BM x BN of the result (batch on grid z, grouped raster order as the
  SIMT kernel), WM x WN warps, each an MI x NI grid of instruction tiles whose f32
  accumulators are one per-thread fragment array (hal.kernel.mma layouts);
* operands are staged in shared memory in their input dtype, rows padded by 16 bytes
  (mma_tiles.PAD_BYTES) so fragment loads do not conflict: A as [BM][BK] (k contiguous),
  B as [BK][BN] or, when B is k-contiguous in memory ([N, K], a torch Linear weight),
  [BN][BK];
* a group input whose contiguous axis is the tile's row (looked through one transpose)
  is copied in 128-bit vectors: with `async_copy` in the spec, by cp.async into a
  `stages`-deep ring (wait_group(stages - 2) + barrier before a stage is read, the next
  stage issued after it); otherwise through registers, the next K step's vectors loaded
  before the current step's MMAs (register-prefetch double buffering). Anything else
  (a cast, a fused norm prologue, odd K) is computed element by element into the tile;
* fragments come from shared memory by ldmatrix (x4, .trans for a [BK][BN] B) for the
  16-bit mma.sync layout, else by per-lane loads at the layout's base + offsets;
* the epilogue (bias, activation, residual, casts, views) runs on each accumulator
  element at the row/column its C layout gives it, as the SIMT kernel's does;
* siblings sharing A: a dual GEMM (equal shapes, e.g. SwiGLU's gate and up) keeps one
  B tile and one accumulator per contraction and shares the A fragments; siblings of
  different N (fused QKV) get one column-panel segment of grid.x each, behind a
  block-uniform branch, reusing the tiles, fragments and accumulator; a norm fused as
  A's prologue runs its row-statistics pre-pass (matmul_prologue) in each segment.

Self-test faults planted here (hal.lowering.faults): mma_swapped_fragment_halves,
mma_wrong_k_order, missing_cp_async_wait, wrong_swizzle.
"""

from __future__ import annotations

import math

from hal.devices.spec import DeviceSpec
from hal.dtypes import compute_dtype
from hal.errors import UnsupportedError
from hal.ir.graph import Node, Value
from hal.kernel.ir import (
    Barrier,
    Binary,
    Cast,
    Const,
    CpAsyncCommit,
    CpAsyncWait,
    Expr,
    For,
    If,
    Kernel,
    LdMatrix,
    Load,
    Mma,
    Select,
    SharedBuffer,
    Stmt,
    Store,
    VecCopy,
)
from hal.kernel.mma import FragmentLayout, Terms, get_layout
from hal.lowering.context import KernelContext, contiguous_strides, index_dtype_for
from hal.lowering.expr import ScalarBuilder, cooperative_tile_load, rounded, to_storage
from hal.lowering.mma_operands import MmaChoice, a_access, b_accesses
from hal.lowering.mma_tiles import mma_in_flight
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions
from hal.lowering.tiling import cdiv, group_rows


def _lane_expr(ctx: KernelContext, lane: Expr, terms: Terms) -> Expr:
    out: Expr = ctx.c(0)
    for coef, div, mod in terms:
        out = ctx.add(out, ctx.mul(ctx.mod(ctx.div(lane, div), mod), coef))
    return out


class _MmaEmitter:
    """Builds the kernel of one matrix-unit matmul (see the module docstring)."""

    def __init__(self, group, plan, spec: DeviceSpec, segments: list, choice: MmaChoice,
                 views: list[Node], options: LoweringOptions):
        from hal.lowering.matmul import contraction_dims
        from hal.lowering.pointwise import group_sizes

        dot = segments[0][0][0]
        self.group, self.plan, self.spec, self.views = group, plan, spec, views
        self.t = t = choice.tiles
        self.instr = choice.instruction
        self.lay: FragmentLayout = get_layout(t.layout)
        self.ctx = KernelContext(group.name, spec, index_dtype_for(group_sizes(group), spec),
                                 options)
        self.fault = options.fault
        a = dot.inputs[0]
        self.a, self.b = a, dot.inputs[1]
        lb, _rb, lc, _rc, lf, _rf = contraction_dims(dot)   # A's dims: equal for siblings
        self.bs = [a.shape[i] for i in lb]
        self.ms, self.ks = [a.shape[i] for i in lf], [a.shape[i] for i in lc]
        self.m, self.k = math.prod(self.ms), math.prod(self.ks)
        self.nb = math.prod(self.bs)
        producers = {o.name: nd for nd in group.nodes for o in nd.outputs}
        self.acc_a = a_access(dot, producers, t.vec)
        self.segments = [self._segment(dots, outs, producers) for dots, outs in segments]
        # the plan's pipeline (planners_tiled.plan_matmul asked mma_operands.pipeline_stages)
        self.stages = plan.stages
        self.asynchronous = self.stages > 1
        self.lda = t.bk + t.pad
        self.frag_lda = self.lda - t.pad if self.fault("wrong_swizzle") else self.lda

    def _segment(self, dots: list[Node], outputs: list[Value], producers: dict) -> dict:
        """One column-panel segment: its contractions (a dual GEMM shares one), outputs,
        B operands and how they reach their tiles."""
        from hal.lowering.matmul import contraction_dims

        dims = contraction_dims(dots[0])
        _lb, _rb, _lc, _rc, _lf, rf = dims
        acc_bs, n_major = b_accesses(dots, producers, self.t.vec)
        ns = [dots[0].inputs[1].shape[j] for j in rf]
        return {"dots": dots, "outputs": outputs, "b_vals": [d.inputs[1] for d in dots],
                "dims": dims, "ns": ns, "acc_bs": acc_bs, "b_n_major": n_major}

    def _use(self, sg: dict) -> None:
        """Make segment `sg` the one the emitting methods below work on."""
        t = self.t
        self.dots, self.outputs, self.b_vals = sg["dots"], sg["outputs"], sg["b_vals"]
        self.dot, self.dims, self.ns = sg["dots"][0], sg["dims"], sg["ns"]
        self.acc_bs, self.b_n_major = sg["acc_bs"], sg["b_n_major"]
        self.n = math.prod(self.ns)
        self.ldb = (t.bk if self.b_n_major else t.bn) + t.pad
        self.frag_ldb = self.ldb - t.pad if self.fault("wrong_swizzle") else self.ldb

    # ------------------------------------------------------------------ setup
    def _shared(self, hint: str, dt, size: int) -> str:
        name = self.ctx.unique(hint)
        self.ctx.shared.append(SharedBuffer(name, dt, self.stages * size, self.stages))
        return name

    def lower(self) -> Kernel:
        ctx, t, lay = self.ctx, self.t, self.lay
        body: list[Stmt] = []
        self.body = body
        tid = ctx.tid()
        warp = ctx.declare(body, "warp", ctx.div(tid, lay.lanes))
        self.lane = ctx.declare(body, "lane", ctx.mod(tid, lay.lanes))
        self.wm0 = ctx.declare(body, "wm0", ctx.mul(ctx.mod(warp, t.wm), t.bm // t.wm))
        self.wn0 = ctx.declare(body, "wn0", ctx.mul(ctx.div(warp, t.wm), t.bn // t.wn))
        npm = cdiv(self.m, t.bm)
        self.gm_rows = group_rows(npm, t.bm, self.k, self.a.dtype.itemsize, self.spec,
                                  mma_in_flight(t, self.spec))
        pid = ctx.declare(body, "pid", ctx.bid("x"))
        self.bcoords = [c if not isinstance(c, Binary) else ctx.declare(body, "b", c)
                        for c in ctx.unravel(ctx.bid("z"), self.bs)]
        # one A tile; B tiles, fragments and accumulators reused by every segment
        width_b = max(len(sg["dots"]) for sg in self.segments)
        self.a_sh = self._shared("a_tile", self.a.dtype, t.a_stage())
        self.b_sh = [self._shared("b_tile", self.b.dtype, max(t.b_stage(True),
                                                             t.b_stage(False)))
                     for _ in range(width_b)]
        self.fa = ctx.local_buffer("frag_a", self.a.dtype, t.mi * lay.a_elems)
        self.fb = ctx.local_buffer("frag_b", self.b.dtype, t.ni * lay.b_elems)
        self.acc = [ctx.local_buffer("acc", self.instr_acc, t.mi * t.ni * lay.c_elems)
                    for _ in range(width_b)]
        grid = self._dispatch_segments(body, pid, npm)
        return ctx.kernel(body, grid, t.threads, self.group, self.plan)

    def _dispatch_segments(self, body: list[Stmt], pid: Expr, npm: int) -> tuple[int, int, int]:
        """Blocks [start_s, start_s + npm * npn_s) of grid.x run segment s behind a
        block-uniform branch (its barriers are reached by all threads of a block or none);
        returns the grid, checked against the plan's (the one the blocks walk)."""
        ctx, t = self.ctx, self.t
        branches: list[tuple[int, list[Stmt]]] = []
        start = 0
        for sg in self.segments:
            self._use_segment(sg)
            stmts: list[Stmt] = []
            local = ctx.declare(stmts, "seg_pid", ctx.sub(pid, start)) if start else pid
            self._segment_body(stmts, local)
            start += npm * cdiv(self.n, t.bn)
            branches.append((start, stmts))
        tail = branches[-1][1]
        for end, stmts in reversed(branches[:-1]):
            tail = [If(pid.lt(ctx.c(end)), stmts, tail)]
        body.extend(tail)
        grid = (start, 1, self.nb)
        if grid != self.plan.grid:
            raise UnsupportedError(f"group {self.group.name}: grid {grid} differs from its "
                                   f"plan's {self.plan.grid}", hint="a planner bug: report it")
        return grid

    def _use_segment(self, sg) -> None:
        """Make segment `sg` the active one (the Hopper emitter also binds its B maps)."""
        self._use(sg)

    def _segment_body(self, body: list[Stmt], pid: Expr) -> None:
        """The active segment's raster position, k-loop and epilogue for block `pid`."""
        ctx, t, lay = self.ctx, self.t, self.lay
        self.body = body
        npm, npn, gm_rows = cdiv(self.m, t.bm), cdiv(self.n, t.bn), self.gm_rows
        width = gm_rows * npn
        first_m = ctx.declare(body, "first_m", ctx.mul(ctx.div(pid, width), gm_rows))
        size_m = ctx.declare(body, "size_m", Binary("minimum", Binary("sub", ctx.c(npm),
                                                                      first_m), ctx.c(gm_rows)))
        if self.fault("raster_full_last_group"):  # self-test hook
            size_m = ctx.c(gm_rows)
        self.m0 = ctx.declare(body, "m0", ctx.mul(ctx.add(first_m, Binary("remainder", pid,
                                                                           size_m)), t.bm))
        self.n0 = ctx.declare(body, "n0", ctx.mul(Binary("div", ctx.mod(pid, width), size_m),
                                                  t.bn))
        i = ctx.var("i", ctx.idx)
        body.append(For(i, ctx.c(0), ctx.c(t.mi * t.ni * lay.c_elems), ctx.c(1),
                        [Store(acc, i, Const(0.0, self.instr_acc))
                         for acc in self.acc[:len(self.dots)]], unroll=True))
        self.builder = ScalarBuilder(ctx, self.group.nodes, body)
        from hal.lowering.matmul_prologue import emit_prologue_reductions
        emit_prologue_reductions(ctx, self.builder, body, self.group, self.dot, self.m0,
                                 self.bcoords, t, self.block_threads)
        self._fragment_bases()
        self._pipeline()
        self._epilogue()

    @property
    def block_threads(self) -> int:
        """The threads of a block (the prologue pre-pass spreads rows over their warps)."""
        return self.t.threads

    @property
    def instr_acc(self):
        from hal.dtypes import DTYPES
        return DTYPES[self.instr.acc]

    # ------------------------------------------------------------------ tile fills
    def _tile_rows(self, which: str) -> tuple[int, int]:
        t = self.t
        if which == "a":
            return t.bm, t.bk
        return (t.bn, t.bk) if self.b_n_major else (t.bk, t.bn)

    def _chunk(self, out: list[Stmt], which: str, kt: Expr, it: int, stage: Expr,
               make) -> None:
        """Append the statements of vector chunk `it` (guarded when the chunks do not
        divide among the threads); `make(dst, param, gidx, full)` gives the copy."""
        rows, cols = self._tile_rows(which)
        total = rows * cols // self.t.vec
        e = self.ctx.declare(out, "e", self.ctx.add(self.ctx.c(it * self.t.threads),
                                                    self.ctx.tid()))
        inner: list[Stmt] = []
        dst, param, gidx, full = self._chunks(inner, which, kt, e, stage)
        inner.append(make(dst, param, gidx, full))
        out.extend(inner if total % self.t.threads == 0 else [If(e.lt(self.ctx.c(total)),
                                                                 inner)])

    def _chunks(self, stmts: list[Stmt], which: str, kt: Expr, e: Expr, stage: Expr):
        """(dst index, src param, src index, full) of the vector chunk `e` of a tile."""
        ctx, t = self.ctx, self.t
        rows, cols = self._tile_rows(which)
        cpr = cols // t.vec
        r = ctx.declare(stmts, "r", ctx.div(e, cpr))
        c = ctx.declare(stmts, "c", ctx.mul(ctx.mod(e, cpr), t.vec))
        acc = self.acc_a if which == "a" else self.acc_bs[which]
        kbase = ctx.mul(kt, t.bk)
        # tile rows/cols -> (outer index, k index) in the operand's own terms
        if which == "a":
            outer, kk, o0, olim = r, c, self.m0, self.m
        elif self.b_n_major:
            outer, kk, o0, olim = r, c, self.n0, self.n
        else:
            outer, kk, o0, olim = c, r, self.n0, self.n
        go = ctx.declare(stmts, "go", ctx.add(o0, outer))
        gk = ctx.declare(stmts, "gk", ctx.add(kbase, kk))
        full: Expr = Binary("logical_and", go.lt(ctx.c(olim)), gk.lt(ctx.c(self.k)))
        if which == "a" and self.fault("matmul_k_tail_unmasked"):  # self-test hook
            full = go.lt(ctx.c(olim))
        full = ctx.declare(stmts, "full", full)
        batch, outer_d, inner_d = acc.dims
        src = acc.source
        oshape = [src.shape[d] for d in outer_d]
        coords: list[Expr | None] = [None] * src.rank
        kshape = [src.shape[d] for d in (inner_d if acc.inner_is_k else outer_d)]
        ocoords = ctx.unravel(go, oshape if acc.inner_is_k else [src.shape[inner_d[0]]])
        kcoords = ctx.unravel(gk, kshape)
        if acc.inner_is_k:
            parts = ((batch, self.bcoords), (outer_d, ocoords), (inner_d, kcoords))
        else:   # B [K, N]: outer axes are k, the inner axis is n
            parts = ((batch, self.bcoords), (outer_d, kcoords), (inner_d, ocoords))
        for dd, cs in parts:
            for d, x in zip(dd, cs, strict=True):
                coords[d] = x
        param = ctx.buffer(src, "input")
        gidx = ctx.linear(coords, contiguous_strides(src.shape))
        gidx = ctx.declare(stmts, "gi", Select(full, gidx, ctx.c(0)))
        size = t.a_stage() if which == "a" else max(t.b_stage(True), t.b_stage(False))
        ld = self.lda if which == "a" else self.ldb
        dst = ctx.add(ctx.add(ctx.mul(r, ld), c), ctx.mul(stage, size)) \
            if not isinstance(stage, Const) or stage.value else ctx.add(ctx.mul(r, ld), c)
        return dst, param, gidx, full

    def _iters(self, which: str) -> int:
        rows, cols = self._tile_rows(which)
        return cdiv(rows * cols // self.t.vec, self.t.threads)

    def _issue(self, stmts: list[Stmt], which: str, kt: Expr, stage: Expr) -> None:
        """cp.async of one operand's K step `kt` into `stage`."""
        buf, vec = (self.a_sh if which == "a" else self.b_sh[which]), self.t.vec
        for it in range(self._iters(which)):
            self._chunk(stmts, which, kt, it, stage, lambda dst, p, gi, full: VecCopy(
                buf, dst, p, gi, vec, full, asynchronous=True))

    def _prefetch(self, stmts: list[Stmt], which: str, kt: Expr, regs: str) -> None:
        vec = self.t.vec
        for it in range(self._iters(which)):
            self._chunk(stmts, which, kt, it, self.ctx.c(0), lambda _d, p, gi, full, it=it:
                        VecCopy(regs, self.ctx.c(it * vec), p, gi, vec, full))

    def _commit_regs(self, stmts: list[Stmt], which: str, regs: str) -> None:
        buf, vec = (self.a_sh if which == "a" else self.b_sh[which]), self.t.vec
        for it in range(self._iters(which)):
            self._chunk(stmts, which, self.ctx.c(0), it, self.ctx.c(0),
                        lambda dst, _p, _gi, _f, it=it: VecCopy(buf, dst, regs,
                                                               self.ctx.c(it * vec), vec))

    def _scalar_fill(self, stmts: list[Stmt], which: str, kt: Expr) -> None:
        """Element-by-element tile fill through the builder (prologues, odd layouts)."""
        from hal.lowering.matmul import _scatter

        ctx, t = self.ctx, self.t
        lb, rb, lc, rc, lf, rf = self.dims
        kbase = ctx.mul(kt, t.bk)
        if which == "a":
            def coords_of(st, r, c, _e):
                gm = ctx.declare(st, "gm", ctx.add(self.m0, r))
                gk = ctx.declare(st, "gk", ctx.add(kbase, c))
                valid = Binary("logical_and", gm.lt(ctx.c(self.m)), gk.lt(ctx.c(self.k)))
                if self.fault("matmul_k_tail_unmasked"):  # self-test hook
                    valid = gm.lt(ctx.c(self.m))
                co = _scatter(self.a.rank, [(lb, self.bcoords), (lf, ctx.unravel(gm, self.ms)),
                                            (lc, ctx.unravel(gk, self.ks))])
                return co, valid, ctx.add(ctx.mul(r, self.lda), c)
            cooperative_tile_load(ctx, self.builder, stmts, self.a_sh, t.bm, t.bk, t.threads,
                                  ctx.tid(), self.a, self.a.dtype, coords_of)
            return

        def coords_b(st, r, c, _e):   # scalar B tiles are [BK][BN]
            gk = ctx.declare(st, "gk", ctx.add(kbase, r))
            gn = ctx.declare(st, "gn", ctx.add(self.n0, c))
            valid = Binary("logical_and", gk.lt(ctx.c(self.k)), gn.lt(ctx.c(self.n)))
            co = _scatter(self.b.rank, [(rb, self.bcoords), (rc, ctx.unravel(gk, self.ks)),
                                        (rf, ctx.unravel(gn, self.ns))])
            return co, valid, ctx.add(ctx.mul(r, self.ldb), c)
        cooperative_tile_load(ctx, self.builder, stmts, self.b_sh[which], t.bk, t.bn,
                              t.threads, ctx.tid(), self.b_vals[which], self.b.dtype, coords_b)

    # ------------------------------------------------------------------ pipeline
    def _operands(self) -> list:
        """"a", then the index of each B operand."""
        return ["a", *range(len(self.dots))]

    def _pipeline(self) -> None:
        ctx, t, body = self.ctx, self.t, self.body
        ktiles = cdiv(self.k, t.bk)
        kt = ctx.var("kt", ctx.idx)
        loop: list[Stmt] = []
        if self.asynchronous:
            s = self.stages
            for p in range(s - 1):
                if p < ktiles:
                    for which in self._operands():
                        self._issue(body, which, ctx.c(p), ctx.c(p))
                body.append(CpAsyncCommit())
            if not self.fault("missing_cp_async_wait"):   # self-test hook
                loop.append(CpAsyncWait(s - 2))
            loop.append(Barrier())
            self._compute(loop, ctx.mod(kt, s))
            nxt = ctx.declare(loop, "kn", ctx.add(kt, s - 1))
            issue: list[Stmt] = []
            st = ctx.declare(issue, "sn", ctx.mod(nxt, s))
            for which in self._operands():
                self._issue(issue, which, nxt, st)
            loop.append(If(nxt.lt(ctx.c(ktiles)), issue))
            loop.append(CpAsyncCommit())
            body.append(For(kt, ctx.c(0), ctx.c(ktiles), ctx.c(1), loop))
            body.append(CpAsyncWait(0))   # nothing left in flight at exit
            return
        regs = {}
        for which in self._operands():
            acc = self.acc_a if which == "a" else self.acc_bs[which]
            if acc.source is not None:
                dt = self.a.dtype if which == "a" else self.b.dtype
                regs[which] = ctx.local_buffer(f"pre_{which}", dt, self._iters(which) * t.vec)
                self._prefetch(body, which, ctx.c(0), regs[which])
        for which in self._operands():
            if which in regs:
                self._commit_regs(loop, which, regs[which])
            else:
                self._scalar_fill(loop, which, kt)
        if not self.fault("missing_cp_async_wait"):   # self-test: the stage's "wait"
            loop.append(Barrier())
        if regs:
            nxt = ctx.declare(loop, "kn", ctx.add(kt, 1))
            pre: list[Stmt] = []
            for which, r in regs.items():
                self._prefetch(pre, which, nxt, r)
            loop.append(If(nxt.lt(ctx.c(ktiles)), pre))
        self._compute(loop, ctx.c(0))
        loop.append(Barrier())
        body.append(For(kt, ctx.c(0), ctx.c(ktiles), ctx.c(1), loop))

    # ------------------------------------------------------------------ fragments and MMAs
    def _fragment_bases(self) -> None:
        """Per-lane parts of the fragment addresses, declared once."""
        ctx, lay, body, lane = self.ctx, self.lay, self.body, self.lane
        self.ldmatrix = lay.name == "nv_m16n8k16_b16"
        if self.ldmatrix:
            lr, lj = ctx.mod(lane, 8), ctx.div(lane, 8)
            half = ctx.div(lj, 2)
            if self.fault("mma_swapped_fragment_halves"):   # self-test hook
                half = Binary("sub", ctx.c(1), half)
            a_row = ctx.add(lr, ctx.mul(ctx.mod(lj, 2), 8))
            self.a_base = ctx.declare(body, "fa0", ctx.add(
                ctx.mul(ctx.add(self.wm0, a_row), self.frag_lda), ctx.mul(half, 8)))
            kb, nb = ctx.mod(lj, 2), ctx.div(lj, 2)
            if self.b_n_major:   # [BN][BK]: rows n, non-trans
                self.b_base = ctx.declare(body, "fb0", ctx.add(
                    ctx.mul(ctx.add(self.wn0, ctx.add(ctx.mul(nb, 8), lr)), self.frag_ldb),
                    ctx.mul(kb, 8)))
            else:                # [BK][BN]: rows k, .trans
                self.b_base = ctx.declare(body, "fb0", ctx.add(
                    ctx.mul(ctx.add(ctx.mul(kb, 8), lr), self.frag_ldb),
                    ctx.add(self.wn0, ctx.mul(nb, 8))))
            return
        ar, ac = (_lane_expr(ctx, lane, x) for x in lay.base["a"])
        self.a_base = ctx.declare(body, "fa0", ctx.add(ctx.mul(ctx.add(self.wm0, ar),
                                                               self.frag_lda), ac))
        bk_, bn_ = (_lane_expr(ctx, lane, x) for x in lay.base["b"])
        if self.b_n_major:
            self.b_base = ctx.declare(body, "fb0", ctx.add(
                ctx.mul(ctx.add(self.wn0, bn_), self.frag_ldb), bk_))
        else:
            self.b_base = ctx.declare(body, "fb0", ctx.add(ctx.mul(bk_, self.frag_ldb),
                                                           ctx.add(self.wn0, bn_)))

    def _compute(self, stmts: list[Stmt], stage: Expr) -> None:
        ctx, t, lay = self.ctx, self.t, self.lay
        a_st = ctx.declare(stmts, "sa", ctx.add(ctx.mul(stage, t.a_stage()), self.a_base))
        b_st = ctx.declare(stmts, "sb", ctx.add(ctx.mul(stage, max(t.b_stage(True),
                                                                   t.b_stage(False))),
                                                self.b_base))
        steps = t.bk // lay.k
        swap = self.fault("mma_swapped_fragment_halves") and not self.ldmatrix
        for kk in range(steps):
            kb = steps - 1 - kk if self.fault("mma_wrong_k_order") else kk  # self-test
            for mi in range(t.mi):
                a_off = mi * lay.m * self.frag_lda + kk * lay.k
                if self.ldmatrix:
                    stmts.append(LdMatrix(self.fa, mi * lay.a_elems, self.a_sh,
                                          ctx.add(a_st, a_off), 4))
                    continue
                ne = lay.a_elems
                for i in range(ne):
                    src = (i + ne // 2) % ne if swap else i
                    r, c = (int(x) for x in lay.offsets["a"][src])
                    stmts.append(Store(self.fa, ctx.c(mi * ne + i), Load(
                        self.a_sh, ctx.add(a_st, a_off + r * self.frag_lda + c), self.a.dtype)))
            for j, acc in enumerate(self.acc[:len(self.dots)]):   # each B: fragments, MMAs
                self._b_fragments(stmts, b_st, kb, j)
                for mi in range(t.mi):
                    for ni in range(t.ni):
                        c_off = (mi * t.ni + ni) * lay.c_elems
                        stmts.append(Mma(lay.name, acc, c_off, self.fa, mi * lay.a_elems,
                                         self.fb, ni * lay.b_elems, acc, c_off))

    def _b_fragments(self, stmts: list[Stmt], b_st: Expr, kk: int, j: int) -> None:
        ctx, t, lay, ldb = self.ctx, self.t, self.lay, self.frag_ldb
        if self.ldmatrix:
            for p in range(0, t.ni, 2):
                count = 4 if p + 1 < t.ni else 2
                off = (p * 8 * ldb + kk * 16) if self.b_n_major else (kk * 16 * ldb + p * 8)
                stmts.append(LdMatrix(self.fb, p * lay.b_elems, self.b_sh[j],
                                      ctx.add(b_st, off), count, trans=not self.b_n_major))
            return
        for ni in range(t.ni):
            for i in range(lay.b_elems):
                kr, nc = (int(x) for x in lay.offsets["b"][i])
                kr += kk * lay.k
                nc += ni * lay.n
                off = nc * ldb + kr if self.b_n_major else kr * ldb + nc
                stmts.append(Store(self.fb, ctx.c(ni * lay.b_elems + i), Load(
                    self.b_sh[j], ctx.add(b_st, off), self.b.dtype)))

    # ------------------------------------------------------------------ epilogue
    def _epilogue(self) -> None:
        ctx, t, lay, body = self.ctx, self.t, self.lay, self.body
        cr, cc = (_lane_expr(ctx, self.lane, x) for x in lay.base["c"])
        orow = ctx.declare(body, "orow", ctx.add(self.m0, ctx.add(self.wm0, cr)))
        ocol = ctx.declare(body, "ocol", ctx.add(self.n0, ctx.add(self.wn0, cc)))
        dot_out = self.dot.outputs[0]
        acc_dt = self.instr_acc
        dot_ids = {id(d) for d in self.dots}
        for mi in range(t.mi):
            for ni in range(t.ni):
                for i in range(lay.c_elems):
                    r, c = (int(x) for x in lay.offsets["c"][i])
                    stmts: list[Stmt] = []
                    gm = ctx.declare(stmts, "om", ctx.add(orow, mi * lay.m + r))
                    gn = ctx.declare(stmts, "on", ctx.add(ocol, ni * lay.n + c))
                    inner: list[Stmt] = []
                    coords = (*self.bcoords, *ctx.unravel(gm, self.ms),
                              *ctx.unravel(gn, self.ns))
                    ep = self.builder.scope(inner)
                    slot = ctx.c((mi * t.ni + ni) * lay.c_elems + i)
                    for d, acc in zip(self.dots, self.acc, strict=False):  # every accumulator
                        o = d.outputs[0]
                        value: Expr = Load(acc, slot, acc_dt)
                        cdt = compute_dtype(o.dtype)
                        value = Cast(value, cdt) if cdt != acc_dt else value
                        ep.env[o.name] = (coords, ctx.declare(inner, o.name,
                                                              rounded(value, o.dtype)))
                    space = {tuple(dot_out.shape): coords}
                    if self.views:
                        row = ctx.add(ctx.mul(ctx.linear(list(self.bcoords),
                                                         contiguous_strides(self.bs)),
                                              self.m), gm) if self.bs else gm
                        for rv in self.views:
                            lead = [int(x) for x in rv.outputs[0].shape[:-1]]
                            vc = (*ctx.unravel(row, lead), gn)
                            space[tuple(rv.outputs[0].shape)] = vc
                            ep.env[rv.outputs[0].name] = (vc, ep.value(rv.inputs[0], coords))
                    for v in self.outputs:
                        at = space[tuple(v.shape)]
                        drop = self.fault("dropped_epilogue") and id(v.producer) not in dot_ids
                        e = ep.value(v.producer.inputs[0] if drop else v, at)
                        param, idx = ep.store_index(v, at)
                        inner.append(Store(param, idx, to_storage(e, v.dtype)))
                    stmts.append(If(Binary("logical_and", gm.lt(ctx.c(self.m)),
                                           gn.lt(ctx.c(self.n))), inner))
                    body.extend(stmts)


def lower_matmul_mma(group, plan, spec: DeviceSpec, segments: list, views: list[Node],
                     options: LoweringOptions = DEFAULT_OPTIONS) -> list[Kernel]:
    """The matrix-unit kernel of a matmul group's `plan` (strategy "mma": its instruction
    and tiles are `plan.detail("mma_choice")`, chosen by planners_tiled.plan_matmul):
    `segments` are (contractions, outputs) per column-panel segment, as
    hal.lowering.matmul.lower_matmul splits them (one for a single contraction or a dual
    GEMM), see the module docstring."""
    return [_MmaEmitter(group, plan, spec, segments, plan.detail("mma_choice"), views,
                        options).lower()]
