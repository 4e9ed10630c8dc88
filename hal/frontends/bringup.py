"""Bring-up of a whole model: import, plan, run on a backend, compare with the framework.

`load_subject(model, dtype)` reads MODEL, which is a `.pt2` file (torch.export),
a `.hal` file, or `module:function` / `path/file.py:function` naming a callable
that returns `(torch.nn.Module or JAX function, example_inputs)`. It gives a
`Subject`: the imported model, inputs, the framework's own outputs on the same
inputs (eager torch, jax.jit, or the hal reference for .hal files) and the
framework ops found. `bringup(subject, backend, spec)` plans, runs and compares,
returning a JSON-ready report; `report["ok"]` is the parity verdict.

Errors in the user's own code are `ModelError` ("model error: ... at file:line", the
user's innermost frame), never "internal error": an exception or SyntaxError in the
model file, a missing module, a bad return value, an eager run that fails. A failed
torch.export is summarised in a few lines (the full text with `hal --debug`); a corrupt
.pt2 is one line. torch's FutureWarnings are silenced while the model is loaded.

The parity bound per output: rtol = 8 u sqrt(L), with u the unit roundoff of
the output dtype and L the longest accumulation (reduction, contraction or
scan length) feeding the output; atol = rtol times the RMS of the expected
values, so outputs near zero are judged on the output's scale.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import importlib.util
import logging
import math
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
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


# -- errors in the user's model ----------------------------------------------------

class ModelError(HalError):
    """An error raised by the user's model code (not by hal): names the user's file:line."""


_HAL_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_LIB_ROOTS = tuple({os.path.abspath(p) for p in (sys.prefix, sys.base_prefix,
                                                 sys.exec_prefix)})


def _user_frame(e: BaseException) -> str | None:
    """'file:line' of the innermost traceback frame in the user's code (not hal, not an
    installed library, not the import machinery); a SyntaxError's own location first."""
    if isinstance(e, SyntaxError) and e.filename:
        return f"{e.filename}:{e.lineno}"
    best = None
    for fr in traceback.extract_tb(e.__traceback__):
        f = os.path.abspath(fr.filename) if not fr.filename.startswith("<") else ""
        if f and not f.startswith(_HAL_ROOT + os.sep) and not f.startswith(_LIB_ROOTS):
            best = f"{fr.filename}:{fr.lineno}"
    return best


def _first_lines(text: str, n: int = 3, width: int = 300) -> str:
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    out = "; ".join(lines[:n])
    return out[:width] + (" ..." if len(out) > width or len(lines) > n else "")


@contextlib.contextmanager
def user_code(what: str, model: str) -> Iterator[None]:
    """Run the user's code: its exceptions become one ModelError with file:line."""
    try:
        yield
    except HalError:
        raise
    except (Exception, SystemExit) as e:  # the user's bug, whatever its type
        where = _user_frame(e)
        raise ModelError(f"model error: {what} {model} raised {type(e).__name__}: "
                         f"{_first_lines(str(e), 2)}" + (f" (at {where})" if where else ""),
                         hint="fix the model; `hal --debug bringup ...` shows the "
                              "traceback") from e


@contextlib.contextmanager
def _quiet_frameworks() -> Iterator[None]:
    """torch's FutureWarnings do not belong in bring-up output."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


@contextlib.contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    """torch's loggers print tracebacks and graph dumps on failures that hal reports
    itself in a few lines: logging is off while torch exports or loads."""
    import io

    before = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # graph dumps printed to stderr
            yield
    finally:
        logging.disable(before)


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
        if s is None or s.loader is None:
            raise HalError(f"{mod_name}: not a Python file", hint="pass path/to/file.py:function")
        module = importlib.util.module_from_spec(s)
        sys.modules[name] = module
        with user_code("importing", mod_name):
            s.loader.exec_module(module)
    else:
        with user_code("importing", mod_name):
            try:
                found = importlib.util.find_spec(mod_name)
            except ModuleNotFoundError:  # a missing parent package
                found = None
        if found is None:
            raise HalError(f"no module named '{mod_name}'",
                           hint="give path/to/file.py:function, or a module on PYTHONPATH")
        with user_code("importing", mod_name):
            module = importlib.import_module(mod_name)
    fn = getattr(module, fn_name, None)
    if fn is None:
        raise HalError(f"{mod_name} has no attribute '{fn_name}'")
    return fn


def load_callable(model: str, what: str = "a model") -> Any:
    """Import MODULE:FUNCTION (or path/file.py:FUNCTION) and call it; what it returns (the
    user's errors are ModelErrors). `what` names the expected result in messages."""
    fn = _load_callable(model)
    with _quiet_frameworks(), user_code(f"calling ({what})", model):
        return fn()


def load_subject(model: str, dtype: str = "f32") -> Subject:
    with _quiet_frameworks():
        return _load_subject(model, dtype)


def _load_pt2(model: str) -> Any:

    if not os.path.isfile(model):
        raise HalError(f"{model}: no such file")
    from hal.frontends.torch_export import load_program

    try:
        with _quiet_torch_logs():
            return load_program(model)
    except HalError:
        raise
    except Exception as e:  # a truncated or bit-flipped archive: one line
        raise HalError(f"{model}: not a readable torch.export archive ({type(e).__name__}: "
                       f"{_first_lines(str(e), 1, 160)})",
                       hint="re-save it with torch.export.save(torch.export.export(m, args), "
                            "path)") from e


def _load_subject(model: str, dtype: str = "f32") -> Subject:
    if model.endswith(".hal"):
        return _hal_subject(model)
    if model.endswith(".pt2"):
        import torch

        if dtype != "f32":
            raise HalError(f"{model}: a .pt2 fixes its dtypes when it is exported",
                           hint="export the model in bf16 (model.to(torch.bfloat16)) and save "
                                "that, or pass module:function")
        from hal.frontends.torch_export import example_inputs

        ep = _load_pt2(model)
        args, kwargs = example_inputs(ep, model)
        return _torch_subject(os.path.splitext(os.path.basename(model))[0], ep.module(),
                              args, dtype, ep=ep, kwargs=kwargs)
    fn = _load_callable(model)
    with user_code("calling", model):
        made = fn()
    if not (isinstance(made, tuple) and len(made) == 2):
        raise ModelError(f"model error: {model} must return (model, example_inputs), got "
                         f"{type(made).__name__}",
                         hint="return (torch.nn.Module or JAX function, tuple of inputs)")
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


def torch_subject(name: str, module: Any, args: tuple, dtype: str = "f32", *,
                  kwargs: dict | None = None) -> Subject:
    """A Subject from a torch module and its example inputs (what `hal bringup
    file.py:function` builds from the function's return value)."""
    with _quiet_frameworks():
        return _torch_subject(name, module, tuple(args), dtype, kwargs=kwargs)


def _torch_subject(name: str, module: Any, args: tuple, dtype: str, ep: Any = None,
                   kwargs: dict | None = None) -> Subject:
    import torch
    import torch.utils._pytree as pytree

    from hal.frontends.torch_convert import TORCH_CONVERTERS, target_key, unsupported_nodes
    from hal.frontends.torch_export import decompose_program, import_exported_program

    assert TORCH_CONVERTERS
    if dtype == "bf16":
        module = module.to(torch.bfloat16)
        args = tuple(a.to(torch.bfloat16) if a.is_floating_point() else a for a in args)
    if isinstance(module, torch.nn.Module) and type(module).__name__ != "GraphModule":
        module = module.eval()
    kwargs = kwargs or {}
    with torch.no_grad(), user_code("running", name):
        expected = module(*args, **kwargs)
    expected = _tensor_outputs(expected, name, torch.Tensor, pytree.tree_leaves)
    if ep is None:
        try:
            with _quiet_torch_logs():
                ep = torch.export.export(module, args, kwargs=kwargs)
        except Exception as e:
            where = _user_frame(e)
            raise ModelError(f"model error: torch.export could not capture {name}: "
                             f"{type(e).__name__}: {_first_lines(str(e))}"
                             + (f" (at {where})" if where else ""),
                             hint="data-dependent control flow and Python side effects do not "
                                  "export; `hal --debug bringup ...` shows torch's full "
                                  "text") from e
    ep = decompose_program(ep)
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
    with user_code("running", name):
        expected = jax.jit(fn)(*args)
    expected = _tensor_outputs(expected, name, jax.Array, jax.tree_util.tree_leaves)
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


def _tensor_outputs(out: Any, name: str, tensor_type: type, leaves_of) -> list:
    """The model's outputs as the tensor leaves of its pytree (a tensor, tuple, list, dict
    or registered dataclass of tensors: the framework's exporter flattens them in the same
    order, `leaves_of`); a structure with a leaf that is not a tensor, or with no tensor,
    is a model error."""
    leaves = leaves_of(out)
    others = [type(x).__name__ for x in leaves if not isinstance(x, tensor_type)]
    if others or not leaves:
        raise ModelError(f"model error: {name} returns {type(out).__name__}"
                         + (f" holding {', '.join(sorted(set(others)))}" if others
                            else " with no tensor")
                         + "; hal bring-up compares the tensors a model returns",
                         hint="return a tensor, or a tuple/list/dict of tensors, from forward()")
    return list(leaves)


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

def bringup(subject: Subject, backend: str, spec: Any, *,
            phase: Callable[[str], None] | None = None,
            run_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Plan, run and compare `subject`; a JSON-ready report with `ok` the verdict.
    `phase(name)` is called as each phase (plan, run, compare) starts; `run_options`
    go to the backend's run_graph (cpu_sim: sample, kernel_progress)."""
    phase = phase or (lambda name: None)
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
    phase("plan")
    p = plan(graph, spec).to_dict()
    rep["fusion"] = {"totals": p["totals"],
                     "kinds": dict(collections.Counter(g["kind"] for g in p["groups"]))}
    phase("run")
    result = get_backend(backend).run_graph(graph, subject.model.bind(subject.inputs), spec,
                                            **(run_options or {}))
    phase("compare")
    if result.report and "sampled" in result.report:
        rep["sampled"] = result.report["sampled"]
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
    if "sampled" in rep:
        ok = ok and all(r.get("ok", True) for r in rep["sampled"].values())
    rep["ok"] = ok
    return rep
