"""Code for Hopper's asynchronous nodes (hal.kernel.ir_async: wgmma, mbarriers, TMA,
warp-specialised roles) and thread-block clusters (hal.kernel.ir_cluster): the
`_Translator` methods (codegen.py) that emit calls into wgmma_sim.py (`WG`) and
cluster_sim.py (`CL`), gathered in the mixin `AsyncEmit`.
"""

from __future__ import annotations

from hal.kernel import ir_async as ira
from hal.kernel import ir_cluster as irc

from .stmt_context import _Ctx
from .vectorize import int_args


class AsyncEmit:
    """`_Translator`'s emitters of the Hopper and cluster nodes (it supplies `expr`,
    `emit`, `body`, `site`, `slot`, `facts`, ...)."""

    # Hopper's asynchronous nodes: backends/cpu_sim/wgmma_sim.py runs them
    def e_SmemDesc(self, e: ira.SmemDesc, ctx: _Ctx) -> str:
        off = self.expr(e.offset, _Ctx(ctx.mask, ctx.count, e.buffer, ctx.stmt))
        return (f"WG.desc(W, _hs, {self.slot[e.buffer][1]}, {off}, {e.lbo}, {e.sbo}, "
                f"{e.swizzle})")

    def s_Wgmma(self, s: ira.Wgmma, ctx: _Ctx, depth: int) -> None:
        b = self.expr(s.b_desc, ctx)
        layout = "wg_m64nNk32_b8" if s.atype.startswith("f8") else "wg_m64nNk16_b16"
        if s.a_regs is not None:   # A from the threads' registers (wgmma_sim.wgmma_rs)
            self.emit(f"WG.wgmma_rs(W, _hs, {s.n}, {s.atype!r}, {self.slot[s.acc][1]}, "
                      f"{s.acc_off}, {self.slot[s.a_regs][1]}, {s.a_off}, {b}, {s.trans_b}, "
                      f"{ctx.mask}, {self.site(ctx, None)}, {layout!r})", depth)
            return
        a = self.expr(s.a_desc, ctx)
        self.emit(f"WG.wgmma(W, _hs, {s.n}, {s.atype!r}, {self.slot[s.acc][1]}, {s.acc_off}, "
                  f"{a}, {b}, {s.trans_b}, {ctx.mask}, {self.site(ctx, None)}, {layout!r})",
                  depth)

    def s_WgmmaFence(self, s: ira.WgmmaFence, ctx: _Ctx, depth: int) -> None:
        self.emit("pass  # wgmma.fence", depth)

    def s_WgmmaCommit(self, s: ira.WgmmaCommit, ctx: _Ctx, depth: int) -> None:
        self.emit(f"WG.commit(W, _hs, {ctx.mask}, {self.site(ctx, None)})", depth)

    def s_WgmmaWait(self, s: ira.WgmmaWait, ctx: _Ctx, depth: int) -> None:
        self.emit(f"WG.wait(W, _hs, {s.pending}, {ctx.mask}, {self.site(ctx, None)})", depth)

    def s_MbarrierInit(self, s: ira.MbarrierInit, ctx: _Ctx, depth: int) -> None:
        self.emit(f"WG.mbar_init(W, _hs, {self.slot[s.bar][1]}, {self.expr(s.index, ctx)}, "
                  f"{s.count}, {ctx.mask})", depth)
        if self.clustered:
            self.emit(f"CL.note_init(W, _hs, _cs, {self.slot[s.bar][1]}, "
                      f"{self.expr(s.index, ctx)}, {ctx.mask})", depth)

    def s_MbarrierArrive(self, s: ira.MbarrierArrive, ctx: _Ctx, depth: int) -> None:
        jb, idx = self.slot[s.bar][1], self.expr(s.index, ctx)
        if s.cta is not None:   # a peer CTA's barrier (cluster_sim)
            self.emit(f"CL.arrive(W, _hs, _cs, {jb}, {idx}, {self.expr(s.cta, ctx)}, "
                      f"{ctx.mask}, {self.site(ctx, s.bar)})", depth)
            return
        if self.clustered:      # the arrival releases what its warpgroup read
            self.emit(f"CL.note_release(W, _hs, _cs, {jb}, {idx}, None, {ctx.mask})", depth)
        self.emit(f"WG.mbar_arrive(W, _hs, {jb}, {idx}, "
                  f"{s.tx_bytes}, {ctx.mask}, {self.site(ctx, s.bar)})", depth)

    def s_MbarrierWait(self, s: ira.MbarrierWait, ctx: _Ctx, depth: int) -> None:
        self.emit(f"WG.mbar_wait(W, _hs, {self.slot[s.bar][1]}, {self.expr(s.index, ctx)}, "
                  f"{self.expr(s.parity, ctx)}, {ctx.mask}, {self.site(ctx, s.bar)})", depth)
        if self.clustered:
            self.emit(f"CL.observe(W, _hs, _cs, {self.slot[s.bar][1]}, "
                      f"{self.expr(s.index, ctx)}, {ctx.mask})", depth)

    def e_ClusterCtaRank(self, e: irc.ClusterCtaRank, ctx: _Ctx) -> str:
        return "CL.rank(W, _cs)"

    def s_ClusterArrive(self, s: irc.ClusterArrive, ctx: _Ctx, depth: int) -> None:
        self.emit(f"CL.cluster_arrive(W, _cs, {ctx.mask}, {self.site(ctx, None)})", depth)

    def s_ClusterWait(self, s: irc.ClusterWait, ctx: _Ctx, depth: int) -> None:
        self.emit(f"CL.cluster_wait(W, _hs, _cs, {ctx.mask}, {self.site(ctx, None)})", depth)

    def s_TmaLoad(self, s: ira.TmaLoad, ctx: _Ctx, depth: int) -> None:
        tm = next(t for t in self.k.tensor_maps if t.name == s.tmap)
        coords = ", ".join(self.expr(c, ctx) for c in s.coords)
        di = self.expr(s.dst_index, _Ctx(ctx.mask, ctx.count, s.dst, ctx.stmt))
        self.emit(f"WG.tma(W, _hs, {self.bind(tm, '_tm')}, {self.slot[tm.buffer][1]}, "
                  f"{self.slot[s.dst][1]}, {di}, [{coords}], {self.slot[s.bar][1]}, "
                  f"{self.expr(s.bar_index, ctx)}, {ctx.mask}, {self.site(ctx, s.dst)}, "
                  f"{s.multicast})", depth)

    def s_FenceProxyAsync(self, s: ira.FenceProxyAsync, ctx: _Ctx, depth: int) -> None:
        self.emit(f"WG.fence_proxy_async(W, _hs, {ctx.mask})", depth)

    def s_Roles(self, s: ira.Roles, ctx: _Ctx, depth: int) -> None:
        """The roles' leading statements, their loops interleaved step by step (uniform,
        equal bounds: checked by the verifier), their trailing statements."""
        (pa, la, ta), (pb, lb, tb) = (ira.role_parts(b) for b in (s.first, s.second))
        c = self.tmp("_c")
        self.emit(f"{c} = {self.expr(s.cond, ctx)}", depth)
        roles = []
        for narrow in ("narrow", "narrow_not"):
            m, n = self.tmp("_m"), self.tmp("_n")
            self.emit(f"{m}, {n} = W.{narrow}({ctx.mask}, {c})", depth)
            roles.append(_Ctx(m, n))
        for stmts, rc in ((pa, roles[0]), (pb, roles[1])):
            if stmts:
                self.emit(f"if {rc.count}:", depth)
                self.body(stmts, rc, depth + 1)
        if not all(self.facts.uniform(x) for x in (la.start, la.stop, la.step)):
            raise ValueError(f"kernel {self.k.name}: warp-specialised role loops need "
                             "uniform bounds")
        va, vb = self.var(la.var), self.var(lb.var)
        bounds = int_args(*(self.expr(x, ctx) for x in (la.start, la.stop, la.step)))
        self.emit(f"for {va} in range({bounds}):", depth)
        self.emit(f"{vb} = {va}", depth + 1)
        for loop, rc in ((la, roles[0]), (lb, roles[1])):
            self.emit(f"if {rc.count}:", depth + 1)
            self.body(loop.body, rc, depth + 2)
        for stmts, rc in ((ta, roles[0]), (tb, roles[1])):
            if stmts:
                self.emit(f"if {rc.count}:", depth)
                self.body(stmts, rc, depth + 1)

    def s_SetMaxNReg(self, s: ira.SetMaxNReg, ctx: _Ctx, depth: int) -> None:
        self.emit(f"WG.setmaxnreg(W, {ctx.mask}, {self.site(ctx, None)})", depth)
