"""Split-K ("flash-decoding") schedule of attention groups with few query row tiles.

Decode attention has one query row per head: the flash kernel's grid (row tiles x
batch entries) is a handful of blocks (8 for 32 query heads sharing 8 kv heads), so
most units idle while those blocks walk thousands of keys. `choose_split_k` splits the
key tiles into S chunks when the grid cannot fill the device (fewer blocks than units),
each chunk keeps at least MIN_CHUNK_TILES key tiles and the partials' traffic stays
small beside K and V. The lowering (`lower_split_k`) then emits, with grid z = chunk:

* one-pass (P not rounded): kernel 1 runs the flash kernel's online-softmax loop over
  its chunk only (`flash_body(chunk_tiles=...)`) and writes the row max m, row sum l
  and the unnormalised accumulator (f32) of each (row, chunk) to scratch buffers;
  kernel 2 (one thread per output element) takes the global max M over the chunks,
  O = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M), rounded like the graph's output;
* two-pass (P rounded to f16/bf16 before P@V): rounding P exactly needs the final m and
  l before any P exists, so kernel 1 runs pass 1 over its chunk and writes (m, l) per
  chunk; kernel 2 combines the S (m, l) of its rows (global max, rescaled sum: the same
  f32 values the unsplit kernel's online pass computes up to summation order), runs
  pass 2 over its chunk through the group's own sub/exp/div/cast nodes (P rounds where
  the graph rounds it) and writes its partial P@V; kernel 3 sums the S partials. Three
  launches, but the rounding of P is the unsplit schedule's.

Scratch: m and l are [batch entries, rows, S], the accumulators [.., S, Dv], in the
accumulator dtype (f32; f64 for f64 attention).
"""

from __future__ import annotations

import math

from hal.devices.spec import DeviceSpec
from hal.kernel.ir import (
    Assign,
    Binary,
    Const,
    Declare,
    Expr,
    For,
    If,
    Kernel,
    Load,
    Select,
    Stmt,
    Store,
    Unary,
)
from hal.lowering.attention import (
    AttentionPattern,
    AttentionTiles,
    accumulator_dtype,
    flash_body,
    store_output,
)
from hal.lowering.context import KernelContext, index_dtype_for
from hal.lowering.expr import ScalarBuilder
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions
from hal.lowering.plan import KernelPlan
from hal.lowering.pointwise import group_sizes
from hal.lowering.tiling import cdiv, round_up

MIN_CHUNK_TILES = 2     # key tiles per chunk at least (a chunk amortises its Q load and partials)
MIN_CHUNK_KEYS = 256    # and keys
SCRATCH_SHARE = 4       # partials' traffic at most 1/4 of the K and V bytes


def split_scratch_bytes(pat: AttentionPattern, s: int) -> int:
    """Bytes of the partials (m, l and the accumulators of every row and chunk, in the
    accumulator dtype)."""
    return math.prod(pat.batch) * pat.m * s * (pat.dv + 2) * accumulator_dtype(pat).itemsize


def choose_split_k(pat: AttentionPattern, t: AttentionTiles, spec: DeviceSpec) -> tuple[int, str]:
    """(S, why): S key chunks (1: the one-kernel schedule) and the plan's reason."""
    kv_bytes = sum(x.type.numel * x.dtype.itemsize for x in (pat.qk.inputs[1], pat.pv.inputs[1]))
    blocks = cdiv(pat.m, t.br) * math.prod(pat.batch)
    ntiles = cdiv(pat.t, t.bc)
    if blocks == 0 or blocks >= spec.compute_units:   # no query rows: nothing to split
        return 1, ""
    s = min(cdiv(2 * spec.compute_units, blocks),
            ntiles // max(MIN_CHUNK_TILES, cdiv(MIN_CHUNK_KEYS, t.bc)))
    if s < 2:
        return 1, ""
    s = cdiv(ntiles, cdiv(ntiles, s))   # equal chunks of whole tiles (the last may be short)
    if 2 * split_scratch_bytes(pat, s) * SCRATCH_SHARE > kv_bytes:
        return 1, ""
    kernels = 3 if pat.two_pass else 2
    return s, (f"split-K: {blocks} blocks (row tiles x batch) for {spec.compute_units} units, "
               f"keys in {s} chunks of {cdiv(ntiles, s)} tiles -> {blocks * s} blocks, "
               f"partials through scratch, {kernels} kernels")


def lower_split_k(group, plan: KernelPlan, spec: DeviceSpec, pat: AttentionPattern,
                  t: AttentionTiles, options: LoweringOptions = DEFAULT_OPTIONS) -> list[Kernel]:
    """Emit a split-K attention plan: S = plan's split_k chunks of chunk_tiles key tiles."""
    return SplitKEmitter(group, plan, spec, pat, t, options).kernels()


class SplitKEmitter:
    """The kernels of one split-K attention plan: the partial kernel(s) (flash_body over a
    chunk of keys, partials to scratch) and the combining kernel."""

    def __init__(self, group, plan: KernelPlan, spec: DeviceSpec, pat: AttentionPattern,
                 t: AttentionTiles, options: LoweringOptions):
        self.group, self.plan, self.spec, self.pat, self.t = group, plan, spec, pat, t
        self.options = options
        self.adt = accumulator_dtype(pat)   # f64 for f64 attention, else f32
        self.s, self.ct = plan.detail("split_k"), plan.detail("chunk_tiles")
        self.nb, self.m, self.dv = math.prod(pat.batch), pat.m, pat.dv
        self.launch = {x.stage: x for x in plan.launches}
        self.names = {k: f"{group.name}_{k}" for k in ("m", "l", "acc")}

    def kernels(self) -> list[Kernel]:
        return [*self.partial_kernels(), self.combine_kernel()]

    # -- scratch ---------------------------------------------------------------
    def bufs(self, ctx: KernelContext, which: str, readonly: bool) -> list[str]:
        """The scratch buffers `which` ("m", "l", "acc") of every (row, chunk)."""
        return [ctx.scratch_buffer(self.names[k], self.adt,
                                   self.nb * self.m * self.s * (self.dv if k == "acc" else 1),
                                   readonly=readonly) for k in which.split()]

    def store_partials(self, f, stats: bool, acc: bool) -> None:
        """Thread (row, c) of chunk z: m, l (c == 0) and its accumulators to scratch."""
        ctx, body, m, dv = f.ctx, f.body, self.m, self.dv
        slot = ctx.declare(body, "slot", ctx.add(ctx.mul(ctx.add(ctx.mul(ctx.bid("y"), m),
                                                                 f.grow), self.s), ctx.bid("z")))
        ok = f.grow.lt(ctx.c(m))
        if stats:
            mb, lb = self.bufs(ctx, "m l", False)
            body.append(If(Binary("logical_and", ok, f.c.eq(ctx.c(0))),
                           [Store(mb, slot, f.m_i), Store(lb, slot, f.l_i)]))
        if acc:
            (ab,) = self.bufs(ctx, "acc", False)
            el: list[Stmt] = []
            dvo = ctx.declare(el, "dv", ctx.add(ctx.mul(f.ai, self.t.tpr), f.c))
            el.append(If(Binary("logical_and", ok, dvo.lt(ctx.c(dv))),
                         [Store(ab, ctx.add(ctx.mul(slot, dv), dvo), Load(f.acc, f.ai, self.adt))]))
            body.append(For(f.ai, ctx.c(0), ctx.c(f.na), ctx.c(1), el))

    def combined_stats(self, ctx: KernelContext, body: list[Stmt], row_base: Expr, ok,
                       bufs: list[str] | None = None):
        """(M, L, M_use, m buffer) over the S chunks of the row whose partials start at
        row_base (`ok`: the row exists); `bufs`: the m and l buffers if the kernel has
        them already (a lane combining several rows)."""
        mb, lb = bufs or self.bufs(ctx, "m l", True)
        ninf = Const(-math.inf, self.adt)
        mx, sm = ctx.var("m_all", self.adt), ctx.var("l_all", self.adt)
        body += [Declare(mx, ninf), Declare(sm, Const(0.0, self.adt))]
        si = ctx.var("sk", ctx.idx)

        def ld(buf: str, other: Const) -> Expr:
            i = ctx.add(row_base, si)
            return Load(buf, i, self.adt) if ok is None else Load(buf, i, self.adt, ok, other)

        body.append(For(si, ctx.c(0), ctx.c(self.s), ctx.c(1),
                        [Assign(mx, Binary("maximum", mx, ld(mb, ninf)))]))
        mu = ctx.declare(body, "m_use", Select(mx.eq(ninf), Const(0.0, self.adt), mx))
        w = Unary("exp", ld(mb, ninf) - mu)
        body.append(For(si, ctx.c(0), ctx.c(self.s), ctx.c(1),
                        [Assign(sm, sm + Binary("mul", ld(lb, Const(0.0, self.adt)), w))]))
        return mx, sm, mu, mb

    def row_stats(self, ctx, body, grow, _bcoords):
        """Pass 2's (m, l) of a row: combined from the stats kernel's partials."""
        ok = grow.lt(ctx.c(self.m))
        base = ctx.declare(body, "rbase", ctx.mul(ctx.add(ctx.mul(ctx.bid("y"), self.m), grow),
                                                  self.s))
        mx, sm, _mu, _mb = self.combined_stats(ctx, body, base, ok)
        return mx, sm

    # -- kernels ---------------------------------------------------------------
    def partial_kernels(self) -> list[Kernel]:
        g, plan, spec, pat, t, ct = self.group, self.plan, self.spec, self.pat, self.t, self.ct
        grid = self.launch["partial"].grid
        if pat.two_pass:
            f1 = flash_body(g, spec, pat, t, f"{g.name}_stats", chunk_tiles=ct, only="pass1",
                            options=self.options)
            self.store_partials(f1, True, False)
            k1 = f1.ctx.kernel(f1.body, self.launch["stats"].grid, t.threads, g, plan, "stats")
            f2 = flash_body(g, spec, pat, t, f"{g.name}_split", chunk_tiles=ct, only="pass2",
                            stats=self.row_stats, options=self.options)
            self.store_partials(f2, False, True)
            return [k1, f2.ctx.kernel(f2.body, grid, t.threads, g, plan, "partial")]
        f1 = flash_body(g, spec, pat, t, f"{g.name}_split", chunk_tiles=ct, options=self.options)
        self.store_partials(f1, True, True)
        return [f1.ctx.kernel(f1.body, grid, t.threads, g, plan, "partial")]

    def combine_kernel(self) -> Kernel:
        """One thread per output element (batch entry, row, dv): O from the S partials."""
        g, pat, m, dv, s = self.group, self.pat, self.m, self.dv, self.s
        idx = index_dtype_for(group_sizes(g), self.spec)
        ctx = KernelContext(f"{g.name}_combine", self.spec, idx, self.options)
        block = self.launch["combine"].block
        total = self.nb * m * dv
        body: list[Stmt] = []
        e = ctx.declare(body, "e", ctx.add(ctx.mul(ctx.bid("x"), block), ctx.tid()))
        inner: list[Stmt] = []
        dvo = ctx.declare(inner, "dv", ctx.mod(e, dv))
        grow = ctx.declare(inner, "row", ctx.mod(ctx.div(e, dv), m))
        b = ctx.declare(inner, "b", ctx.div(e, m * dv))
        bcoords = ctx.unravel(b, list(pat.batch))
        base = ctx.declare(inner, "rbase", ctx.mul(ctx.add(ctx.mul(b, m), grow), s))
        (ab,) = self.bufs(ctx, "acc", True)
        o = ctx.var("o", self.adt)
        inner.append(Declare(o, Const(0.0, self.adt)))
        si = ctx.var("sk", ctx.idx)
        a_s = Load(ab, ctx.add(ctx.mul(ctx.add(base, si), dv), dvo), self.adt)
        if pat.two_pass:     # the partials are of the normalised, rounded P: a plain sum
            inner.append(For(si, ctx.c(0), ctx.c(s), ctx.c(1), [Assign(o, o + a_s)]))
            res: Expr = o
        else:
            _mx, sm, mu, mb = self.combined_stats(ctx, inner, base, None)
            w = Unary("exp", Load(mb, ctx.add(base, si), self.adt) - mu)
            if self.options.fault("split_k_combine_unscaled"):  # self-test hook
                w = Const(1.0, self.adt)
            inner.append(For(si, ctx.c(0), ctx.c(s), ctx.c(1),
                             [Assign(o, o + Binary("mul", a_s, w))]))
            res = Binary("div", o, sm)
        builder = ScalarBuilder(ctx, g.nodes, inner)
        inner.append(store_output(ctx, builder, pat, bcoords, grow, dvo, res))
        body.append(If(e.lt(ctx.c(total)), inner))
        return ctx.kernel(body, self.launch["combine"].grid, block, g, self.plan, "combine")


def split_issued_bytes(pat: AttentionPattern, tpr: int, s: int) -> int:
    """Global bytes the split kernels load and store beyond Q, K, V and O (the partials, as
    lowered: the combine kernel reads each row's m and l once per output element)."""
    rows = math.prod(pat.batch) * pat.m
    b = accumulator_dtype(pat).itemsize
    if not pat.two_pass:   # kernel 1 writes m, l, acc; kernel 2: 3 m, 1 l, 1 acc per chunk
        return rows * s * (pat.dv + 2) * b + rows * pat.dv * s * 5 * b
    # stats: m, l written; kernel 2: each of a row's tpr threads reads 2 m, 1 l per chunk in
    # each of the S chunk blocks, writes acc; kernel 3 reads acc
    return rows * s * 2 * b + rows * s * tpr * s * 3 * b + 2 * rows * s * pat.dv * b


def decode_mma_reason(pat: AttentionPattern, spec: DeviceSpec) -> str:
    """Why the split-K kernels stay SIMT (split_mma_verdict's reason)."""
    return split_mma_verdict(pat, spec)[1]


def split_mma_verdict(pat: AttentionPattern, spec: DeviceSpec) -> tuple[bool, str]:
    """(pays, reason): whether the split-K kernels should issue the matrix instruction,
    with the cost model's numbers: the contractions' time on the FMA units against the K/V
    read at DRAM bandwidth. Decode has a few query rows per kv head: the matrix unit would
    pad them to its m and save nothing while the kernel waits on memory; a small prefill
    (many rows, split because its row tiles cannot fill the device) is bound by the
    contractions, and the matrix unit pays (hal.lowering.attention_mma_split)."""
    from hal.dtypes import compute_dtype
    from hal.kernel.mma import get_layout
    from hal.roofline import MathInstruction, MathKind, peak

    q = pat.qk.inputs[0]
    kv_bytes = sum(x.type.numel * x.dtype.itemsize for x in (pat.qk.inputs[1], pat.pv.inputs[1]))
    rows = math.prod(pat.batch) * pat.m
    passes = 2 if pat.two_pass else 1
    flops = 2.0 * rows * pat.t * (passes * pat.d + pat.dv)
    t_mem = kv_bytes / spec.dram_bandwidth
    vec = peak(spec, MathInstruction(MathKind.SIMT_FMA, compute_dtype(q.dtype).name))
    t_fma = flops / vec
    # the instruction with the fewest rows: the least padding of a few query rows
    instrs = [mi for mi in spec.usable_matrix_instructions()   # warp-level: mma.sync, MFMA
              if mi.scope == "warp" and (mi.a, mi.b, mi.acc) == (q.dtype.name, q.dtype.name,
                                                                 "f32")]
    instr = min(instrs, key=lambda mi: get_layout(mi.layout).m, default=None)
    if instr is None:
        return False, (f"split-K decode on the vector units: {spec.name} has no matrix "
                       f"instruction for {q.dtype.name}")
    lay = get_layout(instr.layout)
    padded = flops * round_up(pat.m, lay.m) / max(1, pat.m)
    t_mma = padded / peak(spec, MathInstruction(MathKind.MATRIX, q.dtype.name, instr.name))
    pays = t_fma > t_mem
    numbers = (f"{pat.m} query rows per kv head (padded to {round_up(pat.m, lay.m)} for "
               f"{instr.name}); K/V {kv_bytes / 2**20:.3g} MiB take {t_mem * 1e6:.3g} us at "
               f"DRAM bandwidth, the contractions {t_fma * 1e6:.3g} us on FMAs, "
               f"{t_mma * 1e6:.3g} us on the matrix unit")
    if pays:
        return True, (f"split-K on the matrix unit: {numbers}: the contractions bound the "
                      f"kernel")
    return False, (f"split-K decode stays SIMT: {numbers}: the matrix unit would not pay: "
                   f"the kernel is memory-bound")
