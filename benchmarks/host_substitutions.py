"""Which conformance cases a host backend runs on substitute kernels, and (optionally) run them.

The host shim does not emulate Hopper's warpgroup instructions (wgmma, TMA, thread-block
clusters), so on a spec that has them (h100-sxm) cuda-host runs the mma.sync kernel where
the GPU's own plan takes wgmma (hal.backends.host.backend.warpgroup_substitution). This
script plans every case (fused, and unfused where the case is marked so) and lists those
cases; with --run it runs them through conformance and prints the summary, whose
`substituted` count must equal the number listed.

Usage: python benchmarks/host_substitutions.py [--device h100-sxm] [--run] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from hal.backends.host.backend import warpgroup_substitution, without_warpgroup
from hal.conformance.cases import all_cases, case_spec
from hal.devices.loader import load_spec


def substituted_cases(device: str) -> dict[str, str]:
    """case id -> the substitution note, for every case the host runs on substitute kernels."""
    base = load_spec(device)
    found: dict[str, str] = {}
    for c in all_cases():
        full = case_spec(c, base)
        reduced = without_warpgroup(full)
        if reduced is full:
            continue
        g = c.graph()
        notes = [warpgroup_substitution(g, full, reduced, fuse=f)
                 for f in ((True, False) if c.unfused else (True,))]
        if any(notes):
            found[c.id] = "; ".join(n for n in notes if n)
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="h100-sxm")
    ap.add_argument("--backend", default="cuda-host")
    ap.add_argument("--run", action="store_true", help="run the listed cases")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", help="write the list (id -> note) here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    found = substituted_cases(args.device)
    print(f"{len(found)} cases on {args.device} run substitute kernels on the host "
          f"(planned in {time.perf_counter() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(found, f, indent=1)
    if not args.run or not found:
        return 0
    from hal.conformance.cases import get_case
    from hal.conformance.report import ReportWriter
    from hal.conformance.runner import SuiteConfig, run_suite

    w = ReportWriter(None, None, {"backend": args.backend, "device": args.device})
    t0 = time.perf_counter()
    s = run_suite(SuiteConfig(backend=args.backend, device=args.device, workers=args.workers),
                  w, cases=[get_case(i) for i in found])
    print({k: s[k] for k in ("total", "pass", "fail", "error", "skip", "substituted")},
          f"in {time.perf_counter() - t0:.0f} s")
    for r in w.results:
        if r["verdict"] != "pass" or not r.get("substituted"):
            print(r["id"], r["verdict"], r.get("substituted"), r.get("reason", "")[:300])
    return 0 if s["ok"] and s["substituted"] == len(found) else 1


if __name__ == "__main__":
    sys.exit(main())
