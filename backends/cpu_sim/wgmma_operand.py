"""The shared words a wgmma operand reads (for wgmma_sim): descriptors decoded into
element offsets, gathered as runs of consecutive words, and the 16-byte chunks they are
made of.

A wave's warpgroups read their tiles at a few descriptors, and a K loop revisits the
same ones (the pipeline's stages): `operand` works out an operand's words once per
(descriptors, active warpgroups) and keeps them in the wave's HopperState
(`operand_words`), with what the checks derive from the words alone: their 16-byte
chunks, by which the TMA marks (wgmma_sim._check_marks) and the cluster read map
(cluster_sim.ReadMap) are kept. A descriptor encodes start, LBO, SBO and swizzle
entirely, so equal descriptors read equal words.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np

from hal.kernel.wgmma import canonical_offset, swizzle

from .lanes import Wave

WG = 128
CHUNK_BYTES = 16            # a swizzle atom: TMA boxes and wgmma operands are made of them
RUN_LENGTHS = (16, 8, 4, 2)   # words per run tried for an operand's words (_run_length)
_CODE_SW = {0: 0, 1: 128, 2: 64, 3: 32}
# operand_words entries kept per wave before the table starts over (a kernel whose
# descriptors never repeat would otherwise keep every operand's words)
OPERAND_TABLE_LIMIT = 512


class OperandWords(NamedTuple):
    """The shared words a wgmma operand reads: `flat` [G, rows * k] (buffer words), and
    the same words as `runs` of `run` consecutive words (word = runs[g, r] * run + i; None
    when the layout has no such runs)."""

    flat: np.ndarray
    runs: np.ndarray | None
    run: int


class Operand(NamedTuple):
    """An operand's words in shared buffer `j` and their `chunk`-word chunks: `chunks`
    [G, k // chunk] chunk numbers (word // chunk) when every run of `chunk` words is one
    whole aligned chunk in order (whole_chunks), else None; `first` the chunks' first
    words."""

    j: int
    words: OperandWords
    chunk: int
    chunks: np.ndarray | None
    first: np.ndarray | None


def gather(arr: np.ndarray, words: OperandWords | np.ndarray) -> np.ndarray:
    """arr's values at an operand's words ([G, rows * k]). Swizzled tiles are 16-byte
    atoms of consecutive words: gathered as rows of `run` words, 3-7x faster than word by
    word, the same values."""
    if isinstance(words, np.ndarray):
        return arr.take(words)   # take: a faster gather than fancy indexing
    if words.runs is None:
        return arr.take(words.flat)
    return arr.reshape(-1, words.run).take(words.runs, axis=0).reshape(words.flat.shape)


def flat_words(words: OperandWords | np.ndarray) -> np.ndarray:
    return words if isinstance(words, np.ndarray) else words.flat


def chunk_words(itemsize: int, size: int) -> int:
    """Words per 16-byte chunk of a buffer of `size` words (per block) of `itemsize`
    bytes; 1 when its words do not fall into whole power-of-two chunks."""
    c = max(1, CHUNK_BYTES // itemsize)
    return c if size % c == 0 and (c & (c - 1)) == 0 else 1


@functools.lru_cache(maxsize=64)
def _ramp(k: int, c: int) -> np.ndarray:
    """0, 1, .., c - 1 repeated over k words."""
    r = np.tile(np.arange(c, dtype=np.int64), k // c)
    r.flags.writeable = False
    return r


def whole_chunks(words: np.ndarray, c: int) -> np.ndarray | None:
    """[rows, k // c] chunk numbers (word // c) when every run of c words of `words`
    [rows, k] is one whole aligned chunk in order (c a power of two), else None."""
    rows, k = words.shape
    if k % c:
        return None
    base = (words - _ramp(k, c)).ravel()   # a chunk's first word at each of its words
    first = base[::c]
    if (first & (c - 1)).any():
        return None
    # base may change only from a chunk's last word to the next chunk's first
    steps = np.flatnonzero(base[1:] != base[:-1])
    if ((steps & (c - 1)) != c - 1).any():
        return None
    return (first >> (c.bit_length() - 1)).reshape(rows, -1)


def chunk_rows(arr: np.ndarray, c: int) -> np.ndarray | None:
    """`arr` (1-D) as [words // c, c] rows, a view (None if it cannot be one): a scatter
    of whole chunks writes rows, several times faster than word by word."""
    if arr.ndim != 1 or not arr.flags.c_contiguous or arr.size % c:
        return None
    return arr.reshape(-1, c)


def _lanes(W: Wave, x: Any) -> np.ndarray:
    return np.broadcast_to(np.asarray(x, np.int64), (W.L,))


def decode(v: np.ndarray) -> tuple[np.ndarray, int, int, int]:
    u = v.astype(np.int64).view(np.uint64)
    start = ((u & np.uint64(0x3FFF)) << np.uint64(4)).astype(np.int64)
    lbo = ((u >> np.uint64(16)) & np.uint64(0x3FFF)) << np.uint64(4)
    sbo = ((u >> np.uint64(32)) & np.uint64(0x3FFF)) << np.uint64(4)
    code = (u >> np.uint64(62)) & np.uint64(3)
    return start, int(lbo[0]), int(sbo[0]), _CODE_SW[int(code[0])]


def _buffer_at(W: Wave, st: Any, addr: np.ndarray, site: int, lane: int) -> int:
    lo, hi = int(addr.min()), int(addr.max())
    for j, sb in enumerate(W.sh_buf):
        if st.base[j] <= lo and hi < st.base[j] + sb.nbytes:
            return j
    W._fail("out_of_bounds", site, lane, f"wgmma descriptor addresses shared bytes "
            f"{lo}..{hi}, not inside one shared buffer", hint="check the descriptor's "
            "start address, LBO/SBO and the tile's size")
    return -1


def operand(W: Wave, st: Any, v: Any, rows: int, k: int, itemsize: int, k_major: bool,
            gl: np.ndarray, site: int, what: str) -> tuple[np.ndarray, Operand]:
    """Gather one operand for the active warpgroups `gl`: ([G, rows, k] float64 values,
    its words: Operand)."""
    _, op = operand_words(W, st, v, rows, k, itemsize, k_major, gl, site, what)
    return operand_values(W, op, rows, k), op


def operand_values(W: Wave, op: Operand, rows: int, k: int) -> np.ndarray:
    """[G, rows, k] float64: the values of the shared words `op` reads."""
    return gather(W.sh[op.j], op.words).astype(np.float64).reshape(-1, rows, k)


def operand_words(W: Wave, st: Any, v: Any, rows: int, k: int, itemsize: int, k_major: bool,
                  gl: np.ndarray, site: int, what: str) -> tuple[tuple, Operand]:
    """The words one operand of the active warpgroups `gl` reads at descriptors `v`, and
    the key they are kept under (equal keys: equal words)."""
    v = _lanes(W, v).reshape(-1, WG)
    if W.check and (v != v[:, :1]).any():
        g = int(np.flatnonzero((v != v[:, :1]).any(axis=1))[0])
        W._fail("bad_mma", site, g * WG, f"wgmma {what} descriptor differs between the "
                "threads of a warpgroup", hint="build descriptors from warpgroup-uniform values")
    desc = v[gl, 0]
    key = (desc.tobytes(), gl.tobytes(), rows, k, itemsize, k_major)
    op = st.operand_words.get(key)
    if op is None:
        op = _operand_words(W, st, desc, (rows, k, itemsize, k_major), gl, site)
        if len(st.operand_words) >= OPERAND_TABLE_LIMIT:
            st.operand_words.clear()
        st.operand_words[key] = op
    return key, op


def _operand_words(W: Wave, st: Any, desc: np.ndarray, shape: tuple, gl: np.ndarray,
                   site: int) -> Operand:
    """The words of the operand that descriptors `desc` (one per active warpgroup) of
    shape (rows, k, itemsize, k_major) read, with their chunks."""
    rows, k, itemsize, k_major = shape
    start, lbo, sbo, sw = decode(desc)
    gids = np.flatnonzero(gl)
    j, elem, which, (run, runs) = operand_elements(
        W, st, start, (rows, k, itemsize, k_major, sw, lbo, sbo), site, int(gids[0]) * WG)
    size = W.sh_buf[j].size
    base = ((gids * WG) // W.T) * size
    flat = base[:, None] + (elem if which is None else elem[which])
    if runs is not None:
        runs = (base // run)[:, None] + (runs if which is None else runs[which])
    c = chunk_words(W.sh_buf[j].dtype.itemsize, size)
    chunks = whole_chunks(flat, c) if c > 1 else None
    first = None if chunks is None else chunks * c
    for a in (flat, runs, chunks, first):
        if a is not None:
            a.flags.writeable = False
    return Operand(j, OperandWords(flat, runs, run), c, chunks, first)


def _run_length(elem: np.ndarray, size: int) -> tuple[int, np.ndarray | None]:
    """(run, [U, n / run] run numbers) when the element offsets `elem` [U, n] are runs of
    `run` consecutive elements, each starting at a multiple of `run`, in a buffer whose
    per-block part is a multiple of `run` long (so a block's words are runs too): the
    longest such run of RUN_LENGTHS, else (1, None)."""
    for run in RUN_LENGTHS:
        if elem.shape[1] % run or size % run:
            continue
        r = elem.reshape(len(elem), -1, run)
        if not (r[..., 0] % run).any() and (r == r[..., :1] + np.arange(run)).all():
            runs = r[..., 0] // run
            runs.flags.writeable = False
            return run, runs
    return 1, None


def operand_elements(W: Wave, st: Any, start: np.ndarray, layout: tuple, site: int,
                     lane0: int) -> tuple[int, np.ndarray, np.ndarray | None, tuple]:
    """(buffer j, [U, rows * k] element offsets in a block's part of buffer j of each
    distinct start address, the index into them of each warpgroup's start (None: one
    start), the offsets as runs: _run_length). The warpgroups of a wave read their tiles
    at a few start addresses (their blocks' shared layouts are alike), and a K loop
    revisits the same ones: the swizzled addresses of each set of starts are computed once
    per wave (kept in st.operands)."""
    if start.size > 1 and (start != start[0]).any():
        starts, which = np.unique(start, return_inverse=True)
    else:
        starts, which = start[:1], None
    key = (starts.tobytes(), layout)
    got = st.operands.get(key)
    if got is None:
        rows, k, itemsize, k_major, sw, lbo, sbo = layout
        r = np.arange(rows, dtype=np.int64)[:, None]
        c = np.arange(k, dtype=np.int64)[None, :]
        off = canonical_offset(r, c, itemsize, k_major, sw, lbo, sbo)
        addr = swizzle(starts[:, None, None] + off[None], sw)
        j = _buffer_at(W, st, addr, site, lane0)
        elem = ((addr - st.base[j]) // itemsize).reshape(len(starts), -1)
        elem.flags.writeable = False
        run, runs = _run_length(elem, W.sh_buf[j].size)
        got = st.operands[key] = (j, elem, run, runs)
    j, elem, run, runs = got
    if which is None:
        return j, elem[0], None, (run, None if runs is None else runs[0])
    return j, elem, which, (run, runs)


__all__ = ["CHUNK_BYTES", "Operand", "OperandWords", "chunk_rows", "chunk_words", "decode",
           "flat_words", "gather", "operand", "operand_elements", "operand_values", "operand_words",
           "whole_chunks"]
