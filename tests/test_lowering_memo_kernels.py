"""The lowering memo (hal.lowering.memo.KERNELS) and the scalar-builder memos change no kernel.

* a group lowered again in another graph (same names, nodes, spec and options) is served
  a copy of its first lowering: equal to lowering it with the memos off, in Kernel objects
  of its own (editing one caller's lists leaves the next caller's kernels as they were);
* a lowering under other options (a planted fault) or another spec is never served it;
* scalar_const keeps one Const per value and dtype, telling -0.0 from 0.0 and 1 from True;
* the per-op answer of _keeps_coords follows a newly registered emitter.
"""

from __future__ import annotations

from hal.devices.loader import load_spec
from hal.dtypes import bf16, f32, i32
from hal.fusion import plan
from hal.ir import GraphBuilder
from hal.lowering import expr, lower_group, memo
from hal.lowering.options import LoweringOptions


def _mlp(dt, m=64, k=96, n=80):
    b = GraphBuilder("mlp")
    x, w, bias = b.input("x", dt, (m, k)), b.input("w", dt, (n, k)), b.input("bias", dt, (n,))
    y = b.op("matmul", x, w, transpose_b=True)
    y = b.op("add", y, b.op("broadcast_to", bias, shape=(m, n)))
    b.output(b.op("mul", y, b.op("gelu", y), name="out"))
    return b.build()


def _groups(dt, spec):
    return plan(_mlp(dt), spec, measure="off").groups


def test_a_group_lowered_again_in_another_graph_is_served_an_equal_copy():
    spec = load_spec("h100-sxm")
    with memo.disabled():
        want = [repr(lower_group(g, spec)) for g in _groups(bf16, spec)]
    memo.clear_all()
    first = [lower_group(g, spec) for g in _groups(bf16, spec)]
    hits = memo.KERNELS.hits
    second = [lower_group(g, spec) for g in _groups(bf16, spec)]   # another graph object
    assert memo.KERNELS.hits >= hits + len(second)
    assert [repr(ks) for ks in first] == want == [repr(ks) for ks in second]
    for a, b in zip(first, second, strict=True):
        for ka, kb in zip(a, b, strict=True):
            assert ka is not kb and ka.body is not kb.body and ka.params is not kb.params
            assert ka.meta.buffers is not kb.meta.buffers
    # a caller editing its kernels (the first caller's: computed; the second's: served)
    # leaves what the memo serves next as it was
    for ks in (*first, *second):
        for k in ks:
            k.body.clear()
            k.params.clear()
    third = [lower_group(g, spec) for g in _groups(bf16, spec)]
    assert [repr(ks) for ks in third] == want


def test_other_options_or_another_spec_are_never_served_the_kept_kernels():
    spec, other = load_spec("h100-sxm"), load_spec("mi300x")
    faulty = LoweringOptions.planting("dropped_epilogue")
    with memo.disabled():
        bad = [repr(lower_group(g, spec, faulty)) for g in _groups(f32, spec)]
        on_other = [repr(lower_group(g, other)) for g in _groups(f32, spec)]
    memo.clear_all()
    clean = [repr(lower_group(g, spec)) for g in _groups(f32, spec)]
    assert clean != bad and clean != on_other
    assert [repr(lower_group(g, spec, faulty)) for g in _groups(f32, spec)] == bad
    assert [repr(lower_group(g, other)) for g in _groups(f32, spec)] == on_other


def test_scalar_const_keeps_one_const_per_value_and_dtype():
    expr._CONSTS.clear()
    cases = [(0.0, f32), (-0.0, f32), (1, f32), (True, f32), (1.0, bf16), (1, i32),
             (True, i32), (0.1, bf16), (0.1, f32), (float("nan"), f32)]
    first = [expr.scalar_const(v, d) for v, d in cases]
    again = [expr.scalar_const(v, d) for v, d in cases]
    assert repr(first) == repr(again)
    assert repr(expr.scalar_const(-0.0, f32)) == repr(expr.Const(-0.0, f32))
    assert repr(expr.scalar_const(0.0, f32)) == repr(expr.Const(0.0, f32))
    assert expr.scalar_const(0.1, bf16).value == 0.10009765625     # rounded to bf16
    assert expr.scalar_const(0.1, f32).value != 0.10009765625
    assert expr.scalar_const(1.0, bf16) is expr.scalar_const(1.0, bf16)   # kept


def test_keeps_coords_follows_a_newly_registered_emitter():
    b = GraphBuilder("t")
    x = b.input("x", f32, (4,))
    b.output(b.op("exp", x, name="y"))
    node = b.build().nodes[0]
    assert expr._keeps_coords(node)
    saved = expr.EMITTERS.get("exp")
    try:
        expr.register_emitter("exp")(lambda bld, n, coords, mask: bld.value(n.inputs[0], coords))
        assert not expr._keeps_coords(node)   # an emitter may read other coordinates
    finally:
        expr.EMITTERS.pop("exp")
        if saved is not None:
            expr.EMITTERS["exp"] = saved
        expr._KEEPS.clear()
    assert expr._keeps_coords(node)
