"""The lane machine's fast paths (lanes.py) against the straightforward computation:
the uint64 bounds check, the one-pass fold of shared reads, the barrier that drops reads
instead of folding them, the lazily masked reads, and the shared lane geometry."""

from __future__ import annotations

import numpy as np
import pytest

from hal.backends.cpu_sim.checks import SimulationError
from hal.backends.cpu_sim.lanes import Wave, all_in_range, fold_reader_words, lane_geometry
from hal.dtypes import f32
from hal.kernel.ir import LocalBuffer, SharedBuffer

SITES = [("s[i] = x", "s", "i")]


def _wave(T: int, B: int, size: int = 8, check: bool = True) -> Wave:
    return Wave("k", (B, 1, 1), T, 0, B, 32, [], [SharedBuffer("s", f32, size)], [], SITES, 0,
                check)


def _lanes_of(W: Wave, blocks: set[int]) -> np.ndarray:
    return np.isin(W.blk, sorted(blocks))


# ---------------------------------------------------------------- bounds
@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_all_in_range_matches_two_comparisons(dtype) -> None:
    rng = np.random.default_rng(0)
    size = 37
    cases = [np.array([], dtype), np.array([0, size - 1], dtype), np.array([size], dtype),
             np.array([-1], dtype), np.array([np.iinfo(dtype).min, 3], dtype),
             np.array([np.iinfo(dtype).max], dtype)]
    cases += [rng.integers(-3, size + 3, n).astype(dtype) for n in range(1, 40)]
    cases += [np.arange(24, dtype=dtype).reshape(4, 6)[:, ::2]]   # a strided view
    for idx in cases:
        want = idx.size == 0 or bool(idx.min() >= 0 and idx.max() < size)
        assert all_in_range(idx, size) == want, idx


@pytest.mark.parametrize("bad", [-1, -(2**40), 8, 9])
def test_out_of_bounds_shared_read_is_caught_with_its_index(bad: int) -> None:
    W = _wave(4, 2)
    idx = np.array([0, 1, 2, 3, 0, bad, 2, 3], np.int64)
    with pytest.raises(SimulationError) as e:
        W.lds(0, idx, None, 0.0, None, 0)
    assert (e.value.kind, e.value.index, e.value.block, e.value.thread) == \
        ("out_of_bounds", bad, (1, 0, 0), 1)


def test_out_of_bounds_lane_that_is_masked_off_reads_nothing() -> None:
    W = _wave(4, 1)
    W.sh[0][:] = np.arange(8)
    idx = np.array([-1, 1, 8, 3], np.int64)
    got = W.lds(0, idx, np.array([False, True, False, True]), -5.0, None, 0)
    assert got.tolist() == [-5.0, 1.0, -5.0, 3.0]


def test_unchecked_store_drops_the_lanes_outside_the_buffer() -> None:
    W = _wave(4, 1, check=False)
    W.sts(0, np.array([-1, 1, 8, 3], np.int64), np.arange(1.0, 5.0, dtype=np.float32),
          None, None, 0)
    assert W.sh[0].tolist() == [0, 2, 0, 4, 0, 0, 0, 0]


# ---------------------------------------------------------------- the fold of reads
def _fold_one_at_a_time(reader: np.ndarray, reads) -> None:
    """The fold as the simulator first did it: read by read."""
    for f, t in reads:
        r = reader[f]
        new = np.where((r == -1) | (r == t), t, -2)
        reader[f] = new
        again = reader[f]
        reader[f[again != new]] = -2


def test_one_pass_fold_matches_folding_read_by_read() -> None:
    rng = np.random.default_rng(1)
    for _ in range(300):
        n = int(rng.integers(1, 12))
        reader = rng.choice([-2, -1, -1, -1, 0, 1, 2], n).astype(np.int32)
        reads = []
        for _ in range(int(rng.integers(1, 5))):
            k = int(rng.integers(1, 8))
            f = rng.integers(0, n, k)
            t = rng.choice([-2, 0, 1, 2], k).astype(np.int32)
            reads.append((f, t))
        want = reader.copy()
        _fold_one_at_a_time(want, reads)
        got = reader.copy()
        fold_reader_words(got, np.concatenate([f for f, _ in reads]),
                          np.concatenate([t for _, t in reads]))
        assert got.tolist() == want.tolist(), (reader, reads)


def test_fold_of_single_reader_words_takes_the_scatter_path_and_matches() -> None:
    """Every word read by one thread (repeats of the same reader allowed, as a vector copy
    or a warp re-reading its words gives): the plain-scatter path (_fold_single_readers)
    takes it, with the same result as folding read by read; a word with two readers is
    left to the general path with nothing changed."""
    from hal.backends.cpu_sim import races

    rng = np.random.default_rng(2)
    taken = 0
    for _ in range(300):
        n = int(rng.integers(4, 40))
        reader = rng.choice([-2, -1, -1, -1, 0, 1, 2, 3], n).astype(np.int32)
        words = rng.integers(0, n, int(rng.integers(1, 2 * n)))
        owner = rng.choice([-2, 0, 1, 2, 3], n).astype(np.int32)   # one reader per word
        readers = owner[words]
        want = reader.copy()
        _fold_one_at_a_time(want, [(words, readers)])
        got = reader.copy()
        tmp = rng.integers(-3, 5, n).astype(np.int32)   # whatever a kept array holds
        assert races._fold_single_readers(got, words, readers, tmp)
        taken += 1
        assert got.tolist() == want.tolist(), (reader, words, readers)
        # a word read by two threads: the general path's, `reader` unchanged
        dup = np.concatenate([words, words[:1]])
        other = np.concatenate([readers, [np.int32(7)]])
        kept = reader.copy()
        assert not races._fold_single_readers(kept, dup, other, tmp)
        assert kept.tolist() == reader.tolist()
    assert taken == 300


# ---------------------------------------------------------------- races across barriers
def _read_own_word(W: Wave, mask=None) -> None:
    W.lds(0, W.tid.copy(), mask, 0.0, None, 0)


def _write_next_word(W: Wave, m) -> None:
    """Thread t writes word t + 1 (mod T): a word thread t + 1 may have read."""
    W.sts(0, (W.tid + 1) % W.T, np.float32(1.0), None, m, 0)


def test_partial_barrier_keeps_the_reads_of_the_block_that_did_not_reach_it() -> None:
    W = _wave(4, 2)
    _read_own_word(W)
    W.barrier(_lanes_of(W, {0}), 0)          # block 1 left the loop earlier
    _write_next_word(W, _lanes_of(W, {0}))   # block 0 passed a barrier: no race
    with pytest.raises(SimulationError) as e:
        _write_next_word(W, _lanes_of(W, {1}))
    assert (e.value.kind, e.value.block, e.value.thread) == ("race", (1, 0, 0), 0)


def test_partial_barrier_keeps_folded_reads_too() -> None:
    W = _wave(4, 2)
    _read_own_word(W)
    W._fold_reads(0)
    W.barrier(_lanes_of(W, {0}), 0)
    _write_next_word(W, _lanes_of(W, {0}))
    with pytest.raises(SimulationError, match="race"):
        _write_next_word(W, _lanes_of(W, {1}))


@pytest.mark.parametrize("mask", ["none", "all"])
def test_a_barrier_every_block_reaches_forgets_every_read_and_write(mask: str) -> None:
    W = _wave(4, 2)
    _read_own_word(W)
    W.sts(0, W.tid + 4, np.float32(2.0), None, None, 0)
    W.barrier(None if mask == "none" else np.ones(W.L, bool), 0)
    _write_next_word(W, None)
    W.sts(0, (W.tid + 1) % W.T + 4, np.float32(3.0), None, None, 0)


def test_write_after_write_across_a_partial_barrier() -> None:
    W = _wave(4, 2)
    W.sts(0, W.tid, np.float32(1.0), None, None, 0)
    W.barrier(_lanes_of(W, {1}), 0)
    _write_next_word(W, _lanes_of(W, {1}))
    with pytest.raises(SimulationError, match="wrote since the last barrier") as e:
        _write_next_word(W, _lanes_of(W, {0}))
    assert e.value.block == (0, 0, 0)


def test_read_of_a_word_written_before_a_barrier_the_block_skipped() -> None:
    W = _wave(4, 2)
    W.sts(0, W.tid, np.float32(1.0), None, None, 0)
    W.barrier(_lanes_of(W, {0}), 0)
    W.lds(0, (W.tid + 1) % 4, _lanes_of(W, {0}), 0.0, None, 0)
    with pytest.raises(SimulationError, match="reads a word that thread 1 wrote") as e:
        W.lds(0, (W.tid + 1) % 4, _lanes_of(W, {1}), 0.0, None, 0)
    assert (e.value.block, e.value.thread) == ((1, 0, 0), 0)


# ---------------------------------------------------------------- masked reads
def test_masked_off_lanes_record_no_read() -> None:
    W = _wave(4, 1)
    _read_own_word(W, W.tid < 2)            # threads 0 and 1 read words 0 and 1
    _write_next_word(W, (W.tid == 1) | (W.tid == 2))   # words 2 and 3: nobody read them
    with pytest.raises(SimulationError, match="read since the last barrier") as e:
        _write_next_word(W, W.tid == 3)     # word 0, which thread 0 read
    assert e.value.thread == 3


def test_masked_vector_reads_record_only_their_lanes() -> None:
    W = _wave(4, 1, size=16)
    flat = W.tid[:, None] * 2 + np.arange(2)    # thread t reads words 2t, 2t + 1
    W._race_read(0, flat, W.tid >= 2, 0, per_lane=2)
    W.sts(0, np.int64(1), np.float32(1.0), None, W.tid == 3, 0)   # word 1: thread 0's, off
    with pytest.raises(SimulationError, match="thread 2 read") as e:
        W.sts(0, np.int64(5), np.float32(1.0), None, W.tid == 3, 0)
    assert e.value.index == 5


def test_reads_of_several_threads_fold_to_several() -> None:
    W = _wave(4, 1)
    W.lds(0, np.zeros(4, np.int64) + (W.tid >= 2), None, 0.0, None, 0)  # 0,0,1,1
    W._fold_reads(0)
    assert W.sh_reader[0][:2].tolist() == [-2, -2]


# ---------------------------------------------------------------- lane geometry
@pytest.mark.parametrize(("T", "B"), [(4, 3), (128, 2), (256, 128)])
def test_lane_geometry_is_the_straightforward_one_and_read_only(T: int, B: int) -> None:
    lane, blk, tid = lane_geometry(T, B)
    want = np.arange(T * B)
    assert lane.tolist() == want.tolist()
    assert blk.tolist() == (want // T).tolist()
    assert tid.tolist() == (want % T).tolist()
    W = _wave(T, B)
    assert W.sh_off[0].tolist() == ((want // T) * 8).tolist()
    assert W.block_base[0].tolist() == (np.arange(B) * 8).tolist()
    if T * B <= 1 << 14:
        assert lane_geometry(T, B)[0] is lane
        with pytest.raises(ValueError):
            tid[0] = 5


# ---------------------------------------------------------------- out-of-range tail, locals
def test_first_active_out_of_range_lane_is_reported_not_the_first_out_of_range() -> None:
    W = _wave(4, 2)
    idx = np.array([9, 1, 2, -3, 0, 1, 2, 3], np.int64)   # lanes 0 and 3 outside
    m = np.array([False, True, True, True, True, True, True, True])
    with pytest.raises(SimulationError) as e:
        W.lds(0, idx, None, 0.0, m, 0)
    assert (e.value.index, e.value.thread) == (-3, 3)
    W.sh[0][:] = np.arange(16)
    m[3] = False                                           # both out of range: masked
    got = W.lds(0, idx, None, 0.0, m, 0)
    assert got[m].tolist() == [1.0, 2.0, 8.0, 9.0, 10.0, 11.0]


def _local_wave(T: int = 4, check: bool = True) -> Wave:
    return Wave("k", (1, 1, 1), T, 0, 1, 32, [], [], [LocalBuffer("r", f32, 3)], SITES, 0,
                check)


@pytest.mark.parametrize("kind", [int, np.int64])
def test_local_registers_by_a_uniform_index(kind) -> None:
    W = _local_wave()
    x = np.arange(4, dtype=np.float32)
    W.stl(0, kind(1), x, None, None, 0)
    W.stl(0, kind(2), x + 10, None, np.array([True, False, True, False]), 0)
    assert W.ldl(0, kind(1), None, 0.0, None, 0).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert W.ldl(0, kind(2), None, 0.0, None, 0).tolist() == [10.0, 0.0, 12.0, 0.0]
    assert W.ldl(0, kind(0), None, 0.0, None, 0) == 0.0
    for bad in (-1, 3):
        for call in (lambda i: W.ldl(0, i, None, 0.0, None, 0),
                     lambda i: W.stl(0, i, x, None, None, 0)):
            with pytest.raises(SimulationError) as e:
                call(kind(bad))
            assert (e.value.kind, e.value.index) == ("out_of_bounds", bad)


def test_uniform_reads_count_toward_the_fold_limit(monkeypatch) -> None:
    """A uniform shared read (every thread of a block reads one word) is recorded like any
    read: its words count toward READS_PENDING_LIMIT, so recorded reads stay bounded, and
    the folded reader is still caught by a later write."""
    from hal.backends.cpu_sim import races

    monkeypatch.setattr(races, "READS_PENDING_LIMIT", 5)
    W = _wave(4, 2)
    for _ in range(3):
        W.lds(0, np.int64(1), None, 0.0, None, 0)   # 2 words (one per block) each
        assert W.sh_pending[0] <= 5 and len(W.sh_reads[0]) <= 3
    assert not W.sh_reads[0] and W.sh_reader[0][[1, 9]].tolist() == [-2, -2]   # folded
    with pytest.raises(SimulationError, match="other threads read"):
        _write_next_word(W, None)   # thread 0 writes word 1, which every thread read
