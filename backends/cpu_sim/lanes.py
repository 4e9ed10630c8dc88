"""The lane machine: one wave of blocks run as NumPy arrays over its lanes (`Wave`).

A wave is `B` whole blocks of `T` threads run together as `L = B*T` lanes; lane
`l` is thread `l % T` of the wave's block `l // T` (so a warp is `warp_size`
consecutive lanes of one block; geometry.py). Every per-thread value is a NumPy array
over the lanes or, when the generated code knows it is the same for every lane, a NumPy
or Python scalar (values.py). Statements run under an active mask: `None` means all
lanes.

`Wave` owns the wave's state (its memories, race state and counters), its masks and
lane counts (`narrow`, `tally`), i32 overflow checks, warp shuffles and the faults that
name kernel, block, thread and statement. The methods the generated code calls on
memory come from one module per concept:
- global_memory.py: ldg, stg, atomic_g on the caller's arrays;
- shared_memory.py: lds, sts, atomic_s on [B * size] block-major arrays;
- local_memory.py: ldl, stl on per-thread arrays held as registers;
- races.py: barriers and the shared-memory race tracking they delimit;
- bounds.py: the index checks all three spaces share.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from hal.kernel.ir import BufferParam, LocalBuffer, SharedBuffer

from .bounds import Bounds
from .checks import SimulationError

# Names defined here before the split into modules, still imported from lanes by the
# rest of the simulator and the tests.
from .geometry import (  # noqa: F401
    BLOCK_COORDINATES_KEPT,
    SHARED_GEOMETRY_LANES,
    _coordinates,
    block_coordinates,
    coordinates_of_blocks,
    lane_geometry,
    shared_offsets,
)
from .global_memory import GlobalMemory
from .local_memory import LocalMemory
from .races import READS_PENDING_LIMIT, SharedRaces, fold_reader_words  # noqa: F401
from .scans import all_in_range, first_true, int_max, int_min  # noqa: F401
from .shared_memory import SharedMemory
from .tally import Tally
from .values import (  # noqa: F401
    I32_MAX,
    I32_MIN,
    REM_BY_DIVISION_MIN,
    div_by_const,
    fast_to_rep,
    ndim,
    rem_by_const,
    rep_dtype,
    store_cast,
    to_rep,
)


class Wave(GlobalMemory, SharedMemory, LocalMemory, SharedRaces, Bounds):
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
            if block_ids is None else coordinates_of_blocks(grid, block, block_ids)
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
        # per shared buffer: the words whose sh_writer entry an atomic add made (races.py;
        # made at the buffer's first checked atomic)
        self.sh_atomic: list[np.ndarray | None] = [None] * len(shared)
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
        if ndim(c) == 0:
            if c:
                return m, self.tally(m)
            return m, 0
        nm = c if m is None else (m & c)
        return nm, self.tally(nm)

    def narrow_not(self, m: np.ndarray | None, c: Any) -> tuple[Any, int]:
        return self.narrow(m, (not c) if ndim(c) == 0 else ~c)

    @staticmethod
    def merge(m: np.ndarray | None, new: Any, old: Any) -> Any:
        return new if m is None else np.where(m, new, old)

    def lanes_int(self, x: Any) -> np.ndarray:
        if ndim(x) == 0:
            return np.full(self.L, int(x), np.int64)
        return np.array(x, dtype=np.int64)

    def i32(self, x: Any, m: np.ndarray | None, site: int) -> Any:
        """Check (check=True) that an i32 result computed exactly in int64 fits, then wrap."""
        if ndim(x) == 0:
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

    @staticmethod
    def _act(m: np.ndarray | None, extra: Any) -> Any:
        """Active lanes of an access: the statement mask and the access's own mask.
        Returns None (all), a bool array, or False (no lane)."""
        if extra is None:
            return m
        if ndim(extra) == 0:
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
        return x if act is None or ndim(x) == 0 else x[act]

    def fail_overflow(self, site: int, lane: int, value: int) -> None:
        """An index_overflow fault (for contract.Reduction)."""
        self._overflow(site, lane, value)

    # ------------------------------------------------------------------ warp shuffles
    def shfl(self, x: Any, mode: str, off: Any, width: int, m: Any, site: int) -> Any:
        L = self.L
        xa = np.broadcast_to(x, (L,)) if ndim(x) == 0 else x
        key = (mode, int(off), width) if ndim(off) == 0 else None
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
