"""CudaBackend: NVIDIA GPUs through cuda-python (NVRTC to compile, the driver API to launch).

`probe` is cheap (ctypes: is cuda-python installed, does libcuda find a GPU). Running is
hal.gpu_runner's GpuBackend with the CUDA renderer and CudaDriver (backends/cuda/driver.py):
run_graph (parity report, per-kernel event times), prepare_graph (launch-only callable for
hal bench), event-based `time`, and zero-copy use of torch CUDA tensors as inputs and
`out=` outputs. NOT RUN ON HARDWARE yet: the runner is tested with a fake driver that
executes each kernel on the CPU simulator; scripts/gpu_check.sh is the H100 check.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from hal.backend import Availability, Capability, probe_driver
from hal.gpu_driver import GpuDriver
from hal.gpu_runner import GpuBackend

if TYPE_CHECKING:
    from hal.render.cstyle import CStyleRenderer


def _bindings_installed() -> bool:
    try:
        return any(importlib.util.find_spec(m) is not None
                   for m in ("cuda.bindings", "cuda.core"))
    except (ImportError, ValueError):  # no `cuda` package at all
        return False


class CudaBackend(GpuBackend):
    name = "cuda"
    capabilities = frozenset({Capability.FP16, Capability.BF16, Capability.FP8, Capability.F64,
                              Capability.INT, Capability.ATOMICS, Capability.WARP_SHUFFLE,
                              Capability.KERNELS, Capability.TIMING, Capability.REAL_HARDWARE})
    default_device = "h100-sxm"

    def __init__(self) -> None:
        self._availability: Availability | None = None

    def probe(self) -> Availability:
        if self._availability is None:
            if not _bindings_installed():
                self._availability = Availability(
                    False, "cuda-python is not installed: pip install 'hal[cuda]'")
            else:
                self._availability = probe_driver(["libcuda.so.1", "libcuda.so"],
                                                  "cuInit", "cuDeviceGetCount", "CUDA")
        return self._availability

    def make_driver(self) -> GpuDriver:
        from .driver import CudaDriver

        return CudaDriver()

    def renderer(self) -> CStyleRenderer:
        from .render import CudaRenderer

        return CudaRenderer()
