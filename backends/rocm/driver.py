"""HipDriver: hal.gpu_runner's driver for AMD GPUs, over hip-python (`hip.hip`).

NOT RUN ON HARDWARE: written against hip-python's documented API (hipSetDevice,
hipModuleLoadData, hipModuleGetFunction, hipMalloc / hipFree / hipMemsetAsync, hipMemcpyAsync, hipStreamSynchronize,
hipModuleLaunchKernel with a void** argument array, hipEvent*), and tested here only
with a stand-in module (`hip=`) that records the calls.

Compiling: hipRTC (compile_hiprtc) or `hipcc --genco` to a code object (compile_genco,
cached like the others); both are loaded with hipModuleLoadData. `choose_compiler` picks:
hipRTC on ROCm >= 6 when it loads; hipcc otherwise, because ROCm 5.2's hipRTC (inside
libamdhip64.so.5) crashes the process on sources that include hip_fp16.h /
hip_bfloat16.h, which a crash handler cannot catch. HAL_HIP_COMPILER=hiprtc|hipcc forces
one. The hipcc path runs here (Debian's ROCm 5.2 hipcc, gfx90a).

`arch(spec)` compares the spec's arch with the device's own (`gcnArchName` from
hipGetDeviceProperties, e.g. "gfx90a:sramecc+:xnack-"; the target features after ':'
are not part of hal's arch names) and refuses a mismatch, as the CUDA driver does with
the compute capability: a code object for another gfx target fails to load, or worse.

Stream: as the CUDA driver, work is queued on the stream `stream_source()` names, by
default torch's current stream when a ROCm build of torch has initialised HIP, else the
null stream. Copies and memsets are asynchronous on it, followed by a stream synchronise,
so they are ordered with the kernels around them and with torch's own work.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from hal.devices.spec import DeviceSpec
from hal.errors import CompileError, DeviceError
from hal.gpu_driver import GpuDriver
from hal.gpu_tensors import DLPACK_ROCM, torch_current_stream
from hal.kernel.ir import Kernel
from hal.render.cstyle import kernel_symbol
from hal.render.toolchain import CompileCache, run_tool, save_source

from .compiler import compile_hiprtc, hiprtc_available


def check(hip: Any, result: Any, call: str) -> Any:
    """The values after the hipError_t of a hip-python call; a failure raises DeviceError."""
    res = result if isinstance(result, tuple) else (result,)
    err = res[0]
    if int(err) != 0:
        try:
            text = hip.hipGetErrorString(err)
            text = text[-1] if isinstance(text, tuple) else text
            text = text.decode() if isinstance(text, bytes) else str(text)
        except Exception:  # the error text is a courtesy; never hide the real error
            text = str(err)
        raise DeviceError(f"rocm: {call} failed: {text} ({int(err)})",
                          hint="check `rocm-smi`, and that --device matches the GPU")
    rest = res[1:]
    return rest[0] if len(rest) == 1 else (rest or None)


def choose_compiler(runtime_version: int | None, hiprtc_ok: bool, hipcc_ok: bool,
                    forced: str | None = None) -> str:
    """'hiprtc' or 'hipcc' (see the module docstring); CompileError when neither can run."""
    if forced:
        if forced not in ("hiprtc", "hipcc"):
            raise CompileError(f"HAL_HIP_COMPILER={forced}: use hiprtc or hipcc")
        return forced
    major = (runtime_version or 0) // 10_000_000  # HIP_VERSION = major*1e7 + minor*1e5 + patch
    if hiprtc_ok and major >= 6:
        return "hiprtc"
    if hipcc_ok:
        return "hipcc"
    if hiprtc_ok:
        return "hiprtc"
    raise CompileError("rocm: no HIP compiler: hipRTC does not load and hipcc is not on PATH",
                       hint="pip install hip-python, or install hipcc")


def genco_command(source_path: str, arch: str, out: str) -> list[str]:
    return ["hipcc", "--genco", f"--offload-arch={arch}", "-O3", "-o", out, source_path]


def compile_genco(source: str, arch: str, *, name: str = "kernels",
                  cache: CompileCache | None = None) -> bytes:
    """`hipcc --genco` to a code object (hipModuleLoadData loads it); cached by (source, arch)."""
    cache = cache if cache is not None else CompileCache(namespace="hipcc-genco")
    key = cache.key("hipcc-genco", source, arch)
    hit = cache.get(key)
    if hit is not None:
        return hit
    path = save_source(source, name, ".hip")
    out = path.with_suffix(f".{arch}.co")
    run_tool(genco_command(str(path), arch, str(out)), what=f"hipcc --genco ({arch})",
             source_path=path, env={"HIP_PLATFORM": "amd"})
    code = out.read_bytes()
    cache.put(key, code)
    return code


def gcn_arch_base(name: Any) -> str:
    """'gfx90a' from the device's gcnArchName ('gfx90a:sramecc+:xnack-', bytes or str)."""
    text = name.decode(errors="replace") if isinstance(name, (bytes, bytearray)) else str(name)
    return text.split("\0", 1)[0].split(":", 1)[0].strip()


def arch_for_gcn(spec_arch: str, gcn_arch_name: Any) -> str:
    """The compile target: the spec's arch when the device reports the same, else an error."""
    device = gcn_arch_base(gcn_arch_name)
    if device == spec_arch:
        return spec_arch
    raise DeviceError(f"rocm: the GPU is {device or '(unknown)'}, the device spec says "
                      f"{spec_arch}", hint="pick the spec of this GPU with --device "
                                           "(`hal devices`), or write one for it")


class HipDriver(GpuDriver):
    name = "rocm"
    dlpack_device_types = (DLPACK_ROCM,)

    def __init__(self, device: int = 0, hip: Any = None, compiler: str | None = None,
                 stream_source: Callable[[int], int] | None = None):
        if hip is None:
            from hip import hip
        self.hip = hip
        self.index = device
        self._current = threading.local()  # .ready: hipSetDevice done in this thread
        self._forced = compiler or os.environ.get("HAL_HIP_COMPILER") or None
        self._compiler: str | None = None
        self._gcn_arch: str | None = None
        self.stream_source = stream_source or (lambda i: torch_current_stream(i, "hip"))

    @property
    def stream(self) -> int | None:
        """The stream work is queued on now: a handle, or None for the null stream."""
        return self.stream_source(self.index) or None

    @property
    def compiler(self) -> str:  # type: ignore[override]
        if self._compiler is None:
            try:
                version = int(check(self.hip, self.hip.hipRuntimeGetVersion(),
                                    "hipRuntimeGetVersion"))
            except DeviceError:
                version = None
            self._compiler = choose_compiler(version, hiprtc_available() is None,
                                             shutil.which("hipcc") is not None, self._forced)
        return self._compiler

    def _init(self) -> None:
        """hipSetDevice in the calling thread (the current device is per thread)."""
        if not getattr(self._current, "ready", False):
            check(self.hip, self.hip.hipSetDevice(self.index), "hipSetDevice")
            self._current.ready = True

    def arch(self, spec: DeviceSpec) -> str:
        if self._gcn_arch is None:
            self._init()
            props = self.hip.hipDeviceProp_t()
            check(self.hip, self.hip.hipGetDeviceProperties(props, self.index),
                  f"hipGetDeviceProperties({self.index})")
            self._gcn_arch = gcn_arch_base(props.gcnArchName)
        return arch_for_gcn(spec.arch, self._gcn_arch)

    def l2_bytes(self) -> int:
        self._init()
        attr = self.hip.hipDeviceAttribute_t.hipDeviceAttributeL2CacheSize
        return int(check(self.hip, self.hip.hipDeviceGetAttribute(attr, self.index),
                         "hipDeviceGetAttribute(L2CacheSize)"))

    def compile(self, source: str, arch: str, *, name: str) -> bytes:
        if self.compiler == "hiprtc":
            return compile_hiprtc(source, arch, name=name)
        return compile_genco(source, arch, name=name)

    def load_module(self, binary: bytes) -> Any:
        self._init()
        return check(self.hip, self.hip.hipModuleLoadData(binary), "hipModuleLoadData")

    def get_function(self, module: Any, kernel: Kernel) -> Any:
        self._init()
        symbol = kernel_symbol(kernel)
        return check(self.hip, self.hip.hipModuleGetFunction(module, symbol.encode()),
                     f"hipModuleGetFunction({symbol})")

    def alloc(self, nbytes: int) -> int:
        self._init()
        return int(check(self.hip, self.hip.hipMalloc(nbytes), f"hipMalloc({nbytes})"))

    def free(self, ptr: int) -> None:
        self._init()
        check(self.hip, self.hip.hipFree(ptr), "hipFree")

    def memset_zero(self, ptr: int, nbytes: int) -> None:
        self._init()
        check(self.hip, self.hip.hipMemsetAsync(ptr, 0, nbytes, self.stream), "hipMemsetAsync")

    def copy_in(self, ptr: int, host: np.ndarray) -> None:
        self._init()
        host = np.ascontiguousarray(host)
        kind = self.hip.hipMemcpyKind.hipMemcpyHostToDevice
        stream = self.stream
        check(self.hip, self.hip.hipMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind,
                                                stream), "hipMemcpyAsync(HostToDevice)")
        check(self.hip, self.hip.hipStreamSynchronize(stream), "hipStreamSynchronize")

    def copy_out(self, host: np.ndarray, ptr: int) -> None:
        if not host.flags.c_contiguous:
            raise DeviceError("rocm: copy_out needs a contiguous host array")
        self._init()
        kind = self.hip.hipMemcpyKind.hipMemcpyDeviceToHost
        stream = self.stream
        check(self.hip, self.hip.hipMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind,
                                                stream), "hipMemcpyAsync(DeviceToHost)")
        check(self.hip, self.hip.hipStreamSynchronize(stream), "hipStreamSynchronize")

    def launch(self, function: Any, grid: tuple[int, int, int], block: int, shared_bytes: int,
               params: int) -> None:
        self._init()
        check(self.hip, self.hip.hipModuleLaunchKernel(
            function, int(grid[0]), int(grid[1]), int(grid[2]), int(block), 1, 1,
            int(shared_bytes), self.stream, params, None), "hipModuleLaunchKernel")

    def synchronize(self) -> None:
        self._init()
        check(self.hip, self.hip.hipStreamSynchronize(self.stream), "hipStreamSynchronize")

    def event(self) -> Any:
        self._init()
        return check(self.hip, self.hip.hipEventCreate(), "hipEventCreate")

    def record(self, event: Any) -> None:
        self._init()
        check(self.hip, self.hip.hipEventRecord(event, self.stream), "hipEventRecord")

    def elapsed_s(self, start: Any, end: Any) -> float:
        self._init()
        check(self.hip, self.hip.hipEventSynchronize(end), "hipEventSynchronize")
        ms = check(self.hip, self.hip.hipEventElapsedTime(start, end), "hipEventElapsedTime")
        return float(ms) / 1e3

    def release_event(self, event: Any) -> None:
        self._init()
        check(self.hip, self.hip.hipEventDestroy(event), "hipEventDestroy")
