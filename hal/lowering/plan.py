"""Typed plan records: what a group kind decides about its kernel(s), once.

Each group kind (`GroupKind`) is one registered object (hal.lowering.kinds) whose
`plan(group, spec)` returns a frozen `KernelPlan` and whose `lower(group, plan, spec,
options)` emits exactly that plan; the fusion cost model prices the `KernelPlan` and
nothing else (it never re-derives a tile or a cache choice):

    group kind --plan(group, spec)--> KernelPlan --lower--> [Kernel, ...]   (KernelMeta.plan)
                                           \\------price--> GroupCost        (fusion.cost)

Records (all frozen, all fields plain data):

* `GroupKind`: the kinds of fused group (a str enum: `GroupKind.MATMUL == "matmul"`).
* `MathKind` / `MathInstruction` (hal.roofline): the instruction kind the math runs on.
  SIMT_FMA is the vector units (priced at the vector peak of `dtype`); MATRIX is a
  matrix unit, with `name` the matrix instruction the plan chose (priced at that
  instruction's rate). A matmul plan says MATRIX when hal.lowering.matmul_mma emits it
  (strategy "mma"), SIMT_FMA in the accumulator dtype for the SIMT kernel; attention
  plans say MATRIX when hal.lowering.attention_mma emits them (strategy
  "flash_attention_mma"; `math_flops` then splits the flops: Q K^T and P V at the
  instruction's rate, the softmax and prologues on the vector units), else SIMT_FMA.
* `MemoryLevel` (hal.roofline): where a load is served from or staged in.
* `OperandLoad`: per group input, how often it is loaded and through which level:
  `issued_bytes` is what the kernels ask of global memory for it as lowered (cache
  hits included: cpu_sim counts exactly these), `dram_bytes` what the model says
  reaches DRAM, `staged` the on-chip level its elements pass through (SHARED for
  matmul/attention tiles, a transpose tile or a row cached in shared memory; GLOBAL
  when loaded straight into registers), `loads` = issued_bytes / nbytes.
* `Launch`: one kernel of the plan: name, grid, block, its stage.
* `PlanHints`: choices a caller forces (tiles, split factors) instead of the planner.
* `KernelPlan`: the group's launches, tiles, pipeline stages, math instruction,
  registers reserved per thread, per-input loads, bytes written, scratch traffic,
  flops, the blocks that share the device (occupancy), and `details`: the other
  decisions (row cache, passes, split factors), each a plain value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from hal.roofline import MathInstruction, MathKind, MemoryLevel  # noqa: F401  (plan vocabulary)


class GroupKind(StrEnum):
    """The kinds of fused group; each has one registered planner/lowering (kinds.py)."""

    POINTWISE = "pointwise"
    SOURCE = "source"
    GATHER = "gather"
    MOVEMENT = "movement"
    ROW_REDUCTION = "row_reduction"
    COLUMN_REDUCTION = "column_reduction"
    MATMUL = "matmul"
    ATTENTION = "attention"
    SCAN = "scan"


@dataclass(frozen=True)
class OperandLoad:
    """How one group input is loaded by the plan's kernels (see the module docstring)."""

    value: str
    nbytes: int
    issued_bytes: int
    dram_bytes: int
    staged: MemoryLevel = MemoryLevel.GLOBAL

    @property
    def loads(self) -> float:
        """How many times the input's bytes are issued to global memory."""
        return self.issued_bytes / self.nbytes if self.nbytes else 0.0


@dataclass(frozen=True)
class Launch:
    """One kernel of a plan, as lowered: the kernel's name, `grid` and `block` equal these."""

    name: str
    grid: tuple[int, int, int]
    block: int
    stage: str = ""          # "partial", "final", "combine", "stats" for multi-kernel plans
    # grid axes (0 x, 1 y, 2 z) whose index is a batch entry (a matmul's batch, an
    # attention's heads): every entry's blocks run the same code on their own slice, with
    # no tail, so the first and last entry are no boundary class (cpu_sim's --sample)
    batch_axes: tuple[int, ...] = ()


@dataclass(frozen=True)
class PlanHints:
    """Choices a caller may force instead of letting the planner pick them (tests, tuning):
    `matmul_tiles` (a tiling.MatmulTiles), `attention_tiles` (br, bc, tpr), `split` (blocks
    per row of a row reduction), `split_k` (key chunks of an attention). None: the planner's."""

    matmul_tiles: Any = None
    attention_tiles: tuple[int, int, int] | None = None
    split: int | None = None
    split_k: int | None = None


NO_HINTS = PlanHints()


Details = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class KernelPlan:
    """Everything decided about a group's kernels (see the module docstring).

    `grid`/`block` are the first launch's; `tiles` name their sizes (matmul: bm, bn, bk,
    tm, tn; attention: br, bc, tpr; transpose: tile, rows); `stages` is the software
    pipeline depth of the K loop (1: one buffer, load then compute)."""

    group: str
    kind: GroupKind
    strategy: str
    launches: tuple[Launch, ...]
    math: MathInstruction = MathInstruction()
    tiles: tuple[tuple[str, int], ...] = ()
    stages: int = 1
    registers: int = 0
    loads: tuple[OperandLoad, ...] = ()
    written_bytes: int = 0
    scratch_bytes: int = 0       # DRAM: partials written once and read once by its kernels
    scratch_issued_bytes: int = 0  # global loads and stores of those partials, as lowered
    flops: float = 0.0
    blocks: int = 1              # blocks sharing the device (the bandwidth efficiency)
    # flops per instruction kind when the kernels issue more than one (a matrix-unit
    # attention: Q K^T and P V on the matrix unit, the softmax on the vector units); ()
    # means all `flops` run on `math`
    math_flops: tuple[tuple[MathInstruction, float], ...] = ()
    details: Details = ()
    reasons: tuple[str, ...] = field(default=(), compare=False)  # why: for the fusion log
    notes: tuple[str, ...] = field(default=(), compare=False)    # how it is priced

    # -- views ----------------------------------------------------------------
    @property
    def grid(self) -> tuple[int, int, int]:
        return self.launches[0].grid if self.launches else (0, 1, 1)

    @property
    def block(self) -> int:
        return self.launches[0].block if self.launches else 0

    @property
    def tile_sizes(self) -> dict[str, int]:
        return dict(self.tiles)

    @property
    def flops_by_math(self) -> tuple[tuple[MathInstruction, float], ...]:
        """(instruction kind, flops) pairs the roofline prices (fusion.cost)."""
        return self.math_flops or ((self.math, self.flops),)

    def detail(self, key: str, default: Any = None) -> Any:
        return dict(self.details).get(key, default)

    @property
    def issued_bytes(self) -> int:
        """Global bytes the kernels load and store as lowered (what cpu_sim counts)."""
        return sum(x.issued_bytes for x in self.loads) + self.written_bytes \
            + self.scratch_issued_bytes

    @property
    def dram_read_bytes(self) -> int:
        return sum(x.dram_bytes for x in self.loads) + self.scratch_bytes

    @property
    def dram_write_bytes(self) -> int:
        return self.written_bytes + self.scratch_bytes

    def load_of(self, value: str) -> OperandLoad | None:
        return next((x for x in self.loads if x.value == value), None)

    def summary(self) -> dict[str, Any]:
        """A plain record for reports, `hal fuse --explain/--json` and kernel comments."""
        return {"strategy": self.strategy, "launches": [
                    {"name": x.name, "grid": list(x.grid), "block": x.block,
                     **({"stage": x.stage} if x.stage else {})}
                    for x in self.launches],
                "tiles": self.tile_sizes, "stages": self.stages, "math": str(self.math),
                "registers": self.registers,
                "loads": {x.value: {"loads": round(x.loads, 3), "staged": str(x.staged),
                                    "issued_bytes": x.issued_bytes, "dram_bytes": x.dram_bytes}
                          for x in self.loads},
                **dict(self.details)}
