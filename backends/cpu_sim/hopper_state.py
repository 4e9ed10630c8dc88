"""The per-wave state of Hopper's asynchronous machinery in the simulator (wgmma_sim):
HopperState (shared layout, mbarriers, wgmma groups, TMA marks, generic-write tracking),
the packing of TMA marks, the lane and warpgroup masks every Hopper operation starts from,
and the mbarrier phases each warpgroup has observed complete (what the operand checks of
a wgmma compare against).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .lanes import Wave
from .wgmma_operand import Operand

WG = 128
# HopperState.mark: a word's TMA as phase << MARK_SHIFT | (1 + slot); a block's mbarriers
# (8 shared bytes each) are far fewer than MARK_SLOTS, phases far below 2**39
MARK_SHIFT = 24
MARK_SLOTS = (1 << MARK_SHIFT) - 1


class HopperState:
    """Per-wave state: shared layout, mbarriers, wgmma groups, TMA marks."""

    def __init__(self, W: Wave, offsets: list[int], bar_slots: dict[int, int]):
        self.base = offsets                         # byte offset of each shared buffer
        self.bar_slot = bar_slots                   # shared buffer j -> first barrier slot
        nslots = sum(W.sh_buf[j].size for j in bar_slots)
        self.expected = np.zeros((W.B, nslots), np.int64)
        self.pending = np.zeros((W.B, nslots), np.int64)
        self.tx = np.zeros((W.B, nslots), np.int64)
        self.phase = np.zeros((W.B, nslots), np.int64)
        self.observed = np.zeros((W.L, nslots), np.int64)   # phases each thread saw complete
        self.seen: np.ndarray | None = None          # per warpgroup, its threads' minimum
        ng = W.L // WG
        self.committed = np.zeros(ng, np.int64)
        self.done = np.zeros(ng, np.int64)
        self.acc_group: dict[int, np.ndarray] = {}   # local j -> per-warpgroup group (-1)
        self.acc_from: dict[int, tuple] = {}         # local j -> (buffer, stage, phase)
        # accumulators whose wgmmas are all retired (check_acc: nothing to check until a
        # wgmma writes them again)
        self.acc_retired: set[int] = set()
        # (local j, first element, n) -> the last wgmma's registers, warpgroups, rows and
        # matrix-form result (_accumulate)
        self.acc_last: dict[tuple, tuple] = {}
        # local j -> a wgmma result not yet written to the registers (_accumulate,
        # _PendingLocals): ((j, first element, n), registers before, warpgroups, result)
        self.acc_pending: dict[int, tuple] = {}
        # (start addresses, operand layout) -> (buffer, element offsets): _operand_elements
        self.operands: dict[tuple, tuple[int, np.ndarray]] = {}
        # (descriptors, active warpgroups, shape) -> Operand (wgmma_operand.operand)
        self.operand_words: dict[tuple, Operand] = {}
        self.inflight: list[tuple[np.ndarray, np.ndarray, int, np.ndarray]] = []
        # what a wgmma's operand checks depend on besides shared values and the cluster's
        # read map: TMAs so far (they write `mark`), successful mbarrier waits (`observed`)
        self.tmas = 0
        self.waits = 0
        # the last wgmma's A operand read (wgmma_sim.ARead): the next wgmma reading the same
        # words with nothing changed since reuses it (gate and up share their A tile)
        self.last_a: Any = None
        # shared j -> per word (or chunk: mark_chunk), the TMA that wrote it: its mbarrier
        # phase << MARK_SHIFT | (1 + its mbarrier slot), 0 for none (one array: one gather
        # per wgmma operand;
        # zeros are calloc'd lazily: a big wave's np.full(-1) cost ~10 ms a buffer)
        self.mark = {}
        # shared j -> c > 1 while every TMA into j wrote whole c-word (16-byte) chunks: a
        # chunk's words share a mark, and mark[j] holds one per chunk (8x fewer cache
        # lines to read per wgmma operand); 1: mark[j] holds one per word (_mark_words)
        self.mark_chunk: dict[int, int] = {}
        # shared j -> per word, the lane whose generic-proxy write (st.shared, a vector
        # store, cp.async) is not yet behind that lane's fence.proxy.async (-1 none)
        self.proxy_writer: dict[int, np.ndarray] = {}
        # shared j -> per word, the lane of a generic write not yet ordered before other
        # threads (-1 none), and the mbarrier slot/phase its writer published it at (-1)
        self.sync_writer: dict[int, np.ndarray] = {}
        self.pub_slot: dict[int, np.ndarray] = {}
        self.pub_phase: dict[int, np.ndarray] = {}
        # shared j -> the words generic writes set since publish / fence_proxy_async last
        # looked (lists of word arrays): the only words whose sync_writer may be unpublished
        # or whose proxy_writer may be unfenced, so those scans read these, not the buffer
        self.unpublished: dict[int, list[np.ndarray]] = {}
        self.unfenced: dict[int, list[np.ndarray]] = {}


def state(W: Wave, offsets: list[int], bar_slots: dict[int, int]) -> HopperState:
    st = getattr(W, "hopper", None)
    if st is None:
        st = W.hopper = HopperState(W, offsets, bar_slots)
    return st


def active(W: Wave, m: Any) -> np.ndarray:
    return np.ones(W.L, bool) if m is None else np.broadcast_to(np.asarray(m, bool), (W.L,))


def per_lane(W: Wave, x: Any) -> np.ndarray:
    return np.broadcast_to(np.asarray(x, np.int64), (W.L,))


def whole_groups(W: Wave, m: Any, site: int, what: str) -> np.ndarray:
    """Active warpgroups (bool [G]); a warpgroup partly active is an error."""
    if W.T % WG:
        W._fail("bad_mma", site, 0, f"{what} needs whole 128-thread warpgroups, the block "
                f"has {W.T} threads", hint="make the block a multiple of 128 threads")
    a = active(W, m).reshape(-1, WG)
    part = a.any(axis=1) & ~a.all(axis=1)
    if part.any():
        g = int(np.flatnonzero(part)[0])
        lane = g * WG + int(np.flatnonzero(~a[g])[0])
        W._fail("divergent_mma", site, lane, f"{what} reached by part of warpgroup "
                f"{int(W.tid[lane]) // WG} (thread {int(W.tid[lane])} is inactive)",
                hint="issue warpgroup instructions outside thread-dependent branches")
    return a.all(axis=1)



def pack_marks(slot: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """HopperState.mark words of TMAs completing on mbarrier `slot` at `phase`."""
    return (phase << MARK_SHIFT) | (slot + 1)


def unpack_marks(mark: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(slot, phase) of HopperState.mark words: (-1, 0) where no TMA wrote."""
    return (mark & MARK_SLOTS) - 1, mark >> MARK_SHIFT



def seen_phases(st: HopperState) -> np.ndarray:
    """[warpgroups, slots]: the phases every thread of a warpgroup has observed complete
    (kept until the next successful wait changes `observed`; every wgmma's operand checks
    read it)."""
    if st.seen is None:
        st.seen = st.observed.reshape(-1, WG, st.observed.shape[1]).min(axis=1)
    return st.seen


def seen_at(st: HopperState, gids: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """[G, words]: seen_phases of warpgroup gids[g] at mbarrier `slot[g, w]` (slot -1: any
    value; the callers mask those words)."""
    seen = seen_phases(st)
    ns = seen.shape[1]
    return seen.reshape(-1).take(gids[:, None] * ns + np.maximum(slot, 0))



__all__ = ["MARK_SHIFT", "MARK_SLOTS", "WG", "HopperState", "active", "pack_marks", "per_lane",
           "seen_at", "seen_phases", "state", "unpack_marks", "whole_groups"]
