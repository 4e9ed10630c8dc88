"""The verifier computes each expression's dtype from its children's as it checks them
(hal.kernel.verify._Verifier.expr): it must be the node's own `dtype` everywhere, or a
well-formed kernel would be refused (or a malformed one let through)."""

from __future__ import annotations

import pytest

from hal.dtypes import bf16, bool_, f32, i32
from hal.kernel.ir import (
    THREAD_IDX,
    Binary,
    BufferParam,
    Cast,
    Const,
    Declare,
    Kernel,
    Load,
    Select,
    Shuffle,
    Store,
    Unary,
    Var,
)
from hal.kernel.verify import KernelError, _Verifier, verify_kernel

i = Var("i", i32)
x = Load("x", i, f32)
inside = i.lt(Const(8, i32))


def _kernel(body) -> Kernel:
    return Kernel("k", [BufferParam("x", f32, (64,)), BufferParam("o", f32, (64,), readonly=False)],
                  [Declare(i, THREAD_IDX), *body], grid=(1, 1, 1), block=64)


EXPRS = [
    inside,                                                     # comparison: bool
    Unary("logical_not", inside),                               # bool
    Binary("logical_and", inside, Binary("ge", i, Const(0, i32))),
    Unary("neg", x),                                            # its operand's
    Binary("add", Binary("mul", i, Const(3, i32)), i),          # nested: the left operand's
    Select(inside, x, Const(0.0, f32)),                         # its branches'
    Cast(x, bf16),
    Cast(Binary("add", x, x), i32),
    Load("x", Select(inside, i, Const(0, i32)), f32, mask=inside, other=Const(1.0, f32)),
    Shuffle(x, "xor", Const(1, i32), 32),
    Binary("lt", Unary("neg", x), Select(inside, x, x)),
]


@pytest.mark.parametrize("e", EXPRS, ids=range(len(EXPRS)))
def test_the_checked_dtype_is_the_nodes_own(e):
    v = _Verifier(_kernel([]))
    v.scopes[-1]["i"] = i32
    assert v.expr(e) == e.dtype


def test_a_comparison_is_a_valid_mask_and_select_predicate():
    verify_kernel(_kernel([Store("o", i, Select(inside, x, Const(0.0, f32)), mask=inside)]))


@pytest.mark.parametrize("body, message", [
    ([Store("o", i, Select(inside, x, Const(0, i32)))], "select branches are f32 and i32"),
    ([Store("o", i, Binary("add", x, Cast(x, bf16)))], "operands of add are f32 and bf16"),
    ([Store("o", Cast(i, f32), x)], "has dtype f32, not an integer"),
    ([Store("o", i, x, mask=Binary("add", i, i))], "has dtype i32, not bool"),
    ([Store("o", i, Cast(inside, bool_))], "storing bool into o of f32"),
    ([Declare(Var("y", f32), inside)], "'y' is f32 but its initial value is bool"),
])
def test_mismatches_are_still_refused_with_the_dtypes_named(body, message):
    with pytest.raises(KernelError, match=message):
        verify_kernel(_kernel(body))
