"""Small graphs lowered to one kernel, for the cpu_sim tests that compare two ways of
simulating the same kernel (tests/test_cpu_sim_mma_batch.py, tests/test_cpu_sim_roll.py)."""

from __future__ import annotations

from hal.devices.loader import load_spec
from hal.dtypes import dtype
from hal.fusion.plan import plan
from hal.ir import GraphBuilder
from hal.lowering import lower_group
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions


def attention_graph(dt: str, q, kv, causal: bool):
    """(graph, group kind) of one scaled_dot_product_attention."""
    b = GraphBuilder("att")
    d = dtype(dt)
    b.output(b.op("scaled_dot_product_attention", b.input("q", d, q), b.input("k", d, kv),
                  b.input("v", d, kv), causal=causal))
    return b.build(), "attention"


def lowered_kernel(graph, kind: str, device: str,
                   options: LoweringOptions = DEFAULT_OPTIONS):
    """(the kernel of the graph's first group of `kind` on `device`, the spec)."""
    spec = load_spec(device)
    group = next(g for g in plan(graph, spec).groups if g.kind == kind)
    (k,) = lower_group(group, spec, options)
    return k, spec
