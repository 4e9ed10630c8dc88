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
* a tiled matmul re-reads A once per column of tiles and B once per row of
  tiles, unless the operand fits in L2.

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

    @property
    def dram_bytes(self) -> int:
        return self.dram_read + self.dram_write

    def to_dict(self) -> dict:
        return {"dram_read": self.dram_read, "dram_write": self.dram_write,
                "dram_bytes": self.dram_bytes, "flops": self.flops, "time_s": self.time_s,
                "blocks": self.blocks, "registers": self.registers, "notes": list(self.notes)}


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
        tiles = g.schedule.get("tiles") or {}
        tm, tn = tiles.get("tm", 8), tiles.get("tn", 8)
        base += tm * tn + tm + tn
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
    notes: list[str] = []
    read = sum(nbytes(v) for v in g.inputs)
    write = sum(nbytes(v) for v in g.outputs)
    flops = sum(node_flops(n) for n in g.nodes)
    out_numel = max((o.type.numel for o in g.outputs), default=1)
    blocks = max(1, _cdiv(out_numel, 256))
    matrix_dtype = None
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
        mm = next(n for n in g.nodes if get_op(n.op).category is Category.CONTRACTION)
        a, b = mm.inputs[0], mm.inputs[1]
        out = mm.outputs[0]
        tiles = g.schedule.get("tiles") or {"bm": 128, "bn": 128}
        m = math.prod(out.shape[:-1]) if out.rank else 1
        n_ = out.shape[-1] if out.rank else 1
        col_tiles, row_tiles = _cdiv(n_, tiles["bn"]), _cdiv(m, tiles["bm"])
        blocks = col_tiles * row_tiles
        if nbytes(a) + nbytes(b) > spec.l2_bytes:
            read += (col_tiles - 1) * nbytes(a) if nbytes(a) > spec.l2_bytes // 2 else 0
            read += (row_tiles - 1) * nbytes(b) if nbytes(b) > spec.l2_bytes // 2 else 0
            notes.append("operands exceed L2: tiles re-read from DRAM")
        matrix_dtype = a.dtype.name
    elif g.kind == "attention":
        blocks = g.schedule.get("blocks", blocks)
        matrix_dtype = g.nodes[0].inputs[0].dtype.name
    eff = _efficiency(blocks, spec)
    t_mem = (read + write) / (spec.dram_bandwidth * eff)
    if matrix_dtype is not None:
        peak = spec.peak_for(matrix_dtype, matrix=True)
    else:
        peak = spec.peak_for("f32", matrix=False)
    t_flop = flops / (peak * eff)
    time_s = max(t_mem, t_flop) + spec.launch_overhead_s
    return GroupCost(read, write, flops, time_s, blocks, estimate_registers(g, spec), notes)


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
