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
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import numpy as np

from hal.kernel.wgmma import accumulator_table, pattern_bytes, swizzle, wgmma_k

from .lanes import Wave, rep_dtype
from .wgmma_operand import Operand, OperandWords, chunk_rows, chunk_words, operand, whole_chunks
from .wgmma_operand import _run_length as _run_length  # noqa: F401  (tests)
from .wgmma_operand import flat_words as _flat
from .wgmma_operand import gather as _gather
from .wgmma_operand import operand_elements as _operand_elements  # noqa: F401  (tests)

WG = 128
# HopperState.mark: a word's TMA as phase << MARK_SHIFT | (1 + slot); a block's mbarriers
# (8 shared bytes each) are far fewer than MARK_SLOTS, phases far below 2**39
MARK_SHIFT = 24
MARK_SLOTS = (1 << MARK_SHIFT) - 1
_SW_CODE = {0: 0, 128: 1, 64: 2, 32: 3}


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
        # shared j -> the words generic writes set since _publish / fence_proxy_async last
        # looked (lists of word arrays): the only words whose sync_writer may be unpublished
        # or whose proxy_writer may be unfenced, so those scans read these, not the buffer
        self.unpublished: dict[int, list[np.ndarray]] = {}
        self.unfenced: dict[int, list[np.ndarray]] = {}


def state(W: Wave, offsets: list[int], bar_slots: dict[int, int]) -> HopperState:
    st = getattr(W, "hopper", None)
    if st is None:
        st = W.hopper = HopperState(W, offsets, bar_slots)
    return st


def note_generic_write(W: Wave, j: int, flat: Any, lanes: Any) -> None:
    """Shared words `flat` written by `lanes` through the generic proxy. Tracked once the
    kernel has Hopper state (a wgmma kernel): the async proxy (wgmma) may read them only
    after a fence.proxy.async by the writing thread (PTX ISA, memory consistency model:
    proxies)."""
    st = getattr(W, "hopper", None)
    if st is None or not W.check:
        return
    arr = st.proxy_writer.get(j)
    if arr is None:
        arr = st.proxy_writer[j] = np.full(W.sh[j].size, -1, np.int64)
        st.sync_writer[j] = np.full(W.sh[j].size, -1, np.int64)
        st.pub_slot[j] = np.full(W.sh[j].size, -1, np.int64)
        st.pub_phase[j] = np.zeros(W.sh[j].size, np.int64)
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


def _publish(W: Wave, st: HopperState, act: np.ndarray, slots: np.ndarray,
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
        new = cand[(writer.take(cand) >= 0) & (pub.take(cand) < 0)]   # still unpublished
        mine = act[writer.take(new)]
        idx = new[mine]
        pub[idx] = lane_slot[writer[idx]]
        st.pub_phase[j][idx] = lane_phase[writer[idx]]
        if not mine.all():   # their writers have not arrived yet
            _note_words(st.unpublished, j, new[~mine])


def _check_ordered(W: Wave, st: HopperState, j: int, words: OperandWords | np.ndarray,
                   gl: np.ndarray, site: int) -> None:
    """Race if wgmma reads a word a thread stored (generic proxy) with no block barrier
    since and no mbarrier phase, published by the writer, that every thread of the reading
    warpgroup has observed complete."""
    writer = st.sync_writer.get(j)
    if writer is None or not W.check:
        return
    w = _gather(writer, words)
    live = (w >= 0) & (_gather(W.sh_writer[j], words) >= 0)   # a block barrier orders everything
    if not live.any():
        return
    gids = np.flatnonzero(gl)
    slot = _gather(st.pub_slot[j], words)
    ok = ~live | ((slot >= 0) & (_seen_at(st, gids, slot) > _gather(st.pub_phase[j], words)))
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
    act = _act(W, m)
    for j, arr in st.proxy_writer.items():
        cand = _noted_words(st.unfenced, j)
        if cand is None:
            continue
        cand = cand[arr.take(cand) >= 0]    # still unfenced
        mine = act[arr.take(cand)]
        arr[cand[mine]] = -1
        if not mine.all():
            _note_words(st.unfenced, j, cand[~mine])


def _check_proxy(W: Wave, st: HopperState, j: int, words: OperandWords | np.ndarray,
                 gl: np.ndarray, site: int) -> None:
    """Race if wgmma reads a word written through the generic proxy without a proxy fence."""
    arr = st.proxy_writer.get(j)
    if arr is None or not W.check:
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


def _act(W: Wave, m: Any) -> np.ndarray:
    return np.ones(W.L, bool) if m is None else np.broadcast_to(np.asarray(m, bool), (W.L,))


def _lanes(W: Wave, x: Any) -> np.ndarray:
    return np.broadcast_to(np.asarray(x, np.int64), (W.L,))


def _whole_groups(W: Wave, m: Any, site: int, what: str) -> np.ndarray:
    """Active warpgroups (bool [G]); a warpgroup partly active is an error."""
    if W.T % WG:
        W._fail("bad_mma", site, 0, f"{what} needs whole 128-thread warpgroups, the block "
                f"has {W.T} threads", hint="make the block a multiple of 128 threads")
    a = _act(W, m).reshape(-1, WG)
    part = a.any(axis=1) & ~a.all(axis=1)
    if part.any():
        g = int(np.flatnonzero(part)[0])
        lane = g * WG + int(np.flatnonzero(~a[g])[0])
        W._fail("divergent_mma", site, lane, f"{what} reached by part of warpgroup "
                f"{int(W.tid[lane]) // WG} (thread {int(W.tid[lane])} is inactive)",
                hint="issue warpgroup instructions outside thread-dependent branches")
    return a.all(axis=1)


# --------------------------------------------------------------------------- descriptors
def desc(W: Wave, st: HopperState, j: int, offset: Any, lbo: int, sbo: int, sw: int) -> Any:
    addr = st.base[j] + np.asarray(offset, np.int64) * W.sh_buf[j].dtype.itemsize
    hi = ((lbo >> 4) & 0x3FFF) << 16 | ((sbo >> 4) & 0x3FFF) << 32 | _SW_CODE[sw] << 62
    hi = hi - (1 << 64) if hi >= 1 << 63 else hi
    return np.int64(hi) | ((addr & 0x3FFFF) >> 4)


def pack_marks(slot: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """HopperState.mark words of TMAs completing on mbarrier `slot` at `phase`."""
    return (phase << MARK_SHIFT) | (slot + 1)


def unpack_marks(mark: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(slot, phase) of HopperState.mark words: (-1, 0) where no TMA wrote."""
    return (mark & MARK_SLOTS) - 1, mark >> MARK_SHIFT


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
    ok = ~marked | (_seen_at(st, gids, slot) > ph)
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


def wgmma(W: Wave, st: HopperState, n: int, atype: str, ja: int, acc_off: int, a_desc: Any,
          b_desc: Any, trans_b: bool, m: Any, site: int, layout: str) -> None:
    gl = _whole_groups(W, m, site, "wgmma")
    if not gl.any():
        return
    k = wgmma_k(atype)
    isz = 1 if atype.startswith("f8") else 2
    a, oa = operand(W, st, a_desc, 64, k, isz, True, gl, site, "A")
    b, ob = operand(W, st, b_desc, n, k, isz, not trans_b, gl, site, "B")
    info, ph_a = _check_marks(W, st, oa, gl, site)
    _, ph_b = _check_marks(W, st, ob, gl, site)
    _check_proxy(W, st, oa.j, oa.words, gl, site)
    _check_proxy(W, st, ob.j, ob.words, gl, site)
    _check_ordered(W, st, oa.j, oa.words, gl, site)
    _check_ordered(W, st, ob.j, ob.words, gl, site)
    gids = np.flatnonzero(gl)
    _accumulate(W, st, ja, acc_off, n, gids, a, b)
    groups = W.tally_at(gids * WG)   # per part in a combined sampled wave (tally.py)
    W.mfl[layout] = W.mfl.get(layout, 0) + 2 * 64 * n * k * groups
    W.sr += groups * (oa.words.flat.shape[1] + ob.words.flat.shape[1]) * isz
    note_acc_write(st, ja, gids)
    st.acc_from[ja] = (W.sh_buf[oa.j].name, *(info or (-1, -1)))
    for op, ph in ((oa, ph_a), (ob, ph_b)):
        f = op.words.flat
        st.inflight.append((gids, st.committed[gids].copy(), op.j, f))
        if getattr(W, "cluster", None) is not None:   # stage releases (cluster_sim)
            from . import cluster_sim

            cluster_sim.note_reads(W, gids, op.j, f, np.full(f.shape, -1) if ph is None
                                   else ph, (op.chunk, op.chunks))


def wgmma_rs(W: Wave, st: HopperState, n: int, atype: str, ja: int, acc_off: int, jr: int,
             a_off: int, b_desc: Any, trans_b: bool, m: Any, site: int, layout: str) -> None:
    """wgmma with A from registers (Wgmma.a_regs, 16-bit k16): A[64, 16] of each warpgroup
    is GATHERED from its threads' local buffer `jr` elements a_off .. a_off + 7 through
    the A fragment layout (hal.kernel.wgmma.a_fragment_table), so a thread holding the
    wrong elements gives wrong numbers; B through its descriptor as in `wgmma`; one batched
    contraction per wave, rounded once to f32 into the accumulators."""
    from hal.kernel.wgmma import A_REG_ELEMS, a_fragment_table

    gl = _whole_groups(W, m, site, "wgmma")
    if not gl.any():
        return
    k = wgmma_k(atype)
    b, ob = operand(W, st, b_desc, n, k, 2, not trans_b, gl, site, "B")
    j_b, fb = ob.j, ob.words
    info, _ = _check_marks(W, st, ob, gl, site)
    _check_proxy(W, st, j_b, fb, gl, site)
    gids = np.flatnonzero(gl)
    lanes = (gids[:, None] * WG + np.arange(WG)).ravel()
    regs = W.loc[jr]
    vals = np.stack([np.broadcast_to(regs[a_off + e], (W.L,)) for e in range(A_REG_ELEMS)],
                    axis=1)[lanes].astype(np.float64).reshape(len(gids), WG, A_REG_ELEMS)
    tab = a_fragment_table()                          # [128, 8, (row, col)]
    a = np.zeros((len(gids), 64, k), np.float64)
    a[:, tab[..., 0], tab[..., 1]] = vals
    _accumulate(W, st, ja, acc_off, n, gids, a, b)
    groups = W.tally_at(gids * WG)
    W.mfl[layout] = W.mfl.get(layout, 0) + 2 * 64 * n * k * groups
    W.sr += groups * fb.flat.shape[1] * 2
    note_acc_write(st, ja, gids)
    st.acc_from[ja] = (W.sh_buf[j_b].name, *(info or (-1, -1)))
    st.inflight.append((gids, st.committed[gids].copy(), j_b, fb.flat))


def _accumulate(W: Wave, st: HopperState, ja: int, acc_off: int, n: int, gids: np.ndarray,
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
    """Write the pending wgmma result of local buffer `ja` (_accumulate) to its registers
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
    gl = _whole_groups(W, m, site, "wgmma.commit_group")
    st.committed[gl] += 1


def wait(W: Wave, st: HopperState, pending: int, m: Any, site: int) -> None:
    gl = _whole_groups(W, m, site, "wgmma.wait_group")
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
    bad = _act(W, m) & pending[g]
    if bad.any():
        lane = int(np.flatnonzero(bad)[0])
        buf, stage, phase = st.acc_from.get(ja, ("?", -1, -1))
        W._fail("race", site, lane, f"warpgroup {int(W.tid[lane]) // WG} reads accumulator "
                f"{W.loc_buf[ja].name} before wgmma.wait_group retired the wgmma that writes "
                f"it (commit group {int(grp[g[lane]])}, operands from {buf} stage {stage}, "
                f"mbarrier phase {phase})", buffer=W.loc_buf[ja].name,
                hint="wgmma.commit_group then wgmma.wait_group before reading accumulators")


# --------------------------------------------------------------------------- mbarriers
def _slots(W: Wave, st: HopperState, jb: int, index: Any, act: np.ndarray):
    idx = _lanes(W, index)[act]
    return W.blk[act], st.bar_slot[jb] + idx


def _complete(st: HopperState) -> None:
    done = (st.pending == 0) & (st.tx == 0) & (st.expected > 0)
    st.phase += done
    st.pending = np.where(done, st.expected, st.pending)


def complete_phases(st: HopperState) -> None:
    """Complete every barrier phase whose arrivals and transaction bytes are all in."""
    _complete(st)


def mbar_init(W: Wave, st: HopperState, jb: int, index: Any, count: int, m: Any) -> None:
    act = _act(W, m)
    b, s = _slots(W, st, jb, index, act)
    st.expected[b, s] = count
    st.pending[b, s] = count
    st.tx[b, s] = 0
    st.phase[b, s] = 0


def mbar_arrive(W: Wave, st: HopperState, jb: int, index: Any, tx: int, m: Any,
                site: int) -> None:
    act = _act(W, m)
    b, s = _slots(W, st, jb, index, act)
    _publish(W, st, act, s, b)
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
    act = _act(W, m)
    if not act.any():
        return
    b, s = _slots(W, st, jb, index, act)
    par = _lanes(W, parity)[act]
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


def _seen(st: HopperState) -> np.ndarray:
    """[warpgroups, slots]: the phases every thread of a warpgroup has observed complete
    (kept until the next successful wait changes `observed`; every wgmma's operand checks
    read it)."""
    if st.seen is None:
        st.seen = st.observed.reshape(-1, WG, st.observed.shape[1]).min(axis=1)
    return st.seen


def _seen_at(st: HopperState, gids: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """[G, words]: _seen of warpgroup gids[g] at mbarrier `slot[g, w]` (slot -1: any
    value; the callers mask those words)."""
    seen = _seen(st)
    ns = seen.shape[1]
    return seen.reshape(-1).take(gids[:, None] * ns + np.maximum(slot, 0))


# --------------------------------------------------------------------------- TMA
def tma(W: Wave, st: HopperState, tm, jg: int, jd: int, dst_index: Any, coords: list,
        jb: int, bar_index: Any, m: Any, site: int, multicast: int = 0) -> None:
    act = _act(W, m)
    lanes = np.flatnonzero(act)
    if not len(lanes):
        return
    sb = W.sh_buf[jd]
    isz = sb.dtype.itemsize
    estr = (1, *(s // isz for s in tm.strides))
    vals, read = _box_gather(W.g[jg], tm, estr, [_lanes(W, c)[lanes] for c in coords])
    vals = vals.astype(rep_dtype(sb.dtype))
    dst = _lanes(W, dst_index)[lanes]
    addr = st.base[jd] + dst * isz
    if W.check and (addr % tm.alignment).any():
        lane = int(lanes[np.flatnonzero(addr % tm.alignment)[0]])
        W._fail("misaligned", site, lane, f"TMA destination {sb.name} at shared byte "
                f"{int(addr[0])} is not {tm.alignment}-byte aligned (swizzle {tm.swizzle}B)",
                buffer=sb.name, hint="align the tile to its swizzle pattern")
    c = chunk_words(isz, sb.size)
    elem, echunks, (lo, hi) = _box_elements(addr, st.base[jd], tm.swizzle,
                                            int(np.prod(tm.box)), isz, c)
    if W.check and ((lo < 0) | (hi >= sb.size)).any():
        W._fail("out_of_bounds", site, int(lanes[0]), f"TMA box of {tm.name} "
                f"({'x'.join(map(str, tm.box))}) at {sb.name}[{int(dst[0])}] runs past the "
                f"buffer (size {sb.size})", buffer=sb.name, index=int(dst[0]))
    b_own, s = _slots(W, st, jb, bar_index, act)
    cl = getattr(W, "cluster", None)      # a cluster kernel (cluster_sim)
    if cl is None:
        targets = b_own[:, None]
    else:
        from . import cluster_sim

        targets = cluster_sim.multicast_targets(W, cl, lanes, multicast) if multicast \
            else b_own[:, None]
    for t in range(targets.shape[1]):   # each CTA the box lands in (one without multicast)
        b = targets[:, t]
        words = b[:, None] * sb.size + elem
        chunks = None if echunks is None else b[:, None] * (sb.size // c) + echunks
        if cl is not None:
            cluster_sim.before_write(W, st, cl, b_own, b, jd, words, jb, s, site, lanes,
                                     (c, chunks))
        _land(W, st, jd, words, vals, site, lanes, c, chunks)
        if jd not in st.mark:
            st.mark[jd] = np.zeros(W.sh[jd].size // c, np.int64)
            st.mark_chunk[jd] = c
        marks = pack_marks(s, st.phase[b, s])[:, None]
        if chunks is not None and st.mark_chunk[jd] == c:
            st.mark[jd][chunks] = marks
        else:
            _mark_words(st, jd)[words] = marks
        W.sw += W.tally_at(lanes) * words.shape[1] * isz
        complete_tx(W, st, b, s, tm.box_bytes, jb, site, int(lanes[0]))
    W.gr += W.tally_at(lanes, read) * isz   # read from global once, even multicast


def _mark_words(st: HopperState, jd: int) -> np.ndarray:
    """st.mark[jd] with one mark per word from now on (a TMA of part of a chunk)."""
    c = st.mark_chunk[jd]
    if c > 1:
        st.mark[jd] = np.repeat(st.mark[jd], c)
        st.mark_chunk[jd] = 1
    return st.mark[jd]


@functools.lru_cache(maxsize=256)
def _box_offsets(box: tuple[int, ...], estr: tuple[int, ...]) -> tuple[tuple[np.ndarray, ...],
                                                                        np.ndarray]:
    """Per dimension (innermost first) each box element's coordinate in the box, and its
    element offset from the box's first element: the same for every TMA of this box."""
    rel = np.meshgrid(*[np.arange(b, dtype=np.int64) for b in reversed(box)], indexing="ij")
    rel = tuple(r.ravel() for r in reversed(rel))
    offs = sum((r * e for r, e in zip(rel, estr, strict=False)), np.zeros_like(rel[0]))
    for a in (*rel, offs):
        a.flags.writeable = False
    return rel, offs


def _box_gather(src: np.ndarray, tm, estr: tuple[int, ...],
                coords: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """[lanes, box elements] of global `src` at each lane's box (zeros past the tensor's
    edge) and the elements each lane read inside the tensor."""
    rel, offs = _box_offsets(tuple(tm.box), estr)
    n = len(coords[0])
    if all(c.min() >= 0 and c.max() + b <= d for c, b, d in zip(coords, tm.box, tm.dims,
                                                                   strict=False)):
        base = sum((c * e for c, e in zip(coords, estr, strict=False)), np.zeros(n, np.int64))
        return np.take(src, base[:, None] + offs), np.full(n, offs.size, np.int64)
    flat = np.zeros((n, offs.size), np.int64)   # a box crossing the edge: per element
    ok = np.ones(flat.shape, bool)
    for d, c in enumerate(coords):
        g = rel[d][None, :] + c[:, None]
        ok &= (g >= 0) & (g < tm.dims[d])
        flat += g * estr[d]
    return np.where(ok, np.take(src, np.where(ok, flat, 0)), 0), ok.sum(axis=1)


def _box_elements(addr: np.ndarray, base: int, mode: int, elems: int, isz: int,
                  c: int) -> tuple[np.ndarray, np.ndarray | None, tuple[np.ndarray, np.ndarray]]:
    """([lanes, elems] element offsets from shared byte `base` of the swizzled addresses of
    a box's elements written from byte `addr` (per lane), [lanes, elems // c] their c-word
    chunks when they are whole aligned chunks in order (wgmma_operand.whole_chunks), else
    None, and each lane's lowest and highest offset). Every box starting a swizzle
    pattern shares the pattern's offsets, their chunks and their range."""
    pattern = pattern_bytes(mode)
    if pattern and not (addr % pattern).any():
        offs, ochunks, (omin, omax) = _swizzled_offsets(mode, elems, isz, c)
        dst = (addr - base) // isz         # addr - base: a multiple of isz, as offs are
        elem = dst[:, None] + offs
        span = (dst + omin, dst + omax)
        if ochunks is None or (dst % c).any():
            return elem, None, span
        return elem, (dst // c)[:, None] + ochunks, span
    elem = (swizzle(addr[:, None] + np.arange(elems) * isz, mode) - base) // isz
    return elem, (whole_chunks(elem, c) if c > 1 else None), (elem.min(axis=1),
                                                               elem.max(axis=1))


@functools.lru_cache(maxsize=64)
def _swizzled_offsets(mode: int, elems: int, isz: int,
                      c: int) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
    """The element offsets of a box's elements from a swizzle pattern's start, their
    c-word chunks (None: not whole chunks) and their range."""
    out = swizzle(np.arange(elems, dtype=np.int64) * isz, mode) // isz
    out.flags.writeable = False
    chunks = whole_chunks(out[None], c) if c > 1 else None
    if chunks is not None:
        chunks = chunks[0]
        chunks.flags.writeable = False
    return out, chunks, (int(out.min()), int(out.max()))


def _land(W: Wave, st: HopperState, jd: int, words: np.ndarray, vals: np.ndarray, site: int,
          lanes: np.ndarray, c: int = 1, chunks: np.ndarray | None = None) -> None:
    """A TMA box's words land in shared buffer jd (checked against unretired wgmmas);
    `chunks`: the words as whole c-word chunks (written as rows), None if they are not."""
    sb = W.sh_buf[jd]
    for gids, groups, j, f in st.inflight:
        if j != jd:
            continue
        live = groups >= st.done[gids]
        if live.any() and np.isin(words, f[live]).any():
            lane = int(gids[np.flatnonzero(live)[0]]) * WG
            W._fail("race", site, int(lanes[0]), f"TMA overwrites shared {sb.name} "
                    f"(stage {int(words[0, 0] % sb.size) // max(1, sb.size // sb.stages)}) "
                    f"while the wgmma of warpgroup {int(W.tid[lane]) // WG} reading it is not "
                    f"retired by wgmma.wait_group", buffer=sb.name,
                    hint="wgmma.wait_group before releasing the stage to the producer")
    rows = None if chunks is None else chunk_rows(W.sh[jd], c)
    if rows is None:
        W.sh[jd][words] = vals
    else:
        rows[chunks] = vals.reshape(*chunks.shape, c)
    W.sh_version[jd] += 1
    if jd in st.proxy_writer:           # an async-proxy write: nothing generic left there
        for arr in (st.proxy_writer[jd], st.sync_writer[jd]):
            rows = None if chunks is None else chunk_rows(arr, c)
            if rows is None:
                arr[words] = -1
            else:
                rows[chunks] = -1


def setmaxnreg(W: Wave, m: Any, site: int) -> None:
    _whole_groups(W, m, site, "setmaxnreg")


__all__ = ["HopperState", "check_acc", "commit", "desc", "mbar_arrive", "mbar_init",
           "mbar_wait", "setmaxnreg", "state", "tma", "wait", "wgmma", "wgmma_rs"]
