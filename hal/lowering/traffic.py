"""What a group's kernels load and compute, as lowered: the traffic half of a KernelPlan.

The planners (hal.lowering.planners, planners_tiled) call these walks with the
decisions they made (tiles, cache choice, passes); the walks never decide anything.

`issued_reads` follows every output of a group back to the group inputs the
builder (hal.lowering.expr.ScalarBuilder) loads, per input: a value reached
through movement/broadcast ops is requested once per element asked of it
(`requested`); `factors` multiply an input's loads (matmul A once per column
panel, B once per row panel; attention K and V once per row tile); with
`by_coords` two paths that reach a value through the same coordinate maps are
loaded once, as the builder's per-scope cache does (`coord_map`).
`row_pass_reads` does the same per pass over a row (row reductions walk their row
once per reduction level and once more to store per-element outputs; a row cached
in shared memory is loaded from global memory on its first pass only).
`ungathered_table_bytes`, `matmul_rereads`, `norm_prologue_traffic` and
`operand_sources` give the DRAM side: which loads reach DRAM rather than L1/L2.
"""

from __future__ import annotations

from hal.devices.spec import DeviceSpec
from hal.ir.graph import Node, Value
from hal.ops import Category, get_op
from hal.ops.contraction import contraction_mnk


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def node_flops(n: Node) -> float:
    """Arithmetic of one node: one op per output element for elementwise ops, one per input
    element for reductions and scans, 2*M*N*K for contractions, nothing for movement."""
    cat = get_op(n.op).category
    if cat is Category.ELEMENTWISE:
        return float(n.outputs[0].type.numel) if n.op != "cast" else 0.0
    if cat in (Category.REDUCTION, Category.SCAN):
        return float(n.inputs[0].type.numel)
    if cat is Category.CONTRACTION:
        return 2.0 * n.outputs[0].type.numel * contraction_mnk(n)[2]
    return 0.0


def reduction_levels(nodes, reds: list[Node]) -> list[list[Node]]:
    """Reductions grouped by dependency depth: reductions at one level share a pass."""
    depth: dict[str, int] = {}
    level_of: dict[int, int] = {}
    for n in nodes:
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


def requested(n: Node, v: Value, count: float) -> float:
    """Elements of a movement op's input that `count` requested output elements touch."""
    out = n.outputs[0]
    if n.op in ("concat", "pad"):
        return count * v.type.numel / max(1, out.type.numel)
    return count


def coord_map(n: Node, i: int) -> tuple:
    """What fixes the coordinates a movement/broadcast node asks of its input i."""
    return (n.op, i, tuple(n.inputs[i].shape), tuple(n.outputs[0].shape),
            repr(sorted(n.attrs.items())))


class _Walk:
    """One walk from some roots back to the group inputs, adding bytes per input."""

    def __init__(self, group, totals: dict[str, float], factors: dict[str, int],
                 by_coords: bool, stop_at_reductions: bool, reduction_passes: int = 1,
                 env: frozenset[str] = frozenset()):
        self.producer = {o.name: n for n in group.nodes for o in n.outputs}
        self.inputs = {v.name: v for v in group.inputs}
        self.kind = group.kind
        self.totals, self.factors = totals, factors
        self.by_coords, self.stop = by_coords, stop_at_reductions
        self.passes, self.env = reduction_passes, env
        self.seen: set[tuple] = set()

    def value(self, name: str, count: float, sig: tuple, factor: int) -> None:
        """Add the bytes `count` elements of `name` cost, walking back to group inputs.

        Depth-first with an explicit stack (children pushed in reverse: the visiting order
        of a recursion, without its depth limit on a chain of thousands of fused ops)."""
        stack: list[tuple[str, float, tuple, int]] = [(name, count, sig, factor)]
        while stack:
            name, count, sig, factor = stack.pop()
            key = (name, sig)
            if key in self.seen or name in self.env:
                continue
            self.seen.add(key)
            factor = self.factors.get(name, factor)
            if name in self.inputs:
                self.totals[name] = self.totals.get(name, 0.0) + \
                    count * self.inputs[name].dtype.itemsize * factor
                continue
            n = self.producer.get(name)
            if n is None:
                continue
            stack.extend(reversed(self._children(n, count, sig, factor)))

    def _children(self, n, count: float, sig: tuple, factor: int) -> list[tuple]:
        cat = get_op(n.op).category
        if cat is Category.CONTRACTION:
            return [(x.name, x.type.numel, ((id(n), i),) if self.by_coords else (), 1)
                    for i, x in enumerate(n.inputs)]
        if cat is Category.REDUCTION:
            if self.stop:   # computed elsewhere (a norm prologue's pre-pass, an earlier pass)
                return []
            return [(x.name, x.type.numel * self.passes, (), factor)  # in its own space
                    for x in n.inputs]
        moves = cat in (Category.MOVEMENT, Category.BROADCAST, Category.GATHER)
        out = []
        for i, x in enumerate(n.inputs):
            step = coord_map(n, i) if self.by_coords and cat is not Category.GATHER \
                else (id(n), x.name)
            out.append((x.name, requested(n, x, count), sig + (step,) if moves else sig,
                        factor))
        return out


def issued_reads(group, factors: dict[str, int] | None = None, *, by_coords: bool = False,
                 stop_at_reductions: bool = False, roots=None,
                 env: frozenset[str] = frozenset()) -> dict[str, float]:
    """Global bytes loaded per group input by the group's kernels (see the module
    docstring); walks from `roots` ((value, elements requested) pairs; default every group
    output once), not into values in `env` (held in registers by the kernel)."""
    totals: dict[str, float] = {}
    w = _Walk(group, totals, dict(factors or {}), by_coords, stop_at_reductions, env=env)
    for v, count in (roots if roots is not None else [(o, o.type.numel) for o in group.outputs]):
        w.value(v.name, count, (), 1)
    return totals


def row_pass_reads(group, phases: list[list[Node]], row_outputs: list[Value],
                   scalar_outputs: list[Value], cached: set[str]) -> dict[str, float]:
    """Global bytes loaded per input by a row reduction kernel that walks its row once per
    phase (accumulating that phase's reductions, earlier ones read from registers) and once
    more when it stores per-element outputs (`row_outputs`); per-row outputs are computed
    from the reductions after the last pass. `cached` inputs are kept in shared memory by
    their first pass (hal.lowering.reduction: row_cache "shared") and loaded once."""
    totals: dict[str, float] = {}
    done: set[str] = set()
    env: set[str] = set()
    first: dict[str, float] = {}
    passes = [[x for r in ph for x in r.inputs] for ph in phases] + \
        ([list(row_outputs)] if row_outputs else [])
    for i, roots in enumerate(passes):
        part: dict[str, float] = {}
        w = _Walk(group, part, {}, True, True, env=frozenset(env))
        for v in roots:
            w.value(v.name, v.type.numel, (), 1)
        for name, b in part.items():
            if name in cached and name in first:
                continue   # later passes read the shared-memory copy
            first.setdefault(name, b)
            totals[name] = totals.get(name, 0.0) + b
        if i < len(phases):
            env.update(o.name for r in phases[i] for o in r.outputs)
            done.update(o.name for r in phases[i] for o in r.outputs)
    if scalar_outputs:   # per-row values: stored by one thread from the reductions
        part = {}
        w = _Walk(group, part, {}, True, True, env=frozenset(env))
        for v in scalar_outputs:
            w.value(v.name, v.type.numel, (), 1)
        for name, b in part.items():
            totals[name] = totals.get(name, 0.0) + b
    return totals


def ungathered_table_bytes(group) -> dict[str, int]:
    """Per input: the bytes a gather does not read. A table that is a group input read by
    nothing but gathers reads only the rows its indices select (at most the table)."""
    out: dict[str, int] = {}
    for table in group.inputs:
        name = table.name
        readers = [n for n in group.nodes if any(v.name == name for v in n.inputs)]
        if not readers or any(get_op(n.op).category is not Category.GATHER
                              or n.inputs[0].name != name for n in readers):
            continue
        gathered = sum(n.outputs[0].type.numel for n in readers) * table.dtype.itemsize
        saved = max(0, table.type.nbytes - gathered)
        if saved:
            out[name] = saved
    return out


def matmul_rereads(a: Value, bs: list[Value], m: int, k: int, row_tiles: int, col_tiles: int,
                   bm: int, spec: DeviceSpec, in_flight: int,
                   notes: list[str]) -> tuple[int, int]:
    """(extra DRAM reads of A, extra reads of each B) of a tiled matmul whose operands do
    not fit in L2 together.

    The lowering walks tiles in a grouped raster order (tiling.group_rows): a group of
    `g` row panels of A sweeps every column panel of B, g tiles per column panel.
    `in_flight` tiles run at once (a wave: tiling.matmul_in_flight, occupancy included)
    and walk K together, so a wave reads each panel it touches from DRAM once: its g A
    panels and its in_flight / g column panels of B (one per sibling contraction sharing
    A). B is therefore read once per group; A once per group when the group's A panels
    and a wave's B panels fit in L2 together (they stay resident across the group's
    waves), else once per wave."""
    from hal.lowering.tiling import group_rows

    units = max(1, in_flight)
    g = group_rows(row_tiles, bm, k, a.dtype.itemsize, spec, units)
    a_panel = bm * k * a.dtype.itemsize
    b_panel = sum(b.type.nbytes for b in bs) / max(1, col_tiles)  # all siblings' B per column
    groups = cdiv(row_tiles, g)
    extra_b = (groups - 1)                                  # each B once more per group
    waves = cdiv(g * col_tiles, units)  # waves per group
    per_wave_b = min(col_tiles, cdiv(units, g)) * b_panel
    extra_a = 0
    if waves > 1 and g * a_panel + per_wave_b > spec.l2_bytes:
        extra_a = (waves - 1) * a.type.nbytes  # every group's A panels once per wave
        why = "A re-read once per wave"
    else:
        why = "A stays in L2 per group"
    total = extra_a + extra_b * sum(b.type.nbytes for b in bs)
    if total:
        notes.append(f"operands exceed L2: {units} tiles in flight, grouped raster of {g} row "
                     f"panels, {why}: re-reads {fmt_bytes(total)}")
    return int(extra_a), int(extra_b)


def norm_prologue_traffic(group, dots: list[Node], col_panels: int, bm: int, k: int,
                          spec: DeviceSpec, notes: list[str]
                          ) -> tuple[dict[str, int], float, dict[str, float]]:
    """(extra DRAM reads per input, extra flops, issued bytes per input) of a norm fused as
    the A operand's prologue (hal.lowering.matmul_prologue): every block recomputes the row
    reductions of its BM rows of A, one sweep over the rows per reduction level, before
    its K loop.

    Issued: each level loads what its reductions' inputs read, per element of A (rows past
    M load nothing), once per column panel. DRAM: those re-reads hit L2 when the A panel
    fits in half of L2 (the rule of matmul_rereads), otherwise each level reads the row
    inputs again per column panel. Flops: the prologue (the reductions, the ops feeding
    them and the elementwise ops applied in the A tile loads) runs once per column panel
    instead of once."""
    reds = [n for n in group.nodes if get_op(n.op).category is Category.REDUCTION]
    if not reds:
        return {}, 0.0, {}
    a = dots[0].inputs[0]
    producer = {o.name: n for n in group.nodes for o in n.outputs}
    inputs = {v.name: v for v in group.inputs}
    levels = reduction_levels(group.nodes, reds)
    issued: dict[str, float] = {}
    row_inputs: list[str] = []
    for level in levels:
        seen: set[tuple] = set()
        stack = [(x.name, float(x.type.numel), ()) for r in level for x in r.inputs]
        while stack:
            name, count, sig = stack.pop()
            if (name, sig) in seen:
                continue
            seen.add((name, sig))
            if name in inputs:
                issued[name] = issued.get(name, 0.0) + \
                    count * inputs[name].dtype.itemsize * col_panels
                if name not in row_inputs:
                    row_inputs.append(name)
                continue
            n = producer.get(name)
            if n is None or get_op(n.op).category is Category.REDUCTION:
                continue   # an earlier level's result: read from shared memory
            moves = get_op(n.op).category in (Category.MOVEMENT, Category.BROADCAST,
                                              Category.GATHER)
            stack.extend((x.name, requested(n, x, count),
                          sig + ((id(n), x.name),) if moves else sig) for x in n.inputs)
    after: set[str] = set()
    for n in group.nodes:  # the epilogue: nodes computed from a contraction's result
        if get_op(n.op).category is Category.CONTRACTION or any(v.name in after
                                                                  for v in n.inputs):
            after.update(o.name for o in n.outputs)
    flops = (col_panels - 1) * sum(node_flops(n) for n in group.nodes
                                   if n.outputs[0].name not in after)
    extra: dict[str, int] = {}
    if bm * k * a.dtype.itemsize > spec.l2_bytes // 2:
        extra = {x: len(levels) * col_panels * inputs[x].type.nbytes for x in row_inputs}
        notes.append(f"norm prologue: the A panel exceeds L2, {len(levels)} statistics "
                     f"pass(es) re-read {fmt_bytes(sum(extra.values()))}")
    else:
        notes.append(f"norm prologue: {len(levels)} statistics pass(es) over each A panel "
                     f"(L2 hits)")
    return extra, float(flops), issued


def operand_sources(group, pat, role: str) -> dict[str, int]:
    """Bytes of memory an attention operand's tiles read, per group input: the inputs its
    prologue loads, each at most one element per operand element (a slice reads its part)."""
    from hal.lowering.attention import operand_prologues

    operand = {"q": pat.qk.inputs[0], "k": pat.qk.inputs[1], "v": pat.pv.inputs[1]}[role]
    inputs = {v.name: v for v in group.inputs}
    if operand.name in inputs:
        return {operand.name: operand.type.nbytes}
    read = {v.name: v for n in operand_prologues(pat, group.nodes)[role] for v in n.inputs
            if v.name in inputs}
    return {name: min(v.type.nbytes, operand.type.numel * v.dtype.itemsize)
            for name, v in read.items()}


def fmt_bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def fmt_time(s: float) -> str:
    if s >= 1e-3:
        return f"{s * 1e3:.2f} ms"
    return f"{s * 1e6:.1f} us"

