"""CudaDriver: hal.gpu_runner's driver for NVIDIA GPUs, over cuda.bindings.driver.

NOT RUN ON HARDWARE: written against the documented cuda-bindings 13 driver API
(cuInit, cuDevicePrimaryCtxRetain, cuCtxSetCurrent, cuModuleLoadData,
cuModuleGetFunction, cuFuncSetAttribute, cuMemAlloc / cuMemFree / cuMemsetD8Async,
cuMemcpyHtoDAsync / DtoHAsync, cuLaunchKernel with a void** argument array, cuEvent*),
and tested here with tests/fake_cuda.py, a stand-in module (`cu=`) that records the calls
and refuses what a GPU refuses (grid limits, shared memory above the opt-in, a context
not current in the calling thread, sticky faults). Compiling is NVRTC (compile_nvrtc,
cached cubin), which does run here.

Every call goes through `check`, which turns a non-zero CUresult into a DeviceError
naming the call and the error (cuGetErrorName).

* Context: the device's primary context (the one torch uses), made current in every
  thread that calls the driver (a context is current per thread, so a worker thread
  would otherwise run without one).
* Stream: work is queued on the stream `stream_source()` names, by default torch's
  current stream on this device when torch has initialised CUDA, else the legacy stream
  (0). Copies are asynchronous on that stream followed by a stream synchronise, so they
  are ordered with the kernels around them and with torch's own work.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from hal.devices.spec import DeviceSpec
from hal.errors import DeviceError
from hal.gpu_driver import GpuDriver
from hal.gpu_tensors import DLPACK_CUDA, torch_current_stream  # noqa: F401 (re-export)
from hal.kernel.ir import Kernel
from hal.render.cstyle import kernel_symbol

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

    def __init__(self, device: int = 0, cu: Any = None,
                 stream_source: Callable[[int], int] | None = None):
        if cu is None:
            from cuda.bindings import driver as cu
        self.cu = cu
        self.index = device
        self._ctx = None
        self._dev = None
        self._cc: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._current = threading.local()  # .ctx: the context made current in this thread
        self.stream_source = stream_source or torch_current_stream

    @property
    def stream(self) -> int:
        """The stream work is queued on now (see the module docstring)."""
        return self.stream_source(self.index)

    def _init(self) -> None:
        """Retain the primary context once; make it current in the calling thread."""
        if self._ctx is None:
            with self._lock:
                if self._ctx is None:
                    self._retain()
        if getattr(self._current, "ctx", None) is not self._ctx:
            check(self.cu, self.cu.cuCtxSetCurrent(self._ctx), "cuCtxSetCurrent")
            self._current.ctx = self._ctx

    def _retain(self) -> None:
        cu = self.cu
        check(cu, cu.cuInit(0), "cuInit")
        dev = check(cu, cu.cuDeviceGet(self.index), f"cuDeviceGet({self.index})")
        ctx = check(cu, cu.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
        self._dev = dev
        self._cc = (self._attribute("COMPUTE_CAPABILITY_MAJOR"),
                    self._attribute("COMPUTE_CAPABILITY_MINOR"))
        self._ctx = ctx

    def _attribute(self, name: str) -> int:
        attr = getattr(self.cu.CUdevice_attribute, f"CU_DEVICE_ATTRIBUTE_{name}")
        return int(check(self.cu, self.cu.cuDeviceGetAttribute(attr, self._dev),
                         f"cuDeviceGetAttribute({name})"))

    def l2_bytes(self) -> int:
        self._init()
        return self._attribute("L2_CACHE_SIZE")

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
        self._init()
        symbol = kernel_symbol(kernel)
        return check(self.cu, self.cu.cuModuleGetFunction(module, symbol.encode()),
                     f"cuModuleGetFunction({symbol})")

    def set_dynamic_shared(self, function: Any, nbytes: int) -> None:
        self._init()
        attr = self.cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
        check(self.cu, self.cu.cuFuncSetAttribute(function, attr, nbytes),
              f"cuFuncSetAttribute(max dynamic shared = {nbytes})")

    def encode_tensor_map(self, tm: Any, address: int) -> bytes:
        """The 128-byte CUtensorMap of TMA map `tm` over the buffer at `address`."""
        from .tensor_maps import encode_tiled

        self._init()
        return encode_tiled(self.cu, tm, address)

    def alloc(self, nbytes: int) -> int:
        self._init()
        return int(check(self.cu, self.cu.cuMemAlloc(nbytes), f"cuMemAlloc({nbytes})"))

    def free(self, ptr: int) -> None:
        self._init()
        check(self.cu, self.cu.cuMemFree(ptr), "cuMemFree")

    def memset_zero(self, ptr: int, nbytes: int) -> None:
        self._init()
        check(self.cu, self.cu.cuMemsetD8Async(ptr, 0, nbytes, self.stream), "cuMemsetD8Async")

    def copy_in(self, ptr: int, host: np.ndarray) -> None:
        self._init()
        host = np.ascontiguousarray(host)
        stream = self.stream
        check(self.cu, self.cu.cuMemcpyHtoDAsync(ptr, host.ctypes.data, host.nbytes, stream),
              "cuMemcpyHtoDAsync")
        # `host` may be gone when this returns: wait for the copy
        check(self.cu, self.cu.cuStreamSynchronize(stream), "cuStreamSynchronize")

    def copy_out(self, host: np.ndarray, ptr: int) -> None:
        if not host.flags.c_contiguous:
            raise DeviceError("cuda: copy_out needs a contiguous host array")
        self._init()
        stream = self.stream
        check(self.cu, self.cu.cuMemcpyDtoHAsync(host.ctypes.data, ptr, host.nbytes, stream),
              "cuMemcpyDtoHAsync")
        check(self.cu, self.cu.cuStreamSynchronize(stream), "cuStreamSynchronize")

    def launch(self, function: Any, grid: tuple[int, int, int], block: int, shared_bytes: int,
               params: int, cluster: tuple[int, int, int] = (1, 1, 1)) -> None:
        self._init()
        if tuple(cluster) != (1, 1, 1):   # thread-block clusters (hal.kernel.ir_cluster)
            self._launch_cluster(function, grid, block, shared_bytes, params, cluster)
            return
        check(self.cu, self.cu.cuLaunchKernel(function, int(grid[0]), int(grid[1]), int(grid[2]),
                                              int(block), 1, 1, int(shared_bytes), self.stream,
                                              params, 0), "cuLaunchKernel")

    def _launch_cluster(self, function: Any, grid: tuple[int, int, int], block: int,
                        shared_bytes: int, params: int, cluster: tuple[int, int, int]) -> None:
        """cuLaunchKernelEx with CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION: the kernel's blocks
        run as clusters of `cluster` CTAs (the source does not compile the shape in)."""
        cu = self.cu
        attr = cu.CUlaunchAttribute()
        attr.id = cu.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
        attr.value.clusterDim.x, attr.value.clusterDim.y, attr.value.clusterDim.z = \
            (int(c) for c in cluster)
        cfg = cu.CUlaunchConfig()
        cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = (int(g) for g in grid)
        cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = int(block), 1, 1
        cfg.sharedMemBytes, cfg.hStream = int(shared_bytes), self.stream
        cfg.attrs, cfg.numAttrs = [attr], 1
        check(cu, cu.cuLaunchKernelEx(cfg, function, params, 0), "cuLaunchKernelEx")

    def synchronize(self) -> None:
        self._init()
        check(self.cu, self.cu.cuStreamSynchronize(self.stream), "cuStreamSynchronize")

    def event(self) -> Any:
        self._init()
        return check(self.cu, self.cu.cuEventCreate(0), "cuEventCreate")  # CU_EVENT_DEFAULT

    def record(self, event: Any) -> None:
        self._init()
        check(self.cu, self.cu.cuEventRecord(event, self.stream), "cuEventRecord")

    def elapsed_s(self, start: Any, end: Any) -> float:
        self._init()
        check(self.cu, self.cu.cuEventSynchronize(end), "cuEventSynchronize")
        ms = check(self.cu, self.cu.cuEventElapsedTime(start, end), "cuEventElapsedTime")
        return float(ms) / 1e3

    def release_event(self, event: Any) -> None:
        self._init()
        check(self.cu, self.cu.cuEventDestroy(event), "cuEventDestroy")
