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
        # Known bugs, each with a tracking reason. Bugs of the shared lowering are listed
        # for cpu_sim too; a real backend adds its own compiler's bugs here, e.g.
        # "fused/attention/f16/*": "the vector unit's exp flushes f16 subnormals",
    },
)
