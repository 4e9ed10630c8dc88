"""The backend interface: what a target must provide to run hal graphs and kernels.

One interface per concept, as in IREE's HAL: a `Backend` (a driver: probe,
allocate, copy, compile, launch, synchronize, time), the `Device` it runs on,
the `Buffer`s it allocates and the `CompiledKernel`s it produces. Capabilities
are an enum, so callers ask `Capability.FP8 in backend.capabilities` instead of
switching on a backend's name.

To write a backend: subclass `Backend`, set `name` and `capabilities`,
implement `probe` and `run_graph`, and the kernel-level methods if the
backend runs kernels. Register it with `hal.backends_registry.register_backend`
or through the `hal.backends` entry-point group of your distribution.

Probing is cheap and lazy: constructing a backend must not initialise a
driver, and nothing here imports CUDA or ROCm bindings.
"""

from __future__ import annotations

import abc
import enum
import time as _time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from hal.dtypes import DType
from hal.errors import UnsupportedError

if TYPE_CHECKING:  # imported for annotations only; keeps `import hal.backend` light
    from hal.devices.spec import DeviceSpec
    from hal.ir.graph import Graph


class Capability(enum.Enum):
    """What a backend can do; conformance and benchmarks select on these."""

    FP16 = "fp16"
    BF16 = "bf16"
    FP8 = "fp8"
    F64 = "f64"
    INT = "int"
    ATOMICS = "atomics"
    WARP_SHUFFLE = "warp_shuffle"
    KERNELS = "kernels"            # compiles and launches kernel IR
    TIMING = "timing"              # `time` measures device time worth reporting
    REAL_HARDWARE = "real_hardware"
    SIMULATED = "simulated"


@dataclass(frozen=True)
class Availability:
    """The result of `Backend.probe`: usable or not, and why (a sentence a user can act on)."""

    available: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.available


@dataclass
class Device:
    """A device a backend runs on, described by its spec."""

    spec: DeviceSpec
    backend: str
    index: int = 0
    handle: Any = None             # driver object (CUdevice, hipDevice_t, ...)


@dataclass
class Buffer:
    """Device memory: `handle` is the backend's pointer or array."""

    nbytes: int
    dtype: DType | None = None
    shape: tuple[int, ...] = ()
    device: Device | None = None
    handle: Any = None


@dataclass
class CompiledKernel:
    """A kernel ready to launch: `binary` (cubin, code object) or a backend-native handle.

    `metadata` carries what the compiler reported: registers, spills,
    shared bytes, the source path, the compile command.
    """

    name: str
    backend: str
    handle: Any = None
    binary: bytes | None = None
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    """What `Backend.run_graph` returns.

    `outputs`: graph output name -> array (in the output's dtype).
    `stats`: one dict per kernel the backend ran (name, counters, times), or
    None when the backend does not run kernels; `hal run` prints them as a table.
    `report`: backend-specific summary (checks, model figures), or None.
    """

    outputs: dict[str, np.ndarray]
    stats: list[dict[str, Any]] | None = None
    report: dict[str, Any] | None = None


class Backend(abc.ABC):
    """A target that runs hal graphs. Constructing one must be cheap (no driver init)."""

    name: ClassVar[str] = "abstract"
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    # the spec used when the user names none (`hal run` without --device)
    default_device: ClassVar[str] = "h100-sxm"

    # -- discovery ---------------------------------------------------------
    @abc.abstractmethod
    def probe(self) -> Availability:
        """Whether this backend can run here, and if not, why (and how to fix it)."""

    def supports(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def device(self, spec: DeviceSpec | str | None = None) -> Device:
        """The device to run on; `spec` is a DeviceSpec, a shipped name or a path."""
        from hal.devices.loader import load_spec

        return Device(load_spec(spec if spec is not None else self.default_device), self.name)

    # -- the graph-level entry point (what `hal run` calls) -----------------
    @abc.abstractmethod
    def run_graph(self, graph: Graph, inputs: Mapping[str, np.ndarray],
                  spec: DeviceSpec | None = None, **options: Any) -> RunResult:
        """Run `graph` on `inputs` (name -> array) for the device `spec`.

        `options` are backend-specific switches (e.g. the simulator's checks);
        a backend ignores the ones it does not know only if it documents so.
        """

    # -- kernel-level runtime ------------------------------------------------
    def _unsupported(self, what: str) -> UnsupportedError:
        return UnsupportedError(f"backend '{self.name}' does not {what}",
                                hint="run whole graphs with run_graph, or pick a backend "
                                     "with the 'kernels' capability (`hal backends`)")

    def allocate(self, nbytes: int, dtype: DType | None = None,
                 shape: Sequence[int] = ()) -> Buffer:
        raise self._unsupported("allocate device buffers")

    def copy_in(self, buffer: Buffer, array: np.ndarray) -> None:
        raise self._unsupported("copy to device buffers")

    def copy_out(self, buffer: Buffer) -> np.ndarray:
        raise self._unsupported("copy from device buffers")

    def compile(self, kernel: Any, spec: DeviceSpec) -> CompiledKernel:
        raise self._unsupported("compile kernels")

    def launch(self, compiled: CompiledKernel, args: Sequence[Buffer | int | float],
               grid: tuple[int, ...], block: tuple[int, ...], shared_bytes: int = 0) -> None:
        raise self._unsupported("launch kernels")

    def synchronize(self) -> None:
        """Wait for queued work; a no-op for synchronous backends."""
        return None

    def time(self, fn: Callable[[], Any], repeat: int = 10, warmup: int = 1) -> list[float]:
        """Seconds per call of `fn`, `repeat` samples after `warmup` calls.

        The default is host wall-clock around `synchronize`; GPU backends
        override it with device events.
        """
        for _ in range(warmup):
            fn()
        self.synchronize()
        out = []
        for _ in range(repeat):
            t0 = _time.perf_counter()
            fn()
            self.synchronize()
            out.append(_time.perf_counter() - t0)
        return out

    def __repr__(self) -> str:
        return f"<{type(self).__name__} '{self.name}'>"


def probe_driver(libraries: Sequence[str], init: str, count: str, what: str) -> Availability:
    """Load a vendor driver with ctypes, initialise it and count its devices.

    Used by the GPU backends' `probe`: it needs no Python bindings, so it
    answers "is there a usable GPU" before asking "are the bindings installed".
    `init` and `count` name C functions `int init(unsigned)` and `int count(int*)`.
    """
    import ctypes

    lib = None
    for name in libraries:
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        return Availability(False, f"no {what} driver: {' / '.join(libraries)} not found")
    rc = getattr(lib, init)(0)
    if rc != 0:
        return Availability(False, f"{what} driver did not initialise: {init} returned error "
                                   f"{rc} (no GPU visible, or the driver and kernel module "
                                   "differ)")
    n = ctypes.c_int(0)
    rc = getattr(lib, count)(ctypes.byref(n))
    if rc != 0 or n.value == 0:
        return Availability(False, f"no {what} GPU: {count} found none (error {rc})")
    return Availability(True, f"{n.value} {what} GPU(s)")
