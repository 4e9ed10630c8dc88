"""A model's constants made when a group first needs them and buffers dropped after their
last reader: `LazyBuffers` (cpu_sim's run_graph)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from hal.ir.graph import Graph


class LazyBuffers:
    """Constants materialised just before the first group that reads them, and every
    buffer dropped after the last group that reads it (graph outputs stay): a model's
    weights and activations are alive a few groups at a time, not all at once."""

    def __init__(self, prim: Graph, groups: Sequence, buffers: dict[str, np.ndarray]):
        self.buffers = buffers
        self.prim = prim
        self.ngroups = len(groups)
        self.made: dict[int, list[str]] = {}   # group -> the constants made for it
        # hold(name): keep a constant after its last group (the reference still needs
        # it) in `retained` instead of dropping it
        self.hold: Callable[[str], bool] | None = None
        self.retained: dict[str, np.ndarray] = {}
        self.constants = {c.value.name: c for c in prim.constants}
        self.first: dict[int, list[str]] = {}
        self.last: dict[int, list[str]] = {}
        outputs = {v.name for v in prim.outputs}
        first_use: dict[str, int] = {}
        last_use: dict[str, int] = {}
        for i, g in enumerate(groups):
            for n in g.nodes:
                for v in n.inputs:
                    first_use.setdefault(v.name, i)
                    last_use[v.name] = i
                for v in n.outputs:  # a value no later group reads goes after its own
                    last_use.setdefault(v.name, i)
        self.pending: set[str] = set()   # constants made before a later group
        for name in self.constants:
            if name in first_use:
                self.first.setdefault(first_use[name], []).append(name)
                self.pending.add(name)
            else:  # an output or unread constant: now, as before (its initializer checked)
                self._materialize(name)
        for name, i in last_use.items():
            if name not in outputs:
                self.last.setdefault(i, []).append(name)

    def _materialize(self, name: str) -> None:
        from hal.ir.initializers import materialize_as

        c = self.constants[name]
        arr = materialize_as(c.init, c.value.type, self.prim.base_dir, name=name)
        self.buffers[name] = np.ascontiguousarray(arr).reshape(-1)

    def scheduled(self, name: str) -> bool:
        """A constant cpu_sim makes later (before a group still to run)."""
        return name in self.pending

    def before(self, i: int) -> None:
        for name in self.first.pop(i, ()):
            self._materialize(name)
            self.pending.discard(name)
            self.made.setdefault(i, []).append(name)

    def made_ahead(self, i: int) -> int:
        """Bytes of the constants made for groups after group `i`."""
        return sum(self.buffers[n].nbytes for j, names in self.made.items() if j > i
                   for n in names if n in self.buffers)

    def after(self, i: int) -> None:
        for name in self.last.pop(i, ()):
            a = self.buffers.pop(name, None)
            if a is not None and name in self.constants and self.hold is not None \
                    and self.hold(name):
                self.retained[name] = a

    def make_now(self, name: str) -> None:
        """Make a constant scheduled for a later group now (the reference reads it)."""
        for j, names in self.first.items():
            if name in names:
                names.remove(name)
                self._materialize(name)
                self.pending.discard(name)
                self.made.setdefault(j, []).append(name)
                return


__all__ = ["LazyBuffers"]
