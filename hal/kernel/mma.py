"""Matrix-unit instruction shapes and per-lane fragment layouts: the one place they live.

A matrix instruction (mma.sync on NVIDIA, MFMA on AMD, the scratch-npu's 8x8x8 unit) is
issued by a whole warp/wave: it computes D[m, n] = A[m, k] @ B[k, n] + C[m, n], and each
lane holds only some elements of A, B, C and D in its registers (its *fragments*). A
`FragmentLayout` says, for every lane and every fragment element, which matrix element it
is. Tiling (hal.lowering.matmul_mma), cpu_sim (backends/cpu_sim/mma_sim.py), the renderers
(hal.render.cstyle and the vendor renderers) and the cost model all read these tables; the
device specs name a layout per instruction (`matrix_instructions:` in the YAML).

Coordinates: A elements are (row m, col k), B elements (row k, col n), C/D elements
(row m, col n). Fragment element i of a lane is stored at index i of the lane's fragment
array (a LocalBuffer), in the instruction's register order (a0, a1, ... as the ISA
numbers them; two 16-bit elements per 32-bit register, low half first).

Sources (the tests in tests/test_mma_layouts.py write the formulas out again, apart):
* PTX ISA, section "Matrix Fragments for mma.m16n8k16 with floating point type" and
  "Matrix Fragments for mma.m16n8k32" (e4m3/e5m2);
* AMD CDNA3 ISA reference, "Matrix Arithmetic Instructions" and AMD's Matrix
  Instruction Calculator (v_mfma_f32_32x32x8_bf16, 16x16x16, 32x32x16_fp8_fp8; the
  gfx90a `_1k` forms share the layouts);
* scratch-npu: hal's own hypothetical 8x8x8 unit on 16 lanes (data, not hardware).

ldmatrix (`ldmatrix_source`): lane t supplies the shared-memory address of row t % 8 of
8x8 matrix t // 8 (16 bytes: 8 b16 elements); after the load, lane t holds of matrix j
the elements (t // 4, 2 * (t % 4) + e), e in {0, 1}, or with .trans the elements
(2 * (t % 4) + e, t // 4), as fragment elements 2 j + e.

Device helpers the renderers emit (names agreed with the host shim, issue 18; each is
defined in the rendered prelude inside `#ifndef HAL_HOST_SHIM`, so a host build may give
its own definitions of the same names and signatures):

    CUDA (inline PTX)
      void hal_mma_m16n8k16_bf16_f32(float* d, const __nv_bfloat16* a,
                                     const __nv_bfloat16* b, const float* c)
      void hal_mma_m16n8k16_f16_f32(float* d, const __half* a, const __half* b,
                                    const float* c)
      void hal_mma_m16n8k32_e4m3_f32(float* d, const __nv_fp8_storage_t* a,
                                     const __nv_fp8_storage_t* b, const float* c)  (and e5m2)
      void hal_mma_m16n8k8_tf32_f32(float* d, const float* a, const float* b,
                                    const float* c)   (cvt.rna.tf32.f32 of a and b first)
      void hal_ldmatrix_x4(void* dst, const void* smem_row)      (x1, x2; _trans variants)
      void hal_cp_async_16(void* smem, const void* gmem, bool full)   (zero-fill if !full)
      void hal_cp_async_commit()
      template <int N> void hal_cp_async_wait()
    HIP (__builtin_amdgcn_mfma_*)
      void hal_mfma_f32_32x32x8_bf16(float* d, const hip_bfloat16* a,
                                     const hip_bfloat16* b, const float* c)
      void hal_mfma_f32_16x16x16_bf16(...), hal_mfma_f32_32x32x8_f16(...),
      void hal_mfma_f32_16x16x16_f16(...)
    both: void hal_vec_copy_16(void* dst, const void* src, bool full)  (128-bit, zero-fill)

`helper_name(instruction)` gives the MMA helper's name; fragments are passed as pointers
to the fragment arrays (the arrays are 16-byte aligned, fully unrolled, so they stay in
registers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

Coord = Callable[[int, int], tuple[int, int]]   # (lane, element) -> (row, col)
# A lane's base coordinate as sum(coef * ((lane // div) % mod)): what lowerings emit.
Terms = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, eq=False)
class FragmentLayout:
    """Per-lane fragment layout of one matrix-instruction shape.

    `a`, `b`, `c`: int tables [lanes, elements, 2] of (row, col) for each lane's A, B and
    C/D fragment elements. `vendor_name` is the suffix used in helper names."""

    name: str
    m: int
    n: int
    k: int
    lanes: int
    a: np.ndarray = field(repr=False)
    b: np.ndarray = field(repr=False)
    c: np.ndarray = field(repr=False)
    family: str = ""          # "nv_mma", "amd_mfma", "npu"
    # the instruction reads its f32 inputs rounded to this format ("tf32": 10 mantissa bits,
    # round to nearest, ties away, as cvt.rna.tf32.f32), "" when it reads them exactly
    input_format: str = ""
    # per operand "a"/"b"/"c": (row terms, col terms) of element 0's coordinates, and the
    # constant [elements, 2] offsets of the others from it (the same for every lane)
    base: dict = field(default_factory=dict, repr=False)
    offsets: dict = field(default_factory=dict, repr=False)

    @property
    def a_elems(self) -> int:
        return self.a.shape[1]

    @property
    def b_elems(self) -> int:
        return self.b.shape[1]

    @property
    def c_elems(self) -> int:
        return self.c.shape[1]

    def operand(self, which: str) -> np.ndarray:
        return {"a": self.a, "b": self.b, "c": self.c}[which]


LAYOUTS: dict[str, FragmentLayout] = {}


def _table(lanes: int, elems: int, fn: Coord) -> np.ndarray:
    t = np.array([[fn(lane, i) for i in range(elems)] for lane in range(lanes)], np.int64)
    t.setflags(write=False)
    return t


def _check_cover(name: str, which: str, t: np.ndarray, rows: int, cols: int) -> None:
    """Every matrix element is held by exactly one (lane, element): a layout is a bijection."""
    flat = t[..., 0] * cols + t[..., 1]
    if t.size // 2 != rows * cols or sorted(flat.ravel().tolist()) != list(range(rows * cols)):
        raise ValueError(f"mma layout {name}: the {which} fragments do not cover the "
                         f"{rows}x{cols} matrix exactly once")


def terms_value(terms: Terms, lane: int) -> int:
    return sum(c * ((lane // d) % md) for c, d, md in terms)


def register_layout(name: str, m: int, n: int, k: int, lanes: int, a: Coord, b: Coord,
                    c: Coord, family: str, base: dict[str, tuple[Terms, Terms]],
                    input_format: str = "") -> FragmentLayout:
    """Register a fragment layout (the extension point for a new matrix unit).

    `base[operand]` gives each lane's element-0 coordinates as lane terms; every other
    element must sit at a constant offset from it (checked), so a lowering computes a
    fragment element's address as base(lane) + offset."""
    ta = _table(lanes, m * k // lanes, a)
    tb = _table(lanes, k * n // lanes, b)
    tc = _table(lanes, m * n // lanes, c)
    _check_cover(name, "A", ta, m, k)
    _check_cover(name, "B", tb, k, n)
    _check_cover(name, "C", tc, m, n)
    offsets = {}
    for op, t in (("a", ta), ("b", tb), ("c", tc)):
        rows, cols = base[op]
        b0 = np.array([[terms_value(rows, ln), terms_value(cols, ln)] for ln in range(lanes)])
        off = t - b0[:, None, :]
        if not (off == off[0]).all():
            raise ValueError(f"mma layout {name}: {op} elements are not at fixed offsets from "
                             f"the lane base")
        off0 = off[0].copy()
        off0.setflags(write=False)
        offsets[op] = off0
    lay = FragmentLayout(name, m, n, k, lanes, ta, tb, tc, family, input_format, dict(base),
                         offsets)
    LAYOUTS[name] = lay
    return lay


def get_layout(name: str) -> FragmentLayout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise KeyError(f"unknown mma layout '{name}' (known: {', '.join(sorted(LAYOUTS))})") \
            from None


# --------------------------------------------------------------------------- NVIDIA mma.sync
# groupID = lane >> 2, threadID_in_group = lane % 4 (PTX ISA, mma.m16n8k16 fragments).

def _nv16_a(lane: int, i: int) -> tuple[int, int]:
    g, t = lane >> 2, lane % 4
    return g + 8 * ((i >> 1) & 1), 2 * t + (i & 1) + 8 * (i >> 2)


def _nv16_b(lane: int, i: int) -> tuple[int, int]:
    g, t = lane >> 2, lane % 4
    return 2 * t + (i & 1) + 8 * (i >> 1), g


def _nv_c(lane: int, i: int) -> tuple[int, int]:
    g, t = lane >> 2, lane % 4
    return g + 8 * (i >> 1), 2 * t + (i & 1)


def _nv32_a(lane: int, i: int) -> tuple[int, int]:   # 8-bit A: four elements per register
    g, t = lane >> 2, lane % 4
    return g + 8 * ((i >> 2) & 1), 4 * t + (i & 3) + 16 * (i >> 3)


def _nv32_b(lane: int, i: int) -> tuple[int, int]:
    g, t = lane >> 2, lane % 4
    return 4 * t + (i & 3) + 16 * (i >> 2), g


def _nv8_a(lane: int, i: int) -> tuple[int, int]:   # tf32 A: one element per register
    g, t = lane >> 2, lane % 4
    return g + 8 * (i & 1), t + 4 * (i >> 1)


def _nv8_b(lane: int, i: int) -> tuple[int, int]:
    g, t = lane >> 2, lane % 4
    return t + 4 * i, g


_G, _T2, _T4 = ((1, 4, 8),), ((2, 1, 4),), ((4, 1, 4),)   # groupID, 2*tig, 4*tig
_T1 = ((1, 1, 4),)                                           # tig
register_layout("nv_m16n8k16_b16", 16, 8, 16, 32, _nv16_a, _nv16_b, _nv_c, "nv_mma",
                {"a": (_G, _T2), "b": (_T2, _G), "c": (_G, _T2)})
register_layout("nv_m16n8k32_b8", 16, 8, 32, 32, _nv32_a, _nv32_b, _nv_c, "nv_mma",
                {"a": (_G, _T4), "b": (_T4, _G), "c": (_G, _T2)})
# PTX ISA "Matrix Fragments for mma.m16n8k8" (.tf32): a0..a3 row groupID (+8 for a1, a3),
# col threadID_in_group (+4 for a2, a3); b0, b1 row threadID_in_group (+4 for b1), col
# groupID; C/D as m16n8k16. Issued only where the user opts into TF32 (--allow-tf32).
register_layout("nv_m16n8k8_tf32", 16, 8, 8, 32, _nv8_a, _nv8_b, _nv_c, "nv_mma",
                {"a": (_G, _T1), "b": (_T1, _G), "c": (_G, _T2)}, input_format="tf32")


# --------------------------------------------------------------------------- AMD MFMA (wave64)
def _amd(m: int, kpl: int) -> tuple[Coord, Coord, Coord]:
    """A: row lane % m, k = kpl * (lane / m) + j; B likewise with col = lane % m; D as the
    CDNA3 calculator gives it: row = 8 * (i / 4) + 4 * (lane / 32) + i % 4 for 32x32 and
    row = 4 * (lane / 16) + i for 16x16 (one block of 4 rows per lane group), col lane % m."""
    groups = 64 // m

    def a(lane: int, j: int) -> tuple[int, int]:
        return lane % m, kpl * (lane // m) + j

    def b(lane: int, j: int) -> tuple[int, int]:
        return kpl * (lane // m) + j, lane % m

    def c(lane: int, i: int) -> tuple[int, int]:
        return 4 * groups * (i // 4) + 4 * (lane // m) + i % 4, lane % m

    return a, b, c


def _amd_base(m: int, kpl: int) -> dict[str, tuple[Terms, Terms]]:
    lane_m, group = ((1, 1, m),), (64 // m,)
    return {"a": (lane_m, ((kpl, m, group[0]),)), "b": (((kpl, m, group[0]),), lane_m),
            "c": (((4, m, group[0]),), lane_m)}


register_layout("amd_32x32x8_b16", 32, 32, 8, 64, *_amd(32, 4), "amd_mfma", _amd_base(32, 4))
register_layout("amd_16x16x16_b16", 16, 16, 16, 64, *_amd(16, 4), "amd_mfma",
                _amd_base(16, 4))
register_layout("amd_32x32x16_b8", 32, 32, 16, 64, *_amd(32, 8), "amd_mfma", _amd_base(32, 8))


# --------------------------------------------------------------------------- scratch-npu
# A hypothetical 8x8x8 unit on 16 lanes: lane group h = lane / 8 holds k (A, B) or rows
# (D) 4h..4h+3; lane % 8 is the row of A and the column of B and D.
register_layout("npu_8x8x8", 8, 8, 8, 16,
                lambda lane, j: (lane % 8, 4 * (lane // 8) + j),
                lambda lane, j: (4 * (lane // 8) + j, lane % 8),
                lambda lane, i: (4 * (lane // 8) + i, lane % 8), "npu",
                {"a": (((1, 1, 8),), ((4, 8, 2),)), "b": (((4, 8, 2),), ((1, 1, 8),)),
                 "c": (((4, 8, 2),), ((1, 1, 8),))})


# --------------------------------------------------------------------------- ldmatrix
def ldmatrix_source(count: int, trans: bool) -> tuple[np.ndarray, np.ndarray]:
    """For ldmatrix.x{count}[.trans]: (src_lane [32, 2*count], offset [32, 2*count]).

    Fragment element 2 j + e of lane t is shared element `addr[src_lane] + offset`, where
    addr[s] is the row address lane s supplied (row s % 8 of matrix s // 8)."""
    src = np.zeros((32, 2 * count), np.int64)
    off = np.zeros((32, 2 * count), np.int64)
    for t in range(32):
        for j in range(count):
            for e in range(2):
                if trans:
                    src[t, 2 * j + e], off[t, 2 * j + e] = 8 * j + 2 * (t % 4) + e, t // 4
                else:
                    src[t, 2 * j + e], off[t, 2 * j + e] = 8 * j + t // 4, 2 * (t % 4) + e
    return src, off


def ldmatrix_row_of_lane(lane: int) -> tuple[int, int]:
    """(matrix j, row r) whose address lane `lane` supplies to ldmatrix."""
    return lane // 8, lane % 8


# --------------------------------------------------------------------------- helper names
_SHORT = {"bf16": "bf16", "f16": "f16", "f8e4m3fn": "e4m3", "f8e5m2": "e5m2", "f32": "f32",
          "tf32": "tf32"}


def helper_name(layout: FragmentLayout, a: str, acc: str) -> str:
    """The device helper a renderer calls for one MMA of `layout` on `a`-typed inputs."""
    a = layout.input_format or a
    if layout.family == "nv_mma":
        return f"hal_mma_m{layout.m}n{layout.n}k{layout.k}_{_SHORT[a]}_{_SHORT[acc]}"
    if layout.family == "amd_mfma":
        return f"hal_mfma_{_SHORT[acc]}_{layout.m}x{layout.n}x{layout.k}_{_SHORT[a]}"
    return f"hal_mma_{layout.name}_{_SHORT[a]}_{_SHORT[acc]}"


__all__ = ["FragmentLayout", "LAYOUTS", "get_layout", "helper_name", "ldmatrix_row_of_lane",
           "ldmatrix_source", "register_layout"]
