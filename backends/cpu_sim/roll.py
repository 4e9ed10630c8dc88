"""Repeated runs of statement groups emitted once, as a loop over a table: `roll_body`.

Lowering unrolls matrix-unit kernels: a matmul's epilogue is one `Declare om; Declare on;
If (om < M && on < N) {...}` group per accumulator element, its tile loads one group per
copied chunk, each differing from the last only in integer constants (offsets, fragment
slots, the site numbers of the checks) and in the names of the variables it declares.
`compile()` costs ~400 ns a character of generated source and most of the source of the
conformance suite is such runs, so a run of k >= MIN_REPS equal groups is emitted as

    for _r1, _r2 in _R3:      # _R3: the groups' differing integers, one tuple per group
        <the first group, its differing integers replaced by _r1, _r2>

Equal means: the same source text once integer literals are set aside and the names the
group assigns and nobody else reads (`_local_names`) are numbered by first appearance.
Each iteration then runs exactly the code of its group: the same calls with the same
values in the same order (a name bound to an int is that int), so outputs, counters and
checks (their site numbers come from the table) are those of the unrolled code.
Only the text changes; every statement is still translated (sites, flops, constants).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import compress
from operator import ne
from typing import Any, NamedTuple

from hal.kernel.ir import Stmt

MIN_REPS = 3          # fewer equal groups save too little text to pay for the table
MAX_PERIOD = 12       # statements per group (a tile load's chunk is 8)
MIN_CHARS = 1000      # a shorter body saves too little compile() time to pay for a look

# Generated code read as words (maximal runs of [A-Za-z0-9_]: names and numbers); the
# text between them is compared whole (a group's text with digits deleted, its shape).
# An integer literal is a word of digits; every name the translator generates for a
# variable or temporary has digits (v_<name>_<n>, _c<n>). What the words would misread
# leaves its group alone: a float or hex number (a word starting with a digit that is
# not all digits, or a dot before a digit), a backslash (an escape in a string), a
# string holding a word of digits, a character outside ASCII.
_WORD = re.compile(r"[A-Za-z0-9_]+")
_NOT_WORD = str.maketrans({c: " " for c in map(chr, range(128))
                           if not (c.isascii() and (c.isalnum() or c == "_"))})
_DOT_DIGIT = re.compile(r"\.\d")
_STRING = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")
_WORDS_AND_TEXT = re.compile(r"([A-Za-z0-9_]+)")   # split: text, word, text, ...
_MISSING = object()


class Chunk(NamedTuple):
    """What one statement (or batched run) of a body emitted (codegen.body passes plain
    tuples of these fields: a NamedTuple per statement costs)."""

    stmt: Stmt        # its first statement
    last: Stmt        # and its last
    first: int        # its lines: tr.lines[first:end]
    end: int
    first_tmp: int    # the temporaries it made: n_tmp in (first_tmp, end_tmp]
    end_tmp: int


class _Body:
    """One body's chunks, their texts and shapes, and their words (on first need, None
    for a chunk the words would misread)."""

    def __init__(self, tr: Any, chunks: Sequence[tuple]):
        self.tr, self.chunks = tr, [Chunk(*c) for c in chunks]
        self.texts = ["\n".join(tr.lines[c.first:c.end]) for c in self.chunks]
        self.shapes = [t.encode().translate(None, b"0123456789") for t in self.texts]
        self._words: dict[int, list[str] | None] = {}

    def words(self, first: int, end: int) -> list[str] | None:
        """The words of chunks first..end (a newline, which joins them, is no word)."""
        out: list[str] = []
        for c in range(first, end):
            w = self._words.get(c, _MISSING)
            if w is _MISSING:
                t = self.texts[c]
                w = self._words[c] = t.translate(_NOT_WORD).split() if _plain(t) else None
            if w is None:
                return None
            out += w
        return out


def roll_body(tr: Any, chunks: Sequence[tuple], depth: int) -> None:
    """Rewrite `tr.lines` of one body in place: `chunks`, what each of its statements (or
    batched runs) emitted, in order, at `depth`."""
    if len(chunks) < MIN_REPS or sum(map(len, tr.lines[chunks[0][2]:chunks[-1][3]])) \
            < MIN_CHARS:
        return
    body = _Body(tr, chunks)
    chunks = body.chunks
    shapes, lines = body.shapes, tr.lines
    out: list[str] = []
    i, done = 0, chunks[0].first
    while i < len(chunks) - 2:
        run = None
        if shapes[i] and shapes[i] in shapes[i + 1:i + 1 + MAX_PERIOD]:
            run = _run_at(body, i)
        if run is None:
            i += 1
            continue
        out.extend(lines[done:chunks[i].first])
        out.extend(_emit_loop(tr, body, i, run, depth))
        i += run[0] * len(run[1])
        done = chunks[i - 1].end
    if out:
        out.extend(lines[done:chunks[-1].end])
        lines[chunks[0].first:chunks[-1].end] = out


def _run_at(body: _Body, i: int):
    """(period, the groups' words, the word positions of integers that differ) of the run
    starting at chunk i that covers the most chunks, or None."""
    shapes, cands = body.shapes, []
    for p in range(1, MAX_PERIOD + 1):
        k = _reps(shapes, i, p)
        if k >= MIN_REPS:
            cands.append((-k * p, p, k))
    for _, p, k in sorted(cands):
        first = _Group(body, i, i + p)
        if not first.words or first.misreads():
            continue
        groups, varying = [first.words], set()
        for g in range(1, k):
            ints = first.differences(_Group(body, i + g * p, i + (g + 1) * p))
            if ints is None:
                break
            groups.append(ints[0])
            varying.update(ints[1])
        if len(groups) >= MIN_REPS:
            return p, groups, sorted(varying)
    return None


def _reps(shapes: list[bytes], i: int, p: int) -> int:
    """How many consecutive groups of p chunks from i have the shape of the first."""
    n, k = len(shapes), 1
    if i + 2 * p > n or shapes[i] != shapes[i + p]:
        return 0
    first = shapes[i:i + p]
    while i + (k + 1) * p <= n and shapes[i + k * p:i + (k + 1) * p] == first:
        k += 1
    return k


class _Group:
    """A candidate group: chunks first..end of a body and its words (empty when the
    words would misread it, see _WORD)."""

    def __init__(self, body: _Body, first: int, end: int):
        self.body, self.first, self.end = body, first, end
        self.words = body.words(first, end) or []
        self._local: dict[str, bool] = {}

    def local(self, name: str) -> bool:
        """Whether no code outside the group reads `name`, so the loop may rename it: a
        temporary its statements made (_Translator.tmp: one statement's own) or a
        variable that occurs nowhere else in the kernel (_Facts.only_within)."""
        hit = self._local.get(name)
        if hit is None:
            tr, first, last = self.body.tr, self.body.chunks[self.first], \
                self.body.chunks[self.end - 1]
            made, var = tr.temps.get(name), tr.python_to_var().get(name)
            if made is not None:
                hit = first.first_tmp < made <= last.end_tmp
            else:
                hit = var is not None and tr.facts.only_within(var, first.stmt, last.last)
            self._local[name] = hit
        return hit

    def misreads(self) -> bool:
        """Whether a word starts with a digit but is not an integer (a float, hex)."""
        return any(w[0].isdigit() and not w.isdigit() for w in self.words)

    def differences(self, other: _Group) -> tuple[list[str], list[int]] | None:
        """(other's words, the positions where both have integers that differ) when other
        is this group with other integers and its local names renamed one to one; None
        when it is not. (Equal shapes put every word where this group has one; a word
        equal in both is neither local nor a misread number, as checked here.)"""
        a, b = self.words, other.words
        if len(a) != len(b) or not b:
            return None
        ints, rename, renamed = [], {}, set()
        for j in compress(range(len(a)), map(ne, a, b)):
            x, y = a[j], b[j]
            if x.isdigit() and y.isdigit():
                ints.append(j)
            elif rename.get(x) == y:
                continue
            elif (x in rename or y in renamed or x[0].isdigit() or y[0].isdigit()
                  or not self.local(x) or not other.local(y)):
                return None
            else:
                rename[x] = y
                renamed.add(y)
        return b, ints


def _plain(text: str) -> bool:
    """Whether the words of `text` read it right (see _WORD)."""
    if "\\" in text or not text.isascii() or _DOT_DIGIT.search(text):
        return False
    if "'" in text or '"' in text:
        return not any(w.isdigit() for x in _STRING.findall(text)
                       for w in x.translate(_NOT_WORD).split())
    return True


def _emit_loop(tr: Any, body: _Body, i: int, run, depth: int) -> list[str]:
    """The loop over the groups' differing integers, the first group's code as its body."""
    p, groups, varying = run
    loop_vars = [tr.tmp("_r") for _ in varying]
    parts = _WORDS_AND_TEXT.split("\n".join(body.texts[i:i + p]))   # (the words _Group read)
    for j, v in zip(varying, loop_vars, strict=True):
        parts[2 * j + 1] = v
    code = "".join(parts)
    rows = [tuple(int(words[j]) for j in varying) for words in groups]
    if len(loop_vars) == 1:
        head = f"for {loop_vars[0]} in {tr.bind(tuple(r[0] for r in rows), '_R')}:"
    elif loop_vars:
        head = f"for {', '.join(loop_vars)} in {tr.bind(tuple(rows), '_R')}:"
    else:
        head = f"for {tr.tmp('_r')} in range({len(groups)}):"
    return ["    " * depth + head] + ["    " + x for x in code.split("\n")]


__all__ = ["MIN_REPS", "Chunk", "roll_body"]
