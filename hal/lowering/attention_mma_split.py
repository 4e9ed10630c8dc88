"""Split-K attention on the matrix unit: the partial kernels of a split-K plan whose Q K^T
and P V issue the spec's matrix instruction (strategy "flash_attention_mma", split_k > 1).

Small prefills (few row tiles, many keys) split the keys into S chunks
(hal.lowering.attention_split); when the graph rounds P to the input dtype (the two-pass
schedule: the condition of hal.lowering.attention_mma) and the cost model says the
contractions, not the K/V read, bound the kernel (`attention_split.split_mma_verdict`),
the planner keeps the matrix unit for them. The kernels are attention_split's three:

* `_stats` (grid z = chunk): the matrix-unit pass 1 over the chunk's key tiles; the lane
  holding column 0 of a row stores the row's max m and sum l for the chunk;
* `_split`: each lane combines the S (m, l) of each of its rows (global max, rescaled
  sum: attention_split.SplitKEmitter.combined_stats), runs the matrix-unit pass 2 over the
  chunk (P rounded where the graph rounds it) and stores its partial P V accumulators;
* `_combine`: attention_split's plain sum of the partials (P is normalised).

A causal mask ends each block's key range at its diagonal as in the unsplit kernel: a
chunk wholly above it walks no tile and leaves (m, l) = (-inf, 0) and zero partials.
"""

from __future__ import annotations

from hal.devices.spec import DeviceSpec
from hal.kernel.ir import Assign, Binary, Expr, For, If, Kernel, Load, Stmt, Store
from hal.lowering.attention_match import AttentionPattern
from hal.lowering.attention_mma import AttentionMmaEmitter
from hal.lowering.attention_split import SplitKEmitter
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions
from hal.lowering.plan import KernelPlan


class SplitMmaEmitter(AttentionMmaEmitter):
    """The stats and partial kernels of a matrix-unit split-K plan (module doc)."""

    def __init__(self, group, plan: KernelPlan, spec: DeviceSpec, pat: AttentionPattern,
                 options: LoweringOptions = DEFAULT_OPTIONS):
        choice = plan.detail("mma_choice")
        super().__init__(group, plan, spec, pat, choice, options)
        self.split = SplitKEmitter(group, plan, spec, pat, choice.tiles, options)
        self.s, self.ct = plan.detail("split_k"), plan.detail("chunk_tiles")
        self.launch = {x.stage: x for x in plan.launches}

    def kernels(self) -> list[Kernel]:
        return [self._stats_kernel(), self._partial_kernel(), self.split.combine_kernel()]

    def _chunk(self) -> None:
        """Walk key tiles [z * chunk_tiles, + chunk_tiles) only (within kt_hi)."""
        ctx = self.ctx
        self.kt_lo = ctx.declare(self.body, "kt0", ctx.mul(ctx.bid("z"), self.ct))
        self.kt_hi = Binary("minimum", ctx.add(self.kt_lo, self.ct), self.kt_hi)

    def _slot(self, grow: Expr) -> Expr:
        """Index of (batch entry, row, chunk) in the partials (attention_split's order)."""
        ctx = self.ctx
        return ctx.add(ctx.mul(ctx.add(ctx.mul(ctx.bid("y"), self.pat.m), grow), self.s),
                       ctx.bid("z"))

    def _stats_kernel(self) -> Kernel:
        self._setup(f"{self.group.name}_stats")
        self._chunk()
        self._key_loop(self._pass1)
        ctx = self.ctx
        mb, lb = self.split.bufs(ctx, "m l", False)
        first = self.ccol.eq(ctx.c(0))       # the lane holding the row's column 0
        for s, grow in enumerate(self.grows):
            slot = ctx.declare(self.body, "slot", self._slot(grow))
            self.body.append(If(Binary("logical_and", grow.lt(ctx.c(self.pat.m)), first),
                                [Store(mb, slot, self.m_run[s]),
                                 Store(lb, slot, self.l_run[s])]))
        launch = self.launch["stats"]
        return ctx.kernel(self.body, launch.grid, launch.block, self.group, self.plan, "stats")

    def _partial_kernel(self) -> Kernel:
        self._setup(f"{self.group.name}_split")
        self._chunk()
        ctx, body, m = self.ctx, self.body, self.pat.m
        stats = self.split.bufs(ctx, "m l", True)
        for s, grow in enumerate(self.grows):   # (m, l) of the row over all chunks
            base = ctx.declare(body, "rbase", ctx.mul(ctx.add(ctx.mul(ctx.bid("y"), m), grow),
                                                      self.s))
            mx, sm, _mu, _mb = self.split.combined_stats(ctx, body, base, grow.lt(ctx.c(m)),
                                                         stats)
            body += [Assign(self.m_run[s], mx), Assign(self.l_run[s], sm)]
        self._final_stats()
        self._key_loop(self._pass2)
        (ab,) = self.split.bufs(ctx, "acc", False)
        lay, dv = self.lay, self.pat.dv
        j = ctx.var("j", ctx.idx)
        el: list[Stmt] = []
        for i in range(lay.c_elems):
            c = int(lay.offsets["c"][i][1])
            grow = self.grows[self.slot_of[i]]
            dvo = ctx.declare(el, "dv", ctx.add(ctx.mul(j, lay.n), ctx.add(self.ccol, c)))
            ok = Binary("logical_and", grow.lt(ctx.c(m)), dvo.lt(ctx.c(dv)))
            val = Load(self.o_acc, ctx.add(ctx.mul(j, lay.c_elems), i), self.split.adt)
            el.append(If(ok, [Store(ab, ctx.add(ctx.mul(self._slot(grow), dv), dvo), val)]))
        body.append(For(j, ctx.c(0), ctx.c(self.no), ctx.c(1), el, unroll=True))
        launch = self.launch["partial"]
        return ctx.kernel(body, launch.grid, launch.block, self.group, self.plan, "partial")


def lower_split_mma(group, plan: KernelPlan, spec: DeviceSpec, pat: AttentionPattern,
                    options: LoweringOptions = DEFAULT_OPTIONS) -> list[Kernel]:
    """The kernels of a matrix-unit split-K attention plan."""
    return SplitMmaEmitter(group, plan, spec, pat, options).kernels()
