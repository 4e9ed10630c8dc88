"""The conformance suite as pytest tests (parametrised by hal.conformance.pytest_plugin).

Run with `pytest --pyargs hal.conformance --hal-backend cpu_sim --hal-device h100-sxm`.
Without --hal-backend the single placeholder test is skipped.
"""

from __future__ import annotations

import pytest


def test_case(hal_case_id: str | None, hal_conformance: dict) -> None:
    from hal.backends_registry import get_backend
    from hal.conformance.cases import get_case
    from hal.conformance.expectations import (
        expected_failure,
        not_applicable,
        unsupported_reason,
    )
    from hal.conformance.runner import execute
    from hal.devices.loader import load_spec

    backend, device = hal_conformance["backend"], hal_conformance["device"]
    be = get_backend(backend)
    avail = be.probe()
    if not avail:
        pytest.skip(f"backend {backend} unavailable: {avail.reason}")
    case = get_case(hal_case_id)
    why = not_applicable(case, be, load_spec(device)) or \
        unsupported_reason(backend, case.id, device)
    if why:
        pytest.skip(why)
    xfail = expected_failure(backend, case.id, device)
    r = execute(case, backend, device, hal_conformance["seed"],
                strict=bool(hal_conformance.get("strict")))
    if xfail:
        if r["verdict"] == "pass":
            pytest.fail(f"unexpected pass (listed as expected failure: {xfail})")
        pytest.xfail(xfail)
    assert r["verdict"] == "pass", (
        f"{r['verdict']}: {r.get('reason', '')}\nmax_abs={r.get('max_abs')} "
        f"bound={r.get('bound')} ulp={r.get('ulp')}\nreproduce: {r['repro']}")
