"""wgmma_sim.check_acc: reading a wgmma accumulator before the wait_group that retires the
wgmma writing it is a race. An accumulator found fully retired is not checked again
until a wgmma writes it (the attention epilogue reads its accumulators statement by
statement); these tests show that the shortcut never hides a later early read."""

from types import SimpleNamespace

import numpy as np
import pytest

from hal.backends.cpu_sim import wgmma_sim

WG = 128


class _Race(Exception):
    pass


def _wave(groups):
    L = groups * WG
    W = SimpleNamespace(L=L, check=True, lane=np.arange(L), tid=np.arange(L),
                        loc_buf=[SimpleNamespace(name="acc")])

    def fail(kind, site, lane, what, **kw):
        raise _Race(f"{kind}: lane {lane}: {what}")

    W._fail = fail
    st = SimpleNamespace(acc_group={}, acc_from={}, acc_retired=set(),
                         committed=np.zeros(groups, np.int64), done=np.zeros(groups, np.int64))
    return W, st


def _issue(st, ja, gids):
    wgmma_sim.note_acc_write(st, ja, gids)   # what wgmma and wgmma_rs do


def _commit_wait(st, pending=0):
    st.committed += 1
    st.done = np.maximum(st.done, st.committed - pending)


def test_read_after_wait_passes_and_is_cached():
    W, st = _wave(2)
    _issue(st, 0, np.array([0, 1]))
    _commit_wait(st)
    wgmma_sim.check_acc(W, st, 0, None, 0)
    assert 0 in st.acc_retired


def test_early_read_after_a_retired_read_is_still_caught():
    """Iteration 1 waits and reads (cached as retired); iteration 2's wgmma writes the
    accumulator again and its read comes before the wait: a race. Fails if the wgmma
    does not clear the cache."""
    W, st = _wave(2)
    _issue(st, 0, np.array([0, 1]))
    _commit_wait(st)
    wgmma_sim.check_acc(W, st, 0, None, 0)
    _issue(st, 0, np.array([0, 1]))
    st.committed += 1            # committed, not waited for
    with pytest.raises(_Race, match="race: lane 0"):
        wgmma_sim.check_acc(W, st, 0, None, 0)


def test_mask_selects_the_pending_warpgroup():
    """Only warpgroup 1 has an unretired wgmma: a read by warpgroup 0's lanes passes, one
    by warpgroup 1's lanes fails, and nothing is cached as retired meanwhile."""
    W, st = _wave(2)
    _issue(st, 0, np.array([0]))
    _commit_wait(st)
    _issue(st, 0, np.array([1]))
    st.committed += 1
    m0 = np.arange(2 * WG) < WG
    wgmma_sim.check_acc(W, st, 0, m0, 0)
    assert 0 not in st.acc_retired
    with pytest.raises(_Race, match=f"race: lane {WG}"):
        wgmma_sim.check_acc(W, st, 0, ~m0, 0)
