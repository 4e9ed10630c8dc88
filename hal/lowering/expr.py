"""Graph nodes -> typed scalar expressions: the one builder every lowering shares.

`ScalarBuilder.value(v, coords)` returns the expression for element `coords` of
value `v`, emitting `Declare` statements (one register per node result, which
is common-subexpression elimination for free) into the current statement list.
It walks the group's nodes backwards from `v`:

* elementwise ops become `Unary`/`Binary`/`Select`/`Cast` named after the op
  (no per-pattern templates: a new composition lowers like a shipped one);
* movement ops only transform coordinates: broadcast_to (size-1 -> 0, i.e.
  stride 0), transpose (permuted strides), slice (offset + step), reshape
  (relinearise), pad and concat (masked loads + select);
* gather loads its index, iota/full are pure functions of the coordinates;
* values read from outside the group become masked global `Load`s;
* reductions, contractions and scans are supplied by the caller in `env`
  (value name -> (coords they are valid at, expression)).

Dtypes: loads of 16-bit/fp8 floats are cast to f32 (`compute_dtype`), math runs
in the compute dtype, and a node whose declared dtype is narrower than its
compute dtype is rounded to it right away (`Cast -> bf16 -> f32`), so a fused
chain rounds exactly where the unfused graph (and the reference) rounds.
Stores cast to the storage dtype (a no-op rounding after the node rounding).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hal.dtypes import DType, bool_, cast, compute_dtype
from hal.errors import UnsupportedError
from hal.ir.graph import Node, Value
from hal.kernel.ir import Binary, Cast, Const, Expr, Load, Select, Stmt, Unary, Var
from hal.lowering import faults
from hal.lowering.context import KernelContext
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions
from hal.ops import Category, get_op

Coords = tuple[Expr, ...]
Env = dict[str, tuple[Coords | None, Expr]]
Emitter = Callable[["ScalarBuilder", Node, Coords, Expr | None], Expr]
LoadHook = Callable[["ScalarBuilder", Value, Coords, Expr | None], Expr | None]

EMITTERS: dict[str, Emitter] = {}


def register_emitter(op: str) -> Callable[[Emitter], Emitter]:
    """Register how node `op` becomes a scalar expression (the extension point for new
    non-elementwise ops; elementwise ops need nothing: their name is the IR op)."""
    def deco(fn: Emitter) -> Emitter:
        EMITTERS[op] = fn
        _KEEPS.clear()   # (_keeps_coords reads EMITTERS)
        return fn

    return deco


def rounded(e: Expr, d: DType, options: LoweringOptions = DEFAULT_OPTIONS) -> Expr:
    """`e` (in compute dtype) rounded to storage dtype `d` and widened back (`options`:
    the kernel's `ctx.options`, for the self-test's bf16_truncation fault)."""
    c = compute_dtype(d)
    if d.is_float and c != d:
        if options.fault("bf16_truncation") and d.name == "bf16":
            e = faults.truncate_bf16(e)  # self-test hook: round toward zero
        return Cast(Cast(e, d), c)
    return e


def to_compute(e: Expr, d: DType) -> Expr:
    c = compute_dtype(d)
    return Cast(e, c) if e.dtype != c else e


def to_storage(e: Expr, d: DType) -> Expr:
    return Cast(e, d) if e.dtype != d else e


def scalar_const(value: float | int | bool, d: DType) -> Const:
    """A constant rounded to `d` (hal's cast rules) and expressed in its compute dtype.
    Kept per (value, d) in _CONSTS: an epilogue asks for its constants once per output
    element of a thread (a matmul's gelu: ~100 times a lowering), and each numpy cast
    costs more than the rest of the element's expression."""
    # keyed on the value's type and repr too: -0.0 == 0.0 and 1 == 1.0 == True, but they
    # round (and print) differently; a NaN (never equal to itself) misses every time
    key = (type(value), repr(value), value, d)
    hit = _CONSTS.get(key)
    if hit is None:
        v = cast(value, d).item()
        c = compute_dtype(d)
        hit = Const(bool(v) if c.is_bool else (float(v) if c.is_float else int(v)), c)
        if len(_CONSTS) < _CONSTS_MAX:   # bounded: a graph's constants are few
            _CONSTS[key] = hit
    return hit


# scalar_const's results (Consts are immutable) by (type, repr, value, dtype)
_CONSTS: dict[tuple, Const] = {}
_CONSTS_MAX = 4096


def conj(a: Expr | None, b: Expr | None) -> Expr | None:
    if a is None:
        return b
    if b is None:
        return a
    return Binary("logical_and", a, b)


def zero_of(d: DType) -> Const:
    return Const(False if d.is_bool else (0.0 if d.is_float else 0), d)


def cooperative_tile_load(ctx: KernelContext, builder: ScalarBuilder, stmts: list[Stmt],
                          buf: str, rows: int, cols: int, threads: int, tid: Expr,
                          value: Value, sdt: DType, coords_of: Callable) -> None:
    """Append a cooperative load of a rows x cols tile of `value` into shared `buf`.

    Thread t loads tile elements t, t + threads, ... (element e is row e // cols,
    column e % cols); `coords_of(stmts, r, c, e)` gives the element's coordinates in
    `value`, its validity (masked-off elements store zero) and its index in `buf`.
    Values are converted to `sdt`, the shared buffer's dtype."""
    from hal.kernel.ir import For, If, Store

    total = rows * cols
    it = ctx.var("l", ctx.idx)
    loop: list[Stmt] = []
    e = ctx.declare(loop, "e", ctx.add(ctx.mul(it, threads), tid))
    inner: list[Stmt] = []
    r = ctx.declare(inner, "r", ctx.div(e, cols))
    c = ctx.declare(inner, "c", ctx.mod(e, cols))
    coords, valid, sh_index = coords_of(inner, r, c, e)
    x = builder.scope(inner).value(value, coords, valid)
    x = Cast(x, sdt) if x.dtype != sdt else x
    inner.append(Store(buf, sh_index, Select(valid, x, zero_of(sdt))))
    if total % threads == 0:
        loop.extend(inner)
    else:
        loop.append(If(e.lt(ctx.c(total)), inner))
    stmts.append(For(it, ctx.c(0), ctx.c(-(-total // threads)), ctx.c(1), loop))


class _At:
    """The (coordinates, mask) part of a ScalarBuilder cache key, hashed once: coordinates
    are Expr trees, whose (dataclass) hash walks the whole tree at every dict lookup. Equal
    exactly when the (coords, mask) tuples are equal."""

    __slots__ = ("coords", "mask", "_hash")

    def __init__(self, coords: tuple, mask: Expr | None):
        self.coords, self.mask = coords, mask
        self._hash = hash((coords, mask))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other) -> bool:
        return self is other or (isinstance(other, _At) and self._hash == other._hash
                                 and (self.coords, self.mask) == (other.coords, other.mask))


class ScalarBuilder:
    """Emits the scalar program for elements of a group's values into `stmts`."""

    def __init__(self, ctx: KernelContext, nodes: Sequence[Node], stmts: list[Stmt],
                 env: Env | None = None, load_hook: LoadHook | None = None):
        self.ctx = ctx
        self.producer = {v.name: n for n in nodes for v in n.outputs}
        self.stmts = stmts
        self.env: Env = env if env is not None else {}
        self.load_hook = load_hook
        self._cache: dict[tuple[str, _At], Expr] = {}

    def scope(self, stmts: list[Stmt]) -> ScalarBuilder:
        """A builder writing into another statement list (fresh cache, same env)."""
        return ScalarBuilder(self.ctx, list(self.producer.values()), stmts, self.env,
                             self.load_hook)

    def value(self, v: Value, coords: Sequence[Expr], mask: Expr | None = None,
              at: _At | None = None) -> Expr:
        """The expression of element `coords` of `v` (`at`: _At(coords, mask), when the
        caller has it: hashing coordinates walks their trees)."""
        coords = tuple(coords)
        if v.name in self.env:
            want, e = self.env[v.name]
            if want is not None and want != coords:
                raise UnsupportedError(
                    f"value %{v.name} is needed at other coordinates than the kernel computes "
                    f"it at (e.g. a transpose or slice of a reduction/matmul result)",
                    hint="split the group before the movement op")
            return e
        if at is None:
            at = _At(coords, mask)
        key = (v.name, at)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        node = self.producer.get(v.name)
        if node is not None and _keeps_coords(node):
            self._prefetch(node, coords, mask, at)
        if node is None:
            e = self._load(v, coords, mask)
        else:
            e = self._node(node, coords, mask)
            e = rounded(e, v.dtype, self.ctx.options) if get_op(node.op).category is Category.ELEMENTWISE else e
        if not isinstance(e, (Const, Var)):
            e = self.ctx.declare(self.stmts, v.name, e)
        self._cache[key] = e
        return e

    def _prefetch(self, node: Node, coords: Coords, mask: Expr | None, at: _At) -> None:
        """Build, in dependency order and without recursion, every ancestor of `node`
        reached through ops that keep the coordinates (elementwise, select, cast), so
        that the recursive `value` of a chain of thousands of ops finds each input
        cached. Post-order over the inputs in order: the statements come out in the
        order the plain recursion would emit them. Linear in the number of nodes."""
        order: list[Value] = []
        seen: set[str] = set()
        stack: list[tuple[Node, int]] = [(node, 0)]
        while stack:
            n, i = stack.pop()
            if i < len(n.inputs):
                stack.append((n, i + 1))
                x = n.inputs[i]
                p = self.producer.get(x.name)
                if p is None or x.name in seen or x.name in self.env or \
                        (x.name, at) in self._cache or not _keeps_coords(p):
                    continue
                seen.add(x.name)
                stack.append((p, 0))
            elif n is not node:
                order.append(n.outputs[0])
        for x in order:  # each finds its inputs cached: no deep recursion
            self.value(x, coords, mask, at)

    def _load(self, v: Value, coords: Coords, mask: Expr | None) -> Expr:
        if self.load_hook is not None:
            e = self.load_hook(self, v, coords, mask)
            if e is not None:
                return e
        return to_compute(self.global_load(v, coords, mask), v.dtype)

    def global_load(self, v: Value, coords: Coords, mask: Expr | None) -> Expr:
        param = self.ctx.buffer(v, "input")
        idx = self.ctx.linear(coords, self.ctx.param_named(param).strides)
        return Load(param, idx, v.dtype, mask, zero_of(v.dtype) if mask is not None else None)

    def _node(self, node: Node, coords: Coords, mask: Expr | None) -> Expr:
        fn = EMITTERS.get(node.op)
        if fn is not None:
            return fn(self, node, coords, mask)
        cat = get_op(node.op).category
        if cat is Category.ELEMENTWISE:
            at = _At(coords, mask)   # (the inputs are read at the node's own coordinates)
            args = [self.value(x, coords, mask, at) for x in node.inputs]
            if len(args) == 1:
                return Unary(node.op, args[0])
            if len(args) == 2:
                return Binary(node.op, args[0], args[1])
        raise UnsupportedError(f"node {node.op} (%{node.outputs[0].name}) cannot be computed "
                               f"per element inside this kernel",
                               hint="put it in its own group or extend hal.lowering.expr")

    def store_index(self, v: Value, coords: Sequence[Expr]) -> tuple[str, Expr]:
        """(param, flat index) of element `coords` of output `v`."""
        param = self.ctx.buffer(v, "output")
        return param, self.ctx.linear(coords, self.ctx.param_named(param).strides)


def _keeps_coords(n: Node) -> bool:
    """Ops whose inputs are read at the output's own coordinates (and mask). A function
    of the op name and the registries, kept per op in _KEEPS (asked for every ancestor of
    every element a kernel computes); register_emitter empties it."""
    hit = _KEEPS.get(n.op)
    if hit is None:
        hit = _KEEPS[n.op] = n.op in ("select", "cast") or (
            n.op not in EMITTERS and get_op(n.op).category is Category.ELEMENTWISE)
    return hit


_KEEPS: dict[str, bool] = {}


# --------------------------------------------------------------------------- emitters


@register_emitter("select")
def _select(b: ScalarBuilder, n: Node, coords: Coords, mask: Expr | None) -> Expr:
    p, t, f = (b.value(x, coords, mask) for x in n.inputs)
    return Select(p, t, f)


@register_emitter("cast")
def _cast(b: ScalarBuilder, n: Node, coords: Coords, mask: Expr | None) -> Expr:
    x = b.value(n.inputs[0], coords, mask)
    to = n.attrs["dtype"]
    return to_compute(Cast(x, to), to)  # rounding to `to` happens here, exactly once


@register_emitter("broadcast_to")
def _broadcast(b: ScalarBuilder, n: Node, coords: Coords, mask: Expr | None) -> Expr:
    src = n.inputs[0].shape
    off = len(coords) - len(src)
    if b.ctx.options.fault("wrong_broadcast_axis") and off > 0:
        off -= 1  # self-test hook: read the source along the wrong axis
    sc = tuple(b.ctx.c(0) if d == 1 else coords[off + i] for i, d in enumerate(src))
    return b.value(n.inputs[0], sc, mask)


@register_emitter("transpose")
def _transpose(b: ScalarBuilder, n: Node, coords: Coords, mask: Expr | None) -> Expr:
    perm = n.attrs["perm"]
    if b.ctx.options.fault("swapped_transpose"):
        perm = tuple(perm.index(i) for i in range(len(perm)))  # self-test hook: inverse
    src: list[Expr] = [b.ctx.c(0)] * len(perm)
    for d, p in enumerate(perm):
        src[p] = coords[d]
    return b.value(n.inputs[0], tuple(src), mask)


def reshape_coords(ctx: KernelContext, coords: Coords, out_shape: Sequence[int],
                   in_shape: Sequence[int]) -> Coords:
    """Coordinates in `in_shape` of element `coords` of the reshaped `out_shape`."""
    if [d for d in out_shape if d != 1] == [d for d in in_shape if d != 1]:
        kept = iter([c for c, d in zip(coords, out_shape, strict=True) if d != 1])
        return tuple(ctx.c(0) if d == 1 else next(kept) for d in in_shape)
    from hal.lowering.context import contiguous_strides

    flat = ctx.linear(coords, contiguous_strides(out_shape))
    return tuple(ctx.unravel(flat, in_shape))


@register_emitter("reshape")
def _reshape(b: ScalarBuilder, n: Node, coords: Coords, mask: Expr | None) -> Expr:
    src = reshape_coords(b.ctx, coords, n.outputs[0].shape, n.inputs[0].shape)
    return b.value(n.inputs[0], src, mask)


@register_emitter("slice")
def _slice(b: ScalarBuilder, n: Node, coords: Coords, mask: Expr | None) -> Expr:
    from hal.ops.movement import slice_bounds

    src = list(coords)
    for axis, start, step, _length in slice_bounds(n.inputs[0].shape, n.attrs):
        src[axis] = b.ctx.add(b.ctx.mul(coords[axis], step), start)
    return b.value(n.inputs[0], tuple(src), mask)


def _in_range(b: ScalarBuilder, c: Expr, lo: int, hi: int) -> Expr:
    return Binary("logical_and", c.ge(b.ctx.c(lo)), c.lt(b.ctx.c(hi)))


@register_emitter("pad")
def _pad(b: ScalarBuilder, n: Node, coords: Coords, mask: Expr | None) -> Expr:
    x = n.inputs[0]
    src, valid = [], None
    for c, lo, hi, d in zip(coords, n.attrs["low"], n.attrs["high"], x.shape, strict=True):
        src.append(b.ctx.sub(c, lo))
        if lo or hi:   # an axis padded on neither side needs no bounds check
            valid = conj(valid, _in_range(b, c, lo, lo + d))
    inner = b.value(x, tuple(src), conj(mask, valid))
    fill = scalar_const(n.attrs["value"], x.dtype)
    return inner if valid is None else Select(valid, inner, fill)


@register_emitter("concat")
def _concat(b: ScalarBuilder, n: Node, coords: Coords, mask: Expr | None) -> Expr:
    axis = n.attrs["axis"] % n.outputs[0].rank
    pieces, off = [], 0
    for x in n.inputs:
        size = x.shape[axis]
        if size:
            valid = _in_range(b, coords[axis], off, off + size)
            src = list(coords)
            src[axis] = b.ctx.sub(coords[axis], off)
            pieces.append((valid, b.value(x, tuple(src), conj(mask, valid))))
        off += size
    out = pieces[-1][1]
    for valid, e in reversed(pieces[:-1]):
        out = Select(valid, e, out)
    return out


@register_emitter("iota")
def _iota(b: ScalarBuilder, n: Node, coords: Coords, mask: Expr | None) -> Expr:
    d = n.outputs[0].dtype
    c = coords[n.attrs["dimension"] % n.outputs[0].rank]
    return rounded(to_compute(Cast(c, d), d), d, b.ctx.options)


@register_emitter("full")
def _full(b: ScalarBuilder, n: Node, coords: Coords, mask: Expr | None) -> Expr:
    return scalar_const(n.attrs["value"], n.outputs[0].dtype)


@register_emitter("gather")
def _gather(b: ScalarBuilder, n: Node, coords: Coords, mask: Expr | None) -> Expr:
    table, indices = n.inputs
    axis = n.attrs["axis"] % table.rank
    k = indices.rank
    raw = b.value(indices, coords[axis:axis + k], mask)
    dim = table.shape[axis]
    idx: Expr = Cast(raw, b.ctx.idx) if raw.dtype != b.ctx.idx else raw
    # Indices must lie in [0, dim) (hal.ops.gather); clamping keeps a bad one in bounds.
    idx = Binary("minimum", Binary("maximum", idx, b.ctx.c(0)), b.ctx.c(dim - 1))
    idx = b.ctx.declare(b.stmts, "gidx", idx)
    src = (*coords[:axis], idx, *coords[axis + k:])
    return b.value(table, src, mask)


def bool_const(v: bool) -> Const:
    return Const(v, bool_)


@register_emitter("take_along_axis")
def _take_along_axis(b: ScalarBuilder, n: Node, coords: Coords, mask: Expr | None) -> Expr:
    x, indices = n.inputs
    axis = n.attrs["axis"] % x.rank
    raw = b.value(indices, coords, mask)
    dim = x.shape[axis]
    idx: Expr = Cast(raw, b.ctx.idx) if raw.dtype != b.ctx.idx else raw
    idx = b.ctx.declare(b.stmts, "tidx", Binary("minimum", Binary("maximum", idx, b.ctx.c(0)),
                                                b.ctx.c(dim - 1)))
    src = list(coords)
    src[axis] = idx
    return b.value(x, tuple(src), mask)
