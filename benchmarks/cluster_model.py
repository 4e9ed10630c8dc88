"""Modelled effect of the Hopper GEMM's 2-CTA clusters (hal.lowering.matmul_cluster).

For each spec and GEMM (bf16 4096^3, and the matmul kernels of the Llama block d4096 s2048),
plans the group twice: on the spec as it is (clusters where the planner chooses them) and on
the same spec without the `clusters` capability (the kernel before this change). Prints the
plan's cluster choice, modelled time (fusion.cost.price: DRAM bytes and math, the one
roofline), DRAM bytes, issued (L2->SM, as lowered) bytes, and the issued bytes over the
spec's L2 bandwidth as a what-if (hal.roofline gives L2 no price, so the modelled time does
not see this traffic).

    python benchmarks/cluster_model.py [spec ...]     (HAL_MEASURE=off)
"""

from __future__ import annotations

import dataclasses
import sys

from hal.devices.loader import load_spec
from hal.dtypes import bf16
from hal.fusion import plan as fuse
from hal.fusion.cost import price
from hal.ir import GraphBuilder
from hal.lowering import plan_group


def _gemm(m: int, k: int, n: int):
    b = GraphBuilder("gemm")
    b.output(b.op("matmul", b.input("x", bf16, (m, k)), b.input("w", bf16, (n, k)),
                  transpose_b=True))
    return b.build()


def _groups(graph, spec):
    """The groups of `graph` whose kernel is the Hopper GEMM on `spec`."""
    return [g for g in fuse(graph, spec, measure=None).groups
            if plan_group(g, spec).strategy == "wgmma"]


def main(specs: list[str]) -> None:
    from hal.ir.text import load_graph

    graphs = {"bf16 4096^3": _gemm(4096, 4096, 4096),
              "llama d4096 s2048": load_graph("examples/llama_block_d4096_s2048.hal")}
    print("| spec | GEMM | cluster | modelled time before -> after | DRAM bytes | "
          "issued (L2->SM) bytes before -> after | issued / L2 bandwidth (what-if) |")
    print("|---|---|---|---|---|---|---|")
    for name in specs:
        spec = load_spec(name)
        plain = dataclasses.replace(spec, capabilities=spec.capabilities - {"clusters"})
        for label, graph in graphs.items():
            for g in _groups(graph, spec):
                after, before = plan_group(g, spec), plan_group(g, plain)
                ca, cb = price(after, spec), price(before, plain)
                cl = after.detail("cluster")
                what = f"{cl.ctas}x1x1" if cl is not None and cl.ctas > 1 else \
                    ("none" if cl is None else f"none ({cl.reason})")
                bw = spec.l2_bandwidth
                print(f"| {name} | {label}: {g.name} | {what} | {cb.time_s * 1e6:.1f} -> "
                      f"{ca.time_s * 1e6:.1f} us | {ca.dram_bytes / 2**30:.3f} GiB | "
                      f"{cb.issued / 2**30:.3f} -> {ca.issued / 2**30:.3f} GiB | "
                      f"{cb.issued / bw * 1e6:.0f} -> {ca.issued / bw * 1e6:.0f} us |")


if __name__ == "__main__":
    main(sys.argv[1:] or ["h100-sxm", "h200"])
