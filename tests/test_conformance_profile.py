"""Bounds that bite: the differential error profile against cpu_sim, --strict, the
bound/clean-error table, and the canary cases."""

from __future__ import annotations

import numpy as np
import pytest

from hal.conformance.canaries import CANARIES, DEFECTS
from hal.conformance.cases import get_case, select
from hal.conformance.error_profile import (
    Profile,
    family,
    family_markdown,
    family_table,
    regression,
)
from hal.conformance.runner import execute


def test_regression_rule():
    sim = Profile(0.5, 2.0, 4.0)
    assert regression(Profile(0.5, 9.9, 17.0), sim) is None          # 4x + 2 ulp: allowed
    assert "p99" in regression(Profile(1.0, 10.5, 12.0), sim)
    assert "max" in regression(Profile(0.5, 2.0, 18.5), sim)
    assert "not finite" in regression(Profile(0.5, float("inf"), 4.0), sim)


@pytest.fixture
def noisy_backend():
    """cpu_sim whose float outputs are 40 ulps off: inside reduce_sum's bound, far outside
    cpu_sim's own error profile (a backend that lost precision but not correctness)."""
    from hal.backends.cpu_sim.backend import CpuSimBackend
    from hal.backends_registry import register_backend

    class NoisySim(CpuSimBackend):
        name = "noisy_sim"

        def run_graph(self, *a, **kw):
            res = super().run_graph(*a, **kw)
            for k, v in res.outputs.items():
                if v.dtype == np.float32:
                    res.outputs[k] = (v * np.float32(1 + 40 * 2.0 ** -23)).astype(np.float32)
            return res

    register_backend("noisy_sim", NoisySim, replace=True)  # as tests/test_bench.py does
    return "noisy_sim"


def test_precision_regression_fails_only_under_strict(noisy_backend):
    case = get_case("reduction/reduce_sum/f32/33x257/rows")
    loose = execute(case, noisy_backend, "h100-sxm")
    assert loose["verdict"] == "pass", loose            # within the error model's bound
    assert "precision regression" in loose["precision_regression"]
    prof = loose["profile"]["v0"] if "v0" in loose["profile"] else \
        next(iter(loose["profile"].values()))
    assert prof["backend"]["p99"] > 4 * prof["cpu_sim"]["p99"] + 2
    strict = execute(case, noisy_backend, "h100-sxm", strict=True)
    assert strict["verdict"] == "fail" and "precision regression" in strict["reason"]


def test_cpu_sim_against_itself_is_no_regression():
    case = get_case("reduction/reduce_sum/f32/33x257/rows")
    r = execute(case, "cpu_sim", "h100-sxm", strict=True, profile=True)
    assert r["verdict"] == "pass" and "precision_regression" not in r
    (p,) = r["profile"].values()
    assert p["backend"] == p["cpu_sim"] and p["regression"] is None


def test_family_table_ratio_is_bound_over_clean_error():
    rs = [{"id": "fused/softmax/f32/a", "verdict": "pass", "bound": 1e-6, "used": 0.01},
          {"id": "fused/softmax/f32/b", "verdict": "pass", "bound": 1e-6, "used": 0.1},
          {"id": "fused/softmax/f16/c", "verdict": "pass", "bound": 1e-3, "used": 0.0},
          {"id": "fused/softmax/bf16/d", "verdict": "fail", "bound": 1e-3, "used": 5.0},
          {"id": "canary/ulps/exp/f32/e", "verdict": "pass", "bound": 1.0, "used": 0.5}]
    (row,) = family_table(rs)
    assert family("fused/softmax/f32/a") == row.family == "fused/softmax"
    assert row.cases == 3 and row.exact == 1
    assert row.min_ratio == pytest.approx(10) and row.max_ratio == pytest.approx(100)
    assert row.tightest == "fused/softmax/f32/b"
    assert "fused/softmax" in family_markdown([row])


def test_used_is_reported_and_below_one_for_a_clean_case():
    r = execute(get_case("fused/softmax/f32/33x257"), "cpu_sim", "h100-sxm")
    assert 0 < r["used"] <= 1


def test_every_defect_has_three_canaries_that_pass_clean():
    per = {d: [c for c in CANARIES if c[0] == d] for d in DEFECTS}
    assert all(len(v) >= 3 for v in per.values()), per
    for c in select("canary/signed_zero"):
        assert execute(c, "cpu_sim", "mi300x")["verdict"] == "pass"


def test_a_loosened_bound_fails_the_canary():
    from hal.lowering.options import LoweringOptions

    case = get_case("canary/ulps/tanh/f32/33x257")
    assert execute(case, "cpu_sim", "h100-sxm")["verdict"] == "pass"
    r = execute(case, "cpu_sim", "h100-sxm", lowering=LoweringOptions.planting("tol_ulps_16x"))
    assert r["verdict"] == "fail" and "just outside the correct bound" in r["reason"]
