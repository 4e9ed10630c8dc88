"""What the frontends share: weights as npz-backed constants, dead-code removal, errors.

A frontend converts a framework graph into a hal `Graph` whose weights are
constants with an `npz` initializer. The arrays are written once to an .npz in
a per-import folder (the graph's `base_dir`), so every backend materialises
them the ordinary way; `save_model` writes the .hal text and copies the .npz
beside it, and `hal.ir.text.load_graph` reads both back.

`ImportedModel` bundles the graph with its weights, input and output names and
runs it on any backend by positional inputs.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hal.dtypes import DType, cast
from hal.errors import UnsupportedError
from hal.ir.builder import GraphBuilder
from hal.ir.graph import Constant, Graph, Initializer, Value
from hal.ir.types import TensorType

INLINE_LIMIT = 8  # constants with at most this many elements are written inline

_TMP_DIRS: list[str] = []


def _cleanup() -> None:
    for d in _TMP_DIRS:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup)


def sanitize(name: str) -> str:
    """A valid hal value name: letters, digits and '_' only, never starting with a digit."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_") or "v"
    return s if not s[0].isdigit() else "v" + s


class WeightStore:
    """Collects a graph's constants; `finish` writes them to one .npz and points the graph there."""

    def __init__(self, builder: GraphBuilder):
        self.builder = builder
        self.arrays: dict[str, np.ndarray] = {}
        self.file = sanitize(builder.graph.name) + ".weights.npz"

    def add(self, name: str, dt: DType, array: np.ndarray) -> Value:
        array = np.asarray(array)
        name = self.builder.fresh(sanitize(name))
        if array.size <= INLINE_LIMIT:
            flat = np.asarray(cast(array, dt)).reshape(-1)
            values = [bool(x) if dt.is_bool else (int(x) if dt.is_int else float(x))
                      for x in flat.tolist()]
            init = Initializer.make("inline", values=tuple(values))
        else:
            init = Initializer.make("npz", path=self.file, key=name)
            self.arrays[name] = _storable(array, dt)
        v = Value(name, TensorType(dt, tuple(array.shape)))
        self.builder.graph.constants.append(Constant(v, init))
        return v

    def finish(self) -> dict[str, np.ndarray]:
        """Write the .npz into a fresh folder that becomes the graph's base_dir."""
        if self.arrays:
            d = tempfile.mkdtemp(prefix="hal_weights_")
            _TMP_DIRS.append(d)
            np.savez(os.path.join(d, self.file), **self.arrays)
            self.builder.graph.base_dir = d
        return dict(self.arrays)


def _storable(a: np.ndarray, dt: DType) -> np.ndarray:
    """An array np.savez keeps exactly: 16-bit and fp8 floats widen to f32 (exact)."""
    if dt.is_float:
        return np.asarray(a, dtype=np.float64 if dt.bits == 64 else np.float32)
    if dt.is_bool:
        return np.asarray(a, dtype=bool)
    return np.asarray(a).astype(dt.np_dtype)


def eliminate_dead_code(graph: Graph) -> Graph:
    """Drop nodes no output depends on, and constants no node reads (in place)."""
    live = {v.name for v in graph.outputs}
    keep = []
    for n in reversed(graph.nodes):
        if any(o.name in live for o in n.outputs):
            keep.append(n)
            live.update(v.name for v in n.inputs)
    graph.nodes = keep[::-1]
    graph.constants = [c for c in graph.constants if c.value.name in live]
    return graph


def missing_ops_error(frontend: str, missing: Mapping[str, Sequence[str]],
                      hint: str) -> UnsupportedError:
    """One error listing every unsupported op with where it was used (first three places)."""
    lines = []
    for op, locs in sorted(missing.items()):
        where = "; ".join(sorted(set(locs))[:3]) or "unknown location"
        more = f" (+{len(set(locs)) - 3} more)" if len(set(locs)) > 3 else ""
        lines.append(f"  {op}  used at {where}{more}")
    return UnsupportedError(
        f"{frontend}: {len(missing)} unsupported op(s): " + ", ".join(sorted(missing))
        + "\n" + "\n".join(lines), hint=hint)


@dataclass
class ImportedModel:
    """A converted model: the graph, its weights and the order of its inputs and outputs."""

    graph: Graph
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    source: str = ""

    @property
    def input_names(self) -> list[str]:
        return [v.name for v in self.graph.inputs]

    @property
    def output_names(self) -> list[str]:
        return [v.name for v in self.graph.outputs]

    def bind(self, args: Sequence[Any] | Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Inputs by name from positional arrays (or a dict), cast to the inputs' dtypes."""
        if isinstance(args, Mapping):
            items = [args[n] for n in self.input_names]
        else:
            items = list(args)
        if len(items) != len(self.graph.inputs):
            raise UnsupportedError(f"{self.graph.name}: expected {len(self.graph.inputs)} "
                                   f"inputs ({', '.join(self.input_names)}), got {len(items)}")
        return {v.name: cast(np.asarray(a), v.dtype) for v, a in zip(self.graph.inputs, items,
                                                                        strict=True)}

    def run(self, args: Sequence[Any] | Mapping[str, Any], backend: str = "reference",
            spec: Any = None, **options: Any) -> list[np.ndarray]:
        """Outputs in order, run on `backend` (a registered name) for device `spec`."""
        from hal.backends_registry import get_backend

        result = get_backend(backend).run_graph(self.graph, self.bind(args), spec, **options)
        return [result.outputs[n] for n in self.output_names]

    def save(self, path: str | os.PathLike) -> str:
        return save_model(self.graph, path)


def save_model(graph: Graph, path: str | os.PathLike) -> str:
    """Write `graph` as .hal text and copy its weight files beside it; returns the .hal path."""
    from hal.ir.text import save_graph

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    if graph.base_dir:
        files = {c.init.get("path") for c in graph.constants if c.init.kind == "npz"}
        for f in sorted(x for x in files if x and not os.path.isabs(x)):
            src = os.path.join(graph.base_dir, f)
            dst = os.path.join(folder, f)
            if os.path.abspath(src) != os.path.abspath(dst):
                shutil.copyfile(src, dst)
    save_graph(graph, path)
    return path


class EmitOps:
    """Op-emitting helpers shared by the frontends' conversion contexts.

    A context sets `self.b` (a GraphBuilder) and `self.loc` (the source location of
    the framework node being converted, attached to every node it emits)."""

    b: Any
    loc: str | None

    def op(self, name: str, *inputs: Value, **attrs: Any) -> Any:
        return self.b.op(name, *inputs, loc=self.loc, **attrs)

    def cast(self, v: Value, dt: DType) -> Value:
        return v if v.dtype == dt else self.op("cast", v, dtype=dt)

    def bcast(self, v: Value, shape) -> Value:
        shape = tuple(shape)
        return v if tuple(v.shape) == shape else self.op("broadcast_to", v, shape=shape)

    def reshape(self, v: Value, shape) -> Value:
        shape = tuple(shape)
        return v if tuple(v.shape) == shape else self.op("reshape", v, shape=shape)
