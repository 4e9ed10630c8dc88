"""hal.lowering: fused groups of primitives -> kernel plans -> kernel IR.

`plan_group(group, spec) -> KernelPlan` and `lower_group(group, spec, options) ->
list[Kernel]` dispatch on `group.kind` through `hal.lowering.registry` (one
GroupKindRule per kind, registered in `kinds`). Modules: `plan` (the frozen plan
records), `options` (LoweringOptions: planted self-test faults), `context` (names,
params, index math), `expr` (graph node -> scalar Expr, shared by all), `tiling`
(sizes from the spec), `traffic` (what a plan's kernels load, per input),
`planners` / `planners_tiled` (plan per kind), and one module per kind family that
emits a plan: `pointwise` (pointwise, source, gather, movement), `reduction` (row
and column reductions), `matmul` (+ `matmul_prologue`), `movement` (shared-memory
transpose), `scan`, `attention` (+ `attention_split`).
"""

from hal.lowering.registry import (  # noqa: F401
    KINDS,
    GroupKindRule,
    kind_rule,
    lower_group,
    plan_group,
    register_kind,
)

_LOADED = False


def _load_all() -> None:
    """Import the kind rules (hal.lowering.kinds registers them on import)."""
    global _LOADED
    if not _LOADED:
        from hal.lowering import kinds  # noqa: F401

        _LOADED = True
