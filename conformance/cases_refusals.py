"""Cases for the decisions a lowering makes about a graph's exact form (issue 21, third
coverage pass): masks the causal matcher must not read as causal, A operands the Hopper
GEMM's tensor map cannot describe, GEMMs it leaves to mma.sync, norm weights the
vector prologue must not read as contiguous chunks, odd head dimensions.

Each was chosen by measuring the lowering branches the suite reaches
(benchmarks/conformance_coverage.py --lower-only) and names what it reaches. A refusal is a
decision with a result: the fused kernel runs another way (no tile skipping, the mma.sync
kernel, a load per element), and the case compares its numbers with the float64
reference (and with the unfused kernels); a refusal taken wrongly the other way (a mask
skipped as causal, a strided weight read as a contiguous 16-byte chunk, a view copied by a
tensor map that does not describe it) moves outputs far outside the bound.

* hal.lowering.attention_causal: masks that are NOT "j <= i + c" (each would lose visible
  keys if read as one): a causal mask whose hidden scores are a finite constant (-4: they
  keep weight) instead of -inf, a sliding window's lower edge, a key-padding mask from a
  lengths input, a KV-cache offset given as an input, a chunked (block-causal) mask
  through integer division, a key index built over a size-1 axis (0: every key visible),
  and a mask on an empty query block;
* hal.lowering.attention_match: a joint softmax over each head's whole score matrix (through
  a view), which is not attention's row softmax;
* hal.lowering.tma_views: A as a transposed input, as a sequence-first activation
  [S, B, K] seen as [B*S, K], as views that split a transposed input's factor unevenly, and
  a batched A whose four batch axes are permuted (a rank-6 tensor map);
* hal.lowering.matmul_wgmma / matmul_wgmma_prologue: an elementwise A read transposed, a
  decode GEMM whose wgmma grid would leave the units idle; norm weights read through a
  slice at an aligned and an unaligned offset, with a step, as a column of a packed [K, 2]
  parameter, de-interleaved by a view, as a concat of two halves, zero-padded, and as a
  flat view of [K/4, 4] (matmul_wgmma_prologue.lane_split's proofs and refusals);
* hal.lowering.attention_loads / expr: head dimensions 5 and 33 (no vector width divides
  them; the SIMT tile loads end with a partial round of threads).
"""

from __future__ import annotations

from .cases import _Collector
from .cases_paths import _masked_attention, _probs

_INF = float("-inf")


def _mm(b, a, w, **kw):
    return b.op("matmul", a, w, **kw)


def _full(b, shape, value, dt="i32"):
    return b.op("full", shape=list(shape), value=float(value), dtype=dt)


def _masked(b, dt, s, t, d, mask, fill=_INF):
    """Attention in primitives, scores [1, 2, s, t], with `mask(b, row, col)` giving
    (predicate, keep): keep True means select(pred, scores, fill), else select(pred, fill,
    scores) (cases_paths._masked_attention)."""
    _masked_attention(b, dt, s, t, d, mask, fill)

def _masks(c: _Collector) -> None:
    """Masks attention_causal.causal_bound must leave alone (every key tile walked)."""
    def causal(b, row, col, st):             # j <= i, filled with a finite constant
        return b.op("ge", row, col), True

    def window_lower_edge(b, row, col, st):  # keep j >= i - 8: the window's lower edge
        return b.op("ge", col, b.op("sub", row, _full(b, st, 8))), True

    def from_input(b, name, st, plus):       # an i32 input in [-8, 8), plus a constant
        x = b.op("broadcast_to", b.input(name, "i32", (1, 1)), shape=list(st))
        return b.op("add", x, _full(b, st, plus))

    def key_padding(b, row, col, st):        # keep j < length (a lengths input, 52..67)
        return b.op("lt", col, from_input(b, "length", st, 60)), True

    def cache_offset(b, row, col, st):       # keep j <= i + past (past an input, 8..23)
        return b.op("le", col, b.op("add", row, from_input(b, "past", st, 16))), True

    def chunked(b, row, col, st):            # block-causal: j // 16 <= i // 16
        sixteen = _full(b, st, 16)
        return b.op("le", b.op("div", col, sixteen), b.op("div", row, sixteen)), True

    def broadcast_index(b, row, col, st):    # a key index over a size-1 axis (0): i + 8 >= 0
        zero = b.op("broadcast_to", b.op("iota", shape=[st[0], 1], dimension=1, dtype="i32"),
                    shape=list(st))
        return b.op("ge", b.op("add", row, _full(b, st, 8)), zero), True

    for label, mask, s, t, fill in (
            ("finite_fill", causal, 40, 72, -4.0),
            ("window_lower_edge", window_lower_edge, 33, 65, _INF),
            ("key_padding", key_padding, 17, 70, _INF),
            ("cache_offset", cache_offset, 24, 88, _INF),
            ("chunked", chunked, 40, 40, _INF),
            ("broadcast_index", broadcast_index, 24, 70, _INF),
            ("no_queries", causal, 0, 40, _INF)):
        for dt in ("f32", "bf16"):
            c.add("fused", "attention_masked", (dt,), f"1x2x{s}x{t}x32",
                  lambda b, _d=dt, _m=mask, _s=s, _t=t, _f=fill: _masked(
                      b, _d, _s, _t, 32, lambda bb, r, co: _m(bb, r, co, (_s, _t)), _f),
                  suffix=label, unfused=True)


def _joint_softmax(c: _Collector) -> None:
    """Scores normalised over the whole S x T matrix of each head (a joint softmax through a
    view [B, H, S*T], as matching networks normalise), then P @ V: not attention's row
    softmax, so attention_match refuses it (the logits are not the scores' rows) and the
    kernels run unfused; read as flash attention it would normalise per row."""
    def build(b):
        q, k, v = (b.input(n, "f32", (1, 2, r, 16)) for n, r in (("q", 24), ("k", 40),
                                                                  ("v", 40)))
        s = _mm(b, q, k, transpose_b=True)
        p = _probs(b, b.op("reshape", s, shape=[1, 2, 24 * 40]))
        b.output(_mm(b, b.op("reshape", p, shape=[1, 2, 24, 40]), v))
    c.add("fused", "attention_primitives", ("f32",), "1x2x24x40x16", build,
          suffix="joint_softmax", unfused=True)


def _a_views(c: _Collector) -> None:
    """A operands that are views of a group input the Hopper GEMM's tensor map (tma_views)
    cannot or can only partly describe; the mma.sync kernel (or a copy) takes them."""
    def transposed(b):                   # x^T @ w: A's K axis has stride M
        a = b.op("transpose", b.input("x", "bf16", (64, 128)), perm=[1, 0])
        b.output(_mm(b, a, b.input("w", "bf16", (64, 64))))

    def seq_first(b):                    # nn.MultiheadAttention's [S, B, E], batch-first, flat
        a = b.op("transpose", b.input("x", "bf16", (40, 2, 64)), perm=[1, 0, 2])
        b.output(_mm(b, b.op("reshape", a, shape=[80, 64]), b.input("w", "bf16", (64, 64))))

    def uneven(rows, cols, m, k):        # reshape(x^T): a view splitting a factor unevenly
        def build(b):
            a = b.op("transpose", b.input("x", "bf16", (rows, cols)), perm=[1, 0])
            b.output(_mm(b, b.op("reshape", a, shape=[m, k]), b.input("w", "bf16", (k, 64))))
        return build

    def batch_permuted(b):               # four batch axes reversed: a rank-6 tensor map
        a = b.op("transpose", b.input("x", "bf16", (2, 3, 2, 3, 64, 16)),
                 perm=[3, 2, 1, 0, 4, 5])
        b.output(_mm(b, a, b.input("w", "bf16", (3, 2, 3, 2, 16, 64))))

    for label, shape, build in (("transposed", "64x128x64", transposed),
                                ("seq_first", "40x2x64x64", seq_first),
                                ("uneven_outer", "64x3x8x24x64", uneven(64, 3, 8, 24)),
                                ("uneven_inner", "16x12x8x24x64", uneven(16, 12, 8, 24)),
                                ("batch_permuted", "3x2x3x2x64x16x64", batch_permuted)):
        c.add("fused", "matmul_a_view", ("bf16",), shape, build, suffix=label, unfused=True)


def _hopper_refusals(c: _Collector) -> None:
    """GEMMs the wgmma kernel refuses with a reason (the mma.sync kernel runs them): an
    elementwise A read transposed (the prologue's tile is not A's TMA box), and a decode
    GEMM (one row, 4.3 MB of weights) whose 16 wgmma tiles would leave most of the units
    idle where the mma.sync kernel's 64 smaller tiles stream the weight from more of them."""
    def silu_transposed(b):
        a = b.op("silu", b.input("x", "bf16", (64, 128)))
        b.output(_mm(b, a, b.input("w", "bf16", (64, 64)), transpose_a=True))
    c.add("fused", "matmul_hopper_refused", ("bf16",), "64x128x64", silu_transposed,
          suffix="silu_transposed", unfused=True)

    def decode(b):
        b.output(_mm(b, b.input("x", "bf16", (1, 2080)), b.input("w", "bf16", (2080, 1024))))
    c.add("fused", "matmul_hopper_refused", ("bf16",), "1x2080x1024", decode, suffix="decode")


def _odd_head_dims(c: _Collector) -> None:
    """Attention with an odd head dimension: no vector width divides it (element-by-element
    tile loads), and the f32 SIMT kernel's tile loads leave a partial last round of
    threads."""
    for dt, d in (("f32", 5), ("bf16", 33)):
        def build(b, _dt=dt, _d=d):
            b.output(b.op("scaled_dot_product_attention", b.input("q", _dt, (1, 2, 33, _d)),
                          b.input("k", _dt, (1, 2, 65, _d)), b.input("v", _dt, (1, 2, 65, _d)),
                          causal=False))
        c.add("fused", "attention_odd_head_dim", (dt,), f"1x2x33x65x{d}", build)


def _norm_weights(c: _Collector) -> None:
    """RMSNorm -> matmul on the Hopper GEMM (prologue rewritten in the TMA-landed tile) with
    the norm weight read through a view: the vector rewrite proves a 16-byte chunk of the
    weight contiguous and aligned (matmul_wgmma_prologue.lane_split) or loads per element."""
    k = 128

    def weight(view):
        def build(b):
            w = view(b)
            y = b.op("rms_norm", b.input("x", "bf16", (128, k)), w)
            b.output(_mm(b, y, b.input("wm", "bf16", (k, 64))))
        return build

    def sliced(start, step=1):
        def view(b):
            n = start + step * (k - 1) + 1
            return b.op("slice", b.input("wall", "bf16", (n + 8,)), starts=[start],
                        stops=[n], steps=[step], axes=[0])
        return view

    def packed_column(b):                # weight and bias packed as [K, 2]: column 0
        w = b.op("slice", b.input("wb", "bf16", (k, 2)), starts=[0, 0], stops=[k, 1],
                 steps=[1, 1], axes=[0, 1])
        return b.op("reshape", w, shape=[k])

    def interleaved(b):                  # stored as pairs [K/2, 2], de-interleaved by a view
        w = b.op("reshape", b.input("wi", "bf16", (k,)), shape=[k // 2, 2])
        return b.op("reshape", b.op("transpose", w, perm=[1, 0]), shape=[k])

    def concat(b):                       # two halves (e.g. of two checkpoints' shards)
        return b.op("concat", b.input("w1", "bf16", (k // 2,)),
                    b.input("w2", "bf16", (k // 2,)), axis=0)

    def padded(b):                       # the first 8 channels unscaled: pad by zeros
        return b.op("pad", b.input("ws", "bf16", (k - 8,)), low=[8], high=[0], value=0.0)

    def rows_of_4(b):                    # a [K/4, 4] parameter viewed flat
        return b.op("reshape", b.input("w4", "bf16", (k // 4, 4)), shape=[k])

    for label, view in (("offset8", sliced(8)), ("offset3", sliced(3)),
                        ("step2", sliced(0, 2)), ("packed_column", packed_column),
                        ("interleaved", interleaved), ("concat", concat), ("padded", padded),
                        ("rows_of_4", rows_of_4)):
        c.add("fused", "rms_norm_matmul_weight_view", ("bf16",), f"128x{k}x64",
              weight(view), suffix=label, unfused=True)


def refusal_cases(c: _Collector) -> None:
    _odd_head_dims(c)
    _masks(c)
    _joint_softmax(c)
    _a_views(c)
    _hopper_refusals(c)
    _norm_weights(c)
