"""Thread-block clusters for the Hopper GEMM: a 2-CTA cluster along M with TMA multicast of B.

`cluster_choice` decides, once per plan, whether the wgmma kernel (hal.lowering.matmul_wgmma)
runs its blocks as 2-CTA clusters along M; planners_tiled.plan_matmul records the choice
and its reason as the plan's ("cluster", ClusterChoice) detail, and both the cost model
(B's tile loads counted once per cluster, planners_tiled) and the lowering read that one
record.

The kernel with a cluster (hal.kernel.ir_cluster for the nodes):

* the grouped raster order gives the two CTAs of a cluster (blocks 2i, 2i+1 of grid.x:
  cluster dims (2, 1, 1)) adjacent row tiles of the same column panel, so they consume the
  same B tile at every k step (group_m is kept even and the row-tile count is even);
* each CTA's producer loads its own A box and HALF of every B box (the rows of its cluster
  rank), multicast to both CTAs (mask 0b11): B is read from L2 once per cluster, and each
  CTA's full barrier still expects the A box plus the whole B tile. Each CTA issuing half,
  rather than one CTA issuing all of B, keeps the two producers' work equal (the pair
  finishes a stage when the slower one does) and spreads the copies over both SMs' TMA
  units (CUTLASS's multicast pipelines split the same way);
* a stage may be overwritten only when BOTH CTAs' consumers are done with it (the peer's
  multicast writes it too): empty[s] counts one arrival per consumer warpgroup of each CTA
  of the cluster, and thread r of every consumer warpgroup (r < 2, after wgmma.wait_group,
  which retires the warpgroup's reads) arrives on empty[s] of the CTA of rank r (mapa +
  remote arrive);
* barrier.cluster.arrive/wait after the mbarrier inits (with fence.mbarrier_init, so no
  multicast or remote arrive reaches a peer's barrier before its init) and again at the end
  (no CTA exits while its peer may still arrive on its barriers or write its shared memory).

Not clustered (the reason is recorded): specs without the `clusters` capability, an odd
number of row tiles (the last pair would have no peer), one row tile.

Self-test faults planted here: cluster_local_release (consumers release a stage to their own
producer only, so the peer's multicast overwrites a stage still being read) and
cluster_multicast_mask (B halves multicast to rank 0 only).
"""

from __future__ import annotations

from dataclasses import dataclass

from hal.devices.spec import DeviceSpec
from hal.kernel import ir_async as ira
from hal.kernel import ir_cluster as irc
from hal.kernel.ir import Binary, If, Stmt
from hal.lowering.tiling import cdiv

CTAS = 2


@dataclass(frozen=True)
class ClusterChoice:
    """The wgmma kernel's cluster: `ctas` CTAs along M (1: no cluster), and why."""

    ctas: int
    reason: str

    @property
    def dims(self) -> tuple[int, int, int]:
        return (self.ctas, 1, 1)

    @property
    def mask(self) -> int:
        return (1 << self.ctas) - 1

    def b_loads(self, row_tiles: int) -> int:
        """How many times each B tile is read from L2 (once per cluster of row tiles)."""
        return cdiv(row_tiles, self.ctas)

    def group_m(self, gm: int) -> int:
        """The raster's group of row tiles, even so a cluster's CTAs share a column."""
        return gm + gm % self.ctas if self.ctas > 1 else gm


def cluster_choice(spec: DeviceSpec, m: int, bm: int, col_panels: int) -> ClusterChoice:
    """The cluster of a wgmma GEMM of M rows in tiles of `bm` with `col_panels` column panels."""
    npm = cdiv(m, bm)
    if "clusters" not in spec.capabilities:
        return ClusterChoice(1, f"{spec.name} has no thread-block clusters")
    if npm < CTAS:
        return ClusterChoice(1, f"one row tile of {bm} (M = {m}): no peer to share B with")
    if npm % CTAS:
        return ClusterChoice(1, f"{npm} row tiles of {bm} (M = {m}): a {CTAS}-CTA cluster "
                                f"along M needs an even count")
    return ClusterChoice(CTAS, f"{CTAS}-CTA clusters along M: each B tile is TMA-loaded once "
                               f"per cluster, half by each CTA and multicast to both "
                               f"({npm // CTAS * col_panels} B panel reads instead of "
                               f"{npm * col_panels})")


# ---------------------------------------------------------------------- emitter helpers
def b_box(box: tuple, ctas: int) -> tuple:
    """A B box (outermost first) split in `ctas` along its rows (the second-innermost
    dimension): what one CTA of the cluster issues."""
    return (*box[:-2], box[-2] // ctas, box[-1])


def cluster_start(fence_first: bool = True) -> list[Stmt]:
    """After the mbarrier inits: every CTA of the cluster has initialised its barriers."""
    return [irc.ClusterArrive(init_fence=fence_first), irc.ClusterWait()]


def cluster_end() -> list[Stmt]:
    """Before exit: no peer arrives on this CTA's barriers or writes its tiles any more."""
    return [irc.ClusterArrive(), irc.ClusterWait()]


def release_stage(ctx, out: list[Stmt], choice: ClusterChoice, empty: str, st,
                  local_only: bool) -> None:
    """Thread r (< ctas) of each consumer warpgroup arrives on empty[st] of CTA rank r.
    `local_only` (the cluster_local_release fault): thread 0 arrives on its own CTA only."""
    lt = ctx.declare(out, "wg_lane", ctx.mod(ctx.tid(), 128))
    if local_only:   # self-test hook (cluster_local_release)
        out.append(If(lt.eq(ctx.c(0)), [ira.MbarrierArrive(empty, st)]))
        return
    out.append(If(Binary("lt", lt, ctx.c(choice.ctas)),
                  [ira.MbarrierArrive(empty, st, cta=lt)]))


__all__ = ["CTAS", "ClusterChoice", "b_box", "cluster_choice", "cluster_end",
           "cluster_start", "release_stage"]
