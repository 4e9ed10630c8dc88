"""`GpuDriver`: the few driver calls a vendor provides to hal's GPU graph runner.

hal.gpu_runner runs a graph the same way on every GPU; a driver (CUDA's CudaDriver on
cuda-python, ROCm's HipDriver on hip-python, the host shim's HostDriver) supplies only
compile, module load, memory, launch, synchronisation and timing calls. Pointers are
plain ints (device addresses).
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any

import numpy as np

from hal.errors import DeviceError
from hal.kernel.ir import Kernel

if TYPE_CHECKING:
    from hal.devices.spec import DeviceSpec


class GpuDriver(abc.ABC):
    """The few driver calls a vendor provides. Pointers are plain ints (device addresses).

    A driver initialises its runtime lazily (on the first call that needs it).
    """

    name: str = "gpu"
    compiler: str = "?"                       # what `compile` runs, for reports
    dlpack_device_types: tuple[int, ...] = ()  # device tensors it accepts zero-copy
    index: int = 0                            # the device ordinal (DLPack device id)

    @abc.abstractmethod
    def arch(self, spec: DeviceSpec) -> str:
        """The compile target for `spec` (the spec's arch; the real device's when known)."""

    @abc.abstractmethod
    def compile(self, source: str, arch: str, *, name: str) -> bytes:
        """A loadable binary (cubin, code object) of `source`; cached by the implementation."""

    @abc.abstractmethod
    def load_module(self, binary: bytes) -> Any: ...

    @abc.abstractmethod
    def get_function(self, module: Any, kernel: Kernel) -> Any:
        """The launchable function of `kernel` in `module`, looked up by the symbol the
        renderer gave it (`hal.render.cstyle.kernel_symbol`, not always `kernel.name`)."""

    def set_dynamic_shared(self, function: Any, nbytes: int) -> None:
        """Allow `nbytes` of dynamic shared memory (CUDA needs an opt-in above 48 KiB)."""
        return None

    def encode_tensor_map(self, tm: Any, address: int) -> bytes:
        """The opaque parameter of a TMA tensor map (hal.kernel.tma) over `address`."""
        raise DeviceError(f"{self.name}: no TMA tensor maps (kernel lowered for sm_90a)",
                          hint="run Hopper kernels on the cuda backend")

    @abc.abstractmethod
    def alloc(self, nbytes: int) -> int: ...

    @abc.abstractmethod
    def free(self, ptr: int) -> None: ...

    @abc.abstractmethod
    def memset_zero(self, ptr: int, nbytes: int) -> None: ...

    @abc.abstractmethod
    def copy_in(self, ptr: int, host: np.ndarray) -> None:
        """Host -> device: the bytes of the contiguous array `host` to `ptr`."""

    @abc.abstractmethod
    def copy_out(self, host: np.ndarray, ptr: int) -> None:
        """Device -> host: `host.nbytes` bytes from `ptr` into the contiguous array `host`."""

    @abc.abstractmethod
    def launch(self, function: Any, grid: tuple[int, int, int], block: int, shared_bytes: int,
               params: int) -> None:
        """Queue one launch; `params` is the address of a void*[n] of argument pointers. A
        driver whose kernels may have thread-block clusters (CUDA) also takes `cluster=`
        (Kernel.cluster), passed only for clustered kernels."""

    @abc.abstractmethod
    def synchronize(self) -> None: ...

    @abc.abstractmethod
    def event(self) -> Any: ...

    @abc.abstractmethod
    def record(self, event: Any) -> None: ...

    @abc.abstractmethod
    def elapsed_s(self, start: Any, end: Any) -> float:
        """Seconds between two recorded events (after they completed)."""

    def release_event(self, event: Any) -> None:
        return None

    def l2_bytes(self) -> int | None:
        """The device's L2 size as it reports it (None when the driver cannot say)."""
        return None
