"""Sampled simulation (sampled.py): the same outputs and, within the stated error, the same
counters as an exact run; faults planted in boundary blocks are still caught."""

from __future__ import annotations

import numpy as np
import pytest
from test_cpu_sim_parallel import _same_stats

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.backends.cpu_sim.checks import SimulationError
from hal.backends.cpu_sim.sampled import SampleOptions, choose_blocks
from hal.devices.loader import load_spec
from hal.dtypes import f32
from hal.ir import GraphBuilder
from hal.lowering.options import LoweringOptions
from hal.reference import random_inputs

SPEC = load_spec("h100-sxm")
COUNTERS = ("global_bytes_read", "global_bytes_written", "shared_bytes_read",
            "shared_bytes_written", "barriers", "flops")


def _mlp(m: int, k: int, n: int):
    b = GraphBuilder("mlp")
    x = b.input("x", f32, (m, k))
    w = b.input("w", f32, (k, n))
    bias = b.input("b", f32, (n,))
    y = b.op("add", b.op("matmul", x, w), b.op("broadcast_to", bias, shape=[m, n]))
    b.output(b.op("gelu", y, approximate="tanh", name="y"))
    return b.build()


def _pointwise(n: int):
    b = GraphBuilder("pw")
    x = b.input("x", f32, (n,))
    b.output(b.op("exp", b.op("mul", x, x), name="y"))
    return b.build()


def test_boundary_blocks_cover_grid_edges_and_sample_is_seeded() -> None:
    boundary, sample = choose_blocks((5, 4, 1), SampleOptions(0.5, seed=1))
    coords = {(i % 5, i // 5) for i in boundary.tolist()}
    assert {(0, 0), (4, 3), (0, 3), (4, 0), (2, 0), (0, 2)} <= coords
    assert (2, 1) not in coords and sample.size == 3   # ceil(0.5 * 6 interior)
    again, _ = choose_blocks((5, 4, 1), SampleOptions(0.5, seed=1))
    assert np.array_equal(again, boundary)
    assert np.array_equal(choose_blocks((5, 4, 1), SampleOptions(0.5, seed=1))[1], sample)


def test_sampled_matches_exact_outputs_and_counters() -> None:
    g = _mlp(700, 96, 300)
    inputs = random_inputs(g, seed=0)
    be = CpuSimBackend()
    exact = be.run_graph(g, inputs, SPEC)
    sampled = be.run_graph(g, inputs, SPEC, sample=SampleOptions(0.25, seed=3))
    assert exact.report["ok"] and sampled.report["ok"]
    # every element: the simulated blocks' own, the rest functional in f32
    np.testing.assert_allclose(sampled.outputs["y"], exact.outputs["y"], rtol=2e-5, atol=2e-5)
    for e, s in zip(exact.stats, sampled.stats, strict=True):
        info = s["sample"]
        if "exact" in info:
            continue
        assert 0 < info["fraction"] < 1 and info["blocks_simulated"] < info["blocks"]
        assert info["parity_on_simulated"]["y"]["ok"] if "y" in info["parity_on_simulated"] else True
        err = info["counter_rel_error"]
        for c in COUNTERS:
            assert abs(s[c] - e[c]) <= err * e[c] + 1, (c, s[c], e[c], err)


def test_sampled_run_reports_which_blocks_ran() -> None:
    g = _mlp(700, 96, 300)
    res = CpuSimBackend().run_graph(g, random_inputs(g, seed=0), SPEC,
                                    sample=SampleOptions(0.2, seed=0))
    (info,) = [s["sample"] for s in res.stats if "blocks_simulated" in s.get("sample", {})]
    ids = info["simulated_block_ids"]
    assert ids[0] == 0 and info["blocks"] - 1 in ids and len(ids) == info["blocks_simulated"]
    assert res.report["sampled"]


def test_planted_tail_fault_in_boundary_block_is_caught_when_sampled() -> None:
    g = _pointwise(100_000 + 17)   # the masked tail lives in the last block only
    inputs = random_inputs(g, seed=0)
    faulty = LoweringOptions(faults=frozenset({"off_by_one_mask"}))
    with pytest.raises(SimulationError) as e:
        CpuSimBackend().run_graph(g, inputs, SPEC, lowering_options=faulty,
                                  sample=SampleOptions(0.01, seed=0))
    assert e.value.kind == "out_of_bounds"
    assert e.value.block is not None


def test_planted_wrong_value_fault_is_caught_on_simulated_blocks() -> None:
    g = _mlp(700, 96, 300)
    inputs = random_inputs(g, seed=0)
    faulty = LoweringOptions(faults=frozenset({"dropped_epilogue"}))
    res = CpuSimBackend().run_graph(g, inputs, SPEC, lowering_options=faulty,
                                    sample=SampleOptions(0.05, seed=0))
    assert not res.report["ok"]
    bad = [k for k, r in res.report["sampled"].items() if r.get("ok") is False]
    assert bad, res.report["sampled"]


def test_cli_run_sample_flag_reports_sampled_kernels() -> None:
    import json
    from pathlib import Path

    from click.testing import CliRunner

    from hal.cli.main import main

    mlp = Path(__file__).resolve().parent.parent / "examples" / "mlp.hal"
    res = CliRunner().invoke(main, ["run", str(mlp), "--backend", "cpu_sim", "--device",
                                    "h100-sxm", "--sample", "0.5", "--sample-seed", "2",
                                    "--json"])
    assert res.exit_code == 0, res.output
    js = json.loads(res.output)
    assert js["report"]["sampled"] and js["report"]["ok"]
    assert all("sample" in s for s in js["stats"])


def test_sampled_attention_computed_blocked_functionally(monkeypatch) -> None:
    """A large attention group's unsimulated blocks come from the blocked evaluator
    (hal.reference_blocked), not the whole-tensor decomposition, with the same outputs:
    the whole-output reference's attention, taken by the group (evaluated once), or
    without a reference computed functionally."""
    import hal.reference_blocked as rb

    b = GraphBuilder("attn")
    # q and k come in [S, H, D] and are transposed in the attention group's prologue
    # (so the composite's inputs exist only inside the group); a [16, 4] grid: 28
    # interior blocks
    qs = b.input("q", "bf16", (128, 8, 16))
    ks = b.input("k", "bf16", (128, 4, 16))
    q = b.op("reshape", b.op("transpose", qs, perm=(1, 0, 2)), shape=(1, 8, 128, 16))
    k = b.op("reshape", b.op("transpose", ks, perm=(1, 0, 2)), shape=(1, 4, 128, 16))
    v = b.input("v", "bf16", (1, 4, 128, 16))
    b.output(b.op("scaled_dot_product_attention", q, k, v, causal=True, name="y"))
    g = b.build()
    inputs = random_inputs(g, seed=2)
    be = CpuSimBackend()
    whole = be.run_graph(g, inputs, SPEC, sample=SampleOptions(0.25, seed=1))
    calls = []
    real = rb.attention_steps

    def spy(*a, **kw):
        calls.append(a[2].op)
        return real(*a, **kw)

    monkeypatch.setattr(rb, "TILE_ELEMENTS", 512)   # 8 * 128 * 128 scores exceed it
    # the reference runs it as Steps (BLOCKED_STEPS), the functional values whole (BLOCKED)
    monkeypatch.setitem(rb.BLOCKED_STEPS, "scaled_dot_product_attention", spy)
    monkeypatch.setitem(rb.BLOCKED, "scaled_dot_product_attention",
                        lambda *a, **kw: rb.drain(spy(*a, **kw)))
    blocked = be.run_graph(g, inputs, SPEC, sample=SampleOptions(0.25, seed=1))
    # once, in the whole-output reference; the group takes its value from there
    assert calls == ["scaled_dot_product_attention"]
    assert whole.report["ok"] and blocked.report["ok"]
    info = blocked.report["sampled"]["k0_attention"]
    assert info["blocks_simulated"] < info["blocks"]   # some outputs are not simulated
    assert info["rest_from"] == "reference"
    calls.clear()
    alone = be.run_graph(g, inputs, SPEC, sample=SampleOptions(0.25, seed=1),
                         compare_reference=False)
    assert calls == ["scaled_dot_product_attention"]   # functionally, blocked
    assert alone.report["sampled"]["k0_attention"]["rest_from"] == "functional"
    assert alone.report["ok"]
    np.testing.assert_array_equal(np.asarray(alone.outputs["y"], np.float32),
                                  np.asarray(blocked.outputs["y"], np.float32))
    # the functional values: float64 blocked vs the decomposition's f32 contractions,
    # both rounded to bf16: equal within one bf16 ulp
    np.testing.assert_allclose(np.asarray(blocked.outputs["y"], np.float32),
                               np.asarray(whole.outputs["y"], np.float32), rtol=2**-7, atol=1e-6)


def _bf16_block(seq: int, heads: int, kv: int, hd: int, ffn: int):
    """A small Llama-shaped block (bf16): matmuls on the matrix units, attention."""
    from hal.examples.build import make_llama_model

    return make_llama_model(1, heads * hd, seq, heads=heads, kv_heads=kv, ffn=ffn)


@pytest.mark.parametrize("device", ["h100-sxm", "a100-sxm", "mi300x"])
def test_combined_sampled_wave_counts_each_part_as_separate_waves(device: str) -> None:
    """simulate_parts(combine=True) runs the boundary and the strata as one wave with
    per-part lane counts (tally.py): every part's counters (bytes, barriers, atomics,
    vector and matrix flops), the stored values and the written indices are those of
    separate waves, on SIMT, mma.sync/MFMA and wgmma/TMA kernels."""
    from hal.backends.cpu_sim.sampled import STRATA
    from hal.backends.cpu_sim.simulator import simulate_parts
    from hal.fusion.prepare import groups_to_run
    from hal.lowering import lower_group

    spec = load_spec(device)
    for g in (_mlp(300, 96, 200), _bf16_block(128, 4, 2, 64, 1024), _causal_attention()):
        inputs = random_inputs(g, seed=0)
        prim, groups = groups_to_run(g, spec, groups=None, fuse=True, who="test")
        bufs = {v.name: np.ascontiguousarray(inputs[v.name]).reshape(-1) for v in prim.inputs}
        for c in prim.constants:
            from hal.dtypes import cast

            bufs[c.value.name] = np.ascontiguousarray(
                cast(c.init.materialize(c.value.type, prim.base_dir), c.value.dtype)).reshape(-1)
        checked = 0
        for grp in groups:
            if len(grp.nodes) == 1 and grp.nodes[0].op == "reshape":
                bufs[grp.nodes[0].outputs[0].name] = bufs[grp.nodes[0].inputs[0].name]
                continue
            for v in (o for n in grp.nodes for o in n.outputs):
                bufs.setdefault(v.name, np.zeros(int(np.prod(v.shape)), v.dtype.np_dtype))
            ks = lower_group(grp, spec)
            if len(ks) != 1:
                continue
            (k,) = ks
            args = {p: bufs[v] for p, v in k.meta.buffers.items()}
            boundary, sample = choose_blocks(tuple(k.grid), SampleOptions(0.3, seed=1))
            if sample.size == 0:
                continue
            parts = [boundary, *np.array_split(sample, min(STRATA, sample.size))]
            runs = []
            for combine in (False, True):
                mine = {p: a.copy() for p, a in args.items()}
                gparams = [p for p in k.params if hasattr(p, "numel")]
                written: list[list[np.ndarray]] = [[] for _ in gparams]
                sts = simulate_parts(k, mine, spec, parts, written=written, combine=combine,
                                     jobs=1)
                runs.append((mine, [_counts(s) for s in sts],
                             [np.unique(np.concatenate(w)) if w else None for w in written]))
            (a0, c0, w0), (a1, c1, w1) = runs
            assert c0 == c1, (k.name, c0, c1)
            for p in a0:
                assert a0[p].tobytes() == a1[p].tobytes(), (k.name, p)
            assert all((x is None and y is None) or np.array_equal(x, y)
                       for x, y in zip(w0, w1, strict=True))
            checked += 1
            # the real group's values for the next group
            from hal.backends.cpu_sim.simulator import simulate

            simulate(k, args, spec, jobs=1)
        assert checked >= 1


def _causal_attention():
    b = GraphBuilder("attn")
    q = b.input("q", "bf16", (1, 8, 256, 32))
    k = b.input("k", "bf16", (1, 4, 256, 32))
    v = b.input("v", "bf16", (1, 4, 256, 32))
    b.output(b.op("scaled_dot_product_attention", q, k, v, causal=True, name="y"))
    return b.build()


def _counts(st) -> dict:
    d = st.to_dict()
    return {k: d[k] for k in ("global_bytes_read", "global_bytes_written", "shared_bytes_read",
                              "shared_bytes_written", "barriers", "atomics", "flops",
                              "flops_by_dtype", "matrix_flops")}


def _count_materialized(monkeypatch) -> tuple[list, list]:
    """The names of the constants materialised from here on by the reference
    (initializers.materialize) and by cpu_sim (initializers.materialize_as; the
    materialize calls it makes itself are cpu_sim's, not the reference's)."""
    import hal.ir.initializers as inits

    by_ref: list = []
    by_sim: list = []
    real, real_as = inits.materialize, inits.materialize_as
    inside = [False]

    def counting(init, type, base_dir=None, *, name=None):
        if not inside[0]:
            by_ref.append(name)
        return real(init, type, base_dir, name=name)

    def counting_as(init, type, base_dir=None, *, name=None, **kw):
        by_sim.append(name)
        inside[0] = True
        try:
            return real_as(init, type, base_dir, name=name, **kw)
        finally:
            inside[0] = False

    monkeypatch.setattr(inits, "materialize", counting)
    monkeypatch.setattr(inits, "materialize_as", counting_as)
    return by_ref, by_sim


def test_overlapped_sampled_model_run_equals_serial_and_reference_shares_weights(
        monkeypatch) -> None:
    """A model with weight constants, sampled: with a second process (each sampled kernel
    in a forked child while the parent takes the reference's values, makes the next
    groups' constants and steps the reference) the outputs, counters and reports equal
    the serial run's; the whole-output reference is evaluate()'s, and it was handed every
    weight cpu_sim made instead of making it again."""
    from hal.backends.cpu_sim.backend import parity_report

    g = _bf16_block(64, 4, 2, 32, 256)
    inputs = random_inputs(g, seed=0)
    be = CpuSimBackend()
    serial = be.run_graph(g, inputs, SPEC, jobs=1, sample=SampleOptions(0.3, seed=2))
    by_ref, by_sim = _count_materialized(monkeypatch)
    over = be.run_graph(g, inputs, SPEC, jobs=2, sample=SampleOptions(0.3, seed=2))
    by_run, made_by_sim = list(by_ref), list(by_sim)   # (evaluate() below makes its own)
    for k in serial.outputs:
        assert serial.outputs[k].tobytes() == over.outputs[k].tobytes()
    _same_stats(serial.stats, over.stats)
    assert serial.report == over.report and over.report["ok"]
    # the reference part of the report is evaluate()'s on the same outputs
    prim_outputs = dict(over.outputs)
    from hal.fusion.prepare import groups_to_run

    prim, _ = groups_to_run(g, SPEC, groups=None, fuse=True, who="test")
    assert parity_report(g, prim, inputs, prim_outputs)["outputs"] == over.report["outputs"]
    # no weight was made by the reference; cpu_sim made every one
    weights = [c.value.name for c in g.constants if c.value.type.numel > 4096]
    assert weights and not set(weights) & set(by_run), by_run
    assert set(weights) <= set(made_by_sim), made_by_sim


@pytest.mark.parametrize("retain", [0, 1 << 40])
def test_overlapped_run_with_the_reference_behind_equals_serial(monkeypatch, retain) -> None:
    """The reference runs only while a child simulates and may fall behind the groups:
    kept at once within a retain budget of 0 bytes (it catches up before every group), or
    left behind to the end under an unbounded one (the children never wait for it; it
    finishes after the last group). Either way the outputs and the report are the serial
    run's, and the reference makes no weight itself."""
    import hal.backends.cpu_sim.reference_steps as rs

    g = _bf16_block(64, 4, 2, 32, 256)
    inputs = random_inputs(g, seed=0)
    be = CpuSimBackend()
    serial = be.run_graph(g, inputs, SPEC, jobs=1, sample=SampleOptions(0.3, seed=2))
    monkeypatch.setattr(rs, "RETAIN_BYTES", retain)
    if retain:   # a child that reads as done at once: the reference never runs beside it
        from hal.backends.cpu_sim import parallel

        start = parallel.start_child

        def done_child(fn):
            c = start(fn)
            c.done = lambda: True
            return c

        monkeypatch.setattr(parallel, "start_child", done_child)   # sampled_in_child imports it
    made, made_by_sim = _count_materialized(monkeypatch)
    over = be.run_graph(g, inputs, SPEC, jobs=2, sample=SampleOptions(0.3, seed=2))
    for k in serial.outputs:
        assert serial.outputs[k].tobytes() == over.outputs[k].tobytes()
    assert serial.report == over.report and over.report["ok"]
    weights = [c.value.name for c in g.constants if c.value.type.numel > 4096]
    assert weights and not set(weights) & set(made), made
    assert set(weights) <= set(made_by_sim), made_by_sim


def test_batch_axes_have_no_boundary_class() -> None:
    grid = (5, 4, 3)
    plain, _ = choose_blocks(grid, SampleOptions(0.1, seed=0))
    batched, sample = choose_blocks(grid, SampleOptions(0.1, seed=0), batch_axes=(2,))

    def coords(ids):
        return {(i % 5, (i // 5) % 4, i // 20) for i in ids.tolist()}

    # x and y edges in every batch entry, the first and last block in launch order
    assert coords(batched) == {(x, y, z) for x in range(5) for y in range(4) for z in range(3)
                               if x in (0, 4) or y in (0, 3)}
    assert (2, 1, 0) in coords(plain) and (2, 1, 0) not in coords(batched)
    assert not set(sample.tolist()) & set(batched.tolist())


def test_attention_heads_are_a_batch_axis_of_the_sampled_grid() -> None:
    """The attention plan declares its heads axis (grid y) a batch axis: a sampled run
    simulates the first and last row tile of every head, not every tile of the first and
    last head, and says so; a causal-bound fault planted in the lowering is caught on the
    simulated blocks."""
    b = GraphBuilder("attn")
    q = b.input("q", "bf16", (1, 8, 200, 32))
    k = b.input("k", "bf16", (1, 8, 200, 32))
    v = b.input("v", "bf16", (1, 8, 200, 32))
    b.output(b.op("scaled_dot_product_attention", q, k, v, causal=True, name="y"))
    g = b.build()
    inputs = random_inputs(g, seed=0)
    res = CpuSimBackend().run_graph(g, inputs, SPEC, sample=SampleOptions(0.01, seed=0))
    (name, info), = res.report["sampled"].items()
    assert info["batch_axes"] == ["y"] and res.report["ok"]
    (st,) = [s for s in res.stats if s["name"] == name]
    gx, gy, _ = st["grid"]
    assert gy == 8 and gx > 2
    boundary = set(info["simulated_block_ids"][:info["boundary_blocks"]])
    assert boundary == {x + gx * y for y in range(gy) for x in (0, gx - 1)}
    faulty = LoweringOptions(faults=frozenset({"attention_causal_overskip"}))
    bad = CpuSimBackend().run_graph(g, inputs, SPEC, lowering_options=faulty,
                                    sample=SampleOptions(0.01, seed=0))
    assert not bad.report["ok"] and bad.report["sampled"][name]["ok"] is False


def test_sampled_groups_take_the_reference_values_of_their_outputs() -> None:
    """With the whole-output reference on, a sampled matmul group's unsimulated blocks take
    the reference's values of its (named) outputs: rest_from "reference", nothing computed
    a second time. Without the reference they are computed functionally from the group's
    actual inputs. Both runs hold parity against the reference."""
    from hal.backends.cpu_sim.backend import parity_report
    from hal.fusion.prepare import groups_to_run

    g = _bf16_block(64, 4, 2, 32, 256)
    inputs = random_inputs(g, seed=0)
    be = CpuSimBackend()
    how = SampleOptions(0.3, seed=2)
    with_ref = be.run_graph(g, inputs, SPEC, jobs=1, sample=how)
    alone = be.run_graph(g, inputs, SPEC, jobs=1, sample=how, compare_reference=False)
    kinds = {s["kernel"]: s["kind"] for s in with_ref.stats}

    def rest(run):
        return {k: r["rest_from"] for k, r in run.report["sampled"].items()
                if kinds.get(k) == "matmul" and "rest_from" in r}

    assert len(rest(with_ref)) >= 3 and set(rest(with_ref).values()) == {"reference"}
    assert set(rest(alone).values()) == {"functional"} and rest(alone).keys() == \
        rest(with_ref).keys()
    assert with_ref.report["ok"] and alone.report["ok"]
    prim, _ = groups_to_run(g, SPEC, groups=None, fuse=True, who="test")
    assert parity_report(g, prim, inputs, dict(alone.outputs))["ok"]


def test_clusters_on_a_2d_grid_are_chosen_whole() -> None:
    """unit 2 on a 6 x 4 grid: the clusters are pairs of x-neighbours in a row; a pair with
    an edge block is a boundary cluster, so only the middle pairs of rows 1 and 2 are
    interior, and the sample is whole pairs of them."""
    boundary, sample = choose_blocks((6, 4, 1), SampleOptions(0.5, seed=0), unit=2)
    interior = {8, 9, 14, 15}
    assert set(boundary.tolist()) == set(range(24)) - interior
    assert sample.size == 2 and set(sample.tolist()) in ({8, 9}, {14, 15})
    _, everything = choose_blocks((6, 4, 1), SampleOptions(1.0, seed=0), unit=2)
    assert set(everything.tolist()) == interior
    with pytest.raises(ValueError, match="whole clusters"):
        choose_blocks((5, 1, 1), SampleOptions(0.5), unit=2)
