"""codegen's `_Facts`: the one walk that gathers uniformity, dataflow and flops must give,
for every expression node and every statement, exactly what the three separate walks it
replaced gave (spelt out here as the reference: plain recursions over `children`)."""

from __future__ import annotations

from collections import Counter

from hal.backends.cpu_sim.codegen import _Facts, compile_kernel
from hal.dtypes import bf16, f16, f32, i32
from hal.kernel.ir import (
    BLOCK_IDX_X,
    THREAD_IDX,
    Assign,
    Binary,
    BufferParam,
    Cast,
    Const,
    Declare,
    For,
    If,
    Kernel,
    Load,
    Param,
    ScalarParam,
    Select,
    Shuffle,
    Special,
    Store,
    Unary,
    Var,
    children,
    stmt_exprs,
    walk_expr,
    walk_stmts,
)

# ----------------------------------------------------------------- the reference walks


def _ref_uniform(e, varying) -> bool:
    if isinstance(e, (Const, Param)):
        return True
    if isinstance(e, Var):
        return e.name not in varying
    if isinstance(e, (Special, Load, Shuffle)):
        return False
    return all(_ref_uniform(c, varying) for c in children(e))


def _ref_varying(body, varying=frozenset()) -> set[str]:
    out = set(varying)

    def walk(stmts, divergent):
        for s in stmts:
            if isinstance(s, Declare):
                if s.init is not None and not _ref_uniform(s.init, out):
                    out.add(s.var.name)
            elif isinstance(s, Assign):
                if divergent or not _ref_uniform(s.value, out):
                    out.add(s.var.name)
            elif isinstance(s, If):
                d = divergent or not _ref_uniform(s.cond, out)
                walk(s.then, d)
                walk(s.orelse, d)
            elif isinstance(s, For):
                u = all(_ref_uniform(x, out) for x in (s.start, s.stop, s.step))
                if not u:
                    out.add(s.var.name)
                walk(s.body, divergent or not u)

    while True:
        n = len(out)
        walk(body, False)
        if len(out) == n:
            return out


def _ref_data(e, data) -> bool:
    if isinstance(e, (Load, Shuffle)):
        return True
    if isinstance(e, Var):
        return e.name in data
    return any(_ref_data(c, data) for c in children(e))


def _ref_data_vars(body) -> set[str]:
    out: set[str] = set()
    while True:
        n = len(out)
        for s in walk_stmts(body):
            if isinstance(s, Declare) and s.init is not None and _ref_data(s.init, out):
                out.add(s.var.name)
            elif isinstance(s, Assign) and _ref_data(s.value, out):
                out.add(s.var.name)
        if len(out) == n:
            return out


def _ref_flops(s) -> list[tuple[str, int]]:
    acc: Counter = Counter()
    for e in stmt_exprs(s):
        for x in walk_expr(e):
            if isinstance(x, (Unary, Binary)) and x.dtype.is_float:
                acc[x.dtype.name] += 1
    return sorted(acc.items())


def _assert_facts_match(body, facts, varying, data) -> None:
    checked = 0
    for s in walk_stmts(body):
        assert facts.stmt_flops(s) == _ref_flops(s), s
        for e in stmt_exprs(s):
            for x in walk_expr(e):
                assert facts.uniform(x) == _ref_uniform(x, varying), x
                assert facts.is_data(x) == _ref_data(x, data), x
                checked += 1
    assert checked


# ----------------------------------------------------------------- kernels

i, j, a, b, t, h, m = (Var(n, i32) for n in "ijabthm")
x, y, z, acc = Var("x", f32), Var("y", f32), Var("z", f16), Var("acc", f32)
n_param = Param("n", i32)
PARAMS = [BufferParam("src", f32, (4096,)), BufferParam("half", f16, (4096,)),
          BufferParam("idx", i32, (4096,)), BufferParam("out", f32, (4096,), readonly=False),
          ScalarParam("n", i32)]


def _kernel(body, name="k"):
    return Kernel(name, PARAMS, body, grid=(2, 1, 1), block=64)


# a variable becomes varying / data only on a later pass: `b` and `y` read `a` and `x`
# before the loop's end assigns them lane-dependent loaded values
LATE = [
    Declare(a, Const(0, i32)),
    Declare(x, Const(0.0, f32)),
    Declare(acc, Const(0.0, f32)),
    For(j, Const(0, i32), n_param, Const(1, i32), [
        Declare(b, a + j * Const(3, i32)),
        Declare(y, x * Const(2.0, f32) + Unary("neg", x)),
        Assign(acc, acc + y * y),
        Assign(a, Load("idx", THREAD_IDX + j, i32)),
        Assign(x, Load("src", a, f32)),
    ]),
    Store("out", THREAD_IDX, acc),
]

MIXED = [
    Declare(i, BLOCK_IDX_X * Const(64, i32) + THREAD_IDX),
    Declare(t, n_param * Const(2, i32)),                 # uniform
    Declare(h, Const(5, i32)),
    Declare(z, Cast(Load("half", i, f16), f16)),
    Declare(x, Cast(z, f32) * Cast(z * z, f32)),         # f16 and f32 flops
    If(Binary("lt", THREAD_IDX, Const(32, i32)),          # divergent: h varies
       [Assign(h, t + Const(1, i32))], []),
    If(Binary("lt", t, Const(100, i32)),                  # uniform: m stays uniform
       [Declare(m, t - Const(1, i32))], []),
    Declare(y, Select(Binary("gt", x, Const(0.0, f32)), x, Unary("neg", x))),
    Declare(acc, Shuffle(y + Const(1.0, f32), "xor", Const(1, i32), 32)),
    For(j, Const(0, i32), i, Const(1, i32), [            # per-lane bounds: j varies
        Assign(acc, acc + Cast(Cast(acc, bf16) * Cast(acc, bf16), f32)),
    ]),
    Store("out", i, Select(Unary("logical_not", Binary("eq", h, t)), acc, y)),
]


def _check(body) -> None:
    facts = _Facts(body)
    varying, data = _ref_varying(body), _ref_data_vars(body)
    assert facts.varying == varying and facts.data == data
    _assert_facts_match(body, facts, varying, data)


def test_facts_equal_the_separate_walks_on_a_loop_that_needs_a_second_pass():
    facts = _Facts(LATE)
    assert {"a", "b", "x", "y", "acc"} <= facts.varying
    assert {"a", "b", "x", "y", "acc"} <= facts.data
    _check(LATE)


def test_facts_equal_the_separate_walks_on_divergence_shuffles_selects_and_casts():
    facts = _Facts(MIXED)
    assert "h" in facts.varying and "m" not in facts.varying and "t" not in facts.varying
    assert "j" in facts.varying and "j" not in facts.data
    assert "acc" in facts.data and "h" not in facts.data
    _check(MIXED)


def test_flops_count_float_arithmetic_only():
    facts = _Facts(MIXED)
    by_stmt = {id(s): facts.stmt_flops(s) for s in walk_stmts(MIXED)}
    assert by_stmt[id(MIXED[4])] == [("f16", 1), ("f32", 1)]
    assert by_stmt[id(MIXED[7])] == [("f32", 1)]          # the comparison is not a flop
    assert by_stmt[id(MIXED[-1])] == []                   # logical_not, eq: none
    assert by_stmt[id(MIXED[9].body[0])] == [("bf16", 1), ("f32", 1)]


def test_a_loop_body_seeded_with_the_kernel_s_varying_and_data_variables():
    """widen.py re-analyses a loop body with its variable varying and the kernel's data
    variables: the answers are those of the kernel-wide data and the seeded uniformity."""
    loop = LATE[3]
    outer = _Facts(LATE)
    inner = _Facts(loop.body, frozenset(outer.varying | {"j"}), frozenset(outer.data))
    varying = _ref_varying(loop.body, frozenset(outer.varying | {"j"}))
    assert inner.data == _ref_data_vars(LATE) and inner.varying == varying
    _assert_facts_match(loop.body, inner, varying, inner.data)


def test_nodes_built_after_the_analysis_are_answered_and_kept():
    facts = _Facts(MIXED)
    fresh = Binary("add", MIXED[0].var, Load("idx", Const(0, i32), i32))
    assert not facts.uniform(fresh) and facts.is_data(fresh)
    assert facts.uniform(Binary("mul", n_param, Const(3, i32)))
    assert fresh in facts.keep


def test_translation_flop_counters_follow_the_facts():
    """The generated source adds each statement's flops: f16 and f32 both counted."""
    ck = compile_kernel(_kernel(MIXED))
    assert set(ck.flop_dtypes) == {"f16", "f32", "bf16"}
    assert "W.i32(" in ck.source or "_fl[" in ck.source


def test_facts_dtypes_are_the_nodes_dtypes():
    for body in (LATE, MIXED):
        facts = _Facts(body)
        for s in walk_stmts(body):
            for e in stmt_exprs(s):
                for x in walk_expr(e):
                    assert facts.dtype(x) == x.dtype, x
