"""Does a plan fit in the device's memory? `memory_peak`, `check_device_memory`.

A spec's `dram_bytes` is the device memory a graph's tensors must share. This module owns
the one liveness model of a plan's tensors in device memory, and the error when they do
not fit (before this check a graph of any size was planned, compiled and "run" silently):

* graph inputs and constants live for the whole run;
* a value a group writes for later groups or as a graph output (`FusedGroup.outputs`)
  lives from the group that writes it to the last group that reads it (graph outputs to
  the end); values inside a fused group stay in registers or shared memory;
* a lone reshape (`is_alias_group`) is a view: it adds no bytes and extends the life of
  the buffer it views.

This is the least memory any executor of the plan needs. The GPU runner lays its buffers
out from the same spans (`live_spans`, placed by `hal.fusion.arena`), so it needs this
peak plus the arena's fragmentation, not one buffer per intermediate. `check_device_memory` raises `DeviceMemoryError` naming
the tensor (or the tensors live at the peak), its size, the spec's `dram_bytes` and the
fix; `fusion.plan.plan` and `fusion.prepare.groups_to_run` call it for every plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from hal.devices.spec import DeviceSpec
from hal.errors import DeviceMemoryError
from hal.ir.graph import Graph, Value

from .group import FusedGroup, is_alias_group


@dataclass(frozen=True)
class LiveTensor:
    name: str
    role: str          # "input", "constant", "output", "intermediate"
    type: str          # "f32[4096, 4096]"
    nbytes: int


@dataclass(frozen=True)
class MemoryPeak:
    """The most device memory the plan's tensors need at once, and where."""

    nbytes: int
    group: str | None                 # the group running at the peak (None: no groups)
    live: tuple[LiveTensor, ...]      # the tensors live then, largest first


def _nbytes(v: Value) -> int | None:
    return v.type.nbytes if v.type.is_static else None   # symbolic: sized after binding


def _describe(v: Value, role: str) -> LiveTensor:
    return LiveTensor(v.name, role, str(v.type), _nbytes(v) or 0)


@dataclass(frozen=True)
class LiveSpan:
    """One tensor's life in device memory: the groups (by index in run order) from the one
    that writes it (0 for inputs and constants) to the last one that reads it."""

    value: Value
    role: str          # "input", "constant", "output", "intermediate"
    first: int
    last: int

    @property
    def nbytes(self) -> int | None:
        return _nbytes(self.value)


def live_spans(graph: Graph, groups: Sequence[FusedGroup]) -> dict[str, LiveSpan]:
    """Every tensor the plan keeps in device memory, by value name, with its life. A lone
    reshape's output is not listed: it views (and extends the life of) its root."""
    n = len(groups)
    end = max(n - 1, 0)
    outputs = {v.name for v in graph.outputs}
    # value name -> (Value, role, first step, last step); an alias maps to its root
    spans: dict[str, list] = {}
    root: dict[str, str] = {}
    for v in graph.inputs:
        spans[v.name] = [v, "input", 0, end]
    for c in graph.constants:
        spans[c.value.name] = [c.value, "constant", 0, end]
    for i, g in enumerate(groups):
        for v in g.inputs:
            r = root.get(v.name, v.name)
            if r in spans:
                spans[r][3] = max(spans[r][3], i)
        if is_alias_group(g):
            src = g.nodes[0].inputs[0].name
            for v in g.outputs:
                root[v.name] = root.get(src, src)
                r = root[v.name]
                if r in spans and v.name in outputs:
                    spans[r][3] = end
            continue
        for v in g.outputs:
            if v.name not in spans:
                role = "output" if v.name in outputs else "intermediate"
                spans[v.name] = [v, role, i, end if v.name in outputs else i]
    # a graph output that is an input (or its view) lives to the end as well
    for v in graph.outputs:
        r = root.get(v.name, v.name)
        if r in spans:
            spans[r][3] = end
    return {name: LiveSpan(*sp) for name, sp in spans.items()}


def memory_peak(graph: Graph, groups: Sequence[FusedGroup]) -> MemoryPeak:
    """Peak of the live tensors' bytes over the groups, run in the order given."""
    spans = live_spans(graph, groups).values()
    best, at = _peak(spans, len(groups))
    live = sorted((_describe(sp.value, sp.role) for sp in spans
                   if sp.first <= at <= sp.last and sp.nbytes),
                  key=lambda t: (-t.nbytes, t.name))
    return MemoryPeak(best, groups[at].name if groups else None, tuple(live))


def _peak(spans: Iterable[LiveSpan], n_groups: int) -> tuple[int, int]:
    """(the most bytes live at once, the first group index where they are)."""
    end = max(n_groups - 1, 0)
    delta = [0] * (end + 2)
    for sp in spans:
        b = sp.nbytes
        if b:
            delta[sp.first] += b
            delta[sp.last + 1] -= b
    best, at, running = 0, 0, 0
    for i in range(end + 1):
        running += delta[i]
        if running > best:
            best, at = running, i
    return best, at


def fmt_size(nbytes: int) -> str:
    """Bytes in the largest binary unit that keeps at least 1 (and the exact count)."""
    for unit, shift in (("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift:
            return f"{nbytes / (1 << shift):.2f} {unit} ({nbytes} bytes)"
    return f"{nbytes} bytes"


def _where(spec: DeviceSpec) -> str:
    return f"{spec.name}'s dram_bytes ({fmt_size(spec.dram_bytes)}" + (
        f", {spec.source})" if spec.source else ")")


def check_device_memory(graph: Graph, groups: Sequence[FusedGroup], spec: DeviceSpec) -> None:
    """Raise DeviceMemoryError when one tensor, or the tensors live at the plan's peak, do
    not fit in `spec.dram_bytes`."""
    fix = ("use smaller shapes (batch, sequence length, hidden size), split the model, or a "
           f"device spec with more memory (dram_bytes: {spec.dram_bytes} in "
           f"{spec.source or spec.name})")
    graph_outs = {o.name for o in graph.outputs}
    values = [(v, "input") for v in graph.inputs] + \
        [(c.value, "constant") for c in graph.constants] + \
        [(v, "output" if v.name in graph_outs else "intermediate")
         for g in groups for v in g.outputs]
    # every tensor the peak can count is listed here: when all of them fit at once (most
    # plans), neither one tensor nor the peak exceeds the device
    if sum(_nbytes(v) or 0 for v, _role in values) <= spec.dram_bytes:
        return
    biggest = max(((v, role) for v, role in values if (_nbytes(v) or 0) > spec.dram_bytes),
                  key=lambda vr: _nbytes(vr[0]) or 0, default=None)
    if biggest is not None:
        v, role = biggest
        raise DeviceMemoryError(
            f"{role} tensor %{v.name} ({v.type}) of graph {graph.name} needs "
            f"{fmt_size(_nbytes(v) or 0)}, more than {_where(spec)}", hint=fix)
    # the live tensors are described only for the error (most plans fit)
    if _peak(live_spans(graph, groups).values(), len(groups))[0] <= spec.dram_bytes:
        return
    peak = memory_peak(graph, groups)
    if peak.nbytes > spec.dram_bytes:
        shown = ", ".join(f"%{t.name} ({t.role}, {t.type}, {fmt_size(t.nbytes)})"
                          for t in peak.live[:4])
        more = f" and {len(peak.live) - 4} more" if len(peak.live) > 4 else ""
        raise DeviceMemoryError(
            f"graph {graph.name} needs {fmt_size(peak.nbytes)} of device memory at its peak "
            f"(while {peak.group} runs: {shown}{more}), more than {_where(spec)}", hint=fix)
