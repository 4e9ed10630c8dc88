"""hal.kernel.wgmma and hal.kernel.tma pinned to the PTX ISA and the CUDA driver API.

Each expected value is written out here from the document, apart from the code under test:
a small CuTe-layout evaluator reproduces the PTX ISA's canonical-layout table, the
descriptor bit fields are packed by hand, the accumulator table is built tile by tile."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from hal.devices.loader import load_spec
from hal.kernel.tma import TensorMapError, row_major_map
from hal.kernel.wgmma import (
    SmemDescriptor,
    accumulator_table,
    canonical_offset,
    operand_addresses,
    swizzle,
)
from hal.roofline import MathInstruction, MathKind, peak


# PTX ISA 9.7.15.5.1.1.1, Figure 149 "WGMMA .m64nNk16 register fragment layout for
# accumulator matrix D": the 64 x N matrix is 4 row blocks of 16 (one per warp of the
# warpgroup, %warpid % 4), each cut into N/8 blocks of 16 x 8 laid out as mma.m16n8's C
# ("Matrix Fragments for mma.m16n8k16": c0,c1 at row groupID, cols 2*tig, 2*tig+1; c2,c3
# at row groupID + 8), the 8-column blocks in order d0-d3, d4-d7, ...
@pytest.mark.parametrize("n", [8, 64, 128, 256])
def test_accumulator_matches_ptx_figure(n):
    got = accumulator_table(n)
    assert got.shape == (128, n // 2, 2)
    seen = set()
    for warp in range(4):
        for lane in range(32):
            gid, tig = lane // 4, lane % 4
            for blk in range(n // 8):
                quad = [(gid, 2 * tig), (gid, 2 * tig + 1), (gid + 8, 2 * tig),
                        (gid + 8, 2 * tig + 1)]
                for e, (r, c) in enumerate(quad):
                    want = (16 * warp + r, 8 * blk + c)
                    assert tuple(got[32 * warp + lane, 4 * blk + e]) == want
                    seen.add(want)
    assert len(seen) == 64 * n


# PTX ISA 9.7.15.5.1.2.2 "Matrix Descriptor Format": 13-0 encode(start), 29-16 encode(LBO),
# 45-32 encode(SBO), 51-49 base offset, 63-62 swizzle (0 none, 1 128B, 2 64B, 3 32B),
# encode(x) = (x & 0x3FFFF) >> 4.
@pytest.mark.parametrize("start,lbo,sbo,sw,code", [
    (0x400, 16, 1024, 128, 1), (0x1230, 256 * 4, 128 * 4, 0, 0), (0x3fff0, 512, 1024, 64, 2),
    (96, 16, 256, 32, 3)])
def test_descriptor_bits(start, lbo, sbo, sw, code):
    enc = lambda x: (x & 0x3FFFF) >> 4  # noqa: E731
    want = enc(start) | (enc(lbo) << 16) | (enc(sbo) << 32) | (code << 62)
    d = SmemDescriptor(start, lbo, sbo, sw)
    assert d.encode() == want
    assert SmemDescriptor.decode(want) == d


def test_descriptor_examples_from_the_isa():
    # "K-Major, no-swizzling and tf32": LBO 64*sizeof(tf32) encodes 16, SBO 32*4 encodes 8
    v = SmemDescriptor(0, 64 * 4, 32 * 4, 0).encode()
    assert (v >> 16) & 0x3FFF == 16 and (v >> 32) & 0x3FFF == 8
    # "MN-Major, 64B swizzling and bf16": LBO 256*2 encodes 32, SBO 512*2 encodes 64
    v = SmemDescriptor(0, 256 * 2, 512 * 2, 64).encode()
    assert (v >> 16) & 0x3FFF == 32 and (v >> 32) & 0x3FFF == 64 and v >> 62 == 2
    with pytest.raises(ValueError):
        SmemDescriptor(8, 16, 16, 0).encode()   # not a multiple of 16


# ----------------------------------------------------------------- canonical layouts
def _cute(shape, stride, coord):
    """A CuTe layout (nested tuples) at an integer coordinate per top-level mode
    (colexicographic: the first sub-mode varies fastest)."""
    total = 0
    for sh, st, x in zip(shape, stride, coord, strict=True):
        subs = sh if isinstance(sh, tuple) else (sh,)
        strs = st if isinstance(st, tuple) else (st,)
        for s, d in zip(subs, strs, strict=True):
            total += (x % s) * d
            x //= s
    return total


# PTX ISA 9.7.15.5.1.2.1.3 "Canonical Layouts" (units of elements, T = 128 / bits):
#   MN-major none: ((T,1,m),(8,k)):((1,T,SBO),(1T,LBO))
#   MN-major 32B/64B/128B: ((T,S,m),(8,k)):((1,T,LBO),(S*T,SBO)), S = 2, 4, 8
#   K-major none: ((8,m),(T,2k)):((1T,SBO),(1,LBO))
#   K-major 32B/64B/128B: ((8,m),(T,2k)):((S*T,SBO),(1,T))
def _table_layout(k_major, sw, t, lbo, sbo, m=2, k=2):
    s = sw // 16
    if k_major:
        if sw == 0:
            return ((8, m), (t, 2 * k)), ((t, sbo), (1, lbo))
        return ((8, m), (t, 2 * k)), ((s * t, sbo), (1, t))
    if sw == 0:
        return ((t, 1, m), (8, k)), ((1, t, sbo), (t, lbo))
    return ((t, s, m), (8, k)), ((1, t, lbo), (s * t, sbo))


@pytest.mark.parametrize("k_major,sw", list(itertools.product([True, False], [0, 32, 64, 128])))
@pytest.mark.parametrize("itemsize", [2, 1])
def test_canonical_layouts_match_the_isa_table(k_major, sw, itemsize):
    t = 16 // itemsize
    lbo_e, sbo_e = 4096 // itemsize, 2048 // itemsize   # distinct, larger than any atom
    shape, stride = _table_layout(k_major, sw, t, lbo_e, sbo_e)
    rows = int(np.prod(shape[0]))
    cols = int(np.prod(shape[1]))
    for r in range(rows):
        for c in range(cols):
            want = _cute(shape, stride, (r, c)) * itemsize
            got = int(canonical_offset(np.array(r), np.array(c), itemsize, k_major, sw,
                                       lbo_e * itemsize, sbo_e * itemsize))
            assert got == want, (r, c)


def test_isa_exact_layout_examples():
    # "MN-Major, no-swizzling and bf16": ((8,1,2),(8,2)):((1,8,64),(8,128)), LBO 128, SBO 64
    for r, c in itertools.product(range(16), range(16)):
        want = _cute(((8, 1, 2), (8, 2)), ((1, 8, 64), (8, 128)), (r, c)) * 2
        assert int(canonical_offset(np.array(r), np.array(c), 2, False, 0, 256, 128)) == want
    # "MN-Major, 64B swizzling and bf16": ((8,4,2),(8,2)):((1,8,256),(32,512)), LBO 256, SBO 512
    for r, c in itertools.product(range(64), range(16)):
        want = _cute(((8, 4, 2), (8, 2)), ((1, 8, 256), (32, 512)), (r, c)) * 2
        assert int(canonical_offset(np.array(r), np.array(c), 2, False, 64, 512, 1024)) == want


# CuTe Swizzle<B, M=4, S=3> on a byte address x: x ^ ((x & (((1 << B) - 1) << (M + S))) >> S),
# B = 3, 2, 1 for the 128B, 64B, 32B modes (the "Swizzling" column of the ISA table).
@pytest.mark.parametrize("mode,b", [(128, 3), (64, 2), (32, 1)])
def test_swizzle_is_cute_swizzle(mode, b):
    x = np.arange(1 << 13, dtype=np.int64)
    want = x ^ ((x & (((1 << b) - 1) << 7)) >> 3)
    assert (swizzle(x, mode) == want).all()
    assert (swizzle(x, 0) == x).all()


def test_swizzle_128b_xors_the_chunk_with_the_row():
    # CUDA programming guide, TMA swizzle: in a 1024-byte pattern of 8 rows of 128 bytes,
    # 16-byte chunk c of row r lands at chunk c ^ (r % 8) of the same row
    for r, c, e in itertools.product(range(16), range(8), range(16)):
        addr = r * 128 + c * 16 + e
        assert int(swizzle(np.int64(addr), 128)) == r * 128 + ((c ^ (r % 8)) * 16) + e


def test_operand_addresses_k_major_128b():
    # a 64 x 64 bf16 A tile as TMA writes it with 128B swizzle (rows of 128 bytes), SBO 1024:
    # element (m, k) sits at swizzle(base + 128 m + 2 k); the second k16 step starts 32 B on
    d = SmemDescriptor(2048 + 32, 16, 1024, 128)
    got = operand_addresses(d, 64, 16, 2, True)
    for m, k in itertools.product(range(64), range(16)):
        assert got[m, k] == swizzle(2048 + 128 * m + 2 * (16 + k), 128)


# ----------------------------------------------------------------- TMA tensor maps
# CUDA Driver API cuTensorMapEncodeTiled: globalStrides multiples of 16; boxDim[i] <= 256;
# boxDim[0] * elementSize a multiple of 16 bytes and, with a swizzle, <= the swizzle span.
def test_tensor_map_rules():
    ok = row_major_map("ma", "a", "bf16", 2, (100, 64), (64, 64), 128)
    assert ok.dims == (64, 100) and ok.strides == (128,) and ok.box_bytes == 64 * 64 * 2
    with pytest.raises(TensorMapError, match="multiples of 16"):
        row_major_map("m", "a", "bf16", 2, (10, 12), (8, 8), 0)      # 24-byte rows
    with pytest.raises(TensorMapError, match="swizzle span"):
        row_major_map("m", "a", "bf16", 2, (64, 128), (64, 128), 128)  # 256-byte box rows
    with pytest.raises(TensorMapError, match="1..256"):
        row_major_map("m", "a", "bf16", 2, (512, 64), (512, 64), 128)
    with pytest.raises(TensorMapError, match="multiple of 16"):
        row_major_map("m", "a", "bf16", 2, (64, 64), (8, 4), 0)        # 8-byte box rows


def test_tensor_map_box_fills_zeros_past_the_edge():
    tm = row_major_map("ma", "a", "f32", 4, (5, 8), (4, 4), 0)
    flat, ok = tm.box_indices((6, 3))     # columns 6..9, rows 3..6 of a 5 x 8 tensor
    grid = np.arange(40).reshape(5, 8)
    for i in range(4):
        for j in range(4):
            r, c = 3 + i, 6 + j
            inside = r < 5 and c < 8
            assert ok[i * 4 + j] == inside
            if inside:
                assert flat[i * 4 + j] == grid[r, c]


def test_tensor_map_box_lands_swizzled():
    tm = row_major_map("ma", "a", "bf16", 2, (256, 64), (64, 64), 128)
    off = tm.box_offsets()
    for r, c in itertools.product(range(64), range(64)):
        chunk, within = (2 * c) // 16, (2 * c) % 16
        assert off[r * 64 + c] == r * 128 + ((chunk ^ (r % 8)) * 16) + within


# ----------------------------------------------------------------- specs and pricing
@pytest.mark.parametrize("name", ["h100-sxm", "h200"])
def test_hopper_specs_price_wgmma_above_mma_sync(name):
    spec = load_spec(name)
    wg = spec.matrix_instruction("bf16", "bf16", "f32", "warpgroup")
    ws = spec.matrix_instruction("bf16", "bf16", "f32")
    assert wg is not None and wg.layout == "wg_m64nNk16_b16" and wg.k == 16
    assert spec.matrix_instruction("f8e4m3fn", "f8e4m3fn", "f32", "warpgroup").k == 32
    assert peak(spec, MathInstruction(MathKind.MATRIX, "bf16", wg.name)) == 989e12
    assert peak(spec, MathInstruction(MathKind.MATRIX, "bf16", ws.name)) < 989e12
    assert load_spec("a100-sxm").matrix_instruction("bf16", "bf16", "f32", "warpgroup") is None
