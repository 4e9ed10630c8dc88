"""BLAS threads of worker processes: `one_blas_thread`, `one_blas_thread_within`.

NumPy's OpenBLAS starts one thread per core in every process. hal's worker processes
(the simulator's wave workers and a sampled kernel's child, backends/cpu_sim/parallel.py;
the conformance suite's case workers, conformance/workers.py) already use every core
between them, so their BLAS threads oversubscribe the machine, and OpenBLAS's idle
threads spin while waiting for work: on a 2-core machine the exact gpt_block_d768_s2048
run took 33 s wall and 61 CPU s with two wave workers of two BLAS threads each, 16 s and
24 CPU s with one BLAS thread per worker (benchmarks/results/issue-19.md, session 8). A
single-process run keeps its BLAS threads (a float64 reference of a model layer uses
both cores). threadpoolctl is the library made for this: it finds the BLAS NumPy loaded
and sets its thread count at run time, after the fork.

`one_blas_thread_within()` limits every BLAS loaded to one thread for a block and
restores the caller's counts after it: the simulator's calling process while its forked
wave workers run (backends/cpu_sim/parallel.py). `one_numpy_blas_thread_within()` does
the same for NumPy's BLAS with threadpoolctl's controller found once (its `limit` is
~10 us a call instead of ~0.3 ms for a fresh search, and it is entered once per
conformance case): the conformance bounds' small float64 matmuls (conformance/tolerance.py:
a second OpenBLAS thread cost 2-4x their CPU on shared cores, and the float64 sums then
match those of the suite's workers, which run on one thread). A BLAS loaded after that
first call (SciPy's own, say) is not limited by it; NumPy's is loaded with NumPy.
"""

from __future__ import annotations

# imported here, in the parent, not after the fork: a worker that failed to import it
# would end without reporting why ("child process ended without reporting")
import functools
from contextlib import AbstractContextManager, nullcontext

from threadpoolctl import ThreadpoolController, threadpool_limits


def one_blas_thread() -> None:
    """Limit this process's BLAS to one thread (a worker process, after its fork)."""
    threadpool_limits(limits=1, user_api="blas")


def one_blas_thread_within() -> AbstractContextManager:
    """A block in which every BLAS loaded runs on one thread (the caller's counts come
    back after it)."""
    return threadpool_limits(limits=1, user_api="blas")


@functools.cache
def _numpy_blas() -> ThreadpoolController:
    import numpy  # noqa: F401  (loaded first: its BLAS is among the controller's)

    return ThreadpoolController().select(user_api="blas")


def one_numpy_blas_thread_within() -> AbstractContextManager:
    """A block in which NumPy's BLAS (and any other loaded before the first call) runs on
    one thread; the caller's counts come back after it. Where every one already runs on
    one thread (a conformance worker, after one_blas_thread) the block changes nothing:
    a null context, without threadpoolctl's limit and restore (~25 us, once a case)."""
    ctl = _numpy_blas()
    if all(lib.get_num_threads() == 1 for lib in ctl.lib_controllers):
        return nullcontext()
    return ctl.limit(limits=1)


__all__ = ["one_blas_thread", "one_blas_thread_within", "one_numpy_blas_thread_within"]
