"""Benchmark the CPU simulator on lowered kernels: tiled matmul+relu and fused softmax.

Targets (h100-sxm spec): 256x256x256 f32 matmul+relu <= 0.5 s; 4096x4096 f32
softmax as one fused row kernel <= 3 s with peak Python memory (tracemalloc)
<= 4x the tensor bytes. Three sizes of each show how time grows. Prints a
markdown table. Run: python benchmarks/bench_cpu_sim.py
"""

from __future__ import annotations

import time
import tracemalloc

import numpy as np

from hal.backends.cpu_sim.simulator import simulate
from hal.devices.loader import load_spec
from hal.dtypes import f32
from hal.fusion.group import make_group
from hal.ir import GraphBuilder
from hal.lowering import lower_group


def matmul_relu(n: int):
    b = GraphBuilder("mm")
    x, w = b.input("x", f32, (n, n)), b.input("w", f32, (n, n))
    y = b.op("matmul", x, w)
    b.output(b.op("maximum", y, b.op("full", shape=[n, n], value=0.0, dtype=f32), name="y"))
    return b.build()


def softmax(rows: int, cols: int):
    b = GraphBuilder("softmax")
    x = b.input("x", f32, (rows, cols))
    m = b.op("reduce_max", x, axes=[1], keepdims=True)
    e = b.op("exp", b.op("sub", x, b.op("broadcast_to", m, shape=[rows, cols])))
    s = b.op("reduce_sum", e, axes=[1], keepdims=True)
    b.output(b.op("div", e, b.op("broadcast_to", s, shape=[rows, cols]), name="y"))
    return b.build()


# Lanes per simulated wave: smaller waves keep temporaries in cache; 2^17 was fastest here
# and keeps the softmax's peak memory under its input + output bytes.
MAX_LANES = 1 << 17


def run_one(graph, spec, check_fn, measure_memory=False):
    (k,) = lower_group(make_group(graph, graph.nodes, graph.name), spec)
    rng = np.random.default_rng(0)
    args = {}
    for v in graph.inputs:
        args[k.meta.buffers and next(p for p, n in k.meta.buffers.items() if n == v.name)] \
            = rng.standard_normal(int(np.prod(v.shape))).astype(np.float32)
    out = graph.outputs[0]
    outp = next(p for p, n in k.meta.buffers.items() if n == out.name)
    args[outp] = np.zeros(int(np.prod(out.shape)), np.float32)
    simulate(k, {p: a.copy() for p, a in args.items()}, spec, max_lanes=MAX_LANES)  # warm the translation cache
    tensor_bytes = sum(a.nbytes for a in args.values())
    if measure_memory:
        tracemalloc.start()
    t0 = time.perf_counter()
    st = simulate(k, args, spec, max_lanes=MAX_LANES)
    wall = time.perf_counter() - t0
    peak = 0
    if measure_memory:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    ins = [args[next(p for p, n in k.meta.buffers.items() if n == v.name)] for v in graph.inputs]
    ok = check_fn(ins, args[outp])
    return k, st, wall, peak, tensor_bytes, ok


def main() -> None:
    spec = load_spec("h100-sxm")
    rows = ["| case | kernel | grid x block | wall s | target | peak mem / tensor bytes | "
            "modelled us | ok |", "|---|---|---|---|---|---|---|---|"]

    def mm_check(ins, y):
        a, w = (x.reshape(int(np.sqrt(x.size)), -1).astype(np.float64) for x in ins)
        return bool(np.allclose(y.reshape(a.shape[0], -1), np.maximum(a @ w, 0), 1e-4, 1e-4))

    for n in (64, 128, 256):
        k, st, wall, _, _, ok = run_one(matmul_relu(n), spec, mm_check)
        target = "<= 0.5 s" if n == 256 else ""
        rows.append(f"| matmul+relu {n}^3 f32 | {k.name} tiles {k.meta.plan.tile_sizes['bm']}x"
                    f"{k.meta.plan.tile_sizes['bn']}x{k.meta.plan.tile_sizes['bk']} | "
                    f"{k.grid} x {k.block} | {wall:.3f} | {target} | | "
                    f"{st.modelled_time_s * 1e6:.1f} | {ok} |")
    for r in (1024, 2048, 4096):
        def sm_check(ins, y, r=r):
            x = ins[0].reshape(r, 4096).astype(np.float64)
            e = np.exp(x - x.max(1, keepdims=True))
            return bool(np.allclose(y.reshape(r, 4096), e / e.sum(1, keepdims=True), 1e-5, 1e-6))

        k, st, wall, peak, tb, ok = run_one(softmax(r, 4096), spec, sm_check, measure_memory=True)
        target = "<= 3 s, mem <= 4x" if r == 4096 else ""
        rows.append(f"| softmax {r}x4096 f32 | {k.name} ({k.meta.plan.detail('row_cache')} "
                    f"row cache) | {k.grid} x {k.block} | {wall:.3f} | {target} | "
                    f"{peak / tb:.2f} | {st.modelled_time_s * 1e6:.1f} | {ok} |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
