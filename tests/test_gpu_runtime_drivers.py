"""The pure parts of CudaDriver / HipDriver (call sequences against stand-in binding modules,
error translation, arch and compiler choice), real NVRTC / hipcc compiles of a whole graph,
the measured-register fusion veto. No GPU needed (gpu_check.sh: tests/test_gpu_check.py)."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from hal.backends.cuda.driver import CudaDriver, arch_for
from hal.backends.cuda.driver import check as cu_check
from hal.backends.rocm.driver import HipDriver, choose_compiler, compile_genco
from hal.backends.rocm.driver import check as hip_check
from hal.devices.loader import load_spec
from hal.errors import CompileError, DeviceError, UnsupportedError
from hal.fusion import plan
from hal.fusion.measured import choose, measuring_compiler
from hal.gpu_runner import GpuRunner
from hal.ir.text import load_graph

ROOT = Path(__file__).resolve().parents[1]
H100 = load_spec("h100-sxm")


class Recorder:
    """A stand-in bindings module: every function returns (success, a handle) and is logged."""

    def __init__(self, fail: str | None = None, err: int = 1):
        self.calls: list[tuple] = []
        self.fail, self.err = fail, err
        self.CUdevice_attribute = SimpleNamespace(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR=75,
                                                  CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR=76)
        self.CUfunction_attribute = SimpleNamespace(
            CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES=8)
        self.hipMemcpyKind = SimpleNamespace(hipMemcpyHostToDevice=1, hipMemcpyDeviceToHost=2)

    def __getattr__(self, name):
        def call(*args):
            self.calls.append((name, *args))
            if name == self.fail:
                return (self.err,)
            if name in ("cuGetErrorName",):
                return (0, b"CUDA_ERROR_OUT_OF_MEMORY")
            if name == "hipGetErrorString":
                return "hipErrorOutOfMemory"
            if name == "cuDeviceGetAttribute":
                return (0, 9 if args[0] == 75 else 0)
            if name == "hipRuntimeGetVersion":
                return (0, 60_200_000)
            if name == "cuEventElapsedTime":
                return (0, 1.5)
            return (0, 0x7000 + len(self.calls))
        return call


def test_cuda_driver_call_sequence():
    cu = Recorder()
    d = CudaDriver(cu=cu)
    assert d.arch(H100) == "sm_90a"
    ptr = d.alloc(64)
    d.memset_zero(ptr, 64)
    d.copy_in(ptr, np.arange(16, dtype=np.float32))
    host = np.empty(16, np.float32)
    d.copy_out(host, ptr)
    fn = d.get_function(d.load_module(b"cubin"), SimpleNamespace(name="k0_add"))
    d.set_dynamic_shared(fn, 100_000)
    d.launch(fn, (3, 2, 1), 256, 100_000, 0xABC)
    a, b = d.event(), d.event()
    d.record(a)
    d.record(b)
    assert d.elapsed_s(a, b) == pytest.approx(1.5e-3)
    names = [c[0] for c in cu.calls]
    assert names[:3] == ["cuInit", "cuDeviceGet", "cuDevicePrimaryCtxRetain"]
    assert names.index("cuCtxSetCurrent") < names.index("cuMemAlloc")
    launch = next(c for c in cu.calls if c[0] == "cuLaunchKernel")
    assert launch[1:] == (fn, 3, 2, 1, 256, 1, 1, 100_000, 0, 0xABC, 0)
    assert ("cuFuncSetAttribute", fn, 8, 100_000) in cu.calls
    assert ("cuModuleGetFunction", cu.calls[[c[0] for c in cu.calls].index(
        "cuModuleGetFunction")][1], b"k0_add") in cu.calls
    htod = next(c for c in cu.calls if c[0] == "cuMemcpyHtoDAsync")
    assert htod[1] == ptr and htod[3:] == (64, 0)  # on the stream (legacy: no torch CUDA)


def test_cuda_errors_become_device_errors():
    d = CudaDriver(cu=Recorder(fail="cuMemAlloc", err=2))
    with pytest.raises(DeviceError, match=r"cuMemAlloc\(64\) failed: CUDA_ERROR_OUT_OF_MEMORY"):
        d.alloc(64)
    assert cu_check(Recorder(), (0, 5), "x") == 5
    assert cu_check(Recorder(), (0,), "x") is None


def test_arch_for_keeps_the_spec_arch_or_explains():
    assert arch_for("sm_90a", 9, 0) == "sm_90a"
    assert arch_for("sm_80", 8, 0) == "sm_80"
    with pytest.raises(DeviceError, match="the GPU is sm_80, the device spec says sm_90a"):
        arch_for("sm_90a", 8, 0)


def test_hip_driver_call_sequence_and_errors():
    hip = Recorder()
    d = HipDriver(hip=hip, compiler="hipcc")
    ptr = d.alloc(32)
    d.copy_in(ptr, np.zeros(8, np.float32))
    fn = d.get_function(d.load_module(b"co"), SimpleNamespace(name="k"))
    d.launch(fn, (4, 1, 1), 64, 0, 0xDEF)
    launch = next(c for c in hip.calls if c[0] == "hipModuleLaunchKernel")
    assert launch[1:] == (fn, 4, 1, 1, 64, 1, 1, 0, None, 0xDEF, None)
    assert hip.calls[0][0] == "hipSetDevice"
    memcpy = next(c for c in hip.calls if c[0] == "hipMemcpyAsync")
    assert memcpy[1] == ptr and memcpy[3:] == (32, 1, None)  # the null stream: no torch HIP
    assert ("hipStreamSynchronize", None) in hip.calls
    with pytest.raises(DeviceError, match="hipMalloc.*hipErrorOutOfMemory"):
        HipDriver(hip=Recorder(fail="hipMalloc"), compiler="hipcc").alloc(8)
    assert hip_check(hip, (0, 3), "x") == 3


def test_hip_driver_queues_everything_on_the_framework_stream():
    hip = Recorder()
    d = HipDriver(hip=hip, compiler="hipcc", stream_source=lambda index: 0x5EA)
    ptr = d.alloc(32)
    d.memset_zero(ptr, 32)
    d.copy_in(ptr, np.zeros(8, np.float32))
    d.copy_out(np.empty(8, np.float32), ptr)
    fn = d.get_function(d.load_module(b"co"), SimpleNamespace(name="k"))
    d.launch(fn, (1, 1, 1), 64, 0, 0xDEF)
    d.record(d.event())
    d.synchronize()
    streams = {c[0]: c[-1] for c in hip.calls if c[0] in (
        "hipMemsetAsync", "hipMemcpyAsync", "hipStreamSynchronize", "hipEventRecord")}
    assert streams == dict.fromkeys(
        ("hipMemsetAsync", "hipMemcpyAsync", "hipStreamSynchronize", "hipEventRecord"), 0x5EA)
    launch = next(c for c in hip.calls if c[0] == "hipModuleLaunchKernel")
    assert launch[9] == 0x5EA
    assert not any(c[0] in ("hipMemcpy", "hipMemset", "hipDeviceSynchronize")
                   for c in hip.calls)


def test_torch_stream_is_taken_only_from_a_build_for_the_same_vendor(monkeypatch):
    from hal.gpu_runner import torch_current_stream

    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_stream",
                        lambda i: SimpleNamespace(cuda_stream=0x100 + i))
    monkeypatch.setattr(torch.version, "hip", None)
    assert torch_current_stream(0, "cuda") == 0x100 and torch_current_stream(0, "hip") == 0
    monkeypatch.setattr(torch.version, "hip", "6.2")
    assert torch_current_stream(1, "hip") == 0x101 and torch_current_stream(1, "cuda") == 0


def test_hip_compiler_choice():
    assert choose_compiler(60_200_000, True, True) == "hiprtc"
    assert choose_compiler(50_221_153, True, True) == "hipcc"  # ROCm 5.2 hipRTC crashes
    assert choose_compiler(50_221_153, True, False) == "hiprtc"
    assert choose_compiler(None, False, False, forced="hipcc") == "hipcc"
    with pytest.raises(CompileError):
        choose_compiler(None, False, False)
    with pytest.raises(CompileError):
        choose_compiler(None, True, True, forced="nvcc")


class _CompileOnly(CudaDriver):
    """Real compiler, no device: the runner stops after compiling (load_module raises)."""

    def load_module(self, binary):
        self.binary = binary
        raise _Stop


class _Stop(Exception):
    pass


def _compile_graph(driver, renderer):
    g = load_graph(str(ROOT / "examples" / "tiny_gpt.hal"))
    with pytest.raises(_Stop):
        GpuRunner(driver, renderer).prepare(g, {"tokens": np.zeros(32, np.int32)}, H100)
    return driver.binary


def test_nvrtc_compiles_the_whole_graph_in_one_module():
    from hal.backends.cuda.compiler import nvrtc_available
    from hal.backends.cuda.render import CudaRenderer

    if nvrtc_available():
        pytest.skip(nvrtc_available())
    d = _CompileOnly(cu=Recorder())
    d.arch = lambda spec: spec.arch  # no device to ask
    cubin = _compile_graph(d, CudaRenderer())
    assert cubin[:4] == b"\x7fELF"


@pytest.mark.skipif(shutil.which("hipcc") is None, reason="hipcc not installed")
def test_hipcc_genco_builds_a_code_object(tmp_path):
    from hal.backends.rocm.render import render_hip_module
    from hal.lowering import lower_group

    spec = load_spec("mi250x-gcd")
    g = load_graph(str(ROOT / "examples" / "mlp.hal"))
    p = plan(g, spec, measure=None)
    ks = [k for grp in p.groups[:2] for k in lower_group(grp, spec)]
    code = compile_genco(render_hip_module(ks, spec), "gfx90a", name="mlp")
    # a clang offload bundle (what hipModuleLoadData takes as a fat binary) or a bare ELF
    assert code.startswith((b"__CLANG_OFFLOAD_BUNDLE__", b"\x7fELF"))
    assert b"gfx90a" in code


def test_measure_choice():
    assert choose(None, H100, 3) is None and choose("off", H100, 3) is None
    assert choose("auto", H100, 0) is None and choose("auto", H100, 65) is None
    with pytest.raises(UnsupportedError):
        choose("on", dataclasses.replace(H100, vendor="nobody"), 3)


@pytest.mark.skipif(measuring_compiler(H100) is None, reason="no nvcc/NVRTC to measure with")
def test_forced_spill_changes_the_plan_and_names_the_compiler(monkeypatch):
    monkeypatch.delenv("HAL_MEASURE", raising=False)
    g = load_graph(str(ROOT / "examples" / "tiny_gpt.hal"))
    tight = dataclasses.replace(H100, max_registers_per_thread=32)
    before = plan(g, tight, measure=None)
    after = plan(g, tight, measure="on")
    assert [x.ops for x in after.groups] != [x.ops for x in before.groups]
    vetoes = [d for d in after.decisions if not d.fused and "reports" in d.reason]
    assert vetoes and all("ptxas" in d.reason and "sm_90a" in d.reason for d in vetoes)
    assert any(m.get("registers", 0) > 32 for m in after.measured)
    ok = plan(g, H100, measure="on")  # the real limit: nothing vetoed, reasons say why
    assert not [d for d in ok.decisions if "reports" in d.reason]
    assert any("ptxas" in r for x in ok.groups for r in x.reasons)
