"""wgmma_sim's per-wave tables and chunk fast paths against the direct computation: an
operand's words kept per (descriptors, warpgroups) (wgmma_operand.operand), a TMA box
landing as chunk rows (_land), and the cluster read map taking known chunks."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from hal.backends.cpu_sim import cluster_sim, wgmma_operand, wgmma_sim
from hal.kernel.wgmma import swizzle

WG = 128
SIZE = 1 << 14            # words per block of the one shared buffer (bf16)


def _wave(blocks: int, groups: int):
    """A made-up wave: `blocks` blocks of `groups` warpgroups, one bf16 shared buffer."""
    T = groups * WG
    sb = SimpleNamespace(size=SIZE, nbytes=SIZE * 2, name="t", stages=4,
                         dtype=SimpleNamespace(itemsize=2))
    rng = np.random.default_rng(0)
    W = SimpleNamespace(L=blocks * T, T=T, check=True, sh_buf=[sb],
                        sh=[rng.standard_normal(blocks * SIZE).astype(np.float32)],
                        sh_version=[0])
    st = SimpleNamespace(base=[0], operands={}, operand_words={}, inflight=[],
                         proxy_writer={}, sync_writer={})
    return W, st


def _descs(W, starts_per_group, sw=128, lbo=16, sbo=1024):
    """Per lane the descriptor of its warpgroup's start address (bytes)."""
    hi = ((lbo >> 4) & 0x3FFF) << 16 | ((sbo >> 4) & 0x3FFF) << 32 | {128: 1, 64: 2, 32: 3}[sw] << 62
    hi = hi - (1 << 64) if hi >= 1 << 63 else hi
    addr = np.repeat(np.asarray(starts_per_group, np.int64), WG)
    return np.int64(hi) | ((addr & 0x3FFFF) >> 4)


def _direct(W, st, v, rows, gl):
    """The operand's words and values with a fresh table (nothing kept)."""
    fresh = SimpleNamespace(base=st.base, operands={}, operand_words={})
    vals, op = wgmma_operand.operand(W, fresh, v, rows, 16, 2, True, gl, 0, "A")
    return vals, op


@pytest.mark.parametrize("rows", [64, 128])
def test_operand_table_equals_a_fresh_computation(rows) -> None:
    W, st = _wave(blocks=3, groups=2)
    ng = 6
    cases = [([0, 8192, 0, 8192, 0, 8192], np.ones(ng, bool)),
             ([1024, 8192, 1024, 8192, 1024, 8192], np.ones(ng, bool)),
             ([0, 8192, 0, 8192, 0, 8192], np.array([1, 0, 1, 0, 1, 0], bool)),
             ([0, 8192, 0, 8192, 0, 8192], np.array([0, 1, 0, 1, 0, 1], bool)),
             ([0, 0, 0, 0, 0, 0], np.ones(ng, bool)),
             # the same descriptors read by other warpgroups: other blocks' words
             ([0, 0, 0, 0, 0, 0], np.array([1, 0, 0, 0, 0, 0], bool)),
             ([0, 0, 0, 0, 0, 0], np.array([0, 0, 1, 0, 0, 0], bool))]
    for _ in range(2):      # computed, then from the table
        for starts, gl in cases:
            v = _descs(W, starts)
            vals, op = wgmma_operand.operand(W, st, v, rows, 16, 2, True, gl, 0, "A")
            want_vals, want = _direct(W, st, v, rows, gl)
            np.testing.assert_array_equal(op.words.flat, want.words.flat)
            np.testing.assert_array_equal(vals, want_vals)
            # the words themselves, from the descriptors' addresses
            gids = np.flatnonzero(gl)
            start = np.asarray(starts, np.int64)[gids]
            r = np.arange(rows)[:, None]
            c = np.arange(16)[None, :]
            from hal.kernel.wgmma import canonical_offset
            off = canonical_offset(r, c, 2, True, 128, 16, 1024)
            words = (swizzle(start[:, None, None] + off[None], 128) // 2).reshape(len(gids), -1)
            words += ((gids * WG) // W.T * SIZE)[:, None]
            np.testing.assert_array_equal(op.words.flat, words)
            np.testing.assert_array_equal(op.chunks, wgmma_operand.whole_chunks(words, 8))
            np.testing.assert_array_equal(op.first, op.chunks * 8)
            W.sh[0] += 1.0          # new values each time: the table keeps words, not values
    assert len(st.operand_words) == len(cases)


def test_box_landing_as_chunk_rows_equals_the_word_scatter() -> None:
    rng = np.random.default_rng(2)
    for base in (0, 1024):
        W, st = _wave(blocks=4, groups=1)
        W2, st2 = _wave(blocks=4, groups=1)
        for rep in range(3):
            for arr_st in (st, st2):
                arr_st.proxy_writer = {0: np.full(4 * SIZE, rep, np.int64)}
                arr_st.sync_writer = {0: np.full(4 * SIZE, 7, np.int64)}
            addr = base + 2048 * rng.integers(0, 4, 3) + np.array([0, 0, 16384])
            elem, chunks, _ = wgmma_sim._box_elements(addr, base, 128, 4096, 2, 8)
            assert chunks is not None
            b = np.array([0, 2, 3])
            words = b[:, None] * SIZE + elem
            wchunks = b[:, None] * (SIZE // 8) + chunks
            vals = rng.standard_normal(words.shape).astype(np.float32)
            wgmma_sim._land(W, st, 0, words, vals, 0, np.arange(3), 8, wchunks)
            wgmma_sim._land(W2, st2, 0, words, vals, 0, np.arange(3))
            np.testing.assert_array_equal(W.sh[0], W2.sh[0])
            np.testing.assert_array_equal(st.proxy_writer[0], st2.proxy_writer[0])
            np.testing.assert_array_equal(st.sync_writer[0], st2.sync_writer[0])
            assert W.sh_version == W2.sh_version


@pytest.mark.parametrize("mode,box", [(128, 4096), (64, 1024), (32, 512), (128, 512)])
def test_box_landing_as_block_slices_equals_the_word_scatter(mode, box) -> None:
    """Boxes at a swizzle pattern's start land as one slice per block (tma_sim._region),
    grouped by their place in the block (a multicast's halves land in one block): the
    same words as the scatter."""
    from hal.backends.cpu_sim import tma_sim

    rng = np.random.default_rng(3)
    cases = [([0, 0, 0], [3, 0, 2]), ([2048, 2048, 2048], [1, 2, 3]),
             ([8192, 0, 8192], [3, 3, 0]), ([0, box, 2 * box], [1, 1, 1])]
    for dst, b in cases:
        W, st = _wave(blocks=4, groups=1)
        W2, st2 = _wave(blocks=4, groups=1)
        dsts, b = np.asarray(dst, np.int64), np.asarray(b, np.int64)
        addr = dsts * 2
        elem, chunks, _ = wgmma_sim._box_elements(addr, 0, mode, box, 2, 8)
        first, order = tma_sim._region(addr, dsts, mode, box, 2, 8)
        groups = tma_sim._groups(first, b, order.size)
        assert chunks is not None and groups is not None
        words = b[:, None] * SIZE + elem
        wchunks = b[:, None] * (SIZE // 8) + chunks
        vals = rng.standard_normal(words.shape).astype(np.float32)
        wgmma_sim._land(W, st, 0, words, vals, 0, np.arange(3), 8, wchunks, (b, groups, order))
        wgmma_sim._land(W2, st2, 0, words, vals, 0, np.arange(3))
        np.testing.assert_array_equal(W.sh[0], W2.sh[0])
    # lanes writing the same chunks (then the order of writes matters): no groups
    assert tma_sim._groups(np.array([0, 0]), np.array([1, 1]), 512) is None
    assert tma_sim._groups(np.array([0, 256]), np.array([1, 1]), 512) is None
    # off a pattern's start: no region
    assert tma_sim._region(np.array([16, 16]), np.array([8, 8]), 128, 4096, 2, 8) is None


def test_read_map_takes_known_chunks_only_at_its_granularity() -> None:
    mp = cluster_sim.ReadMap(4096, 2)
    words = np.arange(64).reshape(2, 32) + 512
    want = wgmma_operand.whole_chunks(words, 8)
    np.testing.assert_array_equal(mp.index(words, (8, want)), want)
    np.testing.assert_array_equal(mp.index(words, (4, words[:, ::4] // 4)), want)  # not 8: own
    assert mp.c == 8
    odd = words + 1                              # not whole chunks: the map splits
    np.testing.assert_array_equal(mp.index(odd, (8, None)), odd)
    assert mp.c == 1


@pytest.mark.parametrize("count", [3, 40, 400])
def test_clear_bit_by_index_or_mask_equals_the_direct_update(count) -> None:
    rng = np.random.default_rng(count)
    a = rng.integers(0, 1 << 20, 100) | (1 << 3)   # every entry's bit set: each index counts
    idx = rng.integers(0, 100, count)            # repeated indices, as releases name them
    want = a.copy()
    for i in idx.tolist():
        want[i] &= ~(1 << 3)
    cluster_sim._clear_bit(a, idx, ~(1 << 3))
    np.testing.assert_array_equal(a, want)
