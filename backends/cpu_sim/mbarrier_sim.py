"""mbarriers in the simulator (wgmma_sim): per block and barrier the expected arrivals,
pending arrivals, pending transaction bytes and completed phases; arrivals, TMA transaction
bytes and waits, with the `deadlock` and `bad_mbarrier` faults they can raise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .async_proxy import publish
from .hopper_state import HopperState, active, per_lane
from .lanes import Wave


def barrier_slots(W: Wave, st: HopperState, jb: int, index: Any, act: np.ndarray):
    idx = per_lane(W, index)[act]
    return W.blk[act], st.bar_slot[jb] + idx


def _complete(st: HopperState) -> None:
    done = (st.pending == 0) & (st.tx == 0) & (st.expected > 0)
    st.phase += done
    st.pending = np.where(done, st.expected, st.pending)


def complete_phases(st: HopperState) -> None:
    """Complete every barrier phase whose arrivals and transaction bytes are all in."""
    _complete(st)


def mbar_init(W: Wave, st: HopperState, jb: int, index: Any, count: int, m: Any) -> None:
    act = active(W, m)
    b, s = barrier_slots(W, st, jb, index, act)
    st.expected[b, s] = count
    st.pending[b, s] = count
    st.tx[b, s] = 0
    st.phase[b, s] = 0


def mbar_arrive(W: Wave, st: HopperState, jb: int, index: Any, tx: int, m: Any,
                site: int) -> None:
    act = active(W, m)
    b, s = barrier_slots(W, st, jb, index, act)
    publish(W, st, act, s, b)
    np.add.at(st.tx, (b, s), tx)
    np.add.at(st.pending, (b, s), -1)
    if (st.pending < 0).any():
        bb, ss = (int(x[0]) for x in np.nonzero(st.pending < 0))
        W._fail("bad_mbarrier", site, int(np.flatnonzero(act)[0]), f"mbarrier "
                f"{W.sh_buf[jb].name}[{ss - st.bar_slot[jb]}] of block {bb} got more "
                f"arrivals than its count {int(st.expected[bb, ss])}",
                hint="init the barrier with the number of arriving threads")
    _complete(st)


def complete_tx(W: Wave, st: HopperState, blocks: np.ndarray, slots: np.ndarray, nbytes: int,
                jb: int, site: int, lane: int) -> None:
    np.add.at(st.tx, (blocks, slots), -nbytes)
    if (st.tx < 0).any():
        bb, ss = (int(x[0]) for x in np.nonzero(st.tx < 0))
        W._fail("bad_mbarrier", site, lane, f"mbarrier {W.sh_buf[jb].name}"
                f"[{ss - st.bar_slot[jb]}] received more TMA transaction bytes than "
                f"expect_tx announced (phase {int(st.phase[bb, ss])}, "
                f"{-int(st.tx[bb, ss])} bytes over)",
                hint="arrive.expect_tx with the bytes of every box the stage receives")
    _complete(st)


def mbar_wait(W: Wave, st: HopperState, jb: int, index: Any, parity: Any, m: Any,
              site: int) -> None:
    act = active(W, m)
    if not act.any():
        return
    b, s = barrier_slots(W, st, jb, index, act)
    par = per_lane(W, parity)[act]
    ok = (st.phase[b, s] % 2) != par
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        lane = int(np.flatnonzero(act)[i])
        bb, ss = int(b[i]), int(s[i])
        W._fail("deadlock", site, lane, f"mbarrier {W.sh_buf[jb].name}"
                f"[{ss - st.bar_slot[jb]}], phase {int(st.phase[bb, ss])} (parity "
                f"{int(par[i])}) never completes: {int(st.pending[bb, ss])} of "
                f"{int(st.expected[bb, ss])} arrivals and {int(st.tx[bb, ss])} transaction "
                f"bytes are still missing when the warps reach this wait in program order",
                hint="check the expect_tx byte count, the arrival count and the phase parity")
    lanes = np.flatnonzero(act)
    st.observed[lanes, s] = np.maximum(st.observed[lanes, s], st.phase[b, s])
    st.seen = None
    st.waits += 1



__all__ = ["barrier_slots", "complete_phases", "complete_tx", "mbar_arrive", "mbar_init",
           "mbar_wait"]
