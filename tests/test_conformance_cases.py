"""Conformance cases: generated from the registry, stable ids, a sample run per family."""

from __future__ import annotations

import collections

import pytest

from hal.conformance.cases import all_cases, get_case, make_inputs, select
from hal.conformance.runner import SuiteConfig, execute, plan_cases
from hal.ops import OPS, Category


def test_at_least_2000_cases_with_unique_stable_ids():
    cases = all_cases()
    ids = [c.id for c in cases]
    assert len(ids) >= 2000 and len(set(ids)) == len(ids)
    assert ids == [c.id for c in all_cases()]
    assert "elementwise/exp/bf16/33x257" in ids
    c = get_case("elementwise/exp/f8e4m3fn/33x257")
    assert {"needs:fp8", "dtype:f8e4m3fn", "kind:elementwise"} <= c.tags


def test_every_primitive_and_dtype_is_covered():
    seen = collections.defaultdict(set)
    for c in all_cases():
        seen[c.op].add(c.dtypes[0])
    for name, op in OPS.items():
        if op.category in (Category.COMPOSITE,) or name.startswith("_"):
            continue
        assert name in seen, name
        if op.category is Category.ELEMENTWISE and name not in ("cast", "select"):
            assert set(op.dtypes) <= seen[name], name


def test_families_and_edge_shapes_present():
    ids = [c.id for c in all_cases()]
    for fam in ("special", "overflow", "layout", "fused", "model", "cast", "scan", "gather"):
        assert any(i.startswith(fam + "/") for i in ids), fam
    for needle in ("/0x5", "/1", "2x16384", "33x257", "attention", "matmul_bias_gelu",
                   "softmax_primitives", "siblings", "tiny_gpt", "llama_block"):
        assert any(needle in i for i in ids), needle


def test_inputs_are_seeded_and_indices_in_range():
    c = get_case("gather/gather/f32/33x65")
    g = c.graph()
    a, b = make_inputs(g, c.dist, c.seed), make_inputs(g, c.dist, c.seed)
    assert all((a[k] == b[k]).all() for k in a)
    assert a["i"].min() >= 0 and a["i"].max() < 33


def test_scratch_npu_skips_fp8_and_f64():
    run, skipped = plan_cases(SuiteConfig(device="scratch-npu"),
                              select("elementwise/exp/"))
    reasons = {r["id"]: r["reason"] for r in skipped}
    assert "does not support dtype f8e4m3fn" in reasons["elementwise/exp/f8e4m3fn/33x257"]
    assert "elementwise/exp/f64/33x257" in reasons
    assert any(c.id == "elementwise/exp/bf16/33x257" for c in run)


def _sample():
    """Two cases per family (deterministic), run on three devices."""
    by_fam = collections.defaultdict(list)
    for c in all_cases():
        if "f64" not in c.dtypes and not c.id.startswith("model/"):
            by_fam[c.id.split("/")[0]].append(c.id)
    out = []
    for _fam, ids in sorted(by_fam.items()):
        out += [ids[len(ids) // 3], ids[(2 * len(ids)) // 3]]
    return out + ["model/mlp/f32/8x64"]


@pytest.mark.parametrize("device", ["h100-sxm", "mi300x", "scratch-npu"])
def test_sample_per_family_passes_on_cpu_sim(device):
    from hal.backends_registry import get_backend
    from hal.conformance.expectations import expected_failure, not_applicable
    from hal.devices.loader import load_spec

    spec, be = load_spec(device), get_backend("cpu_sim")
    bad = []
    for cid in _sample():
        case = get_case(cid)
        if not_applicable(case, be, spec) or expected_failure("cpu_sim", cid, device):
            continue
        r = execute(case, "cpu_sim", device)
        assert "max_abs" in r and "bound" in r and set(r["ulp"]) == {"p50", "p99", "max"}
        if r["verdict"] != "pass":
            bad.append((cid, r["reason"]))
    assert not bad, bad
