"""Fast paths of the wave machinery against the straightforward computation: the inline
in-range check of lds/ldg (out-of-range, masked-off and unchecked lanes still take
_bounds' slow path), block coordinates computed per block and spread to the lanes, and
mma_batch's gather tables built by index arithmetic (against the per-lane loops)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from hal import dtypes as hal_dtypes
from hal.backends.cpu_sim import mma_batch, wgmma_sim
from hal.backends.cpu_sim.checks import SimulationError
from hal.backends.cpu_sim.lanes import (
    REM_BY_DIVISION_MIN,
    Wave,
    fast_to_rep,
    rem_by_const,
    store_cast,
    to_rep,
)
from hal.dtypes import bf16, f32
from hal.kernel.ir import BufferParam, SharedBuffer
from hal.kernel.mma import LAYOUTS

SITES = [("x = g[i]", "g", "i")]
N = 40


def _wave(T: int = 4, B: int = 2, check: bool = True, grid=None, b0: int = 0,
          block_ids=None) -> Wave:
    g = (np.arange(N) * 0.5).astype(ml_dtypes.bfloat16)
    return Wave("k", grid or (B, 1, 1), T, b0, B, 32, [(BufferParam("g", bf16, (N,)), g)],
                [SharedBuffer("s", f32, 8)], [], SITES, 0, check, block_ids=block_ids)


# ---------------------------------------------------------------- ldg bounds
def test_in_range_global_read_gives_the_words_as_float32() -> None:
    W = _wave()
    idx = np.array([0, 3, 39, 7, 1, 2, 38, 5], np.int64)
    got = W.ldg(0, idx, None, 0.0, None, 0)
    assert got.dtype == np.float32 and got.tolist() == (idx * 0.5).tolist()
    assert W.gr == 8 * 2


@pytest.mark.parametrize("bad", [-1, -(2**40), N, N + 1, 2**62])
def test_out_of_bounds_global_read_is_caught_with_its_index_and_lane(bad: int) -> None:
    W = _wave()
    idx = np.array([0, 1, 2, 3, 0, 1, bad, 3], np.int64)
    with pytest.raises(SimulationError) as e:
        W.ldg(0, idx, None, 0.0, None, 0)
    assert (e.value.kind, e.value.index, e.value.block, e.value.thread) == \
        ("out_of_bounds", bad, (1, 0, 0), 2)


def test_out_of_bounds_global_lane_under_a_statement_mask_is_caught() -> None:
    W = _wave()
    idx = np.array([0, 1, 2, 3, 0, 1, N, 3], np.int64)
    m = np.array([False] * 6 + [True, True])
    with pytest.raises(SimulationError):
        W.ldg(0, idx, None, 0.0, m, 0)


def test_out_of_bounds_global_lane_masked_off_reads_nothing() -> None:
    W = _wave()
    idx = np.array([-1, 1, N, 3, 0, 1, 2, 3], np.int64)
    lm = idx >= 0
    lm[2] = False
    got = W.ldg(0, idx, lm, -5.0, None, 0)
    assert got.tolist() == [-5.0, 0.5, -5.0, 1.5, 0.0, 0.5, 1.0, 1.5]
    assert W.gr == 6 * 2


def test_unchecked_global_read_clamps_out_of_range_lanes() -> None:
    W = _wave(check=False)
    idx = np.array([-7, 1, N + 5, 3, 0, 1, 2, 3], np.int64)
    got = W.ldg(0, idx, None, 0.0, None, 0)
    assert got.tolist() == (np.clip(idx, 0, N - 1) * 0.5).tolist()


def test_int32_and_scalar_global_indices_take_the_general_path() -> None:
    W = _wave()
    assert W.ldg(0, np.arange(8, dtype=np.int32), None, 0.0, None, 0).tolist() == \
        (np.arange(8) * 0.5).tolist()
    assert float(W.ldg(0, 4, None, 0.0, None, 0)) == 2.0
    with pytest.raises(SimulationError):
        W.ldg(0, np.array([0, 1, 2, 3, 4, 5, 6, -1], np.int32), None, 0.0, None, 0)


# ---------------------------------------------------------------- block coordinates
@pytest.mark.parametrize("grid,b0,B", [((3, 4, 5), 7, 9), ((1, 6, 2), 0, 12), ((5, 1, 1), 2, 3)])
def test_block_coordinates_are_those_of_each_lanes_linear_block(grid, b0, B) -> None:
    T = 4
    for ids in (None, np.random.default_rng(1).permutation(int(np.prod(grid)))[:B]):
        W = _wave(T, B, grid=grid, b0=b0, block_ids=ids)
        lin = (np.arange(B * T) // T + b0) if ids is None else ids[np.arange(B * T) // T]
        assert W.bx.tolist() == (lin % grid[0]).tolist()
        assert W.by.tolist() == ((lin // grid[0]) % grid[1]).tolist()
        assert W.bz.tolist() == (lin // (grid[0] * grid[1])).tolist()


# ---------------------------------------------------------------- mma_batch tables
def _operand_table_loops(table, lanes, ops, r, c, cols):
    lane = np.empty((r, c), np.int64)
    elem = np.empty((r, c), np.int64)
    for ln in range(lanes):
        for e in range(table.shape[1]):
            lane[tuple(table[ln, e])] = ln
            elem[tuple(table[ln, e])] = e
    srcs = np.array(list(ops), np.int64).reshape(len(ops), -1)
    return lane * cols + srcs[:, elem]


def _c_table_loops(lay, ext_c, nc):
    ma, nb, ce = ext_c.shape
    tc = np.empty((ma * lay.m, nb * lay.n), np.int64)
    for ln in range(lay.lanes):
        for e in range(ce):
            r, c = lay.c[ln, e]
            for i in range(ma):
                for j in range(nb):
                    tc[i * lay.m + r, j * lay.n + c] = ln * nc + ext_c[i, j, e]
    return tc


def _out_table_loops(lay, ma, nb):
    ce = lay.c_elems
    tout = np.empty((lay.lanes, ma * nb * ce), np.int64)
    for ln in range(lay.lanes):
        for e in range(ce):
            r, c = lay.c[ln, e]
            for i in range(ma):
                for j in range(nb):
                    tout[ln, (i * nb + j) * ce + e] = (i * lay.m + r) * (nb * lay.n) + j * lay.n + c
    return tout


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_mma_batch_tables_match_the_per_lane_loops(name: str) -> None:
    lay = LAYOUTS[name]
    rng = np.random.default_rng(len(name))
    cols = 3 * lay.a_elems + 5
    ops = {tuple(rng.integers(0, 50, lay.a_elems).tolist()): 0,
           tuple(rng.integers(0, 50, lay.a_elems).tolist()): 1}
    assert np.array_equal(mma_batch._operand_table(lay.a, lay.lanes, ops, lay.m, lay.k, cols),
                          _operand_table_loops(lay.a, lay.lanes, ops, lay.m, lay.k, cols))
    opsb = {tuple(rng.integers(0, 50, lay.b_elems).tolist()): 0}
    assert np.array_equal(mma_batch._operand_table(lay.b, lay.lanes, opsb, lay.k, lay.n, cols),
                          _operand_table_loops(lay.b, lay.lanes, opsb, lay.k, lay.n, cols))
    for ma, nb in ((1, 1), (2, 3), (3, 2)):
        ext_c = rng.permutation(ma * nb * lay.c_elems).reshape(ma, nb, lay.c_elems)
        nc = ma * nb * lay.c_elems
        assert np.array_equal(mma_batch._c_table(lay, ext_c, nc), _c_table_loops(lay, ext_c, nc))
        assert np.array_equal(mma_batch._out_table(lay, ma, nb), _out_table_loops(lay, ma, nb))


# ---------------------------------------------------------------- store and rounding casts
def _cast_inputs() -> list:
    rng = np.random.default_rng(0)
    return [(rng.standard_normal(50) * 1e5).astype(np.float32), rng.standard_normal(50) * 1e40,
            np.array([np.nan, np.inf, -np.inf, -0.0, 65504.5, 1e38, 2.5, -3.5], np.float32),
            np.array([np.nan, 2.0**63, -(2.0**70), 300.7, -129.5]),
            rng.integers(-2**40, 2**40, 50), rng.integers(-300, 300, 20), np.array([True, False]),
            np.int64(7), 3, -2.5, np.float32(1.5), np.zeros(70000)]


def _same(want, got) -> bool:
    return type(want) is type(got) and want.dtype == got.dtype and \
        want.shape == got.shape and want.tobytes() == got.tobytes()


@pytest.mark.parametrize("dt", [v for v in vars(hal_dtypes).values()
                                if isinstance(v, hal_dtypes.DType)], ids=str)
def test_store_cast_and_rounding_are_byte_identical_to_cast(dt) -> None:
    conv, rnd = store_cast(dt), fast_to_rep(dt)
    with np.errstate(all="ignore"):
        for x in _cast_inputs():
            assert _same(hal_dtypes.cast(x, dt), conv(x)), (dt, x)
            assert _same(to_rep(x, dt), rnd(x)), (dt, x)


# ---------------------------------------------------------------- remainder by a constant
@pytest.mark.parametrize("n", [5, REM_BY_DIVISION_MIN, 3 * REM_BY_DIVISION_MIN + 1])
@pytest.mark.parametrize("c", [1, 3, 8, 130, 2**31 - 1])
def test_rem_by_const_is_the_c_remainder(n: int, c: int) -> None:
    rng = np.random.default_rng(n + c)
    for lo in (0, -(2**40)):
        a = rng.integers(lo, 2**40, n)
        a[:2] = [0, c * 7] if lo == 0 else [-c, c - 1]
        want, before = np.sign(a) * (np.abs(a) % c), a.copy()
        got = rem_by_const(a, c)
        assert got.dtype == np.int64 and got.tolist() == want.tolist()
        assert a.tolist() == before.tolist()   # the operand is left as it was


# ---------------------------------------------------------------- TMA marks (wgmma_sim)
def test_tma_marks_unpack_to_the_slot_and_phase_packed_and_zero_to_none() -> None:
    rng = np.random.default_rng(3)
    slot = np.concatenate([[0, 1, wgmma_sim.MARK_SLOTS - 1], rng.integers(0, 5000, 200)])
    phase = np.concatenate([[0, 2**39 - 1, 1], rng.integers(0, 2**30, 200)])
    got_slot, got_phase = wgmma_sim.unpack_marks(wgmma_sim.pack_marks(slot, phase))
    assert got_slot.tolist() == slot.tolist() and got_phase.tolist() == phase.tolist()
    none_slot, none_phase = wgmma_sim.unpack_marks(np.zeros(3, np.int64))
    assert none_slot.tolist() == [-1] * 3 and none_phase.tolist() == [0] * 3
