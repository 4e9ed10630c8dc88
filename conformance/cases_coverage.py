"""Cases that reach the lowering paths the per-op families miss (issue 21).

Chosen by measuring the branch coverage the suite reaches in hal/lowering
(benchmarks/conformance_coverage.py), each group names what it reaches:

* norm -> matmul prologues (RMSNorm, LayerNorm fused as the A operand's
  pre-pass) with K not a multiple of any warp width (72, 100, 200) and M not a
  multiple of the block rows: the per-warp row-statistics loop's partial last
  step and the masked rows;
* decode attention (one query row, a long key axis) in every float dtype, with
  key counts that leave a partial last key tile and a partial last split-K
  chunk; the `v_plus1` inputs put outputs near 1, so a lost or an extra key
  (a mask or combine bug) moves them by a visible fraction of the bound;
* stress: the same kernels lowered for `small`, a variant of the device under
  test with two compute units and a 64 KiB L2 (cases.SPEC_VARIANTS): pointwise
  grid-stride loops iterate with a masked tail, a single long row splits into
  chunks, split-K attention fires, tiled matmuls walk several groups of row
  panels with a partial last group, and dual / sibling GEMMs run their
  segments; the code is the device's own code paths, so a hardware run checks
  them on its own chip.
"""

from __future__ import annotations

from .cases import FLOATS, NARROW, _Collector, shape_str


def _norm_matmul(b, dt, m, k, n, norm):
    x = b.input("x", dt, (m, k))
    w = b.input("w", dt, (k,))
    y = b.op(norm, x, w) if norm == "rms_norm" else b.op(norm, x, w, b.input("bb", dt, (k,)))
    b.output(b.op("matmul", y, b.input("wm", dt, (k, n))))


def _attention(b, dt, q, kv, causal, dv=None):
    vshape = kv if dv is None else (*kv[:-1], dv)
    b.output(b.op("scaled_dot_product_attention", b.input("q", dt, q), b.input("k", dt, kv),
                  b.input("v", dt, vshape), causal=causal))


def _norm_view_matmul(b, dt, bsz, s, k, n):
    """torch's shape: the norm on [B, S, K], a view to [B*S, K], then the matmul."""
    y = b.op("rms_norm", b.input("x", dt, (bsz, s, k)), b.input("w", dt, (k,)))
    y = b.op("reshape", y, shape=[bsz * s, k])
    b.output(b.op("matmul", y, b.input("wm", dt, (k, n))))


def _matmul_view_epilogue(b, dt, bsz, s, k, n):
    """torch's Linear on [B, S, K]: mm on [B*S, K], a view back to [B, S, N], residual, gelu."""
    y = b.op("matmul", b.input("x", dt, (bsz * s, k)), b.input("w", dt, (k, n)))
    y = b.op("reshape", y, shape=[bsz, s, n])
    y = b.op("add", y, b.input("r", dt, (bsz, s, n)))
    b.output(b.op("gelu", y))


def _norm_prologues(c: _Collector) -> None:
    for dt in ("f32", "bf16"):
        c.add("fused", "rms_norm_view_matmul", (dt,), "2x17x100x31",
              lambda b, _d=dt: _norm_view_matmul(b, _d, 2, 17, 100, 31), unfused=True)
        c.add("fused", "matmul_view_epilogue", (dt,), "2x17x64x40",
              lambda b, _d=dt: _matmul_view_epilogue(b, _d, 2, 17, 64, 40), unfused=True)
    for dt in NARROW:
        for m, k, n in ((33, 100, 31), (17, 72, 9), (64, 200, 48)):
            for norm in ("rms_norm", "layer_norm"):
                c.add("fused", f"{norm}_matmul", (dt,), f"{m}x{k}x{n}",
                      lambda b, _d=dt, _m=m, _k=k, _n=n, _no=norm: _norm_matmul(b, _d, _m, _k,
                                                                                _n, _no),
                      unfused=True)


DECODE = (  # (batch, q heads, kv heads, keys, head dim, label)
    (1, 4, 2, 1500, 32, "decode_t1500"),
    (1, 8, 2, 1000, 64, "decode_t1000"),
    (2, 2, 2, 777, 16, "decode_t777"),
)


def _decode_attention(c: _Collector) -> None:
    for dt in FLOATS:
        for bq, hq, hkv, t, d, label in DECODE:
            for dist in ("normal", "v_plus1"):
                if dt in NARROW and label == "decode_t1500" and dist == "normal":
                    continue  # cases._fused has it
                c.add("fused", "attention", (dt,), f"{bq}x{hq}x{hkv}x1x{d}",
                      lambda b, _d=dt, _q=(bq, hq, 1, d), _k=(bq, hkv, t, d): _attention(
                          b, _d, _q, _k, False),
                      suffix=label + ("-vplus1" if dist != "normal" else ""), dist=dist,
                      unfused=dt == "f32")
    for dt in NARROW:  # prefill with partial query and key tiles, Dv != D, more keys than rows
        c.add("fused", "attention", (dt,), "1x2x1x45x24", lambda b, _d=dt: _attention(
            b, _d, (1, 2, 45, 24), (1, 1, 70, 24), False, dv=40), suffix="t70-dv40",
            dist="v_plus1", unfused=True)


def _chain(b, dt, shape):
    x, y, z = (b.input(n, dt, shape) for n in "xyz")
    t = b.op("tanh", b.op("add", b.op("mul", x, y), z))
    b.output(b.op("sigmoid", b.op("mul", t, x)))


def _dual_gemm(b, dt, m, k, n):
    x = b.input("x", dt, (m, k))
    g = b.op("matmul", x, b.input("wg", dt, (k, n)))
    u = b.op("matmul", x, b.input("wu", dt, (k, n)))
    b.output(b.op("mul", b.op("silu", g), u))


def _siblings_qkv(b, dt, m, k, nq, nk):
    x = b.input("x", dt, (m, k))
    b.output(b.op("matmul", x, b.input("wq", dt, (k, nq))),
             b.op("matmul", x, b.input("wk", dt, (k, nk))),
             b.op("matmul", x, b.input("wv", dt, (k, nk))))


def _stress(c: _Collector) -> None:
    def add(op, dtypes, shape, build, **kw):
        c.add("stress", op, dtypes, shape, build, variant="small", **kw)

    ew = (129, 513)  # 66177 elements: the grid-stride loop iterates, with a masked tail
    s = shape_str(ew)
    for op, dt in (("add", "f32"), ("exp", "bf16"), ("mul", "f16"), ("add", "i32")):
        arity = 2 if op in ("add", "mul") else 1
        add(op, (dt,), s, lambda b, _o=op, _d=dt, _a=arity: b.output(
            b.op(_o, *[b.input(f"x{i}", _d, ew) for i in range(_a)])))
    for dt in ("f32", "bf16"):
        add("elementwise_chain", (dt,), s, lambda b, _d=dt: _chain(b, _d, ew), unfused=True)
    add("broadcast_add", ("f32",), s, lambda b: b.output(b.op(
        "add", b.input("x", "f32", ew), b.op("broadcast_to", b.input("y", "f32", (513,)),
                                             shape=list(ew)))))
    add("cast", ("f32", "bf16"), s, lambda b: b.output(b.op("cast", b.input("x", "f32", ew),
                                                            dtype="bf16")))
    add("transpose", ("f32",), s, lambda b: b.output(b.op("transpose", b.input("x", "f32", ew),
                                                          perm=[1, 0])))
    add("pad", ("f16",), s, lambda b: b.output(b.op("pad", b.input("x", "f16", ew), low=[1, 2],
                                                    high=[3, 0], value=1.0)))
    # one long row: split into chunks (the last partial); column reductions over many rows
    for op, dt in (("reduce_sum", "f32"), ("reduce_max", "bf16"), ("reduce_sum", "f16"),
                   ("argmax", "f32"), ("reduce_min", "i32")):
        kw = {"axis": 1} if op == "argmax" else {"axes": (1,)}
        add(op, (dt,), "1x20000", lambda b, _o=op, _d=dt, _kw=kw: b.output(
            b.op(_o, b.input("x", _d, (1, 20000)), **_kw)), suffix="split")
    add("reduce_sum", ("f32",), "20000x3", lambda b: b.output(
        b.op("reduce_sum", b.input("x", "f32", (20000, 3)), axes=(0,))), suffix="cols")
    add("cumsum", ("f32",), "3x2000", lambda b: b.output(
        b.op("cumsum", b.input("x", "f32", (3, 2000)), axis=0)), suffix="axis0")
    for dt in ("f32", "bf16"):
        add("softmax", (dt,), "5x3001", lambda b, _d=dt: b.output(
            b.op("softmax", b.input("x", _d, (5, 3001)), axis=-1)), unfused=True)
    # tiled matmuls with several groups of row panels (A larger than the variant's L2)
    for dt, shape in (("f32", (257, 128, 96)), ("bf16", (257, 128, 96)),
                      ("f16", (300, 96, 200)), ("f32", (520, 64, 72))):
        m, k, n = shape
        add("matmul", (dt,), f"{m}x{k}x{n}", lambda b, _d=dt, _m=m, _k=k, _n=n: b.output(
            b.op("matmul", b.input("a", _d, (_m, _k)), b.input("b", _d, (_k, _n)))))
    add("matmul", ("f32",), "2x129x64x65", lambda b: b.output(b.op(
        "matmul", b.input("a", "f32", (2, 129, 64)), b.input("b", "f32", (2, 64, 65)))),
        suffix="batch")
    for dt in ("f32", "bf16"):
        add("rms_norm_matmul", (dt,), "257x100x96", lambda b, _d=dt: _norm_matmul(
            b, _d, 257, 100, 96, "rms_norm"), unfused=True)
        add("dual_gemm", (dt,), "257x64x96", lambda b, _d=dt: _dual_gemm(b, _d, 257, 64, 96),
            unfused=True)
        add("sibling_qkv", (dt,), "200x64x96x32", lambda b, _d=dt: _siblings_qkv(
            b, _d, 200, 64, 96, 32), unfused=True)
    # split-K attention: one head, so the grid cannot fill even two units
    for dt in ("f32", "f16", "bf16"):
        add("attention", (dt,), "1x1x1x1x32", lambda b, _d=dt: _attention(
            b, _d, (1, 1, 1, 32), (1, 1, 1500, 32), False), suffix="decode_t1500-vplus1",
            dist="v_plus1")
    add("attention", ("f32",), "1x2x2x130x32", lambda b: _attention(
        b, "f32", (1, 2, 130, 32), (1, 2, 130, 32), True), suffix="causal", unfused=True)


def _activations(c: _Collector) -> None:
    """The activation composites on their own and as a matmul epilogue: their direct
    formulas (direct_reference) check the decomposition's constants."""
    for dt in (*NARROW, "f64"):
        for shape in ((33, 257), (4, 4097), (257,)):
            for name, attrs in (("gelu_tanh", {"approximate": "tanh"}), ("gelu", {}),
                                ("silu", {})):
                op = name.split("_")[0]
                c.add("fused", name, (dt,), shape_str(shape), lambda b, _o=op, _a=attrs,
                      _d=dt, _s=shape: b.output(b.op(_o, b.input("x", _d, _s), **_a)),
                      unfused=True)
        for m, k, n in ((33, 65, 31), (64, 128, 96)) if dt in NARROW else ():
            def mm(b, _d=dt, _m=m, _k=k, _n=n):
                y = b.op("matmul", b.input("x", _d, (_m, _k)), b.input("w", _d, (_k, _n)))
                y = b.op("add", y, b.op("broadcast_to", b.input("bias", _d, (_n,)),
                                        shape=[_m, _n]))
                b.output(b.op("gelu", y, approximate="tanh"))
            c.add("fused", "matmul_bias_gelu_tanh", (dt,), f"{m}x{k}x{n}", mm, unfused=True)


def _long_rows(c: _Collector) -> None:
    """Two rows longer than an H100's shared memory holds: the planner splits the
    normalisations' reductions over many blocks (split partial / final kernels)."""
    for op in ("softmax", "layer_norm"):
        def build(b, _o=op):
            x = b.input("x", "f32", (2, 60000))
            if _o == "softmax":
                b.output(b.op("softmax", x, axis=-1))
            else:
                b.output(b.op("layer_norm", x, b.input("w", "f32", (60000,)),
                              b.input("b", "f32", (60000,))))
        c.add("fused", op, ("f32",), "2x60000", build, suffix="long_split")


def _variants(c: _Collector) -> None:
    """Kernels on `folded` (grid y, z limited to 3 and 2: every grid folds into x) and
    `wide_index` (64-bit index arithmetic) variants of the device under test."""
    for dt in ("f32", "bf16"):
        c.add("stress", "matmul", (dt,), "4x33x16x20", lambda b, _d=dt: b.output(b.op(
            "matmul", b.input("a", _d, (4, 33, 16)), b.input("b", _d, (4, 16, 20)))),
            suffix="batch-folded", variant="folded")
    c.add("stress", "matmul", ("f32",), "3x70x16x80", lambda b: b.output(b.op(
        "matmul", b.input("a", "f32", (3, 70, 16)), b.input("b", "f32", (3, 16, 80)))),
        suffix="batch-folded", variant="folded")
    for q, kv, causal, label in (((2, 4, 33, 16), (2, 2, 33, 16), True, "causal-folded"),
                                 ((1, 4, 1, 32), (1, 2, 1500, 32), False, "decode_t1500-folded"),
                                 ((1, 2, 70, 16), (1, 2, 70, 16), False, "folded")):
        c.add("stress", "attention", ("f32",), "x".join(map(str, (*q[:2], kv[1], q[2], q[3]))),
              lambda b, _q=q, _k=kv, _c=causal: _attention(b, "f32", _q, _k, _c),
              suffix=label, variant="folded", dist="v_plus1")
    c.add("stress", "cumsum", ("f32",), "5x33x7", lambda b: b.output(b.op(
        "cumsum", b.input("x", "f32", (5, 33, 7)), axis=1)), suffix="axis1-folded",
        variant="folded")
    for op, dt, shape, build in (
        ("add", "f32", (33, 257), lambda b: b.output(b.op(
            "add", b.input("x", "f32", (33, 257)), b.input("y", "f32", (33, 257))))),
        ("transpose_add", "bf16", (5, 33, 65), lambda b: b.output(b.op(
            "add", b.op("transpose", b.input("x", "bf16", (5, 33, 65)), perm=[2, 0, 1]),
            b.input("y", "bf16", (65, 5, 33))))),
        ("reduce_sum", "f32", (33, 257), lambda b: b.output(b.op(
            "reduce_sum", b.input("x", "f32", (33, 257)), axes=(1,)))),
        ("matmul", "f32", (33, 65, 31), lambda b: b.output(b.op(
            "matmul", b.input("a", "f32", (33, 65)), b.input("b", "f32", (65, 31))))),
        ("softmax", "f32", (33, 257), lambda b: b.output(b.op(
            "softmax", b.input("x", "f32", (33, 257)), axis=-1))),
        ("cumsum", "f32", (257, 33), lambda b: b.output(b.op(
            "cumsum", b.input("x", "f32", (257, 33)), axis=0, reverse=True))),
    ):
        c.add("stress", op, (dt,), shape_str(shape), build, suffix="i64", variant="wide_index")
    c.add("stress", "attention", ("f32",), "1x2x2x33x32", lambda b: _attention(
        b, "f32", (1, 2, 33, 32), (1, 2, 33, 32), True), suffix="causal-i64",
        variant="wide_index")


def _scores_softmax_pv(b, dt, q, kv, *, naive=False, recip=False, pscale=False, axis=-1,
                       qnorm=False):
    """Attention written out in primitives, with one departure from the pattern the fused
    attention kernel matches; the planner must refuse to fuse it as attention and the
    result must still be right."""
    def const(v, shape):
        return b.op("broadcast_to", b.op("full", shape=(), value=v, dtype=dt), shape=shape)

    qv, kvv, vv = b.input("q", dt, q), b.input("k", dt, kv), b.input("v", dt, kv)
    if qnorm:
        qv = b.op("rms_norm", qv, b.input("wq", dt, (q[-1],)))
    s = b.op("matmul", qv, kvv, transpose_b=True)
    shape = list(s.shape)
    s = b.op("mul", s, const(1.0 / q[-1] ** 0.5, shape))
    red = shape[:]
    red[axis] = 1
    if naive:
        e = b.op("exp", s)
    else:
        m = b.op("reduce_max", s, axes=(axis % len(shape),), keepdims=True)
        e = b.op("exp", b.op("sub", s, b.op("broadcast_to", m, shape=shape)))
    z = b.op("broadcast_to", b.op("reduce_sum", e, axes=(axis % len(shape),), keepdims=True),
             shape=shape)
    p = b.op("mul", e, b.op("reciprocal", z)) if recip else b.op("div", e, z)
    if pscale:
        p = b.op("mul", p, const(0.9, shape))
    b.output(b.op("matmul", p, vv))


NEAR_ATTENTION = {  # label -> the departure from the fused attention pattern
    "naive_exp": {"naive": True}, "reciprocal": {"recip": True},
    "scaled_p": {"pscale": True}, "query_axis": {"axis": -2}, "qk_norm": {"qnorm": True},
}


def _near_attention(c: _Collector) -> None:
    for label, kw in NEAR_ATTENTION.items():
        for dt in ("f32", "bf16"):
            c.add("fused", "attention_primitives", (dt,), "1x2x33x16", lambda b, _d=dt,
                  _kw=kw: _scores_softmax_pv(b, _d, (1, 2, 33, 16), (1, 2, 33, 16), **_kw),
                  suffix=label, unfused=True)


def _edges(c: _Collector) -> None:
    """Edge shapes the per-op families miss: empty rows, rows filling whole blocks, a pad on
    one axis only, value names that are not C identifiers, attention with no query rows."""
    c.add("reduction", "reduce_sum", ("f32",), "0x5", lambda b: b.output(b.op(
        "reduce_sum", b.input("x", "f32", (0, 5)), axes=(1,))), suffix="no_rows")
    c.add("scan", "cumsum", ("f32",), "0x5", lambda b: b.output(b.op(
        "cumsum", b.input("x", "f32", (0, 5)), axis=1)), suffix="no_rows")
    # one thread per row (column reductions, cumsum) with no partial last block
    c.add("reduction", "reduce_sum", ("f32",), "5x1024", lambda b: b.output(b.op(
        "reduce_sum", b.input("x", "f32", (5, 1024)), axes=(0,))), suffix="cols_whole_blocks")
    c.add("scan", "cumsum", ("f32",), "1024x5", lambda b: b.output(b.op(
        "cumsum", b.input("x", "f32", (1024, 5)), axis=1)), suffix="rows_whole_blocks")
    c.add("movement", "pad", ("f32",), "33x31", lambda b: b.output(b.op(
        "pad", b.input("x", "f32", (33, 31)), low=[0, 2], high=[0, 1], value=-1.0)),
        suffix="one_axis")
    c.add("layout", "names", ("f32",), "33x65", lambda b: b.output(b.op(
        "mul", b.input("int", "f32", (33, 65)), b.input("2x", "f32", (33, 65)))))
    c.add("fused", "attention", ("f32",), "1x2x2x0x16", lambda b: _attention(
        b, "f32", (1, 2, 0, 16), (1, 2, 9, 16), False), suffix="no_queries")


def coverage_cases(c: _Collector) -> None:
    _activations(c)
    _long_rows(c)
    _norm_prologues(c)
    _decode_attention(c)
    _stress(c)
    _variants(c)
    _near_attention(c)
    _edges(c)
