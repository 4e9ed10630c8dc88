"""GraphBuilder: the way code (ops' decompositions, frontends, tests) makes graphs.

    b = GraphBuilder("mlp")
    x = b.input("x", f32, (4, 8))
    w = b.constant("w", f32, (8, 16), Initializer.make("random", seed=0, scale=0.1))
    y = b.op("matmul", x, w)
    b.output(y)
    g = b.build()          # verified

`op` infers output types from the op registry and names results v0, v1, ...
(or the names you pass with `name=`).
"""

from __future__ import annotations

from typing import Any

from hal.dtypes import DType, dtype
from hal.errors import GraphError
from hal.ir.graph import Constant, Graph, Initializer, Node, Value
from hal.ir.types import TensorType


class GraphBuilder:
    def __init__(self, name: str = "main", *, prefix: str = "v"):
        self.graph = Graph(name)
        self._names: set[str] = set()
        self._prefix = prefix
        self._counter = 0

    @classmethod
    def extending(cls, graph: Graph, prefix: str = "t",
                  names: set[str] | None = None) -> GraphBuilder:
        """A builder that appends to `graph` (used to splice decompositions).

        `names`, when given, is the set of names already taken in `graph`; the builder
        adds the names it hands out to that same set (so repeated splicing stays linear)."""
        b = cls(graph.name, prefix=prefix)
        b.graph = graph
        b._names = names if names is not None else set(graph.values())
        return b

    def reserve(self, names) -> None:
        """Keep `fresh` from handing out these names (values defined elsewhere)."""
        self._names.update(names)

    def fresh(self, hint: str | None = None) -> str:
        if hint and hint not in self._names:
            self._names.add(hint)
            return hint
        base = hint or self._prefix
        while True:
            name = f"{base}{self._counter}"
            self._counter += 1
            if name not in self._names:
                self._names.add(name)
                return name

    def _claim(self, name: str) -> str:
        if name in self._names:
            raise GraphError(f"graph {self.graph.name}: value %{name} is defined twice")
        self._names.add(name)
        return name

    def input(self, name: str, dt: DType | str, shape) -> Value:
        v = Value(self._claim(name), TensorType(dtype(dt), tuple(shape)))
        self.graph.inputs.append(v)
        return v

    def constant(self, name: str, dt: DType | str, shape, init: Initializer) -> Value:
        v = Value(self._claim(name), TensorType(dtype(dt), tuple(shape)))
        self.graph.constants.append(Constant(v, init))
        return v

    def op(self, op: str, *inputs: Value, name: str | list[str] | None = None,
           loc: str | None = None, **attrs: Any) -> Value | tuple[Value, ...]:
        """Append `op(inputs, **attrs)`; returns its value, or a tuple when it has several."""
        from hal.ops import get_op

        opdef = get_op(op)
        opdef.check_arity(len(inputs))
        attrs = opdef.check_attrs(attrs)
        types = opdef.infer([v.type for v in inputs], attrs)
        names = name if isinstance(name, list) else [name] * len(types)
        outs = [Value(self.fresh(n), t) for n, t in zip(names, types, strict=True)]
        self.graph.nodes.append(Node(op, inputs, outs, attrs, loc))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def output(self, *values: Value) -> None:
        self.graph.outputs.extend(values)

    def build(self, verify: bool = True) -> Graph:
        return self.graph.verify() if verify else self.graph
