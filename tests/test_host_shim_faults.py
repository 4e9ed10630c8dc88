"""Planted renderer faults: bugs only in the rendered text. The host backends catch each
one; cpu_sim, which runs the kernel IR, passes the same case with the fault planted."""

from __future__ import annotations

import pytest

from hal.backends.host.compiler import host_supported
from hal.backends.host.faults import RENDER_FAULTS, SELFTEST_CASES, plant
from hal.conformance.cases import get_case
from hal.conformance.runner import execute

pytestmark = pytest.mark.skipif(host_supported() is not None,
                                reason=f"host shim unavailable: {host_supported()}")

# (fault, host backend, device)
PLANTED = [
    ("exp_as_exp2", "cuda-host", "h100-sxm"),
    ("int_div_floor", "cuda-host", "h100-sxm"),
    ("shuffle_width_32", "hip-host", "mi300x"),
    ("dropped_syncthreads", "hip-host", "mi300x"),
    ("bf16_truncation", "cuda-host", "h100-sxm"),
    ("bf16_truncation", "hip-host", "mi300x"),
]


def test_every_fault_has_cases():
    assert set(SELFTEST_CASES) == set(RENDER_FAULTS)
    assert {f for f, _, _ in PLANTED} == set(RENDER_FAULTS)


@pytest.mark.parametrize("backend,device", sorted({(b, d) for _, b, d in PLANTED}))
def test_selftest_cases_pass_without_a_fault(backend, device):
    for cid in sorted({c for cs in SELFTEST_CASES.values() for c in cs}):
        r = execute(get_case(cid), backend, device, profile=False)
        assert r["verdict"] == "pass", (cid, r.get("reason"))


@pytest.mark.parametrize("fault,backend,device", PLANTED)
def test_fault_is_caught_by_the_host_and_not_by_cpu_sim(fault, backend, device):
    faulty = plant(backend, fault)
    assert faulty == f"{backend}+{fault}"
    for cid in SELFTEST_CASES[fault]:
        case = get_case(cid)
        host = execute(case, faulty, device, unfused=False, profile=False)
        assert host["verdict"] == "fail", (fault, cid, host.get("reason"))  # numbers, not errors
        # the same plan on cpu_sim: the IR is not faulty, only the text
        sim = execute(case, "cpu_sim", device, unfused=False, profile=False)
        assert sim["verdict"] == "pass", (fault, cid, sim.get("reason"))


def test_the_production_backend_stays_clean_after_planting():
    plant("cuda-host", "exp_as_exp2")
    r = execute(get_case(SELFTEST_CASES["exp_as_exp2"][0]), "cuda-host", "h100-sxm",
                unfused=False, profile=False)
    assert r["verdict"] == "pass"


def test_cli_self_test_plants_renderer_faults_on_a_host_backend():
    from click.testing import CliRunner

    from hal.cli.main import main

    res = CliRunner().invoke(main, ["conformance", "--self-test", "--backend", "cuda-host",
                                    "--device", "h100-sxm"])
    assert res.exit_code == 0, res.output
    assert "exp_as_exp2: caught by elementwise/exp/f32/31" in res.output
    assert "all 4 planted renderer faults caught on cuda-host" in res.output
