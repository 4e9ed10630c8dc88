"""Real compilers on rendered kernels: nvcc (sm_80, sm_90a), NVRTC, hipcc (gfx90a) and
clang-19 (gfx942) compile a representative set without warnings; resource reports parse;
limits, broken sources and the compile cache behave. Each compiler call batches many
kernels into one translation unit. Missing compilers skip with the install step."""

from __future__ import annotations

import pytest

from hal.backends.cuda.compiler import NvrtcOptions, compile_nvrtc, nvcc_available, nvrtc_available
from hal.backends.rocm.compiler import clang_available, hipcc_available
from hal.devices.loader import load_spec
from hal.dtypes import f32
from hal.errors import CompileError
from hal.kernel.ir import Const, SharedBuffer
from hal.render.check import ResourceLimitError, check_kernel, check_kernels
from hal.render.cstyle import unique_names
from hal.render.toolchain import CompileCache
from tests.test_render import _scalar_kernel, example_kernels, primitive_kernels


def _need(reason):
    if reason:
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HAL_CACHE_DIR", str(tmp_path / "cache"))


def _representative(spec_name):
    ks = primitive_kernels(spec_name) + example_kernels(spec_name)
    return unique_names(ks, lambda i: f"u{i}_")


@pytest.mark.parametrize("compiler,spec_name,arch", [
    ("nvcc", "a100-sxm", "sm_80"), ("nvcc", "h100-sxm", "sm_90a"),
    ("nvrtc", "h100-sxm", "sm_90a"),
    ("hipcc", "mi250x-gcd", "gfx90a"), ("clang-19", "mi300x", "gfx942"),
])
def test_compiles_without_warnings(compiler, spec_name, arch):
    _need({"nvcc": nvcc_available, "nvrtc": nvrtc_available, "hipcc": hipcc_available,
           "clang-19": clang_available}[compiler]())
    spec = load_spec(spec_name)
    ks = _representative(spec_name)
    # limits are reported per record here (a spill is a finding for the lowering, not a
    # renderer failure); compile errors and warnings still raise
    recs = check_kernels(ks, spec, [compiler], arch=arch, name=f"rep_{spec_name}",
                         raise_on_limit=False)
    assert {r.kernel for r in recs} == {k.name for k in ks}
    for r in recs:
        assert r.arch == arch and r.registers is not None and r.registers > 0
        assert r.shared_bytes is not None
        assert r.status == "ok" or r.notes


def test_shared_memory_over_the_limit_is_rejected():
    spec = load_spec("h100-sxm")
    k = _scalar_kernel(Const(0.0, f32))
    k.name = "too_big"
    k.shared = [SharedBuffer("tile", f32, 300 * 1024 // 4)]
    with pytest.raises(ResourceLimitError) as e:
        check_kernel(k, spec, compilers=[])
    msg = str(e.value)
    assert "too_big" in msg and "307200 bytes" in msg and "232448 bytes" in msg


def test_broken_source_raises_compile_error_with_log_source_and_repro():
    _need(nvcc_available())
    from hal.backends.cuda.compiler import nvcc_resources

    with pytest.raises(CompileError) as e:
        nvcc_resources('extern "C" __global__ void k(float* a) { a[0] = undefined_name; }',
                       "sm_90a", name="broken")
    err = e.value
    assert "undefined_name" in err.log and err.source_path.endswith(".cu")
    assert err.command.startswith("nvcc -cubin -arch=sm_90a")


def test_warning_fails_nvrtc():
    _need(nvrtc_available())
    with pytest.raises(CompileError, match="warning"):
        compile_nvrtc('extern "C" __global__ void k(float* a) { int unused = 1; a[0] = 1.f; }',
                      NvrtcOptions(arch="sm_80"))


def test_nvrtc_cache_hit_on_second_compile(tmp_path):
    _need(nvrtc_available())
    cache = CompileCache(tmp_path / "c")
    src = 'extern "C" __global__ void k(float* a) { a[threadIdx.x] = 2.f; }'
    first, _ = compile_nvrtc(src, NvrtcOptions(arch="sm_90a"), cache=cache)
    assert cache.hits == 0
    second, _ = compile_nvrtc(src, NvrtcOptions(arch="sm_90a"), cache=cache)
    assert cache.hits >= 1 and first == second and first[:4] == b"\x7fELF"
    with pytest.raises(ValueError):
        NvrtcOptions(arch="sm_7x")
