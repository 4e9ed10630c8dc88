"""wgmma_sim: an operand's words gathered as runs of consecutive words (OperandWords,
_gather) equal the word-by-word gather, for the canonical layouts and for offsets that
are not runs."""

from types import SimpleNamespace

import numpy as np
import pytest

from hal.backends.cpu_sim import wgmma_sim

LAYOUTS = [(rows, 16 if isz == 2 else 32, isz, km, sw, 16, 1024 if sw == 128 else 256)
           for rows in (64, 128) for isz in (1, 2) for km in (True, False)
           for sw in (0, 32, 64, 128)]


def _words(layout, starts, size, blocks):
    sb = SimpleNamespace(size=size, nbytes=size * layout[2], name="t")
    W = SimpleNamespace(sh_buf=[sb])
    st = SimpleNamespace(base=[0], operands={})
    start = np.asarray(starts, np.int64)
    j, elem, which, (run, runs) = wgmma_sim._operand_elements(W, st, start, layout, 0, 0)
    base = np.asarray(blocks, np.int64) * size
    flat = base[:, None] + (elem if which is None else elem[which])
    if runs is not None:
        runs = (base // run)[:, None] + (runs if which is None else runs[which])
    return flat, wgmma_sim.OperandWords(flat, runs, run)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_runs_gather_equals_the_word_gather(layout) -> None:
    size = 1 << 15
    rng = np.random.default_rng(1)
    flat, words = _words(layout, [0, 1024, 0, 2048], size, [0, 0, 1, 2])
    for dtype in (np.int64, np.int32, np.float32):
        arr = rng.integers(-5, 1000, 3 * size).astype(dtype)
        np.testing.assert_array_equal(wgmma_sim._gather(arr, words), arr.take(flat))
    if words.runs is not None:   # each run: `run` consecutive words from a multiple of run
        got = words.runs[..., None] * words.run + np.arange(words.run)
        np.testing.assert_array_equal(got.reshape(flat.shape), flat)


def test_swizzled_bf16_tiles_are_gathered_in_runs_of_eight() -> None:
    _, words = _words((64, 16, 2, True, 128, 16, 1024), [0], 1 << 14, [0, 3])
    assert words.run == 8 and words.runs.shape == (2, 128)


def test_offsets_that_are_not_runs_gather_word_by_word() -> None:
    elem = np.array([[0, 1, 2, 4, 8, 9, 10, 11]])          # a gap in the first four
    assert wgmma_sim._run_length(elem, 64) == (1, None)
    assert wgmma_sim._run_length(np.array([[2, 3, 4, 5]]), 64)[0] == 2   # 4-runs misaligned
    assert wgmma_sim._run_length(np.array([[0, 1, 2, 3]]), 6)[0] == 2    # part of 6 words
