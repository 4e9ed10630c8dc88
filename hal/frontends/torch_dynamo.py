"""`torch.compile(model, backend="hal")`: run the captured graph through hal.

    compiled = torch.compile(model, backend="hal",
                             options={"backend": "reference", "device": "mi300x"})

Dynamo captures an FX graph; aot_autograd lowers it to core ATen (functional,
with FakeTensor metadata) and hands it to `_compile_forward`, which converts
it with the same converters as the torch.export frontend. Options: `backend`
(a registered hal backend, default "cpu_sim"), `device` (a device spec name
or path, default "h100-sxm"), `fallback` (default True).

When some ops have no converter, the graph is partitioned with torch.fx's
CapabilityBasedPartitioner: the supported regions run in hal, the rest runs
eagerly in torch, and a summary of what fell back is logged (logger
"hal.frontends.torch_dynamo") and kept in `LAST_SUMMARY`. A region whose
conversion fails at compile time also falls back to eager, with the reason.
With autograd on, the forward runs in hal and the backward eagerly in torch.
Tensors are CPU tensors; hal runs them through NumPy.

The backend is registered with torch through the `torch_dynamo_backends`
entry point (pyproject.toml) and, as a fallback, on import of this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hal.errors import HalError
from hal.frontends import (  # noqa: F401 - register converters
    torch_ops,
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
from hal.frontends.torch_convert import convert_graph_module, lookup, target_key

log = logging.getLogger(__name__)

DEFAULTS = {"backend": "cpu_sim", "device": "h100-sxm", "fallback": True}


@dataclass
class CompileSummary:
    """What one compilation did: regions run in hal, ops that fell back to eager, and why."""

    hal_regions: int = 0
    hal_ops: int = 0
    eager_ops: dict[str, int] = field(default_factory=dict)
    failed_regions: list[str] = field(default_factory=list)

    def text(self) -> str:
        s = f"hal: {self.hal_regions} region(s), {self.hal_ops} op(s) in hal"
        if self.eager_ops:
            s += "; eager fallback for " + ", ".join(f"{k} x{v}" for k, v in
                                                     sorted(self.eager_ops.items()))
        for r in self.failed_regions:
            s += f"\n  region fell back to eager: {r}"
        return s


LAST_SUMMARY: CompileSummary | None = None
SUMMARIES: list[CompileSummary] = []


class HalRegion:
    """A converted FX (sub)graph: a callable taking and returning torch tensors."""

    def __init__(self, model: ImportedModel, backend: str, spec: Any, n_outputs: int):
        self.model, self.backend, self.spec, self.n_outputs = model, backend, spec, n_outputs

    def __call__(self, *args: Any) -> tuple:
        import torch

        arrays = [_to_numpy(a) for a in args if isinstance(a, torch.Tensor)]
        outs = self.model.run(arrays, backend=self.backend, spec=self.spec)
        return tuple(_to_torch(o) for o in outs)


def _to_numpy(t: Any) -> np.ndarray:
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        import ml_dtypes

        return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return t.numpy()


def _to_torch(a: np.ndarray) -> Any:
    import torch

    if a.dtype.name == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(a))


def _spec(device: Any) -> Any:
    from hal.devices.loader import load_spec

    return load_spec(device)


def _supported(node: Any) -> bool:
    """A converter exists and every tensor the node reads or makes has a hal dtype."""
    if node.op != "call_function" or lookup(node.target) is None:
        return False
    vals = [node.meta.get("val")] + [a.meta.get("val") for a in node.all_input_nodes]
    return all(_hal_typed(v) for v in vals)


def _hal_typed(v: Any) -> bool:
    from hal.frontends.torch_convert import torch_dtypes

    if isinstance(v, (list, tuple)):
        return all(_hal_typed(x) for x in v)
    dt = getattr(v, "dtype", None)
    return dt is None or dt in torch_dtypes()


def _convert_whole(gm: Any, name: str, backend: str, spec: Any) -> Callable:
    outs = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    model = convert_graph_module(gm, name)
    region = HalRegion(model, backend, spec, len(outs))
    return region


def _compile_forward(gm: Any, example_inputs: Sequence[Any], options: Mapping[str, Any]) -> Any:
    """aot_autograd's fw_compiler: a boxed-free callable running `gm` (mostly) in hal."""
    from torch._functorch.aot_autograd import make_boxed_func

    global LAST_SUMMARY
    opts = {**DEFAULTS, **dict(options or {})}
    spec = _spec(opts["device"])
    summary = CompileSummary()
    LAST_SUMMARY = summary
    SUMMARIES.append(summary)
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    unsupported = [n for n in nodes if not _supported(n)]
    if not unsupported:
        try:
            region = _convert_whole(gm, "compiled", opts["backend"], spec)
            summary.hal_regions, summary.hal_ops = 1, len(nodes)
            log.info(summary.text())
            return make_boxed_func(_tuple_call(region))
        except HalError as e:
            if not opts["fallback"]:
                raise
            summary.failed_regions.append(e.message.splitlines()[0])
            summary.eager_ops = _count(nodes)
            log.warning(summary.text())
            return make_boxed_func(gm.forward)
    if not opts["fallback"]:
        convert_graph_module(gm, "compiled")  # raises the error listing every missing op
    return make_boxed_func(_partitioned(gm, opts, spec, summary))


def _tuple_call(region: HalRegion) -> Callable:
    def run(*args: Any) -> tuple:
        return region(*args)
    return run


def _count(nodes: Sequence[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in nodes:
        k = target_key(n.target)
        out[k] = out.get(k, 0) + 1
    return out


def _partitioned(gm: Any, opts: Mapping[str, Any], spec: Any, summary: CompileSummary) -> Any:
    """Supported regions -> hal; the rest stays in the outer module and runs eagerly."""
    from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner
    from torch.fx.passes.operator_support import OperatorSupportBase

    class Support(OperatorSupportBase):
        def is_node_supported(self, submodules: Any, node: Any) -> bool:
            return _supported(node) and target_key(node.target) != "getitem" or (
                target_key(node.target) == "getitem" and _supported(node.args[0]))

    partitioner = CapabilityBasedPartitioner(gm, Support(), allows_single_node_partition=True)
    partitions = partitioner.propose_partitions()
    fused = partitioner.fuse_partitions(partitions)
    for node in list(fused.graph.nodes):
        if node.op != "call_module":
            continue
        sub = getattr(fused, node.target)
        for ph, arg in zip([n for n in sub.graph.nodes if n.op == "placeholder"], node.args,
                           strict=False):
            if "val" not in ph.meta and hasattr(arg, "meta"):
                ph.meta["val"] = arg.meta.get("val")
        sub_nodes = [n for n in sub.graph.nodes if n.op == "call_function"]
        try:
            model = convert_graph_module(sub, f"region_{node.target}")
        except HalError as e:
            summary.failed_regions.append(f"{node.target}: {e.message.splitlines()[0]}")
            for k, v in _count(sub_nodes).items():
                summary.eager_ops[k] = summary.eager_ops.get(k, 0) + v
            continue
        outs = next(n for n in sub.graph.nodes if n.op == "output").args[0]
        single = not isinstance(outs, (tuple, list))
        region = HalRegion(model, opts["backend"], spec, 1 if single else len(outs))
        setattr(fused, node.target, _RegionModule(region, single))
        summary.hal_regions += 1
        summary.hal_ops += len(sub_nodes)
    for n in fused.graph.nodes:
        if n.op == "call_function":
            k = target_key(n.target)
            if k != "getitem":
                summary.eager_ops[k] = summary.eager_ops.get(k, 0) + 1
    log.warning(summary.text())
    fused.recompile()
    return fused.forward


def _region_module_base() -> type:
    import torch

    return torch.nn.Module


class _RegionModule(_region_module_base()):  # type: ignore[misc]
    def __init__(self, region: HalRegion, single: bool):
        super().__init__()
        self.region, self.single = region, single

    def forward(self, *args: Any) -> Any:
        out = self.region(*args)
        return out[0] if self.single else out


def hal_backend(gm: Any, example_inputs: Sequence[Any], options: Mapping[str, Any] | None = None,
                **kwargs: Any) -> Callable:
    """The torch.compile backend "hal"."""
    from torch._decomp import core_aten_decompositions
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func

    opts = dict(options or {})
    opts.update(kwargs)

    def fw(g: Any, ex: Sequence[Any]) -> Any:
        return _compile_forward(g, ex, opts)

    def bw(g: Any, ex: Sequence[Any]) -> Any:
        return make_boxed_func(g.forward)  # gradients run eagerly in torch

    return aot_autograd(fw_compiler=fw, bw_compiler=bw,
                        decompositions=core_aten_decompositions())(gm, example_inputs)


def _register() -> None:
    try:
        from torch._dynamo import list_backends, register_backend

        if "hal" not in list_backends(exclude_tags=()):
            register_backend(hal_backend, name="hal")
    except Exception:  # noqa: BLE001 - torch internals move; the entry point still works
        pass


_register()
