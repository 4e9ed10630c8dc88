"""Hopper's asynchronous machinery in the simulator: wgmma, TMA, mbarriers (hal.kernel.ir_async).

Called by the code codegen generates, on a lanes.Wave (all threads of a wave's blocks run
in lock step, statement by statement):

* `desc`: a SmemDesc evaluates to the real 64-bit descriptor (hal.kernel.wgmma), its start
  address the buffer's byte offset in the block's shared layout (Kernel.shared_offsets).
* `wgmma`: each warpgroup's descriptors are DECODED (start, LBO, SBO, swizzle) and the
  operands gathered from the shared bytes they address, so a wrong swizzle or stride gives
  wrong numbers; the whole wave's wgmmas run as ONE batched contraction ([G, 64, K] @
  [G, K, N], exact products summed in float64 with the accumulator, rounded once to f32),
  and each thread's accumulator elements come from / go back to the per-thread layout
  (hal.kernel.wgmma.accumulator_table).
* `commit` / `wait`: wgmma groups per warpgroup. Reading an accumulator (any Load of a wgmma
  accumulator buffer) before the wait_group that retires the wgmma that wrote it is a
  `race` naming kernel, block, warpgroup, the operands' pipeline stage and mbarrier phase;
  so is a TMA overwriting shared words an unretired wgmma reads.
* mbarriers: per block and barrier, expected arrivals, pending arrivals, pending transaction
  bytes and completed phases. `mbar_wait(parity)` succeeds when the phase of that parity
  has completed; since the lanes run in program order, a wait that cannot succeed now
  never will: a `deadlock` naming the barrier, its phase and what is missing (a wrong
  expect_tx count shows here). More transaction bytes than expected is `bad_mbarrier`.
* `tma`: the box of a tensor map (hal.kernel.tma), zeros where it crosses the tensor's
  edge, written swizzled into shared memory; its words are marked with (barrier, phase).
  A wgmma reading a marked word before its threads observed that phase complete (a
  successful try_wait) is a `race`.
* generic shared writes read by wgmma need a synchronisation as well as the proxy fence:
  wgmma reads the whole tile for all four warps of the warpgroup, so a word one thread
  stored must be ordered before every reading thread. Each such word keeps its writer
  until a block barrier, or until the writer arrives on an mbarrier (the word is then
  published at that barrier's phase); a wgmma whose threads have not all observed that
  phase complete is a `race` naming the writer (the lanes run in lock step, so without
  this a missing warpgroup barrier would never show).

The pieces live in modules of their own: hopper_state (the per-wave state), async_proxy
(generic shared writes a wgmma reads), mbarrier_sim, tma_sim, wgmma_acc (accumulators and
wgmma groups) and wgmma_operand (the words an operand reads); this module issues the
wgmmas and is what generated code calls (`WG.*`), so it names every entry point.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from hal.kernel.wgmma import wgmma_k

from .async_proxy import check_ordered, check_proxy, fence_proxy_async, note_generic_write
from .async_proxy import publish as _publish  # noqa: F401  (tests)
from .hopper_state import (
    MARK_SHIFT,
    MARK_SLOTS,
    WG,
    HopperState,
    pack_marks,
    seen_at,
    state,
    unpack_marks,
    whole_groups,
)
from .lanes import Wave
from .mbarrier_sim import complete_phases, complete_tx, mbar_arrive, mbar_init, mbar_wait
from .tma_sim import _box_elements as _box_elements  # noqa: F401  (tests)
from .tma_sim import _box_gather as _box_gather  # noqa: F401  (tests)
from .tma_sim import _land as _land  # noqa: F401  (tests)
from .tma_sim import tma
from .wgmma_acc import accumulate, check_acc, commit, note_acc_write, wait
from .wgmma_acc import accumulate as _accumulate  # noqa: F401  (tests)
from .wgmma_operand import Operand, OperandWords, operand, operand_values, operand_words
from .wgmma_operand import _run_length as _run_length  # noqa: F401  (tests)
from .wgmma_operand import gather as _gather
from .wgmma_operand import operand_elements as _operand_elements  # noqa: F401  (tests)

_SW_CODE = {0: 0, 128: 1, 64: 2, 32: 3}


# --------------------------------------------------------------------------- descriptors
def desc(W: Wave, st: HopperState, j: int, offset: Any, lbo: int, sbo: int, sw: int) -> Any:
    addr = st.base[j] + np.asarray(offset, np.int64) * W.sh_buf[j].dtype.itemsize
    hi = ((lbo >> 4) & 0x3FFF) << 16 | ((sbo >> 4) & 0x3FFF) << 32 | _SW_CODE[sw] << 62
    hi = hi - (1 << 64) if hi >= 1 << 63 else hi
    return np.int64(hi) | ((addr & 0x3FFFF) >> 4)



def _check_marks(W: Wave, st: HopperState, op: Operand, gl: np.ndarray,
                 site: int) -> tuple[tuple[int, int] | None, np.ndarray | None]:
    """Race if a word was written by a TMA whose mbarrier phase the reading warpgroup has
    not observed; returns (stage, phase) of the first word read (for messages) and the
    TMA phase of every word read (None: no TMA wrote the buffer)."""
    j, words = op.j, op.words
    if j not in st.mark:
        return None, None
    flat = words.flat
    c = st.mark_chunk[j]
    if c > 1 and op.chunks is not None and op.chunk == c:
        # every TMA wrote whole chunks and the operand reads whole chunks: a mark a chunk
        per_chunk = st.mark[j].take(op.chunks)
        one = per_chunk.max(axis=1)
        uniform = np.array_equal(one, per_chunk.min(axis=1))
        marks = None if uniform else np.repeat(per_chunk, c, axis=1)
    else:
        marks = st.mark[j].take(flat // c) if c > 1 else _gather(st.mark[j], words)
        one = marks.max(axis=1)
        uniform = np.array_equal(one, marks.min(axis=1))
    slot, ph = unpack_marks(one[:, None] if uniform else marks)
    marked = slot >= 0
    sb = W.sh_buf[j]
    stage_size = max(1, sb.size // sb.stages)
    first = flat[0, 0] % sb.size
    info = (int(first // stage_size), int(ph[0, 0]) if marked[0, 0] else -1)
    if not W.check:
        return info, np.broadcast_to(ph, flat.shape)
    gids = np.flatnonzero(gl)
    ok = ~marked | (seen_at(st, gids, slot) > ph)
    if not ok.all():
        gi, wi = (int(x[0]) for x in np.nonzero(~ok))
        word = int(flat[gi, wi]) % sb.size
        lane = int(gids[gi]) * WG
        W._fail("race", site, lane, f"warpgroup {int(W.tid[lane]) // WG}: wgmma reads shared "
                f"{sb.name}[{word}] (pipeline stage {word // stage_size}) before mbarrier "
                f"phase {int(ph[gi, wi])} of its TMA copy completed for it", buffer=sb.name,
                index=word, hint="mbarrier.try_wait on the stage's full barrier with the "
                                 "phase parity before the wgmma reads it")
    return info, np.broadcast_to(ph, flat.shape)


class ARead(NamedTuple):
    """A wgmma's A operand read (HopperState.last_a): its key (wgmma_operand.operand_words),
    buffer, what its checks depended on then (_a_tokens), its values, its _check_marks
    result, and the buffer of the wgmma's B operand."""

    key: tuple
    j: int
    tokens: tuple
    vals: np.ndarray
    info: tuple[int, int] | None
    phase: np.ndarray | None
    b_j: int


def _a_tokens(W: Wave, st: HopperState, j: int) -> tuple:
    """What an A operand's values and checks depend on besides its words: the buffer's
    shared writes, TMAs (marks), mbarrier waits (observed phases), the cluster's read map."""
    cs = getattr(W, "cluster", None)
    return W.sh_version[j], st.tmas, st.waits, None if cs is None else cs.epoch


def _a_again(W: Wave, st: HopperState, key: tuple, j: int) -> ARead | None:
    """The previous wgmma's A read when this one reads the same words and nothing its
    values or checks depend on changed since (a dual GEMM's two products, the same A
    tile): its gather, TMA-mark check and read noting would repeat it exactly."""
    last = st.last_a
    if last is None or last.key != key or last.tokens != _a_tokens(W, st, j):
        return None
    return last


def wgmma(W: Wave, st: HopperState, n: int, atype: str, ja: int, acc_off: int, a_desc: Any,
          b_desc: Any, trans_b: bool, m: Any, site: int, layout: str) -> None:
    gl = whole_groups(W, m, site, "wgmma")
    if not gl.any():
        return
    k = wgmma_k(atype)
    isz = 1 if atype.startswith("f8") else 2
    akey, oa = operand_words(W, st, a_desc, 64, k, isz, True, gl, site, "A")
    again = _a_again(W, st, akey, oa.j)
    a = operand_values(W, oa, 64, k) if again is None else again.vals
    b, ob = operand(W, st, b_desc, n, k, isz, not trans_b, gl, site, "B")
    # (a repeated A passed its mark check already, with the same marks and phases seen)
    info, ph_a = _check_marks(W, st, oa, gl, site) if again is None else (again.info,
                                                                           again.phase)
    _, ph_b = _check_marks(W, st, ob, gl, site)
    check_proxy(W, st, oa.j, oa.words, gl, site)
    check_proxy(W, st, ob.j, ob.words, gl, site)
    check_ordered(W, st, oa.j, oa.words, gl, site)
    check_ordered(W, st, ob.j, ob.words, gl, site)
    gids = np.flatnonzero(gl)
    accumulate(W, st, ja, acc_off, n, gids, a, b)
    groups = W.tally_at(gids * WG)   # per part in a combined sampled wave (tally.py)
    W.mfl[layout] = W.mfl.get(layout, 0) + 2 * 64 * n * k * groups
    W.sr += groups * (oa.words.flat.shape[1] + ob.words.flat.shape[1]) * isz
    note_acc_write(st, ja, gids)
    st.acc_from[ja] = (W.sh_buf[oa.j].name, *(info or (-1, -1)))
    # noting the same reads again changes nothing (the map's entries get the same value,
    # a release clears them once) unless a B operand in A's buffer noted other phases
    # over them in between
    skip_a = again is not None and again.b_j != oa.j and ob.j != oa.j
    for op, ph in ((oa, ph_a), (ob, ph_b)):
        f = op.words.flat
        st.inflight.append((gids, st.committed[gids].copy(), op.j, f))
        if getattr(W, "cluster", None) is not None and not (skip_a and op is oa):
            from . import cluster_sim  # stage releases

            cluster_sim.note_reads(W, gids, op.j, f, np.full(f.shape, -1) if ph is None
                                   else ph, (op.chunk, op.chunks))
    st.last_a = ARead(akey, oa.j, _a_tokens(W, st, oa.j), a, info, ph_a, ob.j)


def wgmma_rs(W: Wave, st: HopperState, n: int, atype: str, ja: int, acc_off: int, jr: int,
             a_off: int, b_desc: Any, trans_b: bool, m: Any, site: int, layout: str) -> None:
    """wgmma with A from registers (Wgmma.a_regs, 16-bit k16): A[64, 16] of each warpgroup
    is GATHERED from its threads' local buffer `jr` elements a_off .. a_off + 7 through
    the A fragment layout (hal.kernel.wgmma.a_fragment_table), so a thread holding the
    wrong elements gives wrong numbers; B through its descriptor as in `wgmma`; one batched
    contraction per wave, rounded once to f32 into the accumulators."""
    from hal.kernel.wgmma import A_REG_ELEMS, a_fragment_table

    gl = whole_groups(W, m, site, "wgmma")
    if not gl.any():
        return
    k = wgmma_k(atype)
    b, ob = operand(W, st, b_desc, n, k, 2, not trans_b, gl, site, "B")
    j_b, fb = ob.j, ob.words
    info, _ = _check_marks(W, st, ob, gl, site)
    check_proxy(W, st, j_b, fb, gl, site)
    gids = np.flatnonzero(gl)
    lanes = (gids[:, None] * WG + np.arange(WG)).ravel()
    regs = W.loc[jr]
    vals = np.stack([np.broadcast_to(regs[a_off + e], (W.L,)) for e in range(A_REG_ELEMS)],
                    axis=1)[lanes].astype(np.float64).reshape(len(gids), WG, A_REG_ELEMS)
    tab = a_fragment_table()                          # [128, 8, (row, col)]
    a = np.zeros((len(gids), 64, k), np.float64)
    a[:, tab[..., 0], tab[..., 1]] = vals
    accumulate(W, st, ja, acc_off, n, gids, a, b)
    groups = W.tally_at(gids * WG)
    W.mfl[layout] = W.mfl.get(layout, 0) + 2 * 64 * n * k * groups
    W.sr += groups * fb.flat.shape[1] * 2
    note_acc_write(st, ja, gids)
    st.acc_from[ja] = (W.sh_buf[j_b].name, *(info or (-1, -1)))
    st.inflight.append((gids, st.committed[gids].copy(), j_b, fb.flat))



def setmaxnreg(W: Wave, m: Any, site: int) -> None:
    whole_groups(W, m, site, "setmaxnreg")



__all__ = ["MARK_SHIFT", "MARK_SLOTS", "HopperState", "OperandWords", "check_acc", "commit",
           "complete_phases", "complete_tx", "desc", "fence_proxy_async", "mbar_arrive",
           "mbar_init", "mbar_wait", "note_acc_write", "note_generic_write", "pack_marks",
           "setmaxnreg", "state", "tma", "unpack_marks", "wait", "wgmma", "wgmma_rs"]
