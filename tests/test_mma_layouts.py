"""Fragment layouts of hal.kernel.mma pinned to the ISA documents' formulas.

Each expected table is written out here from the document, apart from the code under test
(no function of hal.kernel.mma computes an expected value)."""

from __future__ import annotations

import pytest

from hal.devices.loader import load_spec, spec_from_dict
from hal.errors import SpecError
from hal.kernel.mma import LAYOUTS, get_layout, ldmatrix_source


def _pairs(table, lane):
    return [tuple(int(x) for x in rc) for rc in table[lane]]


# PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type":
#   groupID = %laneid >> 2; threadID_in_group = %laneid % 4
#   A (a0..a7): row = groupID for 0 <= i < 2 || 4 <= i < 6, groupID + 8 otherwise;
#               col = threadID_in_group * 2 + (i & 0x1) for i < 4, + 8 for i >= 4
#   B (b0..b3): row = threadID_in_group * 2 + (i & 0x1) for i < 2, + 8 for i >= 2; col = groupID
#   C (c0..c3): row = groupID for i < 2, groupID + 8 otherwise; col = threadID_in_group*2 + (i & 0x1)
def test_nv_m16n8k16_matches_ptx_isa():
    lay = get_layout("nv_m16n8k16_b16")
    assert (lay.m, lay.n, lay.k, lay.lanes) == (16, 8, 16, 32)
    for lane in range(32):
        gid, tig = lane >> 2, lane % 4
        a = [(gid if (i < 2 or 4 <= i < 6) else gid + 8,
              tig * 2 + (i & 1) + (8 if i >= 4 else 0)) for i in range(8)]
        b = [(tig * 2 + (i & 1) + (8 if i >= 2 else 0), gid) for i in range(4)]
        c = [(gid if i < 2 else gid + 8, tig * 2 + (i & 1)) for i in range(4)]
        assert _pairs(lay.a, lane) == a
        assert _pairs(lay.b, lane) == b
        assert _pairs(lay.c, lane) == c


# PTX ISA, "Matrix Fragments for mma.m16n8k32" (.e4m3/.e5m2, four 8-bit elements per register):
#   A (a0..a15): row = groupID for 0 <= i < 4 || 8 <= i < 12, groupID + 8 otherwise;
#                col = threadID_in_group * 4 + (i & 0x3) for i < 8, + 16 for i >= 8
#   B (b0..b7):  row = threadID_in_group * 4 + (i & 0x3) for i < 4, + 16 for i >= 4; col = groupID
#   C: as m16n8k16
def test_nv_m16n8k32_fp8_matches_ptx_isa():
    lay = get_layout("nv_m16n8k32_b8")
    for lane in range(32):
        gid, tig = lane >> 2, lane % 4
        a = [(gid if (i < 4 or 8 <= i < 12) else gid + 8,
              tig * 4 + (i & 3) + (16 if i >= 8 else 0)) for i in range(16)]
        b = [(tig * 4 + (i & 3) + (16 if i >= 4 else 0), gid) for i in range(8)]
        c = [(gid if i < 2 else gid + 8, tig * 2 + (i & 1)) for i in range(4)]
        assert _pairs(lay.a, lane) == a
        assert _pairs(lay.b, lane) == b
        assert _pairs(lay.c, lane) == c


# AMD CDNA3 ISA "Matrix Arithmetic Instructions" / AMD Matrix Instruction Calculator,
# v_mfma_f32_32x32x8_bf16 (wave64): A[i][k]: row i = lane % 32, k = 4 * (lane / 32) + j
# (j = 0..3 the element in the lane's two VGPRs); B[k][j]: k = 4 * (lane / 32) + j,
# col = lane % 32; D (16 VGPRs, i = 0..15): row = 8 * (i / 4) + 4 * (lane / 32) + i % 4,
# col = lane % 32.
def test_amd_32x32x8_matches_cdna3():
    lay = get_layout("amd_32x32x8_b16")
    assert (lay.m, lay.n, lay.k, lay.lanes) == (32, 32, 8, 64)
    for lane in range(64):
        assert _pairs(lay.a, lane) == [(lane % 32, 4 * (lane // 32) + j) for j in range(4)]
        assert _pairs(lay.b, lane) == [(4 * (lane // 32) + j, lane % 32) for j in range(4)]
        assert _pairs(lay.c, lane) == [(8 * (i // 4) + 4 * (lane // 32) + i % 4, lane % 32)
                                       for i in range(16)]


# Same sources, v_mfma_f32_16x16x16_bf16: A row = lane % 16, k = 4 * (lane / 16) + j;
# B k = 4 * (lane / 16) + j, col = lane % 16; D (4 VGPRs): row = 4 * (lane / 16) + i, col = lane % 16.
def test_amd_16x16x16_matches_cdna3():
    lay = get_layout("amd_16x16x16_b16")
    for lane in range(64):
        assert _pairs(lay.a, lane) == [(lane % 16, 4 * (lane // 16) + j) for j in range(4)]
        assert _pairs(lay.b, lane) == [(4 * (lane // 16) + j, lane % 16) for j in range(4)]
        assert _pairs(lay.c, lane) == [(4 * (lane // 16) + i, lane % 16) for i in range(4)]


# Same sources, v_mfma_f32_32x32x16_fp8_fp8: 8 fp8 per lane (two VGPRs): row = lane % 32,
# k = 8 * (lane / 32) + j; D as 32x32x8.
def test_amd_32x32x16_fp8_matches_cdna3():
    lay = get_layout("amd_32x32x16_b8")
    for lane in range(64):
        assert _pairs(lay.a, lane) == [(lane % 32, 8 * (lane // 32) + j) for j in range(8)]
        assert _pairs(lay.b, lane) == [(8 * (lane // 32) + j, lane % 32) for j in range(8)]
        assert _pairs(lay.c, lane) == [(8 * (i // 4) + 4 * (lane // 32) + i % 4, lane % 32)
                                       for i in range(16)]


# scratch-npu's hypothetical unit (defined by hal, scratch-npu.yaml): 16 lanes, h = lane / 8;
# A: (lane % 8, 4h + j); B: (4h + j, lane % 8); D: (4h + i, lane % 8).
def test_npu_8x8x8():
    lay = get_layout("npu_8x8x8")
    for lane in range(16):
        h = lane // 8
        assert _pairs(lay.a, lane) == [(lane % 8, 4 * h + j) for j in range(4)]
        assert _pairs(lay.b, lane) == [(4 * h + j, lane % 8) for j in range(4)]
        assert _pairs(lay.c, lane) == [(4 * h + i, lane % 8) for i in range(4)]


# PTX ISA, "ldmatrix": "each thread in the warp holds a fragment of a row of the matrix";
# for .m8n8 .b16 the row addresses come from threads 8j..8j+7 for matrix j, and thread t
# receives row t / 4, elements 2 (t % 4) and 2 (t % 4) + 1; .trans delivers the transpose.
def test_ldmatrix_source_matches_ptx():
    src, off = ldmatrix_source(4, trans=False)
    srct, offt = ldmatrix_source(4, trans=True)
    for t in range(32):
        for j in range(4):
            for e in range(2):
                assert (src[t, 2 * j + e], off[t, 2 * j + e]) == (8 * j + t // 4, 2 * (t % 4) + e)
                assert (srct[t, 2 * j + e], offt[t, 2 * j + e]) == (8 * j + 2 * (t % 4) + e, t // 4)


def test_ldmatrix_x4_gives_the_mma_a_fragment():
    """ldmatrix.x4 with lane l addressing row (l % 8) + 8 ((l / 8) % 2), col 8 (l / 16) of a
    16x16 A tile yields exactly a0..a7 of mma.m16n8k16 (the PTX fragment formulas above)."""
    src, off = ldmatrix_source(4, trans=False)
    lay = get_layout("nv_m16n8k16_b16")
    for t in range(32):
        for i in range(8):
            s = int(src[t, i])
            row, col0 = s % 8 + 8 * ((s // 8) % 2), 8 * (s // 16)
            assert (row, col0 + int(off[t, i])) == _pairs(lay.a, t)[i]


@pytest.mark.parametrize("name", ["h100-sxm", "h200", "a100-sxm", "mi300x", "mi250x-gcd",
                                  "scratch-npu"])
def test_specs_list_matrix_instructions(name):
    spec = load_spec(name)
    mi = spec.matrix_instruction("bf16", "bf16", "f32")
    assert mi is not None and mi.rate > 0
    assert LAYOUTS[mi.layout].lanes == spec.warp_size


def test_fp8_instructions():
    assert load_spec("h100-sxm").matrix_instruction("f8e4m3fn", "f8e4m3fn", "f32").k == 32
    # MI300X's fp8 MFMA reads FNUZ encodings: listed but not native for hal's OCP fp8
    mi = load_spec("mi300x")
    assert any(m.a == "f8e4m3fn" for m in mi.matrix_instructions)
    assert mi.matrix_instruction("f8e4m3fn", "f8e4m3fn", "f32") is None
    assert load_spec("a100-sxm").matrix_instruction("f8e4m3fn", "f8e4m3fn", "f32") is None


def _spec_dict(**extra):
    import yaml

    from hal.devices.loader import SPEC_DIR
    d = yaml.safe_load((SPEC_DIR / "h100-sxm.yaml").read_text())
    d.update(extra)
    return d


def test_bad_matrix_instruction_is_a_clear_error():
    bad = [{"name": "x", "shape": [16, 8, 16], "a": "bf16", "b": "bf16", "acc": "f32",
            "layout": "nv_m16n8k99"}]
    with pytest.raises(SpecError, match="unknown layout"):
        spec_from_dict(_spec_dict(matrix_instructions=bad))
    wave = [{"name": "x", "shape": [32, 32, 8], "a": "bf16", "b": "bf16", "acc": "f32",
             "layout": "amd_32x32x8_b16"}]
    with pytest.raises(SpecError, match="issued by 64 lanes"):
        spec_from_dict(_spec_dict(matrix_instructions=wave))
