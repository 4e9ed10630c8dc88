"""Bounded per-process memos of pure planning results, and the keys they are held under.

Planning is pure: a group's KernelPlan is a function of the group (its nodes, their ops,
attributes, dtypes, shapes and value names, the group's name, kind and hints) and of the
DeviceSpec, and of nothing else (no LoweringOptions: planted faults act in the emitters,
never in a planner). The fusion pass prices a candidate, its lowering veto plans the same
candidate again, the plan's final groups are priced and then planned again by every
backend's `lower_group`; `plan_group` (hal.lowering.registry) serves these repeats from
`PLANS`, keyed by `group_key(group)` and the spec.

Rules every memo here keeps:

* bounded: a `Memo` is a least-recently-used table of at most `maxsize` entries;
* keyed on everything the result depends on: `group_key` holds the value names and the
  group name (plans name their launches and loads after them), the hints, and for each
  group input the chain of reshapes that produced it outside the group (a row output
  stored through a reshape is traced back through it, hal.lowering.reduction.row_source);
  the DeviceSpec is compared by value (a frozen dataclass), so spec variants never share;
* values are immutable (frozen KernelPlans), so a hit is the very object a miss returns;
* no Node or Value is held (only names, types and strings), so a memo never keeps a graph.

`disabled()` turns every memo off within a block (tests that compare cached and uncached
results); `clear_all()` empties them; `Memo.info()` counts hits and misses.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any

_MISSING = object()
MEMOS: dict[str, Memo] = {}
_ENABLED = [True]


class Memo:
    """A bounded least-recently-used table (registered in MEMOS under `name`)."""

    def __init__(self, name: str, maxsize: int):
        if maxsize < 1:
            raise ValueError(f"memo {name}: maxsize must be at least 1, got {maxsize}")
        self.name, self.maxsize = name, maxsize
        self._table: OrderedDict[Hashable, Any] = OrderedDict()
        self.hits = self.misses = 0
        MEMOS[name] = self

    def get(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The value under `key`, computed by `compute()` (and kept) on a miss."""
        if not _ENABLED[0]:
            return compute()
        hit = self._table.get(key, _MISSING)
        if hit is not _MISSING:
            self._table.move_to_end(key)
            self.hits += 1
            return hit
        self.misses += 1
        value = compute()
        self.put(key, value)
        return value

    def lookup(self, key: Hashable, default: Any = None) -> Any:
        """The value under `key` without computing one (`default` when absent or disabled)."""
        if not _ENABLED[0]:
            return default
        hit = self._table.get(key, _MISSING)
        if hit is _MISSING:
            return default
        self._table.move_to_end(key)
        return hit

    def put(self, key: Hashable, value: Any) -> None:
        if not _ENABLED[0]:
            return
        self._table[key] = value
        self._table.move_to_end(key)
        while len(self._table) > self.maxsize:
            self._table.popitem(last=False)

    def clear(self) -> None:
        self._table.clear()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._table)

    def info(self) -> dict[str, int]:
        return {"size": len(self._table), "maxsize": self.maxsize, "hits": self.hits,
                "misses": self.misses}


def clear_all() -> None:
    for m in MEMOS.values():
        m.clear()


@contextmanager
def disabled() -> Iterator[None]:
    """Every memo computes afresh (and keeps nothing) inside the block."""
    before = _ENABLED[0]
    _ENABLED[0] = False
    try:
        yield
    finally:
        _ENABLED[0] = before


def _outside_reshapes(v) -> tuple:
    """The reshapes that produced group input `v` outside the group: (input name, type)
    each, innermost last."""
    chain = []
    x = v
    while x.producer is not None and x.producer.op == "reshape":
        x = x.producer.inputs[0]
        chain.append((x.name, x.type))
    return tuple(chain)


def group_key(group) -> tuple:
    """Everything a planner reads from a FusedGroup, as a hashable record (names included)."""
    return (group.name, str(group.kind), group.hints,
            tuple((v.name, v.type, _outside_reshapes(v)) for v in group.inputs),
            tuple((n.op, repr(sorted(n.attrs.items())), tuple(v.name for v in n.inputs),
                   tuple((o.name, o.type) for o in n.outputs)) for n in group.nodes),
            tuple(v.name for v in group.outputs))


# KernelPlans by (group_key, spec): the fusion pass's candidates and final groups of one
# graph, and the groups the backends lower (a few KiB each).
PLANS = Memo("plans", 4096)
