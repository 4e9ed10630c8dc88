"""cpu_sim's heap policy for sampled runs (backend._Heap): glibc keeps freed memory for
reuse inside `reuse()` (no mmap, no trimming), the defaults come back when the outermost
one ends, and free pages are released before a fork only while it is on."""

from __future__ import annotations

import numpy as np
import pytest

from hal.backends.cpu_sim import backend as be


class _FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("trim", pad))
        return 1


@pytest.fixture
def heap():
    h = be._Heap()
    h.libc = _FakeLibc()
    return h


def test_reuse_turns_mmap_and_trimming_off_then_back_on(heap):
    with heap.reuse():
        on = list(heap.libc.calls)
        with heap.reuse():          # nested: nothing set again, nothing restored early
            heap.release_free()
        assert heap.libc.calls == on + [("trim", 0)]
    assert on == [("mallopt", _Heap.M_TRIM_THRESHOLD, 2**31 - 1), ("mallopt", _Heap.M_MMAP_MAX, 0)]
    assert heap.libc.calls[-3:] == [("mallopt", _Heap.M_TRIM_THRESHOLD, _Heap.TRIM_DEFAULT),
                                    ("mallopt", _Heap.M_MMAP_MAX, _Heap.MMAP_MAX_DEFAULT),
                                    ("trim", 0)]
    assert heap.depth == 0


def test_restored_after_an_error_and_off_means_untouched(heap):
    with pytest.raises(RuntimeError), heap.reuse():
        raise RuntimeError("boom")
    assert heap.depth == 0 and heap.libc.calls[-1] == ("trim", 0)
    heap.libc.calls.clear()
    with heap.reuse(on=False):
        heap.release_free()        # not on: no trim
    assert heap.libc.calls == []


def test_real_allocator_round_trip():
    """On this machine's libc the calls succeed and arrays still behave."""
    with be._reused_heap():
        a = np.ones(5 << 20)
        b = a * 2
        del a
        be._HEAP.release_free()
        assert float(b.sum()) == 2 * (5 << 20)


_Heap = be._Heap


def _pointwise(n: int):
    from hal.dtypes import f32
    from hal.ir import GraphBuilder

    b = GraphBuilder("pw")
    x = b.input("x", f32, (n,))
    b.output(b.op("exp", b.op("mul", x, x), name="y"))
    return b.build()


@pytest.mark.parametrize("jobs", [1, 2])
def test_sampled_runs_and_only_they_reuse_the_heap(monkeypatch, heap, jobs):
    from hal.backends.cpu_sim.sampled import SampleOptions
    from hal.reference import random_inputs

    monkeypatch.setattr(be, "_HEAP", heap)
    monkeypatch.setattr(be, "_reused_heap", heap.reuse)
    g = _pointwise(1 << 14)
    inputs = random_inputs(g, seed=0)
    exact = be.CpuSimBackend().run_graph(g, inputs, "h100-sxm", jobs=jobs)
    assert heap.libc.calls == []
    sampled = be.CpuSimBackend().run_graph(g, inputs, "h100-sxm", jobs=jobs,
                                           sample=SampleOptions(0.1, seed=0))
    calls = heap.libc.calls
    assert calls[:2] == [("mallopt", _Heap.M_TRIM_THRESHOLD, 2**31 - 1),
                         ("mallopt", _Heap.M_MMAP_MAX, 0)]
    assert calls.count(("trim", 0)) == (2 if jobs == 2 else 1)   # before the fork, at the end
    assert exact.report["ok"] and sampled.report["ok"]
