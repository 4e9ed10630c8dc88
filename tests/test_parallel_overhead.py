"""Where the process parallelism's overhead went (issue 19): an in-process conformance
run forks no simulator workers, run_waves's caller is its worker 0, and the JSON report
is written one result a line from the sidecar's encoding, the final one re-encoded."""

from __future__ import annotations

import json
import os

import pytest
from threadpoolctl import threadpool_info

from hal.backends.cpu_sim.parallel import JOBS_ENV, run_waves, sim_jobs
from hal.conformance.report import ReportWriter
from hal.conformance.runner import SuiteConfig, one_sim_process, run_suite
from hal.errors import HalError

# a case whose launch runs in several waves (so cpu_sim would fork for it with 2+ CPUs)
MULTI_WAVE_CASE = "contraction/matmul/f32/256x320x128/cluster-b2"


def _no_fork():
    raise AssertionError("forked a simulator worker")


def test_in_process_suite_forks_no_simulator_worker(monkeypatch) -> None:
    monkeypatch.delenv(JOBS_ENV, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert sim_jobs() > 1   # outside a suite, the launch would fork
    monkeypatch.setattr(os, "fork", _no_fork)
    w = ReportWriter(None, None, {})
    run_suite(SuiteConfig(pattern=MULTI_WAVE_CASE, workers=1), w)
    (r,) = w.results
    assert r["id"] == MULTI_WAVE_CASE and r["verdict"] == "pass", r.get("reason")
    assert JOBS_ENV not in os.environ   # the setting ends with the suite


def test_one_sim_process_keeps_a_users_setting(monkeypatch) -> None:
    monkeypatch.setenv(JOBS_ENV, "3")
    with one_sim_process():
        assert sim_jobs() == 3
    assert os.environ[JOBS_ENV] == "3"
    monkeypatch.delenv(JOBS_ENV)
    with one_sim_process():
        assert sim_jobs() == 1
    assert JOBS_ENV not in os.environ


def _where(i: int) -> tuple[int, list[int]]:
    """(process, BLAS thread counts) a wave ran with."""
    return os.getpid(), [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]


def test_the_caller_runs_worker_zeros_waves_with_one_blas_thread() -> None:
    me = os.getpid()
    out = run_waves(7, _where, 3)
    pids = [p for p, _ in out]
    assert [p == me for p in pids] == [True, False, False, True, False, False, True]
    assert pids[1] == pids[4] and pids[2] == pids[5] and pids[1] != pids[2]
    assert all(t == 1 for _, threads in out for t in threads)
    assert run_waves(3, _where, 1) == [(me, _where(0)[1])] * 3   # one job: no fork at all


def test_a_forked_workers_lower_failure_wins_over_the_callers() -> None:
    def fail_at(i: int) -> int:
        if i in (1, 2):   # 2 is the caller's (worker 0), 1 a forked worker's
            raise HalError(f"wave {i} failed")
        return i

    with pytest.raises(HalError, match="wave 1 failed"):
        run_waves(4, fail_at, 2)

    def fail_own(i: int) -> int:
        if i in (2, 3):
            raise HalError(f"wave {i} failed", hint="own")
        return i

    with pytest.raises(HalError, match="wave 2 failed") as ei:
        run_waves(4, fail_own, 2)
    assert ei.value.hint == "own"


def test_the_callers_waves_report_progress() -> None:
    done: list[int] = []
    assert run_waves(5, lambda i: -i, 2, done.append) == [0, -1, -2, -3, -4]
    assert sorted(done) == list(range(5))


def test_report_is_one_result_a_line_and_the_final_write_sees_later_changes(tmp_path) -> None:
    path = tmp_path / "r.json"
    w = ReportWriter(path, None, {"device": "d"}, every=2, min_interval=0)
    for i in range(3):
        w.add({"id": f"a/{i}", "verdict": "pass", "max_abs": float("nan") if i else 0.5})
    text = path.read_text()   # the rewrite after the 2nd case: the sidecar's lines
    sidecar = w.sidecar_path.read_text().splitlines()
    assert [ln.rstrip(",") for ln in text.splitlines() if ln.startswith("{\"id\"")] == \
        sidecar[:2]
    assert json.loads(text)["meta"] == {"device": "d", "complete": False}
    w.results[0]["reproducer"] = {"hal": "x.hal"}   # the CLI adds after the suite
    w.finalize()
    doc = json.loads(path.read_text())
    assert doc["results"] == w.results and doc["results"][0]["reproducer"] == {"hal": "x.hal"}
    assert doc["results"][1]["max_abs"] == "nan" and doc["summary"]["total"] == 3
    assert doc["meta"]["complete"] is True
