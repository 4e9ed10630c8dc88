"""Run conformance cases on a backend and device, in parallel, with incremental reports.

`run_case(case_id, backend, device, seed)` runs one case and never raises:
the backend's outputs are checked against the error model's interval
(hal.conformance.tolerance), cases marked `unfused` also run with fuse=False
and the two runs are compared, `compare_backend` adds a backend-vs-backend
comparison; a simulator check (race, out_of_bounds, ...) or any exception
becomes a "fail" or "error" verdict with the message.

`run_suite(...)` selects cases (-k), skips the non-applicable and UNSUPPORTED
ones, runs the rest in `workers` processes (2 by default: both cores here;
hal.conformance.workers starts and stops them explicitly; cpu_sim then runs each launch
in its case's process, see one_sim_process), classifies against
EXPECTED_FAILURES and streams every result to a ReportWriter; on
KeyboardInterrupt it stops the workers, finalizes the report with every result
received (shielded from a second Ctrl-C) and re-raises.
"""

from __future__ import annotations

import inspect
import os
import shlex
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from hal.backends.cpu_sim.parallel import JOBS_ENV
from hal.gc_budget import collecting_less
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions

from .cases import Case, case_spec, get_case, make_inputs, select
from .compare import check, diff
from .direct_reference import check_direct, values_read
from .expectations import classify, not_applicable, unsupported_reason
from .report import ReportWriter
from .tolerance import ModelOptions, graph_bounds
from .workers import run_parallel

COST = {"model": 0, "fused": 1, "contraction": 2, "reduction": 3}  # slow families first
# cpu_sim runs multiply-accumulate loops as float64 contractions unless exact_rounding is set
# (backends/cpu_sim/vectorize.py). Conformance runs the kernel IR as written, rounding every
# accumulation step: the fast form hides a multiply-accumulate that keeps too few bits (the
# self-test's sim_mac_bf16_accumulator escapes it) and makes cpu_sim's error profile up to ~10x
# better than per-step f32 sums, so a correct GPU kernel would read as a precision regression
# (benchmarks/results/issue-21.md). It costs about 2% of the suite's CPU time.
EXACT_ROUNDING = True


@dataclass
class SuiteConfig:
    backend: str = "cpu_sim"
    device: str = "h100-sxm"
    pattern: str | None = None
    seed: int = 0
    workers: int = 2
    compare_backend: str | None = None
    unfused: bool = True
    batch: int = 6
    lowering: LoweringOptions = DEFAULT_OPTIONS  # the self-test's planted faults travel here
    strict: bool = False          # a precision regression against cpu_sim fails the case
    profile: bool | None = None   # compare error profiles with cpu_sim (None: when not cpu_sim)


def repro_command(backend: str, device: str, case_id: str, seed: int) -> str:
    cmd = f"hal conformance --backend {backend} --device {device} -k {shlex.quote(case_id)}"
    return cmd + (f" --seed {seed}" if seed else "")


def _run_graph_params(backend) -> frozenset[str]:
    """The keyword parameters of `backend.run_graph` (inspected once per backend class and
    function: inspect.signature costs about 0.2 ms, and every case asks twice or more)."""
    fn = getattr(backend.run_graph, "__func__", backend.run_graph)
    key = (type(backend), fn)
    if key not in _PARAMS:
        _PARAMS[key] = frozenset(inspect.signature(backend.run_graph).parameters)
    return _PARAMS[key]


_PARAMS: dict[tuple, frozenset[str]] = {}


def _run_graph(backend, graph, inputs, spec, lowering: LoweringOptions = DEFAULT_OPTIONS,
               notes: list[str] | None = None, **opts) -> dict[str, np.ndarray]:
    """The backend's outputs; a substitution the backend reports (`report["substituted"]`:
    kernels it ran in place of the device's, e.g. the host shim's mma.sync for wgmma) is
    appended to `notes`."""
    params = _run_graph_params(backend)
    accepted = {k: v for k, v in opts.items() if k in params}
    if lowering != DEFAULT_OPTIONS:
        if "lowering_options" not in params:
            from hal.errors import UnsupportedError

            raise UnsupportedError(f"backend {backend.name} takes no lowering options "
                                   f"(planted faults {sorted(lowering.faults)})",
                                   hint="run the self-test on cpu_sim")
        accepted["lowering_options"] = lowering
    if "compare_reference" in params:
        accepted["compare_reference"] = False
    if "exact_rounding" in params:
        accepted["exact_rounding"] = EXACT_ROUNDING
    if "kernel_stats" in params:   # only the outputs and the report are read here
        accepted["kernel_stats"] = False
    result = backend.run_graph(graph, inputs, spec, **accepted)
    note = (result.report or {}).get("substituted")
    if notes is not None and note and note not in notes:
        notes.append(note)
    return result.outputs


def _merge(comps: dict[str, Any]) -> dict[str, Any]:
    """Case-level numbers: the worst over its outputs."""
    vals = list(comps.values())
    if not vals:
        return {"max_abs": 0.0, "max_rel": 0.0, "bound": 0.0, "used": 0.0,
                "ulp": {"p50": 0.0, "p99": 0.0, "max": 0.0}}
    return {"max_abs": max(c.max_abs for c in vals), "max_rel": max(c.max_rel for c in vals),
            "bound": max(c.bound for c in vals), "used": max(c.used for c in vals),
            "ulp": {"p50": max(c.ulp_p50 for c in vals), "p99": max(c.ulp_p99 for c in vals),
                    "max": max(c.ulp_max for c in vals)}}


def execute(case: Case, backend_name: str, device: str, seed: int = 0,
            compare_backend: str | None = None, unfused: bool = True,
            lowering: LoweringOptions = DEFAULT_OPTIONS, *,
            strict: bool = False, profile: bool | None = None,
            device_spec: Any = None) -> dict[str, Any]:
    """Run one case; returns its result record with the raw verdict (pass/fail/error).
    `device_spec`: `device` loaded already (the suite's, see _suite_spec), else loaded here.
    `lowering` (planted self-test faults) applies to the backend under test only.
    `profile` (default: on for any backend but cpu_sim) also runs cpu_sim on the same
    plan and records both error profiles; `strict` fails a precision regression
    (hal.conformance.error_profile)."""
    from hal.backends.cpu_sim.checks import SimulationError
    from hal.backends_registry import get_backend
    from hal.devices.loader import load_spec

    t0, c0 = time.perf_counter(), time.process_time()
    rec: dict[str, Any] = {"id": case.id, "op": case.op, "kind": case.kind,
                           "dtypes": list(case.dtypes), "shape": case.shape, "device": device,
                           "backend": backend_name, "dist": case.dist,
                           "repro": repro_command(backend_name, device, case.id, seed)}
    try:
        spec = case_spec(case, device_spec if device_spec is not None else load_spec(device))
        backend = get_backend(backend_name)
        graph = case.graph()
        inputs = make_inputs(graph, case.dist, case.seed + seed)
        model = ModelOptions.from_faults(lowering.faults)  # tolerance faults of the self-test
        if "allow_tf32" in spec.capabilities:   # --allow-tf32: f32 matmuls may read TF32
            model = replace(model, tf32_inputs=True)
        prim, all_bounds = graph_bounds(graph, inputs, model, keep=lambda prim: {
            p.name for p in prim.outputs} | values_read(graph, prim))
        bounds = {o.name: all_bounds[p.name]
                  for o, p in zip(graph.outputs, prim.outputs, strict=True)}
        notes: list[str] = []   # what the backend ran in place of the device's kernels
        try:
            outs = _run_graph(backend, graph, inputs, spec, lowering, notes)
        except SimulationError as e:
            rec.update(verdict="fail", reason=f"simulator check {e.kind}: {e.message}"[:400],
                       check=e.kind, seconds=time.perf_counter() - t0,
                       cpu_seconds=round(time.process_time() - c0, 4), **_merge({}))
            return rec
        comps = {name: check(outs[name], b, model.signed_zero) for name, b in bounds.items()}
        rec.update(_merge(comps))
        rec["outputs"] = {k: c.to_dict() for k, c in comps.items()}
        bad = [k for k, c in comps.items() if not c.ok]
        reason = "; ".join(f"%{k}: {comps[k].bad}/{comps[k].numel} outside the bound "
                           f"{comps[k].note}".strip() + (f" worst {comps[k].worst}"
                                                         if comps[k].worst else "")
                           for k in bad)
        dcomp = check_direct(graph, prim, all_bounds, outs)
        if dcomp:
            rec["direct"] = {k: c.to_dict() for k, c in dcomp.items()}
            db = [k for k, c in dcomp.items() if not c.ok]
            for k in db:
                w = dcomp[k].worst
                reason += (f"; %{k}: {dcomp[k].bad}/{dcomp[k].checked} beyond twice the bound "
                           f"from the direct {dcomp[k].op} formula (worst {w})")
            bad += db
        if case.unfused and unfused and "fuse" in _run_graph_params(backend):
            outs2 = _run_graph(backend, graph, inputs, spec, lowering, notes, fuse=False)
            d = {k: diff(outs[k], outs2[k], b) for k, b in bounds.items()}
            rec["unfused"] = {k: c.to_dict() for k, c in d.items()}
            ub = [k for k, c in d.items() if not c.ok]
            if ub:
                reason += "; fused vs unfused differ beyond the bound on " + ", ".join(ub)
                bad += ub
        if notes:   # the case passed or failed on substitute kernels: never silently
            rec["substituted"] = "; ".join(notes)
        if profile if profile is not None else backend_name != "cpu_sim":
            from .error_profile import compare_profiles

            sim = _run_graph(get_backend("cpu_sim"), graph, inputs, spec)
            prof = compare_profiles(comps, {k: check(sim[k], b) for k, b in bounds.items()})
            rec["profile"] = prof
            reg = [k for k, p in prof.items() if p["regression"]]
            if reg:
                msg = "; ".join(f"%{k}: precision regression against cpu_sim: "
                                f"{prof[k]['regression']}" for k in reg)
                rec["precision_regression"] = msg
                if strict:
                    reason += "; " + msg
                    bad += reg
        if case.defect:
            from .canaries import judge_canary

            verdict, why = judge_canary(case, outs, bounds, not bad, inputs, model.signed_zero)
            rec.update(verdict=verdict, reason=(reason + "; " + why).strip("; "))
            rec["seconds"] = round(time.perf_counter() - t0, 4)
            rec["cpu_seconds"] = round(time.process_time() - c0, 4)
            return rec
        if compare_backend:
            other = _run_graph(get_backend(compare_backend), graph, inputs, spec)
            d = {k: diff(outs[k], other[k], b) for k, b in bounds.items()}
            rec["vs_backend"] = {"backend": compare_backend, **{k: c.to_dict()
                                                               for k, c in d.items()}}
            ob = [k for k, c in d.items() if not c.ok]
            if ob:
                reason += f"; vs {compare_backend} differ beyond the bound on " + ", ".join(ob)
                bad += ob
        rec.update(verdict="fail" if bad else "pass", reason=reason.strip("; "))
    except Exception as e:  # every per-case problem is a verdict, never a crash
        rec.update(verdict="error", reason=f"{type(e).__name__}: {e}"[:400],
                   detail=traceback.format_exc(limit=6)[-2000:])
        rec.setdefault("max_abs", 0.0)
    rec["seconds"] = round(time.perf_counter() - t0, 4)
    rec["cpu_seconds"] = round(time.process_time() - c0, 4)  # wall time inflates under load
    return rec


def _suite_spec(device: str):
    """The suite's device spec, loaded once per process: load_spec checks the file's path
    and modification time on every call (~0.2 ms, stat and realpath calls), and a
    suite runs every case on the spec it started with. None where it does not load:
    execute then loads it itself and makes the failure each case's error verdict."""
    from hal.devices.loader import load_spec

    if device not in _SUITE_SPECS:
        try:
            _SUITE_SPECS[device] = load_spec(device)
        except Exception:
            return None
    return _SUITE_SPECS[device]


_SUITE_SPECS: dict[str, Any] = {}


def _worker(ids: list[str], cfg: SuiteConfig) -> list[dict[str, Any]]:
    return [execute(get_case(i), cfg.backend, cfg.device, cfg.seed, cfg.compare_backend,
                    cfg.unfused, cfg.lowering, strict=cfg.strict, profile=cfg.profile,
                    device_spec=_suite_spec(cfg.device))
            for i in ids]


def plan_cases(cfg: SuiteConfig, cases: Iterable[Case] | None = None
               ) -> tuple[list[Case], list[dict[str, Any]]]:
    """(cases to run, skip records) for this backend and device."""
    from hal.backends_registry import get_backend
    from hal.devices.loader import load_spec

    backend = get_backend(cfg.backend)
    spec = load_spec(cfg.device)
    run, skipped = [], []
    for c in (select(cfg.pattern) if cases is None else cases):
        why = not_applicable(c, backend, spec) or unsupported_reason(cfg.backend, c.id, cfg.device)
        if why:
            skipped.append({"id": c.id, "op": c.op, "kind": c.kind, "dtypes": list(c.dtypes),
                            "shape": c.shape, "device": cfg.device, "backend": cfg.backend,
                            "verdict": "skip", "reason": why, "seconds": 0.0,
                            "repro": repro_command(cfg.backend, cfg.device, c.id, cfg.seed)})
        else:
            run.append(c)
    run.sort(key=lambda c: COST.get(c.id.split("/")[0], 9))
    return run, skipped


def run_suite(cfg: SuiteConfig, writer: ReportWriter, *,
              on_result: Callable[[dict[str, Any]], None] | None = None,
              cases: Iterable[Case] | None = None) -> dict[str, Any]:
    """Run the selected cases; every result goes to `writer` (and `on_result`)."""
    run, skipped = plan_cases(cfg, cases)

    def emit(r: dict[str, Any]) -> None:
        if r["verdict"] != "skip":
            r["verdict"], why = classify(cfg.backend, r["id"], r["verdict"], cfg.device)
            if why:
                r["reason"] = why + ("; " + r["reason"] if r.get("reason") else "")
        writer.add(r)
        if on_result:
            on_result(r)

    for r in skipped:
        emit(r)
    ids = [c.id for c in run]
    try:
        if cfg.workers <= 1 or len(ids) <= cfg.batch:
            with one_sim_process(), collecting_less():
                for i in ids:
                    emit(_worker([i], cfg)[0])
        else:
            _parallel(ids, cfg, emit)
    except KeyboardInterrupt:
        writer.finalize(complete=False)
        raise
    return writer.finalize(complete=True)


def start_method(backend: str) -> str:
    """How worker processes start: "fork" (fast) for simulated backends; "spawn" for a
    backend on real hardware, since a GPU driver initialised in the parent (its
    availability probe calls cuInit / hipInit) must not be inherited through fork."""
    from hal.backend import Capability
    from hal.backends_registry import get_backend

    if os.name != "posix":
        return "spawn"
    try:
        real = Capability.REAL_HARDWARE in get_backend(backend).capabilities
    except Exception:  # an unknown or broken backend fails in the workers, with its reason
        real = True
    return "spawn" if real else "fork"


@contextmanager
def one_sim_process() -> Iterator[None]:
    """cpu_sim runs each launch in this process while cases run here, unless $HAL_SIM_JOBS
    says otherwise. A case's launches are small: forking simulator workers for them
    cost more than it saved (the whole suite in one process, mi300x: 146 s of CPU with
    a fork per multi-wave launch, 41 s of it system time; the attention cases: a fork
    of this ~1 GB process and the page faults after it cost ~0.1 s of CPU, against a
    multi-wave launch's ~35 ms of simulation on average)."""
    had = os.environ.get(JOBS_ENV)
    if had is None:
        os.environ[JOBS_ENV] = "1"
    try:
        yield
    finally:
        if had is None:
            os.environ.pop(JOBS_ENV, None)


def _run_one(case_id: str, cfg: SuiteConfig) -> dict[str, Any]:
    # in a suite worker: the suite's workers already share the cores, so cpu_sim runs
    # each launch in this process unless HAL_SIM_JOBS says otherwise
    os.environ.setdefault(JOBS_ENV, "1")
    return _worker([case_id], cfg)[0]   # one definition of a case's run, in or out of process


def _crashed(cfg: SuiteConfig) -> Callable[[str, str], dict[str, Any]]:
    def record(case_id: str, why: str) -> dict[str, Any]:
        return {"id": case_id, "verdict": "error", "op": "", "kind": "", "reason": why,
                "device": cfg.device, "backend": cfg.backend,
                "repro": repro_command(cfg.backend, cfg.device, case_id, cfg.seed)}
    return record


def _preload(cfg: SuiteConfig) -> None:
    """Import, before forking the workers, what a case imports on first use (the case's
    inputs, decompositions, checks and the backend's run path: `preload()` where the
    backend has one), so that the workers share it instead of each importing it again
    inside its first case."""
    import numpy.random  # noqa: F401

    import hal.backends.cpu_sim.checks  # noqa: F401
    import hal.ops.decompose  # noqa: F401
    from hal.backends_registry import get_backend

    from . import random_graphs  # noqa: F401

    try:
        preload = getattr(get_backend(cfg.backend), "preload", None)
    except Exception:   # an unknown or broken backend fails in the workers, with its reason
        return
    if preload is not None:
        preload()


def _parallel(ids: list[str], cfg: SuiteConfig, emit) -> None:
    import multiprocessing as mp

    ctx = mp.get_context(start_method(cfg.backend))
    if ctx.get_start_method() == "fork":
        _preload(cfg)
    run_parallel(ids, cfg.batch, cfg.workers, ctx, _run_one, cfg, emit, _crashed(cfg))
