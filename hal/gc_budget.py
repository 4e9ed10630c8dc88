"""Fewer garbage collections in a long run of small jobs: `collect_less`, `collecting_less`.

The conformance suite runs thousands of cases in one long-lived process (each case worker,
or the whole suite with `--workers 1`). A case makes tens of thousands of small objects
(kernel IR nodes, plans, translated code), and the translation and planning memos keep
the recent ones, so the process holds ~300k tracked objects. With CPython's default
thresholds (700, 10, 10) it ran ~1800 young and 14 full collections over the `-k fused`
cases in one process: 2.8 of 30 CPU s, the full ones scanning every live object each
time. Raising the youngest generation's threshold to 50,000 allocations left 19 young
collections and no full one: 1.0 s. Collection only reclaims reference cycles (everything
else is freed when its last reference goes), so a run's results cannot depend on it; a
cycle lives a little longer before it is reclaimed.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

THRESHOLDS = (50_000, 20, 10)   # allocations before a young collection; then per generation


def collect_less() -> None:
    """Set this process's collection thresholds to THRESHOLDS (a worker process)."""
    gc.set_threshold(*THRESHOLDS)


@contextmanager
def collecting_less() -> Iterator[None]:
    """THRESHOLDS within the block; the caller's thresholds again after it."""
    before = gc.get_threshold()
    collect_less()
    try:
        yield
    finally:
        gc.set_threshold(*before)


__all__ = ["THRESHOLDS", "collect_less", "collecting_less"]
