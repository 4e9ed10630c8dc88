"""One C-style renderer for the kernel IR: `CStyleRenderer`, subclassed per vendor by data.

CUDA (hal.backends.cuda.render) and HIP (hal.backends.rocm.render) differ only in class
attributes: headers, type names of f16/bf16/fp8 and their conversions, index spellings,
shuffle spellings, launch bounds, the static shared-memory limit and the kernel prefix.
Everything else (expressions, statements, the op table, casts) is written once here.

Rules the C text follows (hal.dtypes, hal.ops.elementwise):
* 16- and 8-bit floats are stored in their vendor type and every op on them computes in
  f32 and rounds back once (as the simulator does); fp8 conversions saturate (satfinite);
* float -> int truncates, saturates and maps NaN to 0 (`hal_f2i_T`); int -> int wraps;
* maximum/minimum propagate NaN, remainder is fmod, integer div/rem by 0 give 0, round is
  rint (ties to even), sigmoid is 1/(1+exp(-x)); no fast-math anywhere;
* index math uses the dtypes the IR carries (i64 when kernel.index_dtype is i64).

The op table `OP_SPELLINGS` is the extension point: one entry per elementwise op name.

Matrix units and pipelines (hal.kernel.mma documents the helper names and signatures):
`Mma`, `LdMatrix`, `VecCopy` and the cp.async commit/wait statements are emitted as calls
to small named device helpers that a vendor renderer defines in `matrix_helpers` (inline
PTX for CUDA, `__builtin_amdgcn_mfma_*` for HIP). Only the helpers a module uses are
emitted, inside `#ifndef HAL_HOST_SHIM`, so a host build of the same text can define
them itself. A statement whose helper the vendor lacks is a clear UnsupportedError.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from hal.devices.spec import DeviceSpec
from hal.dtypes import DType, f32, f64
from hal.errors import UnsupportedError
from hal.kernel.ir import (
    COMPARISONS,
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
    Mma,
    Param,
    ScalarParam,
    Select,
    Shuffle,
    Special,
    Stmt,
    Store,
    Unary,
    Var,
    VecCopy,
    stmt_bodies,
    stmt_exprs,
    walk_expr,
    walk_stmts,
)
from hal.kernel.mma import get_layout, helper_name
from hal.render.helpers import Helpers, compute_type


@dataclass(frozen=True)
class OpSpelling:
    """C templates for one op, by operand kind. `{a}`, `{b}`, `{x}`: operands; `{f}`: the
    libm suffix ("f" for f32, "" for f64); `{t}`: the hal dtype name (helper suffix);
    `{one}`: 1 in the operand type. `helper`: the helper kind the template calls."""

    float: str | None = None
    int: str | None = None
    bool: str | None = None
    helper_float: str | None = None
    helper_int: str | None = None


def _libm(name: str) -> OpSpelling:
    return OpSpelling(float=name + "{f}({x})")


def _infix(op: str, bools: bool = False) -> OpSpelling:
    t = "({a} " + op + " {b})"
    return OpSpelling(float=t, int=t, bool=t if bools else None)


OP_SPELLINGS: dict[str, OpSpelling] = {
    # unary
    "neg": OpSpelling(float="(-{x})", int="(-{x})"),
    "abs": OpSpelling(float="fabs{f}({x})", int="hal_abs_{t}({x})", helper_int="abs"),
    "exp": _libm("exp"), "exp2": _libm("exp2"), "log": _libm("log"), "log2": _libm("log2"),
    "log1p": _libm("log1p"), "expm1": _libm("expm1"), "sqrt": _libm("sqrt"),
    "rsqrt": _libm("rsqrt"), "tanh": _libm("tanh"), "erf": _libm("erf"), "sin": _libm("sin"),
    "cos": _libm("cos"), "floor": _libm("floor"), "ceil": _libm("ceil"),
    "round": OpSpelling(float="rint{f}({x})"),  # ties to even in the default rounding mode
    "reciprocal": OpSpelling(float="({one} / {x})"),
    "sigmoid": OpSpelling(float="({one} / ({one} + exp{f}(-{x})))"),
    "sign": OpSpelling(float="hal_sign_{t}({x})", int="hal_sign_{t}({x})",
                       helper_float="sign", helper_int="sign"),
    "logical_not": OpSpelling(bool="(!{x})"),
    # binary
    "add": _infix("+"), "sub": _infix("-"), "mul": _infix("*"),
    "div": OpSpelling(float="({a} / {b})", int="hal_div_{t}({a}, {b})", helper_int="div"),
    "remainder": OpSpelling(float="fmod{f}({a}, {b})", int="hal_rem_{t}({a}, {b})",
                            helper_int="rem"),
    "pow": OpSpelling(float="pow{f}({a}, {b})", int="hal_pow_{t}({a}, {b})", helper_int="pow"),
    "maximum": OpSpelling(float="hal_max_{t}({a}, {b})", int="hal_max_{t}({a}, {b})",
                          bool="({a} || {b})", helper_float="max", helper_int="max"),
    "minimum": OpSpelling(float="hal_min_{t}({a}, {b})", int="hal_min_{t}({a}, {b})",
                          bool="({a} && {b})", helper_float="min", helper_int="min"),
    "logical_and": OpSpelling(bool="({a} && {b})"),
    "logical_or": OpSpelling(bool="({a} || {b})"),
    "logical_xor": OpSpelling(bool="({a} != {b})"),
    "bitwise_and": OpSpelling(int="({a} & {b})", bool="({a} && {b})"),
    "bitwise_or": OpSpelling(int="({a} | {b})", bool="({a} || {b})"),
    "bitwise_xor": OpSpelling(int="({a} ^ {b})", bool="({a} != {b})"),
    "shift_left": OpSpelling(int="({a} << {b})"),
    "shift_right": OpSpelling(int="({a} >> {b})"),
    **{op: _infix(sym, bools=True) for op, sym in
       (("eq", "=="), ("ne", "!="), ("lt", "<"), ("le", "<="), ("gt", ">"), ("ge", ">="))},
}

# Integer results narrower than int are cast back after C's promotion to int (wraps).
_WRAPPING = frozenset({"neg", "add", "sub", "mul", "bitwise_and", "bitwise_or", "bitwise_xor",
                       "shift_left", "shift_right"})

C_KEYWORDS = frozenset("""alignas alignof asm auto bool break case catch char class const
constexpr continue default delete do double else enum explicit extern false float for friend
goto if inline int long mutable namespace new operator private protected public register
return short signed sizeof static struct switch template this throw true try typedef typename
union unsigned using virtual void volatile while half signbit min max abs exp log""".split())


def ident(name: str) -> str:
    """A C identifier for an IR name (graph value names are kept where they are legal)."""
    s = re.sub(r"\W", "_", name)
    if not s or s[0].isdigit():
        s = "v_" + s
    return s + "_" if s in C_KEYWORDS or s.startswith("hal_") else s


def kernel_symbol(kernel: Kernel) -> str:
    """The C symbol a kernel is rendered under (a name starting with `hal_` or a C keyword
    gets a `_` appended): what a driver must look the function up by."""
    return ident(kernel.name)


class CStyleRenderer:
    """Renders kernels as C++ device code; subclasses set the vendor data below."""

    vendor: ClassVar[str] = "c"
    headers: ClassVar[tuple[str, ...]] = ()
    prelude: ClassVar[str] = ""            # vendor lines after the headers
    kernel_prefix: ClassVar[str] = 'extern "C" __global__ void'
    launch_bounds: ClassVar[str] = "__launch_bounds__({block})"
    smem_qualifier: ClassVar[str] = "__shared__"
    static_shared_limit: ClassVar[int] = 48 * 1024  # above it: dynamic shared memory
    specials: ClassVar[dict[str, str]] = {
        "thread_idx": "threadIdx.x", "block_idx_x": "blockIdx.x",
        "block_idx_y": "blockIdx.y", "block_idx_z": "blockIdx.z"}
    barrier: ClassVar[str] = "__syncthreads();"
    # mode -> template with {x}, {off}, {w}
    shuffles: ClassVar[dict[str, str]] = {}
    shuffle_types: ClassVar[frozenset[str]] = frozenset({"f32", "f64", "i32", "i64"})
    type_names: ClassVar[dict[str, str]] = {
        "f64": "double", "f32": "float", "i64": "long long", "i32": "int", "i16": "short",
        "i8": "signed char", "u8": "unsigned char", "bool": "bool"}
    # 16/8-bit floats: dtype name -> (to f32 template, from f32 template); {x} is the value
    low_float: ClassVar[dict[str, tuple[str, str]]] = {
        "f8e4m3fn": ("hal_f8e4m3fn_to_f32({x})", "hal_f32_to_f8e4m3fn({x})"),
        "f8e5m2": ("hal_f8e5m2_to_f32({x})", "hal_f32_to_f8e5m2({x})")}
    atomic_types: ClassVar[frozenset[str]] = frozenset({"f32", "f64", "i32", "i64"})
    # matrix-unit / pipeline helper name -> its C source (see the module docstring)
    matrix_helpers: ClassVar[dict[str, str]] = {}
    matrix_preamble: ClassVar[str] = ""     # types the helpers share (emitted before them)

    # ------------------------------------------------------------------ public API
    def render(self, kernel: Kernel, spec: DeviceSpec | None = None) -> str:
        """One translation unit holding `kernel`."""
        return self.render_module([kernel], spec)

    def render_module(self, kernels: Sequence[Kernel], spec: DeviceSpec | None = None) -> str:
        """One translation unit holding several kernels (one compiler call for all)."""
        self._helpers = Helpers(self.ctype)
        self._matrix_used: dict[str, None] = {}
        bodies = [self._kernel(k, spec) for k in kernels]
        head = [f"// generated by hal ({self.vendor}); do not edit"]
        head += [f"#include <{h}>" for h in self.headers]
        head += ["#define HAL_FN static __device__ __forceinline__", self.prelude]
        helpers = self._helpers.source()
        if self._matrix_used:
            helpers += "\n".join(["#ifndef HAL_HOST_SHIM", self.matrix_preamble,
                                  *(self.matrix_helpers[h] for h in self._matrix_used),
                                  "#endif  // HAL_HOST_SHIM", ""])
        return "\n".join([*head, helpers, *bodies]).replace("\n\n\n", "\n\n")

    def dynamic_shared_bytes(self, kernel: Kernel) -> int:
        """Bytes of dynamic shared memory a launch must pass (0 when static suffices)."""
        return kernel.shared_bytes if kernel.shared_bytes > self.static_shared_limit else 0

    # ------------------------------------------------------------------ types
    def ctype(self, d: DType) -> str:
        try:
            return self.type_names[d.name]
        except KeyError:
            raise UnsupportedError(f"{self.vendor} renderer: no C type for dtype {d}") from None

    def _is_low(self, d: DType) -> bool:
        return d.name in self.low_float

    def to_f32(self, code: str, d: DType) -> str:
        if d.name.startswith("f8"):
            self._helpers.need("fp8_decode", d)
        return self.low_float[d.name][0].format(x=code)

    def from_f32(self, code: str, d: DType) -> str:
        if d.name.startswith("f8") and "hal_f32_to" in self.low_float[d.name][1]:
            self._helpers.need("fp8_encode", d)
        return self.low_float[d.name][1].format(x=code)

    # ------------------------------------------------------------------ expressions
    def expr(self, e: Expr) -> str:
        fn = getattr(self, "_e_" + type(e).__name__, None)
        if fn is None:
            raise UnsupportedError(f"{self.vendor} renderer: no spelling for "
                                   f"{type(e).__name__}")
        return fn(e)

    def _e_Const(self, e: Const) -> str:
        d, v = e.dtype, e.value
        if d.is_bool:
            return "true" if v else "false"
        if d.is_int:
            v = int(v)
            if d.bits == 64:
                return f"({v + 1}LL - 1)" if v == d.min else f"({v}LL)"
            text = f"({v + 1} - 1)" if d.bits == 32 and v == d.min else str(v)
            if d.bits != 32:
                return f"(({self.ctype(d)}){text})"
            return f"({text})" if v < 0 and v != d.min else text
        fv = float(v)
        if self._is_low(d):
            return self.from_f32(self._float_literal(fv, f32), d)
        return self._float_literal(fv, d)

    @staticmethod
    def _float_literal(v: float, d: DType) -> str:
        if math.isnan(v) or math.isinf(v):
            if d == f64:
                bits = 0x7FF8000000000000 if math.isnan(v) else 0x7FF0000000000000
                text = f"__longlong_as_double({bits:#x}LL)"
            else:
                text = f"__int_as_float({0x7FC00000 if math.isnan(v) else 0x7F800000:#x})"
            return f"(-{text})" if v < 0 else text
        text = repr(v) + ("f" if d != f64 else "")
        return f"({text})" if text.startswith("-") else text

    def _e_Var(self, e: Var) -> str:
        return ident(e.name)

    def _e_Param(self, e: Param) -> str:
        return ident(e.name)

    def _e_Special(self, e: Special) -> str:
        return f"(({self.ctype(e.dtype)}){self.specials[e.kind]})"

    def _op(self, op: str, operand: DType, result: DType, args: dict[str, str]) -> str:
        spelling = OP_SPELLINGS.get(op)
        if spelling is None:
            raise UnsupportedError(f"{self.vendor} renderer: no C spelling for op '{op}'",
                                   hint="add it to hal.render.cstyle.OP_SPELLINGS")
        low = self._is_low(operand)
        cdt = compute_type(operand) if low else operand
        if low:
            args = {k: self.to_f32(v, operand) for k, v in args.items()}
        family = "bool" if cdt.is_bool else ("float" if cdt.is_float else "int")
        template = getattr(spelling, family)
        if template is None:
            raise UnsupportedError(f"{self.vendor} renderer: op '{op}' is not defined on {cdt}")
        helper = getattr(spelling, "helper_" + family, None)
        if op in ("div", "remainder") and family == "int" and args.get("_const_b"):
            # a constant divisor other than 0 and -1 needs no guard
            template, helper = "({a} " + ("/" if op == "div" else "%") + " {b})", None
        if helper:
            self._helpers.need(helper, cdt)
        code = template.format(f="f" if cdt == f32 else "", t=cdt.name,
                               one=self._float_literal(1.0, cdt) if cdt.is_float else "1",
                               **{k: v for k, v in args.items() if not k.startswith("_")})
        if low and result.is_float:
            return self.from_f32(code, result)
        if (result.is_int or result.is_bool) and result.bits < 32 and op in _WRAPPING:
            return f"(({self.ctype(result)}){code})"
        return code

    def _e_Unary(self, e: Unary) -> str:
        return self._op(e.op, e.x.dtype, e.dtype, {"x": self.expr(e.x)})

    def _e_Binary(self, e: Binary) -> str:
        args = {"a": self.expr(e.a), "b": self.expr(e.b)}
        b = e.b
        if isinstance(b, Const) and b.dtype.is_int and int(b.value) not in (0, -1):
            args["_const_b"] = "1"
        return self._op(e.op, e.a.dtype, e.dtype, args)

    def _e_Select(self, e: Select) -> str:
        return f"({self.expr(e.pred)} ? {self.expr(e.on_true)} : {self.expr(e.on_false)})"

    def _e_Cast(self, e: Cast) -> str:
        return self.cast(self.expr(e.x), e.x.dtype, e.dtype)

    def cast(self, x: str, src: DType, to: DType) -> str:
        """C text converting `x` from `src` to `to` with hal's rules (hal.dtypes.cast)."""
        if src == to:
            return x
        if to.is_bool:
            return f"({self.to_f32(x, src) if self._is_low(src) else x} != 0)"
        if src.is_bool:
            return self.from_f32(f"({x} ? 1.0f : 0.0f)", to) if self._is_low(to) \
                else f"(({self.ctype(to)}){x})"
        if self._is_low(src):  # exact in f32: continue from there
            return self.cast(self.to_f32(x, src), f32, to)
        if to.is_int:
            if src.is_float:
                self._helpers.need("f2i", to)
                return f"hal_f2i_{to.name}({x})"
            return f"(({self.ctype(to)}){x})"
        if self._is_low(to):
            if src == f32:
                return self.from_f32(x, to)
            # f64 and integers: one correct rounding through f32 rounded to odd
            self._helpers.need("f64_to_f32_odd")
            return self.from_f32(f"hal_f64_to_f32_odd((double){x})", to)
        return f"(({self.ctype(to)}){x})"

    def _index(self, buf: str, index: Expr) -> str:
        return f"{ident(buf)}[{self.expr(index)}]"

    def _e_Load(self, e: Load) -> str:
        text = self._index(e.buffer, e.index)
        if e.mask is None:
            return text
        other = self.expr(e.other) if e.other is not None else self._e_Const(Const(0, e.dtype))
        return f"({self.expr(e.mask)} ? {text} : {other})"

    def _e_Shuffle(self, e: Shuffle) -> str:
        d = e.dtype
        x = self.expr(e.x)
        carrier = d if d.name in self.shuffle_types else (f32 if d.is_float else None)
        if carrier is None:  # bool and narrow integers travel as int
            x = f"((int){x})"
        elif carrier != d:
            x = self.to_f32(x, d)
        code = self.shuffles[e.mode].format(x=x, off=self.expr(e.offset), w=e.width)
        if carrier is None:
            return f"(({self.ctype(d)}){code})"
        return self.from_f32(code, d) if carrier != d else code

    # ------------------------------------------------------------------ statements
    def stmt(self, s: Stmt, pad: str) -> list[str]:
        fn = getattr(self, "_s_" + type(s).__name__, None)
        if fn is None:
            raise UnsupportedError(f"{self.vendor} renderer: no spelling for "
                                   f"{type(s).__name__}", hint="lower for a device whose "
                                   "renderer has it (Hopper's wgmma/TMA nodes: CUDA)")
        return fn(s, pad)

    def body(self, stmts: list[Stmt], pad: str) -> list[str]:
        return [line for s in stmts for line in self.stmt(s, pad)]

    def _s_Declare(self, s: Declare, pad: str) -> list[str]:
        if s.var.name not in self._live:  # unused: compilers would warn (warnings fail checks)
            return []
        init = "" if s.init is None else f" = {self.expr(s.init)}"
        return [f"{pad}{self.ctype(s.var.dtype)} {ident(s.var.name)}{init};"]

    def _s_Assign(self, s: Assign, pad: str) -> list[str]:
        return [f"{pad}{ident(s.var.name)} = {self.expr(s.value)};"]

    def _masked(self, text: str, mask: Expr | None, pad: str) -> list[str]:
        return [pad + (text if mask is None else f"if ({self.expr(mask)}) {text}")]

    def _s_Store(self, s: Store, pad: str) -> list[str]:
        return self._masked(f"{self._index(s.buffer, s.index)} = {self.expr(s.value)};",
                            s.mask, pad)

    def _s_AtomicAdd(self, s: AtomicAdd, pad: str) -> list[str]:
        d = s.value.dtype
        if d.name not in self.atomic_types:
            raise UnsupportedError(f"{self.vendor} renderer: atomicAdd on {d} is not supported",
                                   hint="accumulate in f32 or i32 scratch")
        target, value = f"&{self._index(s.buffer, s.index)}", self.expr(s.value)
        if d.name == "i64":  # the 64-bit integer atomic is spelled on unsigned long long
            target, value = f"(unsigned long long*){target}", f"(unsigned long long){value}"
        return self._masked(f"atomicAdd({target}, {value});", s.mask, pad)

    def _s_If(self, s: If, pad: str) -> list[str]:
        lines = [f"{pad}if ({self.expr(s.cond)}) {{", *self.body(s.then, pad + "  ")]
        if s.orelse:
            lines += [f"{pad}}} else {{", *self.body(s.orelse, pad + "  ")]
        return lines + [pad + "}"]

    def _s_Roles(self, s, pad: str) -> list[str]:
        """Warp-specialised roles: if / else, each role its own code region."""
        return [f"{pad}if ({self.expr(s.cond)}) {{  // producer / consumer roles",
                *self.body(s.first, pad + "  "), f"{pad}}} else {{",
                *self.body(s.second, pad + "  "), pad + "}"]

    def _s_For(self, s: For, pad: str) -> list[str]:
        v = ident(s.var.name)
        head = (f"{pad}for ({self.ctype(s.var.dtype)} {v} = {self.expr(s.start)}; "
                f"{v} < {self.expr(s.stop)}; {v} += {self.expr(s.step)}) {{")
        return ([f"{pad}#pragma unroll"] if s.unroll else []) + \
            [head, *self.body(s.body, pad + "  "), pad + "}"]

    def _s_Barrier(self, s: Barrier, pad: str) -> list[str]:
        return [pad + self.barrier]

    def _s_Comment(self, s: Comment, pad: str) -> list[str]:
        return [f"{pad}// {line}" for line in s.text.splitlines() or [""]]

    # ------------------------------------------------------------------ matrix units
    def _matrix(self, name: str, what: str) -> str:
        if name not in self.matrix_helpers:
            raise UnsupportedError(f"{self.vendor} renderer: no device helper {name} for {what}",
                                   hint="lower for a device whose spec lists this instruction "
                                        "(matrix_instructions / capabilities)")
        self._matrix_used[name] = None
        return name

    def _s_Mma(self, s: Mma, pad: str) -> list[str]:
        lay = get_layout(s.layout)
        a_dt = self._local_dtype(s.a)
        acc = self._local_dtype(s.c)
        fn = self._matrix(helper_name(lay, a_dt.name, acc.name), f"mma {s.layout} on {a_dt}")
        return [f"{pad}{fn}(&{ident(s.d)}[{s.d_off}], &{ident(s.a)}[{s.a_off}], "
                f"&{ident(s.b)}[{s.b_off}], &{ident(s.c)}[{s.c_off}]);"]

    def _s_LdMatrix(self, s: LdMatrix, pad: str) -> list[str]:
        fn = self._matrix(f"hal_ldmatrix_x{s.count}{'_trans' if s.trans else ''}", "ldmatrix")
        return [f"{pad}{fn}(&{ident(s.frag)}[{s.offset}], "
                f"&{ident(s.buffer)}[{self.expr(s.addr)}]);"]

    def _s_VecCopy(self, s: VecCopy, pad: str) -> list[str]:
        nbytes = s.width * self._local_dtype(s.src).itemsize
        fn = self._matrix(f"hal_cp_async_{nbytes}" if s.asynchronous else
                          f"hal_vec_copy_{nbytes}", f"a {nbytes}-byte vector copy")
        full = "true" if s.mask is None else self.expr(s.mask)
        return [f"{pad}{fn}(&{ident(s.dst)}[{self.expr(s.dst_index)}], "
                f"&{ident(s.src)}[{self.expr(s.src_index)}], {full});"]

    def _s_CpAsyncCommit(self, s: CpAsyncCommit, pad: str) -> list[str]:
        return [f"{pad}{self._matrix('hal_cp_async_commit', 'cp.async')}();"]

    def _s_CpAsyncWait(self, s: CpAsyncWait, pad: str) -> list[str]:
        return [f"{pad}{self._matrix('hal_cp_async_wait', 'cp.async')}<{s.pending}>();"]

    def _local_dtype(self, name: str) -> DType:
        return self._kernel_obj.buffer(name).dtype

    # ------------------------------------------------------------------ kernel
    def _param(self, p: BufferParam | ScalarParam) -> str:
        if isinstance(p, ScalarParam):
            return f"{self.ctype(p.dtype)} {ident(p.name)}"
        const = "const " if p.readonly else ""
        return f"{const}{self.ctype(p.dtype)}* {ident(p.name)}"

    def _tensor_map_param(self, tm) -> str:
        raise UnsupportedError(f"{self.vendor} renderer: TMA tensor map {tm.name} (CUDA sm_90 "
                               f"only)", hint="lower for a device with the `tma` capability "
                                              "and render for CUDA")

    def _comment_block(self, k: Kernel, spec: DeviceSpec | None) -> list[str]:
        ops = k.meta.ops
        lines = [f"// kernel {k.name}" + (f" for {spec.name} ({spec.arch})" if spec else ""),
                 f"//   launch: grid={tuple(k.grid)} block={k.block} warp={k.warp_size} "
                 f"index={k.index_dtype} shared={k.shared_bytes} B"
                 + (" (dynamic)" if self.dynamic_shared_bytes(k) else "")
                 + (f" cluster={tuple(k.cluster)} (launch attribute)"
                    if tuple(k.cluster) != (1, 1, 1) else "")]
        if ops:
            lines.append(f"//   fused ops ({len(ops)}): " + ", ".join(ops))
        plan = k.meta.plan
        if plan is not None:   # the KernelPlan this kernel emits (hal.lowering.plan)
            parts = [f"strategy={plan.strategy}"]
            if plan.tiles:
                parts.append("tiles=" + "x".join(f"{a}{b}" for a, b in plan.tiles))
            parts += [f"stages={plan.stages}", f"math={plan.math}",
                      *(f"{a}={b}" for a, b in plan.details)]
            lines.append("//   plan: " + ", ".join(parts)
                         + (f" (launch {k.meta.stage})" if k.meta.stage else ""))
        for p in k.params:
            if isinstance(p, BufferParam):
                role = "in " if p.readonly else "out"
                lines.append(f"//   {role} {p.name}: {p.dtype}{list(p.shape)}")
        return lines

    def _shared_decls(self, k: Kernel, unread: frozenset[str] = frozenset()) -> list[str]:
        def attr(name: str) -> str:
            return "[[maybe_unused]] " if name in unread else ""
        if not self.dynamic_shared_bytes(k):
            return [f"  {attr(s.name)}alignas({s.align}) {self.smem_qualifier} "
                    f"{self.ctype(s.dtype)} {ident(s.name)}[{s.size}];" for s in k.shared]
        align = max([16, *(s.align for s in k.shared)])
        attr_align = f"__align__({align}) " if align > 16 else ""   # a TMA swizzle pattern
        lines = [f"  extern {self.smem_qualifier} {attr_align}unsigned char hal_smem[];"
                 f"  // {align}-byte aligned"]
        for s, offset in zip(k.shared, k.shared_offsets(), strict=True):
            # the layout Kernel.shared_offsets describes (each buffer at its alignment)
            t = self.ctype(s.dtype)
            lines.append(f"  {attr(s.name)}{t}* {ident(s.name)} = ({t}*)(hal_smem + {offset});"
                         f"  // {s.size}")
        return lines

    def _kernel(self, k: Kernel, spec: DeviceSpec | None) -> str:
        bounds = self.launch_bounds.format(block=k.block)
        params = ", ".join([*(self._param(p) for p in k.params),
                            *(self._tensor_map_param(tm) for tm in k.tensor_maps)])
        lines = self._comment_block(k, spec)
        lines.append(f"{self.kernel_prefix} {bounds} {kernel_symbol(k)}({params}) {{")
        # a buffer the body never loads from (a split-K statistics pass keeps the flash
        # kernel's layout) draws NVRTC's "set but never used" warning, and warnings fail
        # compiles: such declarations are marked [[maybe_unused]]
        read = loaded_buffers(k.body)
        unread = frozenset(b.name for b in (*k.shared, *k.locals) if b.name not in read)
        lines += self._shared_decls(k, unread)
        lines += [f"  {'[[maybe_unused]] ' if b.name in unread else ''}alignas(16) "
                  f"{self.ctype(b.dtype)} {ident(b.name)}[{b.size}];" for b in k.locals]
        self._live = live_vars(k.body)
        self._kernel_obj = k
        lines += self.body(k.body, "  ")
        lines.append("}\n")
        return "\n".join(lines)


def _reads(stmts: list[Stmt], out: set[str], dead: frozenset[int] = frozenset()) -> None:
    """Names of the variables `stmts` read (a Declare's own target is not a read), skipping
    the statements whose id is in `dead` (hal.kernel.ir's one traversal)."""
    for st in stmts:
        if id(st) in dead:
            continue
        for e in stmt_exprs(st):
            out.update(x.name for x in walk_expr(e) if isinstance(x, Var))
        for b in stmt_bodies(st):
            _reads(b, out, dead)


def loaded_buffers(body: list[Stmt]) -> set[str]:
    """Names of the buffers some Load in `body` reads."""
    out: set[str] = set()
    for st in walk_stmts(body):
        for e in stmt_exprs(st):
            out.update(x.buffer for x in walk_expr(e) if isinstance(x, Load))
    return out


def live_vars(body: list[Stmt]) -> set[str]:
    """Variables a kernel body reads, after dropping unread declarations (to a fixed point)."""
    decls = {st.var.name: st for st in walk_stmts(body) if isinstance(st, Declare)}
    reads: set[str] = set()
    _reads(body, reads)
    # a variable only read by the initialiser of a dead declaration is dead too
    while True:
        dead = frozenset(id(d) for n, d in decls.items() if n not in reads)
        still: set[str] = set()
        _reads(body, still, dead)
        if still == reads:
            return reads | {n for n in decls if n in reads} | _assigned(body)
        reads = still


def _assigned(body: list[Stmt]) -> set[str]:
    """Variables assigned somewhere: kept declared even when never read."""
    return {st.var.name for st in walk_stmts(body) if isinstance(st, Assign)}


def unique_names(kernels: Sequence[Kernel], prefix: Callable[[int], str]) -> list[Kernel]:
    """Copies of `kernels` with names made unique (for batching several plans in one file)."""
    seen: set[str] = set()
    out = []
    for i, k in enumerate(kernels):
        name = k.name if k.name not in seen else f"{prefix(i)}{k.name}"
        seen.add(name)
        out.append(k if name == k.name else dataclasses.replace(k, name=name))
    return out


__all__ = ["COMPARISONS", "CStyleRenderer", "OP_SPELLINGS", "OpSpelling", "ident",
           "kernel_symbol", "unique_names"]
