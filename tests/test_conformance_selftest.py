"""The self-test: every planted lowering fault is caught by a fast case."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from hal.conformance.cases import get_case
from hal.conformance.runner import SuiteConfig, execute
from hal.conformance.selftest import run_selftest
from hal.lowering import faults
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions

CATCHERS = {  # fault -> (a fast case that catches it, how)
    "off_by_one_mask": ("elementwise/add/f32/33x257", "out_of_bounds"),
    "wrong_reduction_identity": ("reduction/reduce_sum/f32/33x257/rows", "numeric"),
    "missing_barrier": ("reduction/reduce_sum/f32/33x257/rows", "race"),
    "f16_accumulation": ("reduction/reduce_sum/bf16/257x33/cols", "numeric"),
    "swapped_transpose": ("layout/transpose_add/f32/5x33x65/perm201", None),
    "bf16_truncation": ("elementwise/exp/bf16/33x257", "numeric"),
    "wrong_broadcast_axis": ("layout/broadcast_add/f32/33x257/row", "numeric"),
    "dropped_epilogue": ("fused/matmul_bias_gelu/f32/33x65x31", "numeric"),
}


def test_every_fault_has_a_catcher():
    assert set(CATCHERS) == set(faults.FAULTS)


@pytest.mark.parametrize("fault", sorted(CATCHERS))
def test_fault_is_caught(fault):
    cid, how = CATCHERS[fault]
    case = get_case(cid)
    assert execute(case, "cpu_sim", "h100-sxm")["verdict"] == "pass"
    r = execute(case, "cpu_sim", "h100-sxm", lowering=LoweringOptions.planting(fault))
    assert r["verdict"] == "fail", r
    if how == "numeric":
        assert "outside the bound" in r["reason"]
    elif how:
        assert r.get("check") == how
    assert not DEFAULT_OPTIONS.fault(fault)


def test_options_reject_unknown_faults_and_need_no_environment(monkeypatch):
    from hal.errors import HalError

    with pytest.raises(HalError, match="unknown lowering fault"):
        LoweringOptions.planting("no_such_fault")
    monkeypatch.setenv("HAL_FAULT", "missing_barrier")  # the old switch: no effect now
    case = get_case("reduction/reduce_sum/f32/33x257/rows")
    assert execute(case, "cpu_sim", "h100-sxm")["verdict"] == "pass"


def test_planted_fault_reaches_worker_processes():
    from hal.conformance import expectations
    from hal.conformance.report import ReportWriter
    from hal.conformance.runner import run_suite

    cfg = SuiteConfig(workers=2, batch=1, lowering=LoweringOptions.planting("missing_barrier"),
                      unfused=False)
    w = ReportWriter(None, None)
    saved = expectations.EXPECTED_FAILURES.get("cpu_sim")
    expectations.EXPECTED_FAILURES["cpu_sim"] = {}
    try:
        run_suite(cfg, w, cases=[get_case("reduction/reduce_sum/f32/33x257/rows"),
                                 get_case("reduction/reduce_max/f32/4x1025/rows1025")])
    finally:
        if saved is not None:
            expectations.EXPECTED_FAILURES["cpu_sim"] = saved
    assert [r.get("check") for r in w.results] == ["race", "race"], w.results


def test_selftest_reports_escapes():
    cases = [get_case("reduction/reduce_sum/f32/33x257/rows")]
    base, results = run_selftest(SuiteConfig(workers=1), cases,
                                 ["wrong_reduction_identity", "dropped_epilogue"])
    assert not base
    caught = {fr.fault: fr.caught for fr in results}
    assert caught == {"wrong_reduction_identity": True, "dropped_epilogue": False}


def test_cli_self_test_exit_code_when_a_fault_escapes():
    from hal.cli.main import main

    res = CliRunner().invoke(main, ["conformance", "--self-test", "--workers", "1", "-k",
                                    "reduction/reduce_sum/f32/33x257/rows"])
    assert res.exit_code == 1, res.output
    assert "ESCAPED" in res.output and "faults that escaped" in res.output
