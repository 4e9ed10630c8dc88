"""Hopper warpgroup MMA (wgmma): shapes, the accumulator layout, shared-memory matrix
descriptors and swizzles. The one place these live; the lowering (hal.lowering.matmul_wgmma),
cpu_sim (backends/cpu_sim/wgmma_sim.py), the CUDA renderer (backends/cuda/wgmma_helpers.py)
and the device specs (`matrix_instructions:` layouts named here) read them.

A `wgmma.mma_async.sync.aligned.m64nNkK` is issued by a warpgroup (4 consecutive warps, 128
threads): D[64, N] (+)= A[64, K] @ B[K, N], A and B read from shared memory through 64-bit
matrix descriptors, D held in registers, N/2 f32 per thread. K is 16 for f16/bf16 and 32
for e4m3/e5m2 (32 bytes of K either way); N is a multiple of 8 up to 256.

Sources (tests/test_wgmma_layouts.py writes the formulas out again, apart from this code):
* PTX ISA 9.7.15.5.1.1 "Register Fragments" (Figure 149, accumulator D of m64nNk16; m64nNk32
  shares it): warp w = %warpid % 4 of the warpgroup holds rows 16 w .. 16 w + 15; within the
  warp, as mma.m16n8's C: d_i at row 16 w + groupID + 8 ((i >> 1) & 1),
  col 8 (i >> 2) + 2 threadID_in_group + (i & 1);
* PTX ISA 9.7.15.5.1.2 "Shared Memory Matrix Layout", 9.7.15.5.1.2.1.3 "Canonical Layouts"
  (K-major and MN-major, in units of T = 16 bytes / element size) and 9.7.15.5.1.2.2
  "Matrix Descriptor Format": bits 0-13 start address, 16-29 leading dimension byte offset
  (LBO), 32-45 stride dimension byte offset (SBO), each encoded as (x & 0x3FFFF) >> 4;
  bits 49-51 base offset; bits 62-63 swizzle (0 none, 1 128B, 2 64B, 3 32B);
* the swizzles are CuTe's Swizzle<B, 4, 3> on byte addresses (B = 3, 2, 1 for 128B, 64B,
  32B): bits 4.. of the address (the 16-byte chunk) XOR bits 7.. (the row of the 8-row
  pattern), as TMA writes the same modes (cuTensorMapEncodeTiled's CU_TENSOR_MAP_SWIZZLE_*).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

WARPGROUP = 128          # threads issuing one wgmma
M = 64                   # rows of one wgmma
K_BYTES = 32             # bytes of K per wgmma (16 x 16-bit or 32 x 8-bit)
SWIZZLES = (0, 32, 64, 128)                   # bytes of the swizzle span (0: none)
_SWIZZLE_CODE = {0: 0, 128: 1, 64: 2, 32: 3}  # descriptor bits 62-63
_CODE_SWIZZLE = {v: k for k, v in _SWIZZLE_CODE.items()}
_SHORT = {"bf16": "bf16", "f16": "f16", "f8e4m3fn": "e4m3", "f8e5m2": "e5m2"}


@dataclass(frozen=True)
class WgmmaLayout:
    """A wgmma family the specs can name: operand dtypes share K (32 bytes)."""

    name: str            # "wg_m64nNk16_b16"
    k: int
    max_n: int = 256
    lanes: int = WARPGROUP

    def valid_n(self, n: int) -> bool:
        return 8 <= n <= self.max_n and n % 8 == 0


WGMMA_LAYOUTS: dict[str, WgmmaLayout] = {
    "wg_m64nNk16_b16": WgmmaLayout("wg_m64nNk16_b16", 16),   # f16, bf16 -> f32
    "wg_m64nNk32_b8": WgmmaLayout("wg_m64nNk32_b8", 32),     # e4m3, e5m2 -> f32
}


def wgmma_k(dtype_name: str) -> int:
    """K of one wgmma for operands of `dtype_name` (16-bit: 16, 8-bit: 32)."""
    if dtype_name not in _SHORT:
        raise ValueError(f"wgmma has no {dtype_name} operands (f16, bf16, e4m3, e5m2)")
    return 32 if dtype_name.startswith("f8") else 16


def ptx_name(n: int, a: str, b: str, acc: str = "f32") -> str:
    """The PTX instruction, e.g. wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16."""
    return (f"wgmma.mma_async.sync.aligned.m64n{n}k{wgmma_k(a)}.{acc}."
            f"{_SHORT[a]}.{_SHORT[b]}")


# --------------------------------------------------------------------------- accumulator
def accumulator_coord(thread: int, i: int) -> tuple[int, int]:
    """(row, col) of accumulator element d_i of warpgroup thread `thread` (0..127)."""
    warp, lane = thread // 32, thread % 32
    group, tig = lane >> 2, lane % 4
    return 16 * warp + group + 8 * ((i >> 1) & 1), 8 * (i >> 2) + 2 * tig + (i & 1)


@functools.lru_cache(maxsize=64)
def accumulator_table(n: int) -> np.ndarray:
    """[128, n / 2, 2] int table of (row, col) per thread and accumulator element."""
    t = np.array([[accumulator_coord(th, i) for i in range(n // 2)]
                  for th in range(WARPGROUP)], np.int64)
    t.setflags(write=False)
    return t


A_REG_ELEMS = 8           # 16-bit A elements per thread of a register-A wgmma (4 x .b32)


def a_fragment_table() -> np.ndarray:
    """[128, 8, 2] (row, col) of A element a_e of each warpgroup thread when A comes from
    registers (16-bit types, m64k16; PTX ISA 9.7.15.5.1.1, "Register fragments", matrix A
    of .m64nNk16): warp w holds rows 16 w .. 16 w + 15 as mma.m16n8k16's A: a_e at row
    16 w + groupID + 8 ((e >> 1) & 1), col 2 threadID_in_group + (e & 1) + 8 (e >> 2).
    That is accumulator_table(16): accumulator elements 8 kk .. 8 kk + 7 of a wgmma
    (the columns 16 kk .. 16 kk + 15) are, in order, the A fragment of k step kk."""
    return accumulator_table(16)


# --------------------------------------------------------------------------- swizzle
def swizzle(addr, mode: int):
    """The byte address `addr` (int or int array) after the swizzle of `mode` bytes:
    Swizzle<log2(mode / 16), 4, 3>: the 16-byte chunk bits XOR the row bits above 128 B."""
    if mode not in SWIZZLES:
        raise ValueError(f"swizzle mode {mode} is not one of {SWIZZLES}")
    if mode == 0:
        return addr
    return addr ^ ((addr >> 3) & (mode - 16))


def pattern_bytes(mode: int) -> int:
    """Bytes after which a swizzle pattern repeats (8 rows of `mode` bytes; 0: none)."""
    return 8 * mode


# --------------------------------------------------------------------------- descriptors
def _enc(x: int) -> int:
    return (x & 0x3FFFF) >> 4


@dataclass(frozen=True)
class SmemDescriptor:
    """A wgmma shared-memory matrix descriptor (byte values; `swizzle` in bytes)."""

    start: int
    lbo: int
    sbo: int
    swizzle: int = 0
    base_offset: int = 0

    def encode(self) -> int:
        if self.swizzle not in _SWIZZLE_CODE:
            raise ValueError(f"swizzle {self.swizzle} is not one of {SWIZZLES}")
        for what, v in (("start address", self.start), ("LBO", self.lbo), ("SBO", self.sbo)):
            if v % 16 or not 0 <= v < 1 << 18:
                raise ValueError(f"descriptor {what} {v} must be a multiple of 16 below 2^18")
        return (_enc(self.start) | _enc(self.lbo) << 16 | _enc(self.sbo) << 32
                | (self.base_offset & 7) << 49 | _SWIZZLE_CODE[self.swizzle] << 62)

    @classmethod
    def decode(cls, value: int) -> SmemDescriptor:
        v = int(value) & (2**64 - 1)
        return cls(start=(v & 0x3FFF) << 4, lbo=((v >> 16) & 0x3FFF) << 4,
                   sbo=((v >> 32) & 0x3FFF) << 4, swizzle=_CODE_SWIZZLE[(v >> 62) & 3],
                   base_offset=(v >> 49) & 7)


def canonical_offset(rows: np.ndarray, cols: np.ndarray, itemsize: int, k_major: bool,
                     swizzle_mode: int, lbo: int, sbo: int) -> np.ndarray:
    """Byte offsets (before the swizzle) of elements (mn index, k index) of an operand in
    the canonical layout (PTX ISA 9.7.15.5.1.2.1.3). `rows`: the M (A) or N (B) index,
    `cols`: the K index."""
    t = 16 // itemsize      # elements per 16 bytes
    if k_major:
        if swizzle_mode:    # ((8,m),(T,2k)):((S/16*T, SBO),(1,T)): K contiguous in S-byte rows
            return (rows % 8) * swizzle_mode + (rows // 8) * sbo + cols * itemsize
        # ((8,m),(T,2k)):((1T,SBO),(1,LBO)): 8x16-byte core matrices
        return (rows % 8) * 16 + (rows // 8) * sbo + (cols % t) * itemsize + (cols // t) * lbo
    if swizzle_mode:        # ((T,S/16,m),(8,k)):((1,T,LBO),(S/16*T,SBO)): MN contiguous
        per_row = swizzle_mode // itemsize
        return (rows % per_row) * itemsize + (rows // per_row) * lbo + (cols % 8) * \
            swizzle_mode + (cols // 8) * sbo
    # ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO))
    return (rows % t) * itemsize + (rows // t) * sbo + (cols % 8) * 16 + (cols // 8) * lbo


def operand_addresses(desc: SmemDescriptor, mn: int, k: int, itemsize: int,
                      k_major: bool) -> np.ndarray:
    """[mn, k] shared byte addresses a wgmma reads for an operand of `mn` rows (64 for A,
    N for B) and `k` columns through `desc` (start + canonical offset, then the swizzle on
    the address; a non-zero base offset is not supported)."""
    if desc.base_offset:
        raise ValueError("descriptors with a non-zero base offset are not supported")
    r = np.arange(mn, dtype=np.int64)[:, None]
    c = np.arange(k, dtype=np.int64)[None, :]
    off = canonical_offset(r, c, itemsize, k_major, desc.swizzle, desc.lbo, desc.sbo)
    return swizzle(desc.start + off, desc.swizzle)


__all__ = ["A_REG_ELEMS", "K_BYTES", "M", "SWIZZLES", "SmemDescriptor", "WARPGROUP", "WGMMA_LAYOUTS",
           "WgmmaLayout", "a_fragment_table", "accumulator_coord", "accumulator_table", "canonical_offset",
           "operand_addresses", "pattern_bytes", "ptx_name", "swizzle", "wgmma_k"]
