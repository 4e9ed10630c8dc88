"""Kernel IR of Hopper's thread-block clusters (sm_90): rank queries and cluster barriers.

A kernel's `Kernel.cluster` (x, y, z) groups that many consecutive blocks of the grid into
one cluster whose CTAs run at the same time on neighbouring SMs and may address each
other's shared memory (distributed shared memory). A CTA's rank in its cluster is
x % cx + (y % cy) * cx + (z % cz) * cx * cy (PTX ISA, %cluster_ctarank). The nodes that
act across a cluster:

* `ClusterCtaRank` (expression, i32): %cluster_ctarank.
* `TmaLoad.multicast` and `MbarrierArrive.cta` (hal.kernel.ir_async): a TMA box written to
  the shared memory of several CTAs of the cluster, an arrival on a peer CTA's mbarrier.
* `ClusterArrive(init_fence)` / `ClusterWait`: barrier.cluster.arrive.release.aligned /
  barrier.cluster.wait.acquire.aligned, executed by every thread of every CTA of the
  cluster. Two uses in a pipeline: after the mbarrier inits (with `init_fence`: first
  fence.mbarrier_init.release.cluster, so a peer's multicast or remote arrive never
  reaches an uninitialised barrier), and before a CTA exits (a peer may still arrive on
  its barriers or write its shared memory while it runs).

The verifier's rules (hal.kernel.verify): at most 8 CTAs per cluster (the portable size),
each grid axis a multiple of the cluster's, multicast masks inside the cluster and only in
cluster kernels, remote arrivals only in cluster kernels, cluster barriers outside
thread-dependent branches.
"""

from __future__ import annotations

from dataclasses import dataclass

from hal.dtypes import i32
from hal.kernel.ir import EXPR_CHILDREN, STMT_EXPRS, Expr, Stmt

PORTABLE_CLUSTER = 8      # CTAs per cluster every sm_90 launch accepts


@dataclass(frozen=True, eq=True)
class ClusterCtaRank(Expr):
    @property
    def dtype(self):  # type: ignore[override]
        return i32


@dataclass(eq=True)
class ClusterArrive(Stmt):
    init_fence: bool = False   # fence.mbarrier_init.release.cluster first


@dataclass(eq=True)
class ClusterWait(Stmt):
    pass


def cluster_size(cluster: tuple[int, int, int]) -> int:
    return cluster[0] * cluster[1] * cluster[2]


def cta_rank(cluster: tuple[int, int, int], bx, by, bz):
    """%cluster_ctarank of block (bx, by, bz) (ints or NumPy arrays)."""
    cx, cy, cz = cluster
    return bx % cx + (by % cy) * cx + (bz % cz) * cx * cy


EXPR_CHILDREN[ClusterCtaRank] = ()
STMT_EXPRS.update({ClusterArrive: (), ClusterWait: ()})
CLUSTER_STMTS = (ClusterArrive, ClusterWait)

__all__ = ["CLUSTER_STMTS", "ClusterArrive", "ClusterCtaRank", "ClusterWait",
           "PORTABLE_CLUSTER", "cluster_size", "cta_rank"]
