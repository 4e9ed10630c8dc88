"""Multiply-accumulate loops run as contractions: `match_reduction_loop`, `emit_reduction_loop`.

The inner loop of a tiled matmul or of attention's QK^T / PV is, per thread,
`acc[c] += a_i * b_j` over k for a micro-tile of accumulators (or `dot += q * k`).
Run iteration by iteration it costs two NumPy passes over every lane per
multiply-add, which is what kept cpu_sim at about 1e8 flop/s on real layers.
This module recognises such a loop in the kernel IR and has codegen emit, beside
the plain loop, a vector form that `contract.Reduction` executes in one go:

* every operand is a load from a global or shared buffer (maybe cast) whose
  index is affine in the loop variable: `index = coef * k + rest(lane)`, so the
  index of every (iteration, lane) pair is known from `rest` (one array over the
  lanes) and `coef * k` (one array over the iterations): bounds, i32 overflow and
  byte counts are checked and counted for all of them without a (k, lane) array;
* lanes that read the same words (all threads of a block that share a row of A)
  are grouped, and each block's multiply-adds become one matrix product of its
  distinct rows and columns (a batched GEMM over the wave's blocks); each lane
  then picks exactly its own accumulator elements out of its block's product, so
  a thread holding the wrong element still shows;
* when lanes cannot be grouped, the contraction falls back to per-lane sums.

The loop may contain only: index declarations (integer arithmetic, inlined),
operand declarations (a load, maybe cast, used only as a factor), and
reductions `t = t + x * y` on a variable or `L[c] = L[c] + x * y` on a local
buffer element with a constant index, in f32 or f64. Anything else (a store, a
barrier, a branch, a nested loop, a shuffle) leaves the loop to the plain form.

Numerics: the vector form sums a loop's products in float64 and rounds once to
the accumulator's dtype, where the plain form rounds after every multiply and
add. It is at least as accurate as the plain form (products of f32 values are
exact in f64), so it stays inside every tolerance the plain form meets. The
plain form runs when the wave is created with `fast=False` (simulate's
`exact_rounding=True`). All checks stay on in both forms.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from hal.kernel.ir import (
    Assign,
    Binary,
    Cast,
    Comment,
    Const,
    Declare,
    Expr,
    For,
    Load,
    Param,
    Select,
    Special,
    Stmt,
    Store,
    Unary,
    Var,
    children,
)

if TYPE_CHECKING:  # pragma: no cover
    from .codegen import _Ctx, _Translator


@dataclass(frozen=True)
class Operand:
    """A factor of the reductions: a load whose index is `coef * k + rest`."""

    load: Load
    coef: int
    rest: Expr           # free of the loop variable and of loop-local variables
    cast: Any            # the DType the loaded value is cast to, or None


@dataclass(frozen=True)
class Reduction:
    """`target += x * y`: target is a Var or (local buffer, constant index)."""

    target: Var | tuple[str, int]
    dtype: Any
    x: int               # operand numbers
    y: int


@dataclass(frozen=True)
class ReductionLoop:
    operands: tuple[Operand, ...]
    reductions: tuple[Reduction, ...]
    flops: tuple[tuple[str, int], ...]   # per iteration and lane, by dtype name


def int_args(*codes: str) -> str:
    """Uniform loop bounds as Python ints, for range(): an integer literal as it is (the
    common case: constant bounds), anything else (a NumPy scalar) through int()."""
    return ", ".join(c if c.isdigit() or (c[:1] == "-" and c[1:].isdigit()) else f"int({c})"
                     for c in codes)


def _vars(e: Expr, acc: Counter) -> Counter:
    if isinstance(e, Var):
        acc[e.name] += 1
    for c in children(e):
        _vars(c, acc)
    return acc


def _pure_int(e: Expr) -> bool:
    """Integer index arithmetic without memory, shuffles or floats."""
    if isinstance(e, (Const, Var, Param, Special)):
        return not e.dtype.is_float
    if isinstance(e, (Unary, Binary, Select)):
        return all(_pure_int(c) for c in children(e)) and not e.dtype.is_float
    return False


def _substitute(e: Expr, env: dict[str, Expr]) -> Expr:
    if isinstance(e, Var):
        return env.get(e.name, e)
    if isinstance(e, Unary):
        return replace(e, x=_substitute(e.x, env))
    if isinstance(e, Binary):
        return replace(e, a=_substitute(e.a, env), b=_substitute(e.b, env))
    if isinstance(e, Select):
        return replace(e, pred=_substitute(e.pred, env), on_true=_substitute(e.on_true, env),
                       on_false=_substitute(e.on_false, env))
    if isinstance(e, Cast):
        return replace(e, x=_substitute(e.x, env))
    return e


def _affine(e: Expr, k: str) -> tuple[int, Expr | None] | None:
    """(c, rest) with e == c * k + rest, rest free of k (None: zero); None if not affine."""
    if not _vars(e, Counter())[k]:
        return 0, e
    if isinstance(e, Var):
        return (1, None) if e.name == k else None
    if isinstance(e, Binary) and e.op in ("add", "sub"):
        a, b = _affine(e.a, k), _affine(e.b, k)
        if a is None or b is None:
            return None
        sign = 1 if e.op == "add" else -1
        if b[1] is None:
            rest = a[1]
        elif a[1] is None:
            rest = b[1] if sign == 1 else Binary("sub", Const(0, e.dtype), b[1])
        else:
            rest = Binary(e.op, a[1], b[1])
        return a[0] + sign * b[0], rest
    if isinstance(e, Binary) and e.op == "mul":
        for lin, other in ((e.a, e.b), (e.b, e.a)):
            if isinstance(other, Const) and not other.dtype.is_float:
                inner = _affine(lin, k)
                if inner is None:
                    return None
                c = int(other.value)
                rest = None if inner[1] is None else Binary("mul", inner[1], other)
                return inner[0] * c, rest
    return None


def _factor(e: Expr) -> tuple[Load, Any] | None:
    """A global/shared load, maybe cast: (load, cast dtype or None)."""
    cast_to = None
    if isinstance(e, Cast):
        cast_to, e = e.dtype, e.x
    if isinstance(e, Load) and e.mask is None:
        return e, cast_to
    return None


def _mac(value: Expr, dtype) -> tuple[Expr, Expr, Expr] | None:
    """value == acc + x * y (either order of the add): (acc, x, y)."""
    if not (isinstance(value, Binary) and value.op == "add" and value.dtype == dtype):
        return None
    for acc, prod in ((value.a, value.b), (value.b, value.a)):
        if isinstance(prod, Binary) and prod.op == "mul" and prod.dtype == dtype:
            return acc, prod.a, prod.b
    return None


def match_reduction_loop(s: For, global_or_shared: set[str], locals_: set[str]
                         ) -> ReductionLoop | None:
    """The loop as a ReductionLoop, or None when it is not one (see the module docstring)."""
    k = s.var.name
    if s.var.dtype.is_float:
        return None
    env: dict[str, Expr] = {}            # index declarations, inlined
    factor_vars: dict[str, tuple[Load, Any]] = {}
    macs: list[tuple[Var | tuple[str, int], Any, Expr, Expr]] = []
    for st in s.body:
        if isinstance(st, Comment):
            continue
        if isinstance(st, Declare) and st.init is not None:
            f = _factor(st.init)
            if f is not None and st.var.dtype.is_float:
                factor_vars[st.var.name] = f
                continue
            if _pure_int(st.init) and not st.var.dtype.is_float:
                env[st.var.name] = _substitute(st.init, env)
                continue
            return None
        if isinstance(st, Assign) and st.var.dtype.is_float and st.var.dtype.bits >= 32:
            m = _mac(st.value, st.var.dtype)
            if m is None or not (isinstance(m[0], Var) and m[0].name == st.var.name):
                return None
            macs.append((st.var, st.var.dtype, m[1], m[2]))
            continue
        if isinstance(st, Store) and st.buffer in locals_ and st.mask is None \
                and isinstance(st.index, Const) and st.value.dtype.is_float \
                and st.value.dtype.bits >= 32:
            m = _mac(st.value, st.value.dtype)
            acc = m[0] if m is not None else None
            if not (isinstance(acc, Load) and acc.buffer == st.buffer and acc.mask is None
                    and isinstance(acc.index, Const) and acc.index.value == st.index.value):
                return None
            macs.append(((st.buffer, int(st.index.value)), st.value.dtype, m[1], m[2]))
            continue
        return None
    if not macs:
        return None
    targets = {t.name for t, *_ in macs if isinstance(t, Var)}
    target_bufs = {t[0] for t, *_ in macs if isinstance(t, tuple)}
    operands: list[Operand] = []
    keys: dict[tuple, int] = {}
    uses: Counter = Counter()

    def operand(e: Expr) -> int | None:
        f = factor_vars.get(e.name) if isinstance(e, Var) else _factor(e)
        if isinstance(e, Var):
            uses[e.name] += 1
        if f is None:
            return None
        load, cast_to = f
        if load.buffer not in global_or_shared or load.buffer in target_bufs:
            return None
        lin = _affine(_substitute(load.index, env), k)
        if lin is None or lin[1] is None:
            return None   # a lane-independent index would need no grouping; keep it simple
        rest = lin[1]
        used = _vars(rest, Counter())
        if any(n in targets or n in factor_vars or n == k for n in used) \
                or not _pure_int(rest):
            return None
        key = (load, cast_to)
        if key not in keys:
            keys[key] = len(operands)
            operands.append(Operand(load, lin[0], rest, cast_to))
        return keys[key]

    reductions = []
    for target, dt, x, y in macs:
        px, py = operand(x), operand(y)
        if px is None or py is None:
            return None
        for e in (x, y):
            names = _vars(e, Counter())
            if any(n in targets for n in names):
                return None
        reductions.append(Reduction(target, dt, px, py))
    # each operand variable is used exactly where a reduction names it
    for name in factor_vars:
        total = sum(_vars(e, Counter())[name] for st in s.body for e in _stmt_exprs(st))
        if total != uses[name]:
            return None
    flops: Counter = Counter()
    from .codegen import count_flops, stmt_exprs

    for st in s.body:
        for e in stmt_exprs(st):
            count_flops(e, flops)
    return ReductionLoop(tuple(operands), tuple(reductions), tuple(sorted(flops.items())))


def _stmt_exprs(st: Stmt) -> list[Expr]:
    if isinstance(st, Declare):
        return [st.init] if st.init is not None else []
    if isinstance(st, Assign):
        return [st.value]
    if isinstance(st, Store):
        return [st.index, st.value]
    return []


def emit_reduction_loop(tr: _Translator, s: For, plan: ReductionLoop, ctx: _Ctx,
                        depth: int) -> None:
    """Emit `if W.fast and no cp.async is in flight: <contraction> else: <the plain loop>`."""
    from .codegen import _Ctx as Ctx

    ks, red, sums = tr.tmp("_ks"), tr.tmp("_red"), tr.tmp("_sum")
    start, stop, step = (tr.expr(x, ctx) for x in (s.start, s.stop, s.step))
    # cp.async words in flight (W.pipe) are checked per read by the plain loop only
    tr.emit("if W.fast and W.pipe is None:", depth)
    d = depth + 1
    tr.emit(f"{ks} = np.arange({int_args(start, stop, step)}, dtype=np.int64)", d)
    tr.emit(f"if {ks}.size:", d)
    d += 1
    tr.emit(f"{red} = _Reduction(W, {ks}, {ctx.mask})", d)
    for op in plan.operands:
        space, slot = tr.slot[op.load.buffer]
        ictx = Ctx(ctx.mask, ctx.count, op.load.buffer, ctx.stmt)
        rest = tr.expr(op.rest, ictx)
        site = tr.site(ctx, op.load.buffer, f"{op.load.buffer}[{op.coef} * k + ...]")
        conv = "None" if op.cast is None else tr.caster(op.cast)
        i32 = op.load.index.dtype.bits == 32
        tr.emit(f"{red}.operand({space!r}, {slot}, {rest}, {op.coef}, {conv}, {site}, {i32})", d)
    pairs = [(r.x, r.y) for r in plan.reductions]
    tr.emit(f"{sums} = {red}.run({pairs!r})", d)
    for dt, n in plan.flops:
        if dt not in tr.flop_dtypes:
            tr.flop_dtypes.append(dt)
        tr.emit(f"_fl[{tr.flop_dtypes.index(dt)}] += {n} * {ctx.count} * {ks}.size", d)
    by_target: dict[Any, list[int]] = {}
    for i, r in enumerate(plan.reductions):
        by_target.setdefault(r.target, []).append(i)
    for target, idxs in by_target.items():
        dt = plan.reductions[idxs[0]].dtype
        total = " + ".join(f"{sums}[{i}]" for i in idxs)
        npdt = "np.float64" if dt.bits == 64 else "np.float32"
        if isinstance(target, Var):
            v = tr.var(target)
            new = f"({v} + ({total})).astype({npdt})"
            tr.emit(f"{v} = {new}" if ctx.mask == "None" else f"{v} = W.merge({ctx.mask}, {new}, {v})", d)
        else:
            buf, c = target
            _, slot = tr.slot[buf]
            site = tr.site(ctx, buf, ctx.stmt)
            old = f"W.ldl({slot}, {c}, None, {tr.zero(dt)}, {ctx.mask}, {site})"
            tr.emit(f"W.stl({slot}, {c}, ({old} + ({total})).astype({npdt}), None, "
                    f"{ctx.mask}, {site})", d)
    tr.emit("else:", depth)
    v = tr.var(s.var)
    tr.emit(f"for {v} in range({int_args(start, stop, step)}):", depth + 1)
    tr.body(s.body, ctx, depth + 2)
    if tr.options is not None and tr.options.fault("sim_mac_bf16_accumulator"):
        _round_accumulators(tr, plan, by_target, ctx, depth + 2)  # self-test hook


def _round_accumulators(tr: _Translator, plan: ReductionLoop, targets: dict, ctx: _Ctx,
                        depth: int) -> None:
    """Planted fault (cpu_sim/faults.py): the plain loop's f32 accumulators are rounded
    to bf16 after every step, a multiply-accumulate unit that keeps too few bits. Only the
    per-step (exact_rounding) form can show it: the contraction form sums in float64."""
    from hal.dtypes import DTYPES

    rnd = tr.rounder(DTYPES["bf16"])
    for target, idxs in targets.items():
        if plan.reductions[idxs[0]].dtype.bits != 32:
            continue
        if isinstance(target, Var):
            v = tr.var(target)
            new = f"{rnd}({v}).astype({v}.dtype)"
            tr.emit(f"{v} = {new}" if ctx.mask == "None"
                    else f"{v} = W.merge({ctx.mask}, {new}, {v})", depth)
        else:
            buf, c = target
            _, slot = tr.slot[buf]
            site = tr.site(ctx, buf, ctx.stmt)
            old = f"W.ldl({slot}, {c}, None, 0.0, {ctx.mask}, {site})"
            tr.emit(f"W.stl({slot}, {c}, {rnd}({old}), None, {ctx.mask}, {site})", depth)


__all__ = ["ReductionLoop", "Operand", "Reduction", "match_reduction_loop",
           "emit_reduction_loop"]
