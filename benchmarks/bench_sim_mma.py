"""cpu_sim speed of matrix-unit kernels: a 256^3 bf16 matmul (target <= 0.5 s per launch).

Usage: python benchmarks/bench_sim_mma.py [--size 256] [--devices h100-sxm,mi300x,...]
Prints, per device, the kernel's instruction and tiles, the wall time of the first launch
(including the translation to Python) and the best of three further launches (wall and
this process's CPU time: on a shared machine the CPU time is the fairer figure), and checks
the result against a float64 matmul."""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("HAL_MEASURE", "off")

from hal.backends.cpu_sim.simulator import simulate  # noqa: E402
from hal.devices.loader import load_spec  # noqa: E402
from hal.dtypes import bf16, cast  # noqa: E402
from hal.fusion.plan import plan  # noqa: E402
from hal.ir.builder import GraphBuilder  # noqa: E402
from hal.lowering.registry import lower_group  # noqa: E402


def bench(device: str, size: int) -> dict:
    b = GraphBuilder("mm")
    b.output(b.op("matmul", b.input("a", bf16, (size, size)), b.input("b", bf16, (size, size))))
    spec = load_spec(device)
    group = next(g for g in plan(b.build(), spec).groups if g.kind == "matmul")
    (k,) = lower_group(group, spec)
    rng = np.random.default_rng(0)
    a = cast(rng.standard_normal((size, size)), bf16)
    w = cast(rng.standard_normal((size, size)), bf16)
    out = np.zeros(size * size, bf16.np_dtype)
    by_value = {"a": a.ravel(), "b": w.ravel()}
    args = {p.name: by_value.get(k.meta.buffers[p.name], out) for p in k.params}
    t0 = time.perf_counter()
    st = simulate(k, args, spec)
    first = time.perf_counter() - t0
    runs, cpu = [], []
    for _ in range(3):
        t0, c0 = time.perf_counter(), time.process_time()
        simulate(k, args, spec)
        runs.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    want = a.astype(np.float64) @ w.astype(np.float64)
    err = float(np.abs(out.astype(np.float64).reshape(size, size) - want).max())
    plan_ = k.meta.plan
    tiles = plan_.tile_sizes
    stages = max((sh.stages for sh in k.shared), default=1)
    return {"device": device, "instruction": plan_.math.name or "-",
            "tiles": {x: tiles[x] for x in ("bm", "bn", "bk", "wm", "wn", "stages")}
            if "wm" in tiles else tiles,
            "pipeline": f"cp.async x{stages}" if stages > 1 else "register prefetch", "first_s": first, "best_s": min(runs), "best_cpu_s": min(cpu),
            "matrix_flops": sum(st.matrix_flops.values()), "bank_conflicts": st.bank_conflicts,
            "max_abs_err": err}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--devices", default="h100-sxm,h200,a100-sxm,mi300x,mi250x-gcd,scratch-npu")
    args = p.parse_args()
    for d in args.devices.split(","):
        r = bench(d, args.size)
        print(f"{r['device']:12s} {r['instruction']:55s} {r['pipeline']:18s} "
              f"first {r['first_s']:.3f} s  best {r['best_s']:.3f} s (cpu {r['best_cpu_s']:.3f} s)  "
              f"conflicts {r['bank_conflicts']}  err {r['max_abs_err']:.3g}  {r['tiles']}")


if __name__ == "__main__":
    main()
