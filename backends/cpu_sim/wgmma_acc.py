"""wgmma accumulators in the simulator (wgmma_sim): D += A @ B^T of a wave's warpgroups as
one batched float64 contraction, rounded once to f32, the per-thread register layout
(hal.kernel.wgmma.accumulator_table) changed only when something reads the registers
(_PendingLocals); wgmma groups (commit / wait) and the race of reading an accumulator
before the wait_group that retires its wgmma (`check_acc`).
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import numpy as np

from hal.kernel.wgmma import accumulator_table

from .hopper_state import WG, HopperState, active, whole_groups
from .lanes import Wave


def accumulate(W: Wave, st: HopperState, ja: int, acc_off: int, n: int, gids: np.ndarray,
                a: np.ndarray, b: np.ndarray) -> None:
    """D += A @ B^T for warpgroups `gids` (a [G, 64, k], b [G, n, k] float64): the
    accumulators come from and go back to local buffer `ja` (elements acc_off ..
    acc_off + n/2 - 1 of each thread) in the per-thread layout (accumulator_table); exact
    products summed in float64 with the accumulator, rounded once to f32.

    The registers are a [n/2, L] float32 array whose rows are the elements' lane arrays;
    a warpgroup's [n/2, 128] block of it is its 64 x n matrix under one fixed permutation
    (_acc_perm), so the layout change is a gather of the groups' lanes and one small
    index per group. The result stays in matrix form (st.acc_pending) until something
    reads the buffer (W.loc[ja]: _PendingLocals writes the registers then), so a K loop's
    wgmmas into one accumulator change layout twice, not twice per wgmma. Consecutive
    wgmmas after such a read find the registers exactly as it left them (the same row
    objects: a store to any element replaces its row, nothing writes a row in place) and
    use the written matrix form instead of gathering it again."""
    G = len(gids)
    key = (ja, acc_off, n)
    pend = st.acc_pending.get(ja)
    if pend is not None and pend[0] == key and np.array_equal(pend[2], gids):
        _, full, gids, d = pend    # nothing read or wrote the registers since
    else:
        full, d = _accumulator_matrices(W, st, key, gids)
        gids = gids.copy()
    # exact products summed in float64, the accumulator added first (the operand order of
    # D + A @ B: which NaN an add returns follows it), in place in the product's array
    p = np.matmul(a, np.swapaxes(b, 1, 2))
    d = np.add(d.reshape(G, 64, n), p, out=p).astype(np.float32).reshape(G, 64 * n)
    st.acc_pending[ja] = (key, full, gids, d)
    if type(W.loc) is not _PendingLocals:
        W.loc = _PendingLocals(W.loc, st)


def _accumulator_matrices(W: Wave, st: HopperState, key: tuple, gids: np.ndarray):
    """(a new [n/2, L] float32 copy of accumulator `key`'s registers, the [G, 64 * n]
    matrix form of warpgroups `gids`'s accumulators)."""
    ja, acc_off, n = key
    h, L, G = n // 2, int(W.L), len(gids)
    seg = W.loc[ja][acc_off:acc_off + h]    # (writes a pending result of ja first)
    last = st.acc_last.get(key)
    if last is not None and np.array_equal(last[1], gids) and \
            all(map(operator.is_, seg, last[2])):
        return last[0].copy(), last[3]
    full = _registers(seg, L)                    # [h, L] float32, a fresh array
    regs = full.reshape(h, L // WG, WG)[:, gids, :].transpose(1, 0, 2)
    return full, np.take(regs.reshape(G, h * WG), _acc_perm(n), axis=1)


def _write_pending(rows: list, st: HopperState, ja: int) -> None:
    """Write the pending wgmma result of local buffer `ja` (accumulate) to its registers
    `rows` (W.loc[ja] as a plain list)."""
    (_, acc_off, n), full, gids, d = st.acc_pending.pop(ja)
    h, G = n // 2, len(gids)
    L = full.shape[1]
    # back to the registers by a gather through the inverse permutation (a scatter
    # `regs[:, perm] = d` is about 10x slower in NumPy)
    regs = np.take(d, _acc_inv(n), axis=1)
    full.reshape(h, L // WG, WG)[:, gids, :] = regs.reshape(G, h, WG).transpose(1, 0, 2)
    new = list(full)    # each element's new lane array (a row of `full`, never written again)
    rows[acc_off:acc_off + h] = new
    st.acc_last[(ja, acc_off, n)] = (full, gids, new, d)


class _PendingLocals(list):
    """W.loc of a wave whose wgmmas may hold results in matrix form (st.acc_pending):
    indexing it writes a buffer's pending result to its registers first, so every reader
    and writer of W.loc[j] (loads, stores, mma, vector copies, mma_batch, the next wgmma
    of another shape) sees exactly the registers the wgmmas wrote. Only the buffers'
    lists are handed out (plain lists, as in every other wave)."""

    def __init__(self, rows: list, st: HopperState):
        super().__init__(rows)
        self.st = st

    def __getitem__(self, j: Any) -> Any:
        pending = self.st.acc_pending
        if pending:
            for jj in ([j] if isinstance(j, int) else list(pending)):
                if jj in pending:
                    _write_pending(list.__getitem__(self, jj), self.st, jj)
        return list.__getitem__(self, j)

    def __iter__(self):
        return (self[j] for j in range(len(self)))


@functools.lru_cache(maxsize=16)
def _acc_perm(n: int) -> np.ndarray:
    """[64 * n]: for each row-major position of a warpgroup's 64 x n accumulator, its
    index in the warpgroup's [n/2, 128] registers (element * 128 + thread)."""
    tab = accumulator_table(n)                       # [128, n/2, 2]: thread, element
    lin = (tab[..., 0] * n + tab[..., 1]).ravel()    # thread-major -> matrix position
    inv = np.empty(64 * n, np.int64)
    inv[lin] = np.arange(64 * n)                     # matrix position -> thread * h + element
    out = (inv % (n // 2)) * WG + inv // (n // 2)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=16)
def _acc_inv(n: int) -> np.ndarray:
    """The inverse of _acc_perm(n): for each register position (element * 128 + thread)
    of a warpgroup, its row-major position in the 64 x n accumulator."""
    perm = _acc_perm(n)
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size)
    inv.setflags(write=False)
    return inv


def _registers(seg: list, L: int) -> np.ndarray:
    """Register elements `seg` (each a lane array or a scalar) as one new [len, L] float32
    array."""
    if all(isinstance(r, np.ndarray) and r.shape == (L,) for r in seg):
        return np.array(seg, dtype=np.float32)
    out = np.empty((len(seg), L), np.float32)
    for i, r in enumerate(seg):
        out[i] = r
    return out


def commit(W: Wave, st: HopperState, m: Any, site: int) -> None:
    gl = whole_groups(W, m, site, "wgmma.commit_group")
    st.committed[gl] += 1


def wait(W: Wave, st: HopperState, pending: int, m: Any, site: int) -> None:
    gl = whole_groups(W, m, site, "wgmma.wait_group")
    st.done[gl] = np.maximum(st.done[gl], st.committed[gl] - pending)
    st.inflight = [r for r in st.inflight if (r[1] >= st.done[r[0]]).any()]


def note_acc_write(st: HopperState, ja: int, gids: np.ndarray) -> None:
    """A wgmma of warpgroups `gids` writes accumulator buffer `ja`: it belongs to their
    current commit group, and `ja` is no longer known to be retired (check_acc)."""
    grp = st.acc_group.setdefault(ja, np.full(len(st.committed), -1, np.int64))
    grp[gids] = st.committed[gids]
    st.acc_retired.discard(ja)


def check_acc(W: Wave, st: HopperState, ja: int, m: Any, site: int) -> None:
    """A thread reads accumulator buffer `ja`: its wgmma must be retired."""
    grp = st.acc_group.get(ja)
    if grp is None or not W.check or ja in st.acc_retired:
        return
    pending = (grp >= 0) & (grp >= st.done)      # per warpgroup, whatever the mask
    if not pending.any():   # `done` only grows: retired until the next wgmma writes ja
        st.acc_retired.add(ja)
        return
    g = W.lane // WG
    bad = active(W, m) & pending[g]
    if bad.any():
        lane = int(np.flatnonzero(bad)[0])
        buf, stage, phase = st.acc_from.get(ja, ("?", -1, -1))
        W._fail("race", site, lane, f"warpgroup {int(W.tid[lane]) // WG} reads accumulator "
                f"{W.loc_buf[ja].name} before wgmma.wait_group retired the wgmma that writes "
                f"it (commit group {int(grp[g[lane]])}, operands from {buf} stage {stage}, "
                f"mbarrier phase {phase})", buffer=W.loc_buf[ja].name,
                hint="wgmma.commit_group then wgmma.wait_group before reading accumulators")



__all__ = ["accumulate", "check_acc", "commit", "note_acc_write", "wait"]
