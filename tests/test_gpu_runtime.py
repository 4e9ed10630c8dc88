"""hal.gpu_runner with a fake driver: every kernel launch is decoded from its packed void**
argument array (typed by the rendered C signature) and executed on the CPU simulator, so a
correct run_graph proves the argument marshalling, buffer plumbing and ordering.
Real-GPU tests at the end skip without a GPU."""

from __future__ import annotations

import ctypes
import re
import time

import numpy as np
import pytest

from hal.backends.cpu_sim.simulator import simulate
from hal.backends.cuda.backend import CudaBackend
from hal.backends.cuda.render import CudaRenderer
from hal.backends.rocm.backend import RocmBackend
from hal.backends.rocm.render import HipRenderer
from hal.devices.loader import load_spec
from hal.dtypes import bf16, f16, f32, i32
from hal.dtypes import dtype as as_dtype
from hal.errors import DeviceError
from hal.gpu_runner import (
    DLPACK_CUDA,
    DLPACK_ROCM,
    GpuBackend,
    GpuDriver,
    GpuRunner,
    device_pointer,
    pack_args,
    scalar_arg,
)
from hal.ir.text import load_graph, parse_graph
from hal.kernel.ir import BufferParam, Kernel, KernelMeta, ScalarParam

H100 = load_spec("h100-sxm")
_SIG = re.compile(r'extern "C" __global__ void \S+\s+(\w+)\(([^)]*)\)')
_C_SCALARS = {"float": ctypes.c_float, "double": ctypes.c_double, "int": ctypes.c_int32,
              "long long": ctypes.c_int64, "short": ctypes.c_int16, "signed char": ctypes.c_int8,
              "unsigned char": ctypes.c_uint8, "bool": ctypes.c_bool, "__half": ctypes.c_uint16,
              "__nv_bfloat16": ctypes.c_uint16, "hip_bfloat16": ctypes.c_uint16}


class FakeDriver(GpuDriver):
    """Host memory as 'device' memory; launches run on the simulator."""

    name = "fake"
    compiler = "fake-cc"
    dlpack_device_types = (DLPACK_CUDA,)

    def __init__(self, spec=H100):
        self.spec = spec
        self.mem: dict[int, np.ndarray] = {}
        self.log: list[tuple] = []
        self.launches: list[dict] = []
        self.dynamic: dict[str, int] = {}

    def arch(self, spec):
        return spec.arch

    def compile(self, source, arch, *, name):
        self.log.append(("compile", arch, name))
        return source.encode()

    def load_module(self, binary):
        self.log.append(("load",))
        return {m.group(1): [a.strip() for a in m.group(2).split(",")]
                for m in _SIG.finditer(binary.decode())}

    def get_function(self, module, kernel):
        return kernel, module[kernel.name]

    def set_dynamic_shared(self, function, nbytes):
        self.dynamic[function[0].name] = nbytes

    def alloc(self, nbytes):
        arr = np.zeros(nbytes, np.uint8)
        self.mem[arr.ctypes.data] = arr
        self.log.append(("alloc", nbytes))
        return arr.ctypes.data

    def free(self, ptr):
        del self.mem[ptr]

    def view(self, ptr, nbytes):
        for base, arr in self.mem.items():
            if base <= ptr and ptr + nbytes <= base + arr.size:
                return arr[ptr - base: ptr - base + nbytes]
        raise AssertionError(f"pointer {ptr:#x} (+{nbytes}) is not device memory")

    def memset_zero(self, ptr, nbytes):
        self.view(ptr, nbytes)[:] = 0

    def copy_in(self, ptr, host):
        self.log.append(("copy_in", host.nbytes))
        self.view(ptr, host.nbytes)[:] = np.ascontiguousarray(host).reshape(-1).view(np.uint8)

    def copy_out(self, host, ptr):
        self.log.append(("copy_out", host.nbytes))
        host.reshape(-1).view(np.uint8)[:] = self.view(ptr, host.nbytes)

    def launch(self, function, grid, block, shared_bytes, params):
        kernel, sig = function
        assert len(sig) == len(kernel.params)
        slots = (ctypes.c_void_p * len(sig)).from_address(params)
        args, decoded = {}, []
        for p, c, slot in zip(kernel.params, sig, slots, strict=True):
            ctype = c.rsplit(" ", 1)[0].replace("const ", "")
            if ctype.endswith("*"):
                assert isinstance(p, BufferParam)
                ptr = ctypes.c_uint64.from_address(slot).value
                n = p.numel * p.dtype.itemsize
                args[p.name] = self.view(ptr, n).view(p.dtype.np_dtype)
                decoded.append((p.name, "ptr", ptr))
            else:
                assert isinstance(p, ScalarParam)
                v = _C_SCALARS[ctype].from_address(slot).value
                args[p.name] = v
                decoded.append((p.name, ctype, v))
        assert grid == kernel.grid and block == kernel.block
        self.launches.append({"kernel": kernel.name, "shared": shared_bytes, "args": decoded})
        simulate(kernel, args, self.spec)

    def synchronize(self):
        self.log.append(("sync",))

    def event(self):
        return [0.0]

    def record(self, event):
        event[0] = time.perf_counter()

    def elapsed_s(self, start, end):
        return end[0] - start[0]


class FakeBackend(CudaBackend):
    def __init__(self, driver):
        super().__init__()
        self._driver = driver


def _graph(text):
    return parse_graph(text)


def test_tiny_gpt_through_the_runner_matches_the_reference():
    g = load_graph("examples/tiny_gpt.hal")
    drv = FakeDriver()
    res = FakeBackend(drv).run_graph(g, {"tokens": np.arange(32, dtype=np.int32) * 7 % 512},
                                     H100)
    assert res.report["ok"], res.report
    assert [k for k in drv.log if k[0] == "compile"] == [("compile", "sm_90a", "tiny_gpt")]
    assert len(res.stats) == len(drv.launches) > 5
    assert all(s["time_s"] >= 0 for s in res.stats)
    assert res.report["compile"]["kernels"] == len(drv.launches)
    assert not drv.mem  # every device buffer freed


def test_mixed_dtypes_and_outputs_in_their_dtype():
    g = _graph("""graph mix {
  input %x: bf16[64, 96]
  input %w: f16[96]
  %a = cast(%x, dtype=f32)
  %b = cast(%w, dtype=f32)
  %bb = broadcast_to(%b, shape=[64, 96])
  %c = mul(%a, %bb)
  %y = rms_norm(%c, %b, eps=1e-05)
  %z = cast(%y, dtype=bf16)
  output %z
  output %c
}""")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 96)).astype(bf16.np_dtype)
    w = rng.standard_normal(96).astype(np.float16)
    res = FakeBackend(FakeDriver()).run_graph(g, {"x": x, "w": w}, H100)
    assert res.report["ok"], res.report
    assert res.outputs["z"].dtype == bf16.np_dtype and res.outputs["z"].shape == (64, 96)


def test_dynamic_shared_memory_is_passed_and_opted_in():
    class TinyStatic(CudaRenderer):
        static_shared_limit = 16

    g = _graph("""graph sm {
  input %x: f32[64, 2048]
  %y = softmax(%x, axis=-1)
  output %y
}""")
    drv = FakeDriver()
    x = np.random.default_rng(1).standard_normal((64, 2048)).astype(np.float32)
    res = GpuRunner(drv, TinyStatic()).run(g, {"x": x}, H100)
    assert res.report["ok"]
    shared = [ln for ln in drv.launches if ln["shared"]]
    assert shared, "a kernel with shared memory should launch with dynamic shared bytes"
    assert all(drv.dynamic[ln["kernel"]] == ln["shared"] for ln in shared)


def test_prepare_graph_launches_only_and_reuses_buffers():
    g = _graph("""graph ew {
  input %x: f32[1000]
  %y = exp(%x)
  %z = add(%y, %x)
  output %z
}""")
    drv = FakeDriver()
    pg = FakeBackend(drv).prepare_graph(g, {"x": np.ones(1000, np.float32)}, H100)
    n_alloc = sum(1 for e in drv.log if e[0] == "alloc")
    before = len(drv.log)
    for _ in range(3):
        pg()
    assert len(drv.launches) == 3 * len(pg.launches)
    assert len(drv.log) == before  # no allocations or copies when timing
    out = pg.read_outputs()["z"]
    np.testing.assert_allclose(out, np.exp(1.0) + 1, rtol=1e-6)
    assert n_alloc >= 2
    times = FakeBackend(drv).time(pg, repeat=2, warmup=1)
    assert len(times) == 2
    pg.free()
    assert not drv.mem


class _DeviceTensor:
    """A stand-in for a torch CUDA tensor living in the fake driver's memory."""

    def __init__(self, drv, arr, kind=DLPACK_CUDA):
        self.ptr = drv.alloc(arr.nbytes)
        drv.copy_in(self.ptr, arr)
        self.shape, self.dtype, self.kind = arr.shape, arr.dtype, kind
        self.__cuda_array_interface__ = {"data": (self.ptr, False), "shape": arr.shape,
                                         "typestr": arr.dtype.str, "strides": None,
                                         "version": 3}

    def __dlpack_device__(self):
        return (self.kind, 0)


def test_device_tensors_are_used_zero_copy():
    g = _graph("""graph ew {
  input %x: f32[256]
  %y = mul(%x, %x)
  output %y
}""")
    drv = FakeDriver()
    x = np.arange(256, dtype=np.float32)
    tx = _DeviceTensor(drv, x)
    ty = _DeviceTensor(drv, np.zeros(256, np.float32))
    copies_before = sum(1 for e in drv.log if e[0] == "copy_in")
    res = GpuRunner(drv, CudaRenderer()).run(g, {"x": tx}, H100, out={"y": ty})
    assert sum(1 for e in drv.log if e[0] == "copy_in") == copies_before  # x not copied
    assert res.outputs["y"] is ty and res.report["ok"]
    np.testing.assert_array_equal(drv.view(ty.ptr, 1024).view(np.float32), x * x)
    ptrs = {a[2] for ln in drv.launches for a in ln["args"]}
    assert {tx.ptr, ty.ptr} <= ptrs


def test_device_pointer_rejects_mismatches():
    drv = FakeDriver()
    t = _DeviceTensor(drv, np.zeros(8, np.float32))
    assert device_pointer(t, drv, f32, 8) == t.ptr
    with pytest.raises(DeviceError, match="does not match"):
        device_pointer(t, drv, f32, 9)
    with pytest.raises(DeviceError, match="does not match"):
        device_pointer(t, drv, i32, 8)
    with pytest.raises(DeviceError, match="not on this backend"):
        device_pointer(_DeviceTensor(drv, np.zeros(8, np.float32), DLPACK_ROCM), drv, f32, 8)
    assert device_pointer(np.zeros(8, np.float32), drv, f32, 8) is None


def test_pack_args_orders_and_types_scalars():
    k = Kernel("k", [BufferParam("a", f32, (4,)), ScalarParam("n", i32),
                     ScalarParam("s", f32), ScalarParam("h", f16), ScalarParam("b", bf16)],
               [], (1, 1, 1), 32, meta=KernelMeta(scalars={"n": 7, "s": 0.5}))
    packed = pack_args(k, {"a": 0x1000}, {"h": 1.0, "b": -2.0})
    d = packed.describe()
    assert [x[0] for x in d] == ["a", "n", "s", "h", "b"]
    assert d[0][2] == 0x1000
    assert d[1][2] == 7 and d[2][2] == 0.5
    assert d[3][2] == 0x3C00 and d[4][2] == 0xC000  # f16 1.0, bf16 -2.0 bit patterns
    slots = (ctypes.c_void_p * 5).from_address(packed.address)
    assert ctypes.c_int32.from_address(slots[1]).value == 7
    with pytest.raises(DeviceError, match="no value for scalar"):
        pack_args(k, {"a": 1})
    with pytest.raises(DeviceError, match="no device buffer"):
        pack_args(k, {}, {"h": 1, "b": 1})
    assert scalar_arg(True, as_dtype("bool")).value is True


def test_backends_share_the_runner_and_probe_stays_cheap():
    assert issubclass(CudaBackend, GpuBackend) and issubclass(RocmBackend, GpuBackend)
    assert isinstance(CudaBackend().renderer(), CudaRenderer)
    assert isinstance(RocmBackend().renderer(), HipRenderer)
    assert CudaBackend()._driver is None  # construction initialises nothing


def test_unavailable_backend_raises_device_error():
    b = CudaBackend()
    if b.probe():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(DeviceError, match="unavailable"):
        b.run_graph(_graph("graph t {\n  input %x: f32[4]\n  %y = exp(%x)\n  output %y\n}"),
                    {"x": np.zeros(4, np.float32)}, H100)


@pytest.mark.skipif(not CudaBackend().probe(), reason="no CUDA GPU: " + CudaBackend().probe()
                    .reason)
def test_tiny_gpt_on_a_real_cuda_gpu():
    g = load_graph("examples/tiny_gpt.hal")
    res = CudaBackend().run_graph(g, {"tokens": np.arange(32, dtype=np.int32)}, H100)
    assert res.report["ok"], res.report


@pytest.mark.skipif(not RocmBackend().probe(), reason="no ROCm GPU: " + RocmBackend().probe()
                    .reason)
def test_tiny_gpt_on_a_real_rocm_gpu():
    g = load_graph("examples/tiny_gpt.hal")
    res = RocmBackend().run_graph(g, {"tokens": np.arange(32, dtype=np.int32)})
    assert res.report["ok"], res.report
