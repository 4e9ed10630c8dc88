"""Block, warp and pipeline tiles of matrix-unit matmuls (`MmaTiles`, `mma_tiles`).

Everything comes from the DeviceSpec and the matrix instruction's shape
(hal.kernel.mma): a block computes BM x BN of the result with WM x WN warps, each
warp MI x NI instruction tiles (m x n each); a K step of BK is staged in shared
memory, `stages` deep when the spec has `async_copy` (cp.async multi-stage pipeline),
one stage plus a register prefetch otherwise. Shared tiles are padded by PAD elements
(16 bytes) per row, so the 8 rows an ldmatrix phase reads, and the rows of a fragment
load, fall in different banks. Read by the matrix lowering (hal.lowering.matmul_mma)
and by the cost model.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

from hal.devices.spec import DeviceSpec, MatrixInstruction
from hal.kernel.mma import get_layout
from hal.lowering.tiling import blocks_per_unit, cdiv, round_up

PAD_BYTES = 16


@dataclass(frozen=True)
class MmaTiles:
    bm: int
    bn: int
    bk: int
    wm: int            # warps along M
    wn: int            # warps along N
    stages: int        # shared stages (1: register prefetch)
    layout: str        # hal.kernel.mma layout name
    itemsize: int      # bytes of an operand element
    operands: int = 1  # B operands sharing the A tile (a dual GEMM)

    @classmethod
    def from_dict(cls, d: dict) -> MmaTiles:
        """The tiles from a kernel's schedule record (`as_dict`)."""
        return cls(**{f: d[f] for f in ("bm", "bn", "bk", "wm", "wn", "stages", "layout",
                                         "itemsize", "operands")})

    @property
    def lanes(self) -> int:
        return get_layout(self.layout).lanes

    @property
    def threads(self) -> int:
        return self.wm * self.wn * self.lanes

    @property
    def mi(self) -> int:
        return self.bm // self.wm // get_layout(self.layout).m

    @property
    def ni(self) -> int:
        return self.bn // self.wn // get_layout(self.layout).n

    @property
    def pad(self) -> int:
        return PAD_BYTES // self.itemsize

    @property
    def vec(self) -> int:
        """Elements per 128-bit vector copy."""
        return 16 // self.itemsize

    def a_stage(self) -> int:
        return self.bm * (self.bk + self.pad)

    def b_stage(self, n_major: bool) -> int:
        return self.bn * (self.bk + self.pad) if n_major else self.bk * (self.bn + self.pad)

    def as_dict(self) -> dict:
        return asdict(self) | {"threads": self.threads, "mi": self.mi, "ni": self.ni}


ADDRESS_REGISTERS = 3    # per copied chunk: a 64-bit global address and a shared offset


def mma_shared_bytes(t: MmaTiles) -> int:
    """Shared bytes of all stages (the larger B layout, so either orientation fits)."""
    return t.stages * (t.a_stage() + t.operands * max(t.b_stage(True), t.b_stage(False))) \
        * t.itemsize


def mma_registers(t: MmaTiles) -> int:
    """32-bit registers per thread: accumulators, one k-step of fragments, the register
    prefetch of a 1-stage pipeline, and ADDRESS_REGISTERS per 16-byte chunk a thread copies
    per k step: the copies are unrolled and the compilers hoist each chunk's global address
    (64-bit) and shared offset out of the k loop (ptxas sm_80: 239 registers for the Llama
    QKV GEMM's 128x128x64 tile on 4 warps, 8 + 8 chunks, where this gives 240; the same
    warp tile on one warp, 16 + 16 chunks, took 255 registers and spilled 456 bytes, which
    the estimate without the chunks' addresses (192) did not foresee), ~24 for the rest."""
    lay = get_layout(t.layout)
    acc = t.operands * t.mi * t.ni * lay.c_elems
    frags = (t.mi * lay.a_elems + t.ni * lay.b_elems) * t.itemsize // 4
    chunks = cdiv(t.bm * t.bk, t.vec * t.threads) + \
        t.operands * cdiv(t.bk * t.bn, t.vec * t.threads)
    prefetch = 0 if t.stages > 1 else chunks * 4
    return acc + frags + prefetch + ADDRESS_REGISTERS * chunks + 24


@functools.lru_cache(maxsize=64)
def _slack(spec: DeviceSpec, mi_: MatrixInstruction, itemsize: int,
           operands: int) -> tuple[tuple[MmaTiles, int], ...]:
    """Every tile within the spec's thread and shared-memory limits, in search order, with
    the registers per thread it leaves for a fused prologue and epilogue (the `reserve` it
    admits: spec.registers_per_thread_at(threads) - mma_registers)."""
    lay = get_layout(mi_.layout)
    stages_opts = (3, 2) if "async_copy" in spec.capabilities else (1,)
    out = []
    for bm in (128, 64, 32, 16, 8):
        for bn in (128, 64, 32, 16, 8):
            for bk in (64, 32, 16, 8):
                if bk % lay.k or (bk * itemsize) % 16:
                    continue
                for wm in (4, 2, 1):
                    for wn in (4, 2, 1):
                        if bm % (wm * lay.m) or bn % (wn * lay.n):
                            continue
                        for st in stages_opts:
                            t = MmaTiles(bm, bn, bk, wm, wn, st, lay.name, itemsize,
                                         operands)
                            if t.threads > spec.max_threads_per_block or \
                                    mma_shared_bytes(t) > spec.shared_mem_per_block:
                                continue
                            out.append((t, spec.registers_per_thread_at(t.threads)
                                        - mma_registers(t)))
    return tuple(out)


@functools.lru_cache(maxsize=256)
def _candidates(spec: DeviceSpec, mi_: MatrixInstruction, itemsize: int,
                reserve: int, operands: int) -> tuple[MmaTiles, ...]:
    return tuple(t for t, slack in _slack(spec, mi_, itemsize, operands) if reserve <= slack)


@functools.lru_cache(maxsize=256)
def _steps(spec: DeviceSpec, mi_: MatrixInstruction, itemsize: int, reserve: int,
           operands: int) -> tuple[tuple[int, int, int, tuple, MmaTiles], ...]:
    """The candidates by block tile and K step (BM, BN, BK), in search order: (bm, bn, bk,
    key, tile) with the tile whose shape-free score part (mma_tiles' score after busy, waste
    and K waste) is highest, the first such in search order."""
    best: dict[tuple[int, int, int], tuple[tuple, MmaTiles]] = {}
    for t in _candidates(spec, mi_, itemsize, reserve, operands):
        wtm, wtn = t.bm // t.wm, t.bn // t.wn
        key = (t.bm * t.bn, -abs(t.bm.bit_length() - t.bn.bit_length()),
               min(wtm * wtn, 64 * 64), -abs(wtm.bit_length() - wtn.bit_length()),
               min(t.wm * t.wn, 8), t.stages, -abs(t.bk * t.itemsize - 128))
        old = best.get((t.bm, t.bn, t.bk))
        if old is None or key > old[0]:
            best[(t.bm, t.bn, t.bk)] = (key, t)
    return tuple((bm, bn, bk, key, t) for (bm, bn, bk), (key, t) in best.items())


@functools.lru_cache(maxsize=1024)
def mma_tiles(m: int, n: int, k: int, spec: DeviceSpec, instr: MatrixInstruction,
              itemsize: int, reserve: int = 0, operands: int = 1) -> MmaTiles | None:
    """The tile for an m x n x k matmul on `instr`, or None when none fits the spec.

    Preference, as the SIMT tiles (tiling.matmul_tiles): a grid that keeps the device busy,
    little padding waste, big and square block tiles (reuse per shared byte), warp tiles of
    several instructions (fragment reuse), 4-8 warps, deeper pipelines, BK of 32. The score,
    compared as a tuple (the first highest in search order wins): (busy, -waste, -K waste,
    BM*BN, -|log BM - log BN|, min(warp tile, 64x64), -|log WTM - log WTN|, min(warps, 8),
    stages, -|BK bytes - 128|) (128-byte rows: conflict-free phases). Only busy, waste and
    K waste depend on the shape, and only through (BM, BN, BK): the search scores the best
    tile of each (BM, BN, BK) (_steps) and picks exactly the tile the score over every
    candidate picks."""
    best_key, best = None, None
    for bm, bn, bk, rest, t in _steps(spec, instr, itemsize, reserve, operands):
        blocks = cdiv(m, bm) * cdiv(n, bn)
        waste = (round_up(m, bm) * round_up(n, bn)) / max(1, m * n)
        kwaste = round_up(k, bk) / max(1, k)
        key = (blocks * 4 >= spec.compute_units, -round(waste, 1), -round(kwaste, 1), *rest)
        if best_key is None or key > best_key:
            best_key, best = key, t
    return best


def mma_in_flight(t: MmaTiles, spec: DeviceSpec, reserve: int = 0) -> int:
    """Tiles running at once on the whole device (one wave)."""
    return spec.compute_units * blocks_per_unit(t.threads, mma_registers(t) + reserve,
                                                mma_shared_bytes(t), spec)
