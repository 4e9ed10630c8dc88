"""hal-scratchnpu: an example out-of-tree hal backend for the scratch-npu device.

hal finds `ScratchNpuBackend` through the entry point in pyproject.toml:

    [project.entry-points."hal.backends"]
    scratchnpu = "hal_scratchnpu:ScratchNpuBackend"

Importing this module (hal does so when the backend is first used) also
registers the backend's conformance expectations, in the IREE style:
UNSUPPORTED cases are skipped with their reason; EXPECTED_FAILURES must fail
(an unexpected pass fails the run, so the list shrinks as bugs are fixed).
Dtypes the backend lacks (f64, fp8) need no entry: its capabilities skip them.
"""

from hal.conformance.expectations import register_expectations

from .backend import ScratchNpuBackend

__all__ = ["ScratchNpuBackend"]

register_expectations(
    "scratchnpu",
    unsupported={
        # REPLACE with what your device will never run, each with a reason, e.g.
        # "elementwise/erf/*": "no erf in the vector unit's ISA",
    },
    expected_failures={
        # Known bugs, each with a tracking reason. These come from the shared lowering
        # (cpu_sim lists the same ones); a real backend adds its own compiler's bugs here.
        "fused/attention/f16/*": "hal's fused attention kernel does not round like the "
                                 "primitive graph (P cast to f16 before P@V)",
        "fused/attention/bf16/*": "hal's fused attention kernel does not round like the "
                                  "primitive graph (P cast to bf16 before P@V)",
        "model/llama_block/bf16/*": "contains fused attention in bf16 "
                                    "(see fused/attention/bf16)",
    },
)
