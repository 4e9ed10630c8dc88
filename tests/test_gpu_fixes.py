"""The runtime items of issue 20, each pinned without a GPU: the real CudaDriver / HipDriver
over recording stand-ins (tests/fake_cuda.py refuses what a GPU refuses), real NVRTC, the
lowering's grid limits on the CPU simulator, and the benchmark runner's L2 flush."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fake_cuda import FakeCuda, FakeCudaDriver

from hal.backend import Availability
from hal.backends.cpu_sim.checks import SimulationError, check_launch
from hal.backends.cuda.backend import CudaBackend
from hal.backends.cuda.compiler import NvrtcOptions, compile_nvrtc, cuda_include_dir
from hal.backends.cuda.render import CudaRenderer
from hal.backends.rocm.driver import HipDriver
from hal.backends_registry import get_backend
from hal.devices.loader import load_spec
from hal.dtypes import f32
from hal.errors import DeviceError
from hal.fusion import plan
from hal.gpu_runner import DLPACK_CUDA, GpuRunner, device_pointer
from hal.ir.text import load_graph, parse_graph
from hal.lowering import lower_group
from hal.render.toolchain import CompileCache

ROOT = Path(__file__).resolve().parents[1]
H200 = load_spec("h200")
TINY_GPT = ROOT / "examples" / "tiny_gpt.hal"
TOKENS = {"tokens": np.arange(32, dtype=np.int32) * 7 % 512}


class FakeBackend(CudaBackend):
    """CudaBackend whose driver is the real CudaDriver over FakeCuda."""

    def __init__(self, driver):
        super().__init__()
        self._driver = driver
        self._availability = Availability(True, "FakeCuda")


def _fake(**kw):
    fake = FakeCuda(H200, **kw)
    return fake, FakeCudaDriver(fake)


def _kernels(text, spec=H200):
    g = parse_graph(text)
    return g, [k for grp in plan(g, spec, measure=None).groups for k in lower_group(grp, spec)]


# --------------------------------------------------------------------------- grid limits

BMM = """graph bmm {
  input %a: f32[B, 4, 8]
  input %b: f32[B, 8, 4]
  %c = matmul(%a, %b)
  output %c
}"""
ATTN = """graph attn {
  input %q: f32[B, 4, 16, 16]
  input %k: f32[B, 4, 16, 16]
  input %v: f32[B, 4, 16, 16]
  %o = scaled_dot_product_attention(%q, %k, %v, causal=true, scale=none)
  output %o
}"""


@pytest.mark.parametrize("text,batch", [(BMM, 70000), (ATTN, 17000)])
def test_long_batches_lower_within_the_grid_limits(text, batch):
    _, ks = _kernels(text.replace("B", str(batch)))
    assert ks
    for k in ks:
        assert k.grid[1] <= 65535 and k.grid[2] <= 65535, (k.name, k.grid)
        check_launch(k, H200)  # the simulator's launch check accepts it too
    assert any(k.meta.grid_folded is not None for k in ks)


@pytest.mark.parametrize("text", [BMM, ATTN])
def test_folded_grids_compute_the_same_result(text):
    small = dataclasses.replace(H200, max_grid=(2**31 - 1, 3, 3))  # fold at toy sizes
    g, ks = _kernels(text.replace("B", "5"), small)
    assert any(k.meta.grid_folded is not None for k in ks)
    rng = np.random.default_rng(0)
    inputs = {v.name: rng.standard_normal(v.shape).astype(np.float32) for v in g.inputs}
    res = get_backend("cpu_sim").run_graph(g, inputs, small)
    assert res.report["ok"], res.report


def test_launch_checks_refuse_grid_y_z_over_65535():
    _, ks = _kernels(BMM.replace("B", "8"))
    k = dataclasses.replace(ks[0], grid=(1, 1, 70000))
    with pytest.raises(SimulationError, match=r"grid \(1, 1, 70000\).*z=70000 \(limit 65535\)"):
        check_launch(k, H200)
    fake, d = _fake()
    fn = d.get_function(d.load_module(CudaRenderer().render(k, H200).encode()), k)
    with pytest.raises(DeviceError, match="cuLaunchKernel failed: CUDA_ERROR_INVALID_VALUE"):
        d.launch(fn, (1, 1, 70000), k.block, 0, 0)
    with pytest.raises(DeviceError, match="INVALID_VALUE"):
        d.launch(fn, (1, 65536, 1), k.block, 0, 0)


def test_max_grid_is_spec_data():
    import yaml

    from hal.devices.loader import spec_from_dict
    from hal.errors import SpecError

    data = yaml.safe_load((ROOT / "hal" / "devices" / "specs" / "h200.yaml").read_text())
    assert spec_from_dict(data).max_grid == (2**31 - 1, 65535, 65535)
    assert spec_from_dict({**data, "max_grid": [1024, 8, 8]}).max_grid == (1024, 8, 8)
    with pytest.raises(SpecError, match="max_grid"):
        spec_from_dict({**data, "max_grid": [1, 2]})


# --------------------------------------------------------------------------- device tensors


class _TorchLikeTensor:
    """What a torch CUDA tensor looks like to hal, with the interface torch refuses."""

    def __init__(self, ptr, shape, dtype, itemsize, refuse, device=0):
        self.ptr, self.shape, self.dtype, self._itemsize = ptr, shape, dtype, itemsize
        self.refuse, self.device = refuse, device

    def __dlpack_device__(self):
        return (DLPACK_CUDA, self.device)

    @property
    def __cuda_array_interface__(self):
        raise self.refuse

    def data_ptr(self):
        return self.ptr

    def is_contiguous(self):
        return True

    def element_size(self):
        return self._itemsize


def test_fp8_and_requires_grad_tensors_pass_by_data_ptr():
    from hal.dtypes import dtype

    _, d = _fake()
    fp8 = _TorchLikeTensor(0x10000, (8,), "torch.float8_e4m3fn", 1,
                           KeyError("float8_e4m3fn"))  # torch: no typestr for fp8
    assert device_pointer(fp8, d, dtype("f8e4m3fn"), 8) == 0x10000
    grad = _TorchLikeTensor(0x20000, (4,), "torch.float32", 4, RuntimeError(
        "Can't get __cuda_array_interface__ on Variable that requires grad"))
    assert device_pointer(grad, d, f32, 4) == 0x20000
    with pytest.raises(DeviceError, match="does not match"):
        device_pointer(fp8, d, dtype("f8e5m2"), 8)  # fp8 names are still checked


def test_a_tensor_on_another_device_is_refused():
    _, d = _fake(devices=2)
    t = _TorchLikeTensor(0x10000, (4,), "torch.float32", 4, KeyError("x"), device=1)
    with pytest.raises(DeviceError, match="device 1 given to the backend on device 0"):
        device_pointer(t, d, f32, 4)


# --------------------------------------------------------------------------- L2 flush


def test_l2_flush_is_a_device_memset_of_the_devices_l2_and_is_freed(monkeypatch):
    import hal.backends_registry
    from hal.bench.cases import make_case
    from hal.bench.runner import run_case

    fake, d = _fake(l2_bytes=1 << 20)  # the device says 1 MiB; the spec says 60 MB
    be = FakeBackend(d)
    monkeypatch.setattr(hal.backends_registry, "get_backend", lambda name, **kw: be)
    case = make_case("exp", ["1024"], "f32")
    r = run_case(case, "fake-cuda-l2", H200, repeat=3, warmup=1, flush_l2=True)
    assert r.method == "measured (device events)" and len(r.times_s) == 3
    flushes = [c for c in fake.calls if c[0] == "cuMemsetD8Async" and c[4] == 2 << 20]
    assert len(flushes) >= 3
    assert not [c for c in fake.calls if c[0] == "cuMemcpyHtoDAsync" and c[4] == 2 << 20]
    assert any("device's L2 (1.0 MB)" in n for n in r.notes)
    assert not fake.mem  # the flush buffer and the graph's buffers are freed


# --------------------------------------------------------------------------- NVRTC


def _nvrtc():
    from hal.backends.cuda.compiler import nvrtc_available

    if nvrtc_available():
        pytest.skip(nvrtc_available())


@pytest.mark.parametrize("opt", [0, 1, 3])
def test_nvrtc_accepts_every_opt_level(opt, tmp_path):
    _nvrtc()
    src = 'extern "C" __global__ void k(float* x) { x[threadIdx.x] = 1.0f; }\n'
    cubin, log = compile_nvrtc(src, NvrtcOptions(arch="sm_90a", opt_level=opt),
                               cache=CompileCache(root=tmp_path, namespace="t"))
    assert cubin[:4] == b"\x7fELF" and "Compiling entry function 'k'" in log


def test_cuda_headers_found_through_cuda_pathfinder(monkeypatch, tmp_path):
    import cuda.pathfinder

    inc = tmp_path / "nvidia" / "cu13" / "include"
    inc.mkdir(parents=True)
    (inc / "cuda_fp16.h").write_text("// pip wheel's header\n")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvcc
    monkeypatch.setattr(cuda.pathfinder, "find_nvidia_header_directory",
                        lambda name: str(inc) if name == "cudart" else None)
    assert cuda_include_dir() == str(inc)


# --------------------------------------------------------------------------- shared memory


def test_single_kernel_over_48k_dynamic_shared_is_opted_in_and_passed():
    from hal.fusion.group import make_group
    from hal.ops.decompose import decompose_graph

    g = parse_graph("""graph sm {
  input %x: bf16[2, 32768]
  %y = softmax(%x, axis=-1)
  output %y
}""")
    # the whole softmax as one row-reduction kernel (the planner may split a 2-row softmax
    # for occupancy instead): its row cache is 128 KiB of dynamic shared memory
    prim = decompose_graph(g)
    ks = lower_group(make_group(prim, prim.nodes, "sm"), H200)
    big = [k for k in ks if k.shared_bytes > 48 * 1024]
    assert big, [k.shared_bytes for k in ks]
    fake, d = _fake()
    be = FakeBackend(d)
    x = np.random.default_rng(0).standard_normal((2, 32768)).astype(np.float32)
    from hal.dtypes import bf16, cast

    xb = np.asarray(cast(x, bf16))
    for k in ks:
        ck = be.compile(k, H200)
        fn = ck.handle
        assert fake.functions[fn]["max_dyn"] >= k.shared_bytes or k.shared_bytes <= 48 * 1024
    k = big[0]
    ck = be.compile(k, H200)
    bufs = []
    for p in k.params:
        b = be.allocate(p.numel * p.dtype.itemsize, p.dtype, p.shape)
        if p.readonly:
            be.copy_in(b, xb)
        bufs.append(b)
    be.launch(ck, bufs, k.grid, (k.block,))  # no shared_bytes given: the backend knows
    be.synchronize()
    assert fake.launches[-1]["shared"] == k.shared_bytes and not fake.faults
    y = be.copy_out(bufs[-1]).astype(np.float32).reshape(2, 32768)
    ref = np.exp(x - x.max(-1, keepdims=True))
    np.testing.assert_allclose(y, ref / ref.sum(-1, keepdims=True), rtol=2e-2, atol=1e-6)


# --------------------------------------------------------------------------- context, stream


def test_the_context_is_made_current_in_every_thread():
    fake, d = _fake()
    d.alloc(64)  # main thread
    out: dict = {}

    def worker():
        try:
            out["ptr"] = d.alloc(64)
            res = GpuRunner(d, CudaRenderer()).run(load_graph(str(TINY_GPT)), TOKENS, H200)
            out["ok"] = res.report["ok"]
        except Exception as e:  # noqa: BLE001 - reported below
            out["error"] = e

    t = threading.Thread(target=worker, name="hal-worker")
    t.start()
    t.join()
    assert "error" not in out, out.get("error")
    assert out["ok"]
    sets = {c[1] for c in fake.calls if c[0] == "cuCtxSetCurrent"}
    assert sets == {"MainThread", "hal-worker"}


def test_work_is_queued_on_torchs_current_stream():
    torch_stream = 0x5EED
    fake = FakeCuda(H200)
    d = FakeCudaDriver(fake, stream_source=lambda index: torch_stream)
    g = parse_graph("graph ew {\n  input %x: f32[256]\n  %y = mul(%x, %x)\n  output %y\n}")
    x = np.arange(256, dtype=np.float32)
    ptr = d.alloc(x.nbytes)
    fake.torch_write(ptr, x, torch_stream)  # torch filled it on its stream, asynchronously
    tx = _TorchLikeTensor(ptr, (256,), "torch.float32", 4, KeyError("none"))
    res = GpuRunner(d, CudaRenderer()).run(g, {"x": tx}, H200)
    assert res.report["ok"]
    assert {ln["stream"] for ln in fake.launches} == {torch_stream}
    assert not fake.unordered, fake.unordered


def test_torch_current_stream_is_read_only_when_torch_initialised_cuda(monkeypatch):
    from hal.backends.cuda.driver import torch_current_stream

    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    assert torch_current_stream(0) == 0
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_stream",
                        lambda i: SimpleNamespace(cuda_stream=0xABC + i))
    assert torch_current_stream(1) == 0xABD


# --------------------------------------------------------------------------- faults


def _faulting_run(monkeypatch, sync_each):
    from hal.render.cstyle import kernel_symbol

    monkeypatch.setenv("HAL_SYNC_EACH", "1" if sync_each else "0")
    fake, d = _fake()
    g = load_graph(str(TINY_GPT))
    runner = GpuRunner(d, CudaRenderer())
    pg = runner.prepare(g, TOKENS, H200)
    victim = kernel_symbol(pg.launches[2].kernel)
    pg.free()
    fake.fault_on.add(victim)
    with pytest.raises(DeviceError) as info:
        runner.run(g, TOKENS, H200)
    return fake, victim, info.value


def test_sync_each_names_the_faulting_kernel(monkeypatch):
    fake, victim, err = _faulting_run(monkeypatch, sync_each=True)
    assert f"kernel {victim} (group" in str(err) and "CUDA_ERROR_ILLEGAL_ADDRESS" in str(err)
    assert fake.launches[-1]["symbol"] == victim  # stopped right after it


def test_the_first_error_survives_cleanup(monkeypatch):
    fake, victim, err = _faulting_run(monkeypatch, sync_each=False)
    assert "cuStreamSynchronize failed: CUDA_ERROR_ILLEGAL_ADDRESS" in str(err)
    assert "HAL_SYNC_EACH=1" in str(err)
    assert any("free(s) failed too" in n for n in getattr(err, "__notes__", []))
    assert [c for c in fake.calls if c[0] == "cuMemFree"]  # cleanup was attempted


# --------------------------------------------------------------------------- names, ROCm


def test_a_hal_prefixed_kernel_is_found_by_its_rendered_symbol():
    from hal.render.cstyle import kernel_symbol

    _, ks = _kernels("graph t {\n  input %x: f32[64]\n  %y = exp(%x)\n  output %y\n}")
    k = dataclasses.replace(ks[0], name="hal_exp")
    assert kernel_symbol(k) == "hal_exp_" and "hal_exp_(" in CudaRenderer().render(k, H200)
    fake, d = _fake()
    be = FakeBackend(d)
    ck = be.compile(k, H200)
    x, y = be.allocate(256, f32, (64,)), be.allocate(256, f32, (64,))
    be.copy_in(x, np.zeros(64, np.float32))
    be.launch(ck, [x, y], k.grid, (k.block,))
    np.testing.assert_array_equal(be.copy_out(y), np.ones(64, np.float32))


class _Hip:
    """A hip-python stand-in that reports a device arch."""

    def __init__(self, gcn):
        self.gcn = gcn
        self.hipDeviceProp_t = lambda: SimpleNamespace(gcnArchName=b"")

    def hipSetDevice(self, i):
        return (0,)

    def hipGetDeviceProperties(self, props, i):
        props.gcnArchName = self.gcn
        return (0,)


def test_rocm_driver_compares_the_spec_arch_with_gcn_arch_name():
    from hal.backends.rocm.driver import gcn_arch_base

    assert gcn_arch_base(b"gfx90a:sramecc+:xnack-\0\0") == "gfx90a"
    d = HipDriver(hip=_Hip(b"gfx90a:sramecc+:xnack-"), compiler="hipcc")
    assert d.arch(load_spec("mi250x-gcd")) == "gfx90a"
    with pytest.raises(DeviceError, match="the GPU is gfx90a, the device spec says gfx942"):
        d.arch(load_spec("mi300x"))


# --------------------------------------------------------------------------- the benchmark's kernels


def test_decode_attention_compiles_without_warnings():
    """The split-K statistics pass keeps the flash kernel's buffers it never reads; NVRTC's
    "set but never used" warning failed the decode comparison's compile (warnings fail)."""
    _nvrtc()
    from hal.backends.cuda.render import render_cuda_module

    _, ks = _kernels("""graph decode {
  input %q: bf16[8, 32, 1, 128]
  input %k: bf16[8, 8, 8192, 128]
  input %v: bf16[8, 8, 8192, 128]
  %o = scaled_dot_product_attention(%q, %k, %v, causal=false, scale=none)
  output %o
}""")
    assert any(k.name.endswith("_stats") for k in ks), [k.name for k in ks]
    source = render_cuda_module(ks, H200)
    cubin, log = compile_nvrtc(source, NvrtcOptions(arch="sm_90a"), name="decode")
    assert cubin[:4] == b"\x7fELF" and "warning" not in log
    assert "[[maybe_unused]]" in source


def test_bf16_gemm_lowers_through_the_matrix_unit_for_h200():
    """The GEMM comparison's path: after the LoweringOptions change, the matrix-unit
    lowering still called the removed `faults.active` (AttributeError at lowering)."""
    g, ks = _kernels("""graph gemm {
  input %a: bf16[64, 64]
  input %b: bf16[64, 64]
  %c = matmul(%a, %b)
  output %c
}""")
    assert len(ks) == 1
    rng = np.random.default_rng(0)
    from hal.dtypes import bf16, cast

    inputs = {v.name: np.asarray(cast(rng.standard_normal(v.shape), bf16)) for v in g.inputs}
    res = get_backend("cpu_sim").run_graph(g, inputs, H200)
    assert res.report["ok"], res.report
