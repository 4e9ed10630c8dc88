"""The fusion pass's result: `FusionPlan` (the groups, their costs, totals) and the
`Decision`s it logged with their reasons (`hal fuse --explain`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hal.devices.spec import DeviceSpec
from hal.ir.graph import Graph

from .cost import GroupCost, compulsory_bytes
from .group import FusedGroup, is_alias_group


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
