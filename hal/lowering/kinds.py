"""The group kinds hal lowers: one GroupKindRule each (plan, lower, can_fuse).

    kind              plan (KernelPlan)                       lower (emits the plan)
    pointwise         planners.plan_pointwise                 pointwise.lower_pointwise
    source, gather    planners.plan_pointwise                 pointwise.lower_pointwise
    movement          planners.plan_movement                  movement.lower_movement
    scan              planners.plan_scan                      scan.lower_scan
    row_reduction     planners.plan_reduction                 reduction.lower_reduction
    column_reduction  planners.plan_reduction                 reduction.lower_reduction
    matmul            planners_tiled.plan_matmul              matmul.lower_matmul
    attention         planners_tiled.plan_attention_group     attention.lower_attention

`can_fuse` holds the kind-specific structure rules: a matmul's contractions must be
one or siblings sharing A, an attention must match dot -> softmax -> dot. The fusion
pass (fusion.structure.structural_veto) applies them with its category rules.
"""

from __future__ import annotations

from hal.lowering.attention import lower_attention, match_attention
from hal.lowering.matmul import lower_matmul, sibling_contractions
from hal.lowering.movement import lower_movement
from hal.lowering.plan import GroupKind
from hal.lowering.planners import plan_movement, plan_pointwise, plan_reduction, plan_scan
from hal.lowering.planners_tiled import plan_attention_group, plan_matmul
from hal.lowering.pointwise import lower_pointwise
from hal.lowering.reduction import lower_reduction
from hal.lowering.registry import GroupKindRule, register_kind
from hal.lowering.scan import lower_scan


def matmul_can_fuse(nodes) -> str | None:
    why = sibling_contractions(nodes)   # (one contraction or none: nothing to refuse)
    if isinstance(why, str):
        return f"one contraction per kernel unless siblings share A ({why})"
    return None


def attention_can_fuse(nodes) -> str | None:
    pat = match_attention(list(nodes))
    return pat if isinstance(pat, str) else None


for _kind in (GroupKind.POINTWISE, GroupKind.SOURCE, GroupKind.GATHER):
    register_kind(GroupKindRule(_kind, plan_pointwise, lower_pointwise))
register_kind(GroupKindRule(GroupKind.MOVEMENT, plan_movement, lower_movement))
register_kind(GroupKindRule(GroupKind.SCAN, plan_scan, lower_scan))
register_kind(GroupKindRule(GroupKind.ROW_REDUCTION, plan_reduction, lower_reduction))
register_kind(GroupKindRule(GroupKind.COLUMN_REDUCTION, plan_reduction, lower_reduction))
register_kind(GroupKindRule(GroupKind.MATMUL, plan_matmul, lower_matmul, matmul_can_fuse))
register_kind(GroupKindRule(GroupKind.ATTENTION, plan_attention_group, lower_attention,
                            attention_can_fuse))
