"""hal.ops: the op registry and every op hal defines.

Importing this package registers all in-tree ops. Add your own with
`register_op(OpDef(...))`; a composite only needs a decomposition.
"""

from . import elementwise  # noqa: F401,E402  (registers on import)
from .registry import (  # noqa: F401
    OPS,
    AttrSpec,
    Category,
    ErrorModel,
    OpDef,
    get_op,
    ops_in,
    register_op,
)

for _mod in ("movement", "reduction", "contraction", "gather", "source", "scan", "composite"):
    try:
        __import__(f"{__name__}.{_mod}")
    except ModuleNotFoundError as _e:  # modules land one at a time during development
        if _e.name != f"{__name__}.{_mod}":
            raise
