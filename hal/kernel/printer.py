"""Readable CUDA-like pseudo-code for a kernel IR `Kernel`: `print_kernel`, `format_expr`.

The printout is for people (debug dumps, error messages, `str(kernel)`), not for a
compiler: the CUDA and HIP renderers own real source. Types are spelled with hal
dtype names (f32, bf16, i32), hardware indices as CUDA spells them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from hal.dtypes import DType
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
)

INFIX = {
    "add": "+", "sub": "-", "mul": "*", "div": "/", "remainder": "%",
    "eq": "==", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">=",
    "logical_and": "&&", "logical_or": "||", "bitwise_and": "&", "bitwise_or": "|",
    "bitwise_xor": "^", "shift_left": "<<", "shift_right": ">>",
}
SPECIAL_NAMES = {"thread_idx": "threadIdx.x", "block_idx_x": "blockIdx.x",
                 "block_idx_y": "blockIdx.y", "block_idx_z": "blockIdx.z"}


def _const(c: Const) -> str:
    v = c.value
    if c.dtype.is_bool:
        return "true" if v else "false"
    if c.dtype.is_float:
        f = float(v)
        if math.isnan(f):
            return "NAN"
        if math.isinf(f):
            return "INFINITY" if f > 0 else "-INFINITY"
        text = repr(f)
        return text + "f" if c.dtype.name == "f32" else text
    return str(int(v))


def _unary(e: Unary) -> str:
    if e.op == "neg":
        return f"(-{format_expr(e.x)})"
    if e.op == "logical_not":
        return f"(!{format_expr(e.x)})"
    return f"{e.op}({format_expr(e.x)})"


def _binary(e: Binary) -> str:
    a, b = format_expr(e.a), format_expr(e.b)
    if e.op in INFIX:
        return f"({a} {INFIX[e.op]} {b})"
    return f"{e.op}({a}, {b})"


def _load(e: Load) -> str:
    text = f"{e.buffer}[{format_expr(e.index)}]"
    if e.mask is None:
        return text
    other = format_expr(e.other) if e.other is not None else "0"
    return f"({format_expr(e.mask)} ? {text} : {other})"


_EXPR_FORMATTERS: dict[type, Callable[..., str]] = {
    Const: _const,
    Var: lambda e: e.name,
    Param: lambda e: e.name,
    Special: lambda e: SPECIAL_NAMES.get(e.kind, e.kind),
    Unary: _unary,
    Binary: _binary,
    Select: lambda e: (f"({format_expr(e.pred)} ? {format_expr(e.on_true)} : "
                       f"{format_expr(e.on_false)})"),
    Cast: lambda e: f"({e.dtype}){format_expr(e.x)}",
    Load: _load,
    Shuffle: lambda e: (f"shfl_{e.mode}({format_expr(e.x)}, {format_expr(e.offset)}, "
                        f"width={e.width})"),
}


def format_expr(e: Expr) -> str:
    """One expression as C-like text."""
    fn = _EXPR_FORMATTERS.get(type(e))
    return fn(e) if fn is not None else repr(e)


def _decl(dt: DType) -> str:
    return dt.name


def format_stmt(s: Stmt, indent: int = 0) -> list[str]:
    """One statement as lines of text (nested bodies indented by two spaces)."""
    pad = "  " * indent
    if isinstance(s, Declare):
        init = "" if s.init is None else f" = {format_expr(s.init)}"
        return [f"{pad}{_decl(s.var.dtype)} {s.var.name}{init};"]
    if isinstance(s, Assign):
        return [f"{pad}{s.var.name} = {format_expr(s.value)};"]
    if isinstance(s, (Store, AtomicAdd)):
        target = f"{s.buffer}[{format_expr(s.index)}]"
        text = (f"{target} = {format_expr(s.value)};" if isinstance(s, Store)
                else f"atomicAdd(&{target}, {format_expr(s.value)});")
        if s.mask is not None:
            text = f"if ({format_expr(s.mask)}) {text}"
        return [pad + text]
    if isinstance(s, If):
        lines = [f"{pad}if ({format_expr(s.cond)}) {{"]
        lines += format_body(s.then, indent + 1)
        if s.orelse:
            lines.append(f"{pad}}} else {{")
            lines += format_body(s.orelse, indent + 1)
        return lines + [pad + "}"]
    if isinstance(s, ira.Roles):
        return [f"{pad}roles ({format_expr(s.cond)}) {{  // concurrent warp-specialised roles",
                *format_body(s.first, indent + 1), f"{pad}}} else {{",
                *format_body(s.second, indent + 1), pad + "}"]
    if isinstance(s, For):
        v = s.var.name
        lines = [f"{pad}#pragma unroll"] if s.unroll else []
        lines.append(f"{pad}for ({_decl(s.var.dtype)} {v} = {format_expr(s.start)}; "
                     f"{v} < {format_expr(s.stop)}; {v} += {format_expr(s.step)}) {{")
        lines += format_body(s.body, indent + 1)
        return lines + [pad + "}"]
    if isinstance(s, Barrier):
        return [pad + "__syncthreads();"]
    if isinstance(s, Comment):
        return [f"{pad}// {line}" for line in s.text.splitlines() or [""]]
    return [pad + _MATRIX_FORMATTERS[type(s)](s)] if type(s) in _MATRIX_FORMATTERS \
        else [pad + repr(s)]


def _vec_copy(s: VecCopy) -> str:
    kind = "cp.async" if s.asynchronous else "vec_copy"
    mask = "" if s.mask is None else f", full={format_expr(s.mask)}"
    return (f"{kind}<{s.width}>(&{s.dst}[{format_expr(s.dst_index)}], "
            f"&{s.src}[{format_expr(s.src_index)}]{mask});")


_MATRIX_FORMATTERS = {
    Mma: lambda s: (f"mma<{s.layout}>({s.d}+{s.d_off}, {s.a}+{s.a_off}, {s.b}+{s.b_off}, "
                    f"{s.c}+{s.c_off});"),
    LdMatrix: lambda s: (f"ldmatrix.x{s.count}{'.trans' if s.trans else ''}({s.frag}+"
                         f"{s.offset}, &{s.buffer}[{format_expr(s.addr)}]);"),
    VecCopy: _vec_copy,
    CpAsyncCommit: lambda s: "cp.async.commit_group;",
    CpAsyncWait: lambda s: f"cp.async.wait_group {s.pending};",
}


def _tma(s) -> str:
    coords = ", ".join(format_expr(c) for c in s.coords)
    mc = f".multicast({s.multicast:#x})" if s.multicast else ""
    return (f"tma.load{mc}({s.tmap}, [{coords}]) -> &{s.dst}[{format_expr(s.dst_index)}], "
            f"mbarrier {s.bar}[{format_expr(s.bar_index)}];")


def _wgmma_a(s: ira.Wgmma) -> str:
    return format_expr(s.a_desc) if s.a_regs is None else f"regs {s.a_regs}+{s.a_off}"


def _arrive(s) -> str:
    cta = f", cta={format_expr(s.cta)}" if s.cta is not None else ""
    return (f"mbarrier.arrive{'.expect_tx' if s.tx_bytes else ''}({s.bar}"
            f"[{format_expr(s.index)}]{f', {s.tx_bytes}' if s.tx_bytes else ''}{cta});")


_MATRIX_FORMATTERS.update({
    ira.Wgmma: lambda s: (f"wgmma.m64n{s.n}.{s.atype}({s.acc}+{s.acc_off}, "
                          f"{_wgmma_a(s)}, {format_expr(s.b_desc)}"
                          f"{', trans_b' if s.trans_b else ''});"),
    ira.WgmmaFence: lambda s: "wgmma.fence;",
    ira.WgmmaCommit: lambda s: "wgmma.commit_group;",
    ira.WgmmaWait: lambda s: f"wgmma.wait_group {s.pending};",
    ira.MbarrierInit: lambda s: f"mbarrier.init({s.bar}[{format_expr(s.index)}], {s.count});",
    ira.MbarrierArrive: _arrive,
    ira.MbarrierWait: lambda s: (f"mbarrier.wait({s.bar}[{format_expr(s.index)}], parity="
                                 f"{format_expr(s.parity)});"),
    ira.TmaLoad: _tma,
    ira.FenceProxyAsync: lambda s: "fence.proxy.async;",
    ira.SetMaxNReg: lambda s: f"setmaxnreg.{'inc' if s.increase else 'dec'} {s.count};",
})
_MATRIX_FORMATTERS.update({
    irc.ClusterArrive: lambda s: ("fence.mbarrier_init.cluster; " if s.init_fence else "")
    + "barrier.cluster.arrive;",
    irc.ClusterWait: lambda s: "barrier.cluster.wait;",
})
_EXPR_FORMATTERS[irc.ClusterCtaRank] = lambda e: "%cluster_ctarank"
_EXPR_FORMATTERS[ira.SmemDesc] = lambda e: (
    f"desc(&{e.buffer}[{format_expr(e.offset)}], lbo={e.lbo}, sbo={e.sbo}, "
    f"swizzle={e.swizzle})")


def format_body(body: list[Stmt], indent: int) -> list[str]:
    lines: list[str] = []
    for s in body:
        lines += format_stmt(s, indent)
    return lines


def _signature(k: Kernel) -> str:
    parts = []
    for p in k.params:
        if isinstance(p, BufferParam):
            const = "const " if p.readonly else ""
            parts.append(f"{const}{p.dtype}* {p.name} /* shape {list(p.shape)} */")
        elif isinstance(p, ScalarParam):
            parts.append(f"{p.dtype} {p.name}")
    return f"__global__ void {k.name}({', '.join(parts)})"


def print_kernel(kernel: Kernel) -> str:
    """The whole kernel: launch configuration, signature, shared and local arrays, body."""
    k = kernel
    lines = [f"// kernel {k.name}: grid={tuple(k.grid)} block={k.block} warp={k.warp_size} "
             f"index={k.index_dtype} shared={k.shared_bytes} B"
             + (f" cluster={tuple(k.cluster)}" if tuple(k.cluster) != (1, 1, 1) else ""),
             _signature(k) + " {"]
    for s in k.shared:
        lines.append(f"  __shared__ {s.dtype} {s.name}[{s.size}];")
    for loc in k.locals:
        lines.append(f"  {loc.dtype} {loc.name}[{loc.size}];  // per thread")
    lines += format_body(k.body, 1)
    lines.append("}")
    return "\n".join(lines)
