"""Conformance cases, generated from the op registry (plus fused patterns and models).

A `Case` has a stable id (`elementwise/exp/bf16/33x257`), capability tags
(dtypes, `needs:fp8`, `needs:f64`, `kind:...`), an input distribution and a
builder that makes its graph on demand. `all_cases()` is deterministic: worker
processes regenerate it and look cases up by id.

Families (ids start with the family):
* elementwise / reduction / contraction / movement / gather / scan / source:
  every primitive x every dtype it accepts x shapes at tile edges (31, 33,
  257, 1025), size-1 and size-0 dims, long rows (16k), 3-D middle axes;
* cast: every (from, to) dtype pair;
* special: inf / nan / -0.0 / subnormals through every float op;
* overflow: values near the dtype's largest finite magnitude;
* layout: broadcasting and permuted strides (transpose feeding elementwise);
* fused: elementwise chains, softmax / layer_norm / rms_norm (composite and
  hand-written primitives), matmul + bias + activation, sibling outputs,
  attention (scaled_dot_product_attention, causal and grouped-query);
* model: examples/mlp.hal, tiny_gpt, small GPT and Llama blocks;
* stress: cases run on a small variant of the device under test (`variant`,
  SPEC_VARIANTS: two compute units and a 64 KiB L2, the same warp width,
  shared memory and registers), so grid-stride loops, split reductions,
  split-K attention and multi-group matmul rasters run on small tensors; other
  variants fold the grid, use 64-bit indices, 2 or 12 KiB of shared memory,
  the other warp width, 24 registers per thread, TF32 granted or no TMA;
* canary: cases built to fail just outside the correct bound (`defect`,
  hal.conformance.canaries): the device's output is perturbed by a defect the
  error model must reject, so a loosened tolerance is caught.
Coverage cases (partial split chunks, norm->matmul prologues with K not a
multiple of the warp, decode attention in every dtype) live in cases_coverage;
cases reaching the planner's refusals and the variants' paths in cases_paths.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from hal.dtypes import DTYPES, DType, cast
from hal.ir import GraphBuilder
from hal.ir.graph import Graph
from hal.ops import OPS, Category

from .spec_variants import SPEC_VARIANTS, case_spec, register_spec_variant  # noqa: F401

FLOATS = ("f32", "f16", "bf16", "f64", "f8e4m3fn", "f8e5m2")
NARROW = ("f32", "f16", "bf16")
EW_SHAPES: tuple[tuple[int, ...], ...] = ((33, 257), (257,), (31,), (1,), (0, 5), (3, 1, 65))
DTYPE_TAGS = {"f8e4m3fn": "needs:fp8", "f8e5m2": "needs:fp8", "f64": "needs:f64"}


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    op: str
    dtypes: tuple[str, ...]
    shape: str
    build: Callable[[], Graph] = field(compare=False, repr=False)
    dist: str = "normal"
    seed: int = 0
    unfused: bool = False       # also compare fuse=True against fuse=False
    tags: frozenset[str] = frozenset()
    variant: str = ""           # run on SPEC_VARIANTS[variant](spec) instead of the spec
    defect: str = ""            # canary: canaries.DEFECTS[defect] must be rejected

    def graph(self) -> Graph:
        return self.build()


def shape_str(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape) if shape else "scalar"


def _tags(kind: str, dtypes: Sequence[str]) -> frozenset[str]:
    t = {f"kind:{kind}"} | {f"dtype:{d}" for d in dtypes}
    t |= {DTYPE_TAGS[d] for d in dtypes if d in DTYPE_TAGS}
    return frozenset(t)


def _seed(case_id: str) -> int:
    return int.from_bytes(case_id.encode()[-8:].rjust(8, b"\0"), "little") % (2**31) ^ \
        (len(case_id) * 7919)


class _Collector:
    def __init__(self) -> None:
        self.cases: dict[str, Case] = {}

    def add(self, kind: str, op: str, dtypes: Sequence[str], shape: str,
            build: Callable[[GraphBuilder], None], *, dist: str = "normal", suffix: str = "",
            unfused: bool = False, family: str | None = None, variant: str = "",
            defect: str = "") -> None:
        fam = family or kind
        cid = "/".join(p for p in (fam, op, "-".join(dict.fromkeys(dtypes)), shape, suffix) if p)
        if cid in self.cases:
            raise ValueError(f"duplicate case id {cid}")

        def make(_b=build, _cid=cid) -> Graph:
            b = GraphBuilder(_cid.replace("/", "_").replace("-", "_").replace(".", "_"))
            _b(b)
            return b.build()

        self.cases[cid] = Case(cid, kind, op, tuple(dtypes), shape, make, dist, _seed(cid),
                               unfused, _tags(fam, dtypes), variant, defect)


# --------------------------------------------------------------------------- primitives

def _elementwise(c: _Collector) -> None:
    for name, op in sorted(OPS.items()):
        if op.category is not Category.ELEMENTWISE or name in ("cast", "select") or \
                name.startswith("_"):
            continue
        arity = len(op.inputs)
        for dt in op.dtypes:
            for shape in EW_SHAPES:
                def build(b, _n=name, _dt=dt, _s=shape, _a=arity):
                    b.output(b.op(_n, *[b.input(f"x{i}", _dt, _s) for i in range(_a)]))
                c.add("elementwise", name, (dt,), shape_str(shape), build)
            if dt in FLOATS:
                for dist, fam in (("special", "special"), ("overflow", "overflow")):
                    def build(b, _n=name, _dt=dt, _a=arity):
                        b.output(b.op(_n, *[b.input(f"x{i}", _dt, (16, 33)) for i in range(_a)]))
                    c.add("elementwise", name, (dt,), "16x33", build, dist=dist, family=fam)
    for dt in DTYPES:
        for shape in ((33, 257), (0, 5), (1,)):
            def build(b, _dt=dt, _s=shape):
                b.output(b.op("select", b.input("p", "bool", _s), b.input("x", _dt, _s),
                              b.input("y", _dt, _s)))
            c.add("elementwise", "select", (dt,), shape_str(shape), build)
        for to in DTYPES:
            for shape, dist, fam in (((33, 257), "normal", "cast"), ((16, 33), "special",
                                                                     "special"),
                                     ((16, 33), "overflow", "overflow")):
                if fam != "cast" and dt not in FLOATS:
                    continue
                def build(b, _dt=dt, _to=to, _s=shape):
                    b.output(b.op("cast", b.input("x", _dt, _s), dtype=_to))
                c.add("elementwise", "cast", (dt, to), shape_str(shape), build, dist=dist,
                      family=fam)
            if dt in ("f32", "f64", "f16") and to in ("bf16", "f16", "f8e4m3fn", "f8e5m2") \
                    and to != dt:  # round-half-even on real ties
                def build(b, _dt=dt, _to=to):
                    b.output(b.op("cast", b.input("x", _dt, (33, 257)), dtype=_to))
                c.add("elementwise", "cast", (dt, to), "33x257", build, dist="ties",
                      family="cast", suffix="ties")


RED_SHAPES = (  # (shape, axes, keepdims, label)
    ((33, 257), (1,), False, "rows"),
    ((257, 33), (0,), False, "cols"),
    ((2, 16384), (1,), False, "long"),
    ((5, 33, 7), (1,), True, "middle_keep"),
    ((31, 33), None, False, "all"),
    ((1, 1), (1,), False, "size1"),
    ((4, 1025), (1,), False, "rows1025"),
    ((2, 20000), (1,), False, "long_partial"),  # split: the last chunk is partial
)


def _reductions(c: _Collector) -> None:
    for name in ("reduce_sum", "reduce_prod", "reduce_max", "reduce_min", "reduce_any",
                 "reduce_all"):
        for dt in OPS[name].dtypes:
            for shape, axes, keep, label in RED_SHAPES:
                if name == "reduce_prod" and label.startswith("long"):
                    continue
                def build(b, _n=name, _dt=dt, _s=shape, _a=axes, _k=keep):
                    b.output(b.op(_n, b.input("x", _dt, _s), axes=_a, keepdims=_k))
                dist = "positive" if name == "reduce_prod" else "normal"
                c.add("reduction", name, (dt,), shape_str(shape), build, suffix=label, dist=dist)
            if name in ("reduce_sum", "reduce_any", "reduce_all"):
                def build(b, _n=name, _dt=dt):
                    b.output(b.op(_n, b.input("x", _dt, (3, 0)), axes=(1,)))
                c.add("reduction", name, (dt,), "3x0", build, suffix="empty")
            if dt in FLOATS and name in ("reduce_sum", "reduce_max", "reduce_min"):
                def build(b, _n=name, _dt=dt):
                    b.output(b.op(_n, b.input("x", _dt, (16, 33)), axes=(1,)))
                c.add("reduction", name, (dt,), "16x33", build, dist="special",
                      family="special")
    for name in ("argmax", "argmin"):
        for dt in OPS[name].dtypes:
            for shape, axis in (((33, 257), 1), ((257, 33), 0), ((1, 1), 1)):
                def build(b, _n=name, _dt=dt, _s=shape, _ax=axis):
                    b.output(b.op(_n, b.input("x", _dt, _s), axis=_ax))
                c.add("reduction", name, (dt,), shape_str(shape), build, suffix=f"axis{axis}")


MM_SHAPES = (  # (m, k, n, batch, ta, tb, label)
    (33, 65, 31, (), False, False, ""),
    (1, 1, 1, (), False, False, ""),
    (64, 64, 64, (), False, False, ""),
    (17, 1025, 9, (), False, False, "longk"),
    (33, 65, 31, (), True, True, "tt"),
    (17, 33, 9, (2,), False, True, "batch"),
    (0, 5, 3, (), False, False, ""),
    # issue 15: shapes TMA can feed (16-byte rows): the sm_90a wgmma kernel with two consumer
    # warpgroups, a K-major B (fp8 too) and tile edges in M, N and K; a batch with an N-major B
    (200, 144, 72, (), False, True, "kmajor"),
    (96, 64, 128, (2,), False, False, "batch"),
    # issue 15 part B: 2-CTA clusters multicasting B (an even row-tile count); five k tiles
    # of bf16 for four stages, so a stage is refilled while the peer may still read it
    (256, 320, 136, (), False, True, "cluster"),
    (256, 320, 128, (2,), False, False, "cluster"),
)


def _contractions(c: _Collector) -> None:
    for dt in OPS["matmul"].dtypes:
        for m, k, n, batch, ta, tb, label in MM_SHAPES:
            sa = (*batch, *((k, m) if ta else (m, k)))
            sb = (*batch, *((n, k) if tb else (k, n)))
            def build(b, _dt=dt, _sa=sa, _sb=sb, _ta=ta, _tb=tb):
                b.output(b.op("matmul", b.input("a", _dt, _sa), b.input("b", _dt, _sb),
                              transpose_a=_ta, transpose_b=_tb))
            c.add("contraction", "matmul", (dt,), f"{m}x{k}x{n}", build,
                  suffix="-".join(p for p in (label, "b" + shape_str(batch) if batch else "")
                                  if p))
        def build(b, _dt=dt):
            b.output(b.op("dot_general", b.input("a", _dt, (3, 45, 37)),
                          b.input("b", _dt, (3, 29, 45)), lhs_contracting=[1],
                          rhs_contracting=[2], lhs_batch=[0], rhs_batch=[0]))
        c.add("contraction", "dot_general", (dt,), "3x45x37", build)
    for dt in ("f16", "bf16", "f8e4m3fn"):
        def build(b, _dt=dt):
            b.output(b.op("matmul", b.input("a", _dt, (33, 257)), b.input("b", _dt, (257, 31)),
                          out_dtype="f32"))
        c.add("contraction", "matmul", (dt, "f32"), "33x257x31", build, suffix="out_f32")


def _movement(c: _Collector) -> None:
    for dt in DTYPES:
        specs: list[tuple[str, str, Callable]] = [
            ("broadcast_to", "33x1", lambda b, d: b.op("broadcast_to", b.input("x", d, (33, 1)),
                                                       shape=[3, 33, 257])),
            ("broadcast_to", "257", lambda b, d: b.op("broadcast_to", b.input("x", d, (257,)),
                                                      shape=[33, 257])),
            ("reshape", "33x257", lambda b, d: b.op("reshape", b.input("x", d, (33, 257)),
                                                    shape=[257, 33])),
            ("transpose", "33x257", lambda b, d: b.op("transpose", b.input("x", d, (33, 257)),
                                                      perm=[1, 0])),
            ("transpose", "5x33x65", lambda b, d: b.op("transpose", b.input("x", d, (5, 33, 65)),
                                                       perm=[2, 0, 1])),
            ("slice", "33x257", lambda b, d: b.op("slice", b.input("x", d, (33, 257)),
                                                  starts=[1, 3], stops=[32, 250], steps=[2, 3])),
            ("pad", "33x31", lambda b, d: b.op("pad", b.input("x", d, (33, 31)), low=[1, 2],
                                               high=[3, 0], value=1.0)),
            ("concat", "33x31", lambda b, d: b.op("concat", b.input("x", d, (33, 31)),
                                                  b.input("y", d, (33, 7)), axis=1)),
            ("concat", "0x7", lambda b, d: b.op("concat", b.input("x", d, (0, 7)),
                                                b.input("y", d, (5, 7)), axis=0)),
        ]
        for name, shape, fn in specs:
            c.add("movement", name, (dt,), shape, lambda b, _f=fn, _d=dt: b.output(_f(b, _d)))
        for name, shape, fn in (
            ("gather", "33x65", lambda b, d: b.op("gather", b.input("t", d, (33, 65)),
                                                  b.input("i", "i32", (3, 7)), axis=0)),
            ("take_along_axis", "33x65", lambda b, d: b.op(
                "take_along_axis", b.input("t", d, (33, 65)), b.input("i", "i32", (33, 6)),
                axis=1)),
        ):
            c.add("gather", name, (dt,), shape, lambda b, _f=fn, _d=dt: b.output(_f(b, _d)))
        if dt != "bool":
            c.add("source", "iota", (dt,), "33x257", lambda b, _d=dt: b.output(
                b.op("iota", shape=[33, 257], dimension=1, dtype=_d)))
        c.add("source", "full", (dt,), "33x257", lambda b, _d=dt: b.output(
            b.op("full", shape=[33, 257], value=2.5, dtype=_d)))
    for dt in OPS["cumsum"].dtypes:
        for shape, axis, rev, exc in (((33, 257), 1, False, False), ((257, 33), 0, True, False),
                                      ((4, 1025), 1, False, True)):
            def build(b, _dt=dt, _s=shape, _ax=axis, _r=rev, _e=exc):
                b.output(b.op("cumsum", b.input("x", _dt, _s), axis=_ax, reverse=_r,
                              exclusive=_e))
            c.add("scan", "cumsum", (dt,), shape_str(shape), build,
                  suffix=f"axis{axis}" + ("-rev" if rev else "") + ("-excl" if exc else ""))


# --------------------------------------------------------------------------- patterns

def _layout(c: _Collector) -> None:
    for dt in ("f32", "f16", "bf16", "i32"):
        def bias_row(b, _dt=dt):
            x = b.input("x", _dt, (33, 257))
            b.output(b.op("add", x, b.op("broadcast_to", b.input("y", _dt, (257,)),
                                         shape=[33, 257])))
        c.add("layout", "broadcast_add", (dt,), "33x257", bias_row, suffix="row", unfused=True)

        def bias_col(b, _dt=dt):
            x = b.input("x", _dt, (33, 257))
            b.output(b.op("mul", x, b.op("broadcast_to", b.input("y", _dt, (33, 1)),
                                         shape=[33, 257])))
        c.add("layout", "broadcast_mul", (dt,), "33x257", bias_col, suffix="col", unfused=True)
        for perm in ((1, 0, 2), (2, 0, 1), (0, 2, 1)):
            def tr(b, _dt=dt, _p=perm):
                x = b.input("x", _dt, (5, 33, 65))
                t = b.op("transpose", x, perm=_p)
                y = b.input("y", _dt, tuple(t.shape))
                b.output(b.op("add", t, y))
            c.add("layout", "transpose_add", (dt,), "5x33x65", tr,
                  suffix="perm" + "".join(map(str, perm)), unfused=True)


def _softmax_prims(b, x):
    m = b.op("reduce_max", x, axes=(1,), keepdims=True)
    e = b.op("exp", b.op("sub", x, b.op("broadcast_to", m, shape=list(x.shape))))
    s = b.op("reduce_sum", e, axes=(1,), keepdims=True)
    return b.op("div", e, b.op("broadcast_to", s, shape=list(x.shape)))


def _fused(c: _Collector) -> None:
    for dt in NARROW:
        for shape in ((33, 257), (4, 4097), (7, 31), (1, 1)):
            s = shape_str(shape)

            def chain(b, _dt=dt, _s=shape):
                x, y, z = (b.input(n, _dt, _s) for n in "xyz")
                t = b.op("tanh", b.op("add", b.op("mul", x, y), z))
                b.output(b.op("sigmoid", b.op("mul", t, x)))
            c.add("fused", "elementwise_chain", (dt,), s, chain, unfused=True)
            for comp in ("softmax", "log_softmax"):
                c.add("fused", comp, (dt,), s, lambda b, _c=comp, _dt=dt, _s=shape: b.output(
                    b.op(_c, b.input("x", _dt, _s), axis=-1)), unfused=True)
            c.add("fused", "softmax_primitives", (dt,), s, lambda b, _dt=dt, _s=shape: b.output(
                _softmax_prims(b, b.input("x", _dt, _s))), unfused=True)
            c.add("fused", "layer_norm", (dt,), s, lambda b, _dt=dt, _s=shape: b.output(b.op(
                "layer_norm", b.input("x", _dt, _s), b.input("w", _dt, (_s[-1],)),
                b.input("b", _dt, (_s[-1],)))), unfused=True)
            c.add("fused", "rms_norm", (dt,), s, lambda b, _dt=dt, _s=shape: b.output(b.op(
                "rms_norm", b.input("x", _dt, _s), b.input("w", _dt, (_s[-1],)))),
                unfused=True)

            def siblings(b, _dt=dt, _s=shape):
                x = b.input("x", _dt, _s)
                b.output(b.op("reduce_sum", x, axes=(1,)), b.op("reduce_max", x, axes=(1,)),
                         b.op("exp", x), b.op("sin", x))
            c.add("fused", "siblings", (dt,), s, siblings, unfused=True)
        # bf16 also at 256x320x128: the Hopper GEMM's 2-CTA cluster with an epilogue, five k
        # tiles over a four-stage ring (the self-test's cluster faults need stage reuse)
        more = ((256, 320, 128),) if dt == "bf16" else ()
        for m, k, n in ((33, 65, 31), (64, 128, 96), (1, 17, 5), *more):
            for act in ("gelu", "silu", "relu"):
                def mm(b, _dt=dt, _m=m, _k=k, _n=n, _act=act):
                    y = b.op("matmul", b.input("x", _dt, (_m, _k)), b.input("w", _dt, (_k, _n)))
                    y = b.op("add", y, b.op("broadcast_to", b.input("bias", _dt, (_n,)),
                                            shape=[_m, _n]))
                    if _act == "relu":
                        zero = b.op("broadcast_to", b.op("full", shape=(), value=0.0, dtype=_dt),
                                    shape=[_m, _n])
                        b.output(b.op("maximum", y, zero))
                    else:
                        b.output(b.op(_act, y))
                c.add("fused", "matmul_bias_" + act, (dt,), f"{m}x{k}x{n}", mm, unfused=True)
        for (bq, hq, hkv, sq, skv, d), causal in (((1, 2, 2, 17, 17, 16), True),
                                                 ((1, 2, 2, 33, 33, 32), False),
                                                 ((2, 4, 2, 9, 9, 16), True),
                                                 ((1, 4, 2, 1, 1500, 32), False)):
            def att(b, _dt=dt, _q=(bq, hq, sq, d), _k=(bq, hkv, skv, d), _c=causal):
                b.output(b.op("scaled_dot_product_attention", b.input("q", _dt, _q),
                              b.input("k", _dt, _k), b.input("v", _dt, _k), causal=_c))
            # The last shape is a decode step (one query row, 1500 keys): split-K.
            suffix = "causal" if causal else (f"decode_t{skv}" if sq == 1 else "")
            c.add("fused", "attention", (dt,), f"{bq}x{hq}x{hkv}x{sq}x{d}", att,
                  suffix=suffix, unfused=True)
        # causal key-tile skipping (hal.lowering.attention_causal): query and key tiles
        # ending exactly on the diagonal (128 = a whole number of 64- and 128-row tiles),
        # and S != T both ways (the composite's convention: key j visible iff j <= i)
        for (bq, hq, hkv, sq, skv, d), suffix in (
                ((1, 2, 2, 128, 128, 32), "causal-tile-boundary"),
                ((1, 4, 2, 40, 130, 16), "causal-t130"),
                ((1, 2, 1, 130, 40, 16), "causal-t40")) if dt in ("f32", "bf16") else ():
            def catt(b, _dt=dt, _q=(bq, hq, sq, d), _k=(bq, hkv, skv, d)):
                b.output(b.op("scaled_dot_product_attention", b.input("q", _dt, _q),
                              b.input("k", _dt, _k), b.input("v", _dt, _k), causal=True))
            c.add("fused", "attention", (dt,), f"{bq}x{hq}x{hkv}x{sq}x{d}", catt, suffix=suffix)
        if dt in ("f16", "bf16"):
            # a short prefill over many keys: split-K, on the matrix unit where the cost
            # model says the contractions bound it (hal.lowering.attention_mma_split)
            c.add("fused", "attention", (dt,), "1x4x1x4x64", lambda b, _dt=dt: b.output(b.op(
                "scaled_dot_product_attention", b.input("q", _dt, (1, 4, 4, 64)),
                b.input("k", _dt, (1, 1, 4096, 64)), b.input("v", _dt, (1, 1, 4096, 64)))),
                suffix="split_t4096")


def _models(c: _Collector) -> None:
    from hal.examples import build as ex

    def from_graph(make):
        def build(b, _m=make):
            b.graph = _m()
        return build

    def load(name):
        from pathlib import Path

        from hal.ir.text import load_graph

        path = Path(__file__).resolve().parent.parent / "examples" / f"{name}.hal"
        return load_graph(path) if path.exists() else ex.EXAMPLES[name]()

    c.add("model", "mlp", ("f32",), "8x64", from_graph(lambda: load("mlp")), unfused=True)
    c.add("model", "tiny_gpt", ("f32",), "s32", from_graph(lambda: load("tiny_gpt")))
    c.add("model", "gpt_block", ("f32",), "d64-s16", from_graph(
        lambda: ex.make_gpt_block(64, 16)), unfused=True)
    c.add("model", "gpt_block", ("bf16",), "d64-s16", from_graph(
        lambda: ex.make_gpt_block(64, 16, "bf16")))
    c.add("model", "llama_block", ("bf16",), "d128-s16", from_graph(
        lambda: ex.make_llama_block(128, 16, heads=4, kv_heads=2, ffn=256)), unfused=True)
    c.add("model", "llama_block", ("f32",), "d128-s16", from_graph(
        lambda: ex.make_llama_block(128, 16, "f32", heads=4, kv_heads=2, ffn=256)))


def _more(c: _Collector) -> None:
    from .canaries import canary_cases
    from .cases_coverage import coverage_cases
    from .cases_paths import path_cases
    from .cases_refusals import refusal_cases

    coverage_cases(c)
    path_cases(c)
    refusal_cases(c)
    canary_cases(c)


GENERATORS: list[Callable[[_Collector], None]] = [
    _elementwise, _reductions, _contractions, _movement, _layout, _fused, _models, _more]


@functools.cache
def _all() -> dict[str, Case]:
    c = _Collector()
    for gen in GENERATORS:
        gen(c)
    return c.cases


def all_cases() -> list[Case]:
    """Every case, in a stable order."""
    return list(_all().values())


def get_case(case_id: str) -> Case:
    """The case with this id (random graph ids `random/s<seed>/<i>` are regenerated)."""
    from .random_graphs import parse_random_id, random_case

    rid = parse_random_id(case_id)
    if rid is not None:
        return random_case(*rid)
    try:
        return _all()[case_id]
    except KeyError:
        from hal.errors import HalError

        raise HalError(f"no conformance case '{case_id}'",
                       hint="list them with `hal conformance --list`") from None


def select(pattern: str | None = None) -> list[Case]:
    """Cases whose id contains every space-separated word of `pattern` (`-k`), or
    matches it as a glob when it has * or ?."""
    import fnmatch

    cases = all_cases()
    if not pattern:
        return cases
    if any(ch in pattern for ch in "*?["):
        return [c for c in cases if fnmatch.fnmatchcase(c.id, pattern)]
    words = pattern.split()
    return [c for c in cases if all(w in c.id for w in words)]


# --------------------------------------------------------------------------- inputs

def _specials(dt: DType, n: int, rng) -> np.ndarray:
    vals = [np.inf if dt.has_inf else dt.max, -np.inf if dt.has_inf else dt.min, np.nan,
            -0.0, 0.0, dt.tiny, -dt.tiny, dt.tiny / 4, dt.max, dt.min, 1.0, -1.0, 0.5]
    pick = rng.integers(0, len(vals) + 4, size=n)
    normal = rng.standard_normal(n)
    return np.where(pick < len(vals), np.take(np.array(vals, dtype=np.float64),
                                              np.minimum(pick, len(vals) - 1)), normal)


def _overflow(dt: DType, n: int, rng) -> np.ndarray:
    big = dt.max * rng.uniform(0.25, 1.0, n) * rng.choice([-1.0, 1.0], n)
    return np.where(rng.random(n) < 0.5, big, rng.standard_normal(n) * 4)


def _index_ranges(graph: Graph) -> dict[str, int]:
    out: dict[str, int] = {}
    inputs = {v.name for v in graph.inputs}
    for n in graph.nodes:
        if n.op in ("gather", "take_along_axis") and n.inputs[1].name in inputs:
            t = n.inputs[0]
            out[n.inputs[1].name] = int(t.shape[n.attrs.get("axis", 0) % t.rank])
    return out


def make_inputs(graph: Graph, dist: str = "normal", seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs: `normal` N(0,1), `positive` U(0.5, 1.5), `v_plus1` (N(0,1), input
    %v N(1,1)), `ties` (few significant bits: ties when rounded to bf16, f16, fp8),
    `special` (inf, nan, -0,
    subnormals, max), `overflow` (near +-max); ints in [-8, 8), indices in range."""
    rng = np.random.default_rng(seed)
    idx = _index_ranges(graph)
    out: dict[str, np.ndarray] = {}
    for v in graph.inputs:
        shape, dt = tuple(v.shape), v.dtype
        n = math.prod(shape)
        if v.name in idx:
            a = rng.integers(0, max(idx[v.name], 1), size=n)
        elif dt.is_bool:
            a = rng.integers(0, 2, size=n).astype(bool)
        elif dt.is_int:
            lo = 0 if dt.kind == "uint" else -8
            a = rng.integers(lo, 8, size=n)
            if dist == "overflow":
                a = np.where(rng.random(n) < 0.5, rng.integers(dt.min, dt.max, size=n,
                                                               dtype=np.int64), a)
        elif dist == "special":
            a = _specials(dt, n, rng)
        elif dist == "overflow":
            a = _overflow(dt, n, rng)
        elif dist == "positive":
            a = rng.uniform(0.5, 1.5, n)
        elif dist == "ties":  # 4, 5, 9 or 12 significant bits: halfway cases of every format
            bits = rng.choice([4, 5, 9, 12], n)
            odd = 2 * rng.integers(2 ** (bits - 2), 2 ** (bits - 1)) + 1
            a = odd * np.exp2(rng.integers(-6, 4, n) - bits) * rng.choice([-1.0, 1.0], n)
        elif dist == "v_plus1":  # attention: values near 1, so a lost or extra key shows
            a = rng.standard_normal(n) + (1.0 if v.name == "v" else 0.0)
        else:
            a = rng.standard_normal(n)
        out[v.name] = cast(np.asarray(a).reshape(shape), dt)
    return out
