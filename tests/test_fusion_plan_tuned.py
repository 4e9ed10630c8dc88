"""The fusion pass: movement as index math (rotate_half is one kernel), the cost model against
cpu_sim's counted bytes, fused == unfused == reference, and plans that differ per hierarchy."""

from __future__ import annotations

import numpy as np
import pytest

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.devices.loader import load_spec
from hal.dtypes import dtype
from hal.fusion import plan
from hal.ir import GraphBuilder
from hal.ir.text import load_graph
from hal.lowering import plan_group
from hal.reference import random_inputs

SPECS = ["h100-sxm", "mi300x", "scratch-npu"]


def rope_graph(s=12, h=3, d=16, dt="f32"):
    b = GraphBuilder("rope")
    x = b.input("x", dtype(dt), (s, h * d))
    cos, sin = b.input("cos", dtype(dt), (s, d)), b.input("sin", dtype(dt), (s, d))
    xs = b.op("reshape", x, shape=(s, h, d))
    y = b.op("rotary_embedding", xs, cos, sin)
    y = b.op("reshape", b.op("transpose", y, perm=(1, 0, 2)), shape=(1, h, s, d))
    b.output(y)
    return b.build()


@pytest.mark.parametrize("device", SPECS)
def test_rotate_half_and_head_split_are_one_pointwise_kernel(device):
    g = rope_graph()
    spec = load_spec(device)
    p = plan(g, spec)
    assert p.kernel_count() == 1
    (k,) = [x for x in p.groups]
    assert k.kind == "pointwise" and {"slice", "neg", "concat", "transpose"} <= set(k.ops)
    res = CpuSimBackend().run_graph(g, random_inputs(g, seed=3), spec)
    assert res.report["ok"]


def test_matmul_reads_transposed_operand_with_strides():
    b = GraphBuilder("tmm")
    x, w = b.input("x", dtype("f32"), (3, 20, 8)), b.input("w", dtype("f32"), (24, 10))
    a = b.op("reshape", b.op("transpose", x, perm=(1, 0, 2)), shape=(20, 24))
    b.output(b.op("matmul", a, w))
    g = b.build()
    p = plan(g, load_spec("h100-sxm"))
    assert p.kernel_count() == 1 and p.groups[0].kind == "matmul"
    assert CpuSimBackend().run_graph(g, random_inputs(g, seed=4), "h100-sxm").report["ok"]


# The documented margin: the cost model's `issued` bytes (global loads as lowered, cache hits
# included) equal cpu_sim's counted bytes on these examples except where a row reduction's
# cache decision is approximated (scratch-npu's 32 KiB); the DRAM bytes are lower than the
# issued bytes by broadcast re-loads, rotate_half's double loads and L2-hit tile re-reads.
MARGIN = {"h100-sxm": 0.01, "mi300x": 0.01, "scratch-npu": 0.05}


@pytest.mark.parametrize("device", SPECS)
@pytest.mark.parametrize("name", ["mlp", "tiny_gpt"])
def test_cost_model_matches_simulator_bytes(name, device):
    g = load_graph(f"examples/{name}.hal")
    spec = load_spec(device)
    p = plan(g, spec)
    fused = CpuSimBackend().run_graph(g, random_inputs(g, seed=0), spec)
    sim = sum(s["global_bytes_read"] + s["global_bytes_written"] for s in fused.stats)
    assert abs(sim / p.issued_bytes - 1) <= MARGIN[device]
    assert p.compulsory_bytes <= p.modelled_bytes <= p.issued_bytes
    assert fused.report["ok"]
    unfused = CpuSimBackend().run_graph(g, random_inputs(g, seed=0), spec, fuse=False)
    for k, v in fused.outputs.items():
        np.testing.assert_allclose(v.astype(np.float64), unfused.outputs[k].astype(np.float64),
                                   rtol=2e-3, atol=2e-4)


def test_random_graphs_fused_equals_unfused():
    rng = np.random.default_rng(0)
    unary = ["exp", "tanh", "neg", "abs"]
    for trial in range(4):
        b = GraphBuilder(f"rand{trial}")
        r, c = int(rng.integers(3, 20)), int(rng.integers(3, 40))
        x = b.input("x", dtype("f32"), (r, c))
        v = b.op(unary[rng.integers(len(unary))], x)
        v = b.op("transpose", b.op("add", v, x), perm=(1, 0))
        v = b.op("reduce_sum", b.op("mul", v, v), axes=(1,), keepdims=True)
        b.output(b.op("sqrt", v))
        g = b.build()
        spec = load_spec(SPECS[trial % 3])
        p = plan(g, spec)
        res = CpuSimBackend().run_graph(g, random_inputs(g, seed=trial), spec)
        assert res.report["ok"]
        sim = sum(s["global_bytes_read"] + s["global_bytes_written"] for s in res.stats)
        assert abs(sim / max(1, p.issued_bytes) - 1) <= 0.05


def wide_softmax(cols=32768):
    b = GraphBuilder("wide")
    x = b.input("x", dtype("f32"), (512, cols))
    b.output(b.op("softmax", x, axis=-1))
    return b.build()


def test_row_reduction_one_pass_on_h100_multi_pass_on_mi300x():
    g = wide_softmax()
    h100, mi = ([x for x in plan(g, load_spec(d)).groups if x.kind == "row_reduction"][0]
                for d in ("h100-sxm", "mi300x"))
    assert plan_group(h100, load_spec("h100-sxm")).detail("row_cache") == "shared"
    assert any("one pass: a row needs 128.0 KiB, 227.0 KiB" in r for r in h100.reasons)
    assert plan_group(mi, load_spec("mi300x")).detail("row_cache") == "global"
    assert any("passes over each row: a row needs 128.0 KiB" in r and "64.0 KiB" in r
               for r in mi.reasons)


def test_llama_plans_differ_per_hierarchy_with_reasons():
    g = load_graph("examples/llama_block_d4096_s128.hal")
    got = {}
    for dev in SPECS:
        p = plan(g, load_spec(dev))
        (att,) = [x for x in p.groups if x.kind == "attention"]
        kp = p.costs[att.name].plan
        got[dev] = {**kp.tile_sizes, "shared_bytes": kp.detail("shared_bytes")}
        assert any(r.startswith("fused attention") and dev in r for r in att.reasons)
        assert any("saves" in r for r in att.reasons)
        assert p.kernel_count() <= 16
    assert got["h100-sxm"]["br"] * got["h100-sxm"]["bc"] > got["mi300x"]["br"] * got["mi300x"]["bc"]
    assert got["scratch-npu"]["shared_bytes"] <= 32 * 1024 < got["h100-sxm"]["shared_bytes"]


def test_decision_log_has_each_rejection_once():
    g = load_graph("examples/llama_block_d4096_s128.hal")
    p = plan(g, load_spec("h100-sxm"))
    rejected = [(d.producer, d.consumer, d.reason) for d in p.decisions if not d.fused]
    assert len(rejected) == len(set(rejected))
    assert len(p.decisions) < 120
