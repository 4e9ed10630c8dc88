"""hal.fusion: groups of primitives that become one kernel, and the pass that forms them.

    from hal.fusion import plan
    p = plan(graph, load_spec("h100-sxm"))
    for g in p.groups: print(g.name, g.kind, g.reasons)
"""

from .group import FusedGroup, make_group, trivial_groups  # noqa: F401
from .plan import FusionPlan, plan  # noqa: F401
