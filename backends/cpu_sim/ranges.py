"""Integer value ranges of a kernel's index arithmetic: `IndexRanges`.

codegen wraps every i32 add/sub/mul/... of index math in `W.i32`, which checks (two
reductions over the lanes) that the exact int64 result fits in i32. Most index math
provably fits: thread and block indices are bounded by the launch, loop variables by
their constant bounds, constants are constants. This analysis gives each integer
expression an interval [lo, hi] that holds for every lane and every execution, or None
(unknown), and codegen leaves out the check where the interval lies inside i32: the
check could neither fire nor wrap there, so the result is the same.

Sound by construction, conservatively:
* Special: thread_idx in [0, block), block_idx_* in [0, grid_*) (the compiled-kernel
  cache keys on grid and block for this reason);
* Const: itself; Param, Load, Shuffle and anything else: unknown;
* Var: known only when it is declared once with an initialiser and never assigned
  (its value is its initialiser's), or is the variable of a For with uniform bounds
  (a Python range: values in [start.lo, stop.hi - 1]) and a known step > 0;
* add, sub, mul, neg, abs, min, max: interval arithmetic on exact integers; div
  (truncating) by an interval that excludes 0: the extreme quotients of the corners;
  remainder by a known positive interval: |r| < divisor, r >= 0 for a non-negative
  dividend; select: the union of both arms. Every operand must itself be known and
  inside i32 (an operand outside i32 keeps its own check and may have wrapped).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hal.dtypes import DType
from hal.kernel.ir import (
    Assign,
    Binary,
    Const,
    Declare,
    Expr,
    For,
    Kernel,
    Select,
    Special,
    Stmt,
    Unary,
    Var,
    walk_stmts,
)

from .node_memo import MISSING, NodeMemo

I32_MIN, I32_MAX = -(2 ** 31), 2 ** 31 - 1
Interval = tuple[int, int]


def _fits(iv: Interval | None) -> bool:
    return iv is not None and I32_MIN <= iv[0] and iv[1] <= I32_MAX


def _node_dtype(e: Expr) -> DType:
    return e.dtype


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


class IndexRanges:
    """Intervals of a kernel's integer expressions (module docstring)."""

    def __init__(self, kernel: Kernel, uniform: Callable[[Expr], bool],
                 stmts: list[Stmt] | None = None,
                 dtype: Callable[[Expr], DType] | None = None):
        """`stmts`: walk_stmts(kernel.body), when the caller has it already; `dtype`: a
        node's dtype (codegen's, memoised: a Unary's or Binary's `dtype` property walks
        down its operand chain, once per level of a nested expression)."""
        self.dtype = _node_dtype if dtype is None else dtype
        g = tuple(int(x) for x in kernel.grid)
        self.special = {"thread_idx": (0, int(kernel.block) - 1), "block_idx_x": (0, g[0] - 1),
                        "block_idx_y": (0, g[1] - 1), "block_idx_z": (0, g[2] - 1)}
        decls: dict[str, int] = {}
        assigned: set[str] = set()
        self.defs: dict[str, Any] = {}
        for s in walk_stmts(kernel.body) if stmts is None else stmts:
            if isinstance(s, Declare):
                decls[s.var.name] = decls.get(s.var.name, 0) + 1
                self.defs[s.var.name] = s
            elif isinstance(s, For):
                decls[s.var.name] = decls.get(s.var.name, 0) + 1
                self.defs[s.var.name] = s
                if not all(uniform(x) for x in (s.start, s.stop, s.step)):
                    assigned.add(s.var.name)   # a per-lane loop steps finished lanes on
            elif isinstance(s, Assign):
                assigned.add(s.var.name)
        self.usable = {n for n, c in decls.items() if c == 1 and n not in assigned}
        self.var_iv: dict[str, Interval | None] = {}
        self.busy: set[str] = set()
        self.memo = NodeMemo()

    def fits_i32(self, e: Expr) -> bool:
        """Whether `e`'s exact value is inside i32 for every lane (False: unknown)."""
        return _fits(self.interval(e))

    def interval(self, e: Expr) -> Interval | None:
        # memoised outside variable definitions only: inside one (`busy`) a variable of
        # the chain reads as unknown, an answer that must not outlive that computation.
        # The memo probe is inline: this runs once per node of every index expression
        # (and the analysis was a twentieth of a translation).
        if self.busy:
            return self._interval(e)
        hit = self.memo.by_id.get(id(e), MISSING)
        if hit is MISSING:
            hit = self.memo.put(e, self._interval(e))
        return hit

    def _interval(self, e: Expr) -> Interval | None:
        rule = _RULES.get(type(e))
        return None if rule is None else rule(self, e)   # (anything else: unknown)

    def _const(self, e: Const) -> Interval | None:
        if isinstance(e.value, bool) or not isinstance(e.value, int):
            return None
        return (int(e.value), int(e.value))

    def _special(self, e: Special) -> Interval | None:
        return self.special.get(e.kind)

    def _variable(self, e: Var) -> Interval | None:
        return self._var(e.name)

    def _select(self, e: Select) -> Interval | None:
        a, b = self.interval(e.on_true), self.interval(e.on_false)
        return (min(a[0], b[0]), max(a[1], b[1])) if _fits(a) and _fits(b) else None

    def _unary(self, e: Unary) -> Interval | None:
        x = self.interval(e.x)
        if not _fits(x) or not self.dtype(e).is_int:
            return None
        if e.op == "neg":
            return (-x[1], -x[0])
        if e.op == "abs":
            lo = 0 if x[0] <= 0 <= x[1] else min(abs(x[0]), abs(x[1]))
            return (lo, max(abs(x[0]), abs(x[1])))
        return None

    def _var(self, name: str) -> Interval | None:
        if name in self.var_iv:
            return self.var_iv[name]
        if name not in self.usable or name in self.busy:
            return None
        self.busy.add(name)
        s = self.defs[name]
        iv: Interval | None = None
        if isinstance(s, Declare):
            if s.init is not None:
                iv = self.interval(s.init)
        else:
            a, b, st = (self.interval(x) for x in (s.start, s.stop, s.step))
            if _fits(a) and _fits(b) and _fits(st) and st[0] > 0:
                iv = (a[0], max(a[0], b[1] - 1))
        self.busy.discard(name)
        iv = iv if _fits(iv) else None
        self.var_iv[name] = iv
        return iv

    def _binary(self, e: Binary) -> Interval | None:
        if not self.dtype(e).is_int:
            return None
        a, b = self.interval(e.a), self.interval(e.b)
        if not (_fits(a) and _fits(b)):
            return None
        op = e.op
        if op == "add":
            return (a[0] + b[0], a[1] + b[1])
        if op == "sub":
            return (a[0] - b[1], a[1] - b[0])
        if op == "mul":
            p = [x * y for x in a for y in b]
            return (min(p), max(p))
        if op == "minimum":
            return (min(a[0], b[0]), min(a[1], b[1]))
        if op == "maximum":
            return (max(a[0], b[0]), max(a[1], b[1]))
        if op == "div" and (b[0] > 0 or b[1] < 0):   # truncating or flooring: both
            q = [f(x, y) for x in a for y in b for f in (_trunc_div, int.__floordiv__)]
            return (min(q), max(q))
        if op == "remainder" and b[0] > 0:
            hi = b[1] - 1
            return (0, min(hi, a[1])) if a[0] >= 0 else (-hi, hi)
        return None


# node type -> its rule (a dict probe instead of an isinstance chain per node)
_RULES: dict[type, Callable[[IndexRanges, Any], Interval | None]] = {
    Const: IndexRanges._const, Special: IndexRanges._special, Var: IndexRanges._variable,
    Select: IndexRanges._select, Unary: IndexRanges._unary, Binary: IndexRanges._binary,
}
