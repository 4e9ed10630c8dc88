"""The JAX frontend: `trace(fn, *example_args)` turns a JAX function into a hal Graph.

    graph = trace(fn, tokens)                 # via jax.make_jaxpr
    model = import_jax(fn, tokens)            # ImportedModel: graph + run helpers

One rule per JAX primitive in `JAX_RULES` (`@rule("prim")`, a function
`(cx, *operands, **params) -> Value | list[Value]`). Function arguments become
graph inputs (pytrees flattened in order), the closed jaxpr's consts (arrays
the function closes over: the weights) become npz-backed constants, and the
bodies of `jit`/`pjit`, `custom_jvp_call` and `custom_vjp_call` are inlined.

Operands that JAX broadcasts implicitly (scalar literals, size-1 dims) are
broadcast explicitly to the result's shape; results are cast to JAX's dtype.
Equations whose operands are all literals or folded constants and whose result
is small are folded with JAX itself, so `dynamic_slice` with static start
indices (computed from literals) works. Every primitive without a rule is
reported at once, with the source line that used it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from hal.dtypes import DType, dtype
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
from hal.ir.graph import Graph, Value

Rule = Callable[..., Any]
JAX_RULES: dict[str, Rule] = {}
FOLD_LIMIT = 64  # fold equations on constants whose result has at most this many elements
CALL_PRIMITIVES = ("jit", "pjit", "closed_call", "core_call", "remat", "checkpoint",
                   "custom_jvp_call", "custom_vjp_call", "custom_vjp_call_jaxpr",
                   "custom_lin")


def rule(*names: str) -> Callable[[Rule], Rule]:
    """Register a conversion rule for JAX primitives."""
    def register(fn: Rule) -> Rule:
        for n in names:
            if n in JAX_RULES:
                raise ValueError(f"jax rule for '{n}' is registered twice")
            JAX_RULES[n] = fn
        return fn
    return register


class JaxContext(EmitOps):
    """The builder, the current equation and helpers for explicit casts and broadcasts."""

    def __init__(self, builder: GraphBuilder, store: WeightStore):
        self.b, self.store = builder, store
        self.eqn: Any = None
        self.loc: str | None = None

    def out_dtype(self, i: int = 0) -> DType:
        return dtype(np.dtype(self.eqn.outvars[i].aval.dtype))

    def out_shape(self, i: int = 0) -> tuple[int, ...]:
        return tuple(int(d) for d in self.eqn.outvars[i].aval.shape)


    def tensor(self, x: Any, dt: DType | None = None, shape=None) -> Value:
        """A Value for `x` (a Value or a folded NumPy constant), cast and broadcast."""
        if not isinstance(x, Value):
            a = np.asarray(x)
            dt = dt or dtype(a.dtype)
            if a.size == 1:
                c = self.op("full", shape=(), value=float(a.reshape(-1)[0]), dtype=dt)
                x = self.reshape(c, a.shape) if a.ndim else c
            else:
                x = self.store.add("folded", dt, a)
        if dt is not None:
            x = self.cast(x, dt)
        return x if shape is None else self.bcast(x, shape)

    def same(self, *xs: Any, dt: DType | None = None) -> list[Value]:
        """Operands as Values of one dtype (`dt` or the first Value's) and the output shape."""
        if dt is None:
            dt = next((x.dtype for x in xs if isinstance(x, Value)), None) or self.out_dtype()
        return [self.tensor(x, dt, self.out_shape()) for x in xs]


def location(eqn: Any) -> str:
    try:
        from jax._src import source_info_util

        return source_info_util.summarize(eqn.source_info)
    except Exception:  # noqa: BLE001 - internals move between versions
        return "unknown location"


def _sub_jaxpr(eqn: Any) -> tuple[Any, list]:
    """The called (jaxpr, consts) of a call-like equation."""
    for key in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        j = eqn.params.get(key)
        if j is None:
            continue
        if hasattr(j, "jaxpr") and hasattr(j, "consts"):
            return j.jaxpr, list(j.consts)
        return j, []
    raise UnsupportedError(f"{eqn.primitive.name} at {location(eqn)}: no body jaxpr found")


def missing_primitives(jaxpr: Any, out: dict[str, list[str]] | None = None) -> dict:
    """Primitive name -> locations, for every equation (nested too) without a rule."""
    out = {} if out is None else out
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name in CALL_PRIMITIVES:
            missing_primitives(_sub_jaxpr(eqn)[0], out)
        elif name not in JAX_RULES:
            out.setdefault(name, []).append(location(eqn))
    return out


def _is_literal(a: Any) -> bool:
    return type(a).__name__ == "Literal"


def _run_jaxpr(cx: JaxContext, jaxpr: Any, consts: list, args: list) -> list:
    env: dict[Any, Any] = {}
    for var, c in zip(jaxpr.constvars, consts, strict=True):
        env[var] = c if isinstance(c, Value) else cx.store.add("const", dtype(np.dtype(c.dtype)),
                                                               np.asarray(c))
    for var, a in zip(jaxpr.invars, args, strict=True):
        env[var] = a

    def read(a: Any) -> Any:
        if _is_literal(a):
            return np.asarray(a.val, dtype=a.aval.dtype)
        return env[a]

    for eqn in jaxpr.eqns:
        ins = [read(a) for a in eqn.invars]
        name = eqn.primitive.name
        if name in CALL_PRIMITIVES:
            body, body_consts = _sub_jaxpr(eqn)
            n_consts = eqn.params.get("num_consts", 0) if name.startswith("custom") else 0
            outs = _run_jaxpr(cx, body, body_consts, ins[n_consts:] if len(body.invars) <
                              len(ins) else ins)
        else:
            outs = _apply(cx, eqn, ins)
        for var, v in zip(eqn.outvars, outs, strict=True):
            env[var] = v
    return [read(a) for a in jaxpr.outvars]


def _apply(cx: JaxContext, eqn: Any, ins: list) -> list:
    cx.eqn, cx.loc = eqn, location(eqn)
    if all(not isinstance(x, Value) for x in ins) and ins and \
            all(int(np.prod(v.aval.shape)) <= FOLD_LIMIT for v in eqn.outvars):
        try:
            res = eqn.primitive.bind(*ins, **eqn.params)
            res = res if eqn.primitive.multiple_results else [res]
            return [np.asarray(r) for r in res]
        except Exception:  # noqa: BLE001 - fall through to the rule
            pass
    try:
        res = JAX_RULES[eqn.primitive.name](cx, *ins, **eqn.params)
    except HalError as e:
        kind = UnsupportedError if isinstance(e, UnsupportedError) else HalError
        raise kind(f"{eqn.primitive.name} at {cx.loc}: {e.message}", hint=e.hint) from None
    res = list(res) if isinstance(res, (list, tuple)) else [res]
    out = []
    for i, (r, var) in enumerate(zip(res, eqn.outvars, strict=True)):
        r = cx.tensor(r)
        want = tuple(int(d) for d in var.aval.shape)
        if tuple(r.shape) != want:
            raise HalError(f"{eqn.primitive.name} at {cx.loc}: rule gave shape "
                           f"{list(r.shape)}, JAX gives {list(want)}",
                           hint="a bug in the rule; please report")
        out.append(cx.cast(r, cx.out_dtype(i)))
    return out


def import_jax(fn: Callable, *example_args: Any, name: str | None = None) -> ImportedModel:
    """Trace `fn` on `example_args` and convert it; arguments become inputs in order."""
    import jax

    closed = jax.make_jaxpr(fn)(*example_args)
    missing = missing_primitives(closed.jaxpr)
    if missing:
        raise missing_ops_error("jax frontend", missing,
                                "add a rule with @hal.frontends.jax_import.rule('primitive')")
    gname = sanitize(name or getattr(fn, "__name__", "jax_fn"))
    b = GraphBuilder(gname)
    store = WeightStore(b)
    cx = JaxContext(b, store)
    args = []
    for i, var in enumerate(closed.jaxpr.invars):
        args.append(b.input(f"arg{i}", dtype(np.dtype(var.aval.dtype)),
                            tuple(int(d) for d in var.aval.shape)))
    outs = _run_jaxpr(cx, closed.jaxpr, list(closed.consts), args)
    for i, o in enumerate(outs):
        v = cx.tensor(o)
        if v.producer is not None and v not in b.graph.outputs:
            v.name = b.fresh(f"out{i}")  # readable output names
        b.output(v)
    weights = store.finish()
    graph = eliminate_dead_code(b.graph).verify()
    return ImportedModel(graph, weights, source=gname)


def trace(fn: Callable, *example_args: Any, name: str | None = None) -> Graph:
    """The hal Graph of `fn` traced on `example_args` (weights: npz-backed constants)."""
    return import_jax(fn, *example_args, name=name).graph


from hal.frontends import jax_rules  # noqa: E402,F401 - registers the rules

__all__ = ["JAX_RULES", "JaxContext", "import_jax", "rule", "trace"]
