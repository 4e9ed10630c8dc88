"""HostDriver: hal's GPU driver interface (hal.gpu_driver.GpuDriver) on the host CPU.

Everything a GPU run does happens, on host memory: `compile` builds the rendered text into
a shared object (hal.backends.host.compiler), `load_module` dlopens it, `launch` calls the
kernel's `hal_host_launch_<name>` entry with the very argument array (`void*[n]`) the GPU
runner packs for cuLaunchKernel / hipModuleLaunchKernel, and the grid and block the plan
chose. Launches are synchronous; events are host clocks.

Global buffers are sized as asked (rounded up to 16 bytes) and placed so that they END at a
PROT_NONE guard page; another guard page sits below them. A kernel reading or writing past
the end faults, and the launch fails with the kernel, block, thread and the buffer
(parameter name, size, how far past its end) instead of returning wrong numbers.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import mmap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hal.errors import DeviceError
from hal.gpu_driver import GpuDriver
from hal.kernel.ir import BufferParam, Kernel
from hal.render.toolchain import atomic_write, cache_dir

from .compiler import HostCompileOptions, compile_host

if TYPE_CHECKING:
    from hal.devices.spec import DeviceSpec

_PAGE = mmap.PAGESIZE
_PROT_NONE, _PROT_RW = 0, 3
_MAP_PRIVATE_ANON = 0x02 | 0x20


class LaunchConfig(ctypes.Structure):
    """hal_host::LaunchConfig (hal_host_runtime.h)."""

    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3),
                ("shared_bytes", ctypes.c_ulonglong)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    return libc


@dataclass(frozen=True)
class Allocation:
    base: int        # mapping start (guard page)
    total: int       # mapping length
    ptr: int         # what the kernel sees
    nbytes: int      # what was asked for

    def describe(self, addr: int) -> str | None:
        end = self.ptr + self.nbytes
        if self.base <= addr < self.ptr:
            return f"{self.ptr - addr} bytes before the start of a {self.nbytes}-byte buffer"
        if end <= addr < self.base + self.total:
            return f"{addr - end} bytes past the end of a {self.nbytes}-byte buffer"
        return None


@dataclass
class HostFunction:
    entry: Any                 # the ctypes function hal_host_launch_<name>
    name: str
    kernel: Kernel | None      # None for hand-written sources (no parameter names)
    error: Any                 # hal_host_last_error of its module


def _round16(n: int) -> int:
    return (n + 15) // 16 * 16


class HostDriver(GpuDriver):
    """Runs rendered kernels on the CPU through the host shim. `vendor`: "cuda" or "hip"."""

    dlpack_device_types = ()

    def __init__(self, vendor: str, name: str) -> None:
        self.vendor = vendor
        self.name = name
        self.compiler = "host C++ (hal host shim)"
        self._libc = _libc()
        self._allocs: dict[int, Allocation] = {}
        self._modules: dict[str, ctypes.CDLL] = {}

    # -- compile and load ------------------------------------------------------
    def arch(self, spec: DeviceSpec) -> str:
        """`<spec arch>/wave<N>`: the shim needs the spec's warp width at compile time."""
        return f"{spec.arch}/wave{spec.warp_size}"

    def compile(self, source: str, arch: str, *, name: str) -> bytes:
        warp = int(arch.rsplit("/wave", 1)[1]) if "/wave" in arch else 32
        return compile_host(source, HostCompileOptions(warp_size=warp, vendor=self.vendor),
                            name=name)

    def load_module(self, binary: bytes) -> ctypes.CDLL:
        digest = hashlib.sha256(binary).hexdigest()
        lib = self._modules.get(digest)
        if lib is None:
            path = cache_dir() / "host-so" / f"{digest[:32]}.so"
            if not path.exists():
                atomic_write(path, binary)
            lib = ctypes.CDLL(str(path), mode=ctypes.RTLD_LOCAL)
            lib.hal_host_last_error.restype = ctypes.c_char_p
            self._modules[digest] = lib
        return lib

    def get_function(self, module: ctypes.CDLL, kernel: Kernel) -> HostFunction:
        from hal.render.cstyle import ident

        return self.function(module, ident(kernel.name), kernel)

    def function(self, module: ctypes.CDLL, name: str,
                 kernel: Kernel | None = None) -> HostFunction:
        """The launch entry of the kernel called `name` (its C name) in `module`."""
        try:
            entry = getattr(module, f"hal_host_launch_{name}")
        except AttributeError:
            raise DeviceError(f"{self.name}: kernel {name} is not in the compiled "
                              "module") from None
        entry.restype = ctypes.c_int
        entry.argtypes = [ctypes.c_void_p, ctypes.POINTER(LaunchConfig)]
        return HostFunction(entry, name, kernel, module.hal_host_last_error)

    def run_source(self, source: str, kernel: str, args: Sequence[np.ndarray | Any], *,
                   grid: tuple[int, int, int] = (1, 1, 1), block: int = 1,
                   warp_size: int = 32) -> list[np.ndarray]:
        """Compile hand-written CUDA/HIP `source` and launch `kernel` once: each numpy array
        in `args` becomes a guarded device buffer (copied in and back out), any other value
        a ctypes scalar passed as it is. Returns the arrays' contents after the launch."""
        lib = self.load_module(self.compile(source, f"host/wave{warp_size}", name=kernel))
        fn = self.function(lib, kernel)
        values, ptrs = [], []
        try:
            for a in args:
                if isinstance(a, np.ndarray):
                    p = self.alloc(a.nbytes)
                    ptrs.append(p)
                    self.copy_in(p, a)
                    values.append(ctypes.c_uint64(p))
                else:
                    values.append(a)
            argv = (ctypes.c_void_p * max(1, len(values)))(
                *[ctypes.addressof(v) for v in values])
            self.launch(fn, grid, block, 0, ctypes.addressof(argv))
            out, it = [], iter(ptrs)
            for a in args:
                if isinstance(a, np.ndarray):
                    host = np.empty_like(a)
                    self.copy_out(host, next(it))
                    out.append(host)
            return out
        finally:
            for p in ptrs:
                self.free(p)

    # -- memory --------------------------------------------------------------------
    def alloc(self, nbytes: int) -> int:
        size = _round16(max(nbytes, 1))
        body = (size + _PAGE - 1) // _PAGE * _PAGE
        total = body + 2 * _PAGE
        base = self._libc.mmap(None, total, _PROT_RW, _MAP_PRIVATE_ANON, -1, 0)
        if base is None or base == ctypes.c_void_p(-1).value:
            raise DeviceError(f"{self.name}: could not map {total} bytes")
        self._libc.mprotect(base, _PAGE, _PROT_NONE)
        self._libc.mprotect(base + _PAGE + body, _PAGE, _PROT_NONE)
        ptr = base + _PAGE + body - size
        self._allocs[ptr] = Allocation(base, total, ptr, nbytes)
        return ptr

    def free(self, ptr: int) -> None:
        a = self._allocs.pop(ptr, None)
        if a is not None:
            self._libc.munmap(a.base, a.total)

    def memset_zero(self, ptr: int, nbytes: int) -> None:
        ctypes.memset(ptr, 0, nbytes)

    def copy_in(self, ptr: int, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host)
        ctypes.memmove(ptr, host.ctypes.data, host.nbytes)

    def copy_out(self, host: np.ndarray, ptr: int) -> None:
        ctypes.memmove(host.ctypes.data, ptr, host.nbytes)

    # -- launch --------------------------------------------------------------------
    def launch(self, function: HostFunction, grid: tuple[int, int, int], block: int,
               shared_bytes: int, params: int) -> None:
        g = (tuple(int(x) for x in grid) + (1, 1, 1))[:3]
        cfg = LaunchConfig((ctypes.c_uint * 3)(*g), (ctypes.c_uint * 3)(int(block), 1, 1),
                           int(shared_bytes))
        if function.entry(params, ctypes.byref(cfg)) != 0:
            why = function.error().decode(errors="replace")
            raise DeviceError(f"{self.name}: kernel {function.name} failed on the host: "
                              f"{why}{self._fault_detail(why, function.kernel, params)}",
                              hint="the rendered source is saved under $HAL_CACHE_DIR/sources; "
                                   "the same launch on cpu_sim names the statement")

    def _fault_detail(self, why: str, kernel: Kernel | None, params: int) -> str:
        """Which buffer (by kernel parameter when known) a guard-page fault belongs to."""
        if "memory fault at address" not in why:
            return ""
        addr = int(why.split("address ", 1)[1].split()[0], 16)
        if kernel is not None:
            argv = ctypes.cast(params, ctypes.POINTER(ctypes.c_void_p))
            for i, p in enumerate(kernel.params):
                if not isinstance(p, BufferParam):
                    continue
                ptr = ctypes.cast(argv[i], ctypes.POINTER(ctypes.c_uint64))[0]
                a = self._allocs.get(int(ptr))
                where = a.describe(addr) if a else None
                if where:
                    return f": out-of-bounds access to '{p.name}', {where}"
        for a in self._allocs.values():
            where = a.describe(addr)
            if where:
                return f": out-of-bounds access, {where}"
        return ": outside every global buffer (a fiber stack overflow or a wild pointer)"

    def synchronize(self) -> None:
        return None

    def event(self) -> list[float]:
        return [0.0]

    def record(self, event: list[float]) -> None:
        event[0] = time.perf_counter()

    def elapsed_s(self, start: list[float], end: list[float]) -> float:
        return end[0] - start[0]


__all__ = ["Allocation", "HostDriver", "HostFunction", "LaunchConfig"]
