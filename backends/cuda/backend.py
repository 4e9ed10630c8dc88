"""CudaBackend: NVIDIA GPUs through cuda-python (NVRTC to compile, the driver API to launch).

For now only `probe` is real: it reports whether cuda-python is installed and
a CUDA driver with a GPU is present. Rendering, compiling and launching land
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


def _bindings_installed() -> bool:
    try:
        return any(importlib.util.find_spec(m) is not None
                   for m in ("cuda.bindings", "cuda.core"))
    except (ImportError, ValueError):  # no `cuda` package at all
        return False


class CudaBackend(Backend):
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

    def _unsupported(self, what: str) -> UnsupportedError:
        return UnsupportedError(f"cuda backend: cannot {what}: not implemented yet",
                                hint="use --backend reference or cpu_sim for now")

    def run_graph(self, graph: Graph, inputs: Mapping[str, np.ndarray],
                  spec: DeviceSpec | None = None, **options: Any) -> RunResult:
        raise self._unsupported("run graphs")
