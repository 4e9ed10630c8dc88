"""The simulator's translation caches: compiled code objects by source text
(backends/cpu_sim/code_cache.py), the translation cache by kernel structure
(simulator.compiled) and the per-node memo of codegen's analyses (node_memo.py).
A hit must never hand a changed kernel another kernel's code or values."""

from __future__ import annotations

import numpy as np

from hal.backends.cpu_sim import code_cache, simulator
from hal.backends.cpu_sim.codegen import compile_kernel
from hal.backends.cpu_sim.node_memo import MISSING, NodeMemo
from hal.backends.cpu_sim.ranges import IndexRanges
from hal.backends.cpu_sim.simulator import compiled, simulate
from hal.devices.loader import load_spec
from hal.dtypes import f32, i32
from hal.kernel.ir import (
    BLOCK_IDX_X,
    THREAD_IDX,
    BufferParam,
    Const,
    Declare,
    Kernel,
    Load,
    Store,
    Var,
)

H100 = load_spec("h100-sxm")
N = 256


def _kernel(value: float, shift: int, name: str = "k") -> Kernel:
    """o[i] = x[i + shift] * value (+ nothing past N - shift)."""
    i = Var("i", i32)
    src = i + Const(shift, i32)
    load = Load("x", src, f32, mask=src.lt(Const(N, i32)))
    return Kernel(name, [BufferParam("x", f32, (N,)), BufferParam("o", f32, (N,), readonly=False)],
                  [Declare(i, BLOCK_IDX_X * Const(64, i32) + THREAD_IDX),
                   Store("o", i, load * Const(value, f32))],
                  grid=(N // 64, 1, 1), block=64)


def _run(k: Kernel) -> np.ndarray:
    x = np.arange(N, dtype=np.float32)
    o = np.zeros(N, np.float32)
    simulate(k, {"x": x, "o": o}, H100)
    return o


def _expected(value: float, shift: int) -> np.ndarray:
    x = np.arange(N, dtype=np.float32)
    return np.where(np.arange(N) + shift < N, np.roll(x, -shift), 0).astype(np.float32) * \
        np.float32(value)


def test_compile_wave_hits_on_the_same_source_under_any_name():
    """One compile per source; another name gets the code renamed, never recompiled."""
    code_cache.clear()
    a = code_cache.compile_wave("def run(W, P):\n    return 1\n", "<k a>")
    assert code_cache.compile_wave("def run(W, P):\n    return 1\n", "<k a>") is a
    assert code_cache.compile_wave("def run(W, P):\n    return 2\n", "<k a>") is not a
    b = code_cache.compile_wave("def run(W, P):\n    return 1\n", "<k b>")
    assert code_cache.cached() == 2                                     # not compiled again
    assert b.co_filename == "<k b>" and a.co_filename == "<k a>"
    assert b == compile("def run(W, P):\n    return 1\n", "<k b>", "exec")   # as compiled


def test_a_renamed_code_names_its_kernel_in_every_function():
    """The functions the code defines (run, a widened loop's prelude function) carry the
    new name too: a traceback out of either names the kernel that ran."""
    src = ("def _wb1(x):\n    return 1 // x\n"
           "def run(W, P):\n    return _wb1(W)\n")
    code_cache.clear()
    code_cache.compile_wave(src, "<cpu_sim kernel first>")
    code = code_cache.compile_wave(src, "<cpu_sim kernel second>")
    ns: dict = {}
    exec(code, ns)  # noqa: S102
    try:
        ns["run"](0, None)
    except ZeroDivisionError as e:
        tb = e.__traceback__
        names = []
        while tb is not None:
            names.append(tb.tb_frame.f_code.co_filename)
            tb = tb.tb_next
    assert names[-2:] == ["<cpu_sim kernel second>"] * 2
    assert ns["_wb1"].__code__.co_filename == "<cpu_sim kernel second>"


def test_compile_wave_is_bounded(monkeypatch):
    code_cache.clear()
    monkeypatch.setattr(code_cache, "CODE_CACHE_SIZE", 2)
    first = code_cache.compile_wave("x = 0\n", "<f>")
    for n in (1, 2):
        code_cache.compile_wave(f"x = {n}\n", "<f>")
    assert code_cache.cached() == 2
    assert code_cache.compile_wave("x = 0\n", "<f>") is not first   # evicted, compiled again


def test_a_float_constant_shares_the_code_but_not_the_value():
    """Kernels differing only in a float constant translate to one source (the constant
    is a bound name): the second run must use its own constant."""
    code_cache.clear()
    simulator._CACHE.clear()
    a, b = _kernel(2.0, 0), _kernel(3.0, 0)
    ca, cb = compile_kernel(a), compile_kernel(b)
    assert ca.source == cb.source and code_cache.cached() == 1
    assert ca.run.__code__ is cb.run.__code__
    np.testing.assert_array_equal(_run(a), _expected(2.0, 0))
    np.testing.assert_array_equal(_run(b), _expected(3.0, 0))


def test_a_changed_kernel_never_gets_a_stale_translation():
    """An index constant is in the source: a changed kernel compiles its own code, and
    the structure cache tells the two kernels apart (hit for an equal kernel only)."""
    code_cache.clear()
    simulator._CACHE.clear()
    a, b = _kernel(2.0, 0), _kernel(2.0, 5)
    assert compiled(a) is compiled(_kernel(2.0, 0))          # equal structure: a hit
    assert compiled(b) is not compiled(a)
    assert compiled(b).source != compiled(a).source
    np.testing.assert_array_equal(_run(a), _expected(2.0, 0))
    np.testing.assert_array_equal(_run(b), _expected(2.0, 5))
    np.testing.assert_array_equal(_run(a), _expected(2.0, 0))   # and back


def test_the_kernel_name_reaches_the_code_object():
    """The file name names the kernel in tracebacks: equal kernels under two names share
    one compile, each code object with its own name."""
    code_cache.clear()
    one, two = compile_kernel(_kernel(2.0, 0, "k0_exp")), compile_kernel(_kernel(2.0, 0, "g0_exp"))
    assert one.run.__code__.co_filename == "<cpu_sim kernel k0_exp>"
    assert two.run.__code__.co_filename == "<cpu_sim kernel g0_exp>"
    assert one.source == two.source and code_cache.cached() == 1


def test_node_memo_keeps_answers_per_node_object():
    m = NodeMemo()
    e, same_value = Const(1, i32), Const(1, i32)
    assert m.by_id.get(id(e), MISSING) is MISSING
    assert m.put(e, None) is None                          # an answer may be None
    assert m.by_id.get(id(e), MISSING) is None
    assert m.by_id.get(id(same_value), MISSING) is MISSING  # an equal node is another key
    m.put(same_value, 9)
    assert m.by_id[id(same_value)] == 9 and len(m) == 2


def test_memoised_intervals_equal_fresh_ones():
    """IndexRanges memoises by node: asking in any order gives the unmemoised answers."""
    i = Var("i", i32)
    k = _kernel(1.0, 3)
    exprs = [BLOCK_IDX_X * Const(64, i32) + THREAD_IDX, i + Const(3, i32), i,
             (i + Const(3, i32)) * Const(1 << 24, i32)]
    memo = IndexRanges(k, lambda e: True)
    asked = [memo.interval(e) for e in exprs] + [memo.interval(e) for e in reversed(exprs)]
    fresh = [IndexRanges(k, lambda e: True).interval(e) for e in exprs]
    assert asked == fresh + fresh[::-1]
    assert fresh[2] == (0, N - 1) and fresh[3] == (3 << 24, 258 << 24)   # past i32
