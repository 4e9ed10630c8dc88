"""Differential random testing: seeded random well-typed graphs, and shrinking of failures.

A random graph is a `Recipe`: dims {R, C} and a list of steps, each making a
[R, C] value from earlier ones: inputs, unary and binary elementwise ops
(chains and diamonds: operands are any earlier values), a reduction
broadcast back (row sum/max), a matmul by a [C, C] weight, a row bias
(broadcast of a [C] input), a transposed operand ([C, R] input transposed),
and casts between float dtypes (mixed dtypes: a binary op casts its second
operand to the first's dtype). `build(recipe)` turns it into a Graph.

`shrink(recipe, fails)` deletes steps and reduces dims while `fails(graph)`
stays true, and `write_reproducer` saves the minimal graph as .hal with its
inputs as .npz (arrays widened exactly to f32/f64/i64; cast them to the
graph's input dtypes when loading: `load_reproducer`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hal.dtypes import cast, dtype
from hal.ir import GraphBuilder
from hal.ir.graph import Graph

UNARY = ("exp", "tanh", "sin", "abs", "neg", "sigmoid", "cos", "erf")
BINARY = ("add", "sub", "mul", "maximum", "minimum")
DTYPES = ("f32", "f16", "bf16")
SIZES = (1, 3, 17, 31, 33, 64, 65)
KINDS = ("unary", "binary", "binary", "reduce", "matmul", "bias", "transposed", "cast")


@dataclass(frozen=True)
class Step:
    kind: str                  # input, unary, binary, reduce, matmul, bias, transposed, cast
    args: tuple[int, ...] = ()  # indices of earlier steps
    op: str = ""
    dtype: str = "f32"


@dataclass(frozen=True)
class Recipe:
    dims: tuple[int, int]
    steps: tuple[Step, ...]
    outputs: tuple[int, ...]
    name: str = "random"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


def generate(seed: int, index: int = 0, max_steps: int = 10) -> Recipe:
    """A seeded random recipe (same (seed, index) -> same graph)."""
    rng = random.Random(seed * 1_000_003 + index)
    dims = (rng.choice(SIZES), rng.choice(SIZES))
    steps: list[Step] = [Step("input", dtype=rng.choice(DTYPES))
                         for _ in range(rng.randint(1, 3))]
    for _ in range(rng.randint(2, max_steps)):
        kind = rng.choice(KINDS)
        a = rng.randrange(len(steps))
        dt = steps[a].dtype
        if kind == "unary":
            steps.append(Step("unary", (a,), rng.choice(UNARY), dt))
        elif kind == "binary":
            steps.append(Step("binary", (a, rng.randrange(len(steps))), rng.choice(BINARY), dt))
        elif kind == "reduce":
            steps.append(Step("reduce", (a,), rng.choice(("reduce_sum", "reduce_max")), dt))
        elif kind == "cast":
            steps.append(Step("cast", (a,), "cast", rng.choice(DTYPES)))
        else:
            steps.append(Step(kind, (a,), kind, dt))
    outs = (len(steps) - 1,) + ((rng.randrange(len(steps) - 1),) if rng.random() < 0.3 else ())
    return Recipe(dims, tuple(steps), tuple(dict.fromkeys(outs)), f"random_s{seed}_{index}")


def build(r: Recipe) -> Graph:
    """The graph of a recipe (every value [R, C])."""
    rows, cols = r.dims
    b = GraphBuilder(r.name)
    vals: list = []
    n_in = 0

    def fresh_input(dt, shape):
        nonlocal n_in
        n_in += 1
        return b.input(f"in{n_in}", dt, shape)

    for s in r.steps:
        a = vals[s.args[0]] if s.args else None
        if s.kind == "input":
            v = fresh_input(s.dtype, (rows, cols))
        elif s.kind == "unary":
            v = b.op(s.op, a)
        elif s.kind == "binary":
            other = vals[s.args[1]]
            if other.dtype != a.dtype:
                other = b.op("cast", other, dtype=a.dtype)
            v = b.op(s.op, a, other)
        elif s.kind == "reduce":
            red = b.op(s.op, a, axes=(1,), keepdims=True)
            v = b.op("add", a, b.op("broadcast_to", red, shape=(rows, cols)))
        elif s.kind == "matmul":
            v = b.op("matmul", a, fresh_input(a.dtype, (cols, cols)))
        elif s.kind == "bias":
            v = b.op("add", a, b.op("broadcast_to", fresh_input(a.dtype, (cols,)),
                                    shape=(rows, cols)))
        elif s.kind == "transposed":
            t = b.op("transpose", fresh_input(a.dtype, (cols, rows)), perm=(1, 0))
            v = b.op("mul", a, t)
        elif s.kind == "cast":
            v = b.op("cast", a, dtype=s.dtype) if dtype(s.dtype) != a.dtype else a
        else:
            raise ValueError(f"unknown step kind {s.kind}")
        vals.append(v)
    outs = []
    for i in r.outputs:
        if vals[i] not in outs:
            outs.append(vals[i])
    b.output(*outs)
    return b.build()


def size(r: Recipe) -> tuple[int, int]:
    return len(r.steps), r.dims[0] * r.dims[1]


def _delete(r: Recipe, i: int) -> Recipe | None:
    """`r` without step i: its users read its first operand instead (inputs: not deletable
    while used)."""
    s = r.steps[i]
    users = [j for j, t in enumerate(r.steps) if i in t.args] + \
        ([-1] if i in r.outputs else [])
    if s.kind == "input" and users:
        return None
    sub = s.args[0] if s.args else None

    def remap(k: int) -> int:
        k = sub if k == i else k
        return k - 1 if k > i else k

    steps = tuple(replace(t, args=tuple(remap(k) for k in t.args))
                  for j, t in enumerate(r.steps) if j != i)
    outs = tuple(dict.fromkeys(remap(k) for k in r.outputs))
    if not steps or not outs:
        return None
    return replace(r, steps=steps, outputs=outs)


def shrink(r: Recipe, fails: Callable[[Recipe], bool], max_tries: int = 200) -> Recipe:
    """A smaller recipe that still fails: delete steps, then shrink dims, to a fixpoint."""
    tries = 0
    progress = True
    while progress and tries < max_tries:
        progress = False
        for i in reversed(range(len(r.steps))):
            cand = _delete(r, i)
            tries += 1
            if cand is not None and _still_fails(cand, fails):
                r, progress = cand, True
                break
        if progress:
            continue
        for axis in (0, 1):
            d = r.dims[axis]
            for new in sorted({1, 2, d // 2, d - 1} - {d}):
                if new < 1 or new >= d:
                    continue
                dims = tuple(new if k == axis else x for k, x in enumerate(r.dims))
                cand = replace(r, dims=dims)
                tries += 1
                if _still_fails(cand, fails):
                    r, progress = cand, True
                    break
            if progress:
                break
    return r


def _still_fails(r: Recipe, fails: Callable[[Recipe], bool]) -> bool:
    try:
        build(r)
    except Exception:
        return False  # not a well-typed graph: not a reproducer
    try:
        return bool(fails(r))
    except Exception:
        return True


def write_reproducer(graph: Graph, inputs: dict[str, np.ndarray], path_stem: str | Path
                     ) -> tuple[Path, Path]:
    """Write `<stem>.hal` and `<stem>.npz` (inputs widened exactly)."""
    from hal.ir.text import save_graph
    from hal.reference import widen

    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    hal_path, npz_path = stem.with_suffix(".hal"), stem.with_suffix(".npz")
    save_graph(graph, hal_path)
    types = {v.name: v.dtype for v in graph.inputs}
    np.savez(npz_path, **{k: widen(a, types[k]) for k, a in inputs.items()})
    return hal_path, npz_path


def load_reproducer(hal_path: str | Path) -> tuple[Graph, dict[str, np.ndarray]]:
    """The graph and its inputs (cast back to the input dtypes) from write_reproducer."""
    from hal.ir.text import load_graph

    g = load_graph(hal_path)
    with np.load(Path(hal_path).with_suffix(".npz")) as z:
        inputs = {v.name: cast(z[v.name], v.dtype) for v in g.inputs}
    return g, inputs


# --------------------------------------------------------------------------- as cases

def random_case_id(seed: int, index: int) -> str:
    return f"random/s{seed}/{index}"


def random_case(seed: int, index: int):
    """The conformance Case of random graph (seed, index): fused vs reference and unfused."""
    from .cases import Case, _tags

    r = generate(seed, index)
    dts = tuple(sorted({s.dtype for s in r.steps}))
    cid = random_case_id(seed, index)
    return Case(cid, "random", "graph", dts, f"{r.dims[0]}x{r.dims[1]}",
                lambda _r=r: build(_r), "normal", seed * 7919 + index, True,
                _tags("random", dts))


def parse_random_id(case_id: str) -> tuple[int, int] | None:
    parts = case_id.split("/")
    if len(parts) == 3 and parts[0] == "random" and parts[1].startswith("s"):
        return int(parts[1][1:]), int(parts[2])
    return None


def shrink_failure(case_id: str, backend: str, device: str, out_dir: str | Path,
                   seed_offset: int = 0) -> dict[str, Any]:
    """Shrink failing random case `case_id` and write its reproducer; returns paths and sizes."""
    from .cases import make_inputs
    from .runner import execute

    seed, index = parse_random_id(case_id) or (0, 0)
    base = random_case(seed, index)
    r0 = generate(seed, index)

    def fails(r: Recipe) -> bool:
        case = replace(base, build=lambda _r=r: build(_r))
        return execute(case, backend, device, seed_offset)["verdict"] != "pass"

    small = shrink(r0, fails)
    g = build(small)
    inputs = make_inputs(g, "normal", base.seed + seed_offset)
    stem = Path(out_dir) / case_id.replace("/", "_")
    hal_path, npz_path = write_reproducer(g, inputs, stem)
    return {"hal": str(hal_path), "npz": str(npz_path), "steps": [len(r0.steps), len(small.steps)],
            "dims": [list(r0.dims), list(small.dims)]}
