"""Fusion benchmark: kernels and modelled DRAM bytes, fused vs unfused, per example and device,
and the time to plan a 32-layer Llama-style model. Prints a markdown table.

    python benchmarks/bench_fusion.py [--layers 32] [--devices h100-sxm,mi300x,scratch-npu]

Columns: kernels (groups that launch one; a lone reshape is a view), modelled DRAM bytes
(fusion.cost: L2 reuse modelled) and their ratio to the compulsory bytes (each graph input,
weight and output once), the same without fusion, and whether attention became one kernel
(with its tiles). The planning time is split into decomposition (hal.ops.decompose) and the
fusion pass itself.
"""

from __future__ import annotations

import argparse
import time

from hal.devices.loader import load_spec
from hal.fusion import plan
from hal.fusion.cost import fmt_bytes
from hal.ir.text import load_graph

EXAMPLES = ["mlp", "tiny_gpt", "gpt_block_d768_s128", "gpt_block_d768_s2048",
            "llama_block_d4096_s128", "llama_block_d4096_s2048"]


def row(name: str, device: str) -> str:
    g = load_graph(f"examples/{name}.hal")
    spec = load_spec(device)
    fused, unfused = plan(g, spec), plan(g, spec, fuse=False)
    comp = fused.compulsory_bytes
    att = [x for x in fused.groups if x.kind == "attention"]
    tiles = fused.costs[att[0].name].plan.tile_sizes if att else {}
    att_s = f"Br={tiles['br']} Bc={tiles['bc']}" if tiles else "no"
    return (f"| {name} | {device} | {fused.kernel_count()} | {unfused.kernel_count()} | "
            f"{fmt_bytes(fused.modelled_bytes)} | {fused.modelled_bytes / comp:.2f}x | "
            f"{fmt_bytes(unfused.modelled_bytes)} | {unfused.modelled_bytes / comp:.2f}x | "
            f"{fmt_bytes(comp)} | {att_s} |")


def planning_time(layers: int, device: str) -> tuple[float, float, int]:
    from hal.examples.build import make_llama_model
    from hal.ops.decompose import decompose_graph

    g = make_llama_model(layers, 4096, 2048)
    spec = load_spec(device)
    t0 = time.perf_counter()
    decompose_graph(g)
    t1 = time.perf_counter()
    p = plan(g, spec)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, p.kernel_count()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--devices", default="h100-sxm,mi300x,scratch-npu")
    ap.add_argument("--examples", default=",".join(EXAMPLES))
    a = ap.parse_args()
    print("| example | device | kernels | kernels unfused | DRAM (model) | x compulsory | "
          "DRAM unfused | x compulsory | compulsory | attention fused |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in a.examples.split(","):
        for dev in a.devices.split(","):
            print(row(name, dev))
    dec, total, kernels = planning_time(a.layers, a.devices.split(",")[0])
    print()
    print(f"Planning llama {a.layers} layers (d4096, s2048) on {a.devices.split(',')[0]}: "
          f"{total:.2f} s in plan() ({dec:.2f} s of it decomposing composites), "
          f"{kernels} kernels.")


if __name__ == "__main__":
    main()
