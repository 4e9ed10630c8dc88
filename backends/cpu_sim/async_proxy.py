"""Generic-proxy writes to shared memory that a wgmma reads (wgmma_sim): which thread wrote
each word, whether the writer fenced it for the async proxy (fence.proxy.async), and the
mbarrier phase at which the writer published it; the two races a wgmma operand can have
against such writes (`check_proxy`, `check_ordered`). Only the words written since the last
scan are scanned (`unpublished`, `unfenced`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .hopper_state import WG, HopperState, active, seen_at
from .lanes import Wave
from .wgmma_operand import OperandWords
from .wgmma_operand import flat_words as _flat
from .wgmma_operand import gather as _gather


def note_generic_write(W: Wave, j: int, flat: Any, lanes: Any) -> None:
    """Shared words `flat` written by `lanes` through the generic proxy. Tracked once the
    kernel has Hopper state (a wgmma kernel): the async proxy (wgmma) may read them only
    after a fence.proxy.async by the writing thread (PTX ISA, memory consistency model:
    proxies)."""
    st = getattr(W, "hopper", None)
    if st is None or not W.check:
        return
    arr = st.proxy_writer.get(j)
    if arr is None:   # (int32: lanes, slots and phases fit; every wgmma operand check
        # gathers three of these arrays, buffer-sized and mostly out of cache)
        arr = st.proxy_writer[j] = np.full(W.sh[j].size, -1, np.int32)
        st.sync_writer[j] = np.full(W.sh[j].size, -1, np.int32)
        st.pub_slot[j] = np.full(W.sh[j].size, -1, np.int32)
        st.pub_phase[j] = np.zeros(W.sh[j].size, np.int32)
    arr[flat] = lanes
    st.sync_writer[j][flat] = lanes
    st.pub_slot[j][flat] = -1
    words = np.ravel(flat).astype(np.int64, copy=False)
    _note_words(st.unpublished, j, words)
    _note_words(st.unfenced, j, words)


NOTED_ARRAYS_LIMIT = 64   # word arrays kept per buffer before they are merged (_note_words)


def _note_words(noted: dict[int, list[np.ndarray]], j: int, words: np.ndarray) -> None:
    got = noted.setdefault(j, [])
    got.append(words)
    if len(got) > NOTED_ARRAYS_LIMIT:   # (a writer that never arrives: bounded by the buffer)
        got[:] = [np.unique(np.concatenate(got))]


def _noted_words(noted: dict[int, list[np.ndarray]], j: int) -> np.ndarray | None:
    """The words noted for buffer j since the last call (they are forgotten: the caller
    notes again those it leaves pending), None if none."""
    got = noted.pop(j, None)
    if not got:
        return None
    return got[0] if len(got) == 1 else np.concatenate(got)


def publish(W: Wave, st: HopperState, act: np.ndarray, slots: np.ndarray,
             blocks: np.ndarray) -> None:
    """The active lanes arrive on mbarrier `slots` (one per active lane): the generic
    writes they made and have not published yet are published at that barrier's current
    phase (a thread that observes the phase complete sees them)."""
    if not st.sync_writer:
        return
    lane_slot = np.full(W.L, -1, np.int64)
    lane_slot[act] = slots
    lane_phase = np.zeros(W.L, np.int64)
    lane_phase[act] = st.phase[blocks, slots]
    for j, writer in st.sync_writer.items():
        cand = _noted_words(st.unpublished, j)
        if cand is None:
            continue
        pub = st.pub_slot[j]
        who = writer.take(cand)   # (each gather once: the candidates are many)
        still = (who >= 0) & (pub.take(cand) < 0)   # still unpublished
        if not still.all():
            cand, who = cand[still], who[still]
        mine = act.take(who)
        if mine.all():
            idx, who_idx = cand, who
        else:   # their writers have not arrived yet
            idx, who_idx = cand[mine], who[mine]
            _note_words(st.unpublished, j, cand[~mine])
        pub[idx] = lane_slot.take(who_idx)
        st.pub_phase[j][idx] = lane_phase.take(who_idx)


def check_ordered(W: Wave, st: HopperState, j: int, words: OperandWords | np.ndarray,
                   gl: np.ndarray, site: int) -> None:
    """Race if wgmma reads a word a thread stored (generic proxy) with no block barrier
    since and no mbarrier phase, published by the writer, that every thread of the reading
    warpgroup has observed complete."""
    writer = st.sync_writer.get(j)
    if writer is None or not W.check:
        return
    w = _gather(writer, words)
    live = w >= 0
    if not live.any():
        return
    live &= _gather(W.sh_writer[j], words) >= 0   # a block barrier orders everything
    if not live.any():
        return
    gids = np.flatnonzero(gl)
    slot = _gather(st.pub_slot[j], words)
    # a warpgroup's words published at one slot (its ready barrier): the phase it saw
    # there is one per row, not a gather per word
    row = slot[:, :1]
    at = row if (slot == row).all() else slot
    ok = (at >= 0) & (seen_at(st, gids, at) > _gather(st.pub_phase[j], words))
    if not live.all():
        ok |= ~live
    if ok.all():
        return
    flat = _flat(words)
    gi, wi = (int(x[0]) for x in np.nonzero(~ok))
    sb = W.sh_buf[j]
    word = int(flat[gi, wi]) % sb.size
    lane = int(gids[gi]) * WG
    how = ("never arrived on an mbarrier since" if slot[gi, wi] < 0 else
           f"arrived on mbarrier slot {int(slot[gi, wi])} (phase {int(st.pub_phase[j][flat][gi, wi])}), "
           "a phase not every reading thread has observed complete")
    W._fail("race", site, lane, f"warpgroup {int(W.tid[lane]) // WG}: wgmma reads shared "
            f"{sb.name}[{word}], which thread {int(W.tid[int(w[gi, wi])])} stored with no "
            f"barrier since; the writer {how}", buffer=sb.name, index=word,
            hint="order the generic shared writes before the wgmma for all threads of the "
                 "warpgroup: arrive on and wait for an mbarrier (or a barrier) after them")


def fence_proxy_async(W: Wave, st: HopperState, m: Any) -> None:
    """fence.proxy.async.shared::cta: the active lanes' generic writes become visible to
    the async proxy."""
    act = active(W, m)
    for j, arr in st.proxy_writer.items():
        cand = _noted_words(st.unfenced, j)
        if cand is None:
            continue
        who = arr.take(cand)
        still = who >= 0    # still unfenced
        if not still.all():
            cand, who = cand[still], who[still]
        mine = act.take(who)
        if mine.all():
            arr[cand] = -1
        else:
            arr[cand[mine]] = -1
            _note_words(st.unfenced, j, cand[~mine])


def check_proxy(W: Wave, st: HopperState, j: int, words: OperandWords | np.ndarray,
                 gl: np.ndarray, site: int) -> None:
    """Race if wgmma reads a word written through the generic proxy without a proxy fence."""
    arr = st.proxy_writer.get(j)
    if arr is None or not W.check or not st.unfenced.get(j):
        # (a word still unfenced is one of the words noted in `unfenced`: none noted,
        # every entry of arr is -1)
        return
    w = _gather(arr, words)
    if (w >= 0).any():
        flat = _flat(words)
        gi, wi = (int(x[0]) for x in np.nonzero(w >= 0))
        sb = W.sh_buf[j]
        word = int(flat[gi, wi]) % sb.size
        lane = int(np.flatnonzero(gl)[gi]) * WG
        W._fail("race", site, lane, f"warpgroup {int(W.tid[lane]) // WG}: wgmma reads shared "
                f"{sb.name}[{word}], which thread {int(W.tid[int(w[gi, wi])])} wrote through "
                "the generic proxy with no fence.proxy.async since: the async proxy may not "
                "see the write", buffer=sb.name, index=word,
                hint="fence.proxy.async.shared::cta after the generic shared writes, before "
                     "the wgmma reads them")



__all__ = ["NOTED_ARRAYS_LIMIT", "check_ordered", "check_proxy", "fence_proxy_async",
           "note_generic_write", "publish"]
