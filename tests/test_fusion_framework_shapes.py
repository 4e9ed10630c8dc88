"""Fusion on graphs as frameworks export them (torch.export): each nn.Linear takes its own
`view` of the normalised activations, norms run on [B, S, D] while the matmul reads
[B*S, D], and scalar constants are shared through broadcasts. Common subexpressions are
merged (so Q, K and V share one A operand), cheap producer chains are copied into every
consumer, a row-reduction kernel may store its rows through a reshape, and a norm on
[B, S, D] fuses into the following [B*S, D] matmul as its A prologue."""

from __future__ import annotations

import pytest

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.devices.loader import load_spec
from hal.dtypes import f32
from hal.fusion import plan
from hal.fusion.rewrite import duplicate_cheap_producers, merge_common_subexpressions
from hal.ir import GraphBuilder
from hal.reference import random_inputs


def test_common_subexpressions_merge_and_keep_output_names():
    b = GraphBuilder("cse")
    x = b.input("x", f32, (4, 6))
    v1 = b.op("reshape", x, shape=(24,))
    v2 = b.op("reshape", x, shape=(24,))
    other = b.op("reshape", x, shape=(6, 4))          # different attrs: kept
    s = b.op("add", b.op("exp", v1), b.op("exp", v2))  # exp(v1) and exp(v2) become one
    b.output(s)
    b.output(b.op("neg", other))
    g = b.build()
    m = merge_common_subexpressions(g)
    ops = [n.op for n in m.nodes]
    assert ops.count("reshape") == 2 and ops.count("exp") == 1
    (add,) = [n for n in m.nodes if n.op == "add"]
    assert add.inputs[0] is add.inputs[1]
    assert [v.name for v in m.outputs] == [v.name for v in g.outputs]
    assert merge_common_subexpressions(m) is m   # nothing left to merge


def test_cheap_chains_are_copied_whole():
    """A full read by one broadcast that several consumers share: the broadcast is copied
    per consumer, and the full with it (no kernel of its own for a constant)."""
    b = GraphBuilder("chain")
    x, y = b.input("x", f32, (4, 6)), b.input("y", f32, (4, 6))
    c = b.op("broadcast_to", b.op("full", shape=(), value=2.0, dtype=f32), shape=(4, 6))
    b.output(b.op("mul", x, c))
    b.output(b.op("add", y, c))
    g = duplicate_cheap_producers(b.build())
    users = g.users()
    for n in g.nodes:
        if n.op in ("full", "broadcast_to"):
            assert len(users[n.outputs[0].name]) == 1
    p = plan(b.build(), load_spec("h100-sxm"), measure=None)
    assert all(x.kind != "source" for x in p.groups)


def _norm_view_linear(bsz=2, s=7, d=24, n=20, extra=False):
    """torch's RMSNorm on [B, S, D], x.view(-1, D), then three Linears (each its own view)."""
    b = GraphBuilder("norm_view_linear")
    x = b.input("x", f32, (bsz, s, d))
    w = b.input("w", f32, (d,))
    ms = b.op("reduce_sum", b.op("mul", x, x), axes=[2], keepdims=True)
    r = b.op("rsqrt", b.op("add", b.op("div", ms, b.op("full", shape=(bsz, s, 1), value=float(d),
                                                       dtype=f32)),
                           b.op("full", shape=(bsz, s, 1), value=1e-5, dtype=f32)))
    xn = b.op("mul", b.op("mul", x, b.op("broadcast_to", r, shape=(bsz, s, d))),
              b.op("broadcast_to", w, shape=(bsz, s, d)))
    outs = []
    for i, width in enumerate((n, n // 2, n // 2)):
        wi = b.input(f"w{i}", f32, (width, d))
        view = b.op("reshape", xn, shape=(bsz * s, d))
        outs.append(b.op("matmul", view, wi, transpose_b=True, name=f"y{i}"))
    for o in outs:
        b.output(o)
    if extra:
        b.output(b.op("reshape", xn, shape=(bsz * s, d), name="xn_flat"))
    return b.build()


@pytest.mark.parametrize("device", ["h100-sxm", "mi300x"])
def test_norm_on_bsd_fuses_into_the_bs_d_matmuls(device):
    g = _norm_view_linear()
    spec = load_spec(device)
    p = plan(g, spec, measure=None)
    assert p.kernel_count() == 1, [x.ops for x in p.groups]
    (grp,) = p.groups
    assert grp.kind == "matmul" and "reduce_sum" in grp.ops
    r = CpuSimBackend().run_graph(g, random_inputs(g, 2), spec, check=True)
    assert r.report["ok"], r.report
    (st,) = r.stats
    assert st["global_bytes"] == p.costs[grp.name].issued


def test_a_norm_stored_through_a_reshape_is_one_row_kernel():
    """A row-reduction kernel whose last op is a view of its rows ([B, S, D] -> [B*S, D],
    read only outside) stores the rows at the same row-major index."""
    from hal.fusion.group import make_group
    from hal.fusion.plan import structural_veto
    from hal.ops.decompose import decompose_graph

    b = GraphBuilder("norm_view")
    x, w = b.input("x", f32, (2, 7, 24)), b.input("w", f32, (24,))
    xn = b.op("rms_norm", x, w, eps=1e-5)
    b.output(b.op("exp", b.op("reshape", xn, shape=(14, 24), name="flat")))
    g = decompose_graph(b.build())
    norm = [n for n in g.nodes if n.op != "exp"]
    assert structural_veto(norm) is None
    grp = make_group(g, norm, "norm_view")
    assert grp.kind == "row_reduction" and [v.name for v in grp.outputs] == ["flat"]
    spec = load_spec("h100-sxm")
    rest = make_group(g, [n for n in g.nodes if n.op == "exp"], "exp")
    r = CpuSimBackend().run_graph(g, random_inputs(g, 4), spec, groups=[grp, rest], check=True)
    assert r.report["ok"], r.report
    # a reshape whose rows are read again inside the kernel is still refused
    more = norm + [n for n in g.nodes if n.op == "exp"]
    assert "reshape of a reduction result" in structural_veto(more)


def test_jax_softmax_forms_are_canonicalised():
    """maximum(max, -inf) is max; reduce without keepdims reshaped back is the keepdims
    reduction; another reader of the un-kept result gets a view; values are unchanged."""
    import numpy as np

    from hal.fusion.rewrite import canonicalize_reductions
    from hal.reference import evaluate

    b = GraphBuilder("jax_softmax")
    x = b.input("x", f32, (3, 5))
    m = b.op("reduce_max", x, axes=[1])
    m = b.op("maximum", b.op("broadcast_to", b.op("full", shape=(), value=float("-inf"),
                                                  dtype=f32), shape=(3,)), m)
    e = b.op("exp", b.op("sub", x, b.op("broadcast_to", b.op("reshape", m, shape=(3, 1)),
                                         shape=(3, 5))))
    s = b.op("reduce_sum", e, axes=[1])
    p = b.op("div", e, b.op("broadcast_to", b.op("reshape", s, shape=(3, 1)), shape=(3, 5)))
    b.output(p)
    b.output(b.op("neg", s))      # a reader of the un-kept sum: gets a view
    g = b.build()
    c = canonicalize_reductions(g)
    ops = [n.op for n in c.nodes]
    assert "maximum" not in ops
    reds = [n for n in c.nodes if n.op.startswith("reduce_")]
    assert all(n.attrs["keepdims"] for n in reds)
    assert ops.count("reshape") == 1   # only the view for neg(s)
    inputs = random_inputs(g, 1)
    want, got = evaluate(g, inputs), evaluate(c, inputs)
    for k in want:
        np.testing.assert_array_equal(want[k], got[k])


def test_jax_decoder_attention_and_norms_fuse():
    pytest.importorskip("jax")
    from hal.frontends.bringup import load_subject

    subject = load_subject("examples/models/jax_decoder.py:make")
    p = plan(subject.model.graph, load_spec("h100-sxm"), measure=None)
    kinds = [x.kind for x in p.groups]
    assert kinds.count("attention") == 2
    assert "row_reduction" not in kinds   # every norm is a matmul prologue


@pytest.mark.parametrize("device", ["h100-sxm", "mi300x"])
def test_linear_view_then_residual_is_the_matmul_epilogue(device):
    """torch's Linear on [B, S, D]: mm on [B*S, D] (+ bias), view back to [B, S, N], then the
    residual add: one kernel whose epilogue runs at the view's coordinates."""
    b = GraphBuilder("linear_view_residual")
    x = b.input("x", f32, (2 * 7, 24))
    w, bias = b.input("w", f32, (20, 24)), b.input("bias", f32, (20,))
    res = b.input("res", f32, (2, 7, 20))
    y = b.op("matmul", x, w, transpose_b=True)
    y = b.op("add", y, b.op("broadcast_to", bias, shape=(14, 20)))
    y = b.op("reshape", y, shape=(2, 7, 20))
    b.output(b.op("add", y, res, name="out"))
    g = b.build()
    spec = load_spec(device)
    p = plan(g, spec, measure=None)
    assert p.kernel_count() == 1, [x.ops for x in p.groups]
    (grp,) = p.groups
    r = CpuSimBackend().run_graph(g, random_inputs(g, 6), spec, check=True)
    assert r.report["ok"], r.report
    (st,) = r.stats
    assert st["global_bytes"] == p.costs[grp.name].issued


def test_a_view_that_reorders_columns_stays_out_of_the_epilogue():
    from hal.fusion.plan import structural_veto

    b = GraphBuilder("bad_view")
    x, w = b.input("x", f32, (14, 24)), b.input("w", f32, (20, 24))
    y = b.op("matmul", x, w, transpose_b=True)
    b.output(b.op("exp", b.op("reshape", y, shape=(14, 4, 5))))  # splits the last axis
    why = structural_veto(b.build().nodes)
    assert why and "regrouping its leading axes" in why


def test_torch_llama_bringup_plan_has_no_standalone_norms():
    pytest.importorskip("torch")
    from hal.frontends.bringup import load_subject

    subject = load_subject("examples/models/llama_style.py:make")
    p = plan(subject.model.graph, load_spec("h100-sxm"), measure=None)
    kinds = [x.kind for x in p.groups if x.kind != "movement"]
    assert kinds.count("attention") == 2 and "row_reduction" not in kinds
    assert p.kernel_count() <= 14


def test_rotary_kernel_issued_bytes_match_the_simulator():
    """A pointwise rotary kernel whose cos/sin tables come from iota reaches the
    inv_freq table twice (through cos and through sin) at the same coordinates: the
    builder loads it once, and so does the model."""
    from hal.dtypes import dtype
    from hal.examples.build import _rope_tables

    b = GraphBuilder("rope_only")
    x = b.input("x", f32, (2, 16, 4, 32))   # [B, S, H, D]: cos/sin are [S, D]
    cos, sin = _rope_tables(b, 16, 32, dtype("f32"), "")
    b.output(b.op("rotary_embedding", x, cos, sin, name="y"))
    g = b.build()
    spec = load_spec("h100-sxm")
    p = plan(g, spec, measure=None)
    r = CpuSimBackend().run_graph(g, random_inputs(g, 1), spec, check=True)
    assert r.report["ok"], r.report
    assert sum(s["global_bytes"] for s in r.stats) == p.issued_bytes
