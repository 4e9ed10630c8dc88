"""Branch coverage that the conformance suite ALONE reaches in hal's lowering (issue 21).

    python benchmarks/conformance_coverage.py [--device h100-sxm --device mi300x]
        [-k PATTERN | --cases FILE] [--json out.json] [--minimal FILE] [--min PCT]

Runs the selected conformance cases in this process (one worker, cpu_sim) under
coverage.py with branch measurement and prints, per measured area, the branches
reached: `hal/lowering/` (the figure the issue's target is about), `fusion/`
and cpu_sim's code generator (`backends/cpu_sim/codegen.py`). Each case is
recorded as a coverage context, so `--minimal FILE` writes a greedy smallest
set of case ids (per device: `device<TAB>case id`) that reaches every lowering
branch the whole selection reaches; CI re-measures that set
(tests/test_conformance_coverage.py) and holds the figure above
`COVERAGE_FLOOR`, so the figure cannot silently fall.

Lines that only plant self-test faults (`options.fault(...)` hooks) are excluded:
a clean run must not reach them (hal.conformance.coverage).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEVICES = ("h100-sxm", "mi300x")


def lower_case(case, device: str) -> dict:
    """The lowering calls conformance makes for `case` on cpu_sim, without simulating:
    plan (fuse=True) and lower every group on the case's spec, and the same unfused when the
    case compares fused against unfused. Simulation, the reference and the comparison
    execute no code of hal/lowering, so this reaches the same lowering branches as
    `execute` (tests/test_conformance_coverage.py holds the two equal on a sample)."""
    from hal.conformance.cases import case_spec
    from hal.devices.loader import load_spec
    from hal.fusion.group import is_alias_group
    from hal.fusion.prepare import groups_to_run
    from hal.lowering import lower_group

    t0 = time.perf_counter()
    rec = {"id": case.id, "device": device}
    try:
        spec = case_spec(case, load_spec(device))
        graph = case.graph()
        for fuse in (True, False) if case.unfused else (True,):
            _prim, groups = groups_to_run(graph, spec, fuse=fuse, who="cpu_sim")
            for g in groups:
                if not is_alias_group(g):
                    lower_group(g, spec)
        rec["verdict"] = "lowered"
    except Exception as e:  # the full run would report it as an error verdict
        rec.update(verdict="error", reason=f"{type(e).__name__}: {e}"[:400])
    rec["seconds"] = round(time.perf_counter() - t0, 4)
    return rec


def measure(cases: Sequence[tuple[str, str]], *, contexts: bool = False,
            progress: bool = False, records: list | None = None,
            lower_only: bool = False) -> dict:
    """Run (device, case id) pairs under coverage (hal.conformance.coverage); returns
    figures and, with `contexts`, the branch arcs each case reached. `records`: each
    case's result (id, device, verdict, bound, used, max_abs, seconds) is appended there.
    `lower_only`: plan and lower each case as conformance does, without simulating
    (`lower_case`; the lowering figure is the same, the cpu_sim_codegen one is not measured)."""
    from hal.conformance.cases import get_case
    from hal.conformance.coverage import measuring
    from hal.conformance.runner import execute

    verdicts: dict[str, int] = {}
    t0 = time.perf_counter()
    with measuring() as run:
        for i, (dev, cid) in enumerate(cases):
            if contexts:
                run.cov.switch_context(f"{dev}\t{cid}")
            r = lower_case(get_case(cid), dev) if lower_only else \
                execute(get_case(cid), "cpu_sim", dev)
            verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
            if records is not None:
                records.append({k: r.get(k) for k in ("id", "device", "verdict", "bound",
                                                      "used", "max_abs", "seconds",
                                                      "reason")})
            if progress and i % 200 == 0:
                print(f"  {i}/{len(cases)} {time.perf_counter() - t0:.0f}s", file=sys.stderr,
                      flush=True)
    wall = time.perf_counter() - t0
    out = {"cases": len(cases), "wall_s": round(wall, 1), "verdicts": verdicts,
           "areas": run.report()}
    if contexts:
        out["per_case"] = run.per_context_arcs()
    run.close()
    return out


def minimal_set(per_case: dict[str, set]) -> list[str]:
    """Greedy set cover: few contexts that reach every reached lowering branch."""
    left = set().union(*per_case.values()) if per_case else set()
    chosen: list[str] = []
    while left:
        best = max(sorted(per_case), key=lambda c: len(per_case[c] & left))
        gain = per_case[best] & left
        if not gain:
            break
        chosen.append(best)
        left -= gain
    return chosen


def select_pairs(devices: Sequence[str], pattern: str | None, cases_file: str | None
                 ) -> list[tuple[str, str]]:
    from hal.conformance.runner import SuiteConfig, plan_cases

    if cases_file:
        pairs = []
        for line in Path(cases_file).read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                dev, cid = line.split("\t")
                pairs.append((dev, cid))
        return pairs
    pairs = []
    for dev in devices:
        run, _ = plan_cases(SuiteConfig(device=dev, pattern=pattern))
        pairs += [(dev, c.id) for c in run]
    return pairs


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", action="append", default=None,
                    help="device spec (repeatable; default h100-sxm and mi300x)")
    ap.add_argument("-k", dest="pattern", default=None)
    ap.add_argument("--cases", default=None, help="file of `device<TAB>case id` lines")
    ap.add_argument("--json", default=None)
    ap.add_argument("--minimal", default=None, help="write a minimal covering case list here")
    ap.add_argument("--min", type=float, default=None, help="exit 1 below this lowering %%")
    ap.add_argument("--results", default=None, help="write each case's result here (JSON)")
    ap.add_argument("--arcs", default=None, help="write the lowering branch arcs each case "
                    "reached here (JSON: {device<TAB>case id: [[file, from, to], ...]})")
    ap.add_argument("--lower-only", action="store_true",
                    help="plan and lower each case as conformance does, without simulating "
                         "(same lowering branches, minutes instead of an hour)")
    a = ap.parse_args(argv)
    pairs = select_pairs(a.device or DEFAULT_DEVICES, a.pattern, a.cases)
    records: list = []
    res = measure(pairs, contexts=bool(a.minimal or a.arcs), progress=True, records=records,
                  lower_only=a.lower_only)
    if a.results:
        Path(a.results).write_text(json.dumps(records))
    for name, v in res["areas"].items():
        print(f"{name:<16} branches {v['covered']:>5}/{v['branches']:<5} {v['percent']:6.2f}%")
        if name == "lowering":
            for f, fv in sorted(v["files"].items()):
                print(f"    {f:<40} {fv['covered']:>4}/{fv['branches']:<4}")
    print(f"{res['cases']} case runs in {res['wall_s']} s; verdicts {res['verdicts']}")
    per_case = res.pop("per_case", None)
    if a.arcs:
        rel = {c: sorted([os.path.relpath(os.path.abspath(f), ROOT), x, y] for f, x, y in arcs)
               for c, arcs in per_case.items()}
        Path(a.arcs).write_text(json.dumps(rel))
    if a.minimal:
        chosen = minimal_set(per_case)
        Path(a.minimal).write_text("# minimal conformance cases reaching every lowering branch"
                                   " the full suite reaches (benchmarks/conformance_coverage.py)"
                                   "\n" + "\n".join(chosen) + "\n")
        print(f"minimal covering set: {len(chosen)} case runs -> {a.minimal}")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1))
    if a.min is not None and res["areas"]["lowering"]["percent"] < a.min:
        print(f"lowering branch coverage {res['areas']['lowering']['percent']}% < {a.min}%")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
