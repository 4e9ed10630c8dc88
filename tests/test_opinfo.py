"""The OpInfo conformance module (hal.conformance.opinfo): a small slice of PyTorch's
OpInfo database through torch.export -> hal -> cpu_sim, and the verdict rules.
The full sweep is benchmarks/opinfo_sweep.py (tens of minutes), not a test."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")

from hal.conformance import opinfo  # noqa: E402

# one OpInfo per issue-17 fix or family, cheap on cpu_sim
SLICE = ["round.decimals_3", "index_select", "isfinite", "nn.functional.conv2d", "sort"]


@pytest.fixture(scope="module")
def results():
    ops = [o for o in opinfo.all_opinfos() if opinfo.opinfo_name(o) in SLICE]
    assert {opinfo.opinfo_name(o) for o in ops} == set(SLICE)
    return opinfo.run_opinfos(ops, max_samples=1, backend="cpu_sim", spec="h100-sxm")


def test_slice_passes(results):
    bad = [(r.case_id, r.verdict, r.message) for r in results if r.verdict != "pass"]
    assert not bad
    s = opinfo.summarize(results)
    assert s.total == len(SLICE) and s.by_verdict["pass"] == len(SLICE)


def test_unsupported_names_the_aten_op():
    name = "special.legendre_polynomial_p"      # a tensor degree: torch loops n times
    op = next(o for o in opinfo.all_opinfos() if opinfo.opinfo_name(o) == name)
    r = opinfo.run_sample(op, 0, next(opinfo.samples(op, 1)))
    assert r.verdict == "unsupported"
    assert "aten.special_legendre_polynomial_p.default" in r.missing


def test_verdicts_and_summary():
    rs = [opinfo.SampleResult("a", 0, "pass"), opinfo.SampleResult("a", 1, "export_fail"),
          opinfo.SampleResult("b", 0, "pass"), opinfo.SampleResult("b", 1, "crash"),
          opinfo.SampleResult("c", 0, "export_fail"),
          opinfo.SampleResult("d", 0, "unsupported", missing=("aten.foo.default",))]
    assert opinfo.opinfo_verdict(rs[:2]) == "pass"
    assert opinfo.opinfo_verdict(rs[2:4]) == "crash"
    s = opinfo.summarize(rs)
    assert (s.total, s.exportable, s.by_verdict["pass"]) == (4, 3, 1)
    assert s.missing_ops == {"aten.foo.default": 1}
    assert rs[3].to_dict()["status"] == "error"


def test_judge_forgives_the_frameworks_own_error():
    """hal outside the bound of torch but closer to float64 than torch is: a pass."""
    truth = np.array([1.0, 2.0])
    torch_out = np.array([1.0 + 1e-3, 2.0])
    hal_out = np.array([1.0 - 1e-4, 2.0])
    ok, _ = opinfo.judge(hal_out, torch_out, None, 1e-6, 1e-6)
    assert not ok
    ok, detail = opinfo.judge(hal_out, torch_out, truth, 1e-6, 1e-6)
    assert ok and "vs float64" in detail
    ok, _ = opinfo.judge(np.array([1.1, 2.0]), torch_out, truth, 1e-6, 1e-6)
    assert not ok


# -- the suite form: hal conformance --suite torch-opinfo ------------------------------

def test_report_rows_map_every_verdict():
    from hal.conformance.opinfo_suite import STATUS, report_row

    assert set(STATUS) == set(opinfo.VERDICTS)
    rows = {v: report_row(opinfo.SampleResult("x", 0, v, "why", ("aten.foo.default",)),
                          "cpu_sim", "h100-sxm") for v in opinfo.VERDICTS}
    assert rows["pass"]["verdict"] == "pass" and rows["mismatch"]["verdict"] == "fail"
    assert {rows[v]["verdict"] for v in ("crash", "rejected", "timeout")} == {"error"}
    assert rows["unsupported"]["verdict"] == "skip"
    assert rows["unsupported"]["reason"] == "unsupported [unreasoned: why]: why"
    assert rows["unsupported"]["missing"] == ["aten.foo.default"]
    assert "--suite torch-opinfo -k 'x'" in rows["crash"]["repro"]


def test_time_limit_ends_a_sample():
    import time

    from hal.conformance.opinfo_suite import sample_time_limit

    t0 = time.time()
    with pytest.raises(opinfo.SampleTimeout), sample_time_limit(0.2):
        while time.time() - t0 < 60:   # busy: the limit counts CPU time
            pass
    assert time.time() - t0 < 60


def test_conformance_cli_torch_opinfo_suite(tmp_path):
    import json

    from click.testing import CliRunner

    from hal.cli.main import main

    report, junit = tmp_path / "r.json", tmp_path / "r.xml"
    res = CliRunner().invoke(main, ["conformance", "--suite", "torch-opinfo", "-k", "isfinite",
                                    "--opinfo-samples", "1", "--report", str(report),
                                    "--junit", str(junit)])
    assert res.exit_code == 0, res.output
    assert "fully passing: 1 (100.0% of exportable)" in res.output
    doc = json.loads(report.read_text())
    assert doc["meta"]["suite"] == "torch-opinfo" and doc["meta"]["complete"]
    assert [r["id"] for r in doc["results"]] == ["opinfo/isfinite/0"]
    assert doc["summary"]["pass"] == 1 and "opinfo/isfinite/0" in junit.read_text()
    res = CliRunner().invoke(main, ["conformance", "--suite", "torch-opinfo", "-k",
                                    "no_such_op_anywhere"])
    assert res.exit_code != 0 and "matches no OpInfo" in res.output
    res = CliRunner().invoke(main, ["conformance", "--suite", "torch-opinfo", "-k",
                                    "legendre", "--opinfo-samples", "1"])
    assert res.exit_code == 0 and "aten.special_legendre_polynomial_p.default 1" in res.output
    # its class in the reasoned UNSUPPORTED table
    assert "missing: special.legendre_polynomial_p" in res.output
