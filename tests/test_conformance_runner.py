"""Runner and reports: expectations (xfail / unexpected pass), skips, errors, atomic reports,
JUnit validity, the CLI and the pytest plugin."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from hal.conformance import expectations, runner
from hal.conformance.cases import select
from hal.conformance.report import ReportWriter, junit_xml
from hal.conformance.runner import SuiteConfig, run_suite

PASSING = "elementwise/add/f32/31"


@pytest.fixture
def fake_expectations(monkeypatch):
    table = {"cpu_sim": {}}
    monkeypatch.setattr(expectations, "EXPECTED_FAILURES", table)
    return table["cpu_sim"]


def _run(pattern, tmp_path=None, workers=1, **kw):
    w = ReportWriter(tmp_path / "r.json" if tmp_path else None,
                     tmp_path / "r.xml" if tmp_path else None, {"backend": "cpu_sim"}, every=2,
                     min_interval=0)
    s = run_suite(SuiteConfig(pattern=pattern, workers=workers, **kw), w)
    return s, w


def test_unexpected_pass_fails_the_run(fake_expectations):
    fake_expectations[PASSING] = "pretend bug #1"
    s, w = _run(PASSING)
    (r,) = w.results
    assert r["verdict"] == "xpass" and "pretend bug #1" in r["reason"]
    assert not s["ok"]


def test_expected_failure_is_not_a_failure(fake_expectations, monkeypatch):
    fake_expectations["h100-sxm:" + PASSING] = "device-specific bug"
    monkeypatch.setattr(runner, "check", lambda a, b, *_: _failing_comparison())
    s, w = _run(PASSING)
    assert w.results[0]["verdict"] == "xfail" and s["ok"]
    s2, w2 = _run(PASSING, device="mi300x")  # the expectation names h100-sxm only
    assert w2.results[0]["verdict"] == "fail" and not s2["ok"]


def _failing_comparison():
    from hal.conformance.compare import Comparison

    return Comparison(max_abs=1.0, bad=3, numel=31, ok=False, worst={"index": [0]})


def test_per_case_exception_is_an_error_verdict(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("lowering exploded")

    monkeypatch.setattr(runner, "graph_bounds", boom)
    s, w = _run(PASSING)
    assert w.results[0]["verdict"] == "error" and "lowering exploded" in w.results[0]["reason"]
    assert not s["ok"]


def test_report_survives_a_crash_mid_run(tmp_path, monkeypatch):
    real = runner.execute
    calls = {"n": 0}

    def crashing(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(runner, "execute", crashing)
    with pytest.raises(KeyboardInterrupt):
        _run("elementwise/add/f32", tmp_path)
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["meta"]["complete"] is False
    assert len(doc["results"]) == 4 and doc["summary"]["total"] == 4
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == [r["id"] for r in doc["results"]]
    assert not list(tmp_path.glob(".r.json.*"))  # no temporary files left behind


def test_json_and_junit_reports(tmp_path):
    s, w = _run("elementwise/exp/f[13]*/*", tmp_path, workers=2)
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["meta"]["complete"] and doc["summary"]["total"] == len(doc["results"]) > 0
    r = next(x for x in doc["results"] if x["verdict"] == "pass")
    for key in ("id", "op", "dtypes", "shape", "device", "backend", "max_abs", "max_rel",
                "ulp", "bound", "verdict", "repro"):
        assert key in r, key
    assert r["repro"].startswith("hal conformance --backend cpu_sim --device h100-sxm -k ")
    suite = ET.parse(tmp_path / "r.xml").getroot()
    assert suite.tag == "testsuite" and int(suite.get("tests")) == len(doc["results"])
    assert len(suite.findall("testcase")) == len(doc["results"])


def test_junit_marks_failures_and_skips():
    results = [{"id": "a/x", "verdict": "fail", "reason": "off by 3 ulp", "seconds": 0.1},
               {"id": "a/y", "verdict": "skip", "reason": "no fp8"},
               {"id": "b/z", "verdict": "error", "reason": "boom"},
               {"id": "b/w", "verdict": "pass"}]
    root = ET.fromstring(junit_xml(results, {"backend": "cpu_sim", "device": "d"}))
    assert (root.get("failures"), root.get("errors"), root.get("skipped")) == ("1", "1", "1")
    assert root.find("testcase[@name='a/x']/failure").get("message") == "off by 3 ulp"


def test_substituted_kernels_are_counted_and_captioned():
    # a backend that ran other kernels than the device's (the host shim's mma.sync for
    # h100-sxm's wgmma) says so per case; the summary counts those cases and the table
    # names them, so a pass on substitute kernels is never silent
    from rich.console import Console

    from hal.conformance.report import summarize, summary_table

    results = [{"id": "a/x", "verdict": "pass", "substituted": "g0 (wgmma): mma.sync ran"},
               {"id": "a/y", "verdict": "pass"}]
    s = summarize(results)
    assert s["substituted"] == 1 and s["ok"]
    assert summarize(results[1:])["substituted"] == 0
    con = Console(record=True, width=120)
    con.print(summary_table(s, results, "t"))
    assert "1 of these ran substitute kernels" in con.export_text()


def test_a_backends_substitution_note_reaches_the_case_record(monkeypatch):
    from hal.backend import RunResult
    from hal.backends_registry import get_backend

    backend = get_backend("cpu_sim")
    real = backend.run_graph

    def noted(*a, **k):
        r = real(*a, **k)
        return RunResult(r.outputs, r.stats, {**(r.report or {}), "substituted": "k0: other"})

    monkeypatch.setattr(backend, "run_graph", noted)
    rec = runner.execute(runner.get_case(PASSING), "cpu_sim", "h100-sxm", profile=False)
    assert rec["verdict"] == "pass" and rec["substituted"] == "k0: other"


def test_cli_runs_and_writes_reports(tmp_path):
    from hal.cli.main import main

    res = CliRunner().invoke(main, ["conformance", "-k", "elementwise/sub/f16", "--report",
                                    str(tmp_path / "o.json"), "--junit",
                                    str(tmp_path / "o.xml"), "--random", "2"])
    assert res.exit_code == 0, res.output
    assert "total" in res.output and (tmp_path / "o.xml").exists()
    ids = [r["id"] for r in json.loads((tmp_path / "o.json").read_text())["results"]]
    assert "random/s0/0" in ids and len(ids) == len(select("elementwise/sub/f16")) + 2


def test_cli_exit_code_on_failure(monkeypatch):
    from hal.cli.main import main

    monkeypatch.setattr(runner, "check", lambda a, b, *_: _failing_comparison())
    res = CliRunner().invoke(main, ["conformance", "-k", PASSING, "--workers", "1"])
    assert res.exit_code == 1 and "failures" in res.output


def test_pytest_plugin_one_test_per_case():
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--pyargs",
         "hal.conformance", "--hal-backend", "cpu_sim", "--hal-device", "h100-sxm",
         "-k", "exp2 and bf16"], capture_output=True, text=True, timeout=120, cwd="/tmp")
    assert out.returncode == 0, out.stdout + out.stderr
    n = len(select("elementwise/exp2/bf16")) + len(select("special/exp2/bf16")) + \
        len(select("overflow/exp2/bf16"))
    assert f"{n} passed" in out.stdout


def test_json_is_rewritten_during_the_run(tmp_path):
    w = ReportWriter(tmp_path / "p.json", None, {}, every=2, min_interval=0)
    for i in range(3):
        w.add({"id": f"a/{i}", "verdict": "pass"})
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["meta"]["complete"] is False and len(doc["results"]) == 2
    w.finalize()
    assert json.loads((tmp_path / "p.json").read_text())["summary"]["total"] == 3


def test_workers_spawn_for_real_hardware_and_fork_for_simulators():
    """A GPU driver initialised in the parent (the availability probe) must not be
    inherited through fork: real-hardware backends start workers with spawn."""
    from hal.conformance.runner import start_method

    assert start_method("cpu_sim") == "fork"
    assert start_method("reference") == "fork"
    assert start_method("cuda") == "spawn"
    assert start_method("rocm") == "spawn"


def test_json_rewrites_are_spaced_by_their_cost(tmp_path):
    """A rewrite waits REWRITE_SPACING times as long as the last one took; the final
    report is complete whatever was skipped."""
    w = ReportWriter(tmp_path / "p.json", None, {}, every=1, min_interval=0)
    w.add({"id": "a/0", "verdict": "pass"})
    assert len(json.loads((tmp_path / "p.json").read_text())["results"]) == 1
    w._write_cost = 3600.0   # as if the last rewrite had taken an hour
    w.add({"id": "a/1", "verdict": "pass"})
    assert len(json.loads((tmp_path / "p.json").read_text())["results"]) == 1
    w.finalize()
    assert json.loads((tmp_path / "p.json").read_text())["summary"]["total"] == 2
