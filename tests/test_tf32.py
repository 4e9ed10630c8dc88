"""TF32 is the user's opt-in (`--allow-tf32`, the "<spec>+tf32" variant): f32 matmuls stay
SIMT by default and issue mma.sync m16n8k8 .tf32 only when allowed; the fragment layout
follows the PTX ISA; cpu_sim rounds the inputs as cvt.rna.tf32.f32 does; the tolerance then
follows from the error model with TF32's unit roundoff (2^-11), and is needed."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from hal.backends.cpu_sim.backend import CpuSimBackend
from hal.backends.cpu_sim.mma_sim import round_tf32
from hal.devices.loader import load_spec
from hal.devices.spec import allow_tf32
from hal.dtypes import f32
from hal.fusion.plan import plan
from hal.ir import GraphBuilder
from hal.kernel.mma import get_layout
from hal.lowering import plan_group


@pytest.fixture(autouse=True)
def _no_measure(monkeypatch):
    monkeypatch.setenv("HAL_MEASURE", "off")


def mm_graph(m=48, k=256, n=40):
    b = GraphBuilder("mm")
    b.output(b.op("matmul", b.input("a", f32, (m, k)), b.input("b", f32, (k, n))))
    return b.build()


def matmul_plan(spec):
    g = mm_graph()
    group = next(x for x in plan(g, spec).groups if x.kind == "matmul")
    return plan_group(group, spec)


@pytest.mark.parametrize("device", ["h100-sxm", "h200", "a100-sxm"])
def test_f32_matmul_is_simt_unless_the_user_allows_tf32(device):
    spec = load_spec(device)
    assert matmul_plan(spec).strategy == "smem_tiled"
    assert spec.matrix_instruction("f32", "f32", "f32") is None
    tf = load_spec(device + "+tf32")
    assert tf.name == device + "+tf32" and "allow_tf32" in tf.capabilities
    assert allow_tf32(spec).name == tf.name
    p = matmul_plan(tf)
    assert p.strategy == "mma"
    assert p.math.name == "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32"
    # priced at the TF32 rate, not the f32 FMA rate
    from hal.roofline import peak
    assert peak(tf, p.math) > 2 * spec.vector_flops["f32"]


def test_no_tf32_instruction_keeps_simt():
    assert matmul_plan(load_spec("mi300x+tf32")).strategy == "smem_tiled"


def test_tf32_layout_follows_the_ptx_isa():
    # PTX ISA, "Matrix Fragments for mma.m16n8k8" (.tf32): groupID = laneid >> 2,
    # threadID_in_group = laneid % 4; a0, a2: row groupID, a1, a3: groupID + 8;
    # a0, a1: col threadID_in_group, a2, a3: threadID_in_group + 4; b0: row
    # threadID_in_group, b1: threadID_in_group + 4, col groupID; c as m16n8k16.
    lay = get_layout("nv_m16n8k8_tf32")
    assert (lay.m, lay.n, lay.k, lay.lanes, lay.input_format) == (16, 8, 8, 32, "tf32")
    for lane in range(32):
        gid, tig = lane >> 2, lane % 4
        a_rows = [gid, gid + 8, gid, gid + 8]
        a_cols = [tig, tig, tig + 4, tig + 4]
        for i in range(4):
            assert tuple(lay.a[lane, i]) == (a_rows[i], a_cols[i])
        assert tuple(lay.b[lane, 0]) == (tig, gid) and tuple(lay.b[lane, 1]) == (tig + 4, gid)
        for i in range(4):
            assert tuple(lay.c[lane, i]) == (gid + 8 * (i >= 2), 2 * tig + (i & 1))


def test_round_tf32_is_nearest_ties_away():
    ulp = 2.0 ** -10
    x = np.array([1 + ulp / 2, -(1 + ulp / 2), 1 + ulp / 2 - 2 ** -23, 1 + 3 * ulp / 2,
                  np.inf, -np.inf, 3.0e38])
    r = round_tf32(x)
    assert r[0] == 1 + ulp and r[1] == -(1 + ulp)     # ties away from zero (rna)
    assert r[2] == 1.0                                # below the tie: down
    assert r[3] == 1 + 2 * ulp                        # tie, away
    assert np.isinf(r[4]) and np.isinf(r[5]) and r[6] == pytest.approx(3.0e38, rel=2 ** -10)
    assert np.isnan(round_tf32(np.array([np.nan]))[0])


def test_tf32_run_needs_and_meets_the_tf32_tolerance():
    from hal.conformance.compare import check
    from hal.conformance.tolerance import ModelOptions, graph_bounds

    g = mm_graph()
    rng = np.random.default_rng(7)
    inputs = {"a": rng.standard_normal((48, 256)).astype(np.float32),
              "b": rng.standard_normal((256, 40)).astype(np.float32)}
    spec = load_spec("a100-sxm+tf32")
    r = CpuSimBackend().run_graph(g, inputs, spec, compare_reference=False)
    (out,) = r.outputs.values()
    want = round_tf32(inputs["a"].astype(np.float64)) @ round_tf32(inputs["b"].astype(
        np.float64))
    assert np.max(np.abs(out - want)) <= 1e-4 * np.max(np.abs(want))   # f32 sums of TF32 products
    name = g.outputs[0].name

    def bound(model):
        prim, bs = graph_bounds(g, inputs, model)
        return bs[prim.outputs[0].name]

    assert check(out, bound(ModelOptions(tf32_inputs=True))).ok
    assert not check(out, bound(ModelOptions())).ok      # the f32 bound is too tight for TF32
    assert name


def test_cli_allow_tf32_changes_the_plan(tmp_path):
    from hal.cli.main import main as cli

    src = tmp_path / "mm.hal"
    src.write_text("graph mm {\n  input %a: f32[64, 96]\n  input %b: f32[96, 48]\n"
                   "  %c: f32[64, 48] = matmul(%a, %b)\n  output %c\n}\n")
    runner = CliRunner()
    plain = runner.invoke(cli, ["fuse", str(src), "--device", "a100-sxm", "--explain"])
    tf = runner.invoke(cli, ["fuse", str(src), "--device", "a100-sxm", "--allow-tf32",
                             "--explain"])
    assert plain.exit_code == 0 and tf.exit_code == 0, (plain.output, tf.output)
    assert "tf32" not in plain.output
    assert "m16n8k8.row.col.f32.tf32.tf32.f32" in tf.output


@pytest.mark.skipif(not shutil.which("nvcc"), reason="needs nvcc and cuobjdump")
def test_tf32_sass_has_hmma_1688(tmp_path):
    from hal.backends.cuda.render import render_cuda
    from hal.lowering import lower_group
    from hal.render.disasm import count_instructions, cuobjdump_path

    if cuobjdump_path() is None:
        pytest.skip("needs cuobjdump")
    spec = load_spec("a100-sxm+tf32")
    g = mm_graph(256, 256, 256)
    group = next(x for x in plan(g, spec).groups if x.kind == "matmul")
    (kern,) = lower_group(group, spec)
    r = count_instructions(render_cuda(kern, spec), "cuda", "sm_80", out_dir=tmp_path)
    assert not isinstance(r, str), r
    assert any(f.startswith("HMMA.1688.F32.TF32") for f in r.forms), r.forms
