"""Straight-line runs of ldmatrix and mma executed at once: `RunPlan`, `plan_run`, `run`.

A matrix-unit kernel's K step is a run of warp-wide statements with nothing between
them: ldmatrix loads of A and B fragments from shared memory and mma instructions that
chain their accumulators (d = a @ b + c, c the previous d). Issued one by one
(mma_sim.ldmatrix / mma), each costs a dozen NumPy calls, which is what a wave of a few
blocks (sampled runs, small grids) pays for: tens of such statements per K step, every
K step. Here codegen hands the whole run to `run`, which executes it lane-exactly:

* addresses: every ldmatrix's row addresses are checked as mma_sim.ldmatrix checks them
  (bounds, 16-byte rows, races since the last barrier, cp.async groups still in flight)
  and gathered in one pass per (shared buffer, count, trans) through the same per-lane
  source tables (hal.kernel.mma.ldmatrix_source): a lane receives the elements the rows
  of other lanes hold, so a wrong lane mapping still gives wrong numbers;
* fragments: each mma's A, B and C matrices are built from the lanes' fragment
  elements by the layout's tables (mma_sim._tables), the products of all mmas of the run
  are one np.matmul over [mmas, warps] with mma_sim.mma's very shapes ([m, k] @ [k, n]
  per warp, float64: exact products), and the accumulator chain is walked in dependency
  levels: each mma adds its C (a register from before the run or the D of an earlier mma)
  and rounds to the accumulator dtype, as mma_sim.mma does. Results, counters and bank
  conflicts are those of issuing the statements one by one
  (tests/test_cpu_sim_mma_batch.py holds them bitwise equal);
* registers the run writes get their final values at the end, as lane arrays.

Under a mask of whole warps (blocks that took a uniform branch) only the active warps
run, and the registers of the others keep their values, as mma_sim does. `run` issues
the statements one by one instead (the reference semantics) when a warp is partly
active (the per-statement checks name the divergent thread), when a check
finds a fault (so the error names the same statement, thread and word), or when the run
is not of the batched shape (`RunPlan.why_not`: an operand made by an mma of the same
run, mixed layouts or accumulator dtypes). One difference remains: the address
expressions of the whole run are evaluated first, so an i32 overflow in a later
statement's address is reported before a fault of an earlier statement of the run.
Large waves are processed in chunks of whole warps, so temporaries stay near
CHUNK_WORDS words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hal.kernel.ir import Comment, LdMatrix, Load, Mma, Stmt, walk_expr
from hal.kernel.mma import get_layout, ldmatrix_source

from . import mma_sim
from .lanes import Wave, to_rep

CHUNK_WORDS = 1 << 17   # lane values per chunk of warps (1 MiB float64 temporaries: cache-sized)


@dataclass(frozen=True)
class LdmOp:
    frag: int       # local buffer slot receiving 2 * count elements at `offset`
    offset: int
    shared: int     # shared buffer slot
    count: int
    trans: bool
    site: int


@dataclass(frozen=True)
class MmaOp:
    layout: str
    d: int
    d_off: int
    a: int
    a_off: int
    b: int
    b_off: int
    c: int
    c_off: int
    site: int


class RunPlan:
    """The static part of a run: its statements in order and, when it can be batched,
    where every mma operand element comes from (a column of the gathered ldmatrix values,
    a register from before the run, or an earlier mma's D) and the levels of the chain."""

    def __init__(self, ops: Sequence[LdmOp | MmaOp]):
        self.ops = tuple(ops)
        self.loads = [o for o in self.ops if isinstance(o, LdmOp)]
        self.mmas = [o for o in self.ops if isinstance(o, MmaOp)]
        self.why_not = self._analyse()

    def _analyse(self) -> str | None:
        layouts = {o.layout for o in self.mmas}
        if len(layouts) != 1:
            return "mixed or no mma layouts"
        self.layout = layouts.pop()
        lay = get_layout(self.layout)
        self.lanes = lay.lanes
        # ldmatrix groups: loads of one (shared, count, trans), gathered together; the
        # gathered values' columns are the groups' loads in order, 2 * count each
        self.groups: list[tuple[int, int, bool, list[int]]] = []
        key_of: dict[tuple, int] = {}
        for i, o in enumerate(self.loads):
            key = (o.shared, o.count, o.trans)
            if key not in key_of:
                key_of[key] = len(self.groups)
                self.groups.append((o.shared, o.count, o.trans, []))
            self.groups[key_of[key]][3].append(i)
        load_col: dict[int, int] = {}
        col = 0
        for _, count, _, ids in self.groups:
            for i in ids:
                load_col[i] = col
                col += 2 * count
        self.load_cols = col
        state: dict[tuple[int, int], tuple] = {}   # register -> ("l", col) | ("m", q, t)
        ext: dict[tuple[int, int], int] = {}       # registers read from before the run
        cext: dict[tuple[int, int], int] = {}
        a_idx, b_idx, c_src, level = [], [], [], []
        li = qi = 0
        for o in self.ops:
            if isinstance(o, LdmOp):
                for e in range(2 * o.count):
                    state[(o.frag, o.offset + e)] = ("l", load_col[li] + e)
                li += 1
                continue
            cols = []
            for j, off, n in ((o.a, o.a_off, lay.a_elems), (o.b, o.b_off, lay.b_elems)):
                idx = []
                for e in range(n):
                    s = state.get((j, off + e))
                    if s is None:
                        idx.append(-1 - ext.setdefault((j, off + e), len(ext)))
                    elif s[0] == "l":
                        idx.append(s[1])
                    else:
                        return "an A/B operand comes from an mma of the same run"
                cols.append(idx)
            a_idx.append(cols[0])
            b_idx.append(cols[1])
            srcs, lev = [], 0
            for e in range(lay.c_elems):
                s = state.get((o.c, o.c_off + e))
                if s is None:
                    srcs.append(("x", cext.setdefault((o.c, o.c_off + e), len(cext))))
                elif s[0] == "m":
                    srcs.append(("m", s[1], s[2]))
                    lev = max(lev, level[s[1]] + 1)
                else:
                    return "an accumulator comes from an ldmatrix of the same run"
            c_src.append(srcs)
            level.append(lev)
            for e in range(lay.c_elems):
                state[(o.d, o.d_off + e)] = ("m", qi, e)
            qi += 1
        self.ext = list(ext)
        self.cext = list(cext)
        self.d_slots = sorted({o.d for o in self.mmas})
        nl = self.load_cols
        # external register x was numbered -1 - x: its column follows the load columns
        a_cols = [tuple(c if c >= 0 else nl - 1 - c for c in r) for r in a_idx]
        b_cols = [tuple(c if c >= 0 else nl - 1 - c for c in r) for r in b_idx]
        return self._tile(lay, a_cols, b_cols, c_src, level, state)

    def _tile(self, lay: Any, a_cols: list, b_cols: list, c_src: list, level: list,
              state: dict) -> str | None:
        """The tiled form: at every chain level the mmas are the products of the level's
        distinct A and B operands (a grid of Ma x Nb accumulator tiles), tile (i, j) of a
        level accumulates onto tile (i, j) of the level before (its C is that mma's D,
        element for element), level 0 reads C from registers from before the run, and
        only the last level's D registers are left in the end. Builds the static gather
        tables (per warp) from the layout's tables."""
        nlev = max(level) + 1
        qs_of = [[q for q, x in enumerate(level) if x == lev] for lev in range(nlev)]
        da_ids: dict[tuple, int] = {}
        db_ids: dict[tuple, int] = {}
        for q in range(len(level)):
            da_ids.setdefault(a_cols[q], len(da_ids))
            db_ids.setdefault(b_cols[q], len(db_ids))
        grid = None
        pos: dict[int, tuple[int, int]] = {}
        self.level_ops = []
        for lev, qs in enumerate(qs_of):
            das = list(dict.fromkeys(da_ids[a_cols[q]] for q in qs))
            dbs = list(dict.fromkeys(db_ids[b_cols[q]] for q in qs))
            if grid is None:
                grid = (len(das), len(dbs))
            pairs = {(das.index(da_ids[a_cols[q]]), dbs.index(db_ids[b_cols[q]])): q
                     for q in qs}
            if (len(das), len(dbs)) != grid or len(pairs) != len(qs) or \
                    len(qs) != grid[0] * grid[1]:
                return "a chain level is not a grid of A x B products"
            for ij, q in pairs.items():
                pos[q] = ij
                if lev and c_src[q] != [("m", p, t) for p in [c_src[q][0][1]]
                                        for t in range(lay.c_elems)]:
                    return "an accumulator is not the D of one mma of the level before"
                if lev and (level[c_src[q][0][1]] != lev - 1 or pos[c_src[q][0][1]] != ij):
                    return "an accumulator chain changes its tile"
                if not lev and any(x[0] != "x" for x in c_src[q]):
                    return "a first-level accumulator is not a register from before the run"
            self.level_ops.append((np.array(das, np.int64), np.array(dbs, np.int64)))
        last = set(qs_of[-1])
        if any(s[0] == "m" and s[1] not in last for s in state.values()):
            return "a D register of an inner chain level is left at the end"
        ma, nb = grid
        m, n, ce = lay.m, lay.n, lay.c_elems
        self.grid = grid
        cols = self.load_cols + len(self.ext)
        self.pool_cols = cols

        self.ta = _operand_table(lay.a, lay.lanes, da_ids, m, lay.k, cols)
        self.tb = _operand_table(lay.b, lay.lanes, db_ids, lay.k, n, cols)
        # level 0's C [ma * m, nb * n] from the external registers (offsets in cext rows)
        ext_c = np.empty((ma, nb, ce), np.int64)   # tile (i, j)'s C elements: cext rows
        for q in qs_of[0]:
            ext_c[pos[q]] = [s[1] for s in c_src[q]]
        self.tc = _c_table(lay, ext_c, len(self.cext))
        self.tout = _out_table(lay, ma, nb)
        last_pos = {q: pos[q] for q in qs_of[-1]}
        self.writes = [(j, e, s[0], s[1] if s[0] == "l" else
                        (last_pos[s[1]][0] * nb + last_pos[s[1]][1]) * ce + s[2])
                       for (j, e), s in state.items()]
        return None


# The gather tables below are built with NumPy index arithmetic, not per-lane Python
# loops: a 64-lane MFMA layout with 16 C elements a lane made the loops cost ~4 ms per
# run at translation time (mi300x matmuls). A layout is a bijection (hal.kernel.mma
# checks it), so every table entry is written exactly once.
def _operand_table(table: np.ndarray, lanes: int, ops: dict, r: int, c: int,
                   cols: int) -> np.ndarray:
    """[operands, r, c]: offset in a warp's pool rows of each matrix element (its lane's
    row times `cols`, plus the pool column of its fragment element in that operand)."""
    lane = np.empty((r, c), np.int64)
    elem = np.empty((r, c), np.int64)
    lane[table[..., 0], table[..., 1]] = np.arange(lanes, dtype=np.int64)[:, None]
    elem[table[..., 0], table[..., 1]] = np.arange(table.shape[1], dtype=np.int64)[None, :]
    srcs = np.array(list(ops), np.int64).reshape(len(ops), -1)
    return lane * cols + srcs[:, elem]


def _c_table(lay: Any, ext_c: np.ndarray, nc: int) -> np.ndarray:
    """[ma * m, nb * n]: for each element of level 0's C, its offset in the external
    registers' rows (lane * nc + the cext row of tile (i, j)'s element e, `ext_c`)."""
    ma, nb, _ = ext_c.shape
    r, c = lay.c[..., 0], lay.c[..., 1]                     # [lanes, ce]
    tc = np.empty((ma, lay.m, nb, lay.n), np.int64)
    lane = np.arange(lay.lanes, dtype=np.int64)[:, None]
    i = np.arange(ma)[:, None, None, None]
    j = np.arange(nb)[None, :, None, None]
    tc[i, r, j, c] = lane * nc + ext_c[:, :, None, :]       # [ma, nb, lanes, ce]
    return tc.reshape(ma * lay.m, nb * lay.n)


def _out_table(lay: Any, ma: int, nb: int) -> np.ndarray:
    """[lanes, ma * nb * ce]: for each lane's D element e of tile (i, j) (column
    (i * nb + j) * ce + e), its offset in a warp's [ma * m, nb * n] D."""
    r, c = lay.c[:, None, None, :, 0], lay.c[:, None, None, :, 1]   # [lanes, 1, 1, ce]
    i = np.arange(ma, dtype=np.int64)[None, :, None, None]
    j = np.arange(nb, dtype=np.int64)[None, None, :, None]
    out = (i * lay.m + r) * (nb * lay.n) + j * lay.n + c               # [lanes, ma, nb, ce]
    return out.reshape(lay.lanes, ma * nb * lay.c_elems)


def plan_run(ops: Sequence[LdmOp | MmaOp]) -> RunPlan:
    return RunPlan(ops)


def run_end(stmts: Sequence[Stmt], i: int) -> int:
    """End of a batchable run of LdMatrix/Mma (and Comment) statements starting at i (one
    with an Mma and at least two statements), or i when there is none. An ldmatrix whose
    address reads memory ends the run (addresses are evaluated before the run)."""
    j, n_mma, n = i, 0, 0
    while j < len(stmts):
        s = stmts[j]
        if isinstance(s, Mma):
            n_mma += 1
        elif isinstance(s, LdMatrix):
            if any(isinstance(x, Load) for x in walk_expr(s.addr)):
                break
        elif not isinstance(s, Comment):
            break
        n += not isinstance(s, Comment)
        j += 1
    while j > i and isinstance(stmts[j - 1], Comment):
        j -= 1
    return j if n_mma and n >= 2 else i


def emit_run(tr: Any, stmts: Sequence[Stmt], outer: Any, depth: int) -> None:
    """Generate the call running `stmts` (codegen's translator `tr`, its context `outer`):
    the same sites and flop counting as one statement at a time, the ldmatrix addresses
    evaluated in order before the call."""
    from .codegen import _Ctx, headline_text

    ops: list[LdmOp | MmaOp] = []
    addrs = []
    for s in stmts:
        if isinstance(s, Comment):
            continue
        ctx = _Ctx(outer.mask, outer.count, None, headline_text(s))
        tr.count_stmt_flops(s, ctx, depth)
        if isinstance(s, LdMatrix):
            addrs.append(tr.expr(s.addr, _Ctx(ctx.mask, ctx.count, s.buffer, ctx.stmt)))
            ops.append(LdmOp(tr.slot[s.frag][1], s.offset, tr.slot[s.buffer][1], s.count,
                             s.trans, tr.site(ctx, s.buffer)))
        else:
            slot = {b: tr.slot[b][1] for b in (s.d, s.a, s.b, s.c)}
            ops.append(MmaOp(s.layout, slot[s.d], s.d_off, slot[s.a], s.a_off, slot[s.b],
                             s.b_off, slot[s.c], s.c_off, tr.site(ctx, None)))
    plan = tr.bind(plan_run(ops), "_run")
    tr.emit(f"MB.run(W, {plan}, [{', '.join(addrs)}], {outer.mask})", depth)


def one_by_one(W: Wave, plan: RunPlan, addrs: Sequence[Any], m: Any) -> None:
    """The run issued statement by statement (mma_sim's reference semantics)."""
    it = iter(addrs)
    for o in plan.ops:
        if isinstance(o, LdmOp):
            mma_sim.ldmatrix(W, o.frag, o.offset, o.shared, next(it), o.count, o.trans, m,
                             o.site)
        else:
            mma_sim.mma(W, o.layout, o.d, o.d_off, o.a, o.a_off, o.b, o.b_off, o.c, o.c_off,
                        m, o.site)


class _Fallback(Exception):
    """A check found a fault: issue the run one by one so the error is the usual one."""


def run(W: Wave, plan: RunPlan, addrs: Sequence[Any], m: Any) -> None:
    """Execute the run (statements in `plan`, ldmatrix addresses `addrs` in order)."""
    if m is not None and m.all():
        m = None
    unit = max(plan.lanes if plan.why_not is None else 1, 32 if plan.loads else 1)
    if plan.why_not is not None or W.T % unit or \
            any(W.sh[g[0]].dtype != np.float32 for g in plan.groups):
        return one_by_one(W, plan, addrs, m)
    warps = None
    if m is not None:   # whole warps active (blocks that took a uniform branch) or none
        mw = m.reshape(-1, unit)
        warps = mw[:, 0]
        if (mw != warps[:, None]).any():
            return one_by_one(W, plan, addrs, m)   # a divergent warp: its error, as before
    try:
        _batched(W, plan, addrs, m, warps, unit)
    except _Fallback:
        one_by_one(W, plan, addrs, m)


def _ldm_tables(W: Wave, count: int, trans: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    plans = W.__dict__.setdefault("ldm_plans", {})   # shared with mma_sim.ldmatrix
    key = (count, trans)
    if key not in plans:
        src, offs = ldmatrix_source(count, trans)
        lw = W.tid % 32
        plans[key] = ((W.lane - lw)[:, None] + src[lw], offs[lw], lw)
    return plans[key]


def _spans(L: int, step: int, unit: int, warps: np.ndarray | None) -> list[tuple[int, int]]:
    """Lane ranges [s, e) of at most `step` lanes covering the active warps (all when
    `warps` is None), each a whole number of `unit`-lane warps."""
    if warps is None:
        runs = [(0, L)]
    else:
        edges = np.flatnonzero(np.diff(np.concatenate([[0], warps.astype(np.int8), [0]])))
        runs = [(int(a) * unit, int(b) * unit) for a, b in zip(edges[::2], edges[1::2],
                                                                  strict=True)]
    return [(s, min(e, s + step)) for a, e in runs for s in range(a, e, step)]


def _batched(W: Wave, plan: RunPlan, addrs: Sequence[Any], mask: np.ndarray | None,
             warps: np.ndarray | None, unit: int) -> None:
    L = W.L
    lay = get_layout(plan.layout)
    lanes, Q = lay.lanes, len(plan.mmas)
    acc_dt = W.loc_buf[plan.d_slots[0]].dtype
    if any(W.loc_buf[j].dtype != acc_dt for j in plan.d_slots):
        raise _Fallback
    # addresses per group [loads, L]; bounds and alignment as mma_sim.ldmatrix checks them
    gaddr = []
    for js, count, trans, ids in plan.groups:
        a = np.stack([W.lanes_int(addrs[i]) for i in ids])
        if W.check:
            lw = _ldm_tables(W, count, trans)[2]
            size = W.sh_buf[js].size
            bad = (lw < 8 * count) & ((a % 8 != 0) | (a < 0) | (a + 8 > size))
            if mask is not None:
                bad &= mask
            if bad.any():
                raise _Fallback
        gaddr.append(a)
    ext = [W.loc[j][e] for j, e in plan.ext]
    cext = [W.loc[j][e] for j, e in plan.cext]
    wide = any(isinstance(v, np.ndarray) and v.dtype != np.float32 for v in ext)
    pool_dt = np.float64 if wide else np.float32
    ma, nb = plan.grid
    m, n, k, ce = lay.m, lay.n, lay.k, lay.c_elems
    out_l = np.empty((L, plan.load_cols), np.float32) if plan.loads else None
    rep_acc = np.float32 if acc_dt.name == "f32" else to_rep(0.0, acc_dt).dtype
    out_d = np.empty((L, ma * nb * ce), rep_acc)
    per_warp = lanes * (plan.pool_cols + 2 * ma * nb * ce) + plan.ta.size + plan.tb.size
    step = max(1, CHUNK_WORDS // per_warp) * lanes // unit * unit or unit
    tid = W.tid
    for s, e in _spans(L, step, unit, warps):
        nn, nw = e - s, (e - s) // lanes
        pool = np.empty((nn, plan.pool_cols), pool_dt)
        c0 = 0
        for (js, count, trans, _), a in zip(plan.groups, gaddr, strict=True):
            sup, offs, _ = _ldm_tables(W, count, trans)
            idx = a[:, sup[s:e]] + offs[s:e]                 # [loads, lanes, 2 count]
            flat = idx.transpose(1, 0, 2).reshape(nn, -1) + W.sh_off[js][s:e, None]
            vals = W.sh[js].take(flat)   # (take: fancy indexing's values, faster)
            if W.check:
                _check_reads(W, js, flat, tid[s:e, None])
            c1 = c0 + flat.shape[1]
            pool[:, c0:c1] = vals
            out_l[s:e, c0:c1] = vals
            c0 = c1
        for i, v in enumerate(ext):
            pool[:, c0 + i] = v[s:e] if isinstance(v, np.ndarray) and v.ndim else v
        base = (np.arange(nw, dtype=np.int64) * (lanes * plan.pool_cols))[:, None, None, None]
        flat_pool = pool.reshape(-1)
        A = flat_pool.take(base + plan.ta).astype(np.float64)     # [warps, distinct A, m, k]
        B = flat_pool.take(base + plan.tb).astype(np.float64)     # [warps, distinct B, k, n]
        del pool, flat_pool
        if lay.input_format == "tf32":   # cvt.rna.tf32.f32 of every A and B element first
            A, B = mma_sim.round_tf32(A), mma_sim.round_tf32(B)
        cp = np.empty((nn, max(1, len(cext))), np.float64)
        for i, v in enumerate(cext):
            cp[:, i] = v[s:e] if isinstance(v, np.ndarray) and v.ndim else v
        cbase = (np.arange(nw, dtype=np.int64) * (lanes * len(cext)))[:, None, None]
        D = cp.reshape(-1).take(cbase + plan.tc)              # [warps, ma * m, nb * n]
        for das, dbs in plan.level_ops:
            a_cat = A[:, das].reshape(nw, ma * m, k)
            b_cat = B[:, dbs].transpose(0, 2, 1, 3).reshape(nw, k, nb * n)
            d = np.matmul(a_cat, b_cat) + D
            D = d.astype(np.float32) if acc_dt.name == "f32" else to_rep(d, acc_dt)
        D = D.reshape(nw, -1).take(plan.tout, axis=1)         # [warps, lanes, tiles * ce]
        out_d[s:e] = D.reshape(nn, -1)
    for j, el, kind, c in plan.writes:
        new = out_l[:, c] if kind == "l" else out_d[:, c]
        W.loc[j][el] = new if mask is None else np.where(mask, new, W.loc[j][el])
    n_act = W._count(mask)
    for (js, count, _, ids), a in zip(plan.groups, gaddr, strict=True):
        sb = W.sh_buf[js]
        W.sr += n_act * 2 * count * sb.dtype.itemsize * len(ids)
        rows = a.reshape(len(ids), -1, 32)[:, :, :8 * count].reshape(-1, 8)
        W.bank_conflicts += mma_sim._conflicts(
            mma_sim._shared_base(W, js) + rows * sb.dtype.itemsize, 16)
    W.mfl[plan.layout] = W.mfl.get(plan.layout, 0) + \
        2 * lay.m * lay.n * lay.k * (n_act // lanes) * Q


def _check_reads(W: Wave, js: int, flat: np.ndarray, t: np.ndarray) -> None:
    """Race and cp.async checks of a chunk's reads (any hit: _Fallback), then record them."""
    if W.sh_dirty[js]:
        w = W.sh_writer[js][flat]
        if ((w >= 0) & (w != t)).any():
            raise _Fallback
    if W.pipe is not None:
        code = W.pipe.code[js][flat]
        if code.max(initial=-1) >= 0:
            live = code >= 0
            g = code >> W.pipe.SHIFT
            own = np.where(live, code & ((1 << W.pipe.SHIFT) - 1), 0)
            if (live & (g >= W.pipe.done[own])).any():
                raise _Fallback
    W.record_reads(js, flat, t)
