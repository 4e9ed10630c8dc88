"""Prefill attention on Hopper: Q K^T and P V by wgmma, Q/K/V tiles by TMA, warp-specialised.

`attention_wgmma_choice` decides, for a spec with a warpgroup MMA for the operands' dtype
and the `tma` capability (sm_90a: h100-sxm, h200), whether an attention plan takes this
kernel instead of the mma.sync one (hal.lowering.attention_mma), and says why or why not
(planners_tiled.plan_attention_group records it as the plan's ("attention_path", ...)
detail, as the GEMM records "matmul_path"). It takes bf16/f16 prefill (no split-K: decode
keeps the split-K kernels) with head dims that are multiples of 64 up to 256, P rounded to
the input dtype by the graph (the two-pass schedule of hal.lowering.attention_mma), and
Q, K and V readable by TMA: group inputs seen through reshapes and transposes
(hal.lowering.tma_views.tile_view; GQA's shared K/V heads are batch dimensions of box 1).
Operands computed in the group (a rotary embedding) keep the mma.sync kernel.

The kernel (`AttentionWgmmaEmitter`, a subclass of the mma.sync emitter: the scores through
the group's logits program, the online statistics, P formed and rounded where the graph
rounds it, the causal key-tile bound and the epilogue are that emitter's):

* block = 1 producer warpgroup + C consumer warpgroups (C = 2 when M > 64 and 128-row
  tiles fill the units, else 1), BM = 64 C query rows of one batch entry (grid x: row
  tiles, y: batch entries), key tiles of BN = 128 (64 when a head dim exceeds 128);
* shared memory, 128-byte swizzle, 1024-byte aligned, as TMA writes it: Q [D/64][BM][64]
  once; a ring of `stages` slices K [D/64][BN][64] and V [Dv/64][BN][64]; mbarriers
  q_bar, full[s] (1 arrival + transaction bytes), empty[s] (one arrival per consumer
  thread);
* the producer warpgroup (setmaxnreg.dec with two consumers) copies Q once, then walks 2 x (key tiles up to
  the causal bound) steps, thread 0 waiting empty[s] and issuing K's boxes (pass 1) or
  K's and V's (pass 2); the step count is uniform (all key tiles), steps past a block's
  causal bound do nothing on either side, so stages and phases follow the walked steps;
* each consumer warpgroup (setmaxnreg.inc with two) per step waits full[s], S = Q K^T by D/16
  wgmma m64nBNk16 from the shared tiles (K as a K-major B), commit, wait_group 0; pass 1:
  online row max and sum on the accumulator registers (the wgmma accumulator layout is the
  m16n8 C layout of the warpgroup's four warps tiled over N, so the mma.sync emitter's quad
  shuffles apply); pass 2: P = g(exp(x - m) / l) rounded to the input dtype INTO REGISTERS
  (`Wgmma.a_regs`: the A fragment of k step kk is accumulator elements 8 kk .. 8 kk + 7,
  hal.kernel.wgmma.a_fragment_table) and O += P V by BN/16 register-A wgmmas with V as an
  N-major B (trans-b); then arrive on empty[s]; the epilogue stores O.

Self-test fault planted here: attention_wgmma_p_fragment_swapped (P's register fragment
with its two 8-key halves swapped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hal.devices.spec import DeviceSpec, MatrixInstruction
from hal.dtypes import i64
from hal.kernel import ir_async as ira
from hal.kernel.ir import (
    Barrier,
    Binary,
    Const,
    Expr,
    For,
    If,
    Kernel,
    Select,
    SharedBuffer,
    Stmt,
    Store,
)
from hal.kernel.tma import TensorMap
from hal.lowering.attention_mma import AttentionMmaChoice, AttentionMmaEmitter, AttentionMmaTiles
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions
from hal.lowering.tiling import cdiv
from hal.ops.contraction import contraction_dims

SWIZZLE = 128
BOX = 64                     # elements of a 128-byte swizzled row (16-bit types)
PRODUCER_REGS, CONSUMER_REGS = 40, 232
STAGES = 2                   # K/V ring depth (Q + 2 stages of K and V: 160 KiB at D 128)


@dataclass(frozen=True)
class AttentionWgmmaChoice:
    instruction: MatrixInstruction
    tiles: AttentionMmaTiles       # br = BM, bc = BN, warps = the consumers' warps
    consumers: int
    stages: int
    reason: str
    views: tuple = field(default=(), compare=False, repr=False)   # Q, K, V tile views

    @property
    def threads(self) -> int:
        return 128 * (self.consumers + 1)

    @property
    def shared_bytes(self) -> int:
        t = self.tiles
        return (t.br * t.dp + self.stages * t.bc * (t.dp + t.dvp)) * t.itemsize + \
            8 * (2 * self.stages + 1) + 1024

    @property
    def registers(self) -> int:
        """Per thread at launch: the register file shared by the block's threads."""
        return min(255, 65536 // self.threads // 8 * 8)


def _views(pat, group, bm: int, bn: int):
    """(Q, K, V tensor-map views) or why TMA cannot copy one of them."""
    from hal.lowering.tma_views import tile_view

    producers = {o.name: nd for nd in group.nodes for o in nd.outputs}
    (q, k), v = pat.qk.inputs, pat.pv.inputs[1]
    lb, rb, lc, rc, lf, rf = contraction_dims(pat.qk)
    _plb, prb, _plc, prc, _plf, prf = contraction_dims(pat.pv)
    out = []
    for what, x, b, r, c, rows in (("Q", q, lb, lf, lc, bm), ("K", k, rb, rf, rc, bn),
                                   ("V", v, prb, prc, prf, bn)):
        view = tile_view(x, producers, b, r, c, rows, BOX, what=what, split_rows=what == "Q")
        if isinstance(view, str):
            return f"{what}: {view}: TMA copies group inputs (through reshapes and transposes)"
        out.append(view)
    return tuple(out)


def attention_wgmma_choice(pat, group, spec: DeviceSpec,
                           split: int = 1) -> AttentionWgmmaChoice | str:
    """The Hopper attention kernel's tiles for `pat` on `spec`, or why the plan keeps the
    mma.sync kernel (module docstring)."""
    from hal.lowering.matmul_wgmma import _share

    (q, k), (p_val, v) = pat.qk.inputs, pat.pv.inputs
    dt = q.dtype
    instr = spec.matrix_instruction(dt.name, dt.name, "f32", "warpgroup")
    if instr is None or dt.bits != 16 or "tma" not in spec.capabilities or \
            spec.warp_size != 32:
        return f"the wgmma kernel needs TMA, 32-lane warps and a 16-bit warpgroup MMA " \
               f"for {dt.name} on {spec.name} (the register-A wgmma of P V takes 16-bit types)"
    if {k.dtype, v.dtype, p_val.dtype} != {dt} or not pat.two_pass:
        return (f"Q, K, V and P are not all {dt.name} with P rounded before P@V (the two-pass "
                f"schedule of the matrix-unit kernels)")
    if split > 1:
        return f"split-K over the keys in {split} chunks (decode-shaped: {pat.m} query " \
               f"row(s) per batch entry)"
    if pat.m < 64:
        return f"{pat.m} query rows per batch entry: a 64-row wgmma tile would be mostly " \
               f"padding"
    if pat.d % BOX or pat.dv % BOX or max(pat.d, pat.dv) > 256:
        return f"head dims {pat.d}/{pat.dv}: the wgmma kernel takes multiples of {BOX} " \
               f"up to 256 (whole 128-byte swizzled rows)"
    # two consumer warpgroups (128 rows) unless the grid would leave units idle: then 64
    consumers = 2 if pat.m > 64 and cdiv(pat.m, 128) * math.prod(pat.batch) >= \
        spec.compute_units else 1
    bm, bn = 64 * consumers, 128 if max(pat.d, pat.dv) <= 128 else 64
    views = _views(pat, group, bm, bn)
    if isinstance(views, str):
        return views
    tiles = AttentionMmaTiles(bm, bn, 4 * consumers, "nv_m16n8k16_b16", dt.itemsize, pat.d,
                              pat.dv)
    stages = STAGES
    need = AttentionWgmmaChoice(instr, tiles, consumers, stages, "").shared_bytes
    if need > spec.shared_mem_per_block:
        return f"Q and {stages} K/V stages need {need} bytes of shared memory, " \
               f"{spec.name} has {spec.shared_mem_per_block} per block"
    return AttentionWgmmaChoice(
        instr, tiles, consumers, stages,
        f"{instr.name.split('.')[0]} m64n{bn}k16 (Q K^T, both from TMA-fed shared tiles) and "
        f"m64n{pat.dv}k16 (P V, P from registers), {consumers} consumer warpgroup(s), "
        f"{stages}-stage K/V mbarrier ring: mma.sync reaches {_share(spec, dt.name)} of the "
        f"{spec.name} matrix peak", views)


class AttentionWgmmaEmitter(AttentionMmaEmitter):
    """The Hopper attention kernel (module docstring)."""

    def __init__(self, group, plan, spec: DeviceSpec, pat, choice: AttentionWgmmaChoice,
                 options: LoweringOptions = DEFAULT_OPTIONS):
        super().__init__(group, plan, spec, pat, AttentionMmaChoice(choice.instruction,
                                                                    choice.tiles), options)
        self.wc = choice
        self.views = choice.views

    # ------------------------------------------------------------------ setup hooks
    def _warp_index(self, tid: Expr) -> Expr:
        ctx, wm = self.ctx, self.t.warps     # consumer warp w holds rows 16 w of the block
        return ctx.mod(ctx.add(ctx.div(tid, 32), wm - 4), wm)

    def _shared(self, hint: str, dt, size: int, stages: int, align: int) -> str:
        name = self.ctx.unique(hint)
        self.ctx.shared.append(SharedBuffer(name, dt, size, stages, align))
        return name

    def _buffers(self) -> None:
        t, s, dt = self.t, self.wc.stages, self.dt
        self.q_sh = self._shared("q_tile", dt, t.br * t.dp, 1, 1024)
        self.k_sh = self._shared("k_tile", dt, s * t.bc * t.dp, s, 1024)
        self.v_sh = self._shared("v_tile", dt, s * t.bc * t.dvp, s, 1024)
        self.full = self._shared("full_bar", i64, s, s, 8)
        self.empty = self._shared("empty_bar", i64, s, s, 8)
        self.q_bar = self._shared("q_bar", i64, 1, 1, 8)
        self.p_reg = self.ctx.local_buffer("p_frag", dt, self.ns * self.lay.c_elems)

    def _fragment_bases(self) -> None:   # wgmma reads shared tiles through descriptors
        pass

    def _load_q(self) -> None:           # the producer's TMA copies Q
        pass

    # ------------------------------------------------------------------ tensor maps
    def _map(self, view, hint: str) -> str:
        name = self.ctx.unique(hint)
        src = view.source
        self.tmaps.append(TensorMap(name, self.ctx.buffer(src, "input"), src.dtype.name,
                                    src.dtype.itemsize, view.dims, view.strides, view.box,
                                    SWIZZLE))
        return name

    def _copies(self, out: list[Stmt], view, tmap: str, dst: str, base: Expr, rows: int,
                cols: int, row0: Expr, bar: str, bar_index: Expr) -> None:
        """TMA boxes of `rows` x 64 covering `cols` columns at row `row0` into dst[base..]."""
        ctx = self.ctx
        for b in range(cols // BOX):
            out.append(ira.TmaLoad(dst, ctx.add(base, b * rows * BOX), tmap,
                                   view.coords(ctx, ctx.c(b * BOX), row0, ctx.bid("y")),
                                   bar, bar_index))

    # ------------------------------------------------------------------ kernel
    def lower(self) -> list[Kernel]:
        self.tmaps: list[TensorMap] = []
        self._setup(self.group.name)
        ctx, t, s, c = self.ctx, self.t, self.wc.stages, self.wc.consumers
        body = self.body
        tid = ctx.tid()
        self.wgi = ctx.declare(body, "wg", ctx.div(tid, 128))
        vq, vk, vv = self.views
        self.maps = [self._map(vq, "tmap_q"), self._map(vk, "tmap_k"), self._map(vv, "tmap_v")]
        body.append(If(tid.eq(ctx.c(0)), [
            *(ira.MbarrierInit(self.full, ctx.c(i), 1) for i in range(s)),
            *(ira.MbarrierInit(self.empty, ctx.c(i), 128 * c) for i in range(s)),
            ira.MbarrierInit(self.q_bar, ctx.c(0), 1)]))
        body += [ira.FenceProxyAsync(), Barrier()]
        steps = 2 * cdiv(self.pat.t, t.bc)
        self.causal = not isinstance(self.kt_hi, Const)
        itp, itc = ctx.var("it", ctx.idx), ctx.var("it", ctx.idx)
        qload: list[Stmt] = [ira.MbarrierArrive(self.q_bar, ctx.c(0),
                                                t.br * t.dp * self.dt.itemsize)]
        self._copies(qload, vq, self.maps[0], self.q_sh, ctx.c(0), t.br, t.dp, self.row0,
                     self.q_bar, ctx.c(0))
        prod: list[Stmt] = []
        self._produce(prod, itp)
        # register reallocation where the launch splits the file 3 ways (168 each); with one
        # consumer both warpgroups start with 255 (ptxas ignores setmaxnreg there: C7508)
        realloc = c > 1
        producer = [*([ira.SetMaxNReg(PRODUCER_REGS, False)] if realloc else []),
                    If(tid.eq(ctx.c(0)), qload),
                    For(itp, ctx.c(0), ctx.c(steps), ctx.c(1),
                        [If(self._walked(itp, tid.eq(ctx.c(0))), prod)])]
        cons: list[Stmt] = []
        self._consume(cons, itc)
        self.consumer = [*([ira.SetMaxNReg(CONSUMER_REGS, True)] if realloc else []),
                         ira.MbarrierWait(self.q_bar, ctx.c(0), ctx.c(0)),
                         For(itc, ctx.c(0), ctx.c(steps), ctx.c(1),
                             [If(self._walked(itc), cons)] if self.causal else cons)]
        # the epilogue after the consumers' loop; a role is one loop between leading and
        # trailing statements, so its unrolled loop sits in a (consumer-true) branch
        self.body = epi = []
        self._epilogue()
        self.consumer.append(If(Binary("ne", self.wgi, ctx.c(0)), epi))
        self.body = body
        body.append(ira.Roles(Binary("eq", self.wgi, ctx.c(0)), producer, self.consumer))
        k = ctx.kernel(body, self.plan.grid, self.wc.threads, self.group, self.plan)
        k.tensor_maps = list(self.tmaps)
        return [k]

    def _walked(self, it: Expr, cond: Expr | None = None) -> Expr:
        """Step `it` is walked (below twice the block's causal key-tile bound), and `cond`."""
        if not self.causal:
            assert cond is not None
            return cond
        ok = it.lt(self.ctx.mul(self.kt_hi, 2))
        return ok if cond is None else Binary("logical_and", cond, ok)

    def _step(self, out: list[Stmt], it: Expr) -> tuple[Expr, Expr, Expr]:
        """(stage, phase parity, key tile) of step `it` (pass 2 starts at kt_hi)."""
        ctx, s = self.ctx, self.wc.stages
        st = ctx.declare(out, "st", ctx.mod(it, s))
        ph = ctx.declare(out, "ph", ctx.mod(ctx.div(it, s), 2))
        return st, ph, it

    def _produce(self, out: list[Stmt], it: Expr) -> None:
        ctx, t = self.ctx, self.t
        st, ph, _ = self._step(out, it)
        out.append(ira.MbarrierWait(self.empty, st, Binary("sub", ctx.c(1), ph)))
        _vq, vk, vv = self.views
        isz = self.dt.itemsize
        kbytes, vbytes = t.bc * t.dp * isz, t.bc * t.dvp * isz
        p1: list[Stmt] = [ira.MbarrierArrive(self.full, st, kbytes)]
        self._copies(p1, vk, self.maps[1], self.k_sh, ctx.mul(st, t.bc * t.dp), t.bc, t.dp,
                     ctx.mul(it, t.bc), self.full, st)
        p2: list[Stmt] = [ira.MbarrierArrive(self.full, st, kbytes + vbytes)]
        n0 = ctx.declare(p2, "n0", ctx.mul(it - self.kt_hi, t.bc))
        self._copies(p2, vk, self.maps[1], self.k_sh, ctx.mul(st, t.bc * t.dp), t.bc, t.dp,
                     n0, self.full, st)
        self._copies(p2, vv, self.maps[2], self.v_sh, ctx.mul(st, t.bc * t.dvp), t.bc,
                     t.dvp, n0, self.full, st)
        out.append(If(it.lt(self.kt_hi), p1, p2))

    def _consume(self, out: list[Stmt], it: Expr) -> None:
        ctx, t = self.ctx, self.t
        self.st, self.ph, _ = self._step(out, it)
        p1: list[Stmt] = []
        self._pass1(p1, ctx.declare(p1, "n0", ctx.mul(it, t.bc)))
        p2: list[Stmt] = []
        ninf = Const(-math.inf, self.m_run[0].dtype)
        self.m_fin = [ctx.declare(p2, "m_fin", Select(mv.eq(ninf), Const(0.0, mv.dtype), mv))
                      for mv in self.m_run]
        self._pass2(p2, ctx.declare(p2, "n0", ctx.mul(it - self.kt_hi, t.bc)))
        out.append(If(it.lt(self.kt_hi), p1, p2))

    # ------------------------------------------------------------------ pass hooks
    def _stage(self, loop: list[Stmt], n0: Expr, with_v: bool) -> None:
        loop.append(ira.MbarrierWait(self.full, self.st, self.ph))

    def _release(self, loop: list[Stmt]) -> None:
        loop.append(ira.MbarrierArrive(self.empty, self.st))

    def _qk(self, loop: list[Stmt]) -> None:
        """S = Q K^T: D/16 wgmma m64nBNk16 over this warpgroup's 64 rows of Q."""
        ctx, t = self.ctx, self.t
        self._zero(loop, self.s_acc, self.ns * self.lay.c_elems)
        loop.append(ira.WgmmaFence())
        qa = ctx.declare(loop, "sq", ctx.mul(ctx.sub(self.wgi, 1), 64 * BOX))
        kb = ctx.declare(loop, "sk", ctx.mul(self.st, t.bc * t.dp))
        for kk in range(t.dp // 16):
            box, col = divmod(kk * 16, BOX)
            a = ira.SmemDesc(self.q_sh, ctx.add(qa, box * t.br * BOX + col), 16, 1024, SWIZZLE)
            b = ira.SmemDesc(self.k_sh, ctx.add(kb, box * t.bc * BOX + col), 16, 1024, SWIZZLE)
            loop.append(ira.Wgmma(t.bc, self.dt.name, self.s_acc, 0, a, b))
        loop.append(ira.WgmmaCommit())
        if not self.fault("missing_wgmma_wait"):   # self-test hook (the GEMM's fault too)
            loop.append(ira.WgmmaWait(0))

    def _put_p(self, pl: list[Stmt], j: Expr, i: int, r: int, c: int, pv: Expr) -> None:
        """P element i of n tile j into the register fragment (= its accumulator index)."""
        ctx = self.ctx
        if self.fault("attention_wgmma_p_fragment_swapped"):   # self-test hook: k halves
            j = Binary("sub", ctx.add(j, 1), ctx.mul(ctx.mod(j, 2), 2))
        pl.append(Store(self.p_reg, ctx.add(ctx.mul(j, self.lay.c_elems), i), pv))

    def _pv(self, loop: list[Stmt]) -> None:
        """O += P V: BN/16 register-A wgmma m64nDvk16, V an N-major B (64-column boxes BN
        rows apart: LBO)."""
        ctx, t = self.ctx, self.t
        loop.append(ira.WgmmaFence())
        vb = ctx.declare(loop, "sv", ctx.mul(self.st, t.bc * t.dvp))
        for kk in range(t.bc // 16):
            b = ira.SmemDesc(self.v_sh, ctx.add(vb, kk * 16 * BOX), t.bc * BOX * 2, 1024,
                             SWIZZLE)
            loop.append(ira.Wgmma(t.dvp, self.dt.name, self.o_acc, 0, None, b, trans_b=True,
                                  a_regs=self.p_reg, a_off=8 * kk))
        loop += [ira.WgmmaCommit(), ira.WgmmaWait(0)]


def lower_attention_wgmma(group, plan, spec: DeviceSpec, pat,
                          options: LoweringOptions = DEFAULT_OPTIONS) -> list[Kernel]:
    """The Hopper kernel of an attention plan (strategy "flash_attention_wgmma")."""
    return AttentionWgmmaEmitter(group, plan, spec, pat, plan.detail("attention_wgmma_choice"),
                                 options).lower()
