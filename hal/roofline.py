"""The one roofline: bytes per memory level and flops per instruction kind in, time out.

    t = max(sum over levels of bytes / bandwidth(level),
            sum over instruction kinds of flops / peak(kind)) / efficiency

`roofline` is that formula over (bytes, bandwidth) and (flops, peak) pairs;
`roofline_time` reads the rates from a DeviceSpec. The fusion cost model (DRAM bytes of a KernelPlan, its flops on its math
instruction), cpu_sim's per-kernel stats (the global bytes and flops it
counted) and `hal bench` (compulsory bytes and the graph's flops) all call
`roofline_time`; none has a formula of its own. Launch overhead is added by
the caller (it depends on how many kernels, not on bytes).

* `MemoryLevel`: DRAM and GLOBAL (global-memory traffic as issued, cache hits
  included: what the simulator counts) are priced at the spec's DRAM bandwidth;
  L2 and SHARED have no bandwidth in a DeviceSpec and are not priced.
* `MathInstruction(kind, dtype, name)`: SIMT_FMA work is priced at the spec's
  vector rate for `dtype`, MATRIX work at the named instruction's rate (the spec's
  `matrix_instructions`), or the spec's matrix-unit rate for `dtype` (spec.peak_for).
* `efficiency` (0, 1]: the fraction of the peaks a kernel can draw (the cost
  model's occupancy term); 1 for a roofline bound.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum

from hal.devices.spec import DeviceSpec


class MemoryLevel(StrEnum):
    DRAM = "dram"
    L2 = "l2"
    SHARED = "shared"     # shared memory / LDS
    GLOBAL = "global"     # global-memory accesses as issued (L1/L2 hits included)


class MathKind(Enum):
    SIMT_FMA = "simt_fma"   # vector units, one FMA (2 flops) per lane per instruction
    MATRIX = "matrix"       # a matrix unit (tensor core, MFMA)


@dataclass(frozen=True)
class MathInstruction:
    """The instruction kind some math runs on and the dtype its peak is read for.
    `name`: the matrix instruction (MATRIX only, e.g. "mma.sync.m16n8k16"), or None."""

    kind: MathKind = MathKind.SIMT_FMA
    dtype: str = "f32"
    name: str | None = None

    @property
    def matrix(self) -> bool:
        return self.kind is MathKind.MATRIX

    def __str__(self) -> str:
        what = self.name or ("matrix unit" if self.matrix else "SIMT FMA")
        return f"{what} {self.dtype}"


SIMT_F32 = MathInstruction(MathKind.SIMT_FMA, "f32")


def bandwidth(spec: DeviceSpec, level: MemoryLevel) -> float | None:
    """Bytes/s of a memory level on `spec`; None for levels the spec gives no rate for."""
    if level in (MemoryLevel.DRAM, MemoryLevel.GLOBAL):
        return spec.dram_bandwidth
    return None


def peak(spec: DeviceSpec, inst: MathInstruction) -> float:
    """FLOP/s of an instruction kind on `spec`: a named matrix instruction at its own rate
    (the spec's `matrix_instructions`), else the spec's matrix or vector peak of `dtype`."""
    if inst.matrix and inst.name:
        mi = next((mi for mi in spec.matrix_instructions if mi.name == inst.name), None)
        if mi is not None and mi.rate:
            return mi.rate
    return spec.peak_for(inst.dtype, matrix=inst.matrix)


def _items(x: Mapping | Iterable) -> Iterable:
    return x.items() if isinstance(x, Mapping) else x


def _sides(bytes_at: Iterable[tuple[float, float | None]],
           flops_at: Iterable[tuple[float, float]]) -> tuple[float, float]:
    memory = sum(b / bw for b, bw in bytes_at if b and bw)
    compute = sum(f / pk for f, pk in flops_at if f)
    return memory, compute


def roofline(bytes_at: Iterable[tuple[float, float | None]],
             flops_at: Iterable[tuple[float, float]], efficiency: float = 1.0) -> float:
    """THE formula: max(sum bytes / bandwidth, sum flops / peak) / efficiency, from
    (bytes, bandwidth) and (flops, peak) pairs (a bandwidth of None is not priced)."""
    memory, compute = _sides(bytes_at, flops_at)
    return max(memory, compute) / max(efficiency, 1e-12)


def bound(bytes_at: Iterable[tuple[float, float | None]],
          flops_at: Iterable[tuple[float, float]]) -> str:
    """"memory" or "compute": which side of the roofline sets the time."""
    memory, compute = _sides(bytes_at, flops_at)
    return "memory" if memory >= compute else "compute"


def _rates(spec: DeviceSpec, bytes_by_level, flops_by_kind):
    return ([(b, bandwidth(spec, MemoryLevel(lv))) for lv, b in _items(bytes_by_level)],
            [(f, peak(spec, inst)) for inst, f in _items(flops_by_kind)])


def roofline_time(spec: DeviceSpec, bytes_by_level: Mapping[MemoryLevel, float],
                  flops_by_kind: Mapping[MathInstruction, float]
                  | Iterable[tuple[MathInstruction, float]],
                  efficiency: float = 1.0) -> float:
    """Seconds for the bytes per memory level and flops per instruction kind on `spec`."""
    return roofline(*_rates(spec, bytes_by_level, flops_by_kind), efficiency)


def roofline_bound(spec: DeviceSpec, bytes_by_level, flops_by_kind) -> str:
    return bound(*_rates(spec, bytes_by_level, flops_by_kind))
