"""TMA copies in the simulator (wgmma_sim): the box of a tensor map (hal.kernel.tma) read
from global memory, zeros where it crosses the tensor's edge, written swizzled into shared
memory (multicast: into every CTA of the mask, cluster_sim), its words marked with the
mbarrier and phase it completes on (HopperState.mark), checked against unretired wgmmas
still reading them.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from hal.kernel.wgmma import pattern_bytes, swizzle

from .hopper_state import WG, HopperState, active, pack_marks, per_lane
from .lanes import Wave, rep_dtype
from .mbarrier_sim import barrier_slots, complete_tx
from .wgmma_operand import chunk_rows, chunk_words, whole_chunks


def tma(W: Wave, st: HopperState, tm, jg: int, jd: int, dst_index: Any, coords: list,
        jb: int, bar_index: Any, m: Any, site: int, multicast: int = 0) -> None:
    act = active(W, m)
    lanes = np.flatnonzero(act)
    if not len(lanes):
        return
    st.tmas += 1
    sb = W.sh_buf[jd]
    isz = sb.dtype.itemsize
    estr = (1, *(s // isz for s in tm.strides))
    vals, read = _box_gather(W.g[jg], tm, estr, [per_lane(W, c)[lanes] for c in coords])
    vals = vals.astype(rep_dtype(sb.dtype))
    dst = per_lane(W, dst_index)[lanes]
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
    region = _region(addr, dst, tm.swizzle, int(np.prod(tm.box)), isz, c) \
        if echunks is not None else None
    b_own, s = barrier_slots(W, st, jb, bar_index, act)
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
        groups = None if region is None else _groups(region[0], b, region[1].size)
        at = None if groups is None else (b, groups, region[1])
        if cl is not None:
            cluster_sim.before_write(W, st, cl, b_own, b, jd, words, jb, s, site, lanes,
                                     (c, chunks), None if at is None else (c, *at))
        _land(W, st, jd, words, vals, site, lanes, c, chunks, at)
        if jd not in st.mark:
            st.mark[jd] = np.zeros(W.sh[jd].size // c, np.int64)
            st.mark_chunk[jd] = c
        marks = pack_marks(s, st.phase[b, s])[:, None]
        if at is not None and st.mark_chunk[jd] == c:
            per_block = st.mark[jd].reshape(-1, sb.size // c)
            for first, sel in at[1]:
                per_block[b[sel], first:first + at[2].size] = marks[sel]
        elif chunks is not None and st.mark_chunk[jd] == c:
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
        read = np.full(n, offs.size, np.int64)
        r = int(tm.box[0])
        if r > 1 and src.ndim == 1 and src.size % r == 0 and src.flags.c_contiguous and \
                not any(e % r for e in estr[1:]) and not (base % r).any():
            # each box row (box[0] consecutive elements) is a whole row of src viewed as
            # [-1, r]: gathered as rows, not element by element (the same values)
            rows = (base[:, None] + offs[::r]) // r
            return src.reshape(-1, r).take(rows, axis=0).reshape(n, offs.size), read
        return np.take(src, base[:, None] + offs), read
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


def _region(addr: np.ndarray, dst: np.ndarray, mode: int, elems: int, isz: int,
            c: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(first chunk per lane, order) when each lane's box, from element `dst` of its
    block's part of the buffer at the start of a swizzle pattern, fills the chunks
    first .. first + len(order) - 1 of that part: chunk first + i holds the box's chunk
    order[i]; else None."""
    pattern = pattern_bytes(mode)
    if not pattern or (addr % pattern).any() or (dst % c).any():
        return None
    got = _chunk_order(mode, elems, isz, c)
    return None if got is None else (dst // c + got[0], got[1])


def _groups(first: np.ndarray, b: np.ndarray, m: int) -> list[tuple[int, Any]] | None:
    """The lanes of each distinct first chunk (a stage, a CTA's half of a multicast box)
    as (first, lanes) pairs, the lanes a slice or an index array, when no two lanes write
    the same chunk (then the order of the writes does not matter): within a group the
    blocks are distinct, and the groups' ranges of m chunks do not overlap. Else None."""
    if not (first != first[0]).any():
        return [(int(first[0]), slice(None))] if len(np.unique(b)) == len(b) else None
    u, inv = np.unique(first, return_inverse=True)
    if (np.diff(u) < m).any():
        return None
    out = []
    for i, f in enumerate(u.tolist()):
        sel = np.flatnonzero(inv == i)
        if len(np.unique(b[sel])) < len(sel):
            return None
        out.append((int(f), sel))
    return out


@functools.lru_cache(maxsize=64)
def _chunk_order(mode: int, elems: int, isz: int, c: int) -> tuple[int, np.ndarray] | None:
    """(lowest chunk, the box chunk landing at each chunk from there) when the chunks of a
    box starting a swizzle pattern fill a contiguous range (a permutation), else None."""
    ochunks = _swizzled_offsets(mode, elems, isz, c)[1]
    if ochunks is None:
        return None
    lo = int(ochunks.min())
    if not np.array_equal(np.sort(ochunks), np.arange(lo, lo + ochunks.size)):
        return None
    order = np.argsort(ochunks)
    order.flags.writeable = False
    return lo, order


def _land(W: Wave, st: HopperState, jd: int, words: np.ndarray, vals: np.ndarray, site: int,
          lanes: np.ndarray, c: int = 1, chunks: np.ndarray | None = None,
          region: tuple | None = None) -> None:
    """A TMA box's words land in shared buffer jd (checked against unretired wgmmas);
    `chunks`: the words as whole c-word chunks (written as rows), None if they are not;
    `region`: (blocks, _groups of the first chunks, order) when each lane's chunks are
    one contiguous range of a distinct block's part (_region): written as a slice per
    block, several times faster than a scatter of the chunks."""
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
    elif region is not None:
        b, groups, order = region
        per_block = rows.reshape(-1, sb.size // c, c)
        ordered = vals.reshape(len(b), -1, c).take(order, axis=1)
        for first, sel in groups:
            per_block[b[sel], first:first + order.size] = ordered[sel]
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



__all__ = ["tma"]
