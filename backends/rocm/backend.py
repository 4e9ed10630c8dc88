"""RocmBackend: AMD GPUs through hip-python (hipRTC or hipcc to compile, HIP to launch).

`probe` is cheap (ctypes: is hip-python installed, does libamdhip64 find a GPU). Running
is hal.gpu_runner's GpuBackend with the HIP renderer and HipDriver
(backends/rocm/driver.py); zero-copy for ROCm torch tensors (DLPack device kDLROCM).
NOT RUN ON HARDWARE: the runner is tested with a fake driver on the CPU simulator.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from hal.backend import Availability, Capability, probe_driver
from hal.gpu_driver import GpuDriver
from hal.gpu_runner import GpuBackend

if TYPE_CHECKING:
    from hal.render.cstyle import CStyleRenderer

_HIP_LIBRARIES = ["libamdhip64.so", "libamdhip64.so.6", "libamdhip64.so.5"]


class RocmBackend(GpuBackend):
    name = "rocm"
    capabilities = frozenset({Capability.FP16, Capability.BF16, Capability.FP8, Capability.F64,
                              Capability.INT, Capability.ATOMICS, Capability.WARP_SHUFFLE,
                              Capability.KERNELS, Capability.TIMING, Capability.REAL_HARDWARE})
    default_device = "mi300x"

    def __init__(self) -> None:
        self._availability: Availability | None = None

    def probe(self) -> Availability:
        if self._availability is None:
            if importlib.util.find_spec("hip") is None:
                self._availability = Availability(
                    False, "hip-python is not installed: pip install 'hal[rocm]'")
            else:
                self._availability = probe_driver(_HIP_LIBRARIES, "hipInit",
                                                  "hipGetDeviceCount", "ROCm")
        return self._availability

    def make_driver(self) -> GpuDriver:
        from .driver import HipDriver

        return HipDriver()

    def renderer(self) -> CStyleRenderer:
        from .render import HipRenderer

        return HipRenderer()
