"""The kernel IR: one SIMT kernel as CUDA, HIP and the CPU simulator all see it.

A Kernel is the program of ONE thread (as in CUDA C): typed parameters
(global buffers and scalars), a static launch configuration (grid of blocks,
1-D block of threads), shared-memory and per-thread local arrays, and a
structured body of statements over typed scalar expressions.

Expressions are immutable dataclasses; every one has a `dtype`. Index math is
done in the kernel's `index_dtype` (i32 unless sizes need i64). Elementwise
math uses the primitive op names of hal.ops (Unary/Binary `op` is the op name,
e.g. "exp", "add", "lt"), so every elementwise primitive has exactly one scalar
meaning, shared by the reference, the simulator and the renderers.

Statements: Declare/Assign of scalar variables, Store (global, shared or
local, optionally masked), If, For (bounds are expressions: constants, scalar
params or per-thread values), Barrier (block-wide), AtomicAdd. Loads and warp
shuffles are expressions (`Load`, `Shuffle`).

Matrix units and memory pipelines (hal.kernel.mma owns the layouts): `Mma` (one
warp/wave matrix instruction on per-thread fragment arrays, which are LocalBuffers),
`LdMatrix` (warp-wide fragment load from shared memory), `VecCopy` (a 128-bit vector
move; `asynchronous=True` is cp.async global -> shared), `CpAsyncCommit` and
`CpAsyncWait` (commit/wait groups of a multi-stage pipeline). A SharedBuffer's
`stages` says how many pipeline stages it holds (equal slices), for messages and stats.

Hopper's asynchronous nodes (wgmma, TMA, mbarriers, setmaxnreg) live in
hal.kernel.ir_async, which adds them to the traversal tables below when imported (this
module imports it at its end).

Traversal is defined once, here: `children(e)`, `stmt_exprs(s)`, `stmt_bodies(s)`,
`walk_expr`, `walk_stmts` read the field tables EXPR_CHILDREN / STMT_EXPRS /
STMT_BODIES; the verifier and cpu_sim's code generator and analyses walk through
them. Adding a node is a change in these places:
  1. this module: the dataclass and its entry in EXPR_CHILDREN or STMT_EXPRS /
     STMT_BODIES (every walk then reaches its children);
  2. what it means: cpu_sim's code generator (`_Translator`, backends/cpu_sim/codegen.py,
     Hopper and cluster nodes in async_emit.py; plus `_Facts`, facts.py, when it reads
     lanes or memory, like Load and Shuffle);
  3. how it is spelled: the C-style renderer (hal/render/cstyle.py) and the text
     printer (hal/kernel/printer.py), and a verifier rule only if it has typing rules.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from hal.dtypes import DType, bool_, i32

# --------------------------------------------------------------------------- expressions


class Expr:
    """Base of typed scalar expressions."""

    dtype: DType

    # Small operator helpers so lowering code reads like math; they build IR.
    def __add__(self, o):
        return Binary("add", self, as_expr(o, self.dtype))

    def __radd__(self, o):
        return Binary("add", as_expr(o, self.dtype), self)

    def __sub__(self, o):
        return Binary("sub", self, as_expr(o, self.dtype))

    def __rsub__(self, o):
        return Binary("sub", as_expr(o, self.dtype), self)

    def __mul__(self, o):
        return Binary("mul", self, as_expr(o, self.dtype))

    def __rmul__(self, o):
        return Binary("mul", as_expr(o, self.dtype), self)

    def __floordiv__(self, o):  # integer division of non-negative index values
        return Binary("div", self, as_expr(o, self.dtype))

    def __mod__(self, o):  # remainder of non-negative index values
        return Binary("remainder", self, as_expr(o, self.dtype))

    def lt(self, o):
        return Binary("lt", self, as_expr(o, self.dtype))

    def le(self, o):
        return Binary("le", self, as_expr(o, self.dtype))

    def ge(self, o):
        return Binary("ge", self, as_expr(o, self.dtype))

    def eq(self, o):
        return Binary("eq", self, as_expr(o, self.dtype))

    def logical_and(self, o):
        return Binary("logical_and", self, o)


@dataclass(frozen=True, eq=True)
class Const(Expr):
    value: Any  # python int, float (inf/nan allowed) or bool
    dtype: DType


@dataclass(frozen=True, eq=True)
class Var(Expr):
    """A per-thread scalar variable (a register), declared with Declare or bound by For."""

    name: str
    dtype: DType


@dataclass(frozen=True, eq=True)
class Param(Expr):
    """A scalar kernel parameter, read by name."""

    name: str
    dtype: DType


# The hardware indices. Blocks are 1-D; the grid has up to 3 axes.
SPECIALS = ("thread_idx", "block_idx_x", "block_idx_y", "block_idx_z")


@dataclass(frozen=True, eq=True)
class Special(Expr):
    kind: str  # one of SPECIALS
    dtype: DType = i32


@dataclass(frozen=True, eq=True)
class Unary(Expr):
    op: str
    x: Expr

    @property
    def dtype(self) -> DType:  # type: ignore[override]
        return bool_ if self.op == "logical_not" else self.x.dtype


COMPARISONS = frozenset({"eq", "ne", "lt", "le", "gt", "ge"})


@dataclass(frozen=True, eq=True)
class Binary(Expr):
    op: str
    a: Expr
    b: Expr

    @property
    def dtype(self) -> DType:  # type: ignore[override]
        return bool_ if self.op in COMPARISONS else self.a.dtype


@dataclass(frozen=True, eq=True)
class Select(Expr):
    pred: Expr
    on_true: Expr
    on_false: Expr

    @property
    def dtype(self) -> DType:  # type: ignore[override]
        return self.on_true.dtype


@dataclass(frozen=True, eq=True)
class Cast(Expr):
    """Convert to `dtype` with hal's cast rules (hal.dtypes.cast)."""

    x: Expr
    dtype: DType


@dataclass(frozen=True, eq=True)
class Load(Expr):
    """buffer[index] for a global, shared or local buffer; `other` where mask is false."""

    buffer: str
    index: Expr
    dtype: DType
    mask: Expr | None = None
    other: Expr | None = None


SHUFFLE_MODES = ("xor", "down", "idx")


@dataclass(frozen=True, eq=True)
class Shuffle(Expr):
    """Warp/wavefront shuffle of `x`: xor (butterfly), down (lane + offset) or idx (lane = offset).

    `width` is the lane group (the spec's warp size or a power-of-two part of it).
    Lanes whose source falls outside the group read their own value, as on hardware.
    """

    x: Expr
    mode: str
    offset: Expr
    width: int

    @property
    def dtype(self) -> DType:  # type: ignore[override]
        return self.x.dtype


def as_expr(v: Expr | int | float | bool, dtype: DType) -> Expr:
    return v if isinstance(v, Expr) else Const(v, dtype)


# --------------------------------------------------------------------------- statements


class Stmt:
    """Base of statements."""


@dataclass(eq=True)
class Declare(Stmt):
    var: Var
    init: Expr | None = None


@dataclass(eq=True)
class Assign(Stmt):
    var: Var
    value: Expr


@dataclass(eq=True)
class Store(Stmt):
    buffer: str
    index: Expr
    value: Expr
    mask: Expr | None = None


@dataclass(eq=True)
class AtomicAdd(Stmt):
    buffer: str
    index: Expr
    value: Expr
    mask: Expr | None = None


@dataclass(eq=True)
class If(Stmt):
    cond: Expr
    then: list[Stmt]
    orelse: list[Stmt] = field(default_factory=list)


@dataclass(eq=True)
class For(Stmt):
    """for (var = start; var < stop; var += step) body. step > 0."""

    var: Var
    start: Expr
    stop: Expr
    step: Expr
    body: list[Stmt]
    unroll: bool = False


@dataclass(eq=True)
class Barrier(Stmt):
    """Block-wide barrier (__syncthreads): every thread of the block must reach it."""


@dataclass(eq=True)
class Comment(Stmt):
    text: str


@dataclass(eq=True)
class Mma(Stmt):
    """One matrix instruction issued by the whole warp/wave (every lane must reach it):
    d[d_off:] = a[a_off:] @ b[b_off:] + c[c_off:], where each lane holds the fragment
    elements hal.kernel.mma.get_layout(layout) gives it, in LocalBuffers (offsets are
    constant element offsets). Products are exact and summed with C in f32 (acc dtype)."""

    layout: str
    d: str
    d_off: int
    a: str
    a_off: int
    b: str
    b_off: int
    c: str
    c_off: int


@dataclass(eq=True)
class LdMatrix(Stmt):
    """Warp-wide load of `count` 8x8 matrices of 16-bit elements from shared `buffer`
    (PTX ldmatrix.sync.aligned.m8n8.x{count}[.trans].b16): each lane gives `addr`, the
    element index of one 16-byte row (row addr_lane % 8 of matrix lane / 8), and receives
    2 * count elements into frag[offset:] (hal.kernel.mma.ldmatrix_source)."""

    frag: str
    offset: int
    buffer: str
    addr: Expr
    count: int
    trans: bool = False


@dataclass(eq=True)
class VecCopy(Stmt):
    """dst[dst_index + e] = src[src_index + e] for e < width, one vector access (128 bits
    when width * itemsize == 16; both indices multiples of width). Where `mask` is false
    the destination gets zeros. `asynchronous`: a cp.async (global -> shared) completing
    at the CpAsyncWait that retires its commit group; reading it earlier is a race."""

    dst: str
    dst_index: Expr
    src: str
    src_index: Expr
    width: int
    mask: Expr | None = None
    asynchronous: bool = False


@dataclass(eq=True)
class CpAsyncCommit(Stmt):
    """Close this thread's group of asynchronous copies (cp.async.commit_group)."""


@dataclass(eq=True)
class CpAsyncWait(Stmt):
    """Wait until at most `pending` of this thread's committed groups are in flight
    (cp.async.wait_group); other threads' copies need a Barrier after it to be seen."""

    pending: int

# --------------------------------------------------------------------------- traversal
# The one description of the tree's shape: which fields of a node hold sub-expressions,
# and which hold nested statement lists. Every walk (verifier, cpu_sim's code generator,
# its uniformity/dataflow analyses and flop counts) goes through these.

EXPR_CHILDREN: dict[type, tuple[str, ...]] = {
    Unary: ("x",), Cast: ("x",), Binary: ("a", "b"), Select: ("pred", "on_true", "on_false"),
    Load: ("index", "mask", "other"), Shuffle: ("x", "offset"),
}
STMT_EXPRS: dict[type, tuple[str, ...]] = {
    Declare: ("init",), Assign: ("value",), Store: ("index", "value", "mask"),
    AtomicAdd: ("index", "value", "mask"), If: ("cond",), For: ("start", "stop", "step"),
    LdMatrix: ("addr",), VecCopy: ("dst_index", "src_index", "mask"),
    Mma: (), CpAsyncCommit: (), CpAsyncWait: (),
}
STMT_BODIES: dict[type, tuple[str, ...]] = {If: ("then", "orelse"), For: ("body",)}


def children(e: Expr) -> list[Expr]:
    """The direct sub-expressions of `e` (none for leaves: Const, Var, Param, Special)."""
    fields = EXPR_CHILDREN.get(type(e))
    if not fields:   # a leaf (most nodes: the walks call this millions of times)
        return []
    return [c for f in fields if (c := getattr(e, f)) is not None]


def stmt_exprs(s: Stmt) -> list[Expr]:
    """The expressions a statement evaluates itself (not those of nested bodies); a field
    holding a tuple of expressions (TmaLoad's coordinates) gives each of them."""
    out: list[Expr] = []
    for f in STMT_EXPRS.get(type(s), ()):
        x = getattr(s, f)
        if isinstance(x, tuple):
            out.extend(x)
        elif x is not None:
            out.append(x)
    return out


def stmt_bodies(s: Stmt) -> list[list[Stmt]]:
    """The statement lists nested in `s` (If: then, orelse; For: body)."""
    return [getattr(s, f) for f in STMT_BODIES.get(type(s), ())]


def walk_expr(e: Expr) -> Iterator[Expr]:
    """`e` and every sub-expression, pre-order."""
    yield e
    for c in children(e):
        yield from walk_expr(c)


def walk_stmts(body: list[Stmt]) -> Iterator[Stmt]:
    """Every statement of `body` and of the bodies nested in it, in program order."""
    for s in body:
        yield s
        fields = STMT_BODIES.get(type(s))
        if fields:   # (stmt_bodies, inlined: most statements have none)
            for f in fields:
                yield from walk_stmts(getattr(s, f))


# --------------------------------------------------------------------------- kernel


@dataclass(frozen=True)
class BufferParam:
    """A global-memory buffer argument. `shape`/`strides` (elements) describe the logical tensor;
    indexing in the body is flat (element offsets), and `numel` bounds every access."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    strides: tuple[int, ...] | None = None
    readonly: bool = True

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(frozen=True)
class ScalarParam:
    name: str
    dtype: DType


@dataclass(frozen=True)
class SharedBuffer:
    """Block-shared memory (CUDA __shared__, HIP LDS): `size` elements of `dtype` per block."""

    name: str
    dtype: DType
    size: int
    stages: int = 1     # pipeline stages it holds (equal slices of `size`)
    align: int = 16     # byte alignment (1024 for a TMA destination with the 128B swizzle)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


@dataclass(frozen=True)
class LocalBuffer:
    """A small per-thread array (registers when indices are static)."""

    name: str
    dtype: DType
    size: int


@dataclass(frozen=True)
class KernelMeta:
    """What a kernel carries beside its IR (frozen; set by KernelContext.kernel):

    `group` and `ops`: the fused group it came from; `inputs`/`outputs`: graph value
    names in parameter order; `buffers`: param -> the graph value (or scratch name) it
    binds; `scratch`: param -> (dtype name, elements) of temporaries the backend
    allocates per group; `scalars`: param -> value of scalar params; `plan`: the
    hal.lowering.plan.KernelPlan it was lowered from (None for hand-built kernels);
    `stage`: which launch of that plan it is ("" for a one-kernel plan); `grid_folded`:
    the logical grid and why it was folded into x when an axis exceeded the device's
    grid limit (hal.lowering.grid_limits), or None."""

    group: str = ""
    ops: tuple[str, ...] = ()
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    buffers: Mapping[str, str] = field(default_factory=dict)
    scratch: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    scalars: Mapping[str, Any] = field(default_factory=dict)
    plan: Any = None
    stage: str = ""
    grid_folded: GridFold | None = None


@dataclass(frozen=True)
class GridFold:
    """A launch grid folded into x: the `logical` grid the kernel indexes and the `reason`."""

    logical: tuple[int, int, int]
    reason: str


@dataclass
class Kernel:
    name: str
    params: list[BufferParam | ScalarParam]
    body: list[Stmt]
    grid: tuple[int, int, int]
    block: int
    shared: list[SharedBuffer] = field(default_factory=list)
    locals: list[LocalBuffer] = field(default_factory=list)
    index_dtype: DType = i32
    warp_size: int = 32
    meta: KernelMeta = field(default_factory=KernelMeta)  # buffers, group, the plan
    # TMA tensor maps (hal.kernel.tma.TensorMap) the body's TmaLoads name: parameters
    # after `params`, encoded on the host (cuTensorMapEncodeTiled) from the buffers
    tensor_maps: list = field(default_factory=list)
    # thread-block cluster (x, y, z) the launch groups blocks into (hal.kernel.ir_cluster)
    cluster: tuple[int, int, int] = (1, 1, 1)

    def shared_offsets(self) -> list[int]:
        """Byte offset of each shared buffer: in order, each aligned to its `align` (16
        bytes unless a TMA destination needs its swizzle pattern), as the renderers and
        cpu_sim lay them out."""
        out, total = [], 0
        for s in self.shared:
            total = (total + s.align - 1) // s.align * s.align
            out.append(total)
            total += s.nbytes
        return out

    @property
    def shared_bytes(self) -> int:
        offs = self.shared_offsets()
        return offs[-1] + self.shared[-1].nbytes if offs else 0

    @property
    def num_blocks(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    def buffer(self, name: str) -> BufferParam | SharedBuffer | LocalBuffer:
        for b in (*self.params, *self.shared, *self.locals):
            if b.name == name and not isinstance(b, ScalarParam):
                return b
        raise KeyError(name)

    def space_of(self, name: str) -> str:
        b = self.buffer(name)
        return {BufferParam: "global", SharedBuffer: "shared", LocalBuffer: "local"}[type(b)]

    def __str__(self) -> str:
        from hal.kernel.printer import print_kernel

        return print_kernel(self)


THREAD_IDX = Special("thread_idx")
BLOCK_IDX_X = Special("block_idx_x")
BLOCK_IDX_Y = Special("block_idx_y")
BLOCK_IDX_Z = Special("block_idx_z")


from hal.kernel import ir_async as _ir_async  # noqa: E402,F401  (registers its nodes' fields)
