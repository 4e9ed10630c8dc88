"""`cuda-host` and `hip-host`: hal's CUDA and HIP text, unmodified, run on the host CPU.

The GPU runner (hal.gpu_runner) with the vendor's own renderer and a HostDriver
(hal.backends.host.driver): the same plan, lowering, rendered translation unit, argument
packing, grid and block as `cuda` / `rocm`, but compiled by a host C++ compiler against the
host shim (backends/host/shim) and launched on the CPU. Conformance on these backends
checks the text a GPU would compile, not only the kernel IR that cpu_sim runs.

DIFFERENCES from a GPU (and from cpu_sim), pinned by tests/test_host_shim_differences.py:
* math functions are the host libm's (glibc: expf, tanhf, erff, ... within 1 ulp);
  CUDA's and HIP's device libraries allow 1-4 ulp. Results may differ by those ulps;
  conformance tolerances cover both.
* no FP contraction (-ffp-contract=off): nvcc and hipcc fuse a*b+c into FMA by default,
  so the last bit of a multiply-add may differ from a GPU's.
* a block's threads run one after another between barriers, so a missing __syncthreads()
  shows only when a thread reads what a LATER thread writes before the barrier (cpu_sim's
  race check finds the general case in the IR);
* out-of-bounds global accesses are caught at a 16-byte granularity past the end of a
  buffer (guard page); shared memory is not bounds-checked.
* matrix units (mma.sync, MFMA) sum the exact products in double and round once; a GPU
  accumulates in f32 in an unspecified order (within the contraction's tolerance).
* launches are synchronous and "device time" is host wall time (not a GPU estimate).
* Hopper's asynchronous units (wgmma, TMA, mbarriers) are not emulated: kernels are lowered
  for the spec without its warpgroup matrix instructions (the mma.sync kernel on sm_90a);
  cpu_sim runs the wgmma kernels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from hal.backend import Availability, Capability
from hal.gpu_runner import GpuBackend, GpuDriver

from .compiler import host_supported

if TYPE_CHECKING:
    from hal.render.cstyle import CStyleRenderer

HOST_CAPABILITIES = frozenset({Capability.FP16, Capability.BF16, Capability.FP8,
                               Capability.F64, Capability.INT, Capability.ATOMICS,
                               Capability.WARP_SHUFFLE, Capability.KERNELS,
                               Capability.SIMULATED})


class HostBackend(GpuBackend):
    """The shared part; subclasses name the vendor and its renderer."""

    capabilities = HOST_CAPABILITIES
    vendor: ClassVar[str] = "cuda"

    def __init__(self) -> None:
        self._availability: Availability | None = None

    def probe(self) -> Availability:
        if self._availability is None:
            why = host_supported()
            self._availability = Availability(why is None, why or
                                              f"{self.vendor} text on the host CPU")
        return self._availability

    def _spec(self, spec):
        """The spec without warpgroup (wgmma) instructions: the shim runs mma.sync kernels."""
        import dataclasses

        s = super()._spec(spec)
        if any(mi.scope == "warpgroup" for mi in s.matrix_instructions):
            s = dataclasses.replace(s, matrix_instructions=tuple(
                mi for mi in s.matrix_instructions if mi.scope != "warpgroup"))
        return s

    def make_driver(self) -> GpuDriver:
        from .driver import HostDriver

        return HostDriver(self.vendor, self.name)

    def render_selftest(self, device: str) -> dict[str, list[tuple[str, str]]]:
        """The planted renderer faults on this backend (`hal conformance --self-test`)."""
        from .faults import run_render_selftest

        return run_render_selftest(self.name, device)


class CudaHostBackend(HostBackend):
    name = "cuda-host"
    vendor = "cuda"
    default_device = "h100-sxm"

    def renderer(self) -> CStyleRenderer:
        from hal.backends.cuda.render import CudaRenderer

        return CudaRenderer()


class HipHostBackend(HostBackend):
    name = "hip-host"
    vendor = "hip"
    default_device = "mi300x"

    def renderer(self) -> CStyleRenderer:
        from hal.backends.rocm.render import HipRenderer

        return HipRenderer()


__all__ = ["CudaHostBackend", "HipHostBackend", "HostBackend"]
