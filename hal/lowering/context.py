"""KernelContext: the mutable state of one kernel while a lowering builds it.

It owns parameter naming (graph value names sanitised to C identifiers),
fresh variable names, shared/local buffer declarations, index arithmetic
helpers that fold constants (small expression trees simulate and render
faster), and the final `Kernel` with its frozen `KernelMeta` (buffers, group, the
KernelPlan it was lowered from).
"""

from __future__ import annotations

import functools
import keyword
import math
import re
from collections.abc import Sequence
from dataclasses import replace

from hal.devices.spec import DeviceSpec
from hal.dtypes import DType, i32, i64
from hal.ir.graph import Value
from hal.kernel.ir import (
    BLOCK_IDX_X,
    BLOCK_IDX_Y,
    BLOCK_IDX_Z,
    THREAD_IDX,
    Binary,
    BufferParam,
    Cast,
    Const,
    Declare,
    Expr,
    GridFold,
    Kernel,
    KernelMeta,
    LocalBuffer,
    SharedBuffer,
    Stmt,
    Var,
)
from hal.lowering.grid_limits import describe_fold, fit_grid
from hal.lowering.options import DEFAULT_OPTIONS, LoweringOptions

C_KEYWORDS = frozenset("""auto break case char const continue default do double else enum extern
float for goto if inline int long register restrict return short signed sizeof static struct
switch typedef union unsigned void volatile while bool half threadIdx blockIdx blockDim
gridDim""".split()) | frozenset(keyword.kwlist)

INT32_LIMIT = 2**31 - 1


@functools.lru_cache(maxsize=8192)   # pure; a kernel asks for the same hints many times
def c_identifier(name: str) -> str:
    s = re.sub(r"\W", "_", name)
    if not s or s[0].isdigit():
        s = "v_" + s
    if s in C_KEYWORDS:
        s += "_"
    return s


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    out, acc = [], 1
    for d in reversed(shape):
        out.append(acc)
        acc *= d
    return tuple(reversed(out))


def index_dtype_for(sizes: Sequence[int], spec: DeviceSpec) -> DType:
    """i32 unless some extent reaches 2^31 (or the spec asks for 64-bit indexing)."""
    if spec.index_bits == 64 or any(s >= INT32_LIMIT for s in sizes):
        return i64
    return i32


class KernelContext:
    """Collects a kernel's parameters, buffers and fresh names."""

    def __init__(self, name: str, spec: DeviceSpec, index_dtype: DType = i32,
                 options: LoweringOptions = DEFAULT_OPTIONS):
        self.name = c_identifier(name)
        self.spec = spec
        self.options = options
        self.idx = index_dtype
        self.params: list[BufferParam] = []
        self._first_param: dict[str, BufferParam] = {}   # name -> its first param (param_named)
        self.param_of: dict[str, str] = {}   # value name -> param name
        self.roles: dict[str, str] = {}      # param name -> "input" | "output" | "scratch"
        self.scratch: dict[str, tuple[str, int]] = {}
        self.shared: list[SharedBuffer] = []
        self.locals: list[LocalBuffer] = []
        self._taken: set[str] = set()
        self._counter = 0
        # index constants by value: Consts are immutable, so one object per value serves
        # every use in the kernel (a lowering asks for the same few thousands of times)
        self._consts: dict[int, Const] = {}

    # -- names ---------------------------------------------------------------
    def unique(self, hint: str) -> str:
        base = c_identifier(hint)
        name, k = base, 0
        while name in self._taken:
            k += 1
            name = f"{base}_{k}"
        self._taken.add(name)
        return name

    def var(self, hint: str, dtype: DType) -> Var:
        self._counter += 1
        return Var(f"{c_identifier(hint)}_{self._counter}", dtype)

    def declare(self, stmts: list[Stmt], hint: str, value: Expr) -> Var:
        v = self.var(hint, value.dtype)
        stmts.append(Declare(v, value))
        return v

    # -- buffers -------------------------------------------------------------
    def buffer(self, value: Value, role: str = "input") -> str:
        """The global buffer param holding `value` (created on first use)."""
        if value.name in self.param_of:
            p = self.param_of[value.name]
            if role == "output" and self.roles[p] == "input":
                raise ValueError(f"{value.name} is both read and written")
            return p
        p = self.unique(value.name)
        shape = tuple(value.shape)
        self._add_param(BufferParam(p, value.dtype, shape, contiguous_strides(shape),
                                    readonly=(role == "input")))
        self.param_of[value.name] = p
        self.roles[p] = role
        return p

    def _add_param(self, p: BufferParam) -> None:
        self.params.append(p)
        self._first_param.setdefault(p.name, p)

    def param_named(self, name: str) -> BufferParam:
        """The first buffer param called `name` (as params[names.index(name)]; a dict
        probe: the tile loads of a matrix-unit lowering ask thousands of times)."""
        return self._first_param[name]

    def scratch_buffer(self, hint: str, dtype: DType, numel: int, *, readonly: bool) -> str:
        """A temporary global buffer the backend allocates per group (shared by its kernels)."""
        p = hint if hint in self.scratch else self.unique(hint)
        self._add_param(BufferParam(p, dtype, (numel,), (1,), readonly=readonly))
        self.roles[p] = "scratch"
        self.scratch[p] = (dtype.name, numel)
        return p

    def shared_buffer(self, hint: str, dtype: DType, size: int) -> str:
        name = self.unique(hint)
        self.shared.append(SharedBuffer(name, dtype, size))
        return name

    def local_buffer(self, hint: str, dtype: DType, size: int) -> str:
        name = self.unique(hint)
        self.locals.append(LocalBuffer(name, dtype, size))
        return name

    # -- index arithmetic ----------------------------------------------------
    def tid(self) -> Expr:
        return THREAD_IDX if self.idx == i32 else Cast(THREAD_IDX, self.idx)

    def bid(self, axis: str = "x") -> Expr:
        s = {"x": BLOCK_IDX_X, "y": BLOCK_IDX_Y, "z": BLOCK_IDX_Z}[axis]
        return s if self.idx == i32 else Cast(s, self.idx)

    def c(self, v: int) -> Const:
        v = int(v)
        hit = self._consts.get(v)
        if hit is None:
            hit = self._consts[v] = Const(v, self.idx)
        return hit

    def add(self, a: Expr, b: Expr | int) -> Expr:
        b = self.c(b) if isinstance(b, int) else b
        if isinstance(b, Const) and b.value == 0:
            return a
        if isinstance(a, Const) and a.value == 0:
            return b
        if isinstance(a, Const) and isinstance(b, Const):
            return self.c(a.value + b.value)
        return Binary("add", a, b)

    def sub(self, a: Expr, b: int) -> Expr:
        return self.add(a, -b) if b else a

    def mul(self, a: Expr, k: int) -> Expr:
        if k == 0:
            return self.c(0)
        if k == 1:
            return a
        if isinstance(a, Const):
            return self.c(a.value * k)
        return Binary("mul", a, self.c(k))

    def div(self, a: Expr, k: int) -> Expr:
        if k == 1:
            return a
        if isinstance(a, Const):
            return self.c(a.value // k)
        return Binary("div", a, self.c(k))

    def mod(self, a: Expr, k: int) -> Expr:
        if k == 1:
            return self.c(0)
        if isinstance(a, Const):
            return self.c(a.value % k)
        return Binary("remainder", a, self.c(k))

    def unravel(self, flat: Expr, shape: Sequence[int]) -> list[Expr]:
        """Row-major coordinates of `flat` in `shape` (size-1 dims give constant 0)."""
        coords: list[Expr] = []
        inner = math.prod(shape)
        for d in shape:
            inner //= max(d, 1)
            if self.options.fault("unravel_wrong_extent") and len(shape) >= 3 and coords:
                d = d + 1 if d > 1 else d  # self-test hook: modulo by the wrong extent
            coords.append(self.c(0) if d == 1 else self.mod(self.div(flat, inner), d)
                          if coords else self.div(flat, inner))
        return coords

    def linear(self, coords: Sequence[Expr], strides: Sequence[int]) -> Expr:
        out: Expr = self.c(0)
        for c, s in zip(coords, strides, strict=True):
            out = self.add(out, self.mul(c, s))
        return out

    # -- result --------------------------------------------------------------
    def kernel(self, body: list[Stmt], grid: tuple[int, int, int], block: int,
               group, plan=None, stage: str = "") -> Kernel:
        """The finished Kernel of `group`, lowered from `plan` (a KernelPlan), launch `stage`."""
        order = {"input": 0, "scratch": 1, "output": 2}
        params = sorted(self.params, key=lambda p: order[self.roles[p.name]])
        value_of = {p: v for v, p in self.param_of.items()}
        meta = KernelMeta(
            group=group.name, ops=tuple(group.ops),
            inputs=tuple(value_of[p.name] for p in params if self.roles[p.name] == "input"),
            outputs=tuple(value_of[p.name] for p in params if self.roles[p.name] == "output"),
            buffers={p.name: value_of.get(p.name, p.name) for p in params},
            scratch=dict(self.scratch), plan=plan, stage=stage)
        # grid axes y and z are limited (65535 on CUDA): fold an over-long grid into x
        limits = self.spec.max_grid
        body, launch_grid, folded = fit_grid(self.name, body, grid, limits)
        if folded:
            meta = replace(meta, grid_folded=GridFold(tuple(grid), describe_fold(grid, limits)))
        return Kernel(self.name, list(params), body, launch_grid, block, list(self.shared),
                      list(self.locals), self.idx, self.spec.warp_size, meta)
