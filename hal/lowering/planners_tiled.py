"""Plans of the tiled kinds: matmul (one contraction, dual GEMM, sibling segments, norm
prologue) and attention (one kernel, two-pass, split-K).

`plan_matmul` picks the tiles (tiling.matmul_tiles, or PlanHints.matmul_tiles), the
grid of column-panel segments and the grouped raster order; `plan_attention_group`
the attention tiles, passes and key chunks (hal.lowering.attention.plan_attention).
Both state per input how often it is loaded (A once per column panel, B once per row
panel; K and V once per row tile and pass) and which loads reach DRAM
(hal.lowering.traffic). The lowering emits these plans; the cost model prices them.
"""

from __future__ import annotations

import math

from hal.devices.spec import DeviceSpec
from hal.dtypes import compute_dtype
from hal.lowering.plan import (
    GroupKind,
    KernelPlan,
    Launch,
    MathInstruction,
    MathKind,
    MemoryLevel,
)
from hal.lowering.planners import (
    base_registers,
    default_blocks,
    group_flops,
    hints_of,
    launch_name,
    operand_loads,
    written_bytes,
)
from hal.lowering.tiling import cdiv, elementwise_block
from hal.lowering.traffic import (
    fmt_bytes,
    issued_reads,
    matmul_rereads,
    node_flops,
    norm_prologue_traffic,
    operand_sources,
)
from hal.ops import Category, get_op
from hal.ops.contraction import accumulation_dtype, contraction_dims, contraction_mnk

# --------------------------------------------------------------------------- matmul


def plan_matmul(group, spec: DeviceSpec) -> KernelPlan:
    """Tiles, grid and loads of a matmul group (hal.lowering.matmul emits it)."""
    from hal.lowering.matmul import fused_reserve, one_tile_grid
    from hal.lowering.mma_operands import mma_choice, pipeline_stages
    from hal.lowering.mma_tiles import mma_in_flight, mma_registers
    from hal.lowering.tiling import (
        MatmulTiles,
        group_rows,
        matmul_in_flight,
        matmul_registers,
        matmul_tiles,
    )

    dots = [n for n in group.nodes if get_op(n.op).category is Category.CONTRACTION]
    mm = dots[0]
    a = mm.inputs[0]
    m, n_, k = contraction_mnk(mm)
    nb = math.prod(a.shape[i] for i in contraction_dims(mm)[0])
    one = one_tile_grid(dots)
    if one:
        segs = [(dots, n_)]
    else:   # siblings of different shapes: one column-panel segment each
        segs = [([d], contraction_mnk(d)[1]) for d in dots]
        segs = [(ds, n) for ds, n in segs if n] or segs
    operands = len(dots) if one else 1
    acc = compute_dtype(accumulation_dtype(a.dtype, mm.attrs))
    reserve = fused_reserve(group.nodes, group.inputs)
    reasons: list[str] = []
    hinted = hints_of(group).matmul_tiles
    # the matrix unit whenever the spec has an instruction for these dtypes (and no SIMT
    # tiles are forced): hal.lowering.matmul_mma emits it
    choice = None if hinted is not None else mma_choice(dots, spec, reserve)
    # the Hopper path (hal.lowering.matmul_wgmma) where the spec has a warpgroup MMA
    hopper, path = None, ()
    if choice is not None and spec.matrix_instruction(a.dtype.name, a.dtype.name, acc.name,
                                                      "warpgroup") is not None:
        from hal.lowering.matmul_wgmma import wgmma_choice

        alt = cdiv(m, choice.tiles.bm) * sum(cdiv(n, choice.tiles.bn) for _ds, n in segs)
        hopper, why = wgmma_choice(group, dots, len(segs), spec, alt)
        path = (("matmul_path", ("wgmma+tma", hopper.reason) if hopper is not None
                 else ("mma.sync", why)),)
    t = hinted
    if t is None and choice is None:
        try:
            t = matmul_tiles(m, min(n for _ds, n in segs), k, acc.itemsize, spec, operands,
                             reserve)
        except ValueError:
            t = None
            reasons.append(f"no matmul tile fits {spec.name} with {reserve} registers per "
                           f"thread kept for the fused ops")
    notes: list[str] = []
    # priced with 128 x 128 tiles when none fits (the register estimate then vetoes it)
    if hopper is not None:
        bm, bn = hopper.tiles.bm, hopper.tiles.bn
        in_flight = hopper.in_flight(spec)
    elif choice is not None:
        bm, bn = choice.tiles.bm, choice.tiles.bn
        in_flight = mma_in_flight(choice.tiles, spec)
    else:
        bm, bn = (t.bm, t.bn) if t is not None else (128, 128)
        in_flight = matmul_in_flight(t, acc.itemsize, spec, operands, reserve) \
            if t is not None else spec.compute_units
    row_tiles = cdiv(m, bm)
    col_panels = sum(cdiv(n, bn) for _ds, n in segs)
    cluster = None
    if hopper is not None:   # 2-CTA clusters multicasting B (hal.lowering.matmul_cluster)
        from hal.lowering.matmul_cluster import cluster_choice

        cluster = cluster_choice(spec, m, bm, col_panels)
    # A once per column panel, each B once per row panel (tile loads through shared
    # memory), or once per cluster of row panels when multicast
    b_reads = row_tiles if cluster is None else cluster.b_loads(row_tiles)
    factors = {d.inputs[1].name: b_reads for d in dots}
    if b_reads < row_tiles:
        saved = sum(d.inputs[1].type.nbytes for d in dots) * (row_tiles - b_reads)
        notes_cluster = [f"B's tiles reach the SMs once per {cluster.ctas}-CTA cluster (TMA "
                         f"multicast): {fmt_bytes(saved)} less L2->SM traffic"]
    else:
        notes_cluster = []
    factors[a.name] = col_panels
    issued = issued_reads(group, factors, stop_at_reductions=True)
    extra: dict[str, int] = {}
    blocks = 0
    for seg_dots, n in segs:
        bs = [d.inputs[1] for d in seg_dots]
        col_tiles = cdiv(n, bn)
        blocks += col_tiles * row_tiles
        if a.type.nbytes + sum(b.type.nbytes for b in bs) > spec.l2_bytes:
            ea, eb = matmul_rereads(a, bs, m, k, row_tiles, col_tiles, bm, spec, in_flight,
                                    notes)
            extra[a.name] = extra.get(a.name, 0) + ea
            for b in bs:
                extra[b.name] = extra.get(b.name, 0) + eb * b.type.nbytes
    notes += notes_cluster
    if len(segs) > 1:
        notes.append(f"{len(dots)} sibling contractions read A once: "
                     f"{', '.join(str(n) for _ds, n in segs)} columns in one grid")
    elif len(dots) > 1:
        notes.append(f"{len(dots)} sibling contractions share the A tile")
    pre_dram, pre_flops, pre_issued = norm_prologue_traffic(group, dots, col_panels, bm, k,
                                                            spec, notes)
    for name, b in pre_issued.items():
        issued[name] = issued.get(name, 0.0) + b
    for name, b in pre_dram.items():
        extra[name] = extra.get(name, 0) + b
    staged = {a.name: MemoryLevel.SHARED, **{d.inputs[1].name: MemoryLevel.SHARED for d in dots}}
    launches: tuple[Launch, ...] = ()
    details: tuple = ()
    tiles: tuple = ()
    stages = 1
    strategy = "smem_tiled"
    math_inst = MathInstruction(MathKind.SIMT_FMA, acc.name)   # FMAs in the accumulator dtype
    threads = 0
    if hopper is not None:
        strategy, threads, stages = "wgmma", hopper.threads, hopper.tiles.stages
        tiles = tuple(hopper.tiles.as_dict().items())
        math_inst = MathInstruction(MathKind.MATRIX, a.dtype.name, hopper.instruction.name)
        from hal.lowering.matmul_wgmma import LAUNCH_REGS

        registers = LAUNCH_REGS
        details = (*path, ("wgmma_choice", hopper), ("cluster", cluster))
    elif choice is not None:
        strategy, threads = "mma", choice.tiles.threads
        stages = pipeline_stages(group, [ds for ds, _n in segs], choice.tiles, spec)
        tiles = tuple(choice.tiles.as_dict().items())
        math_inst = MathInstruction(MathKind.MATRIX, a.dtype.name, choice.instruction.name)
        registers = mma_registers(choice.tiles) + reserve
        details = (*path, ("mma_choice", choice))
    elif t is not None:
        tiles = tuple((key, getattr(t, key)) for key in ("bm", "bn", "bk", "tm", "tn"))
        threads = t.threads
        live = len(dots) if one else 1
        registers = matmul_registers(MatmulTiles(*(v for _k, v in tiles)), live) + reserve
    else:
        registers = spec.max_registers_per_thread + 1
    if tiles:
        npm = cdiv(m, bm)
        gm = group_rows(npm, bm, k, a.dtype.itemsize, spec, in_flight)
        if cluster is not None:   # a cluster's CTAs take adjacent rows of one column
            gm = cluster.group_m(gm)
        grid_x = sum(npm * cdiv(n, bn) for _ds, n in segs if n)
        if nb * m and grid_x:
            launches = (Launch(launch_name(group), (grid_x, 1, nb), threads, batch_axes=(2,)),)
        details += (("group_m", gm), ("contractions", len(dots)), ("acc_dtype", acc.name),
                    ("m", m), ("n", sum(n for _ds, n in segs)), ("k", k), ("batch", nb),
                    ("in_flight", in_flight))
        if len(segs) > 1:
            details += (("column_segments", tuple(n for _ds, n in segs)),)
    return KernelPlan(group.name, GroupKind.MATMUL, strategy, launches, math=math_inst,
                      tiles=tiles, stages=stages,
                      registers=registers, loads=operand_loads(group, issued, extra, staged),
                      written_bytes=written_bytes(group), flops=group_flops(group) + pre_flops,
                      blocks=max(1, blocks), details=details, reasons=tuple(reasons),
                      notes=tuple(notes))


# --------------------------------------------------------------------------- attention

def plan_attention_group(group, spec: DeviceSpec) -> KernelPlan:
    """Tiles, passes, split-K and loads of an attention group (hal.lowering.attention)."""
    from hal.lowering.attention import plan_attention
    from hal.lowering.attention_tiles import fused_reserve

    hints = hints_of(group)
    planned = plan_attention(group, spec, hints.attention_tiles, hints.split_k)
    regs = base_registers(group) + 32
    if isinstance(planned, str):
        # not one attention kernel: priced as its inputs read once (lowering refuses it)
        return KernelPlan(group.name, GroupKind.ATTENTION, "flash_attention", (),
                          registers=regs + 2 * cdiv(64, spec.warp_size),
                          loads=operand_loads(group, {v.name: float(v.type.nbytes)
                                                      for v in group.inputs}),
                          written_bytes=written_bytes(group), flops=group_flops(group),
                          blocks=default_blocks(group), reasons=(planned,))
    pat, t, split, reasons = planned
    nb = math.prod(pat.batch)
    # the matrix unit for Q K^T and P V whenever the spec has an instruction for the
    # dtypes (hal.lowering.attention_mma says why not); split-K too when the contractions,
    # not the K/V read, bound the kernel (attention_split.split_mma_verdict)
    choice = None
    reserve = fused_reserve(group)
    if hints.attention_tiles is None:
        from hal.lowering.attention_mma import attention_mma_choice

        if split > 1:
            from hal.lowering.attention_split import choose_split_k, split_mma_verdict

            pays, why = split_mma_verdict(pat, spec)
            c = attention_mma_choice(pat, spec, reserve) if pays else why
            if isinstance(c, str):
                reasons = (*reasons, f"SIMT: {c}" if pays else c)
            else:   # the key chunks again, for the matrix-unit tiles
                choice = c
                if hints.split_k is None:
                    split, split_why = choose_split_k(pat, c.tiles, spec)
                    reasons = (*([split_why] if split_why else []),
                               *(r for r in reasons if not r.startswith("split-K: ")))
                reasons = (*reasons, why)
        else:
            c = attention_mma_choice(pat, spec, reserve)
            if isinstance(c, str):
                reasons = (*reasons, f"SIMT: {c}")
            else:
                choice = c
    # the Hopper kernel (hal.lowering.attention_wgmma) where the spec has a warpgroup MMA
    hopper, path = None, ()
    dtn = pat.qk.inputs[0].dtype.name
    if hints.attention_tiles is None and \
            spec.matrix_instruction(dtn, dtn, "f32", "warpgroup") is not None:
        from hal.lowering.attention_wgmma import attention_wgmma_choice

        h = attention_wgmma_choice(pat, group, spec, split)
        hopper = None if isinstance(h, str) else h
        path = (("attention_path", ("wgmma+tma", h.reason) if hopper is not None
                 else ("mma.sync" if choice is not None else "SIMT", h)),)
    br, bc = (choice.tiles.br, choice.tiles.bc) if choice else (t.br, t.bc)
    threads = choice.tiles.threads if choice else t.threads
    shared = choice.tiles.shared_bytes if choice else t.shared_bytes
    if hopper is not None:
        br, bc, threads, shared = hopper.tiles.br, hopper.tiles.bc, hopper.threads, \
            hopper.shared_bytes
    rt = cdiv(pat.m, br)
    passes = 2 if pat.two_pass else 1
    notes: list[str] = []
    # a causal mask: the kernels skip the key tiles above each row tile's diagonal
    from hal.lowering.attention_causal import causal_bound, causal_work

    bound = causal_bound(pat, group.nodes)
    work = causal_work(bound, pat.m, pat.t, br, bc)
    kv_loads = work.load_factor   # = rt without skipping
    frac = work.score_fraction    # = 1 without skipping
    if bound is not None:
        notes.append(f"causal (key j <= query i + {bound.offset}): key tiles above the "
                     f"diagonal skipped, {work.tile_pairs} of {rt * cdiv(pat.t, bc)} "
                     f"(row tile, key tile) pairs walked, {frac:.0%} of the scores computed")
    # issued: K once per walked key tile and pass, V once per walked key tile; with split-K
    # Q once per chunk (and pass kernel), plus the partials
    q, kk, v = pat.qk.inputs[0], pat.qk.inputs[1], pat.pv.inputs[1]
    factors = {kk.name: kv_loads * passes, v.name: kv_loads}
    scratch_issued = scratch = 0
    ntiles = cdiv(pat.t, bc)
    ct = cdiv(ntiles, split) if split > 1 else ntiles
    split = cdiv(ntiles, ct) if split > 1 else 1
    if split > 1:
        from hal.lowering.attention_split import split_issued_bytes, split_scratch_bytes

        factors[q.name] = split * passes
        if choice is not None:    # the lanes holding one row read its stats
            from hal.kernel.mma import get_layout
            from hal.lowering.attention_mma import column_lane_offsets

            row_threads = 2 ** len(column_lane_offsets(get_layout(choice.tiles.layout)))
        else:
            row_threads = t.tpr
        scratch_issued = split_issued_bytes(pat, row_threads, split)
        scratch = split_scratch_bytes(pat, split)
    # the logits (scores through the group's mask/bias/softcap ops) are evaluated once per
    # key and pass into registers; P and the row statistics read them there
    issued = issued_reads(group, factors, by_coords=True, env=frozenset({pat.logits.name}))
    for name, b in issued_reads(group, factors, by_coords=True, roots=[
            (pat.logits, pat.logits.type.numel * passes * frac)]).items():
        issued[name] = issued.get(name, 0.0) + b
    # DRAM: K and V re-read per row tile when the blocks in flight's K/V exceed L2
    k_src, v_src = operand_sources(group, pat, "k"), operand_sources(group, pat, "v")
    per_entry = (sum(k_src.values()) + sum(v_src.values())) // max(1, nb)
    blocks = rt * nb
    in_flight = min(blocks, 2 * spec.compute_units)
    entries = min(max(1, nb), cdiv(in_flight, max(1, rt)) + 1)   # rt = 0: no query rows
    spills = per_entry * entries > spec.l2_bytes
    extra: dict[str, int] = {}
    if spills:
        for src in (k_src, v_src):
            for name, b in src.items():
                extra[name] = extra.get(name, 0) + max(0.0, kv_loads - 1) * b
        notes.append("K/V of the blocks in flight exceed L2: re-read per row tile")
    flops = group_flops(group) - (1 - frac) * _score_path_flops(group, pat) + \
        _prologue_recompute_flops(group, pat, kv_loads, split, notes)
    if split > 1:
        kernels = 3 if pat.two_pass else 2
        notes.append(f"split-K: keys in {split} chunks, {fmt_bytes(2 * scratch)} of "
                     f"partials through scratch, {kernels} kernels")
    if pat.two_pass:   # pass 2 recomputes the scores: q k^T again, K read again per row tile
        flops += node_flops(pat.qk) * frac
        if spills:
            for name, b in k_src.items():
                extra[name] = extra.get(name, 0) + kv_loads * b
            notes.append("two-pass (P rounded before P@V): K read twice per row tile, "
                         "q k^T computed twice")
        else:
            notes.append("two-pass (P rounded before P@V): q k^T computed twice, the second "
                         "K pass hits L2")
    grid = (rt, nb, split)
    if nb * pat.m * pat.dv == 0:
        launches: tuple[Launch, ...] = ()
    elif split > 1:
        eb = elementwise_block(spec)
        first = [Launch(launch_name(group, "_stats"), grid, threads, "stats")] \
            if pat.two_pass else []
        launches = (*first, Launch(launch_name(group, "_split"), grid, threads, "partial"),
                    Launch(launch_name(group, "_combine"),
                           (cdiv(nb * pat.m * pat.dv, eb), 1, 1), eb, "combine"))
    else:
        launches = (Launch(launch_name(group), grid, threads, batch_axes=(1,)),)
    staged = {x: MemoryLevel.SHARED for src in (k_src, v_src, operand_sources(group, pat, "q"))
              for x in src}
    vector = MathInstruction(MathKind.SIMT_FMA, compute_dtype(q.dtype).name)
    details: tuple = (("passes", passes), ("split_k", split), ("chunk_tiles", ct),
                      ("rows", pat.m), ("keys", pat.t), ("head_dim", pat.d),
                      ("value_dim", pat.dv), ("batch", nb), ("shared_bytes", shared),
                      ("key_tile_pairs", work.tile_pairs))
    unit = hopper or choice
    if unit is not None:   # Q K^T and P V on the matrix unit, the rest on the vector units
        from hal.lowering.attention_mma import mma_flops

        tl = unit.tiles
        matrix_flops = mma_flops(tl, nb * work.tile_pairs, passes)
        vector_flops = max(0.0, flops - (node_flops(pat.qk) * passes + node_flops(pat.pv))
                           * frac)
        math_inst = MathInstruction(MathKind.MATRIX, q.dtype.name, unit.instruction.name)
        math_flops = ((math_inst, float(matrix_flops)), (vector, vector_flops))
        flops = matrix_flops + vector_flops
        notes.append(f"Q K^T and P V on {unit.instruction.name} ({matrix_flops / 1e9:.3g} "
                     f"GFLOP issued, padding and masked keys included), the softmax and "
                     f"prologues on the vector units ({vector_flops / 1e9:.3g} GFLOP)")
    if hopper is not None:
        strategy = "flash_attention_wgmma"
        tiles = (("br", br), ("bc", bc), ("warps", tl.warps + 4))
        registers = hopper.registers
        details = (*path, ("attention_wgmma_choice", hopper), *details)
        head = (f"fused attention on wgmma + TMA: Br={br}, Bc={bc}, 1 producer and "
                f"{hopper.consumers} consumer warpgroup(s), {hopper.stages}-stage K/V ring, "
                f"tiles need {fmt_bytes(shared)} of {fmt_bytes(spec.shared_mem_per_block)} "
                f"shared memory on {spec.name}")
    elif choice is not None:
        strategy = "flash_attention_mma"
        tiles: tuple = (("br", br), ("bc", bc), ("warps", tl.warps))
        registers = tl.registers + reserve
        details = (*path, ("mma_choice", choice), *details)
        head = (f"fused attention on the matrix unit: Br={br}, Bc={bc}, {tl.warps} warps of "
                f"{tl.lanes} lanes, tiles need {fmt_bytes(shared)} of "
                f"{fmt_bytes(spec.shared_mem_per_block)} shared memory on {spec.name}")
    else:
        math_inst, math_flops, strategy = vector, (), "flash_attention"
        details = (*path, *details)
        tiles = (("br", t.br), ("bc", t.bc), ("tpr", t.tpr))
        registers = t.registers        # the estimate the tile choice fitted (simt_registers)
        head = (f"fused attention: Br={t.br}, Bc={t.bc}, {t.threads} threads, tiles need "
                f"{fmt_bytes(t.shared_bytes)} of {fmt_bytes(spec.shared_mem_per_block)} "
                f"shared memory on {spec.name}")
    return KernelPlan(
        group.name, GroupKind.ATTENTION, strategy, launches, math=math_inst,
        tiles=tiles, registers=registers,
        loads=operand_loads(group, issued, extra, staged), written_bytes=written_bytes(group),
        scratch_bytes=scratch, scratch_issued_bytes=scratch_issued, flops=flops,
        math_flops=math_flops, blocks=blocks * split, details=details,
        reasons=(head, *reasons), notes=tuple(notes))


def prologue_loads(pat, kv_loads: float, split: int) -> dict[str, float]:
    """How often the attention lowering loads each operand's tiles (and so evaluates its
    prologue): Q once per block (per chunk and pass kernel when split), K `kv_loads` times
    (once per row tile, less the causally skipped tiles: attention_causal.CausalWork) and
    pass, V `kv_loads` times."""
    passes = 2 if pat.two_pass else 1
    return {"q": split * passes if split > 1 else 1, "k": kv_loads * passes, "v": kv_loads}


def _score_path_flops(group, pat) -> float:
    """Flops of the nodes computed per score (q k^T, the logits, softmax, P, P V): all but
    the operand prologues; causal skipping leaves out their share of skipped scores."""
    from hal.lowering.attention import operand_prologues

    pro = {id(n) for ns in operand_prologues(pat, group.nodes).values() for n in ns}
    return sum(node_flops(n) for n in group.nodes if id(n) not in pro)


def _prologue_recompute_flops(group, pat, row_tiles: float, split: int,
                              notes: list[str]) -> float:
    """Flops of the operand prologues (fusion.attention: rotary, casts ...) beyond the one
    evaluation `node_flops` counts: each runs once per load of its operand's tiles."""
    from hal.lowering.attention import operand_prologues

    loads = prologue_loads(pat, row_tiles, split)
    evals: dict[int, int] = {}
    for role, ns in operand_prologues(pat, group.nodes).items():
        for n in ns:
            evals[id(n)] = evals.get(id(n), 0) + loads[role]
    extra = sum(node_flops(n) * (evals[id(n)] - 1) for n in group.nodes if id(n) in evals)
    computing = [n for n in group.nodes if id(n) in evals and node_flops(n)]
    if computing:
        notes.append(f"operand prologues ({len(computing)} computing ops) evaluated in the "
                     f"tile loads: K's and V's once per tile of query rows")
    return extra
