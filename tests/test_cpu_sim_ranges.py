"""Index ranges (backends/cpu_sim/ranges.py): the i32 checks codegen leaves out are the
ones that cannot fire, and an overflow the launch makes possible is still caught."""

from __future__ import annotations

import numpy as np
import pytest

from hal.backends.cpu_sim.checks import SimulationError
from hal.backends.cpu_sim.ranges import IndexRanges
from hal.backends.cpu_sim.simulator import compiled, simulate
from hal.devices.loader import load_spec
from hal.dtypes import f32, i32
from hal.kernel.ir import (
    BLOCK_IDX_X,
    THREAD_IDX,
    Assign,
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

H100 = load_spec("h100-sxm")


def _kernel(body, grid=(4, 1, 1), block=32, n=1 << 12):
    return Kernel("k", [BufferParam("x", i32, (n,)), BufferParam("o", f32, (n,), readonly=False)],
                  body, grid=grid, block=block)


def test_intervals_of_launch_loop_and_data():
    i, j, d, a = Var("i", i32), Var("j", i32), Var("d", i32), Var("a", i32)
    body = [Declare(i, BLOCK_IDX_X * Const(32, i32) + THREAD_IDX),
            Declare(d, Load("x", i, i32)),
            Declare(a, Const(0, i32)),
            For(j, Const(0, i32), Const(10, i32), Const(1, i32),
                [Assign(a, a + j)]),
            Store("o", i, Const(1.0, f32))]
    r = IndexRanges(_kernel(body), lambda e: True)
    assert r.interval(i) == (0, 3 * 32 + 31)
    assert r.interval(j) == (0, 9)
    assert r.interval(Binary("remainder", i, Const(7, i32))) == (0, 6)
    assert r.interval(Binary("div", i - Const(200, i32), Const(8, i32))) == (-25, -9)   # trunc or floor
    assert r.interval(d) is None            # data
    assert r.interval(a) is None            # assigned: unknown
    assert not r.fits_i32(i * Const(1 << 25, i32))   # 127 * 2^25 > 2^31


def test_checks_left_out_only_where_they_cannot_fire():
    i = Var("i", i32)
    small = _kernel([Declare(i, BLOCK_IDX_X * Const(32, i32) + THREAD_IDX),
                     Store("o", i, Const(1.0, f32))])
    assert "W.i32" not in compiled(small).source
    # the same code on a launch whose block index times the stride leaves i32
    big = Var("b", i32)
    k = _kernel([Declare(big, BLOCK_IDX_X * Const(1 << 29, i32) + THREAD_IDX),
                 Store("o", Binary("remainder", big, Const(64, i32)), Const(1.0, f32))],
                grid=(8, 1, 1))
    assert "W.i32" in compiled(k).source
    with pytest.raises(SimulationError) as e:
        simulate(k, {"x": np.zeros(1 << 12, np.int32), "o": np.zeros(1 << 12, np.float32)}, H100)
    assert e.value.kind == "index_overflow" and e.value.block == (4, 0, 0)


def test_grid_is_part_of_the_compiled_kernel_cache_key():
    b = Var("b", i32)
    body = [Declare(b, BLOCK_IDX_X * Const(1 << 28, i32) + THREAD_IDX),
            Store("o", Binary("remainder", b, Const(64, i32)), Const(1.0, f32))]
    fits, over = _kernel(body, grid=(8, 1, 1)), _kernel(body, grid=(9, 1, 1))
    assert "W.i32" not in compiled(fits).source     # 7 * 2^28 + 31 < 2^31
    assert "W.i32" in compiled(over).source         # 8 * 2^28 = 2^31
    with pytest.raises(SimulationError, match="i32"):
        simulate(over, {"x": np.zeros(1 << 12, np.int32), "o": np.zeros(1 << 12, np.float32)},
                 H100)
