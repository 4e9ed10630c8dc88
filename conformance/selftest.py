"""The self-test: does the suite catch known bugs? (`hal conformance --self-test`)

Each fault in hal.lowering.faults is planted in turn (one at a time, through the
frozen `LoweringOptions` in `SuiteConfig.lowering`, which worker processes
receive with their config) and a
set of cases is run with it: by default `SELFTEST_CASES`, a fast, broad
subset, or the cases `-k` selects. A fault is caught when at least one case
fails, by a numeric mismatch ("numeric") or a simulator check ("race",
"out_of_bounds", ...); an error verdict (the fault broke lowering) counts as
"error". The same cases first run without any fault and must all pass, so a
catch is never a pre-existing failure. Expectations (EXPECTED_FAILURES) are
not applied here: the raw verdicts decide.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from hal.lowering import faults
from hal.lowering.options import LoweringOptions

from .cases import Case, all_cases, get_case, select
from .report import ReportWriter
from .runner import SuiteConfig, execute, plan_cases, run_suite

SELFTEST_CASES = (
    "elementwise/exp/bf16/33x257",
    "elementwise/add/f32/33x257",
    "elementwise/tanh/f16/31",
    "reduction/reduce_sum/f32/2x16384/long",
    "reduction/reduce_sum/bf16/257x33/cols",
    "reduction/reduce_sum/f32/33x257/rows",
    "reduction/reduce_max/f32/4x1025/rows1025",
    "contraction/matmul/f16-f32/33x257x31/out_f32",
    "contraction/matmul/f32/33x65x31",
    "layout/transpose_add/f32/5x33x65/perm201",
    "layout/broadcast_add/f32/33x257/row",
    "movement/transpose/f32/5x33x65",
    "fused/matmul_bias_gelu/f32/33x65x31",
    "fused/matmul_bias_relu/bf16/64x128x96",
    "fused/softmax/f32/33x257",
    "fused/layer_norm/bf16/33x257",
    "model/mlp/f32/8x64",
)


@dataclass
class FaultResult:
    fault: str
    description: str
    run: int = 0
    caught_by: list[tuple[str, str]] = field(default_factory=list)  # (case id, how)

    @property
    def caught(self) -> bool:
        return bool(self.caught_by)


def _how(r: dict[str, Any]) -> str:
    if r.get("check"):
        return str(r["check"])
    return "numeric" if r["verdict"] == "fail" else "error"


def selftest_cases(pattern: str | None = None) -> list[Case]:
    if pattern:
        return select(pattern)
    known = {c.id for c in all_cases()}
    return [get_case(i) for i in SELFTEST_CASES if i in known]


def _raw_results(cases: Sequence[Case], cfg: SuiteConfig) -> list[dict[str, Any]]:
    if cfg.workers <= 1:
        return [execute(c, cfg.backend, cfg.device, cfg.seed, lowering=cfg.lowering)
                for c in cases]
    w = ReportWriter(None, None)
    from . import expectations

    saved = expectations.EXPECTED_FAILURES.get(cfg.backend)
    expectations.EXPECTED_FAILURES[cfg.backend] = {}  # raw verdicts only
    try:
        run_suite(cfg, w, cases=cases)
    finally:
        if saved is not None:
            expectations.EXPECTED_FAILURES[cfg.backend] = saved
    return w.results


def run_selftest(cfg: SuiteConfig, cases: Sequence[Case] | None = None,
                 fault_names: Sequence[str] | None = None,
                 on_fault: Callable[[FaultResult], None] | None = None
                 ) -> tuple[list[dict[str, Any]], list[FaultResult]]:
    """(baseline failures, one FaultResult per fault)."""
    cases = list(cases) if cases is not None else selftest_cases(cfg.pattern)
    cases = plan_cases(cfg, cases)[0]  # applicable ones only
    base = [r for r in _raw_results(cases, cfg) if r["verdict"] in ("fail", "error")]
    clean = [c for c in cases if c.id not in {r["id"] for r in base}]
    out = []
    for name in fault_names or list(faults.FAULTS):
        fr = FaultResult(name, faults.FAULTS[name], run=len(clean))
        planted = replace(cfg, lowering=LoweringOptions.planting(name))
        for r in _raw_results(clean, planted):
            if r["verdict"] in ("fail", "error"):
                fr.caught_by.append((r["id"], _how(r)))
        out.append(fr)
        if on_fault:
            on_fault(fr)
    return base, out


def selftest_table(results: Sequence[FaultResult], device: str):
    from rich.table import Table

    t = Table(title=f"conformance self-test on cpu_sim / {device}: planted lowering faults")
    for col in ("fault", "planted bug", "caught", "by", "cases catching it (first 3)"):
        t.add_column(col)
    for fr in results:
        hows = sorted({h for _, h in fr.caught_by})
        t.add_row(fr.fault, fr.description,
                  f"{len(fr.caught_by)}/{fr.run}" if fr.caught else f"ESCAPED 0/{fr.run}",
                  ", ".join(hows), ", ".join(i for i, _ in fr.caught_by[:3]))
    return t
