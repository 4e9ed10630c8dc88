"""Attention pattern matching: the roles of an attention group's nodes.

An "attention" group holds two contractions and the nodes between them, as the
decomposition of scaled_dot_product_attention (or a user's variant) leaves them:

    s = dot_general(q, k)            # scores, contracting the head dim
    x = f(s, ...)                    # ANY elementwise chain: scale, masks, softcap, GQA ...
    m = reduce_max(x, last axis); e = exp(x - m); l = reduce_sum(e, last axis)
    p = g(e / l)                     # cast / reshape back to s's shape
    o = dot_general(p, v)

`match_attention(nodes)` finds these roles (an `AttentionPattern`) or says why the nodes
are not an attention; `operand_prologues` lists the nodes computing q, k and v inside the
group (rotary embeddings, head-split transposes, casts: evaluated in the tile loads);
`accumulator_dtype` is the dtype of scores, softmax statistics and accumulators.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hal.dtypes import DType, compute_dtype, f32, f64
from hal.ir.graph import Node, Value
from hal.ops import Category, get_op
from hal.ops.contraction import contraction_dims

# Ops allowed on the score path (s -> x) and on the probability path (e / l -> p).
_SCORE_CATS = {Category.ELEMENTWISE, Category.BROADCAST, Category.SOURCE, Category.MOVEMENT}
_PROB_OPS = {"cast", "reshape"}


@dataclass
class AttentionPattern:
    qk: Node
    pv: Node
    logits: Value       # x: the row-softmax input
    row_max: Node       # reduce_max(x)
    exps: Value         # e = exp(x - m)
    row_sum: Node       # reduce_sum(e)
    probs: Value        # e / l
    batch: tuple[int, ...]
    m: int              # query rows per batch entry
    t: int              # keys
    d: int              # contraction length of q k^T
    dv: int             # value width
    p_round: tuple[DType, ...] = ()  # dtypes the graph rounds P to (in order) before P @ V

    @property
    def two_pass(self) -> bool:
        """P is rounded before P @ V: the kernel must normalise before rounding, so it needs
        the final row max and sum first (a second pass over the keys)."""
        return bool(self.p_round)


def _cat(n: Node) -> Category:
    return get_op(n.op).category


def _last_axis_only(r: Node) -> bool:
    from hal.ops.reduction import reduction_axes

    x = r.inputs[0]
    return x.rank >= 1 and reduction_axes(r) == (x.rank - 1,)


def match_attention(nodes: list[Node]) -> AttentionPattern | str:
    """The attention roles of `nodes` (a group's nodes in graph order), or why there are none."""
    dots = [n for n in nodes if _cat(n) is Category.CONTRACTION]
    reds = [n for n in nodes if _cat(n) is Category.REDUCTION]
    if len(dots) != 2:
        return f"{len(dots)} contractions (attention has two)"
    qk, pv = dots
    maxes = [r for r in reds if r.op == "reduce_max"]
    sums = [r for r in reds if r.op == "reduce_sum"]
    if len(reds) != 2 or len(maxes) != 1 or len(sums) != 1:
        return "the nodes between the contractions are not one row softmax " \
               "(reduce_max and reduce_sum)"
    rmax, rsum = maxes[0], sums[0]
    if not (_last_axis_only(rmax) and _last_axis_only(rsum)):
        return "the softmax does not reduce over the key axis (the last one)"
    producer = {o.name: n for n in nodes for o in n.outputs}
    x, e = rmax.inputs[0], rsum.inputs[0]

    def through_bcast(v: Value) -> Value:
        p = producer.get(v.name)
        return p.inputs[0] if p is not None and p.op == "broadcast_to" else v

    ex = producer.get(e.name)
    sub = producer.get(ex.inputs[0].name) if ex is not None and ex.op == "exp" else None
    if sub is None or sub.op != "sub" or sub.inputs[0].name != x.name or \
            through_bcast(sub.inputs[1]).name != rmax.outputs[0].name:
        return "the softmax numerator is not exp(x - max(x))"
    div = next((n for n in nodes if n.op == "div" and n.inputs[0].name == e.name
                and through_bcast(n.inputs[1]).name == rsum.outputs[0].name), None)
    if div is None:
        return "the softmax is not normalised by div(e, sum(e))"
    # probability path: div -> (cast | reshape)* -> pv lhs
    v = pv.inputs[0]
    path = [v]
    while v.name != div.outputs[0].name:
        p = producer.get(v.name)
        if p is None or p.op not in _PROB_OPS:
            return f"{p.op if p else v.name} between the softmax and the second contraction"
        v = p.inputs[0]
        path.append(v)
    # a value stored narrower than it is computed is a rounding (the div's own included)
    p_round = tuple(x.dtype for x in reversed(path) if producer[x.name].op != "reshape"
                    and x.dtype.is_float and compute_dtype(x.dtype) != x.dtype)
    s0 = qk.outputs[0]
    lb, _rb, lc, _rc, lf, rf = contraction_dims(qk)
    if len(lf) != 1 or len(rf) != 1:
        return "the score contraction must have one query axis and one key axis"
    nb = len(lb)
    if tuple(pv.inputs[0].shape) != tuple(s0.shape):
        return "the probabilities do not have the scores' shape"
    plb, _prb, plc, _prc, plf, prf = contraction_dims(pv)
    if plb != tuple(range(nb)) or plf != (nb,) or plc != (nb + 1,) or len(prf) != 1:
        return "the second contraction does not contract the key axis of the probabilities"
    if x.type.numel != s0.type.numel or x.shape[-1] != s0.shape[-1]:
        return "the logits are not the scores' elements"
    for n in nodes:
        if n in (qk, pv, rmax, rsum, div) or n.op in _PROB_OPS:
            continue
        if _cat(n) not in _SCORE_CATS:
            return f"{n.op} cannot be computed per score element"
    for role, operand in zip("qkv", (*qk.inputs, pv.inputs[1]), strict=True):
        why = _prologue_problem(operand, producer)
        if why:
            return f"the {role} operand {why}"
    a = qk.inputs[0]
    batch = tuple(a.shape[i] for i in lb)
    b_shape = pv.inputs[1].shape
    return AttentionPattern(qk, pv, x, rmax, e, rsum, div.outputs[0], batch,
                            a.shape[lf[0]], s0.shape[-1],
                            math.prod(a.shape[i] for i in lc), b_shape[prf[0]], p_round)


def _prologue_problem(operand: Value, producer: dict[str, Node]) -> str:
    """Why the group's nodes producing `operand` (its prologue, computed per element while
    a tile is loaded) cannot be; "" when they can (elementwise/movement/broadcast/source)."""
    stack, seen = [operand.name], set()
    while stack:
        p = producer.get(stack.pop())
        if p is None or id(p) in seen:
            continue
        seen.add(id(p))
        if _cat(p) not in _SCORE_CATS:
            return f"depends on {p.op} (%{p.outputs[0].name}) inside the group"
        stack.extend(v.name for v in p.inputs)
    return ""


def operand_prologues(pat: AttentionPattern, nodes: list[Node]) -> dict[str, list[Node]]:
    """The group's nodes computing each operand ("q", "k", "v"), evaluated per element while
    that operand's tiles are loaded (a node shared by two operands is in both)."""
    producer = {o.name: n for n in nodes for o in n.outputs}
    out: dict[str, list[Node]] = {}
    for role, operand in zip("qkv", (*pat.qk.inputs, pat.pv.inputs[1]), strict=True):
        found: dict[int, Node] = {}
        stack = [operand.name]
        while stack:
            p = producer.get(stack.pop())
            if p is None or id(p) in found:
                continue
            found[id(p)] = p
            stack.extend(v.name for v in p.inputs)
        out[role] = list(found.values())
    return out


def accumulator_dtype(pat: AttentionPattern) -> DType:
    """The dtype of the scores, softmax statistics and P V accumulators: f64 when the
    graph computes the contractions in f64 (f64 inputs), else f32."""
    ds = (*pat.qk.inputs, pat.pv.inputs[1], pat.qk.outputs[0], pat.pv.outputs[0])
    return f64 if any(compute_dtype(v.dtype) == f64 for v in ds) else f32
