"""The cheaper planning keys change no key, no plan and no kernel.

* memo.HashedKey (a group record hashed once) is equal exactly when its records are;
* group_key and fusion.plan.signature built from the planner's per-node records (kept by
  identity while the graph is fixed) equal the ones built from scratch, for every group
  a fusion pass prices, however the records were shared between groups;
* a plan kept in PLANS keeps its verdict on its name (whether it appears beyond the group
  and launch names): renamed exactly when the plan as first found allows it, refused
  when the name appears elsewhere;
* KernelContext.c hands out one Const per value, equal to a fresh one;
* KernelContext.param_named finds what the list of names found.
"""

from __future__ import annotations

import dataclasses
import itertools

from hal.devices.loader import load_spec
from hal.dtypes import bf16, f32, i32, i64
from hal.fusion import plan
from hal.fusion.group import make_group
from hal.fusion.plan import _Planner, signature
from hal.ir import GraphBuilder
from hal.kernel.ir import Const
from hal.lowering import memo, plan_group
from hal.lowering.context import KernelContext


def _block(dt, m=16, k=32, n=24):
    b = GraphBuilder("block")
    x, w = b.input("x", dt, (m, k)), b.input("w", dt, (n, k))
    x32 = b.op("cast", x, dtype=f32)
    mean = b.op("reduce_sum", b.op("mul", x32, x32), axes=(1,), keepdims=True)
    xn = b.op("cast", b.op("mul", x32, b.op("broadcast_to", b.op("rsqrt", mean),
                                            shape=(m, k))), dtype=dt)
    y = b.op("matmul", xn, w, transpose_b=True)
    b.output(b.op("mul", y, b.op("sigmoid", y), name="out"))
    return b.build()


def test_a_hashed_key_is_equal_exactly_when_its_records_are():
    a, b, c = memo.HashedKey(("x", (1, 2))), memo.HashedKey(("x", (1, 2))), \
        memo.HashedKey(("x", (1, 3)))
    assert a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    assert a != c and a != ("x", (1, 2))


def test_group_keys_and_signatures_from_shared_records_equal_fresh_ones():
    spec = load_spec("h100-sxm")
    p = plan(_block(bf16), spec, measure="off")
    planner = _Planner(p.graph, spec, verify_lowering=False)
    nodes = p.graph.nodes
    # every contiguous run of nodes and a few scattered sets, in an order that makes
    # the shared records serve groups that differ from the ones that made them
    sets = [nodes[i:j] for i in range(len(nodes)) for j in range(i + 1, len(nodes) + 1)]
    sets += [list(s) for s in itertools.combinations(nodes, 3)][:40]
    for ns in reversed(sets):
        for name in ("cand", "k3_mul"):
            g = planner.make(ns, name=name)
            assert planner.group_key(g) == memo.group_key(g)
            assert planner.signature(g) == signature(g)
    assert planner._key_parts and planner._sig_parts   # (the records were shared)


def test_a_kept_plan_is_renamed_only_when_its_name_appears_nowhere_else():
    spec = load_spec("mi300x")
    g = _block(f32)
    prim = plan(g, spec, measure="off").graph
    cand = make_group(prim, prim.nodes[:3], "cand")
    with memo.disabled():
        fresh = {n: plan_group(dataclasses.replace(cand, name=n), spec) for n in ("k1", "k2")}
    key = (memo.group_key(cand)[1], spec)
    pa = plan_group(cand, spec)
    memo.PLANS.put(key, ("cand", pa, []))
    for n in ("k1", "k2"):   # the second rename uses the verdict the first found
        assert plan_group(dataclasses.replace(cand, name=n), spec) == fresh[n]
    noted = dataclasses.replace(pa, reasons=pa.reasons + ("see group cand",))
    memo.PLANS.put(key, ("cand", noted, []))
    for n in ("k1", "k2"):   # never the noted plan renamed: the planner's own
        got = plan_group(dataclasses.replace(cand, name=n), spec)
        assert got == fresh[n] and "see group cand" not in got.reasons


def test_index_constants_are_one_object_per_value_and_equal_fresh_ones():
    for idx in (i32, i64):
        ctx = KernelContext("k", load_spec("h100-sxm"), idx)
        assert ctx.c(3) is ctx.c(3) and ctx.c(3) == Const(3, idx)
        assert ctx.c(3) is not ctx.c(4) and ctx.c(4) == Const(4, idx)
        assert ctx.c(True) == Const(1, idx) and type(ctx.c(2.0).value) is int


def test_param_named_finds_the_param_the_names_list_found():
    b = GraphBuilder("p")
    x, y = b.input("x", f32, (4, 8)), b.input("y.1", f32, (8,))
    ctx = KernelContext("k", load_spec("h100-sxm"))
    for v in (x, y):
        ctx.buffer(v)
    ctx.scratch_buffer("part", f32, 16, readonly=False)
    for name in [p.name for p in ctx.params]:
        names = [p.name for p in ctx.params]
        assert ctx.param_named(name) is ctx.params[names.index(name)]
