"""Causal key-tile limits: the key tiles a block of query rows can skip, and what that saves.

A group whose logits are `select(keep, s', -inf)`, with `keep` a comparison of integer
affine functions of the logits' query index i and key index j (iotas, constants, add,
sub, casts, broadcasts) that reduces to j <= i + c, hides every key past i + c:

* the composite's causal mask (tril of an S x T matrix, key j visible to query i iff
  j <= i, for S != T too: the top-left convention torch's is_causal uses) has c = 0;
* a bottom-right aligned mask written as ge(iota_row + (T - S), iota_col) has c = T - S.

A block of query rows whose largest query index is i_hi needs key tiles
[0, floor((i_hi + c) / Bc) + 1) only: every tile past it lies above the diagonal for all
its rows, so both attention kernels (SIMT flash_body and the matrix-unit emitter, split-K
chunks too) stop their key loops there: such a tile is neither loaded nor computed.
Skipping changes no number: a fully masked tile adds exp(-inf) = 0 to every sum and
leaves the running max alone. At least one tile is walked, so a row with no visible key
still gives the softmax of no keys (0/0) as before.

Rows are the packed rows of the kernel (GQA: the G query heads sharing a kv head are
consecutive blocks of S rows), so the query index of packed row r is r % S; a block that
straddles two heads holds query S - 1 of the first.

`causal_work` counts, for the plan and the cost model, the (row tile, key tile) pairs the
kernels walk, the keys they load and the (row, key) scores they compute; the KernelPlan
carries these numbers and the cost model reads them (planners_tiled), so the skipped work
is priced away where it is skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hal.ir.graph import Node, Value
from hal.kernel.ir import Binary, Expr, Select, Stmt
from hal.lowering.attention_match import AttentionPattern
from hal.lowering.context import KernelContext
from hal.lowering.tiling import cdiv

_COMPARE = {"ge": (1, 0), "gt": (1, -1), "le": (-1, 0), "lt": (-1, -1)}


@dataclass(frozen=True)
class CausalBound:
    """Key j is visible to query i only if j <= i + offset; the query index of packed
    kernel row r is r % period."""

    offset: int
    period: int


@dataclass(frozen=True)
class CausalWork:
    """What the attention kernels walk per batch entry: key tiles over all row tiles
    (`tile_pairs`), keys loaded (`key_loads`: each row tile's walked keys, at most T) and
    scores computed (`scores`: each row's walked keys). Without skipping these are
    row_tiles * key_tiles, row_tiles * T and M * T."""

    tile_pairs: int
    key_loads: int
    scores: int
    row_tiles: int
    keys: int
    rows: int

    @property
    def load_factor(self) -> float:
        """K (or V) tiles loaded per batch entry, in units of the whole K (or V)."""
        return self.key_loads / self.keys if self.keys else 0.0

    @property
    def score_fraction(self) -> float:
        """The share of the M x T scores the kernels compute."""
        return self.scores / (self.rows * self.keys) if self.rows * self.keys else 0.0


# --------------------------------------------------------------------------- matching


def causal_bound(pat: AttentionPattern, nodes: list[Node]) -> CausalBound | None:
    """The causal bound of `pat`'s logits (module doc), or None when its mask (if any) is
    not one: then no tile is skipped."""
    x = pat.logits
    producer = {o.name: n for n in nodes for o in n.outputs}
    sel = producer.get(x.name)
    if sel is None or sel.op != "select" or x.rank < 2:
        return None
    shape = tuple(x.shape)
    s, t = shape[-2], shape[-1]
    if t != pat.t or s == 0 or pat.m % s:
        return None    # the logits' last two axes are not (query, key) of the packed rows
    cond, a, b = sel.inputs
    lin = _predicate(cond, producer, shape)
    if lin is None:
        return None
    if _is_neg_inf(b, producer):
        pass
    elif _is_neg_inf(a, producer):      # select(hide, -inf, s): keep = not hide
        lin = ({ax: -k for ax, k in lin[0].items()}, -lin[1] - 1)
    else:
        return None
    coefs, const = lin
    qa, ka = len(shape) - 2, len(shape) - 1
    if {ax: k for ax, k in coefs.items() if k} != {qa: 1, ka: -1}:
        return None
    return CausalBound(const, s)


def _predicate(v: Value, producer: dict[str, Node], shape: tuple[int, ...]):
    """keep as (coefficients per logits axis, constant): keep iff sum + constant >= 0."""
    n = producer.get(v.name)
    while n is not None and n.op == "broadcast_to":
        n = producer.get(n.inputs[0].name)
    if n is None or n.op not in _COMPARE:
        return None
    sign, const = _COMPARE[n.op]
    lhs, rhs = (_affine(x, producer, shape) for x in n.inputs)
    if lhs is None or rhs is None:
        return None
    coefs = {ax: sign * (lhs[0].get(ax, 0) - rhs[0].get(ax, 0))
             for ax in set(lhs[0]) | set(rhs[0])}
    return coefs, sign * (lhs[1] - rhs[1]) + const


def _affine(v: Value, producer: dict[str, Node], shape: tuple[int, ...]):
    """An integer-valued v (aligned with the trailing axes of the logits' `shape`, as
    broadcast_to aligns) as (coefficients per logits axis, constant), or None."""
    n = producer.get(v.name)
    off = len(shape) - v.rank
    if n is None or off < 0:
        return None
    if n.op == "iota":
        d = n.attrs["dimension"] % v.rank
        if v.shape[d] != shape[off + d]:
            return None   # an iota over a broadcast (size-1) axis
        return {off + d: 1}, 0
    if n.op == "full":
        val = float(n.attrs["value"])
        return ({}, int(val)) if math.isfinite(val) and val == int(val) else None
    if n.op in ("broadcast_to", "cast"):
        return _affine(n.inputs[0], producer, shape)
    if n.op == "neg":
        a = _affine(n.inputs[0], producer, shape)
        return None if a is None else ({ax: -k for ax, k in a[0].items()}, -a[1])
    if n.op in ("add", "sub"):
        a, b = (_affine(x, producer, shape) for x in n.inputs)
        if a is None or b is None:
            return None
        sg = 1 if n.op == "add" else -1
        return ({ax: a[0].get(ax, 0) + sg * b[0].get(ax, 0) for ax in set(a[0]) | set(b[0])},
                a[1] + sg * b[1])
    return None


def _is_neg_inf(v: Value, producer: dict[str, Node]) -> bool:
    n = producer.get(v.name)
    while n is not None and n.op in ("broadcast_to", "cast"):
        n = producer.get(n.inputs[0].name)
    return n is not None and n.op == "full" and float(n.attrs["value"]) == -math.inf


# --------------------------------------------------------------------------- counts


def key_tile_limit(bound: CausalBound, row0: int, br: int, m: int, bc: int,
                   key_tiles: int) -> int:
    """Key tiles [0, limit) the block of packed rows [row0, row0 + br) walks (row0 < m)."""
    hi = min(row0 + br, m) - 1
    s = bound.period
    q_hi = hi % s if row0 // s == hi // s else s - 1
    return min(key_tiles, max(0, q_hi + bound.offset) // bc + 1)


def causal_work(bound: CausalBound | None, m: int, t: int, br: int, bc: int) -> CausalWork:
    """The kernels' walked tiles, loaded keys and computed scores per batch entry."""
    rt, nt = cdiv(m, br), cdiv(t, bc)
    if bound is None:
        return CausalWork(rt * nt, rt * t, m * t, rt, t, m)
    pairs = loads = scores = 0
    for i in range(rt):
        lim = key_tile_limit(bound, i * br, br, m, bc, nt)
        keys = min(t, lim * bc)
        pairs += lim
        loads += keys
        scores += (min(m, (i + 1) * br) - i * br) * keys
    return CausalWork(pairs, loads, scores, rt, t, m)


# --------------------------------------------------------------------------- kernels


def emit_key_tile_limit(ctx: KernelContext, stmts: list[Stmt], bound: CausalBound,
                        row0: Expr, br: int, m: int, bc: int, key_tiles: int) -> Expr:
    """The kernel's `key_tile_limit` of the block whose packed rows start at row0."""
    hi = ctx.declare(stmts, "row_hi", ctx.sub(Binary("minimum", ctx.add(row0, br), ctx.c(m)), 1))
    s = bound.period
    if s >= m:
        q_hi: Expr = hi
    else:
        same = ctx.div(row0, s).eq(ctx.div(hi, s))
        q_hi = ctx.declare(stmts, "q_hi", Select(same, ctx.mod(hi, s), ctx.c(s - 1)))
    reach = Binary("maximum", ctx.add(q_hi, bound.offset), ctx.c(0))
    tiles = ctx.div(reach, bc) if ctx.options.fault("attention_causal_overskip") else \
        ctx.add(ctx.div(reach, bc), 1)   # (self-test hook: the diagonal's tile dropped)
    return ctx.declare(stmts, "kt_lim", Binary("minimum", tiles, ctx.c(key_tiles)))
