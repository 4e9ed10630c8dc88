"""Differential random testing: generation, shrinking, reproducers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from hal.conformance.random_graphs import (
    build,
    generate,
    load_reproducer,
    shrink,
    size,
    write_reproducer,
)
from hal.conformance.runner import execute
from hal.lowering.options import LoweringOptions


def test_generation_is_seeded_and_well_typed():
    kinds = set()
    for i in range(40):
        r = generate(3, i)
        assert r == generate(3, i)
        g = build(r)
        assert g.outputs
        kinds |= {s.kind for s in r.steps}
        kinds |= {n.op for n in g.nodes}
    assert {"matmul", "reduce", "cast", "transpose", "broadcast_to", "binary"} <= kinds


def test_shrink_with_a_predicate_reaches_a_minimum():
    r = next(generate(1, i) for i in range(100) if any(s.kind == "matmul"
                                                         for s in generate(1, i).steps)
             and len(generate(1, i).steps) > 5)
    small = shrink(r, lambda x: any(s.kind == "matmul" for s in x.steps))
    assert any(s.kind == "matmul" for s in small.steps)
    assert len(small.steps) <= 2 and small.dims == (1, 1)
    assert size(small) < size(r)


def test_shrinking_a_real_failure_gives_a_smaller_failing_hal(tmp_path):
    from hal.conformance.cases import make_inputs
    from hal.conformance.random_graphs import random_case

    # a random graph with a row bias (broadcast): wrong_broadcast_axis breaks it
    idx = next(i for i in range(200) if sum(s.kind == "bias" for s in generate(5, i).steps)
               and len(generate(5, i).steps) >= 5 and min(generate(5, i).dims) > 1)
    base = random_case(5, idx)
    r0 = generate(5, idx)

    def fails(r):
        case = replace(base, build=lambda _r=r: build(_r))
        return execute(case, "cpu_sim", "h100-sxm", lowering=planted)["verdict"] != "pass"

    planted = LoweringOptions.planting("wrong_broadcast_axis")
    assert fails(r0)
    small = shrink(r0, fails)
    assert size(small) < size(r0) and fails(small)
    g = build(small)
    inputs = make_inputs(g, "normal", 0)
    hal_path, npz_path = write_reproducer(g, inputs, tmp_path / "repro")
    assert hal_path.read_text().startswith("graph ")
    g2, inputs2 = load_reproducer(hal_path)
    assert [v.name for v in g2.inputs] == list(inputs2)
    for k in inputs:
        assert np.array_equal(inputs[k].astype(np.float64), inputs2[k].astype(np.float64))
    assert len(g2.nodes) < len(build(r0).nodes)
