"""The op registry: every op is one OpDef, registered once with `register_op`.

An OpDef holds everything hal knows about an op: its operands and attributes,
its shape/dtype rule, its float64 NumPy reference, its scalar function (for
elementwise ops: the same NumPy function the simulator evaluates in the compute
dtype), its fusion category, its error model and, for composites, its
decomposition into primitives. Nothing else in hal switches on op names.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from hal.dtypes import DType, dtype
from hal.errors import ShapeError, UnsupportedError
from hal.ir.types import TensorType


class Category(Enum):
    """How the fusion pass and the lowering treat an op."""

    ELEMENTWISE = "elementwise"   # out[i] = f(in0[i], in1[i], ...), same shapes
    BROADCAST = "broadcast"       # replicates along new/size-1 axes
    REDUCTION = "reduction"       # combines along axes
    SCAN = "scan"                 # cumulative along one axis
    CONTRACTION = "contraction"   # dot_general / matmul
    MOVEMENT = "movement"         # reshape, transpose, slice, pad, concat
    GATHER = "gather"             # data-dependent indexing
    SOURCE = "source"             # iota, full: no tensor inputs
    COMPOSITE = "composite"       # defined by decomposition into primitives


@dataclass(frozen=True)
class ErrorModel:
    """How far a correct implementation may stray from the float64 reference.

    `ulps`: error of the op itself, in units of roundoff of the dtype it
    computes in (0 for exact ops such as neg, max, comparisons and data
    movement; 0.5 for one correctly rounded operation; a few for transcendental
    functions as the GPU math libraries implement them). `accumulates`: the
    op sums `n` terms (reductions, dot products, cumsum), adding up to n*u of
    relative error of the sum of magnitudes (the classical recursive bound; the
    tree-shaped GPU reductions do better, so the bound holds for them too).
    `zero_below_inverse_max`: the op's formula has an intermediate that overflows to
    inf exactly where the result is below 1 / max of the compute dtype, so there the
    result may be 0 (sigmoid = 1 / (1 + e^-x): e^-x overflows for x < -ln(max), 88.72
    in f32; the kernels, cpu_sim and torch's CPU kernel all give 0 there, where the
    float64 reference keeps a subnormal). Nowhere else does the op get this allowance.
    """

    ulps: float = 0.5
    accumulates: bool = False
    zero_below_inverse_max: bool = False

    @property
    def exact(self) -> bool:
        return self.ulps == 0 and not self.accumulates


@dataclass(frozen=True)
class AttrSpec:
    name: str
    kind: str  # "int", "float", "bool", "str", "dtype", "ints", "floats", "any"
    default: Any = ...
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is ...


InferFn = Callable[[Sequence[TensorType], Mapping[str, Any]], list[TensorType]]
RefFn = Callable[[Sequence[np.ndarray], Mapping[str, Any]], list[np.ndarray]]


@dataclass(frozen=True)
class OpDef:
    name: str
    category: Category
    inputs: tuple[str, ...]          # operand names; a leading '*' marks a variadic tail
    infer: InferFn
    reference: RefFn
    attrs: tuple[AttrSpec, ...] = ()
    error: ErrorModel = field(default_factory=ErrorModel)
    scalar: Callable[..., np.ndarray] | None = None  # elementwise: numpy fn on arrays
    decompose: Callable[..., list] | None = None     # composites: (builder, inputs, attrs)
    dtypes: tuple[str, ...] = ()     # dtype names the op accepts for its first operand
    doc: str = ""

    @property
    def is_composite(self) -> bool:
        return self.decompose is not None

    @property
    def variadic(self) -> bool:
        return bool(self.inputs) and self.inputs[-1].startswith("*")

    def check_attrs(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        """Fill defaults, reject unknown or missing attributes, normalise dtype attrs."""
        known = {a.name: a for a in self.attrs}
        out: dict[str, Any] = {}
        for k in attrs:
            if k not in known:
                close = difflib.get_close_matches(k, known, n=1)
                raise ShapeError(f"{self.name}: unknown attribute '{k}'",
                                 hint=(f"did you mean '{close[0]}'?" if close else
                                       "valid: " + (", ".join(known) or "none")))
        for a in self.attrs:
            if a.name in attrs:
                v = attrs[a.name]
            elif a.required:
                raise ShapeError(f"{self.name}: missing attribute '{a.name}'",
                                 hint=a.doc or None)
            else:
                v = a.default
            if a.kind == "dtype" and v is not None:
                v = dtype(v)
            elif a.kind in ("ints", "floats") and v is not None and not isinstance(v, tuple):
                v = tuple(v) if isinstance(v, list) else (v,)
            out[a.name] = v
        return out

    def check_arity(self, n: int) -> None:
        fixed = len(self.inputs)  # a variadic tail needs at least one operand
        if (self.variadic and n < fixed) or (not self.variadic and n != fixed):
            want = f"at least {fixed}" if self.variadic else str(fixed)
            raise ShapeError(f"{self.name}: takes {want} operand(s) "
                             f"({', '.join(self.inputs)}), got {n}")


OPS: dict[str, OpDef] = {}


def register_op(op: OpDef) -> OpDef:
    """Add `op` to the registry. The extension point for new ops and composites."""
    if op.name in OPS:
        raise ValueError(f"op '{op.name}' is registered twice")
    OPS[op.name] = op
    return op


def get_op(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        close = difflib.get_close_matches(name, OPS, n=3)
        raise UnsupportedError(f"unknown op '{name}'",
                               hint=("did you mean " + ", ".join(close) + "?") if close
                               else "run `hal ops` to list the ops") from None


def ops_in(category: Category) -> list[OpDef]:
    return [o for o in OPS.values() if o.category is category]


def _dtype_names(ds: Sequence[DType | str]) -> tuple[str, ...]:
    return tuple(dtype(d).name for d in ds)
