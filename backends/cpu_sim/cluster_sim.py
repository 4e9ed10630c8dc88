"""Thread-block clusters in the simulator (hal.kernel.ir_cluster): ranks, multicast, remote
arrivals, cluster barriers, and the races only a cluster can have.

The simulator (simulator.py) puts whole clusters into one wave, so the CTAs of a cluster
run together in lock step and one CTA's operations can land in a peer's shared memory and
mbarriers (`ClusterState.peer`: wave block x cluster rank -> wave block). Called by the
code codegen generates, beside wgmma_sim:

* `rank`: %cluster_ctarank per lane.
* TMA multicast: wgmma_sim.tma writes the box into every CTA of the mask at the same
  offset and completes its bytes on each one's mbarrier; it asks `before_write` first and
  counts the box's global bytes once (the multicast's saving shows in the counters).
* `arrive` (a remote arrive, `MbarrierArrive.cta`) lands on the peer's barrier.
* `cluster_arrive` / `cluster_wait`: barrier.cluster.arrive / wait per CTA (every thread).

Checks (check=True), each a `race` naming kernel, CTA rank, buffer, stage and phase:

* a TMA (multicast or not) landing in shared words that a CTA's wgmmas read and whose
  release the issuing CTA has not observed: a consumer warpgroup releases what it read by
  arriving on a barrier of the issuer (remote or local), and the issuer observes it by
  completing a wait on that barrier's phase. A pipeline whose consumers release a stage to
  their own producer only lets a peer's multicast overwrite a stage still being read;
* a peer's multicast or remote arrive reaching an mbarrier before a cluster barrier
  ordered it after that barrier's init;
* a CTA exiting while a peer's multicast or remote arrive into it is not ordered before
  the exit: neither observed through one of its barriers' phases nor followed by a
  barrier.cluster.arrive that the exiting CTA waited on.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hal.kernel.ir_cluster import cluster_size, cta_rank

from .hopper_state import active, per_lane
from .lanes import Wave
from .wgmma_operand import chunk_words, whole_chunks

WG = 128
SHIFT = 16                  # ReadMap entries: read fill phase << SHIFT | one bit per rank
RANK_BITS = (1 << SHIFT) - 1
CLEAR_MASK_RATIO = 4        # _clear_bit: a mask once the indices are over 1/4 of the map
_whole_chunks = whole_chunks   # (the tests' name)


def _chunk_phases(phase: np.ndarray, c: int) -> np.ndarray | None:
    """[rows, k // c] phases of the chunks of `phase` [rows, k] when each chunk's words
    share one phase, else None (a phase per row, the usual case, is seen from its strides)."""
    pc = phase[:, ::c]
    if phase.strides[-1] == 0:
        return pc[:, :1]
    same = (phase.reshape(phase.shape[0], -1, c) == pc[:, :, None]).all()
    return pc if same else None


class ReadMap:
    """One shared buffer's words (wave-global) that a wgmma read, each with the issuer
    ranks that have not observed their release (a bit per rank) and the mbarrier phase of
    the read's fill, packed in one int64. Kept per 16-byte chunk while every read, TMA
    write and release covers whole chunks (they are made of swizzle atoms), so one entry
    stands for a chunk's words, which then always share their state: exact, and a
    fraction of the scatters. The first access that splits a chunk turns the map into
    one entry per word for good (np.repeat: the same state per word)."""

    def __init__(self, n: int, itemsize: int):
        self.c = chunk_words(itemsize, n)
        self.a = np.zeros(n // self.c, np.int64)

    def split(self) -> None:
        self.a = np.repeat(self.a, self.c)
        self.c = 1

    def index(self, words: np.ndarray, known: tuple | None = None) -> np.ndarray:
        """Entries of `words` [rows, k]: [rows, k // c] (the map splits if it must).
        `known`: (c', whole_chunks(words, c')) when the caller has worked it out (an
        operand's or a TMA box's chunks, kept per layout)."""
        if self.c > 1:
            got = known[1] if known is not None and known[0] == self.c \
                else whole_chunks(words, self.c)
            if got is not None:
                return got
            self.split()
        return words

    def entries(self, c: int, row: np.ndarray) -> np.ndarray:
        """Entries (1-D) recorded when the map had granularity c, at today's."""
        return row if c == self.c else (row[:, None] * c + np.arange(c)).ravel()


class ClusterState:
    """Per-wave cluster state; `W.cluster` while a cluster kernel runs."""

    def __init__(self, W: Wave, hs, cluster: tuple[int, int, int]):
        self.dims = tuple(cluster)
        self.size = cluster_size(self.dims)
        B = W.B
        bx, by, bz = (np.asarray(a, np.int64)[::W.T] for a in (W.bx, W.by, W.bz))
        self.rank = cta_rank(self.dims, bx, by, bz)                  # [B]
        gx, gy, _gz = W.grid
        cx, cy, cz = self.dims
        lin = bx + gx * (by + gy * bz)
        where = {int(v): i for i, v in enumerate(lin)}
        self.peer = np.zeros((B, self.size), np.int64)
        for r in range(self.size):
            x = bx - bx % cx + r % cx
            y = by - by % cy + (r // cx) % cy
            z = bz - bz % cz + r // (cx * cy)
            for b, v in enumerate(x + gx * (y + gy * z)):
                p = where.get(int(v))
                if p is None:
                    raise RuntimeError(f"kernel {W.name}: the wave does not hold the whole "
                                       f"cluster of block {int(lin[b])} (simulator bug)")
                self.peer[b, r] = p
        nslots = hs.expected.shape[1]
        self.arrived = np.zeros(W.L, np.int64)    # barrier.cluster.arrive per thread
        self.waited = np.zeros(W.L, np.int64)     # completed barrier.cluster.wait per thread
        self.init_at = np.zeros((B, nslots), np.int64)   # cluster arrivals before mbarrier.init
        # the latest remote operation into (block, barrier slot): its barrier phase (-1:
        # none or ordered), the issuer's cluster arrivals then, the issuer's wave block, kind
        self.rem_phase = np.full((B, nslots), -1, np.int64)
        self.rem_arr = np.zeros((B, nslots), np.int64)
        self.rem_from = np.zeros((B, nslots), np.int64)
        self.rem_kind: dict[tuple[int, int], str] = {}
        if self.size > SHIFT:
            raise RuntimeError(f"kernel {W.name}: a {self.size}-CTA cluster has more ranks "
                               f"than the read map's {SHIFT} bits (simulator limit)")
        self.all_ranks = (1 << self.size) - 1
        # shared j -> the words a wgmma read and the issuer ranks that have not observed
        # their release (ReadMap); per (warpgroup, rank) the reads not yet released to that
        # rank, and per (block, barrier slot) the releases that arrived, with the barrier's
        # phase then: reads as (buffer j, ReadMap granularity) -> rows of map entries
        self.maps: dict[int, ReadMap] = {}
        # changes to maps, read_since and releases so far (wgmma_sim: a wgmma may skip
        # noting again the reads the previous one noted only while this stays the same)
        self.epoch = 0
        self.read_since: dict[tuple[int, int], dict[tuple[int, int], list[np.ndarray]]] = {}
        self.releases: dict[tuple[int, int],
                            list[tuple[int, dict[tuple[int, int], list[np.ndarray]]]]] = {}


def state(W: Wave, hs, cluster: tuple[int, int, int]) -> ClusterState:
    cs = getattr(W, "cluster", None)
    if cs is None:
        cs = W.cluster = ClusterState(W, hs, cluster)
    return cs


def rank(W: Wave, cs: ClusterState) -> np.ndarray:
    return cs.rank[W.blk]


def _bar_name(W: Wave, hs, slot: int) -> str:
    for j, first in hs.bar_slot.items():
        if first <= slot < first + W.sh_buf[j].size:
            return f"{W.sh_buf[j].name}[{slot - first}]"
    return f"mbarrier slot {slot}"


def _cta(W: Wave, cs: ClusterState, b: int) -> str:
    lane = b * W.T
    where = (int(W.bx[lane]), int(W.by[lane]), int(W.bz[lane]))
    return f"CTA rank {int(cs.rank[b])} (block {where})"


# --------------------------------------------------------------------------- ordering
def _check_init(W: Wave, hs, cs: ClusterState, src: np.ndarray, dst: np.ndarray,
                slots: np.ndarray, what: str, site: int, lanes: np.ndarray) -> None:
    """A peer's operation on barrier (dst, slot) must follow a cluster barrier that came
    after the barrier's init."""
    if not W.check:
        return
    remote = src != dst
    src_waited = cs.waited[src * W.T]
    bad = remote & (src_waited <= cs.init_at[dst, slots])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        W._fail("race", site, int(lanes[i]), f"{_cta(W, cs, int(src[i]))}: {what} reaches "
                f"mbarrier {_bar_name(W, hs, int(slots[i]))} of {_cta(W, cs, int(dst[i]))} "
                "with no cluster barrier since that CTA's mbarrier.init: it may not be "
                "initialised yet", hint="fence.mbarrier_init + barrier.cluster.arrive/wait "
                                        "after the inits, before any multicast or remote arrive")


def _run_starts(codes: np.ndarray) -> np.ndarray:
    """Positions where a run of equal values of `codes` begins (lanes come in runs: a
    warpgroup's or a block's lanes share their keys)."""
    return np.flatnonzero(np.concatenate(([True], codes[1:] != codes[:-1])))


def _first_of_each(codes: np.ndarray) -> np.ndarray:
    """Ascending positions of the first occurrence of each distinct value of `codes`
    (a first occurrence always begins a run)."""
    starts = _run_starts(codes)
    _, first = np.unique(codes[starts], return_index=True)
    return np.sort(starts[first])


def _last_of_each(codes: np.ndarray) -> np.ndarray:
    """Positions of the last occurrence of each distinct value of `codes` (what a loop
    assigning in order leaves)."""
    return len(codes) - 1 - _first_of_each(codes[::-1])


def _note_remote(W: Wave, hs, cs: ClusterState, src: np.ndarray, dst: np.ndarray,
                 slots: np.ndarray, kind: str, lanes: np.ndarray) -> None:
    remote = src != dst
    if not remote.any():
        return
    s_, d, sl, ln = src[remote], dst[remote], slots[remote], lanes[remote]
    last = _last_of_each(d * cs.rem_phase.shape[1] + sl)   # the latest lane per barrier
    s_, d, sl, ln = s_[last], d[last], sl[last], ln[last]
    cs.rem_phase[d, sl] = hs.phase[d, sl]
    cs.rem_arr[d, sl] = cs.arrived[ln]
    cs.rem_from[d, sl] = s_
    cs.rem_kind.update(dict.fromkeys(zip(d.tolist(), sl.tolist(), strict=True), kind))


def note_init(W: Wave, hs, cs: ClusterState, jb: int, index: Any, m: Any) -> None:
    act = active(W, m)
    b = W.blk[act]
    s = hs.bar_slot[jb] + per_lane(W, index)[act]
    cs.init_at[b, s] = cs.arrived[np.flatnonzero(act)]
    cs.rem_phase[b, s] = -1


def observe(W: Wave, hs, cs: ClusterState, jb: int, index: Any, m: Any) -> None:
    """After a successful mbarrier wait: the waiting CTA has observed the phase, with the
    releases and remote operations that went into it."""
    act = active(W, m)
    if not act.any():
        return
    ns = hs.phase.shape[1]
    codes = W.blk[act] * ns + hs.bar_slot[jb] + per_lane(W, index)[act]
    pairs = np.unique(codes[_run_starts(codes)])
    b, s = pairs // ns, pairs % ns
    ph = hs.phase[b, s]
    rem = cs.rem_phase[b, s]
    seen = (rem >= 0) & (rem < ph)
    cs.rem_phase[b[seen], s[seen]] = -1
    if cs.releases:
        cs.epoch += 1
        _observe_releases(cs, b.tolist(), s.tolist(), ph.tolist())


def _observe_releases(cs: ClusterState, blocks: list[int], slots: list[int],
                      phases: list[int]) -> None:
    """Blocks observed phases of their barriers (slots): the releases that arrived before
    those phases reach their issuer ranks, cleared in one pass per (rank, buffer)."""
    clear: dict[tuple[int, int, int], list[np.ndarray]] = {}
    for bb, ss, ph in zip(blocks, slots, phases, strict=True):
        rel = cs.releases.get((bb, ss))
        if not rel:
            continue
        r = int(cs.rank[bb])
        keep = []
        for rec in rel:
            if rec[0] < ph:
                for (j, c), rows in rec[1].items():
                    clear.setdefault((r, j, c), []).extend(rows)
            else:
                keep.append(rec)
        cs.releases[(bb, ss)] = keep
    for (r, j, c), rows in clear.items():
        mp = cs.maps[j]
        _clear_bit(mp.a, mp.entries(c, np.concatenate(rows)), ~(1 << r))


def _clear_bit(a: np.ndarray, idx: np.ndarray, keep: int) -> None:
    """a[idx] &= keep. The releases of a pipeline stage name its entries once per read
    (an operand read by several wgmmas, every warpgroup's reads): many indices, many
    repeated, so past a few per entry a mask of the entries is cheaper than the
    gather and scatter of every index (the same result: the operation is idempotent)."""
    if idx.size * CLEAR_MASK_RATIO < a.size:
        a[idx] &= keep
        return
    hit = np.zeros(a.size, bool)
    hit[idx] = True
    np.bitwise_and(a, keep, out=a, where=hit)


# --------------------------------------------------------------------------- releases
def note_reads(W: Wave, gids: np.ndarray, j: int, flat: np.ndarray, phase: np.ndarray,
               chunks: tuple | None = None) -> None:
    """Warpgroups `gids` (wave-global) read shared words `flat` [G, words] of buffer j (a
    wgmma operand) filled at mbarrier phase `phase` (per word); `chunks`: the words'
    chunks if known (ReadMap.index)."""
    cs = getattr(W, "cluster", None)
    if cs is None or not W.check:
        return
    cs.epoch += 1
    mp = cs.maps.get(j)
    if mp is None:
        mp = cs.maps[j] = ReadMap(W.sh[j].size, W.sh_buf[j].dtype.itemsize)
    idx = mp.index(flat, chunks)
    ph = _chunk_phases(phase, mp.c) if mp.c > 1 else phase
    if ph is None:          # a chunk read with two fill phases: per word from now on
        mp.split()
        idx, ph = flat, phase
    mp.a[idx] = (np.asarray(ph, np.int64) << SHIFT) | cs.all_ranks
    key, since = (j, mp.c), cs.read_since
    for g, row in zip(gids.tolist(), idx, strict=True):
        for r in range(cs.size):
            got = since.get((g, r))
            if got is None:
                since[(g, r)] = {key: [row]}
            elif key in got:
                got[key].append(row)
            else:
                got[key] = [row]


def note_release(W: Wave, hs, cs: ClusterState, jb: int, index: Any, cta: Any,
                 m: Any) -> None:
    """Before an arrive on bar[index] of the CTA of rank `cta` (None: the own CTA): the
    arriving warpgroups release what they read since their last release to that CTA."""
    act = active(W, m)
    if not act.any() or not W.check:
        return
    cs.epoch += 1
    lanes = np.flatnonzero(act)
    own = W.blk[lanes]
    dst = own if cta is None else cs.peer[own, per_lane(W, cta)[lanes]]
    slots = hs.bar_slot[jb] + per_lane(W, index)[lanes]
    to = cs.rank[dst]
    # a warpgroup's first lane releasing to a rank takes all its reads: the lanes after it
    # find nothing left, so only first lanes count (in lane order)
    first = _first_of_each((lanes // WG) * cs.size + to)
    for ln, d, sl, r in zip(lanes[first].tolist(), dst[first].tolist(),
                            slots[first].tolist(), to[first].tolist(), strict=True):
        got = cs.read_since.pop((ln // WG, r), None)
        if got:
            cs.releases.setdefault((d, sl), []).append((int(hs.phase[d, sl]), got))


def arrive(W: Wave, hs, cs: ClusterState, jb: int, index: Any, cta: Any, m: Any,
           site: int) -> None:
    """mapa + mbarrier.arrive.shared::cluster on bar[index] of the CTA of rank `cta`."""
    from . import wgmma_sim

    act = active(W, m)
    if not act.any():
        return
    note_release(W, hs, cs, jb, index, cta, m)
    lanes = np.flatnonzero(act)
    own = W.blk[lanes]
    r = per_lane(W, cta)[lanes]
    if W.check and ((r < 0) | (r >= cs.size)).any():
        i = int(np.flatnonzero((r < 0) | (r >= cs.size))[0])
        W._fail("out_of_bounds", site, int(lanes[i]), f"remote mbarrier arrive on CTA rank "
                f"{int(r[i])} of a {cs.size}-CTA cluster", hint="ranks are 0..size-1")
    dst = cs.peer[own, r]
    slots = hs.bar_slot[jb] + per_lane(W, index)[lanes]
    _check_init(W, hs, cs, own, dst, slots, "a remote mbarrier arrive", site, lanes)
    _note_remote(W, hs, cs, own, dst, slots, "remote arrive", lanes)
    np.add.at(hs.pending, (dst, slots), -1)
    if (hs.pending < 0).any():
        bb, ss = (int(x[0]) for x in np.nonzero(hs.pending < 0))
        W._fail("bad_mbarrier", site, int(lanes[0]), f"mbarrier {_bar_name(W, hs, ss)} of "
                f"{_cta(W, cs, bb)} got more arrivals than its count "
                f"{int(hs.expected[bb, ss])} (remote arrivals from its cluster included)",
                hint="init the barrier with the arrivals of every CTA that releases it")
    wgmma_sim.complete_phases(hs)


def multicast_targets(W: Wave, cs: ClusterState, lanes: np.ndarray, mask: int) -> np.ndarray:
    """[lanes, CTAs of the mask]: wave blocks a multicast issued by `lanes` lands in."""
    ranks = [r for r in range(cs.size) if mask >> r & 1]
    return cs.peer[W.blk[lanes]][:, ranks]


def before_write(W: Wave, hs, cs: ClusterState, src: np.ndarray, dst: np.ndarray,
                 jd: int, words: np.ndarray, jb: int, slots: np.ndarray, site: int,
                 lanes: np.ndarray, chunks: tuple | None = None,
                 region: tuple | None = None) -> None:
    """A TMA issued by blocks `src` writes `words` [lanes, box] of blocks `dst` and
    completes on their barrier `slots`; `chunks`: the words' chunks if known
    (ReadMap.index); `region`: (c, blocks dst, (first chunk, lanes) groups, order) when
    each lane's words are the c-word chunks first .. first + len(order) - 1 of its
    block's part (tma_sim._region)."""
    _check_init(W, hs, cs, src, dst, slots, "a TMA multicast", site, lanes)
    _note_remote(W, hs, cs, src, dst, slots, "TMA multicast", lanes)
    mp = cs.maps.get(jd)
    if mp is None:          # no wgmma read the buffer: nothing to overwrite
        return
    cs.epoch += 1
    if region is not None and region[0] == mp.c:
        # the entries as one slice per block; a race is reported from the box-order path
        _, b, groups, order = region
        per_block = mp.a.reshape(-1, W.sh_buf[jd].size // mp.c)
        bits = 1 << cs.rank[src]
        pending = hit = False
        for first, sel in groups:
            got = per_block[b[sel], first:first + order.size] & RANK_BITS
            pending = pending or bool(got.any())
            hit = hit or (W.check and bool(((got & bits[sel][:, None]) != 0).any()))
        if not pending:
            return
        if not hit:
            for first, sel in groups:
                per_block[b[sel], first:first + order.size] = 0
            return
    idx = mp.index(words, chunks)
    got = mp.a[idx]
    pending = got & RANK_BITS
    if not pending.any():   # every word read was released and observed (or rewritten)
        return
    if W.check:
        hit = (pending & (1 << cs.rank[src])[:, None]) != 0
        if hit.any():
            _fail_overwrite(W, hs, cs, src, dst, jd, words, hit, got, mp.c, site, lanes)
    mp.a[idx] = 0           # new data: its reads are to come (the phase goes with them)


def _fail_overwrite(W: Wave, hs, cs: ClusterState, src: np.ndarray, dst: np.ndarray, jd: int,
                    words: np.ndarray, hit: np.ndarray, got: np.ndarray, c: int, site: int,
                    lanes: np.ndarray) -> None:
    """The race of the lowest issuer rank with a hit, at its first hit word in lane and box
    order (a hit entry's first word: a chunk's words share their state)."""
    r = int(cs.rank[src][hit.any(axis=1)].min())
    i, e = (int(x[0]) for x in np.nonzero(hit & (cs.rank[src] == r)[:, None]))
    sb = W.sh_buf[jd]
    word = int(words[i, e * c]) % sb.size
    stage = word // max(1, sb.size // sb.stages)
    phase = int(got[i, e] >> SHIFT)
    W._fail("race", site, int(lanes[i]), f"{_cta(W, cs, int(src[i]))}: TMA "
            f"{'multicast ' if src[i] != dst[i] else ''}lands in shared "
            f"{sb.name}[{word}] (pipeline stage {stage}) of "
            f"{_cta(W, cs, int(dst[i]))}, whose wgmma read it (filled at mbarrier "
            f"phase {phase}) and whose release of the stage CTA rank {r} has not "
            f"observed", buffer=sb.name, index=word,
            hint="every consumer whose stage a multicast writes must arrive on "
                 "the issuing CTA's empty barrier (mapa + remote arrive), and "
                 "the issuer must wait on it")


# --------------------------------------------------------------------------- cluster barrier
def _whole_ctas(W: Wave, m: Any, site: int, what: str) -> np.ndarray:
    a = active(W, m).reshape(W.B, W.T)
    part = a.any(axis=1) & ~a.all(axis=1)
    if part.any():
        b = int(np.flatnonzero(part)[0])
        lane = b * W.T + int(np.flatnonzero(~a[b])[0])
        W._fail("divergent_barrier", site, lane, f"{what} reached by part of the CTA "
                f"(thread {int(W.tid[lane])} is inactive): the .aligned cluster barrier "
                "needs every thread", hint="execute cluster barriers outside "
                                           "thread-dependent branches")
    return a.all(axis=1)


def cluster_arrive(W: Wave, cs: ClusterState, m: Any, site: int) -> None:
    whole = _whole_ctas(W, m, site, "barrier.cluster.arrive")
    cs.arrived[np.repeat(whole, W.T)] += 1


def cluster_wait(W: Wave, hs, cs: ClusterState, m: Any, site: int) -> None:
    whole = _whole_ctas(W, m, site, "barrier.cluster.wait")
    per_cta = cs.arrived.reshape(W.B, W.T).min(axis=1)
    for b in np.flatnonzero(whole).tolist():
        k = int(cs.waited[b * W.T]) + 1
        peers = cs.peer[b]
        short = [int(p) for p in peers if per_cta[p] < k]
        if short and W.check:
            W._fail("deadlock", site, b * W.T, f"{_cta(W, cs, b)} waits on cluster barrier "
                    f"phase {k}, which {_cta(W, cs, short[0])} never arrives at in program "
                    "order", hint="every CTA of the cluster executes the same "
                                  "barrier.cluster.arrive/wait pairs")
        cs.waited[b * W.T:(b + 1) * W.T] = k
        # remote operations issued before the issuer's k-th arrival are now ordered
        ordered = (cs.rem_phase[b] >= 0) & (cs.rem_arr[b] < k)
        cs.rem_phase[b, ordered] = -1


def exit_check(W: Wave, hs, cs: ClusterState, site: int) -> None:
    """The end of the kernel: every peer operation into a CTA must be ordered before it."""
    if not W.check:
        return
    pend = np.argwhere(cs.rem_phase >= 0)
    if len(pend):
        b, s = (int(x) for x in pend[0])
        src = int(cs.rem_from[b, s])
        W._fail("race", site, b * W.T, f"{_cta(W, cs, b)} exits while the "
                f"{cs.rem_kind.get((b, s), 'operation')} of {_cta(W, cs, src)} on its mbarrier "
                f"{_bar_name(W, hs, s)} (phase {int(cs.rem_phase[b, s])}) is not ordered "
                "before the exit: the peer may still write its shared memory",
                hint="barrier.cluster.arrive + barrier.cluster.wait before the CTAs exit")


__all__ = ["ClusterState", "ReadMap", "arrive", "before_write", "cluster_arrive", "cluster_wait",
           "exit_check", "multicast_targets", "note_init", "note_reads", "note_release",
           "observe", "rank", "state"]
