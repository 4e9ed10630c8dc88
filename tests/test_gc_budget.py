"""hal.gc_budget: the conformance suite's long runs collect garbage less often."""

import gc

import hal.conformance.runner as runner
from hal.conformance.report import ReportWriter
from hal.conformance.runner import SuiteConfig, run_suite
from hal.gc_budget import THRESHOLDS, collect_less, collecting_less

CASE = "elementwise/add/f32/257"


def test_collecting_less_sets_and_restores_the_thresholds() -> None:
    before = gc.get_threshold()
    assert before != THRESHOLDS
    with collecting_less():
        assert gc.get_threshold() == THRESHOLDS
    assert gc.get_threshold() == before


def test_collect_less_is_for_the_whole_process() -> None:
    before = gc.get_threshold()
    try:
        collect_less()
        assert gc.get_threshold() == THRESHOLDS
    finally:
        gc.set_threshold(*before)


def test_an_in_process_suite_runs_its_cases_collecting_less(monkeypatch) -> None:
    seen = []
    real = runner._worker

    def spy(ids, cfg):
        seen.append(gc.get_threshold())
        return real(ids, cfg)

    monkeypatch.setattr(runner, "_worker", spy)
    before = gc.get_threshold()
    w = ReportWriter(None, None, {})
    run_suite(SuiteConfig(pattern=CASE, workers=1), w)
    assert seen and all(t == THRESHOLDS for t in seen)
    assert w.results[0]["verdict"] == "pass"
    assert gc.get_threshold() == before   # the caller's setting comes back


def test_a_suite_worker_collects_less(monkeypatch) -> None:
    from hal.conformance import workers

    seen = []

    class _Conn:
        def __init__(self):
            self.batches = [[CASE], None]

        def recv(self):
            return self.batches.pop(0)

        def send(self, msg):
            seen.append((msg[0], gc.get_threshold()))

    before = gc.get_threshold()
    monkeypatch.setattr(workers, "one_blas_thread", lambda: None)
    try:
        workers._serve(_Conn(), lambda case_id, cfg: {"id": case_id}, None)
    finally:
        gc.set_threshold(*before)
    assert seen == [("result", THRESHOLDS), ("done", THRESHOLDS)]
