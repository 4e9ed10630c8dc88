"""The generated run() sets only the wave locals its code names (codegen._wave_locals), and
constant loop bounds go into range() as literals (vectorize.int_args): a kernel reading
each combination of the block indices still runs, and gives the same numbers."""

from __future__ import annotations

import numpy as np
import pytest
from test_cpu_sim_faults import H100

from hal.backends.cpu_sim import simulator
from hal.backends.cpu_sim.codegen import WAVE_LOCALS, _wave_locals, compile_kernel
from hal.backends.cpu_sim.simulator import simulate
from hal.backends.cpu_sim.vectorize import int_args
from hal.dtypes import i32
from hal.kernel.ir import (
    BLOCK_IDX_X,
    BLOCK_IDX_Y,
    BLOCK_IDX_Z,
    THREAD_IDX,
    Binary,
    BufferParam,
    Const,
    Declare,
    For,
    Kernel,
    Load,
    Store,
    Var,
)

GRID, BLOCK, N = (2, 3, 2), 32, 2 * 3 * 2 * 32


def _add(a, b):
    return Binary("add", a, b)


def _mul(a, b):
    return Binary("mul", a, b)


def _kernel(value, loop: bool = False) -> Kernel:
    """out[linear thread id] = value (an i32 expression of the indices); with `loop`,
    out[...] += i for i in range(3) and then += value."""
    lin = _add(_mul(_add(_mul(_add(_mul(BLOCK_IDX_Z, Const(GRID[1], i32)), BLOCK_IDX_Y),
                                  Const(GRID[0], i32)), BLOCK_IDX_X), Const(BLOCK, i32)),
               THREAD_IDX)
    body = [Store("out", lin, value)]
    if loop:   # (a loop with constant bounds)
        acc, i = Var("acc", i32), Var("i", i32)
        body = [Declare(acc, value),
                For(i, Const(0, i32), Const(3, i32), Const(1, i32),
                    [Store("out", lin, _add(Load("out", lin, i32), i))]),
                Store("out", lin, _add(Load("out", lin, i32), acc))]
    return Kernel("k", [BufferParam("out", i32, (N,), readonly=False)], body, grid=GRID,
                  block=BLOCK)


def _expected(fn) -> np.ndarray:
    z, y, x, t = np.meshgrid(*(np.arange(n) for n in (GRID[2], GRID[1], GRID[0], BLOCK)),
                             indexing="ij")
    return fn(x, y, z, t).reshape(-1).astype(np.int32)


@pytest.mark.parametrize("name,value,fn", [
    ("x", BLOCK_IDX_X, lambda x, y, z, t: x),
    ("y", BLOCK_IDX_Y, lambda x, y, z, t: y),
    ("z", BLOCK_IDX_Z, lambda x, y, z, t: z),
    ("thread", THREAD_IDX, lambda x, y, z, t: t),
    ("constant", Const(7, i32), lambda x, y, z, t: 7 + 0 * x),
    ("y*z", _mul(BLOCK_IDX_Y, BLOCK_IDX_Z), lambda x, y, z, t: y * z),
])
@pytest.mark.parametrize("loop", [False, True])
def test_kernels_reading_any_wave_locals_run(name, value, fn, loop):
    simulator._CACHE.clear()
    out = np.zeros(N, np.int32)
    simulate(_kernel(value, loop), {"out": out}, H100)
    # the loop adds 0 + 1 + 2 to out (zeros), then acc (value)
    want = _expected(fn)
    np.testing.assert_array_equal(out, want + 3 if loop else want)


def test_run_sets_exactly_the_locals_its_code_names():
    src = compile_kernel(_kernel(BLOCK_IDX_Y)).source
    head = src.split("\n")[1]
    for name, field in WAVE_LOCALS:
        assert (f"{name} = {field}" in head) == (name in ("_tid", "_bx", "_by", "_bz")), name
    assert "_L = W.L" not in src and "_fl = W.fl" not in src


def test_wave_locals_of_a_text():
    assert _wave_locals("v = _by + 1") == ["    _by = W.by"]
    assert _wave_locals("_fl[0] += 1 * _L") == ["    _L = W.L; _fl = W.fl"]
    assert _wave_locals("pass") == []


def test_int_args_keeps_literals_and_converts_the_rest():
    assert int_args("0", "16", "1") == "0, 16, 1"
    assert int_args("-3", "v_n_1", "_k2") == "-3, int(v_n_1), int(_k2)"
    assert int_args("1e3", "-", "0x10") == "int(1e3), int(-), int(0x10)"


def test_constant_loop_bounds_are_literals():
    src = compile_kernel(_kernel(BLOCK_IDX_X, loop=True)).source
    assert "in range(0, 3, 1):" in src and "int(" not in src
