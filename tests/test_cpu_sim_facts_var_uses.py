"""codegen's `_Facts` counts every variable's occurrences in its final pass (`var_uses`),
which the translator hands widen.widenable instead of walking the kernel again with
widen.names: the two counts must be equal, and later visits must not change it."""

from __future__ import annotations

from hal.backends.cpu_sim import widen
from hal.backends.cpu_sim.codegen import _Facts
from hal.dtypes import f32, i32
from hal.kernel.ir import (
    THREAD_IDX,
    Assign,
    Binary,
    Const,
    Declare,
    For,
    If,
    Load,
    Select,
    Store,
    Var,
)

i, j, acc, t = Var("i", i32), Var("j", i32), Var("acc", f32), Var("t", i32)
BODY = [
    Declare(t, THREAD_IDX),
    Declare(acc, Const(0.0, f32)),
    Declare(Var("unused", i32)),
    For(i, Const(0, i32), Const(8, i32), Const(1, i32), [
        Declare(j, Binary("add", Binary("mul", i, Const(64, i32)), t)),
        If(j.lt(Const(100, i32)),
           [Assign(acc, Binary("add", acc, Load("x", j, f32)))],
           [Assign(acc, Select(t.lt(i), acc, Load("x", i, f32, mask=t.lt(j))))]),
    ]),
    For(i, Const(0, i32), Load("n", t, i32), Const(1, i32), [   # a loop-carried value
        Assign(t, Binary("add", t, i)),
    ]),
    Store("o", t, acc),
]


def test_the_final_pass_counts_what_widen_names_counts():
    facts = _Facts(BODY)
    assert facts.var_uses == widen.names(BODY)
    assert facts.var_uses["acc"] == 6 and facts.var_uses["unused"] == 1


def test_a_later_visit_leaves_the_counts_alone():
    facts = _Facts(BODY)
    before = dict(facts.var_uses)
    facts.uniform(Binary("add", i, j))   # a node built after the analysis
    facts.stmt_flops(Assign(acc, acc))
    assert dict(facts.var_uses) == before
