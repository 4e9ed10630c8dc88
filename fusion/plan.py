"""plan(graph, spec): the fusion pass.

Greedy, priority-ordered merging in the spirit of XLA's priority fusion, with
every decision checked three ways before it is taken:

1. structure: the merged group must be a kind hal lowers (a pointwise chain;
   a row reduction with elementwise prologue/epilogue and broadcast-back, all
   reductions over the same rows; one contraction with a cast prologue and an
   elementwise epilogue) and must not create a cycle between groups;
2. resources: the lowering is asked for the kernel(s) it would emit, and the
   merge is vetoed when they exceed the spec (shared memory / LDS per block,
   threads per block) or when the estimated registers per thread exceed the
   spec's limit (spills);
3. benefit: the cost model (fusion.cost) must predict a shorter time than the
   two groups apart.

Candidates are tried in order of the DRAM bytes they would save, largest
first. Every decision, taken or not, is logged with its reason. Cheap
producers (broadcast_to of small tensors, full, iota) are duplicated into each
consumer first, as XLA does, so they never force a round trip through DRAM.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hal.devices.spec import DeviceSpec
from hal.errors import HalError, UnsupportedError
from hal.ir.graph import Graph, Node
from hal.ops import Category, get_op

from .cost import GroupCost, compulsory_bytes, fmt_bytes, fmt_time, group_cost
from .group import FusedGroup, is_row_reduction, make_group, reduction_axes
from .rewrite import duplicate_cheap_producers

# Group kinds the planner may produce by merging; others stay single-node groups.
FUSIBLE_CATEGORIES = {Category.ELEMENTWISE, Category.BROADCAST, Category.SOURCE,
                      Category.REDUCTION, Category.CONTRACTION}


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
        return len(self.groups)

    def to_dict(self) -> dict:
        comp = self.compulsory_bytes
        return {
            "graph": self.graph.name, "device": self.spec.name,
            "groups": [{"name": g.name, "kind": g.kind, "ops": g.ops,
                        "nodes": [o.name for n in g.nodes for o in n.outputs],
                        "inputs": [v.name for v in g.inputs],
                        "outputs": [v.name for v in g.outputs],
                        "schedule": {k: v for k, v in g.schedule.items()
                                     if isinstance(v, (int, float, str, bool, dict, list))},
                        "reasons": g.reasons, "cost": self.costs[g.name].to_dict()}
                       for g in self.groups],
            "decisions": [d.to_dict() for d in self.decisions],
            "totals": {"kernels": len(self.groups), "modelled_dram_bytes": self.modelled_bytes,
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
        return f"{bad[0]} is lowered on its own (data movement, gather and scans are not fused)"
    contractions = [n for n, c in zip(nodes, cats, strict=True) if c is Category.CONTRACTION]
    reductions = [n for n, c in zip(nodes, cats, strict=True) if c is Category.REDUCTION]
    if len(contractions) > 1:
        return "one contraction per kernel (attention is matched separately)"
    if contractions and reductions:
        return "a reduction cannot join a matmul's epilogue"
    if contractions:
        mm = contractions[0]
        mm_shape = mm.outputs[0].shape
        produced = {o.name for n in nodes for o in n.outputs}
        before = True
        for n in nodes:
            if n is mm:
                before = False
                continue
            if before:  # prologue: casts of an operand only (and the constants they need)
                if n.op != "cast" and _cat(n) not in (Category.SOURCE, Category.BROADCAST):
                    return f"only a cast may precede a matmul in its kernel, not {n.op}"
            else:
                if any(o.shape != mm_shape for o in n.outputs) and \
                        _cat(n) not in (Category.BROADCAST, Category.SOURCE):
                    return f"epilogue op {n.op} changes the matmul's output shape"
        del produced
    if reductions:
        for r in reductions:
            if not is_row_reduction(r):
                return f"{r.op} over leading axes is a column reduction: fused only alone"
        rows = {_rows_of(r) for r in reductions}
        if len(rows) > 1:
            return "reductions over different rows"
        (lead, row) = rows.pop()
        for n in nodes:
            for o in n.outputs:
                if o.type.numel not in (0, 1) and o.type.numel not in (lead, lead * row) \
                        and _cat(n) is not Category.SOURCE:
                    return f"{n.op} output {list(o.shape)} is neither row- nor row-count-shaped"
    return None


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
        self.schedules: dict[tuple, dict] = {}

    # -- groups ------------------------------------------------------------
    def make(self, nodes: list[Node], name: str = "cand") -> FusedGroup:
        g = make_group(self.graph, nodes, name)
        self._schedule(g)
        return g

    def _schedule(self, g: FusedGroup) -> None:
        """Decide the parts of the schedule the hierarchy dictates, with reasons."""
        if g.kind == "row_reduction":
            from .cost import reduction_passes, row_bytes_on_chip

            need = row_bytes_on_chip(g)
            passes = reduction_passes(g)
            if passes <= 1:
                g.schedule["row_cache"] = "none"
            elif need <= self.spec.shared_mem_per_block:
                g.schedule["row_cache"] = "shared"
                g.reasons.append(f"one pass: a row needs {fmt_bytes(need)}, "
                                 f"{fmt_bytes(self.spec.shared_mem_per_block)} of shared memory "
                                 f"per block on {self.spec.name}")
            else:
                g.schedule["row_cache"] = "reload"
                g.reasons.append(f"{passes} passes over each row: a row needs {fmt_bytes(need)}, "
                                 f"shared memory per block is "
                                 f"{fmt_bytes(self.spec.shared_mem_per_block)} on {self.spec.name}")

    def key(self, nodes: list[Node]) -> tuple:
        return tuple(sorted(self.order[id(n)] for n in nodes))

    def cost(self, nodes: list[Node]) -> GroupCost:
        k = self.key(nodes)
        if k not in self._cost_cache:
            self._cost_cache[k] = group_cost(self.make(nodes), self.spec)
        return self._cost_cache[k]

    def label(self, gid: int) -> str:
        nodes = self.members[gid]
        return "+".join(n.op for n in nodes[:4]) + ("+..." if len(nodes) > 4 else "") + \
            f"(%{nodes[-1].outputs[0].name})"

    # -- graph of groups -----------------------------------------------------
    def edges(self) -> dict[tuple[int, int], int]:
        """(producer group, consumer group) -> bytes of values flowing between them."""
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

    def creates_cycle(self, p: int, c: int, edges) -> bool:
        succ: dict[int, set[int]] = {}
        for (a, b) in edges:
            succ.setdefault(a, set()).add(b)
        stack = [x for x in succ.get(p, ()) if x != c]
        seen = set(stack)
        while stack:
            x = stack.pop()
            if x == c:
                return True
            for y in succ.get(x, ()):
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

    # -- one candidate ------------------------------------------------------
    def try_merge(self, p: int, c: int, flow_bytes: int, edges, sibling: bool = False) -> bool:
        nodes = sorted(self.members[p] + self.members[c], key=lambda n: self.order[id(n)])
        k = self.key(nodes)
        if k in self._rejected:
            return False
        lp, lc = self.label(p), self.label(c)

        def reject(reason: str) -> bool:
            self._rejected.add(k)
            self.decisions.append(Decision(lp, lc, False, "not fused: " + reason))
            return False

        veto = structural_veto(nodes)
        if veto:
            return reject(veto)
        if not sibling and self.creates_cycle(p, c, edges):
            return reject("another kernel sits between them (fusing would create a cycle)")
        cand = self.make(nodes)
        cost_sep = self.cost(self.members[p]), self.cost(self.members[c])
        cost_f = self.cost(nodes)
        if cost_f.registers > self.spec.max_registers_per_thread:
            return reject(f"~{cost_f.registers} registers per thread, {self.spec.name} allows "
                          f"{self.spec.max_registers_per_thread} (would spill)")
        if self.verify_lowering:
            why = self.lowering_veto(cand)
            if why:
                return reject(why)
        saved_b = sum(x.dram_bytes for x in cost_sep) - cost_f.dram_bytes
        saved_t = sum(x.time_s for x in cost_sep) - cost_f.time_s
        if saved_t <= 0:
            return reject(f"no modelled gain ({fmt_bytes(saved_b)} saved, "
                          f"{fmt_time(-saved_t)} slower)")
        what = "fused siblings" if sibling else "fused"
        self.decisions.append(Decision(lp, lc, True, f"{what}: saves {fmt_bytes(saved_b)} of DRAM "
                                       f"traffic, ~{fmt_time(saved_t)}", saved_b, saved_t))
        self.merge(p, c)
        return True

    def lowering_veto(self, cand: FusedGroup) -> str | None:
        from hal.lowering import lower_group

        try:
            kernels = lower_group(cand, self.spec)
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
        return None

    # -- passes ---------------------------------------------------------------
    def producer_consumer(self) -> None:
        changed = True
        while changed:
            changed = False
            edges = self.edges()
            for (p, c), nbytes in sorted(edges.items(), key=lambda kv: (-kv[1], kv[0])):
                if p in self.members and c in self.members and self.try_merge(p, c, nbytes, edges):
                    changed = True
                    break

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
            edges = self.edges()
            for _name, gids in readers.items():
                gids = sorted(set(gids))
                for i in range(len(gids)):
                    for j in range(i + 1, len(gids)):
                        a, b = gids[i], gids[j]
                        if a not in self.members or b not in self.members:
                            continue
                        if self.creates_cycle(a, b, edges) or self.creates_cycle(b, a, edges):
                            continue
                        ka = self.make(self.members[a]).kind
                        kb = self.make(self.members[b]).kind
                        if ka != kb or ka not in ("pointwise", "row_reduction"):
                            continue
                        if self.try_merge(a, b, 0, edges, sibling=True):
                            changed = True
                            break
                    if changed:
                        break
                if changed:
                    break

    def result(self) -> FusionPlan:
        groups, costs = [], {}
        ordered = sorted(self.members.values(), key=lambda ns: self.order[id(ns[0])])
        for i, nodes in enumerate(ordered):
            g = self.make(nodes, name=f"k{i}_{g_kind_name(nodes)}")
            if len(nodes) > 1:
                g.reasons.insert(0, f"fused {len(nodes)} ops: {', '.join(n.op for n in nodes)}")
            groups.append(g)
            costs[g.name] = group_cost(g, self.spec)
        return FusionPlan(self.graph, _topological(groups), self.spec, costs, self.decisions)


def g_kind_name(nodes: list[Node]) -> str:
    cats = [_cat(n) for n in nodes]
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
         verify_lowering: bool = True) -> FusionPlan:
    """Fuse `graph` for `spec`. `fuse=False` gives the unfused plan (one kernel per primitive)."""
    from hal.ops.decompose import decompose_graph

    g = decompose_graph(graph)
    if fuse:
        g = duplicate_cheap_producers(g)
    planner = _Planner(g, spec, verify_lowering)
    if fuse:
        planner.producer_consumer()
        planner.siblings()
    return planner.result()
