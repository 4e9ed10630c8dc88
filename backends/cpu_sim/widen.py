"""Loops of independent iterations run as one wide pass: `widenable`, `emit_widened_loop`.

A thread often runs a uniform loop whose iterations do not depend on each other: the
prologue of a fused matmul fills its A tile element by element (`for l < 128: e = l*32 +
tid; a_tile[...] = rms_norm(x[...])`), the row statistics of a fused norm run one row per
iteration. Run iteration by iteration, each costs a NumPy call per statement on a wave of
a few hundred lanes: the QKV kernel of a Llama layer spent most of its simulation there.

Such a loop is run as if its iterations were more lanes: a *widened view* of the wave
(`view`) holds `k` copies of every lane, iteration-major (virtual lane `i * L + l` is lane
`l` in iteration `i`; virtual block `i * B + b` is block `b`), so thread identities,
blocks, warps, shared-memory offsets and part tallies are those of the real lanes, and
the loop variable is a lane array. The body is translated a second time with the loop
variable varying (codegen's uniformity) into a function called on the view; memory,
race tables and flop counters are the wave's own, and the view's byte counters are
folded back. Every check runs on every (iteration, lane).

What makes a loop widenable (`widenable`, decided on the kernel IR):
* statements: declarations, assignments to variables declared inside the loop, stores
  to global/shared buffers, `If`, nested `For` (run as they are, inside the wide pass),
  comments; expressions: arithmetic, casts, selects, loads from global/shared buffers,
  shuffles (a warp is still 32 consecutive lanes of one virtual block);
* no buffer is both loaded and stored in the loop (so the order of iterations cannot
  change what a load sees), no local arrays, barriers, atomics, matrix or async ops,
  no multiply-accumulate loop (vectorize.py) inside, no variable of the loop used after it;
* the kernel uses no thread-block cluster (its CTAs' shared memory is cluster_sim's);
* at run time: at least two iterations, a wave of at most `WIDEN_MAX_WAVE` lanes (where
  the per-statement cost is NumPy's call overhead), no cp.async pipeline on the wave, and at most `WIDEN_LANES` lanes per pass (longer loops run in chunks of
  iterations, in order).

Equivalence: a store's value and address depend only on values from before the loop
and on its own iteration; two iterations of one thread that store to one word keep the
later one (iteration-major order), as the plain loop does. The error reported for a
faulty loop must be the plain loop's (the first failing iteration, then statement): when
any check fails in the wide pass, the wave's counters and the shared buffers the loop
stores to are restored and the plain loop runs, and reports.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from hal.kernel.ir import (
    EXPR_CHILDREN,
    Assign,
    Binary,
    Cast,
    Comment,
    Const,
    Declare,
    Expr,
    For,
    If,
    Load,
    Param,
    Select,
    Shuffle,
    Special,
    Stmt,
    Store,
    Unary,
    Var,
    stmt_exprs,
    walk_expr,
    walk_stmts,
)

from .vectorize import int_args, match_reduction_loop

if TYPE_CHECKING:   # pragma: no cover
    from .codegen import _Ctx, _Translator
    from .lanes import Wave

WIDEN_LANES = 1 << 17      # virtual lanes per wide pass (bounds the arrays' memory)
# a wave of more lanes runs its loops plain: a NumPy call on its arrays already costs far
# more than the call itself, and the wide pass's snapshot (a copy of the stored shared
# buffers, for the fallback) would cost about as much as the loop (measured on the GPT
# block's 12,288-lane tile loads: 10-15% slower wide)
WIDEN_MAX_WAVE = 4096
# a loop with fewer constant iterations stays plain: translating its body twice costs
# more than the wide pass saves (conformance's small kernels)
MIN_TRIPS = 16
ENABLED = True             # False: every loop stays plain (the tests compare both)
# the wave's scalar counters a view adds to (lists, dicts and arrays are shared)
COUNTERS = ("gr", "gw", "sr", "sw", "atomics", "barriers", "bank_conflicts")
_STMTS = (Declare, Assign, Store, If, For, Comment)
_EXPRS = (Const, Param, Var, Special, Unary, Binary, Select, Cast, Load, Shuffle)


def names(stmts: list[Stmt]) -> Counter:
    """Occurrences of every variable name (read, declared, assigned, looped over)."""
    acc: Counter = Counter()
    for s in walk_stmts(stmts):
        for e in stmt_exprs(s):
            _count_vars(e, acc)
        if isinstance(s, (Declare, Assign, For)):
            acc[s.var.name] += 1
    return acc


def _count_vars(e: Expr, acc: Counter) -> None:
    """Var occurrences in `e` (walk_expr's order of nodes, without its generators)."""
    t = type(e)
    if t is Var:
        acc[e.name] += 1
        return
    for f in EXPR_CHILDREN.get(t, ()):
        c = getattr(e, f)
        if c is not None:
            _count_vars(c, acc)


def widenable(s: For, kernel_body: list[Stmt] | Counter, global_or_shared: set[str],
              local_names: set[str]) -> tuple[str, ...] | None:
    """The buffers `s` stores to (sorted) when its iterations can run as one wide pass
    (module docstring), else None. `kernel_body`: the kernel's statements, or their
    `names` (computed once per kernel by the caller)."""
    if not ENABLED:
        return None
    if isinstance(s.start, Const) and isinstance(s.stop, Const) and isinstance(s.step, Const):
        step = int(s.step.value)
        if step <= 0 or len(range(int(s.start.value), int(s.stop.value), step)) < MIN_TRIPS:
            return None
    declared = {s.var.name}
    loads: set[str] = set()
    stores: set[str] = set()
    for st in walk_stmts(s.body):
        if not isinstance(st, _STMTS):
            return None
        if isinstance(st, Declare):
            declared.add(st.var.name)
        elif isinstance(st, For):
            if match_reduction_loop(st, global_or_shared, local_names) is not None:
                return None
            declared.add(st.var.name)
        elif isinstance(st, Assign) and st.var.name not in declared:
            return None     # a value carried from one iteration to the next
        elif isinstance(st, Store):
            if st.buffer not in global_or_shared:
                return None
            stores.add(st.buffer)
        for e in stmt_exprs(st):
            for x in walk_expr(e):
                if not isinstance(x, _EXPRS):
                    return None
                if isinstance(x, Load):
                    if x.buffer not in global_or_shared:
                        return None
                    loads.add(x.buffer)
    if loads & stores:
        return None
    inside = names([s])
    everywhere = kernel_body if isinstance(kernel_body, Counter) else names(kernel_body)
    if any(everywhere[n] > inside[n] for n in declared):
        return None         # a variable of the loop is read after it
    return tuple(sorted(stores))


def _outer_inputs(tr: _Translator, s: For) -> list[str]:
    """Python names of the values from outside the loop that its body reads."""
    declared = {s.var.name} | {st.var.name for st in walk_stmts(s.body)
                               if isinstance(st, (Declare, For))}
    names: set[str] = set()
    for st in walk_stmts(s.body):
        for e in stmt_exprs(st):
            for x in walk_expr(e):
                if isinstance(x, Var) and x.name not in declared:
                    names.add(tr.var(x))
                elif isinstance(x, Param):
                    names.add(tr.e_Param(x, None))
    return sorted(names)


def emit_widened_loop(tr: _Translator, s: For, stores: tuple[str, ...], ctx: _Ctx,
                      bounds: tuple[str, str, str], depth: int) -> None:
    """Emit the loop as: the wide pass (a function of the view, defined in `tr.prelude`)
    with the plain loop as its fallback."""
    from .codegen import _Ctx, _Facts

    fn = tr.fresh("_wb")   # (a function of the prelude, not a temporary)
    outer = _outer_inputs(tr, s)
    counts = [c for c in (ctx.count,) if c != "_L"]
    masks = [m for m in (ctx.mask,) if m != "None"]
    params = ["W", "_L", "_fl", "_tid", "_bx", "_by", "_bz", tr.var(s.var),
              *masks, *counts, *outer]
    # translate the body again with the loop variable varying, into the function
    saved_lines, saved_facts, saved_flag = tr.lines, tr.facts, tr.widening
    tr.lines, tr.widening = [], True
    tr.facts = _Facts(s.body, frozenset(saved_facts.varying | {s.var.name}),
                      frozenset(saved_facts.data))   # (the kernel's data variables)
    try:
        tr.body(s.body, _Ctx(ctx.mask, ctx.count), 1)
        body = tr.lines
    finally:
        tr.lines, tr.facts, tr.widening = saved_lines, saved_facts, saved_flag
    tr.prelude.append(f"def {fn}({', '.join(params)}):")
    tr.prelude.extend(body)

    slots = [tr.slot[b] for b in stores]
    n, c, w0, k, v, snap = (tr.tmp(p) for p in ("_wn", "_wc", "_w0", "_wk", "_wv", "_ws"))
    start, stop, step = bounds
    args = ", ".join([v, f"{v}.L", "_fl", f"{v}.tid", f"{v}.bx", f"{v}.by",
                      f"{v}.bz", f"WD.iters({start}, {step}, {w0}, {k}, W.L)",
                      *(f"WD.wide({m}, {k})" for m in masks),
                      *(f"{x} * {k}" for x in counts),
                      *(f"WD.wide({x}, {k})" for x in outer)])
    tr.emit(f"{n} = len(range({int_args(start, stop, step)}))", depth)
    tr.emit(f"{c} = WD.chunk(W, {n})", depth)
    tr.emit(f"if {c}:", depth)
    tr.emit(f"{snap} = WD.snapshot(W, {slots!r})", depth + 1)
    tr.emit("try:", depth + 1)
    tr.emit(f"for {w0} in range(0, {n}, {c}):", depth + 2)
    tr.emit(f"{k} = min({c}, {n} - {w0})", depth + 3)
    tr.emit(f"{v} = WD.view(W, {k})", depth + 3)
    tr.emit(f"{fn}({args})", depth + 3)
    tr.emit(f"WD.fold(W, {v})", depth + 3)
    tr.emit("except SimulationError:", depth + 1)
    tr.emit(f"WD.restore(W, {snap})", depth + 2)
    tr.emit(f"{c} = 0", depth + 2)
    tr.emit(f"if not {c}:", depth)
    tr.emit(f"for {tr.var(s.var)} in range({int_args(start, stop, step)}):", depth + 1)
    tr.body(s.body, ctx, depth + 2)


# ----------------------------------------------------------------------------- run time
def chunk(W: Wave, n: int) -> int:
    """Iterations per wide pass (0: run the plain loop)."""
    if n < 2 or W.pipe is not None or int(W.L) > WIDEN_MAX_WAVE:
        return 0
    k = WIDEN_LANES // max(int(W.L), 1)
    return min(k, n) if k >= 2 else 0


def view(W: Wave, k: int) -> Wave:
    """The wave with every lane repeated `k` times, iteration-major (module docstring)."""
    cache = W.__dict__.setdefault("_wide_views", {})
    parts = cache.get(k)
    if parts is None:
        T = W.T
        lane = np.arange(int(W.L) * k, dtype=np.int64)
        parts = cache[k] = {
            "lane": lane, "blk": lane // T, "lane_id": np.tile(W.lane_id, k),
            "tid": np.tile(W.tid, k), "bx": np.tile(W.bx, k),
            "by": np.tile(W.by, k), "bz": np.tile(W.bz, k),
            "lane_part": None if W.lane_part is None else np.tile(W.lane_part, k),
            "sh_off": [np.tile(o, k) for o in W.sh_off],
            "block_base": [np.tile(b, k) for b in W.block_base],
            "L": W.L * k, "B": W.B * k,
        }
    V = copy.copy(W)
    V.__dict__.update(parts)
    V._lane_in_group, V._shuffle_plans, V._wide_views = {}, {}, {}
    return V


def fold(W: Wave, V: Wave) -> None:
    """Add the view's scalar counters back to the wave."""
    for name in COUNTERS:
        setattr(W, name, getattr(V, name))


def iters(start: Any, step: Any, first: int, k: int, L: int) -> np.ndarray:
    """The loop variable of iterations first .. first+k-1, one value per virtual lane."""
    s, st = int(start), int(step)
    return np.repeat(np.arange(s + first * st, s + (first + k) * st, st, dtype=np.int64),
                     int(L))


def wide(x: Any, k: int) -> Any:
    """A value from outside the loop as seen by every iteration's lanes."""
    return np.tile(x, k) if isinstance(x, np.ndarray) and x.ndim else x


def snapshot(W: Wave, slots: list[tuple[str, int]]) -> tuple:
    """What a failed wide pass may have changed: counters and the stored shared buffers."""
    shared = []
    for space, j in slots:
        if space == "s":
            shared.append((j, W.sh[j].copy(),
                           W.sh_writer[j].copy() if W.check else None,
                           W.sh_reader[j].copy() if W.check else None,
                           list(W.sh_reads[j]), W.sh_pending[j], W.sh_dirty[j], W.sh_read[j],
                           None if W.sh_atomic[j] is None else W.sh_atomic[j].copy()))
    return ({n: getattr(W, n) for n in COUNTERS}, list(W.fl), dict(W.mfl), shared)


def restore(W: Wave, snap: tuple) -> None:
    counters, fl, mfl, shared = snap
    for n, x in counters.items():
        setattr(W, n, x)
    W.fl[:] = fl
    W.mfl.clear()
    W.mfl.update(mfl)
    for j, sh, writer, reader, reads, pending, dirty, read, atomic in shared:
        W.sh[j][:] = sh
        if writer is not None:
            W.sh_writer[j][:] = writer
            W.sh_reader[j][:] = reader
        W.sh_reads[j][:] = reads
        W.sh_pending[j], W.sh_dirty[j], W.sh_read[j] = pending, dirty, read
        W.sh_atomic[j] = atomic


__all__ = ["COUNTERS", "MIN_TRIPS", "WIDEN_LANES", "WIDEN_MAX_WAVE", "chunk", "names",
           "emit_widened_loop", "fold", "iters", "restore", "snapshot", "view", "wide",
           "widenable"]
