"""Matrix units and memory pipelines in the simulator: Mma, LdMatrix, VecCopy, cp.async groups.

Called by the code codegen generates (one function per statement kind), on a lanes.Wave:

* `mma`: lane-exact. Each lane contributes only the fragment elements its layout
  (hal.kernel.mma) gives it: the A, B and C fragments of all lanes are scattered into
  [warps, m, k], [warps, k, n] and [warps, m, n] matrices by the layout's tables, the
  whole wave's instruction runs as ONE batched contraction, and D goes back to the lanes
  by the C layout. A wrong lane or element index therefore gives wrong numbers. Numerics:
  the products of the (already rounded) inputs are exact and are summed with C in
  float64, then rounded once to the accumulator dtype (f32), the documented f32
  accumulation of mma.sync / MFMA up to the order of the additions.
* `ldmatrix`: PTX ldmatrix semantics (hal.kernel.mma.ldmatrix_source): lane t receives
  elements of the rows other lanes addressed.
* `vcopy`: a vector move (128-bit loads, register prefetch, cp.async). Masked-off lanes
  write zeros (cp.async's zero fill, `full ? load : 0`).
* cp.async groups (`Pipeline`): every asynchronous copy marks its shared words pending
  with (thread, commit group); `cp_wait(n)` retires a thread's groups but the newest n;
  a read of a pending word (any shared Load, LdMatrix or vector copy) is a `race`
  naming kernel, block, thread, buffer, element and pipeline stage.
* counters: matrix flops per instruction layout (apart from vector flops) and shared
  bank conflicts of the vector/ldmatrix accesses: 32 banks of 4 bytes, a 16-byte access
  served in quarter-warp phases of 8 lanes (one 8x8 matrix per ldmatrix phase); the
  extra wavefronts of a phase are (most distinct words in one bank) - 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hal.dtypes import DType
from hal.kernel.mma import get_layout, ldmatrix_source

from .lanes import Wave, rep_dtype, to_rep

BANKS = 32
_LAYOUT_TABLES: dict[str, tuple] = {}
_LDM: dict[tuple[int, bool], tuple[np.ndarray, np.ndarray]] = {}


def _tables(name: str) -> tuple:
    """(layout, gather of A, B, C matrices from lane-major fragments, scatter of D)."""
    t = _LAYOUT_TABLES.get(name)
    if t is None:
        lay = get_layout(name)

        def inverse(table: np.ndarray, cols: int) -> np.ndarray:
            flat = (table[..., 0] * cols + table[..., 1]).ravel()
            inv = np.empty_like(flat)
            inv[flat] = np.arange(flat.size)
            return inv

        t = (lay, inverse(lay.a, lay.k), inverse(lay.b, lay.n), inverse(lay.c, lay.n),
             (lay.c[..., 0] * lay.n + lay.c[..., 1]).ravel())
        _LAYOUT_TABLES[name] = t
    return t


def _frag(W: Wave, j: int, off: int, n: int) -> np.ndarray:
    """Fragment elements off..off+n of local buffer j for every lane: [L, n] float64."""
    rows = W.loc[j][off:off + n]
    out = np.empty((W.L, n), np.float64)
    for i, r in enumerate(rows):
        out[:, i] = r
    return out


def round_tf32(x: np.ndarray) -> np.ndarray:
    """f32 values rounded to TF32 (10 mantissa bits) to nearest, ties away from zero (PTX
    cvt.rna.tf32.f32): add half of the 13 dropped bits' unit to the magnitude, truncate.
    Infinities and NaNs pass unchanged; a carry into the exponent rounds up (to inf past
    the largest TF32)."""
    x32 = np.asarray(x, np.float32)
    bits = x32.view(np.uint32)
    r = ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)
    return np.where(np.isfinite(x32), r, x32).astype(np.float64)


def _whole_warps(W: Wave, m: Any, lanes: int, site: int, what: str) -> None:
    if W.T % lanes:
        W._fail("bad_mma", site, 0, f"{what} needs whole {lanes}-lane warps, the block has "
                f"{W.T} threads", hint="make the block a multiple of the warp size")
    if m is None or not W.check:
        return
    mw = m.reshape(-1, lanes)
    part = mw.any(axis=1) & ~mw.all(axis=1)
    if part.any():
        w = int(np.flatnonzero(part)[0])
        lane = w * lanes + int(np.flatnonzero(~mw[w])[0])
        W._fail("divergent_mma", site, lane, f"{what} reached by part of a warp (thread "
                f"{int(W.tid[lane])} is inactive)", hint="issue warp-wide instructions "
                "outside thread-dependent branches")


def mma(W: Wave, layout: str, jd: int, doff: int, ja: int, aoff: int, jb: int, boff: int,
        jc: int, coff: int, m: Any, site: int) -> None:
    lay, inv_a, inv_b, inv_c, out_c = _tables(layout)
    _whole_warps(W, m, lay.lanes, site, "mma")
    nw = W.L // lay.lanes
    a = _frag(W, ja, aoff, lay.a_elems).reshape(nw, -1)[:, inv_a].reshape(nw, lay.m, lay.k)
    b = _frag(W, jb, boff, lay.b_elems).reshape(nw, -1)[:, inv_b].reshape(nw, lay.k, lay.n)
    if lay.input_format == "tf32":   # cvt.rna.tf32.f32 of every A and B element first
        a, b = round_tf32(a), round_tf32(b)
    c = _frag(W, jc, coff, lay.c_elems).reshape(nw, -1)[:, inv_c].reshape(nw, lay.m, lay.n)
    d = np.matmul(a, b) + c
    acc: DType = W.loc_buf[jd].dtype
    d = d.reshape(nw, -1)[:, out_c]
    dl = (d.astype(np.float32) if acc.name == "f32" else to_rep(d, acc)).reshape(
        W.L, lay.c_elems)
    rows = W.loc[jd]
    for i in range(lay.c_elems):
        rows[doff + i] = dl[:, i] if m is None else np.where(m, dl[:, i], rows[doff + i])
    active = nw if m is None else W.tally(m) // lay.lanes
    W.mfl[layout] = W.mfl.get(layout, 0) + 2 * lay.m * lay.n * lay.k * active


# A loop's vector copies and ldmatrix loads repeat the same shared addresses every
# iteration (the same tile slots), so the counts of small address sets are kept by their
# content: a hit costs one copy of the addresses instead of _conflicts' sort and unique.
CONFLICTS_MEMO_WORDS = 1 << 14   # larger address sets are counted every time
CONFLICTS_MEMO_KEPT = 256        # entries (<= 32 MiB of keys); emptied when full
_conflicts_memo: dict[tuple, int] = {}


def _conflicts(byte_addr: np.ndarray, nbytes: int) -> int:
    """Extra wavefronts of phases [G, P] of `nbytes`-wide accesses at `byte_addr`
    (_count_conflicts), from the memo when the same addresses were counted before."""
    if byte_addr.size > CONFLICTS_MEMO_WORDS:
        return _count_conflicts(byte_addr, nbytes)
    key = (nbytes, byte_addr.shape, byte_addr.dtype.str, byte_addr.tobytes())
    got = _conflicts_memo.get(key)
    if got is None:
        if len(_conflicts_memo) >= CONFLICTS_MEMO_KEPT:
            _conflicts_memo.clear()
        got = _conflicts_memo[key] = _count_conflicts(byte_addr, nbytes)
    return got


def _count_conflicts(byte_addr: np.ndarray, nbytes: int) -> int:
    """Extra wavefronts of phases [G, P] of `nbytes`-wide accesses at `byte_addr`.

    Phases that are one pattern shifted (the usual case: per-lane offsets plus a per-warp
    base) conflict alike when their bases agree modulo the 128 bytes the banks span, so
    one phase per distinct base is counted (all in one pass) and weighted. Otherwise
    (swizzled rows: a few patterns) phases equal up to a shift by whole 128-byte spans
    conflict alike (the same banks, as many distinct words): one per distinct pattern."""
    if byte_addr.shape[0] > 1:
        span = 4 * BANKS
        rel = byte_addr[1:] - byte_addr[1:, :1]
        if (rel == byte_addr[0] - byte_addr[0, 0]).all():
            _, first, counts = np.unique(byte_addr[:, 0] % span, return_index=True,
                                         return_counts=True)
            return int(_conflicts_per_phase(byte_addr[first], nbytes) @ counts)
        if byte_addr.dtype == np.int64:
            shifted = np.ascontiguousarray(byte_addr - byte_addr[:, :1] // span * span)
            patterns = shifted.view(f"V{shifted.itemsize * shifted.shape[1]}").ravel()
            _, first, counts = np.unique(patterns, return_index=True, return_counts=True)
            return int(_conflicts_per_phase(byte_addr[first], nbytes) @ counts)
    return _conflicts_raw(byte_addr, nbytes)


def _conflicts_raw(byte_addr: np.ndarray, nbytes: int) -> int:
    """Every phase counted on its own (the general case; tests check _conflicts by it)."""
    return int(_conflicts_per_phase(byte_addr, nbytes).sum())


def _conflicts_per_phase(byte_addr: np.ndarray, nbytes: int) -> np.ndarray:
    """Per phase [G, P], the wavefronts past the first: the most distinct words any one
    bank holds, less one (a word many lanes read is one broadcast)."""
    words = (byte_addr[..., None] // 4 + np.arange(max(1, nbytes // 4))).reshape(
        byte_addr.shape[0], -1)
    words = np.sort(words, axis=1)
    first = np.ones(words.shape, bool)
    first[:, 1:] = words[:, 1:] != words[:, :-1]
    key = np.arange(words.shape[0])[:, None] * BANKS + words % BANKS
    counts = np.bincount(key[first], minlength=words.shape[0] * BANKS).reshape(-1, BANKS)
    return np.maximum(counts.max(axis=1) - 1, 0).astype(np.int64)


def _shared_base(W: Wave, j: int) -> int:
    base = getattr(W, "sh_base_bytes", None)
    if base is None:
        base, off = [], 0
        for s in W.sh_buf:   # the renderers' layout (Kernel.shared_offsets)
            off = (off + s.align - 1) // s.align * s.align
            base.append(off)
            off += s.nbytes
        W.sh_base_bytes = base
    return base[j]


def ldmatrix(W: Wave, jf: int, off: int, js: int, addr: Any, count: int, trans: bool,
             m: Any, site: int) -> None:
    _whole_warps(W, m, 32, site, "ldmatrix")
    key = (count, trans)
    plans = W.__dict__.setdefault("ldm_plans", {})
    if key not in plans:   # [L, 2c]: the lane whose row each element comes from, its offset
        src, offs = ldmatrix_source(count, trans)
        lw = W.tid % 32
        plans[key] = ((W.lane - lw)[:, None] + src[lw], offs[lw], lw)
    supplier, offs_l, lw = plans[key]
    sb = W.sh_buf[js]
    addr = W.lanes_int(addr)
    idx = addr[supplier] + offs_l
    if W.check:
        lanes_used = lw < 8 * count if m is None else (lw < 8 * count) & m
        bad = lanes_used & ((addr % 8 != 0) | (addr < 0) | (addr + 8 > sb.size))
        if bad.any():
            lane = int(np.flatnonzero(bad)[0])
            W._fail("out_of_bounds" if addr[lane] % 8 == 0 else "misaligned", site, lane,
                    f"ldmatrix row address {sb.name}[{int(addr[lane])}] is not a 16-byte "
                    f"row inside the buffer (size {sb.size})", buffer=sb.name,
                    index=int(addr[lane]), hint="row addresses are multiples of 8 elements")
    flat = W.sh_off[js][:, None] + idx
    vals = W.sh[js][flat]
    if W.check:
        W._race_read(js, flat, m, site, per_lane=2 * count)
        if W.pipe is not None:
            W.pipe.check_read(W, js, flat, m, site)
    rows = W.loc[jf]
    for e in range(2 * count):
        rows[off + e] = vals[:, e] if m is None else np.where(m, vals[:, e], rows[off + e])
    n = W._count(m)
    W.sr += n * 2 * count * sb.dtype.itemsize
    # one phase per 8x8 matrix: the 8 row addresses its suppliers gave, 16 bytes each
    per_warp = addr.reshape(-1, 32)[:, :8 * count].reshape(-1, 8)
    W.bank_conflicts += _conflicts(_shared_base(W, js) + per_warp * sb.dtype.itemsize, 16)


class Pipeline:
    """cp.async bookkeeping of one wave: per shared word the pending copy's commit group
    and writer lane packed in one int64 (-1: none), and each thread's groups."""

    SHIFT = 32

    def __init__(self, W: Wave):
        self.code = [np.full(W.B * s.size, -1, np.int64) for s in W.sh_buf]
        self.committed = np.zeros(W.L, np.int64)
        self.done = np.zeros(W.L, np.int64)
        self.uniform = True     # every lane committed the same number of groups

    def mark(self, j: int, flat: np.ndarray, lanes: np.ndarray) -> None:
        group = int(self.committed[0]) if self.uniform else self.committed[lanes]
        self.code[j][flat] = (group << self.SHIFT) + lanes

    def check_read(self, W: Wave, j: int, flat: Any, act: Any, site: int) -> None:
        """`flat`: the words each lane reads ([L] or [L, per_lane])."""
        f = np.asarray(flat) if act is None or np.ndim(flat) == 0 else flat[act]
        code = self.code[j][f]
        if code.max(initial=-1) < 0:
            return
        live = code >= 0
        g, own = code >> self.SHIFT, np.where(live, code & ((1 << self.SHIFT) - 1), 0)
        bad = live & (g >= self.done[own])
        if bad.any():
            k = int(np.flatnonzero(bad.ravel())[0])
            li = k // (f.shape[1] if f.ndim == 2 else 1)
            reader = li if act is None else int(np.flatnonzero(act)[li])
            word = int(np.ravel(f)[k])
            sb = W.sh_buf[j]
            i = word % sb.size
            stage = i // max(1, sb.size // sb.stages)
            writer = int(W.tid[int(np.ravel(own)[k])])
            W._fail("race", site, reader,
                    f"shared {sb.name}[{i}] (pipeline stage {stage}) is read before the "
                    f"cp.async of thread {writer} (commit group {int(np.ravel(g)[k])}) "
                    f"completed", buffer=sb.name, index=i,
                    hint="cp.async.wait_group (CpAsyncWait) and a Barrier before reading "
                         "a stage")


def _pipe(W: Wave) -> Pipeline:
    if W.pipe is None:
        W.pipe = Pipeline(W)
    return W.pipe


def cp_commit(W: Wave, m: Any) -> None:
    p = _pipe(W)
    p.committed += 1 if m is None else m
    p.uniform = p.uniform and m is None


def cp_wait(W: Wave, pending: int, m: Any) -> None:
    p = _pipe(W)
    new = np.maximum(p.done, p.committed - pending)
    p.done = new if m is None else np.where(m, new, p.done)


def _vectors_inside(start: np.ndarray, width: int, size: int) -> bool:
    """Every lane's `width`-wide vector at `start` aligned and inside [0, size): one pass
    for the range (a negative start seen as uint64 is past any size) and one for the
    alignment (widths are powers of two)."""
    if not start.size:
        return True
    if start.dtype != np.int64 or width & (width - 1):
        return bool((start >= 0).all() and (start + width <= size).all()
                    and not (start % width).any())
    return int(start.view(np.uint64).max()) <= size - width and \
        not (start & (width - 1)).any()


def _whole_vectors(buf: np.ndarray, start: np.ndarray, width: int) -> np.ndarray | None:
    """buf[start[:, None] + arange(width)] as [lanes, width] when every start is a whole
    aligned vector (the caller checked: _vectors_inside) and buf is one contiguous run of
    such vectors: one gather of `width`-element rows (a bf16 buffer's element gather was
    3-4x slower), else None."""
    if buf.ndim != 1 or not buf.flags.c_contiguous or buf.size % width or width < 2 or \
            width & (width - 1) or start.dtype != np.int64:
        return None
    vec = buf.view(f"V{buf.itemsize * width}")
    return vec.take(start >> (width.bit_length() - 1)).view(buf.dtype).reshape(-1, width)


def _store_vectors(buf: np.ndarray, words: np.ndarray, vals: np.ndarray, width: int) -> bool:
    """buf[words] = vals for [n, width] words, each row one vector's consecutive words:
    one scatter of `width`-element rows when the vectors are aligned and buf and vals
    contiguous and of one dtype (the element scatter is several times slower; True),
    else the element scatter (False)."""
    if buf.ndim == 1 and buf.flags.c_contiguous and vals.dtype == buf.dtype and \
            vals.flags.c_contiguous and buf.size % width == 0 and width > 1 and \
            not width & (width - 1) and words.size and not (words[:, 0] & (width - 1)).any():
        row = f"V{buf.itemsize * width}"
        buf.view(row)[words[:, 0] >> (width.bit_length() - 1)] = vals.view(row).reshape(-1)
        return True
    buf[words] = vals
    return False


def vcopy(W: Wave, dst: tuple[str, int], dst_idx: Any, src: tuple[str, int], src_idx: Any,
          width: int, vmask: Any, asynchronous: bool, m: Any, site: int) -> None:
    act = W._act(m, None)
    valid = W._act(m, vmask)
    if valid is False:
        valid = np.zeros(W.L, bool)
    n_act = W._count(act)
    if n_act == 0:
        return
    lanes_valid = np.ones(W.L, bool) if valid is None else np.broadcast_to(valid, (W.L,))
    # an active lane whose vector mask is false reads zeros; an inactive lane's values
    # are never stored (a shared store takes the active lanes, a register store keeps
    # the inactive lanes' registers), so without a vector mask nothing is zeroed
    some_invalid = valid is not act and (
        not lanes_valid.all() if act is None else bool((act & ~lanes_valid).any()))
    e = np.arange(width)
    space, j = src
    if space == "g":
        p, buf = W.g_param[j], W.g[j]
        dt: DType = p.dtype
        si = W.lanes_int(src_idx)
        whole = _vectors_inside(si, width, W.g_n[j])
        if W.check and not whole:
            chk = lanes_valid & (np.ones(W.L, bool) if act is None else act)
            bad = chk & ((si % width != 0) | (si < 0) | (si + width > W.g_n[j]))
            if bad.any():
                lane = int(np.flatnonzero(bad)[0])
                kind = "misaligned" if si[lane] % width else "out_of_bounds"
                W._fail(kind, site, lane, f"{width}-wide vector read {p.name}[{int(si[lane])}]"
                        f" is {'not aligned' if kind == 'misaligned' else 'out of bounds'} "
                        f"(size {W.g_n[j]})", buffer=p.name, index=int(si[lane]),
                        hint="mask the lanes whose vector is not whole")
        got = _whole_vectors(buf, si, width) if whole else None
        if got is None:
            safe = si if whole else np.clip(si, 0, max(0, W.g_n[j] - width))
            got = buf.take(safe[:, None] + e)
        vals = got.astype(rep_dtype(dt), copy=False)   # (new)
        if some_invalid:
            vals[~lanes_valid] = 0
        W.gr += W.tally(lanes_valid if act is None else lanes_valid & act) * width * dt.itemsize
    elif space == "s":
        sb = W.sh_buf[j]
        dt = sb.dtype
        flat = (W.sh_off[j] + W.lanes_int(src_idx))[:, None] + e
        vals = W.sh[j].take(flat)   # (take: fancy indexing's values, faster)
        if W.check:
            W._race_read(j, flat, act, site, per_lane=width)
            if W.pipe is not None:
                W.pipe.check_read(W, j, flat, act, site)
        if some_invalid or vals.dtype == np.bool_:   # (where() makes bools int64)
            vals = np.where(lanes_valid[:, None], vals, 0)
        W.sr += n_act * width * dt.itemsize
    else:
        dt = W.loc_buf[j].dtype
        base = int(src_idx)
        rows = [W.loc[j][base + c] for c in range(width)]
        if not all(type(r) is np.ndarray and r.shape == (W.L,) for r in rows):
            rows = [np.broadcast_to(r, (W.L,)) for r in rows]   # (uniform registers)
        vals = np.stack(rows, axis=1)
        if some_invalid or vals.dtype == np.bool_:   # (a new array already)
            vals = np.where(lanes_valid[:, None], vals, 0)
    space, j = dst
    if space == "s":
        sb = W.sh_buf[j]
        di = W.lanes_int(dst_idx)
        sel = slice(None) if act is None else act
        if W.check and not _vectors_inside(di, width, sb.size):
            bad = (di < 0) | (di + width > sb.size) | (di % width != 0)
            bad = bad if act is None else bad & act
            if bad.any():
                lane = int(np.flatnonzero(bad)[0])
                W._fail("out_of_bounds", site, lane, f"vector store {sb.name}[{int(di[lane])}]"
                        f" of {width} is outside the buffer or not aligned (size {sb.size})",
                        buffer=sb.name, index=int(di[lane]))
        # the active lanes' words, selected once (a copy per use; lanes before words)
        words = (W.sh_off[j] + di)[sel][:, None] + e
        if W.check:
            W._race_write(j, words, act, site, per_lane=width)
            if getattr(W, "hopper", None) is not None:   # generic-proxy write (wgmma_sim)
                from .wgmma_sim import note_generic_write
                # (flat words and writers: two scatters of a [n, width] index with a
                # broadcast [n, 1] value cost ~1.7x the 1-D ones)
                note_generic_write(W, j, words.reshape(-1),
                                   np.repeat(W.lane if act is None else W.lane[act], width))
        _store_vectors(W.sh[j], words, vals[sel], width)
        W.sh_version[j] += 1   # contract.Reduction's panels are stale now
        if asynchronous:
            lanes = W.lane if act is None else W.lane[act]
            _pipe(W).mark(j, words, lanes[:, None])
        W.sw += n_act * width * dt.itemsize
        per_phase = (di * dt.itemsize).reshape(-1, 8) if width * dt.itemsize == 16 and \
            W.L % 8 == 0 else None
        if per_phase is not None:
            W.bank_conflicts += _conflicts(_shared_base(W, j) + per_phase, 16)
    elif space == "l":
        base = int(dst_idx)
        rows = W.loc[j]
        # each element's lane array contiguous (one transposed copy): the registers'
        # later readers walk rows, not [lanes, width] columns
        cols = np.ascontiguousarray(vals.T)
        for c in range(width):
            v = cols[c]
            rows[base + c] = v if act is None else np.where(act, v, rows[base + c])
    else:
        W._fail("unsupported", site, 0, "vector copies write shared or local memory only")
