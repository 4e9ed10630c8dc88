"""Worker processes for the conformance runner: `run_parallel`, explicit start and shutdown.

Why not a ProcessPoolExecutor: on Ctrl-C its `with` block waits for the workers, which
the same SIGINT interrupted mid-case, and the run hung in a futex wait (issue 16). Here:

* each worker ignores SIGINT (only the parent decides what an interrupt means) and talks
  to the parent over its own pipe: the parent sends a batch of case ids, the worker sends
  back one result per case as soon as it has it, then "done";
* the parent waits on every pipe and every worker's process sentinel at once, so a result,
  a crashed worker and an interrupt are all seen at once; a crashed worker's unfinished
  cases become "error" verdicts and a fresh worker takes its place;
* on any exit (done, KeyboardInterrupt, an error) `shutdown` stops every worker
  explicitly: a stop message, then terminate, then kill, each with a short join, so an
  interrupted run is gone well within 2 s and never hangs.
Every result received before an interrupt has already gone to `emit`.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from hal.blas_threads import one_blas_thread
from hal.gc_budget import collect_less

Result = dict[str, Any]


def _serve(conn: Connection, run_one: Callable[[str, Any], Result], cfg: Any) -> None:
    """A worker's loop: receive a batch, send each result, then ("done", None)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    one_blas_thread()   # the workers share the cores (hal.blas_threads)
    collect_less()      # a long run of small cases (hal.gc_budget)
    try:
        while True:
            batch = conn.recv()
            if batch is None:
                return
            for case_id in batch:
                conn.send(("result", run_one(case_id, cfg)))
            conn.send(("done", None))
    except (EOFError, BrokenPipeError, OSError):
        return  # the parent went away


@dataclass
class _Worker:
    process: Any
    conn: Connection
    batch: list[str] = field(default_factory=list)
    received: set[str] = field(default_factory=set)


class WorkerPool:
    """`n` worker processes from multiprocessing context `ctx`, each running `run_one`."""

    def __init__(self, n: int, ctx: Any, run_one: Callable[[str, Any], Result], cfg: Any):
        self.ctx, self.run_one, self.cfg = ctx, run_one, cfg
        self.workers: list[_Worker] = []
        for _ in range(n):
            self.workers.append(self._start())

    def _start(self) -> _Worker:
        parent, child = self.ctx.Pipe(duplex=True)
        p = self.ctx.Process(target=_serve, args=(child, self.run_one, self.cfg), daemon=True)
        p.start()
        child.close()
        return _Worker(p, parent)

    def shutdown(self, grace: float = 0.3) -> None:
        """Stop every worker: ask, then terminate, then kill; never waits long."""
        for w in self.workers:
            try:
                w.conn.send(None)
            except (OSError, ValueError):
                pass
        for w in self.workers:
            w.process.join(grace if not w.batch else 0)
            if w.process.is_alive():
                w.process.terminate()
                w.process.join(grace)
            if w.process.is_alive():
                w.process.kill()
                w.process.join(grace)
            w.conn.close()
        self.workers = []

    def replace(self, w: _Worker) -> _Worker:
        """A fresh worker in place of a dead one."""
        i = self.workers.index(w)
        w.conn.close()
        w.process.join(0.1)
        self.workers[i] = self._start()
        return self.workers[i]


def run_parallel(ids: Sequence[str], batch_size: int, n_workers: int, ctx: Any,
                 run_one: Callable[[str, Any], Result], cfg: Any,
                 emit: Callable[[Result], None],
                 crashed: Callable[[str, str], Result]) -> None:
    """Run `ids` in batches over `n_workers` processes; `emit` gets every result as it
    arrives; `crashed(case_id, why)` makes the record of a case whose worker died."""
    batches = [list(ids[i:i + batch_size]) for i in range(0, len(ids), batch_size)]
    queue = iter(batches)
    pool = WorkerPool(min(n_workers, max(1, len(batches))), ctx, run_one, cfg)
    try:
        def feed(w: _Worker) -> None:
            nxt = next(queue, None)
            w.batch, w.received = (nxt or []), set()
            if nxt is not None:
                w.conn.send(nxt)

        def receive(w: _Worker) -> bool:
            """Handle one message from `w`; False when its pipe is closed (it died)."""
            try:
                kind, rec = w.conn.recv()
            except (EOFError, OSError):
                return False
            if kind == "result":
                w.received.add(rec["id"])
                emit(rec)
            else:  # "done"
                feed(w)
            return True

        def bury(w: _Worker) -> None:
            """A dead worker: take what it sent, error the rest, start another."""
            while w.batch:
                try:
                    if not w.conn.poll() or not receive(w):
                        break
                except (EOFError, OSError):
                    break
            w.process.join(0.5)
            why = f"worker crashed (exit code {w.process.exitcode})"
            for case_id in w.batch:
                if case_id not in w.received:
                    emit(crashed(case_id, why))
            w.batch = []
            feed(pool.replace(w))

        for w in pool.workers:
            feed(w)
        while any(w.batch for w in pool.workers):
            busy = [w for w in pool.workers if w.batch]
            handles = {w.conn: w for w in busy} | {w.process.sentinel: w for w in busy}
            for ready in wait(list(handles), timeout=1.0):
                w = handles[ready]
                if w not in pool.workers or not w.batch:
                    continue
                if ready is w.conn and receive(w):
                    continue
                bury(w)
    finally:
        pool.shutdown()
