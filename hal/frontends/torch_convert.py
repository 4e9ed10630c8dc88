"""Converting a torch.fx graph of ATen ops into a hal Graph: the context and the driver.

`convert_graph_module(gm, name, constants=...)` walks an FX graph whose nodes
carry `meta["val"]` (FakeTensors: torch.export and aot_autograd both provide
them) and calls one converter per ATen op from `TORCH_CONVERTERS`. Converters
receive a `TorchContext` and the node's arguments with every FX node replaced
by its hal Value; they emit hal ops through the context, which adds the
explicit casts and broadcasts hal requires (hal ops take equal dtypes and
shapes; torch promotes and broadcasts implicitly). After each node the driver
checks the result's shape against torch's and casts to torch's dtype, so
converters may leave the final cast to it.

Extension point: `@converts("aten.my_op")` on a function
`(cx: TorchContext, *args, **kwargs) -> Value | tuple | None`.
Keys are ATen overload names ("aten.add.Tensor") or packets ("aten.add");
the overload wins.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from hal.dtypes import (
    DType,
    bf16,
    bool_,
    f8e4m3fn,
    f8e5m2,
    f16,
    f32,
    f64,
    i8,
    i16,
    i32,
    i64,
    u8,
)
from hal.errors import HalError, UnsupportedError
from hal.frontends.common import (
    EmitOps,
    ImportedModel,
    WeightStore,
    eliminate_dead_code,
    missing_ops_error,
    sanitize,
)
from hal.ir.builder import GraphBuilder
from hal.ir.graph import Value
from hal.ir.types import TensorType

Converter = Callable[..., Any]
TORCH_CONVERTERS: dict[str, Converter] = {}


def converts(*names: str) -> Callable[[Converter], Converter]:
    """Register a converter for ATen ops (overload or packet names)."""
    def register(fn: Converter) -> Converter:
        for n in names:
            if n in TORCH_CONVERTERS:
                raise ValueError(f"torch converter for '{n}' is registered twice")
            TORCH_CONVERTERS[n] = fn
        return fn
    return register


def torch_dtypes() -> dict:
    import torch

    return {torch.float32: f32, torch.float64: f64, torch.float16: f16, torch.bfloat16: bf16,
            torch.int64: i64, torch.int32: i32, torch.int16: i16, torch.int8: i8,
            torch.uint8: u8, torch.bool: bool_, torch.float8_e4m3fn: f8e4m3fn,
            torch.float8_e5m2: f8e5m2}


def hal_dtype(torch_dtype: Any) -> DType:
    table = torch_dtypes()
    if torch_dtype not in table:
        raise UnsupportedError(f"torch dtype {torch_dtype} has no hal equivalent",
                               hint="hal supports " + ", ".join(str(k) for k in table))
    return table[torch_dtype]


def target_key(target: Any) -> str:
    """The registry key of an FX call_function target."""
    if target is operator.getitem:
        return "getitem"
    if hasattr(target, "overloadpacket"):
        return str(target)
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__name__', str(target))}"


def lookup(target: Any) -> Converter | None:
    key = target_key(target)
    if key in TORCH_CONVERTERS:
        return TORCH_CONVERTERS[key]
    packet = getattr(target, "overloadpacket", None)
    return TORCH_CONVERTERS.get(str(packet)) if packet is not None else None


def node_location(node: Any) -> str:
    """`file.py:12 (module.path)` from the node's stack trace and module stack."""
    parts = []
    trace = node.meta.get("stack_trace") or ""
    files = [ln.strip() for ln in trace.splitlines() if ln.strip().startswith("File ")]
    if files:
        # 'File "/x/model.py", line 42, in forward'
        bits = files[-1].split(",")
        fname = bits[0].split('"')[1] if '"' in bits[0] else bits[0]
        line = bits[1].strip().removeprefix("line ").strip() if len(bits) > 1 else "?"
        parts.append(f"{fname.rsplit('/', 1)[-1]}:{line}")
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = list(stack.values())[-1]
        cls_name = cls.rsplit(".", 1)[-1] if isinstance(cls, str) else getattr(cls, "__name__", "")
        parts.append(f"({path or 'root'}: {cls_name})")
    return " ".join(parts) or node.name


class TorchContext(EmitOps):
    """What a converter uses: the builder, the current node's torch meta, and typing helpers."""

    def __init__(self, builder: GraphBuilder, store: WeightStore | None = None,
                 constants: Mapping[str, Any] | None = None, module: Any = None):
        self.b = builder
        self.node: Any = None
        self.loc: str | None = None
        self.store = store if store is not None else WeightStore(builder)
        self.fx_constants: Mapping[str, Any] = constants or {}
        self.fx_module = module

    def constant(self, name: str, dt: DType, array: np.ndarray) -> Value:
        """A new graph constant (written with the model's weights)."""
        return self.store.add(name, dt, array)

    def fold(self, fx_value: Any, limit: int = 1 << 22) -> Any:
        """The value of FX node `fx_value` as a torch tensor when it depends on no user
        input (only on weights, buffers and constant-producing ops such as arange), else
        None. A causal mask a library builds from positions is such a value; folding it
        lets a converter see its pattern. Results over `limit` elements are not folded."""
        return fold_fx_value(fx_value, self.fx_constants, self.fx_module, limit)

    # -- the current node ------------------------------------------------------
    @property
    def out(self) -> Any:
        return self.node.meta.get("val")

    def out_dtype(self, index: int | None = None) -> DType:
        v = self.out if index is None else self.out[index]
        return hal_dtype(v.dtype)

    def out_shape(self, index: int | None = None) -> tuple[int, ...]:
        v = self.out if index is None else self.out[index]
        return static_shape(v.shape, self.node)

    # -- emitting ops ----------------------------------------------------------

    def scalar(self, value: float | int | bool, dt: DType, shape=()) -> Value:
        c = self.op("full", shape=(), value=float(value), dtype=dt)
        return self.bcast(c, shape)

    def tensor(self, x: Any, dt: DType, shape=None) -> Value:
        """`x` (a Value or a Python number) as a `dt` tensor broadcast to `shape`."""
        if isinstance(x, Value):
            v = self.cast(x, dt)
            return v if shape is None else self.bcast(v, shape)
        if isinstance(x, (bool, int, float, np.number)):
            return self.scalar(x, dt, () if shape is None else shape)
        raise UnsupportedError(f"{self.where()}: operand {x!r} is not a tensor or a number")

    def promote(self, *xs: Any) -> DType:
        """torch's result dtype for operands (Values or Python scalars)."""
        import torch

        inv = {v: k for k, v in torch_dtypes().items()}
        items = []
        for x in xs:
            if isinstance(x, Value):
                items.append(torch.empty((1,) * x.rank if x.rank else (), dtype=inv[x.dtype]))
            else:
                items.append(x)
        out = items[0]
        if len(items) == 1:
            return hal_dtype(out.dtype) if isinstance(out, torch.Tensor) else \
                hal_dtype(torch.tensor(out).dtype)
        dt = torch.result_type(items[0], items[1])
        for it in items[2:]:
            dt = torch.promote_types(dt, torch.result_type(torch.empty((), dtype=dt), it))
        return hal_dtype(dt)

    def where(self) -> str:
        return f"{target_key(self.node.target)} at {self.loc}" if self.node is not None else ""


def static_shape(shape: Any, node: Any = None) -> tuple[int, ...]:
    """`shape` as ints; a symbolic dim raises UnsupportedError (never guards on it)."""
    out: list[int] | None = []
    for d in shape:
        if type(d).__name__ == "SymInt":
            # int(d) would specialise the shape environment: ask without guarding
            known = d.node.maybe_as_int()
            if known is None:
                out = None
                break
            out.append(int(known))
        else:
            out.append(int(d))
    if out is None:
        where = f" at {node_location(node)}" if node is not None else ""
        raise UnsupportedError(f"dynamic shape {list(shape)}{where}: hal frontends take "
                               "static shapes only",
                               hint="export without dynamic_shapes= (or torch.compile with "
                                    "dynamic=False) so every dim is an int")
    return tuple(out)


def _resolve(env: Mapping[Any, Any], a: Any) -> Any:
    import torch.fx as fx

    if isinstance(a, fx.Node):
        return env[a]
    if isinstance(a, (list, tuple)):
        return type(a)(_resolve(env, x) for x in a)
    if isinstance(a, dict):
        return {k: _resolve(env, x) for k, x in a.items()}
    return a


def unsupported_nodes(gm: Any) -> dict[str, list[str]]:
    """Op name -> locations of the call_function nodes with no converter."""
    missing: dict[str, list[str]] = {}
    for n in gm.graph.nodes:
        if n.op == "call_function" and lookup(n.target) is None:
            missing.setdefault(target_key(n.target), []).append(node_location(n))
    return missing


MISSING_HINT = ("register a converter with @hal.frontends.torch_convert.converts('aten.op') "
                "(see hal/frontends/torch_ops.py), or run the model with torch.compile(backend="
                "'hal'), which falls back to eager for these ops")


def convert_graph_module(gm: Any, name: str = "main", *,
                         constants: Mapping[str, Any] | None = None,
                         user_inputs: list[str] | None = None,
                         outputs: list[Any] | None = None) -> ImportedModel:
    """Convert an FX GraphModule of ATen ops to an ImportedModel.

    `constants`: placeholder name -> tensor for weights (they become npz-backed
    constants); other placeholders become graph inputs (in order, or the names
    in `user_inputs`). `outputs`: the FX nodes to output (default: the output
    node's arguments, flattened).
    """
    import torch
    import torch.fx as fx

    missing = unsupported_nodes(gm)
    if missing:
        raise missing_ops_error("torch frontend", missing, MISSING_HINT)
    b = GraphBuilder(sanitize(name))
    store = WeightStore(b)
    constants = dict(constants or {})
    cx = TorchContext(b, store, constants, gm)
    fold = constant_frontier(gm, constants)
    env: dict[fx.Node, Any] = {}
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            if n.name in constants:
                t = constants[n.name]
                env[n] = store.add(n.name, hal_dtype(t.dtype), _to_numpy(t))
            elif user_inputs is None or n.name in user_inputs:
                val = n.meta.get("val")
                if not isinstance(val, torch.Tensor):
                    env[n] = val  # a Python scalar input: baked in as a constant
                    continue
                v = Value(b.fresh(sanitize(n.name)),
                          TensorType(hal_dtype(val.dtype), static_shape(val.shape, n)))
                b.graph.inputs.append(v)
                env[n] = v
        elif n.op == "get_attr":
            t = _fetch_attr(gm, n.target)
            env[n] = store.add(n.name, hal_dtype(t.dtype), _to_numpy(t)) \
                if isinstance(t, torch.Tensor) else t
        elif n.op == "call_function":
            folded = fold.get(n)
            env[n] = _convert_node(cx, n, env) if folded is None else \
                store.add(n.name, hal_dtype(folded.dtype), _to_numpy(folded))
        elif n.op == "output":
            outs = outputs if outputs is not None else list(_flatten(n.args[0]))
            for o in outs:
                v = env[o] if isinstance(o, fx.Node) else o
                if not isinstance(v, Value):
                    raise UnsupportedError(f"graph {name}: output {o} is not a tensor ({v!r})",
                                           hint="return tensors only from the model")
                b.output(v)
        else:
            raise UnsupportedError(f"FX node {n.name}: op kind '{n.op}' is not supported",
                                   hint="flatten submodules (torch.export does) before import")
    weights = store.finish()
    graph = eliminate_dead_code(b.graph).verify()
    return ImportedModel(graph, weights, source=name)


def _convert_node(cx: TorchContext, n: Any, env: Mapping[Any, Any]) -> Any:
    import torch

    cx.node, cx.loc = n, node_location(n)
    fn = lookup(n.target)
    assert fn is not None
    args, kwargs = _resolve(env, n.args), _resolve(env, n.kwargs)
    first_new = len(cx.b.graph.nodes)
    val = n.meta.get("val")
    try:
        if isinstance(val, torch.Tensor) and val.numel() == 0 and val.dtype in torch_dtypes():
            # an empty result has no values to compute, whatever the op (softmax over an
            # empty axis, a gather with no indices, ...)
            return cx.scalar(0, hal_dtype(val.dtype), static_shape(val.shape, n))
        result = fn(cx, *args, **kwargs)
    except HalError as e:
        kind = UnsupportedError if isinstance(e, UnsupportedError) else HalError
        raise kind(f"{cx.where()}: {e.message}", hint=e.hint) from None
    if isinstance(result, Value) and isinstance(val, torch.Tensor):
        want = static_shape(val.shape, n)
        if tuple(result.shape) != want:
            raise HalError(f"{cx.where()}: converter gave shape {list(result.shape)}, torch "
                           f"gives {list(want)}", hint="a bug in the converter; please report")
        result = cx.cast(result, hal_dtype(val.dtype))
        if result.producer is not None and result.producer in cx.b.graph.nodes[first_new:]:
            _rename(cx.b, result, n.name)
    return result


# ops whose input-free results are folded at import: each would be a kernel of its own
# (gathers, scans, reductions, contractions), where elementwise and view chains of iota
# and constants are recomputed inside their consumers' kernels for free
FOLD_EXPENSIVE = {"aten.index", "aten.index_select", "aten.gather", "aten.embedding",
                  "aten.cumsum", "aten.cumprod", "aten.any", "aten.all", "aten.sum",
                  "aten.amax", "aten.amin", "aten.max", "aten.min", "aten.mean", "aten.prod",
                  "aten.argmax", "aten.argmin", "aten.sort", "aten.topk", "aten.scatter",
                  "aten.index_put", "aten.mm", "aten.bmm", "aten.addmm"}
FOLD_LIMIT = 1 << 20   # elements of a folded constant at most


def constant_frontier(gm: Any, constants: Mapping[str, Any]) -> dict[Any, Any]:
    """FX node -> its torch value, for the nodes to import as constants: those that read no
    model input (weights, buffers and constant-producing ops only; nothing random or
    mutating), have an expensive op (FOLD_EXPENSIVE) among their producers, and are read
    by a node that does read an input (or are outputs). A causal mask a library builds
    with gathers and a cumsum over positions, or rotary tables from a positions matmul,
    become constants instead of kernels run on every call."""
    import torch

    free: dict[Any, bool] = {}
    costly: dict[Any, bool] = {}
    for n in gm.graph.nodes:
        ins = n.all_input_nodes
        if n.op == "placeholder":
            free[n] = n.name in constants
        elif n.op == "get_attr":
            free[n] = True
        elif n.op == "call_function":
            schema = getattr(n.target, "_schema", None)
            free[n] = (all(free.get(a, False) for a in ins)
                       and not (schema is not None and schema.is_mutable)
                       and torch.Tag.nondeterministic_seeded not in getattr(n.target, "tags", ())
                       and isinstance(n.meta.get("val"), torch.Tensor))
        else:
            free[n] = False
        packet = str(getattr(n.target, "overloadpacket", "")) if n.op == "call_function" else ""
        costly[n] = free[n] and (packet in FOLD_EXPENSIVE or any(costly.get(a) for a in ins))
    out: dict[Any, Any] = {}
    for n in gm.graph.nodes:
        if n.op != "call_function" or not costly[n]:
            continue
        if not any(not free.get(u, False) for u in n.users):
            continue
        val = n.meta["val"]
        if val.numel() > FOLD_LIMIT or val.dtype not in torch_dtypes():
            continue
        try:
            t = fold_fx_value(n, constants, gm, FOLD_LIMIT)
        except Exception:  # noqa: BLE001 - torch could not evaluate it eagerly: convert it
            t = None
        if t is not None:
            out[n] = t
    return out


def fold_fx_value(node: Any, constants: Mapping[str, Any], module: Any,
                  limit: int = 1 << 22, max_nodes: int = 2000) -> Any:
    """Evaluate FX node `node` with torch when its producers reach no user input (see
    TorchContext.fold); None when they do, or when the cone is larger than `max_nodes`."""
    import torch
    import torch.fx as fx

    if not isinstance(node, fx.Node):
        return None
    order: list[Any] = []
    seen: set[Any] = set()
    stack = [(node, False)]
    while stack:   # post-order walk of the producers
        n, done = stack.pop()
        if done:
            order.append(n)
            continue
        if n in seen:
            continue
        seen.add(n)
        if len(seen) > max_nodes:
            return None
        if n.op == "placeholder":
            if n.name not in constants:
                return None
        elif n.op == "call_function":
            if getattr(n.target, "_schema", None) is not None and n.target._schema.is_mutable:
                return None
            if torch.Tag.nondeterministic_seeded in getattr(n.target, "tags", ()):
                return None   # a random value is not a constant of the program
        elif n.op != "get_attr":
            return None
        stack.append((n, True))
        stack.extend((a, False) for a in n.all_input_nodes)
    env: dict[Any, Any] = {}
    with torch.no_grad():
        for n in order:
            if n.op == "placeholder":
                env[n] = constants[n.name]
            elif n.op == "get_attr":
                env[n] = _fetch_attr(module, n.target)
            else:
                env[n] = n.target(*_resolve(env, n.args), **_resolve(env, n.kwargs))
            v = env[n]
            if isinstance(v, torch.Tensor) and v.numel() > limit:
                return None
    out = env[node]
    return out if isinstance(out, torch.Tensor) else None


def _rename(b: GraphBuilder, v: Value, fx_name: str) -> None:
    """Give the node's result torch's name (or a fresh variant), for readable .hal text."""
    v.name = b.fresh(sanitize(fx_name))


def _flatten(x: Any):
    if isinstance(x, (list, tuple)):
        for y in x:
            yield from _flatten(y)
    elif x is not None:
        yield x


def _fetch_attr(gm: Any, target: str) -> Any:
    obj = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _to_numpy(t: Any) -> np.ndarray:
    import torch

    t = t.detach().cpu()
    if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
        return t.float().numpy()     # 16-bit and fp8 floats: exact in f32
    return t.numpy()
