"""Cases that reach the planner's refusals and the paths a device unlike the shipped
ones takes (issue 21, second coverage pass).

Each group was chosen by measuring the lowering branches the suite reaches
(benchmarks/conformance_coverage.py --lower-only) and names what it reaches. A refusal is
a decision with a result: the graph runs split (the fused and the unfused plans are both
compared), so a wrong refusal or a wrong fallback shows as a wrong number.

* matmul groups the planner must not form (hal.lowering.matmul.sibling_contractions,
  _segments): two contractions that read A differently, accumulate in different dtypes,
  chain (x @ (x @ w)) or are combined by their epilogue;
* matmul epilogues through views the epilogue-view rule refuses (a result split into heads,
  a contraction with two free B axes), a weight read transposed (the matrix-unit kernel
  looks through the transpose), three equal-N siblings (QKV of full multi-head attention),
  an embedding looked up more often than the table has rows;
* attention written in primitives with one more departure each than cases_coverage's
  (exp2 numerator, probabilities reshaped to a batched matmul, P transposed into P @ V,
  two query axes, a scan on the scores): the matcher's reasons;
* spec variants of the device under test (spec_variants.SPEC_VARIANTS): 2 KiB and 12 KiB of shared
  memory per block (the tiles that do not fit, the matrix-unit tiles refused, the wgmma
  pipeline's two stages), the other warp width (a matrix instruction issued by warps of
  another width), 24 registers per thread (no SIMT tile for a long epilogue), TF32 granted (f32 attention on the matrix unit), no TMA (Hopper GEMMs
  without wgmma), rows and norm prologues over the `small` variant's L2.
"""

from __future__ import annotations

from .cases import _Collector

_QKV = (1, 2, 33, 16)


def _mm(b, a, w, **kw):
    return b.op("matmul", a, w, **kw)


def _siblings(c: _Collector) -> None:
    def transposed_a(b):
        x = b.input("x", "f32", (48, 48))
        b.output(b.op("add", _mm(b, x, b.input("w1", "f32", (48, 32))),
                      _mm(b, x, b.input("w2", "f32", (48, 32)), transpose_a=True)))

    def acc_dtype(b):
        x = b.input("x", "bf16", (33, 64))
        b.output(b.op("add", _mm(b, x, b.input("w1", "bf16", (64, 32))),
                      _mm(b, x, b.input("w2", "bf16", (64, 32)), acc_dtype="bf16")))

    def combined(b):   # a per-row gate from a 1-column sibling scales the other's result
        x = b.input("x", "f32", (33, 64))
        g = _mm(b, x, b.input("wg", "f32", (64, 1)))
        b.output(b.op("mul", _mm(b, x, b.input("w", "f32", (64, 32))),
                      b.op("broadcast_to", g, shape=[33, 32])))

    def chained(b):    # x @ (x @ w): the second reads the first's result
        x = b.input("x", "f32", (48, 48))
        b.output(_mm(b, x, _mm(b, x, b.input("w", "f32", (48, 48)))))

    for label, dt, shape, build in (("transposed_a", "f32", "48x48x32", transposed_a),
                                    ("acc_dtype", "bf16", "33x64x32", acc_dtype),
                                    ("combined", "f32", "33x64x32", combined),
                                    ("chained", "f32", "48x48x48", chained)):
        c.add("fused", "siblings_refused", (dt,), shape, build, suffix=label, unfused=True)

    def qkv_equal(b):   # full multi-head attention's Q, K, V projections: one tile grid
        x = b.input("x", "bf16", (128, 64))
        b.output(*[_mm(b, x, b.input(f"w{i}", "bf16", (64, 64))) for i in range(3)])
    c.add("fused", "siblings", ("bf16",), "128x64x64x3", qkv_equal, suffix="qkv_equal",
          unfused=True)


def _epilogues(c: _Collector) -> None:
    def heads(b):   # a projection split into heads, then a residual per head
        y = _mm(b, b.input("x", "f32", (64, 64)), b.input("w", "f32", (64, 96)))
        b.output(b.op("add", b.op("reshape", y, shape=[64, 3, 32]),
                      b.input("r", "f32", (64, 3, 32))))
    c.add("fused", "matmul_view_heads", ("f32",), "64x64x96", heads, unfused=True)

    def two_free(b):   # einsum mk,knh->mnh with a residual
        y = b.op("dot_general", b.input("x", "f32", (33, 64)), b.input("w", "f32", (64, 4, 16)),
                 lhs_contracting=[1], rhs_contracting=[0], lhs_batch=[], rhs_batch=[])
        b.output(b.op("add", y, b.input("r", "f32", (33, 4, 16))))
    c.add("fused", "dot_general_residual", ("f32",), "33x64x4x16", two_free, unfused=True)

    def weight_t(b):   # torch's Linear exported as t(w) then mm
        w = b.op("transpose", b.input("w", "bf16", (96, 64)), perm=[1, 0])
        b.output(_mm(b, b.input("x", "bf16", (64, 64)), w))
    c.add("fused", "matmul_transposed_weight", ("bf16",), "64x64x96", weight_t, unfused=True)

    def zero_pad_concat(b):   # F.pad by 0 (an exported "same" padding of width 0), then cat
        x = b.op("pad", b.input("x", "f32", (33, 31)), low=[0, 0], high=[0, 0], value=0.0)
        b.output(b.op("concat", x, b.input("y", "f32", (33, 5)), axis=1))
    c.add("movement", "pad_concat", ("f32",), "33x31x5", zero_pad_concat, suffix="zero_width")

    def pick_scale(b):   # params.view(-1)[4] as a scale: constant coordinates fold
        p = b.op("reshape", b.input("p", "f32", (2, 3)), shape=[6])
        s = b.op("slice", p, starts=[4], stops=[5], steps=[1], axes=[0])
        b.output(b.op("mul", b.input("x", "f32", (33, 65)),
                      b.op("broadcast_to", s, shape=[33, 65])))
    c.add("layout", "pick_scale", ("f32",), "2x3x33x65", pick_scale)

    def embed(b):   # more tokens than vocabulary rows: the whole table is read
        b.output(b.op("gather", b.input("t", "f32", (16, 32)), b.input("i", "i32", (64,)),
                      axis=0))
    c.add("fused", "embedding", ("f32", "i32"), "16x32x64", embed, suffix="tokens_over_rows")


def _probs(b, s, numerator="exp"):
    """softmax(s) over the last axis, as exp(s - max) / sum, with `numerator` for exp."""
    m = b.op("reduce_max", s, axes=(s.rank - 1,), keepdims=True)
    e = b.op(numerator, b.op("sub", s, b.op("broadcast_to", m, shape=list(s.shape))))
    z = b.op("broadcast_to", b.op("reduce_sum", e, axes=(s.rank - 1,), keepdims=True),
             shape=list(s.shape))
    return b.op("div", e, z)


def _softmax_pv(b, s, v, *, numerator="exp", reshape_p=None, **mm):
    p = _probs(b, s, numerator)
    if reshape_p:
        p = b.op("reshape", p, shape=reshape_p)
    return _mm(b, p, v, **mm)


def _near_attention(c: _Collector) -> None:
    def qkv(b, vshape=_QKV):
        return b.input("q", "f32", _QKV), b.input("k", "f32", _QKV), b.input("v", "f32", vshape)

    def exp2(b):    # flash attention's base-2 softmax (without the log2(e) scale)
        q, k, v = qkv(b)
        b.output(_softmax_pv(b, _mm(b, q, k, transpose_b=True), v, numerator="exp2"))

    def bmm(b):     # P viewed as [B*H, S, T] for a batched matmul with V [B*H, T, D]
        q, k, v = qkv(b, (2, 33, 16))
        b.output(_softmax_pv(b, _mm(b, q, k, transpose_b=True), v, reshape_p=[2, 33, 33]))

    def p_t(b):     # P^T @ V: contracts the query axis
        q, k, v = qkv(b)
        b.output(_softmax_pv(b, _mm(b, q, k, transpose_b=True), v, transpose_a=True))

    def cumsum_scores(b):
        q, k, v = qkv(b)
        s = b.op("cumsum", _mm(b, q, k, transpose_b=True), axis=3)
        b.output(_softmax_pv(b, s, v))

    def two_query_axes(b):   # grouped queries kept as [B, G, S, D] against K [B, T, D]
        q = b.input("q", "f32", (2, 3, 11, 16))
        k, v = b.input("k", "f32", (2, 33, 16)), b.input("v", "f32", (2, 33, 16))
        s = b.op("dot_general", q, k, lhs_batch=[0], rhs_batch=[0], lhs_contracting=[3],
                 rhs_contracting=[2])
        b.output(b.op("dot_general", _probs(b, s), v, lhs_batch=[0], rhs_batch=[0],
                      lhs_contracting=[3], rhs_contracting=[1]))

    def v_f32(b):   # bf16 Q, K scored in f32 against an f32 V: no matrix-unit attention
        q, k = b.input("q", "bf16", _QKV), b.input("k", "bf16", _QKV)
        s = _mm(b, q, k, transpose_b=True, out_dtype="f32")
        b.output(_softmax_pv(b, s, b.input("v", "f32", _QKV)))
    c.add("fused", "attention_primitives", ("bf16", "f32"), "1x2x33x16", v_f32, suffix="v_f32",
          unfused=True)

    for label, shape, build in (("exp2", "1x2x33x16", exp2), ("bmm_probs", "1x2x33x16", bmm),
                                ("probs_transposed", "1x2x33x16", p_t),
                                ("cumsum_scores", "1x2x33x16", cumsum_scores),
                                ("two_query_axes", "2x3x11x33x16", two_query_axes)):
        c.add("fused", "attention_primitives", ("f32",), shape, build, suffix=label,
              unfused=True)


def _attention(b, dt, q, kv):
    b.output(b.op("scaled_dot_product_attention", b.input("q", dt, q), b.input("k", dt, kv),
                  b.input("v", dt, kv), causal=False))


def _variants(c: _Collector) -> None:
    def add(op, dt, shape, build, variant, suffix=""):
        c.add("stress", op, (dt,), shape, build, variant=variant,
              suffix="-".join(p for p in (suffix, variant) if p), unfused=True)

    def mm(dt, m, k, n):
        return lambda b: b.output(_mm(b, b.input("a", dt, (m, k)), b.input("b", dt, (k, n))))

    def attn(dt, q, kv):
        return lambda b: _attention(b, dt, q, kv)

    add("transpose", "f32", "65x129", lambda b: b.output(b.op(
        "transpose", b.input("x", "f32", (65, 129)), perm=[1, 0])), "smem2k")
    add("matmul", "bf16", "64x64x96", mm("bf16", 64, 64, 96), "smem2k")
    add("attention", "bf16", "1x2x2x65x64", attn("bf16", (1, 2, 65, 64), (1, 2, 65, 64)),
        "smem2k")
    add("attention", "bf16", "1x2x2x65x128", attn("bf16", (1, 2, 65, 128), (1, 2, 65, 128)),
        "smem12k")
    add("matmul", "bf16", "64x64x96", mm("bf16", 64, 64, 96), "other_warp")
    add("attention", "bf16", "1x2x2x65x32", attn("bf16", (1, 2, 65, 32), (1, 2, 65, 32)),
        "other_warp")
    add("attention", "f32", "1x2x2x65x32", attn("f32", (1, 2, 65, 32), (1, 2, 65, 32)), "tf32")
    add("matmul", "f32", "64x64x96", mm("f32", 64, 64, 96), "tf32")
    add("matmul", "bf16", "128x128x128", mm("bf16", 128, 128, 128), "no_tma")
    # the Hopper GEMM on a device without thread-block clusters (no B multicast)
    add("matmul", "bf16", "256x64x128", mm("bf16", 256, 64, 128), "no_clusters")

    def long_epilogue(b):   # six tanh + residual steps after the matmul
        y = _mm(b, b.input("x", "f32", (64, 64)), b.input("w", "f32", (64, 96)))
        for i in range(6):
            y = b.op("add", b.op("tanh", y), b.input(f"r{i}", "f32", (64, 96)))
        b.output(y)
    add("matmul_long_epilogue", "f32", "64x64x96", long_epilogue, "few_registers")
    add("matmul", "bf16", "4x64x64x64", lambda b: b.output(_mm(
        b, b.input("a", "bf16", (4, 64, 64)), b.input("b", "bf16", (4, 64, 64)))), "folded",
        suffix="batch")
    # 64 query heads on one KV head: the split-K scratch would outweigh the keys it splits
    add("attention", "bf16", "1x64x1x1x32", attn("bf16", (1, 64, 1, 32), (1, 1, 1500, 32)),
        "small", suffix="gqa64_decode")
    # rows over the L2 while in flight; a norm prologue whose A panel exceeds half the L2
    # a weight built in the graph (iota): its bytes have no group input to be charged to
    add("matmul_iota_weight", "f32", "257x128x96", lambda b: b.output(_mm(
        b, b.input("x", "f32", (257, 128)), b.op("cast", b.op(
            "iota", shape=[128, 96], dimension=1, dtype="i32"), dtype="f32"))), "small")
    add("softmax", "f32", "2x65536", lambda b: b.output(b.op(
        "softmax", b.input("x", "f32", (2, 65536)), axis=-1)), "small", suffix="rows_over_l2")

    def norm_mm(b):
        y = b.op("rms_norm", b.input("x", "f32", (64, 520)), b.input("w", "f32", (520,)))
        b.output(_mm(b, y, b.input("wm", "f32", (520, 32))))
    add("rms_norm_matmul", "f32", "64x520x32", norm_mm, "small", suffix="panel_over_l2")


def _hopper_prologues(c: _Collector) -> None:
    """Norm prologues the Hopper GEMM rewrites in its TMA-landed tile (K and N whole 16-byte
    rows, so sm_90a takes wgmma): through torch's [B, S, K] -> [B*S, K] view (the weight's
    column is then (m*K + k) % K, which the vector rewrite must prove contiguous), a
    LayerNorm with its shift, and an f32 norm cast to bf16 (refused: TMA lands x in f32)."""
    def view(dt, norm, bsz, s, k, n):
        def build(b):
            x, w = b.input("x", dt, (bsz, s, k)), b.input("w", dt, (k,))
            y = b.op(norm, x, w) if norm == "rms_norm" else \
                b.op(norm, x, w, b.input("bb", dt, (k,)))
            y = b.op("reshape", y, shape=[bsz * s, k])
            b.output(_mm(b, y, b.input("wm", dt, (k, n))))
        return build

    for dt, norm in (("bf16", "rms_norm"), ("f16", "rms_norm"), ("bf16", "layer_norm")):
        c.add("fused", f"{norm}_view_matmul", (dt,), "2x40x256x64", view(dt, norm, 2, 40, 256, 64),
              suffix="tma_prologue", unfused=True)

    def cast_after_norm(b):
        y = b.op("rms_norm", b.input("x", "f32", (64, 256)), b.input("w", "f32", (256,)))
        b.output(_mm(b, b.op("cast", y, dtype="bf16"), b.input("wm", "bf16", (256, 64))))
    c.add("fused", "rms_norm_cast_matmul", ("f32", "bf16"), "64x256x64", cast_after_norm,
          unfused=True)


def _masked_attention(b, dt, s, t, d, mask, fill=float("-inf")):
    """Attention in primitives with a mask built from iotas, as frameworks build theirs:
    `mask(b, row, col)` gives (predicate, keep), keep False meaning select(pred, fill, s)
    (fill -inf unless given: cases_refusals uses finite fills)."""
    shape = [1, 2, s, t]
    q, k, v = (b.input(n, dt, (1, 2, r, d)) for n, r in (("q", s), ("k", t), ("v", t)))
    sc = b.op("dot_general", q, k, lhs_contracting=(3,), rhs_contracting=(3,),
              lhs_batch=(0, 1), rhs_batch=(0, 1), out_dtype="f32")
    row = b.op("iota", shape=[s, t], dimension=0, dtype="i32")
    col = b.op("iota", shape=[s, t], dimension=1, dtype="i32")
    pred, keep = mask(b, row, col)
    pred = b.op("broadcast_to", pred, shape=shape)
    hide = b.op("full", shape=shape, value=fill, dtype="f32")
    sc = b.op("select", pred, sc, hide) if keep else b.op("select", pred, hide, sc)
    p = _probs(b, sc)
    if dt != "f32":
        p = b.op("cast", p, dtype=dt)
    b.output(b.op("dot_general", p, v, lhs_contracting=(3,), rhs_contracting=(2,),
                  lhs_batch=(0, 1), rhs_batch=(0, 1)))


def _causal_masks(c: _Collector) -> None:
    """Causal masks as libraries write them (hal.lowering.attention_causal's matcher): the
    bottom-right mask of a query block at the end of the keys, the same mask given as what
    to hide, one compared in f32 after casts, and an offset written as row - (-(T - S))."""
    def bottom_right(b, row, col, off):
        return b.op("ge", b.op("add", row, b.op("full", shape=[off[0], off[1]],
                                                 value=float(off[1] - off[0]),
                                                 dtype="i32")), col), True

    def hide_above(b, row, col, off):
        diag = b.op("add", row, b.op("full", shape=list(off), value=float(off[1] - off[0]),
                                     dtype="i32"))
        return b.op("gt", col, diag), False

    def in_f32(b, row, col, off):
        return b.op("le", b.op("cast", col, dtype="f32"),
                    b.op("cast", row, dtype="f32")), True

    def neg_offset(b, row, col, off):
        neg = b.op("neg", b.op("full", shape=list(off), value=float(off[1] - off[0]),
                               dtype="i32"))
        return b.op("lt", col, b.op("add", b.op("sub", row, neg),
                                    b.op("full", shape=list(off), value=1.0, dtype="i32"))), True

    for label, mask, s, t in (("bottom_right", bottom_right, 40, 130),
                              ("hide_above", hide_above, 33, 97),
                              ("compared_in_f32", in_f32, 70, 70),
                              ("negated_offset", neg_offset, 24, 88)):
        for dt in ("f32", "bf16"):
            c.add("fused", "attention_masked", (dt,), f"1x2x{s}x{t}x32",
                  lambda b, _d=dt, _m=mask, _s=s, _t=t: _masked_attention(
                      b, _d, _s, _t, 32, lambda bb, r, co: _m(bb, r, co, (_s, _t))),
                  suffix=label, unfused=True)


def _hopper_attention(c: _Collector) -> None:
    """Prefill attention that sm_90a runs on wgmma + TMA (hal.lowering.attention_wgmma; other
    specs: their matrix-unit kernel): head dims 64, 128 and 256 (64-key tiles), causal and
    not, GQA, T != S, partial row and key tiles, one and two consumer warpgroups, f16; and
    the same shape on a spec without TMA (the mma.sync kernel, its reason recorded)."""
    def sdpa(dt, q, kv, causal):
        return lambda b: b.output(b.op(
            "scaled_dot_product_attention", b.input("q", dt, q), b.input("k", dt, kv),
            b.input("v", dt, kv), causal=causal))

    for dt, q, kv, causal in (("bf16", (1, 2, 130, 128), (1, 2, 130, 128), True),
                              ("bf16", (2, 2, 70, 64), (2, 2, 200, 64), False),
                              ("f16", (1, 4, 100, 64), (1, 2, 100, 64), True),
                              ("bf16", (1, 1, 64, 128), (1, 1, 64, 128), False),
                              ("bf16", (1, 1, 65, 256), (1, 1, 90, 256), False),
                              # 132 blocks of 128 rows (GQA: 260 rows per kv head): the
                              # two-consumer kernel on 132-unit specs
                              ("bf16", (1, 88, 130, 64), (1, 44, 130, 64), True)):
        shape = "x".join(map(str, (q[0], q[1], kv[1], q[2], q[3])))
        c.add("fused", "attention", (dt,), shape, sdpa(dt, q, kv, causal),
              suffix=f"wgmma-t{kv[2]}{'-causal' if causal else ''}", unfused=True)
    def bshd(b):    # [B, S, H, D] tensors as heads: GQA rows (head in group, position) are
        # two strided pieces; 128-row tiles never straddle a head (hal.lowering.tma_views)
        def heads(name, h):
            return b.op("transpose", b.input(name, "bf16", (1, 128, h, 64)), perm=[0, 2, 1, 3])
        b.output(b.op("scaled_dot_product_attention", heads("q", 4), heads("k", 2),
                      heads("v", 2), causal=True))
    c.add("fused", "attention", ("bf16",), "1x4x2x128x64", bshd, suffix="wgmma-bshd-causal",
          unfused=True)

    def q_cast(b):   # Q computed in the group (a cast): TMA cannot copy it (mma.sync kept)
        q = b.op("cast", b.input("q", "f32", (1, 2, 80, 64)), dtype="bf16")
        b.output(b.op("scaled_dot_product_attention", q, b.input("k", "bf16", (1, 2, 80, 64)),
                      b.input("v", "bf16", (1, 2, 80, 64)), causal=True))
    c.add("fused", "attention", ("f32", "bf16"), "1x2x2x80x64", q_cast, suffix="q_cast",
          unfused=True)
    c.add("stress", "attention", ("bf16",), "1x2x2x130x64", sdpa(
        "bf16", (1, 2, 130, 64), (1, 2, 130, 64), True), variant="no_tma",
        suffix="causal-no_tma", unfused=True)


def path_cases(c: _Collector) -> None:
    _hopper_attention(c)
    _hopper_prologues(c)
    _causal_masks(c)
    _siblings(c)
    _epilogues(c)
    _near_attention(c)
    _variants(c)
