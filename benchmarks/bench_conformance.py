"""Wall time of the whole conformance suite on cpu_sim, per device spec.

    python benchmarks/bench_conformance.py [--devices h100-sxm,mi300x,scratch-npu]
                                           [--workers 2] [--report-dir DIR]

Prints, per device: cases run / skipped, verdict counts and wall seconds (the
issue's budget: <= 600 s per device on the 2-core build machine, 2 workers).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from hal.conformance.report import ReportWriter
from hal.conformance.runner import SuiteConfig, run_suite


def bench(device: str, workers: int, report_dir: Path | None) -> dict:
    rd = report_dir / device if report_dir else None
    w = ReportWriter(rd / "report.json" if rd else None, rd / "junit.xml" if rd else None,
                     {"backend": "cpu_sim", "device": device})
    t0 = time.perf_counter()
    summary = run_suite(SuiteConfig(device=device, workers=workers), w)
    wall = time.perf_counter() - t0
    slow = sorted(w.results, key=lambda r: -float(r.get("seconds", 0)))[:3]
    return {"device": device, "wall_s": wall, **{k: summary[k] for k in
            ("total", "pass", "fail", "error", "xfail", "xpass", "skip")},
            "slowest": [(r["id"], round(float(r.get("seconds", 0)), 2)) for r in slow]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="h100-sxm,mi300x,scratch-npu")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--report-dir", type=Path, default=None)
    a = ap.parse_args()
    print(f"cpu_sim conformance, {a.workers} workers, {os.cpu_count()} cores")
    print(f"{'device':<14}{'cases':>7}{'run':>7}{'pass':>7}{'fail':>6}{'error':>6}"
          f"{'xfail':>6}{'xpass':>6}{'skip':>6}{'wall s':>9}")
    for dev in a.devices.split(","):
        r = bench(dev, a.workers, a.report_dir)
        run = r["total"] - r["skip"]
        print(f"{dev:<14}{r['total']:>7}{run:>7}{r['pass']:>7}{r['fail']:>6}{r['error']:>6}"
              f"{r['xfail']:>6}{r['xpass']:>6}{r['skip']:>6}{r['wall_s']:>9.1f}", flush=True)
        print(f"{'':<14}slowest: {r['slowest']}")


if __name__ == "__main__":
    main()
