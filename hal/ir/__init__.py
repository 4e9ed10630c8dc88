"""hal.ir: tensor types, the graph IR, its builder and its text format."""

from hal.ir.builder import GraphBuilder  # noqa: F401
from hal.ir.graph import Constant, Graph, Initializer, Node, Value  # noqa: F401
from hal.ir.types import TensorType  # noqa: F401
