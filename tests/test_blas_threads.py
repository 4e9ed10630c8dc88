"""hal.blas_threads: worker processes run NumPy's BLAS on one thread; the parent keeps its
threads."""

import os

import pytest
from threadpoolctl import threadpool_info

from hal.backends.cpu_sim.parallel import run_waves, start_child


def _blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="forked workers need os.fork")


def test_wave_workers_and_a_sampled_child_use_one_blas_thread():
    before = _blas_threads()
    assert before, "NumPy's BLAS is not visible to threadpoolctl"
    assert run_waves(3, lambda i: _blas_threads(), jobs=2) == [[1] * len(before)] * 3
    assert start_child(_blas_threads).join() == [1] * len(before)
    assert _blas_threads() == before          # this process keeps its threads


def test_conformance_workers_use_one_blas_thread():
    import multiprocessing as mp

    from hal.conformance.workers import _serve

    parent, child = mp.Pipe()
    p = mp.get_context("fork").Process(target=_serve, args=(child, lambda cid, cfg: {
        "id": cid, "threads": _blas_threads()}, None), daemon=True)
    p.start()
    parent.send(["a"])
    kind, res = parent.recv()
    assert kind == "result" and res["threads"] and set(res["threads"]) == {1}
    assert parent.recv() == ("done", None)
    parent.send(None)
    p.join(10)


def test_one_blas_thread_within_a_block_gives_the_callers_count_back():
    from hal.blas_threads import one_blas_thread_within

    before = _blas_threads()
    with one_blas_thread_within():
        assert _blas_threads() == [1] * len(before)
    assert _blas_threads() == before


def test_one_numpy_blas_thread_within_a_block_gives_the_callers_count_back():
    from hal.blas_threads import one_numpy_blas_thread_within

    def numpy_blas() -> list[int]:
        return [i["num_threads"] for i in threadpool_info()
                if i["user_api"] == "blas" and "numpy" in i["filepath"]]

    before = numpy_blas()
    assert before, "NumPy's BLAS is not visible to threadpoolctl"
    with one_numpy_blas_thread_within():
        assert numpy_blas() == [1] * len(before)
    assert numpy_blas() == before


def test_one_numpy_blas_thread_within_leaves_one_thread_alone(monkeypatch):
    """Already on one thread (a conformance worker): no limit and restore at all (the
    block is entered once a case); with more threads the limit still applies."""
    from threadpoolctl import ThreadpoolController, threadpool_limits

    from hal.blas_threads import one_numpy_blas_thread_within

    calls = []
    real = ThreadpoolController.limit
    monkeypatch.setattr(ThreadpoolController, "limit",
                        lambda self, **kw: calls.append(kw) or real(self, **kw))
    with threadpool_limits(limits=1, user_api="blas"):
        with one_numpy_blas_thread_within():
            pass
        assert calls == []
    with threadpool_limits(limits=2, user_api="blas"):
        with one_numpy_blas_thread_within():
            assert set(_blas_threads()) == {1}
        assert calls == [{"limits": 1}]
