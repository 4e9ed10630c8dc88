"""A norm (or elementwise) prologue of A on the Hopper GEMM: TMA lands x, the consumers rewrite it.

hal.lowering.matmul_prologue gives the SIMT and mma.sync GEMMs a fused norm: a pre-pass
computes the row statistics of the block's BM rows into shared arrays, and the A tile loads
evaluate A's elementwise chain (cast(x) * rinv * w, the cast back to bf16) element by
element. On the wgmma kernel (hal.lowering.matmul_wgmma) A reaches shared memory by TMA, so
this module keeps TMA and transforms the tile in shared memory:

* `prologue_source` finds the group input x that A is computed from element for element
  (through elementwise ops, casts, selects and row-major reshapes only; row statistics come
  from the pre-pass, a norm weight through its broadcast from global memory). x must have
  A's dtype and element count and A must be laid out (batch, M, K) in that order, so x's box
  is exactly A's (TMA copies x's tile where it would copy A's);
* the statistics pre-pass is matmul_prologue's, run by every thread of the block (producer
  warpgroup included) BEFORE the roles split, ending with a block barrier;
* in each k tile, after the consumer warpgroup's wait on full[s] (the TMA bytes landed), its
  128 threads rewrite ITS 64 rows of the stage in place (`emit_transform`): logical element
  (r, c) of the tile lives at r * BK + ((c / V) ^ (r % 8)) * V + c % V, V = 16 / itemsize
  (the 128-byte swizzle: 16-byte chunk index XOR the row within the 1024-byte atom,
  hal.kernel.wgmma.swizzle); a thread reads x there, the group's builder evaluates A's element
  (x served from that word), and the result, rounded to A's dtype, goes back to the same word
  (zero past M or K, where TMA had filled zeros, so a LayerNorm's shift does not leak into
  the K tail);
* then fence.proxy.async (generic-proxy writes made visible to the async proxy wgmma reads
  through) and a warpgroup barrier: mbarrier ready[g] of consumer warpgroup g, 128 arrivals,
  waited with the k tile's parity (kt % 2). A block barrier cannot be used inside the roles:
  the producer never reaches it. Only the warpgroup's own rows are rewritten and only its own
  wgmmas read them, so the warpgroups need not wait for each other; the stage goes back to
  the producer after wait_group, as without a prologue.

Why not compute A's tile from global memory with generic stores: TMA keeps the copies
asynchronous (the producer runs stages ahead), and the rewrite costs one shared read and
write per element.

Self-test fault planted here: wgmma_prologue_unswizzled (the rewrite addresses the tile as if
TMA had not swizzled it: element (r, c) at r * BK + c; numerically caught: the norm weight
lands on the wrong columns). cpu_sim does not model the memory proxies, so a missing
fence.proxy.async is not caught by it (the renderer always emits the fence).
"""

from __future__ import annotations

import math

from hal.ir.graph import Value
from hal.kernel import ir_async as ira
from hal.kernel.ir import Binary, Cast, For, Load, Select, Stmt, Store
from hal.lowering.expr import _keeps_coords, to_compute, zero_of
from hal.lowering.matmul_prologue import prologue_layout, prologue_reductions


def prologue_source(group, dot) -> Value | str:
    """The group input TMA copies for A when A is computed in the group (a norm prologue,
    an elementwise chain), or why the wgmma kernel cannot take A's prologue."""
    from hal.lowering.matmul import contraction_dims
    from hal.ops import get_op

    a = dot.inputs[0]
    lb, _rb, lc, _rc, lf, _rf = contraction_dims(dot)
    if (*lb, *lf, *lc) != tuple(range(a.rank)):
        return "A is read transposed: the prologue's source tile is not A's TMA box"
    reds = prologue_reductions(group.nodes)
    if reds:
        why = prologue_layout(group, dot)
        if why:
            return why
    producers = {o.name: n for n in group.nodes for o in n.outputs}
    stats = {r.outputs[0].name for r in reds}
    direct: dict[str, Value] = {}
    other: set[str] = set()
    seen: set[tuple[str, bool]] = set()
    stack: list[tuple[Value, bool]] = [(a, True)]
    while stack:
        v, keep = stack.pop()
        if (v.name, keep) in seen or v.name in stats:
            continue
        seen.add((v.name, keep))
        node = producers.get(v.name)
        if node is None:
            if keep:
                direct[v.name] = v
            else:
                other.add(v.name)
            continue
        if get_op(node.op).category.name == "CONTRACTION":
            return f"A is computed from another contraction (%{v.name})"
        flat = node.op == "reshape"     # row-major: the flat index is kept
        stack.extend((x, keep and (flat or _keeps_coords(node))) for x in node.inputs)
    srcs = [v for name, v in direct.items() if name not in other]
    if len(srcs) != 1 or len(direct) != 1:
        return (f"A is computed from {len(direct)} inputs read at its own coordinates "
                f"({', '.join('%' + n for n in direct) or 'none'}): the Hopper prologue "
                f"rewrites one TMA-copied input in place")
    x = srcs[0]
    if x.dtype != a.dtype:
        return (f"A's prologue source %{x.name} is {x.dtype}, A is {a.dtype}: the tile TMA "
                f"lands is rewritten in place, so they must match")
    if math.prod(x.shape) != math.prod(a.shape):
        return f"A's prologue source %{x.name} is not A's size"
    return x


def emit_transform(em, out: list[Stmt], kc, st) -> None:
    """Append, to consumer warpgroup code `out` of k tile `kc` (stage `st`), the in-place
    rewrite of its 64 rows of the A stage, the proxy fence and the warpgroup barrier (module
    docstring). `em` is the _WgmmaEmitter (its tile, builder, shared buffers)."""
    from hal.lowering.matmul import _scatter, contraction_dims

    ctx, t = em.ctx, em.t
    a = em.a
    isz = a.dtype.itemsize
    vec = 16 // isz                    # elements per 16-byte chunk
    lb, _rb, lc, _rc, lf, _rf = contraction_dims(em.dot)
    lt = ctx.declare(out, "lt", ctx.mod(ctx.tid(), 128))
    row0 = ctx.declare(out, "prow0", ctx.mul(ctx.sub(em.wg, 1), 64))
    base = ctx.declare(out, "pbase", ctx.mul(st, t.bm * t.bk))
    it = ctx.var("pe", ctx.idx)
    inner: list[Stmt] = []
    e = ctx.declare(inner, "pe_e", ctx.add(ctx.mul(it, 128), lt))
    r = ctx.declare(inner, "pr", ctx.add(row0, ctx.div(e, t.bk)))
    c = ctx.declare(inner, "pc", ctx.mod(e, t.bk))
    if em.fault("wgmma_prologue_unswizzled"):      # self-test hook: TMA's swizzle ignored
        col = c
    else:
        chunk = Binary("bitwise_xor", ctx.div(c, vec), ctx.mod(r, 8))
        col = ctx.add(ctx.mul(chunk, vec), ctx.mod(c, vec))
    idx = ctx.declare(inner, "pidx", ctx.add(base, ctx.add(ctx.mul(r, t.bk), col)))
    gm = ctx.declare(inner, "pgm", ctx.add(em.m0, r))
    gk = ctx.declare(inner, "pgk", ctx.add(ctx.mul(kc, t.bk), c))
    valid = ctx.declare(inner, "pok", Binary("logical_and", gm.lt(ctx.c(em.m)),
                                             gk.lt(ctx.c(em.k))))
    coords = _scatter(a.rank, [(lb, em.bcoords), (lf, ctx.unravel(gm, em.ms)),
                               (lc, ctx.unravel(gk, em.ks))])
    src = em.prologue_src
    prev = em.builder.load_hook

    def hook(b, v, co, mask):
        if v.name == src.name:
            return to_compute(Load(em.a_sh, idx, v.dtype), v.dtype)
        return prev(b, v, co, mask) if prev is not None else None

    b = em.builder.scope(inner)
    b.load_hook = hook
    x = b.value(a, coords, valid)
    x = Cast(x, a.dtype) if x.dtype != a.dtype else x
    inner.append(Store(em.a_sh, idx, Select(valid, x, zero_of(a.dtype))))
    out.append(For(it, ctx.c(0), ctx.c(64 * t.bk // 128), ctx.c(1), inner))
    out.append(ira.FenceProxyAsync())
    g = ctx.sub(em.wg, 1)
    out.append(ira.MbarrierArrive(em.ready, g))
    out.append(ira.MbarrierWait(em.ready, g, ctx.mod(kc, 2)))


__all__ = ["emit_transform", "prologue_source"]
