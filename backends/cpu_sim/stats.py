"""KernelStats: what one simulated launch did (bytes per memory level, flops, barriers)
and the roofline time the device spec predicts for it.

Counting rules (they are the cost model's, so keep them simple and documented):
* global/shared bytes: itemsize per ACTIVE lane per access; a masked-off load reads
  nothing, a masked-off store writes nothing. An atomic add reads and writes its word.
* flops: one per active lane for each Unary/Binary whose result is a float
  (add, mul, exp, maximum, ...); comparisons (bool results), casts, selects, loads
  and shuffles are not flops. The IR has no fused multiply-add, so a*b+c counts 2.
* matrix flops (apart): 2 m n k per warp issuing an Mma, by fragment layout;
  `flops` is vector plus matrix flops.
* bank_conflicts: extra shared-memory wavefronts of vector and ldmatrix accesses.
* barriers: one per block that executes the Barrier statement.
* modelled_time_s = hal.roofline.roofline_time(spec, {GLOBAL: global bytes},
                   {SIMT FMA of dtype d: flops_d, MATRIX instruction: its matrix flops})
                   + launch_overhead_s: the one roofline, with the bytes the simulator
  counted (as issued: it models no cache, so they are priced at DRAM bandwidth), its
  vector flops on the vector units and each matrix instruction's flops at its rate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from hal.devices.spec import DeviceSpec


@dataclass
class KernelStats:
    name: str
    grid: tuple[int, int, int]
    block: int
    shared_bytes: int
    global_bytes_read: int = 0
    global_bytes_written: int = 0
    shared_bytes_read: int = 0
    shared_bytes_written: int = 0
    flops: int = 0
    barriers: int = 0
    atomics: int = 0
    modelled_time_s: float = 0.0
    wall_s: float = 0.0
    flops_by_dtype: dict[str, int] = field(default_factory=dict)
    waves: int = 0
    lanes_per_wave: int = 0
    matrix_flops: dict[str, int] = field(default_factory=dict)   # mma layout -> flops
    bank_conflicts: int = 0

    @property
    def global_bytes(self) -> int:
        return self.global_bytes_read + self.global_bytes_written

    def finish(self, spec: DeviceSpec) -> None:
        """Total the per-dtype flops and fill modelled_time_s from the spec's roofline."""
        from hal.roofline import MathInstruction, MathKind, MemoryLevel, roofline_time

        self.flops = int(sum(self.flops_by_dtype.values()) + sum(self.matrix_flops.values()))
        work = [(MathInstruction(MathKind.SIMT_FMA, dt), n)
                for dt, n in self.flops_by_dtype.items()]
        for lay, n in self.matrix_flops.items():
            mi = next((mi for mi in spec.matrix_instructions if mi.layout == lay), None)
            work.append((MathInstruction(MathKind.MATRIX, mi.a, mi.name) if mi is not None
                         else MathInstruction(MathKind.SIMT_FMA, "f32"), n))
        self.modelled_time_s = roofline_time(
            spec, {MemoryLevel.GLOBAL: self.global_bytes}, work) + spec.launch_overhead_s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["grid"] = list(self.grid)
        d["global_bytes"] = self.global_bytes
        return d
