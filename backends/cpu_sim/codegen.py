"""Translate a kernel IR `Kernel` once into Python source over lane arrays: `compile_kernel`.

The generated function `run(W, P)` executes one wave (see lanes.Wave). Control flow:
* an expression is *uniform* when it is the same for every lane of the wave
  (constants, scalar params, variables only ever given uniform values outside
  divergent code); uniform values are Python/NumPy scalars;
* `If` on a uniform condition and `For` with uniform bounds become plain Python
  `if` / `for ... in range(...)`: no mask work at all;
* otherwise `If` narrows the active mask and `For` loops while any active lane
  has `var < stop`, each iteration under the mask of lanes still looping.
  Assignments under a mask merge (`np.where`). Loop bounds are evaluated once
  at loop entry (the verifier rejects a loop that assigns its own variable).

Arithmetic: each Unary/Binary calls the op's registered `scalar` (hal.ops; its
NumPy body, without the error-state wrapper: the simulator silences FP warnings
once per launch). f32/f64 compute in their own NumPy type; f16/bf16/fp8
expressions compute in float32 and are rounded to their dtype after every op
(hal.dtypes.cast), as C++ __half/__nv_bfloat16 operators do. Integers compute
exactly in int64; i32 add/sub/mul/neg/abs/div/pow/shift_left results go through
`W.i32`, which raises index_overflow (check=True) or wraps like the hardware;
i32 arithmetic on data (values loaded from memory) always wraps.

Beside it: facts.py (`_Facts`: which expressions are uniform, which are data, flops),
stmt_context.py (`_Ctx`, statement headlines), async_emit.py (the emitters of Hopper's
asynchronous and cluster nodes, a base class of `_Translator`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hal.dtypes import DType, cast
from hal.kernel import ir_async as ira
from hal.kernel import ir_cluster as irc
from hal.kernel.ir import (
    Assign,
    AtomicAdd,
    Barrier,
    Binary,
    BufferParam,
    Cast,
    Comment,
    Const,
    CpAsyncCommit,
    CpAsyncWait,
    Declare,
    Expr,
    For,
    If,
    Kernel,
    LdMatrix,
    Load,
    LocalBuffer,
    Mma,
    Param,
    ScalarParam,
    Select,
    SharedBuffer,
    Shuffle,
    Special,
    Stmt,
    Store,
    Unary,
    Var,
    VecCopy,
    children,
    stmt_exprs,
    walk_expr,
    walk_stmts,
)
from hal.kernel.printer import format_expr
from hal.ops import get_op

from . import cluster_sim, faults, mma_batch, mma_sim, roll, wgmma_sim, widen
from .async_emit import AsyncEmit
from .checks import SimulationError
from .code_cache import compile_wave
from .contract import Reduction
from .facts import _Facts
from .lanes import div_by_const, fast_to_rep, rem_by_const, rep_dtype, to_rep
from .ranges import IndexRanges
from .stmt_context import _Ctx, _Text, headline_text
from .vectorize import emit_reduction_loop, int_args, match_reduction_loop

# i32 results that can leave the i32 range; the others (remainder, min, max, bitwise,
# comparisons) stay inside it, so they need neither a check nor a wrap.
CHECKED_I32_OPS = frozenset({"add", "sub", "mul", "neg", "abs", "div", "pow", "shift_left"})
_BY_CONST = {"div": div_by_const, "remainder": rem_by_const}
SPECIAL_LOCALS = {"thread_idx": "_tid", "block_idx_x": "_bx", "block_idx_y": "_by",
                  "block_idx_z": "_bz"}
# straight-line runs of ldmatrix/mma statements run as one batched call (mma_batch.py);
# False issues every statement on its own (the reference the tests compare against)
BATCH_MMA_RUNS = True
# runs of equal statement groups are emitted as one loop over a table (roll.py); False
# emits every group (the reference the tests compare against)
ROLL_RUNS = True


@dataclass
class CompiledKernel:
    """The translated kernel: the wave function, its source, and the tables it indexes."""

    run: Callable[..., None]
    source: str
    globals_: list[BufferParam]
    scalars: list[ScalarParam]
    shared: list[SharedBuffer]
    locals_: list[LocalBuffer]
    sites: list[tuple[str, str | None, str]]   # (statement text, buffer, expression text)
    flop_dtypes: list[str]
    var_names: dict[str, str] = field(default_factory=dict)   # IR variable -> its name in source


def scalar_fn(op: str) -> Callable[..., Any]:
    fn = get_op(op).scalar
    return getattr(fn, "__wrapped__", fn)


def count_flops(e: Expr, acc: Counter) -> Counter:
    if isinstance(e, (Unary, Binary)) and e.dtype.is_float:
        acc[e.dtype.name] += 1
    for c in children(e):
        count_flops(c, acc)
    return acc


# an integer or bool constant's literal by `_Translator.const`'s key: a pure function of
# the value and dtype, kept across translations (hal.dtypes.cast per constant was a
# twentieth of a translation); bounded, cleared when full
_LITERALS: dict[tuple, str] = {}
LITERALS_SIZE = 8192


def _literal(key: tuple, value: Any, dt: DType) -> str:
    hit = _LITERALS.get(key)
    if hit is None:
        hit = repr(int(cast(value, dt))) if dt.is_int else repr(bool(value))
        if len(_LITERALS) >= LITERALS_SIZE:
            _LITERALS.clear()
        _LITERALS[key] = hit
    return hit


class _Translator(AsyncEmit):
    options = None   # LoweringOptions of a self-test run (compile_kernel sets it)

    def __init__(self, kernel: Kernel):
        self.k = kernel
        self.lines: list[str] = []
        self.ns: dict[str, Any] = {"np": np, "MX": mma_sim, "WG": wgmma_sim, "MB": mma_batch,
                                   "CL": cluster_sim, "WD": widen,
                                   "SimulationError": SimulationError}
        self.prelude: list[str] = []    # functions of run(): widened loop bodies (widen.py)
        self.widening = False           # translating a widened loop body
        self.var_uses = None            # widen.names of the kernel, on first use
        self.sites: list[tuple[str, str | None, str]] = []
        self.flop_dtypes: list[str] = []
        self.var_names: dict[str, str] = {}
        self._var_of: dict[str, str] = {}    # python name -> variable name (roll.py)
        self.consts: dict[tuple, str] = {}   # (dtype, type, repr) -> its literal or name
        self.n_tmp = 0
        self.temps: dict[str, int] = {}    # the names tmp() gave -> their n_tmp
        stmts = list(walk_stmts(kernel.body))   # (one walk shared by the questions below)
        self.facts = _Facts(kernel.body)   # uniformity, dataflow, flops
        # i32 math that cannot overflow
        self.ranges = IndexRanges(kernel, self.facts.uniform, stmts, self.facts.dtype)
        self.globals_ = [p for p in kernel.params if isinstance(p, BufferParam)]
        self.scalars = [p for p in kernel.params if isinstance(p, ScalarParam)]
        self.slot: dict[str, tuple[str, int]] = {}
        for i, p in enumerate(self.globals_):
            self.slot[p.name] = ("g", i)
        for i, s in enumerate(kernel.shared):
            self.slot[s.name] = ("s", i)
        for i, loc in enumerate(kernel.locals):
            self.slot[loc.name] = ("l", i)
        self.global_or_shared = {p.name for p in self.globals_} | {b.name for b in kernel.shared}
        self.local_names = {b.name for b in kernel.locals}
        self.ns["_Reduction"] = Reduction
        # Hopper nodes (hal.kernel.ir_async): wgmma_sim keeps their state per wave
        self.hopper = any(isinstance(s, ira.ASYNC_STMTS) for s in stmts)
        # thread-block clusters (hal.kernel.ir_cluster): cluster_sim's state per wave
        self.clustered = irc.cluster_size(kernel.cluster) > 1 or any(
            isinstance(s, irc.CLUSTER_STMTS) for s in stmts)
        self.hopper = self.hopper or self.clustered
        self.wgmma_accs = {s.acc for s in stmts if isinstance(s, ira.Wgmma)}

    # ----------------------------------------------------------------- helpers
    def fresh(self, prefix: str) -> str:
        """A new name (of a value in the namespace, a function of the prelude, ...)."""
        self.n_tmp += 1
        return f"{prefix}{self.n_tmp}"

    def tmp(self, prefix: str) -> str:
        """A new temporary: assigned and read by the code of one statement only (roll.py
        renames those of repeated statement groups)."""
        name = self.fresh(prefix)
        self.temps[name] = self.n_tmp
        return name

    def bind(self, value: Any, prefix: str = "_k") -> str:
        name = self.fresh(prefix)
        self.ns[name] = value
        return name

    def var(self, v: Var) -> str:
        # Numbered by first use, without the IR name: kernels that differ only in their
        # variables' names generate the same source and share one compile() (code_cache;
        # a quarter of the conformance suite's compiles). CompiledKernel.var_names maps back.
        name = self.var_names.get(v.name)
        if name is None:
            name = self.var_names[v.name] = f"v{len(self.var_names)}"
        return name

    def python_to_var(self) -> dict[str, str]:
        """The variable name of each generated `v_...` name (`var`'s inverse)."""
        if len(self._var_of) != len(self.var_names):
            self._var_of = {py: name for name, py in self.var_names.items()}
        return self._var_of

    def site(self, ctx: _Ctx, buffer: str | None, expr: str = "") -> int:
        self.sites.append((ctx.stmt, buffer, expr))
        return len(self.sites) - 1

    def const(self, value: Any, dt: DType) -> str:
        t = type(value)
        # an int or bool is its own key; a float's repr keeps -0.0 apart from 0.0
        key = (dt.name, t, value) if t is int or t is bool else (dt.name, t, repr(value))
        hit = self.consts.get(key)
        if hit is None:
            if dt.is_int or dt.is_bool:
                hit = _literal(key, value, dt)
            else:
                hit = self.bind(to_rep(value, dt)[()])
            self.consts[key] = hit
        return hit

    def zero(self, dt: DType) -> str:
        return self.const(0, dt)

    def op(self, name: str) -> str:
        key = f"_f_{name}"
        if key not in self.ns:
            self.ns[key] = scalar_fn(name) if self.options is None else \
                faults.faulty_scalar(name, scalar_fn(name), self.options)  # self-test hook
        return key

    def rounder(self, dt: DType) -> str:
        key = f"_rnd_{dt.name}"
        if key not in self.ns:
            self.ns[key] = (self.options and faults.faulty_rounding(dt, self.options)) or \
                fast_to_rep(dt)  # (self-test hook)
        return key

    def caster(self, dt: DType) -> str:
        key = f"_cast_{dt.name}"
        if key not in self.ns:
            self.ns[key] = (self.options and faults.faulty_rounding(dt, self.options)) or \
                fast_to_rep(dt)  # (self-test hook)
        return key

    # ----------------------------------------------------------------- expressions
    def expr(self, e: Expr, ctx: _Ctx) -> str:
        return _EMIT_EXPR[type(e)](self, e, ctx)

    def e_Const(self, e: Const, ctx: _Ctx) -> str:
        return self.const(e.value, e.dtype)

    def e_Var(self, e: Var, ctx: _Ctx) -> str:
        return self.var(e)

    def e_Param(self, e: Param, ctx: _Ctx) -> str:
        return "p_" + re.sub(r"\W", "_", e.name)

    def e_Special(self, e: Special, ctx: _Ctx) -> str:
        return SPECIAL_LOCALS[e.kind]

    def _arith(self, e: Unary | Binary, args: list[str], ctx: _Ctx) -> str:
        code = f"{self.op(e.op)}({', '.join(args)})"
        rd = self.facts.dtype(e)   # (e.dtype would walk down the operand chain)
        if isinstance(e, Binary) and e.op in _BY_CONST and rd.is_int \
                and isinstance(e.b, Const) and int(e.b.value) > 0:
            # index math by a positive constant: one NumPy pass instead of the general rule
            self.ns.setdefault(f"_{e.op}_c", _BY_CONST[e.op])
            code = f"_{e.op}_c({args[0]}, {int(e.b.value)})"
        if rd.is_float and rd.bits < 32:
            code = f"{self.rounder(rd)}({code})"
        elif rd.is_int:
            if rd.bits == 32 and rd.kind == "int" and e.op in CHECKED_I32_OPS \
                    and not self.facts.is_data(e) and not self.ranges.fits_i32(e):
                site = self.site(ctx, ctx.buffer, _Text(format_expr, e))
                code = f"W.i32({code}, {ctx.mask}, {site})"
            elif rd.bits < 32 or rd.kind == "uint":
                code = f"{self.rounder(rd)}({code})"
        return code

    def e_Unary(self, e: Unary, ctx: _Ctx) -> str:
        return self._arith(e, [self.expr(e.x, ctx)], ctx)

    def e_Binary(self, e: Binary, ctx: _Ctx) -> str:
        return self._arith(e, [self.expr(e.a, ctx), self.expr(e.b, ctx)], ctx)

    def e_Select(self, e: Select, ctx: _Ctx) -> str:
        args = [self.expr(x, ctx) for x in (e.pred, e.on_true, e.on_false)]
        return f"{self.op('select')}({', '.join(args)})"

    def e_Cast(self, e: Cast, ctx: _Ctx) -> str:
        src, dt = e.x.dtype, e.dtype
        if dt.name == "f32" and src.is_float and src.bits < 32:
            return self.expr(e.x, ctx)   # narrow floats are held in float32: exact already
        if dt.is_float and dt.bits < 32 and isinstance(e.x, Cast) and e.x.x.dtype == dt \
                and src.name in ("f32", "f64"):
            return self.expr(e.x.x, ctx)  # T -> f32/f64 -> T: the T value itself
        x = self.expr(e.x, ctx)
        if e.x.dtype == e.dtype:
            return x
        return f"{self.caster(e.dtype)}({x})"

    def e_Load(self, e: Load, ctx: _Ctx) -> str:
        space, slot = self.slot[e.buffer]
        ictx = _Ctx(ctx.mask, ctx.count, e.buffer, ctx.stmt, ctx.site)
        idx = self.expr(e.index, ictx)
        mask = "None" if e.mask is None else self.expr(e.mask, ctx)
        other = self.expr(e.other, ctx) if e.other is not None else self.zero(e.dtype)
        site = self.site(ctx, e.buffer, _Text(format_expr, e))
        return f"W.ld{space}({slot}, {idx}, {mask}, {other}, {ctx.mask}, {site})"

    def e_Shuffle(self, e: Shuffle, ctx: _Ctx) -> str:
        x, off = self.expr(e.x, ctx), self.expr(e.offset, ctx)
        site = self.site(ctx, None, _Text(format_expr, e))
        return f"W.shfl({x}, {e.mode!r}, {off}, {e.width}, {ctx.mask}, {site})"

    # ----------------------------------------------------------------- statements
    def emit(self, line: str, depth: int) -> None:
        self.lines.append("    " * depth + line)

    def body(self, stmts: list[Stmt], ctx: _Ctx, depth: int) -> None:
        start = len(self.lines)
        chunks = []   # roll.Chunk of each statement or batched run (plain tuples: cheap)
        i = 0
        while i < len(stmts):
            first, first_tmp = len(self.lines), self.n_tmp
            end = mma_batch.run_end(stmts, i) if BATCH_MMA_RUNS else i
            if end > i:
                mma_batch.emit_run(self, stmts[i:end], ctx, depth)
            else:
                self.stmt(stmts[i], ctx, depth)
                end = i + 1
            chunks.append((stmts[i], stmts[end - 1], first, len(self.lines), first_tmp,
                           self.n_tmp))
            i = end
        if ROLL_RUNS and not self.widening:   # (a widened body: other facts, own names)
            roll.roll_body(self, chunks, depth)
        if len(self.lines) == start:
            self.emit("pass", depth)

    def count_stmt_flops(self, s: Stmt, ctx: _Ctx, depth: int) -> None:
        for dt, n in self.facts.stmt_flops(s):
            if dt not in self.flop_dtypes:
                self.flop_dtypes.append(dt)
            self.emit(f"_fl[{self.flop_dtypes.index(dt)}] += {n} * {ctx.count}", depth)

    def stmt(self, s: Stmt, outer: _Ctx, depth: int) -> None:
        ctx = _Ctx(outer.mask, outer.count, None, headline_text(s))
        self.count_stmt_flops(s, ctx, depth)
        if self.wgmma_accs:   # reading a wgmma accumulator: its wait_group must have run
            for name in sorted({x.buffer for e in stmt_exprs(s) for x in walk_expr(e)
                                if isinstance(x, Load) and x.buffer in self.wgmma_accs}):
                self.emit(f"WG.check_acc(W, _hs, {self.slot[name][1]}, {ctx.mask}, "
                          f"{self.site(ctx, name)})", depth)
        _EMIT_STMT[type(s)](self, s, ctx, depth)

    def s_Comment(self, s: Comment, ctx: _Ctx, depth: int) -> None:
        pass

    def s_Declare(self, s: Declare, ctx: _Ctx, depth: int) -> None:
        init = self.expr(s.init, ctx) if s.init is not None else self.zero(s.var.dtype)
        self.emit(f"{self.var(s.var)} = {init}", depth)

    def s_Assign(self, s: Assign, ctx: _Ctx, depth: int) -> None:
        v, val = self.var(s.var), self.expr(s.value, ctx)
        if ctx.mask == "None":
            self.emit(f"{v} = {val}", depth)
        else:
            self.emit(f"{v} = W.merge({ctx.mask}, {val}, {v})", depth)

    def _access(self, s: Store | AtomicAdd, ctx: _Ctx, depth: int, kind: str) -> None:
        space, slot = self.slot[s.buffer]
        ictx = _Ctx(ctx.mask, ctx.count, s.buffer, ctx.stmt)
        idx = self.expr(s.index, ictx)
        val = self.expr(s.value, ctx)
        mask = "None" if s.mask is None else self.expr(s.mask, ctx)
        site = self.site(ctx, s.buffer, ctx.stmt)
        fn = f"st{space}" if kind == "store" else f"atomic_{space}"
        self.emit(f"W.{fn}({slot}, {idx}, {val}, {mask}, {ctx.mask}, {site})", depth)

    def s_Store(self, s: Store, ctx: _Ctx, depth: int) -> None:
        self._access(s, ctx, depth, "store")

    def s_AtomicAdd(self, s: AtomicAdd, ctx: _Ctx, depth: int) -> None:
        self._access(s, ctx, depth, "atomic")

    def s_Barrier(self, s: Barrier, ctx: _Ctx, depth: int) -> None:
        self.emit(f"W.barrier({ctx.mask}, {self.site(ctx, None)})", depth)

    # matrix units and pipelines: backends/cpu_sim/mma_sim.py runs them
    def s_Mma(self, s: Mma, ctx: _Ctx, depth: int) -> None:
        slot = {b: self.slot[b][1] for b in (s.d, s.a, s.b, s.c)}
        self.emit(f"MX.mma(W, {s.layout!r}, {slot[s.d]}, {s.d_off}, {slot[s.a]}, {s.a_off}, "
                  f"{slot[s.b]}, {s.b_off}, {slot[s.c]}, {s.c_off}, {ctx.mask}, "
                  f"{self.site(ctx, None)})", depth)

    def s_LdMatrix(self, s: LdMatrix, ctx: _Ctx, depth: int) -> None:
        addr = self.expr(s.addr, _Ctx(ctx.mask, ctx.count, s.buffer, ctx.stmt))
        self.emit(f"MX.ldmatrix(W, {self.slot[s.frag][1]}, {s.offset}, {self.slot[s.buffer][1]}"
                  f", {addr}, {s.count}, {s.trans}, {ctx.mask}, {self.site(ctx, s.buffer)})",
                  depth)

    def s_VecCopy(self, s: VecCopy, ctx: _Ctx, depth: int) -> None:
        di = self.expr(s.dst_index, _Ctx(ctx.mask, ctx.count, s.dst, ctx.stmt))
        si = self.expr(s.src_index, _Ctx(ctx.mask, ctx.count, s.src, ctx.stmt))
        mask = "None" if s.mask is None else self.expr(s.mask, ctx)
        self.emit(f"MX.vcopy(W, {self.slot[s.dst]!r}, {di}, {self.slot[s.src]!r}, {si}, "
                  f"{s.width}, {mask}, {s.asynchronous}, {ctx.mask}, "
                  f"{self.site(ctx, s.dst)})", depth)

    def s_CpAsyncCommit(self, s: CpAsyncCommit, ctx: _Ctx, depth: int) -> None:
        self.emit(f"MX.cp_commit(W, {ctx.mask})", depth)

    def s_CpAsyncWait(self, s: CpAsyncWait, ctx: _Ctx, depth: int) -> None:
        self.emit(f"MX.cp_wait(W, {s.pending}, {ctx.mask})", depth)

    def s_If(self, s: If, ctx: _Ctx, depth: int) -> None:
        cond = self.expr(s.cond, ctx)
        if self.facts.uniform(s.cond):
            self.emit(f"if {cond}:", depth)
            self.body(s.then, ctx, depth + 1)
            if s.orelse:
                self.emit("else:", depth)
                self.body(s.orelse, ctx, depth + 1)
            return
        c = self.tmp("_c")
        self.emit(f"{c} = {cond}", depth)
        for branch, narrow in ((s.then, "narrow"), (s.orelse, "narrow_not")):
            if not branch:
                continue
            m, n = self.tmp("_m"), self.tmp("_n")
            self.emit(f"{m}, {n} = W.{narrow}({ctx.mask}, {c})", depth)
            self.emit(f"if {n}:", depth)
            self.body(branch, _Ctx(m, n), depth + 1)

    def s_For(self, s: For, ctx: _Ctx, depth: int) -> None:
        v = self.var(s.var)
        start, stop, step = (self.expr(x, ctx) for x in (s.start, s.stop, s.step))
        if all(self.facts.uniform(x) for x in (s.start, s.stop, s.step)):
            plan = match_reduction_loop(s, self.global_or_shared, self.local_names)
            if plan is not None:  # a multiply-accumulate loop: also emit its contraction form
                emit_reduction_loop(self, s, plan, ctx, depth)
                return
            if self.var_uses is None and not (self.widening or self.clustered):
                self.var_uses = self.facts.var_uses   # (widen.names of the kernel)
            stores = None if self.widening or self.clustered else widen.widenable(
                s, self.var_uses, self.global_or_shared, self.local_names)
            if stores is not None:   # independent iterations: also emit the wide pass
                widen.emit_widened_loop(self, s, stores, ctx, (start, stop, step), depth)
                return
            self.emit(f"for {v} in range({int_args(start, stop, step)}):", depth)
            self.body(s.body, ctx, depth + 1)
            return
        e, st, m, n = self.tmp("_e"), self.tmp("_s"), self.tmp("_m"), self.tmp("_n")
        self.emit(f"{v} = W.lanes_int({start})", depth)
        self.emit(f"{e}, {st} = {stop}, {step}", depth)
        self.emit("while True:", depth)
        self.emit(f"{m}, {n} = W.narrow({ctx.mask}, {v} < {e})", depth + 1)
        self.emit(f"if not {n}:", depth + 1)
        self.emit("break", depth + 2)
        self.body(s.body, _Ctx(m, n), depth + 1)
        inc = f"{v} + {st}"
        if s.var.dtype.bits == 32:
            inc = f"W.i32({inc}, {m}, {self.site(ctx, None, s.var.name + ' += step')})"
        self.emit(f"{v} = {inc}", depth + 1)

    # ----------------------------------------------------------------- whole kernel
    def translate(self) -> CompiledKernel:
        head = ["def run(W, P):"]
        for p in self.scalars:
            head.append(f"    p_{re.sub(r'[^0-9a-zA-Z_]', '_', p.name)} = P[{p.name!r}]")
        if self.hopper:
            bars, slot = {}, 0
            for j, sb in enumerate(self.k.shared):
                if sb.dtype.name == "i64":   # mbarrier words
                    bars[j], slot = slot, slot + sb.size
            head.append(f"    _hs = WG.state(W, {self.k.shared_offsets()!r}, {bars!r})")
        if self.clustered:
            head.append(f"    _cs = CL.state(W, _hs, {tuple(self.k.cluster)!r})")
        self.lines = []
        self.body(self.k.body, _Ctx(), 1)
        if self.clustered:   # the CTAs exit: peers' operations into them must be ordered
            end = self.site(_Ctx(stmt="(kernel exit)"), None)
            self.lines.append(f"    CL.exit_check(W, _hs, _cs, {end})")
        code_text = "\n".join(["    " + x for x in self.prelude] + self.lines)
        wave = _wave_locals(code_text)
        source = "\n".join(head[:1] + wave + head[1:]) + "\n" + code_text + "\n"
        code = compile_wave(source, f"<cpu_sim kernel {self.k.name}>")
        exec(code, self.ns)  # noqa: S102 - our own generated source
        return CompiledKernel(self.ns["run"], source, self.globals_, self.scalars,
                              list(self.k.shared), list(self.k.locals), self.sites,
                              self.flop_dtypes, self.var_names)


# The wave's fields the generated code reads as locals of run(). Only those its text
# names are set: each local costs compile() time (the five of the full set were a seventh
# of compile() over the conformance suite) and most kernels read two or three of them.
# A name found inside a longer word keeps its line: harmless.
WAVE_LOCALS = (("_L", "W.L"), ("_fl", "W.fl"), ("_tid", "W.tid"), ("_bx", "W.bx"),
               ("_by", "W.by"), ("_bz", "W.bz"))


def _wave_locals(code_text: str) -> list[str]:
    """The line setting the locals of WAVE_LOCALS that `code_text` reads (or none)."""
    used = [f"{name} = {field}" for name, field in WAVE_LOCALS if name in code_text]
    return ["    " + "; ".join(used)] if used else []


class _Emitters(dict):
    """node type -> the `_Translator` method named prefix + the type's name, looked up
    on first use (a dict probe per node instead of building a name and a bound method)."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def __missing__(self, t: type) -> Callable[..., Any]:
        fn = self[t] = getattr(_Translator, self.prefix + t.__name__)
        return fn


_EMIT_EXPR = _Emitters("e_")
_EMIT_STMT = _Emitters("s_")


def compile_kernel(kernel: Kernel, options=None) -> CompiledKernel:
    """Translate `kernel` (assumed verified) into a wave function (`options`: the
    LoweringOptions of a self-test run, for the planted simulator faults in .faults)."""
    t = _Translator(kernel)
    t.options = options
    return t.translate()


def param_value(value: Any, dt: DType) -> Any:
    """A scalar argument in the simulator's representation (a NumPy/Python scalar)."""
    if dt.is_int:
        return int(cast(value, dt))
    if dt.is_bool:
        return bool(value)
    return to_rep(value, dt)[()]


__all__ = ["CompiledKernel", "compile_kernel", "param_value", "rep_dtype", "stmt_exprs",
           "count_flops"]
