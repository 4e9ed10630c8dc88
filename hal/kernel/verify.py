"""The kernel IR verifier: `verify_kernel` and `KernelError`.

Checks what every consumer of a Kernel (renderers, simulator) relies on: names
declared before use and scoped, buffer names known, dtypes consistent, ops known
to hal.ops with a scalar meaning, shuffle widths legal, barriers not under
thread-dependent branches, and, given a DeviceSpec, the launch limits. Every
error names the kernel and the offending statement and says how to fix it.
"""

from __future__ import annotations

from hal.devices.spec import DeviceSpec
from hal.dtypes import DType, bool_
from hal.errors import HalError, UnsupportedError
from hal.kernel import ir_async as ira
from hal.kernel import ir_cluster as irc
from hal.kernel.ir import (
    COMPARISONS,
    SHUFFLE_MODES,
    SPECIALS,
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
    children,
    walk_stmts,
)
from hal.kernel.printer import format_expr, format_stmt

SHIFT_OPS = frozenset({"shift_left", "shift_right", "shift_right_logical",
                       "shift_right_arithmetic"})
BOOL_OPS = frozenset({"logical_and", "logical_or", "logical_xor", "logical_not"})


class KernelError(HalError):
    """A Kernel that breaks the IR's rules (a lowering bug, or a launch the spec forbids)."""


class _Verifier:
    def __init__(self, kernel: Kernel, strict_barriers: bool = True):
        self.k = kernel
        self.strict_barriers = strict_barriers
        self.stmt: Stmt | None = None
        self.scopes: list[dict[str, DType]] = [{}]
        self.scalars = {p.name: p.dtype for p in kernel.params if isinstance(p, ScalarParam)}
        self.buffers: dict[str, tuple[str, DType, bool]] = {}
        for p in kernel.params:
            if isinstance(p, BufferParam):
                self._add_buffer(p.name, "global", p.dtype, p.readonly)
        for s in kernel.shared:
            self._add_buffer(s.name, "shared", s.dtype, False)
        for loc in kernel.locals:
            self._add_buffer(loc.name, "local", loc.dtype, False)
        self.stmt: Stmt | None = None
        self.loop_vars: list[str] = []
        self.ops_ok: set[str] = set()   # op names already checked (the check imports ops)

    def fail(self, what: str, hint: str | None = None) -> None:
        where = ""
        if self.stmt is not None:
            text = format_stmt(self.stmt)[0].strip()
            where = f" in `{text[:160]}`"
        raise KernelError(f"kernel {self.k.name}: {what}{where}", hint=hint)

    def _add_buffer(self, name: str, space: str, dt: DType, readonly: bool) -> None:
        if name in self.buffers or name in self.scalars:
            self.fail(f"the name '{name}' is used by two parameters or buffers",
                      hint="give every buffer and parameter its own name")
        self.buffers[name] = (space, dt, readonly)

    # ------------------------------------------------------------------ expressions
    def lookup(self, v: Var) -> DType | None:
        for scope in reversed(self.scopes):
            if v.name in scope:
                return scope[v.name]
        return None

    def index(self, e: Expr, what: str) -> None:
        if not self.expr(e).is_int:
            self.fail(f"{what} `{format_expr(e)}` has dtype {e.dtype}, not an integer",
                      hint=f"cast it to {self.k.index_dtype}")

    def boolean(self, e: Expr, what: str) -> None:
        if not self.expr(e).is_bool:
            self.fail(f"{what} `{format_expr(e)}` has dtype {e.dtype}, not bool",
                      hint="compare it with ne(x, 0)")

    def op(self, name: str, e: Expr) -> None:
        if name in self.ops_ok:
            return
        from hal.ops import get_op

        try:
            od = get_op(name)
        except UnsupportedError:
            self.fail(f"unknown op '{name}' in `{format_expr(e)}`",
                      hint="Unary/Binary ops must be hal.ops elementwise op names")
        if od.scalar is None:
            self.fail(f"op '{name}' has no scalar definition and cannot appear in a kernel",
                      hint="use Cast / Select nodes, or an elementwise op")
        self.ops_ok.add(name)

    def expr(self, e: Expr) -> DType:
        """Check `e`; its dtype. The checks of Const, Var, Unary, Binary, Select, Cast and
        Load return it, computed from their children's (Unary's, Binary's and Select's
        `dtype` properties walk down their operand chains: a nested expression would
        pay once per level); any other node's is its `dtype`."""
        fn = _CHECK_EXPR[type(e)]
        if fn is None:
            self.fail(f"unknown expression {type(e).__name__}")
        dt = fn(self, e)
        return e.dtype if dt is None else dt

    def x_Const(self, e: Const) -> DType:
        return e.dtype

    def x_Var(self, e: Var) -> DType:
        dt = self.lookup(e)
        if dt is None:
            self.fail(f"variable '{e.name}' is used before it is declared",
                      hint="add a Declare before the first use (For binds its own variable)")
        if dt is not e.dtype and dt != e.dtype:
            self.fail(f"variable '{e.name}' is declared {dt} but used as {e.dtype}")
        return e.dtype

    def x_Param(self, e: Param) -> None:
        if e.name not in self.scalars:
            self.fail(f"scalar parameter '{e.name}' is not a parameter of the kernel",
                      hint="add a ScalarParam to kernel.params")
        if self.scalars[e.name] != e.dtype:
            self.fail(f"parameter '{e.name}' is {self.scalars[e.name]} but read as {e.dtype}")

    def x_Special(self, e: Special) -> None:
        if e.kind not in SPECIALS:
            self.fail(f"unknown hardware index '{e.kind}'", hint="one of " + ", ".join(SPECIALS))

    def x_Unary(self, e: Unary) -> DType:
        x = self.expr(e.x)
        self.op(e.op, e)
        if (e.op in BOOL_OPS) != x.is_bool:
            self.fail(f"`{format_expr(e)}`: {e.op} on a {x} operand")
        return bool_ if e.op == "logical_not" else x   # (Unary.dtype)

    def x_Binary(self, e: Binary) -> DType:
        a = self.expr(e.a)
        b = self.expr(e.b)
        self.op(e.op, e)
        if e.op in SHIFT_OPS:
            if not (a.is_int and b.is_int):
                self.fail(f"`{format_expr(e)}`: shifts need integer operands")
        elif a is not b and a != b:
            self.fail(f"`{format_expr(e)}`: operands of {e.op} are {a} and {b}",
                      hint="insert an explicit Cast")
        if e.op in BOOL_OPS and not a.is_bool:
            self.fail(f"`{format_expr(e)}`: {e.op} needs bool operands, got {a}")
        return bool_ if e.op in COMPARISONS else a   # (Binary.dtype)

    def x_Select(self, e: Select) -> DType:
        self.boolean(e.pred, "select predicate")
        t = self.expr(e.on_true)
        f = self.expr(e.on_false)
        if t != f:
            self.fail(f"`{format_expr(e)}`: select branches are {t} and {f}",
                      hint="insert an explicit Cast")
        return t   # (Select.dtype)

    def x_Cast(self, e: Cast) -> DType:
        self.expr(e.x)
        return e.dtype

    def buffer(self, name: str) -> tuple[str, DType, bool]:
        if name not in self.buffers:
            self.fail(f"buffer '{name}' is not a parameter, shared or local buffer of the kernel",
                      hint="declare it in kernel.params, kernel.shared or kernel.locals")
        return self.buffers[name]

    def x_Load(self, e: Load) -> DType:
        _, dt, _ = self.buffer(e.buffer)
        self.index(e.index, f"index of {e.buffer}")
        if e.dtype != dt:
            self.fail(f"load of {e.buffer} is typed {e.dtype}, the buffer holds {dt}")
        if e.mask is not None:
            self.boolean(e.mask, f"mask of the load of {e.buffer}")
        if e.other is not None:
            other = self.expr(e.other)
            if other != dt:
                self.fail(f"`other` of the load of {e.buffer} is {other}, not {dt}")
        return e.dtype

    def x_Shuffle(self, e: Shuffle) -> None:
        self.expr(e.x)
        self.index(e.offset, "shuffle offset")
        w = e.width
        if e.mode not in SHUFFLE_MODES:
            self.fail(f"shuffle mode '{e.mode}' is not one of {', '.join(SHUFFLE_MODES)}")
        if w < 1 or w & (w - 1) or w > self.k.warp_size:
            self.fail(f"shuffle width {w} must be a power of two <= the warp size "
                      f"{self.k.warp_size}")

    # ------------------------------------------------------------------ statements
    def body(self, stmts: list[Stmt]) -> None:
        self.scopes.append({})
        for s in stmts:
            self.statement(s)
        self.scopes.pop()

    def statement(self, s: Stmt) -> None:
        self.stmt = s
        fn = _CHECK_STMT[type(s)]
        if fn is None:
            self.fail(f"unknown statement {type(s).__name__}")
        fn(self, s)

    def s_Comment(self, s: Comment) -> None:
        pass

    def s_Barrier(self, s: Barrier) -> None:
        pass

    def s_Declare(self, s: Declare) -> None:
        if s.init is not None:
            dt = self.expr(s.init)
            if dt is not s.var.dtype and dt != s.var.dtype:
                self.fail(f"'{s.var.name}' is {s.var.dtype} but its initial value is "
                          f"{dt}", hint="insert an explicit Cast")
        if s.var.name in self.scopes[-1]:
            self.fail(f"variable '{s.var.name}' is declared twice in one scope")
        self.scopes[-1][s.var.name] = s.var.dtype

    def s_Assign(self, s: Assign) -> None:
        self.x_Var(s.var)
        dt = self.expr(s.value)
        if dt is not s.var.dtype and dt != s.var.dtype:
            self.fail(f"assigning {dt} to '{s.var.name}' of type {s.var.dtype}",
                      hint="insert an explicit Cast")
        if s.var.name in self.loop_vars:
            self.fail(f"the loop variable '{s.var.name}' is assigned inside its loop",
                      hint="use another variable")

    def _access(self, s: Store | AtomicAdd) -> None:
        space, dt, readonly = self.buffer(s.buffer)
        self.index(s.index, f"index of {s.buffer}")
        value = self.expr(s.value)
        if value != dt:
            self.fail(f"storing {value} into {s.buffer} of {dt}",
                      hint=f"Cast the value to {dt}")
        if s.mask is not None:
            self.boolean(s.mask, f"mask of the store to {s.buffer}")
        if readonly:
            self.fail(f"store to read-only buffer '{s.buffer}'",
                      hint="mark the output BufferParam readonly=False")

    def s_Store(self, s: Store) -> None:
        self._access(s)

    def s_AtomicAdd(self, s: AtomicAdd) -> None:
        self._access(s)
        if self.buffers[s.buffer][0] == "local":
            self.fail(f"atomic add on local buffer '{s.buffer}'", hint="use a Store")

    def s_If(self, s: If) -> None:
        self.boolean(s.cond, "if condition")
        if self.strict_barriers and _mentions_thread(s.cond) and _has_barrier(s.then + s.orelse):
            self.fail("Barrier inside a branch on a thread-dependent condition: threads that "
                      "skip the branch never reach it",
                      hint="move the Barrier out of the branch")
        self.body(s.then)
        self.stmt = s
        self.body(s.orelse)

    def s_For(self, s: For) -> None:
        for what, e in (("start", s.start), ("stop", s.stop), ("step", s.step)):
            self.index(e, f"loop {what}")
            if e.dtype != s.var.dtype:
                self.fail(f"loop {what} is {e.dtype}, the loop variable '{s.var.name}' is "
                          f"{s.var.dtype}")
        if isinstance(s.step, Const) and s.step.value <= 0:
            self.fail(f"loop step {s.step.value} must be positive")
        self.scopes.append({s.var.name: s.var.dtype})
        self.loop_vars.append(s.var.name)
        self.body(s.body)
        self.loop_vars.pop()
        self.scopes.pop()

    # ------------------------------------------------------------------ matrix units
    def _space(self, name: str, want: str, what: str) -> DType:
        space, dt, _ = self.buffer(name)
        if space != want:
            self.fail(f"{what} '{name}' is a {space} buffer, it must be {want}")
        return dt

    def s_Mma(self, s: Mma) -> None:
        from hal.kernel.mma import LAYOUTS

        lay = LAYOUTS.get(s.layout)
        if lay is None:
            self.fail(f"unknown mma layout '{s.layout}'", hint="see hal.kernel.mma.LAYOUTS")
        if lay.lanes != self.k.warp_size:
            self.fail(f"mma layout {s.layout} is issued by {lay.lanes} lanes, the kernel's "
                      f"warp has {self.k.warp_size}")
        for frag, off, n in ((s.a, s.a_off, lay.a_elems), (s.b, s.b_off, lay.b_elems),
                             (s.c, s.c_off, lay.c_elems), (s.d, s.d_off, lay.c_elems)):
            self._space(frag, "local", "mma fragment")
            size = next(b.size for b in self.k.locals if b.name == frag)
            if off < 0 or off + n > size:
                self.fail(f"mma fragment {frag}[{off}:{off + n}] exceeds its {size} elements")
        if self.buffers[s.c][1] != self.buffers[s.d][1]:
            self.fail("mma accumulators c and d have different dtypes")

    def s_LdMatrix(self, s: LdMatrix) -> None:
        dt = self._space(s.buffer, "shared", "ldmatrix source")
        fd = self._space(s.frag, "local", "ldmatrix fragment")
        if dt.bits != 16 or fd != dt:
            self.fail(f"ldmatrix moves 16-bit elements: {s.buffer} is {dt}, {s.frag} is {fd}")
        if s.count not in (1, 2, 4):
            self.fail(f"ldmatrix count {s.count} is not 1, 2 or 4")
        if self.k.warp_size != 32:
            self.fail("ldmatrix needs 32-lane warps")
        self.index(s.addr, "ldmatrix row address")

    def s_VecCopy(self, s: VecCopy) -> None:
        src_space, sdt, _ = self.buffer(s.src)
        dst_space, ddt, ro = self.buffer(s.dst)
        if sdt != ddt:
            self.fail(f"vector copy from {s.src} ({sdt}) to {s.dst} ({ddt})")
        if ro:
            self.fail(f"vector copy into read-only buffer '{s.dst}'")
        if s.width < 1 or s.width & (s.width - 1) or s.width * sdt.itemsize > 16:
            self.fail(f"vector width {s.width} of {sdt} is not a power of two within 16 bytes")
        if s.asynchronous and (src_space, dst_space) != ("global", "shared"):
            self.fail("cp.async copies global memory to shared memory only")
        self.index(s.src_index, f"index of {s.src}")
        self.index(s.dst_index, f"index of {s.dst}")
        if s.mask is not None:
            self.boolean(s.mask, "vector copy mask")

    def s_CpAsyncCommit(self, s: CpAsyncCommit) -> None:
        pass

    def s_CpAsyncWait(self, s: CpAsyncWait) -> None:
        if s.pending < 0:
            self.fail(f"cp.async wait with {s.pending} pending groups")

    # ------------------------------------------------------------------ Hopper (ir_async)
    def x_SmemDesc(self, e: ira.SmemDesc) -> None:
        from hal.kernel.wgmma import SWIZZLES

        self._space(e.buffer, "shared", "wgmma descriptor operand")
        self.index(e.offset, f"descriptor offset into {e.buffer}")
        if e.swizzle not in SWIZZLES or e.lbo % 16 or e.sbo % 16:
            self.fail(f"descriptor of {e.buffer}: swizzle {e.swizzle} (one of {SWIZZLES}), "
                      f"LBO {e.lbo} and SBO {e.sbo} (multiples of 16)")

    def s_Wgmma(self, s: ira.Wgmma) -> None:
        from hal.kernel.wgmma import wgmma_k

        if self.k.warp_size != 32 or self.k.block % 128:
            self.fail("wgmma needs 32-lane warps and whole 128-thread warpgroups")
        if not 8 <= s.n <= 256 or s.n % 8:
            self.fail(f"wgmma N {s.n} is not a multiple of 8 in 8..256")
        try:
            wgmma_k(s.atype)
        except ValueError as e:
            self.fail(str(e))
        if s.trans_b and s.atype.startswith("f8"):
            self.fail("wgmma reads 8-bit B K-major only (no trans_b)")
        dt = self._space(s.acc, "local", "wgmma accumulator")
        size = next(b.size for b in self.k.locals if b.name == s.acc)
        if dt.name != "f32" or s.acc_off < 0 or s.acc_off + s.n // 2 > size:
            self.fail(f"wgmma accumulator {s.acc}[{s.acc_off}:{s.acc_off + s.n // 2}] must "
                      f"be f32 elements inside its {size}")
        if (s.a_desc is None) == (s.a_regs is None):
            self.fail("wgmma takes A from a descriptor or from registers (a_regs), one of them")
        if s.a_regs is not None:
            from hal.kernel.wgmma import A_REG_ELEMS

            adt = self._space(s.a_regs, "local", "wgmma register A")
            asize = next(b.size for b in self.k.locals if b.name == s.a_regs)
            if adt.name != s.atype or adt.bits != 16:
                self.fail(f"wgmma register A {s.a_regs} is {adt}: it must be the "
                          f"{s.atype} operand type, 16-bit (fp8 A from registers is not "
                          f"supported)")
            if s.a_off < 0 or s.a_off + A_REG_ELEMS > asize:
                self.fail(f"wgmma register A {s.a_regs}[{s.a_off}:{s.a_off + A_REG_ELEMS}] "
                          f"must lie inside its {asize} elements")
        for d in (s.a_desc, s.b_desc):
            if d is None:
                continue
            self.expr(d)
            if d.dtype.name != "i64":
                self.fail("wgmma descriptors are 64-bit (SmemDesc)")

    def s_WgmmaFence(self, s) -> None:
        pass

    def s_WgmmaCommit(self, s) -> None:
        pass

    def s_WgmmaWait(self, s: ira.WgmmaWait) -> None:
        if not 0 <= s.pending <= 7:
            self.fail(f"wgmma.wait_group {s.pending}: pending groups are 0..7")

    def _bar(self, bar: str, index: Expr) -> None:
        dt = self._space(bar, "shared", "mbarrier")
        if dt.name != "i64":
            self.fail(f"mbarriers are 64-bit words: {bar} is {dt}")
        self.index(index, f"index of mbarrier {bar}")

    def s_MbarrierInit(self, s: ira.MbarrierInit) -> None:
        self._bar(s.bar, s.index)
        if not 0 < s.count < 2**20:
            self.fail(f"mbarrier arrival count {s.count} must be in 1..2^20-1")

    def s_MbarrierArrive(self, s: ira.MbarrierArrive) -> None:
        self._bar(s.bar, s.index)
        if not 0 <= s.tx_bytes < 2**20:
            self.fail(f"mbarrier transaction count {s.tx_bytes} must be in 0..2^20-1")
        if s.cta is not None:
            self.index(s.cta, "CTA rank of a remote mbarrier arrive")
            if irc.cluster_size(self.k.cluster) < 2:
                self.fail("a remote mbarrier arrive (cta=...) in a kernel without a cluster",
                          hint="set Kernel.cluster, or arrive on this CTA's barrier")
            if s.tx_bytes:
                self.fail("a remote mbarrier arrive with expect_tx: arm the transaction "
                          "count on the barrier's own CTA")

    def s_MbarrierWait(self, s: ira.MbarrierWait) -> None:
        self._bar(s.bar, s.index)
        self.index(s.parity, "mbarrier phase parity")

    def s_TmaLoad(self, s: ira.TmaLoad) -> None:
        self._bar(s.bar, s.bar_index)
        dt = self._space(s.dst, "shared", "TMA destination")
        tm = next((t for t in self.k.tensor_maps if t.name == s.tmap), None)
        if tm is None:
            self.fail(f"tensor map '{s.tmap}' is not in kernel.tensor_maps")
        src = self.buffers.get(tm.buffer)
        if src is None or src[0] != "global" or src[1] != dt:
            self.fail(f"tensor map {tm.name} must describe a global {dt} buffer, not "
                      f"{tm.buffer}")
        if len(s.coords) != len(tm.dims):
            self.fail(f"TMA load gives {len(s.coords)} coordinates, map {tm.name} has rank "
                      f"{len(tm.dims)}")
        self.index(s.dst_index, f"index of {s.dst}")
        for c in s.coords:
            self.index(c, "TMA coordinate")
        if s.multicast:
            size = irc.cluster_size(self.k.cluster)
            if size < 2:
                self.fail(f"TMA multicast (mask {s.multicast:#x}) in a kernel without a "
                          f"cluster", hint="set Kernel.cluster or drop the multicast mask")
            if s.multicast < 0 or s.multicast >> size:
                self.fail(f"TMA multicast mask {s.multicast:#x} names CTAs outside the "
                          f"{size}-CTA cluster {tuple(self.k.cluster)}",
                          hint=f"use bits 0..{size - 1} only")

    # ------------------------------------------------------------------ clusters
    def x_ClusterCtaRank(self, e: irc.ClusterCtaRank) -> None:
        pass

    def s_ClusterArrive(self, s: irc.ClusterArrive) -> None:
        pass

    def s_ClusterWait(self, s: irc.ClusterWait) -> None:
        pass

    def s_FenceProxyAsync(self, s) -> None:
        pass

    def s_Roles(self, s: ira.Roles) -> None:
        self.boolean(s.cond, "role condition")
        parts = [ira.role_parts(b) for b in (s.first, s.second)]
        if None in parts:
            self.fail("each role holds exactly one loop (leading statements, the loop, "
                      "trailing statements)")
        (_, la, _), (_, lb, _) = parts
        if [format_expr(x) for x in (la.start, la.stop, la.step)] != \
                [format_expr(x) for x in (lb.start, lb.stop, lb.step)]:
            self.fail("the roles' loops must have the same bounds (they step together)")
        if _has_barrier(s.first + s.second):
            self.fail("a Barrier inside warp-specialised roles: the other role never reaches "
                      "it", hint="synchronise the roles with mbarriers")
        self.body(s.first)
        self.stmt = s
        self.body(s.second)

    def s_SetMaxNReg(self, s: ira.SetMaxNReg) -> None:
        if s.count % 8 or not 24 <= s.count <= 256:
            self.fail(f"setmaxnreg {s.count}: a multiple of 8 in 24..256")


class _Checks(dict):
    """node type -> the `_Verifier` method named prefix + the type's name (None: the node
    is unknown), looked up on first use instead of building a name per node."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def __missing__(self, t: type):
        fn = self[t] = getattr(_Verifier, self.prefix + t.__name__, None)
        return fn


_CHECK_EXPR = _Checks("x_")
_CHECK_STMT = _Checks("s_")


def _mentions_thread(e: Expr) -> bool:
    if isinstance(e, Special) and e.kind == "thread_idx":
        return True
    return any(_mentions_thread(c) for c in children(e))


def _has_barrier(stmts: list[Stmt]) -> bool:
    """A block barrier or a cluster barrier (both need every thread of the CTA)."""
    return any(isinstance(s, (Barrier, *irc.CLUSTER_STMTS)) for s in walk_stmts(stmts))


def verify_kernel(kernel: Kernel, spec: DeviceSpec | None = None, *,
                  strict_barriers: bool = True) -> None:
    """Raise KernelError at the first rule `kernel` breaks; return None when it is well formed.

    `strict_barriers=False` skips the static barrier-divergence rule (the CPU simulator
    checks barriers at run time, per block and thread, and reports them precisely).
    """
    k = kernel
    if k.block < 1 or len(k.grid) != 3 or min(k.grid) < 1:
        raise KernelError(f"kernel {k.name}: launch grid {k.grid} / block {k.block} must be "
                          "positive (grid has 3 axes)")
    if k.warp_size < 1 or k.warp_size & (k.warp_size - 1):
        raise KernelError(f"kernel {k.name}: warp size {k.warp_size} is not a power of two")
    if not k.index_dtype.is_int:
        raise KernelError(f"kernel {k.name}: index dtype {k.index_dtype} is not an integer")
    _check_cluster(k)
    v = _Verifier(k, strict_barriers)
    for s in (*k.shared, *k.locals):
        if s.size < 1:
            raise KernelError(f"kernel {k.name}: buffer '{s.name}' has size {s.size}")
    v.body(k.body)
    if spec is not None:
        _check_spec(k, spec)


def _check_cluster(k: Kernel) -> None:
    c = tuple(k.cluster)
    if len(c) != 3 or min(c) < 1:
        raise KernelError(f"kernel {k.name}: cluster {c} must be 3 positive extents")
    if irc.cluster_size(c) > irc.PORTABLE_CLUSTER:
        raise KernelError(f"kernel {k.name}: a cluster of {irc.cluster_size(c)} CTAs {c} "
                          f"exceeds the portable size {irc.PORTABLE_CLUSTER}",
                          hint="use at most 8 CTAs per cluster")
    for axis, g, n in zip("xyz", k.grid, c, strict=True):
        if g % n:
            raise KernelError(f"kernel {k.name}: grid.{axis} = {g} is not a multiple of the "
                              f"cluster's {n} (cluster {c})",
                              hint="pad the grid to whole clusters or use a smaller cluster")


def _check_spec(k: Kernel, spec: DeviceSpec) -> None:
    if k.warp_size != spec.warp_size:
        raise KernelError(f"kernel {k.name}: lowered for warp size {k.warp_size}, {spec.name} "
                          f"has {spec.warp_size}", hint=f"lower again for {spec.name}")
    if k.block > spec.max_threads_per_block:
        raise KernelError(f"kernel {k.name}: block of {k.block} threads exceeds {spec.name}'s "
                          f"limit of {spec.max_threads_per_block}", hint="use a smaller block")
    if k.shared_bytes > spec.shared_mem_per_block:
        raise KernelError(f"kernel {k.name}: needs {k.shared_bytes / 1024:g} KiB shared memory, "
                          f"{spec.name} allows {spec.shared_mem_per_block / 1024:g} KiB per block",
                          hint="use smaller tiles")
