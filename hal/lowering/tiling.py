"""Block, grid and tile sizes, derived from the DeviceSpec only (no per-vendor constants).

Every size here is a function of warp_size, max_threads_per_block,
max_threads_per_unit, compute_units, shared_mem_per_block and
max_registers_per_thread, so a new device spec gets sensible kernels for free.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

from hal.devices.spec import DeviceSpec

# Work per thread the heuristics aim for: a thread should stride a row at least
# this many times before a block is worth its launch and reduction tree.
ELEMS_PER_THREAD = 4


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def round_up(a: int, b: int) -> int:
    return cdiv(a, b) * b


def elementwise_block(spec: DeviceSpec) -> int:
    """Threads per block for one-thread-per-element kernels: 8 warps, capped by the spec."""
    return min(spec.max_threads_per_block, 8 * spec.warp_size)


def elementwise_grid(numel: int, block: int, spec: DeviceSpec) -> int:
    """Enough blocks to fill every unit a few times over; a grid-stride loop covers the rest."""
    resident = spec.compute_units * max(1, spec.max_threads_per_unit // block)
    return max(1, min(cdiv(numel, block), 4 * resident))


def row_block(row_len: int, spec: DeviceSpec, options=None) -> int:
    """One block per row: about ELEMS_PER_THREAD elements per thread, whole warps.
    (`options`: hal.lowering.options.LoweringOptions, for a self-test fault.)"""
    want = round_up(max(1, cdiv(row_len, ELEMS_PER_THREAD)), spec.warp_size)
    if options is not None and options.fault("row_block_partial_warp"):  # self-test hook
        want -= spec.warp_size // 2
    return max(spec.warp_size, min(spec.max_threads_per_block, want))


def auto_split(rows: int, row_len: int, block: int, spec: DeviceSpec) -> int:
    """Blocks per row when there are too few rows to keep every unit busy."""
    if rows >= spec.compute_units or row_len < 4 * ELEMS_PER_THREAD * block:
        return 1
    k = min(cdiv(2 * spec.compute_units, rows), cdiv(row_len, ELEMS_PER_THREAD * block),
            spec.max_threads_per_block)
    return max(1, k)


@dataclass(frozen=True)
class MatmulTiles:
    bm: int
    bn: int
    bk: int
    tm: int
    tn: int

    @property
    def threads(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)

    def as_dict(self) -> dict[str, int]:
        return asdict(self) | {"threads": self.threads}


def matmul_registers(t: MatmulTiles, operands: int = 1) -> int:
    """Estimated 32-bit registers per thread: accumulators, fragments, addresses.
    `operands` B operands sharing one A (a dual GEMM) keep one accumulator
    micro-tile and one B fragment each."""
    return operands * t.tm * t.tn + t.tm + operands * t.tn + 16


def matmul_shared_bytes(t: MatmulTiles, acc_bytes: int, operands: int = 1) -> int:
    """Shared bytes of the A tile and the `operands` B tiles of one K step."""
    return (t.bm + operands * t.bn) * t.bk * acc_bytes


@functools.lru_cache(maxsize=64)
def _tile_slack(acc_bytes: int, spec: DeviceSpec,
                operands: int) -> tuple[tuple[MatmulTiles, int], ...]:
    """Every tile within the spec's thread and shared-memory limits, in search order, with
    the registers per thread it leaves for a fused prologue and epilogue (the `reserve`
    a tile admits: spec.registers_per_thread_at(threads) - matmul_registers)."""
    def fits(t: MatmulTiles) -> bool:
        return (t.threads % spec.warp_size == 0 and t.threads <= spec.max_threads_per_block
                and matmul_shared_bytes(t, acc_bytes, operands) <= spec.shared_mem_per_block)

    return tuple((t, spec.registers_per_thread_at(t.threads) - matmul_registers(t, operands))
                 for bm in (128, 64, 32, 16, 8) for bn in (128, 64, 32, 16, 8)
                 for bk in (32, 16, 8) for tm in (8, 4, 2, 1) for tn in (8, 4, 2, 1)
                 if tm <= bm and tn <= bn and fits(t := MatmulTiles(bm, bn, bk, tm, tn)))


@functools.lru_cache(maxsize=256)
def _tile_candidates(acc_bytes: int, spec: DeviceSpec, operands: int,
                     reserve: int) -> tuple[MatmulTiles, ...]:
    """Every tile that fits the spec (matmul_tiles' constraints), independent of the shape."""
    return tuple(t for t, slack in _tile_slack(acc_bytes, spec, operands) if reserve <= slack)


@functools.lru_cache(maxsize=256)
def _tile_panels(acc_bytes: int, spec: DeviceSpec, operands: int, reserve: int,
                 k_cap: int) -> tuple[tuple[int, int, tuple, MatmulTiles], ...]:
    """The candidates by block tile (BM, BN), in search order: (bm, bn, key, tile) with the
    tile whose shape-free score part (matmul_tiles' score after busy and waste) is highest,
    the first such in search order. `k_cap` = min(round_up(k, 8), 32) (BK <= 32)."""
    best: dict[tuple[int, int], tuple[tuple, MatmulTiles]] = {}
    for t in _tile_candidates(acc_bytes, spec, operands, reserve):
        key = (t.bm * t.bn, -abs(t.bm.bit_length() - t.bn.bit_length()),
               min(t.threads, 4 * spec.warp_size), t.tm * t.tn, -abs(t.tm - t.tn),
               min(t.bk, k_cap))
        old = best.get((t.bm, t.bn))
        if old is None or key > old[0]:
            best[(t.bm, t.bn)] = (key, t)
    return tuple((bm, bn, key, t) for (bm, bn), (key, t) in best.items())


@functools.lru_cache(maxsize=1024)  # pure in its arguments (a model repeats its shapes)
def matmul_tiles(m: int, n: int, k: int, acc_bytes: int, spec: DeviceSpec,
                 operands: int = 1, reserve: int = 0) -> MatmulTiles:
    """The largest block tile that fits the spec, shrunk while the grid underfills the device.

    Constraints: (BM + operands * BN) * BK * acc_bytes <= shared_mem_per_block; threads
    a whole number of warps and <= max_threads_per_block; register estimate within what
    the register file leaves each thread of such a block (spec.registers_per_thread_at).
    `operands` > 1: that many contractions share the A tile (a dual GEMM). `reserve`
    registers per thread are kept for the fused prologue and epilogue (matmul.fused_reserve),
    so a device with few registers gets smaller micro-tiles rather than spills.

    The score of a tile, compared as a tuple (the first highest in search order wins):
    (busy, -waste, BM*BN, -|log BM - log BN|, min(threads, 4 warps), TM*TN, -|TM - TN|,
    min(BK, K rounded up to 8)). A block for every fourth unit is enough to call the
    device busy (each block is several warps); past that, bigger and squarer tiles (more
    reuse per shared byte) win, then a few warps per block, then work per thread, then
    deeper K steps. Only busy and waste depend on M and N, and only through (BM, BN): the
    search scores the best tile of each (BM, BN) panel (_tile_panels), 25 at most, and
    picks exactly the tile the score over every candidate picks."""
    if not _tile_candidates(acc_bytes, spec, operands, reserve):
        raise ValueError(f"no matmul tile fits device {spec.name}")
    best_key, best = None, None
    for bm, bn, rest, t in _tile_panels(acc_bytes, spec, operands, reserve,
                                        min(round_up(k, 8), 32)):
        blocks = cdiv(m, bm) * cdiv(n, bn)
        waste = (round_up(m, bm) * round_up(n, bn)) / max(1, m * n)
        key = (blocks * 4 >= spec.compute_units, -round(waste, 1), *rest)
        if best_key is None or key > best_key:
            best_key, best = key, t
    return best


def blocks_per_unit(threads: int, registers: int, shared_bytes: int, spec: DeviceSpec) -> int:
    """Blocks of this shape resident on one unit at once (occupancy): limited by threads,
    the register file, shared memory and the spec's block slots; at least one."""
    limits = [spec.max_threads_per_unit // max(1, threads),
              spec.registers_per_unit // max(1, threads * registers),
              spec.max_blocks_per_unit]
    if shared_bytes:
        limits.append(spec.shared_mem_per_unit // shared_bytes)
    return max(1, min(limits))


def matmul_in_flight(t: MatmulTiles, acc_bytes: int, spec: DeviceSpec, operands: int = 1,
                     reserve: int = 0) -> int:
    """Tiles of a tiled matmul running at once on the whole device (one wave)."""
    regs = matmul_registers(t, operands) + reserve
    return spec.compute_units * blocks_per_unit(
        t.threads, regs, matmul_shared_bytes(t, acc_bytes, operands), spec)


def group_rows(row_panels: int, bm: int, k: int, itemsize: int, spec: DeviceSpec,
               in_flight: int | None = None) -> int:
    """Row panels of A per group in the grouped raster order of tiled matmuls.

    `in_flight` tiles run at once (a wave: matmul_in_flight; compute_units when not
    given); they walk K together, so each A and B panel a wave touches comes from DRAM
    once per wave and from L2 for the wave's other tiles. A group of g row panels puts g
    A panels and about in_flight / g B panels in each wave. When all of A plus one wave's
    B panels fit in L2, A stays resident and B streams once: g is every row panel.
    Otherwise a wave's unique panels, g + in_flight / g (square tiles), are fewest at
    g ~ sqrt(in_flight): the power of two nearest to it, at most `row_panels`.
    fusion.cost prices the same order (_matmul_rereads)."""
    panel = max(1, bm * k * itemsize)
    units = max(1, in_flight or spec.compute_units)
    if row_panels * panel + cdiv(units, max(1, row_panels)) * panel <= spec.l2_bytes:
        return max(1, row_panels)
    g = 1
    while g * 2 <= row_panels and (g * 2) ** 2 <= 2 * units:  # log2 rounded: 2g^2 vs units
        g *= 2
    return g


def transpose_tile(itemsize: int, spec: DeviceSpec) -> tuple[int, int]:
    """(T, rows): a T x T tile (T = warp_size, +1 padding column) moved by T x rows threads."""
    t = spec.warp_size
    while t > 1 and t * (t + 1) * itemsize > spec.shared_mem_per_block:
        t //= 2
    rows = max(1, min(t, spec.max_threads_per_block // t))
    return t, rows
