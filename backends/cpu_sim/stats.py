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
* modelled_time_s = max(global bytes / dram_bandwidth,
                        sum over dtypes of flops_d / vector peak_d
                        + matrix flops / the rate of their instruction) + launch_overhead_s.
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
        self.flops = int(sum(self.flops_by_dtype.values()) + sum(self.matrix_flops.values()))
        memory_s = self.global_bytes / spec.dram_bandwidth if spec.dram_bandwidth else 0.0
        compute_s = sum(n / spec.peak_for(dt, matrix=False)
                        for dt, n in self.flops_by_dtype.items() if n)
        for lay, n in self.matrix_flops.items():
            rates = [mi.rate or spec.peak_for(mi.a) for mi in spec.matrix_instructions
                     if mi.layout == lay]
            compute_s += n / (max(rates) if rates else spec.peak_for("f32", matrix=False))
        self.modelled_time_s = max(memory_s, compute_s) + spec.launch_overhead_s

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["grid"] = list(self.grid)
        d["global_bytes"] = self.global_bytes
        return d
