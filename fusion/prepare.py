"""The groups a kernel backend runs for a graph: the fusion plan's, given ones, or one per op.

Shared by every backend that executes kernels (cpu_sim, the GPU runner) so that they
all run exactly the same groups for the same graph and device spec.
"""

from __future__ import annotations

from collections.abc import Sequence

from hal.devices.spec import DeviceSpec
from hal.errors import UnsupportedError
from hal.ir.graph import Graph

from .group import FusedGroup, trivial_groups
from .memory import check_device_memory


def groups_to_run(graph: Graph, spec: DeviceSpec, *, groups: Sequence[FusedGroup] | None = None,
                  fuse: bool = True, who: str = "backend") -> tuple[Graph, list[FusedGroup]]:
    """(primitive graph, groups): the fusion plan when `fuse`, the `groups` given (which
    refer to `graph`, already primitive), or one group per primitive node."""
    from hal.ops.decompose import decompose_graph

    from .plan import plan

    if groups is None and fuse:
        fusion_plan = plan(graph, spec)
        prim, chosen = fusion_plan.graph, list(fusion_plan.groups)
    else:
        prim = graph if groups is not None else decompose_graph(graph)
        chosen = list(groups) if groups is not None else trivial_groups(prim)
        check_device_memory(prim, chosen, spec)   # plan() checks its own
    for v in prim.values().values():
        if not v.type.is_static:
            raise UnsupportedError(f"{who}: value %{v.name} has symbolic shape "
                                   f"{list(v.shape)}", hint="bind symbolic dims first")
    return prim, chosen
