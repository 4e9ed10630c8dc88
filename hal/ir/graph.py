"""The graph IR: values, nodes, constants and graphs, with a verifier.

A Graph is a straight-line SSA program: named inputs, named constants
(weights, with an initializer that says how to materialise them), nodes in
topological order, each producing one or more named values, and outputs.
Values are identified by their names, which are unique within a graph.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hal.dtypes import DType
from hal.errors import GraphError, ShapeError
from hal.ir.types import TensorType


class Value:
    """A named SSA value. `producer` is the node that defines it (None for inputs/constants)."""

    __slots__ = ("name", "type", "producer", "index")

    def __init__(self, name: str, type: TensorType, producer: Node | None = None, index: int = 0):
        self.name, self.type, self.producer, self.index = name, type, producer, index

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def shape(self) -> tuple:
        return self.type.shape

    @property
    def rank(self) -> int:
        return self.type.rank

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


@dataclass(frozen=True)
class Initializer:
    """How a constant's data is made.

    kind: "inline" (values: flat tuple of numbers), "fill" (value), "random"
    (seed, dist "normal" or "uniform", scale), "iota" (start, step) or "npz"
    (path, key). Data is materialised on demand, so a 4096-wide weight costs
    nothing until a graph runs.
    """

    kind: str
    params: tuple[tuple[str, Any], ...] = ()

    @staticmethod
    def make(kind: str, **params) -> Initializer:
        return Initializer(kind, tuple(sorted(params.items())))

    def get(self, key: str, default=None):
        return dict(self.params).get(key, default)

    def materialize(self, type: TensorType, base_dir: str | None = None) -> np.ndarray:
        from hal.ir.initializers import materialize

        return materialize(self, type, base_dir)


@dataclass
class Constant:
    value: Value
    init: Initializer


_FLOAT_KEY = "__float__"


def _canon_attr(v: Any) -> Any:
    """Attribute values in canonical hashable form: lists become tuples."""
    if isinstance(v, (list, tuple)):
        return tuple(_canon_attr(x) for x in v)
    if isinstance(v, np.generic):
        return v.item()
    return v


def _attr_key(v: Any) -> Any:
    """A key under which nan == nan and -0.0 != 0.0 (so round-trips compare exactly)."""
    if isinstance(v, float):
        return (_FLOAT_KEY, v.hex() if not math.isnan(v) else "nan")
    if isinstance(v, tuple):
        return tuple(_attr_key(x) for x in v)
    if isinstance(v, DType):
        return ("dtype", v.name)
    return v


class Node:
    """One op application. `attrs` values are ints, floats, bools, strings, DTypes, None or tuples."""

    __slots__ = ("op", "inputs", "outputs", "attrs", "loc")

    def __init__(self, op: str, inputs: Iterable[Value], outputs: Iterable[Value],
                 attrs: Mapping[str, Any] | None = None, loc: str | None = None):
        self.op = op
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.attrs = {k: _canon_attr(v) for k, v in (attrs or {}).items()}
        self.loc = loc
        for i, out in enumerate(self.outputs):
            out.producer, out.index = self, i

    def __repr__(self) -> str:
        outs = ", ".join(repr(o) for o in self.outputs)
        ins = ", ".join("%" + v.name for v in self.inputs)
        return f"{outs} = {self.op}({ins}{', ' if self.attrs else ''}" + ", ".join(
            f"{k}={v}" for k, v in self.attrs.items()) + ")"


@dataclass
class Graph:
    name: str
    inputs: list[Value] = field(default_factory=list)
    constants: list[Constant] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)
    base_dir: str | None = None  # where relative npz paths resolve

    # -- lookups ---------------------------------------------------------
    def values(self) -> dict[str, Value]:
        out = {v.name: v for v in self.inputs}
        out.update({c.value.name: c.value for c in self.constants})
        for n in self.nodes:
            out.update({v.name: v for v in n.outputs})
        return out

    def constant_map(self) -> dict[str, Constant]:
        return {c.value.name: c for c in self.constants}

    def users(self) -> dict[str, list[Node]]:
        """Value name -> nodes that read it, in graph order."""
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                lst = out.setdefault(v.name, [])
                if not lst or lst[-1] is not n:
                    lst.append(n)
        return out

    def materialize_constants(self) -> dict[str, np.ndarray]:
        from hal.ir.initializers import materialize_as

        return {c.value.name: materialize_as(c.init, c.value.type, self.base_dir,
                                             name=c.value.name)
                for c in self.constants}

    # -- equality ----------------------------------------------------------
    def key(self) -> tuple:
        """Structural identity: equal keys mean equal graphs (names, types, ops, attrs)."""
        def t(v: Value):
            return (v.name, v.type.dtype.name, v.type.shape)

        return (
            self.name,
            tuple(t(v) for v in self.inputs),
            tuple((t(c.value), c.init.kind, _attr_key(tuple(c.init.params))) for c in self.constants),
            tuple((n.op, tuple(v.name for v in n.inputs), tuple(t(v) for v in n.outputs),
                   tuple(sorted((k, _attr_key(a)) for k, a in n.attrs.items())))
                  for n in self.nodes),
            tuple(v.name for v in self.outputs),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Graph) and self.key() == other.key()

    __hash__ = None  # mutable

    def __str__(self) -> str:
        from hal.ir.text import print_graph

        return print_graph(self)

    # -- verification ------------------------------------------------------
    def verify(self) -> Graph:
        """Check names, def-before-use, op signatures and types; raise GraphError naming the node."""
        from hal.ops import get_op

        seen: dict[str, Value] = {}

        def define(v: Value, where: str):
            if not v.name or not _valid_name(v.name):
                raise GraphError(f"{where}: '{v.name}' is not a valid value name",
                                 hint="use letters, digits, '_' and '.'")
            if v.name in seen:
                raise GraphError(f"{where}: value %{v.name} is defined twice",
                                 hint="rename one of the definitions")
            for d in v.type.shape:
                if isinstance(d, int) and d < 0:
                    raise GraphError(f"{where}: %{v.name} has a negative dimension {d}")
            seen[v.name] = v

        for v in self.inputs:
            define(v, f"graph {self.name}: input")
        for c in self.constants:
            define(c.value, f"graph {self.name}: constant")
        for i, n in enumerate(self.nodes):
            where = f"graph {self.name}: node {i} ({n.op}" + (f" at {n.loc}" if n.loc else "") + ")"
            for v in n.inputs:
                if v.name not in seen:
                    raise GraphError(f"{where}: uses %{v.name} before it is defined",
                                     hint="order nodes so that each value is defined before use")
                if seen[v.name] is not v and seen[v.name].type != v.type:
                    raise GraphError(f"{where}: %{v.name} is used as {v.type} but defined as "
                                     f"{seen[v.name].type}")
            opdef = get_op(n.op)
            try:
                opdef.check_arity(len(n.inputs))
                attrs = opdef.check_attrs(n.attrs)
                expected = opdef.infer([v.type for v in n.inputs], attrs)
            except ShapeError as e:
                raise GraphError(f"{where}: {e.message}", hint=e.hint) from None
            if len(expected) != len(n.outputs):
                raise GraphError(f"{where}: produces {len(expected)} outputs, "
                                 f"{len(n.outputs)} declared")
            for out, exp in zip(n.outputs, expected, strict=True):
                if out.type != exp:
                    raise GraphError(f"{where}: %{out.name} declared {out.type} but {n.op} "
                                     f"gives {exp}", hint=f"declare %{out.name}: {exp}")
                define(out, where)
        if not self.outputs:
            raise GraphError(f"graph {self.name}: has no outputs", hint="add an 'output' line")
        for v in self.outputs:
            if v.name not in seen:
                raise GraphError(f"graph {self.name}: output %{v.name} is never defined")
        return self


# The names graphs use: ASCII, checked in one C call (the per-character test below cost
# a third of verify, which runs twice a conformance case); any other name takes that test.
_ASCII_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.]*")


def _valid_name(name: str) -> bool:
    if _ASCII_NAME.fullmatch(name):
        return True
    return all(ch.isalnum() or ch in "_." for ch in name) and not name[0] == "."
