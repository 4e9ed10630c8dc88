"""The numerical error model: per-element bounds for every value of a graph (DESIGN.md 8).

`graph_bounds(graph, inputs)` walks the primitive graph once, in float64,
from the same rounded inputs a device sees. For every value it keeps the
exact (unrounded) result of the op on the reference's rounded operands, the
reference value (rounded to the declared dtype) and an interval [lo, hi] that
a correct device value must lie in:

    delta = propagated(input errors) + local(op error model)
    lo, hi = round(exact - delta), round(exact + delta)      (round = hal.dtypes.cast)

* local error: `ulps * eps(compute dtype) * |exact|` for the op itself (eps =
  2u = one ulp relative; f32's for 16-bit and fp8 values, which compute in
  f32), plus for accumulating ops
  `accumulation_factor(n) * u(accumulator) * sum|terms|`; 0 for exact ops.
* store rounding: both the device and the reference round to the declared
  dtype; rounding is monotone, so rounding the interval's ends is the exact
  set of values a correct device can store (half an ulp on each side for a
  value computed with error, nothing for an exact one, which is how a
  truncating bf16 store is caught on a single op).
* propagation: what a consumer may see is off by err = max(hi - ref, ref - lo)
  per element. Elementwise ops push input errors through their own float64
  reference at the corners (x +- err) of the input box; movement and gather
  apply the op to the error arrays; reductions, scans and contractions have
  rules below (sum of errors, |A| err_B + err_A |B| + err_A err_B, ...).
  An infinite or NaN error means "unknown": the element is not checked.

Accumulation length choice: the deterministic worst case for summing n terms
in any order is (n - 1) u sum|x|, which for 16k-term rows is so loose
(1e-3 relative in f32) that accumulating in f16 instead of f32 would pass.
We use the probabilistic bound of Higham and Mary (SIAM J. Sci. Comput.
41(5), 2019): lambda * sqrt(n) * u * sum|x| holds for any summation order
with probability at least 1 - 2 exp(-lambda^2 / 2) per element under
independent rounding errors; lambda = 5 (failure odds ~ 1e-5 per element)
plus log2(n) for a final tree, capped at the worst case n - 1.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

import numpy as np

from hal.blas_threads import one_numpy_blas_thread_within
from hal.dtypes import DType, bf16, cast, compute_dtype, f16, f32, f64, round_to, ulp
from hal.ir.graph import Graph, Node, Value
from hal.lowering.faults import register_fault
from hal.ops import Category, get_op
from hal.ops.contraction import contraction_length
from hal.reference import widen
from hal.reference_blocked import sums_in_float32

LAMBDA = 5.0
STATIC_SAFETY = 2.0  # rtol_atol only: it guesses magnitudes instead of reading them
U64 = f64.unit_roundoff
U_TF32 = 2.0 ** -11   # TF32: 10 explicit mantissa bits, round to nearest


def accumulation_factor(n: int) -> float:
    """How many units of roundoff an n-term accumulation may lose (module docstring)."""
    if n <= 1:
        return 0.0
    return float(min(n - 1, LAMBDA * math.sqrt(n) + math.log2(n)))


register_fault("tol_ulps_16x", "tolerance: the per-op ulp term 16x looser")
register_fault("tol_accumulation_16x", "tolerance: the accumulation term 16x looser")
register_fault("tol_no_signed_zero", "tolerance: the sign of an exact zero is not checked")
register_fault("tol_store_widened", "tolerance: every interval one ulp of its dtype wider, "
               "exact results too")


@dataclass(frozen=True)
class ModelOptions:
    """Knobs of the error model. Production uses the defaults; the conformance self-test
    plants its tolerance faults (the `tol_*` names in hal.lowering.faults) through them,
    so a loosened bound is caught by the canary cases (hal.conformance.canaries)."""

    ulp_scale: float = 1.0           # multiplies every op's ulps
    accumulation_scale: float = 1.0  # multiplies accumulation_factor
    widen_ulps: float = 0.0          # extra ulps of the value's dtype on every interval
    signed_zero: bool = True         # check the sign of exact zeros
    # the user allowed TF32 (--allow-tf32): an f32 contraction may round its operands to
    # TF32 first (10 mantissa bits, unit roundoff 2^-11) before products are summed in f32
    tf32_inputs: bool = False

    @classmethod
    def from_faults(cls, faults) -> ModelOptions:
        f = set(faults)
        return cls(16.0 if "tol_ulps_16x" in f else 1.0,
                   16.0 if "tol_accumulation_16x" in f else 1.0,
                   1.0 if "tol_store_widened" in f else 0.0,
                   "tol_no_signed_zero" not in f)

    def accumulation(self, n: int) -> float:
        return self.accumulation_scale * accumulation_factor(n)


DEFAULT_MODEL = ModelOptions()


@dataclass
class Bound:
    """Everything the comparison needs for one value (arrays in the wide type)."""

    dtype: DType
    exact: np.ndarray   # the op applied exactly to the reference's rounded operands
    ref: np.ndarray     # exact rounded to the declared dtype (what the reference stores)
    lo: np.ndarray      # smallest acceptable device value
    hi: np.ndarray      # largest acceptable device value
    err: np.ndarray     # float64: max |device - ref| a consumer may read; inf = unknown
    free: np.ndarray    # bool: element not checkable (unknown error)
    strict_zero: bool   # the sign of a zero must match (exact ops on exact inputs)
    delta: np.ndarray | None = None  # float64: the half-width before rounding to the dtype

    @property
    def max_bound(self) -> float:
        e = self.err[~self.free] if self.err.size else self.err
        return float(e.max()) if e.size else 0.0


def _finite_abs(a: np.ndarray) -> np.ndarray:
    """|a| in float64 (a fresh array) with NaN and +-inf at 0."""
    a64 = np.asarray(a, dtype=np.float64)
    out = np.abs(a64, out=np.empty(a64.shape))   # out=: an array also for 0-d
    # one max instead of three masks: it is finite only when every element is
    if out.size and not np.isfinite(out.max()):
        out[~np.isfinite(out)] = 0.0
    return out


def _dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| in float64 with equal values (also equal infs, both NaN) at 0, else NaN -> inf."""
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    with np.errstate(all="ignore"):
        d = np.subtract(a64, b64, out=np.empty(np.broadcast_shapes(a64.shape, b64.shape)))
        np.abs(d, out=d)
        if not _has_nan(d):   # no NaN, no inf - inf: equal values are at 0 already
            return d
        # only the NaN elements change: equal values elsewhere are at +0 already; a NaN
        # is inf - inf of one sign (equal: 0) or a NaN operand (both NaN: 0, else inf)
        nan = np.isnan(d)
        an, bn = np.broadcast_to(a64, d.shape)[nan], np.broadcast_to(b64, d.shape)[nan]
        d[nan] = np.where((an == bn) | (np.isnan(an) & np.isnan(bn)), 0.0, np.inf)
    return d


# round_to from this many elements: f32 always (the same two conversions without cast's
# dispatch); bf16 and f16 where rounding on the float64 bits beats the narrow type and
# back (~2x at 2^16 elements for f16, the same near 2^13; slower on a few elements)
_ROUND_ON_BITS_MIN = {f32: 0, bf16: 1 << 14, f16: 1 << 14}


def _stored(x: np.ndarray, dt: DType) -> np.ndarray:
    """`x` rounded to `dt`, in the wide type: widen(cast(x, dt), dt), which round_to gives
    bit for bit from float64 (tests/test_round_to.py), faster where _ROUND_ON_BITS_MIN
    says; a fresh array either way."""
    a = np.asarray(x)
    least = _ROUND_ON_BITS_MIN.get(dt)
    if least is not None and a.dtype == np.float64 and a.size >= least:
        return round_to(a, dt)
    if a.dtype == dt.np_dtype and not dt.saturates:
        # already stored in `dt` (a graph input): cast to its own type is the identity
        # for a non-saturating type, and widen's astype makes the fresh array
        return widen(a, dt)
    return widen(cast(a, dt), dt)


def _stored_in_place(x: np.ndarray, dt: DType) -> np.ndarray:
    """_stored(x, dt) for a fresh float64 array `x` that is the caller's to overwrite: where
    round_to takes it (_ROUND_ON_BITS_MIN) the rounded values are written into `x` itself
    (round_to's `out` may be its input), which saves an array of x's size and a pass over
    it; else _stored's fresh array."""
    least = _ROUND_ON_BITS_MIN.get(dt)
    if least is not None and x.dtype == np.float64 and x.size >= least and x.flags.writeable:
        return round_to(x, dt, out=x)
    return _stored(x, dt)


def exact_bound(a: np.ndarray, dt: DType) -> Bound:
    """The bound of a graph input or constant: exactly its (rounded) value."""
    ref = _stored(a, dt)
    z = np.zeros(ref.shape)
    return Bound(dt, ref, ref, ref, ref, z, np.zeros(ref.shape, bool), True)


def _has_nan(x: np.ndarray) -> bool:
    """Any NaN in float array `x`: max propagates NaN, and one reduction is cheaper than a
    mask."""
    return bool(x.size) and bool(np.isnan(x.max()))


def round_bound(exact: np.ndarray, delta: np.ndarray, dt: DType, strict: bool,
                m: ModelOptions = DEFAULT_MODEL) -> Bound:
    """Round the interval exact +- delta to `dt` (module docstring)."""
    exact = np.asarray(exact)
    ref = _stored(exact, dt)
    if m.widen_ulps and dt.is_float:  # self-test fault tol_store_widened
        delta = delta + m.widen_ulps * ulp(np.nan_to_num(np.asarray(exact, np.float64)), dt)
    delta = np.asarray(delta, dtype=np.float64)
    if delta.shape != ref.shape:
        delta = np.broadcast_to(delta, ref.shape)
    least, most = (float(delta.min()), float(delta.max())) if delta.size else (0.0, 0.0)
    if math.isnan(least):   # NaN = unknown, like inf (min propagates a NaN: no extra pass)
        delta = np.where(np.isnan(delta), np.inf, delta)
        least, most = float(delta.min()), float(delta.max())
    any_free = math.isinf(least) or math.isinf(most)
    free = np.isinf(delta) if any_free else np.zeros(ref.shape, bool)
    if least == 0 and most == 0:   # every delta 0 (none is NaN here)
        return Bound(dt, exact, ref, ref, ref, np.zeros(ref.shape), free, strict,
                     np.zeros(ref.shape))
    with np.errstate(all="ignore"):
        if dt.is_bool:
            free = free | (delta > 0)
            lo = hi = ref
        else:
            lo, hi = _rounded_ends(exact.astype(np.float64, copy=False), delta, ref, dt,
                                   some_zero=least <= 0 <= most)
        err = None if dt.is_bool else _err_fast(lo, hi, ref, free, any_free)
        if err is None:
            err = _err_general(lo, hi, ref, free, dt)
    return Bound(dt, exact, ref, lo, hi, err, free, strict, delta)


def _rounded_ends(ex: np.ndarray, delta: np.ndarray, ref: np.ndarray, dt: DType,
                  some_zero: bool) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi): exact -+ delta rounded to `dt`, in the wide type; exactly ref where delta
    is 0 (ex + 0 would turn a -0 into +0; `some_zero`: delta may have zeros)."""
    lo = _stored_in_place(np.subtract(ex, delta), dt)   # fresh arrays: ours to change
    hi = _stored_in_place(np.add(ex, delta), dt)
    if some_zero:
        exact_here = delta == 0
        np.copyto(lo, ref, where=exact_here)
        np.copyto(hi, ref, where=exact_here)
    return lo, hi


def _err_general(lo, hi, ref, free, dt: DType) -> np.ndarray:
    """max(hi - ref, ref - lo) with equal ends (also equal infs) at 0, a NaN reference at 0
    where checked, and unknown (NaN, free) at inf."""
    err = np.maximum(np.where(hi == ref, 0.0, hi.astype(np.float64, copy=False) - ref),
                     np.where(lo == ref, 0.0, ref - lo.astype(np.float64, copy=False)))
    nan_ref = np.isnan(ref) if dt.is_float else np.zeros(ref.shape, bool)
    err = np.where(nan_ref & ~free, 0.0, err)
    return np.where(np.isnan(err) | free, np.inf, err)


def _err_fast(lo, hi, ref, free, any_free: bool) -> np.ndarray | None:
    """_err_general's answer when no end or reference is NaN and no end equals an infinite
    reference (then hi - ref and ref - lo have no NaN), else None. Without NaNs an equal
    end gives +-0, not 0.0 as there: max(+-0, +-0) + 0.0 is +0, and adding +0 changes
    nothing else."""
    err = np.subtract(hi, ref, dtype=np.float64, out=np.empty(ref.shape))  # 0-d: an array
    np.maximum(err, np.subtract(ref, lo, dtype=np.float64), out=err)
    if _has_nan(err):     # a NaN end or reference, or inf - inf: the general rule
        return None
    err += 0.0
    if any_free:
        np.copyto(err, np.inf, where=free)
    return err


# --------------------------------------------------------------------------- rules
# A rule returns (exact results, deltas) for a node: delta = propagated + local error.

Rule = Callable[[Node, dict, list[Bound], list[np.ndarray], ModelOptions], list[np.ndarray]]
RULES: dict[str, Rule] = {}
CATEGORY_RULES: dict[Category, Rule] = {}


def register_rule(op: str | Category) -> Callable[[Rule], Rule]:
    """Register how errors pass through op `op` (or a whole category): the rule gets
    (node, checked attrs, input Bounds, exact results, ModelOptions) and returns the
    delta (propagated + local error) of each output."""
    def deco(fn: Rule) -> Rule:
        (CATEGORY_RULES if isinstance(op, Category) else RULES)[op] = fn
        return fn

    return deco


def _u(dt: DType) -> float:
    return compute_dtype(dt).unit_roundoff if dt.is_float else 0.0


def _local(node: Node, exact: np.ndarray, out: Value, m: ModelOptions) -> np.ndarray:
    """The op's own error: ulps of the compute dtype relative to the result (and 0
    allowed below 1 / max where the op's formula overflows: ErrorModel)."""
    model = get_op(node.op).error
    ulps = model.ulps * m.ulp_scale
    if not ulps or not out.dtype.is_float:
        return np.zeros(np.shape(exact))
    c = compute_dtype(out.dtype)
    eps = 2 * c.unit_roundoff  # one ulp relative to the value (ulps are ulps, 0.5 = exact RNE)
    floor = ulps * c.tiny * eps  # subnormal results: spacing of the subnormals
    mag = _finite_abs(exact)
    local = (ulps * eps + 0.5 * U64) * mag
    local += floor
    if model.zero_below_inverse_max:  # e.g. sigmoid: 1 / (1 + inf) = 0 where e^-x overflows
        # a factor 2 of margin for the intermediate's own ulps near the threshold; 2 / max
        # is still below the smallest normal, so a normal result keeps its ulps bound
        local = np.where(mag < 2.0 / c.max, np.maximum(local, mag), local)
    return local


def _perturbed(b: Bound, sign: int) -> np.ndarray:
    if b.dtype.is_bool:
        return np.where(b.err > 0, ~b.ref, b.ref) if sign > 0 else b.ref
    with np.errstate(all="ignore"):   # ref - err is ref + (-1 * err), bit for bit
        p = (np.add if sign > 0 else np.subtract)(b.ref, b.err, dtype=np.float64)
    return p if b.dtype.is_float else np.where(np.isfinite(p), p, 0).astype(np.int64)


@register_rule(Category.ELEMENTWISE)
def _elementwise(node, attrs, ins, exact, m):
    op = get_op(node.op)
    delta = _local(node, exact[0], node.outputs[0], m)
    noisy = [i for i, b in enumerate(ins) if b.err.any()]
    if noisy:
        corners = {(i, s): _perturbed(ins[i], s) for i in noisy for s in (-1, 1)}
        prop = np.zeros(np.shape(exact[0]))
        for signs in itertools.product((-1, 1), repeat=len(noisy)):
            args = [b.ref for b in ins]
            for i, s in zip(noisy, signs, strict=True):
                args[i] = corners[i, s]
            with np.errstate(all="ignore"):
                val = op.reference(args, attrs)[0]
            np.maximum(prop, _dist(val, exact[0]), out=prop)
        delta += prop   # _local's array is fresh and of the result's shape
        for b in ins:   # an unknown input error leaves the result unknown
            if b.free.any():
                np.copyto(delta, np.inf, where=b.free)
    return [delta]


def _moved(node, attrs, errs: list[np.ndarray]) -> np.ndarray:
    a = dict(attrs)
    if "value" in a:
        a["value"] = 0.0  # padding adds exact elements
    with np.errstate(all="ignore"):
        return np.asarray(get_op(node.op).reference(errs, a)[0], dtype=np.float64)


@register_rule(Category.MOVEMENT)
@register_rule(Category.BROADCAST)
def _movement(node, attrs, ins, exact, m):
    return [_moved(node, attrs, [b.err for b in ins])]


@register_rule(Category.GATHER)
def _gather(node, attrs, ins, exact, m):
    table, idx = ins
    d = _moved(node, attrs, [table.err, idx.ref])
    return [d if not idx.err.any() else np.full(d.shape, np.inf)]


@register_rule(Category.SOURCE)
def _source(node, attrs, ins, exact, m):
    return [np.zeros(np.shape(exact[0]))]


def _reduce_with(op: str, node, attrs, a: np.ndarray) -> np.ndarray:
    """Reduce `a` like `node` does, with reduction op `op` (axes/keepdims from the node)."""
    if "axis" in attrs and "axes" not in attrs:
        attrs = {"axes": (attrs["axis"],), "keepdims": attrs["keepdims"]}
    else:
        attrs = {"axes": attrs["axes"], "keepdims": attrs["keepdims"]}
    with np.errstate(all="ignore"):
        return np.asarray(get_op(op).reference([a], attrs)[0], dtype=np.float64)


def _reduced_count(node) -> int:
    x, out = node.inputs[0], node.outputs[0]
    return math.prod(x.shape) // max(1, math.prod(out.shape)) if math.prod(out.shape) else 0


@register_rule("reduce_sum")
def _reduce_sum(node, attrs, ins, exact, m):
    (x,) = ins
    u = _u(x.dtype)
    mag = _reduce_with("reduce_sum", node, attrs, _finite_abs(x.ref))
    prop = _reduce_with("reduce_sum", node, attrs, x.err)
    return [prop + m.accumulation(_reduced_count(node)) * u * mag]


@register_rule("reduce_prod")
def _reduce_prod(node, attrs, ins, exact, m):
    (x,) = ins
    u = _u(x.dtype)
    with np.errstate(all="ignore"):
        rel = x.err / np.maximum(_finite_abs(x.ref), 1e-300)
        rel = np.where(x.err == 0, 0.0, rel)
    relsum = _reduce_with("reduce_sum", node, attrs, rel)
    n = _reduced_count(node)
    with np.errstate(all="ignore"):
        return [_finite_abs(exact[0]) * (relsum + (m.accumulation(n) + 1) * u)]


@register_rule("reduce_max")
@register_rule("reduce_min")
def _reduce_extreme(node, attrs, ins, exact, m):
    return [_reduce_with("reduce_max", node, attrs, ins[0].err)]


def _any_noise(node, attrs, ins, exact, m):
    noisy = _reduce_with("reduce_sum", node, attrs, (ins[0].err > 0).astype(np.float64))
    return [np.where(noisy > 0, np.inf, 0.0)]


for _op in ("reduce_any", "reduce_all", "argmax", "argmin"):
    register_rule(_op)(_any_noise)


@register_rule(Category.SCAN)
def _scan(node, attrs, ins, exact, m):
    (x,) = ins
    ref = get_op(node.op).reference
    with np.errstate(all="ignore"):
        prop = np.asarray(ref([x.err], attrs)[0], dtype=np.float64)
        mag = np.asarray(ref([_finite_abs(x.ref)], attrs)[0], dtype=np.float64)
    n = x.ref.shape[attrs["axis"] % x.ref.ndim] if x.ref.ndim else 1
    return [prop + m.accumulation(n) * _u(x.dtype) * mag]


def _all_plus_zero(err: np.ndarray) -> bool:
    """Every element is +0.0 (error arrays have no -0; the sign is checked anyway)."""
    e = np.asarray(err, dtype=np.float64)
    return not e.any() and not np.signbit(e).any()


def _propagated_contraction(ref, attrs, a: Bound, b: Bound, aa, ab) -> np.ndarray:
    """(|A| err_B + err_A |B|) + err_A err_B. With err_A all +0 and err_B finite, err_A |B|
    is +0 everywhere (|B| is finite and never -0) and err_A err_B is +-0, so the sum is
    |A| err_B + 0.0 bit for bit: two matmuls skipped (and the same with A and B swapped)."""
    if _all_plus_zero(a.err) and np.isfinite(b.err).all():
        return ref([aa, b.err], attrs)[0] + 0.0
    if _all_plus_zero(b.err) and np.isfinite(a.err).all():
        return ref([a.err, ab], attrs)[0] + 0.0
    return ref([aa, b.err], attrs)[0] + ref([a.err, ab], attrs)[0] \
        + ref([a.err, b.err], attrs)[0]


@register_rule(Category.CONTRACTION)
def _contraction(node, attrs, ins, exact, m):
    from hal.ops.contraction import accumulation_dtype

    a, b = ins
    ref = get_op(node.op).reference
    aa, ab = _finite_abs(a.ref), _finite_abs(b.ref)
    with np.errstate(all="ignore"):
        mag = ref([aa, ab], attrs)[0]
        prop = np.zeros(np.shape(exact[0]))
        if a.err.any() or b.err.any():
            prop = _propagated_contraction(ref, attrs, a, b, aa, ab)
    if not a.dtype.is_float:
        return [np.asarray(prop, dtype=np.float64)]
    u = compute_dtype(accumulation_dtype(a.dtype, attrs)).unit_roundoff
    k = contraction_length(node)
    # TF32 operands: each product's factors carry a relative error <= u_tf32 (2u + u^2)
    operands = (2 * U_TF32 + U_TF32 ** 2) * mag if m.tf32_inputs and \
        compute_dtype(a.dtype).name == "f32" and compute_dtype(b.dtype).name == "f32" else 0.0
    return [np.asarray(prop + (m.accumulation(k) + 1) * u * mag + operands + 0.5 * U64 * mag,
                       dtype=np.float64)]


# --------------------------------------------------------------------------- graph walk

def primitive_graph(graph: Graph) -> Graph:
    from hal.ops.decompose import decompose_graph

    if any(get_op(n.op).is_composite for n in graph.nodes):
        return decompose_graph(graph)
    return graph


def graph_bounds(graph: Graph, inputs: Mapping[str, np.ndarray],
                 model: ModelOptions = DEFAULT_MODEL,
                 keep: Callable[[Graph], Collection[str]] | None = None
                 ) -> tuple[Graph, dict[str, Bound]]:
    """(the primitive graph, a Bound for each of its values).

    `keep` (given the primitive graph, the names of the values whose Bounds the caller
    reads): every other value's Bound is dropped after its last consumer, so that a large
    graph's float64 intermediates (seven arrays a value) do not all stay alive at once:
    attention's 88x130x130 scores held ~1 GB, and faulting that memory in cost ~2 s of
    system time, 3x the bounds' arithmetic. None keeps every value.

    On one BLAS thread: the bounds' float64 matmuls are small, and a second OpenBLAS
    thread cost 2-4x their CPU on shared cores (spinning) for no wall time. It also makes
    the float64 sums the same in every process: the suite's workers already run on one
    BLAS thread (hal.blas_threads), and a matmul's last bits depend on the thread count."""
    with one_numpy_blas_thread_within():
        return _graph_bounds(graph, inputs, model, keep)


def _last_uses(prim: Graph, keep: Collection[str]) -> dict[int, list[str]]:
    """For each node index, the values (not in `keep`) whose last consumer it is; a value
    no node reads is dropped where it is made."""
    last: dict[str, int] = {}
    for i, node in enumerate(prim.nodes):
        for v in node.inputs:
            last[v.name] = i
        for v in node.outputs:
            last.setdefault(v.name, i)
    drop: dict[int, list[str]] = {}
    for name, i in last.items():
        if name not in keep:
            drop.setdefault(i, []).append(name)
    return drop


def _graph_bounds(graph: Graph, inputs: Mapping[str, np.ndarray],
                  model: ModelOptions,
                  keep: Callable[[Graph], Collection[str]] | None = None
                  ) -> tuple[Graph, dict[str, Bound]]:
    prim = primitive_graph(graph)
    drop = _last_uses(prim, keep(prim)) if keep is not None else {}
    bounds: dict[str, Bound] = {}
    for v in prim.inputs:
        bounds[v.name] = exact_bound(inputs[v.name], v.dtype)
    for name, arr in prim.materialize_constants().items():
        v = prim.values()[name]
        bounds[name] = exact_bound(arr, v.dtype)
    for i, node in enumerate(prim.nodes):
        op = get_op(node.op)
        attrs = op.check_attrs(node.attrs)
        ins = [bounds[v.name] for v in node.inputs]
        with np.errstate(all="ignore"):
            exact = [np.asarray(r) for r in op.reference([b.ref for b in ins], attrs)]
        rule = RULES.get(node.op) or CATEGORY_RULES[op.category]
        deltas = rule(node, attrs, ins, exact, model)
        strict = op.error.exact and all(b.strict_zero for b in ins)
        for out, ex, d in zip(node.outputs, exact, deltas, strict=True):
            bounds[out.name] = round_bound(ex, d, out.dtype, strict, model)
        del ins, exact, deltas
        for name in drop.get(i, ()):
            bounds.pop(name, None)
    return prim, bounds


def output_bounds(graph: Graph, inputs: Mapping[str, np.ndarray]) -> dict[str, Bound]:
    """A Bound per graph output (by the original graph's output names)."""
    prim, bounds = graph_bounds(graph, inputs)
    return {o.name: bounds[p.name] for o, p in zip(graph.outputs, prim.outputs, strict=True)}


# --------------------------------------------------------------------------- static form

def rtol_atol(graph: Graph, value: Value) -> tuple[float, float]:
    """A value-free (rtol, atol) for `value`, for quick reports (backends' run reports).

    The same model with magnitudes guessed instead of read: O(1) inputs, a
    sum of n zero-mean terms has sum|x| ~ sqrt(n) |sum|, one ulp per storage
    rounding on the path; times STATIC_SAFETY. A contraction the model-scale
    reference sums in float32 (hal.reference_blocked.sums_in_float32) adds that
    reference's own accumulation error. Integers and bools are exact.
    """
    if not value.dtype.is_float:
        return 0.0, 0.0
    producer = {v.name: n for n in graph.nodes for v in n.outputs}
    seen: set[str] = set()
    stack, units, storage = [value], 0.0, 0.0
    while stack:
        v = stack.pop()
        if v.name in seen or v.name not in producer:
            continue
        seen.add(v.name)
        n = producer[v.name]
        op = get_op(n.op)
        units += op.error.ulps
        if op.error.accumulates:
            k = contraction_length(n) if op.category is Category.CONTRACTION else \
                max(1, _reduced_count(n) if op.category is Category.REDUCTION else
                    n.inputs[0].shape[n.attrs["axis"] % n.inputs[0].rank])
            units += accumulation_factor(k) * math.sqrt(k) + 1
            if sums_in_float32(n):   # the model-scale reference's own float32 sums
                storage += accumulation_factor(k) * math.sqrt(k) * f32.unit_roundoff
        if v.dtype.is_float and compute_dtype(v.dtype) != v.dtype:
            storage += 2 * v.dtype.unit_roundoff
        stack.extend(n.inputs)
    rtol = STATIC_SAFETY * (units * _u(value.dtype) + storage + 2 * value.dtype.unit_roundoff)
    return rtol, rtol
