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

Lines that only plant self-test faults (`faults.active(...)`,
`options.fault(...)`-style hooks) are excluded: a clean run must not reach them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AREAS = {
    "lowering": ("hal/lowering",),
    "fusion": ("fusion",),
    "cpu_sim_codegen": ("backends/cpu_sim/codegen.py",),
}
SOURCES = ("hal/lowering", "fusion", "backends/cpu_sim")  # directories; AREAS pick files
OMIT = ("*/hal/lowering/faults.py", "*/hal/lowering/registry.py")
# Fault-planting hooks: reached only under --self-test, never by a clean run.
EXCLUDE = (r"faults\.active\(", r"\.fault\(", r"faults\.truncate", r"# self-test hook",
           r"in options\.faults", r"\.planted\(", r"pragma: no cover")
DEFAULT_DEVICES = ("h100-sxm", "mi300x")


def _area(path: str) -> str | None:
    rel = os.path.relpath(path, ROOT)
    for name, prefixes in AREAS.items():
        if any(rel == p or rel.startswith(p + "/") for p in prefixes):
            return name
    return None


def measure(cases: Sequence[tuple[str, str]], *, contexts: bool = False,
            progress: bool = False) -> dict:
    """Run (device, case id) pairs under coverage; returns figures and, with `contexts`,
    the branch arcs each case reached."""
    import coverage

    from hal.conformance.cases import get_case
    from hal.conformance.runner import execute

    data_file = tempfile.mktemp(prefix="halcov", suffix=".db")
    cov = coverage.Coverage(data_file=data_file, branch=True,
                            source=[str(ROOT / d) for d in SOURCES],
                            omit=list(OMIT))
    for pat in EXCLUDE:
        cov.exclude(pat)
    verdicts: dict[str, int] = {}
    t0 = time.perf_counter()
    cov.start()
    try:
        for i, (dev, cid) in enumerate(cases):
            if contexts:
                cov.switch_context(f"{dev}\t{cid}")
            r = execute(get_case(cid), "cpu_sim", dev)
            verdicts[r["verdict"]] = verdicts.get(r["verdict"], 0) + 1
            if progress and i % 200 == 0:
                print(f"  {i}/{len(cases)} {time.perf_counter() - t0:.0f}s", file=sys.stderr,
                      flush=True)
    finally:
        cov.stop()
    wall = time.perf_counter() - t0
    cov.save()
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cov.json_report(outfile=f.name, show_contexts=False)
        rep = json.loads(Path(f.name).read_text())
    areas: dict[str, dict] = {a: {"branches": 0, "covered": 0, "files": {}} for a in AREAS}
    universe: dict[str, set] = {}
    for path, fd in rep["files"].items():
        a = _area(path)
        if a is None:
            continue
        s = fd["summary"]
        areas[a]["branches"] += s["num_branches"]
        areas[a]["covered"] += s["covered_branches"]
        areas[a]["files"][os.path.relpath(path, ROOT)] = {
            "branches": s["num_branches"], "covered": s["covered_branches"],
            "missing": [list(x) for x in fd.get("missing_branches", [])]}
        if a == "lowering":
            universe[path] = {tuple(x) for x in fd.get("executed_branches", [])} | \
                {tuple(x) for x in fd.get("missing_branches", [])}
    for v in areas.values():
        v["percent"] = round(100.0 * v["covered"] / max(1, v["branches"]), 2)
    out = {"cases": len(cases), "wall_s": round(wall, 1), "verdicts": verdicts,
           "areas": areas}
    if contexts:
        out["per_case"] = _per_case_arcs(cov, universe)
    try:
        os.unlink(data_file)
    except OSError:
        pass
    return out


def _per_case_arcs(cov, universe: dict[str, set]) -> dict[str, set]:
    data = cov.get_data()
    per: dict[str, set] = {}
    for path, branches in universe.items():
        full = os.path.abspath(path)
        by_ctx = data.contexts_by_lineno(full)  # cheap filter: contexts touching the file
        ctxs = {c for cs in by_ctx.values() for c in cs if c}
        for ctx in ctxs:
            data.set_query_contexts([ctx])
            arcs = {(path, a, b) for a, b in (data.arcs(full) or ()) if (a, b) in branches}
            per.setdefault(ctx, set()).update(arcs)
        data.set_query_contexts(None)
    return per


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
    a = ap.parse_args(argv)
    pairs = select_pairs(a.device or DEFAULT_DEVICES, a.pattern, a.cases)
    res = measure(pairs, contexts=bool(a.minimal), progress=True)
    for name, v in res["areas"].items():
        print(f"{name:<16} branches {v['covered']:>5}/{v['branches']:<5} {v['percent']:6.2f}%")
        if name == "lowering":
            for f, fv in sorted(v["files"].items()):
                print(f"    {f:<40} {fv['covered']:>4}/{fv['branches']:<4}")
    print(f"{res['cases']} case runs in {res['wall_s']} s; verdicts {res['verdicts']}")
    if a.minimal:
        chosen = minimal_set(res.pop("per_case"))
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
