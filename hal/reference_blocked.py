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
No more than `tile_elements` float64 score words exist per intermediate.

`BLOCKED` maps a composite's name to its blocked evaluator; `use_blocked`
says whether a node is large enough to need it (`hal.reference.evaluate`
keeps such nodes composite and calls the evaluator).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from hal.dtypes import DType, compute_dtype, round_to
from hal.ir.graph import Node

#: float64 words per score-sized intermediate of one tile (32 MiB); a composite whose
#: whole score tensor is larger than this is evaluated blocked.
TILE_ELEMENTS = 1 << 22

BlockedEval = Callable[[Sequence[np.ndarray], Mapping[str, Any], Node, int], list[np.ndarray]]


def _prim(name: str, *args: np.ndarray, **attrs: Any) -> np.ndarray:
    from hal.ops import get_op

    op = get_op(name)
    return np.asarray(op.reference(list(args), op.check_attrs(attrs))[0])


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
    rows = max(1, min(s, (tile_elements or TILE_ELEMENTS) // max(1, group * t)))
    out = np.empty((bsz, hq, s, dv), np.float64)
    cols = np.arange(t)
    for b in range(bsz):
        for h in range(hk):
            heads = slice(h * group, (h + 1) * group)
            kt, vt = k[b, h], v[b, h]
            for r0 in range(0, s, rows):
                r1 = min(s, r0 + rows)
                tq = r1 - r0
                qt = q[b, heads, r0:r1].reshape(group * tq, d)
                # dot_general(q grouped, k) with out_dtype = compute dtype
                sc = _round(_prim("dot_general", qt, kt, lhs_contracting=(1,),
                                  rhs_contracting=(1,)), cdt).reshape(group, tq, t)
                sc = _round(_prim("mul", sc, np.broadcast_to(scale_c, sc.shape)), cdt)
                if mask is not None:
                    sc = _round(_prim("add", sc, mask[b, heads, r0:r1]), cdt)
                if attrs.get("causal"):
                    keep = np.broadcast_to((r0 + np.arange(tq))[:, None] >= cols[None, :],
                                           sc.shape)
                    sc = _prim("select", keep, sc, np.broadcast_to(-np.inf, sc.shape))
                p = _softmax_rows(sc, cdt)
                if qdt != cdt:
                    p = _round(p, qdt)
                o = _prim("dot_general", p.reshape(group * tq, t), vt, lhs_contracting=(1,),
                          rhs_contracting=(0,))
                out[b, heads, r0:r1] = _round(o, qdt).reshape(group, tq, dv)
    return [out]


def _softmax_rows(x: np.ndarray, cdt: DType) -> np.ndarray:
    """softmax over the last axis as `_softmax_decompose` spells it, x already in `cdt`."""
    m = _round(_prim("reduce_max", x, axes=(x.ndim - 1,), keepdims=True), cdt)
    e = _round(_prim("sub", x, np.broadcast_to(m, x.shape)), cdt)
    e = _round(_prim("exp", e), cdt)
    total = _round(_prim("reduce_sum", e, axes=(x.ndim - 1,), keepdims=True), cdt)
    return _round(_prim("div", e, np.broadcast_to(total, x.shape)), cdt)


BLOCKED: dict[str, BlockedEval] = {}


def register_blocked(op: str, fn: BlockedEval) -> None:
    """Evaluate composite `op` with `fn(args, attrs, node, tile_elements)` when it is large."""
    BLOCKED[op] = fn


register_blocked("scaled_dot_product_attention", attention_blocked)
register_blocked("sdpa_masked", attention_blocked)


def use_blocked(node: Node, tile_elements: int | None = None) -> bool:
    """Whether `node` has a blocked evaluator and its score tensor exceeds one tile
    (`tile_elements`, default TILE_ELEMENTS)."""
    if node.op not in BLOCKED or not all(v.type.is_static for v in node.inputs):
        return False
    return _score_elements(node) > (tile_elements or TILE_ELEMENTS)
