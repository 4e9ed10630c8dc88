"""pytest plugin: the conformance suite as pytest tests, one test id per case.

Registered through the `pytest11` entry point, so it loads in every pytest
run, but it does nothing unless `--hal-backend` is given (the normal test run
never collects or slows down for it):

    pytest --pyargs hal.conformance --hal-backend cpu_sim --hal-device h100-sxm [-k exp]

It parametrises `hal/conformance/test_suite.py::test_case` with every case id;
skips (not applicable, UNSUPPORTED) and expected failures map to pytest's
skip and xfail (strict: an unexpected pass fails), so the verdicts match the CLI.
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("hal-conformance")
    g.addoption("--hal-backend", default=None, help="run the hal conformance suite on this "
                                                    "backend (enables the plugin)")
    g.addoption("--hal-device", default="h100-sxm", help="device spec for --hal-backend")
    g.addoption("--hal-seed", type=int, default=0, help="seed offset for conformance inputs")
    g.addoption("--hal-random", type=int, default=0, help="also run N random graphs")
    g.addoption("--hal-strict", action="store_true",
                help="fail precision regressions against cpu_sim (error_profile)")


def _enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("--hal-backend", default=None))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "hal_case_id" not in metafunc.fixturenames:
        return
    config = metafunc.config
    if not _enabled(config):
        metafunc.parametrize("hal_case_id", [pytest.param(
            None, marks=pytest.mark.skip(reason="conformance: pass --hal-backend"))])
        return
    from .cases import all_cases
    from .random_graphs import random_case_id

    ids = [c.id for c in all_cases()]
    ids += [random_case_id(config.getoption("--hal-seed"), i)
            for i in range(config.getoption("--hal-random"))]
    metafunc.parametrize("hal_case_id", ids, ids=ids)


@pytest.fixture
def hal_conformance(request: pytest.FixtureRequest) -> dict:
    """The suite settings: backend, device, seed."""
    c = request.config
    return {"backend": c.getoption("--hal-backend"), "device": c.getoption("--hal-device"),
            "seed": c.getoption("--hal-seed"), "strict": c.getoption("--hal-strict")}
