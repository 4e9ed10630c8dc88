"""Register room for a matmul's fused prologue and epilogue.

The tile choice (tiling.matmul_tiles) keeps `fused_reserve` registers per thread for the
ops fused around the contraction, and the fusion veto (fusion.cost.estimate_registers)
prices exactly the tiles the lowering then uses. On a device with few registers
(scratch-npu: 64 per thread) a matmul with an epilogue therefore gets smaller
micro-tiles instead of being refused the fusion or spilling."""

from __future__ import annotations

import pytest

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.devices.loader import load_spec
from hal.dtypes import f32
from hal.fusion import plan
from hal.fusion.cost import estimate_registers
from hal.ir import GraphBuilder
from hal.lowering import lower_group
from hal.lowering.matmul import fused_reserve
from hal.lowering.tiling import matmul_registers, matmul_tiles
from hal.reference import random_inputs


def mm_epilogue_graph(m=70, k=48, n=40):
    b = GraphBuilder("mm_epi")
    x, w = b.input("x", f32, (m, k)), b.input("w", f32, (k, n))
    bias, res = b.input("bias", f32, (n,)), b.input("res", f32, (m, n))
    y = b.op("matmul", x, w)
    y = b.op("add", y, b.op("broadcast_to", bias, shape=(m, n)))
    y = b.op("mul", y, b.op("sigmoid", y))
    b.output(b.op("add", y, res, name="out"))
    return b.build()


def test_reserve_counts_extra_inputs_and_fused_ops():
    g = mm_epilogue_graph()
    mm = [n for n in g.nodes if n.op == "matmul"]
    x_w = [v for v in g.inputs if v.name in ("x", "w")]
    assert fused_reserve(mm, x_w) == 0  # a lone matmul keeps nothing extra
    assert fused_reserve(g.nodes, g.inputs) == 2 * 2 + 2  # bias, res; 5 other ops -> 2


@pytest.mark.parametrize("device", ["scratch-npu", "h100-sxm", "mi300x"])
def test_epilogue_fuses_within_the_register_file(device):
    spec = load_spec(device)
    mkgraph = mm_epilogue_graph()
    p = plan(mkgraph, spec, measure=None)
    (grp,) = [x for x in p.groups if x.kind == "matmul"]
    assert {"matmul", "sigmoid", "add"} <= set(grp.ops), p.decisions
    assert p.kernel_count() == 1
    (k,) = lower_group(grp, spec)
    t = k.meta.plan.tile_sizes
    est = estimate_registers(grp, spec)
    assert est <= spec.registers_per_thread_at(k.block)
    assert est == (t["tm"] * t["tn"] + t["tm"] + t["tn"] + 16) + fused_reserve(grp.nodes,
                                                                               grp.inputs)
    r = CpuSimBackend().run_graph(mkgraph, random_inputs(mkgraph, 5), spec, groups=p.groups)
    assert r.report["ok"], r.report


def test_scratch_npu_takes_smaller_micro_tiles_for_the_epilogue():
    """At a size where the largest tiles win, the reserve shrinks the micro-tile on the
    64-register device and changes nothing on h100-sxm (255 registers)."""
    npu, h100 = load_spec("scratch-npu"), load_spec("h100-sxm")
    plain, fused = (matmul_tiles(2048, 2048, 2048, 4, npu, reserve=r) for r in (0, 12))
    assert fused.tm * fused.tn < plain.tm * plain.tn
    assert matmul_registers(fused) + 12 <= npu.registers_per_thread_at(fused.threads)
    assert matmul_tiles(2048, 2048, 2048, 4, h100, reserve=12) == \
        matmul_tiles(2048, 2048, 2048, 4, h100)
