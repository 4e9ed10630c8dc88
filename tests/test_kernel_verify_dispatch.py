"""The verifier's fast paths (hal/kernel/verify.py): checks dispatched by node type, op
names checked once per kernel, dtype comparisons by identity first. Each must reject and
accept exactly what the plain rules do."""

from __future__ import annotations

import dataclasses

import pytest
from test_kernel_ir import GOOD_EXTRA, kernel

from hal.dtypes import f32, i32
from hal.kernel import KernelError, verify_kernel
from hal.kernel.ir import THREAD_IDX, Binary, Const, Declare, Expr, Stmt, Store, Unary, Var


@dataclasses.dataclass(frozen=True)
class _Strange(Expr):
    dtype: object = f32


@dataclasses.dataclass
class _StrangeStmt(Stmt):
    pass


def _verify(body: list[Stmt]) -> None:
    verify_kernel(kernel(body, **GOOD_EXTRA))


def test_unknown_nodes_are_still_reported():
    with pytest.raises(KernelError, match="unknown expression _Strange"):
        _verify([Store("o", THREAD_IDX, _Strange())])
    with pytest.raises(KernelError, match="unknown statement _StrangeStmt"):
        _verify([_StrangeStmt()])


def test_a_checked_op_name_does_not_let_a_bad_one_through():
    one = Const(1.0, f32)
    ok = Unary("exp", Unary("exp", one))
    _verify([Store("o", THREAD_IDX, ok)])
    with pytest.raises(KernelError, match="unknown op 'frobnicate'"):
        _verify([Store("o", THREAD_IDX, Binary("add", ok, Unary("frobnicate", one)))])
    with pytest.raises(KernelError, match="unknown op 'frobnicate'"):   # again: not cached
        _verify([Store("o", THREAD_IDX, Unary("frobnicate", ok))])


def test_equal_dtypes_that_are_other_objects_still_match():
    f32_copy = dataclasses.replace(f32)
    assert f32_copy is not f32 and f32_copy == f32
    x = Var("x", f32)
    _verify([Declare(x, Const(1.0, f32_copy)),
             Store("o", THREAD_IDX, Binary("add", x, Const(2.0, f32_copy)))])
    with pytest.raises(KernelError, match="operands of add are f32 and i32"):
        _verify([Store("o", THREAD_IDX, Binary("add", Const(1.0, f32), Const(2, i32)))])
    with pytest.raises(KernelError, match="initial value is i32"):
        _verify([Declare(x, Const(1, i32))])
