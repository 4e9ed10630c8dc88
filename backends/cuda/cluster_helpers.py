"""CUDA for thread-block clusters (hal.kernel.ir_cluster): inline PTX helpers and the renderer
rules that call them (`ClusterRendering`, mixed into CudaRenderer).

PTX ISA sources: 9.7.9.25.5.2 cp.async.bulk.tensor (.multicast::cluster with a 16-bit CTA
mask: the box lands at the same shared offset in each CTA of the mask and signals the
mbarrier at the same offset in each), 9.7.9.21 mapa (a shared::cta address -> the same
variable in the CTA of a given rank, a shared::cluster address), 9.7.13.15.13
mbarrier.arrive (on a shared::cluster address; the default .release.cta semantics, as
CUTLASS's ClusterBarrier::arrive(cta_id): .release.cluster makes ptxas put a MEMBAR.ALL.GPU
before every release in the consumer loop), 9.7.13.2
barrier.cluster (.arrive.release / .wait.acquire, .aligned: every thread of the CTA),
9.7.13.15.x fence.mbarrier_init.release.cluster, 10.x %cluster_ctarank.

The cluster shape is not compiled in: the host launches the kernel with
CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION (backends/cuda/driver.py, cuLaunchKernelEx), from
Kernel.cluster, and the generated source names it in its header comment.
"""

from __future__ import annotations

from hal.kernel import ir_async as ira
from hal.kernel import ir_cluster as irc
from hal.render.cstyle import ident


def _tma_multicast(r: int) -> tuple[str, str]:
    name = f"hal_tma_load_{r}d_multicast"
    coords = ", ".join(f"%{4 + i}" for i in range(r))
    text = (f"HAL_FN void {name}(void* dst, const hal_tensor_map* map, void* bar, "
            f"unsigned short mask, " + ", ".join(f"int c{i}" for i in range(r)) + ") {\n"
            f'  asm volatile("cp.async.bulk.tensor.{r}d.shared::cluster.global.tile.'
            f'mbarrier::complete_tx::bytes.multicast::cluster [%0], [%1, {{{coords}}}], '
            f'[%2], %3;\\n"\n'
            '               :: "r"(hal_smem_u32(dst)), "l"(reinterpret_cast<unsigned long long>'
            '(map)), "r"(hal_smem_u32(bar)), "h"(mask)'
            + "".join(f', "r"(c{i})' for i in range(r)) + ' : "memory");\n}\n')
    return name, text


CLUSTER_HELPERS: dict[str, str] = {
    "hal_cluster_ctarank": (
        "HAL_FN int hal_cluster_ctarank() {\n"
        "  unsigned r;\n"
        '  asm volatile("mov.u32 %0, %%cluster_ctarank;\\n" : "=r"(r));\n'
        "  return (int)r;\n}\n"),
    "hal_cluster_arrive": ('HAL_FN void hal_cluster_arrive() '
                           '{ asm volatile("barrier.cluster.arrive.release.aligned;\\n" ::: '
                           '"memory"); }\n'),
    "hal_cluster_arrive_after_init": (
        'HAL_FN void hal_cluster_arrive_after_init() {\n'
        '  asm volatile("fence.mbarrier_init.release.cluster;\\n" ::: "memory");\n'
        '  asm volatile("barrier.cluster.arrive.release.aligned;\\n" ::: "memory");\n}\n'),
    "hal_cluster_wait": ('HAL_FN void hal_cluster_wait() '
                         '{ asm volatile("barrier.cluster.wait.acquire.aligned;\\n" ::: '
                         '"memory"); }\n'),
    "hal_mbarrier_arrive_cluster": (
        "HAL_FN void hal_mbarrier_arrive_cluster(void* bar, unsigned cta) {\n"
        "  unsigned remote;\n"
        '  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;\\n" : "=r"(remote) : '
        '"r"(hal_smem_u32(bar)), "r"(cta));\n'
        '  asm volatile("mbarrier.arrive.shared::cluster.b64 _, [%0];\\n" :: '
        '"r"(remote) : "memory");\n}\n'),
    **dict(_tma_multicast(r) for r in range(1, 6)),
}


class ClusterRendering:
    """Renderer rules for cluster nodes and the cluster forms of TMA / mbarrier arrive (a
    CStyleRenderer mixin placed before HopperRendering)."""

    def _e_ClusterCtaRank(self, e: irc.ClusterCtaRank) -> str:
        return f"{self._matrix('hal_cluster_ctarank', '%cluster_ctarank')}()"

    def _s_ClusterArrive(self, s: irc.ClusterArrive, pad: str) -> list[str]:
        fn = "hal_cluster_arrive_after_init" if s.init_fence else "hal_cluster_arrive"
        return [f"{pad}{self._matrix(fn, 'barrier.cluster.arrive')}();"]

    def _s_ClusterWait(self, s: irc.ClusterWait, pad: str) -> list[str]:
        return [f"{pad}{self._matrix('hal_cluster_wait', 'barrier.cluster.wait')}();"]

    def _s_MbarrierArrive(self, s: ira.MbarrierArrive, pad: str) -> list[str]:
        if s.cta is None:
            return super()._s_MbarrierArrive(s, pad)   # type: ignore[misc]
        fn = self._matrix("hal_mbarrier_arrive_cluster", "mbarrier.arrive.shared::cluster")
        return [f"{pad}{fn}(&{ident(s.bar)}[{self.expr(s.index)}], "
                f"(unsigned)({self.expr(s.cta)}));"]

    def _s_TmaLoad(self, s: ira.TmaLoad, pad: str) -> list[str]:
        if not s.multicast:
            return super()._s_TmaLoad(s, pad)   # type: ignore[misc]
        fn = self._matrix(f"hal_tma_load_{len(s.coords)}d_multicast",
                          "cp.async.bulk.tensor .multicast::cluster")
        coords = ", ".join(f"(int)({self.expr(c)})" for c in s.coords)
        return [f"{pad}{fn}(&{ident(s.dst)}[{self.expr(s.dst_index)}], "
                f"&{ident(s.tmap)}, &{ident(s.bar)}[{self.expr(s.bar_index)}], "
                f"(unsigned short){s.multicast:#x}, {coords});"]


__all__ = ["CLUSTER_HELPERS", "ClusterRendering"]
