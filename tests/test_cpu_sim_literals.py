"""Integer and bool constants' literals are kept across translations (codegen._literal):
each is still its value cast to its own dtype, whichever translation asked first."""

from __future__ import annotations

from hal.backends.cpu_sim import codegen
from hal.backends.cpu_sim.codegen import _Translator
from hal.dtypes import bool_, f32, i8, i32, i64, u8
from hal.kernel.ir import THREAD_IDX, BufferParam, Const, Kernel, Store

K = Kernel("k", [BufferParam("o", f32, (64,), readonly=False)],
           [Store("o", THREAD_IDX, Const(1.0, f32))], grid=(1, 1, 1), block=64)

CASES = [(-1, u8, "255"), (-1, i8, "-1"), (300, u8, "44"), (300, i8, "44"), (300, i32, "300"),
         (2 ** 31, i32, "-2147483648"), (2 ** 31, i64, "2147483648"), (True, i32, "1"),
         (2, bool_, "True"), (0, bool_, "False"), (2.9, i32, "2"), (-2.9, u8, "0")]


def test_literals_are_the_cast_values_in_any_order():
    for order in (CASES, CASES[::-1]):
        codegen._LITERALS.clear()
        for value, dt, text in order:
            assert _Translator(K).const(value, dt) == text, (value, dt)
        for value, dt, text in order:   # (now from the kept literals)
            assert _Translator(K).const(value, dt) == text, (value, dt)


def test_the_kept_literals_are_bounded(monkeypatch):
    codegen._LITERALS.clear()
    monkeypatch.setattr(codegen, "LITERALS_SIZE", 4)
    t = _Translator(K)
    for n in range(10):
        assert t.const(n, i32) == str(n)
    assert len(codegen._LITERALS) <= 4
