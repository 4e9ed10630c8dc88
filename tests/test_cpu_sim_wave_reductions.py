"""Fast paths of the wave machinery (session 13) against the straightforward computation:
the argmax/argmin checks of lanes.py (first_true, int_max, int_min and the bounds, race
and i32 checks built on them), the kept block coordinates of small waves, wgmma operand
element offsets computed once per set of start addresses, and the per-row TMA-mark check
of wgmma operands whose rows each hold one mark."""

from __future__ import annotations

from types import SimpleNamespace

import ml_dtypes
import numpy as np
import pytest

from hal.backends.cpu_sim import lanes, wgmma_sim
from hal.backends.cpu_sim.checks import SimulationError
from hal.backends.cpu_sim.lanes import Wave, all_in_range, first_true, int_max, int_min
from hal.backends.cpu_sim.wgmma_operand import Operand, OperandWords, whole_chunks
from hal.dtypes import bf16, f32
from hal.kernel.ir import BufferParam, SharedBuffer
from hal.kernel.wgmma import canonical_offset, swizzle

WG = 128


# ---------------------------------------------------------------- argmax/argmin reductions
@pytest.mark.parametrize("shape", [(1,), (7,), (300,), (4, 5)])
def test_first_true_is_the_first_flat_true_or_minus_one(shape) -> None:
    rng = np.random.default_rng(1)
    for density in (0.0, 0.01, 0.5, 1.0):
        b = rng.random(shape) < density
        hits = np.flatnonzero(b)
        assert first_true(b) == (int(hits[0]) if hits.size else -1)
    assert first_true(np.zeros(0, bool)) == -1


def test_int_max_and_min_are_the_extremes_as_python_scalars() -> None:
    rng = np.random.default_rng(2)
    for a in (rng.integers(-2**62, 2**62, 1000), np.array([5]), rng.integers(-3, 3, (3, 4)),
              np.array([-1, 7, 2**40], np.int64).view(np.uint64)):
        assert int_max(a) == a.max() and int_min(a) == a.min()
        assert type(int_max(a)) is int


@pytest.mark.parametrize("bad", [-1, -(2**62), 16, 2**63 - 1])
def test_all_in_range_catches_one_stray_index_anywhere(bad: int) -> None:
    for pos in (0, 5, 9):
        idx = np.arange(10, dtype=np.int64)
        assert all_in_range(idx, 16)
        idx[pos] = bad
        assert not all_in_range(idx, 16)


def _wave(T: int = 4, B: int = 2) -> Wave:
    g = np.zeros(8, ml_dtypes.bfloat16)
    return Wave("k", (B, 1, 1), T, 0, B, 32, [(BufferParam("g", bf16, (8,)), g)],
                [SharedBuffer("s", f32, 8)], [], [("s[i] = x", "s", "i")], 0, True)


def test_i32_passes_the_range_edges_and_reports_the_first_overflowing_lane() -> None:
    W = _wave()
    ok = np.array([lanes.I32_MIN, 0, lanes.I32_MAX, 1, 2, 3, 4, 5], np.int64)
    assert W.i32(ok, None, 0) is ok
    with pytest.raises(SimulationError) as e:
        W.i32(np.array([0, 1, lanes.I32_MAX + 1, 3, lanes.I32_MIN - 1, 0, 0, 0]), None, 0)
    assert (e.value.kind, e.value.index, e.value.thread) == ("index_overflow", 2**31, 2)


def test_a_masked_conflicting_shared_write_names_the_lane_of_the_mask() -> None:
    W = _wave()
    act = np.array([False, True, False, True, False, False, True, False])
    # active lanes 1 and 3 (block 0) both write word 2
    with pytest.raises(SimulationError) as e:
        W.sts(0, np.array([0, 2, 0, 2, 0, 0, 5, 0]), 1.0, None, act, 0)
    assert (e.value.kind, e.value.block, e.value.thread, e.value.index) == \
        ("race", (0, 0, 0), 1, 2)
    # a read by thread 0 of block 1, then a write by thread 2 of block 1: a race on lane 6
    W = _wave()
    W.lds(0, np.array([0, 0, 0, 0, 4, 0, 0, 0]), None, 0.0, np.arange(8) == 4, 0)
    with pytest.raises(SimulationError) as e:
        W.sts(0, np.array([0, 0, 0, 0, 0, 0, 4, 0]), 1.0, None, np.arange(8) == 6, 0)
    assert (e.value.kind, e.value.block, e.value.thread) == ("race", (1, 0, 0), 2)


# ---------------------------------------------------------------- block coordinates
def test_kept_block_coordinates_are_those_of_each_waves_own_blocks() -> None:
    grid, T = (3, 4, 2), 2
    for b0, n in ((0, 5), (5, 5), (10, 5), (5, 5), (0, 24)):
        got = lanes.block_coordinates(grid, T, b0, n)
        lin = np.repeat(np.arange(b0, b0 + n), T)
        want = (lin % 3, lin // 3 % 4, lin // 12)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
            assert not g.flags.writeable
    assert len(lanes._coordinates) <= lanes.BLOCK_COORDINATES_KEPT


def test_sampled_waves_get_the_coordinates_of_their_block_ids() -> None:
    W = Wave("k", (3, 4, 1), 2, 0, 3, 32, [], [], [], [], 0, True,
             block_ids=np.array([11, 0, 4]))
    assert W.bx.tolist() == [2, 2, 0, 0, 1, 1] and W.by.tolist() == [3, 3, 0, 0, 1, 1]


# ---------------------------------------------------------------- wgmma operand offsets
def _direct_flat(W, st, start, layout):
    rows, k, isz, k_major, sw, lbo, sbo = layout
    off = canonical_offset(np.arange(rows)[:, None], np.arange(k)[None, :], isz, k_major,
                           sw, lbo, sbo)
    return ((swizzle(start[:, None, None] + off[None], sw) - st.base[0]) // isz).reshape(
        len(start), -1)


@pytest.mark.parametrize("starts", [[0, 0, 0], [0, 2048, 0, 2048], [4096, 32, 64]])
def test_operand_elements_per_start_set_equal_the_direct_addresses(starts) -> None:
    sb = SimpleNamespace(size=8192, nbytes=16384, name="a")
    W = SimpleNamespace(sh_buf=[sb])
    st = SimpleNamespace(base=[0], operands={})
    layout = (64, 16, 2, True, 128, 16, 1024)
    start = np.array(starts, np.int64)
    for _ in range(2):     # computed, then from st.operands
        j, elem, which, _ = wgmma_sim._operand_elements(W, st, start, layout, 0, 0)
        got = elem[which] if which is not None else np.broadcast_to(elem, (len(start),
                                                                            elem.size))
        assert j == 0
        np.testing.assert_array_equal(got, _direct_flat(W, st, start, layout))
    assert len(st.operands) == 1


# ---------------------------------------------------------------- TMA marks per row
class _Fail(Exception):
    pass


def _marks_setup(marks_rows, observed):
    """One buffer of 2 blocks x 32 words, 3 warpgroups (all active); marks_rows[g] are the
    marks of the 8 words warpgroup g reads (its block's words 0..7); observed[g][slot]."""
    G, S = len(marks_rows), 32
    flat = np.array([(g % 2) * S + np.arange(8) + 8 * (g // 2) for g in range(G)])
    mark = np.zeros(2 * S, np.int64)
    for g in range(G):
        mark[flat[g]] = marks_rows[g]

    def fail(kind, site, lane, what, **kw):
        raise _Fail(kind, lane, kw.get("index"), what)

    W = SimpleNamespace(sh_buf=[SimpleNamespace(size=S, stages=2, name="a_tile")], check=True,
                        tid=np.arange(G * WG) % 256, _fail=fail)
    st = SimpleNamespace(mark={0: mark}, seen=None,
                         observed=np.repeat(np.array(observed, np.int64), WG, axis=0))
    return W, st, flat, np.ones(G, bool)


def _per_word(W, st, flat):
    """The check word by word (4b74be4's): the first failing word, or None; the phases."""
    slot, ph = wgmma_sim.unpack_marks(st.mark[0].take(flat))
    seen = st.observed.reshape(-1, WG, st.observed.shape[1]).min(axis=1)
    ok = (slot < 0) | (seen[np.arange(len(flat))[:, None], np.maximum(slot, 0)] > ph)
    bad = np.argwhere(~ok)
    return (tuple(bad[0]) if len(bad) else None), ph


def _pack(slot, phase):
    return int(wgmma_sim.pack_marks(np.int64(slot), np.int64(phase)))


@pytest.mark.parametrize("rows,observed", [
    # one mark per row, every phase observed
    ([[_pack(0, 3)] * 8, [_pack(1, 2)] * 8, [0] * 8], [[4, 3], [4, 3], [0, 0]]),
    # one mark per row, warpgroup 1 has not observed phase 2 of slot 1
    ([[_pack(0, 3)] * 8, [_pack(1, 2)] * 8, [0] * 8], [[4, 3], [9, 2], [0, 0]]),
    # mixed rows (two TMAs, an unwritten word) fall back to the per-word check
    ([[_pack(0, 3)] * 4 + [_pack(1, 1)] * 4, [0] * 7 + [_pack(1, 5)], [_pack(0, 0)] * 8],
     [[4, 2], [0, 6], [1, 0]]),
    ([[_pack(0, 3)] * 4 + [_pack(1, 1)] * 4, [0] * 7 + [_pack(1, 5)], [_pack(0, 0)] * 8],
     [[4, 2], [0, 5], [1, 0]]),
    # mixed rows made of whole 4-word chunks (each chunk one TMA's)
    ([[_pack(0, 3)] * 4 + [_pack(1, 1)] * 4, [_pack(1, 5)] * 8, [0] * 4 + [_pack(0, 0)] * 4],
     [[4, 2], [0, 6], [1, 0]]),
    ([[_pack(0, 3)] * 4 + [_pack(1, 1)] * 4, [_pack(1, 5)] * 8, [0] * 4 + [_pack(0, 0)] * 4],
     [[4, 1], [0, 6], [1, 0]]),
])
@pytest.mark.parametrize("chunk", [1, 2, 4, 8])
@pytest.mark.parametrize("operand_chunks", [True, False])
def test_marks_checked_per_row_equal_the_check_per_word(rows, observed, chunk,
                                                        operand_chunks) -> None:
    """Per word, per row and (when every TMA wrote whole chunks: HopperState.mark_chunk)
    per chunk, the same phases and the same first race, also for an operand not read as
    whole chunks (its words' marks through their chunks)."""
    W, st, flat, gl = _marks_setup(rows, observed)
    mark = st.mark[0]
    if chunk > 1 and (mark.reshape(-1, chunk) != mark.reshape(-1, chunk)[:, :1]).any():
        chunk = 1      # a chunk with two marks: no TMA of whole chunks wrote these
    chunks = whole_chunks(flat, chunk) if chunk > 1 and operand_chunks else None
    st.mark_chunk = {0: chunk}
    st.mark = {0: mark[::chunk]}          # a mark per chunk (HopperState.mark_chunk)
    op = Operand(0, OperandWords(flat, None, 1), chunk, chunks,
                 None if chunks is None else chunks * chunk)
    bad, ph = _per_word(W, SimpleNamespace(mark={0: mark}, observed=st.observed), flat)
    if bad is None:
        info, got = wgmma_sim._check_marks(W, st, op, gl, 0)
        np.testing.assert_array_equal(got, ph)
        assert info == (0, int(ph[0, 0]) if rows[0][0] else -1)
    else:
        with pytest.raises(_Fail) as e:
            wgmma_sim._check_marks(W, st, op, gl, 0)
        gi, wi = bad
        assert e.value.args[:3] == ("race", gi * WG, int(flat[gi, wi]) % 32)
        assert f"phase {int(ph[gi, wi])} of its TMA" in e.value.args[3]


# ---------------------------------------------------------------- reader folds
def test_folds_sharing_scratch_arrays_equal_folds_with_fresh_ones() -> None:
    rng = np.random.default_rng(3)
    scratch: dict = {}
    for _ in range(200):   # one shape: every fold after the first reuses the kept pair
        reader = rng.choice([-2, -1, -1, -1, 0, 1, 2], 9).astype(np.int32)
        k = int(rng.integers(1, 12))
        words, readers = rng.integers(0, 9, k), rng.choice([-2, 0, 1, 2], k).astype(np.int32)
        want, got = reader.copy(), reader.copy()
        lanes.fold_reader_words(want, words, readers)
        lanes.fold_reader_words(got, words, readers, scratch)
        assert got.tolist() == want.tolist()
    lo, hi = scratch[(9,)]
    assert (lo == np.iinfo(np.int32).max).all() and (hi == np.iinfo(np.int32).min).all()
