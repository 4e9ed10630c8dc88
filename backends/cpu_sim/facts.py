"""What codegen knows of a kernel's expressions before it translates them: `_Facts`.

One walk over every statement's expressions (`_visit` and its visitors, one per node
kind) records per node whether it is uniform across the wave, whether it derives from
memory (data), and its dtype, and per statement its flops by float dtype; the varying
and data variables are fixpoints over the body. Also where each variable name occurs
(roll.py's spans, widen.py's counts). codegen's `_Translator`, widen.py and roll.py
ask it; it generates no code.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from hal.dtypes import DType, bool_
from hal.kernel import ir_async as ira
from hal.kernel import ir_cluster as irc
from hal.kernel.ir import (
    COMPARISONS,
    EXPR_CHILDREN,
    STMT_EXPRS,
    Assign,
    Binary,
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
    Unary,
    Var,
    stmt_exprs,
)


class _Facts:
    """What codegen asks of a kernel's expressions, gathered by one walk over every
    statement's expressions (`_visit`) instead of one walk per question:

    * uniform: the same in every lane of the wave (constants, scalar params, variables
      only ever given uniform values outside divergent code; not lane indices, loads,
      shuffles, cluster ranks);
    * data: derived from memory or shuffles rather than index arithmetic (i32 overflow in
      data wraps, as integer tensors do on hardware; only index arithmetic is checked);
    * the statement's flops per float dtype (every float Unary/Binary it evaluates).

    The variables that vary and those that hold data are fixpoints over the body: passes
    repeat until one adds no variable it had read before the addition (`stale`). Every
    answer of such a pass holds for its final sets, so a further pass would add nothing:
    its answers (kept per node and per statement) are final. Straight-line code, which
    declares before it reads, needs one pass; a loop-carried value, two or more.
    * the occurrences of every variable name (`var_uses`: read, declared, assigned,
      looped over; what widen.names counts).

    `varying` seeds the varying variables (widen.py: the loop variable varies); `data`,
    the data variables of an enclosing body (widen.py: a loop body's values may come
    from before the loop)."""

    def __init__(self, body: list[Stmt], varying: frozenset[str] = frozenset(),
                 data: frozenset[str] = frozenset()):
        self.varying: set[str] = set(varying)
        self.data: set[str] = set(data)
        self.keep: list[Expr] = []   # nodes asked about after the fixpoint (ids stay theirs)
        while True:
            self.nodes: dict[int, tuple[bool, bool, DType]] = {}   # id -> (uniform, data, dtype)
            self.flops: dict[int, dict[str, int]] = {}             # id(stmt) -> dtype -> n
            self.read: set[str] = set()    # variables read so far in this pass
            self.stale = False             # one of them was added to varying or data since
            self.uses: Counter = Counter()
            self._span_reset()
            self._walk(body, False)
            if not self.stale:
                break
        # occurrences of every variable name in the body (widen.names, counted by the
        # final pass instead of another walk); later visits count apart
        self.var_uses, self.uses = self.uses, Counter()

    # Where each variable name occurs, for roll.py: statements are numbered in program
    # order (pre-order: a statement, then the bodies nested in it), `pos` of a statement
    # and `end` of its last nested one; `first`/`last` of a name: the numbers of the
    # statements it occurs in (read, declared, assigned, looped over) first and last. A
    # run of sibling statements covers the numbers from its first's `pos` to its last's
    # `end`, so a name occurs only in the run when its first..last lie in that range.
    def _span_reset(self) -> None:
        self.n_stmt = 0
        self.stmt_pos: dict[int, int] = {}
        self.stmt_end: dict[int, int] = {}
        self.first: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self.shared_stmts = False   # a statement object placed twice: no spans to trust

    def _occurs(self, name: str) -> None:
        self.uses[name] += 1
        if name not in self.first:
            self.first[name] = self.n_stmt
        self.last[name] = self.n_stmt

    def only_within(self, name: str, first: Stmt, last: Stmt) -> bool:
        """Whether every occurrence of variable `name` is in the statements from `first`
        to `last` (siblings, in program order) or the bodies nested in them."""
        lo, hi = self.stmt_pos.get(id(first)), self.stmt_end.get(id(last))
        return (not self.shared_stmts and lo is not None and hi is not None
                and name in self.first and lo <= self.first[name] and self.last[name] <= hi)

    def uniform(self, e: Expr) -> bool:
        return self._node(e)[0]

    def is_data(self, e: Expr) -> bool:
        return self._node(e)[1]

    def dtype(self, e: Expr) -> DType:
        """`e.dtype`, without walking down Unary/Binary operand chains again."""
        return self._node(e)[2]

    def stmt_flops(self, s: Stmt) -> list[tuple[str, int]]:
        """(dtype name, flops) of the statement's own expressions, by dtype name."""
        fl = self.flops.get(id(s))
        if fl is None:   # a statement outside the analysed body: its nodes kept, it not
            self.keep.extend(stmt_exprs(s))
            fl = self._visit_stmt(s)
        return sorted(fl.items())

    def _node(self, e: Expr) -> tuple[bool, bool, DType]:
        hit = self.nodes.get(id(e))
        if hit is None:   # a node built after the analysis (vectorize's index rests)
            self.keep.append(e)
            hit = _visit(self, e, {})
        return hit

    def _visit_stmt(self, s: Stmt) -> dict[str, int]:
        fl: dict[str, int] = {}
        for f in STMT_EXPRS.get(type(s), ()):   # (stmt_exprs without its list)
            x = getattr(s, f)
            if isinstance(x, tuple):
                for y in x:
                    _visit(self, y, fl)
            elif x is not None:
                _visit(self, x, fl)
        return fl

    def _add(self, names: set[str], name: str) -> None:
        if name not in names:
            names.add(name)
            if name in self.read:   # an answer of this pass may not hold: pass again
                self.stale = True

    def _walk(self, body: list[Stmt], divergent: bool) -> None:
        nodes = self.nodes
        for s in body:
            self.n_stmt += 1
            if id(s) in self.stmt_pos:
                self.shared_stmts = True
            self.stmt_pos[id(s)] = self.n_stmt
            self.flops[id(s)] = self._visit_stmt(s)
            t = type(s)
            if t is Declare:
                self._occurs(s.var.name)
                if s.init is not None:
                    uni, dat, _ = nodes[id(s.init)]
                    if not uni:
                        self._add(self.varying, s.var.name)
                    if dat:
                        self._add(self.data, s.var.name)
            elif t is Assign:
                self._occurs(s.var.name)
                uni, dat, _ = nodes[id(s.value)]
                if divergent or not uni:
                    self._add(self.varying, s.var.name)
                if dat:
                    self._add(self.data, s.var.name)
            elif t is If or t is ira.Roles:
                d = divergent or not nodes[id(s.cond)][0]
                for b in (s.then, s.orelse) if t is If else (s.first, s.second):
                    self._walk(b, d)
            elif t is For:
                self._occurs(s.var.name)
                u = nodes[id(s.start)][0] and nodes[id(s.stop)][0] and nodes[id(s.step)][0]
                if not u:
                    self._add(self.varying, s.var.name)
                self._walk(s.body, divergent or not u)
            self.stmt_end[id(s)] = self.n_stmt


# ------------------------------------------------------------- the one expression walk
# Each visitor returns (and records in facts.nodes) a node's (uniform, data, dtype) and
# counts its float arithmetic into `fl`; dtypes come up from the children (Unary's and
# Binary's dtype properties would walk down their operand chains again).
def _visit(facts: _Facts, e: Expr, fl: dict[str, int]) -> tuple[bool, bool, DType]:
    return _VISITORS.get(type(e), _visit_node)(facts, e, fl)


def _visit_leaf(facts: _Facts, e: Expr, fl: dict[str, int]) -> tuple[bool, bool, DType]:
    r = facts.nodes[id(e)] = (True, False, e.dtype)       # Const, Param
    return r


def _visit_var(facts: _Facts, e: Var, fl: dict[str, int]) -> tuple[bool, bool, DType]:
    name = e.name
    facts.read.add(name)
    facts.uses[name] += 1   # (_Facts._occurs, inlined: this runs for every Var node)
    if name not in facts.first:
        facts.first[name] = facts.n_stmt
    facts.last[name] = facts.n_stmt
    r = facts.nodes[id(e)] = (name not in facts.varying, name in facts.data, e.dtype)
    return r


def _visit_lane(facts: _Facts, e: Expr, fl: dict[str, int]) -> tuple[bool, bool, DType]:
    r = facts.nodes[id(e)] = (False, False, e.dtype)      # Special, ClusterCtaRank
    return r


def _visit_memory(facts: _Facts, e: Load | Shuffle, fl: dict[str, int]
                  ) -> tuple[bool, bool, DType]:
    x = None
    for f in EXPR_CHILDREN[type(e)]:   # (their flops and their nodes' facts)
        c = getattr(e, f)
        if c is not None:
            r = _visit(facts, c, fl)
            if x is None:
                x = r[2]
    dt = x if type(e) is Shuffle else e.dtype   # Shuffle.dtype: its value's
    r = facts.nodes[id(e)] = (False, True, dt)
    return r


def _visit_unary(facts: _Facts, e: Unary, fl: dict[str, int]) -> tuple[bool, bool, DType]:
    uni, dat, dt = _visit(facts, e.x, fl)
    if e.op == "logical_not":
        dt = bool_
    elif dt.kind == "float":
        fl[dt.name] = fl.get(dt.name, 0) + 1
    r = facts.nodes[id(e)] = (uni, dat, dt)
    return r


def _visit_binary(facts: _Facts, e: Binary, fl: dict[str, int]) -> tuple[bool, bool, DType]:
    ua, da, dt = _visit(facts, e.a, fl)
    ub, db, _ = _visit(facts, e.b, fl)
    if e.op in COMPARISONS:
        dt = bool_
    elif dt.kind == "float":
        fl[dt.name] = fl.get(dt.name, 0) + 1
    r = facts.nodes[id(e)] = (ua and ub, da or db, dt)
    return r


def _visit_select(facts: _Facts, e: Select, fl: dict[str, int]) -> tuple[bool, bool, DType]:
    up, dp, _ = _visit(facts, e.pred, fl)
    ut, dt_, dt = _visit(facts, e.on_true, fl)   # Select.dtype: on_true's
    uf, df, _ = _visit(facts, e.on_false, fl)
    r = facts.nodes[id(e)] = (up and ut and uf, dp or dt_ or df, dt)
    return r


def _visit_node(facts: _Facts, e: Expr, fl: dict[str, int]) -> tuple[bool, bool, DType]:
    """Any other node (Select, Cast, SmemDesc, ...): uniform when all its children are,
    data when any is."""
    uni, dat = True, False
    for f in EXPR_CHILDREN.get(type(e), ()):
        c = getattr(e, f)
        if c is not None:
            u, d, _ = _visit(facts, c, fl)
            uni, dat = uni and u, dat or d
    r = facts.nodes[id(e)] = (uni, dat, e.dtype)
    return r


_VISITORS: dict[type, Callable[..., tuple[bool, bool, DType]]] = {
    Const: _visit_leaf, Param: _visit_leaf, Var: _visit_var, Special: _visit_lane,
    irc.ClusterCtaRank: _visit_lane, Load: _visit_memory, Shuffle: _visit_memory,
    Unary: _visit_unary, Binary: _visit_binary, Select: _visit_select,
}
