"""Bounded per-process memos of pure planning results, and the keys they are held under.

Planning is pure: a group's KernelPlan is a function of the group (its nodes, their ops,
attributes, dtypes, shapes and value names, the group's name, kind and hints) and of the
DeviceSpec, and of nothing else (no LoweringOptions: planted faults act in the emitters,
never in a planner). The fusion pass prices a candidate, its lowering veto plans the same
candidate again, the plan's final groups are priced and then planned again by every
backend's `lower_group`; `plan_group` (hal.lowering.registry) serves these repeats from
`PLANS` (`cached_plan`), keyed by `group_key(group)` without the group's name and by the
spec: a plan found under another group name (the veto's "cand", the final "k3_add") is
renamed (`rename_plan`), which gives exactly the plan the planner makes for that name.

Rules every memo here keeps:

* bounded: a `Memo` is a least-recently-used table of at most `maxsize` entries;
* keyed on everything the result depends on: `group_key` holds the group name, the value
  names (plans name their loads, kernels their parameters after them), the hints, and for
  each group input the chain of reshapes that produced it outside the group (a row output
  stored through a reshape is traced back through it, hal.lowering.reduction.row_source);
  the memos key on it without the group name and rename what they serve; the DeviceSpec
  is compared by value (a frozen dataclass), so spec variants never share;
* values are immutable (frozen KernelPlans) or handed out once (LOWERINGS);
* no Node or Value is held (only names, types and strings), so a memo never keeps a graph.

The fusion veto lowers each candidate it accepts (except a matmul candidate that only grows
the epilogue of a group that passed, answered from that group: fusion.veto_reuse, which
keeps no kernels); the plan's final group of the same nodes is lowered again by the backend
under its own name. `keep_lowering` / `take_lowering` hand the veto's kernels over once
(LOWERINGS, keyed on the nodes, spec and LoweringOptions, so a lowering with planted faults
is never served a fault-free one), renamed.

A group lowered again with the same name, nodes, spec and options (another conformance case
of the same shapes under another input distribution, a group every case of a family shares)
is served from `KERNELS` (`cached_lowering`): lowering is as pure as planning (a function of
the group_key record, the plan -- itself a function of the key and the spec -- the spec and
the LoweringOptions), so the kernels are exactly what lowering again gives. Each caller gets
its own Kernel objects (`fresh_kernels`); the statement trees inside are shared, as nothing
edits a lowered kernel's statements in place (backends translate them into new code).

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

    def take(self, key: Hashable, default: Any = None) -> Any:
        """Remove and return the value under `key` (`default` when absent or disabled)."""
        if not _ENABLED[0]:
            return default
        hit = self._table.pop(key, _MISSING)
        if hit is _MISSING:
            self.misses += 1
            return default
        self.hits += 1
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

    def keys(self) -> list:
        """The keys held, least recently used first."""
        return list(self._table)

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
    """The reshapes that produced group input `v` outside the group: (input name, dtype,
    shape) each, innermost last."""
    chain = []
    x = v
    while x.producer is not None and x.producer.op == "reshape":
        x = x.producer.inputs[0]
        chain.append((x.name, x.type.dtype.name, x.type.shape))
    return tuple(chain)


class HashedKey:
    """A hashable record hashed once: a memo key is hashed at every lookup and store, and a
    group's record is a deep tuple (a tuple does not keep its hash). Equal exactly when
    the records are equal."""

    __slots__ = ("record", "_hash")

    def __init__(self, record: tuple):
        self.record = record
        self._hash = hash(record)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return self is other or (type(other) is HashedKey and self._hash == other._hash
                                 and self.record == other.record)

    def __repr__(self) -> str:
        return f"HashedKey({self.record!r})"


def _input_record(v) -> tuple:
    return (v.name, v.type.dtype.name, v.type.shape, _outside_reshapes(v))


def _node_record(n) -> tuple:
    return (n.op, repr(sorted(n.attrs.items())) if n.attrs else "",
            tuple(v.name for v in n.inputs),
            tuple((o.name, o.type.dtype.name, o.type.shape) for o in n.outputs))


def _cached(parts: dict, x, record: Callable[[Any], tuple]) -> tuple:
    hit = parts.get(id(x))
    if hit is None:
        hit = parts[id(x)] = record(x)
    return hit


def group_key(group, parts: dict | None = None) -> tuple[str, HashedKey]:
    """(the group's name, everything else a planner or lowering reads from the FusedGroup)
    as a hashable record of strings and ints (cheap to hash: dtypes by name; hashed once).
    `parts`: a dict the caller keeps while its graph does not change (the fusion pass,
    whose candidates share nodes), holding each node's and input's record by identity."""
    from hal.lowering.plan import NO_HINTS

    if parts is None:
        inputs = tuple(map(_input_record, group.inputs))
        nodes = tuple(map(_node_record, group.nodes))
    else:
        inputs = tuple(_cached(parts, v, _input_record) for v in group.inputs)
        nodes = tuple(_cached(parts, n, _node_record) for n in group.nodes)
    return (group.name, HashedKey((
        getattr(group.kind, "value", group.kind), None if group.hints is NO_HINTS else group.hints,
        inputs, nodes, tuple(v.name for v in group.outputs))))


# KernelPlans by (group_key without the group's name, spec) -> (group name, plan, [whether
# the name appears in the plan beyond its group and launch names, once known]): the
# fusion pass's candidates ("cand") and final groups of one graph, the unfused groups,
# and the groups the backends lower (a few KiB each).
PLANS = Memo("plans", 4096)


def cached_plan(group, spec, compute: Callable[[], Any], gkey: tuple | None = None) -> Any:
    """The KernelPlan of `group` on `spec`: from PLANS when a group of the same nodes was
    planned (renamed when that group had another name: rename_plan), else `compute()`.
    `gkey`: group_key(group) when the caller has it."""
    key = ((gkey or group_key(group))[1], spec)
    hit = PLANS.lookup(key)
    if hit is not None:
        name, plan, named_elsewhere = hit
        if name == group.name:
            PLANS.hits += 1
            return plan
        if not named_elsewhere:   # (the entry's verdict on `name`, found once: a plan priced
            named_elsewhere.append(_named_elsewhere(plan, name))   # as "cand" serves many)
        renamed = rename_plan(plan, name, group.name, named_elsewhere[0])
        if renamed is not None:
            PLANS.hits += 1
            return renamed
    PLANS.misses += 1
    plan = compute()
    PLANS.put(key, (group.name, plan, []))
    return plan


def _named_elsewhere(plan, old: str) -> bool:
    """Does `old` (the plan's group name) appear in `plan` outside KernelPlan.group and its
    launch names?"""
    from dataclasses import replace

    rest = replace(plan, group="", launches=())
    return old in repr((rest, rest.reasons, rest.notes))


def rename_plan(plan, old: str, new: str, named_elsewhere: bool | None = None):
    """`plan` (of a group named `old`) as the planner gives it for the same nodes in a group
    named `new`, or None when that is not certain. A planner reads the group's name only for
    KernelPlan.group and its launch names (hal.lowering.planners.launch_name:
    c_identifier(name + suffix)); the rename is refused when either name is not already a
    plain C identifier or `old` appears anywhere else in the plan (`named_elsewhere`: that
    verdict, _named_elsewhere(plan, old), when the caller has it)."""
    from dataclasses import replace

    from hal.lowering.context import c_identifier

    if plan.group != old or c_identifier(old) != old or c_identifier(new) != new:
        return None
    launches = []
    for x in plan.launches:
        suffix = x.name[len(old):]
        if not x.name.startswith(old) or c_identifier(new + suffix) != new + suffix:
            return None
        launches.append(replace(x, name=new + suffix))
    if named_elsewhere is None:
        named_elsewhere = _named_elsewhere(plan, old)
    if named_elsewhere:
        return None
    return replace(plan, group=new, launches=tuple(launches))

# The fusion veto's lowerings of accepted candidates, by (group_key without the group's
# name, spec, LoweringOptions), each taken (removed) by the next lower_group of a group of
# the same nodes: the plan's final group, which differs from the candidate only in its
# name. One use each, so no two callers share a Kernel; a few dozen candidates of one
# plan are kept at most.
LOWERINGS = Memo("lowerings", 32)


def _lowering_key(group, spec, options, gkey: tuple | None) -> tuple:
    return ((gkey or group_key(group))[1], spec, options)


def keep_lowering(group, spec, options, kernels: list, gkey: tuple | None = None) -> None:
    """Keep `kernels` (group's lowering under `options`) for the next lower_group of a group
    with the same nodes (take_lowering). Kernels with scratch buffers are not kept: their
    buffers are named after the group."""
    if kernels and not any(k.meta.scratch for k in kernels):
        LOWERINGS.put(_lowering_key(group, spec, options, gkey), (group.name, tuple(kernels)))


def take_lowering(group, spec, options, plan, gkey: tuple | None = None) -> list | None:
    """The kept lowering of a group with `group`'s nodes under the same spec and options,
    renamed to `group` (kernel names, KernelMeta.group and .plan: `plan`, the group's own
    plan), or None. The kernels are exactly what lowering `group` gives: a lowering reads
    its group's name only to name its kernels (hal.lowering.context.KernelContext) and,
    for split attention, its scratch buffers (never kept)."""
    from dataclasses import replace

    from hal.lowering.context import c_identifier

    hit = LOWERINGS.take(_lowering_key(group, spec, options, gkey))
    if hit is None:
        return None
    old_name, kernels = hit
    old, new = c_identifier(old_name), c_identifier(group.name)
    if not all(k.name.startswith(old) and k.meta.group == old_name for k in kernels):
        return None
    return [replace(k, name=new + k.name[len(old):], meta=replace(k.meta, group=group.name,
                                                                  plan=plan))
            for k in kernels]


# Lowerings by (group_key with the group's name, spec, LoweringOptions) -> the kernels (held
# here, never handed out: callers get fresh_kernels copies). A case's groups recur in later
# cases (the same graph under another input distribution or seed; the unfused groups of a
# family of cases): ~1,800 of the ~9,600 lowerings of the conformance suite on one device.
# A lowering must be a function of this key: whatever changes a lowering is a field of
# LoweringOptions (the self-test's faults, the scalar prologue reference), never module state.
KERNELS = Memo("kernels", 1024)


def fresh_kernels(kernels, plan=None) -> list:
    """New Kernel objects equal to `kernels` (own parameter, statement, buffer and tensor-map
    lists and metadata dicts; the frozen statements' trees are shared), with KernelMeta.plan
    `plan` when given."""
    from dataclasses import replace

    out = []
    for k in kernels:
        meta = replace(k.meta, buffers=dict(k.meta.buffers), scratch=dict(k.meta.scratch),
                       scalars=dict(k.meta.scalars),
                       plan=k.meta.plan if plan is None else plan)
        out.append(replace(k, params=list(k.params), body=list(k.body), shared=list(k.shared),
                           locals=list(k.locals), tensor_maps=list(k.tensor_maps), meta=meta))
    return out


def cached_lowering(group, spec, options, plan, gkey: tuple, compute: Callable[[], list]
                    ) -> list:
    """`compute()` (the lowering of `group` under `plan`, `spec`, `options`), or a copy of the
    same group's earlier lowering (KERNELS; `gkey`: group_key(group), name included)."""
    key = (gkey, spec, options)
    hit = KERNELS.lookup(key)
    if hit is not None:
        KERNELS.hits += 1
        return fresh_kernels(hit, plan)
    KERNELS.misses += 1
    kernels = compute()
    KERNELS.put(key, tuple(kernels))   # the computed ones stay here; the caller gets copies
    return fresh_kernels(kernels) if _ENABLED[0] else kernels
