"""CudaDriver: hal.gpu_runner's driver for NVIDIA GPUs, over cuda.bindings.driver.

NOT RUN ON HARDWARE: written against the documented cuda-bindings 13 driver API
(cuInit, cuDevicePrimaryCtxRetain, cuModuleLoadData, cuModuleGetFunction,
cuFuncSetAttribute, cuMemAlloc / cuMemFree / cuMemsetD8, cuMemcpyHtoD / DtoH,
cuLaunchKernel with a void** argument array, cuEvent*), and tested here only with a
stand-in module (`cu=`) that records the calls. Compiling is NVRTC (compile_nvrtc,
cached cubin), which does run here.

Every call goes through `check`, which turns a non-zero CUresult into a DeviceError
naming the call and the error (cuGetErrorName). Work is queued on the legacy default
stream (0), which orders it with torch's default stream for zero-copy tensors. The
primary context is the one torch uses too.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hal.devices.spec import DeviceSpec
from hal.errors import DeviceError
from hal.gpu_runner import DLPACK_CUDA, GpuDriver
from hal.kernel.ir import Kernel

from .compiler import NVIDIA_ARCHES, NvrtcOptions, compile_nvrtc


def check(cu: Any, result: Any, call: str) -> Any:
    """The values after the CUresult of a cuda.bindings call; a failure raises DeviceError."""
    res = result if isinstance(result, tuple) else (result,)
    err = res[0]
    if int(err) != 0:
        try:
            _, name = cu.cuGetErrorName(err)
            name = name.decode() if isinstance(name, bytes) else str(name)
        except Exception:  # the error name is a courtesy; never hide the real error
            name = str(err)
        raise DeviceError(f"cuda: {call} failed: {name} ({int(err)})",
                          hint="check `nvidia-smi`, and that --device matches the GPU")
    rest = res[1:]
    return rest[0] if len(rest) == 1 else (rest or None)


def arch_for(spec_arch: str, major: int, minor: int) -> str:
    """The NVRTC target for a device of compute capability major.minor described by a spec
    of `spec_arch`: the spec's own arch when they agree (keeps sm_90a's 'a'), else an error."""
    base = f"sm_{major}{minor}"
    if spec_arch.rstrip("a") == base:
        return spec_arch
    if base in NVIDIA_ARCHES or base + "a" in NVIDIA_ARCHES:
        raise DeviceError(f"cuda: the GPU is {base}, the device spec says {spec_arch}",
                          hint="pick the spec of this GPU with --device (`hal devices`)")
    raise DeviceError(f"cuda: compute capability {major}.{minor} is not a hal target",
                      hint="known arches: " + ", ".join(NVIDIA_ARCHES))


class CudaDriver(GpuDriver):
    name = "cuda"
    compiler = "nvrtc"
    dlpack_device_types = (DLPACK_CUDA,)

    def __init__(self, device: int = 0, cu: Any = None):
        if cu is None:
            from cuda.bindings import driver as cu
        self.cu = cu
        self.index = device
        self._ctx = None
        self._cc: tuple[int, int] | None = None
        self.stream = 0  # legacy default stream

    def _init(self) -> None:
        if self._ctx is not None:
            return
        cu = self.cu
        check(cu, cu.cuInit(0), "cuInit")
        dev = check(cu, cu.cuDeviceGet(self.index), "cuDeviceGet")
        self._ctx = check(cu, cu.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
        check(cu, cu.cuCtxSetCurrent(self._ctx), "cuCtxSetCurrent")
        attr = cu.CUdevice_attribute
        self._cc = (
            int(check(cu, cu.cuDeviceGetAttribute(
                attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "cuDeviceGetAttribute")),
            int(check(cu, cu.cuDeviceGetAttribute(
                attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev), "cuDeviceGetAttribute")))

    def arch(self, spec: DeviceSpec) -> str:
        self._init()
        assert self._cc is not None
        return arch_for(spec.arch, *self._cc)

    def compile(self, source: str, arch: str, *, name: str) -> bytes:
        cubin, _log = compile_nvrtc(source, NvrtcOptions(arch=arch), name=name)
        return cubin

    def load_module(self, binary: bytes) -> Any:
        self._init()
        return check(self.cu, self.cu.cuModuleLoadData(binary), "cuModuleLoadData")

    def get_function(self, module: Any, kernel: Kernel) -> Any:
        return check(self.cu, self.cu.cuModuleGetFunction(module, kernel.name.encode()),
                     f"cuModuleGetFunction({kernel.name})")

    def set_dynamic_shared(self, function: Any, nbytes: int) -> None:
        attr = self.cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
        check(self.cu, self.cu.cuFuncSetAttribute(function, attr, nbytes),
              f"cuFuncSetAttribute(max dynamic shared = {nbytes})")

    def alloc(self, nbytes: int) -> int:
        self._init()
        return int(check(self.cu, self.cu.cuMemAlloc(nbytes), f"cuMemAlloc({nbytes})"))

    def free(self, ptr: int) -> None:
        check(self.cu, self.cu.cuMemFree(ptr), "cuMemFree")

    def memset_zero(self, ptr: int, nbytes: int) -> None:
        check(self.cu, self.cu.cuMemsetD8(ptr, 0, nbytes), "cuMemsetD8")

    def copy_in(self, ptr: int, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host)
        check(self.cu, self.cu.cuMemcpyHtoD(ptr, host.ctypes.data, host.nbytes), "cuMemcpyHtoD")

    def copy_out(self, host: np.ndarray, ptr: int) -> None:
        if not host.flags.c_contiguous:
            raise DeviceError("cuda: copy_out needs a contiguous host array")
        check(self.cu, self.cu.cuMemcpyDtoH(host.ctypes.data, ptr, host.nbytes), "cuMemcpyDtoH")

    def launch(self, function: Any, grid: tuple[int, int, int], block: int, shared_bytes: int,
               params: int) -> None:
        check(self.cu, self.cu.cuLaunchKernel(function, int(grid[0]), int(grid[1]), int(grid[2]),
                                              int(block), 1, 1, int(shared_bytes), self.stream,
                                              params, 0), "cuLaunchKernel")

    def synchronize(self) -> None:
        self._init()
        check(self.cu, self.cu.cuStreamSynchronize(self.stream), "cuStreamSynchronize")

    def event(self) -> Any:
        self._init()
        return check(self.cu, self.cu.cuEventCreate(0), "cuEventCreate")  # CU_EVENT_DEFAULT

    def record(self, event: Any) -> None:
        check(self.cu, self.cu.cuEventRecord(event, self.stream), "cuEventRecord")

    def elapsed_s(self, start: Any, end: Any) -> float:
        check(self.cu, self.cu.cuEventSynchronize(end), "cuEventSynchronize")
        ms = check(self.cu, self.cu.cuEventElapsedTime(start, end), "cuEventElapsedTime")
        return float(ms) / 1e3

    def release_event(self, event: Any) -> None:
        check(self.cu, self.cu.cuEventDestroy(event), "cuEventDestroy")
