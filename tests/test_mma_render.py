"""Matrix-unit kernels render to mma.sync / ldmatrix / cp.async (CUDA) and MFMA (HIP) helper
calls, and, where the compilers are installed, really hold HMMA / v_mfma instructions."""

from __future__ import annotations

import shutil

import pytest

from hal.backends.cuda.compiler import nvcc_resources
from hal.backends.cuda.render import render_cuda
from hal.backends.rocm.render import render_hip
from hal.devices.loader import load_spec
from hal.dtypes import dtype
from hal.fusion.plan import plan
from hal.ir.builder import GraphBuilder
from hal.lowering.registry import lower_group
from hal.render.disasm import count_instructions, cuobjdump_path


@pytest.fixture(autouse=True)
def _no_measure(monkeypatch):
    monkeypatch.setenv("HAL_MEASURE", "off")


def matmul_kernel(device: str, dt: str = "bf16", m: int = 4096, n: int = 4096, k: int = 4096,
                  transpose_b: bool = False):
    b = GraphBuilder("mm")
    x = b.input("a", dtype(dt), (m, k))
    w = b.input("b", dtype(dt), (n, k) if transpose_b else (k, n))
    b.output(b.op("matmul", x, w, transpose_b=transpose_b))
    spec = load_spec(device)
    group = next(g for g in plan(b.build(), spec).groups if g.kind == "matmul")
    (kern,) = lower_group(group, spec)
    return kern, spec


@pytest.mark.parametrize("device", ["h100-sxm", "h200", "a100-sxm", "mi300x", "mi250x-gcd",
                                    "scratch-npu"])
def test_bf16_matmul_uses_the_matrix_unit(device):
    kern, spec = matmul_kernel(device, m=256, n=256, k=256)
    p = kern.meta.plan
    hopper = spec.matrix_instruction("bf16", "bf16", "f32", "warpgroup")
    if hopper is not None:   # sm_90a: the wgmma kernel (tests/test_wgmma_render.py)
        assert p.strategy == "wgmma" and p.math.name == hopper.name
        return
    assert p.strategy == "mma"
    assert p.math.name == spec.matrix_instruction("bf16", "bf16", "f32").name
    # a cp.async multi-stage ring where the spec has async copies, else one stage plus a
    # register prefetch
    stages = max(sh.stages for sh in kern.shared)
    assert (stages > 1) == ("async_copy" in spec.capabilities)


def test_f32_matmul_stays_simt():
    kern, _ = matmul_kernel("h100-sxm", "f32", 256, 256, 256)
    assert kern.meta.plan.strategy == "smem_tiled"


def test_cuda_text_calls_ptx_helpers():
    kern, spec = matmul_kernel("a100-sxm")
    src = render_cuda(kern, spec)
    assert "#ifndef HAL_HOST_SHIM" in src
    for needle in ("hal_mma_m16n8k16_bf16_f32(", "mma.sync.aligned.m16n8k16.row.col.f32.bf16",
                   "hal_ldmatrix_x4_trans(", "ldmatrix.sync.aligned.m8n8.x4.shared.b16",
                   "hal_cp_async_16(", "cp.async.cg.shared.global", "hal_cp_async_wait<1>()"):
        assert needle in src, needle


def test_hip_text_calls_mfma_builtin():
    kern, spec = matmul_kernel("mi300x")
    src = render_hip(kern, spec)
    assert "hal_mfma_f32_32x32x8_bf16(" in src
    assert "__builtin_amdgcn_mfma_f32_32x32x8bf16_1k" in src


def test_no_renderer_helper_is_a_clear_error():
    from hal.errors import UnsupportedError
    kern, spec = matmul_kernel("mi300x", m=64, n=64, k=64)
    with pytest.raises(UnsupportedError, match="no device helper hal_mfma"):
        render_cuda(kern, spec)   # a wave64 MFMA kernel has no CUDA spelling


needs_nvcc = pytest.mark.skipif(not shutil.which("nvcc") or cuobjdump_path() is None,
                                reason="needs nvcc and cuobjdump (pip install "
                                       "nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm)")


@needs_nvcc
@pytest.mark.parametrize("arch", ["sm_80", "sm_90a"])
def test_sass_has_hmma(arch, tmp_path):
    kern, spec = matmul_kernel("a100-sxm")   # mma.sync (sm_90a specs take wgmma), both arches
    r = count_instructions(render_cuda(kern, spec), "cuda", arch, out_dir=tmp_path)
    assert not isinstance(r, str), r
    assert r.forms.get("HMMA.16816.F32.BF16", 0) > 0, r.forms
    assert r.counts.get("LDSM", 0) > 0 and r.counts.get("LDGSTS", 0) > 0, r.counts


@needs_nvcc
def test_main_gemm_does_not_spill(tmp_path):
    kern, spec = matmul_kernel("h100-sxm")   # the wgmma kernel
    (rec,) = nvcc_resources(render_cuda(kern, spec), "sm_90a", out_dir=tmp_path)
    assert rec.spill_bytes == 0 and rec.registers <= 255


@pytest.mark.skipif(not shutil.which("clang-19") and not shutil.which("hipcc"),
                    reason="needs clang-19 or hipcc")
@pytest.mark.parametrize("device,arch,form", [("mi300x", "gfx942", "v_mfma_f32_32x32x8_bf16"),
                                              ("mi250x-gcd", "gfx90a",
                                               "v_mfma_f32_32x32x8bf16_1k")])
def test_amdgpu_assembly_has_mfma(device, arch, form, tmp_path):
    if arch == "gfx942" and not shutil.which("clang-19"):
        pytest.skip("gfx942 needs clang-19")
    kern, spec = matmul_kernel(device)
    r = count_instructions(render_hip(kern, spec), "hip", arch, out_dir=tmp_path)
    assert not isinstance(r, str), r
    assert r.forms.get(form, 0) > 0, r.forms


# --------------------------------------------------------------------------- attention
_LLAMA: dict[str, object] = {}


def llama_attention_kernel(device: str):
    """The attention kernel of examples/llama_block_d4096_s2048.hal on `device` (rotary
    prologues, causal mask, GQA 32/8 heads, two-pass bf16 P)."""
    from pathlib import Path

    from hal.ir.text import load_graph

    if device not in _LLAMA:
        root = Path(__file__).resolve().parent.parent
        spec = load_spec(device)
        g = load_graph(root / "examples" / "llama_block_d4096_s2048.hal")
        group = next(x for x in plan(g, spec).groups if x.kind == "attention")
        (kern,) = lower_group(group, spec)
        _LLAMA[device] = (kern, spec)
    return _LLAMA[device]


# sm_80 and gfx942; on sm_90a the prefill attention takes the wgmma kernel instead
# (tests/test_attention_wgmma.py)
@pytest.mark.parametrize("device", ["a100-sxm", "mi300x"])
def test_llama_attention_plans_the_matrix_unit(device):
    kern, spec = llama_attention_kernel(device)
    p = kern.meta.plan
    assert p.strategy == "flash_attention_mma"
    names = {mi.name for mi in spec.matrix_instructions}
    assert p.math.matrix and p.math.name in names
    assert p.detail("mma_choice").instruction.name == p.math.name
    # the roofline prices Q K^T and P V at the matrix rate, the softmax on the vector units
    kinds = {inst.kind.value for inst, _f in p.flops_by_math}
    assert kinds == {"matrix", "simt_fma"}
    assert sum(f for _i, f in p.flops_by_math) == pytest.approx(p.flops)


def test_llama_attention_cuda_text_has_mma_and_ldmatrix():
    kern, spec = llama_attention_kernel("a100-sxm")
    src = render_cuda(kern, spec)
    for needle in ("hal_mma_m16n8k16_bf16_f32(", "hal_ldmatrix_x4(", "hal_ldmatrix_x4_trans("):
        assert needle in src, needle


@needs_nvcc
def test_llama_attention_sass_has_hmma_without_spills(tmp_path):
    kern, spec = llama_attention_kernel("a100-sxm")
    src = render_cuda(kern, spec)
    r = count_instructions(src, "cuda", "sm_80", out_dir=tmp_path)
    assert not isinstance(r, str), r
    assert r.forms.get("HMMA.16816.F32.BF16", 0) > 0, r.forms
    assert r.counts.get("LDSM", 0) > 0, r.counts
    (rec,) = nvcc_resources(src, "sm_80", out_dir=tmp_path)
    assert rec.spill_bytes == 0 and rec.registers <= 255, rec


@pytest.mark.skipif(not shutil.which("clang-19"), reason="gfx942 needs clang-19")
def test_llama_attention_gfx942_has_mfma_without_spills(tmp_path):
    from hal.backends.rocm.compiler import clang_resources

    kern, spec = llama_attention_kernel("mi300x")
    src = render_hip(kern, spec)
    r = count_instructions(src, "hip", "gfx942", out_dir=tmp_path)
    assert not isinstance(r, str), r
    assert r.forms.get("v_mfma_f32_16x16x16_bf16", 0) > 0, r.forms
    (rec,) = clang_resources(src, "gfx942", out_dir=tmp_path)
    assert rec.spill_bytes == 0, rec
