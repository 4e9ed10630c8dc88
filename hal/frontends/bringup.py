"""Bring-up of a whole model: import, plan, run on a backend, compare with the framework.

`load_subject(model, dtype)` reads MODEL, which is a `.pt2` file (torch.export),
a `.hal` file, or `module:function` / `path/file.py:function` naming a callable
that returns `(torch.nn.Module or JAX function, example_inputs)`. It gives a
`Subject`: the imported model, inputs, the framework's own outputs on the same
inputs (eager torch, jax.jit, or the hal reference for .hal files) and the
framework ops found. `bringup(subject, backend, spec)` plans, runs and compares,
returning a JSON-ready report; `report["ok"]` is the parity verdict.

The parity bound per output: rtol = 8 u sqrt(L), with u the unit roundoff of
the output dtype and L the longest accumulation (reduction, contraction or
scan length) feeding the output; atol = rtol times the RMS of the expected
values, so outputs near zero are judged on the output's scale.
"""

from __future__ import annotations

import collections
import importlib
import importlib.util
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hal.errors import HalError, UnsupportedError
from hal.frontends.common import ImportedModel
from hal.ir.graph import Graph, Value


@dataclass
class Subject:
    """A model ready for bring-up."""

    name: str
    kind: str                                  # "torch", "jax" or "hal"
    model: ImportedModel | None                # None when the import failed
    inputs: list[np.ndarray]
    expected: list[np.ndarray]                 # the framework's outputs (float64 for compare)
    framework_ops: dict[str, int] = field(default_factory=dict)
    unsupported: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None


# -- loading ---------------------------------------------------------------------

def _load_callable(spec: str) -> Callable:
    mod_name, _, fn_name = spec.rpartition(":")
    if not mod_name or not fn_name:
        raise HalError(f"'{spec}' is not MODULE:FUNCTION",
                       hint="e.g. examples/models/gpt2_style.py:make or my_pkg.models:make")
    if mod_name.endswith(".py") or os.sep in mod_name:
        path = os.path.abspath(mod_name)
        if not os.path.exists(path):
            raise HalError(f"{mod_name}: no such file")
        name = "hal_bringup_" + os.path.splitext(os.path.basename(path))[0]
        s = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(s)
        sys.modules[name] = module
        s.loader.exec_module(module)
    else:
        module = importlib.import_module(mod_name)
    fn = getattr(module, fn_name, None)
    if fn is None:
        raise HalError(f"{mod_name} has no attribute '{fn_name}'")
    return fn


def load_subject(model: str, dtype: str = "f32") -> Subject:
    if model.endswith(".hal"):
        return _hal_subject(model)
    if model.endswith(".pt2"):
        import torch

        if dtype != "f32":
            raise HalError(f"{model}: a .pt2 fixes its dtypes when it is exported",
                           hint="export the model in bf16 (model.to(torch.bfloat16)) and save "
                                "that, or pass module:function")
        from hal.frontends.torch_export import example_inputs, load_program

        ep = load_program(model)
        args, kwargs = example_inputs(ep, model)
        return _torch_subject(os.path.splitext(os.path.basename(model))[0], ep.module(),
                              args, dtype, ep=ep, kwargs=kwargs)
    made = _load_callable(model)()
    if not (isinstance(made, tuple) and len(made) == 2):
        raise HalError(f"{model} must return (model, example_inputs), got {type(made).__name__}")
    m, args = made
    args = tuple(args) if isinstance(args, (tuple, list)) else (args,)
    name = model.rpartition(":")[0].rsplit("/", 1)[-1].removesuffix(".py").rsplit(".", 1)[-1]
    try:
        import torch

        if isinstance(m, torch.nn.Module):
            return _torch_subject(name, m, args, dtype)
    except ModuleNotFoundError:
        pass
    return _jax_subject(name, m, args, dtype)


def _hal_subject(path: str) -> Subject:
    from hal.ir.text import load_graph
    from hal.reference import evaluate, random_inputs

    graph = load_graph(path)
    inputs = random_inputs(graph)
    im = ImportedModel(graph, source=path)
    out = evaluate(graph, inputs)
    return Subject(graph.name, "hal", im, [inputs[n] for n in im.input_names],
                   [out[n] for n in im.output_names])


def _torch_subject(name: str, module: Any, args: tuple, dtype: str, ep: Any = None,
                   kwargs: dict | None = None) -> Subject:
    import torch
    import torch.utils._pytree as pytree

    from hal.frontends.torch_convert import TORCH_CONVERTERS, target_key, unsupported_nodes
    from hal.frontends.torch_export import import_exported_program

    assert TORCH_CONVERTERS
    if dtype == "bf16":
        module = module.to(torch.bfloat16)
        args = tuple(a.to(torch.bfloat16) if a.is_floating_point() else a for a in args)
    if isinstance(module, torch.nn.Module) and type(module).__name__ != "GraphModule":
        module = module.eval()
    kwargs = kwargs or {}
    with torch.no_grad():
        expected = module(*args, **kwargs)
    # outputs may be any registered pytree (a dataclass of tensors): its tensor leaves
    expected = [t for t in pytree.tree_leaves(expected) if isinstance(t, torch.Tensor)]
    ep = (ep if ep is not None else torch.export.export(module, args, kwargs=kwargs)
          ).run_decompositions()
    ops = collections.Counter(target_key(n.target) for n in ep.graph.nodes
                              if n.op == "call_function")
    # graph inputs are the tensor leaves of (args, kwargs); other leaves are baked in
    inputs = [_np(a) for a in pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
    subject = Subject(name, "torch", None, inputs, [_np(e) for e in expected], dict(ops))
    subject.unsupported = unsupported_nodes(ep.graph_module)
    try:
        subject.model = import_exported_program(ep, name, decompose=False)
    except UnsupportedError as e:
        subject.error = e.message
    return subject


def _jax_subject(name: str, fn: Callable, args: tuple, dtype: str) -> Subject:
    import jax
    import jax.numpy as jnp

    from hal.frontends.jax_import import CALL_PRIMITIVES, import_jax, missing_primitives

    if dtype == "bf16":
        args = tuple(a.astype(jnp.bfloat16) if jnp.issubdtype(a.dtype, jnp.floating) else a
                     for a in args)
    expected = jax.jit(fn)(*args)
    expected = list(expected) if isinstance(expected, (tuple, list)) else [expected]
    closed = jax.make_jaxpr(fn)(*args)
    ops: collections.Counter = collections.Counter()

    def count(jaxpr: Any) -> None:
        from hal.frontends.jax_import import _sub_jaxpr

        for eqn in jaxpr.eqns:
            if eqn.primitive.name in CALL_PRIMITIVES:
                count(_sub_jaxpr(eqn)[0])
            else:
                ops[eqn.primitive.name] += 1

    count(closed.jaxpr)
    subject = Subject(name, "jax", None, [np.asarray(a) for a in args],
                      [np.asarray(e) for e in expected], dict(ops))
    subject.unsupported = missing_primitives(closed.jaxpr)
    try:
        subject.model = import_jax(fn, *args, name=name)
    except UnsupportedError as e:
        subject.error = e.message
    return subject


def _np(t: Any) -> np.ndarray:
    import torch

    t = t.detach().cpu()
    if t.is_complex() or t.is_conj() or t.is_neg():
        raise UnsupportedError(f"a {t.dtype} tensor (an input or output of the model): hal has "
                               "no complex dtypes",
                               hint="return torch.view_as_real(x) or the real and imaginary "
                                    "parts separately")
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


# -- parity -----------------------------------------------------------------------

def accumulation_length(graph: Graph, value: Value) -> int:
    """The longest reduction, contraction or scan length on `value`'s producer chain."""
    from hal.ops import get_op

    producer = {v.name: n for n in graph.nodes for v in n.outputs}
    seen: set[str] = set()
    stack, longest = [value], 1
    while stack:
        v = stack.pop()
        if v.name in seen or v.name not in producer:
            continue
        seen.add(v.name)
        n = producer[v.name]
        if get_op(n.op).error.accumulates:
            longest = max(longest, _length(n))
        stack.extend(n.inputs)
    return longest


def _length(n: Any) -> int:
    x = n.inputs[0]
    if n.op == "matmul":
        return int(x.shape[-2] if n.attrs.get("transpose_a") else x.shape[-1])
    if n.op == "dot_general":
        return math.prod(int(x.shape[d]) for d in n.attrs["lhs_contracting"]) or 1
    if n.op == "cumsum":
        return int(x.shape[n.attrs["axis"]])
    out = math.prod(n.outputs[0].shape) or 1
    return max(1, math.prod(x.shape) // out)


def tolerance(graph: Graph, index: int, expected: np.ndarray) -> tuple[float, float]:
    """(rtol, atol) for output `index` of `graph` against a framework's `expected`."""
    from hal.ops.decompose import decompose_graph

    prim = decompose_graph(graph)
    v = prim.outputs[index]
    if not v.dtype.is_float:
        return 0.0, 0.0
    rtol = 8 * v.dtype.unit_roundoff * math.sqrt(accumulation_length(prim, v))
    e = np.asarray(expected, dtype=np.float64)
    rms = float(np.sqrt(np.mean(e[np.isfinite(e)] ** 2))) if e.size else 1.0
    return rtol, rtol * (rms if rms > 0 else 1.0)


def compare(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> dict:
    """{"max_abs", "max_rel", "ok"}: the comparison every backend's parity report uses."""
    from hal.backends.cpu_sim.parity import compare as parity_compare

    return parity_compare(np.asarray(actual), np.asarray(expected), rtol, atol)


# -- the whole bring-up ------------------------------------------------------------

def bringup(subject: Subject, backend: str, spec: Any) -> dict[str, Any]:
    """Plan, run and compare `subject`; a JSON-ready report with `ok` the verdict."""
    from hal.backends_registry import get_backend
    from hal.fusion import plan

    rep: dict[str, Any] = {"model": subject.name, "frontend": subject.kind, "backend": backend,
                           "device": spec.name, "framework_ops": subject.framework_ops,
                           "unsupported": {k: sorted(set(v))[:3]
                                           for k, v in subject.unsupported.items()},
                           "ok": False}
    if subject.model is None:
        rep["error"] = subject.error or "import failed"
        return rep
    graph = subject.model.graph
    rep["hal_ops"] = dict(collections.Counter(n.op for n in graph.nodes))
    rep["inputs"] = {v.name: str(v.type) for v in graph.inputs}
    rep["constants"] = len(graph.constants)
    p = plan(graph, spec).to_dict()
    rep["fusion"] = {"totals": p["totals"],
                     "kinds": dict(collections.Counter(g["kind"] for g in p["groups"]))}
    result = get_backend(backend).run_graph(graph, subject.model.bind(subject.inputs), spec)
    rep["parity"] = []
    ok = len(subject.expected) == len(graph.outputs)
    for i, (name, exp) in enumerate(zip(subject.model.output_names, subject.expected,
                                        strict=False)):
        act = result.outputs[name]
        rtol, atol = tolerance(graph, i, exp)
        c = compare(act, exp, rtol, atol)
        c.update({"output": name, "dtype": graph.outputs[i].dtype.name,
                  "shape": list(np.shape(act)), "rtol": rtol, "atol": atol})
        rep["parity"].append(c)
        ok = ok and c["ok"]
    rep["ok"] = ok
    return rep
