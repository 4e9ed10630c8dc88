"""Run a launch's waves in forked worker processes: `sim_jobs`, `SharedOutputs`, `run_waves`.

The blocks of a launch are independent on a GPU (no block reads what another block of
the same launch stores, apart from global atomics, which the caller keeps serial), so
the simulator's waves are too. `run_waves` runs `jobs` workers: worker r runs waves
r, r + jobs, r + 2 jobs, ... in order, stopping after its first failure. Worker 0 is
the calling process (a fork of a large process is not cheap: one fewer per launch);
the others are forks that send each wave's result (counters, written indices: small)
back through a pipe. The parent gathers the results by wave index, so counters are
merged in wave order, exactly as the serial loop adds them, and the failure reported is
the one of the lowest failing wave (every lower wave ran, in some worker), which is the
one the serial loop reports.

Memory: workers are forks, so the tensors are shared copy-on-write and never copied;
the buffers a kernel stores into (its non-readonly parameters) are copied once into
shared memory (`SharedOutputs`, anonymous MAP_SHARED pages) before the fork and back
after, so each worker's stores land where the parent sees them. Every other global
buffer is handed to the workers read-only, so a store the kernel was not declared to
make fails loudly in the worker instead of being lost. Each worker adds one wave's
lane arrays; the processes together hold about the tensors plus `jobs` waves.

Needs os.fork (Linux, macOS); elsewhere `sim_jobs` is 1 and the serial loop runs.
"""

from __future__ import annotations

import gc
import mmap
import os
import pickle
import select
import selectors
import signal
import struct
import traceback
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np

from hal.blas_threads import one_blas_thread, one_blas_thread_within
from hal.errors import HalError

JOBS_ENV = "HAL_SIM_JOBS"
MAX_DEFAULT_JOBS = 8
_HEADER = struct.Struct("<Q")


def sim_jobs(jobs: int | None = None) -> int:
    """Worker processes for one launch: `jobs`, else $HAL_SIM_JOBS, else the CPUs this
    process may use (at most MAX_DEFAULT_JOBS); 1 where os.fork is missing."""
    if not hasattr(os, "fork"):
        return 1
    if jobs is None:
        env = os.environ.get(JOBS_ENV, "").strip()
        if env:
            if not env.isdigit() or int(env) < 1:
                raise HalError(f"{JOBS_ENV}={env!r} is not a positive integer",
                               hint=f"e.g. {JOBS_ENV}=2, or {JOBS_ENV}=1 for one process")
            jobs = int(env)
        else:
            cpus = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else os.cpu_count() or 1)
            jobs = min(cpus, MAX_DEFAULT_JOBS)
    if jobs < 1:
        raise HalError(f"--jobs {jobs}: the number of simulator processes must be >= 1",
                       hint="--jobs 1 runs every wave in this process")
    return int(jobs)


class SharedOutputs:
    """Shared-memory copies of the arrays a launch stores into (aliases share one copy).

    `swap(arrays, written)` returns the list to hand to the workers: a shared copy for
    each array in `written`, a read-only view of each other one. `copy_back()` writes
    the shared copies into the caller's arrays and releases them."""

    def __init__(self) -> None:
        self._pairs: list[tuple[np.ndarray, np.ndarray, mmap.mmap]] = []

    def swap(self, arrays: Sequence[np.ndarray], written: Sequence[bool]) -> list[np.ndarray]:
        by_addr: dict[tuple[int, int], np.ndarray] = {}
        out = []
        for a, w in zip(arrays, written, strict=True):
            if not w or a.nbytes == 0:
                v = a.view()
                v.flags.writeable = False
                out.append(v)
                continue
            key = (a.__array_interface__["data"][0], a.nbytes)
            sh = by_addr.get(key)
            if sh is None:
                mm = mmap.mmap(-1, a.nbytes)
                sh = np.frombuffer(mm, dtype=a.dtype, count=a.size)
                sh[...] = a
                by_addr[key] = sh
                self._pairs.append((a, sh, mm))
            out.append(sh)
        return out

    def copy_back(self) -> None:
        for a, sh, _ in self._pairs:
            a[...] = sh
        self._pairs.clear()   # the pages go with the last view of them

    def release(self) -> None:
        """Drop the shared copies without writing them back (their values were read
        where they are); the pages go with the last view of them."""
        self._pairs.clear()


class WorkerLost(HalError):
    """A simulator worker process ended without reporting its waves."""


def _send(fd: int, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _pack_error(e: BaseException) -> tuple:
    """An exception as (class, args, attributes, traceback text): rebuilt in the parent
    without calling its __init__, so typed errors with keyword fields survive."""
    state = {k: v for k, v in vars(e).items() if _picklable(v)}
    return (type(e), e.args, state, traceback.format_exc())


def _picklable(v: Any) -> bool:
    try:
        pickle.dumps(v)
        return True
    except Exception:
        return False


def _unpack_error(packed: tuple) -> BaseException:
    cls, args, state, _tb = packed
    e = cls.__new__(cls)
    e.args = args
    vars(e).update(state)
    return e


def _worker(r: int, jobs: int, n: int, run_wave: Callable[[int], Any], fd: int) -> None:
    for i in range(r, n, jobs):
        try:
            res = run_wave(i)
        except BaseException as e:   # noqa: BLE001 - every failure goes to the parent
            try:
                _send(fd, (i, False, _pack_error(e)))
            except Exception:
                _send(fd, (i, False, (HalError, (f"{type(e).__name__}: {e}",), {}, "")))
            return
        _send(fd, (i, True, res))


def _fork_worker(r: int, jobs: int, n: int, run_wave: Callable[[int], Any]) -> tuple[int, int]:
    """(pid, read end of its pipe) of a forked worker running waves r, r + jobs, ..."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:   # the worker: run its waves, report, leave without cleanup
        code = 0
        try:
            os.close(rfd)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            one_blas_thread()   # the workers share the cores (hal.blas_threads)
            _worker(r, jobs, n, run_wave, wfd)
        except BaseException:   # noqa: BLE001
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    return pid, rfd


def _run_own_share(jobs: int, n: int, run_wave: Callable[[int], Any],
                   results: dict[int, tuple[bool, Any]],
                   on_done: Callable[[int], None] | None) -> None:
    """Worker 0's waves (0, jobs, 2 jobs, ...) in this process, stopping after the first
    that fails (its exception kept, as a worker's is). BLAS keeps to one thread here too
    while the forked workers share the cores (hal.blas_threads)."""
    with one_blas_thread_within() if jobs > 1 else nullcontext():
        for i in range(0, n, jobs):
            try:
                results[i] = (True, run_wave(i))
            except Exception as e:   # an interrupt leaves at once (the workers are ended)
                results[i] = (False, e)
                return
            if on_done is not None:
                on_done(i)


def _gather(fds: list[int], results: dict[int, tuple[bool, Any]],
            on_done: Callable[[int], None] | None) -> None:
    """Every result the workers send, until each has closed its pipe."""
    sel = selectors.DefaultSelector()
    bufs: dict[int, bytearray] = {}
    for fd in fds:
        sel.register(fd, selectors.EVENT_READ)
        bufs[fd] = bytearray()
    try:
        while bufs:
            for key, _ in sel.select():
                fd = key.fd
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    sel.unregister(fd)
                    del bufs[fd]
                    continue
                buf = bufs[fd]
                buf += chunk
                while len(buf) >= _HEADER.size:
                    (size,) = _HEADER.unpack_from(buf)
                    if len(buf) < _HEADER.size + size:
                        break
                    i, ok, res = pickle.loads(bytes(buf[_HEADER.size:_HEADER.size + size]))
                    del buf[:_HEADER.size + size]
                    results[i] = (ok, res if ok else _unpack_error(res))
                    if ok and on_done is not None:
                        on_done(i)
    finally:
        sel.close()


def run_waves(n: int, run_wave: Callable[[int], Any], jobs: int,
              on_done: Callable[[int], None] | None = None) -> list[Any]:
    """[run_wave(i) for i in range(n)], computed by `jobs` workers: this process is
    worker 0 and forks the others (a fork of a large process costs ~0.1 s of CPU in
    page-table copies and the page faults after it: one fork fewer per launch); the
    first failing wave's exception (lowest index) is raised. `on_done(i)` runs in this
    process as wave i's result arrives."""
    jobs = max(1, min(jobs, n))
    results: dict[int, tuple[bool, Any]] = {}
    workers: list[tuple[int, int]] = []
    finished = False
    try:
        for r in range(1, jobs):
            workers.append(_fork_worker(r, jobs, n, run_wave))
        _run_own_share(jobs, n, run_wave, results, on_done)
        _gather([fd for _, fd in workers], results, on_done)
        finished = True
    finally:
        for pid, fd in workers:   # every worker has closed its pipe, or this process is leaving
            try:
                if not finished:
                    os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (ChildProcessError, ProcessLookupError):
                pass
            os.close(fd)
    out = []
    for i in range(n):
        if i not in results:
            raise WorkerLost(f"cpu_sim worker process ended without running wave {i} of {n}",
                             hint="run again with --jobs 1 (HAL_SIM_JOBS=1) to see the "
                                  "failure in this process")
        ok, res = results[i]
        if not ok:
            raise res
        out.append(res)
    return out


class ChildRun:
    """`fn()` running in one forked process while this one goes on (`start_child`);
    `join()` waits and returns its result, or raises its exception (WorkerLost if it
    died). Stores it makes land only in SharedOutputs pages handed to it before."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        rfd, wfd = os.pipe()
        # the child's collections leave the parent's objects alone (gc.freeze: no
        # copy-on-write of every page holding one when the child's gc walks them)
        gc.freeze()
        try:
            pid = os.fork()
        except BaseException:
            gc.unfreeze()   # no child: this process collects its objects again
            raise
        if pid:
            gc.unfreeze()
        if pid == 0:
            code = 0
            try:
                os.close(rfd)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                one_blas_thread()   # this process shares the cores (hal.blas_threads)
                try:
                    res = fn()
                except BaseException as e:   # noqa: BLE001 - every failure goes back
                    try:
                        _send(wfd, (0, False, _pack_error(e)))
                    except Exception:
                        _send(wfd, (0, False, (HalError, (f"{type(e).__name__}: {e}",), {},
                                               "")))
                else:
                    _send(wfd, (0, True, res))
            except BaseException:   # noqa: BLE001
                code = 1
            finally:
                os._exit(code)
        os.close(wfd)
        self.pid, self.fd = pid, rfd

    def join(self) -> Any:
        buf = bytearray()
        try:
            while True:
                chunk = os.read(self.fd, 1 << 20)
                if not chunk:
                    break
                buf += chunk
        finally:
            os.close(self.fd)
            os.waitpid(self.pid, 0)
        if len(buf) < _HEADER.size:
            raise WorkerLost("cpu_sim child process ended without reporting",
                             hint="run again with --jobs 1 (HAL_SIM_JOBS=1) to see the "
                                  "failure in this process")
        (size,) = _HEADER.unpack_from(buf)
        _, ok, res = pickle.loads(bytes(buf[_HEADER.size:_HEADER.size + size]))
        if not ok:
            raise _unpack_error(res)
        return res

    def done(self) -> bool:
        """Whether the child has finished (its result, or its end, is waiting)."""
        return bool(select.select([self.fd], [], [], 0)[0])

    def kill(self) -> None:
        """End the child (this process is leaving because of another error)."""
        try:
            os.kill(self.pid, signal.SIGTERM)
            os.close(self.fd)
            os.waitpid(self.pid, 0)
        except (ChildProcessError, ProcessLookupError, OSError):
            pass


def start_child(fn: Callable[[], Any]) -> ChildRun:
    """Run `fn` in a forked process (see ChildRun); join() for its result."""
    return ChildRun(fn)


__all__ = ["sim_jobs", "SharedOutputs", "run_waves", "WorkerLost", "JOBS_ENV", "ChildRun",
           "start_child"]
