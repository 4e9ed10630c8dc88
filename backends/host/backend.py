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
* Hopper's asynchronous units (wgmma, TMA, mbarriers, thread-block clusters) are not
  emulated: kernels are lowered for the spec without its warpgroup matrix instructions (the
  mma.sync kernel on sm_90a); cpu_sim runs the wgmma kernels. This is never silent: where
  the device's own plan would run a group on wgmma, the run's report says which groups ran
  the mma.sync kernel instead (`report["substituted"]`, `warpgroup_substitution`), and
  conformance records it per case and counts it in the summary.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from hal.backend import Availability, Capability, RunResult
from hal.gpu_driver import GpuDriver
from hal.gpu_runner import GpuBackend

from .compiler import host_supported

if TYPE_CHECKING:
    from hal.devices.spec import DeviceSpec
    from hal.ir.graph import Graph
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
        return without_warpgroup(super()._spec(spec))

    def run_graph(self, graph: Graph, inputs: Mapping[str, Any],
                  spec: DeviceSpec | str | None = None, *, fuse: bool = True,
                  groups: Sequence | None = None, compare_reference: bool = True,
                  **options: Any) -> RunResult:
        """GpuBackend.run_graph on the spec without warpgroup instructions. Where the
        device's own plan would run a matmul or attention group on wgmma, the report's
        `substituted` names those groups (they ran the mma.sync kernel here)."""
        full = super()._spec(spec)
        reduced = without_warpgroup(full)
        result = self.runner().run(graph, inputs, reduced, fuse=fuse, groups=groups,
                                   compare_reference=compare_reference, **options)
        if reduced is not full and result.report is not None and any(
                s["kind"] in _CONTRACTION_KINDS for s in result.stats or ()):
            note = warpgroup_substitution(graph, full, reduced, fuse=fuse, groups=groups)
            if note:
                result.report["substituted"] = note
        return result

    def make_driver(self) -> GpuDriver:
        from .driver import HostDriver

        return HostDriver(self.vendor, self.name)

    def render_selftest(self, device: str) -> dict[str, list[tuple[str, str]]]:
        """The planted renderer faults on this backend (`hal conformance --self-test`)."""
        from .faults import run_render_selftest

        return run_render_selftest(self.name, device)


_CONTRACTION_KINDS = ("matmul", "attention")


def without_warpgroup(spec: DeviceSpec) -> DeviceSpec:
    """`spec` without its warpgroup matrix instructions (`spec` itself when it has none)."""
    if not any(mi.scope == "warpgroup" for mi in spec.matrix_instructions):
        return spec
    return dataclasses.replace(spec, matrix_instructions=tuple(
        mi for mi in spec.matrix_instructions if mi.scope != "warpgroup"))


def warpgroup_substitution(graph: Graph, full: DeviceSpec, reduced: DeviceSpec, *,
                           fuse: bool = True, groups: Sequence | None = None) -> str | None:
    """What the host run of `graph` on `reduced` substituted for `full`'s warpgroup kernels:
    each matmul/attention group it ran that `full`'s planner puts on wgmma (+ TMA, and a
    thread-block cluster where chosen), or None when there is none."""
    from hal.fusion.group import is_alias_group
    from hal.fusion.prepare import groups_to_run
    from hal.lowering.registry import plan_group

    _, gs = groups_to_run(graph, reduced, groups=groups, fuse=fuse, who="host")
    found = []
    for g in gs:
        if str(g.kind) not in _CONTRACTION_KINDS or is_alias_group(g):
            continue
        plan = plan_group(g, full)
        if "wgmma" not in plan.strategy:
            continue
        cluster = plan.detail("cluster")
        ctas = getattr(cluster, "ctas", 1)
        found.append(f"{g.name} ({plan.strategy}" + (f", {ctas}-CTA cluster)" if ctas > 1
                                                     else ")"))
    if not found:
        return None
    return (f"{full.name} plans {', '.join(found)} on warpgroup instructions, which the host "
            f"shim does not emulate: the mma.sync kernel ran instead (cpu_sim runs wgmma)")


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


__all__ = ["CudaHostBackend", "HipHostBackend", "HostBackend", "warpgroup_substitution",
           "without_warpgroup"]
