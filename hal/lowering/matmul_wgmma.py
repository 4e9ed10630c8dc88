"""The Hopper path of matmul groups: TMA producer, wgmma consumers, an mbarrier ring.

`wgmma_choice` decides, for a spec listing a warpgroup matrix instruction (sm_90a:
h100-sxm, h200) and the `tma` capability, whether a matmul group takes this path, and says
why or why not (planners_tiled.plan_matmul records it as the plan's ("matmul_path", ...)
detail; anything else keeps the mma.sync kernel of hal.lowering.matmul_mma). The kernel
(`_WgmmaEmitter`, which reuses the mma.sync emitter's raster order and epilogue):

* block = 1 producer warpgroup + C consumer warpgroups (C = BM / 64); BM x BN of the result
  (batch on grid z, grouped raster), K steps of BK = 128 bytes;
* shared memory: `stages` slices of the A tile [BM][BK] and of each B tile ([BN][BK] when B
  is K-major, e.g. a torch Linear weight, else [BK][BN] as 64-column boxes), each written by
  TMA with the 128-byte swizzle and 1024-byte aligned; mbarriers full[s] (1 arrival + the
  stage's transaction bytes) and empty[s] (one arrival per consumer thread);
* warp-specialised roles (hal.kernel.ir_async.Roles, rendered as if / else so each role is
  its own code region): the producer warpgroup (setmaxnreg.dec 40) loops over the k tiles,
  its thread 0 waiting empty[t % S] (the parity of the stage's previous use), arming
  full[t % S] with expect_tx and issuing the TMA boxes of k tile t; the consumers
  (setmaxnreg.inc 232) loop over the same tiles: wait full[s] with its phase parity,
  wgmma.fence, BK / K wgmmas per B (descriptors advanced 32 bytes per wgmma K step for
  K-major operands, 16 rows for an N-major B), commit_group, wait_group 0, arrive on
  empty[s]. On a GPU the producer runs up to S tiles ahead; cpu_sim interleaves the two
  loops step by step and checks the mbarrier protocol, not the timing;
* each consumer warpgroup's accumulators are the per-thread wgmma layout, which equals the
  m16n8 C layout of its four warps tiled over N (hal.kernel.wgmma), so the epilogue (bias,
  activation, residual, casts, views, a dual GEMM's combination) is the mma.sync emitter's,
  run by the consumer threads.

* A's tensor map reads A where it is stored: through reshapes and transposes of a group
  input (hal.lowering.tma_views; the attention output's head merge is a 3-d map);
* a norm (or elementwise) prologue of A: TMA copies its source, the consumer warpgroups
  rewrite their rows of the swizzled stage in place in 16-byte chunks, fence.proxy.async,
  then a per-warpgroup mbarrier (hal.lowering.matmul_wgmma_prologue); the row statistics
  pre-pass runs on every warpgroup before the roles split;
* siblings sharing A with different N (fused QKV): one column-panel segment of grid.x each
  behind a block-uniform branch, each with its own B tensor maps and roles; a dual GEMM
  (equal N) shares one grid, two B tiles and two accumulators.
* 2-CTA thread-block clusters along M where the plan chose them (its ("cluster", ...)
  detail): each CTA TMA-loads half of every B box and multicasts it to both, consumers
  release a stage to both CTAs' producers, cluster barriers after the inits and before exit
  (hal.lowering.matmul_cluster).

fp8 (e4m3, e5m2) takes wgmma k32 when B is K-major (a [N, K] weight), the only layout
wgmma reads 8-bit operands in. Not on this path (the reason is recorded): B operands
computed in the group (casts), A prologues whose source is not A's dtype, row strides that
are not multiples of 16 bytes (TMA's rule).

Self-test faults planted here: wgmma_wrong_swizzle, missing_wgmma_wait,
wrong_mbarrier_tx_count, tma_box_off_by_one (and wgmma_prologue_unswizzled in
matmul_wgmma_prologue).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hal.devices.spec import DeviceSpec, MatrixInstruction
from hal.dtypes import DTYPES, compute_dtype, i64
from hal.errors import UnsupportedError
from hal.ir.graph import Node
from hal.kernel import ir_async as ira
from hal.kernel import ir_cluster as irc
from hal.kernel.ir import Barrier, Binary, For, If, Kernel, SharedBuffer, Stmt
from hal.kernel.tma import TensorMap, TensorMapError
from hal.kernel.wgmma import wgmma_k
from hal.lowering.matmul_mma import _MmaEmitter
from hal.lowering.mma_operands import MmaChoice, a_access, b_accesses
from hal.lowering.mma_tiles import MmaTiles
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions
from hal.lowering.tiling import blocks_per_unit, cdiv

SWIZZLE = 128
PRODUCER_REGS, CONSUMER_REGS = 40, 232
LAUNCH_REGS = 168     # 65536 registers / 384 threads, a multiple of 8
STREAMED_B_BYTES = 4 << 20   # B operands above this: the grid's spread sets the bandwidth


@dataclass(frozen=True)
class WgmmaChoice:
    instruction: MatrixInstruction
    tiles: MmaTiles              # the consumers' view (mma.sync C layout per warp)
    consumers: int
    b_k_major: bool
    reason: str

    @property
    def threads(self) -> int:
        return 128 * (self.consumers + 1)

    def stage_bytes(self) -> int:
        t = self.tiles
        return (t.bm + t.operands * t.bn) * t.bk * t.itemsize

    def shared_bytes(self) -> int:
        return self.tiles.stages * self.stage_bytes() + 2 * 8 * self.tiles.stages + 1024

    def in_flight(self, spec: DeviceSpec) -> int:
        return spec.compute_units * blocks_per_unit(self.threads, LAUNCH_REGS,
                                                    self.shared_bytes(), spec)


def wgmma_choice(group, dots: list[Node], segments: int, spec: DeviceSpec,
                 alternative_tiles: int = 0) -> tuple[WgmmaChoice | None, str]:
    """(the Hopper-path choice, or None; the reason either way). `alternative_tiles`: how
    many blocks the mma.sync kernel would launch; a wgmma grid that leaves units idle where
    that one spreads wider (a decode-shaped GEMM) keeps the mma.sync kernel."""
    from hal.lowering.matmul import contraction_dims, one_tile_grid
    from hal.lowering.matmul_wgmma_prologue import prologue_source
    from hal.lowering.tma_views import a_view
    from hal.ops.contraction import accumulation_dtype

    dot = dots[0]
    a, b = dot.inputs
    acc = compute_dtype(accumulation_dtype(a.dtype, dot.attrs))
    instr = spec.matrix_instruction(a.dtype.name, b.dtype.name, acc.name, "warpgroup")
    if instr is None:
        return None, f"{spec.name} has no warpgroup MMA for {a.dtype}"
    if "tma" not in spec.capabilities or spec.warp_size != 32:
        return None, f"{spec.name} has no TMA"
    # a dual GEMM shares one tile grid; siblings of different N take one column-panel
    # segment of grid.x each (as the mma.sync kernel)
    segs = [dots] if len(dots) == 1 or one_tile_grid(dots) else [[d] for d in dots]
    if max(len(sg) for sg in segs) > 2:
        return None, f"{len(dots)} sibling contractions on one tile grid (the wgmma kernel " \
                     f"takes 1 or 2)"
    producers = {o.name: nd for nd in group.nodes for o in nd.outputs}
    vec = 16 // a.dtype.itemsize
    lb, _rb, lc, _rc, lf, _rf = contraction_dims(dot)
    m = math.prod(a.shape[i] for i in lf)
    k = math.prod(a.shape[i] for i in lc)
    ns = [math.prod(sg[0].inputs[1].shape[i] for i in contraction_dims(sg[0])[5])
          for sg in segs]
    if not (m and k and all(ns)):
        return None, "an empty contraction"
    if k % vec:
        return None, (f"K={k} rows are {k * a.dtype.itemsize} bytes: TMA needs 16-byte "
                      f"multiples")
    prologue = ""
    if a_access(dot, producers, vec).source is None:
        view = a_view(dot, producers, 64, 128 // a.dtype.itemsize)
        if isinstance(view, str):
            src = prologue_source(group, dot)
            if isinstance(src, str):
                moved = producers.get(a.name) is not None and \
                    producers[a.name].op in ("reshape", "transpose")
                return None, f"A: {view}" if moved else f"A's prologue: {src}"
            prologue = f", A's prologue rewritten in shared memory (TMA copies %{src.name})"
        else:
            prologue = f", A's tiles copied from its view of %{view.source.name} " \
                       f"({len(view.dims)}-d tensor map)"
    layouts = set()
    for sg, n in zip(segs, ns, strict=True):
        accs_b, b_k_major = b_accesses(sg, producers, vec)
        if any(x.source is None for x in accs_b):
            return None, ("a B operand is computed in the group (a cast) or not a contiguous "
                          "group input: TMA copies group inputs only")
        if not b_k_major and n % vec:
            return None, (f"N={n} rows of B are {n * a.dtype.itemsize} bytes: TMA needs "
                          f"16-byte multiples")
        if a.dtype.bits == 8 and not b_k_major:
            return None, (f"wgmma reads {a.dtype} B K-major only: B is [K, N] (N "
                          f"contiguous), pass it as [N, K]")
        layouts.add("K-major" if b_k_major else "N-major")
    n = min(ns)
    consumers = 2 if m > 64 else 1
    bm, bn, bk = 64 * consumers, (128 if n > 64 else 64), 128 // a.dtype.itemsize
    if bn == 128 and sum(cdiv(m, bm) * cdiv(nn, bn) for nn in ns) < spec.compute_units:
        bn = 64                           # twice the blocks where the grid leaves units idle
    blocks = sum(cdiv(m, bm) * cdiv(nn, bn) for nn in ns)
    # a weight-streaming (decode-shaped) GEMM is bandwidth-bound: the units its grid covers
    # set the bandwidth it reaches; below a few MiB of B both kernels are launch-bound
    if blocks < spec.compute_units and alternative_tiles > blocks and \
            sum(ns) * max(len(sg) for sg in segs) * k * b.dtype.itemsize > STREAMED_B_BYTES:
        return None, (f"{blocks} wgmma tiles of {bm}x{bn} for {spec.compute_units} units: "
                      f"the mma.sync kernel's {alternative_tiles} smaller tiles spread wider")
    ops = max(len(sg) for sg in segs)
    stage = (bm + ops * bn) * bk * a.dtype.itemsize
    budget = spec.shared_mem_per_block - 2048
    stages = min(4, budget // stage)
    if stages < 2:
        return None, f"two {stage}-byte pipeline stages exceed {spec.name}'s shared memory"
    tiles = MmaTiles(bm, bn, bk, bm // 16, 1, stages, "nv_m16n8k16_b16", a.dtype.itemsize,
                     ops)
    layout = "/".join(sorted(layouts))
    sib = f", {len(segs)} column-panel segments (N = {', '.join(map(str, ns))})" \
        if len(segs) > 1 else ""
    return WgmmaChoice(instr, tiles, consumers, layouts == {"K-major"},
                       f"{instr.name.split('.')[0]} m64n{bn}k{instr.k} from TMA-fed shared "
                       f"tiles "
                       f"({layout} B), {consumers} consumer warpgroup(s), {stages}-stage "
                       f"mbarrier ring: mma.sync reaches {_share(spec, a.dtype.name)} of the "
                       f"{spec.name} matrix peak{prologue}{sib}"), ""


def _share(spec: DeviceSpec, dt: str) -> str:
    ws = spec.matrix_instruction(dt, dt, "f32")
    wg = spec.matrix_instruction(dt, dt, "f32", "warpgroup")
    if ws is None or wg is None or not wg.rate:
        return "less"
    return f"{100 * ws.rate / wg.rate:.0f}%"


class _WgmmaEmitter(_MmaEmitter):
    """The Hopper kernel (module docstring); the raster order, accumulator zeroing and the
    epilogue come from the mma.sync emitter."""

    def __init__(self, group, plan, spec, segments, choice: WgmmaChoice, views, options):
        super().__init__(group, plan, spec, segments, MmaChoice(choice.instruction,
                                                                choice.tiles), views, options)
        self.wc = choice
        self.tmaps: list[TensorMap] = []
        src = None
        from hal.lowering.tma_views import a_view

        producers = {o.name: nd for nd in group.nodes for o in nd.outputs}
        if self.acc_a.source is None and isinstance(a_view(self.segments[0]["dots"][0],
                                                           producers, 64, self.t.bk), str):
            # A computed in the group: its prologue's source
            from hal.lowering.matmul_wgmma_prologue import prologue_source

            src = prologue_source(group, self.segments[0]["dots"][0])
            if isinstance(src, str):
                raise UnsupportedError(f"group {group.name}: {src}",
                                       hint="a planner bug: wgmma_choice should refuse it")
        self.prologue_src = src
        # 2-CTA clusters with B multicast (hal.lowering.matmul_cluster), as the plan chose
        cl = plan.detail("cluster")
        self.cl = cl if cl is not None and cl.ctas > 1 else None

    def _buffer(self, hint: str, dt, size: int, stages: int, align: int) -> str:
        name = self.ctx.unique(hint)
        self.ctx.shared.append(SharedBuffer(name, dt, size, stages, align))
        return name

    def lower(self) -> Kernel:
        ctx, t = self.ctx, self.t
        body: list[Stmt] = []
        self.body = body
        tid = ctx.tid()
        self.wg = ctx.declare(body, "wg", ctx.div(tid, 128))
        # consumer coordinates (the epilogue's): warp w of the consumers holds rows 16 w
        warp = ctx.declare(body, "cwarp", ctx.mod(ctx.add(ctx.div(tid, 32), t.wm - 4), t.wm))
        self.lane = ctx.declare(body, "lane", ctx.mod(tid, 32))
        self.wm0 = ctx.declare(body, "wm0", ctx.mul(warp, 16))
        self.wn0 = ctx.c(0)
        npm = cdiv(self.m, t.bm)
        self.gm_rows = self.plan.detail("group_m")
        pid = ctx.declare(body, "pid", ctx.bid("x"))
        self.bcoords = [c if not isinstance(c, Binary) else ctx.declare(body, "b", c)
                        for c in ctx.unravel(ctx.bid("z"), self.bs)]
        s = self.stages
        width_b = max(len(sg["dots"]) for sg in self.segments)
        self.a_sh = self._buffer("a_tile", self.a.dtype, s * t.bm * t.bk, s, 1024)
        self.b_sh = [self._buffer("b_tile", self.b.dtype, s * t.bn * t.bk, s, 1024)
                     for _ in range(width_b)]
        self.full = self._buffer("full_bar", i64, s, s, 8)
        self.empty = self._buffer("empty_bar", i64, s, s, 8)
        self.acc = [ctx.local_buffer("acc", DTYPES["f32"], t.bn // 2)
                    for _ in range(width_b)]
        c = self.wc.consumers
        # empty[s]: every consumer thread, or with a cluster one arrival per consumer
        # warpgroup of each CTA whose stage the multicast writes (matmul_cluster)
        releases = 128 * c if self.cl is None else \
            c * (1 if self.fault("cluster_local_release") else self.cl.ctas)
        first = [*(ira.MbarrierInit(self.full, ctx.c(i), 1) for i in range(s)),
                 *(ira.MbarrierInit(self.empty, ctx.c(i), releases) for i in range(s))]
        if self.prologue_src is not None:   # one warpgroup barrier per consumer warpgroup
            self.ready = self._buffer("ready_bar", i64, c, 1, 8)
            first += [ira.MbarrierInit(self.ready, ctx.c(i), 128) for i in range(c)]
        self._map_a()
        body.append(If(tid.eq(ctx.c(0)), first))
        body.append(ira.FenceProxyAsync())
        if self.cl is None:
            body.append(Barrier())
        else:   # the peers' barriers are initialised before any multicast reaches them
            from hal.lowering.matmul_cluster import cluster_start

            body += cluster_start()
            self.crank = ctx.declare(body, "crank", irc.ClusterCtaRank())
        # one block-uniform branch per segment (siblings of different N; their B maps are
        # their own: _use_segment binds them)
        grid = self._dispatch_segments(body, pid, npm)
        if self.cl is not None:   # no CTA exits while its peer may still reach it
            from hal.lowering.matmul_cluster import cluster_end

            body += cluster_end()
        k = ctx.kernel(body, grid, self.wc.threads, self.group, self.plan)
        k.tensor_maps = list(self.tmaps)
        if self.cl is not None:
            k.cluster = self.cl.dims
        return k

    def _use_segment(self, sg) -> None:
        self._use(sg)
        self._maps_b()

    @property
    def block_threads(self) -> int:   # the statistics pre-pass runs on every warpgroup
        return self.wc.threads

    # ------------------------------------------------------------------ tensor maps
    def _map(self, hint: str, src, dims: tuple, box: tuple) -> str:
        """A map over group input `src` (contiguous) seen as `dims` (outermost first)."""
        name = self.ctx.unique(hint)
        param = self.ctx.buffer(src, "input")
        isz = src.dtype.itemsize
        inner = tuple(reversed(dims))
        strides, acc = [], isz
        for d in inner[:-1]:
            acc *= d
            strides.append(acc)
        try:
            tm = TensorMap(name, param, src.dtype.name, isz, inner, tuple(strides),
                           tuple(reversed(box)), SWIZZLE)
        except TensorMapError as e:
            raise UnsupportedError(f"group {self.group.name}: {e}",
                                   hint="a planner bug: wgmma_choice should refuse it") from e
        self.tmaps.append(tm)
        return name

    def _map_a(self) -> None:
        """A's map: over A, a view of a group input (hal.lowering.tma_views) or the
        prologue's source."""
        from hal.lowering.tma_views import a_view

        t = self.t
        producers = {o.name: nd for nd in self.group.nodes for o in nd.outputs}
        view = a_view(self.segments[0]["dots"][0], producers, t.bm, t.bk, self.prologue_src)
        if isinstance(view, str):
            raise UnsupportedError(f"group {self.group.name}: {view}",
                                   hint="a planner bug: wgmma_choice should refuse it")
        box = view.box
        if self.fault("tma_box_off_by_one"):   # self-test hook: one row short
            box = (box[0], box[1] - 1, *box[2:])
        self.view_a = view
        self.map_a = name = self.ctx.unique("tmap_a")
        src = view.source
        try:
            tm = TensorMap(name, self.ctx.buffer(src, "input"), src.dtype.name,
                           src.dtype.itemsize, view.dims, view.strides, box, SWIZZLE)
        except TensorMapError as e:
            raise UnsupportedError(f"group {self.group.name}: {e}",
                                   hint="a planner bug: wgmma_choice should refuse it") from e
        self.tmaps.append(tm)

    def _maps_b(self) -> None:
        t = self.t
        self.map_b = []
        for x in self.acc_bs:
            batch = math.prod(x.source.shape[d] for d in x.dims[0])
            if self.b_n_major:   # [N, K]: boxes of BN rows of 128 bytes
                dims, box = (batch, self.n, self.k), (1, t.bn, t.bk)
            else:                # [K, N]: 64-column boxes of BK rows
                dims, box = (batch, self.k, self.n), (1, t.bk, 128 // self.b.dtype.itemsize)
            if self.cl is not None:   # each CTA of the cluster multicasts half the rows
                from hal.lowering.matmul_cluster import b_box

                box = b_box(box, self.cl.ctas)
            self.map_b.append(self._map("tmap_b", x.source, dims, box))

    # ------------------------------------------------------------------ pipeline
    def _fragment_bases(self) -> None:   # wgmma reads shared tiles through descriptors
        pass

    def _pipeline(self) -> None:
        """The roles: the producer warpgroup (thread 0 issues) and the consumers, each with
        its register budget and its own k-loop; the consumers' epilogue follows theirs."""
        ctx, t = self.ctx, self.t
        ktiles = cdiv(self.k, t.bk)
        kp, kc = ctx.var("kt", ctx.idx), ctx.var("kc", ctx.idx)
        prod: list[Stmt] = []
        self._produce(prod, kp)
        producer = [ira.SetMaxNReg(PRODUCER_REGS, False),
                    For(kp, ctx.c(0), ctx.c(ktiles), ctx.c(1),
                        [If(ctx.tid().eq(ctx.c(0)), prod)])]
        cons: list[Stmt] = []
        self._consume(cons, kc)
        self.consumer = [ira.SetMaxNReg(CONSUMER_REGS, True),
                         For(kc, ctx.c(0), ctx.c(ktiles), ctx.c(1), cons)]
        self.body.append(ira.Roles(Binary("eq", self.wg, ctx.c(0)), producer, self.consumer))

    def _stage_phase(self, out: list[Stmt], kt) -> tuple:
        ctx, s = self.ctx, self.stages
        st = ctx.declare(out, "st", ctx.mod(kt, s))
        ph = ctx.declare(out, "ph", ctx.mod(ctx.div(kt, s), 2))
        return st, ph

    def _produce(self, out: list[Stmt], kt) -> None:
        ctx, t = self.ctx, self.t
        st, ph = self._stage_phase(out, kt)
        out.append(ira.MbarrierWait(self.empty, st, Binary("sub", ctx.c(1), ph)))
        maps = {m.name: m for m in self.tmaps}
        tx = maps[self.map_a].box_bytes
        for _mb in self.map_b:   # each CTA receives the whole B tile (halves multicast)
            tx += t.bn * t.bk * self.b.dtype.itemsize
        if self.fault("wrong_mbarrier_tx_count"):   # self-test hook: B boxes forgotten
            tx = maps[self.map_a].box_bytes
        out.append(ira.MbarrierArrive(self.full, st, tx))
        k0 = ctx.mul(kt, t.bk)
        bz = ctx.bid("z")
        out.append(ira.TmaLoad(self.a_sh, ctx.mul(st, t.bm * t.bk), self.map_a,
                               self.view_a.coords(ctx, k0, self.m0, bz), self.full, st))
        # with a cluster: this CTA's half of each box (rows of its rank), multicast
        half, mask = (t.bn, 0) if self.cl is None else (t.bn // self.cl.ctas, self.cl.mask)
        if self.cl is not None and self.fault("cluster_multicast_mask"):   # self-test hook
            mask = 1                               # rank 0 gets both halves, rank 1 none
        for j, mb in enumerate(self.map_b):
            bzb = bz if maps[mb].dims[2] > 1 else ctx.c(0)
            base = ctx.mul(st, t.bn * t.bk)
            if self.b_n_major:
                n0, dst = self.n0, base
                if self.cl is not None:
                    n0 = ctx.add(n0, ctx.mul(self.crank, half))
                    dst = ctx.add(base, ctx.mul(self.crank, half * t.bk))
                out.append(ira.TmaLoad(self.b_sh[j], dst, mb, (k0, n0, bzb), self.full, st,
                                       multicast=mask))
                continue
            cols = 128 // self.b.dtype.itemsize
            kb, rows = k0, t.bk // (self.cl.ctas if self.cl is not None else 1)
            for c in range(t.bn // cols):
                dst = ctx.add(base, c * cols * t.bk)
                if self.cl is not None:
                    kb = ctx.add(k0, ctx.mul(self.crank, rows))
                    dst = ctx.add(dst, ctx.mul(self.crank, rows * cols))
                out.append(ira.TmaLoad(self.b_sh[j], dst, mb, (ctx.add(self.n0, c * cols), kb,
                                                              bzb), self.full, st,
                                       multicast=mask))

    def _consume(self, out: list[Stmt], kc) -> None:
        ctx, t = self.ctx, self.t
        st, ph = self._stage_phase(out, kc)
        if not self.fault("wgmma_missing_full_wait"):   # self-test hook
            out.append(ira.MbarrierWait(self.full, st, ph))
        if self.prologue_src is not None:   # A's prologue, in place (matmul_wgmma_prologue)
            from hal.lowering.matmul_wgmma_prologue import emit_transform

            emit_transform(self, out, kc, st)
        out.append(ira.WgmmaFence())
        sw = 64 if self.fault("wgmma_wrong_swizzle") else SWIZZLE   # self-test hook
        a_base = ctx.declare(out, "sa", ctx.add(ctx.mul(st, t.bm * t.bk),
                                                ctx.mul(ctx.sub(self.wg, 1), 64 * t.bk)))
        b_base = ctx.declare(out, "sb", ctx.mul(st, t.bn * t.bk))
        row = 128 // self.a.dtype.itemsize          # elements per 128-byte row
        ks = wgmma_k(self.a.dtype.name)             # 32 bytes of K per wgmma
        for kk in range(t.bk // ks):
            a_desc = ira.SmemDesc(self.a_sh, ctx.add(a_base, kk * ks), 16, 1024, sw)
            for j, acc in enumerate(self.acc[:len(self.dots)]):
                if self.b_n_major:
                    b_desc = ira.SmemDesc(self.b_sh[j], ctx.add(b_base, kk * ks), 16, 1024, sw)
                else:   # N-major: 16 k rows on; 64-column boxes BK rows apart (LBO)
                    b_desc = ira.SmemDesc(self.b_sh[j], ctx.add(b_base, kk * 16 * row),
                                          t.bk * 128, 1024, sw)
                out.append(ira.Wgmma(t.bn, self.a.dtype.name, acc, 0, a_desc, b_desc,
                                     trans_b=not self.b_n_major))
        out.append(ira.WgmmaCommit())
        if not self.fault("missing_wgmma_wait"):    # self-test hook
            out.append(ira.WgmmaWait(0))
        if self.cl is None:
            out.append(ira.MbarrierArrive(self.empty, st))
            return
        from hal.lowering.matmul_cluster import release_stage  # to both CTAs' producers

        release_stage(ctx, out, self.cl, self.empty, st,
                      self.fault("cluster_local_release"))

    def _epilogue(self) -> None:
        """The mma.sync emitter's epilogue, after the consumers' loop (their role)."""
        outer = self.body
        self.body = self.consumer
        super()._epilogue()
        self.body = outer


def lower_matmul_wgmma(group, plan, spec: DeviceSpec, segments: list, views: list[Node],
                       options: LoweringOptions = DEFAULT_OPTIONS) -> list[Kernel]:
    """The Hopper kernel of a matmul group's `plan` (strategy "wgmma", its choice
    `plan.detail("wgmma_choice")` made by planners_tiled.plan_matmul)."""
    return [_WgmmaEmitter(group, plan, spec, segments, plan.detail("wgmma_choice"), views,
                          options).lower()]
