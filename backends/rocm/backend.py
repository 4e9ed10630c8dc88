"""RocmBackend: AMD GPUs through hip-python (hipRTC to compile, the HIP runtime to launch).

For now only `probe` is real: it reports whether hip-python is installed and
the HIP runtime finds a ROCm GPU. Rendering, compiling and launching land
here next; until then those methods raise UnsupportedError.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

import numpy as np

from hal.backend import Availability, Backend, Capability, RunResult, probe_driver
from hal.devices.spec import DeviceSpec
from hal.errors import UnsupportedError
from hal.ir.graph import Graph

_HIP_LIBRARIES = ["libamdhip64.so", "libamdhip64.so.6", "libamdhip64.so.5"]


class RocmBackend(Backend):
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

    def _unsupported(self, what: str) -> UnsupportedError:
        return UnsupportedError(f"rocm backend: cannot {what}: not implemented yet",
                                hint="use --backend reference or cpu_sim for now")

    def run_graph(self, graph: Graph, inputs: Mapping[str, np.ndarray],
                  spec: DeviceSpec | None = None, **options: Any) -> RunResult:
        raise self._unsupported("run graphs")
