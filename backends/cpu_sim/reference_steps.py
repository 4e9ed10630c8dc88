"""The whole-output reference run beside cpu_sim's groups: `ReferenceSteps`, and the
values a sampled group's unsimulated blocks take: `rest_values`."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from hal.ir.graph import Graph

from .lazy_buffers import LazyBuffers
from .sampled import functional_outputs

# a constant the reference reaches before cpu_sim needs it is made early when smaller
PULL_BYTES = 1 << 20
# the constants a sampled run keeps for a reference running behind its groups, at most
RETAIN_BYTES = 1 << 29


class ReferenceSteps:
    """hal.reference.evaluate_steps driven beside the groups: a node runs once the
    large constants it reads first are made by cpu_sim (handed over, not made again);
    a small one (under PULL_BYTES: norms, rope tables) is made early for it, and one
    cpu_sim does not make is the reference's own. cpu_sim keeps a constant it is done
    with until the reference has taken it (LazyBuffers.hold), so each weight is made
    once. `finish` runs the rest and returns the outputs."""

    def __init__(self, graph: Graph, inputs: Mapping[str, np.ndarray], lazy: LazyBuffers,
                 prim: Graph, groups: Sequence = (),
                 composites: Mapping[str, Any] | None = None):
        from hal.reference import evaluate_steps

        self.lazy = lazy
        own = {c.value.name for c in graph.constants}
        self.shape = {c.value.name: tuple(c.value.shape) for c in prim.constants
                      if c.value.name in own}
        self.nbytes = {c.value.name: c.value.type.numel * c.value.dtype.np_dtype.itemsize
                       for c in prim.constants if c.value.name in own}
        self.taken: set[str] = set()
        lazy.hold = lambda name: name in self.shape and name not in self.taken
        # per group, its outputs that are the graph's own named values (a decomposition's
        # internal names may differ between cpu_sim's graph and the reference's) and the
        # outputs of the large composites inside it: the reference keeps each as it passes
        # it, until its group takes it (values_for) or is done (forget)
        named = {v.name: v.type for n in graph.nodes for v in n.outputs}
        self.names: dict[int, list[str]] = {}
        for g in groups:
            made = {v.name for n in g.nodes for v in n.outputs}
            mine = [v.name for v in g.outputs if named.get(v.name) == v.type]
            mine += [c.outputs[0].name for out, c in (composites or {}).items() if out in made]
            self.names[id(g)] = list(dict.fromkeys(mine))
        self.wanted = {n: named[n] for names in self.names.values() for n in names}
        self.seen: dict[str, np.ndarray] = {}
        self.steps = evaluate_steps(graph, inputs, provide=self._provide,
                                    observe=self._observe)
        self.result: dict[str, np.ndarray] | None = None
        self.pending: list[str] | None = self._next()

    def _provide(self, name: str) -> np.ndarray | None:
        if name not in self.shape:
            return None
        self.taken.add(name)
        a = self.lazy.buffers.get(name)
        if a is None:
            a = self.lazy.retained.pop(name, None)
        return None if a is None else a.reshape(self.shape[name])

    def _observe(self, value: Any, a: np.ndarray) -> None:
        from hal.dtypes import narrow

        if self.wanted.get(value.name) == value.type:   # same name, shape and dtype
            # (`a` holds the value's rounded elements: _steps's observe)
            self.seen[value.name] = narrow(a, value.dtype).reshape(-1)

    def values_for(self, group: Any) -> dict[str, np.ndarray]:
        """The reference's values (1-D, declared dtype) of `group`'s outputs and inner
        composites' outputs that it computes under their names, running it as far as they
        need (making the constants it reads now, whatever their size)."""
        names = [n for n in self.names.get(id(group), ()) if n in self.wanted]
        while self.pending is not None and not all(n in self.seen for n in names):
            self._run_node(math.inf)
        got = {n: self.seen.pop(n) for n in names if n in self.seen}
        self.forget(group)
        return got

    def forget(self, group: Any) -> None:
        """`group` is done: the reference no longer keeps values for it."""
        for n in self.names.pop(id(group), ()):
            self.wanted.pop(n, None)
            self.seen.pop(n, None)

    def _next(self) -> list[str] | None:
        try:
            return next(self.steps)
        except StopIteration as done:
            self.result = done.value
            return None

    def advance(self, until: Callable[[], bool] | None = None) -> None:
        """Run the nodes whose first-use constants are available now; with `until`, stop
        before a node once it returns True."""
        while self.pending is not None:
            if until is not None and until():
                return
            if not self._run_node(PULL_BYTES):
                return

    def _run_node(self, pull_limit: float) -> bool:
        """Run the next node, first making the constants it reads that cpu_sim makes later;
        False (nothing run) when one of them is `pull_limit` bytes or more."""
        assert self.pending is not None
        later = [n for n in self.pending if n in self.shape and self.lazy.scheduled(n)]
        if any(self.nbytes[n] >= pull_limit for n in later):
            return False
        for n in later:
            self.lazy.make_now(n)
        self.pending = self._next()
        return True

    def caught_up(self) -> bool:
        """The constants cpu_sim keeps for the reference (made, not taken yet) are within
        RETAIN_BYTES: a reference behind the groups may stay behind."""
        return sum(a.nbytes for a in self.lazy.retained.values()) <= RETAIN_BYTES

    def finish(self) -> dict[str, np.ndarray]:
        while self.pending is not None:
            self.pending = self._next()
        assert self.result is not None
        return self.result


def rest_values(group: Any, buffers: Mapping[str, np.ndarray],
                 composites: Mapping[str, Any],
                 ref: ReferenceSteps | None) -> tuple[dict[str, np.ndarray], str]:
    """The values a sampled group's blocks that are not simulated take, and where they come
    from: the whole-output reference's values where it computes them under the same names
    (a group's outputs, the attention inside it: at model scale a layer's projections and
    attention are evaluated once, not by the reference and again functionally), the rest
    computed functionally from the group's actual inputs (sampled.functional_outputs):
    "reference", "functional", or "reference and functional"."""
    known = ref.values_for(group) if ref is not None else {}
    rest, computed = functional_outputs(group, buffers, composites, known)
    return rest, ("functional" if not known else
                  "reference" if computed == 0 else "reference and functional")


__all__ = ["ReferenceSteps", "rest_values", "PULL_BYTES", "RETAIN_BYTES"]
