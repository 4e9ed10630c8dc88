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

Scratch: m and l are [batch entries, rows, S] f32, the accumulators [.., S, Dv] f32.
"""

from __future__ import annotations

import math

from hal.devices.spec import DeviceSpec
from hal.dtypes import f32
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
from hal.lowering.attention import AttentionPattern, AttentionTiles, flash_body, store_output
from hal.lowering.context import KernelContext, index_dtype_for
from hal.lowering.expr import ScalarBuilder
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions
from hal.lowering.plan import KernelPlan
from hal.lowering.pointwise import group_sizes
from hal.lowering.tiling import cdiv

MIN_CHUNK_TILES = 2     # key tiles per chunk at least (a chunk amortises its Q load and partials)
MIN_CHUNK_KEYS = 256    # and keys
SCRATCH_SHARE = 4       # partials' traffic at most 1/4 of the K and V bytes


def split_scratch_bytes(pat: AttentionPattern, s: int) -> int:
    """Bytes of the partials (m, l and the f32 accumulators of every row and chunk)."""
    return math.prod(pat.batch) * pat.m * s * (pat.dv + 2) * 4


def choose_split_k(pat: AttentionPattern, t: AttentionTiles, spec: DeviceSpec) -> tuple[int, str]:
    """(S, why): S key chunks (1: the one-kernel schedule) and the plan's reason."""
    kv_bytes = sum(x.type.numel * x.dtype.itemsize for x in (pat.qk.inputs[1], pat.pv.inputs[1]))
    blocks = cdiv(pat.m, t.br) * math.prod(pat.batch)
    ntiles = cdiv(pat.t, t.bc)
    if blocks >= spec.compute_units:
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
    s, ct = plan.detail("split_k"), plan.detail("chunk_tiles")
    nb, m, dv = math.prod(pat.batch), pat.m, pat.dv
    launch = {x.stage: x for x in plan.launches}
    names = {k: f"{group.name}_{k}" for k in ("m", "l", "acc")}
    grid = launch["partial"].grid

    def bufs(ctx: KernelContext, which: str, readonly: bool) -> list[str]:
        return [ctx.scratch_buffer(names[k], f32, nb * m * s * (dv if k == "acc" else 1),
                                   readonly=readonly) for k in which.split()]

    def store_partials(f, stats: bool, acc: bool) -> None:
        """Thread (row, c) of chunk z: m, l (c == 0) and its accumulators to scratch."""
        ctx, body = f.ctx, f.body
        slot = ctx.declare(body, "slot", ctx.add(ctx.mul(ctx.add(ctx.mul(ctx.bid("y"), m),
                                                                 f.grow), s), ctx.bid("z")))
        ok = f.grow.lt(ctx.c(m))
        if stats:
            mb, lb = bufs(ctx, "m l", False)
            body.append(If(Binary("logical_and", ok, f.c.eq(ctx.c(0))),
                           [Store(mb, slot, f.m_i), Store(lb, slot, f.l_i)]))
        if acc:
            (ab,) = bufs(ctx, "acc", False)
            el: list[Stmt] = []
            dvo = ctx.declare(el, "dv", ctx.add(ctx.mul(f.ai, t.tpr), f.c))
            el.append(If(Binary("logical_and", ok, dvo.lt(ctx.c(dv))),
                         [Store(ab, ctx.add(ctx.mul(slot, dv), dvo), Load(f.acc, f.ai, f32))]))
            body.append(For(f.ai, ctx.c(0), ctx.c(f.na), ctx.c(1), el))

    def combined_stats(ctx: KernelContext, body: list[Stmt], row_base: Expr, ok):
        """(M, L, M_use, m buffer) over the S chunks of the row whose partials start at
        row_base (`ok`: the row exists)."""
        mb, lb = bufs(ctx, "m l", True)
        ninf = Const(-math.inf, f32)

        def ld(buf: str, other: Const) -> Expr:
            i = ctx.add(row_base, si)
            return Load(buf, i, f32) if ok is None else Load(buf, i, f32, ok, other)

        mx, sm = ctx.var("m_all", f32), ctx.var("l_all", f32)
        body += [Declare(mx, ninf), Declare(sm, Const(0.0, f32))]
        si = ctx.var("sk", ctx.idx)
        body.append(For(si, ctx.c(0), ctx.c(s), ctx.c(1),
                        [Assign(mx, Binary("maximum", mx, ld(mb, ninf)))]))
        mu = ctx.declare(body, "m_use", Select(mx.eq(ninf), Const(0.0, f32), mx))
        w = Unary("exp", ld(mb, ninf) - mu)
        body.append(For(si, ctx.c(0), ctx.c(s), ctx.c(1),
                        [Assign(sm, sm + Binary("mul", ld(lb, Const(0.0, f32)), w))]))
        return mx, sm, mu, mb

    idx = index_dtype_for(group_sizes(group), spec)
    kernels: list[Kernel] = []
    if pat.two_pass:
        f1 = flash_body(group, spec, pat, t, f"{group.name}_stats", chunk_tiles=ct,
                        only="pass1", options=options)
        store_partials(f1, True, False)
        kernels.append(f1.ctx.kernel(f1.body, launch["stats"].grid, t.threads, group, plan,
                                     "stats"))

        def stats(ctx, body, grow, _bcoords):
            ok = grow.lt(ctx.c(m))
            base = ctx.declare(body, "rbase", ctx.mul(ctx.add(ctx.mul(ctx.bid("y"), m), grow), s))
            mx, sm, _mu, _mb = combined_stats(ctx, body, base, ok)
            return mx, sm

        f2 = flash_body(group, spec, pat, t, f"{group.name}_split", chunk_tiles=ct,
                        only="pass2", stats=stats, options=options)
        store_partials(f2, False, True)
        kernels.append(f2.ctx.kernel(f2.body, grid, t.threads, group, plan, "partial"))
    else:
        f1 = flash_body(group, spec, pat, t, f"{group.name}_split", chunk_tiles=ct,
                        options=options)
        store_partials(f1, True, True)
        kernels.append(f1.ctx.kernel(f1.body, grid, t.threads, group, plan, "partial"))
    # combine: one thread per output element (batch entry, row, dv)
    ctx = KernelContext(f"{group.name}_combine", spec, idx, options)
    block = launch["combine"].block
    total = nb * m * dv
    body: list[Stmt] = []
    e = ctx.declare(body, "e", ctx.add(ctx.mul(ctx.bid("x"), block), ctx.tid()))
    inner: list[Stmt] = []
    dvo = ctx.declare(inner, "dv", ctx.mod(e, dv))
    grow = ctx.declare(inner, "row", ctx.mod(ctx.div(e, dv), m))
    b = ctx.declare(inner, "b", ctx.div(e, m * dv))
    bcoords = ctx.unravel(b, list(pat.batch))
    base = ctx.declare(inner, "rbase", ctx.mul(ctx.add(ctx.mul(b, m), grow), s))
    (ab,) = bufs(ctx, "acc", True)
    o = ctx.var("o", f32)
    inner.append(Declare(o, Const(0.0, f32)))
    si = ctx.var("sk", ctx.idx)
    a_s = Load(ab, ctx.add(ctx.mul(ctx.add(base, si), dv), dvo), f32)
    if pat.two_pass:     # the partials are of the normalised, rounded P: a plain sum
        inner.append(For(si, ctx.c(0), ctx.c(s), ctx.c(1), [Assign(o, o + a_s)]))
        res = o
    else:
        _mx, sm, mu, mb = combined_stats(ctx, inner, base, None)
        w = Unary("exp", Load(mb, ctx.add(base, si), f32) - mu)
        if options.fault("split_k_combine_unscaled"):  # self-test hook
            w = Const(1.0, f32)
        inner.append(For(si, ctx.c(0), ctx.c(s), ctx.c(1),
                         [Assign(o, o + Binary("mul", a_s, w))]))
        res = Binary("div", o, sm)
    builder = ScalarBuilder(ctx, group.nodes, inner)
    inner.append(store_output(ctx, builder, pat, bcoords, grow, dvo, res))
    body.append(If(e.lt(ctx.c(total)), inner))
    kernels.append(ctx.kernel(body, launch["combine"].grid, block, group, plan, "combine"))
    return kernels



def split_issued_bytes(pat: AttentionPattern, tpr: int, s: int) -> int:
    """Global bytes the split kernels load and store beyond Q, K, V and O (the partials, as
    lowered: the combine kernel reads each row's m and l once per output element)."""
    rows = math.prod(pat.batch) * pat.m
    if not pat.two_pass:   # kernel 1 writes m, l, acc; kernel 2: 3 m, 1 l, 1 acc per chunk
        return rows * s * (pat.dv + 2) * 4 + rows * pat.dv * s * 20
    # stats: m, l written; kernel 2: each of a row's tpr threads reads 2 m, 1 l per chunk in
    # each of the S chunk blocks, writes acc; kernel 3 reads acc
    return rows * s * 8 + rows * s * tpr * s * 12 + 2 * rows * s * pat.dv * 4
