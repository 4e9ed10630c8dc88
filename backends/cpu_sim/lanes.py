"""The lane machine: memory, masks, warp shuffles and barriers for one wave of blocks.

A wave is `B` whole blocks of `T` threads run together as `L = B*T` lanes; lane
`l` is thread `l % T` of the wave's block `l // T` (so a warp is `warp_size`
consecutive lanes of one block). Every per-thread value is a NumPy array over the
lanes or, when the generated code knows it is the same for every lane, a NumPy or
Python scalar. Statements run under an active mask: `None` means all lanes.

Value representation (see codegen): floats narrower than f32 are held in float32
arrays whose values are exactly representable in their dtype; all integers are
held in int64 (i32 results are checked for overflow, then wrapped); bools in bool_.

Memory: global buffers are the caller's arrays, in their own dtype, changed in
place; shared memory is one array [B * size] per buffer (block-major); local
arrays are [size * L] (index-major, so a uniform index selects a contiguous row).

Race tracking (check=True), per shared word since the block's last barrier: the
last writer thread (-1: none) and the reader thread (-1: none, -2: several).
Reads are recorded lazily (kept as a list, folded in only when a write follows
in the same epoch) because the common tiled pattern reads a lot between barriers
and writes nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from hal.dtypes import DType, bf16, cast
from hal.kernel.ir import BufferParam, LocalBuffer, SharedBuffer

from .checks import SimulationError
from .tally import Tally

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
READS_PENDING_LIMIT = 1 << 22   # recorded shared reads kept unfolded (bounds their memory)
REM_BY_DIVISION_MIN = 2048      # lanes from which rem_by_const divides instead of using %


def _ndim(x: Any) -> int:
    return x.ndim if isinstance(x, np.ndarray) else 0


# The checks below find an extreme or a first True with argmax/argmin: one C call with no
# ufunc machinery, where max()/min()/any() pay a reduction's setup (~2 us, more than the
# pass itself over a small wave's lanes, and the simulator makes millions of them).
def first_true(b: np.ndarray) -> int:
    """Flat index of the first True of a bool array, -1 if there is none."""
    if not b.size:
        return -1
    k = int(b.argmax())    # the first maximum: the first True, else 0
    return k if b.item(k) else -1


def int_max(a: np.ndarray) -> Any:
    """The largest element of a non-empty array (a Python scalar)."""
    return a.item(a.argmax())


def int_min(a: np.ndarray) -> Any:
    """The smallest element of a non-empty array (a Python scalar)."""
    return a.item(a.argmin())


def all_in_range(idx: np.ndarray, size: int) -> bool:
    """Every index of the array in [0, size): for int64 one pass over the indices seen as
    uint64 (a negative index becomes one >= 2**63, so past any size)."""
    if idx.size == 0:
        return True
    if idx.dtype == np.int64:
        return int_max(idx.view(np.uint64)) < size
    return bool(idx.min() >= 0 and idx.max() < size)


_I64 = np.dtype(np.int64)
_INT_TYPES = frozenset((int, np.int64))   # a uniform index: a Python or NumPy int


def _lane_indices_in_range(idx: Any, size: int) -> bool:
    """idx is a non-empty int64 lane array (not a subclass) with every index in [0, size):
    the accesses' common case, checked inline as _bounds' first branch checks it."""
    return type(idx) is np.ndarray and idx.dtype is _I64 and idx.ndim != 0 and \
        idx.size != 0 and int_max(idx.view(np.uint64)) < size


def _lane_array(idx: Any) -> bool:
    """idx is a non-empty int64 lane array (not a subclass): where _lane_indices_in_range
    is False for such an array, some index is outside the range."""
    return type(idx) is np.ndarray and idx.dtype is _I64 and idx.ndim == 1 and idx.size != 0


def rep_dtype(dt: DType) -> np.dtype:
    """The NumPy dtype the simulator holds values of `dt` in."""
    if dt.is_float:
        return np.dtype(np.float64) if dt.bits == 64 else np.dtype(np.float32)
    if dt.is_int:
        return np.dtype(np.int64)
    return np.dtype(np.bool_)


def to_rep(x: Any, dt: DType) -> Any:
    """Round a python/NumPy value to `dt` (hal cast rules) and return it in representation."""
    return cast(x, dt).astype(rep_dtype(dt))


def fast_to_rep(dt: DType) -> Any:
    """`to_rep(x, dt)` as one function, for codegen's rounding after each narrow op: for
    a non-saturating float dtype the same NumPy conversions as hal.dtypes.cast without its
    per-call dispatch (the simulator holds values as float32/float64/int64/bool, never as
    ml_dtypes arrays; the caller silences FP warnings)."""
    if dt.is_int:
        npd = dt.np_dtype
        return lambda x: _int_to_rep(x, dt, npd)
    if not dt.is_float or dt.saturates:
        return lambda x: to_rep(x, dt)
    npd, rep = dt.np_dtype, rep_dtype(dt)
    if npd == rep:
        return lambda x: np.asarray(x).astype(rep)
    return lambda x: np.asarray(x).astype(npd).astype(rep)


def _int_to_rep(x: Any, dt: DType, npd: np.dtype) -> Any:
    """to_rep(x, dt) for an integer dtype: an integer or bool value wraps (cast's astype)
    without cast's per-call dispatch; anything else goes through to_rep."""
    a = np.asarray(x)
    if a.dtype.kind in "iub":   # (astype(npd) made a new array: the second need not copy)
        return a.astype(npd).astype(np.int64, copy=False)
    return to_rep(a, dt)


_STORE_CASTS: dict[DType, Callable[[Any], np.ndarray]] = {}


def store_cast(dt: DType) -> Callable[[Any], np.ndarray]:
    """cast(x, dt) for a value in the simulator's representation stored to a buffer of
    `dt`: a float32/float64 value to a non-saturating float dtype, or an integer/bool value
    to an integer dtype, is the one astype cast would do (its dispatch and errstate are
    per call; the caller silences FP warnings); anything else calls cast."""
    got = _STORE_CASTS.get(dt)
    if got is None:
        got = _STORE_CASTS[dt] = _make_store_cast(dt)
    return got


def _make_store_cast(dt: DType) -> Callable[[Any], np.ndarray]:
    npd = dt.np_dtype
    if dt.is_int:
        kinds = "iub"
    elif dt.is_float and not dt.saturates:
        kinds = "f"
    else:
        return lambda x: cast(x, dt)

    def conv(x: Any) -> np.ndarray:
        a = np.asarray(x)
        # (float64 -> bf16 keeps cast's own path: _f64_to_bf16 for large arrays)
        if a.dtype.kind in kinds and not (a.dtype == np.float64 and dt == bf16):
            return a.astype(npd, copy=False)   # (stg only reads it: no copy when it fits)
        return cast(a, dt)
    return conv


# Waves of the same shape share their lane geometry (read-only arrays): most launches
# run many small waves, and building these per wave showed in profiles.
SHARED_GEOMETRY_LANES = 1 << 14
_geometry: dict[tuple, Any] = {}


def _shared_readonly(key: tuple, lanes: int, make: Callable[[], Any]) -> Any:
    """make(), kept (frozen) for the next wave of the same key when it has few lanes."""
    if lanes > SHARED_GEOMETRY_LANES:
        return make()
    got = _geometry.get(key)
    if got is None:
        got = make()
        for a in (got if isinstance(got, tuple) else (got,)):
            a.flags.writeable = False
        _geometry[key] = got
    return got


def _make_lane_geometry(block: int, nblocks: int) -> tuple[np.ndarray, ...]:
    lane = np.arange(block * nblocks, dtype=np.int64)
    blk = lane // block
    return lane, blk, lane - blk * block


def lane_geometry(block: int, nblocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lane, block of the lane, thread of the lane) over the wave's block * nblocks lanes."""
    return _shared_readonly(("lanes", block, nblocks), block * nblocks,
                            lambda: _make_lane_geometry(block, nblocks))


def shared_offsets(block: int, nblocks: int, size: int) -> np.ndarray:
    """Per lane (block threads each), the start of its block's part of a shared buffer."""
    return _shared_readonly(("shared", block, nblocks, size), block * nblocks,
                            lambda: lane_geometry(block, nblocks)[1] * size)


def _block_coordinates(grid: tuple[int, int, int], block: int,
                       lin: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # per block, then spread to the block's lanes (the divisions on every lane showed in
    # the per-wave cost)
    lin = np.asarray(lin, np.int64)
    return (np.repeat(lin % grid[0], block), np.repeat((lin // grid[0]) % grid[1], block),
            np.repeat(lin // (grid[0] * grid[1]), block))


BLOCK_COORDINATES_KEPT = 256
_coordinates: OrderedDict[tuple, tuple[np.ndarray, ...]] = OrderedDict()


def block_coordinates(grid: tuple[int, int, int], block: int, block0: int,
                      nblocks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(blockIdx.x, .y, .z) of each lane of a wave of blocks block0 .. block0 + nblocks - 1,
    read-only; the latest few small waves' are kept (a suite's launches repeat shapes:
    a case runs fused and unfused, and cases share sizes)."""
    if block * nblocks > SHARED_GEOMETRY_LANES:
        return _block_coordinates(grid, block, np.arange(block0, block0 + nblocks))
    key = (tuple(grid), block, block0, nblocks)
    got = _coordinates.get(key)
    if got is None:
        got = _block_coordinates(grid, block, np.arange(block0, block0 + nblocks))
        for a in got:
            a.flags.writeable = False
        _coordinates[key] = got
        if len(_coordinates) > BLOCK_COORDINATES_KEPT:
            _coordinates.popitem(last=False)
    else:
        _coordinates.move_to_end(key)
    return got


class Wave:
    """State of one wave: lanes, memories, counters; methods called by generated code."""

    def __init__(self, kernel_name: str, grid: tuple[int, int, int], block: int,
                 block0: int, nblocks: int, warp_size: int,
                 globals_: list[tuple[BufferParam, np.ndarray]],
                 shared: list[SharedBuffer], locals_: list[LocalBuffer],
                 sites: list[tuple[str, str | None, str]], n_flop_dtypes: int, check: bool,
                 fast: bool = True, reduction_groups: dict | None = None,
                 block_ids: np.ndarray | None = None, written: list | None = None,
                 parts: tuple[np.ndarray, int] | None = None):
        self.name, self.grid, self.T, self.B = kernel_name, grid, block, nblocks
        # fast: matched multiply-accumulate loops run as contractions (vectorize.py)
        self.fast = fast
        self.reduction_groups = {} if reduction_groups is None else reduction_groups
        # bumped by every store, so contract.Reduction can reuse a gathered panel
        self.g_version = [0] * len(globals_)
        self.sh_version = [0] * len(shared)
        self.panels: dict = {}
        self.pick_index: dict = {}
        self.block0, self.warp_size, self.check, self.sites = block0, warp_size, check, sites
        self.L = block * nblocks
        self.lane, self.blk, self.tid = lane_geometry(block, nblocks)
        self.lane_id = self.lane   # the real lane of each position (widen.py repeats lanes)
        # parts: (the part of each block, number of parts) of a combined sampled wave
        # (tally.py): lane counts (L, B, _count, narrow, tally, tally_at) split per part
        self.lane_part, self.nparts = None, 0
        if parts is not None:
            of_block, self.nparts = np.asarray(parts[0], np.int64), int(parts[1])
            self.lane_part = of_block[self.blk]
            self.B = Tally(np.bincount(of_block, minlength=self.nparts))
            self.L = Tally(self.B.parts * block)
        # block_ids: the linear ids of a sampled wave's blocks (sampled.py); else contiguous
        self.bx, self.by, self.bz = block_coordinates(grid, block, block0, nblocks) \
            if block_ids is None else _block_coordinates(grid, block, block_ids)
        # written: per global buffer, a list that collects the indices stores hit (sampled.py)
        self.written = written
        self.g = [a for _, a in globals_]
        self.g_param = [p for p, _ in globals_]
        self.g_n = [p.numel for p, _ in globals_]
        self.g_isz = [p.dtype.itemsize for p, _ in globals_]
        self.g_store = [store_cast(p.dtype) for p, _ in globals_]
        self.g_conv = [None if a.dtype == rep_dtype(p.dtype) else rep_dtype(p.dtype)
                       for p, a in globals_]
        self.sh_buf = shared
        self.sh_isz = [s.dtype.itemsize for s in shared]
        self.sh = [np.zeros(nblocks * s.size, rep_dtype(s.dtype)) for s in shared]
        self.sh_off = [shared_offsets(block, nblocks, s.size) for s in shared]
        self.sh_writer = [np.full(nblocks * s.size, -1, np.int32) for s in shared] if check else []
        self.sh_reader = [np.full(nblocks * s.size, -1, np.int32) for s in shared] if check else []
        self.block_base = [shared_offsets(1, nblocks, s.size) for s in shared]
        # per shared buffer: (words, readers[, reading lanes]) recorded since the last fold
        self.sh_reads: list[list[tuple[np.ndarray, ...]]] = [[] for _ in shared]
        self.sh_dirty = [False] * len(shared)   # some word written since the last barrier
        self.sh_read = [False] * len(shared)    # some word read since the last barrier
        self.sh_pending = [0] * len(shared)     # words in sh_reads (folded past a limit)
        self._fold_scratch: dict = {}           # fold_reader_words' arrays, per shape
        self.epoch = 0                          # barriers executed by this wave
        self.loc_buf = locals_
        # one entry per element: a lane array or a scalar (registers; never mutated in place)
        self.loc: list[list[Any]] = [[rep_dtype(s.dtype).type(0)] * s.size for s in locals_]
        self.gr = self.gw = self.sr = self.sw = 0
        self.atomics = self.barriers = 0
        self.fl = [0] * n_flop_dtypes
        self.mfl: dict[str, int] = {}     # matrix flops per mma layout (mma_sim)
        self.bank_conflicts = 0           # extra shared wavefronts (mma_sim)
        self.pipe = None                  # cp.async groups, created on first use (mma_sim)
        self._lane_in_group: dict[int, np.ndarray] = {}
        self._shuffle_plans: dict[tuple, np.ndarray] = {}

    # ------------------------------------------------------------------ errors
    def _where(self, lane: int) -> tuple[tuple[int, int, int], int]:
        return ((int(self.bx[lane]), int(self.by[lane]), int(self.bz[lane])),
                int(self.tid[lane]))

    def _fail(self, kind: str, site: int, lane: int, what: str, *, buffer: str | None = None,
              index: int | None = None, hint: str | None = None) -> None:
        stmt, buf, _ = self.sites[site]
        block, thread = self._where(lane)
        buffer = buffer if buffer is not None else buf
        raise SimulationError(
            kind, f"kernel {self.name}, block {block}, thread {thread}: {what}; "
                  f"in `{stmt}`",
            kernel=self.name, buffer=buffer, block=block, thread=thread, index=index, hint=hint)

    @staticmethod
    def _first(bad: np.ndarray, act: np.ndarray | None) -> int | None:
        """First lane where `bad` holds among active lanes, or None."""
        if act is not None:
            bad = bad & act
        hits = np.flatnonzero(bad)
        return int(hits[0]) if hits.size else None

    # ------------------------------------------------------------------ masks and values
    def narrow(self, m: np.ndarray | None, c: Any) -> tuple[Any, int]:
        if _ndim(c) == 0:
            if c:
                return m, self.tally(m)
            return m, 0
        nm = c if m is None else (m & c)
        return nm, self.tally(nm)

    def narrow_not(self, m: np.ndarray | None, c: Any) -> tuple[Any, int]:
        return self.narrow(m, (not c) if _ndim(c) == 0 else ~c)

    @staticmethod
    def merge(m: np.ndarray | None, new: Any, old: Any) -> Any:
        return new if m is None else np.where(m, new, old)

    def lanes_int(self, x: Any) -> np.ndarray:
        if _ndim(x) == 0:
            return np.full(self.L, int(x), np.int64)
        return np.array(x, dtype=np.int64)

    def i32(self, x: Any, m: np.ndarray | None, site: int) -> Any:
        """Check (check=True) that an i32 result computed exactly in int64 fits, then wrap."""
        if _ndim(x) == 0:
            v = int(x)
            if I32_MIN <= v <= I32_MAX:
                return v
            if self.check and (m is None or m.any()):
                lane = 0 if m is None else int(np.flatnonzero(m)[0])
                self._overflow(site, lane, v)
            return (v - I32_MIN) % 2**32 + I32_MIN
        if x.size == 0 or (int_min(x) >= I32_MIN and int_max(x) <= I32_MAX):
            return x
        if self.check:
            lane = self._first((x < I32_MIN) | (x > I32_MAX), m)
            if lane is not None:
                self._overflow(site, lane, int(x[lane]))
        return ((x - I32_MIN) & 0xFFFFFFFF) + I32_MIN

    def _overflow(self, site: int, lane: int, value: int) -> None:
        _, buf, expr = self.sites[site]
        where = f" (index of buffer '{buf}')" if buf else ""
        self._fail("index_overflow", site, lane,
                   f"32-bit index arithmetic `{expr}` = {value} leaves the i32 range{where}",
                   index=value, hint="lower this kernel with index_dtype=i64 (64-bit indexing)")

    # ------------------------------------------------------------------ bounds
    def _bounds(self, idx: Any, size: int, act: np.ndarray | None, site: int, buf: str,
                space: str) -> Any:
        """Check active lanes' indices against [0, size); return indices safe to gather."""
        if type(idx) is np.ndarray and idx.ndim:   # the common case first (called a lot)
            if all_in_range(idx, size):
                return idx
            return self._out_of_range(idx, size, act, site, buf, space)
        elif _ndim(idx) == 0:
            i = int(idx)
            if 0 <= i < size:
                return i
            if self.check and (act is None or act.any()):
                lane = 0 if act is None else int(np.flatnonzero(act)[0])
                self._oob(site, lane, buf, space, i, size)
            return min(max(i, 0), size - 1)
        elif all_in_range(idx, size):   # (an ndarray subclass)
            return idx
        return self._out_of_range(idx, size, act, site, buf, space)

    def _out_of_range(self, idx: np.ndarray, size: int, act: np.ndarray | None, site: int,
                      buf: str, space: str) -> np.ndarray:
        """_bounds of a lane array with some index outside [0, size) (the masked tail of
        a loop, usually): report the first active lane's (check=True), else clip."""
        if self.check:
            if type(idx) is np.ndarray and idx.dtype is _I64 and idx.ndim == 1:
                # one pass: a negative index seen as uint64 is past any size
                bad = idx.view(np.uint64) >= size
                if act is not None:
                    bad &= act
                k = first_true(bad)
                lane = None if k < 0 else k
            else:
                lane = self._first((idx < 0) | (idx >= size), act)
            if lane is not None:
                self._oob(site, lane, buf, space, int(idx[lane]), size)
        return np.minimum(np.maximum(idx, 0), size - 1)   # np.clip's values, fewer calls

    def _store_bounds(self, i: Any, v: Any, size: int, site: int, buf: str,
                      space: str) -> tuple[Any, Any]:
        """Indices/values of the active lanes of a store; with check=False the lanes that
        fall outside [0, size) are dropped (hardware would write past the buffer)."""
        if self.check or _ndim(i) == 0:
            return self._bounds(i, size, None, site, buf, space), v
        if all_in_range(i, size):
            return i, v
        keep = (i >= 0) & (i < size)
        return i[keep], (v[keep] if _ndim(v) else v)

    def _oob(self, site: int, lane: int, buf: str, space: str, i: int, size: int) -> None:
        self._fail("out_of_bounds", site, lane,
                   f"{space} access {buf}[{i}] is out of bounds (size {size})", buffer=buf,
                   index=i, hint="check the mask of this access (e.g. i < n, not i <= n)")

    @staticmethod
    def _act(m: np.ndarray | None, extra: Any) -> Any:
        """Active lanes of an access: the statement mask and the access's own mask.
        Returns None (all), a bool array, or False (no lane)."""
        if extra is None:
            return m
        if _ndim(extra) == 0:
            return m if extra else False
        return extra if m is None else (m & extra)

    def _count(self, act: np.ndarray | None) -> int:
        return self.tally(act)

    def tally(self, act: np.ndarray | None) -> int:
        """Active lanes of `act` (None: all): an int, a Tally in a combined wave."""
        if act is None:
            return self.L
        if self.lane_part is None:
            return int(np.count_nonzero(act))
        return Tally(np.bincount(self.lane_part[act], minlength=self.nparts))

    def tally_at(self, lanes: np.ndarray, weights: np.ndarray | None = None) -> int:
        """len(lanes) (or the sum of `weights`, one per lane of `lanes`): the count of
        something each listed lane does (a warp's or warpgroup's first lane, a TMA's
        issuing lane); a Tally in a combined wave."""
        lanes = np.asarray(lanes, np.int64)
        if self.lane_part is None:
            return int(lanes.size) if weights is None else int(np.sum(weights))
        w = None if weights is None else np.asarray(weights, np.int64)
        return Tally(np.bincount(self.lane_part[lanes], weights=w,
                                 minlength=self.nparts).astype(np.int64))

    @staticmethod
    def _sel(x: Any, act: np.ndarray | None) -> Any:
        return x if act is None or _ndim(x) == 0 else x[act]

    # ------------------------------------------------------------------ for contract.Reduction
    def fail_oob(self, site: int, lane: int, buf: str, space: str, i: int, size: int) -> None:
        self._oob(site, lane, buf, space, i, size)

    def fail_overflow(self, site: int, lane: int, value: int) -> None:
        self._overflow(site, lane, value)

    def check_written(self, j: int, words: np.ndarray, lanes: np.ndarray, site: int) -> None:
        """Reads of shared `words` [k, len(lanes)] by `lanes`: race if another thread
        wrote one of them since the last barrier."""
        w = self.sh_writer[j][words]
        t = self.tid[lanes]
        bad = (w >= 0) & (w != t)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            col = k % words.shape[1]
            self._race(j, site, int(lanes[col]), int(words.reshape(-1)[k]),
                       f"reads a word that thread {int(w.reshape(-1)[k])} wrote since the last barrier")

    def record_reads(self, j: int, words: np.ndarray, readers: np.ndarray) -> None:
        """Shared `words` read by `readers` (broadcast against words; -2: several threads)."""
        self.sh_read[j] = True
        self.sh_reads[j].append((words, readers))
        self.sh_pending[j] += words.size
        if len(self.sh_reads[j]) > 256 or self.sh_pending[j] > READS_PENDING_LIMIT:
            self._fold_reads(j)

    # ------------------------------------------------------------------ global memory
    def ldg(self, s: int, idx: Any, lmask: Any, other: Any, m: Any, site: int) -> Any:
        act = m if lmask is None else self._act(m, lmask)
        if act is False:
            return other
        buf, size = self.g[s], self.g_n[s]
        self.gr += (self.L if act is None else self.tally(act)) * self.g_isz[s]
        if _lane_indices_in_range(idx, size):   # the common case without _bounds' calls
            v = buf.take(idx)
        elif _lane_array(idx):   # (not in range: _bounds would check it again)
            v = buf.take(self._out_of_range(idx, size, act, site, self.g_param[s].name,
                                            "global"))
        else:
            safe = self._bounds(idx, size, act, site, self.g_param[s].name, "global")
            v = buf[safe] if _ndim(safe) == 0 else buf.take(safe)
        conv = self.g_conv[s]
        if conv is not None:
            v = v.astype(conv)
        if lmask is not None and _ndim(lmask) > 0:
            v = np.where(act, v, other)
        return v

    def stg(self, s: int, idx: Any, val: Any, smask: Any, m: Any, site: int) -> None:
        act = self._act(m, smask)
        if act is False:
            return
        p, buf = self.g_param[s], self.g[s]
        n = self._count(act)
        if n == 0:
            return
        i, v = self._sel(idx, act), self._sel(val, act)
        i, v = self._store_bounds(i, v, self.g_n[s], site, p.name, "global")
        v = self.g_store[s](v)
        if _ndim(i) == 0 and _ndim(v) > 0:
            v = v.reshape(-1)[-1]  # every lane stores to one word: one of them wins
        buf[i] = v
        self.g_version[s] += 1
        if self.written is not None:
            self.written[s].append(np.array(i, np.int64).reshape(-1))
        self.gw += n * p.dtype.itemsize

    def atomic_g(self, s: int, idx: Any, val: Any, smask: Any, m: Any, site: int) -> None:
        act = self._act(m, smask)
        if act is False:
            return
        p, buf = self.g_param[s], self.g[s]
        n = self._count(act)
        if n == 0:
            return
        i = np.broadcast_to(self._sel(idx, act), (n,))
        v = np.broadcast_to(cast(self._sel(val, act), p.dtype), (n,))
        i = self._bounds(np.asarray(i), self.g_n[s], None, site, p.name, "global")
        np.add.at(buf, i, v)  # one rounding to the buffer dtype per add, as hardware atomics
        self.g_version[s] += 1
        if self.written is not None:
            self.written[s].append(np.array(i, np.int64).reshape(-1))
        self.atomics += n
        self.gr += n * p.dtype.itemsize
        self.gw += n * p.dtype.itemsize

    # ------------------------------------------------------------------ shared memory
    def lds(self, j: int, idx: Any, lmask: Any, other: Any, m: Any, site: int) -> Any:
        act = m if lmask is None else self._act(m, lmask)
        if act is False:
            return other
        sb = self.sh_buf[j]
        if _lane_indices_in_range(idx, sb.size):
            safe = idx
        elif _lane_array(idx):   # (not in range: _bounds would check it again)
            safe = self._out_of_range(idx, sb.size, act, site, sb.name, "shared")
        else:
            safe = self._bounds(idx, sb.size, act, site, sb.name, "shared")
        n = self.L if act is None else self.tally(act)
        self.sr += n * self.sh_isz[j]
        if act is None and _ndim(safe) == 0:
            # every thread of every block reads one word: gather per block, then spread
            words = self.block_base[j] + safe
            v = np.repeat(self.sh[j][words], self.T)
            if self.check:
                self._race_read_uniform(j, words, site)
            return v
        flat = self.sh_off[j] + safe
        v = self.sh[j].take(flat)
        if self.check and n:
            self._race_read(j, flat, act, site)
            if self.pipe is not None:  # a word still in flight from a cp.async
                self.pipe.check_read(self, j, flat, act, site)
        if lmask is not None and _ndim(lmask) > 0:
            v = np.where(act, v, other)
        return v

    def sts(self, j: int, idx: Any, val: Any, smask: Any, m: Any, site: int) -> None:
        act = self._act(m, smask)
        if act is False:
            return
        n = self._count(act)
        if n == 0:
            return
        sb = self.sh_buf[j]
        i, v, off = self._sel(idx, act), self._sel(val, act), self._sel(self.sh_off[j], act)
        if not self.check and _ndim(i) > 0 and not all_in_range(i, sb.size):
            keep = (i >= 0) & (i < sb.size)   # unchecked: drop the stray lanes' writes
            i, off, v = i[keep], off[keep], (v[keep] if _ndim(v) else v)
        i = self._bounds(i, sb.size, None, site, sb.name, "shared")
        flat = off + i
        if self.check:
            self._race_write(j, flat, act, site)
            if getattr(self, "hopper", None) is not None:   # generic-proxy write (wgmma_sim)
                from .wgmma_sim import note_generic_write
                note_generic_write(self, j, flat,
                                   self.lane_id if act is None else self.lane_id[act])
        self.sh[j][flat] = v
        self.sh_version[j] += 1
        self.sw += n * sb.dtype.itemsize

    def atomic_s(self, j: int, idx: Any, val: Any, smask: Any, m: Any, site: int) -> None:
        act = self._act(m, smask)
        if act is False:
            return
        n = self._count(act)
        if n == 0:
            return
        sb = self.sh_buf[j]
        i = self._bounds(self._sel(idx, act), sb.size, None, site, sb.name, "shared")
        flat = np.broadcast_to(self._sel(self.sh_off[j], act) + i, (n,))
        v = np.broadcast_to(self._sel(val, act), (n,))
        self.sh_version[j] += 1
        if sb.dtype.bits < 32 and sb.dtype.is_float:
            for f, x in zip(flat.tolist(), v.tolist(), strict=False):  # round after each add
                self.sh[j][f] = to_rep(self.sh[j][f] + x, sb.dtype)
        else:
            np.add.at(self.sh[j], flat, v)
        self.atomics += n
        self.sr += n * sb.dtype.itemsize
        self.sw += n * sb.dtype.itemsize

    def _race_read(self, j: int, flat: np.ndarray, act: Any, site: int,
                   per_lane: int = 1) -> None:
        """`flat`: the words each lane reads ([L] or, for vector reads, [L, per_lane])."""
        if self.sh_dirty[j]:
            self._check_read_written(j, flat, act, site, per_lane)
        # recorded with the lanes' mask, applied only if a write folds them in (most
        # reads are dropped unfolded at the next barrier)
        t = self.tid if per_lane == 1 else self.tid[:, None]
        self.sh_read[j] = True
        reads = self.sh_reads[j]
        reads.append((flat, t) if act is None else (flat, t, act))
        self.sh_pending[j] += flat.size
        if len(reads) > 256 or self.sh_pending[j] > READS_PENDING_LIMIT:
            self._fold_reads(j)

    def _check_read_written(self, j: int, flat: np.ndarray, act: Any, site: int,
                            per_lane: int) -> None:
        """Race: an active lane reads a word another thread wrote since the last barrier."""
        f = flat if act is None else flat[act]
        t = self.tid if act is None else self.tid[act]
        if per_lane > 1:
            f, t = f.reshape(-1), np.repeat(t, per_lane)
        w = self.sh_writer[j].take(f)
        k = first_true((w >= 0) & (w != t))
        if k >= 0:
            li = k // per_lane
            lane = li if act is None else int(np.flatnonzero(act)[li])
            self._race(j, site, lane, int(f[k]),
                       f"reads a word that thread {int(w[k])} wrote since the last barrier")

    def _race_read_uniform(self, j: int, words: np.ndarray, site: int) -> None:
        """All T threads of each block read words[b] (T >= 2 means several readers)."""
        if self.sh_dirty[j]:
            w = self.sh_writer[j][words]
            bad = (w >= 0) if self.T > 1 else np.zeros(len(words), bool)
            if bad.any():
                b = int(np.flatnonzero(bad)[0])
                reader = 0 if int(w[b]) != 0 else 1
                self._race(j, site, b * self.T + reader, int(words[b]),
                           f"reads a word that thread {int(w[b])} wrote since the last barrier")
        self.sh_read[j] = True
        self.sh_reads[j].append((words, np.int32(-2 if self.T > 1 else 0)))
        if len(self.sh_reads[j]) > 256:
            self._fold_reads(j)

    def _pending_reads(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """The recorded reads of shared buffer j as one pair of flat arrays (word, reader)."""
        words, readers = [], []
        for f, t, *act in self.sh_reads[j]:
            t = np.broadcast_to(np.asarray(t, np.int32), f.shape)
            if act:   # the reading lanes (rows) of a masked read
                f, t = f[act[0]], t[act[0]]
            words.append(f.reshape(-1))
            readers.append(t.reshape(-1))
        if len(words) == 1:
            return words[0], readers[0]
        return np.concatenate(words), np.concatenate(readers)

    def _fold_reads(self, j: int) -> None:
        """Fold the recorded reads into sh_reader in one pass: a word keeps its one reader
        thread, else becomes -2 (several), exactly as folding the reads one at a time."""
        self.sh_pending[j] = 0
        if not self.sh_reads[j]:
            return
        f, t = self._pending_reads(j)
        self.sh_reads[j].clear()
        fold_reader_words(self.sh_reader[j], f, t, self._fold_scratch)

    def _forget_reads_of(self, j: int, reached: np.ndarray) -> None:
        """Drop the recorded reads of the blocks that reached a barrier (their reader
        words are reset anyway); the other blocks' reads stay recorded, unfolded."""
        if not self.sh_reads[j]:
            return
        f, t = self._pending_reads(j)
        keep = ~reached[f // self.sh_buf[j].size]
        f, t = f[keep], t[keep]
        self.sh_reads[j][:] = [(f, t)] if f.size else []
        self.sh_pending[j] = int(f.size)

    def _race_write(self, j: int, flat: Any, act: Any, site: int, per_lane: int = 1) -> None:
        """`flat`: the words the active lanes write ([n] or [n, per_lane] for vectors)."""
        f = np.broadcast_to(flat, (self._count(act),)) if _ndim(flat) == 0 else flat
        t = self.tid if act is None else self.tid[act]
        if per_lane > 1:
            f, t = f.reshape(-1), np.repeat(t, per_lane)

        def lane_of(k: int) -> int:   # (only for a report: flatnonzero is not free)
            k //= per_lane
            return k if act is None else int(np.flatnonzero(act)[k])

        if self.sh_read[j]:   # otherwise every reader entry is -1
            self._fold_reads(j)
            rd = self.sh_reader[j].take(f)
            k = first_true((rd == -2) | ((rd >= 0) & (rd != t)))
            if k >= 0:
                who = "other threads" if rd[k] == -2 else f"thread {int(rd[k])}"
                self._race(j, site, lane_of(k), int(f[k]),
                           f"overwrites a word that {who} read since the last barrier")
        writer = self.sh_writer[j]
        if self.sh_dirty[j]:  # otherwise every writer entry is -1
            w = writer.take(f)
            k = first_true((w >= 0) & (w != t))
            if k >= 0:
                self._race(j, site, lane_of(k), int(f[k]),
                           f"writes a word that thread {int(w[k])} wrote since the last barrier")
        writer[f] = t
        again = writer.take(f)
        k = first_true(again != t)
        if k >= 0:
            self._race(j, site, lane_of(k), int(f[k]),
                       f"writes the same word as thread {int(again[k])} in one statement")
        self.sh_dirty[j] = True

    def _race(self, j: int, site: int, lane: int, flat: int, what: str) -> None:
        sb = self.sh_buf[j]
        i = flat % sb.size
        self._fail("race", site, lane, f"shared {sb.name}[{i}]: thread {int(self.tid[lane])} "
                   f"{what}", buffer=sb.name, index=i,
                   hint="add a Barrier between the conflicting accesses")

    # ------------------------------------------------------------------ local memory
    def ldl(self, j: int, idx: Any, lmask: Any, other: Any, m: Any, site: int) -> Any:
        rows = self.loc[j]
        if lmask is None and type(idx) in _INT_TYPES and 0 <= idx < len(rows):
            return rows[idx]   # the common case: a constant or loop-counter index
        act = self._act(m, lmask)
        if act is False:
            return other
        lb, rows = self.loc_buf[j], self.loc[j]
        safe = self._bounds(idx, lb.size, act, site, lb.name, "local")
        if _ndim(safe) == 0:
            v = rows[safe]
        else:  # a per-lane index (local memory on hardware): gather across elements
            v = np.stack([np.broadcast_to(r, (self.L,)) for r in rows])[safe, self.lane]
        if lmask is not None and _ndim(lmask) > 0:
            v = np.where(act, v, other)
        return v

    def stl(self, j: int, idx: Any, val: Any, smask: Any, m: Any, site: int) -> None:
        rows = self.loc[j]
        if smask is None and type(idx) in _INT_TYPES and 0 <= idx < len(rows):
            rows[idx] = val if m is None else np.where(m, val, rows[idx])
            return   # the common case: a constant or loop-counter index
        act = self._act(m, smask)
        if act is False:
            return
        lb, rows = self.loc_buf[j], self.loc[j]
        i = self._bounds(idx, lb.size, act, site, lb.name, "local")
        if _ndim(i) == 0:
            rows[i] = val if act is None else np.where(act, val, rows[i])
            return
        for r in np.unique(i if act is None else i[act]).tolist():
            hit = (i == r) if act is None else ((i == r) & act)
            rows[r] = np.where(hit, val, rows[r])

    # ------------------------------------------------------------------ warp and block
    def shfl(self, x: Any, mode: str, off: Any, width: int, m: Any, site: int) -> Any:
        L = self.L
        xa = np.broadcast_to(x, (L,)) if _ndim(x) == 0 else x
        key = (mode, int(off), width) if _ndim(off) == 0 else None
        plan = self._shuffle_plans.get(key) if key is not None else None
        if plan is not None and m is None:
            return xa[plan]
        lw = self._lane_in_group.get(width)
        if lw is None:
            lw = self._lane_in_group[width] = self.tid & (width - 1)
        src_w = _SHUFFLE_SOURCES[mode](lw, off, width)
        src_t = self.tid - lw + src_w
        src = self.lane - lw + src_w
        missing = src_t >= self.T
        if key is not None and not missing.any():
            self._shuffle_plans[key] = src  # a full-warp shuffle with this offset: reuse
        if self.check:
            bad = missing if m is None else (missing | ~m[np.minimum(src, L - 1)])
            lane = self._first(bad, m)
            if lane is not None:
                self._fail("bad_shuffle", site, lane,
                           f"shuffle ({mode}, width {width}) reads thread {int(src_t[lane])}, "
                           "which is inactive or not in the block",
                           hint="shuffle only where every lane of the group is active")
        if missing.any():
            src = np.where(missing, self.lane, src)
        return xa[src]

    def barrier(self, m: Any, site: int) -> None:
        if m is None:
            self.barriers += self.B
            reached = None
        else:
            per = m.reshape(self.B, self.T).sum(axis=1)
            split = (per != 0) & (per != self.T)
            if split.any():
                b = int(np.flatnonzero(split)[0])
                row = m.reshape(self.B, self.T)[b]
                missing, there = int(np.flatnonzero(~row)[0]), int(np.flatnonzero(row)[0])
                self._fail("divergent_barrier", site, b * self.T + missing,
                           f"barrier reached by {int(per[b])} of {self.T} threads "
                           f"(thread {there} waits, thread {missing} never arrives)",
                           hint="move the Barrier out of the thread-dependent branch")
            reached = per == self.T
            self.barriers += self.tally_at(np.flatnonzero(reached) * self.T)
        self.epoch += 1   # contract.Reduction records a repeated read once per epoch
        if self.check:
            if reached is not None and reached.all():
                reached = None   # every block passed: the same reset as an unmasked barrier
            for j, sb in enumerate(self.sh_buf):
                if reached is None:
                    self.sh_reads[j].clear()
                    self.sh_pending[j] = 0
                    if self.sh_dirty[j]:
                        self.sh_writer[j].fill(-1)
                    if self.sh_read[j]:
                        self.sh_reader[j].fill(-1)
                    self.sh_dirty[j] = self.sh_read[j] = False
                else:
                    self._forget_reads_of(j, reached)
                    wr = self.sh_writer[j].reshape(self.B, sb.size)
                    rd = self.sh_reader[j].reshape(self.B, sb.size)
                    wr[reached] = -1
                    rd[reached] = -1
                    # the flags stay set only while a block that did not reach this
                    # barrier (it left the loop earlier) still has words written or
                    # read since its last one: then every later access checks them
                    rest = ~reached
                    if self.sh_dirty[j]:
                        self.sh_dirty[j] = bool((wr[rest] >= 0).any())
                    if self.sh_read[j]:
                        self.sh_read[j] = bool(self.sh_reads[j]) or bool((rd[rest] != -1).any())


_I32_LO, _I32_HI = np.iinfo(np.int32).max, np.iinfo(np.int32).min   # "no reader yet"


def fold_reader_words(reader: np.ndarray, words: np.ndarray, readers: np.ndarray,
                      scratch: dict | None = None) -> None:
    """reader[w] becomes the one thread that read word w (its old entry, -1 for none,
    and every readers[k] with words[k] == w), or -2 where those are several. `scratch`
    (a wave's): keeps the per-word min/max arrays between folds, put back to their
    sentinels at the words hit (two buffer-sized fills per fold showed in profiles)."""
    if not words.size:
        return
    lo, hi = _fold_arrays(reader.shape, scratch)
    np.minimum.at(lo, words, readers)
    np.maximum.at(hi, words, readers)
    hit = np.flatnonzero(hi != _I32_HI)
    lo_hit, hi_hit, old = lo[hit], hi[hit], reader[hit]
    if scratch is not None:
        lo[hit], hi[hit] = _I32_LO, _I32_HI
    one = (lo_hit == hi_hit) & ((old == -1) | (old == lo_hit))
    reader[hit] = np.where(one, lo_hit, np.int32(-2))


def _fold_arrays(shape: tuple, scratch: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) int32 arrays of `shape` holding the sentinels: new, or a wave's kept pair."""
    got = None if scratch is None else scratch.get(shape)
    if got is None:
        got = (np.full(shape, _I32_LO, np.int32), np.full(shape, _I32_HI, np.int32))
        if scratch is not None:
            scratch[shape] = got
    return got


def div_by_const(a: Any, c: int) -> Any:
    """C integer division a / c for a positive constant c (truncates toward zero)."""
    if _ndim(a) == 0:
        a = int(a)
        return a // c if a >= 0 else -((-a) // c)
    if a.size and int_min(a) < 0:
        return np.where(a < 0, -((-a) // c), a // c)
    return a >> (c.bit_length() - 1) if c & (c - 1) == 0 else a // c


def rem_by_const(a: Any, c: int) -> Any:
    """C remainder a % c for a positive constant c (sign of the dividend)."""
    if _ndim(a) == 0:
        a = int(a)
        return a % c if a >= 0 else -((-a) % c)
    if a.size and int_min(a) < 0:
        return np.where(a < 0, -((-a) % c), a % c)
    if c & (c - 1) == 0:
        return a & (c - 1)
    if a.size < REM_BY_DIVISION_MIN:
        return a % c
    # a - (a // c) * c: NumPy divides int64 by a scalar with libdivide but has no such
    # path for %, which was ~3x slower on large lane arrays (exact: 0 <= a, q * c <= a)
    q = a // c
    q *= c
    return np.subtract(a, q, out=q)


def _src_xor(lw: np.ndarray, off: Any, width: int) -> np.ndarray:
    s = lw ^ off
    return np.where(s < width, s, lw)


def _src_down(lw: np.ndarray, off: Any, width: int) -> np.ndarray:
    s = lw + off
    return np.where((s < width) & (s >= 0), s, lw)


def _src_idx(lw: np.ndarray, off: Any, width: int) -> np.ndarray:
    # As __shfl_sync(mask, x, src, width): the source lane is src modulo width.
    return np.broadcast_to(np.mod(off, width), lw.shape)


# Shuffle mode -> source lane within the group; add a mode here and in ir.SHUFFLE_MODES.
_SHUFFLE_SOURCES: dict[str, Callable[[np.ndarray, Any, int], np.ndarray]] = {
    "xor": _src_xor, "down": _src_down, "idx": _src_idx,
}
