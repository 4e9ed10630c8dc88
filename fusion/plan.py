"""plan(graph, spec): the fusion pass.

Greedy, priority-ordered merging in the spirit of XLA's priority fusion, with
every decision checked three ways before it is taken:

1. structure: the merged group must be a kind hal lowers (a pointwise chain,
   with data movement (reshape, transpose, slice, concat, pad, broadcast)
   anywhere in it as index math on loads; a row reduction with elementwise
   and movement prologue, elementwise epilogue and broadcast-back, all
   reductions over the same rows; one contraction whose operands may come
   through casts and movement (strided loads) with an elementwise epilogue, or
   several sibling contractions sharing A with equal output shapes (a dual
   GEMM: gate and up of a SwiGLU) whose epilogue combines them elementwise,
   or sibling contractions sharing A with different output shapes (a fused
   QKV projection with grouped-query attention: one column-panel segment of
   the grid per contraction) whose epilogues each read one of them and each
   pass these rules alone;
   an attention: dot -> logits -> row softmax -> dot) and must not create a
   cycle between groups;
2. resources: the lowering is asked for the kernel(s) it would emit, and the
   merge is vetoed when they exceed the spec (shared memory / LDS per block,
   threads per block) or when the estimated registers per thread exceed the
   spec's limit (spills);
3. benefit: the cost model (fusion.cost) must not predict a longer time than
   the two groups apart.

Attention is matched first (fusion.attention finds the node sets,
hal.lowering.attention validates them and picks tiles from the spec); an
attention whose tiles do not fit is left to the greedy pass, with the reason.
Candidates are tried in order of the DRAM bytes they would save, largest
first. Every decision is logged once with its reason (a rejected pair is not
logged again as its groups grow). Groups reading the same value are then
merged as siblings: pointwise with pointwise, row reduction with row
reduction, and matmul with matmul when their contractions share A (one
kernel reads A for all of them), under the same three checks. Cheap
producers (broadcast_to of small tensors, full, iota) are duplicated into
each consumer first, as XLA does, so they never force a round trip through
DRAM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hal.devices.spec import DeviceSpec
from hal.errors import HalError, UnsupportedError
from hal.ir.graph import Graph, Node
from hal.lowering.memo import Memo, group_key, keep_lowering
from hal.lowering.options import DEFAULT_OPTIONS
from hal.ops import Category, get_op
from hal.ops.reduction import reduction_axes

from .cost import GroupCost, compulsory_bytes, fmt_bytes, fmt_time, group_cost
from .group import FusedGroup, is_alias_group, is_row_reduction, make_group
from .rewrite import (
    canonicalize_reductions,
    duplicate_cheap_producers,
    merge_common_subexpressions,
)
from .veto_reuse import same_verdict

# Group kinds the planner may produce by merging; others stay single-node groups.
FUSIBLE_CATEGORIES = {Category.ELEMENTWISE, Category.BROADCAST, Category.SOURCE,
                      Category.REDUCTION, Category.CONTRACTION, Category.MOVEMENT}
# Ops that only re-index: inside a kernel they are index math on the loads.
INDEX_ONLY = {Category.MOVEMENT, Category.BROADCAST, Category.SOURCE}
# Lowering-veto verdicts by (candidate signature, spec) across plans (_Planner.lowering_veto)
VETOES = Memo("fusion_vetoes", 4096)


@dataclass
class Decision:
    producer: str
    consumer: str
    fused: bool
    reason: str
    saved_bytes: int = 0
    saved_time_s: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class FusionPlan:
    graph: Graph
    groups: list[FusedGroup]
    spec: DeviceSpec
    costs: dict[str, GroupCost]
    decisions: list[Decision] = field(default_factory=list)
    measured: list[dict] = field(default_factory=list)  # compiler records (fusion.measured)

    @property
    def modelled_bytes(self) -> int:
        return sum(c.dram_bytes for c in self.costs.values())

    @property
    def modelled_time_s(self) -> float:
        return sum(c.time_s for c in self.costs.values())

    @property
    def flops(self) -> float:
        return sum(c.flops for c in self.costs.values())

    @property
    def compulsory_bytes(self) -> int:
        return compulsory_bytes(self.graph)

    def kernel_count(self) -> int:
        """Groups that launch a kernel (a lone reshape is a view of its input)."""
        return sum(1 for g in self.groups if not is_alias_group(g))

    @property
    def issued_bytes(self) -> int:
        """Global-memory bytes as lowered, cache hits included (what cpu_sim counts)."""
        return sum(c.issued for c in self.costs.values())

    def to_dict(self) -> dict:
        comp = self.compulsory_bytes
        return {
            "graph": self.graph.name, "device": self.spec.name,
            "groups": [{"name": g.name, "kind": g.kind, "ops": g.ops,
                        "nodes": [o.name for n in g.nodes for o in n.outputs],
                        "inputs": [v.name for v in g.inputs],
                        "outputs": [v.name for v in g.outputs],
                        "plan": (self.costs[g.name].plan.summary()
                                 if self.costs[g.name].plan is not None else None),
                        "reasons": g.reasons, "cost": self.costs[g.name].to_dict()}
                       for g in self.groups],
            "decisions": [d.to_dict() for d in self.decisions],
            "totals": {"kernels": self.kernel_count(), "groups": len(self.groups),
                       "modelled_dram_bytes": self.modelled_bytes,
                       "issued_global_bytes": self.issued_bytes,
                       "compulsory_dram_bytes": comp,
                       "ratio_to_compulsory": self.modelled_bytes / comp if comp else 1.0,
                       "flops": self.flops, "modelled_time_s": self.modelled_time_s},
        }


# --------------------------------------------------------------------------- structure rules


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


# --------------------------------------------------------------------------- the planner


class _Planner:
    def __init__(self, graph: Graph, spec: DeviceSpec, verify_lowering: bool):
        self.graph = graph
        self.spec = spec
        self.verify_lowering = verify_lowering
        self.order = {id(n): i for i, n in enumerate(graph.nodes)}
        self.group_of: dict[int, int] = {id(n): i for i, n in enumerate(graph.nodes)}
        self.members: dict[int, list[Node]] = {i: [n] for i, n in enumerate(graph.nodes)}
        self.producer = {o.name: n for n in graph.nodes for o in n.outputs}
        self.decisions: list[Decision] = []
        self._cost_cache: dict[tuple, GroupCost] = {}
        self._rejected: set[tuple] = set()
        self._kinds: dict[tuple, str] = {}
        self._gkeys: dict[int, tuple] = {}
        self._logged: set[tuple] = set()
        self.extra_reasons: dict[tuple, list[str]] = {}
        # node sets a compiler found over the limits (fusion.measured): never one kernel
        self.forbidden: list[tuple[frozenset[str], str]] = []
        self._users = graph.users()
        self._outs = {v.name for v in graph.outputs}
        self._sig_cost: dict[tuple, GroupCost] = {}
        self._sig_veto: dict[tuple, str | None] = {}
        # keys of the node sets that passed the lowering veto (what fusion.veto_reuse grows)
        self._vetted: set[tuple] = set()
        # per node (and group input), by identity, the parts of signature() and group_key()
        # that do not depend on the group: candidates share their nodes (the graph is fixed)
        self._sig_parts: dict[int, tuple] = {}
        self._key_parts: dict[int, tuple] = {}
        # group -> {neighbour group: bytes}, kept up to date by merge()
        self.succ: dict[int, dict[int, int]] = {}
        self.pred: dict[int, dict[int, int]] = {}
        for (a, b), nb in self._initial_edges().items():
            self.succ.setdefault(a, {})[b] = nb
            self.pred.setdefault(b, {})[a] = nb

    # -- groups ------------------------------------------------------------
    def make(self, nodes: list[Node], name: str = "cand") -> FusedGroup:
        return make_group(self.graph, nodes, name, users=self._users, order=self.order)

    def kind(self, gid: int) -> str:
        """The group kind of group `gid` as it stands (cached per node set)."""
        k = self.gkey(gid)
        if k not in self._kinds:
            self._kinds[k] = make_group(self.graph, self.members[gid], "kind", users=self._users,
                                        order=self.order).kind
        return self._kinds[k]

    def gkey(self, gid: int) -> tuple:
        """key() of group `gid`'s current nodes (cached until it merges)."""
        k = self._gkeys.get(gid)
        if k is None:
            k = self._gkeys[gid] = self.key(self.members[gid])
        return k

    def key(self, nodes: list[Node]) -> tuple:
        return tuple(sorted(self.order[id(n)] for n in nodes))

    def cost(self, nodes: list[Node], group: FusedGroup | None = None,
             sig: tuple | None = None) -> GroupCost:
        """The cost of one kernel of `nodes`; `group` (make(nodes)) and `sig` (its
        signature) when the caller has built them."""
        k = self.key(nodes)
        if k not in self._cost_cache:
            g = group if group is not None else self.make(nodes)
            if sig is None:
                sig = self.signature(g)  # the layers of a model repeat: price each once
            if sig not in self._sig_cost:
                self._sig_cost[sig] = group_cost(g, self.spec)
            self._cost_cache[k] = self._sig_cost[sig]
        return self._cost_cache[k]

    def signature(self, g: FusedGroup) -> tuple:
        return signature(g, self._sig_parts)

    def group_key(self, g: FusedGroup) -> tuple:
        return group_key(g, self._key_parts)

    def label(self, gid: int) -> str:
        nodes = self.members[gid]
        return "+".join(n.op for n in nodes[:4]) + ("+..." if len(nodes) > 4 else "") + \
            f"(%{nodes[-1].outputs[0].name})"

    # -- graph of groups -----------------------------------------------------
    def edges(self) -> dict[tuple[int, int], int]:
        """(producer group, consumer group) -> bytes of values flowing between them."""
        return {(a, b): nb for a, d in self.succ.items() for b, nb in d.items()}

    def _initial_edges(self) -> dict[tuple[int, int], int]:
        out: dict[tuple[int, int], int] = {}
        for n in self.graph.nodes:
            c = self.group_of[id(n)]
            seen = set()
            for v in n.inputs:
                p_node = self.producer.get(v.name)
                if p_node is None or v.name in seen:
                    continue
                seen.add(v.name)
                p = self.group_of[id(p_node)]
                if p != c:
                    out[(p, c)] = out.get((p, c), 0) + v.type.nbytes
        return out

    def creates_cycle(self, p: int, c: int, edges=None) -> bool:
        """Would merging p and c close a cycle (a path p -> x -> c through another group)?"""
        stack = [x for x in self.succ.get(p, ()) if x != c]
        seen = set(stack)
        while stack:
            x = stack.pop()
            if x == c:
                return True
            for y in self.succ.get(x, ()):
                if y not in seen:
                    seen.add(y)
                    stack.append(y)
        return False

    def merge(self, p: int, c: int) -> None:
        nodes = sorted(self.members[p] + self.members[c], key=lambda n: self.order[id(n)])
        for n in self.members[p]:
            self.group_of[id(n)] = c
        self.members[c] = nodes
        del self.members[p]
        self._gkeys.pop(p, None)
        self._gkeys.pop(c, None)
        for b, nb in self.succ.pop(p, {}).items():
            self.pred[b].pop(p, None)
            if b != c:
                self.succ.setdefault(c, {})[b] = self.succ.get(c, {}).get(b, 0) + nb
                self.pred[b][c] = self.pred[b].get(c, 0) + nb
        for a, nb in self.pred.pop(p, {}).items():
            self.succ[a].pop(p, None)
            if a != c:
                self.pred.setdefault(c, {})[a] = self.pred.get(c, {}).get(a, 0) + nb
                self.succ[a][c] = self.succ[a].get(c, 0) + nb
        self.succ.get(c, {}).pop(c, None)
        self.pred.get(c, {}).pop(c, None)

    # -- one candidate ------------------------------------------------------
    def try_merge(self, p: int, c: int, flow_bytes: int, edges, sibling: bool = False) -> bool:
        k = tuple(sorted(self.gkey(p) + self.gkey(c)))   # = key(nodes), from cached keys
        if k in self._rejected:
            return False
        nodes = sorted(self.members[p] + self.members[c], key=lambda n: self.order[id(n)])
        lp, lc = self.label(p), self.label(c)

        def reject(reason: str) -> bool:
            self._rejected.add(k)
            pk, ck = (self.gkey(p), reason), (self.gkey(c), reason)
            if pk not in self._logged and ck not in self._logged:  # each pair's reason once
                self.decisions.append(Decision(lp, lc, False, "not fused: " + reason))
            self._logged.update((pk, ck))
            return False

        veto = structural_veto(nodes) or self.forbidden_reason(nodes)
        if veto:
            return reject(veto)
        if not sibling and self.creates_cycle(p, c, edges):
            return reject("another kernel sits between them (fusing would create a cycle)")
        cand = self.make(nodes)
        sig = self.signature(cand)
        cost_sep = self.cost(self.members[p]), self.cost(self.members[c])
        try:
            cost_f = self.cost(nodes, cand, sig)
        except UnsupportedError as e:   # the group kind cannot plan this candidate kernel
            return reject(f"no kernel plan: {e.message}")
        if cost_f.registers > self.spec.max_registers_per_thread:
            return reject(f"~{cost_f.registers} registers per thread, {self.spec.name} allows "
                          f"{self.spec.max_registers_per_thread} (would spill)")
        if self.verify_lowering:
            if sig not in self._sig_veto:
                grown = next((self.members[g] for g in (p, c) if self.gkey(g) in self._vetted
                              and self.kind(g) == "matmul"), None)
                self._sig_veto[sig] = self.lowering_veto(cand, sig, grown)
            why = self._sig_veto[sig]
            if why:
                return reject(why)
            self._vetted.add(k)
        saved_b = sum(x.dram_bytes for x in cost_sep) - cost_f.dram_bytes
        saved_t = sum(x.time_s for x in cost_sep) - cost_f.time_s
        if saved_t < 0 or (saved_t == 0 and saved_b <= 0 and not _free_member(
                self.members[p], self.members[c])):
            return reject(f"no modelled gain ({fmt_bytes(saved_b)} saved, "
                          f"{fmt_time(-saved_t)} slower)")
        what = "fused siblings" if sibling else "fused"
        self.decisions.append(Decision(lp, lc, True, f"{what}: saves {fmt_bytes(saved_b)} of DRAM "
                                       f"traffic, ~{fmt_time(saved_t)}", saved_b, saved_t))
        self.merge(p, c)
        return True

    def forbidden_reason(self, nodes: list[Node]) -> str | None:
        names = {o.name for n in nodes for o in n.outputs}
        return next((why for fs, why in self.forbidden if fs <= names), None)

    def lowering_veto(self, cand: FusedGroup, sig: tuple | None = None,
                      grown: list[Node] | None = None) -> str | None:
        """Why the candidate's kernels cannot run on the spec (the lowering refuses it or
        its kernels exceed shared memory or threads per block), or None. The verdict is a
        function of the candidate's structure and the spec (the within-plan `_sig_veto`
        already shares it between a model's repeated layers); across plans it is kept in
        VETOES by (signature, spec): a None verdict serves every candidate of that
        structure, a reason (whose text may name values) only the same named candidate.
        `sig`: signature(cand), when the caller has it. `grown`: the nodes of a group that
        passed the veto and that `cand` grows; when `cand` only adds epilogue elements to it
        that provably keep its lowering's verdict (fusion.veto_reuse), that verdict is
        given without lowering `cand`."""
        key = (sig or self.signature(cand), self.spec)
        hit = VETOES.lookup(key)
        gkey = self.group_key(cand)
        if hit is not None and (hit[1] is None or hit[0] == gkey):
            return hit[1]
        if grown is not None and same_verdict(cand, self.make(grown), self.spec,
                                              self._plan_of):
            why = None
        else:
            why = self._lower_and_check(cand, gkey)
        VETOES.put(key, (None if why is None else gkey, why))
        return why

    def _plan_of(self, g: FusedGroup):
        from hal.lowering import plan_group

        return plan_group(g, self.spec, self.group_key(g))

    def _lower_and_check(self, cand: FusedGroup, gkey: tuple) -> str | None:
        """lowering_veto's verdict for `cand` (`gkey`: its group_key), lowering it."""
        from hal.lowering import lower_group

        try:
            kernels = lower_group(cand, self.spec, gkey=gkey)
        except UnsupportedError as e:
            return f"the {cand.kind} lowering cannot take it ({e.message})"
        except HalError as e:  # a lowering bug must not break planning: keep groups apart
            return f"lowering failed ({e.message})"
        for k in kernels:
            if k.shared_bytes > self.spec.shared_mem_per_block:
                return (f"kernel needs {fmt_bytes(k.shared_bytes)} of shared memory, "
                        f"{self.spec.name} allows {fmt_bytes(self.spec.shared_mem_per_block)} "
                        f"per block")
            if k.block > self.spec.max_threads_per_block:
                return f"{k.block} threads per block exceed {self.spec.max_threads_per_block}"
        keep_lowering(cand, self.spec, DEFAULT_OPTIONS, kernels, gkey)   # for the final group's
        return None

    # -- passes ---------------------------------------------------------------
    def attention(self) -> None:
        """Make each attention (fusion.attention) one group when its tiles fit the device."""
        from hal.lowering.attention import plan_attention

        from .attention import attention_candidates

        narrow = {id(ns[-1]): ns for ns in attention_candidates(self.graph, prologues=False)}
        for nodes in attention_candidates(self.graph):
            nodes = self._prologue_or_not(nodes, narrow.get(id(nodes[-1])))
            cand = make_group(self.graph, nodes, "attention", users=self._users, order=self.order)
            planned = plan_attention(cand, self.spec)
            label = f"{nodes[0].op}(%{nodes[0].outputs[0].name})"
            last = f"dot_general(%{nodes[-1].outputs[0].name})"
            if isinstance(planned, str):
                self.decisions.append(Decision(label, last, False,
                                               f"attention not fused on {self.spec.name}: "
                                               f"{planned}"))
                continue
            why = self.forbidden_reason(nodes)
            if self.verify_lowering and not why:
                cand = self.make(nodes)
                sig = self.signature(cand)
                if sig not in self._sig_veto:
                    self._sig_veto[sig] = self.lowering_veto(cand, sig)
                why = self._sig_veto[sig]
            if why:
                self.decisions.append(Decision(label, last, False, f"attention not fused: {why}"))
                continue
            gids = sorted({self.group_of[id(n)] for n in nodes})
            sep = sum(self.cost(self.members[g]).dram_bytes for g in gids)
            fused = self.cost(nodes).dram_bytes
            reason = f"saves {fmt_bytes(sep - fused)} of DRAM traffic (scores stay on chip)"
            target = gids[-1]
            for g in gids[:-1]:
                self.merge(g, target)
            self.extra_reasons[self.key(nodes)] = [reason, *self.extra_reasons.get(self.key(nodes), [])]
            from hal.lowering import plan_group

            kp = plan_group(cand, self.spec, self.group_key(cand))   # the kernel's own plan
            ts = kp.tile_sizes
            on = f", {kp.math.name}" if kp.math.matrix else ""
            self.decisions.append(Decision(label, last, True,
                                           f"fused attention ({len(nodes)} ops, Br={ts['br']}, "
                                           f"Bc={ts['bc']}{on}): {reason}", sep - fused))

    def _prologue_or_not(self, wide: list[Node], narrow: list[Node] | None) -> list[Node]:
        """Keep the operands' elementwise prologues (rotary) inside the attention kernel
        only when the model says it pays: K and V prologues are recomputed per tile of
        query rows, and a prologue reading a wider input re-reads more bytes."""
        if narrow is None or len(narrow) == len(wide):
            return wide
        ids = {id(n) for n in narrow}
        extra = [n for n in wide if id(n) not in ids]
        try:
            inside = self.cost(wide)
            apart = (self.cost(narrow), self.cost(extra))
        except HalError:  # a variant the cost model cannot price: keep the plain one
            return narrow
        t_apart = sum(c.time_s for c in apart)
        label = f"{len(extra)} prologue ops of the attention operands"
        if inside.time_s <= t_apart:
            self.extra_reasons[self.key(wide)] = [
                f"{label} computed in the tile loads: {fmt_time(t_apart - inside.time_s)} "
                f"faster than a kernel of their own"]
            return wide
        self.decisions.append(Decision(label, f"dot_general(%{wide[-1].outputs[0].name})",
                                       False, f"not fused into the attention: recomputing "
                                       f"them per tile costs {fmt_time(inside.time_s - t_apart)}"
                                       f" more than a kernel of their own"))
        return narrow

    def long_chains(self) -> None:
        """Fuse long chains of elementwise ops in few steps (fusion.chains)."""
        from .chains import fuse_long_chains

        fuse_long_chains(self)

    def merge_many(self, gids: list[int], target: int) -> None:
        """merge(g, target) for every g in `gids`, with one sort of the members."""
        for g in gids:
            members, self.members[target] = self.members[target], []
            self.merge(g, target)          # merge() sorts an empty list plus g's nodes
            members.extend(self.members[target])
            self.members[target] = members
        self.members[target].sort(key=lambda n: self.order[id(n)])

    def producer_consumer(self) -> None:
        """Rounds over the edges, largest flow first; stale candidates are skipped."""
        changed = True
        while changed:
            changed = False
            # largest flow first; at equal flow a matmul's epilogue before a reduction's
            # prologue (a residual add belongs after the projection, so the norm that
            # follows can become the next matmul's prologue)
            for (p, c), nbytes in sorted(self.edges().items(), key=lambda kv: (
                    -kv[1], self.kind(kv[0][0]) != "matmul", kv[0])):
                if p in self.members and c in self.members and c in self.succ.get(p, {}) \
                        and self.try_merge(p, c, nbytes, None):
                    changed = True

    def siblings(self) -> None:
        changed = True
        while changed:
            changed = False
            readers: dict[str, list[int]] = {}
            for gid, nodes in self.members.items():
                names = {v.name for n in nodes for v in n.inputs}
                produced = {o.name for n in nodes for o in n.outputs}
                for name in names - produced:
                    readers.setdefault(name, []).append(gid)
            for _name, gids in readers.items():
                gids = sorted(set(gids))
                for i in range(len(gids)):
                    for j in range(i + 1, len(gids)):
                        a, b = gids[i], gids[j]
                        if a not in self.members or b not in self.members:
                            continue
                        # cheap tests first (a value read by every layer, such as the rope
                        # tables, makes many pairs): kinds, pairs already refused, then cycles
                        ka, kb = self.kind(a), self.kind(b)
                        # matmul siblings: contractions sharing A (a fused QKV projection);
                        # structural_veto says why others stay apart
                        if ka != kb or ka not in ("pointwise", "row_reduction", "matmul"):
                            continue
                        if tuple(sorted(self.gkey(a) + self.gkey(b))) in self._rejected:
                            continue
                        if self.creates_cycle(a, b) or self.creates_cycle(b, a):
                            continue
                        if self.try_merge(a, b, 0, None, sibling=True):
                            changed = True

    def result(self) -> FusionPlan:
        groups, costs = [], {}
        ordered = sorted(self.members.values(), key=lambda ns: self.order[id(ns[0])])
        for i, nodes in enumerate(ordered):
            g = self.make(nodes, name=f"k{i}_{g_kind_name(nodes)}")
            costs[g.name] = cost = group_cost(g, self.spec)
            if cost.plan is not None:   # the plan's decisions, with their reasons
                g.reasons.extend(cost.plan.reasons)
            g.reasons.extend(self.extra_reasons.get(self.key(nodes), []))
            if len(nodes) > 1:
                g.reasons.insert(0, f"fused {len(nodes)} ops: {', '.join(n.op for n in nodes)}")
            groups.append(g)
        return FusionPlan(self.graph, _topological(groups), self.spec, costs, self.decisions)


def signature(g: FusedGroup, node_parts: dict | None = None) -> tuple:
    """The structure of a group without its value names: equal for a model's repeated layers.
    `node_parts`: a dict the caller keeps while its graph does not change (the planner),
    holding each node's op, attributes and output types by identity."""
    local: dict[str, int] = {v.name: i for i, v in enumerate(g.inputs)}
    parts: list[tuple] = [tuple((v.dtype.name, tuple(v.shape)) for v in g.inputs)]
    for n in g.nodes:
        ins = tuple(local.get(v.name, -1) for v in n.inputs)
        for o in n.outputs:
            local[o.name] = len(local)
        own = node_parts.get(id(n)) if node_parts is not None else None
        if own is None:
            own = _node_structure(n)
            if node_parts is not None:
                node_parts[id(n)] = own
        op, attrs, outs = own
        parts.append((op, attrs, ins, outs))
    parts.append(tuple(local[v.name] for v in g.outputs))
    return (g.kind, tuple(parts))


def _node_structure(n: Node) -> tuple[str, str, tuple]:
    """A node's part of signature() that does not depend on the group: op, attributes,
    output types."""
    return (n.op, repr(sorted(n.attrs.items())),
            tuple((o.dtype.name, tuple(o.shape)) for o in n.outputs))


def _free_member(a: list[Node], b: list[Node]) -> bool:
    """One side is a lone reshape (a free alias): merging it costs nothing and saves a group."""
    return any(len(ns) == 1 and ns[0].op == "reshape" for ns in (a, b))


def _dual_matmul(nodes: list[Node]) -> bool:
    """Several contractions that share A in one matmul kernel (hal.lowering.matmul): a dual
    GEMM (one tile grid) or siblings of different shapes (one grid segment each)."""
    from hal.lowering.matmul import sibling_contractions

    dots = sibling_contractions(nodes)
    return not isinstance(dots, str) and len(dots) > 1


def g_kind_name(nodes: list[Node]) -> str:
    """The kernel name's kind part: the heaviest op, "attention", "dual_<op>" for a dual
    GEMM and "multi_<op>" for sibling contractions of different shapes (e.g. Q, K, V)."""
    cats = [_cat(n) for n in nodes]
    if cats.count(Category.CONTRACTION) == 2 and not _dual_matmul(nodes):
        return "attention"
    if cats.count(Category.CONTRACTION) > 1:
        from hal.lowering.matmul import sibling_segments

        prefix = "multi_" if sibling_segments(nodes) is not None else "dual_"
        return prefix + nodes[cats.index(Category.CONTRACTION)].op
    for cat in (Category.CONTRACTION, Category.REDUCTION):
        if cat in cats:
            return nodes[cats.index(cat)].op
    return nodes[-1].op


def _topological(groups: list[FusedGroup]) -> list[FusedGroup]:
    """Order groups so that every group runs after the groups producing its inputs."""
    producer_of = {o.name: g.name for g in groups for n in g.nodes for o in n.outputs}
    by_name = {g.name: g for g in groups}
    done: set[str] = set()
    out: list[FusedGroup] = []

    def visit(g: FusedGroup, stack: tuple = ()):
        if g.name in done:
            return
        for v in g.inputs:
            p = producer_of.get(v.name)
            if p is not None and p != g.name and p not in stack:
                visit(by_name[p], stack + (g.name,))
        done.add(g.name)
        out.append(g)

    for g in groups:
        visit(g)
    return out


def plan(graph: Graph, spec: DeviceSpec, *, fuse: bool = True,
         verify_lowering: bool = True, measure: str | None = "auto") -> FusionPlan:
    """Fuse `graph` for `spec`. `fuse=False` gives the unfused plan (one kernel per primitive).

    `measure` asks the real compiler for registers and spills of the fused kernels and
    re-plans without the groups over the limits (fusion.measured): "auto" (when a compiler
    is installed and the plan is small; HAL_MEASURE=off disables), "on", a compiler name,
    or None / "off".
    """
    from hal.ops.decompose import decompose_graph

    g = decompose_graph(graph)
    if fuse:
        g = duplicate_cheap_producers(merge_common_subexpressions(canonicalize_reductions(g)))

    def run(forbidden: list[tuple[frozenset[str], str]]) -> FusionPlan:
        planner = _Planner(g, spec, verify_lowering)
        planner.forbidden = forbidden
        if fuse:
            planner.attention()
            planner.long_chains()
            planner.producer_consumer()
            planner.siblings()
            # siblings can unblock producers: a norm read by Q, K and V fuses into their
            # one sibling kernel only once they are one group
            planner.producer_consumer()
        return planner.result()

    result = run([])
    if fuse and measure not in (None, "off"):
        from .measured import refine

        result = refine(result, run, measure)
    from .memory import check_device_memory

    check_device_memory(result.graph, result.groups, spec)
    return result
