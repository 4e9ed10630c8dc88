"""Coverage-driven conformance cases (issue 21): the lowering branch coverage the suite
alone reaches must not fall, and the cases that reach the big-tensor paths on small
tensors do reach them."""

from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path

import numpy as np
import pytest

from hal.conformance.cases import FLOATS, all_cases, case_spec, get_case, make_inputs
from hal.devices.loader import load_spec

ROOT = Path(__file__).resolve().parent.parent
CASES_FILE = ROOT / "benchmarks" / "results" / "conformance_coverage_cases.txt"
# Lowering branch coverage (hal/lowering, fault hooks excluded) that CASES_FILE (the greedy
# minimal set of case runs reaching every lowering branch the whole suite reaches on h100-sxm
# + mi300x) reaches, measured by benchmarks/conformance_coverage.py --lower-only
# (benchmarks/results/issue-21.md). Raise it when cases reach more; never lower it.
# Measured 2026-12-01: whole suite 757/842 = 89.9%, CASES_FILE the same (32 case runs).
# Re-measured after issue 14's matrix-unit attention added lowering branches (the lead, same
# command, 7448 case runs in 100 s): whole suite 878/976 = 89.96%, CASES_FILE re-selected
# (34 case runs). That list reaches 89.96% with HAL_MEASURE=off and 89.65% in CI (register
# measurement on, empty cache: some plans differ), so the floor is the CI figure.
# 2026-12-02 (second coverage pass: conformance/cases_paths.py, spec_variants.py; dead and
# fault-only branches removed or marked, benchmarks/results/issue-21.md): whole suite
# 919/966 = 95.13% (HAL_MEASURE=off, 7512 case runs); CASES_FILE re-selected (59 case runs)
# reaches 919/966 = 95.13% the CI way too (fresh HAL_CACHE_DIR, register measurement on);
# the floor is that figure less a 0.3 margin.
# Integrated main, 2026-12-02 (the lead): issues 14 and 15 merged 198 new lowering branches
# (causal tile skipping, split-K MMA, vector loads, the Hopper norm prologue and TMA views)
# that no conformance case reached. With the lead's cases for them (cases_paths
# _hopper_prologues, _causal_masks) the whole suite reaches 1079/1164 = 92.70% (7552 case
# runs, HAL_MEASURE=off); CASES_FILE re-selected (67 case runs) reaches 92.70% the CI way
# too. The floor follows the larger denominator down (92.70 less the 0.3 margin); the 95%
# target stands and is not met on the integrated code (benchmarks/results/issue-21.md).
# 2026-12-02, session 5 (conformance/cases_refusals.py, 31 cases; 3 dead branches removed,
# the fault-name check marked as a self-test hook; per-case arcs of multi-line conditions
# attributed, so the list can select them): whole suite 1094/1150 = 95.13% (7614 case runs,
# HAL_MEASURE=off); CASES_FILE re-selected (78 case runs) reaches 1094/1150 = 95.13% the CI
# way too (fresh HAL_CACHE_DIR, register measurement on). After merging issue 15's parts
# (Hopper attention on wgmma, clusters; their cases reach their branches) and a joint-softmax
# case: whole suite 1155/1210 = 95.45% (7680 case runs); CASES_FILE re-selected (84 case
# runs) reaches 1155/1210 = 95.45% the CI way. Floor: that less the 0.3 margin.
COVERAGE_FLOOR = 95.1


def _script():
    spec = importlib.util.spec_from_file_location(
        "conformance_coverage", ROOT / "benchmarks" / "conformance_coverage.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_covering_cases_exist():
    known = {c.id for c in all_cases()}
    pairs = _script().select_pairs((), None, str(CASES_FILE))
    assert pairs and all(cid in known for _dev, cid in pairs)
    assert {dev for dev, _ in pairs} == {"h100-sxm", "mi300x"}


def test_lowering_branch_coverage_does_not_fall():
    pytest.importorskip("coverage")
    mod = _script()
    res = mod.measure(mod.select_pairs((), None, str(CASES_FILE)), lower_only=True)
    low = res["areas"]["lowering"]
    assert set(res["verdicts"]) == {"lowered"}, res["verdicts"]   # no errors
    assert low["percent"] >= COVERAGE_FLOOR, (low["percent"], {
        f: v["missing"] for f, v in low["files"].items() if v["missing"]})


def test_lowering_replay_reaches_what_a_conformance_run_reaches(tmp_path):
    """--lower-only (plan and lower without simulating) reaches exactly the lowering
    branches of the real runs: simulation, reference and comparison run no hal/lowering.
    Each measurement in a fresh process (module imports and memoised planners run once)."""
    import json
    import subprocess
    import sys

    pytest.importorskip("coverage")
    cases = tmp_path / "cases.txt"
    cases.write_text("mi300x\tstress/attention/f32/1x4x2x1x32/decode_t1500-folded\n"
                     "h100-sxm\tfused/rms_norm_matmul/f32/33x100x31\n"
                     "h100-sxm\treduction/reduce_sum/f32/2x20000/long_partial\n")
    missing = []
    for extra in ([], ["--lower-only"]):
        out = tmp_path / f"cov{len(extra)}.json"
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "conformance_coverage.py"),
                        "--cases", str(cases), "--json", str(out), *extra], check=True,
                       capture_output=True, env={**os.environ, "HAL_MEASURE": "off"})
        files = json.loads(out.read_text())["areas"]["lowering"]["files"]
        missing.append({f: v["missing"] for f, v in files.items()})
    assert missing[0] == missing[1]


def test_stress_cases_run_on_a_small_variant_of_the_device():
    case = get_case("stress/add/f32/129x513")
    for dev in ("h100-sxm", "mi300x"):
        spec = load_spec(dev)
        small = case_spec(case, spec)
        assert small.name == f"{dev}+small" and small.compute_units == 2
        assert small.warp_size == spec.warp_size
        assert small.shared_mem_per_block == spec.shared_mem_per_block
    assert case_spec(get_case("elementwise/add/f32/33x257"), spec) is spec


@pytest.mark.parametrize("cid,key,check", [
    ("stress/add/f32/129x513", "iters", lambda v: v > 1),
    ("stress/reduce_sum/f32/1x20000/split", "split", lambda v: v > 1),
    ("reduction/reduce_sum/f32/2x20000/long_partial", "split", lambda v: v > 1),
    ("stress/attention/f32/1x1x1x1x32/decode_t1500-vplus1", "split_k", lambda v: v > 1),
])
@pytest.mark.parametrize("dev", ["h100-sxm", "mi300x"])
def test_big_tensor_schedules_fire_on_small_cases(cid, key, check, dev):
    from hal.fusion.prepare import groups_to_run
    from hal.lowering import lower_group

    case = get_case(cid)
    spec = case_spec(case, load_spec(dev))
    _prim, groups = groups_to_run(case.graph(), spec, fuse=True, who="test")
    scheds = []
    for g in groups:
        for k in lower_group(g, spec):
            s = dict(k.meta.plan.details)
            if g.kind == "pointwise":   # grid-stride iterations per thread
                numel = max(v.type.numel for v in g.outputs)
                s["iters"] = math.ceil(numel / (k.grid[0] * k.block))
            scheds.append(s)
    assert any(key in s and check(s[key]) for s in scheds), scheds


@pytest.mark.parametrize("dev", ["h100-sxm", "mi300x"])
def test_raster_has_a_partial_last_group(dev):
    from hal.fusion.prepare import groups_to_run
    from hal.lowering import lower_group

    case = get_case("stress/matmul/f32/257x128x96")
    spec = case_spec(case, load_spec(dev))
    _prim, (g,) = groups_to_run(case.graph(), spec, fuse=True, who="test")
    (k,) = lower_group(g, spec)
    p = k.meta.plan
    npm = math.ceil(p.detail("m") / p.tile_sizes["bm"])
    assert npm > p.detail("group_m") and npm % p.detail("group_m"), p


@pytest.mark.parametrize("variant,field,check", [
    ("smem2k", "shared_mem_per_block", lambda v, s: v == 2048),
    ("smem12k", "shared_mem_per_block", lambda v, s: v == 12 * 1024),
    ("other_warp", "warp_size", lambda v, s: v == {32: 64}.get(s.warp_size, 32)),
    ("few_registers", "max_registers_per_thread", lambda v, s: v == 24),
    ("tf32", "capabilities", lambda v, s: "allow_tf32" in v),
    ("no_tma", "capabilities", lambda v, s: "tma" not in v and v <= s.capabilities),
])
@pytest.mark.parametrize("dev", ["h100-sxm", "mi300x", "scratch-npu"])
def test_spec_variants_change_what_they_name(variant, field, check, dev):
    from hal.conformance.cases import SPEC_VARIANTS

    spec = load_spec(dev)
    var = SPEC_VARIANTS[variant](spec)
    assert check(getattr(var, field), spec) and var.name != spec.name
    assert any(c.variant == variant for c in all_cases()), variant


def test_norm_matmul_prologue_cases_have_k_off_the_warp():
    ids = [c.id for c in all_cases() if "norm_matmul/" in c.id]
    assert ids and all(int(i.split("/")[3].split("x")[1]) % 32 for i in ids)


def test_decode_attention_in_every_float_dtype():
    ids = {c.id for c in all_cases()}
    for dt in FLOATS:
        assert any(i.startswith(f"fused/attention/{dt}/") and "decode" in i for i in ids), dt
        assert any(i.startswith(f"fused/attention/{dt}/") and "vplus1" in i for i in ids), dt


def test_ties_inputs_are_halfway_cases():
    from hal.dtypes import DTYPES, cast

    g = get_case("cast/cast/f32-bf16/33x257/ties").graph()
    x = make_inputs(g, "ties", 0)["x"].astype(np.float64)
    bf = cast(x, DTYPES["bf16"]).astype(np.float64)
    up = np.nextafter(x.astype(np.float32), np.float32(np.inf)).astype(np.float64)
    assert (np.abs(bf - x) > 0).mean() > 0.2 and np.isfinite(up).all()


def test_every_reached_branch_is_attributed_to_a_case():
    """The per-case arcs (from which the CI list is selected) add up to the run's figure: a
    branch whose condition spans several lines is recorded at the traced continuation line
    and must be attributed at the statement's first line, as coverage's report counts it
    (before, such branches were reached by the suite but by no case of the CI list)."""
    pytest.importorskip("coverage")
    mod = _script()
    res = mod.measure([("h100-sxm", "fused/matmul_hopper_refused/bf16/1x2080x1024/decode"),
                       ("mi300x", "fused/attention_masked/f32/1x2x33x65x32/window_lower_edge")],
                      contexts=True, lower_only=True)
    attributed = set().union(*res["per_case"].values())
    assert len(attributed) == res["areas"]["lowering"]["covered"]
