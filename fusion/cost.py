"""The fusion cost model: modelled DRAM bytes, flops and time of a group on a device.

Everything comes from the DeviceSpec (XLA's GPU performance model is the
inspiration): a kernel takes max(DRAM time, compute time) plus the launch
overhead, where DRAM time uses the bandwidth the kernel can actually draw
given how many blocks it has to spread over the units (occupancy), and
compute time uses the peak rate of the dtype (matrix units for contractions,
vector units otherwise). Bytes follow the schedule the lowering will use:

* every input of a group is read once and every output written once, except
* a row reduction that cannot keep its row on chip re-reads the row once per
  pass, unless the rows in flight fit in L2 (then the re-reads hit L2);
* a tiled matmul whose operands exceed L2 re-reads B once per group of row
  panels of the lowering's grouped raster order, and A once per wave of tiles in
  flight when a group's panels do not stay in L2 (see _matmul_rereads); sibling
  contractions sharing A (a dual GEMM) read A once and each B once, with the
  same re-read rule per B; siblings of different shapes (one grid segment
  each: a fused QKV) also read A once and each B once, their blocks add up and
  the re-read rule applies per segment;
* an attention kernel reads Q and writes O once and reads K and V once per
  tile of Br query rows; the re-reads hit L2 when one batch entry's K and V fit;
  the two-pass schedule (P rounded before P@V) reads K twice per row tile and
  computes q k^T twice; operand prologues in the group (rotary embedding, casts:
  fusion.attention) are computed in the tile loads, so K's and V's are recomputed
  once per row tile (their flops count that often) and K/V's bytes are those of
  the prologues' inputs;
* a split-K attention (few row tiles: decode) spreads the keys over S chunks: S times
  the blocks, its partials (m, l, f32 accumulators) written and read once, and one or
  two more launches (hal.lowering.attention_split);
* a lone reshape is a view of its input (no kernel, no bytes).

`issued` bytes are what the kernels ask of global memory as lowered, hits in
L1/L2 included: the CPU simulator counts exactly these (it models no cache).
They differ from the DRAM bytes by (a) loads through broadcast_to (a bias or
norm weight is loaded once per output element: cache hits on hardware),
(b) values loaded at several coordinates (rotate_half reads x at x, at its
low half and at its high half: two loads per element), (c) matmul and
attention tile re-reads (L2 hits when the operand fits), (d) row reductions
that re-read rows not cached in shared memory. Masked-off lanes load nothing
in both. `tests/test_fusion_cost.py` pins the agreement per example.

`estimate_registers` is the per-thread register estimate used by the veto.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hal.devices.spec import DeviceSpec
from hal.dtypes import compute_dtype
from hal.ir.graph import Node, Value
from hal.ops import Category, get_op

from .group import FusedGroup, reduction_axes


@dataclass
class GroupCost:
    dram_read: int
    dram_write: int
    flops: float
    time_s: float
    blocks: int
    registers: int
    notes: list[str] = field(default_factory=list)
    issued: int = 0

    @property
    def dram_bytes(self) -> int:
        return self.dram_read + self.dram_write

    def to_dict(self) -> dict:
        return {"dram_read": self.dram_read, "dram_write": self.dram_write,
                "dram_bytes": self.dram_bytes, "flops": self.flops, "time_s": self.time_s,
                "blocks": self.blocks, "registers": self.registers, "notes": list(self.notes),
                "issued_bytes": self.issued}


def nbytes(v: Value) -> int:
    return v.type.nbytes


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def node_flops(n: Node) -> float:
    """Arithmetic of one node: one op per output element for elementwise and
    reductions, 2*M*N*K for contractions, nothing for data movement."""
    cat = get_op(n.op).category
    if cat is Category.ELEMENTWISE:
        return float(n.outputs[0].type.numel) if n.op != "cast" else 0.0
    if cat in (Category.REDUCTION, Category.SCAN):
        return float(n.inputs[0].type.numel)
    if cat is Category.CONTRACTION:
        return 2.0 * n.outputs[0].type.numel * _contract_len(n)
    return 0.0


def _contract_len(n: Node) -> int:
    a = n.inputs[0]
    if n.op == "matmul":
        return a.shape[-2] if n.attrs.get("transpose_a") else a.shape[-1]
    return math.prod(a.shape[i] for i in n.attrs["lhs_contracting"])


def _row_len(g: FusedGroup) -> int:
    reds = [n for n in g.nodes if get_op(n.op).category is Category.REDUCTION]
    r = reds[0]
    return math.prod(r.inputs[0].shape[a] for a in reduction_axes(r)) or 1


def _row_count(g: FusedGroup) -> int:
    reds = [n for n in g.nodes if get_op(n.op).category is Category.REDUCTION]
    r = reds[0]
    return max(1, r.inputs[0].type.numel // max(1, _row_len(g)))


def row_bytes_on_chip(g: FusedGroup) -> int:
    """Bytes to keep one row of every row-domain input on chip, in the compute dtype."""
    row = _row_len(g)
    per_elem = 0
    for v in g.inputs:
        if v.type.is_static and v.type.numel >= row and v.type.numel % row == 0:
            per_elem += compute_dtype(v.dtype).itemsize
    return row * max(per_elem, 4)


def reduction_passes(g: FusedGroup) -> int:
    """How many times a row reduction group walks its row: one per reduction that
    depends on an earlier one, plus the epilogue pass when it writes a row-shaped output."""
    reds = [n for n in g.nodes if get_op(n.op).category is Category.REDUCTION]
    row = _row_len(g)
    writes_rows = any(o.type.numel > _row_count(g) and row > 1 for o in g.outputs)
    return len(_reduction_levels(g, reds)) + (1 if writes_rows else 0)


def _reduction_levels(g: FusedGroup, reds: list[Node]) -> list[list[Node]]:
    """Reductions grouped by dependency depth: reductions at one level share a pass."""
    depth: dict[str, int] = {}
    level_of: dict[int, int] = {}
    for n in g.nodes:
        d = max((depth.get(v.name, 0) for v in n.inputs), default=0)
        if get_op(n.op).category is Category.REDUCTION:
            level_of[id(n)] = d
            d += 1
        for o in n.outputs:
            depth[o.name] = d
    levels: dict[int, list[Node]] = {}
    for r in reds:
        levels.setdefault(level_of[id(r)], []).append(r)
    return [levels[k] for k in sorted(levels)]


def estimate_registers(g: FusedGroup, spec: DeviceSpec) -> int:
    """32-bit registers per thread: index math, one per live value of the fused
    expression (roughly the group's inputs plus a quarter of its nodes), and
    accumulators/micro-tiles for reductions and matmuls."""
    base = 16 + 2 * len(g.inputs) + math.ceil(len(g.nodes) / 4)
    if g.kind == "matmul":
        from hal.lowering.matmul import fused_reserve, one_tile_grid
        from hal.lowering.tiling import MatmulTiles, matmul_registers

        # the lowering's own accounting: the tiles it picks (with room kept for the fused
        # prologue/epilogue) plus that room; a dual GEMM keeps one accumulator micro-tile
        # per contraction, siblings of different N (column segments) one per block
        dots = [n for n in g.nodes if get_op(n.op).category is Category.CONTRACTION]
        live = len(dots) if one_tile_grid(dots) else 1
        t = _matmul_grid(g, spec)[4]
        if "layout" in t:   # the matrix-unit kernel's tiles
            from hal.lowering.mma_tiles import MmaTiles, mma_registers
            mt = MmaTiles.from_dict(t)
            return mma_registers(mt) + fused_reserve(g.nodes, g.inputs)
        if "tm" not in t:
            # no tile fits the device: over the limit, so the veto refuses what the
            # lowering could not produce anyway
            return spec.max_registers_per_thread + 1
        tiles = MatmulTiles(t["bm"], t["bn"], t["bk"], t["tm"], t["tn"])
        return matmul_registers(tiles, live) + fused_reserve(g.nodes, g.inputs)
    elif g.kind in ("row_reduction", "column_reduction"):
        base += 4 * len([n for n in g.nodes if get_op(n.op).category is Category.REDUCTION])
    elif g.kind == "attention":
        d = g.schedule.get("head_dim", 64)
        base += 2 * _cdiv(d, spec.warp_size) + 32
    return base


def _efficiency(blocks: int, spec: DeviceSpec) -> float:
    """Fraction of peak bandwidth a kernel with `blocks` blocks can draw: a kernel
    needs a few blocks per unit to hide memory latency."""
    need = 2 * spec.compute_units
    return min(1.0, max(blocks, 1) / need)


def group_cost(g: FusedGroup, spec: DeviceSpec) -> GroupCost:
    from .group import is_alias_group

    if is_alias_group(g):
        return GroupCost(0, 0, 0.0, 0.0, 0, 0, ["a view of its input: no kernel"], 0)
    notes: list[str] = []
    write_b = sum(nbytes(v) for v in g.outputs)
    issued = write_b + _issued_reads(g, spec)
    read = sum(nbytes(v) for v in g.inputs)
    read -= _ungathered_table_bytes(g)
    write = sum(nbytes(v) for v in g.outputs)
    flops = sum(node_flops(n) for n in g.nodes)
    out_numel = max((o.type.numel for o in g.outputs), default=1)
    blocks = max(1, _cdiv(out_numel, 256))
    matrix_dtype = None
    extra_launch = 0.0
    if g.kind == "row_reduction":
        rows, row = _row_count(g), _row_len(g)
        blocks = rows
        passes = reduction_passes(g)
        on_chip = row_bytes_on_chip(g)
        g.schedule.setdefault("row_bytes", on_chip)
        if passes > 1 and on_chip > spec.shared_mem_per_block:
            in_flight = on_chip * min(rows, spec.compute_units * 2)
            row_inputs = sum(nbytes(v) for v in g.inputs if v.type.numel >= row)
            if in_flight > spec.l2_bytes:
                read += (passes - 1) * row_inputs
                notes.append(f"{passes} passes over rows that fit neither on chip nor in L2")
            else:
                notes.append(f"{passes} passes; re-reads hit L2")
    elif g.kind == "matmul":
        # Siblings share A: A once, each B once. A dual GEMM shares one tile grid;
        # siblings of different shapes get one column-panel segment of the grid each.
        dots, m, segs, k_, tiles = _matmul_grid(g, spec)
        a = dots[0].inputs[0]
        row_tiles = _cdiv(m, tiles["bm"])
        in_flight = _matmul_in_flight(g, dots, tiles, spec)
        blocks = 0
        for seg_dots, n_ in segs:
            bs = [d.inputs[1] for d in seg_dots]
            col_tiles = _cdiv(n_, tiles["bn"])
            blocks += col_tiles * row_tiles
            if nbytes(a) + sum(nbytes(b) for b in bs) > spec.l2_bytes:
                read += _matmul_rereads(a, bs, m, k_, row_tiles, col_tiles, tiles, spec, notes,
                                        in_flight)
        if len(segs) > 1:
            notes.append(f"{len(dots)} sibling contractions read A once: "
                         f"{', '.join(str(n_) for _ds, n_ in segs)} columns in one grid")
        elif len(dots) > 1:
            notes.append(f"{len(dots)} sibling contractions share the A tile")
        blocks = max(1, blocks)
        matrix_dtype = a.dtype.name
        pre = _prologue_reduction_cost(g, dots, segs, k_, tiles, spec, notes)  # a norm prologue
        read, flops, issued = read + pre[0], flops + pre[1], issued + pre[2]
    elif g.kind == "attention":
        from hal.lowering.attention import match_attention

        blocks = g.schedule.get("blocks", blocks)
        pat = match_attention(g.nodes)
        if not isinstance(pat, str):
            matrix_dtype = pat.qk.inputs[0].dtype.name
            tiles = g.schedule.get("attention_tiles") or {}
            row_tiles = _cdiv(pat.m, tiles.get("br", 64))
            # K and V as read from memory: the inputs of their prologues (rotary, casts)
            k_b, v_b = _operand_read_bytes(g, pat, "k"), _operand_read_bytes(g, pat, "v")
            per_entry = (k_b + v_b) // max(1, math.prod(pat.batch))
            # Grid x walks the row tiles of one batch entry, so the blocks in flight
            # span only a few entries: their K/V is what must stay in L2.
            in_flight = min(blocks, 2 * spec.compute_units)
            entries = min(max(1, math.prod(pat.batch)), _cdiv(in_flight, row_tiles) + 1)
            if per_entry * entries > spec.l2_bytes:
                read += (row_tiles - 1) * (k_b + v_b)
                notes.append("K/V of the blocks in flight exceed L2: re-read per row tile")
            split = g.schedule.get("split_k", 1)
            flops += _prologue_recompute_flops(g, pat, row_tiles, split, notes)
            if split > 1:
                from hal.lowering.attention_split import split_scratch_bytes

                blocks *= split
                scratch = split_scratch_bytes(pat, split)   # written once, read once
                read, write = read + scratch, write + scratch
                kernels = 3 if pat.two_pass else 2
                extra_launch = (kernels - 1) * spec.launch_overhead_s
                notes.append(f"split-K: keys in {split} chunks, {fmt_bytes(2 * scratch)} of "
                             f"partials through scratch, {kernels} kernels")
            if pat.two_pass:
                # pass 2 recomputes the scores: q k^T again, and K read again per row tile
                flops += node_flops(pat.qk)
                if per_entry * entries > spec.l2_bytes:
                    read += row_tiles * k_b
                    notes.append("two-pass (P rounded before P@V): K read twice per row "
                                 "tile, q k^T computed twice")
                else:
                    notes.append("two-pass (P rounded before P@V): q k^T computed twice, "
                                 "the second K pass hits L2")
    eff = _efficiency(blocks, spec)
    t_mem = (read + write) / (spec.dram_bandwidth * eff)
    if matrix_dtype is not None and g.kind == "matmul":
        from hal.lowering.matmul_mma import flop_rate
        peak = flop_rate(g, spec, matrix_dtype)   # matrix unit or FMA, as the kernel issues
    elif matrix_dtype is not None:
        peak = spec.peak_for(matrix_dtype, matrix=True)
    else:
        peak = spec.peak_for("f32", matrix=False)
    t_flop = flops / (peak * eff)
    time_s = max(t_mem, t_flop) + spec.launch_overhead_s + extra_launch
    return GroupCost(read, write, flops, time_s, blocks, estimate_registers(g, spec), notes,
                     issued)


def _prologue_loads(pat, row_tiles: int, split: int) -> dict[str, int]:
    """How often the attention lowering loads each operand's tiles (and so evaluates its
    prologue): Q once per block (per chunk and pass kernel when split), K once per row tile
    and pass, V once per row tile."""
    passes = 2 if pat.two_pass else 1
    return {"q": split * passes if split > 1 else 1, "k": row_tiles * passes, "v": row_tiles}


def _prologue_recompute_flops(g: FusedGroup, pat, row_tiles: int, split: int,
                              notes: list[str]) -> float:
    """Flops of the operand prologues (fusion.attention: rotary, casts ...) beyond the one
    evaluation `node_flops` counts: each runs once per load of its operand's tiles."""
    from hal.lowering.attention import operand_prologues

    loads = _prologue_loads(pat, row_tiles, split)
    evals: dict[int, int] = {}
    for role, ns in operand_prologues(pat, g.nodes).items():
        for n in ns:
            evals[id(n)] = evals.get(id(n), 0) + loads[role]
    extra = sum(node_flops(n) * (evals[id(n)] - 1) for n in g.nodes if id(n) in evals)
    computing = [n for n in g.nodes if id(n) in evals and node_flops(n)]
    if computing:
        notes.append(f"operand prologues ({len(computing)} computing ops) evaluated in the "
                     f"tile loads: K's and V's once per tile of query rows")
    return extra


def _operand_read_bytes(g: FusedGroup, pat, role: str) -> int:
    """Bytes of memory an attention operand's tiles read: the group inputs its prologue
    loads, each at most one element per operand element (a slice reads its part)."""
    from hal.lowering.attention import operand_prologues

    operand = {"q": pat.qk.inputs[0], "k": pat.qk.inputs[1], "v": pat.pv.inputs[1]}[role]
    inputs = {v.name: v for v in g.inputs}
    if operand.name in inputs:
        return nbytes(operand)
    read = {v.name: v for n in operand_prologues(pat, g.nodes)[role] for v in n.inputs
            if v.name in inputs}
    return sum(min(nbytes(v), operand.type.numel * v.dtype.itemsize) for v in read.values())


def _matmul_rereads(a: Value, bs: list[Value], m: int, k: int, row_tiles: int,
                    col_tiles: int, tiles: dict, spec: DeviceSpec, notes: list[str],
                    in_flight: int | None = None) -> int:
    """Extra DRAM reads of a tiled matmul whose operands do not fit in L2 together.

    The lowering walks tiles in a grouped raster order (tiling.group_rows): a group of
    `g` row panels of A sweeps every column panel of B, g tiles per column panel.
    `in_flight` tiles run at once (a wave: tiling.matmul_in_flight, occupancy included)
    and walk K together, so a wave reads each panel it touches from DRAM once: its g A
    panels and its in_flight / g column panels of B (one per sibling contraction sharing
    A). B is therefore read once per group; A once per group when the group's A panels
    and a wave's B panels fit in L2 together (they stay resident across the group's
    waves), else once per wave."""
    from hal.lowering.tiling import group_rows

    units = max(1, in_flight or spec.compute_units)
    g = group_rows(row_tiles, tiles["bm"], k, a.dtype.itemsize, spec, units)
    a_panel = tiles["bm"] * k * a.dtype.itemsize
    b_panel = sum(nbytes(b) for b in bs) / max(1, col_tiles)  # all siblings' B per column
    groups = _cdiv(row_tiles, g)
    extra = (groups - 1) * sum(nbytes(b) for b in bs)  # each B once per group
    waves = _cdiv(g * col_tiles, units)  # waves per group
    per_wave_b = min(col_tiles, _cdiv(units, g)) * b_panel
    if waves > 1 and g * a_panel + per_wave_b > spec.l2_bytes:
        extra += (waves - 1) * nbytes(a)  # every group's A panels once per wave
        why = "A re-read once per wave"
    else:
        why = "A stays in L2 per group"
    if extra:
        notes.append(f"operands exceed L2: {units} tiles in flight, grouped raster of {g} row "
                     f"panels, {why}: re-reads {fmt_bytes(extra)}")
    return int(extra)


def _prologue_reduction_cost(g: FusedGroup, dots: list[Node], segs: list, k: int,
                             tiles: dict, spec: DeviceSpec,
                             notes: list[str]) -> tuple[int, float, int]:
    """(extra DRAM reads, extra flops, issued bytes) of a norm fused as the A operand's
    prologue (hal.lowering.matmul_prologue): every block recomputes the row reductions of its
    BM rows of A, one sweep over the rows per reduction level, before its K loop.

    Issued: each level loads what its reductions' inputs read, per element of A (rows past M
    load nothing), once per column panel: npn * numel(A) elements per value read. DRAM: those
    re-reads hit L2 when the A panel fits in half of L2 (the rule of _matmul_rereads),
    otherwise each level reads the row inputs again per column panel. Flops: the prologue
    (the reductions, the ops feeding them and the elementwise ops applied in the A tile
    loads) runs once per column panel instead of once.
    Registers: the pre-pass runs before the K loop (its accumulators are not live with the
    matmul's), so estimate_registers needs nothing more than its per-node term."""
    reds = [n for n in g.nodes if get_op(n.op).category is Category.REDUCTION]
    if not reds:
        return 0, 0.0, 0
    a = dots[0].inputs[0]
    npn = sum(_cdiv(n_, tiles["bn"]) for _ds, n_ in segs)   # column panels of all segments
    producer = {o.name: n for n in g.nodes for o in n.outputs}
    inputs = {v.name: v for v in g.inputs}
    levels = _reduction_levels(g, reds)
    issued = 0.0
    row_inputs: set[str] = set()
    for level in levels:
        seen: set[tuple] = set()
        stack = [(x.name, float(x.type.numel), ()) for r in level for x in r.inputs]
        while stack:
            name, count, sig = stack.pop()
            if (name, sig) in seen:
                continue
            seen.add((name, sig))
            if name in inputs:
                issued += count * inputs[name].dtype.itemsize
                row_inputs.add(name)
                continue
            n = producer.get(name)
            if n is None or get_op(n.op).category is Category.REDUCTION:
                continue   # an earlier level's result: read from shared memory
            moves = get_op(n.op).category in (Category.MOVEMENT, Category.BROADCAST,
                                              Category.GATHER)
            stack.extend((x.name, _requested(n, x, count),
                          sig + ((id(n), x.name),) if moves else sig) for x in n.inputs)
    after: set[str] = set()
    for n in g.nodes:  # the epilogue: nodes computed from a contraction's result
        if get_op(n.op).category is Category.CONTRACTION or any(v.name in after
                                                                  for v in n.inputs):
            after.update(o.name for o in n.outputs)
    flops = (npn - 1) * sum(node_flops(n) for n in g.nodes if n.outputs[0].name not in after)
    extra = 0
    if tiles["bm"] * k * a.dtype.itemsize > spec.l2_bytes // 2:
        extra = len(levels) * npn * sum(nbytes(inputs[x]) for x in row_inputs)
        notes.append(f"norm prologue: the A panel exceeds L2, {len(levels)} statistics "
                     f"pass(es) re-read {fmt_bytes(extra)}")
    else:
        notes.append(f"norm prologue: {len(levels)} statistics pass(es) over each A panel "
                     f"(L2 hits)")
    return extra, float(flops), int(issued * npn)


def _ungathered_table_bytes(g: FusedGroup) -> int:
    """A gather reads only the rows its indices select: for a table that is a group
    input and read by nothing but gathers, count the gathered rows (at most the
    table) instead of the whole table."""
    inputs = {v.name: v for v in g.inputs}
    saved = 0
    for name, table in inputs.items():
        readers = [n for n in g.nodes if any(v.name == name for v in n.inputs)]
        if not readers or any(get_op(n.op).category is not Category.GATHER
                              or n.inputs[0].name != name for n in readers):
            continue
        gathered = sum(n.outputs[0].type.numel for n in readers) * table.dtype.itemsize
        saved += max(0, nbytes(table) - gathered)
    return saved


def _mnk(mm: Node) -> tuple[int, int, int]:
    from hal.lowering.matmul import contraction_dims

    a, b = mm.inputs
    _lb, _rb, lc, _rc, lf, rf = contraction_dims(mm)
    return (math.prod(a.shape[i] for i in lf), math.prod(b.shape[j] for j in rf),
            math.prod(a.shape[i] for i in lc))


def _matmul_grid(g: FusedGroup, spec: DeviceSpec):
    """(contractions, m, [(contractions, n) per column segment], k, tiles) of a matmul
    group as hal.lowering.matmul grids it: one segment for one contraction or a dual
    GEMM, one per contraction for siblings of different shapes, whose tiles are chosen
    for the smallest N."""
    from hal.lowering.matmul import fused_reserve, one_tile_grid

    dots = [n for n in g.nodes if get_op(n.op).category is Category.CONTRACTION]
    mm = dots[0]
    m, n_, k_ = _mnk(mm)
    from hal.lowering.matmul_mma import group_mma_choice

    reserve = fused_reserve(g.nodes, g.inputs)
    choice = group_mma_choice(g, spec)   # the matrix-unit kernel's tiles, when it is one
    if len(dots) > 1 and not one_tile_grid(dots):
        segs = [([d], _mnk(d)[1]) for d in dots]
        segs = [(ds, n) for ds, n in segs if n] or segs
        tiles = choice.tiles.as_dict() if choice is not None else \
            g.schedule.get("tiles") or _matmul_tiles(mm, m, min(n for _ds, n in segs), k_,
                                                     spec, 1, reserve)
    else:
        segs = [(dots, n_)]
        tiles = choice.tiles.as_dict() if choice is not None else \
            g.schedule.get("tiles") or _matmul_tiles(mm, m, n_, k_, spec, len(dots), reserve)
    return dots, m, segs, k_, tiles


def _matmul_in_flight(g: FusedGroup, dots: list[Node], tiles: dict, spec: DeviceSpec) -> int:
    """Tiles running at once, as the lowering computes it for its raster order."""
    from hal.lowering.matmul import fused_reserve, one_tile_grid
    from hal.lowering.tiling import MatmulTiles, matmul_in_flight
    from hal.ops.contraction import accumulation_dtype

    if "layout" in tiles:   # matrix-unit tiles (hal.lowering.mma_tiles)
        from hal.lowering.mma_tiles import MmaTiles, mma_in_flight
        t = MmaTiles.from_dict(tiles)
        return mma_in_flight(t, spec)
    if "tm" not in tiles:
        return spec.compute_units
    t = MatmulTiles(tiles["bm"], tiles["bn"], tiles["bk"], tiles["tm"], tiles["tn"])
    acc = compute_dtype(accumulation_dtype(dots[0].inputs[0].dtype, dots[0].attrs))
    operands = len(dots) if one_tile_grid(dots) else 1
    return matmul_in_flight(t, acc.itemsize, spec, operands, fused_reserve(g.nodes, g.inputs))


def _matmul_tiles(mm: Node, m: int, n: int, k: int, spec: DeviceSpec,
                  operands: int = 1, reserve: int = 0) -> dict[str, int]:
    """The tiles the matmul lowering will pick (tiling.matmul_tiles); `operands` sibling
    contractions sharing the A tile, `reserve` registers kept for the fused ops."""
    from hal.ops.contraction import accumulation_dtype

    acc = compute_dtype(accumulation_dtype(mm.inputs[0].dtype, mm.attrs))
    key = (m, n, k, acc.itemsize, spec.name, spec.shared_mem_per_block, spec.warp_size,
           spec.max_threads_per_block, spec.max_registers_per_thread, spec.compute_units,
           operands, reserve)
    if key not in _TILES:
        from hal.lowering.tiling import matmul_tiles

        try:
            _TILES[key] = matmul_tiles(m, n, k, acc.itemsize, spec, operands,
                                       reserve).as_dict()
        except ValueError:
            _TILES[key] = {"bm": 128, "bn": 128}
    return _TILES[key]


_TILES: dict[tuple, dict[str, int]] = {}


# Elements of a movement op's input that one requested output element touches.
def _requested(n: Node, v: Value, count: float) -> float:
    out = n.outputs[0]
    if n.op in ("concat", "pad"):
        return count * v.type.numel / max(1, out.type.numel)
    return count


def _coord_map(n: Node, i: int) -> tuple:
    """What fixes the coordinates a movement/broadcast node asks of its input i."""
    return (n.op, i, tuple(n.inputs[i].shape), tuple(n.outputs[0].shape),
            repr(sorted(n.attrs.items())))


def _issued_reads(g: FusedGroup, spec: DeviceSpec) -> int:
    """Global bytes loaded as lowered (cache hits included), see the module docstring."""
    producer = {o.name: n for n in g.nodes for o in n.outputs}
    inputs = {v.name for v in g.inputs}
    total = 0.0
    dots = [n for n in g.nodes if get_op(n.op).category is Category.CONTRACTION]
    mm = dots[0] if dots else None
    by_coords = False   # paths told apart by their coordinate maps (the builder's cache)
    if g.kind == "matmul" and mm is not None:
        _dots, m, segs, _k, t = _matmul_grid(g, spec)
        factors = {d.inputs[1].name: _cdiv(m, t["bm"]) for d in dots}
        # one A tile load per column panel, for all siblings of a tile grid
        factors[mm.inputs[0].name] = sum(_cdiv(n_, t["bn"]) for _ds, n_ in segs)
    elif g.kind == "attention":
        from hal.lowering.attention import match_attention

        pat = match_attention(g.nodes)
        if isinstance(pat, str):
            return sum(nbytes(v) for v in g.inputs)
        tiles = g.schedule.get("attention_tiles") or {}
        rt = _cdiv(pat.m, tiles.get("br", 64))
        passes = 2 if pat.two_pass else 1   # K is loaded once per pass
        factors = {pat.qk.inputs[1].name: rt * passes, pat.pv.inputs[1].name: rt}
        split = g.schedule.get("split_k", 1)
        if split > 1:   # Q once per chunk (and per pass: two kernels), plus the partials
            from hal.lowering.attention_split import split_issued_bytes

            factors[pat.qk.inputs[0].name] = split * passes
            total += split_issued_bytes(pat, tiles.get("tpr", 1), split)
        # Each Q, K, V tile load evaluates its operand's prologue in its own builder scope:
        # a value reached twice through the same coordinate maps (rotary's cos and sin
        # tables share their angle) is loaded once there.
        by_coords = True
        mm = None
    else:
        factors = {}
        # a pointwise kernel's builder caches values by coordinates too: a value reached
        # through two paths with the same coordinate maps is loaded once
        by_coords = g.kind == "pointwise"
    passes = 1
    if g.kind == "row_reduction" and g.schedule.get("row_cache") == "reload":
        passes = reduction_passes(g)
    seen: set[tuple] = set()

    def walk(name: str, count: float, sig: tuple, factor: int) -> None:
        nonlocal total
        key = (name, sig)
        if key in seen:
            return
        seen.add(key)
        factor = factors.get(name, factor)
        if name in inputs:
            v = next(x for x in g.inputs if x.name == name)
            total += count * v.dtype.itemsize * factor
            return
        n = producer.get(name)
        if n is None:
            return
        cat = get_op(n.op).category
        if cat is Category.CONTRACTION:
            for i, x in enumerate(n.inputs):
                walk(x.name, x.type.numel, ((id(n), i),) if by_coords else (), 1)
            return
        if cat is Category.REDUCTION:
            if g.kind == "matmul":  # a norm prologue: its pre-pass is _prologue_reduction_cost
                return
            for x in n.inputs:
                walk(x.name, x.type.numel * passes, (), factor)  # the row, in its own space
            return
        moves = cat in (Category.MOVEMENT, Category.BROADCAST, Category.GATHER)
        for i, x in enumerate(n.inputs):
            step = _coord_map(n, i) if by_coords and cat is not Category.GATHER \
                else (id(n), x.name)
            walk(x.name, _requested(n, x, count), sig + (step,) if moves else sig, factor)

    for o in g.outputs:
        walk(o.name, o.type.numel, (), 1)
    return int(total)


def compulsory_bytes(graph) -> int:
    """Each graph input and constant read once, each output written once."""
    total = sum(nbytes(v) for v in graph.inputs)
    total += sum(nbytes(c.value) for c in graph.constants)
    total += sum(nbytes(v) for v in {v.name: v for v in graph.outputs}.values())
    return total


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def fmt_time(s: float) -> str:
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"
