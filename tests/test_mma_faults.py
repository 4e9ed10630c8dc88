"""The conformance suite catches the planted matrix-unit faults (hal.lowering.faults)."""

from __future__ import annotations

import pytest

from hal.conformance.cases import get_case
from hal.conformance.runner import execute
from hal.lowering.options import LoweringOptions

CASE = "fused/matmul_bias_relu/bf16/64x128x96"
MMA_FAULTS = ("mma_swapped_fragment_halves", "mma_wrong_k_order", "missing_cp_async_wait",
              "wrong_swizzle")


@pytest.fixture(autouse=True)
def _no_measure(monkeypatch):
    monkeypatch.setenv("HAL_MEASURE", "off")


@pytest.mark.parametrize("device", ["a100-sxm", "mi300x", "scratch-npu"])
def test_clean_case_passes(device):
    assert execute(get_case(CASE), "cpu_sim", device, 0)["verdict"] == "pass"


@pytest.mark.parametrize("fault", MMA_FAULTS)
@pytest.mark.parametrize("device", ["a100-sxm", "mi300x", "scratch-npu"])
def test_fault_is_caught(fault, device):
    r = execute(get_case(CASE), "cpu_sim", device, 0,
                lowering=LoweringOptions.planting(fault))
    assert r["verdict"] == "fail", r
    if fault == "missing_cp_async_wait":
        assert r.get("check") == "race", r   # the simulator names the stage read too early
