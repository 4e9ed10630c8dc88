"""Independent steps of the reference run several at a time: `step_threads`, `run_steps`.

A sampled cpu_sim run holds BLAS to one thread (backends/cpu_sim/backend.py: OpenBLAS's
float32 sums change with its thread count, and those sums are the unsimulated blocks'
values). Its whole-output reference then ran on one core while the sampled kernels'
children, once they got cheaper, left the other core idle: on the Llama-3-8B layer the
reference alone set the wall. Its big steps are independent: the float32 panels of a
projection (`reference_blocked._float32_panels`) and the (head, query rows) tiles of
blocked attention each write their own part of the output. `run_steps` runs such steps
up to `step_threads(n)`'s `n` at once, on threads (BLAS and NumPy's large loops release
the GIL), each step still one single-threaded BLAS call on the same operands: the bits
are those of one thread, whatever `n`.

It yields after each round of steps, with every step of the round finished, so a caller
pausing there (hal.reference.evaluate_steps: the sampled run forks its next child at
such a pause) never forks while a helper thread is working. A forked child starts with
one thread (the helpers do not exist there).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from itertools import islice

import numpy as np

_threads = 1
_pool: ThreadPoolExecutor | None = None


def threads() -> int:
    """How many steps `run_steps` runs at once here (1 outside `step_threads`)."""
    return _threads


@contextmanager
def step_threads(n: int) -> Iterator[None]:
    """A block in which `run_steps` runs up to `n` steps at once (n - 1 helper threads,
    stopped after the block)."""
    global _threads, _pool
    if n <= 1 or _pool is not None:   # (nested: the outer block's threads serve)
        yield
        return
    pool = ThreadPoolExecutor(n - 1, thread_name_prefix="hal-steps")
    _threads, _pool = n, pool
    try:
        yield
    finally:
        _threads, _pool = 1, None
        pool.shutdown(wait=True)


def _one_thread_in_child() -> None:
    global _threads, _pool
    _threads, _pool = 1, None


os.register_at_fork(after_in_child=_one_thread_in_child)


def _quiet(step: Callable[[], None]) -> None:
    with np.errstate(all="ignore"):   # (errstate is per thread: the drain's, as in one)
        step()


def run_steps(steps: Iterable[Callable[[], None]]) -> Generator[None, None, None]:
    """Call every one of `steps` (independent: each writes its own part of a result, and
    none reads another's), up to `threads()` at once, in order within each round; yield
    after each round, when all of its steps have finished. A step's exception is raised
    after the round's other steps finished, the earliest step's first."""
    it = iter(steps)
    while True:
        pool, n = _pool, _threads
        batch = list(islice(it, n if pool is not None else 1))
        if not batch:
            return
        futures: list[Future] = []
        here = batch[:1]
        for s in batch[1:]:
            try:
                futures.append(pool.submit(_quiet, s))   # type: ignore[union-attr]
            except RuntimeError:   # its block ended meanwhile (another thread's run)
                here.append(s)
        first: BaseException | None = None
        try:
            for s in here:
                _quiet(s)
        except BaseException as e:   # noqa: BLE001 - re-raised once the round is done
            first = e
        wait(futures)
        if first is not None:
            raise first
        for f in futures:
            if f.exception() is not None:
                raise f.exception()   # type: ignore[misc]
        yield


__all__ = ["run_steps", "step_threads", "threads"]
