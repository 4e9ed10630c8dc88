"""wgmma_sim._accumulate: the per-thread accumulator layout, and the reuse of the last
wgmma's matrix-form result when the registers are unchanged since (a K loop)."""

from types import SimpleNamespace

import numpy as np
import pytest

from hal.backends.cpu_sim import wgmma_sim
from hal.kernel.wgmma import accumulator_coord

WG = 128


def _matrix(rows, n, g):
    """Warpgroup g's 64 x n accumulator read element by element through accumulator_coord."""
    d = np.zeros((64, n), np.float64)
    for t in range(WG):
        for i in range(n // 2):
            r, c = accumulator_coord(t, i)
            d[r, c] = np.broadcast_to(rows[i], (len(np.atleast_1d(rows[i])),))[g * WG + t] \
                if np.ndim(rows[i]) else rows[i]
    return d


def _setup(n, groups, seed=0):
    rng = np.random.default_rng(seed)
    L = groups * WG
    W = SimpleNamespace(L=L, loc=[[np.float32(0)] * 4 + [rng.standard_normal(L).astype(np.float32)
                                                          for _ in range(n // 2)] + [np.float32(1)]])
    st = SimpleNamespace(acc_last={}, acc_pending={})
    return rng, W, st


def _step(rng, W, st, n, gids, expect):
    a = rng.integers(-8, 8, (len(gids), 64, 16)).astype(np.float64) / 4
    b = rng.integers(-8, 8, (len(gids), n, 16)).astype(np.float64) / 4
    before = {int(g): _matrix(W.loc[0][4:4 + n // 2], n, int(g)) for g in gids}
    wgmma_sim._accumulate(W, st, 0, 4, n, np.asarray(gids), a, b)
    for j, g in enumerate(gids):
        want = (before[int(g)] + a[j] @ b[j].T).astype(np.float32)
        np.testing.assert_array_equal(_matrix(W.loc[0][4:4 + n // 2], n, int(g)), want)
        expect[int(g)] = want


@pytest.mark.parametrize("n", [16, 64])
def test_consecutive_wgmmas_equal_the_elementwise_layout(n):
    rng, W, st = _setup(n, 3)
    expect = {}
    for _ in range(3):
        _step(rng, W, st, n, [0, 2], expect)
    assert W.loc[0][:4] == [0, 0, 0, 0] and W.loc[0][-1] == 1   # other elements untouched
    # warpgroup 1 took no part: its lanes keep their first values
    assert st.acc_last   # the reuse path was taken


def test_a_store_between_wgmmas_is_seen():
    """A thread writing one accumulator element between two wgmmas (its row replaced):
    the second wgmma must add to the stored value, not to the last result. Fails if the
    reuse ignores the store."""
    n = 16
    rng, W, st = _setup(n, 2)
    expect = {}
    _step(rng, W, st, n, [0, 1], expect)
    W.loc[0][4 + 3] = np.where(np.arange(W.L) % 7 == 0, np.float32(5.0), W.loc[0][4 + 3])
    _step(rng, W, st, n, [0, 1], expect)


def test_other_warpgroups_between_wgmmas():
    n = 16
    rng, W, st = _setup(n, 3)
    expect = {}
    _step(rng, W, st, n, [0, 1], expect)
    _step(rng, W, st, n, [1, 2], expect)
    _step(rng, W, st, n, [1, 2], expect)


def test_results_are_fresh_arrays():
    """A value read from an accumulator before a wgmma keeps its value after it."""
    n = 16
    rng, W, st = _setup(n, 1)
    expect = {}
    _step(rng, W, st, n, [0], expect)
    held = W.loc[0][4]
    kept = held.copy()
    _step(rng, W, st, n, [0], expect)
    np.testing.assert_array_equal(held, kept)


def test_wgmmas_with_no_read_between_hold_the_result_in_matrix_form():
    """Consecutive wgmmas that nothing reads between keep the result in matrix form
    (st.acc_pending) and write the registers once, when W.loc is indexed: the registers
    read then equal the elementwise layout of every step's sum. Fails if the pending
    result is lost, applied twice or written to the wrong lanes."""
    n = 16
    rng, W, st = _setup(n, 3)
    gids = np.asarray([0, 2])
    want = {int(g): _matrix(W.loc[0][4:4 + n // 2], n, int(g)) for g in gids}
    untouched = W.loc[0][4 + 1][WG:2 * WG].copy()
    for _ in range(3):
        a = rng.integers(-8, 8, (2, 64, 16)).astype(np.float64) / 4
        b = rng.integers(-8, 8, (2, n, 16)).astype(np.float64) / 4
        wgmma_sim._accumulate(W, st, 0, 4, n, gids, a, b)
        assert 0 in st.acc_pending   # not written yet
        for j, g in enumerate(gids):
            want[int(g)] = (want[int(g)] + a[j] @ b[j].T).astype(np.float32)
    rows = W.loc[0]                  # indexing writes the pending result
    assert not st.acc_pending and type(rows) is list
    for g in gids:
        np.testing.assert_array_equal(_matrix(rows[4:4 + n // 2], n, int(g)), want[int(g)])
    np.testing.assert_array_equal(rows[4 + 1][WG:2 * WG], untouched)
    assert rows[:4] == [0, 0, 0, 0] and rows[-1] == 1


def test_iterating_the_locals_writes_pending_results():
    n = 16
    rng, W, st = _setup(n, 1)
    a = rng.integers(-8, 8, (1, 64, 16)).astype(np.float64)
    b = rng.integers(-8, 8, (1, n, 16)).astype(np.float64)
    want = (_matrix(W.loc[0][4:4 + n // 2], n, 0) + a[0] @ b[0].T).astype(np.float32)
    wgmma_sim._accumulate(W, st, 0, 4, n, np.asarray([0]), a, b)
    (rows,) = list(W.loc)
    np.testing.assert_array_equal(_matrix(rows[4:4 + n // 2], n, 0), want)
