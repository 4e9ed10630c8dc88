"""hal.lowering: fused groups of primitives -> kernel IR.

`lower_group(group, spec) -> list[Kernel]` dispatches on `group.kind` through
`hal.lowering.registry`. Modules: `context` (names, params, index math),
`expr` (graph node -> scalar Expr, shared by all), `tiling` (sizes from the
spec), and one module per kind family: `pointwise` (pointwise, source, gather,
movement), `reduction` (row and column reductions), `matmul`, `movement`
(shared-memory transpose), `scan`, `attention` (dot -> softmax -> dot, online softmax).
"""

from hal.lowering.registry import LOWERINGS, lower_group, register_lowering  # noqa: F401

_LOADED = False


def _load_all() -> None:
    """Import the lowering modules (each registers its kinds on import)."""
    global _LOADED
    if not _LOADED:
        from hal.lowering import attention, matmul, movement, pointwise, reduction, scan  # noqa: F401

        _LOADED = True
