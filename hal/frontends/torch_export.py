"""The torch.export frontend: an ExportedProgram (or a .pt2 file) becomes a hal Graph.

    ep = torch.export.export(model.eval(), (tokens,))
    graph = from_exported_program(ep)            # weights: npz-backed constants
    model = import_exported_program(ep)          # ImportedModel: graph + run helpers
    graph = load_pt2("model.pt2")

The program is first decomposed to core ATen (`decompose_program`: torch's default
table, but scaled_dot_product_attention stays whole: hal's converter turns it into
its attention composite, see torch_ops_attention);
parameters, buffers and lifted constants become graph constants, user inputs
become graph inputs in order, user outputs become graph outputs. Every op
without a converter is reported at once, with where the model used it.
"""

from __future__ import annotations

import os
import re
import zipfile
from typing import Any

from hal.errors import HalError, UnsupportedError
from hal.frontends import (  # noqa: F401 - register converters
    torch_ops,
    torch_ops_attention,
    torch_ops_bits,
    torch_ops_cephes,
    torch_ops_grid,
    torch_ops_group,
    torch_ops_index,
    torch_ops_math,
    torch_ops_nn,
    torch_ops_special,
    torch_ops_tensor,
)
from hal.frontends.common import ImportedModel
from hal.frontends.torch_convert import convert_graph_module
from hal.ir.graph import Graph


def import_exported_program(ep: Any, name: str | None = None, *,
                            decompose: bool = True) -> ImportedModel:
    """Convert `ep` to an ImportedModel (graph, weights, input/output order)."""
    from torch.export.graph_signature import InputKind, OutputKind

    if decompose:
        ep = decompose_program(ep)
    sig = ep.graph_signature
    constants: dict[str, Any] = {}
    user_inputs: list[str] = []
    for spec in sig.input_specs:
        arg = spec.arg.name
        if spec.kind == InputKind.USER_INPUT:
            user_inputs.append(arg)
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER):
            constants[arg] = ep.state_dict[spec.target] if spec.target in ep.state_dict \
                else ep.constants[spec.target]
        elif spec.kind == InputKind.CONSTANT_TENSOR:
            constants[arg] = ep.constants[spec.target]
        else:
            # a TOKEN threads side effects (with_effects ops such as linalg error checks)
            raise UnsupportedError(f"exported program input {arg} has kind {spec.kind.name}: "
                                   "the program has side-effecting ops",
                                   hint="export the model in eval mode without ops that "
                                        "raise or print at run time")
    names = {s.arg.name for s in sig.output_specs if s.kind == OutputKind.USER_OUTPUT}
    out_node = next(n for n in ep.graph.nodes if n.op == "output")
    outputs = [a for a in out_node.args[0] if getattr(a, "name", None) in names]
    model_name = name or "model"
    return convert_graph_module(ep.graph_module, model_name, constants=constants,
                                user_inputs=user_inputs, outputs=outputs)


# ops hal converts whole, although torch's default table decomposes them
KEEP_WHOLE = ("scaled_dot_product_attention.default",)


def decompose_program(ep: Any) -> Any:
    """`ep` decomposed to core ATen, keeping the ops of KEEP_WHOLE (hal converts them to its
    composites, which the fusion pass matches as a whole)."""
    import torch

    table = torch.export.default_decompositions()
    for name in KEEP_WHOLE:
        packet, overload = name.rsplit(".", 1)
        op = getattr(getattr(torch.ops.aten, packet), overload)
        if op in table:
            del table[op]
    return ep.run_decompositions(table)


def from_exported_program(ep: Any, name: str | None = None) -> Graph:
    """The hal Graph of `ep`; its weights live in an .npz under the graph's base_dir."""
    return import_exported_program(ep, name).graph


def load_pt2(path: str | os.PathLike, name: str | None = None) -> Graph:
    """Load a .pt2 saved by torch.export.save and convert it."""
    return import_pt2(path, name).graph


def import_pt2(path: str | os.PathLike, name: str | None = None) -> ImportedModel:
    path = os.fspath(path)
    ep = load_program(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    return import_exported_program(ep, name or stem)


_TYPE_NAME = re.compile(rb'type\\*"\s*:\s*\\*"([A-Za-z_][\w.]*)')


def pytree_types(path: str) -> list[str]:
    """The serialized pytree type names a .pt2 archive refers to (its in/out specs)."""
    names: set[str] = set()
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if info.filename.endswith(".json"):
                names.update(m.decode() for m in _TYPE_NAME.findall(z.read(info)))
    return sorted(names)


def _register_pytree_types(path: str) -> list[str]:
    """Import the module of every serialized pytree type not registered yet (a class
    registers itself when its module is imported, as transformers' ModelOutput classes
    do); returns the names that are still unregistered."""
    import importlib

    import torch.utils._pytree as pytree

    known = pytree.SERIALIZED_TYPE_TO_PYTHON_TYPE
    missing = []
    for name in pytree_types(path):
        if name in known or "." not in name:
            continue
        parts = name.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            try:
                importlib.import_module(".".join(parts[:cut]))
                break
            except ImportError:
                continue
        if name not in known:
            missing.append(name)
    return missing


def load_program(path: str | os.PathLike) -> Any:
    """torch.export.load, after importing the modules of the archive's pytree classes."""
    import torch

    path = os.fspath(path)
    try:
        missing = _register_pytree_types(path)
    except (OSError, zipfile.BadZipFile) as e:
        raise HalError(f"{path}: not a readable torch.export archive ({type(e).__name__}: {e})",
                       hint="save it with torch.export.save(ep, path)") from None
    if missing:
        raise HalError(f"{path}: the program's inputs or outputs use pytree class(es) "
                       f"{', '.join(missing)}, which are not registered in this process",
                       hint="install the package that defines them, or register them with "
                            "torch.utils._pytree.register_pytree_node(..., "
                            "serialized_type_name=...) before loading")
    try:
        return torch.export.load(path)
    except (OSError, RuntimeError, ValueError) as e:
        raise HalError(f"{path}: not a readable torch.export archive ({type(e).__name__}: "
                       f"{str(e).splitlines()[0][:160] if str(e) else ''})",
                       hint="save it with torch.export.save(ep, path)") from None


def example_inputs(ep: Any, where: str) -> tuple[tuple, dict]:
    """(args, kwargs) saved with the program: torch keeps both in ep.example_inputs."""
    saved = getattr(ep, "example_inputs", None)
    if not saved:
        raise HalError(f"{where}: the program holds no example inputs",
                       hint="export with example inputs (torch.export.export(m, args, "
                            "kwargs=...))")
    args, kwargs = saved if len(saved) == 2 and isinstance(saved[1], dict) else (saved, {})
    return tuple(args), dict(kwargs)
