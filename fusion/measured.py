"""Register feedback from the real compilers into fusion: `refine`, `measuring_compiler`.

The planner's register estimate (fusion.cost.estimate_registers) is a model; XLA's
priority fusion is known to misjudge register pressure. This post-pass asks the
compiler of the spec's vendor: it lowers every fused group of the final plan, compiles
all their kernels in ONE call (hal.render.check.check_kernels: one translation unit),
and when a group's kernel spills or needs more registers per thread than
`spec.max_registers_per_thread`, that group's node set is forbidden and the graph is
re-planned (the planner then stops one merge short). At most `MAX_ROUNDS` re-plans.
Each veto is a Decision naming the compiler ("not fused: ptxas (nvcc) reports 255
registers and 124 bytes of spills on sm_90a, ..."); a group that passed gets a reason
with its measured registers.

Which compiler measures a vendor is data (`MEASURING_COMPILERS`, first available that
targets the spec's arch wins): nvcc then NVRTC (both report ptxas -v) for "nvidia",
hipcc then clang-19 for "amd". `register_measuring_compilers` extends it.

plan(..., measure=...):
* "auto" (default): on when such a compiler is installed and the plan has at most
  `MAX_AUTO_GROUPS` (64) fused groups (one compile of a few seconds); off otherwise.
  The environment variable HAL_MEASURE=off turns "auto" off (e.g. for large test runs);
* "on": always (UnsupportedError when no compiler is available); a compiler name: that one;
* None or "off": never.
Measurements are memoised per group structure and spec in the process and cached on
disk by translation unit (hal.render.toolchain.CompileCache), so repeated plans of the
same model cost no compile; a cached entry is validated (`records_from_json`) and a
corrupt one is reported by name once and replaced. A compiler failure never breaks planning: the plan is kept
and `plan.measured` says why it was not measured.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict

from hal.devices.spec import DeviceSpec
from hal.errors import HalError, UnsupportedError
from hal.render.toolchain import CompileCache, ResourceRecord, records_from_json

from .group import FusedGroup, is_alias_group
from .plan import signature
from .result import Decision, FusionPlan

MEASURING_COMPILERS: dict[str, tuple[str, ...]] = {
    "nvidia": ("nvcc", "nvrtc"),
    "amd": ("hipcc", "clang-19"),
}
MAX_AUTO_GROUPS = 64
MAX_ROUNDS = 3
_DESCRIBE = {"nvcc": "ptxas (nvcc)", "nvrtc": "ptxas (NVRTC)"}
_MEMO: dict[tuple, list[ResourceRecord]] = {}

Forbidden = list[tuple[frozenset[str], str]]
__all__ = ["measure_groups", "measuring_compiler", "records_from_json", "refine",
           "register_measuring_compilers"]


def register_measuring_compilers(vendor: str, names: Sequence[str]) -> None:
    """Which registered compilers (hal.render.check.COMPILERS) measure `vendor`, in order."""
    MEASURING_COMPILERS[vendor] = tuple(names)


def measuring_compiler(spec: DeviceSpec) -> str | None:
    """The first available compiler that measures the spec's vendor and arch, or None."""
    from hal.render.check import COMPILERS, _load

    _load()
    for name in MEASURING_COMPILERS.get(spec.vendor, ()):
        entry = COMPILERS.get(name)
        if entry and (not entry.arches or spec.arch in entry.arches) and \
                entry.available() is None:
            return name
    return None


def fused_groups(groups: Sequence[FusedGroup]) -> list[FusedGroup]:
    return [g for g in groups if len(g.nodes) > 1 and not is_alias_group(g)]


def choose(measure: str | None, spec: DeviceSpec, n_fused: int) -> str | None:
    """The compiler to measure with, or None (see the module docstring)."""
    if measure in (None, "off"):
        return None
    if measure == "auto":
        if os.environ.get("HAL_MEASURE", "").lower() in ("0", "off", "no", "false"):
            return None
        return measuring_compiler(spec) if 0 < n_fused <= MAX_AUTO_GROUPS else None
    name = measuring_compiler(spec) if measure == "on" else measure
    if name is None:
        raise UnsupportedError(f"measure='on': no compiler measures {spec.vendor} {spec.arch}",
                               hint="install one of " + ", ".join(
                                   MEASURING_COMPILERS.get(spec.vendor, ())))
    return name


def measure_groups(groups: Sequence[FusedGroup], spec: DeviceSpec,
                   compiler: str) -> dict[str, list[ResourceRecord]]:
    """Group name -> the compiler's records of its kernels; one compile for all unmeasured."""
    from hal.lowering import lower_group
    from hal.render.check import COMPILERS, check_kernels
    from hal.render.cstyle import unique_names

    out: dict[str, list[ResourceRecord]] = {}
    todo: list[tuple[FusedGroup, tuple, list]] = []
    for g in groups:
        key = (signature(g), repr(spec), compiler)
        if key in _MEMO:
            out[g.name] = _MEMO[key]
            continue
        try:
            todo.append((g, key, lower_group(g, spec)))
        except HalError:
            continue  # the planner's lowering veto already judged it
    if not todo:
        return out
    flat = [k for _, _, ks in todo for k in ks]
    renamed = unique_names(flat, lambda i: f"m{i}_")
    source = COMPILERS[compiler].render(renamed, spec)
    cache = CompileCache(namespace="measured")
    ckey = cache.key("measured", compiler, spec.arch, source)
    hit = cache.get(ckey, validate=records_from_json)
    if hit is not None:
        records = records_from_json(hit)
    else:
        records = check_kernels(renamed, spec, [compiler], name="fusion-measure",
                                raise_on_limit=False)
        cache.put(ckey, json.dumps([r.to_dict() for r in records]).encode())
    by_kernel = {r.kernel: r for r in records}
    it = iter(renamed)
    for g, key, ks in todo:
        recs = [by_kernel[k.name] for k in (next(it) for _ in ks) if k.name in by_kernel]
        _MEMO[key] = recs
        out[g.name] = recs
    return out


def over_limit(rec: ResourceRecord, spec: DeviceSpec) -> bool:
    return rec.spill_bytes > 0 or (rec.registers is not None
                                   and rec.registers > spec.max_registers_per_thread)


def _sentence(rec: ResourceRecord, spec: DeviceSpec) -> str:
    who = _DESCRIBE.get(rec.compiler, rec.compiler)
    return (f"{who} reports {rec.registers} registers and {rec.spill_bytes} bytes of spills on "
            f"{rec.arch} ({spec.name} allows {spec.max_registers_per_thread} registers per "
            "thread, no spills)")


def spill_penalty_s(g: FusedGroup, rec: ResourceRecord, result: FusionPlan,
                    spec: DeviceSpec) -> float:
    """Modelled cost of a kernel's spills: every thread stores and reloads its spilled
    bytes once per kernel (local memory, served by L2), at the spec's L2 bandwidth."""
    from hal.lowering import lower_group

    try:
        kernels = lower_group(g, spec)
    except HalError:
        return float("inf")
    threads = sum(k.block * k.num_blocks for k in kernels)
    return 2.0 * rec.spill_bytes * threads / spec.l2_bandwidth


def refine(result: FusionPlan, replan: Callable[[Forbidden], FusionPlan],
           measure: str | None = "auto") -> FusionPlan:
    """Measure `result`'s fused groups and re-plan without the ones over the limits."""
    spec = result.spec
    compiler = choose(measure, spec, len(fused_groups(result.groups)))
    if compiler is None:
        return result
    forbidden: Forbidden = []
    vetoes: list[Decision] = []
    for round_ in range(MAX_ROUNDS + 1):
        fused = fused_groups(result.groups)
        try:
            recs = measure_groups(fused, spec, compiler)
        except HalError as e:  # a compiler problem must not break planning
            result.measured.append({"compiler": compiler, "error": e.message})
            break
        bad = []
        for g in fused:
            worst = max(recs.get(g.name, []), key=lambda r: (r.spill_bytes, r.registers or 0),
                        default=None)
            if worst is None:
                continue
            result.measured.append({"group": g.name, **asdict(worst), "round": round_})
            if over_limit(worst, spec):
                bad.append((g, worst, _sentence(worst, spec)))
            else:
                who = _DESCRIBE.get(compiler, compiler)
                g.reasons.append(f"{who}: {worst.registers} registers, no spills on "
                                 f"{worst.arch}")
        # Spills within the register limit are a cost, not a ban: keep the fused group
        # when its modelled time plus the spill traffic still beats the plan without it.
        still_bad = []
        for g, rec, why in bad:
            if rec.registers is not None and rec.registers > spec.max_registers_per_thread:
                still_bad.append((g, why))
                continue
            key = frozenset(o.name for n in g.nodes for o in n.outputs)
            alternative = replan(list(forbidden) + [(key, why)])
            penalty = spill_penalty_s(g, rec, result, spec)
            if result.modelled_time_s + penalty <= alternative.modelled_time_s:
                g.reasons.append(f"kept although {why}: spill traffic adds ~{penalty * 1e6:.1f} "
                                 f"us, splitting it costs "
                                 f"{(alternative.modelled_time_s - result.modelled_time_s) * 1e6:.1f}"
                                 " us")
            else:
                still_bad.append((g, why))
        bad = still_bad
        if not bad:
            break
        if round_ == MAX_ROUNDS:
            for g, why in bad:
                vetoes.append(Decision(g.name, g.name, True, f"kept after {MAX_ROUNDS} "
                                       f"re-plans although {why}"))
            break
        for g, why in bad:
            forbidden.append((frozenset(o.name for n in g.nodes for o in n.outputs), why))
            vetoes.append(Decision("+".join(g.ops[:4]), g.name, False, "not fused: " + why))
        measured = result.measured
        result = replan(list(forbidden))
        result.measured = measured + result.measured
    seen = {d.reason for d in result.decisions}
    result.decisions.extend(d for d in vetoes if d.reason not in seen)
    return result
