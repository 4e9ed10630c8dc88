"""The lowering veto of a matmul candidate that only grows its epilogue, answered from the
lowering of the group it grows (no second lowering).

The fusion pass grows a matmul's epilogue one merge at a time (bias broadcast, add, the
activation's casts and constants, ...), and its lowering veto (fusion.plan,
`_Planner.lowering_veto`) lowered the whole kernel again at every step only to learn
whether lowering raises and the kernels' shared memory and threads per block.
`same_verdict(cand, base, spec, plan_of)` says when the candidate `cand` = `base` + X
provably gets `base`'s verdict, None (base passed the veto), without lowering `cand`.

The conditions (checked here, each cheap) and why they give the veto's answer, read
against hal.lowering.matmul.lower_matmul, matmul_mma._MmaEmitter and
matmul_wgmma._WgmmaEmitter (LoweringOptions are the defaults: no planted faults):

1. both are matmul groups with exactly one contraction, the same one (it is in `base`),
   and `cand` holds no reduction (no norm prologue: only emit_prologue_reductions and the
   norm pre-pass put a load hook on the kernel's main ScalarBuilder, and only they declare
   the `stat_` shared arrays);
2. X (cand's nodes not in base) holds no ancestor of the contraction and reads no value
   of one: the operands, their prologue, `a_access`/`b_accesses`/`a_view`/
   `prologue_source` (which walk producers back from the operands) and every shared
   buffer they size are base's, and the epilogue never evaluates a prologue value;
3. the kernel plans agree on everything the emitters read from a plan: strategy, launches
   (grid, block), math, tiles, stages, details (the mma/wgmma choice with its tiles,
   threads and stages, group_m, cluster), and the groups on their index dtype. Shared
   buffers are declared only in the emitters' set-up from these (A/B tiles, barriers; the
   epilogue declares locals and parameters only), and the block is the plan's threads:
   `cand`'s kernel has base's shared bytes and block, which passed the veto's limits. The
   plan-vs-grid checks compare the same grid and plan;
4. `cand` has no view of the matmul result (epilogue_views is empty) and every output of
   `cand` has the matmul result's shape: lower_matmul's output-shape check passes, and the
   epilogue stores every output at the accumulator element's own coordinates (the one
   "space");
5. every node of X is one whose scalar emission cannot raise: an elementwise op without
   an emitter of its own and one or two inputs (Unary/Binary), `cast` or `select`, each
   with its inputs and outputs shaped like the matmul result; `broadcast_to` to that shape
   of a value from outside `cand` or of a `full`; `full`. ScalarBuilder.value raises only
   for a value in its environment (the accumulator) asked at other coordinates, or for an
   op it has no emitter for; neither can happen:
   * X downstream of base (base's nodes read nothing of X): X's values are asked for at
     the accumulator's coordinates only (by the outputs, and by X's elementwise nodes at
     their own coordinates; a broadcast_to here reads a group input or a constant), and
     base's outputs that X reads were emitted at those coordinates by base's lowering;
   * X upstream of base (X reads nothing of base): X's values may be asked for at other
     coordinates (through base's broadcasts), but X reaches only group inputs and
     constants, never the accumulator;
   a candidate where X both reads base and is read by it is not answered here.
   Group inputs are plain global loads (no load hook, 1.); outputs are new parameters.

Under 1-5 lowering `cand` emits base's kernel with a longer epilogue: it does not raise,
and its shared memory and block are base's, so the veto's verdict is base's (None). Any
other candidate is lowered as before. tests/test_fusion_veto_reuse.py checks every answer
against a real lowering over the fused matmul families.
"""

from __future__ import annotations

from collections.abc import Callable

from hal.devices.spec import DeviceSpec
from hal.ops import Category, get_op

from .group import FusedGroup

# elementwise ops with an emitter that reads its inputs at its own coordinates only
_PLAIN_EMITTERS = {"cast", "select"}


def plan_fingerprint(plan) -> tuple:
    """The parts of a KernelPlan the matmul emitters read (see the module docstring, 3.)."""
    return (plan.kind, plan.strategy, plan.launches, plan.math, plan.tiles, plan.stages,
            plan.details)


def same_verdict(cand: FusedGroup, base: FusedGroup, spec: DeviceSpec,
                 plan_of: Callable[[FusedGroup], object]) -> bool:
    """Does the lowering veto of `cand` provably give the verdict of `base` (a matmul group
    whose nodes `cand` holds, which passed the veto)? `plan_of(group)`: its KernelPlan
    on `spec` (the planner's memoised plan_group)."""
    from hal.lowering.context import index_dtype_for
    from hal.lowering.expr import EMITTERS
    from hal.lowering.matmul import epilogue_views
    from hal.lowering.pointwise import group_sizes

    if cand.kind != "matmul" or base.kind != "matmul":
        return False
    cats = {id(n): get_op(n.op).category for n in cand.nodes}
    dots = [n for n in cand.nodes if cats[id(n)] is Category.CONTRACTION]
    if len(dots) != 1 or any(c is Category.REDUCTION for c in cats.values()):
        return False
    dot = dots[0]
    in_base = {id(n) for n in base.nodes}
    if id(dot) not in in_base or not in_base <= cats.keys():   # base: some of cand's nodes
        return False
    extra = [n for n in cand.nodes if id(n) not in in_base]
    shape = tuple(dot.outputs[0].shape)
    if any(tuple(v.shape) != shape for v in cand.outputs):
        return False
    producer = {o.name: n for n in cand.nodes for o in n.outputs}
    prologue = _ancestors(dot, producer)
    if prologue & {id(n) for n in extra} or any(
            id(producer.get(v.name)) in prologue for n in extra for v in n.inputs):
        return False
    extra_out = {o.name for n in extra for o in n.outputs}
    x_reads_base = any(producer.get(v.name) is not None and id(producer[v.name]) in in_base
                       for n in extra for v in n.inputs)
    base_reads_x = any(v.name in extra_out for n in base.nodes for v in n.inputs)
    if x_reads_base and base_reads_x:
        return False
    for n in extra:
        if not _plain_epilogue_node(n, cats[id(n)], shape, producer, EMITTERS):
            return False
    if epilogue_views(cand.nodes, dots):
        return False
    if index_dtype_for(group_sizes(cand), spec) != index_dtype_for(group_sizes(base), spec):
        return False
    return plan_fingerprint(plan_of(cand)) == plan_fingerprint(plan_of(base))


def _plain_epilogue_node(n, cat: Category, shape: tuple, producer: dict, emitters) -> bool:
    """Is `n` an epilogue element whose scalar emission cannot raise (docstring, 5.)?"""
    if n.op == "full":   # its emitter's one computation: the constant, which may raise
        from hal.lowering.expr import scalar_const

        try:
            scalar_const(n.attrs["value"], n.outputs[0].dtype)
        except Exception:  # noqa: BLE001  (the lowering's own outcome decides then)
            return False
        return True
    if any(tuple(o.shape) != shape for o in n.outputs):
        return False
    if n.op == "broadcast_to":
        src = producer.get(n.inputs[0].name)
        return src is None or src.op == "full"
    if cat is not Category.ELEMENTWISE or any(tuple(v.shape) != shape for v in n.inputs):
        return False
    if n.op in _PLAIN_EMITTERS:
        return True
    return n.op not in emitters and 1 <= len(n.inputs) <= 2


def _ancestors(node, producer: dict) -> set[int]:
    """ids of the nodes (of `producer`'s group) that `node` reads, transitively."""
    out: set[int] = set()
    stack = [node]
    while stack:
        for v in stack.pop().inputs:
            p = producer.get(v.name)
            if p is not None and id(p) not in out:
                out.add(id(p))
                stack.append(p)
    return out
