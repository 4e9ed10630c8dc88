"""Blocked float64 evaluation of composites whose decomposition holds huge intermediates.

The reference (hal/reference.py) evaluates the primitive decomposition of every
composite. For attention at model scale that decomposition materialises the
[B, Hq, S, T] score tensor in float64 several times over (scores, scaled,
masked, shifted, exp, probabilities): 1 GiB each for 32 heads at S = T = 2048.
This module evaluates such a composite tile by tile instead: one (batch, kv
head) pair and a tile of query rows at a time, each tile spanning the whole key
axis. Within a tile it performs exactly the decomposition's primitive steps
(`ops.composite._attention_decompose` and `_softmax_decompose`), each with the
primitive's own float64 reference (`OpDef.reference`) and the same rounding to
the intermediate's dtype. The decomposition's reductions run over the key axis
only, so rows are independent and a full-key-row tile gives the same values as
the whole-tensor evaluation (tests/test_reference_blocked.py holds them equal).
No more than `tile_elements` float64 score words exist per intermediate. With an
f32 compute dtype (16-bit and f32 attention) a tile's elementwise steps run on
float32 arrays with the same values (`_Float32Tiles` says why they are the same).

`BLOCKED` maps a composite's name to its blocked evaluator; `use_blocked`
says whether a node is large enough to need it (`hal.reference.evaluate`
keeps such nodes composite and calls the evaluator).
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any

import numpy as np

from hal.dtypes import DType, bf16, compute_dtype, f32, round_to
from hal.ir.graph import Node
from hal.step_threads import run_steps

#: float64 words per score-sized intermediate of one tile (32 MiB); a composite whose
#: whole score tensor is larger than this is evaluated blocked.
TILE_ELEMENTS = 1 << 22
#: query rows per tile of causal attention at most: a tile computes the score columns up
#: to its last row, so narrower tiles skip more of the masked upper triangle
CAUSAL_ROWS = 128

BlockedEval = Callable[[Sequence[np.ndarray], Mapping[str, Any], Node, int], list[np.ndarray]]
#: a blocked evaluator as a generator (`Steps`): it yields None between its tiles or
#: panels, where a caller may pause it (hal.reference.evaluate_steps: cpu_sim's sampled
#: mode starts its next child there instead of after a whole projection), and returns
#: its result
Steps = Generator[None, None, Any]


def drain(steps: Steps) -> Any:
    """Run `steps` to its end, with NumPy's floating-point warnings off (inf * 0 -> nan is
    the answer, not a problem); its result."""
    with np.errstate(all="ignore"):
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value


def _prim(name: str, *args: np.ndarray, **attrs: Any) -> np.ndarray:
    from hal.ops import get_op

    op = get_op(name)
    return np.asarray(op.reference(list(args), op.check_attrs(attrs))[0])


def _prim_into(out: np.ndarray, name: str, *args: np.ndarray) -> np.ndarray:
    """`_prim(name, *args)` written into `out` (a tile's own float64 array of the result's
    shape, possibly one of `args`): the op's NumPy body itself when it is a ufunc (the
    same values, no new tile-sized array), else the reference's result copied in."""
    from hal.ops import get_op

    body = getattr(get_op(name).scalar, "__wrapped__", None)
    if isinstance(body, np.ufunc):
        with np.errstate(all="ignore"):
            return body(*args, out=out)
    out[...] = _prim(name, *args)
    return out


def _round_own(a: np.ndarray, dt: DType) -> np.ndarray:
    """A tile's own float64 array (a view of one is fine) rounded to `dt` in place."""
    return round_to(a, dt, out=a)


def _round(a: np.ndarray, dt: DType, fresh: bool = True) -> np.ndarray:
    """`a` rounded to `dt` and widened back to float64; in place when `a` is a fresh
    float64 result (an operand passed in is never written)."""
    a = np.asarray(a, np.float64)
    in_place = fresh and a.flags.owndata and a.flags.writeable
    return round_to(a, dt, out=a if in_place else None)


def _score_elements(node: Node) -> int:
    q, k = node.inputs[0].type, node.inputs[1].type
    b, hq, s, _ = q.shape
    return int(b * hq * s * k.shape[2])


def attention_blocked(args: Sequence[np.ndarray], attrs: Mapping[str, Any], node: Node,
                      tile_elements: int | None = None) -> list[np.ndarray]:
    """scaled_dot_product_attention / sdpa_masked on float64 operands (already rounded to
    their dtypes), one (batch, kv head, query tile) at a time; the output rounded to q's
    dtype, in float64."""
    return drain(attention_steps(args, attrs, node, tile_elements))


def attention_steps(args: Sequence[np.ndarray], attrs: Mapping[str, Any], node: Node,
                    tile_elements: int | None = None) -> Steps:
    """`attention_blocked` as Steps: it yields after each tile."""
    q, k, v = args[:3]
    mask = args[3] if len(args) == 4 else None
    qdt = node.inputs[0].dtype
    cdt = compute_dtype(qdt)
    bsz, hq, s, d = q.shape
    hk, t, dv = k.shape[1], k.shape[2], v.shape[3]
    group = hq // hk
    scale = attrs["scale"] if attrs["scale"] is not None else 1.0 / math.sqrt(d)
    scale_c = _round(np.float64(scale), cdt)  # full(value=scale, dtype=cdt)
    if mask is not None:
        mask = np.broadcast_to(_round(mask, cdt, fresh=False) if node.inputs[3].dtype != cdt else mask,
                               (bsz, hq, s, t))
    causal = bool(attrs.get("causal"))
    rows = max(1, min(s, (tile_elements or TILE_ELEMENTS) // max(1, group * t)))
    if causal and mask is None:   # narrower tiles skip more of the masked triangle
        rows = max(1, min(rows, CAUSAL_ROWS))
    out = np.empty((bsz, hq, s, dv), np.float64)
    cols = np.arange(t)
    fast = _Float32Tiles(scale_c, t, qdt) if cdt == f32 else None

    def tile(b: int, h: int, r0: int) -> None:
        heads = slice(h * group, (h + 1) * group)
        kt, vt = k[b, h], v[b, h]
        r1 = min(s, r0 + rows)
        tq = r1 - r0
        # keys past the tile's last query row are masked to -inf by causality:
        # their probabilities are exactly 0, so only the first `width` score
        # columns are computed (without an additive mask, which could make a
        # whole row -inf and its probabilities NaN)
        width = min(t, r1) if causal and mask is None else t
        qt = q[b, heads, r0:r1].reshape(group * tq, d)
        # dot_general(q grouped, k) with out_dtype = compute dtype
        raw = _prim("dot_general", qt, kt[:width], lhs_contracting=(1,),
                    rhs_contracting=(1,))
        drop = (r0 + np.arange(tq))[:, None] < cols[None, :width] if causal else None
        tile_mask = mask[b, heads, r0:r1] if mask is not None else None
        p = None if fast is None else fast.probs(raw, (group, tq, width), tile_mask, drop)
        if p is None:   # f64 compute dtype, or a row with no finite softmax
            p = _probs_f64(raw, (group, tq, width), scale_c, tile_mask, drop, cdt, t, qdt)
        # the product runs over the whole key axis (zeros past `width`), so that
        # its sums are the decomposition's
        o = _prim("dot_general", p.reshape(group * tq, t), vt, lhs_contracting=(1,),
                  rhs_contracting=(0,))
        out[b, heads, r0:r1] = _round(o, qdt).reshape(group, tq, dv)

    # the tiles are independent (each writes its own rows): several at once under
    # step_threads (hal/step_threads.py), the same values
    yield from run_steps(functools.partial(tile, b, h, r0) for b in range(bsz)
                         for h in range(hk) for r0 in range(0, s, rows))
    return [out]


def _probs_f64(raw: np.ndarray, shape: tuple[int, int, int], scale_c: np.ndarray,
               mask: np.ndarray | None, drop: np.ndarray | None, cdt: DType, t: int,
               qdt: DType) -> np.ndarray:
    """A tile's probabilities [group, rows, t] (rounded to q's dtype, zeros past the
    score columns) from its float64 q k^T product `raw` (the tile's own array): the
    decomposition's steps, each the primitive's float64 reference rounded to `cdt`."""
    # the tile's steps write over its own score array (sc)
    sc = _round(raw, cdt).reshape(shape)
    sc = _round_own(_prim_into(sc, "mul", sc, np.broadcast_to(scale_c, sc.shape)), cdt)
    if mask is not None:
        sc = _round_own(_prim_into(sc, "add", sc, mask), cdt)
    if drop is not None:   # select(keep, sc, -inf), in place
        np.copyto(sc, -np.inf, where=drop)
    # p rounded to q's dtype too (the zeros past the columns round to themselves)
    return _softmax_rows(sc, cdt, t, qdt)


class _Float32Tiles:
    """The tile steps of `_probs_f64` for an f32 compute dtype, on float32 arrays (half
    the memory traffic, and no rounding passes): IEEE float32 +, -, * and / of float32
    values give the float64 operation's result rounded to float32 (float64 has more
    than twice float32's precision plus two bits, so the double rounding is innocuous:
    Figueroa, "When is double rounding innocuous?", 1995); max is exact; exp runs in
    float64 and is rounded as the reference rounds it; the row sums run in float64 over
    the whole key axis, as the reference sums. Where a row's sum is not finite (a NaN
    or inf score, a row masked whole) the tile is left to `_probs_f64` (NaN payloads
    are not part of that argument); otherwise every probability lies in [0, 1] and the
    values are the reference's bit for bit (tests/test_reference_blocked.py)."""

    def __init__(self, scale_c: np.ndarray, t: int, qdt: DType):
        self.scale = np.float32(scale_c)
        self.t = t
        self.qdt = qdt
        # the probabilities, reused tile to tile by each thread (run_steps)
        self.local = threading.local()

    def _full(self, group: int, rows: int) -> np.ndarray:
        shape = (group, rows, self.t)
        buf = getattr(self.local, "buf", None)
        if buf is None or buf.shape != shape:
            buf = self.local.buf = np.empty(shape, np.float64)
        return buf

    def probs(self, raw: np.ndarray, shape: tuple[int, int, int], mask: np.ndarray | None,
              drop: np.ndarray | None) -> np.ndarray | None:
        """`_probs_f64(raw, shape, ...)`, or None where a row's sum is not finite."""
        with np.errstate(all="ignore"):
            sc = raw.astype(np.float32).reshape(shape)   # the product rounded to f32
            np.multiply(sc, self.scale, out=sc)
            if mask is not None:   # mask holds f32 values: the f64 sum rounded to f32
                np.add(sc, mask, out=sc, casting="same_kind")
            if drop is not None:
                np.copyto(sc, -np.inf, where=drop)
            m = sc.max(axis=-1, keepdims=True)
            np.subtract(sc, m, out=sc)
            np.exp(sc, out=sc, dtype=np.float64, casting="same_kind")
            group, rows, width = shape
            full = self._full(group, rows)
            full[..., :width] = sc
            full[..., width:] = 0.0
            total = np.sum(full, axis=-1, keepdims=True).astype(np.float32)
            if not np.isfinite(total).all():
                return None
            np.divide(sc, total, out=sc)
        if self.qdt == bf16:   # p in [0, 1]: round to nearest even on the float32 bits
            _round_f32_to_bf16(sc)
        elif self.qdt != f32:
            full[..., :width] = sc
            _round_own(full[..., :width], self.qdt)
            return full
        full[..., :width] = sc
        return full


def _round_f32_to_bf16(a: np.ndarray) -> None:
    """Finite float32 values rounded to bfloat16 (the top 16 bits of a float32) in place,
    ties to even; what `round_to(a, bf16)` gives for them, subnormals included."""
    u = a.reshape(-1).view(np.uint32)
    low = np.right_shift(u, np.uint32(16))
    np.bitwise_and(low, np.uint32(1), out=low)
    low += np.uint32(0x7FFF)
    u += low
    np.bitwise_and(u, np.uint32(0xFFFF0000), out=u)


def _softmax_rows(x: np.ndarray, cdt: DType, width: int | None = None,
                  out_dtype: DType | None = None) -> np.ndarray:
    """softmax over the last axis as `_softmax_decompose` spells it, x already in `cdt`
    (a tile's own array: overwritten). With `width` wider than x's rows, x is the first
    columns of rows whose other columns are -inf: the result has `width` columns, exactly
    0 past x's (the sums run over the whole width, so that they add in the
    decomposition's order). With `out_dtype`, the result is then rounded to it too."""
    m = _round(_prim("reduce_max", x, axes=(x.ndim - 1,), keepdims=True), cdt)
    e = _round_own(_prim_into(x, "sub", x, np.broadcast_to(m, x.shape)), cdt)
    e = _round_own(_prim_into(e, "exp", e), cdt)
    n = x.shape[-1]
    full = None
    if width is not None and width > n:
        full = np.zeros(x.shape[:-1] + (width,), np.float64)
        full[..., :n] = e
        total = _round(_prim("reduce_sum", full, axes=(x.ndim - 1,), keepdims=True), cdt)
    else:
        total = _round(_prim("reduce_sum", e, axes=(x.ndim - 1,), keepdims=True), cdt)
    p = _round_own(_prim_into(e, "div", e, np.broadcast_to(total, e.shape)), cdt)
    if out_dtype is not None and out_dtype != cdt:
        p = _round_own(p, out_dtype)
    if full is None:
        return p
    full[..., :n] = p
    return full


#: elements of a narrow operand widened at once by `dot_general_panels` (16 MiB of float64)
PANEL_ELEMENTS = 1 << 21
#: float bits of a contraction's operands and result at most for `sums_in_float32`
FLOAT32_SUM_BITS = 16


def sums_in_float32(node: Node) -> bool:
    """Whether the model-scale reference (`dot_general_panels`) sums `node`'s products in
    float32 (BLAS sgemm) instead of float64: a contraction whose operands and result are
    all floats of at most 16 bits (a bf16 model's projections).

    Such products are exact in float32: at most 2 x 11 significant bits, and an exponent
    float32 holds (f16 and f8 ranges are narrow; a bf16 product that leaves float32's range
    makes a non-finite panel, which is summed again in float64). The sum's roundings are
    then the reference's only error beyond float64's: at most accumulation_factor(K) *
    2^-24 * sum|a b|, the same accumulator the kernels use, which
    conformance.tolerance.rtol_atol adds to the bound the result is held to. Against the
    16-bit result's own half ulp (2^-9 for bf16) that is small: for K = 14336, ~1.9e-5
    relative on a zero-mean sum's sqrt(K)-sized magnitude. Products that underflow float32
    lose at most K * 2^-149 each, far below any atol the model gives. float32's sgemm
    is ~2.2x float64's dgemm on this class of machine; a Llama-3-8B layer's projections
    are 0.9 TFLOP."""
    from hal.ops import Category, get_op

    if get_op(node.op).category is not Category.CONTRACTION:
        return False
    return all(v.dtype.is_float and v.dtype.bits <= FLOAT32_SUM_BITS
               for v in (*node.inputs, *node.outputs))


def dot_general_panels(a: np.ndarray, b: np.ndarray, attrs: Mapping[str, Any],
                       float32_sums: bool = False) -> np.ndarray:
    """`dot_general_panel_steps` run to its end."""
    return drain(dot_general_panel_steps(a, b, attrs, float32_sums))


def dot_general_panel_steps(a: np.ndarray, b: np.ndarray, attrs: Mapping[str, Any],
                            float32_sums: bool = False) -> Steps:
    """dot_general's float64 product of operands that may still be in a narrower dtype (a
    model's bf16 weights): a narrow operand is converted one panel of its free elements
    at a time, so its float64 copy (4x a bf16 weight) never exists whole. Each output
    element is the same dot product over the whole contracted axis as with the operand
    converted at once (the panels split the free axes only; float64 dgemm gives the same
    sums, float32 sgemm on this machine's OpenBLAS does not).

    `float32_sums` (`sums_in_float32` said yes): both operands are converted to float32
    instead (exact: their values are 16-bit floats) and each panel is summed by sgemm; a
    panel with a non-finite sum (a bf16 product beyond float32's range, or inf/NaN
    operands) is summed again in float64, so inf and NaN come out as float64 gives them.
    The result is float64 either way. Steps: it yields after each panel; run it with
    `drain` (which also turns NumPy's floating-point warnings off)."""
    from hal.ops.contraction import dot_general_operands

    wide = np.float64
    a2, b2, shape = dot_general_operands(a, b, attrs)
    if float32_sums:
        out32 = yield from _float32_panels(a2, b2)
        return out32.reshape(shape)
    narrow_a, narrow_b = a2.dtype != wide, b2.dtype != wide
    if narrow_a and narrow_b:   # the smaller one converted whole, the other in panels
        if a2.size <= b2.size:
            a2, narrow_a = a2.astype(wide), False
        else:
            b2, narrow_b = b2.astype(wide), False
    nb, m, k = a2.shape
    n = b2.shape[2]
    out = np.empty((nb, m, n), wide)
    step = max(1, PANEL_ELEMENTS // max(1, k))
    if narrow_b:
        for j in range(0, n, step):
            np.matmul(a2, b2[:, :, j:j + step].astype(wide), out=out[:, :, j:j + step])
            yield
    elif narrow_a:
        for i in range(0, m, step):
            np.matmul(a2[:, i:i + step].astype(wide), b2, out=out[:, i:i + step])
            yield
    else:
        np.matmul(a2, b2, out=out)
    return out.reshape(shape)


def _float32_panels(a2: np.ndarray, b2: np.ndarray) -> Steps:
    """`dot_general_panels(float32_sums=True)` on (batch, M, K) x (batch, K, N) operands:
    the smaller operand converted to float32 whole, the larger a panel of its free axis
    at a time; a panel whose float32 sums are not all finite is summed in float64."""
    f = np.float32
    nb, m, k = a2.shape
    n = b2.shape[2]
    out = np.empty((nb, m, n), np.float64)
    step = max(1, PANEL_ELEMENTS // max(1, k))
    by_columns = b2.size >= a2.size
    whole = (a2 if by_columns else b2).astype(f)

    def panel(s: int) -> None:
        if by_columns:
            x, y, dst = whole, b2[:, :, s:s + step], out[:, :, s:s + step]
        else:
            x, y, dst = a2[:, s:s + step], whole, out[:, s:s + step]
        part = np.matmul(x.astype(f, copy=False), y.astype(f, copy=False))
        if np.isfinite(part).all():
            dst[...] = part
        else:
            np.matmul(x.astype(np.float64), y.astype(np.float64), out=dst)

    # the panels are independent: several at once under step_threads, each the same call
    yield from run_steps(functools.partial(panel, s)
                         for s in range(0, n if by_columns else m, step))
    return out


def panel_operand(a: np.ndarray, dt: DType) -> bool:
    """Whether `a`, a value of float dtype `dt` kept in that dtype, is large enough to go
    to `dot_general_panels` unconverted."""
    return dt.is_float and a.dtype != np.float64 and a.size > PANEL_ELEMENTS


BLOCKED: dict[str, BlockedEval] = {}
#: the same evaluators as Steps (hal.reference.evaluate_steps pauses them between tiles)
BLOCKED_STEPS: dict[str, Callable[..., Steps]] = {}


def register_blocked(op: str, steps: Callable[..., Steps]) -> None:
    """Evaluate composite `op` with `steps(args, attrs, node, tile_elements)` (Steps) when
    it is large; BLOCKED[op] runs it to its end."""
    BLOCKED_STEPS[op] = steps
    BLOCKED[op] = lambda args, attrs, node, tile_elements=None: drain(
        steps(args, attrs, node, tile_elements))


register_blocked("scaled_dot_product_attention", attention_steps)
register_blocked("sdpa_masked", attention_steps)


def use_blocked(node: Node, tile_elements: int | None = None) -> bool:
    """Whether `node` has a blocked evaluator and its score tensor exceeds one tile
    (`tile_elements`, default TILE_ELEMENTS)."""
    if node.op not in BLOCKED or not all(v.type.is_static for v in node.inputs):
        return False
    return _score_elements(node) > (tile_elements or TILE_ELEMENTS)
