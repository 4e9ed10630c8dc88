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
  hal.kernel.wgmma.swizzle). The swizzle moves whole 16-byte chunks, so a thread takes whole
  chunks (BK / V a row, 64 * BK / V / 128 per thread, an unrolled loop): one 16-byte shared
  load (VecCopy; LDS.128) of the chunk's V elements of x into registers, the inputs read
  along K with unit stride (the norm weight, a LayerNorm bias) as 16-byte global loads of
  the chunk's V columns, values that do not depend on the column (the row statistics from
  the pre-pass) once per chunk, then the group's builder evaluates A's element for each of
  the V elements (an unrolled loop: the same element math in the same order as the
  element-by-element rewrite, so the same rounding), and one 16-byte shared store (STS.128)
  of the results, rounded to A's dtype, back to the chunk. K is a multiple of V on this path
  (TMA's 16-byte row strides), so a chunk lies wholly inside or wholly past M and K: past
  them it is zero (TMA had filled zeros; a LayerNorm's shift must not leak into the K tail).
  The element-by-element rewrite (`LoweringOptions(scalar_prologue=True)`) is kept as the
  reference the vector one is tested bitwise against;
* then fence.proxy.async (generic-proxy writes made visible to the async proxy wgmma reads
  through) and a warpgroup barrier: mbarrier ready[g] of consumer warpgroup g, 128 arrivals,
  waited with the k tile's parity (kt % 2). A block barrier cannot be used inside the roles:
  the producer never reaches it. Only the warpgroup's own rows are rewritten and only its own
  wgmmas read them, so the warpgroups need not wait for each other; the stage goes back to
  the producer after wait_group, as without a prologue.

Why not compute A's tile from global memory with generic stores: TMA keeps the copies
asynchronous (the producer runs stages ahead), and the rewrite costs one 16-byte shared
read and write per 8 (16-bit) elements.

Self-test fault planted here: wgmma_prologue_unswizzled (the rewrite addresses the tile as if
TMA had not swizzled it: element (r, c) at r * BK + c; numerically caught: the norm weight
lands on the wrong columns). cpu_sim does not model the memory proxies, so a missing
fence.proxy.async is not caught by it (the renderer always emits the fence).
"""

from __future__ import annotations

from hal.ir.graph import Value
from hal.kernel import ir_async as ira
from hal.kernel.ir import (
    Binary,
    Cast,
    Const,
    Declare,
    Expr,
    For,
    Load,
    Select,
    Stmt,
    Store,
    Var,
    VecCopy,
    walk_expr,
)
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
    # x has A's element count: the walk kept coordinates only through reshapes and
    # elementwise ops, whose operands have their output's shape (ops.elementwise)
    return x


def emit_transform(em, out: list[Stmt], kc, st) -> None:
    """Append, to consumer warpgroup code `out` of k tile `kc` (stage `st`), the in-place
    rewrite of its 64 rows of the A stage, the proxy fence and the warpgroup barrier (module
    docstring). `em` is the _WgmmaEmitter (its tile, builder, shared buffers)."""
    # The vector rewrite is the kernel's; the scalar one (one shared read and write per
    # element) is kept as the reference it is tested bitwise against (the option
    # scalar_prologue) and for a K that is not a whole number of 16-byte chunks (which the
    # wgmma path refuses today: TMA needs 16-byte row strides).
    vec = 16 // em.a.dtype.itemsize
    if (not em.ctx.options.scalar_prologue and em.k % vec == 0
            and em.t.bk % vec == 0):
        _vector_rewrite(em, out, kc, st)
    else:
        _scalar_rewrite(em, out, kc, st)
    ctx = em.ctx
    if not em.fault("wgmma_prologue_no_proxy_fence"):   # self-test hook: fence left out
        out.append(ira.FenceProxyAsync())
    if em.fault("wgmma_prologue_no_warpgroup_barrier"):   # self-test hook: no barrier
        return
    g = ctx.sub(em.wg, 1)
    out.append(ira.MbarrierArrive(em.ready, g))
    out.append(ira.MbarrierWait(em.ready, g, ctx.mod(kc, 2)))


def lane_split(x: Expr, gk: Var, gk0: Var, vec: int) -> tuple[Expr, bool] | None:
    """(base, lane) with x == base + (e if lane else 0) for every e < vec, where
    gk = gk0 + e and gk0 is a multiple of vec (a chunk's first column), proved from the form
    of x (index arithmetic on non-negative values: +, * and / and % by constants), or None.
    With lane, base is a multiple of vec. Reshapes' unravelled flat indices (a view
    [B, S, D] -> [B*S, D]) split this way when D is a multiple of vec."""
    if not any(y == gk for y in walk_expr(x)):
        return x, False
    if x == gk:
        return gk0, True
    if not isinstance(x, Binary):
        return None
    pa, pb = lane_split(x.a, gk, gk0, vec), lane_split(x.b, gk, gk0, vec)
    if pa is None or pb is None or (pa[1] and pb[1]):
        return None
    if not (pa[1] or pb[1]):                     # both operands the same for every e
        return Binary(x.op, pa[0], pb[0]), False
    if x.op == "add":
        base = Binary("add", pa[0], pb[0])
        return (base, True) if _aligned(base, gk0, vec) else None
    d = x.b.value if isinstance(x.b, Const) else 0
    if x.op in ("div", "remainder") and d > 0 and d % vec == 0 and pa[1]:
        # base + e stays within one multiple of d: the quotient ignores e, the rest adds it
        return (Binary("div", pa[0], x.b), False) if x.op == "div" else \
            (Binary("remainder", pa[0], x.b), True)
    return None


def _aligned(x: Expr, gk0: Var, vec: int) -> bool:
    """x is provably a multiple of vec."""
    if isinstance(x, Const):
        return x.value % vec == 0
    if x == gk0:
        return True
    if not isinstance(x, Binary):
        return False
    if x.op == "mul":
        return any(isinstance(y, Const) and y.value % vec == 0 for y in (x.a, x.b)) or \
            _aligned(x.a, gk0, vec) or _aligned(x.b, gk0, vec)
    if x.op == "add":
        return _aligned(x.a, gk0, vec) and _aligned(x.b, gk0, vec)
    if x.op == "remainder":
        return isinstance(x.b, Const) and x.b.value % vec == 0 and _aligned(x.a, gk0, vec)
    return False


def _vector_rewrite(em, out: list[Stmt], kc, st) -> None:
    """Whole 16-byte chunks: thread lt of the warpgroup takes chunks q * 128 + lt of its 64
    rows (BK / V chunks a row); per chunk one 16-byte shared load of x (the swizzle moves whole
    chunks, so a chunk's V elements stay contiguous), the V elements' math in registers (an
    unrolled loop, the same element math in the same order as the scalar rewrite), one
    16-byte shared store back. Inputs read along K with unit stride (a norm weight, a
    LayerNorm bias) come in as 16-byte global loads of the chunk's V columns into registers,
    values that do not depend on the column (the row statistics) once per chunk. K is a
    multiple of V here, so a chunk is wholly inside or wholly past M and K: the zero fill is
    the chunk's mask, the same value per element as the scalar rewrite's."""
    from hal.lowering.matmul import _scatter, contraction_dims

    ctx, t, a = em.ctx, em.t, em.a
    vec = 16 // a.dtype.itemsize
    per_row = t.bk // vec
    lb, _rb, lc, _rc, lf, _rf = contraction_dims(em.dot)
    lt = ctx.declare(out, "lt", ctx.mod(ctx.tid(), 128))
    row0 = ctx.declare(out, "prow0", ctx.mul(ctx.sub(em.wg, 1), 64))
    base = ctx.declare(out, "pbase", ctx.mul(st, t.bm * t.bk))
    xv = ctx.local_buffer("px", a.dtype, vec)
    q = ctx.var("pq", ctx.idx)
    chunk: list[Stmt] = []
    qe = ctx.declare(chunk, "pq_e", ctx.add(ctx.mul(q, 128), lt))
    r = ctx.declare(chunk, "pr", ctx.add(row0, ctx.div(qe, per_row)))
    cc = ctx.declare(chunk, "pcc", ctx.mod(qe, per_row))
    if em.fault("wgmma_prologue_unswizzled"):      # self-test hook: TMA's swizzle ignored
        sw = cc
    else:
        sw = Binary("bitwise_xor", cc, ctx.mod(r, 8))
    sidx = ctx.declare(chunk, "pidx", ctx.add(base, ctx.add(ctx.mul(r, t.bk), ctx.mul(sw, vec))))
    gm = ctx.declare(chunk, "pgm", ctx.add(em.m0, r))
    gk0 = ctx.declare(chunk, "pgk0", ctx.add(ctx.mul(kc, t.bk), ctx.mul(cc, vec)))
    ok = ctx.declare(chunk, "pok", Binary("logical_and", gm.lt(ctx.c(em.m)),
                                          gk0.lt(ctx.c(em.k))))
    mcoords = [ctx.declare(chunk, "pmc", x) if isinstance(x, Binary) else x
               for x in ctx.unravel(gm, em.ms)]
    chunk.append(VecCopy(xv, ctx.c(0), em.a_sh, sidx, vec))       # one 16-byte shared load
    pre: list[Stmt] = []                                           # per-chunk loads (hook)
    e = ctx.var("pe", ctx.idx)
    inner: list[Stmt] = []
    gk = ctx.declare(inner, "pgk", ctx.add(gk0, e))
    coords = _scatter(a.rank, [(lb, em.bcoords), (lf, mcoords), (lc, ctx.unravel(gk, em.ks))])
    src = em.prologue_src
    prev = em.builder.load_hook
    b = em.builder.scope(inner)
    hoisted = b.scope(pre)

    def hook(bb, v, co, mask):
        if v.name == src.name:
            return to_compute(Load(xv, e, v.dtype), v.dtype)
        split = [lane_split(x, gk, gk0, vec) for x in co] if mask is ok else [None]
        local = {st.var.name for st in inner if isinstance(st, Declare)}   # loop-body vars
        if None in split or any(isinstance(y, Var) and y.name in local
                                for bs, _c in split for y in walk_expr(bs)):
            return prev(bb, v, co, mask) if prev is not None else None   # per element
        bases = [bs for bs, _c in split]
        lanes = [i for i, (_b, c) in enumerate(split) if c]
        if not lanes:                        # the same for the chunk's V columns: once
            got = prev(hoisted, v, bases, mask) if prev is not None else None
            got = got if got is not None else to_compute(hoisted.global_load(v, bases, mask),
                                                         v.dtype)
            return ctx.declare(pre, f"p_{v.name}", got)
        got = prev(bb, v, co, mask) if prev is not None else None
        return got if got is not None else _chunk_load(ctx, pre, v, bases, lanes, ok, e, vec)

    b.load_hook = hook
    x = b.value(a, coords, ok)
    x = Cast(x, a.dtype) if x.dtype != a.dtype else x
    inner.append(Store(xv, e, Select(ok, x, zero_of(a.dtype))))
    chunk += pre
    chunk.append(For(e, ctx.c(0), ctx.c(vec), ctx.c(1), inner, unroll=True))
    chunk.append(VecCopy(em.a_sh, sidx, xv, ctx.c(0), vec))       # one 16-byte shared store
    out.append(For(q, ctx.c(0), ctx.c(64 * per_row // 128), ctx.c(1), chunk, unroll=True))


def _chunk_load(ctx, pre: list[Stmt], v: Value, bases, lanes: list[int], ok: Var, e: Var,
                vec: int) -> Expr | None:
    """Input `v` read at coordinates bases + e on axis lanes[0] (lane_split): when that axis
    has unit stride and the others whole chunks, the chunk's `vec` elements as 16-byte
    global loads into registers (added to `pre`), element e of them returned; None (a load
    per element) otherwise."""
    param = ctx.buffer(v, "input")
    strides = ctx.param_named(param).strides
    if len(lanes) != 1 or strides[lanes[0]] != 1 or \
            any(s % vec for i, s in enumerate(strides) if i != lanes[0]):
        return None
    width = min(vec, 16 // v.dtype.itemsize)
    regs = ctx.local_buffer(f"pw_{v.name}", v.dtype, vec)
    at = ctx.declare(pre, "pwi", Select(ok, ctx.linear(bases, strides), ctx.c(0)))
    for j in range(0, vec, width):
        pre.append(VecCopy(regs, ctx.c(j), param, ctx.add(at, j), width, ok))
    return to_compute(Load(regs, e, v.dtype), v.dtype)


def _scalar_rewrite(em, out: list[Stmt], kc, st) -> None:
    """One element per thread and step: a shared read and write per element, inputs read
    per element (the reference the vector rewrite is tested against)."""
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


__all__ = ["emit_transform", "lane_split", "prologue_source"]
