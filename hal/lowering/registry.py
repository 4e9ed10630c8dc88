"""Group kinds: one registered object per kind, the one dispatch point from FusedGroup to kernels.

    register_kind(GroupKindRule(GroupKind.SCAN, plan=plan_scan, lower=lower_scan))

A `GroupKindRule` holds, for one `GroupKind`:

* `plan(group, spec) -> KernelPlan`: every decision about the group's kernels (grid,
  block, tiles, cache choices, split factors) and what they load, once;
* `lower(group, plan, spec, options) -> list[Kernel]`: emits exactly that plan;
* `can_fuse(nodes) -> str | None`: a kind-specific reason the nodes cannot be one
  kernel of this kind (None: no objection; the fusion pass's structure rules and the
  resource checks still apply).

`plan_group(group, spec)` and `lower_group(group, spec, options)` look the group's kind
up here (plans are memoised per group and spec: hal.lowering.memo); the fusion cost
model prices `plan_group`'s KernelPlan. The rules are registered in hal.lowering.kinds.
A new kind (or a better plan or lowering of an existing one) is one registration here,
plus its kind in hal.fusion.group.group_kind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hal.devices.spec import DeviceSpec
from hal.errors import UnsupportedError
from hal.kernel.ir import Kernel
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions
from hal.lowering.plan import GroupKind, KernelPlan


def _no_objection(nodes) -> str | None:
    return None


@dataclass(frozen=True)
class GroupKindRule:
    kind: GroupKind
    plan: Callable[..., KernelPlan]
    lower: Callable[..., list[Kernel]]
    can_fuse: Callable[..., str | None] = _no_objection


KINDS: dict[GroupKind, GroupKindRule] = {}


def register_kind(rule: GroupKindRule) -> GroupKindRule:
    """Register the rule of one group kind (replaces an earlier one)."""
    KINDS[GroupKind(rule.kind)] = rule
    return rule


def kind_rule(kind: str) -> GroupKindRule:
    from hal.lowering import _load_all

    _load_all()
    try:
        return KINDS[GroupKind(kind)]
    except (ValueError, KeyError):
        raise UnsupportedError(f"no lowering for group kind '{kind}'",
                               hint="known kinds: " + ", ".join(sorted(KINDS))) from None


def plan_group(group, spec: DeviceSpec, gkey: tuple | None = None) -> KernelPlan:
    """The KernelPlan of one FusedGroup on `spec` (what the cost model prices). Planning is
    pure: a group planned again (the fusion veto's candidate, a final group lowered by a
    backend, the same nodes under another group name) is served from
    hal.lowering.memo.PLANS. `gkey`: hal.lowering.memo.group_key(group), when known."""
    from hal.lowering.memo import cached_plan

    return cached_plan(group, spec, lambda: kind_rule(group.kind).plan(group, spec), gkey)


def lower_group(group, spec: DeviceSpec, options: LoweringOptions = DEFAULT_OPTIONS,
                plan: KernelPlan | None = None, *, gkey: tuple | None = None) -> list[Kernel]:
    """Lower one FusedGroup to its kernels (usually one; split reductions give two) under
    `options` (the self-test's planted faults; none by default). `plan`: the group's
    plan when the caller already has it. Without one, a lowering of the same nodes the
    fusion veto kept (hal.lowering.memo.keep_lowering) is taken, renamed, instead of
    lowering again, or the same group's earlier lowering (hal.lowering.memo.KERNELS, a
    copy). `gkey`: hal.lowering.memo.group_key(group), when known."""
    from hal.lowering.memo import cached_lowering, group_key, take_lowering

    rule = kind_rule(group.kind)
    if plan is None:
        gkey = gkey or group_key(group)
        plan = plan_group(group, spec, gkey)
        kept = take_lowering(group, spec, options, plan, gkey)   # the fusion veto's, renamed
        return cached_lowering(group, spec, options, plan, gkey, lambda: kept if kept
                               is not None else rule.lower(group, plan, spec, options))
    return rule.lower(group, plan, spec, options)
