"""Which node sets hal can lower as one kernel: the structure rules of the fusion pass.

`structural_veto(nodes)` says why `nodes` cannot be one kernel (or None): the group kinds
hal lowers (a pointwise chain with movement as index math, a row reduction with its
prologue and epilogue, a contraction with cast/movement operands and an elementwise
epilogue, sibling contractions sharing A, a norm prologue of a matmul's A operand). The
planner (fusion.plan) checks it first for every candidate merge, before resources and cost.
"""

from __future__ import annotations

import math

from hal.ir.graph import Node
from hal.ops import Category, get_op
from hal.ops.reduction import reduction_axes

from .group import is_row_reduction

# Group kinds the planner may produce by merging; others stay single-node groups.
FUSIBLE_CATEGORIES = {Category.ELEMENTWISE, Category.BROADCAST, Category.SOURCE,
                      Category.REDUCTION, Category.CONTRACTION, Category.MOVEMENT}
# Ops that only re-index: inside a kernel they are index math on the loads.
INDEX_ONLY = {Category.MOVEMENT, Category.BROADCAST, Category.SOURCE}


def _cat(n: Node) -> Category:
    return get_op(n.op).category


def structural_veto(nodes: list[Node]) -> str | None:
    """Why `nodes` cannot be one kernel, or None when hal can lower them together."""
    cats = [_cat(n) for n in nodes]
    bad = [n.op for n, c in zip(nodes, cats, strict=True) if c not in FUSIBLE_CATEGORIES]
    if bad and len(nodes) > 1:
        return f"{bad[0]} is lowered on its own (gather and scans are not fused)"
    contractions = [n for n, c in zip(nodes, cats, strict=True) if c is Category.CONTRACTION]
    reductions = [n for n, c in zip(nodes, cats, strict=True) if c is Category.REDUCTION]
    if len(contractions) > 1:
        from hal.lowering import kind_rule
        from hal.lowering.plan import GroupKind

        why = kind_rule(GroupKind.MATMUL).can_fuse(nodes)   # siblings must share A
        if why:
            return why
        from hal.lowering.matmul import sibling_segments

        segments = sibling_segments(nodes)  # different shapes: one grid segment each
        if segments is not None:
            return next(filter(None, map(structural_veto, segments)), None)
    norm_prologue: set[int] = set()
    if contractions and reductions:  # a norm as the A operand's prologue (matmul_prologue)
        why_or_ids = _norm_prologue(nodes, contractions, reductions)
        if isinstance(why_or_ids, str):
            return why_or_ids
        norm_prologue = why_or_ids
    if contractions:
        from hal.lowering.matmul import epilogue_views, one_tile_grid

        mm = contractions[0]
        mm_shape = mm.outputs[0].shape
        dots = {id(d) for d in contractions}
        found = epilogue_views(nodes, contractions) if one_tile_grid(contractions) else []
        views = {id(r) for r in found}
        view_shapes = {tuple(r.outputs[0].shape) for r in found}
        if len(view_shapes) > 1:
            return "two different views of the matmul result (one epilogue layout per kernel)"
        after = set().union(*(_dependents(nodes, d) for d in contractions))
        for n in nodes:
            if id(n) in dots:
                continue
            if id(n) not in after:  # prologue: casts and movement of an operand
                if n.op != "cast" and _cat(n) not in INDEX_ONLY and id(n) not in norm_prologue:
                    return f"only casts and data movement may precede a matmul in its kernel, " \
                           f"not {n.op}" + (" (elementwise ops and reductions only in a norm "
                                            "prologue of the A operand)" if reductions else "")
            elif _cat(n) is Category.MOVEMENT and id(n) not in views:
                return f"{n.op} of the matmul result: the epilogue keeps the output layout " \
                       f"(only a view regrouping its leading axes may follow it)"
            elif any(o.shape != mm_shape and tuple(o.shape) not in view_shapes
                     for o in n.outputs) and \
                    _cat(n) not in (Category.BROADCAST, Category.SOURCE):
                return f"epilogue op {n.op} changes the matmul's output shape"
    if reductions and not contractions:  # (with a contraction: checked by _norm_prologue)
        for r in reductions:
            if not is_row_reduction(r):
                return f"{r.op} over leading axes is a column reduction: fused only alone"
        rows = {_rows_of(r) for r in reductions}
        if len(rows) > 1:
            return "reductions over different rows"
        (lead, row) = rows.pop()
        after = set().union(*(_dependents(nodes, r) for r in reductions))
        full = reductions[0].inputs[0].type.numel
        read_inside = {v.name for m in nodes for v in m.inputs}
        for n in nodes:
            if _cat(n) is Category.MOVEMENT and id(n) in after and not (
                    n.op == "reshape" and n.inputs[0].type.numel == full
                    and n.outputs[0].name not in read_inside):
                # (a reshape of whole rows that only leaves the kernel is stored at the same
                # row-major index: torch's x.view(-1, d) after a norm)
                return f"{n.op} of a reduction result (row values are not re-indexed)"
            for o in n.outputs:
                # Row-count-shaped (per-row statistics), row-shaped (whole rows) or
                # one-row-shaped (per-column parameters such as a norm's weight, which
                # reach the rows through a broadcast) values all index from the row.
                if o.type.numel not in (0, 1, lead, lead * row, row) \
                        and _cat(n) is not Category.SOURCE:
                    return (f"{n.op} output {list(o.shape)} is neither row-, "
                            f"row-count- nor one-row-shaped")
    return None


def _dependents(nodes: list[Node], root: Node) -> set[int]:
    """ids of the nodes of `nodes` that (transitively) read `root`'s outputs."""
    seen = {o.name for o in root.outputs}
    out: set[int] = set()
    for n in nodes:
        if n is not root and any(v.name in seen for v in n.inputs):
            out.add(id(n))
            seen.update(o.name for o in n.outputs)
    return out


def _norm_prologue(nodes: list[Node], contractions: list[Node],
                   reductions: list[Node]) -> str | set[int]:
    """The ids of the nodes forming a norm prologue of the contractions' A operand (the A
    operand's producers: reductions of A's rows over A's contraction extent K, their
    elementwise/broadcast consumers, the elementwise ops feeding them), or why the reductions
    cannot join the matmul's kernel (hal.lowering.matmul_prologue recomputes the row
    statistics of a block's rows before its K loop)."""
    from hal.lowering.matmul_prologue import reduction_layout

    after = set().union(*(_dependents(nodes, d) for d in contractions))
    for r in reductions:
        if id(r) in after:
            return "a reduction cannot join a matmul's epilogue (only a norm of the A operand " \
                   "may precede it)"
    a = contractions[0].inputs[0]   # siblings share A (checked before)
    layout = reduction_layout(nodes, contractions[0], reductions)
    if isinstance(layout, str):
        return layout
    ancestors, spaces, keeps = layout
    derived = {o.name for r in reductions for o in r.outputs}
    dots = {id(d) for d in contractions}
    for n in nodes:  # graph order: `derived` grows with the values computed from reductions
        if id(n) in dots or id(n) in after or _cat(n) is Category.REDUCTION or \
                not any(v.name in derived for v in n.inputs):
            continue   # (a reduction of a later level was checked above)
        row_merge = n.op == "reshape" and tuple(n.inputs[0].shape) in spaces and \
            tuple(n.outputs[0].shape) == tuple(a.shape)   # rows stay rows (row_space)
        if _cat(n) not in (Category.ELEMENTWISE, Category.BROADCAST) and not row_merge:
            return f"{n.op} of a reduction result before a matmul (row statistics are not " \
                   f"re-indexed)"
        if id(n) not in ancestors:
            if _dependents(nodes, n) & after:
                return f"the matmul's epilogue reads a reduction result through {n.op} " \
                       f"(%{n.outputs[0].name}) (only the A operand's prologue may)"
            return f"{n.op} (%{n.outputs[0].name}) of a reduction result does not feed the " \
                   f"matmul's A operand"
        if any(tuple(o.shape) not in keeps | spaces for o in n.outputs) or \
                (_cat(n) is Category.BROADCAST and tuple(n.inputs[0].shape) not in keeps):
            return f"{n.op} (%{n.outputs[0].name}) reshapes a row statistic (only per-row " \
                   f"values broadcast back to A's shape)"
        derived.update(o.name for o in n.outputs)
    for n in nodes:
        if id(n) in after and id(n) not in dots and any(v.name in derived for v in n.inputs):
            return f"{n.op} (%{n.outputs[0].name}) in the matmul's epilogue reads a reduction " \
                   f"result (only the A operand's prologue may)"
        if id(n) in dots and any(v.name in derived for v in n.inputs[1:]):
            return "a reduction result feeds the matmul's B operand (only A's rows can be " \
                   "normalised in its kernel)"
    return {id(n) for n in nodes if id(n) in ancestors and id(n) not in dots
            and _cat(n) in (Category.ELEMENTWISE, Category.BROADCAST, Category.REDUCTION)}


def _rows_of(r: Node) -> tuple[int, int]:
    x = r.inputs[0]
    row = math.prod(x.shape[a] for a in reduction_axes(r))
    return (x.type.numel // row if row else 0, row)
