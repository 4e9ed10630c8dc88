"""Run one benchmark case: time it (or model it), put it against the roofline and the baselines.

Two ways a figure is obtained, always labelled in `BenchResult.method`:

* measured: a backend that runs on hardware is timed with `Backend.time` (device events on GPUs), `warmup` calls then
  `repeat` samples, optionally flushing L2 between samples (`flush_l2`): a device memset
  of 2 x L2 bytes, L2 as the device reports it (`l2_bytes()`; the spec's figure only when
  the device cannot say), into one buffer allocated per case and freed after it;
  median, p10 and p90 are reported. A backend that offers
  `prepare_graph(graph, inputs, spec) -> callable` (kernels compiled, buffers
  resident) is timed on that callable, i.e. launches only; otherwise the
  timing wraps `run_graph` and the result says so in its notes;
* modelled: a simulated backend (cpu_sim; the reference interpreter) has no
  time worth measuring, so the time is the spec's model: "modelled (simulator counts)" sums the simulator's
  per-kernel modelled_time_s (bytes it counted) when the graph is small
  (< SIM_MAX_ELEMENTS elements and < SIM_MAX_FLOPS flops), and "modelled (cost
  model)" uses the fusion plan's costs otherwise. A modelled figure is one
  number, so median = p10 = p90.

Throughput uses the graph's compulsory bytes (each input read once, each
output written once) and the plan's flops. The roofline time is hal.roofline's
max(compulsory bytes / DRAM bandwidth, flops / peak), so
`pct_of_roofline = roofline time / time`, which equals achieved FLOP/s over
min(peak, intensity x bandwidth) and still means something for ops with no
flops (gather). The peak is the matrix rate of the dtype when the graph has a
contraction, else the vector f32 rate (hal computes 16-bit elementwise in f32).

Copy reference (hal.bench.copy_bandwidth): with `copy_reference=True` each result
also carries the bandwidth of a device-to-device copy moving the same total bytes
(a copy of compulsory bytes / 2, read + write counted), measured with torch on
the GPU when the backend runs on real hardware, the spec's DRAM bandwidth
(labelled modelled) on simulated backends; `pct_of_copy_bw` = achieved GB/s over
it. Pass a shared `copy_cache` (CopyReferences) to measure each size once a run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hal.backend import Backend, Capability
from hal.bench.baselines import BaselineResult, get_baseline, host_flusher
from hal.bench.cases import BenchCase, case_flops_hint, fmt_shape, total_elements
from hal.bench.copy_bandwidth import CopyReference, CopyReferences
from hal.devices.spec import DeviceSpec
from hal.roofline import SIMT_F32, MathInstruction, MathKind, peak, roofline
from hal.roofline import bound as roofline_side

SIM_MAX_ELEMENTS = 1 << 22
SIM_MAX_FLOPS = 1 << 28
MODELS = ("auto", "cost", "sim")

MEASURED_EVENTS = "measured (device events)"
MEASURED_HOST = "measured (host wall clock)"
MODELLED_COST = "modelled (cost model)"
MODELLED_SIM = "modelled (simulator counts)"


def summarize_times(times: Sequence[float]) -> dict[str, Any]:
    """median, p10, p90 and count of `times` (None when empty)."""
    if not times:
        return {"median_s": None, "p10_s": None, "p90_s": None, "samples": 0}
    a = np.asarray(times, dtype=np.float64)
    return {"median_s": float(np.median(a)), "p10_s": float(np.percentile(a, 10)),
            "p90_s": float(np.percentile(a, 90)), "samples": int(a.size)}


@dataclass
class BenchResult:
    case: str
    op: str
    shapes: list[str]
    dtype: str
    backend: str
    device: str
    method: str
    times_s: list[float]
    compulsory_bytes: int
    modelled_bytes: int             # what the plan (or the simulator) says moves through DRAM
    flops: float
    kernels: int
    dram_bandwidth: float
    peak_flops: float
    peak_kind: str                  # "matrix bf16" or "vector f32"
    baselines: list[BaselineResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    copy_reference: CopyReference | None = None   # same total bytes; see copy_bandwidth

    # -- derived figures -------------------------------------------------------
    @property
    def median_s(self) -> float:
        return summarize_times(self.times_s)["median_s"] or 0.0

    @property
    def modelled(self) -> bool:
        return self.method.startswith("modelled")

    @property
    def intensity(self) -> float:
        """flops per compulsory DRAM byte."""
        return self.flops / self.compulsory_bytes if self.compulsory_bytes else 0.0

    @property
    def achieved_bytes_per_s(self) -> float:
        return self.compulsory_bytes / self.median_s if self.median_s else 0.0

    @property
    def copy_bytes_per_s(self) -> float | None:
        """The copy reference's bandwidth (read + write), None when there is none."""
        c = self.copy_reference
        return c.bytes_per_s if c is not None and c.available and c.bytes_per_s else None

    @property
    def pct_of_copy_bw(self) -> float | None:
        """Achieved bandwidth as a percentage of the copy reference (None without one)."""
        ref = self.copy_bytes_per_s
        return 100.0 * self.achieved_bytes_per_s / ref if ref else None

    @property
    def achieved_flops_per_s(self) -> float:
        return self.flops / self.median_s if self.median_s else 0.0

    @property
    def roofline_s(self) -> float:
        """hal.roofline's bound for the compulsory bytes and the flops on the peak."""
        return roofline([(self.compulsory_bytes, self.dram_bandwidth)],
                        [(self.flops, self.peak_flops)])

    @property
    def bound(self) -> str:
        return roofline_side([(self.compulsory_bytes, self.dram_bandwidth)],
                     [(self.flops, self.peak_flops)])

    @property
    def pct_of_roofline(self) -> float:
        """Roofline time over the time, in percent (100 = at the roofline); print it with
        a "%" sign as it is, never multiplied by 100 again."""
        return 100.0 * self.roofline_s / self.median_s if self.median_s else 0.0

    def ratio(self, b: BaselineResult) -> float | None:
        """hal time / baseline time (< 1: hal faster)."""
        base = summarize_times(b.times_s)["median_s"]
        return self.median_s / base if b.available and base else None

    def to_dict(self, with_provenance: bool = True) -> dict[str, Any]:
        d = {"case": self.case, "op": self.op, "shapes": self.shapes, "dtype": self.dtype,
             "backend": self.backend, "device": self.device, "method": self.method,
             **summarize_times(self.times_s), "times_s": list(self.times_s),
             "compulsory_bytes": self.compulsory_bytes, "modelled_bytes": self.modelled_bytes,
             "flops": self.flops, "kernels": self.kernels,
             "intensity_flops_per_byte": self.intensity,
             "achieved_GBps": self.achieved_bytes_per_s / 1e9,
             "achieved_TFLOPs": self.achieved_flops_per_s / 1e12,
             "roofline_s": self.roofline_s, "pct_of_roofline": self.pct_of_roofline,
             "bound": self.bound, "dram_bandwidth_Bps": self.dram_bandwidth,
             "copy_GBps": (self.copy_bytes_per_s or 0) / 1e9 or None,
             "copy_method": self.copy_reference.method if self.copy_reference else None,
             "pct_of_copy_bw": self.pct_of_copy_bw,
             "copy_reference": self.copy_reference.to_dict() if self.copy_reference else None,
             "peak_flops": self.peak_flops, "peak_kind": self.peak_kind,
             "baselines": [{**b.to_dict(), "ratio_hal_over_baseline": self.ratio(b)}
                           for b in self.baselines],
             "notes": list(self.notes)}
        if with_provenance:
            d["provenance"] = self.provenance
        return d

    def csv_row(self) -> dict[str, Any]:
        row = {k: v for k, v in self.to_dict(with_provenance=False).items()
               if k not in ("times_s", "baselines", "notes", "shapes", "copy_reference")}
        row["shapes"] = " ".join(self.shapes)
        c = self.copy_reference
        row["copy_where"] = (c.where if c.available else c.reason) if c else None
        for b in self.baselines:
            s = summarize_times(b.times_s)
            row[f"{b.name}_median_s"] = s["median_s"]
            row[f"{b.name}_where"] = b.where if b.available else f"unavailable: {b.reason}"
            row[f"{b.name}_ratio"] = self.ratio(b)
        return row


def _peak(graph, spec: DeviceSpec, dtype_name: str) -> tuple[float, str]:
    """(FLOP/s, label) of the instruction kind the graph's math is bounded by: the matrix
    units at the dtype when it has a contraction, else the vector units at f32."""
    from hal.ops import Category, get_op
    from hal.ops.decompose import decompose_graph

    has_dot = any(get_op(n.op).category is Category.CONTRACTION
                  for n in decompose_graph(graph).nodes)
    inst = MathInstruction(MathKind.MATRIX, dtype_name) if has_dot else SIMT_F32
    return peak(spec, inst), ("matrix " if has_dot else "vector ") + inst.dtype


def touched_bytes(graph) -> tuple[int, list[str]]:
    """Compulsory bytes, except that a table read only by gathers counts the rows gathered.

    fusion.cost.compulsory_bytes reads every input once; an embedding lookup of a few
    tokens touches a few rows of a [V, D] table, and counting all of it would put the
    roofline orders of magnitude too far out.
    """
    from hal.fusion.cost import compulsory_bytes

    total, notes = compulsory_bytes(graph), []
    users = graph.users()
    for v in graph.inputs:
        uses = users.get(v.name, [])
        if uses and all(n.op == "gather" and n.inputs[0].name == v.name for n in uses):
            rows = sum(n.outputs[0].type.nbytes for n in uses)
            if rows < v.type.nbytes:
                total += rows - v.type.nbytes
                notes.append("gather: compulsory bytes count the table rows gathered, "
                             "not the whole table")
    return total, notes


def l2_flush_bytes(impl: Backend, spec: DeviceSpec) -> tuple[int, str | None]:
    """2 x the L2 the device reports (a backend with `l2_bytes()` on real hardware), else
    2 x the spec's; with a note when the two disagree (an H100 spec on an H200: 50 vs 60 MB)."""
    l2, note = spec.l2_bytes, None
    ask = getattr(impl, "l2_bytes", None)
    if Capability.REAL_HARDWARE in impl.capabilities and callable(ask):
        try:
            device = ask()
        except Exception:  # noqa: BLE001 - the spec's figure is the fallback
            device = None
        if device and device != spec.l2_bytes:
            note = (f"L2 flush sized from the device's L2 ({device / 1e6:.1f} MB), not the "
                    f"{spec.name} spec's ({spec.l2_bytes / 1e6:.1f} MB)")
        l2 = device or l2
    return 2 * l2, note


class DeviceFlusher:
    """Evicts L2 between timed samples: a device memset over one buffer of `nbytes`
    (allocated once, freed by `close`); a host buffer when the backend has no device
    memset (simulated and host backends)."""

    def __init__(self, impl: Backend, nbytes: int):
        self.impl, self.buffer, self.where = impl, None, "host"
        self._host: Callable[[], None] | None = None
        fill = getattr(impl, "fill_zero", None)
        if Capability.REAL_HARDWARE in impl.capabilities and callable(fill):
            self.buffer = impl.allocate(nbytes)
            self.where = "device"
        else:
            self._host = host_flusher(nbytes)

    def __call__(self) -> None:
        if self.buffer is not None:
            self.impl.fill_zero(self.buffer)
        elif self._host is not None:
            self._host()

    def close(self) -> None:
        if self.buffer is not None:
            buf, self.buffer = self.buffer, None
            self.impl.free(buf)


def _measure(case: BenchCase, impl: Backend, spec: DeviceSpec, repeat: int, warmup: int,
             flush_bytes: int, seed: int, notes: list[str]) -> tuple[list[float], str]:
    inputs = case.make_inputs(seed)
    prepare = getattr(impl, "prepare_graph", None)
    if callable(prepare):   # kernels compiled, buffers resident: time launches only
        fn = prepare(case.graph, inputs, spec)
    else:
        notes.append("timed around run_graph (includes transfers and host work)")
        fn = lambda: impl.run_graph(case.graph, inputs, spec)  # noqa: E731
    flush = DeviceFlusher(impl, flush_bytes) if flush_bytes else None
    try:
        if flush is None:
            times = impl.time(fn, repeat=repeat, warmup=warmup)
        else:
            if warmup:
                impl.time(fn, repeat=0, warmup=warmup)
            times = []
            for _ in range(repeat):
                flush()
                impl.synchronize()
                times += impl.time(fn, repeat=1, warmup=0)
    finally:
        for release in (getattr(fn, "free", None),       # a prepared graph's device buffers
                        flush.close if flush is not None else None):
            if callable(release):
                try:
                    impl.synchronize()
                    release()
                except Exception:  # noqa: BLE001 - best effort: never hide the first error
                    pass
    events = {Capability.TIMING, Capability.REAL_HARDWARE} <= impl.capabilities
    return times, MEASURED_EVENTS if events else MEASURED_HOST


def choose_model(case: BenchCase, model: str) -> str:
    """'sim' or 'cost' for a simulated backend: 'auto' simulates only small graphs."""
    if model not in MODELS:
        from hal.errors import HalError

        raise HalError(f"unknown model '{model}'", hint="one of " + ", ".join(MODELS))
    if model != "auto":
        return model
    small = total_elements(case) < SIM_MAX_ELEMENTS and case_flops_hint(case) < SIM_MAX_FLOPS
    return "sim" if small else "cost"


def run_case(case: BenchCase, backend: str, spec: DeviceSpec, *, repeat: int = 20,
             warmup: int = 3, flush_l2: bool = False, baselines: Sequence[str] = (),
             model: str = "auto", seed: int = 0,
             provenance: dict[str, Any] | None = None, copy_reference: bool = False,
             copy_cache: CopyReferences | None = None) -> BenchResult:
    """Benchmark `case` on `backend` for `spec`; see the module docstring for what is reported."""
    from hal.backends_registry import get_backend
    from hal.fusion import plan as fusion_plan

    impl = get_backend(backend, require_available=True)
    p = fusion_plan(case.graph, spec)
    peak, peak_kind = _peak(case.graph, spec, case.dtype)
    compulsory, notes = touched_bytes(case.graph)
    flush_bytes, flush_note = l2_flush_bytes(impl, spec) if flush_l2 else (0, None)
    if flush_note:
        notes.append(flush_note)
    modelled_bytes, kernels = p.modelled_bytes, len(p.groups)
    if Capability.SIMULATED in impl.capabilities:
        # only a simulator of kernels counts bytes; other simulated backends (the
        # reference interpreter) have no device time, so they get the cost model
        if Capability.KERNELS in impl.capabilities and choose_model(case, model) == "sim":
            r = impl.run_graph(case.graph, case.make_inputs(seed), spec, check=True,
                               compare_reference=False)
            stats = r.stats or []
            times = [sum(s.get("modelled_time_s", 0.0) for s in stats)]
            modelled_bytes = sum(s.get("global_bytes_read", 0) + s.get("global_bytes_written", 0)
                                 for s in stats)
            kernels, method = len(stats), MODELLED_SIM
        else:
            times, method = [p.modelled_time_s], MODELLED_COST
        notes.append(f"{method}: time from the {spec.name} spec, not measured")
    else:
        times, method = _measure(case, impl, spec, repeat, warmup, flush_bytes, seed, notes)
    target = "gpu" if Capability.REAL_HARDWARE in impl.capabilities else "host"
    base_results = [get_baseline(b).run(case, target, repeat, warmup, flush_bytes, seed)
                    for b in baselines]
    if target == "host" and any(b.available for b in base_results):
        notes.append("baselines ran on the host CPU: not comparable with "
                     + ("the modelled device time" if method.startswith("modelled")
                        else f"{backend} on {spec.name}"))
    copy_ref = None
    if copy_reference:
        cache = copy_cache if copy_cache is not None else CopyReferences(
            flush_bytes=flush_bytes)
        copy_ref = cache.get(compulsory, spec, copy_mode(impl, method, backend))
        if copy_ref.modelled:
            notes.append(f"copy reference modelled: the {spec.name} spec's DRAM bandwidth "
                         f"({copy_ref.GBps:.0f} GB/s), not a measured copy")
        elif not copy_ref.available:
            notes.append(f"copy reference {copy_ref.reason}")
    return BenchResult(case.name, case.op, [fmt_shape(s) for s in case.shapes], case.dtype,
                       backend, spec.name, method, times, compulsory, modelled_bytes,
                       p.flops, kernels, spec.dram_bandwidth, peak, peak_kind, base_results,
                       notes, dict(provenance or {}), copy_ref)


def copy_mode(impl: Backend, method: str, backend: str) -> str:
    """How the copy reference is obtained for a result: "measured", "modelled" or a reason."""
    if method.startswith("modelled") or Capability.SIMULATED in impl.capabilities:
        return "modelled"
    if Capability.REAL_HARDWARE in impl.capabilities:
        return "measured"
    return (f"not available: {backend} is timed on the host, and only a device copy "
            "(torch on a GPU) is measured")
