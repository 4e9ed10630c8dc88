"""Kernel IR nodes of Hopper's asynchronous machinery: warpgroup MMA, TMA, mbarriers.

hal.kernel.wgmma owns the descriptor format, swizzles and accumulator layout, and
hal.kernel.tma the tensor-map rules; these nodes say what a thread does with them. They
follow hal.kernel.ir's conventions (their fields are in its traversal tables, filled here).

* `SmemDesc` (expression, 64-bit): the wgmma matrix descriptor of shared buffer `buffer`
  at element `offset` with LBO/SBO (bytes) and a swizzle mode (bytes: 0, 32, 64, 128).
* `Wgmma`: one wgmma.mma_async m64nNkK issued by a whole warpgroup (128 threads, 4
  consecutive warps): acc[acc_off : acc_off + n/2] of each thread (its accumulator
  elements, hal.kernel.wgmma.accumulator_table) += A(a_desc) @ B(b_desc). `trans_b`: B is
  N-major (16-bit types only). The result may be read only after the `WgmmaWait` that
  retires its commit group; `WgmmaFence` orders register accesses before it. `a_regs`:
  A from registers instead of shared memory (`a_desc` is then None): elements
  a_regs[a_off : a_off + 8] of each thread (16-bit types, k16; rendered as 4 x .b32) hold
  its A fragment, which has the accumulator layout of a m64n16 wgmma
  (hal.kernel.wgmma.a_fragment_table): so an f32 accumulator converted element by element
  is the next wgmma's A (FlashAttention's P).
* `WgmmaFence`, `WgmmaCommit`, `WgmmaWait(pending)`: wgmma.fence / commit_group /
  wait_group.
* `MbarrierInit(bar, index, count)`: mbarrier.init of bar[index] expecting `count`
  arrivals per phase. `MbarrierArrive(bar, index, tx_bytes)`: mbarrier.arrive, with
  .expect_tx of `tx_bytes` transaction bytes when non-zero. `MbarrierWait(bar, index,
  parity)`: loop on mbarrier.try_wait.parity until the phase of that parity completed.
  Barriers are 8-byte words of a shared buffer (dtype i64).
* `TmaLoad(dst, dst_index, tmap, coords, bar, bar_index, multicast)`: cp.async.bulk.tensor
  of the box at `coords` (innermost first) of tensor map `tmap` (Kernel.tensor_maps) into
  shared `dst` at element `dst_index`, completing `box_bytes` transactions on
  bar[bar_index]. Issued by one thread. `multicast` (a CTA mask, bit r = cluster rank r;
  0 = none): the box lands at the same offset in the shared memory of every CTA of the
  mask and completes its bytes on each one's bar[bar_index] (.multicast::cluster;
  hal.kernel.ir_cluster).
* `MbarrierArrive.cta`: when set, the arrival goes to bar[index] of the CTA of that rank in
  the kernel's cluster (mapa + mbarrier.arrive.shared::cluster), e.g. a consumer releasing
  a stage a peer's multicast writes into.
* `FenceProxyAsync`: fence.proxy.async.shared::cta (generic-proxy shared writes, such as
  mbarrier inits, made visible to the async proxy).
* `Roles(cond, first, second)`: warp-specialised roles running concurrently (see the class).
* `SetMaxNReg(count, increase)`: setmaxnreg.{inc,dec}.sync.aligned.u32 (a warpgroup's role:
  the producer gives registers back, the consumers take them).
"""

from __future__ import annotations

from dataclasses import dataclass

from hal.dtypes import i64
from hal.kernel.ir import EXPR_CHILDREN, STMT_BODIES, STMT_EXPRS, Expr, Stmt


@dataclass(frozen=True, eq=True)
class SmemDesc(Expr):
    buffer: str
    offset: Expr
    lbo: int
    sbo: int
    swizzle: int

    @property
    def dtype(self):  # type: ignore[override]
        return i64


@dataclass(eq=True)
class Wgmma(Stmt):
    n: int
    atype: str             # dtype name of A and B
    acc: str               # f32 LocalBuffer of the accumulators
    acc_off: int
    a_desc: Expr | None
    b_desc: Expr
    trans_b: bool = False
    a_regs: str | None = None   # 16-bit LocalBuffer holding A's register fragments
    a_off: int = 0


@dataclass(eq=True)
class WgmmaFence(Stmt):
    pass


@dataclass(eq=True)
class WgmmaCommit(Stmt):
    pass


@dataclass(eq=True)
class WgmmaWait(Stmt):
    pending: int


@dataclass(eq=True)
class MbarrierInit(Stmt):
    bar: str
    index: Expr
    count: int


@dataclass(eq=True)
class MbarrierArrive(Stmt):
    bar: str
    index: Expr
    tx_bytes: int = 0
    cta: Expr | None = None    # a peer CTA's rank in the cluster (remote arrive)


@dataclass(eq=True)
class MbarrierWait(Stmt):
    bar: str
    index: Expr
    parity: Expr


@dataclass(eq=True)
class TmaLoad(Stmt):
    dst: str
    dst_index: Expr
    tmap: str
    coords: tuple
    bar: str
    bar_index: Expr
    multicast: int = 0         # CTA mask of a .multicast::cluster copy (0: this CTA only)


@dataclass(eq=True)
class FenceProxyAsync(Stmt):
    pass


@dataclass(eq=True)
class Roles(Stmt):
    """Warp-specialised roles: the threads where `cond` holds run `first`, the others
    `second`, CONCURRENTLY. Each branch is leading statements, one For loop, trailing
    statements; both loops have the same bounds and meet only through mbarriers. Rendered as
    if / else (each role its own code region, so setmaxnreg takes effect there); cpu_sim runs
    the leading statements, then the two loops interleaved step by step (an iteration of the
    first role, then the same iteration of the second), then the trailing statements."""

    cond: Expr
    first: list[Stmt]
    second: list[Stmt]


def role_parts(branch: list[Stmt]):
    """(leading statements, the loop, trailing statements) of a Roles branch, or None."""
    from hal.kernel.ir import For

    loops = [i for i, s in enumerate(branch) if isinstance(s, For)]
    if len(loops) != 1:
        return None
    i = loops[0]
    return branch[:i], branch[i], branch[i + 1:]


@dataclass(eq=True)
class SetMaxNReg(Stmt):
    count: int
    increase: bool


EXPR_CHILDREN[SmemDesc] = ("offset",)
STMT_EXPRS.update({
    Wgmma: ("a_desc", "b_desc"), WgmmaFence: (), WgmmaCommit: (), WgmmaWait: (),
    MbarrierInit: ("index",), MbarrierArrive: ("index", "cta"), MbarrierWait: ("index", "parity"),
    TmaLoad: ("dst_index", "coords", "bar_index"), FenceProxyAsync: (), SetMaxNReg: (),
    Roles: ("cond",),
})
STMT_BODIES[Roles] = ("first", "second")

ASYNC_STMTS = (Wgmma, WgmmaFence, WgmmaCommit, WgmmaWait, MbarrierInit, MbarrierArrive,
               MbarrierWait, TmaLoad, FenceProxyAsync, SetMaxNReg, Roles)

__all__ = ["ASYNC_STMTS", "FenceProxyAsync", "MbarrierArrive", "MbarrierInit", "MbarrierWait",
           "Roles", "SetMaxNReg", "role_parts", "SmemDesc", "TmaLoad", "Wgmma", "WgmmaCommit", "WgmmaFence",
           "WgmmaWait"]
