"""FakeCuda: a recording stand-in for `cuda.bindings.driver` that refuses what a GPU refuses.

Used with the real hal.backends.cuda.driver.CudaDriver (`CudaDriver(cu=FakeCuda())`), so
the driver's own calls are what is checked, not a re-implementation of them. Kernels run
on hal's CPU simulator: `FakeCudaDriver` (a CudaDriver whose `compile` returns the source
instead of a cubin, NVRTC being tested on its own) tells the fake which Kernel each
function handle is, after the fake found the function by its rendered symbol.

What it checks, with the CUresult a real driver returns:
* a context current in the calling thread for every call that needs one
  (CUDA_ERROR_INVALID_CONTEXT): contexts are current per thread;
* cuModuleGetFunction by the symbol the source declares (CUDA_ERROR_NOT_FOUND);
* cuLaunchKernel: grid x <= 2^31-1, y and z <= 65535, block <= 1024, dynamic shared memory
  over 48 KiB only after cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES) allowed it, and
  no more than the 227 KiB opt-in (CUDA_ERROR_INVALID_VALUE);
* the argument array: one slot per parameter of the rendered signature, each buffer a
  device pointer inside an allocation, aligned to its element type, with the kernel's
  extent inside the allocation; a kernel declared with dynamic shared memory launched with
  fewer bytes than its layout: these are faults a GPU reports late, so they become a
  pending CUDA_ERROR_ILLEGAL_ADDRESS, raised at the next synchronising call and sticky
  from then on (every later call fails, cuMemFree too);
* streams: each buffer remembers the stream that last wrote it; a launch or copy on
  another stream that reads it with no synchronisation in between is recorded in
  `unordered` (torch's side writes through `torch_write`).
Every call is logged in `calls` as (name, thread name, args...).
"""

from __future__ import annotations

import ctypes
import re
import threading
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from hal.backends.cpu_sim.simulator import simulate
from hal.backends.cuda.driver import CudaDriver
from hal.kernel.ir import BufferParam, Kernel, ScalarParam

SUCCESS = 0
INVALID_VALUE = 1
OUT_OF_MEMORY = 2
NOT_INITIALIZED = 3
INVALID_DEVICE = 101
INVALID_CONTEXT = 201
INVALID_HANDLE = 400
NOT_FOUND = 500
ILLEGAL_ADDRESS = 700
INVALID_CLUSTER_SIZE = 912
NAMES = {INVALID_CLUSTER_SIZE: "CUDA_ERROR_INVALID_CLUSTER_SIZE", SUCCESS: "CUDA_SUCCESS", INVALID_VALUE: "CUDA_ERROR_INVALID_VALUE",
         OUT_OF_MEMORY: "CUDA_ERROR_OUT_OF_MEMORY", NOT_INITIALIZED: "CUDA_ERROR_NOT_INITIALIZED",
         INVALID_DEVICE: "CUDA_ERROR_INVALID_DEVICE", INVALID_CONTEXT: "CUDA_ERROR_INVALID_CONTEXT",
         INVALID_HANDLE: "CUDA_ERROR_INVALID_HANDLE", NOT_FOUND: "CUDA_ERROR_NOT_FOUND",
         ILLEGAL_ADDRESS: "CUDA_ERROR_ILLEGAL_ADDRESS"}

MAX_GRID = (2**31 - 1, 65535, 65535)
STATIC_SHARED = 48 * 1024
OPTIN_SHARED = 227 * 1024
_SIG = re.compile(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?\s*(\w+)\(([^)]*)\)')
_C_SCALARS = {"float": ctypes.c_float, "double": ctypes.c_double, "int": ctypes.c_int32,
              "long long": ctypes.c_int64, "short": ctypes.c_int16, "signed char": ctypes.c_int8,
              "unsigned char": ctypes.c_uint8, "bool": ctypes.c_bool, "__half": ctypes.c_uint16,
              "__nv_bfloat16": ctypes.c_uint16, "__nv_fp8_e4m3": ctypes.c_uint8,
              "__nv_fp8_e5m2": ctypes.c_uint8}

# the calls that run without a current context
_NO_CONTEXT = {"cuInit", "cuDeviceGet", "cuDeviceGetCount", "cuDevicePrimaryCtxRetain",
               "cuDeviceGetAttribute", "cuCtxSetCurrent", "cuGetErrorName", "cuCtxGetCurrent"}
# the calls that wait for the device, where an asynchronous fault shows
_SYNCHRONISING = {"cuStreamSynchronize", "cuCtxSynchronize", "cuEventSynchronize",
                  "cuMemFree", "cuMemcpyHtoD", "cuMemcpyDtoH"}


class _Enum:
    """An enum namespace: any CU_..._NAME attribute is the string NAME."""

    def __init__(self, prefix: str):
        self.prefix = prefix

    def __getattr__(self, name: str) -> str:
        if not name.startswith(self.prefix):
            raise AttributeError(name)
        return name[len(self.prefix):]


class _MapBytes:
    """What cuTensorMapEncodeTiled returns: 128 bytes at getPtr() (here: the map's id)."""

    def __init__(self, ident: int):
        self.buf = ctypes.create_string_buffer(ident.to_bytes(8, "little"), 128)

    def getPtr(self) -> int:  # noqa: N802 - cuda-python's name
        return ctypes.addressof(self.buf)


_SWIZZLE_SPAN = {"NONE": 0, "32B": 32, "64B": 64, "128B": 128}


class FakeCuda:
    """The stand-in module. `spec` is the device the kernels are simulated for."""

    def __init__(self, spec: Any, *, devices: int = 1, cc: tuple[int, int] = (9, 0),
                 l2_bytes: int = 60 * 1024 * 1024):
        self.spec, self.devices, self.cc, self.l2 = spec, devices, cc, l2_bytes
        self.calls: list[tuple] = []
        self.mem: dict[int, np.ndarray] = {}          # base -> bytes
        self.writer: dict[int, int] = {}              # base -> stream that last wrote it
        self.synced: set[int] = set()                 # streams synchronised since their writes
        self.unordered: list[str] = []
        self.functions: dict[int, dict] = {}          # handle -> {symbol, sig, kernel, max_dyn}
        self.modules: dict[int, dict[str, list[str]]] = {}
        self.events: dict[int, float | None] = {}
        self.launches: list[dict] = []
        self.pending: int | None = None               # an asynchronous fault not yet reported
        self.pending_what = ""
        self.sticky: int | None = None
        self.faults: list[str] = []
        self._local = threading.local()
        self._next = 0x1000
        self.inject: dict[str, int] = {}              # call name -> error to return once
        self.fault_on: set[str] = set()               # symbols whose launch faults (planted)
        self.CUdevice_attribute = SimpleNamespace(
            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR="cc_major",
            CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR="cc_minor",
            CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE="l2",
            CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y="grid_y")
        self.CUfunction_attribute = SimpleNamespace(
            CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES="max_dyn")
        # TMA (cuTensorMapEncodeTiled): enums by name, maps by the id in their first bytes
        self.CUtensorMapDataType = _Enum("CU_TENSOR_MAP_DATA_TYPE_")
        self.CUtensorMapSwizzle = _Enum("CU_TENSOR_MAP_SWIZZLE_")
        self.CUtensorMapInterleave = _Enum("CU_TENSOR_MAP_INTERLEAVE_")
        self.CUtensorMapL2promotion = _Enum("CU_TENSOR_MAP_L2_PROMOTION_")
        self.CUtensorMapFloatOOBfill = _Enum("CU_TENSOR_MAP_FLOAT_OOB_FILL_")
        self.cuuint64_t = self.cuuint32_t = int
        # cuLaunchKernelEx: a config and its attributes, as cuda.bindings.driver spells them
        self.CUlaunchAttributeID = SimpleNamespace(CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION=4)
        self.CUlaunchConfig = lambda: SimpleNamespace(attrs=[], numAttrs=0)
        self.CUlaunchAttribute = lambda: SimpleNamespace(
            id=None, value=SimpleNamespace(clusterDim=SimpleNamespace(x=1, y=1, z=1)))
        self.tensor_maps: dict[int, dict] = {}

    # ------------------------------------------------------------------ plumbing
    def _handle(self) -> int:
        self._next += 0x100
        return self._next

    def __getattr__(self, name: str):
        impl = getattr(type(self), "_" + name, None)
        if impl is None or not name.startswith("cu"):
            raise AttributeError(name)

        def call(*args):
            self.calls.append((name, threading.current_thread().name, *args))
            if name in self.inject:
                return (self.inject.pop(name),)
            if self.sticky is not None and name != "cuGetErrorName":
                return (self.sticky,)
            if name not in _NO_CONTEXT and getattr(self._local, "ctx", None) is None:
                return (INVALID_CONTEXT,)
            if name in _SYNCHRONISING and self.pending is not None:
                self.sticky, self.pending = self.pending, None
                return (self.sticky,)
            return impl(self, *args)
        return call

    def current_context(self) -> Any:
        return getattr(self._local, "ctx", None)

    def view(self, ptr: int, nbytes: int) -> tuple[int, np.ndarray] | None:
        for base, arr in self.mem.items():
            if base <= ptr and ptr + nbytes <= base + arr.size:
                return base, arr[ptr - base: ptr - base + nbytes]
        return None

    def _fault(self, what: str) -> None:
        self.faults.append(what)
        if self.pending is None:
            self.pending, self.pending_what = ILLEGAL_ADDRESS, what

    def _read(self, base: int, stream: int, what: str) -> None:
        w = self.writer.get(base)
        if w is not None and w != stream and w not in self.synced:
            self.unordered.append(f"{what} on stream {stream:#x} reads a buffer written on "
                                  f"stream {w:#x} with no synchronisation between")

    def _write(self, base: int, stream: int) -> None:
        self.writer[base] = stream
        self.synced.discard(stream)

    def torch_write(self, ptr: int, data: np.ndarray, stream: int) -> None:
        """What torch does to a tensor it owns: an asynchronous write on its stream."""
        base, view = self.view(ptr, data.nbytes)
        view[:] = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        self._write(base, stream)

    def bind(self, handle: int, kernel: Kernel) -> None:
        self.functions[handle]["kernel"] = kernel

    # ------------------------------------------------------------------ the API
    def _cuGetErrorName(self, err):
        return (SUCCESS, NAMES.get(int(err), f"CUDA_ERROR_{int(err)}").encode())

    def _cuInit(self, flags):
        return (SUCCESS,)

    def _cuDeviceGet(self, ordinal):
        return (SUCCESS, 100 + ordinal) if 0 <= ordinal < self.devices else (INVALID_DEVICE,)

    def _cuDevicePrimaryCtxRetain(self, dev):
        return (SUCCESS, ("ctx", dev))

    def _cuCtxSetCurrent(self, ctx):
        self._local.ctx = ctx
        return (SUCCESS,)

    def _cuDeviceGetAttribute(self, attr, dev):
        values = {"cc_major": self.cc[0], "cc_minor": self.cc[1], "l2": self.l2,
                  "grid_y": MAX_GRID[1]}
        return (SUCCESS, values[attr]) if attr in values else (INVALID_VALUE,)

    def _cuModuleLoadData(self, image):
        text = bytes(image).decode(errors="replace")
        matches = list(_SIG.finditer(text))
        found = {}
        for i, m in enumerate(matches):  # a kernel's text: its signature to the next one
            end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
            found[m.group(1)] = ([a.strip() for a in m.group(2).split(",") if a.strip()],
                                 "extern __shared__" in text[m.end():end])
        if not text.startswith("//"):  # not what the renderer writes (a real cubin is ELF)
            return (INVALID_VALUE,)
        h = self._handle()
        self.modules[h] = found
        return (SUCCESS, h)

    def _cuModuleGetFunction(self, module, name):
        sigs = self.modules.get(module)
        if sigs is None:
            return (INVALID_HANDLE,)
        symbol = name.decode() if isinstance(name, bytes) else str(name)
        if symbol not in sigs:
            return (NOT_FOUND,)
        h = self._handle()
        sig, dynamic = sigs[symbol]
        self.functions[h] = {"symbol": symbol, "sig": sig, "dynamic": dynamic, "kernel": None,
                             "max_dyn": STATIC_SHARED}
        return (SUCCESS, h)

    def _cuFuncSetAttribute(self, fn, attr, value):
        if fn not in self.functions or attr != "max_dyn" or not 0 <= value <= OPTIN_SHARED:
            return (INVALID_VALUE,)
        self.functions[fn]["max_dyn"] = max(value, STATIC_SHARED)
        return (SUCCESS,)

    def _cuMemAlloc(self, nbytes):
        if nbytes <= 0:
            return (INVALID_VALUE,)
        raw = np.zeros(nbytes + 256, np.uint8)
        base = (raw.ctypes.data + 255) // 256 * 256       # cuMemAlloc aligns to 256 bytes
        arr = raw[base - raw.ctypes.data: base - raw.ctypes.data + nbytes]
        self.mem[base] = arr
        return (SUCCESS, base)

    def _cuMemFree(self, ptr):
        if ptr not in self.mem:
            return (INVALID_VALUE,)
        del self.mem[ptr]
        self.writer.pop(ptr, None)
        return (SUCCESS,)

    def _cuMemsetD8Async(self, ptr, value, n, stream):
        hit = self.view(ptr, n)
        if hit is None:
            return (INVALID_VALUE,)
        hit[1][:] = value
        self._write(hit[0], stream)
        return (SUCCESS,)

    def _cuMemcpyHtoDAsync(self, dst, src, n, stream):
        hit = self.view(dst, n)
        if hit is None:
            return (INVALID_VALUE,)
        ctypes.memmove(hit[1].ctypes.data, src, n)
        self._write(hit[0], stream)
        return (SUCCESS,)

    def _cuMemcpyDtoHAsync(self, dst, src, n, stream):
        hit = self.view(src, n)
        if hit is None:
            return (INVALID_VALUE,)
        self._read(hit[0], stream, "cuMemcpyDtoHAsync")
        ctypes.memmove(dst, hit[1].ctypes.data, n)
        return (SUCCESS,)

    def _cuStreamSynchronize(self, stream):
        self.synced.add(stream)
        return (SUCCESS,)

    def _cuCtxSynchronize(self):
        self.synced.update(set(self.writer.values()))
        return (SUCCESS,)

    def _cuEventCreate(self, flags):
        h = self._handle()
        self.events[h] = None
        return (SUCCESS, h)

    def _cuEventRecord(self, ev, stream):
        if ev not in self.events:
            return (INVALID_HANDLE,)
        self.events[ev] = time.perf_counter()
        return (SUCCESS,)

    def _cuEventSynchronize(self, ev):
        return (SUCCESS,) if ev in self.events else (INVALID_HANDLE,)

    def _cuEventElapsedTime(self, a, b):
        if self.events.get(a) is None or self.events.get(b) is None:
            return (INVALID_HANDLE,)
        return (SUCCESS, (self.events[b] - self.events[a]) * 1e3)

    def _cuEventDestroy(self, ev):
        return (SUCCESS,) if self.events.pop(ev, "gone") != "gone" else (INVALID_HANDLE,)

    def _cuTensorMapEncodeTiled(self, dtype, rank, address, dims, strides, box, estrides,
                                interleave, swizzle, l2, oob):
        """The driver's documented requirements (CUDA Driver API, cuTensorMapEncodeTiled)."""
        size = {"BFLOAT16": 2, "FLOAT16": 2, "FLOAT32": 4, "FLOAT64": 8, "UINT8": 1,
                "UINT16": 2, "INT32": 4, "INT64": 8}.get(dtype)
        span = _SWIZZLE_SPAN.get(swizzle)
        if size is None or span is None or not 1 <= rank <= 5 or interleave != "NONE":
            return (INVALID_VALUE,)
        if address % 16 or self.view(address, 1) is None:
            return (INVALID_VALUE,)
        if len(dims) != rank or len(strides) != rank - 1 or len(box) != rank:
            return (INVALID_VALUE,)
        if any(st % 16 or st >= 2**40 for st in strides) or any(not 0 < b <= 256 for b in box):
            return (INVALID_VALUE,)
        if (box[0] * size) % 16 or (span and box[0] * size > span) or any(e != 1 for e in
                                                                         estrides):
            return (INVALID_VALUE,)
        extent = (dims[-1] - 1) * (strides[-1] if strides else size) + \
            (strides[-1] if strides else dims[0] * size)
        if self.view(address, extent) is None:
            return (INVALID_VALUE,)
        ident = self._handle()
        self.tensor_maps[ident] = {"address": address, "dims": tuple(dims),
                                   "strides": tuple(strides), "box": tuple(box),
                                   "swizzle": span, "dtype": dtype}
        return (SUCCESS, _MapBytes(ident))

    def _cuLaunchKernelEx(self, cfg, fn, params, extra):
        """cuLaunchKernelEx: the config's cluster attribute must divide the grid and match
        the kernel's (hal.kernel.ir_cluster); then as cuLaunchKernel."""
        cluster = (1, 1, 1)
        for a in cfg.attrs[:cfg.numAttrs]:
            if a.id == self.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION:
                c = a.value.clusterDim
                cluster = (c.x, c.y, c.z)
        grid = (cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ)
        if any(n < 1 or g % n for g, n in zip(grid, cluster, strict=True)) or \
                cluster[0] * cluster[1] * cluster[2] > 8:
            return (INVALID_CLUSTER_SIZE,)
        return self._cuLaunchKernel(fn, *grid, cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ,
                                    cfg.sharedMemBytes, cfg.hStream, params, extra,
                                    cluster=cluster)

    def _cuLaunchKernel(self, fn, gx, gy, gz, bx, by, bz, shared, stream, params, extra,
                        cluster=(1, 1, 1)):
        f = self.functions.get(fn)
        if f is None:
            return (INVALID_HANDLE,)
        grid = (gx, gy, gz)
        if any(g < 1 or g > m for g, m in zip(grid, MAX_GRID, strict=True)):
            return (INVALID_VALUE,)
        if bx * by * bz > 1024 or min(bx, by, bz) < 1:
            return (INVALID_VALUE,)
        if shared > f["max_dyn"]:
            return (INVALID_VALUE,)
        k: Kernel | None = f["kernel"]
        self.launches.append({"symbol": f["symbol"], "grid": grid, "block": bx,
                              "shared": shared, "stream": stream, "cluster": cluster})
        if k is not None and tuple(k.cluster) != tuple(cluster):
            # a multicast or mapa outside a cluster of the kernel's shape faults
            self._fault(f"{f['symbol']}: launched with cluster {cluster}, the kernel's "
                        f"multicasts and remote arrives need {tuple(k.cluster)}")
            return (SUCCESS,)
        if f["symbol"] in self.fault_on:
            self._fault(f"{f['symbol']}: planted illegal address")
            return (SUCCESS,)
        if k is None:  # a function the test did not bind: launched, not executed
            return (SUCCESS,)
        args = self._decode(k, f["sig"], params, stream)
        if args is None:
            return (SUCCESS,)  # a fault: reported at the next synchronisation
        needs = k.shared_bytes if f["dynamic"] else 0
        if shared < needs:
            self._fault(f"{f['symbol']}: dynamic shared memory {shared} B < {needs} B")
            return (SUCCESS,)
        try:
            simulate(k, args, self.spec)
        except Exception as e:  # noqa: BLE001 - a GPU fault is asynchronous
            self._fault(f"{f['symbol']}: {e}")
        return (SUCCESS,)

    def _decode(self, k: Kernel, sig: list[str], params: int, stream: int) -> dict | None:
        if len(sig) != len(k.params) + len(k.tensor_maps):
            self._fault(f"{k.name}: {len(k.params) + len(k.tensor_maps)} parameters, "
                        f"signature has {len(sig)}")
            return None
        slots = (ctypes.c_void_p * max(1, len(sig))).from_address(params)
        for i, tm in enumerate(k.tensor_maps):   # after the buffers and scalars
            slot = slots[len(k.params) + i]
            info = self.tensor_maps.get(ctypes.c_uint64.from_address(slot).value) \
                if slot else None
            if info is None or "hal_tensor_map" not in sig[len(k.params) + i]:
                self._fault(f"{k.name}: argument {tm.name} is not an encoded tensor map")
                return None
            buf = k.params[[p.name for p in k.params].index(tm.buffer)]
            ptr = ctypes.c_uint64.from_address(slots[k.params.index(buf)]).value
            if (info["address"], info["dims"], info["box"], info["swizzle"]) != \
                    (ptr, tm.dims, tm.box, tm.swizzle):
                self._fault(f"{k.name}: tensor map {tm.name} encodes {info}, the kernel "
                            f"expects {tm} over {ptr:#x}")
                return None
        args: dict[str, Any] = {}
        for p, c, slot in zip(k.params, sig, slots, strict=False):
            if not slot:
                self._fault(f"{k.name}: argument {p.name} is a null slot")
                return None
            ctype = c.rsplit(" ", 1)[0].replace("const ", "").strip()
            if ctype.endswith("*"):
                if not isinstance(p, BufferParam):
                    self._fault(f"{k.name}: {p.name} is a scalar, signature has a pointer")
                    return None
                ptr = ctypes.c_uint64.from_address(slot).value
                n = p.numel * p.dtype.itemsize
                hit = self.view(ptr, n)
                if hit is None or ptr % p.dtype.itemsize:
                    self._fault(f"{k.name}: {p.name} = {ptr:#x} (+{n} B) is not an aligned "
                                "device buffer of its size")
                    return None
                self._read(hit[0], stream, f"kernel {k.name}")
                if not p.readonly:
                    self._write(hit[0], stream)
                args[p.name] = hit[1].view(p.dtype.np_dtype)
            else:
                if not isinstance(p, ScalarParam) or ctype not in _C_SCALARS:
                    self._fault(f"{k.name}: {p.name} has C type {ctype!r}")
                    return None
                args[p.name] = _C_SCALARS[ctype].from_address(slot).value
        return args


class FakeCudaDriver(CudaDriver):
    """The real CudaDriver over FakeCuda; `compile` hands the fake the source (the cubin
    path is NVRTC's, tested on its own), and each function is bound to its Kernel."""

    def __init__(self, fake: FakeCuda, **kw: Any):
        super().__init__(cu=fake, **kw)
        self.fake = fake
        self.sources: list[str] = []  # what the driver was asked to compile

    def compile(self, source: str, arch: str, *, name: str) -> bytes:
        self.sources.append(source)
        return source.encode()

    def get_function(self, module: Any, kernel: Kernel) -> Any:
        fn = super().get_function(module, kernel)
        self.fake.bind(fn, kernel)
        return fn
