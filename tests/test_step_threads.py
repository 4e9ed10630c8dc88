"""The reference's independent steps several at a time (hal/step_threads.py): they really
run at once, the float32 panels and the blocked attention give the bits of one thread,
errors come back, and a forked child runs on one thread."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import hal.reference_blocked as rb
from hal.dtypes import bf16, cast
from hal.ir.builder import GraphBuilder
from hal.reference import evaluate
from hal.step_threads import run_steps, step_threads, threads


def _drain(steps) -> int:
    return sum(1 for _ in steps)


def test_steps_run_at_once_and_rounds_finish_before_the_yield() -> None:
    met = threading.Barrier(2, timeout=10)   # breaks unless two steps run together
    ran: list[int] = []

    def step(i: int) -> None:
        met.wait()
        ran.append(i)

    with step_threads(2):
        assert threads() == 2
        gen = run_steps(lambda i=i: step(i) for i in range(4))
        next(gen)
        assert sorted(ran) == [0, 1]     # the whole first round, no more
        assert _drain(gen) == 1 and sorted(ran) == [0, 1, 2, 3]
    assert threads() == 1
    # one thread: a step per yield, in order
    order: list[int] = []
    assert _drain(run_steps(lambda i=i: order.append(i) for i in range(3))) == 3
    assert order == [0, 1, 2]


def test_a_failing_step_is_raised_after_its_round() -> None:
    done: list[int] = []

    def bad() -> None:
        raise ValueError("step 1 failed")

    def slow_ok() -> None:
        threading.Event().wait(0.05)
        done.append(2)

    with step_threads(3), pytest.raises(ValueError, match="step 1 failed"):
        _drain(run_steps([lambda: done.append(0), bad, slow_ok]))
    assert sorted(done) == [0, 2]   # the round's other steps finished first


def test_float32_panels_have_the_bits_of_one_thread(monkeypatch) -> None:
    monkeypatch.setattr(rb, "PANEL_ELEMENTS", 7 * 512)   # many ragged panels
    rng = np.random.default_rng(5)
    a = cast(rng.standard_normal((300, 512)), bf16)
    b = cast(rng.standard_normal((700, 512)), bf16)
    b[3, 7] = np.inf   # a panel with a non-finite sum goes to float64
    attrs = {"lhs_contracting": (1,), "rhs_contracting": (1,), "lhs_batch": (),
             "rhs_batch": ()}
    one = rb.dot_general_panels(a, b, attrs, float32_sums=True)
    calls: list[int] = []
    real = np.matmul

    def spy(*args, **kw):
        calls.append(threading.get_ident())
        return real(*args, **kw)

    monkeypatch.setattr(rb.np, "matmul", spy)
    with step_threads(3):
        many = rb.dot_general_panels(a, b, attrs, float32_sums=True)
    assert len(set(calls)) > 1   # the panels ran on more than one thread
    np.testing.assert_array_equal(many, one)
    assert np.isnan(one).any() or np.isinf(one).any()


def test_blocked_attention_has_the_bits_of_one_thread(monkeypatch) -> None:
    g = GraphBuilder("attn")
    q = g.input("q", bf16, (1, 8, 300, 32))
    k = g.input("k", bf16, (1, 2, 300, 32))
    v = g.input("v", bf16, (1, 2, 300, 32))
    g.output(g.op("scaled_dot_product_attention", q, k, v, causal=True))
    graph = g.build()
    rng = np.random.default_rng(2)
    inputs = {x.name: cast(rng.normal(0, 2, x.shape), x.dtype) for x in graph.inputs}
    monkeypatch.setattr(rb, "TILE_ELEMENTS", 4 * 300 * 16)   # many tiles
    monkeypatch.setattr(rb, "CAUSAL_ROWS", 16)
    assert rb.use_blocked(graph.nodes[0])
    one = evaluate(graph, inputs)
    seen: list[int] = []
    real = rb._Float32Tiles.probs

    def spy(self, *a, **kw):
        seen.append(threading.get_ident())
        return real(self, *a, **kw)

    monkeypatch.setattr(rb._Float32Tiles, "probs", spy)
    with step_threads(2):
        many = evaluate(graph, inputs)
    assert len(set(seen)) == 2 and len(seen) == 2 * 19   # 2 kv heads x 19 row tiles
    for name in one:
        np.testing.assert_array_equal(many[name], one[name])


def test_a_forked_child_runs_its_steps_on_one_thread() -> None:
    with step_threads(2):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:   # the child: no helper threads, steps inline
            idents = set()
            for _ in run_steps(lambda: idents.add(threading.get_ident()) for _ in range(3)):
                pass
            os.write(w, b"%d %d" % (threads(), len(idents)))
            os._exit(0)
        os.close(w)
        got = os.read(r, 64)
        os.waitpid(pid, 0)
    assert got == b"1 1"


def test_a_pool_shut_down_meanwhile_runs_the_round_here() -> None:
    """A generator still running after its step_threads block ended in another thread
    (its pool shut down) runs its rounds in its own thread instead of failing."""
    import hal.step_threads as st

    with step_threads(2):
        assert st._pool is not None
        st._pool.shutdown(wait=True)
        got: list[int] = []
        assert _drain(run_steps(lambda i=i: got.append(i) for i in range(4))) == 2
        assert got == [0, 1, 2, 3]
