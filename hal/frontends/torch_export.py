"""The torch.export frontend: an ExportedProgram (or a .pt2 file) becomes a hal Graph.

    ep = torch.export.export(model.eval(), (tokens,))
    graph = from_exported_program(ep)            # weights: npz-backed constants
    model = import_exported_program(ep)          # ImportedModel: graph + run helpers
    graph = load_pt2("model.pt2")

The program is first decomposed to core ATen (`ep.run_decompositions()`);
parameters, buffers and lifted constants become graph constants, user inputs
become graph inputs in order, user outputs become graph outputs. Every op
without a converter is reported at once, with where the model used it.
"""

from __future__ import annotations

import os
from typing import Any

from hal.errors import HalError, UnsupportedError
from hal.frontends import (  # noqa: F401 - register converters
    torch_ops,
    torch_ops_index,
    torch_ops_math,
    torch_ops_nn,
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
        ep = ep.run_decompositions()
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


def from_exported_program(ep: Any, name: str | None = None) -> Graph:
    """The hal Graph of `ep`; its weights live in an .npz under the graph's base_dir."""
    return import_exported_program(ep, name).graph


def load_pt2(path: str | os.PathLike, name: str | None = None) -> Graph:
    """Load a .pt2 saved by torch.export.save and convert it."""
    return import_pt2(path, name).graph


def import_pt2(path: str | os.PathLike, name: str | None = None) -> ImportedModel:
    import torch

    path = os.fspath(path)
    try:
        ep = torch.export.load(path)
    except (OSError, RuntimeError, ValueError) as e:
        raise HalError(f"{path}: cannot load the exported program: {e}",
                       hint="save it with torch.export.save(ep, path)") from None
    stem = os.path.splitext(os.path.basename(path))[0]
    return import_exported_program(ep, name or stem)
