"""The fusion cost model: it prices a group's KernelPlan, and nothing else.

Every decision about a group's kernels (tiles, grid, the row cache, split factors,
which operand stays in L2) is made once by the group kind's planner
(`hal.lowering.plan_group`, see hal.lowering.planners and planners_tiled, whose
docstrings state the traffic rules); this module never re-derives one. It turns the
plan into time with the one roofline (hal.roofline, as XLA's GPU performance model
does from a device description):

    time = roofline_time(spec, {DRAM: plan's DRAM bytes}, plan.flops_by_math,
                         efficiency(plan.blocks)) + launches * launch_overhead

where `efficiency` is the fraction of peak a kernel with that many blocks can draw
(a few blocks per unit hide memory latency), DRAM bytes are each input once plus the
re-reads the plan says reach DRAM, the outputs once and any scratch partials, and
`issued` bytes (KernelPlan.issued_bytes) are what the kernels ask of global memory as
lowered, cache hits included: cpu_sim counts exactly these (it models no cache), as
tests/test_plan_agreement.py checks over spec variations. They differ from the DRAM
bytes by (a) loads through broadcast_to (a bias or norm weight is loaded once per
output element: cache hits on hardware), (b) values loaded at several coordinates
(rotate_half reads x at x, at its low half and at its high half), (c) matmul and
attention tile re-reads (L2 hits when the operand fits), (d) row reductions that
re-read rows not cached in shared memory. A lone reshape is a view of its input (no
kernel, no bytes).

`estimate_registers` is the plan's registers per thread (the veto's estimate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hal.devices.spec import DeviceSpec
from hal.ir.graph import Value
from hal.lowering import plan_group
from hal.lowering.memo import Memo
from hal.lowering.plan import KernelPlan
from hal.lowering.traffic import fmt_bytes, fmt_time, node_flops  # noqa: F401  (re-exported)
from hal.roofline import MemoryLevel, roofline_time

from .group import FusedGroup


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
    plan: KernelPlan | None = None

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


def efficiency(blocks: int, spec: DeviceSpec) -> float:
    """Fraction of peak bandwidth a kernel with `blocks` blocks can draw: a kernel
    needs a few blocks per unit to hide memory latency."""
    need = 2 * spec.compute_units
    return min(1.0, max(blocks, 1) / need)


# Roofline seconds by (spec, DRAM bytes, flops by instruction, blocks): a pure function of
# the key. Most plans priced repeat one (a candidate's plan renamed for the final group, the
# same kernel shape in another graph): 3 in 4 of the suite's prices.
ROOFLINE_TIMES = Memo("roofline_times", 4096)


def _roofline_seconds(spec: DeviceSpec, dram_bytes: int, flops_by_math: tuple,
                      blocks: int) -> float:
    key = (spec, dram_bytes, flops_by_math, blocks)
    hit = ROOFLINE_TIMES.lookup(key)
    if hit is None:
        hit = roofline_time(spec, {MemoryLevel.DRAM: dram_bytes}, flops_by_math,
                            efficiency(blocks, spec))
        ROOFLINE_TIMES.put(key, hit)
    return hit


def price(plan: KernelPlan, spec: DeviceSpec) -> GroupCost:
    """Modelled DRAM bytes, flops and time of a KernelPlan on `spec`."""
    read, write = plan.dram_read_bytes, plan.dram_write_bytes
    time_s = _roofline_seconds(spec, read + write, plan.flops_by_math, plan.blocks)
    time_s += max(1, len(plan.launches)) * spec.launch_overhead_s
    return GroupCost(read, write, plan.flops, time_s, plan.blocks, plan.registers,
                     list(plan.notes), plan.issued_bytes, plan)


def group_cost(g: FusedGroup, spec: DeviceSpec) -> GroupCost:
    from .group import is_alias_group

    if is_alias_group(g):
        return GroupCost(0, 0, 0.0, 0.0, 0, 0, ["a view of its input: no kernel"], 0)
    return price(plan_group(g, spec), spec)


def estimate_registers(g: FusedGroup, spec: DeviceSpec) -> int:
    """32-bit registers per thread the group's plan reserves (the fusion veto's estimate):
    index math, one per live value of the fused expression (roughly the group's inputs
    plus a quarter of its nodes), accumulators and micro-tiles for reductions and matmuls
    (a matmul: the lowering's own tile accounting plus the room kept for fused ops)."""
    return plan_group(g, spec).registers


def compulsory_bytes(graph) -> int:
    """Each graph input and constant read once, each output written once."""
    total = sum(nbytes(v) for v in graph.inputs)
    total += sum(nbytes(c.value) for c in graph.constants)
    total += sum(nbytes(v) for v in {v.name: v for v in graph.outputs}.values())
    return total
