"""ReferenceBackend: runs a graph with hal.reference (float64 NumPy), always available.

It is the "null driver" a new backend copies to start: probe, run_graph and
nothing else. It runs no kernels, so the kernel-level methods of `Backend`
raise UnsupportedError. Outputs come back in each graph output's dtype.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from hal.backend import Availability, Backend, Capability, RunResult
from hal.devices.spec import DeviceSpec
from hal.ir.graph import Graph


class ReferenceBackend(Backend):
    name = "reference"
    capabilities = frozenset({Capability.FP16, Capability.BF16, Capability.FP8, Capability.F64,
                              Capability.INT, Capability.SIMULATED})
    default_device = "host-cpu"

    def probe(self) -> Availability:
        return Availability(True, "NumPy float64 evaluation of the primitive graph")

    def run_graph(self, graph: Graph, inputs: Mapping[str, np.ndarray],
                  spec: DeviceSpec | None = None, **options: Any) -> RunResult:
        """Evaluate `graph`; the device spec does not change the reference's results."""
        from hal.reference import evaluate  # lazy: written alongside, heavy on first use

        outputs = evaluate(graph, dict(inputs))
        return RunResult(outputs=dict(outputs))
