"""Benchmark the CPU simulator on hand-written kernels (no lowering needed), checks on and off.

Kernels: a pointwise add over 16M f32 (block 256), a block-per-row sum of a
4096x4096 f32 matrix with warp shuffles and shared memory, for warp 32 and 64.
Prints a markdown table of process time, lanes per wave and peak Python memory.
Run: python benchmarks/bench_cpu_sim_kernels.py
"""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

from hal.backends.cpu_sim.simulator import simulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_cpu_sim import SPECS, pointwise_add, row_sum  # noqa: E402


def measure(kernel, args, spec, check: bool) -> tuple[float, float, int]:
    simulate(kernel, args, spec, check=check)            # translate and cache once
    tracemalloc.start()
    t0 = time.process_time()
    st = simulate(kernel, args, spec, check=check)
    dt = time.process_time() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return dt, peak / 2**20, st.lanes_per_wave


def main() -> None:
    rng = np.random.default_rng(0)
    n = 1 << 24
    x, y, o = (rng.standard_normal(n, np.float32) for _ in range(3))
    rows = cols = 4096
    m, out = rng.standard_normal(rows * cols, np.float32), np.zeros(rows, np.float32)
    cases = [("add 16M f32", pointwise_add(n, 256), {"x": x, "y": y, "o": o, "n": n}, 32,
              3 * n * 4)]
    for warp in (32, 64):
        cases.append((f"row_sum 4096^2 w{warp}", row_sum(rows, cols, 256, warp),
                      {"x": m, "out": out}, warp, rows * cols * 4))
    print("| kernel | check | time (s) | lanes/wave | peak MiB | tensor MiB |")
    print("|---|---|---|---|---|---|")
    for name, k, args, warp, nbytes in cases:
        for check in (True, False):
            dt, peak, lanes = measure(k, args, SPECS[warp], check)
            print(f"| {name} | {check} | {dt:.3f} | {lanes} | {peak:.0f} | {nbytes / 2**20:.0f} |")


if __name__ == "__main__":
    main()
